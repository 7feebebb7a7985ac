//! `FROM`: base images and their `ONBUILD` triggers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration};
use sha2::{Digest as _, Sha256};

use crate::dockerfile::{self, Expander, Instruction, ResolvedInstruction};
use crate::error::Failure;
use crate::plan::{Op, Vertex};
use crate::platform::Platform;
use crate::progress::{Event, VertexId};

use super::cache::Key;
use super::scheduler::Ctx;
use super::state::Done;
use crate::oci::{ImageLayer, ImageState};
use crate::registry::{self, ImageRef, PlatformSpec, SinkProgress};

impl Ctx<'_> {
    /// Resolves an image for a platform: the store's copy, else the registry.
    pub(crate) fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
        vertex: VertexId,
    ) -> anyhow::Result<(Descriptor, ImageState)> {
        let image = ImageRef::parse(reference)
            .map_err(|error| Failure::bad_input(format_args!("{reference}: {error}")))?;
        let spec = PlatformSpec::parse(&platform.to_string())
            .map_err(|error| Failure::bad_input(error.0))?;
        let progress = Arc::new(SinkProgress::aggregate(self.sink.clone(), vertex));
        let layout = self.store.layout();
        let pulled = if self.options.pull {
            let choice = registry::PlatformChoice::One(spec.clone());
            self.runtime
                .block_on(registry::pull::pull_reference(
                    self.registry.clone(),
                    layout,
                    &image,
                    &choice,
                    progress,
                ))?
                .images
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{reference}: nothing pulled for {platform}"))?
        } else {
            self.runtime.block_on(registry::pull::resolve(
                self.registry.clone(),
                layout,
                &image,
                &spec,
                progress,
            ))?
        };
        let config_digest = pulled.document.config().digest();
        let raw: serde_json::Value = layout.read_json(config_digest, "image config")?;
        let config: ImageConfiguration = layout.read_json(config_digest, "image config")?;
        let mut extra = serde_json::Map::new();
        if let Some(inner) = raw.get("config").and_then(|c| c.as_object()) {
            for field in ["Healthcheck", "Shell", "OnBuild"] {
                if let Some(value) = inner.get(field).filter(|v| !v.is_null()) {
                    extra.insert(field.to_owned(), value.clone());
                }
            }
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != pulled.document.layers().len() {
            return Err(anyhow!(
                "{reference}: {} layers but {} diff_ids",
                pulled.document.layers().len(),
                diff_ids.len()
            ));
        }
        let layers = pulled
            .document
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| {
                Ok(ImageLayer {
                    blob: Some(blob.clone()),
                    diff_id: Digest::from_str(diff_id)?,
                    clamp: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            pulled.manifest,
            ImageState {
                layers,
                config,
                extra,
            },
        ))
    }

    pub(crate) fn image_step(&self, vertex: &Vertex, reference: &str) -> anyhow::Result<Done> {
        let id = self.counter.next();
        let name = vertex.display_name();
        let started = Instant::now();
        self.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated: false,
        });
        let (manifest, state) = self
            .resolve_image(reference, &vertex.platform, id)
            .with_context(|| name.clone())?;
        // Snapshots now, so RUN steps find them (in parallel inside the store).
        self.store
            .ensure_snapshots_for(
                &self
                    .store
                    .layout()
                    .read_json(manifest.digest(), "image manifest")?,
                state.config.rootfs().diff_ids(),
            )
            .with_context(|| name.clone())?;
        // ONBUILD triggers of the base run right after FROM, in a child build's order, and
        // are not inherited (as Docker).
        let mut state = state;
        let triggers: Vec<String> = state
            .extra
            .remove("OnBuild")
            .and_then(|triggers| serde_json::from_value(triggers).ok())
            .unwrap_or_default();
        let mut key = Key::new(vertex, None);
        key.add("image", manifest.digest().as_ref());
        self.sink.emit(Event::Finished {
            vertex: id,
            duration: started.elapsed(),
        });
        let mut done = Done {
            state,
            key: key.finish(),
        };
        for (index, trigger) in triggers.iter().enumerate() {
            done = self.onbuild_trigger(vertex, index, trigger, &done)?;
        }
        Ok(done)
    }

    /// Runs one `ONBUILD` trigger of a base image as a step after its `FROM`.
    pub(crate) fn onbuild_trigger(
        &self,
        vertex: &Vertex,
        index: usize,
        trigger: &str,
        parent: &Done,
    ) -> anyhow::Result<Done> {
        let name = vertex.display_name();
        let bad = |message: String| -> anyhow::Error {
            Failure::bad_input(format_args!("{name}: ONBUILD {trigger}: {message}")).into()
        };
        let tree = dockerfile::parse(&format!("FROM scratch\n{trigger}\n"))
            .map_err(|e| bad(e.to_string()))?;
        let stages = dockerfile::stages(&tree).map_err(|e| bad(e.to_string()))?;
        let instruction = stages
            .stages
            .first()
            .and_then(|stage| stage.instructions.first())
            .ok_or_else(|| bad("not an instruction".to_owned()))?;
        let reads_stage = match instruction {
            Instruction::Copy(copy) => copy.from.is_some(),
            Instruction::Run(run) => run.mounts.iter().any(|mount| mount.from.is_some()),
            _ => false,
        };
        if reads_stage {
            return Err(Failure::unsupported(format_args!(
                "{name}: ONBUILD {trigger}: triggers reading other stages"
            ))
            .into());
        }
        let expander = Expander::new('\\');
        let instruction = instruction
            .expand(&expander, &parent.state.env())
            .map_err(|e| bad(e.to_string()))?;
        let mut id = Key(Sha256::new());
        id.add("onbuild-of", &vertex.id);
        id.add("index", &index.to_string());
        id.add("trigger", trigger);
        let resolved = ResolvedInstruction {
            instruction,
            args: Vec::new(),
            env: Vec::new(),
        };
        let mut step = vertex.clone();
        step.id = id.finish();
        step.inputs = Vec::new();
        step.op = Op::Step {
            instruction: Box::new(resolved.clone()),
        };
        self.step_with(&step, &resolved, parent, &[], false)
    }
}

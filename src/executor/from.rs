//! `FROM`: resolving an image for a platform (the store's copy, else the registry) and the
//! base image step. A base image's `ONBUILD` triggers are not run here: the pipeline reads
//! them before planning and the plan runs them as the steps after the `FROM`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest};

use super::error::{ExecutorError, Within as _};
use super::materials::Material;
use super::services::Services;
use super::state::Done;
use crate::cache::Key;
use crate::oci::{ImageLayer, ImageState};
use crate::plan::Vertex;
use crate::progress::{Event, VertexId};
use crate::registry::{self, ImageRef, SinkProgress};

/// Resolves an image for a platform: the store's copy, else the registry.
/// What it resolved to is recorded as a material of every target `step` is needed by.
pub(crate) fn resolve_image(
    services: &Services<'_>,
    reference: &str,
    step: &Vertex,
    vertex: VertexId,
) -> Result<(Descriptor, ImageState), ExecutorError> {
    let platform = &step.platform;
    let image = ImageRef::parse(reference).map_err(|error| ExecutorError::BadReference {
        reference: reference.to_owned(),
        reason: error.to_string(),
    })?;
    let progress = Arc::new(SinkProgress::aggregate(services.sink.clone(), vertex));
    let layout = services.store.layout();
    let pulled = if services.options.pull {
        let choice = registry::PlatformChoice::One(platform.clone());
        services
            .runtime
            .block_on(registry::pull::pull_reference(
                services.registry.clone(),
                layout,
                &image,
                &choice,
                progress,
            ))?
            .images
            .into_iter()
            .next()
            .ok_or_else(|| ExecutorError::BaseImage {
                reference: reference.to_owned(),
                reason: format!("nothing pulled for {platform}"),
            })?
    } else {
        services.runtime.block_on(registry::pull::resolve(
            services.registry.clone(),
            layout,
            &image,
            platform,
            progress,
        ))?
    };
    let state = image_state(
        services,
        reference,
        &pulled.document,
        pulled.document.config().digest(),
    )?;
    services.materials.record(
        step,
        &Material::Image {
            reference: reference.to_owned(),
            platform: platform.clone(),
            digest: pulled.manifest.digest().to_string(),
        },
    );
    Ok((pulled.manifest, state))
}

/// The state of an image in the store: its layers (blobs with their diff_ids) and its
/// config, with the Docker fields the OCI type has no room for (`reference` names it in
/// errors).
pub(crate) fn image_state(
    services: &Services<'_>,
    reference: &str,
    manifest: &ImageManifest,
    config_digest: &Digest,
) -> Result<ImageState, ExecutorError> {
    let layout = services.store.layout();
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
    if diff_ids.len() != manifest.layers().len() {
        return Err(ExecutorError::BaseImage {
            reference: reference.to_owned(),
            reason: format!(
                "{} layers but {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| {
            Ok(ImageLayer {
                blob: Some(blob.clone()),
                diff_id: Digest::from_str(diff_id).map_err(|error| ExecutorError::BaseImage {
                    reference: reference.to_owned(),
                    reason: format!("diff_id {diff_id}: {error}"),
                })?,
                clamp: None,
                own: false,
            })
        })
        .collect::<Result<Vec<_>, ExecutorError>>()?;
    Ok(ImageState {
        layers,
        config,
        extra,
    })
}

/// `FROM image`: the image for the vertex's platform, its snapshots unpacked, without the
/// `ONBUILD` triggers it carries (they are not inherited). The plan read them before the
/// build and runs them as the steps that follow (`planned`); an image that carries others
/// now (moved tag, config unreadable then) is refused rather than built without them.
pub(crate) fn base_image(
    services: &Services<'_>,
    vertex: &Vertex,
    reference: &str,
    planned: &[String],
) -> Result<Done, ExecutorError> {
    let id = services.counter.next();
    let name = vertex.display_name();
    let started = Instant::now();
    services.sink.emit(Event::Started {
        vertex: id,
        name: name.clone(),
        emulated: false,
    });
    let (manifest, state) =
        resolve_image(services, reference, vertex, id).within(|| name.clone())?;
    // Snapshots now, so RUN steps find them (in parallel inside the store).
    services
        .store
        .ensure_snapshots_for(
            &services
                .store
                .layout()
                .read_json(manifest.digest(), "image manifest")?,
            state.config.rootfs().diff_ids(),
        )
        .within(|| name.clone())?;
    // The triggers are not inherited (as Docker).
    let mut state = state;
    let triggers: Vec<String> = state
        .extra
        .remove("OnBuild")
        .and_then(|triggers| serde_json::from_value(triggers).ok())
        .unwrap_or_default();
    if triggers != planned {
        return Err(ExecutorError::BaseImage {
            reference: reference.to_owned(),
            reason: format!(
                "its ONBUILD triggers {triggers:?} are not those the build planned with \
                 ({planned:?}, read before the build); build again"
            ),
        })
        .within(|| name.clone());
    }
    let mut key = Key::new(&vertex.id, None);
    key.add("image", manifest.digest().as_ref());
    ensure_path(&mut state, &mut key);
    services.sink.emit(Event::Finished {
        vertex: id,
        duration: started.elapsed(),
    });
    Ok(Done::new(state, key.finish()))
}

/// A stage's start, as BuildKit's "make sure that PATH is always set": a base whose `Env`
/// has no `PATH` (scratch, an image without one) gets the default one added to its `Env`,
/// so it is in the image's config and a later `ENV PATH=...:$PATH` replaces it in place.
/// The key says so (a state cached before without it is not taken).
pub(crate) fn ensure_path(state: &mut ImageState, key: &mut Key) {
    if state.env().iter().any(|(name, _)| name == "PATH") {
        return;
    }
    let mut cfg = state.cfg();
    let mut env = cfg.env().clone().unwrap_or_default();
    env.push(format!("PATH={}", crate::sandbox::child::DEFAULT_PATH));
    cfg.set_env(Some(env));
    state.set_cfg(cfg);
    key.add("default-path", crate::sandbox::child::DEFAULT_PATH);
}

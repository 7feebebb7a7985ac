//! Image assembly: configs, manifests and the index.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::anyhow;
use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::export::{Built, BuiltImage};
use crate::layer::{self, TreeKind};
use crate::oci::image as oci_image;
use crate::platform::Platform;
use crate::progress::Event;

use super::scheduler::Ctx;
use crate::oci::ImageState;
use crate::store::StoreError;

impl Ctx<'_> {
    /// `states` with a blob for every layer: a layer kept as its snapshot gets the blob made
    /// earlier from that snapshot (in this build or another), else one is written now from
    /// the snapshot, several layers at once. The blob is the one an eager commit would have
    /// written (same tar, same compressor), and its diff_id is checked against the
    /// snapshot's.
    pub(crate) fn ensure_blobs(&self, states: &[&ImageState]) -> anyhow::Result<Vec<ImageState>> {
        let media_type = self.options.compression.media_type();
        let mut known: HashMap<Digest, Descriptor> = HashMap::new();
        let mut missing: Vec<(Digest, Option<i64>)> = Vec::new();
        for layer in states.iter().flat_map(|state| &state.layers) {
            if layer.blob.is_some() || known.contains_key(&layer.diff_id) {
                continue;
            }
            if missing.iter().any(|(diff_id, _)| diff_id == &layer.diff_id) {
                continue;
            }
            match self.store.layer_blob(&layer.diff_id, &media_type)? {
                Some(blob) => {
                    known.insert(layer.diff_id.clone(), blob);
                }
                None => missing.push((layer.diff_id.clone(), layer.clamp)),
            }
        }
        if !missing.is_empty() {
            let id = self.counter.next();
            let name = match missing.len() {
                1 => "compressing 1 layer".to_owned(),
                count => format!("compressing {count} layers"),
            };
            self.sink.emit(Event::Started {
                vertex: id,
                name: name.clone(),
                emulated: false,
            });
            let started = Instant::now();
            if let Some((diff_id, _)) = missing
                .iter()
                .find(|(diff_id, _)| self.store.snapshot(diff_id).is_none())
            {
                let error = anyhow::Error::new(StoreError::MissingSnapshot {
                    diff_id: diff_id.clone(),
                });
                self.sink.emit(Event::Failed {
                    vertex: id,
                    duration: started.elapsed(),
                    message: error.to_string(),
                });
                return Err(error);
            }
            let jobs: Vec<_> = missing
                .iter()
                .map(|(diff_id, clamp)| {
                    move || self.tree_blob(&self.store.snapshot_path(diff_id), diff_id, *clamp)
                })
                .collect();
            match layer::commit_in_parallel(jobs) {
                Ok(blobs) => {
                    for blob in blobs {
                        self.store.put_layer_blob(&blob.diff_id, &blob.descriptor)?;
                        known.insert(blob.diff_id, blob.descriptor);
                    }
                    self.sink.emit(Event::Finished {
                        vertex: id,
                        duration: started.elapsed(),
                    });
                }
                Err(error) => {
                    self.sink.emit(Event::Failed {
                        vertex: id,
                        duration: started.elapsed(),
                        message: error.to_string(),
                    });
                    return Err(anyhow::Error::new(error).context(name));
                }
            }
        }
        Ok(states
            .iter()
            .map(|state| {
                let mut state = (*state).clone();
                for layer in &mut state.layers {
                    if layer.blob.is_none() {
                        layer.blob = known.get(&layer.diff_id).cloned();
                        layer.clamp = None;
                    }
                }
                state
            })
            .collect())
    }

    /// Writes the blob of a step's layer from `tree` (its upper directory, or its snapshot),
    /// checking that the tar has the diff_id the step recorded.
    pub(crate) fn tree_blob(
        &self,
        tree: &std::path::Path,
        diff_id: &Digest,
        clamp: Option<i64>,
    ) -> Result<layer::LayerBlob, layer::LayerError> {
        let blob = layer::write_tree_layer(
            self.store.layout(),
            tree,
            TreeKind::OverlayUpper,
            self.options.compression,
            clamp,
        )?;
        if &blob.diff_id != diff_id {
            return Err(layer::LayerError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual: blob.diff_id,
            });
        }
        Ok(blob)
    }
}

/// Writes each target's config and manifest, and the index over them.
pub(crate) fn assemble(ctx: &Ctx<'_>) -> anyhow::Result<Built> {
    let results = ctx
        .results
        .lock()
        .map_err(|_| anyhow!("a build thread panicked"))?;
    let mut images = Vec::new();
    let mut seen: HashMap<&Platform, ()> = HashMap::new();
    let mut targets = Vec::new();
    for target in &ctx.graph.images {
        if seen.insert(&target.platform, ()).is_some() {
            continue;
        }
        let Some(Some(Ok(done))) = results.get(target.vertex) else {
            return Err(anyhow!(
                "the target vertex for {} did not finish",
                target.platform
            ));
        };
        targets.push((target, done));
    }
    // The images' layers kept as snapshots are compressed now, all at once.
    let states: Vec<&ImageState> = targets.iter().map(|(_, done)| &done.state).collect();
    let states = ctx.ensure_blobs(&states)?;
    for ((target, done), state) in targets.into_iter().zip(states) {
        let mut config = done.state.config.clone();
        // As BuildKit: the time of the last step (so a fully cached rebuild is identical),
        // or SOURCE_DATE_EPOCH.
        let created = match ctx.options.source_date_epoch {
            Some(_) => ctx.created.clone(),
            None => config
                .history()
                .as_ref()
                .and_then(|history| history.last())
                .and_then(|entry| entry.created().clone())
                .unwrap_or_else(|| ctx.created.clone()),
        };
        config.set_created(Some(created));
        let mut value = serde_json::to_value(&config)?;
        if !done.state.extra.is_empty() {
            if let Some(object) = value.as_object_mut() {
                let inner = object
                    .entry("config")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(inner) = inner.as_object_mut() {
                    for (field, extra) in &done.state.extra {
                        inner.insert(field.clone(), extra.clone());
                    }
                }
            }
        }
        let config_descriptor =
            oci_image::write_json_blob(ctx.store.layout(), MediaType::ImageConfig, &value)?;
        let manifest = oci_image::build_manifest(config_descriptor, state.blobs()?, None);
        let descriptor = ctx
            .store
            .put_manifest(&manifest, Some(oci_image::config_platform(&config)))?;
        images.push(BuiltImage {
            platform: target.platform.clone(),
            manifest: descriptor,
        });
    }
    let index = ctx
        .store
        .put_index(images.iter().map(|image| image.manifest.clone()).collect())?;
    Ok(Built {
        images,
        index,
        explicit_platforms: ctx.options.explicit_platforms,
    })
}

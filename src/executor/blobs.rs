//! Layer blobs made from snapshots: a `RUN`, `COPY` or `ADD` step keeps its layer as a
//! snapshot with its diff_id; the blob (the same tar an eager commit would have written, compressed) is made
//! when an image, a push or a cache export needs it, several at once, and remembered in the
//! store for the next build.

use std::collections::HashMap;
use std::time::Instant;

use oci_spec::image::{Descriptor, Digest};

use super::error::ExecutorError;
use super::services::Services;
use crate::layer::{self, TreeKind};
use crate::oci::ImageState;
use crate::progress::Event;
use crate::store::StoreError;

/// `states` with a blob for every layer: a layer kept as its snapshot gets the blob made
/// earlier from that snapshot (in this build or another), else one is written now from
/// the snapshot, several layers at once. The blob is the one an eager commit would have
/// written (same tar, same compressor), and its diff_id is checked against the
/// snapshot's.
pub(crate) fn ensure_blobs(
    services: &Services<'_>,
    states: &[&ImageState],
) -> Result<Vec<ImageState>, ExecutorError> {
    let media_type = services.options.compression.media_type();
    let mut known: HashMap<Digest, Descriptor> = HashMap::new();
    let mut missing: Vec<(Digest, Option<i64>)> = Vec::new();
    for layer in states.iter().flat_map(|state| &state.layers) {
        if layer.blob.is_some() || known.contains_key(&layer.diff_id) {
            continue;
        }
        if missing.iter().any(|(diff_id, _)| diff_id == &layer.diff_id) {
            continue;
        }
        match services.store.layer_blob(&layer.diff_id, &media_type)? {
            Some(blob) => {
                known.insert(layer.diff_id.clone(), blob);
            }
            None => missing.push((layer.diff_id.clone(), layer.clamp)),
        }
    }
    if !missing.is_empty() {
        let id = services.counter.next();
        let name = match missing.len() {
            1 => "compressing 1 layer".to_owned(),
            count => format!("compressing {count} layers"),
        };
        services.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated: false,
        });
        let started = Instant::now();
        if let Some((diff_id, _)) = missing
            .iter()
            .find(|(diff_id, _)| services.store.snapshot(diff_id).is_none())
        {
            let error = StoreError::MissingSnapshot {
                diff_id: diff_id.clone(),
            };
            services.sink.emit(Event::Failed {
                vertex: id,
                duration: started.elapsed(),
                message: error.to_string(),
            });
            return Err(error.into());
        }
        let jobs: Vec<_> = missing
            .iter()
            .map(|(diff_id, clamp)| {
                move || {
                    tree_blob(
                        services,
                        &services.store.snapshot_path(diff_id),
                        diff_id,
                        *clamp,
                    )
                }
            })
            .collect();
        match layer::commit_in_parallel(jobs) {
            Ok(blobs) => {
                for blob in blobs {
                    services
                        .store
                        .put_layer_blob(&blob.diff_id, &blob.descriptor)?;
                    known.insert(blob.diff_id, blob.descriptor);
                }
                services.sink.emit(Event::Finished {
                    vertex: id,
                    duration: started.elapsed(),
                });
            }
            Err(error) => {
                services.sink.emit(Event::Failed {
                    vertex: id,
                    duration: started.elapsed(),
                    message: error.to_string(),
                });
                return Err(ExecutorError::Within {
                    context: name,
                    source: Box::new(error.into()),
                });
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
    services: &Services<'_>,
    tree: &std::path::Path,
    diff_id: &Digest,
    clamp: Option<i64>,
) -> Result<layer::LayerBlob, layer::LayerError> {
    let blob = layer::write_tree_layer(
        services.store.layout(),
        tree,
        TreeKind::OverlayUpper,
        services.options.compression,
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

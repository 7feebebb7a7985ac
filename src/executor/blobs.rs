//! Layer blobs made from snapshots: a `RUN`, `COPY` or `ADD` step keeps its layer as a
//! snapshot with its diff_id; the blob (the same tar an eager commit would have written, compressed) is made
//! when an image, a push or a cache export needs it, several at once, and remembered in the
//! store for the next build, per compression and level. The layers of an exported image's
//! chain are made earlier, in the background, as their steps commit ([`super::eager`]):
//! this module then finds their blobs in the store, or waits for the one being made. With `force-compression=true` the
//! layers that came with a blob (base images, imported caches) are converted too when
//! their compression is not the build's, as BuildKit's converter does: decompressed,
//! recompressed, their diff_id checked.

use std::collections::HashMap;
use std::time::Instant;

use oci_spec::image::{Descriptor, Digest};

use super::error::ExecutorError;
use super::services::Services;
use crate::layer::{self, Compression, TreeKind};
use crate::oci::ImageState;
use crate::progress::Event;
use crate::store::StoreError;

/// `states` with a blob for every layer at `compression` (the build's, or a cache
/// export's own), converting layers with a blob of another algorithm when `force`: a
/// layer kept as its snapshot gets the blob made earlier from that snapshot at that
/// compression (in this build or another), else one is written now from the snapshot,
/// several layers at once. The blob is the one an eager commit would have
/// written (same tar, same compressor), and its diff_id is checked against the
/// snapshot's.
pub(crate) fn ensure_blobs(
    services: &Services<'_>,
    states: &[&ImageState],
    compression: Compression,
    force: bool,
) -> Result<Vec<ImageState>, ExecutorError> {
    if let Some(eager) = &services.eager {
        // A layer being compressed in the background is waited for, not made twice.
        eager.claim(
            states
                .iter()
                .flat_map(|state| &state.layers)
                .map(|layer| &layer.diff_id),
            compression,
        );
    }
    let mut known: HashMap<Digest, Descriptor> = HashMap::new();
    let mut missing: Vec<(Digest, Option<i64>)> = Vec::new();
    // Layers with a blob of another compression, converted (force-compression=true).
    let mut convert: Vec<(Digest, Descriptor)> = Vec::new();
    for layer in states.iter().flat_map(|state| &state.layers) {
        let foreign = layer
            .blob
            .as_ref()
            .filter(|blob| stale(layer, blob, compression, force));
        if (layer.blob.is_some() && foreign.is_none()) || known.contains_key(&layer.diff_id) {
            continue;
        }
        if missing.iter().any(|(diff_id, _)| diff_id == &layer.diff_id)
            || convert.iter().any(|(diff_id, _)| diff_id == &layer.diff_id)
        {
            continue;
        }
        match services.store.layer_blob(&layer.diff_id, compression)? {
            Some(blob) => {
                known.insert(layer.diff_id.clone(), blob);
            }
            None => match foreign {
                Some(blob) => convert.push((layer.diff_id.clone(), blob.clone())),
                None => missing.push((layer.diff_id.clone(), layer.clamp)),
            },
        }
    }
    if !convert.is_empty() {
        known.extend(convert_blobs(services, &convert, compression)?);
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
                    tree_blob_at(
                        services,
                        &services.store.snapshot_path(diff_id),
                        diff_id,
                        *clamp,
                        compression,
                    )
                }
            })
            .collect();
        match layer::commit_in_parallel(jobs) {
            Ok(blobs) => {
                for blob in blobs {
                    super::eager::log_reused_blocks(&services.sink, id, &blob);
                    services
                        .store
                        .put_layer_blob(&blob.diff_id, &blob.descriptor, compression)?;
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
                let foreign = layer
                    .blob
                    .as_ref()
                    .is_some_and(|blob| stale(layer, blob, compression, force));
                if layer.blob.is_none() || foreign {
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
    tree_blob_at(services, tree, diff_id, clamp, services.options.compression)
}

/// As [`tree_blob`], at `compression` (a cache export's own).
fn tree_blob_at(
    services: &Services<'_>,
    tree: &std::path::Path,
    diff_id: &Digest,
    clamp: Option<i64>,
    compression: Compression,
) -> Result<layer::LayerBlob, layer::LayerError> {
    let blob = layer::write_tree_layer(
        services.store.layout(),
        tree,
        TreeKind::OverlayUpper,
        compression,
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

/// Whether a layer's existing blob may not be the one `compression` asks for: a blob a step
/// of a build wrote ([`ImageLayer::own`](crate::oci::ImageLayer)) is at that build's compression, so it is
/// looked up at this one (the store remembers each compression's blob) or converted; a
/// pulled or imported one only with `force` and another algorithm.
fn stale(
    layer: &crate::oci::ImageLayer,
    blob: &Descriptor,
    compression: Compression,
    force: bool,
) -> bool {
    layer.own || (force && needs_conversion(blob, compression))
}

/// Whether a layer's existing blob is of another compression than `compression`: its
/// media type says another algorithm (a level cannot be read from a blob; as BuildKit, a
/// blob of the same algorithm is kept whatever its level).
fn needs_conversion(blob: &Descriptor, compression: Compression) -> bool {
    Compression::of_media_type(blob.media_type())
        .is_none_or(|own| own.algorithm() != compression.algorithm())
}

/// Converts each layer blob to the build's compression (several at once), remembers each
/// result in the store, and returns them by diff_id.
fn convert_blobs(
    services: &Services<'_>,
    layers: &[(Digest, Descriptor)],
    compression: Compression,
) -> Result<Vec<(Digest, Descriptor)>, ExecutorError> {
    let name = match layers.len() {
        1 => format!("converting 1 layer to {compression}"),
        count => format!("converting {count} layers to {compression}"),
    };
    let jobs: Vec<_> = layers
        .iter()
        .map(|(diff_id, blob)| {
            move || layer::convert_blob(services.store.layout(), blob, diff_id, compression)
        })
        .collect();
    let blobs = services.in_vertex(name, || layer::commit_in_parallel(jobs))?;
    for blob in &blobs {
        services
            .store
            .put_layer_blob(&blob.diff_id, &blob.descriptor, compression)?;
    }
    Ok(blobs
        .into_iter()
        .map(|blob| (blob.diff_id, blob.descriptor))
        .collect())
}

//! What the build hands on: each target's image (config and manifest) and the index over
//! them, as a [`Built`] for the exporter, one per layer compression the outputs ask for
//! (the same configs); and the cache records `--cache-to` exports. The layers kept as
//! snapshots are compressed here, all the images' at once.

use std::collections::HashMap;
use std::sync::Arc;

use oci_spec::image::{Descriptor, MediaType};

use super::blobs::ensure_blobs;
use super::error::ExecutorError;
use super::services::Services;
use super::state::{Done, Results};
use crate::cache;
use crate::layer::Compression;
use crate::oci::ImageState;
use crate::oci::annotation::AnnotationKind;
use crate::oci::image as oci_image;
use crate::plan::{BuildGraph, Op};
use crate::platform::Platform;
use crate::progress::Event;

/// What a build produced, all of it already written to the store's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// One manifest per target platform, in the order the user gave the platforms.
    pub images: Vec<BuiltImage>,
    /// The index over `images` (also for a single platform: buildx pushes an index for
    /// `--platform` builds too; a single-platform build without `--platform` may leave the
    /// manifest alone, see [`Built::result`]).
    pub index: Descriptor,
    /// Whether the result is the index even for one platform: the user asked for
    /// platforms explicitly (`--platform`), or the index holds attestations
    /// (`attestation-layout=buildx`).
    pub explicit_platforms: bool,
}

/// One platform's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The target platform.
    pub platform: Platform,
    /// Its manifest, in the store.
    pub manifest: Descriptor,
}

impl Built {
    /// What a tag names: the index when several platforms were built or any was asked for
    /// explicitly, else the single manifest (as `docker build` gives).
    pub fn result(&self) -> &Descriptor {
        match self.images.as_slice() {
            [only] if !self.explicit_platforms => &only.manifest,
            _ => &self.index,
        }
    }
}

/// Writes each target's config, and for each layer compression of the build (its own,
/// then each of [`BuildOptions::more_compressions`](super::BuildOptions)) one set of
/// manifests and the index over them: the first [`Built`] is the build's compression's,
/// the others follow in that order. The configs are the same in every set (the layers'
/// diff_ids do not change with their compression; an inline cache names the first set's
/// blobs).
pub(crate) fn images(
    services: &Services<'_>,
    graph: &BuildGraph,
    results: &Results,
) -> Result<Vec<Built>, ExecutorError> {
    let mut seen: HashMap<&Platform, ()> = HashMap::new();
    let mut targets = Vec::new();
    for target in &graph.images {
        if seen.insert(&target.platform, ()).is_some() {
            continue;
        }
        let Some(done) = results.get(target.vertex) else {
            return Err(ExecutorError::Internal(format!(
                "the target vertex for {} did not finish",
                target.platform
            )));
        };
        targets.push((target, done));
    }
    let options = services.options;
    let states: Vec<&ImageState> = targets.iter().map(|(_, done)| &done.state).collect();
    let mut sets = Vec::new();
    let mut configs: Vec<(Descriptor, Platform)> = Vec::new();
    let compressions = std::iter::once((options.compression, options.force_compression))
        .chain(options.more_compressions.iter().copied());
    for (compression, force) in compressions {
        // The images' layers kept as snapshots are compressed now, all at once.
        let states = ensure_blobs(services, &states, compression, force)?;
        let mut images = Vec::new();
        for (position, ((target, done), state)) in targets.iter().zip(states).enumerate() {
            let layers = state.blobs()?;
            if configs.len() == position {
                configs.push(config(services, graph, results, target, done, &layers)?);
            }
            let (config_descriptor, config_platform) = &configs[position];
            let manifest = oci_image::build_manifest(
                config_descriptor.clone(),
                layers,
                Some(annotations(
                    services,
                    AnnotationKind::Manifest,
                    Some(&target.platform),
                )),
            );
            let mut descriptor = services
                .store
                .put_manifest(&manifest, Some(config_platform))?;
            set_annotations(
                &mut descriptor,
                annotations(
                    services,
                    AnnotationKind::ManifestDescriptor,
                    Some(&target.platform),
                ),
            );
            images.push(BuiltImage {
                platform: target.platform.clone(),
                manifest: descriptor,
            });
        }
        let mut index = services.store.put_index_annotated(
            images.iter().map(|image| image.manifest.clone()).collect(),
            annotations(services, AnnotationKind::Index, None),
        )?;
        set_annotations(
            &mut index,
            annotations(services, AnnotationKind::IndexDescriptor, None),
        );
        sets.push(Built {
            images,
            index,
            explicit_platforms: services.options.explicit_platforms,
        });
    }
    Ok(sets)
}

/// Writes the config of `target`'s image (its state `done`, its layers `layers` at the
/// build's own compression) and returns its descriptor and the platform it names.
fn config(
    services: &Services<'_>,
    graph: &BuildGraph,
    results: &Results,
    target: &crate::plan::TargetImage,
    done: &Done,
    layers: &[Descriptor],
) -> Result<(Descriptor, Platform), ExecutorError> {
    let options = services.options;
    let mut config = done.state.config.clone();
    // As BuildKit: the time of the last step (so a fully cached rebuild is identical),
    // or SOURCE_DATE_EPOCH.
    let created = match options.source_date_epoch {
        Some(_) => services.created.clone(),
        None => config
            .history()
            .as_ref()
            .and_then(|history| history.last())
            .and_then(|entry| entry.created().clone())
            .unwrap_or_else(|| services.created.clone()),
    };
    config.set_created(Some(created));
    if !options.labels.is_empty() {
        // `--label`: after the Dockerfile's `LABEL`s, which they override (as buildx).
        let mut inner = config.config().clone().unwrap_or_default();
        let mut labels = inner.labels().clone().unwrap_or_default();
        for (key, value) in &options.labels {
            labels.insert(key.clone(), value.clone());
        }
        inner.set_labels(Some(labels));
        config.set_config(Some(inner));
    }
    let mut value = serde_json::to_value(&config).map_err(|source| ExecutorError::Json {
        what: "an image config",
        source,
    })?;
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
    if options.cache.inline {
        // `--cache-to type=inline`: the records of the image's own steps (mode=min).
        let records = step_records(
            services,
            graph,
            results,
            chain(graph, target.vertex),
            false,
            (options.compression, options.force_compression),
        )?;
        if let (Some(object), Some(inline)) = (
            value.as_object_mut(),
            cache::inline::encode(&records, layers),
        ) {
            object.insert(cache::inline::CONFIG_KEY.to_owned(), inline);
        }
    }
    let descriptor =
        oci_image::write_json_blob(services.store.layout(), MediaType::ImageConfig, &value)?;
    Ok((descriptor, Platform::of_config(&config)))
}

/// The `--annotation`s of `kind` for a manifest of `platform` (`None`: the index's).
fn annotations(
    services: &Services<'_>,
    kind: AnnotationKind,
    platform: Option<&Platform>,
) -> HashMap<String, String> {
    services
        .options
        .annotations
        .iter()
        .filter(|annotation| annotation.kind.unwrap_or(AnnotationKind::Manifest) == kind)
        .filter(|annotation| platform.is_none() || annotation.applies_to(platform))
        .map(|annotation| (annotation.key.clone(), annotation.value.clone()))
        .collect()
}

/// Adds `annotations` to a descriptor's own.
fn set_annotations(descriptor: &mut Descriptor, annotations: HashMap<String, String>) {
    if annotations.is_empty() {
        return;
    }
    let mut all = descriptor.annotations().clone().unwrap_or_default();
    all.extend(annotations);
    descriptor.set_annotations(Some(all));
}

/// The chain of a target: its vertex and its parents', up to the stage's base.
fn chain(graph: &BuildGraph, target: usize) -> Vec<usize> {
    let mut indices = Vec::new();
    let mut vertex = Some(target);
    while let Some(index) = vertex {
        indices.push(index);
        vertex = graph.vertices[index].parent;
    }
    indices
}

/// The cache records of the steps among `indices` (each key once, in vertex order), their
/// layers compressed now at `compression` (an algorithm and level, and whether base layers
/// are converted to it); `materialize` fetches the layers imported cache hits left remote.
fn step_records(
    services: &Services<'_>,
    graph: &BuildGraph,
    results: &Results,
    mut indices: Vec<usize>,
    materialize: bool,
    (compression, force): (Compression, bool),
) -> Result<Vec<cache::Record>, ExecutorError> {
    indices.sort_unstable();
    indices.dedup();
    let mut chosen: Vec<(Platform, Arc<Done>)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for index in indices {
        let vertex = &graph.vertices[index];
        if !matches!(vertex.op, Op::Step { .. }) {
            continue;
        }
        let Some(done) = results.get(index).cloned() else {
            continue;
        };
        if !keys.insert(done.key.clone()) {
            continue;
        }
        if materialize {
            services.cache.materialize(&done.state)?;
        }
        chosen.push((vertex.platform.clone(), done));
    }
    // A cache holds blobs: layers kept as snapshots are compressed now.
    let states: Vec<&ImageState> = chosen.iter().map(|(_, done)| &done.state).collect();
    let states = ensure_blobs(services, &states, compression, force)?;
    let mut records = Vec::new();
    for ((platform, done), state) in chosen.iter().zip(states) {
        let state = state.imported();
        records.push(cache::Record {
            key: done.key.clone(),
            platform: platform.clone(),
            layers: state.blobs()?,
            state: serde_json::to_value(&state).map_err(|source| ExecutorError::Json {
                what: "a cache record",
                source,
            })?,
        });
    }
    Ok(records)
}

/// Writes one `--cache-to`: the records of the target stages' chains (`mode=min`) or of
/// every step (`mode=max`).
pub(crate) fn export_cache(
    services: &Services<'_>,
    graph: &BuildGraph,
    results: &Results,
    export: &cache::CacheExport,
) -> Result<(), ExecutorError> {
    let mut indices: Vec<usize> = Vec::new();
    match export.mode {
        cache::CacheMode::Max => indices.extend(0..graph.vertices.len()),
        cache::CacheMode::Min => {
            for target in &graph.images {
                indices.extend(chain(graph, target.vertex));
            }
        }
    }
    let local = matches!(export.location, cache::CacheLocation::Local(..));
    // The export's own compression keys, else the build's (as buildx: a cache export
    // compresses at its own `compression`, whatever the image's).
    let compression = match export.compression {
        Some(compression) => (compression, export.force_compression),
        None => (
            services.options.compression,
            services.options.force_compression,
        ),
    };
    let records = step_records(services, graph, results, indices, local, compression)?;
    let name = format!("exporting cache to {}", export.location);
    let line = services.in_vertex(name, || {
        services.runtime.block_on(cache::export(
            Arc::clone(&services.registry),
            services.store.layout(),
            export,
            records,
        ))
    })?;
    services.sink.emit(Event::Note { message: line });
    Ok(())
}

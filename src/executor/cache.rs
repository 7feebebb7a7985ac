//! Cache keys, lookups and records of the build.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};

use super::BuildOptions;
use crate::cache;
use crate::plan::{BuildGraph, Op, Vertex};
use crate::progress::Event;

use super::scheduler::Ctx;
use super::state::Done;
use crate::oci::ImageState;
use crate::registry::RegistryOptions;
use crate::store::CacheRecord;

/// Reads every `--cache-from` (the records of the platforms this build runs steps on); a
/// cache that is missing or unreadable is a warning, as in buildx.
pub(crate) fn import_caches(
    options: &BuildOptions,
    graph: &BuildGraph,
    runtime: &tokio::runtime::Runtime,
    registry: &Arc<RegistryOptions>,
    warnings: &mut Vec<String>,
) -> (HashMap<String, (ImageState, usize)>, Vec<cache::BlobSource>) {
    let mut imported = HashMap::new();
    let mut sources = Vec::new();
    if options.cache.from.is_empty() {
        return (imported, sources);
    }
    let mut platforms: Vec<String> = graph
        .vertices
        .iter()
        .map(|vertex| vertex.platform.to_string())
        .collect();
    platforms.sort();
    platforms.dedup();
    for location in &options.cache.from {
        match runtime.block_on(cache::import(Arc::clone(registry), location, &platforms)) {
            Ok(Some(found)) => {
                let index = sources.len();
                let mut count = 0;
                for record in found.records {
                    if let Ok(state) = serde_json::from_value::<ImageState>(record.state) {
                        count += 1;
                        imported.entry(record.key).or_insert((state, index));
                    }
                }
                sources.push(found.source);
                options.sink.emit(Event::Note {
                    message: format!(
                        "imported {count} cache records for {} from {location}",
                        platforms.join(", ")
                    ),
                });
            }
            Ok(None) => warnings.push(format!("--cache-from {location}: no cache there")),
            Err(error) => warnings.push(format!(
                "--cache-from {location}: {:#} (building without it)",
                anyhow::Error::new(error)
            )),
        }
    }
    (imported, sources)
}

/// Incremental cache key.
#[derive(Clone)]
pub(crate) struct Key(pub(crate) Sha256);

impl Key {
    pub(crate) fn new(vertex: &Vertex, parent: Option<&Done>) -> Self {
        let mut key = Self(Sha256::new());
        key.add("vertex", &vertex.id);
        if let Some(parent) = parent {
            key.add("parent", &parent.key);
        }
        key
    }

    pub(crate) fn add(&mut self, label: &str, value: &str) {
        self.0.update(label.as_bytes());
        self.0.update([0]);
        self.0.update(value.len().to_le_bytes());
        self.0.update(value.as_bytes());
    }

    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

impl Ctx<'_> {
    /// Looks up a cache record; emits `CACHED` and returns the state on a hit.
    pub(crate) fn cache_hit(&self, key: &str, name: &str) -> anyhow::Result<Option<ImageState>> {
        if self.options.no_cache {
            return Ok(None);
        }
        let Some(state) = self.lookup(key)? else {
            return Ok(None);
        };
        self.sink.emit(Event::Cached {
            vertex: self.counter.next(),
            name: name.to_owned(),
        });
        if let Ok(mut cached) = self.cached.lock() {
            *cached += 1;
        }
        Ok(Some(state))
    }

    /// The state recorded under `key` in the store, if its blobs are all there, else in an
    /// imported cache (its missing layers are fetched only when needed, see
    /// [`Self::materialize`]); no event.
    pub(crate) fn lookup(&self, key: &str) -> anyhow::Result<Option<ImageState>> {
        if let Some(record) = self.store.cache_record(key)? {
            if let Ok(state) = serde_json::from_value::<ImageState>(record.data) {
                let complete = state.layers.iter().all(|layer| self.store.has_layer(layer));
                if complete {
                    return Ok(Some(state));
                }
            }
        }
        let Some((state, source)) = self.imported.get(key) else {
            return Ok(None);
        };
        if let Ok(mut lazy) = self.lazy.lock() {
            for blob in state.layers.iter().filter_map(|layer| layer.blob.as_ref()) {
                if !self.store.layout().has_blob(blob.digest()) {
                    cache::note_source(self.store.layout(), &self.cache_sources[*source], blob);
                    lazy.entry(blob.digest().to_string())
                        .or_insert_with(|| (blob.clone(), *source));
                }
            }
        }
        if let Ok(mut hits) = self.imported_hits.lock() {
            hits.push(key.to_owned());
        }
        Ok(Some(state.clone()))
    }

    /// Whether `key` is only in an imported cache (the store has no complete record of it).
    pub(crate) fn imported_only(&self, key: &str) -> anyhow::Result<bool> {
        if !self.imported.contains_key(key) {
            return Ok(false);
        }
        let Some(record) = self.store.cache_record(key)? else {
            return Ok(true);
        };
        Ok(!record
            .blobs
            .iter()
            .all(|digest| self.store.layout().has_blob(digest)))
    }

    /// Fetches the layer blobs of `state` that imported cache hits left in their cache.
    pub(crate) fn materialize(&self, state: &ImageState) -> anyhow::Result<()> {
        let layout = self.store.layout();
        if state.layers.iter().all(|layer| self.store.has_layer(layer)) {
            return Ok(());
        }
        // One fetch at a time: two steps needing the same layer download it once.
        let _fetching = self
            .fetching
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?;
        let mut by_source: BTreeMap<usize, Vec<Descriptor>> = BTreeMap::new();
        {
            let lazy = self
                .lazy
                .lock()
                .map_err(|_| anyhow!("a build thread panicked"))?;
            for blob in state.layers.iter().filter_map(|layer| layer.blob.as_ref()) {
                if layout.has_blob(blob.digest()) {
                    continue;
                }
                if let Some((descriptor, source)) = lazy.get(&blob.digest().to_string()) {
                    by_source
                        .entry(*source)
                        .or_default()
                        .push(descriptor.clone());
                }
            }
        }
        for (source, blobs) in by_source {
            self.runtime
                .block_on(cache::fetch(
                    Arc::clone(&self.registry),
                    layout,
                    &self.cache_sources[source],
                    &blobs,
                ))
                .context("fetching layers of cached steps")?;
        }
        Ok(())
    }

    /// Snapshot directories of `state` (top first), fetching lazily imported layers first.
    pub(crate) fn lower_dirs(&self, state: &ImageState) -> anyhow::Result<Vec<PathBuf>> {
        self.materialize(state)?;
        Ok(self.store.lower_dirs(&state.layers)?)
    }

    /// Imported records used by this build become store records once their blobs are here
    /// (the next build finds them without the cache).
    pub(crate) fn record_imported_hits(&self) -> anyhow::Result<()> {
        let hits = self
            .imported_hits
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?
            .clone();
        for key in hits {
            let Some((state, _)) = self.imported.get(&key) else {
                continue;
            };
            let complete = state.layers.iter().all(|layer| self.store.has_layer(layer));
            if complete && self.store.cache_record(&key)?.is_none() {
                self.record(&key, state)?;
            }
        }
        Ok(())
    }

    /// Writes one `--cache-to`: the records of the target stages' chains (`mode=min`) or of
    /// every step (`mode=max`).
    pub(crate) fn export_cache(&self, export: &cache::CacheExport) -> anyhow::Result<()> {
        let mut indices: Vec<usize> = Vec::new();
        match export.mode {
            cache::CacheMode::Max => indices.extend(0..self.graph.vertices.len()),
            cache::CacheMode::Min => {
                for target in &self.graph.images {
                    let mut vertex = Some(target.vertex);
                    while let Some(index) = vertex {
                        indices.push(index);
                        vertex = self.graph.vertices[index].parent;
                    }
                }
            }
        }
        indices.sort_unstable();
        indices.dedup();
        let mut records = Vec::new();
        let mut chosen: Vec<(String, Arc<Done>)> = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for index in indices {
            let vertex = &self.graph.vertices[index];
            if !matches!(vertex.op, Op::Step { .. }) {
                continue;
            }
            let Some(done) = self.done(index) else {
                continue;
            };
            if !keys.insert(done.key.clone()) {
                continue;
            }
            if matches!(export.location, cache::CacheLocation::Local(_)) {
                self.materialize(&done.state)?;
            }
            chosen.push((vertex.platform.to_string(), done));
        }
        // A cache holds blobs: layers kept as snapshots are compressed now.
        let states: Vec<&ImageState> = chosen.iter().map(|(_, done)| &done.state).collect();
        let states = self.ensure_blobs(&states)?;
        for ((platform, done), state) in chosen.iter().zip(states) {
            records.push(cache::Record {
                key: done.key.clone(),
                platform: platform.clone(),
                layers: state.blobs()?,
                state: serde_json::to_value(&state)?,
            });
        }
        let id = self.counter.next();
        let name = format!("exporting cache to {}", export.location);
        self.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated: false,
        });
        let started = Instant::now();
        let result = self.runtime.block_on(cache::export(
            Arc::clone(&self.registry),
            self.store.layout(),
            export,
            records,
        ));
        match result {
            Ok(line) => {
                self.sink.emit(Event::Finished {
                    vertex: id,
                    duration: started.elapsed(),
                });
                self.sink.emit(Event::Note { message: line });
                Ok(())
            }
            Err(error) => {
                self.sink.emit(Event::Failed {
                    vertex: id,
                    duration: started.elapsed(),
                    message: error.to_string(),
                });
                Err(anyhow::Error::new(error).context(name))
            }
        }
    }

    /// Records a step's result under its key.
    pub(crate) fn record(&self, key: &str, state: &ImageState) -> anyhow::Result<()> {
        let record = CacheRecord {
            blobs: state
                .layers
                .iter()
                .filter_map(|l| l.blob.as_ref().map(|blob| blob.digest().clone()))
                .collect(),
            diff_ids: state.layers.iter().map(|l| l.diff_id.clone()).collect(),
            data: serde_json::to_value(state)?,
        };
        self.store.put_cache_record(key, &record)?;
        Ok(())
    }
}

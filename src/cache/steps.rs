//! The step cache of one build: the store's cache records, and the records imported from
//! `--cache-from` (read once, before the first step).
//!
//! A lookup finds a step's [`ImageState`] by its [`super::Key`]: first in the store, where a
//! record counts only when every layer it names is there (its blob, or for a layer kept as
//! a snapshot, the snapshot); then among the imported records, whose layer blobs may still
//! be in the cache they came from: they are fetched only when something needs their bytes
//! ([`StepCache::materialize`]), and the imported records a build used become store records
//! once their blobs are here ([`StepCache::record_imported_hits`]).
//!
//! Emits nothing but the note of what was imported: `CACHED` lines are the executor's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oci_spec::image::Descriptor;
use tokio::runtime::Handle;

use super::{BlobSource, CacheError, CacheLocation, fetch, import, note_source};
use crate::oci::ImageState;
use crate::platform::Platform;
use crate::progress::{Event, SharedSink};
use crate::registry::RegistryOptions;
use crate::store::{CacheRecord, Store};

/// The step cache of one build.
pub struct StepCache {
    store: Store,
    registry: Arc<RegistryOptions>,
    runtime: Handle,
    /// Records read from `--cache-from`: key → (state, index into `sources`).
    imported: HashMap<String, (ImageState, usize)>,
    sources: Vec<BlobSource>,
    /// Layer blobs of imported hits not in the store yet: digest → (descriptor, source).
    lazy: Mutex<HashMap<String, (Descriptor, usize)>>,
    /// Keys of the imported records used, recorded locally once their blobs are here.
    imported_hits: Mutex<Vec<String>>,
    /// Held while fetching: two steps needing the same layer download it once.
    fetching: Mutex<()>,
}

/// The maps above only grow, one entry at a time: a thread that panicked while holding a
/// lock left them consistent, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StepCache {
    /// The cache of a build on `store`, with the records of every `--cache-from` location
    /// for `platforms` (the platforms the build runs steps on). A cache that is missing or
    /// unreadable is a warning, as in buildx: returned with the cache, for the build's
    /// report. `runtime` runs the registry I/O of imports and fetches.
    pub fn import(
        store: Store,
        registry: Arc<RegistryOptions>,
        runtime: Handle,
        from: &[CacheLocation],
        platforms: &[Platform],
        sink: &SharedSink,
    ) -> (Self, Vec<String>) {
        let mut imported = HashMap::new();
        let mut sources = Vec::new();
        let mut warnings = Vec::new();
        for location in from {
            match runtime.block_on(import(Arc::clone(&registry), location, platforms)) {
                Ok(Some(found)) => {
                    let index = sources.len();
                    let mut count = 0;
                    for record in found.records {
                        if let Ok(state) = serde_json::from_value::<ImageState>(record.state) {
                            count += 1;
                            imported
                                .entry(record.key)
                                .or_insert((state.imported(), index));
                        }
                    }
                    sources.push(found.source);
                    sink.emit(Event::Note {
                        message: format!(
                            "imported {count} cache records for {} from {location}",
                            platforms
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                Ok(None) => warnings.push(format!("--cache-from {location}: no cache there")),
                Err(error) => warnings.push(format!(
                    "--cache-from {location}: {} (building without it)",
                    crate::error::chain_text(&error)
                )),
            }
        }
        let cache = Self {
            store,
            registry,
            runtime,
            imported,
            sources,
            lazy: Mutex::default(),
            imported_hits: Mutex::default(),
            fetching: Mutex::new(()),
        };
        (cache, warnings)
    }

    /// The state recorded under `key` in the store, if its layers are all there, else in an
    /// imported cache (its missing layers are fetched only when needed, see
    /// [`Self::materialize`]).
    ///
    /// # Errors
    /// The store's record cannot be read.
    pub fn lookup(&self, key: &str) -> Result<Option<ImageState>, CacheError> {
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
        {
            let mut lazy = lock(&self.lazy);
            for blob in state.layers.iter().filter_map(|layer| layer.blob.as_ref()) {
                if !self.store.layout().has_blob(blob.digest()) {
                    note_source(self.store.layout(), &self.sources[*source], blob);
                    lazy.entry(blob.digest().to_string())
                        .or_insert_with(|| (blob.clone(), *source));
                }
            }
        }
        lock(&self.imported_hits).push(key.to_owned());
        Ok(Some(state.clone()))
    }

    /// Whether `key` is only in an imported cache (the store has no complete record of it).
    ///
    /// # Errors
    /// The store's record cannot be read.
    pub fn imported_only(&self, key: &str) -> Result<bool, CacheError> {
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
    ///
    /// # Errors
    /// [`CacheError::Fetch`]: the cache they are in fails, or a blob does not match.
    pub fn materialize(&self, state: &ImageState) -> Result<(), CacheError> {
        let layout = self.store.layout();
        if state.layers.iter().all(|layer| self.store.has_layer(layer)) {
            return Ok(());
        }
        let _fetching = lock(&self.fetching);
        let mut by_source: BTreeMap<usize, Vec<Descriptor>> = BTreeMap::new();
        {
            let lazy = lock(&self.lazy);
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
                .block_on(fetch(
                    Arc::clone(&self.registry),
                    layout,
                    &self.sources[source],
                    &blobs,
                ))
                .map_err(|error| CacheError::Fetch(Box::new(error)))?;
        }
        Ok(())
    }

    /// Records a step's result under its key.
    ///
    /// # Errors
    /// The record cannot be written.
    pub fn record(&self, key: &str, state: &ImageState) -> Result<(), CacheError> {
        let record = CacheRecord {
            blobs: state
                .layers
                .iter()
                .filter_map(|l| l.blob.as_ref().map(|blob| blob.digest().clone()))
                .collect(),
            diff_ids: state.layers.iter().map(|l| l.diff_id.clone()).collect(),
            data: serde_json::to_value(state).map_err(|source| CacheError::Encode {
                key: key.to_owned(),
                source,
            })?,
        };
        self.store.put_cache_record(key, &record)?;
        Ok(())
    }

    /// Imported records used by this build become store records once their blobs are here
    /// (the next build finds them without the cache).
    ///
    /// # Errors
    /// A record cannot be read or written.
    pub fn record_imported_hits(&self) -> Result<(), CacheError> {
        let hits = lock(&self.imported_hits).clone();
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
}

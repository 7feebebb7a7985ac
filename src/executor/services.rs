//! What a step may use, and nothing more: the build's options, the store, the async runtime
//! for registry I/O, the step cache, progress, the build context (walked on first use), the
//! `RUN` slots and the build's counters. The scheduler owns the graph and every vertex's
//! result; a step gets its parent's and input stages' results as arguments and this
//! [`Services`], so a step cannot wait on another vertex or see the graph.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;

use super::BuildOptions;
use super::error::ExecutorError;
use super::materials::{ContextRead, Materials};
use super::sources::{ContextFiles, StateView};
use crate::cache::StepCache;
use crate::dockerfile::Stages;
use crate::oci::ImageState;
use crate::plan::Vertex;
use crate::platform::Platform;
use crate::progress::{Event, SharedSink, VertexCounter};
use crate::registry::RegistryOptions;
use crate::store::Store;

/// How many `RUN` steps run at once.
const MAX_RUNNING: usize = 3;

/// What the steps of one build share.
pub(crate) struct Services<'a> {
    /// What to build and how.
    pub(crate) options: &'a BuildOptions,
    /// The Dockerfile's stages (a step re-expands its instruction with the base image's
    /// environment, and a mount tells a stage from an image).
    pub(crate) stages: &'a Stages,
    /// The store.
    pub(crate) store: &'a Store,
    /// Runs registry I/O (pulls, cache fetches, `ADD` downloads) from the step threads.
    pub(crate) runtime: &'a Handle,
    /// Registry credentials and settings.
    pub(crate) registry: Arc<RegistryOptions>,
    /// Where progress goes.
    pub(crate) sink: SharedSink,
    /// Progress vertex numbers.
    pub(crate) counter: VertexCounter,
    /// Cache lookups and records.
    pub(crate) cache: StepCache,
    /// The time stamped on history entries (`SOURCE_DATE_EPOCH`, else the build's start).
    pub(crate) created: String,
    /// What the steps read from outside (images, URLs), per target platform.
    pub(crate) materials: Materials,
    /// The ssh agents of `--ssh`, by id.
    pub(crate) ssh: super::ssh::Agents,
    /// The background compression of exported layers (`None`: layers are made when the
    /// images are written).
    pub(crate) eager: Option<super::eager::Eager>,
    context: Mutex<Option<Arc<ContextFiles>>>,
    running: Mutex<usize>,
    running_changed: Condvar,
    counts: Mutex<Counts>,
    cached_keys: Mutex<std::collections::HashSet<String>>,
}

/// The build's counters, for its report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    /// Time spent running steps under emulation, per platform.
    pub(crate) emulated: BTreeMap<Platform, Duration>,
    /// `RUN` steps run in the sandbox.
    pub(crate) steps_run: usize,
    /// Steps taken from the cache.
    pub(crate) cached: usize,
}

/// A `RUN` slot, given back when dropped.
pub(crate) struct RunSlot<'s> {
    running: &'s Mutex<usize>,
    changed: &'s Condvar,
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        *lock(self.running) -= 1;
        self.changed.notify_one();
    }
}

/// The counters and slots stay meaningful after a step thread panicked while holding their
/// lock (each update is one assignment), so a poisoned lock is used as it is; the panic
/// itself fails the build (see the scheduler).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Services<'a> {
    /// Runs `work` as a progress vertex of its own named `name` (started, then finished or
    /// failed with the error's text); a failure comes back within `name`.
    pub(crate) fn in_vertex<T, E>(
        &self,
        name: String,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, ExecutorError>
    where
        E: std::fmt::Display + Into<ExecutorError>,
    {
        let vertex = self.counter.next();
        self.sink.emit(Event::Started {
            vertex,
            name: name.clone(),
            emulated: false,
        });
        let started = std::time::Instant::now();
        match work() {
            Ok(value) => {
                self.sink.emit(Event::Finished {
                    vertex,
                    duration: started.elapsed(),
                });
                Ok(value)
            }
            Err(error) => {
                self.sink.emit(Event::Failed {
                    vertex,
                    duration: started.elapsed(),
                    message: error.to_string(),
                });
                Err(ExecutorError::Within {
                    context: name,
                    source: Box::new(error.into()),
                })
            }
        }
    }

    /// The services of one build.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is one of the build's services"
    )]
    pub(crate) fn new(
        options: &'a BuildOptions,
        stages: &'a Stages,
        store: &'a Store,
        runtime: &'a Handle,
        registry: Arc<RegistryOptions>,
        cache: StepCache,
        counter: VertexCounter,
        created: String,
    ) -> Self {
        Self {
            options,
            stages,
            store,
            runtime,
            registry,
            sink: options.sink.clone(),
            counter,
            cache,
            created,
            materials: Materials::default(),
            ssh: super::ssh::Agents::default(),
            eager: None,
            context: Mutex::new(None),
            running: Mutex::new(0),
            running_changed: Condvar::new(),
            counts: Mutex::default(),
            cached_keys: Mutex::default(),
        }
    }

    /// Whether `vertex`'s step may take its result from the cache: not with `--no-cache`,
    /// nor in a stage `--no-cache-filter` names (matched in any case, as BuildKit does).
    pub(crate) fn uses_cache(&self, vertex: &Vertex) -> bool {
        !self.options.no_cache
            && !vertex.stage_name.as_deref().is_some_and(|stage| {
                self.options
                    .no_cache_filter
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(stage))
            })
    }

    /// Whether the step whose cache key is `key` was taken from the cache in this build.
    pub(crate) fn was_cached(&self, key: &str) -> bool {
        lock(&self.cached_keys).contains(key)
    }

    /// Looks up `vertex`'s cache record under `key` (none when [`Self::uses_cache`] says
    /// no); on a hit emits `CACHED` and counts it.
    ///
    /// # Errors
    /// The store's record cannot be read.
    pub(crate) fn cache_hit(
        &self,
        vertex: &Vertex,
        key: &str,
        name: &str,
    ) -> Result<Option<ImageState>, crate::cache::CacheError> {
        if !self.uses_cache(vertex) {
            return Ok(None);
        }
        let Some(state) = self.cache.lookup(key)? else {
            return Ok(None);
        };
        self.sink.emit(Event::Cached {
            vertex: self.counter.next(),
            name: name.to_owned(),
        });
        lock(&self.counts).cached += 1;
        lock(&self.cached_keys).insert(key.to_owned());
        Ok(Some(state))
    }

    /// Looks `vertex` up under its second key `by_content` after a miss under `key` (as
    /// [`Self::cache_hit`]); a hit is recorded under `key` too, so the next build finds it
    /// there without the second key, and counts as a hit of `key`.
    ///
    /// # Errors
    /// The store's record cannot be read or written.
    pub(crate) fn cache_hit_by_content(
        &self,
        vertex: &Vertex,
        key: &str,
        by_content: &str,
        name: &str,
    ) -> Result<Option<ImageState>, crate::cache::CacheError> {
        let Some(state) = self.cache_hit(vertex, by_content, name)? else {
            return Ok(None);
        };
        self.cache.record(key, &state)?;
        lock(&self.cached_keys).insert(key.to_owned());
        Ok(Some(state))
    }

    /// Snapshot directories of `state` (top first), fetching lazily imported layers first.
    ///
    /// # Errors
    /// A fetch or an unpack fails, or a snapshot is missing.
    pub(crate) fn lower_dirs(&self, state: &ImageState) -> Result<Vec<PathBuf>, ExecutorError> {
        self.cache.materialize(state)?;
        let mut dirs = self.store.lower_dirs(&state.layers)?;
        // The same layer twice (two RUNs that changed nothing each make the empty layer)
        // is one lower directory, the upper one: overlayfs refuses a directory given twice
        // (ELOOP), and the upper copy already shows all that the lower one would.
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|dir| seen.insert(dir.clone()));
        Ok(dirs)
    }

    /// A read-only view of `state`'s files (a `COPY --from` source, a bind mount).
    ///
    /// # Errors
    /// As [`Self::lower_dirs`]; the overlay cannot be mounted.
    pub(crate) fn view(&self, state: &ImageState) -> Result<StateView, ExecutorError> {
        StateView::new(self.lower_dirs(state)?, &self.store.layout().tmp_dir())
    }

    /// A fresh upper and work directory in the store's tmp directory.
    ///
    /// # Errors
    /// The directories cannot be made.
    pub(crate) fn scratch_dirs(&self) -> Result<tempfile::TempDir, ExecutorError> {
        let tmp = self.store.layout().tmp_dir();
        std::fs::create_dir_all(&tmp)?;
        let dir = tempfile::Builder::new().prefix("step-").tempdir_in(&tmp)?;
        std::fs::create_dir(dir.path().join("upper"))?;
        std::fs::create_dir(dir.path().join("work"))?;
        Ok(dir)
    }

    /// The build context after `.dockerignore`, walked on first use.
    ///
    /// # Errors
    /// The context or its `.dockerignore` cannot be read.
    pub(crate) fn context_files(&self) -> Result<Arc<ContextFiles>, ExecutorError> {
        let mut slot = lock(&self.context);
        if let Some(files) = slot.as_ref() {
            return Ok(files.clone());
        }
        let files = Arc::new(ContextFiles::load(
            &self.options.context,
            &self.options.dockerfile,
            self.store.root(),
        )?);
        *slot = Some(files.clone());
        Ok(files)
    }

    /// The build context, if a step read it.
    pub(crate) fn context_read(&self) -> Option<ContextRead> {
        lock(&self.context).clone().map(ContextRead::new)
    }

    /// Saves the build context's stat cache, if the context was read.
    pub(crate) fn save_stat_cache(&self) {
        if let Some(context) = lock(&self.context).clone() {
            context.save_stat_cache();
        }
    }

    /// Waits for a free `RUN` slot (three steps run at once).
    pub(crate) fn run_slot(&self) -> RunSlot<'_> {
        let mut running = lock(&self.running);
        while *running >= MAX_RUNNING {
            running = self
                .running_changed
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        RunSlot {
            running: &self.running,
            changed: &self.running_changed,
        }
    }

    /// Counts a `RUN` step that ran, and its time when emulated.
    pub(crate) fn count_run(&self, platform: &Platform, emulated: Option<Duration>) {
        let mut counts = lock(&self.counts);
        counts.steps_run += 1;
        if let Some(elapsed) = emulated {
            *counts.emulated.entry(platform.clone()).or_default() += elapsed;
        }
    }

    /// The counters so far.
    pub(crate) fn counts(&self) -> Counts {
        lock(&self.counts).clone()
    }
}

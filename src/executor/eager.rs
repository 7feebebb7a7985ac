//! Eager compression of the layers an output will export: as soon as a step of an exported
//! image's chain (a target stage and the stages it is based on through `FROM`) has
//! committed, its layer's blob is made in the background, so that when the last step ends
//! only the last layers are left to compress ([`super::blobs`] does the rest, as before).
//!
//! Owns the background thread and the state of each layer's job. One thread, at a lower
//! CPU priority (nice 10), compressing on a pool of one thread of its own: the steps that
//! run beside it (a `RUN` under QEMU mostly uses one core) keep the CPU they need. When the
//! export has to wait for a running job (the last layers: no step is left to run), the
//! thread and its pool go back to the normal priority and the pool grows to one thread per
//! core ([`Eager::claim`]). The blob
//! is made as [`super::blobs`] makes it (same tar, same compression and level, same bytes:
//! compression does not depend on the number of threads), its diff_id checked, and recorded
//! in the store the same way.
//!
//! One job per layer: [`Eager::claim`] (called by [`super::blobs::ensure_blobs`] before it
//! looks a layer up) takes back the jobs that have not started, which the export then
//! makes itself on every core, and waits for the one running. A job that fails records
//! nothing (the export makes the layer again and reports its error); when the build fails,
//! queued jobs are dropped and the running one ends (its blob is whole and correct, or its
//! temporary file is removed as any failed write's).
//!
//! Must not: compress a layer no output needs (build stages outside the chain, outputs
//! without image blobs, `--cache-to` alone), nor decide what an image holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use oci_spec::image::Digest;

use crate::layer::{self, CompressPool, Compression, TreeKind};
use crate::oci::ImageState;
use crate::plan::BuildGraph;
use crate::progress::{Event, SharedSink};
use crate::store::Store;

/// The nice value of the background thread and of the compressing threads it starts.
const NICENESS: i32 = 10;

/// Where a layer's job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// Waiting for the background thread.
    Queued,
    /// Being compressed.
    Running,
    /// Ended (made, failed, or taken back by the export).
    Ended,
}

/// A layer to compress.
struct Job {
    diff_id: Digest,
    clamp: Option<i64>,
    snapshot: PathBuf,
    /// Its progress vertex number (taken when queued).
    vertex: crate::progress::VertexId,
    /// Its progress vertex name.
    name: String,
}

/// The jobs' states, shared with the background thread.
#[derive(Default)]
struct Jobs {
    states: Mutex<HashMap<Digest, JobState>>,
    changed: Condvar,
    cancelled: AtomicBool,
    /// The background thread's compressing threads (made by that thread, at its priority).
    pool: OnceLock<CompressPool>,
    /// The background thread's id (0 until it runs).
    thread: AtomicI32,
    /// Whether the export has waited for a job: the work left is then on the critical
    /// path, so the thread and its pool run at the normal priority, on every core.
    hurried: AtomicBool,
}

/// The job states stay meaningful after a panic while their lock was held (each update is
/// one assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The background compression of one build.
pub(crate) struct Eager {
    compression: Compression,
    /// Per graph vertex: whether its layers belong to an exported image's chain.
    chain: Vec<bool>,
    jobs: Arc<Jobs>,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    store: Store,
}

impl Eager {
    /// The background compression of `graph`'s target chains at `compression`, writing
    /// into `store`; its progress goes to `sink`. `None` when the thread cannot be started
    /// (the layers are then made when the images are written, as without it).
    pub(crate) fn start(
        graph: &BuildGraph,
        compression: Compression,
        store: &Store,
        sink: SharedSink,
    ) -> Option<Self> {
        let mut chain = vec![false; graph.vertices.len()];
        for target in &graph.images {
            let mut next = Some(target.vertex);
            while let Some(index) = next {
                if chain.get(index).copied().unwrap_or(true) {
                    break;
                }
                chain[index] = true;
                next = graph.vertices[index].parent;
            }
        }
        let jobs = Arc::new(Jobs::default());
        let (sender, receiver) = mpsc::channel::<Job>();
        let worker = {
            let jobs = Arc::clone(&jobs);
            let store = store.clone();
            std::thread::Builder::new()
                .name("xbuild-eager".to_owned())
                .spawn(move || work(&receiver, &jobs, &store, compression, &sink))
                .ok()?
        };
        Some(Self {
            compression,
            chain,
            jobs,
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
            store: store.clone(),
        })
    }

    /// Queues the layers of `state` (the result of vertex `index`, named `name` in the
    /// progress) that are kept as snapshots and have no blob at this compression yet,
    /// when the vertex is in an exported image's chain.
    pub(crate) fn committed(
        &self,
        index: usize,
        name: &str,
        state: &ImageState,
        counter: &crate::progress::VertexCounter,
    ) {
        if !self.chain.get(index).copied().unwrap_or(false) {
            return;
        }
        let sender = lock(&self.sender);
        let Some(sender) = sender.as_ref() else {
            return;
        };
        for layer in &state.layers {
            if layer.blob.is_some() && !layer.own {
                continue;
            }
            let Some(snapshot) = self.store.snapshot(&layer.diff_id) else {
                continue;
            };
            if !matches!(
                self.store.layer_blob(&layer.diff_id, self.compression),
                Ok(None)
            ) {
                continue;
            }
            let mut states = lock(&self.jobs.states);
            if states.contains_key(&layer.diff_id) {
                continue;
            }
            states.insert(layer.diff_id.clone(), JobState::Queued);
            drop(states);
            let job = Job {
                diff_id: layer.diff_id.clone(),
                clamp: layer.clamp,
                snapshot,
                vertex: counter.next(),
                name: format!("compressing 1 layer of {name} (in the background)"),
            };
            if sender.send(job).is_err() {
                lock(&self.jobs.states).insert(layer.diff_id.clone(), JobState::Ended);
            }
        }
    }

    /// Before the export looks the layers `diff_ids` up at `compression`: takes back the
    /// jobs of these layers that have not started (the export makes them) and waits for
    /// those running, whose blobs are then in the store (or not, when they failed).
    pub(crate) fn claim<'d>(
        &self,
        diff_ids: impl IntoIterator<Item = &'d Digest>,
        compression: Compression,
    ) {
        if compression != self.compression {
            return;
        }
        let mut states = lock(&self.jobs.states);
        let mut running = Vec::new();
        for diff_id in diff_ids {
            match states.get_mut(diff_id) {
                Some(state @ JobState::Queued) => *state = JobState::Ended,
                Some(JobState::Running) => running.push(diff_id.clone()),
                Some(JobState::Ended) | None => {}
            }
        }
        if !running.is_empty() {
            self.hurry();
        }
        while running
            .iter()
            .any(|diff_id| states.get(diff_id) == Some(&JobState::Running))
        {
            states = self
                .jobs
                .changed
                .wait(states)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Eager {
    /// The export waits for a running job: nothing else is left to run beside it, so its
    /// thread and compressing threads go back to the normal priority and the pool grows to
    /// the shared pool's size (the job's blocks still queued are compressed on every core).
    /// Once per build.
    fn hurry(&self) {
        if self.jobs.hurried.swap(true, Ordering::SeqCst) {
            return;
        }
        let thread = self.jobs.thread.load(Ordering::SeqCst);
        if thread > 0 {
            layer::set_thread_niceness(thread, 0);
        }
        if let Some(pool) = self.jobs.pool.get() {
            pool.set_niceness(0);
            pool.widen(CompressPool::shared().threads());
        }
    }
}

impl Drop for Eager {
    /// Drops the queued jobs and waits for the running one (a failed build stops here).
    fn drop(&mut self) {
        self.jobs.cancelled.store(true, Ordering::SeqCst);
        lock(&self.sender).take();
        if let Some(worker) = lock(&self.worker).take() {
            // A panic of the thread leaves at most a temporary file, removed as any.
            let _ = worker.join();
        }
    }
}

/// Lowers the calling thread's CPU priority (threads it starts inherit it). Best effort: a
/// system that refuses leaves the priority as it is.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; on Linux, PRIO_PROCESS with a
    // thread id sets that thread's nice value only.
    unsafe {
        let thread = libc::gettid();
        #[allow(
            clippy::cast_sign_loss,
            reason = "a thread id is positive; setpriority takes it as id_t"
        )]
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, NICENESS);
    }
}

/// The background thread: compresses the queued layers one at a time.
fn work(
    receiver: &mpsc::Receiver<Job>,
    jobs: &Jobs,
    store: &Store,
    compression: Compression,
    sink: &SharedSink,
) {
    // SAFETY: gettid takes no arguments and cannot fail.
    jobs.thread
        .store(unsafe { libc::gettid() }, Ordering::SeqCst);
    if !jobs.hurried.load(Ordering::SeqCst) {
        lower_priority();
    }
    let pool = jobs.pool.get_or_init(|| CompressPool::new(1));
    for job in receiver {
        {
            let mut states = lock(&jobs.states);
            if jobs.cancelled.load(Ordering::SeqCst)
                || states.get(&job.diff_id) != Some(&JobState::Queued)
            {
                states.insert(job.diff_id.clone(), JobState::Ended);
                continue;
            }
            states.insert(job.diff_id.clone(), JobState::Running);
        }
        sink.emit(Event::Started {
            vertex: job.vertex,
            name: job.name.clone(),
            emulated: false,
        });
        let started = Instant::now();
        let result = make(pool, store, &job, compression);
        match result {
            Ok(blob) => {
                log_reused_blocks(sink, job.vertex, &blob);
                sink.emit(Event::Finished {
                    vertex: job.vertex,
                    duration: started.elapsed(),
                });
            }
            Err(message) => sink.emit(Event::Failed {
                vertex: job.vertex,
                duration: started.elapsed(),
                message,
            }),
        }
        lock(&jobs.states).insert(job.diff_id.clone(), JobState::Ended);
        jobs.changed.notify_all();
    }
}

/// Makes and records one layer's blob, as [`super::blobs`] does.
fn make(
    pool: &CompressPool,
    store: &Store,
    job: &Job,
    compression: Compression,
) -> Result<layer::LayerBlob, String> {
    let blob = layer::write_tree_layer_on(
        pool,
        store.layout(),
        &job.snapshot,
        TreeKind::OverlayUpper,
        compression,
        job.clamp,
    )
    .map_err(|error| error.to_string())?;
    if blob.diff_id != job.diff_id {
        return Err(layer::LayerError::DiffIdMismatch {
            expected: job.diff_id.clone(),
            actual: blob.diff_id,
        }
        .to_string());
    }
    store
        .put_layer_blob(&blob.diff_id, &blob.descriptor, compression)
        .map_err(|error| error.to_string())?;
    Ok(blob)
}

/// Says in the progress of `vertex` how many of `blob`'s gzip blocks came from the block
/// cache (nothing when its compression has no blocks).
pub(super) fn log_reused_blocks(
    sink: &crate::progress::SharedSink,
    vertex: crate::progress::VertexId,
    blob: &crate::layer::LayerBlob,
) {
    if let Some((reused, blocks)) = blob.reused_blocks {
        sink.emit(crate::progress::Event::Log {
            vertex,
            stream: crate::progress::Stream::Stdout,
            line: format!(
                "{}: {reused} of {blocks} gzip blocks reused",
                blob.descriptor.digest()
            ),
        });
    }
}

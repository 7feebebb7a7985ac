//! When vertices run: one thread per vertex of the graph, each waiting for its parent and
//! the stages it reads, then running its step; platforms side by side. The first failure
//! stops what has not started (those vertices are skipped) and is the build's error; a
//! step thread that panics fails the build instead of leaving the others waiting.
//!
//! The scheduler owns every vertex's result while the graph runs; a step sees only its
//! parent's and inputs' results and the [`Services`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::error::ExecutorError;
use super::services::Services;
use super::state::{Done, Results};
use super::{dispatch, from, named};
use crate::cache::Key;
use crate::oci::ImageState;
use crate::oci::image as oci_image;
use crate::plan::{BuildGraph, Op, Vertex};

/// A vertex's outcome once known (`Err` when it failed or was skipped).
type Slot = Option<Result<Arc<Done>, ()>>;

/// Why a vertex has no result.
enum NotDone {
    /// Another vertex failed first: this one was not run.
    Skipped,
    /// It failed.
    Failed(ExecutorError),
}

impl From<ExecutorError> for NotDone {
    fn from(error: ExecutorError) -> Self {
        Self::Failed(error)
    }
}

/// Runs the vertices of one graph.
pub(crate) struct Scheduler<'s, 'a> {
    graph: &'s BuildGraph,
    services: &'s Services<'a>,
    results: Mutex<Vec<Slot>>,
    changed: Condvar,
    failed: AtomicBool,
}

/// The slots are written once each, under the lock: a poisoned lock still holds consistent
/// slots (a panicking step thread stores its own failure, see [`Scheduler::run`]).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'s, 'a> Scheduler<'s, 'a> {
    /// A scheduler for `graph`, its steps using `services`.
    pub(crate) fn new(graph: &'s BuildGraph, services: &'s Services<'a>) -> Self {
        Self {
            graph,
            services,
            results: Mutex::new(vec![None; graph.vertices.len()]),
            changed: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// Runs every vertex; returns their results.
    ///
    /// # Errors
    /// The first step that failed (in the order failures happened); "a build thread
    /// panicked" when a step thread panicked.
    pub(crate) fn run(self) -> Result<Results, ExecutorError> {
        let errors: Mutex<Vec<ExecutorError>> = Mutex::default();
        std::thread::scope(|scope| {
            for index in 0..self.graph.vertices.len() {
                let this = &self;
                let errors = &errors;
                scope.spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| this.vertex(index)))
                        .unwrap_or(Err(NotDone::Failed(ExecutorError::WorkerPanicked)));
                    let stored = match result {
                        Ok(done) => Ok(Arc::new(done)),
                        Err(NotDone::Skipped) => Err(()),
                        Err(NotDone::Failed(error)) => {
                            this.failed.store(true, Ordering::SeqCst);
                            lock(errors).push(this.located(index, error));
                            Err(())
                        }
                    };
                    lock(&this.results)[index] = Some(stored);
                    this.changed.notify_all();
                });
            }
        });
        let mut errors = errors.into_inner().unwrap_or_else(PoisonError::into_inner);
        if !errors.is_empty() {
            return Err(errors.remove(0));
        }
        let slots = self
            .results
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Results(
            slots
                .into_iter()
                .map(|slot| slot.and_then(Result::ok))
                .collect(),
        ))
    }

    /// The error of vertex `index` at its Dockerfile lines (a `FROM` and the base's
    /// triggers: the `FROM`'s), as BuildKit reports a failed step.
    fn located(&self, index: usize, error: ExecutorError) -> ExecutorError {
        let vertex = &self.graph.vertices[index];
        let span = match &vertex.op {
            Op::Step { instruction } => Some(instruction.instruction.span()),
            Op::Scratch | Op::Image { .. } => self
                .services
                .stages
                .stages
                .get(vertex.stage)
                .map(|stage| stage.from.span),
            // A --build-context has no line of its own.
            Op::Context { .. } => None,
        };
        match span {
            Some(span) => error.located(
                &self.services.options.dockerfile.display().to_string(),
                span,
                &vertex.display_name(),
            ),
            None => error,
        }
    }

    /// The result of vertex `index`, once it is known.
    fn wait(&self, index: usize) -> Result<Arc<Done>, NotDone> {
        let mut results = lock(&self.results);
        loop {
            match &results[index] {
                Some(Ok(done)) => return Ok(done.clone()),
                Some(Err(())) => return Err(NotDone::Skipped),
                None => {
                    results = self
                        .changed
                        .wait(results)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Runs vertex `index` once its parent and inputs are done.
    fn vertex(&self, index: usize) -> Result<Done, NotDone> {
        let vertex = &self.graph.vertices[index];
        let parent = vertex.parent.map(|parent| self.wait(parent)).transpose()?;
        let inputs = vertex
            .inputs
            .iter()
            .map(|input| self.wait(*input))
            .collect::<Result<Vec<_>, _>>()?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(NotDone::Skipped);
        }
        match &vertex.op {
            Op::Scratch => Ok(scratch(vertex)),
            Op::Context { name } => Ok(named::load(self.services, vertex, name)?),
            // Its ONBUILD triggers are the planned steps that follow.
            Op::Image {
                reference,
                triggers,
            } => Ok(from::base_image(
                self.services,
                vertex,
                reference,
                triggers,
            )?),
            Op::Step { instruction } => {
                let parent = parent.ok_or_else(|| {
                    ExecutorError::Internal(format!("{}: no parent", vertex.display_name()))
                })?;
                // A stage built FROM another stage does not inherit its ONBUILD triggers
                // (they ran as its first steps), as in BuildKit.
                let from_other_stage = vertex
                    .parent
                    .is_some_and(|index| self.graph.vertices[index].stage != vertex.stage);
                let parent = if from_other_stage && parent.state.extra.contains_key("OnBuild") {
                    let mut state = parent.state.clone();
                    state.extra.remove("OnBuild");
                    Arc::new(Done {
                        state,
                        key: parent.key.clone(),
                        readers_key: parent.readers_key.clone(),
                    })
                } else {
                    parent
                };
                let done = dispatch::step(self.services, vertex, instruction, &parent, &inputs)?;
                if let Some(eager) = &self.services.eager {
                    eager.committed(
                        index,
                        &vertex.display_name(),
                        &done.state,
                        &self.services.counter,
                    );
                }
                Ok(done)
            }
        }
    }
}

/// `FROM scratch`: no layers, a config for the vertex's platform.
fn scratch(vertex: &Vertex) -> Done {
    let mut key = Key::new(&vertex.id, None);
    key.add("scratch", &vertex.platform.to_string());
    let mut state = ImageState::new(oci_image::new_image_config(&vertex.platform, None));
    from::ensure_path(&mut state, &mut key);
    Done::new(state, key.finish())
}

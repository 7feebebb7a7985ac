//! The executor: one thread per vertex of the build graph, each waiting for its parent and
//! input stages; the state of a vertex (layers + image config) is what the next one starts
//! from.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use oci_spec::image::Descriptor;

use super::{BuildOptions, BuildReport};
use crate::binfmt;
use crate::cache;
use crate::dockerfile::{
    self, CommandLine, Expander, Instruction, ResolvedInstruction, Stages, instruction,
};
use crate::error::{ExitKind, Failure};
use crate::oci::image as oci_image;
use crate::plan::{self, BuildGraph, Op, PlanOptions, Vertex};
use crate::platform::{self, Platform};
use crate::progress::{Event, SharedSink, VertexCounter};

use super::CheckArch;
use super::archcheck::check_architectures;
use super::assemble::assemble;
use super::cache::{Key, import_caches};
use super::config::{command_argv, created_by, exposed_ports};
use super::state::{Done, join_path};
use crate::oci::ImageState;
use crate::registry::RegistryOptions;
use crate::store::Store;

/// A vertex's outcome once known (`Err` when it failed or was skipped).
type Slot = Option<Result<Arc<Done>, ()>>;

/// Shared between the vertex threads.
pub(crate) struct Ctx<'a> {
    pub(crate) options: &'a BuildOptions,
    pub(crate) graph: &'a BuildGraph,
    pub(crate) stages: &'a Stages,
    pub(crate) store: Store,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) registry: Arc<RegistryOptions>,
    pub(crate) sink: SharedSink,
    pub(crate) counter: VertexCounter,
    pub(crate) context: Mutex<Option<Arc<super::sources::ContextFiles>>>,
    pub(crate) results: Mutex<Vec<Slot>>,
    pub(crate) changed: Condvar,
    pub(crate) running: Mutex<usize>,
    pub(crate) running_changed: Condvar,
    pub(crate) emulated: Mutex<BTreeMap<Platform, Duration>>,
    pub(crate) steps_run: Mutex<usize>,
    pub(crate) cached: Mutex<usize>,
    pub(crate) failed: std::sync::atomic::AtomicBool,
    pub(crate) created: String,
    /// Records read from `--cache-from`: key → (state, index into `cache_sources`).
    pub(crate) imported: HashMap<String, (ImageState, usize)>,
    pub(crate) cache_sources: Vec<cache::BlobSource>,
    /// Layer blobs of imported hits not in the store yet: digest → (descriptor, source).
    pub(crate) lazy: Mutex<HashMap<String, (Descriptor, usize)>>,
    /// Keys of the imported records used, recorded locally once their blobs are here.
    pub(crate) imported_hits: Mutex<Vec<String>>,
    pub(crate) fetching: Mutex<()>,
}

/// Builds what `options` asks for and writes the result into the store (not the tags: the
/// caller names the result, see [`crate::export`]).
///
/// # Errors
/// A Dockerfile error (exit 2, `Dockerfile:LINE: ...`), a platform the host cannot run
/// (exit 3), a failed step (exit 1, with the `xbuild debug shell` command), store, registry
/// or context failures.
pub fn run(options: &BuildOptions) -> anyhow::Result<BuildReport> {
    let file_name = options.dockerfile.display().to_string();
    let bad = |error: dockerfile::DockerfileError| {
        Failure::new(ExitKind::BadInput, error.with_file(file_name.clone()))
    };
    let bytes = std::fs::read(&options.dockerfile)
        .map_err(|error| Failure::bad_input(format_args!("cannot read {file_name}: {error}")))?;
    let tree = dockerfile::parse(&String::from_utf8_lossy(&bytes)).map_err(bad)?;
    // The parser's warnings (empty continuation lines) are not repeated here: the check
    // rule NoEmptyContinuation reports them with the build's other check warnings.
    let mut warnings: Vec<String> = Vec::new();
    let stages = dockerfile::stages(&tree).map_err(bad)?;
    let plan_options = PlanOptions {
        targets: options.targets.clone(),
        build_platform: platform::host(),
        build_args: options.build_args.clone(),
        target_stage: options.target_stage.clone(),
    };
    let graph = plan::for_targets(&stages, &plan_options).map_err(|error| match error {
        plan::PlanError::Dockerfile(error) => bad(error),
        other => match other.line() {
            Some(line) => Failure::bad_input(format_args!("{file_name}:{line}: {other}")),
            None => Failure::bad_input(other),
        },
    })?;
    warnings.extend(graph.warnings.iter().cloned());

    let store = Store::open_default().context("opening the store")?;
    ensure_runnable(&graph, options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let created = oci_image::rfc3339(options.source_date_epoch.unwrap_or_else(now));
    let registry_options = Arc::new(RegistryOptions::from_env(store.root()));
    let (imported, cache_sources) =
        import_caches(options, &graph, &runtime, &registry_options, &mut warnings);
    let ctx = Ctx {
        options,
        graph: &graph,
        stages: &stages,
        registry: registry_options,
        store,
        runtime,
        sink: options.sink.clone(),
        counter: VertexCounter::default(),
        context: Mutex::new(None),
        results: Mutex::new(vec![None; graph.vertices.len()]),
        changed: Condvar::new(),
        running: Mutex::new(0),
        running_changed: Condvar::new(),
        emulated: Mutex::default(),
        steps_run: Mutex::new(0),
        cached: Mutex::new(0),
        failed: std::sync::atomic::AtomicBool::new(false),
        created,
        imported,
        cache_sources,
        lazy: Mutex::default(),
        imported_hits: Mutex::default(),
        fetching: Mutex::new(()),
    };
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::default();
    std::thread::scope(|scope| {
        for index in 0..graph.vertices.len() {
            let ctx = &ctx;
            let errors = &errors;
            scope.spawn(move || {
                let result = ctx.vertex(index);
                let stored = match result {
                    Ok(done) => Ok(Arc::new(done)),
                    Err(error) => {
                        if error.downcast_ref::<Skipped>().is_none() {
                            ctx.failed.store(true, std::sync::atomic::Ordering::SeqCst);
                            if let Ok(mut errors) = errors.lock() {
                                errors.push(error);
                            }
                        }
                        Err(())
                    }
                };
                if let Ok(mut results) = ctx.results.lock() {
                    results[index] = Some(stored);
                }
                ctx.changed.notify_all();
            });
        }
    });
    if let Some(error) = errors
        .into_inner()
        .ok()
        .and_then(|mut all| (!all.is_empty()).then(|| all.remove(0)))
    {
        return Err(error);
    }
    if let Some(context) = ctx.context.lock().ok().and_then(|c| c.clone()) {
        context.save_stat_cache();
    }
    if !options.cache.lazy_layers {
        // The store keeps what it names complete: the result's layers come in now.
        for target in &graph.images {
            if let Some(done) = ctx.done(target.vertex) {
                ctx.materialize(&done.state)?;
            }
        }
    }
    ctx.record_imported_hits()?;
    let built = assemble(&ctx)?;
    for export in &options.cache.to {
        ctx.export_cache(export)?;
    }
    let foreign = check_architectures(&ctx)?;
    if !foreign.is_empty() {
        if ctx.options.check_arch == CheckArch::Error {
            return Err(anyhow!(
                "binaries for another platform in the image (--check-arch=error):\n  {}",
                foreign.join("\n  ")
            ));
        }
        warnings.extend(foreign.into_iter().map(|line| {
            format!("{line} (it will fail with \"exec format error\"; --check-arch=error makes this fatal)")
        }));
    }
    Ok(BuildReport {
        built,
        emulated: ctx
            .emulated
            .lock()
            .map(|map| map.iter().map(|(p, d)| (p.clone(), *d)).collect())
            .unwrap_or_default(),
        steps_run: ctx.steps_run.lock().map(|n| *n).unwrap_or(0),
        cached: ctx.cached.lock().map(|n| *n).unwrap_or(0),
        unused_build_args: graph.unused_build_args.clone(),
        warnings,
        last_vertex: ctx.counter.last(),
    })
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

/// A vertex not run because another failed.
#[derive(Debug, thiserror::Error)]
#[error("skipped")]
struct Skipped;

/// Checks every platform that runs a `RUN` step; registers missing QEMU handlers as root.
fn ensure_runnable(graph: &BuildGraph, options: &BuildOptions) -> anyhow::Result<()> {
    let mut platforms: Vec<&Platform> = graph
        .vertices
        .iter()
        .filter(|vertex| {
            matches!(&vertex.op, Op::Step { instruction } if matches!(instruction.instruction, Instruction::Run(_)))
        })
        .map(|vertex| &vertex.platform)
        .collect();
    platforms.sort();
    platforms.dedup();
    for platform in platforms {
        if binfmt::check_runnable(platform).is_ok() {
            continue;
        }
        if nix::unistd::geteuid().is_root() {
            if let Ok(misc) = binfmt::BinfmtMisc::open() {
                if let Ok(binfmt::InstallOutcome::Installed { name, .. }) =
                    binfmt::install(&misc, platform, "")
                {
                    options.sink.emit(Event::Note {
                        message: format!("registered {name} to run {platform} steps under QEMU"),
                    });
                }
            }
        }
        binfmt::check_runnable(platform)
            .map_err(|error| Failure::new(ExitKind::HostNotReady, error))?;
    }
    Ok(())
}

impl Ctx<'_> {
    pub(crate) fn wait(&self, index: usize) -> anyhow::Result<Arc<Done>> {
        let mut results = self
            .results
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?;
        loop {
            match &results[index] {
                Some(Ok(done)) => return Ok(done.clone()),
                Some(Err(())) => return Err(Skipped.into()),
                None => {
                    results = self
                        .changed
                        .wait(results)
                        .map_err(|_| anyhow!("a build thread panicked"))?;
                }
            }
        }
    }

    pub(crate) fn vertex(&self, index: usize) -> anyhow::Result<Done> {
        let vertex = &self.graph.vertices[index];
        let parent = vertex.parent.map(|parent| self.wait(parent)).transpose()?;
        let inputs = vertex
            .inputs
            .iter()
            .map(|input| self.wait(*input))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Skipped.into());
        }
        match &vertex.op {
            Op::Scratch => {
                let mut key = Key::new(vertex, None);
                key.add("scratch", &vertex.platform.to_string());
                Ok(Done {
                    state: ImageState {
                        layers: Vec::new(),
                        config: oci_image::new_image_config(&oci_platform(&vertex.platform), None),
                        extra: serde_json::Map::new(),
                    },
                    key: key.finish(),
                })
            }
            Op::Image { reference } => self.image_step(vertex, reference),
            Op::Step { instruction } => {
                let parent =
                    parent.ok_or_else(|| anyhow!("{}: no parent", vertex.display_name()))?;
                self.step(vertex, instruction, &parent, &inputs)
            }
        }
    }

    /// The instruction expanded again with the state's environment underneath (the base
    /// image's `ENV` is not known to the frontend).
    pub(crate) fn reexpand(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        state: &ImageState,
    ) -> Instruction {
        let base_env = state.env();
        if base_env.is_empty() {
            return resolved.instruction.clone();
        }
        let line = resolved.instruction.span().start;
        let Some(original) = self.stages.stages.get(vertex.stage).and_then(|stage| {
            stage
                .instructions
                .iter()
                .find(|instruction| instruction.span().start == line)
        }) else {
            return resolved.instruction.clone();
        };
        // Image env, then ARGs, then the Dockerfile's ENV (last wins).
        let mut vars: Vec<(String, String)> = base_env;
        vars.extend(resolved.args.iter().cloned());
        vars.extend(resolved.env.iter().cloned());
        let expander = Expander::new(self.stages.directives.escape);
        original
            .expand(&expander, &vars)
            .unwrap_or_else(|_| resolved.instruction.clone())
    }

    pub(crate) fn step(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        parent: &Done,
        inputs: &[Arc<Done>],
    ) -> anyhow::Result<Done> {
        self.step_with(vertex, resolved, parent, inputs, true)
    }

    pub(crate) fn step_with(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        parent: &Done,
        inputs: &[Arc<Done>],
        reexpand: bool,
    ) -> anyhow::Result<Done> {
        let instruction = if reexpand {
            self.reexpand(vertex, resolved, &parent.state)
        } else {
            resolved.instruction.clone()
        };
        let mut state = parent.state.clone();
        let mut key = Key::new(vertex, Some(parent));
        for input in inputs {
            key.add("input", &input.key);
        }
        if let Some(epoch) = self.options.source_date_epoch {
            key.add("epoch", &epoch.to_string());
        }
        let created_by = created_by(&instruction);
        let mut cfg = state.cfg();
        // Config-only steps are cached too (silently), so a rebuild with nothing changed
        // keeps every history timestamp and gives the same digests.
        let is_config_only = !matches!(
            instruction,
            Instruction::Run(_)
                | Instruction::Copy(_)
                | Instruction::Add(_)
                | Instruction::Workdir(_)
        );
        if is_config_only && !self.options.no_cache {
            let finished = key.clone().finish();
            if let Some(state) = self.lookup(&finished)? {
                return Ok(Done {
                    state,
                    key: finished,
                });
            }
        }
        match &instruction {
            Instruction::Run(run) => {
                return self.run_step(vertex, resolved, run, parent, inputs, key);
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                return super::copy::copy_step(self, vertex, &instruction, parent, inputs, key);
            }
            Instruction::Workdir(workdir) => {
                let dir = join_path(&state.workdir(), &workdir.path);
                cfg.set_working_dir(Some(dir.clone()));
                state.set_cfg(cfg);
                return super::copy::workdir_step(self, vertex, state, &dir, created_by, key);
            }
            Instruction::Env(env) => {
                let mut pairs = state.env();
                for kv in &env.variables {
                    pairs.retain(|(key, _)| key != &kv.key);
                    pairs.push((kv.key.clone(), kv.value.clone()));
                }
                cfg.set_env(Some(
                    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                ));
            }
            Instruction::Label(label) => {
                let mut labels = cfg.labels().clone().unwrap_or_default();
                for kv in &label.labels {
                    labels.insert(kv.key.clone(), kv.value.clone());
                }
                cfg.set_labels(Some(labels));
            }
            Instruction::Maintainer(maintainer) => {
                state.config.set_author(Some(maintainer.name.clone()));
            }
            Instruction::User(user) => {
                cfg.set_user(Some(user.user.clone()));
            }
            Instruction::Expose(expose) => {
                // A set, as BuildKit's map (whose JSON keys come out sorted).
                let mut ports = cfg.exposed_ports().clone().unwrap_or_default();
                ports.extend(exposed_ports(&expose.ports)?);
                ports.sort();
                ports.dedup();
                cfg.set_exposed_ports(Some(ports));
            }
            Instruction::Volume(volume) => {
                let mut volumes = cfg.volumes().clone().unwrap_or_default();
                for path in &volume.paths {
                    if !volumes.contains(path) {
                        volumes.push(path.clone());
                    }
                }
                cfg.set_volumes(Some(volumes));
            }
            Instruction::Stopsignal(signal) => {
                cfg.set_stop_signal(Some(signal.signal.clone()));
            }
            Instruction::Shell(shell) => {
                state
                    .extra
                    .insert("Shell".to_owned(), serde_json::json!(shell.shell));
            }
            Instruction::Entrypoint(entrypoint) => {
                cfg.set_entrypoint(Some(command_argv(&entrypoint.command, &state.shell())));
                // ENTRYPOINT resets a CMD inherited from the base or set earlier in this
                // stage; a CMD later in the stage sets it again.
                cfg.set_cmd(None);
            }
            Instruction::Cmd(cmd) => {
                cfg.set_cmd(Some(command_argv(&cmd.command, &state.shell())));
            }
            Instruction::Healthcheck(health) => {
                let value = match &health.health {
                    instruction::Health::None => serde_json::json!({"Test": ["NONE"]}),
                    instruction::Health::Check(check) => {
                        let test = match &check.command {
                            CommandLine::Shell(script) => {
                                vec!["CMD-SHELL".to_owned(), script.clone()]
                            }
                            CommandLine::Exec(argv) => {
                                let mut test = vec!["CMD".to_owned()];
                                test.extend(argv.iter().cloned());
                                test
                            }
                        };
                        let nanos = |d: Option<std::time::Duration>| {
                            d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                        };
                        let mut value = serde_json::json!({"Test": test});
                        for (field, duration) in [
                            ("Interval", check.interval),
                            ("Timeout", check.timeout),
                            ("StartPeriod", check.start_period),
                            ("StartInterval", check.start_interval),
                        ] {
                            if duration.is_some() {
                                value[field] = serde_json::json!(nanos(duration));
                            }
                        }
                        if let Some(retries) = check.retries {
                            value["Retries"] = serde_json::json!(retries);
                        }
                        value
                    }
                };
                state.extra.insert("Healthcheck".to_owned(), value);
            }
            Instruction::Onbuild(onbuild) => {
                let mut triggers: Vec<String> = state
                    .extra
                    .get("OnBuild")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                triggers.push(onbuild.expression.clone());
                state
                    .extra
                    .insert("OnBuild".to_owned(), serde_json::json!(triggers));
            }
            Instruction::Arg(_) | Instruction::From(_) => {}
        }
        if !matches!(
            instruction,
            Instruction::Maintainer(_)
                | Instruction::Shell(_)
                | Instruction::Healthcheck(_)
                | Instruction::Onbuild(_)
        ) {
            state.set_cfg(cfg);
        }
        state.push_history(&self.created, created_by, true);
        let key = key.finish();
        self.record(&key, &state)?;
        Ok(Done { state, key })
    }

    /// A finished vertex's result.
    pub(crate) fn done(&self, index: usize) -> Option<Arc<Done>> {
        match self.results.lock().ok()?.get(index) {
            Some(Some(Ok(done))) => Some(Arc::clone(done)),
            _ => None,
        }
    }
}

pub(crate) fn oci_platform(platform: &Platform) -> oci_spec::image::Platform {
    oci_image::platform(
        &platform.os,
        &platform.architecture,
        platform.variant.as_deref(),
    )
}

//! The executor: one thread per vertex of the build graph, each waiting for its parent and
//! input stages; the state of a vertex (layers + image config) is what the next one starts
//! from. Cache keys, config instructions, `FROM` and `RUN` live here; `COPY`/`ADD` in
//! [`super::copy`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use oci_spec::image::{Config, Descriptor, Digest, HistoryBuilder, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::failed::FailedStep;
use super::{BuildOptions, BuildReport};
use crate::binfmt::{self, Runner};
use crate::cache;
use crate::dockerfile::{
    self, CommandLine, Expander, Instruction, ResolvedInstruction, Stages, instruction,
};
use crate::error::{ExitKind, Failure};
use crate::export::{Built, BuiltImage};
use crate::layer::{self, TreeKind};
use crate::oci::image as oci_image;
use crate::plan::{self, BuildGraph, Op, PlanOptions, Vertex};
use crate::platform::{self, Platform};
use crate::progress::{Event, SharedSink, Stream, VertexCounter, VertexId};

use super::CheckArch;
use crate::registry::{self, ImageRef, RegistryOptions, SinkProgress};
use crate::sandbox::{self, StepCommand, StepSpec};
use crate::store::{CacheRecord, Store};

/// How many `RUN` steps run at once.
const MAX_RUNNING: usize = 3;
/// Lines of output kept for the error of a failed step.
const TAIL_LINES: usize = 10;

/// One layer of a state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Layer {
    /// The compressed blob; `None` for a `RUN` step's layer that so far exists only as its
    /// snapshot (see [`Ctx::ensure_blobs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blob: Option<Descriptor>,
    pub(crate) diff_id: Digest,
    /// For a layer kept as a snapshot: the mtime clamp its diff_id was computed with (the
    /// blob made later must have the same tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) clamp: Option<i64>,
}

impl Layer {
    /// Whether the store has what this layer needs: its blob, or for a layer kept as a
    /// snapshot, the snapshot.
    fn present(&self, store: &Store) -> bool {
        match &self.blob {
            Some(blob) => store.layout().has_blob(blob.digest()),
            None => store.snapshot(&self.diff_id).is_some(),
        }
    }
}

/// The result of a vertex: layers and image config (what a cache record keeps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) layers: Vec<Layer>,
    pub(crate) config: ImageConfiguration,
    /// Docker config fields the OCI type has no room for (`Healthcheck`, `Shell`, `OnBuild`).
    #[serde(default)]
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl State {
    pub(crate) fn cfg(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }

    fn set_cfg(&mut self, config: Config) {
        self.config.set_config(Some(config));
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.cfg()
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => (pair.clone(), String::new()),
            })
            .collect()
    }

    fn shell(&self) -> Vec<String> {
        self.extra
            .get("Shell")
            .and_then(|shell| serde_json::from_value(shell.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()])
    }

    pub(crate) fn workdir(&self) -> String {
        self.cfg()
            .working_dir()
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// Snapshot directories, top first (overlay `lowerdir=` order).
    pub(crate) fn lower_dirs(&self, store: &Store) -> anyhow::Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for layer in self.layers.iter().rev() {
            let dir = match (&layer.blob, store.snapshot(&layer.diff_id)) {
                (_, Some(dir)) => dir,
                (Some(blob), None) => store.unpack_snapshot(blob, &layer.diff_id)?,
                (None, None) => return Err(missing_snapshot(&layer.diff_id)),
            };
            dirs.push(dir);
        }
        Ok(dirs)
    }

    pub(crate) fn push_history(&mut self, created: &str, created_by: String, empty_layer: bool) {
        let mut history = self.config.history().clone().unwrap_or_default();
        let mut builder = HistoryBuilder::default()
            .created(created.to_owned())
            .created_by(created_by)
            .comment("buildkit.dockerfile.v0".to_owned());
        if empty_layer {
            builder = builder.empty_layer(true);
        }
        history.push(builder.build().expect("history fields are all optional"));
        self.config.set_history(Some(history));
    }

    pub(crate) fn push_layer(&mut self, blob: &layer::LayerBlob) {
        self.push(Layer {
            blob: Some(blob.descriptor.clone()),
            diff_id: blob.diff_id.clone(),
            clamp: None,
        });
    }

    /// Adds a layer kept as its snapshot (no blob yet).
    fn push_snapshot_layer(&mut self, diff_id: Digest, clamp: Option<i64>) {
        self.push(Layer {
            blob: None,
            diff_id,
            clamp,
        });
    }

    fn push(&mut self, layer: Layer) {
        let mut rootfs = self.config.rootfs().clone();
        let mut diff_ids = rootfs.diff_ids().clone();
        diff_ids.push(layer.diff_id.to_string());
        rootfs.set_diff_ids(diff_ids);
        self.config.set_rootfs(rootfs);
        self.layers.push(layer);
    }

    /// Layer descriptors for a manifest; every layer must have its blob by now.
    fn blobs(&self) -> anyhow::Result<Vec<Descriptor>> {
        self.layers
            .iter()
            .map(|layer| {
                layer
                    .blob
                    .clone()
                    .ok_or_else(|| anyhow!("layer {} has no blob yet", layer.diff_id))
            })
            .collect()
    }
}

/// A finished vertex.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) state: State,
    pub(crate) key: String,
}

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
    pub(crate) context: Mutex<Option<Arc<super::copy::ContextFiles>>>,
    results: Mutex<Vec<Slot>>,
    changed: Condvar,
    running: Mutex<usize>,
    running_changed: Condvar,
    emulated: Mutex<BTreeMap<Platform, Duration>>,
    steps_run: Mutex<usize>,
    cached: Mutex<usize>,
    failed: std::sync::atomic::AtomicBool,
    pub(crate) created: String,
    /// Records read from `--cache-from`: key → (state, index into `cache_sources`).
    imported: HashMap<String, (State, usize)>,
    cache_sources: Vec<cache::BlobSource>,
    /// Layer blobs of imported hits not in the store yet: digest → (descriptor, source).
    lazy: Mutex<HashMap<String, (Descriptor, usize)>>,
    /// Keys of the imported records used, recorded locally once their blobs are here.
    imported_hits: Mutex<Vec<String>>,
    fetching: Mutex<()>,
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
    super::entitlements::ensure_entitled(&graph, options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let created = oci_image::rfc3339(options.source_date_epoch.unwrap_or_else(now));
    let registry_options =
        Arc::new(RegistryOptions::from_env(store.root()).showing_notes(options.sink.clone()));
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

/// Reads every `--cache-from` (the records of the platforms this build runs steps on); a
/// cache that is missing or unreadable is a warning, as in buildx.
fn import_caches(
    options: &BuildOptions,
    graph: &BuildGraph,
    runtime: &tokio::runtime::Runtime,
    registry: &Arc<RegistryOptions>,
    warnings: &mut Vec<String>,
) -> (HashMap<String, (State, usize)>, Vec<cache::BlobSource>) {
    let mut imported = HashMap::new();
    let mut sources = Vec::new();
    if options.cache.from.is_empty() {
        return (imported, sources);
    }
    let mut platforms: Vec<Platform> = graph
        .vertices
        .iter()
        .map(|vertex| vertex.platform.clone())
        .collect();
    platforms.sort();
    platforms.dedup();
    for location in &options.cache.from {
        match runtime.block_on(cache::import(Arc::clone(registry), location, &platforms)) {
            Ok(Some(found)) => {
                let index = sources.len();
                let mut count = 0;
                for record in found.records {
                    if let Ok(state) = serde_json::from_value::<State>(record.state) {
                        count += 1;
                        imported.entry(record.key).or_insert((state, index));
                    }
                }
                sources.push(found.source);
                options.sink.emit(Event::Note {
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
                "--cache-from {location}: {:#} (building without it)",
                anyhow::Error::new(error)
            )),
        }
    }
    (imported, sources)
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

/// Incremental cache key.
#[derive(Clone)]
pub(crate) struct Key(Sha256);

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
    fn wait(&self, index: usize) -> anyhow::Result<Arc<Done>> {
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

    fn vertex(&self, index: usize) -> anyhow::Result<Done> {
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
                    state: State {
                        layers: Vec::new(),
                        config: oci_image::new_image_config(&vertex.platform, None),
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

    /// Resolves an image for a platform: the store's copy, else the registry.
    pub(crate) fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
        vertex: VertexId,
    ) -> anyhow::Result<(Descriptor, State)> {
        let image = ImageRef::parse(reference)
            .map_err(|error| Failure::bad_input(format_args!("{reference}: {error}")))?;
        let progress = Arc::new(SinkProgress::aggregate(self.sink.clone(), vertex));
        let layout = self.store.layout();
        let pulled = if self.options.pull {
            let choice = registry::PlatformChoice::One(platform.clone());
            self.runtime
                .block_on(registry::pull::pull_reference(
                    self.registry.clone(),
                    layout,
                    &image,
                    &choice,
                    progress,
                ))?
                .images
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{reference}: nothing pulled for {platform}"))?
        } else {
            self.runtime.block_on(registry::pull::resolve(
                self.registry.clone(),
                layout,
                &image,
                platform,
                progress,
            ))?
        };
        let config_digest = pulled.document.config().digest();
        let raw: serde_json::Value = layout.read_json(config_digest, "image config")?;
        let config: ImageConfiguration = layout.read_json(config_digest, "image config")?;
        let mut extra = serde_json::Map::new();
        if let Some(inner) = raw.get("config").and_then(|c| c.as_object()) {
            for field in ["Healthcheck", "Shell", "OnBuild"] {
                if let Some(value) = inner.get(field).filter(|v| !v.is_null()) {
                    extra.insert(field.to_owned(), value.clone());
                }
            }
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != pulled.document.layers().len() {
            return Err(anyhow!(
                "{reference}: {} layers but {} diff_ids",
                pulled.document.layers().len(),
                diff_ids.len()
            ));
        }
        let layers = pulled
            .document
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| {
                Ok(Layer {
                    blob: Some(blob.clone()),
                    diff_id: Digest::from_str(diff_id)?,
                    clamp: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            pulled.manifest,
            State {
                layers,
                config,
                extra,
            },
        ))
    }

    fn image_step(&self, vertex: &Vertex, reference: &str) -> anyhow::Result<Done> {
        let id = self.counter.next();
        let name = vertex.display_name();
        let started = Instant::now();
        self.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated: false,
        });
        let (manifest, state) = self
            .resolve_image(reference, &vertex.platform, id)
            .with_context(|| name.clone())?;
        // Snapshots now, so RUN steps find them (in parallel inside the store).
        self.store
            .ensure_snapshots_for(
                &self
                    .store
                    .layout()
                    .read_json(manifest.digest(), "image manifest")?,
                state.config.rootfs().diff_ids(),
            )
            .with_context(|| name.clone())?;
        // ONBUILD triggers of the base run right after FROM, in a child build's order, and
        // are not inherited (as Docker).
        let mut state = state;
        let triggers: Vec<String> = state
            .extra
            .remove("OnBuild")
            .and_then(|triggers| serde_json::from_value(triggers).ok())
            .unwrap_or_default();
        let mut key = Key::new(vertex, None);
        key.add("image", manifest.digest().as_ref());
        self.sink.emit(Event::Finished {
            vertex: id,
            duration: started.elapsed(),
        });
        let mut done = Done {
            state,
            key: key.finish(),
        };
        for (index, trigger) in triggers.iter().enumerate() {
            done = self.onbuild_trigger(vertex, index, trigger, &done)?;
        }
        Ok(done)
    }

    /// Runs one `ONBUILD` trigger of a base image as a step after its `FROM`.
    fn onbuild_trigger(
        &self,
        vertex: &Vertex,
        index: usize,
        trigger: &str,
        parent: &Done,
    ) -> anyhow::Result<Done> {
        let name = vertex.display_name();
        let bad = |message: String| -> anyhow::Error {
            Failure::bad_input(format_args!("{name}: ONBUILD {trigger}: {message}")).into()
        };
        let tree = dockerfile::parse(&format!("FROM scratch\n{trigger}\n"))
            .map_err(|e| bad(e.to_string()))?;
        let stages = dockerfile::stages(&tree).map_err(|e| bad(e.to_string()))?;
        let instruction = stages
            .stages
            .first()
            .and_then(|stage| stage.instructions.first())
            .ok_or_else(|| bad("not an instruction".to_owned()))?;
        let reads_stage = match instruction {
            Instruction::Copy(copy) => copy.from.is_some(),
            Instruction::Run(run) => run.mounts.iter().any(|mount| mount.from.is_some()),
            _ => false,
        };
        if reads_stage {
            return Err(Failure::unsupported(format_args!(
                "{name}: ONBUILD {trigger}: triggers reading other stages"
            ))
            .into());
        }
        let expander = Expander::new('\\');
        let instruction = instruction
            .expand(&expander, &parent.state.env())
            .map_err(|e| bad(e.to_string()))?;
        let mut id = Key(Sha256::new());
        id.add("onbuild-of", &vertex.id);
        id.add("index", &index.to_string());
        id.add("trigger", trigger);
        let resolved = ResolvedInstruction {
            instruction,
            args: Vec::new(),
            env: Vec::new(),
        };
        let mut step = vertex.clone();
        step.id = id.finish();
        step.inputs = Vec::new();
        step.op = Op::Step {
            instruction: Box::new(resolved.clone()),
        };
        self.step_with(&step, &resolved, parent, &[], false)
    }

    /// The instruction expanded again with the state's environment underneath (the base
    /// image's `ENV` is not known to the frontend).
    fn reexpand(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        state: &State,
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

    fn step(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        parent: &Done,
        inputs: &[Arc<Done>],
    ) -> anyhow::Result<Done> {
        self.step_with(vertex, resolved, parent, inputs, true)
    }

    fn step_with(
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

    /// Looks up a cache record; emits `CACHED` and returns the state on a hit.
    pub(crate) fn cache_hit(&self, key: &str, name: &str) -> anyhow::Result<Option<State>> {
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
    pub(crate) fn lookup(&self, key: &str) -> anyhow::Result<Option<State>> {
        if let Some(record) = self.store.cache_record(key)? {
            if let Ok(state) = serde_json::from_value::<State>(record.data) {
                let complete = state.layers.iter().all(|layer| layer.present(&self.store));
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

    /// A finished vertex's result.
    fn done(&self, index: usize) -> Option<Arc<Done>> {
        match self.results.lock().ok()?.get(index) {
            Some(Some(Ok(done))) => Some(Arc::clone(done)),
            _ => None,
        }
    }

    /// Fetches the layer blobs of `state` that imported cache hits left in their cache.
    pub(crate) fn materialize(&self, state: &State) -> anyhow::Result<()> {
        let layout = self.store.layout();
        if state.layers.iter().all(|layer| layer.present(&self.store)) {
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
    pub(crate) fn lower_dirs(&self, state: &State) -> anyhow::Result<Vec<PathBuf>> {
        self.materialize(state)?;
        state.lower_dirs(&self.store)
    }

    /// Imported records used by this build become store records once their blobs are here
    /// (the next build finds them without the cache).
    fn record_imported_hits(&self) -> anyhow::Result<()> {
        let hits = self
            .imported_hits
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?
            .clone();
        for key in hits {
            let Some((state, _)) = self.imported.get(&key) else {
                continue;
            };
            let complete = state.layers.iter().all(|layer| layer.present(&self.store));
            if complete && self.store.cache_record(&key)?.is_none() {
                self.record(&key, state)?;
            }
        }
        Ok(())
    }

    /// Writes one `--cache-to`: the records of the target stages' chains (`mode=min`) or of
    /// every step (`mode=max`).
    fn export_cache(&self, export: &cache::CacheExport) -> anyhow::Result<()> {
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
        let mut chosen: Vec<(Platform, Arc<Done>)> = Vec::new();
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
            chosen.push((vertex.platform.clone(), done));
        }
        // A cache holds blobs: layers kept as snapshots are compressed now.
        let states: Vec<&State> = chosen.iter().map(|(_, done)| &done.state).collect();
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
    pub(crate) fn record(&self, key: &str, state: &State) -> anyhow::Result<()> {
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

    /// `states` with a blob for every layer: a layer kept as its snapshot gets the blob made
    /// earlier from that snapshot (in this build or another), else one is written now from
    /// the snapshot, several layers at once. The blob is the one an eager commit would have
    /// written (same tar, same compressor), and its diff_id is checked against the
    /// snapshot's.
    pub(crate) fn ensure_blobs(&self, states: &[&State]) -> anyhow::Result<Vec<State>> {
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
                let error = missing_snapshot(diff_id);
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
    fn tree_blob(
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

    /// A fresh upper and work directory in the store's tmp directory.
    pub(crate) fn scratch_dirs(&self) -> anyhow::Result<tempfile::TempDir> {
        let tmp = self.store.layout().tmp_dir();
        std::fs::create_dir_all(&tmp)?;
        let dir = tempfile::Builder::new().prefix("step-").tempdir_in(&tmp)?;
        std::fs::create_dir(dir.path().join("upper"))?;
        std::fs::create_dir(dir.path().join("work"))?;
        Ok(dir)
    }

    fn run_step(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        run: &instruction::Run,
        parent: &Done,
        inputs: &[Arc<Done>],
        mut key: Key,
    ) -> anyhow::Result<Done> {
        let name = vertex.display_name();
        let line = run.span.start;
        let file = self.options.dockerfile.display();
        let security = match run.security {
            Some(instruction::Security::Insecure) if !self.options.allow_insecure => {
                return Err(Failure::bad_input(format_args!(
                    "{file}:{line}: entitlement security.insecure is not allowed: RUN --security=insecure needs --allow security.insecure"
                ))
                .into());
            }
            Some(instruction::Security::Insecure) => sandbox::Security::Insecure,
            _ => sandbox::Security::Sandbox,
        };
        let network = match run.network {
            Some(instruction::Network::None) => sandbox::Network::None,
            // Checked before any work for the Dockerfile's steps; this catches a base
            // image's ONBUILD trigger.
            Some(instruction::Network::Host) if !self.options.allow_network_host => {
                return Err(Failure::bad_input(format_args!(
                    "{file}:{line}: entitlement network.host is not allowed: RUN --network=host needs --allow network.host"
                ))
                .into());
            }
            Some(instruction::Network::Host) => sandbox::Network::Host,
            _ if self.options.network_none => sandbox::Network::None,
            _ if self.options.network_host => sandbox::Network::Host,
            _ => sandbox::Network::Default,
        };
        key.add("network", &format!("{network:?}"));
        let mounts = super::mounts::prepare(self, vertex, run, parent, inputs, &mut key)?;
        let key = key.finish();
        if let Some(state) = self.cache_hit(&key, &name)? {
            return Ok(Done { state, key });
        }
        let mut state = parent.state.clone();
        let shell = state.shell();
        let command = match &run.command {
            CommandLine::Exec(argv) => StepCommand::Exec(argv.clone()),
            CommandLine::Shell(script) => StepCommand::Shell {
                shell: shell.clone(),
                script: heredoc_script(script, &run.heredocs),
            },
        };
        // Build args in scope as env, under the image env (ENV overrides ARG).
        let env_pairs = state.env();
        let mut env: Vec<String> = resolved
            .args
            .iter()
            .filter(|(key, _)| !env_pairs.iter().any(|(k, _)| k == key))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        env.extend(env_pairs.iter().map(|(k, v)| format!("{k}={v}")));
        let lower_dirs = self.lower_dirs(&state)?;
        let dirs = self.scratch_dirs()?;
        let upper = dirs.path().join("upper");
        let mut spec = StepSpec::new(
            lower_dirs.clone(),
            upper.clone(),
            dirs.path().join("work"),
            vertex.platform.clone(),
            command.clone(),
        );
        spec.env = env.clone();
        spec.user = state.cfg().user().clone().filter(|user| !user.is_empty());
        spec.cwd = state.workdir();
        spec.network = network;
        spec.security = security;
        spec.mounts = mounts.binds.clone();
        spec.secrets = mounts.secrets.clone();
        spec.pids_limit = self.options.pids_limit;
        spec.pids_limit_required = self.options.pids_limit_required;
        spec.scratch_parent = Some(self.store.layout().tmp_dir());

        let emulated = matches!(
            binfmt::check_runnable(&vertex.platform),
            Ok(Runner::Emulated(_))
        );
        // Bounded: wait for a free slot.
        {
            let mut running = self
                .running
                .lock()
                .map_err(|_| anyhow!("a build thread panicked"))?;
            while *running >= MAX_RUNNING {
                running = self
                    .running_changed
                    .wait(running)
                    .map_err(|_| anyhow!("a build thread panicked"))?;
            }
            *running += 1;
        }
        let id = self.counter.next();
        self.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated,
        });
        let started = Instant::now();
        let mut tail: VecDeque<String> = VecDeque::new();
        let outcome = sandbox::run(&spec, |stream, bytes| {
            let line = String::from_utf8_lossy(bytes).into_owned();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            self.sink.emit(Event::Log {
                vertex: id,
                stream: match stream {
                    sandbox::Stream::Stdout => Stream::Stdout,
                    sandbox::Stream::Stderr => Stream::Stderr,
                },
                line,
            });
        });
        if let Ok(mut running) = self.running.lock() {
            *running -= 1;
        }
        self.running_changed.notify_one();
        let elapsed = started.elapsed();
        if emulated {
            if let Ok(mut map) = self.emulated.lock() {
                *map.entry(vertex.platform.clone()).or_default() += elapsed;
            }
        }
        if let Ok(mut steps) = self.steps_run.lock() {
            *steps += 1;
        }
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                self.sink.emit(Event::Failed {
                    vertex: id,
                    duration: elapsed,
                    message: error.to_string(),
                });
                let kind = error.exit_kind();
                return Err(Failure::new(kind, anyhow::Error::new(error).context(name)).into());
            }
        };
        if !outcome.is_success() {
            self.sink.emit(Event::Failed {
                vertex: id,
                duration: elapsed,
                message: outcome.to_string(),
            });
            let debug_id = key[..12].to_owned();
            let debug_dir = FailedStep::dir(self.store.root());
            std::fs::create_dir_all(&debug_dir)?;
            let failed_upper = debug_dir.join(format!("{debug_id}.upper"));
            let _ = std::fs::remove_dir_all(&failed_upper);
            std::fs::rename(&upper, &failed_upper).context("keeping the failed step's changes")?;
            let record = FailedStep {
                id: debug_id.clone(),
                name: name.clone(),
                platform: vertex.platform.clone(),
                lower_dirs,
                failed_upper,
                env: env
                    .iter()
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                user: spec.user.clone().unwrap_or_else(|| "root".to_owned()),
                cwd: spec.cwd.clone(),
                shell,
                outcome: outcome.to_string(),
            };
            record.save(self.store.root())?;
            let mut message = format!("{name}: {outcome}");
            if !tail.is_empty() {
                message.push_str("\nlast lines of output:");
                for line in &tail {
                    message.push_str("\n  ");
                    message.push_str(line);
                }
            }
            message.push_str(&format!(
                "\nopen a shell in the failed state: xbuild debug shell {debug_id}\n\
                 or in the state before the step:  xbuild debug shell --before {debug_id}"
            ));
            return Err(Failure::new(ExitKind::Failed, anyhow!(message)).into());
        }
        let empty = std::fs::read_dir(&upper)?.next().is_none();
        if empty {
            state.push_history(&self.created, created_by_run(&command), true);
        } else {
            // The layer is kept as its snapshot; its blob is made if an image, a push or a
            // cache export needs it (a build stage's layers usually never are).
            let clamp = self.options.source_date_epoch;
            let (diff_id, _) = layer::tree_diff_id(&upper, TreeKind::OverlayUpper, clamp)
                .with_context(|| format!("{name}: committing the layer"))?;
            // A snapshot of this diff_id that is already there may have been unpacked from a
            // pulled blob rather than kept from a step; the blob is then made now, from this
            // step's own directory, rather than later from a tree made another way.
            let existing = self.store.snapshot(&diff_id).is_some();
            let blob = if existing {
                let blob = self
                    .tree_blob(&upper, &diff_id, clamp)
                    .with_context(|| format!("{name}: committing the layer"))?;
                self.store.put_layer_blob(&blob.diff_id, &blob.descriptor)?;
                Some(blob)
            } else {
                None
            };
            let dir = dirs.keep();
            self.store
                .adopt_snapshot(&diff_id, dir.join("upper"))
                .with_context(|| format!("{name}: keeping the snapshot"))?;
            let _ = std::fs::remove_dir_all(&dir);
            match blob {
                Some(blob) => state.push_layer(&blob),
                None => state.push_snapshot_layer(diff_id, clamp),
            }
            state.push_history(&self.created, created_by_run(&command), false);
        }
        self.record(&key, &state)?;
        self.sink.emit(Event::Finished {
            vertex: id,
            duration: elapsed,
        });
        Ok(Done { state, key })
    }
}

/// The config entries of an `EXPOSE`'s words (checked when the Dockerfile was resolved),
/// sorted and without duplicates.
fn exposed_ports(words: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ports = Vec::new();
    for word in words {
        ports.extend(
            instruction::exposed_ports(word).map_err(|message| anyhow!("EXPOSE: {message}"))?,
        );
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// The error for a layer kept only as its snapshot when that snapshot is gone.
fn missing_snapshot(diff_id: &Digest) -> anyhow::Error {
    anyhow!(
        "the snapshot of layer {diff_id} is missing from the store and the layer has no blob \
         (run `xbuild store check`, then build again)"
    )
}

/// `RUN` heredocs: a command that is only `<<EOF` runs the body as the script; otherwise the
/// heredocs are appended so the shell reads them as its own here-documents.
fn heredoc_script(script: &str, heredocs: &[dockerfile::Heredoc]) -> String {
    match heredocs {
        [] => script.to_owned(),
        [only]
            if script
                .trim()
                .trim_start_matches("<<")
                .trim_start_matches('-')
                .trim_matches(['"', '\''])
                == only.name =>
        {
            only.content.clone()
        }
        _ => {
            let mut text = script.to_owned();
            for heredoc in heredocs {
                text.push('\n');
                text.push_str(&heredoc.content);
                if !heredoc.content.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&heredoc.name);
            }
            text
        }
    }
}

fn command_argv(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(script) => {
            let mut argv = shell.to_vec();
            argv.push(script.clone());
            argv
        }
    }
}

fn created_by_run(command: &StepCommand) -> String {
    format!("RUN {} # buildkit", command.argv().join(" "))
}

fn created_by(instruction: &Instruction) -> String {
    format!("{} # buildkit", instruction_text(instruction))
}

fn instruction_text(instruction: &Instruction) -> String {
    match instruction {
        Instruction::Env(env) => format!(
            "ENV {}",
            env.variables
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Instruction::Workdir(w) => format!("WORKDIR {}", w.path),
        Instruction::User(u) => format!("USER {}", u.user),
        Instruction::Label(l) => format!(
            "LABEL {}",
            l.labels
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        // Go's `%v` of BuildKit's port map: sorted keys, each with its empty value.
        Instruction::Expose(e) => format!(
            "EXPOSE map[{}]",
            exposed_ports(&e.ports)
                .unwrap_or_else(|_| e.ports.clone())
                .iter()
                .map(|port| format!("{port}:{{}}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Instruction::Volume(v) => format!("VOLUME {:?}", v.paths),
        Instruction::Stopsignal(s) => format!("STOPSIGNAL {}", s.signal),
        Instruction::Entrypoint(e) => format!("ENTRYPOINT {}", command_text(&e.command)),
        Instruction::Cmd(c) => format!("CMD {}", command_text(&c.command)),
        Instruction::Shell(s) => format!("SHELL {:?}", s.shell),
        Instruction::Onbuild(o) => format!("ONBUILD {}", o.expression),
        other => other.name().to_owned(),
    }
}

fn command_text(command: &CommandLine) -> String {
    match command {
        CommandLine::Exec(argv) => format!("{argv:?}"),
        CommandLine::Shell(script) => format!("[\"/bin/sh\" \"-c\" {script:?}]"),
    }
}

/// `base` joined with `path` (absolute paths replace it), cleaned, absolute.
pub(crate) fn join_path(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Writes each target's config and manifest, and the index over them.
fn assemble(ctx: &Ctx<'_>) -> anyhow::Result<Built> {
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
    let states: Vec<&State> = targets.iter().map(|(_, done)| &done.state).collect();
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
            .put_manifest(&manifest, Some(&Platform::of_config(&config)))?;
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

/// The wrong-architecture guard: every ELF executable or library that the build's own layers
/// add to a target image (not its base image's) is checked against the image's platform.
/// Returns one line per finding: `[linux/arm64] COPY hello /usr/local/bin/: usr/local/bin/hello
/// is linux/amd64, not linux/arm64`.
fn check_architectures(ctx: &Ctx<'_>) -> anyhow::Result<Vec<String>> {
    if ctx.options.check_arch == CheckArch::Off {
        return Ok(Vec::new());
    }
    let results = ctx
        .results
        .lock()
        .map_err(|_| anyhow!("a build thread panicked"))?;
    let state_of = |vertex: usize| match results.get(vertex) {
        Some(Some(Ok(done))) => Some(&done.state),
        _ => None,
    };
    let mut findings = Vec::new();
    let mut checked = std::collections::HashSet::new();
    for target in &ctx.graph.images {
        let Some(state) = state_of(target.vertex) else {
            continue;
        };
        // The external base: the first vertex up the parent chain that is an image or scratch.
        let mut vertex = target.vertex;
        while let Some(parent) = ctx.graph.vertices[vertex].parent {
            vertex = parent;
        }
        let base_layers = state_of(vertex).map_or(0, |base| base.layers.len());
        let added = &state.layers[base_layers.min(state.layers.len())..];
        // History entries that made layers, in order; the last ones belong to `added`.
        let layer_history: Vec<String> = state
            .config
            .history()
            .as_ref()
            .map(|history| {
                history
                    .iter()
                    .filter(|entry| !entry.empty_layer().unwrap_or(false))
                    .map(|entry| entry.created_by().clone().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let offset = layer_history.len().saturating_sub(added.len());
        for (position, layer) in added.iter().enumerate() {
            if !checked.insert((layer.diff_id.clone(), target.platform.clone())) {
                continue;
            }
            let found = match ctx.store.snapshot(&layer.diff_id) {
                Some(snapshot) => super::archcheck::foreign_elf_files(&snapshot, &target.platform)
                    .with_context(|| format!("checking {}", snapshot.display()))?,
                // A layer of an imported cache hit, left in the cache (the build that made
                // it checked it).
                None => {
                    let Some(blob) = layer
                        .blob
                        .as_ref()
                        .filter(|blob| ctx.store.layout().has_blob(blob.digest()))
                    else {
                        continue;
                    };
                    let blob = ctx.store.layout().open_blob(blob.digest())?;
                    let tar = crate::layer::decompressed(std::io::BufReader::new(blob))?;
                    super::archcheck::foreign_elf_in_layer(tar, &target.platform)?
                }
            };
            let instruction = layer_history
                .get(offset + position)
                .map_or("a layer", |created_by| {
                    created_by.trim_end_matches(" # buildkit")
                });
            for foreign in found {
                findings.push(format!("[{}] {instruction}: {foreign}", target.platform));
            }
        }
    }
    Ok(findings)
}

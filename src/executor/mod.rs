//! The executor: runs a planned [`BuildGraph`] and leaves one image per target platform,
//! and the index over them, in the store.
//!
//! [`execute`] reads top to bottom: the step cache (with `--cache-from`), the services the
//! steps share, the scheduler running every vertex, then what the build hands on (images,
//! index, `--cache-to`, the architecture check). Vertices run on their own threads as soon
//! as their parent and input stages are done (platforms side by side); `RUN` steps are
//! bounded (three at once).
//!
//! Files, one concern each: [`scheduler`] (when vertices run), [`dispatch`] (which step
//! runs an instruction), one file per kind of step — [`from`] (`FROM`; a base's
//! `ONBUILD` triggers are planned steps), [`run`] (`RUN`) with [`mounts`] (`RUN --mount`), [`copy`] (`COPY`/`ADD`, the
//! directory `WORKDIR` makes) with [`sources`] (what they read) and [`permissions`]
//! (`--chown`, `--chmod`), [`config`] (the config instructions, pure functions) —,
//! [`services`] (what a step may use), [`state`] (what a vertex leaves), [`blobs`] (layer
//! blobs from snapshots) with [`eager`] (those of exported images, made in the background
//! as their steps commit), [`assemble`] (images, index, cache export), [`archcheck`] (the
//! wrong-architecture guard), [`validate`] (refusals before any work), [`failed`] (the
//! record a failed `RUN` leaves for `xbuild debug shell`), [`named`] (`--build-context`:
//! images, OCI layouts and directories as the vertices that read them).
//!
//! Cache key of a vertex ([`crate::cache::Key`]): sha256 over the plan's vertex id
//! (instruction after expansion, platform, build args it sees, parent and input
//! identities), the parent's and input stages' keys with the diff_ids of their layers
//! (so what reads a stage re-run by `--no-cache-filter` sees its new content), the base
//! manifest digest for `FROM` and an image or OCI-layout `--build-context`, the digest of a
//! directory `--build-context` after its `.dockerignore`,
//! the digest of exactly the context entries a `COPY`/`ADD`/`RUN --mount=type=bind` reads,
//! downloaded URL digests, `SOURCE_DATE_EPOCH`, the network mode, a `RUN`'s `--add-host`,
//! `--shm-size` and `--ulimit` (when given), and secret ids (never their values). `--label`
//! and `--annotation` are applied when the images are assembled: they change the image
//! digests, no step's key. A record holds the whole resulting state (layer descriptors, diff_ids,
//! config, history).

pub mod archcheck;
mod assemble;
mod blobs;
mod checksum;
pub mod config;
mod copy;
mod dispatch;
mod eager;
mod error;
pub mod failed;
mod from;
mod listing;
mod materials;
mod mounts;
mod named;
mod permissions;
mod run;
mod scan;
mod scheduler;
mod services;
mod sources;
mod ssh;
mod state;
mod steps;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

pub use materials::{ContextRead, Material};
pub use named::{NamedContext, layout_entry};
pub use scan::{ExtraRoot, SbomExtra, StageScan};

use crate::cache::StepCache;
use crate::dockerfile::Stages;
use crate::layer::Compression;
use crate::oci::image as oci_image;
use crate::plan::BuildGraph;
use crate::platform::Platform;
use crate::progress::{SharedSink, VertexCounter};
use crate::registry::RegistryOptions;
use crate::store::Store;

pub use assemble::{Built, BuiltImage};
pub use error::{ExecutorError, StepFailure};
use scheduler::Scheduler;
use services::Services;
pub(crate) use ssh::Agents;
pub use ssh::{DefaultAgent, SshSource};

/// What to build.
#[derive(Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// Target platforms (at least one), in the user's order.
    pub targets: Vec<Platform>,
    /// Whether the user named the platforms (`--platform`).
    pub explicit_platforms: bool,
    /// This build is a build node's share of a build of several platforms: step names carry
    /// the platform even when `targets` has one (as they do when it has several).
    pub multi_platform: bool,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target_stage: Option<String>,
    /// `--no-cache`: run every step, still record results.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name, any case, as BuildKit matches them) whose
    /// steps run without the cache, still recording results; names no stage has are
    /// ignored, as in buildx.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: resolve base images in the registry even when the store has them.
    pub pull: bool,
    /// `--network=none` for every `RUN` (`RUN --network=` overrides per step).
    pub network_none: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--network=host` for every `RUN` (needs `allow_network_host`).
    pub network_host: bool,
    /// `--allow network.host`.
    pub allow_network_host: bool,
    /// `--pids-limit`: the most processes a `RUN` step may have (`None`: no limit).
    pub pids_limit: Option<u64>,
    /// `--pids-limit` was given: a host that cannot apply it fails the step (the default
    /// limit is skipped there).
    pub pids_limit_required: bool,
    /// Layer compression (algorithm and level) of the layers the build makes.
    pub compression: Compression,
    /// Whether an output exports the images' layer blobs (the store, a push, an OCI or
    /// docker archive, containerd): the layers of the target chains are then compressed in
    /// the background as their steps commit ([`eager`]). Not for outputs of files only
    /// (`type=local`, `type=tar`).
    pub eager_blobs: bool,
    /// `force-compression=true`: layers that come with a blob of another algorithm (base
    /// images, imported caches) are converted to `compression` too.
    pub force_compression: bool,
    /// More layer compressions (each with its `force-compression`), each distinct from
    /// `compression` and from the others: one more set of manifests and index each
    /// ([`BuildReport::more_sets`]), for outputs that ask for a compression of their own,
    /// as BuildKit's exporters each convert the layers to theirs. Empty in the common case.
    pub more_compressions: Vec<(Compression, bool)>,
    /// `SOURCE_DATE_EPOCH` (environment or build argument): clamps layer mtimes and sets
    /// `created` in configs and history.
    pub source_date_epoch: Option<i64>,
    /// `--secret id=...`: contents by id, for `RUN --mount=type=secret` (never written to a
    /// layer or a cache record; only the ids enter cache keys).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Where progress goes.
    pub sink: SharedSink,
    /// The wrong-architecture guard (`--check-arch`).
    pub check_arch: CheckArch,
    /// `--cache-from` / `--cache-to`.
    pub cache: crate::cache::CacheOptions,
    /// `--label KEY=VALUE`: set in every image's config after the Dockerfile's `LABEL`s
    /// (these win), when the image is assembled: no step's cache key depends on them.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`: each with its kind given (`manifest` when none was written).
    pub annotations: Vec<crate::oci::annotation::Annotation>,
    /// `--add-host`: lines added to each `RUN` step's `/etc/hosts`, in order.
    pub add_hosts: Vec<crate::sandbox::HostEntry>,
    /// `--shm-size`: the size of each `RUN` step's `/dev/shm`, bytes (`None`: 64 MiB).
    pub shm_size: Option<u64>,
    /// `--ulimit`s of each `RUN` step.
    pub ulimits: Vec<crate::sandbox::Ulimit>,
    /// `--ssh ID=...`: the agents `RUN --mount=type=ssh,id=ID` reaches.
    pub ssh: BTreeMap<String, SshSource>,
    /// `--build-context NAME=VALUE`s, by name as [`crate::dockerfile::context_name`] writes
    /// it.
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What to do about ELF files whose platform the image's platform cannot run
/// (`--check-arch=warn|error|off`): an amd64 binary copied into an arm64 image is the classic
/// cause of `exec format error` at deploy time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckArch {
    /// Print a warning naming the file and the instruction that added it (the default).
    #[default]
    Warn,
    /// Fail the build.
    Error,
    /// Do not look.
    Off,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The images and the index, in the store.
    pub built: Built,
    /// The same images in each of [`BuildOptions::more_compressions`], in that order: the
    /// same configs, their layers at that compression, their own manifests and index.
    pub more_sets: Vec<Built>,
    /// Time spent running steps under emulation, per platform (only emulated ones).
    pub emulated: Vec<(Platform, Duration)>,
    /// `RUN` steps run in the sandbox.
    pub steps_run: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Build arguments nothing used.
    pub unused_build_args: Vec<String>,
    /// Warnings of the frontend and planner.
    pub warnings: Vec<String>,
    /// The last progress vertex number used, so later phases (outputs) go on after it.
    pub last_vertex: u32,
    /// What each target platform's image was built from, outside the Dockerfile: images
    /// and URLs, sorted.
    pub materials: BTreeMap<Platform, Vec<Material>>,
    /// The build context, when a step read it.
    pub context: Option<ContextRead>,
    /// The steps each target platform's image needed, for the provenance's `mode=max`.
    pub steps: BTreeMap<Platform, Vec<crate::attest::provenance::Step>>,
    /// What each target's SBOM scans besides its image (`BUILDKIT_SBOM_SCAN_*`); empty
    /// when the build makes no SBOM.
    pub sbom_extras: BTreeMap<Platform, Vec<SbomExtra>>,
}

impl BuildReport {
    /// Set `set` of manifests: 0 the build's own compression ([`BuildReport::built`]),
    /// `n` the `n`-th of [`BuildOptions::more_compressions`]; `None` past the last.
    pub fn set(&self, set: usize) -> Option<&Built> {
        match set {
            0 => Some(&self.built),
            n => self.more_sets.get(n - 1),
        }
    }
}

/// Runs `graph` (planned from `stages`) with `options`, writing into `store`; registry I/O
/// runs on `runtime`. Returns the images and index, in the store, and what the build did.
/// With `sbom` (the build makes SBOMs, scanning the stages it says), the report also has
/// the stages and context they scan besides the images ([`BuildReport::sbom_extras`]),
/// their layers made available.
///
/// # Errors
/// A failed step (exit 1, with the `xbuild debug shell` command), store, registry or
/// context failures.
pub fn execute(
    graph: &BuildGraph,
    stages: &Stages,
    options: &BuildOptions,
    sbom: Option<StageScan>,
    store: &Store,
    runtime: &Handle,
) -> Result<BuildReport, ExecutorError> {
    execute_then(graph, stages, options, sbom, store, runtime, &|| {})
}

/// As [`execute`], calling `before_cache_export` once the images are made and before the
/// first `--cache-to` is written (a build with nodes waits there for the nodes' exports to
/// the same cache refs, so that one writer at a time reads and extends a cache index).
///
/// # Errors
/// As [`execute`].
pub fn execute_then(
    graph: &BuildGraph,
    stages: &Stages,
    options: &BuildOptions,
    sbom: Option<StageScan>,
    store: &Store,
    runtime: &Handle,
    before_cache_export: &dyn Fn(),
) -> Result<BuildReport, ExecutorError> {
    let mut warnings = graph.warnings.clone();
    let registry =
        Arc::new(RegistryOptions::from_env(store.root()).showing_notes(options.sink.clone()));
    let mut platforms: Vec<Platform> = graph
        .vertices
        .iter()
        .map(|vertex| vertex.platform.clone())
        .collect();
    platforms.sort();
    platforms.dedup();
    let (cache, cache_warnings) = StepCache::import(
        store.clone(),
        Arc::clone(&registry),
        runtime.clone(),
        &options.cache.from,
        &platforms,
        &options.sink,
    );
    warnings.extend(cache_warnings);
    let created = oci_image::rfc3339(options.source_date_epoch.unwrap_or_else(now));
    // Before the first pull or step: a key that cannot be loaded stops the build here.
    let ssh = ssh::Agents::start(&options.ssh)?;
    let mut services = Services::new(
        options,
        stages,
        store,
        runtime,
        registry,
        cache,
        VertexCounter::default(),
        created,
    );

    services.ssh = ssh;
    if options.eager_blobs {
        services.eager =
            eager::Eager::start(graph, options.compression, store, options.sink.clone());
    }
    let results = Scheduler::new(graph, &services).run()?;

    services.save_stat_cache();
    if !options.cache.lazy_layers {
        // The store keeps what it names complete: the result's layers come in now.
        for target in &graph.images {
            if let Some(done) = results.get(target.vertex) {
                services.cache.materialize(&done.state)?;
            }
        }
    }
    services.cache.record_imported_hits()?;
    let mut sets = assemble::images(&services, graph, &results)?.into_iter();
    let built = sets
        .next()
        .ok_or_else(|| ExecutorError::Internal("no set of manifests was written".to_owned()))?;
    let more_sets: Vec<Built> = sets.collect();
    if !options.cache.to.is_empty() {
        before_cache_export();
    }
    for export in &options.cache.to {
        match assemble::export_cache(&services, graph, &results, export) {
            Ok(()) => {}
            // `ignore-error=true`: the build stands without its cache, as buildx.
            Err(error) if export.ignore_error => warnings.push(format!(
                "--cache-to {}: {} (ignored: ignore-error=true)",
                export.location,
                crate::error::chain_text(&error)
            )),
            Err(error) => return Err(error),
        }
    }
    let foreign = archcheck::check_images(store, graph, &results, options.check_arch)?;
    if !foreign.is_empty() {
        if options.check_arch == CheckArch::Error {
            return Err(ExecutorError::ForeignBinaries { findings: foreign });
        }
        warnings.extend(foreign.into_iter().map(|line| {
            format!("{line} (it will fail with \"exec format error\"; --check-arch=error makes this fatal)")
        }));
    }
    let counts = services.counts();
    Ok(BuildReport {
        built,
        more_sets,
        emulated: counts.emulated.into_iter().collect(),
        steps_run: counts.steps_run,
        cached: counts.cached,
        unused_build_args: graph.unused_build_args.clone(),
        warnings,
        last_vertex: services.counter.last(),
        materials: services.materials.take(),
        context: services.context_read(),
        steps: steps::record(graph, &results, &services),
        sbom_extras: match sbom {
            Some(stages) => scan::extras(graph, &results, &services, stages)?,
            None => BTreeMap::new(),
        },
    })
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

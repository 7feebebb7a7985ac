//! The build driver: walks a [`crate::plan::BuildGraph`], resolves and pulls base images,
//! runs steps in the sandbox, commits layers, keeps the cache, and assembles one image per
//! target platform.
//!
//! [`run`] is the entry point: Dockerfile + context + options in, [`BuildReport`] (with the
//! [`crate::export::Built`] result, already in the store) out. Vertices run on their own
//! threads as soon as their parent and input stages are done (platforms side by side);
//! `RUN` steps are bounded (three at once). Modules: [`exec`] (the per-vertex work: state,
//! `FROM` and the base's `ONBUILD` triggers, config instructions, `RUN`, cache keys and
//! records, assembly of configs, manifests and the index), [`copy`] (`COPY`/`ADD`, the
//! directory `WORKDIR` creates), [`mounts`] (`RUN --mount`), [`failed`] (the record a
//! failed `RUN` leaves for `xbuild debug shell`).
//!
//! Cache key of a vertex: sha256 over the plan's vertex id (instruction after expansion,
//! platform, build args it sees, parent and input identities), the parent's key, input
//! stages' keys, the base manifest digest for `FROM`, the digest of exactly the context
//! entries a `COPY`/`ADD`/`RUN --mount=type=bind` reads, downloaded URL digests,
//! `SOURCE_DATE_EPOCH`, the network mode, and secret ids (never their values). A record
//! holds the whole resulting state (layer descriptors, diff_ids, config, history).

pub mod archcheck;
pub mod copy;
pub mod entitlements;
pub mod exec;
pub mod failed;
pub mod mounts;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::export::Built;
use crate::layer::Compression;
use crate::platform::Platform;
use crate::progress::SharedSink;

pub use exec::run;

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
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target_stage: Option<String>,
    /// `--no-cache`: run every step, still record results.
    pub no_cache: bool,
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
    /// Layer compression.
    pub compression: Compression,
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
}

/// What to do about ELF files whose platform the image's platform cannot run
/// (`--check-arch=warn|error|off`): an amd64 binary copied into an arm64 image is the classic
/// cause of `exec format error` at deploy time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
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
}

//! The build as one function: a [`BuildRequest`] in; the images, one per target platform,
//! and the index over them in the store and written to the outputs asked for, out.
//!
//! [`build`] reads top to bottom, one stage a line: the Dockerfile is read and parsed once,
//! `xbuild check`'s rules run on it, its stages are typed, the graph is planned for every
//! target platform (pure), everything not supported yet is refused ([`executor::validate`])
//! — all before any work —, then the graph is executed (here, and on the build nodes of the
//! request's builder), the attestations asked for are attached to each platform's manifest
//! as referrers ([`attest`]), and the result is exported (the store's names, a push,
//! archives).
//! One async runtime serves the whole build (registry I/O of pulls, cache imports, `ADD`
//! downloads, pushes).
//!
//! The CLI makes a [`BuildRequest`] from buildx's flags; an embedding tool (a Maven or
//! Gradle plugin, an IDE) makes one itself:
//!
//! ```no_run
//! use std::sync::Arc;
//! use xbuild::executor::{BuildOptions, CheckArch};
//! use xbuild::export::Output;
//! use xbuild::platform::Platform;
//!
//! let request = xbuild::BuildRequest {
//!     build: BuildOptions {
//!         context: "app".into(),
//!         dockerfile: "app/Dockerfile".into(),
//!         targets: vec![Platform::parse("linux/amd64")?, Platform::parse("linux/arm64")?],
//!         explicit_platforms: true,
//!         multi_platform: false,
//!         build_args: Default::default(),
//!         target_stage: None,
//!         no_cache: false,
//!         no_cache_filter: Vec::new(),
//!         pull: false,
//!         network_none: false,
//!         allow_insecure: false,
//!         network_host: false,
//!         allow_network_host: false,
//!         pids_limit: Some(4096),
//!         pids_limit_required: false,
//!         compression: Default::default(),
//!         eager_blobs: true,
//!         force_compression: false,
//!         more_compressions: Vec::new(),
//!         source_date_epoch: None,
//!         secrets: Default::default(),
//!         sink: Arc::new(xbuild::progress::Discard),
//!         check_arch: CheckArch::Warn,
//!         cache: Default::default(),
//!         labels: Default::default(),
//!         annotations: Vec::new(),
//!         add_hosts: Vec::new(),
//!         shm_size: None,
//!         ulimits: Vec::new(),
//!         ssh: Default::default(),
//!         named_contexts: Default::default(),
//!     },
//!     tags: vec!["registry.example/app:1".to_owned()],
//!     outputs: vec![Output::push(false)],
//!     output_sets: Vec::new(),
//!     builder: None,
//!     fallback: Default::default(),
//!     checks: true,
//!     // buildx's default on a push: a mode=min provenance (`--provenance=false` turns it off).
//!     attestations: xbuild::attest::options::Attestations::default().with_default(true, false),
//!     context_url: None,
//! };
//! let result = xbuild::build(&request)?;
//! println!("{}", result.report.built.index.digest());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`node`] is the other side of a build node: a sub-build for a builder on another
//! machine runs this same pipeline.

mod attest;
pub mod node;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::attest::options::Attestations;
use crate::check::{self, CheckError, CheckOptions, Report};
use crate::context::{ContextError, Dockerignore};
use crate::dockerfile::{self, Dockerfile, DockerfileError, Stages};
use crate::error::{ExitKind, Failure};
use crate::executor::{self, BuildOptions, BuildReport, ExecutorError};
use crate::export::{self, ExportError, ExportReport, Output};
use crate::nodes::Builder;
use crate::nodes::dispatch::{self, Fallback};
use crate::oci::LayoutError;
use crate::plan::{self, BuildGraph, PlanError, PlanOptions};
use crate::platform::{self, Platform};
use crate::progress::VertexCounter;
use crate::registry::{self, ImageRef, RegistryOptions};
use crate::remote::{self, ContextUrlError};
use crate::store::Store;

/// What to build, how, by whom, and where the result goes.
#[derive(Clone)]
pub struct BuildRequest {
    /// What to build and how (the Dockerfile, the context, the platforms, the flags).
    pub build: BuildOptions,
    /// The names of the result (`-t`): in the store, and where it is pushed.
    pub tags: Vec<String>,
    /// Where the result goes (none: the local store, under each tag).
    pub outputs: Vec<Output>,
    /// For each of `outputs`, the set of manifests it writes ([`BuildReport::set`]): 0 the
    /// build's `compression`, `n` the `n`-th of `build.more_compressions`; an output
    /// without an entry writes set 0.
    pub output_sets: Vec<usize>,
    /// The builder whose nodes build the platforms they list (`None`: everything here).
    pub builder: Option<Builder>,
    /// What to do when a node does not answer.
    pub fallback: Fallback,
    /// Whether `xbuild check`'s rules run first (a sub-build on a node skips them: the
    /// build that sent it ran them).
    pub checks: bool,
    /// The SBOM and provenance to attach to each platform's manifest (`--attest`, `--sbom`,
    /// `--provenance`; a sub-build on a node attaches none: the build that sent it does).
    pub attestations: Attestations,
    /// A URL given as the build context (`xbuild build URL`: a git repository, a tarball or
    /// a lone Dockerfile, as buildx takes it), fetched into a temporary directory before the
    /// Dockerfile is read; `None`: `build.context` is a local directory. With a URL,
    /// `build.context` is not read, and `build.dockerfile`, unless empty, is a path inside
    /// the fetched context (`-f`, relative to the URL's `#ref:subdir`, as buildx reads it).
    pub context_url: Option<String>,
}

/// What a build did.
#[derive(Debug)]
pub struct BuildResult {
    /// The images and index (in the store), and what the execution did.
    pub report: BuildReport,
    /// What the outputs wrote.
    pub exported: ExportReport,
    /// What `xbuild check`'s rules found (`None` when they did not run).
    pub checks: Option<Report>,
}

/// A build that stopped: why, what the checks found before it stopped (they are reported
/// either way, as buildx does), and, when an output failed, what was built.
#[derive(Debug)]
pub struct BuildFailure {
    /// Why it stopped.
    pub error: BuildError,
    /// What `xbuild check`'s rules found before.
    pub checks: Option<Box<Report>>,
    /// The build's report, when the images were built and only an output failed.
    pub report: Option<Box<BuildReport>>,
}

/// Displays as [`BuildFailure::error`], whose causes are this error's causes: the printed
/// chain is the error's.
impl std::fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for BuildFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl BuildFailure {
    /// The exit status it means.
    pub fn exit_kind(&self) -> ExitKind {
        self.error.exit_kind()
    }
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The async runtime could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] io::Error),
    /// The Dockerfile cannot be read.
    #[error("cannot read {file}: {error}")]
    ReadDockerfile {
        /// The Dockerfile, as given.
        file: String,
        /// Why.
        error: io::Error,
    },
    /// The Dockerfile does not parse or type.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// The Dockerfile cannot be planned for a target (a `FROM --platform` no one knows).
    #[error("{}{error}", .line.map(|line| format!("{file}:{line}: ")).unwrap_or_default())]
    Plan {
        /// The Dockerfile, as given.
        file: String,
        /// The line, where there is one.
        line: Option<usize>,
        /// Why.
        error: PlanError,
    },
    /// A `# check=` directive that does not parse.
    #[error(transparent)]
    CheckDirective(CheckError),
    /// `# check=error=true` and a rule fired.
    #[error("lint violation found for rules: {} (# check=error=true)", .rules.join(", "))]
    ChecksFailed {
        /// The rules that fired.
        rules: Vec<&'static str>,
    },
    /// The store cannot be opened.
    #[error("opening the store")]
    Store(#[source] LayoutError),
    /// Executing the graph failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// A build node failed, or could not be reached.
    #[error(transparent)]
    Nodes(anyhow::Error),
    /// Attestations were asked for, and an output has no place for them.
    #[error(
        "attestations (--attest, --sbom, --provenance) are stored as referrers of the image, \
         which {output} cannot carry: use the local store, --push or -o type=oci, or drop \
         the attestation flags"
    )]
    AttestationsLost {
        /// The output.
        output: &'static str,
    },
    /// Making or attaching an attestation failed.
    #[error("making the attestations")]
    Attest(#[source] anyhow::Error),
    /// An output could not be written.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The URL given as the build context could not be fetched.
    #[error(transparent)]
    ContextUrl(#[from] ContextUrlError),
    /// The URL of a `--build-context NAME=URL` could not be fetched.
    #[error("--build-context {name}: {source}")]
    NamedContextUrl {
        /// The context's name.
        name: String,
        /// Why.
        #[source]
        source: ContextUrlError,
    },
    /// The source `ARG SOURCE_DATE_EPOCH=NAME` takes its time from (a `--build-context` URL,
    /// a source-only stage's remote `ADD`) could not be fetched.
    #[error("{file}:{line}: SOURCE_DATE_EPOCH: {source}")]
    EpochSource {
        /// The Dockerfile, as given.
        file: String,
        /// The `ARG`'s line.
        line: usize,
        /// Why.
        #[source]
        source: ContextUrlError,
    },
    /// The context's ignore file is bad (a malformed pattern) or unreadable.
    #[error(transparent)]
    Dockerignore(ContextError),
}

impl BuildError {
    /// The exit status it means (README.md, "Exit codes").
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::ReadDockerfile { .. }
            | Self::Dockerfile(_)
            | Self::Plan { .. }
            | Self::CheckDirective(_)
            | Self::AttestationsLost { .. } => ExitKind::BadInput,
            Self::Runtime(_) | Self::ChecksFailed { .. } | Self::Store(_) | Self::Attest(_) => {
                ExitKind::Failed
            }
            Self::Executor(error) => error.exit_kind(),
            Self::Nodes(error) => crate::error::exit_kind(error),
            Self::Export(error) => error.exit_kind(),
            Self::ContextUrl(error)
            | Self::NamedContextUrl { source: error, .. }
            | Self::EpochSource { source: error, .. } => error.exit_kind(),
            Self::Dockerignore(error) => error.exit_kind(),
        }
    }
}

/// Builds what `request` asks for: one function, one stage a line.
///
/// # Errors
/// [`BuildFailure`]: what stopped the build ([`BuildError`], with its exit status), and
/// what the checks found before.
pub fn build(request: &BuildRequest) -> Result<BuildResult, BuildFailure> {
    let runtime = start_runtime().map_err(|error| BuildFailure {
        error,
        checks: None,
        report: None,
    })?;
    build_on(request, &runtime)
}

/// As [`build`], with `runtime` for its async I/O (a caller doing more I/O around the build
/// shares it).
///
/// # Errors
/// As [`build`].
pub fn build_on(
    request: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
) -> Result<BuildResult, BuildFailure> {
    // A URL context is fetched first; its directory lives until the build is done.
    let remote = match fetch_context_url(request, runtime) {
        Ok(remote) => remote,
        Err(error) => {
            return Err(BuildFailure {
                error,
                checks: None,
                report: None,
            });
        }
    };
    let request = remote.as_ref().map_or(request, |(_, local)| local);
    let options = &request.build;
    let mut checks = None;
    let mut built = None;
    let result = (|| {
        attest::refuse_outputs(request)?; // attestations only where they can go
        check_output_sets(request)?; // each output's set of manifests is one the build makes
        let started = crate::attest::unix_now();
        let (text, tree) = read_dockerfile(options)?; // read and parsed once
        checks = run_checks(request, &tree)?; // xbuild check's rules
        refuse_on_findings(checks.as_ref())?; // # check=error=true
        let stages = dockerfile::stages(&tree).map_err(|error| bad(options, error))?;
        // The Dockerfile's global `ARG SOURCE_DATE_EPOCH=...` when nothing else sets it.
        let with_epoch = dockerfile_epoch(&stages, request, runtime)?;
        let request = with_epoch
            .as_ref()
            .map_or(request, |(_, with_epoch)| with_epoch);
        let options = &request.build;
        let mut triggers = BaseTriggers::new();
        let graph = plan(&stages, options, &options.targets, &triggers)?; // pure: no I/O
        executor::validate::graph(&graph, options)?; // refusals, before any work
        let named = fetch_named_contexts(&graph, request, runtime)?; // URLs the graph reads
        let request = named.as_ref().map_or(request, |(_, local)| local);
        let store = Store::open_default().map_err(BuildError::Store)?;
        // Base images' ONBUILD triggers (their configs read) planned in, each graph validated.
        let graph = plan_triggers(&stages, options, graph, &store, runtime, &mut triggers)
            .map_err(|error| with_source(error, &text))?;
        let mut report = execute(
            request,
            &text,
            &stages,
            graph,
            &triggers,
            &store,
            runtime.handle(),
        )
        .map_err(|error| with_source(error, &text))?; // a failed step shows its lines
        attest::attach(request, &text, &mut report, &store, started)?; // SBOM, provenance
        let exported = match export(request, &report, &store, runtime) {
            Ok(exported) => exported, // the store's names, pushes, files
            Err(error) => {
                built = Some(report);
                return Err(error);
            }
        };
        Ok((report, exported))
    })();
    match result {
        Ok((report, exported)) => Ok(BuildResult {
            report,
            exported,
            checks,
        }),
        Err(error) => Err(BuildFailure {
            error,
            checks: checks.map(Box::new),
            report: built.map(Box::new),
        }),
    }
}

/// The request's URL context, fetched into a temporary directory (kept as long as the
/// returned value), and the request reading that directory as its local context, with
/// `SOURCE_DATE_EPOCH=context` resolved (for a local context: unset).
/// How to fetch the remote context `url`: a git repository over ssh through `--ssh
/// default`, as BuildKit's git source does (the agent is kept while the first value lives);
/// without one, the fetch stops with an error saying to pass it.
fn git_fetch_options(
    url: &str,
    options: &BuildOptions,
) -> Result<(Option<executor::DefaultAgent>, remote::ContextOptions), BuildError> {
    let ssh = crate::source::gitref::GitRef::parse(url)
        .ok()
        .flatten()
        .is_some_and(|git| git.is_ssh());
    if !ssh {
        return Ok((None, remote::ContextOptions::default()));
    }
    let agent = executor::DefaultAgent::start(&options.ssh)?;
    let mut fetch = remote::ContextOptions::default();
    fetch.git.ssh_agent = agent
        .as_ref()
        .and_then(executor::DefaultAgent::socket)
        .map(std::path::Path::to_path_buf);
    Ok((agent, fetch))
}

fn fetch_context_url(
    request: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<(Option<tempfile::TempDir>, BuildRequest)>, BuildError> {
    let epoch_from_context = request
        .build
        .build_args
        .get("SOURCE_DATE_EPOCH")
        .is_some_and(|value| value == "context");
    let Some(url) = &request.context_url else {
        if !epoch_from_context {
            return Ok(None);
        }
        // `SOURCE_DATE_EPOCH=context` with a local context: no time, as in BuildKit.
        let mut local = request.clone();
        local.build.build_args.remove("SOURCE_DATE_EPOCH");
        local.build.source_date_epoch = None;
        return Ok(Some((None, local)));
    };
    let tmp = tempfile::Builder::new()
        .prefix("xbuild-context-")
        .tempdir()
        .map_err(|source| {
            BuildError::ContextUrl(ContextUrlError::Io {
                operation: "creating a temporary directory",
                path: std::env::temp_dir(),
                source,
            })
        })?;
    let (_agent, fetch_options) = git_fetch_options(url, &request.build)?;
    let fetched = runtime.block_on(remote::fetch_context(url, tmp.path(), &fetch_options))?;
    let mut local = request.clone();
    local.context_url = None;
    if epoch_from_context {
        // `SOURCE_DATE_EPOCH=context`: the commit's time, the download's Last-Modified, else
        // the newest file of the archive; what RUN's `ARG SOURCE_DATE_EPOCH` sees too.
        local.build.source_date_epoch = fetched.source_date_epoch;
        match fetched.source_date_epoch {
            Some(epoch) => local
                .build
                .build_args
                .insert("SOURCE_DATE_EPOCH".to_owned(), epoch.to_string()),
            None => local.build.build_args.remove("SOURCE_DATE_EPOCH"),
        };
    }
    local.build.context.clone_from(&fetched.dir);
    let file = std::mem::take(&mut local.build.dockerfile);
    local.build.dockerfile = if file.as_os_str().is_empty() {
        fetched.dockerfile
    } else if fetched.lone_dockerfile {
        return Err(BuildError::ContextUrl(
            ContextUrlError::FileWithLoneDockerfile {
                url: crate::source::gitref::redact(url),
                file: file.display().to_string(),
            },
        ));
    } else {
        fetched.dir.join(file)
    };
    Ok(Some((Some(tmp), local)))
}

/// The `--build-context NAME=URL`s the graph reads, each fetched into a temporary directory
/// (kept as long as the returned value; a context no vertex reads is not fetched, as
/// BuildKit loads only what the build uses), and the request reading those directories.
fn fetch_named_contexts(
    graph: &BuildGraph,
    request: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<(Vec<tempfile::TempDir>, BuildRequest)>, BuildError> {
    let used: std::collections::BTreeSet<&str> = graph
        .vertices
        .iter()
        .filter_map(|vertex| match &vertex.op {
            plan::Op::Context { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut local = None::<BuildRequest>;
    let mut dirs = Vec::new();
    for (name, context) in &request.build.named_contexts {
        let executor::NamedContext::Url(url) = context else {
            continue;
        };
        if !used.contains(name.as_str()) {
            continue;
        }
        let (tmp, fetched) = fetch_url(
            url,
            "xbuild-named-context-",
            &request.build,
            runtime,
            |source| BuildError::NamedContextUrl {
                name: name.clone(),
                source,
            },
        )?;
        local
            .get_or_insert_with(|| request.clone())
            .build
            .named_contexts
            .insert(name.clone(), executor::NamedContext::Dir(fetched.dir));
        dirs.push(tmp);
    }
    Ok(local.map(|local| (dirs, local)))
}

/// `url` fetched as a context ([`remote::fetch_context`]: a git repository, an archive, a
/// file) into a new temporary directory named with `prefix`, kept as long as the returned
/// value; `wrap` says which source failed.
fn fetch_url(
    url: &str,
    prefix: &str,
    options: &BuildOptions,
    runtime: &tokio::runtime::Runtime,
    wrap: impl Fn(ContextUrlError) -> BuildError,
) -> Result<(tempfile::TempDir, remote::RemoteContext), BuildError> {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| {
            wrap(ContextUrlError::Io {
                operation: "creating a temporary directory",
                path: std::env::temp_dir(),
                source,
            })
        })?;
    let (_agent, fetch_options) = git_fetch_options(url, options)?;
    let fetched = runtime
        .block_on(remote::fetch_context(url, tmp.path(), &fetch_options))
        .map_err(wrap)?;
    Ok((tmp, fetched))
}

/// The build's async runtime.
fn start_runtime() -> Result<tokio::runtime::Runtime, BuildError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)
}

/// The Dockerfile's bytes (sent as they are to build nodes) and its syntax tree. The
/// parser's warnings (empty continuation lines) are not kept: the check rule
/// `NoEmptyContinuation` reports them with the build's other check warnings.
fn read_dockerfile(options: &BuildOptions) -> Result<(Vec<u8>, Dockerfile), BuildError> {
    let file = options.dockerfile.display().to_string();
    let text = std::fs::read(&options.dockerfile)
        .map_err(|error| BuildError::ReadDockerfile { file, error })?;
    let tree =
        dockerfile::parse(&String::from_utf8_lossy(&text)).map_err(|error| bad(options, error))?;
    Ok((text, tree))
}

/// A Dockerfile error, naming the file as the user gave it.
fn bad(options: &BuildOptions, error: DockerfileError) -> BuildError {
    BuildError::Dockerfile(error.with_file(options.dockerfile.display().to_string()))
}

/// `xbuild check`'s rules, when the request asks for them. `None` when the Dockerfile
/// does not type: the build reports that itself, next.
fn run_checks(request: &BuildRequest, tree: &Dockerfile) -> Result<Option<Report>, BuildError> {
    if !request.checks {
        return Ok(None);
    }
    let options = &request.build;
    let check_options = CheckOptions {
        file: options.dockerfile.display().to_string(),
        build_args: options.build_args.clone(),
        targets: options.targets.clone(),
        build_platform: platform::host(),
        target_stage: options.target_stage.clone(),
        // A bad ignore file is bad input (exit 2), found here before any work.
        dockerignore: Dockerignore::load(&options.context, &options.dockerfile)
            .map_err(BuildError::Dockerignore)?,
    };
    match check::check(tree, &check_options) {
        Ok(report) => Ok(Some(report)),
        Err(error @ CheckError::Directive { .. }) => Err(BuildError::CheckDirective(error)),
        Err(_) => Ok(None),
    }
}

/// With `# check=error=true`, a build with findings stops before it starts.
fn refuse_on_findings(checks: Option<&Report>) -> Result<(), BuildError> {
    match checks.filter(|report| report.is_error()) {
        Some(report) => Err(BuildError::ChecksFailed {
            rules: report.rules_fired(),
        }),
        None => Ok(()),
    }
}

/// The `ONBUILD` triggers of base images by reference and platform ([`PlanOptions::base_triggers`]).
type BaseTriggers = BTreeMap<(String, Platform), Vec<String>>;

/// The graph for `targets`, with the base images' triggers known so far.
fn plan(
    stages: &Stages,
    options: &BuildOptions,
    targets: &[Platform],
    triggers: &BaseTriggers,
) -> Result<BuildGraph, BuildError> {
    let plan_options = PlanOptions {
        targets: targets.to_vec(),
        build_platform: platform::host(),
        build_args: options.build_args.clone(),
        target_stage: options.target_stage.clone(),
        named_contexts: options
            .named_contexts
            .iter()
            .map(|(name, context)| (name.clone(), context.plan_kind()))
            .collect(),
        base_triggers: triggers.clone(),
        // The build's platforms, not only those planned here (a build node has the rest).
        multi_platform: options.targets.len() > 1 || options.multi_platform,
    };
    plan::for_targets(stages, &plan_options).map_err(|error| match error {
        PlanError::Dockerfile(error) => bad(options, error),
        error => BuildError::Plan {
            file: options.dockerfile.display().to_string(),
            line: error.line(),
            error,
        },
    })
}

/// `graph` planned again until the `ONBUILD` triggers of every base image are in it, as
/// BuildKit reads them before it builds: a trigger can read another stage or image
/// (`ONBUILD COPY --from=...`), which the plan must know. Each base's config is read once
/// (the store's copy unless `--pull`, else the registry's manifest and config: no layer),
/// and every new graph is validated before any step. A base that cannot be read fails the
/// build here, named by its `FROM` step as when the step pulls it.
fn plan_triggers(
    stages: &Stages,
    options: &BuildOptions,
    mut graph: BuildGraph,
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    triggers: &mut BaseTriggers,
) -> Result<BuildGraph, BuildError> {
    let registry = Arc::new(RegistryOptions::from_env(store.root()));
    // Bases come from FROM lines only, so there are finitely many to read.
    while !graph.unknown_bases.is_empty() {
        let mut any = false;
        for (reference, platform) in std::mem::take(&mut graph.unknown_bases) {
            let vertex = graph.vertices.iter().find(|vertex| {
                vertex.platform == platform
                    && matches!(&vertex.op, plan::Op::Image { reference: named, .. } if *named == reference)
            });
            let step =
                vertex.map_or_else(|| format!("FROM {reference}"), plan::Vertex::display_name);
            let span = vertex
                .and_then(|vertex| stages.stages.get(vertex.stage))
                .map(|stage| stage.from.span)
                .unwrap_or_default();
            let file = options.dockerfile.display().to_string();
            let within = |source: ExecutorError| source.located(&file, span, &step);
            let image = ImageRef::parse(&reference).map_err(|error| {
                within(ExecutorError::BadReference {
                    reference: reference.clone(),
                    reason: error.to_string(),
                })
            })?;
            let config = runtime
                .block_on(registry::pull::config_of(
                    Arc::clone(&registry),
                    store.layout(),
                    &image,
                    &platform,
                    !options.pull,
                ))
                .map_err(|error| within(error.into()))?;
            let found = onbuild_of(&config);
            any |= !found.is_empty();
            triggers.insert((reference, platform), found);
        }
        if !any {
            // Nothing changes the plan: the same graph, its bases now known.
            return Ok(graph);
        }
        graph = plan(stages, options, &options.targets, triggers)?;
        executor::validate::graph(&graph, options)?;
    }
    Ok(graph)
}

/// The request with the epoch of the Dockerfile's global `ARG SOURCE_DATE_EPOCH=VALUE` (its
/// default, as the `FROM` lines see it), when neither `--build-arg SOURCE_DATE_EPOCH` nor
/// the environment sets one, as BuildKit takes it (buildx passes the environment's as a build
/// argument, which wins over the default). `None`: nothing to change.
///
/// A value that is not a number names, as in BuildKit's `resolveSourceDateEpochState`, a
/// `--build-context` (a URL's time: the commit's, else the download's `Last-Modified`, else
/// the newest file of its archive; a context of another kind has none), else a source-only
/// stage (`FROM scratch`, `ARG`s and one remote `ADD`: the time of that source, found the
/// same way). The time found is what `ARG SOURCE_DATE_EPOCH` then gives every stage; none
/// found leaves the build without one. A named URL context fetched for its time is kept (the
/// temporary directory returned) and read by the build as that directory.
///
/// # Errors
/// A default that is not a number of seconds and names neither (BuildKit's "invalid
/// SOURCE_DATE_EPOCH"), at the `ARG`'s line, or a stage that is not source-only, at its
/// `FROM`, exit 2; a source that cannot be fetched.
fn dockerfile_epoch(
    stages: &Stages,
    request: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<(Option<tempfile::TempDir>, BuildRequest)>, BuildError> {
    const NAME: &str = "SOURCE_DATE_EPOCH";
    let options = &request.build;
    if options.source_date_epoch.is_some() || options.build_args.contains_key(NAME) {
        return Ok(None);
    }
    let Some(line) = stages
        .meta_args
        .iter()
        .rev()
        .find(|arg| arg.args.iter().any(|declaration| declaration.name == NAME))
        .map(|arg| arg.span.start)
    else {
        return Ok(None);
    };
    let resolve_options = |target: Option<String>| dockerfile::ResolveOptions {
        build_args: options.build_args.clone(),
        automatic_args: plan::automatic_args(
            &options
                .targets
                .first()
                .cloned()
                .unwrap_or_else(platform::host),
            &platform::host(),
        ),
        target,
        named_contexts: options.named_contexts.keys().cloned().collect(),
        base_triggers: BTreeMap::new(),
    };
    let resolved = dockerfile::resolve(stages, &resolve_options(options.target_stage.clone()))
        .map_err(|error| bad(options, error))?;
    let Some(value) = resolved
        .meta_args
        .iter()
        .find(|(name, _)| name == NAME)
        .map(|(_, value)| value.clone())
    else {
        return Ok(None);
    };
    let file = options.dockerfile.display().to_string();
    let mut with_epoch = request.clone();
    if let Ok(epoch) = value.trim().parse::<i64>() {
        with_epoch.build.source_date_epoch = Some(epoch);
        return Ok(Some((None, with_epoch)));
    }
    let lower = value.to_lowercase();
    let fetch = |url: &str, prefix: &str| {
        fetch_url(url, prefix, options, runtime, |source| {
            BuildError::EpochSource {
                file: file.clone(),
                line,
                source,
            }
        })
    };
    let mut kept = None;
    let epoch = if let Some(name) =
        dockerfile::context_name(&lower).filter(|name| options.named_contexts.contains_key(name))
    {
        match &options.named_contexts[&name] {
            executor::NamedContext::Url(url) => {
                let (tmp, fetched) = fetch(url, "xbuild-named-context-")?;
                with_epoch
                    .build
                    .named_contexts
                    .insert(name, executor::NamedContext::Dir(fetched.dir));
                kept = Some(tmp);
                fetched.source_date_epoch
            }
            // An image, an OCI layout or a directory: BuildKit's source metadata carries no
            // time for these.
            _ => None,
        }
    } else {
        let Some(stage) = stages
            .stages
            .iter()
            .find(|stage| stage.name.as_deref() == Some(lower.as_str()))
        else {
            let message = format!("invalid SOURCE_DATE_EPOCH: {value}");
            return Err(ExecutorError::invalid(&file, line, message).into());
        };
        let url = epoch_stage_source(stages, stage, &file, || {
            dockerfile::resolve(stages, &resolve_options(Some(lower.clone())))
                .map_err(|error| bad(options, error))
        })?;
        fetch(&url, "xbuild-epoch-source-")?.1.source_date_epoch
    };
    // What `ARG SOURCE_DATE_EPOCH` gives the stages now: the time found, else nothing (an
    // empty value, where BuildKit deletes the global argument).
    with_epoch.build.source_date_epoch = epoch;
    with_epoch.build.build_args.insert(
        NAME.to_owned(),
        epoch.map(|epoch| epoch.to_string()).unwrap_or_default(),
    );
    Ok(Some((kept, with_epoch)))
}

/// The one remote source of a stage `SOURCE_DATE_EPOCH` names, after BuildKit's
/// `sourceDateEpochStageSource`: the stage is `FROM scratch` and holds only `ARG`s and one
/// `ADD` of one `http(s)://` URL or git repository (its source expanded as the stage expands
/// it: `resolve` resolves the Dockerfile for that stage).
fn epoch_stage_source(
    stages: &Stages,
    stage: &dockerfile::Stage,
    file: &str,
    resolve: impl FnOnce() -> Result<dockerfile::ResolvedStages, BuildError>,
) -> Result<String, BuildError> {
    let at_stage = |message: &str| -> BuildError {
        ExecutorError::invalid(file, stage.span.start, message.to_owned()).into()
    };
    if !stage.from.image.eq_ignore_ascii_case("scratch") {
        return Err(at_stage("SOURCE_DATE_EPOCH stage must use FROM scratch"));
    }
    let mut adds = 0;
    for instruction in &stage.instructions {
        match instruction {
            dockerfile::Instruction::Arg(_) => {}
            dockerfile::Instruction::Add(_) => adds += 1,
            other => {
                return Err(at_stage(&format!(
                    "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported {} instruction",
                    other.name().to_lowercase()
                )));
            }
        }
    }
    if adds != 1 {
        return Err(at_stage(
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
        ));
    }
    let index = stages
        .stages
        .iter()
        .position(|other| std::ptr::eq(other, stage));
    let resolved = resolve()?;
    let add = resolved
        .stages
        .iter()
        .filter(|resolved| Some(resolved.index) == index)
        .flat_map(|resolved| &resolved.instructions)
        .find_map(|resolved| match &resolved.instruction {
            dockerfile::Instruction::Add(add) => Some(add),
            _ => None,
        });
    let source = match add.map(|add| add.sources.as_slice()) {
        Some([dockerfile::instruction::Source::Path(source)]) => source,
        _ => {
            return Err(at_stage(
                "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
            ));
        }
    };
    let http = source.starts_with("http://") || source.starts_with("https://");
    let git = matches!(
        crate::source::gitref::GitRef::parse(source),
        Ok(Some(git)) if !git.indistinguishable_from_local
    );
    if !http && !git {
        return Err(at_stage(
            "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD",
        ));
    }
    Ok(source.clone())
}

/// `error` with the Dockerfile's lines around the failed step, as BuildKit shows them.
fn with_source(error: BuildError, dockerfile: &[u8]) -> BuildError {
    match error {
        BuildError::Executor(mut error) => {
            error.add_source(&String::from_utf8_lossy(dockerfile));
            BuildError::Executor(error)
        }
        other => other,
    }
}

/// The `OnBuild` triggers of a raw image config (none when it has none, or is not JSON).
fn onbuild_of(config: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|config| {
            serde_json::from_value(config.get("config")?.get("OnBuild")?.clone()).ok()
        })
        .unwrap_or_default()
}

/// Runs the graph: here, or with the nodes of the request's builder (which probes every
/// node first, and runs the local platforms' graph here at the same time).
fn execute(
    request: &BuildRequest,
    dockerfile: &[u8],
    stages: &Stages,
    graph: BuildGraph,
    triggers: &BaseTriggers,
    store: &Store,
    runtime: &tokio::runtime::Handle,
) -> Result<BuildReport, BuildError> {
    let options = &request.build;
    let here = |graph: &BuildGraph,
                options: &BuildOptions,
                before_cache_export: &dyn Fn()|
     -> Result<BuildReport, ExecutorError> {
        executor::validate::ensure_emulators(graph, &options.sink)?;
        executor::execute_then(
            graph,
            stages,
            options,
            (request.attestations.sbom || request.attestations.node_stages).then_some(
                if request.attestations.scan_stage {
                    executor::StageScan::Every
                } else {
                    executor::StageScan::Asked
                },
            ),
            store,
            runtime,
            before_cache_export,
        )
    };
    let Some(builder) = &request.builder else {
        return Ok(here(&graph, options, &|| {})?);
    };
    // A node scans the stages it built and sends the scans back; the context is scanned
    // here (it is here), as a local build scans it.
    let stage_scan = request
        .attestations
        .sbom
        .then_some(if request.attestations.scan_stage {
            executor::StageScan::Every
        } else {
            executor::StageScan::Asked
        });
    let scan_requests = dockerfile::sbomscan::scan_requests(stages, &options.build_args);
    let sboms = dispatch::Sboms {
        stages: stage_scan
            .filter(|scan| *scan == executor::StageScan::Every || !scan_requests.stages.is_empty()),
        context: request.attestations.sbom
            && graph
                .images
                .first()
                .is_some_and(|image| scan_requests.context.contains(&image.stage)),
    };
    let push_to = request
        .outputs
        .iter()
        .any(|output| matches!(output, Output::Registry { .. }))
        .then(|| request.tags.first().cloned())
        .flatten();
    // Only the manifests come back from the nodes when every output is a push (the store
    // does not name a pushed image it lacks layers of) and no SBOM is scanned here.
    let manifests_only = push_to.is_some()
        && !request.attestations.sbom
        && request
            .outputs
            .iter()
            .all(|output| matches!(output, Output::Registry { .. }));
    // The named contexts (only those directories go to the nodes) and images the graph
    // reads (their registries' credentials go with the nodes' requests).
    let mut uses = dispatch::GraphUses::default();
    for vertex in &graph.vertices {
        match &vertex.op {
            plan::Op::Context { name } => uses.contexts.insert(name.clone()),
            plan::Op::Image { reference, .. } => uses.images.insert(reference.clone()),
            _ => false,
        };
    }
    dispatch::run(
        options,
        dockerfile,
        &uses,
        builder,
        request.fallback,
        dispatch::Push {
            repository: push_to.as_deref(),
            manifests_only,
            sboms,
        },
        |platforms, sink, before_cache_export| {
            // The platforms built here: their part of the graph (planning is pure and
            // cheap; the whole graph was validated already), their progress numbered with
            // the nodes'.
            let local = if platforms == options.targets.as_slice() {
                graph
            } else {
                plan(stages, options, platforms, triggers)
                    .map_err(|error| Failure::new(error.exit_kind(), error))?
            };
            let mut options = options.clone();
            options.sink = sink;
            here(&local, &options, before_cache_export)
                .map_err(|error| Failure::new(error.exit_kind(), error).into())
        },
    )
    .map_err(BuildError::Nodes)
}

/// Writes the result to the request's outputs (the store's names by default), each output
/// the set of manifests of its layer compression (`BuildRequest::output_sets`), in the
/// order given; progress numbers go on after the build's.
fn export(
    request: &BuildRequest,
    report: &BuildReport,
    store: &Store,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExportReport, BuildError> {
    let registry =
        Arc::new(RegistryOptions::from_env(store.root()).showing_notes(request.build.sink.clone()));
    // An OCI archive carries the attestations the user asked for, not buildx's default
    // provenance of a push (see `Output::Oci`).
    let asked = request.attestations.asked();
    let outputs: Vec<Output> = request
        .outputs
        .iter()
        .map(|output| match output {
            Output::Oci {
                dest,
                referrers,
                media_types,
                tar,
            } => Output::Oci {
                dest: dest.clone(),
                referrers: *referrers && asked,
                media_types: *media_types,
                tar: *tar,
            },
            other => other.clone(),
        })
        .collect();
    let vertices = VertexCounter::after(report.last_vertex);
    if outputs.is_empty() {
        // The store's names: the build's own set.
        return Ok(runtime.block_on(export::write(
            store,
            registry,
            &report.built,
            &request.tags,
            &outputs,
            request.build.sink.clone(),
            &vertices,
        ))?);
    }
    let mut exported = ExportReport::default();
    let mut first = 0;
    while first < outputs.len() {
        // A run of outputs of one set, written together.
        let set = output_set(request, first);
        let mut end = first + 1;
        while end < outputs.len() && output_set(request, end) == set {
            end += 1;
        }
        let built = report.set(set).ok_or_else(|| {
            ExecutorError::Internal(format!(
                "output {} asks for set {set} of manifests, and the build made {}",
                first + 1,
                report.more_sets.len() + 1
            ))
        })?;
        let written = runtime.block_on(export::write(
            store,
            Arc::clone(&registry),
            built,
            &request.tags,
            &outputs[first..end],
            request.build.sink.clone(),
            &vertices,
        ))?;
        exported.written.extend(written.written);
        exported.notes.extend(written.notes);
        first = end;
    }
    Ok(exported)
}

/// Every output writes a set of manifests the build makes (one per layer compression);
/// several sets are not made with build nodes yet (a node sends back one set, at the
/// build's compression): refused before any work.
fn check_output_sets(request: &BuildRequest) -> Result<(), BuildError> {
    let options = &request.build;
    if let Some(builder) = &request.builder
        && !options.more_compressions.is_empty()
        && let Some((target, node)) = options
            .targets
            .iter()
            .find_map(|target| builder.node_for(target).map(|node| (target, node)))
    {
        return Err(BuildError::Nodes(
            Failure::bad_input(format_args!(
                "outputs with different layer compressions (compression, compression-level or \
                 force-compression): not supported yet with build nodes ({target} goes to node {} \
                 of builder {}); give each output the same compression, or use --builder default",
                node.name, builder.name
            ))
            .into(),
        ));
    }
    let sets = options.more_compressions.len() + 1;
    match request.output_sets.iter().position(|set| *set >= sets) {
        Some(index) => Err(ExecutorError::Internal(format!(
            "output {} asks for set {} of manifests, and the build makes {sets}",
            index + 1,
            request.output_sets[index]
        ))
        .into()),
        None => Ok(()),
    }
}

/// The set of manifests output `index` of the request writes (0 when none is given).
fn output_set(request: &BuildRequest, index: usize) -> usize {
    request.output_sets.get(index).copied().unwrap_or(0)
}

//! `xbuild debug ...`: looks inside xbuild's stages for users and tests. Hidden from the
//! main help (it is not part of the build interface) but documented here and in
//! `xbuild debug --help`.
//!
//! - `xbuild debug ast FILE`: the Dockerfile's tree in BuildKit's dump format, one
//!   instruction a line (`(run "make")`).
//! - `xbuild debug stages FILE [--build-arg K=V] [--target T] [--platform P]`: the typed
//!   stages resolved for one target, as JSON. `--build-platform` sets `BUILDPLATFORM` & co.
//!   (default: the host), so the output can be compared across machines.
//! - `xbuild debug plan FILE --platform P,P [--build-arg K=V] [--target T] [--json]`: the
//!   build graph for all targets, one vertex a line, shared vertices once.
//! - `xbuild debug shell [--before] ID [COMMAND...]`: a shell in a failed step's state
//!   ([`super::run`]).
//! - `xbuild debug sbom|provenance|attach|referrers`: attestations ([`super::attest`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::output;
use super::values::platform_arg;
use crate::dockerfile::{self, DockerfileError, ResolveOptions};
use crate::error::{ExitKind, Failure, ResultExt};
use crate::plan::{self, PlanError, PlanOptions};
use crate::platform::{self, Platform};

/// `xbuild debug`: inspect what xbuild makes of its inputs.
#[derive(Debug, Args)]
pub struct DebugArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: DebugCommand,
}

/// The `debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's dump format.
    Ast(AstArgs),
    /// Print a Dockerfile's stages, typed and resolved for a target, as JSON.
    Stages(StagesArgs),
    /// Print the build graph for one or more target platforms (shared vertices once).
    Plan(PlanArgs),
    /// Open a shell (or run COMMAND) in the state a failed RUN left, or before it.
    Shell(super::run::ShellArgs),
    /// Scan a root directory or a stored image and print its SBOM.
    Sbom(super::attest::SbomArgs),
    /// Print the SLSA provenance of a build record (JSON).
    Provenance(super::attest::ProvenanceArgs),
    /// Attach an SBOM or a provenance to a stored image as a referrer.
    Attach(super::attest::AttachArgs),
    /// List the referrers (attestations) of a stored image.
    Referrers(super::attest::ReferrersArgs),
}

/// `xbuild debug plan FILE --platform P[,P...]`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The Dockerfile.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platforms, comma separated or repeated (default: the host's).
    #[arg(long, value_delimiter = ',', value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Build platform (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub build_platform: Option<String>,
    /// Print JSON instead of one line per vertex.
    #[arg(long)]
    pub json: bool,
}

/// `xbuild debug ast FILE`.
#[derive(Debug, Args)]
pub struct AstArgs {
    /// The Dockerfile.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `xbuild debug stages FILE`.
#[derive(Debug, Args)]
pub struct StagesArgs {
    /// The Dockerfile.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to resolve for (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform for the automatic arguments (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Build platform for the automatic arguments (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub build_platform: Option<String>,
}

impl DebugArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// Unreadable file (exit 2), Dockerfile errors (exit 2).
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            DebugCommand::Ast(args) => args.run(),
            DebugCommand::Stages(args) => args.run(),
            DebugCommand::Plan(args) => args.run(),
            DebugCommand::Shell(args) => args.run(),
            DebugCommand::Sbom(args) => args.run(),
            DebugCommand::Provenance(args) => args.run(),
            DebugCommand::Attach(args) => args.run(),
            DebugCommand::Referrers(args) => args.run(),
        }
    }
}

/// Reads and parses a Dockerfile, naming it as the user did in errors.
fn load(file: &Path) -> anyhow::Result<dockerfile::Dockerfile> {
    let bytes = std::fs::read(file).map_err(|error| {
        Failure::bad_input(format_args!("cannot read {}: {error}", file.display()))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let tree = dockerfile::parse(&text).map_err(|error| bad_dockerfile(error, file))?;
    for warning in &tree.warnings {
        output::warning(format_args!(
            "{}:{}: {}",
            file.display(),
            warning.line,
            warning.message
        ));
    }
    Ok(tree)
}

fn bad_dockerfile(error: DockerfileError, file: &Path) -> Failure {
    Failure::new(
        ExitKind::BadInput,
        error.with_file(file.display().to_string()),
    )
}

impl AstArgs {
    fn run(self) -> anyhow::Result<()> {
        let tree = load(&self.file)?;
        // The dump ends with a newline; `stdout` adds one per call.
        output::stdout(tree.dump().trim_end_matches('\n'));
        Ok(())
    }
}

impl StagesArgs {
    /// The target platform (`--platform`, one) and the build platform (`--build-platform`),
    /// each the host's by default.
    ///
    /// # Errors
    /// Several targets, or a value that is not a platform xbuild builds for (exit 2).
    pub fn platforms(&self) -> anyhow::Result<(Platform, Platform)> {
        let target = match &self.platform {
            Some(platform) if platform.contains(',') => {
                return Err(Failure::bad_input("debug stages takes one --platform").into());
            }
            Some(platform) => platform_arg(platform)?,
            None => platform::host(),
        };
        let build = match &self.build_platform {
            Some(platform) => platform_arg(platform)?,
            None => platform::host(),
        };
        Ok((target, build))
    }

    fn run(self) -> anyhow::Result<()> {
        let tree = load(&self.file)?;
        let stages =
            dockerfile::stages(&tree).map_err(|error| bad_dockerfile(error, &self.file))?;
        let build_args = parse_build_args(&self.build_args);
        let (target_platform, build_platform) = self.platforms()?;
        let options = ResolveOptions {
            build_args,
            automatic_args: plan::automatic_args(&target_platform, &build_platform),
            target: self.target,
            named_contexts: Default::default(),
            // No image is read here: a base image's ONBUILD triggers are left out.
            base_triggers: Default::default(),
        };
        let resolved = dockerfile::resolve(&stages, &options)
            .map_err(|error| bad_dockerfile(error, &self.file))?;
        for warning in &resolved.warnings {
            output::warning(warning);
        }
        if !resolved.unused_build_args.is_empty() {
            output::warning(format_args!(
                "build arguments not consumed by any ARG: {}",
                resolved.unused_build_args.join(", ")
            ));
        }
        let json = serde_json::to_string_pretty(&resolved).exit_kind(ExitKind::Failed)?;
        output::stdout(json);
        Ok(())
    }
}

/// Collects `--build-arg KEY=VALUE` (or `KEY`, taken from the environment when set).
pub(crate) fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    let mut build_args = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((key, value)) => {
                build_args.insert(key.to_owned(), value.to_owned());
            }
            // `--build-arg KEY` takes the value from the environment, or is ignored.
            None => {
                if let Ok(value) = std::env::var(arg) {
                    build_args.insert(arg.clone(), value);
                }
            }
        }
    }
    build_args
}

impl PlanArgs {
    /// The target platforms (`--platform`, as given) and the build platform
    /// (`--build-platform`), each the host's by default.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn platforms(&self) -> anyhow::Result<(Vec<Platform>, Platform)> {
        let targets = if self.platform.is_empty() {
            vec![platform::host()]
        } else {
            self.platform
                .iter()
                .map(|text| platform_arg(text))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let build = match &self.build_platform {
            Some(text) => platform_arg(text)?,
            None => platform::host(),
        };
        Ok((targets, build))
    }

    fn run(self) -> anyhow::Result<()> {
        let tree = load(&self.file)?;
        let stages =
            dockerfile::stages(&tree).map_err(|error| bad_dockerfile(error, &self.file))?;
        let (targets, build_platform) = self.platforms()?;
        let options = PlanOptions {
            targets,
            build_platform,
            build_args: parse_build_args(&self.build_args),
            target_stage: self.target,
            named_contexts: Default::default(),
            // No image is read here: base images' ONBUILD triggers are left out.
            base_triggers: Default::default(),
            multi_platform: false,
        };
        let graph = plan::for_targets(&stages, &options).map_err(|error| match error {
            PlanError::Dockerfile(error) => bad_dockerfile(error, &self.file),
            other => Failure::new(ExitKind::BadInput, other),
        })?;
        if self.json {
            let json = serde_json::to_string_pretty(&graph).exit_kind(ExitKind::Failed)?;
            output::stdout(json);
        } else {
            output::stdout(graph.render().trim_end_matches('\n'));
        }
        Ok(())
    }
}

//! `xbuild debug ...`: looks inside xbuild's stages for users and tests. Hidden from the
//! main help (it is not part of the build interface) but documented here and in
//! `xbuild debug --help`.
//!
//! - `xbuild debug ast FILE`: the Dockerfile's tree in BuildKit's dump format, one
//!   instruction a line (`(run "make")`).
//! - `xbuild debug stages FILE [--build-arg K=V] [--target T] [--platform P]`: the typed
//!   stages resolved for one target, as JSON. `--build-platform` sets `BUILDPLATFORM` & co.
//!   (default: the host), so the output can be compared across machines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::output;
use crate::dockerfile::{self, DockerfileError, ResolveOptions};
use crate::error::{ExitKind, Failure, ResultExt};

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
    fn run(self) -> anyhow::Result<()> {
        let tree = load(&self.file)?;
        let stages =
            dockerfile::stages(&tree).map_err(|error| bad_dockerfile(error, &self.file))?;
        let mut build_args = BTreeMap::new();
        for arg in &self.build_args {
            let (key, value) = match arg.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                // `--build-arg KEY` takes the value from the environment, or is ignored.
                None => match std::env::var(arg) {
                    Ok(value) => (arg.clone(), value),
                    Err(_) => continue,
                },
            };
            build_args.insert(key, value);
        }
        let target_platform = match &self.platform {
            Some(platform) if platform.contains(',') => {
                return Err(Failure::bad_input("debug stages takes one --platform").into());
            }
            Some(platform) => Platform::parse(platform)?,
            None => Platform::host(),
        };
        let build_platform = match &self.build_platform {
            Some(platform) => Platform::parse(platform)?,
            None => Platform::host(),
        };
        let options = ResolveOptions {
            build_args,
            automatic_args: automatic_args(&build_platform, &target_platform),
            target: self.target,
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

/// `os/arch[/variant]`, enough for the automatic arguments. (The platform module, when it
/// exists, owns normalisation; this only handles the common spellings.)
struct Platform {
    os: String,
    arch: String,
    variant: String,
}

impl Platform {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => {
                return Err(Failure::bad_input(format_args!(
                    "invalid platform {text:?}: expected os/arch[/variant], e.g. linux/arm64"
                ))
                .into());
            }
        };
        if os.is_empty() || arch.is_empty() {
            return Err(Failure::bad_input(format_args!("invalid platform {text:?}")).into());
        }
        Ok(Self::normalised(os, arch, variant))
    }

    fn normalised(os: &str, arch: &str, variant: &str) -> Self {
        let (arch, variant) = match (arch, variant) {
            ("x86_64" | "x86-64", v) => ("amd64", v),
            ("aarch64" | "arm64", "v8") | ("aarch64", "") => ("arm64", ""),
            ("armhf" | "arm", "") => ("arm", "v7"),
            ("armel", "") => ("arm", "v6"),
            ("i386" | "i686", v) => ("386", v),
            other => other,
        };
        Self {
            os: os.to_lowercase(),
            arch: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }

    fn host() -> Self {
        Self::normalised(std::env::consts::OS, std::env::consts::ARCH, "")
    }

    fn render(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.arch)
        } else {
            format!("{}/{}/{}", self.os, self.arch, self.variant)
        }
    }
}

/// BuildKit's automatic platform arguments.
fn automatic_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, platform) in [("BUILD", build), ("TARGET", target)] {
        args.insert(format!("{prefix}PLATFORM"), platform.render());
        args.insert(format!("{prefix}OS"), platform.os.clone());
        args.insert(format!("{prefix}ARCH"), platform.arch.clone());
        args.insert(format!("{prefix}VARIANT"), platform.variant.clone());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_and_automatic_args() {
        let target = Platform::parse("linux/arm/v7").unwrap();
        let build = Platform::parse("linux/x86_64").unwrap();
        let args = automatic_args(&build, &target);
        assert_eq!(args["TARGETPLATFORM"], "linux/arm/v7");
        assert_eq!(args["TARGETVARIANT"], "v7");
        assert_eq!(args["BUILDARCH"], "amd64");
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().render(),
            "linux/arm64"
        );
        assert!(Platform::parse("linux").is_err());
    }
}

//! `xbuild check`: runs every rule of [`crate::check`] on a Dockerfile and prints what they
//! find (`Dockerfile:LINE: RuleName: message` and a fix, or JSON), exit 0 when clean and 1
//! when a rule fired, like `docker build --check`. Also how a build prints what its checks
//! found (the pipeline runs them).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output;
use crate::check::{self, CheckOptions, Report};
use crate::context::Dockerignore;
use crate::dockerfile;
use crate::error::{ExitKind, Failure, ResultExt};
use crate::platform::{self, Platform};

/// How `xbuild check` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `Dockerfile:LINE: RuleName: message`, then `  fix: ...`.
    Text,
    /// One JSON document (see README.md).
    Json,
}

/// `xbuild check`: best-practice and BuildKit checks, without building.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Build context directory (its `.dockerignore` is read).
    #[arg(value_name = "PATH")]
    pub context: PathBuf,
    /// Dockerfile (default: PATH/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Target platforms, comma separated or repeated (default: the host's); stages that
    /// would run under emulation for them are checked for compile steps.
    #[arg(long, value_delimiter = ',', value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// The final stage (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The JSON document `xbuild check --format json` prints.
#[derive(Debug, Serialize)]
struct JsonReport<'r> {
    file: &'r str,
    warnings: &'r [check::Warning],
    rules: Vec<&'static str>,
    error: bool,
}

impl CheckArgs {
    /// The target platforms: `--platform` ([`super::values::platform_args`]), else the host's.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn targets(&self) -> anyhow::Result<Vec<Platform>> {
        super::values::platform_args(&self.platform)
    }

    /// Runs the checks and prints the result.
    ///
    /// # Errors
    /// A rule fired (exit 1); an unreadable or invalid Dockerfile, a bad `# check=`
    /// directive or bad arguments (exit 2).
    pub fn run(self) -> anyhow::Result<()> {
        let targets = self.targets()?;
        // `Dockerfile`, else a lower-case `dockerfile` beside it, as BuildKit reads it.
        let dockerfile = self
            .file
            .clone()
            .unwrap_or_else(|| crate::context::locate_dockerfile(&self.context.join("Dockerfile")));
        let build_args = super::debug::parse_build_args(&self.build_args);
        let file_name = dockerfile.display().to_string();
        let (_, tree) = read_dockerfile(&dockerfile)?;
        let dockerignore =
            Dockerignore::load(&self.context, &dockerfile).exit_kind(ExitKind::BadInput)?;
        let options = CheckOptions {
            file: file_name,
            build_args,
            targets,
            build_platform: platform::host(),
            target_stage: self.target.clone(),
            dockerignore,
        };
        let report = check::check(&tree, &options).exit_kind(ExitKind::BadInput)?;
        match self.format {
            Format::Text => {
                for warning in &report.warnings {
                    output::stdout(warning);
                    output::stdout(format_args!("  fix: {}", warning.fix));
                }
            }
            Format::Json => {
                let json = serde_json::to_string_pretty(&JsonReport {
                    file: &report.file,
                    warnings: &report.warnings,
                    rules: report.rules_fired(),
                    error: report.is_error(),
                })
                .exit_kind(ExitKind::Failed)?;
                output::stdout(json);
            }
        }
        if report.warnings.is_empty() {
            return Ok(());
        }
        Err(Failure::new(ExitKind::Failed, anyhow::anyhow!("{}", summary(&report))).into())
    }
}

/// Reads and parses the Dockerfile at `path` (as text, invalid UTF-8 replaced); errors name
/// the file as given (exit 2).
///
/// # Errors
/// The file cannot be read; its syntax is invalid.
pub(crate) fn read_dockerfile(path: &Path) -> anyhow::Result<(String, dockerfile::Dockerfile)> {
    let file_name = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|error| Failure::bad_input(format_args!("cannot read {file_name}: {error}")))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let tree = dockerfile::parse(&text)
        .map_err(|error| Failure::new(ExitKind::BadInput, error.with_file(&file_name)))?;
    Ok((text, tree))
}

/// `3 warnings found (rules: A, B)`.
fn summary(report: &Report) -> String {
    let count = report.warnings.len();
    let plural = if count == 1 { "" } else { "s" };
    format!(
        "{count} warning{plural} found (rules: {})",
        report.rules_fired().join(", ")
    )
}

/// Prints a build's check warnings on stderr, as buildx does after a build.
pub(crate) fn print_build_warnings(report: &Report) {
    if report.warnings.is_empty() {
        return;
    }
    output::stderr(format_args!("{}:", summary(report)));
    for warning in &report.warnings {
        output::stderr(format_args!("WARNING: {warning}"));
        output::stderr(format_args!("  fix: {}", warning.fix));
    }
}

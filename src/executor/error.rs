//! [`ExecutorError`]: why a build's execution stopped, typed so that a caller (the CLI, an
//! embedding tool) can tell a failed `RUN` from an unsupported feature, a base image problem,
//! the cache, the host or a broken store without reading the message, and each with the
//! exit status it means ([`ExecutorError::exit_kind`]).
//!
//! Messages describe this layer only; causes stay in the chain (`#[source]`), so an
//! `io::Error` (a full disk) can be found by walking it. Where a step adds what it was doing
//! (`[linux/arm64 build 3/8] RUN make: committing the layer`), the error is wrapped in
//! [`ExecutorError::Within`], which keeps the cause's exit status.

use std::fmt;
use std::io;

use crate::binfmt::BinfmtError;
use crate::cache::CacheError;
use crate::context::ContextError;
use crate::dockerfile::{DockerfileError, ErrorKind, Span};
use crate::error::ExitKind;
use crate::layer::read::ReadError;
use crate::layer::tree::ResolveError;
use crate::layer::{DiffError, LayerError};
use crate::oci::{LayoutError, NoBlob};
use crate::platform::Platform;
use crate::registry::pull::PullError;
use crate::remote::GitError;
use crate::sandbox::{SandboxError, StepOutcome};
use crate::store::StoreError;

use super::config::ConfigError;

/// Why a build's execution stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The Dockerfile asks for something invalid or not supported yet (`file:line: ...`).
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// An image reference (`FROM`, `--from`, `--mount from=`) that does not parse.
    #[error("{reference}: {reason}")]
    BadReference {
        /// The reference as written (after expansion).
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A path of an instruction (`WORKDIR`) that cannot be resolved inside the image.
    #[error("{instruction}: {reason}")]
    ImagePath {
        /// The instruction.
        instruction: String,
        /// Why.
        reason: String,
    },
    /// `--chown` names a user or group the image does not have, or its account files
    /// cannot be read.
    #[error("--chown: {reason}")]
    Chown {
        /// What is wrong.
        reason: String,
    },
    /// A `RUN` command failed.
    #[error("{0}")]
    StepFailed(Box<StepFailure>),
    /// A base image could not be pulled or resolved.
    #[error(transparent)]
    Pull(#[from] Box<PullError>),
    /// A base image's documents do not add up.
    #[error("{reference}: {reason}")]
    BaseImage {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A step could not be run in the sandbox.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The host cannot run a platform's `RUN` steps (no emulator).
    #[error(transparent)]
    Emulator(#[from] BinfmtError),
    /// The step cache failed.
    #[error(transparent)]
    Cache(#[from] Box<CacheError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's image layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A layer could not be written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The build context could not be read (or its `.dockerignore` is bad).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A layer has no blob where an image needs one.
    #[error(transparent)]
    NoBlob(#[from] NoBlob),
    /// A config instruction could not be applied.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A layer tar could not be read.
    #[error(transparent)]
    ReadLayer(#[from] ReadError),
    /// A file's metadata could not be turned into a tar entry.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// A file could not be read or written. The `io::Error` is this error's cause too (not
    /// hidden behind a transparent wrapper), so its kind and errno can be found by walking
    /// the chain (a full disk); the CLI prints a repeated line once.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A system call failed.
    #[error("{context}")]
    System {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// `ADD` could not download a URL.
    #[error("{step}: downloading {url}")]
    Download {
        /// The step.
        step: String,
        /// The URL.
        url: String,
        /// The cause: the request, or writing what arrived.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `ADD` of a git repository could not resolve or fetch it (or its commit is not the
    /// `--checksum` given).
    #[error("{step}: {source}")]
    Git {
        /// The step.
        step: String,
        /// The cause.
        #[source]
        source: GitError,
    },
    /// `ADD --checksum` does not match what was downloaded.
    #[error("{step}: {url}: checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The step.
        step: String,
        /// The URL.
        url: String,
        /// `--checksum`.
        expected: String,
        /// What the download hashed to.
        actual: String,
    },
    /// A `COPY`/`ADD` or bind-mount source that names nothing.
    #[error("{what} {path:?}{through}: not found {place}")]
    MissingSource {
        /// `COPY source`, `COPY --from source`.
        what: String,
        /// The path as named (cleaned).
        path: String,
        /// ` (a link to ...)` when the path is a link whose target is missing.
        through: String,
        /// Where it was looked for (`in the build context (after .dockerignore)`).
        place: String,
    },
    /// A `COPY --parents` source without wildcards that names nothing (BuildKit's
    /// `RequiredPaths`: `"/test/missing": not found`).
    #[error("{what} {path:?}: not found {place}")]
    RequiredSource {
        /// `COPY source`, `COPY --from source`.
        what: String,
        /// The path below the source's root, absolute.
        path: String,
        /// Where it was looked for.
        place: String,
    },
    /// `--ssh ID=...` that cannot be forwarded (a key `ssh-add` cannot load, no `ssh-agent`).
    #[error("--ssh {id}: {reason}")]
    Ssh {
        /// The `--ssh` id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A path that cannot be resolved inside its tree (a link loop, too many links).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// An external decompressor (`xz`, `bzip2`) for `ADD` of an archive failed.
    #[error("{program} -dc {path} failed")]
    Decompress {
        /// The program.
        program: &'static str,
        /// The archive.
        path: String,
    },
    /// `--check-arch=error` and the images hold binaries for another platform.
    #[error(
        "binaries for another platform in the image (--check-arch=error):\n  {}",
        .findings.join("\n  ")
    )]
    ForeignBinaries {
        /// One line per file: `[linux/arm64] COPY hello /bin/: bin/hello is linux/amd64, ...`.
        findings: Vec<String>,
    },
    /// A step thread panicked.
    #[error("a build thread panicked")]
    WorkerPanicked,
    /// A step's state could not be encoded.
    #[error("encoding {what}")]
    Json {
        /// What.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Something the executor relies on did not hold (a bug, not bad input).
    #[error("{0}")]
    Internal(String),
    /// A step that failed, at its place in the Dockerfile (`Dockerfile:3: [linux/amd64
    /// stage-0 3/3] RUN make`), with the source lines around it once the build adds them,
    /// as BuildKit shows a failed step's source.
    #[error("{file}:{}: {context}{}", span.start, excerpt.as_deref().map(|lines| format!("\n{}", lines.trim_end())).unwrap_or_default())]
    Located {
        /// The Dockerfile, as the user named it.
        file: String,
        /// The instruction's lines (a trigger: its `FROM`'s).
        span: Span,
        /// The step, as progress names it.
        context: String,
        /// The source lines ([`crate::dockerfile::excerpt`]), added by [`Self::add_source`].
        excerpt: Option<String>,
        /// The cause.
        #[source]
        source: Box<Self>,
    },
    /// What a step was doing when its cause failed (`STEP: committing the layer`).
    #[error("{context}")]
    Within {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<Self>,
    },
}

/// A `RUN` command that failed, with what `xbuild debug shell` needs to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The platform the step ran as.
    pub platform: Platform,
    /// The step, as progress names it (`[linux/arm64 build 3/8] RUN make`).
    pub step: String,
    /// The command line that ran (`/bin/sh -c make`), as BuildKit's error quotes it.
    pub command: String,
    /// How the command ended.
    pub outcome: StepOutcome,
    /// Its last lines of output (at most ten).
    pub output_tail: Vec<String>,
    /// The id of the failed-step record (`xbuild debug shell ID`).
    pub debug_id: String,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // BuildKit's wording first: `process "/bin/sh -c make" did not complete
        // successfully: exit code: 2`.
        write!(
            f,
            "{}: process {:?} did not complete successfully: ",
            self.step, self.command
        )?;
        match self.outcome {
            StepOutcome::Exited { code } => write!(f, "exit code: {code}")?,
            StepOutcome::Signaled { .. } => write!(f, "{}", self.outcome)?,
        }
        if !self.output_tail.is_empty() {
            f.write_str("\nlast lines of output:")?;
            for line in &self.output_tail {
                write!(f, "\n  {line}")?;
            }
        }
        write!(
            f,
            "\nopen a shell in the failed state: xbuild debug shell {id}\n\
             or in the state before the step:  xbuild debug shell --before {id}",
            id = self.debug_id
        )
    }
}

impl ExecutorError {
    /// The exit status this error means (README.md, "Exit codes").
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Dockerfile(_)
            | Self::BadReference { .. }
            | Self::Chown { .. }
            | Self::MissingSource { .. }
            | Self::RequiredSource { .. }
            | Self::Ssh { .. }
            | Self::ImagePath { .. }
            | Self::Config(_) => ExitKind::BadInput,
            Self::Emulator(_) => ExitKind::HostNotReady,
            Self::Sandbox(error) => error.exit_kind(),
            Self::Context(error) => error.exit_kind(),
            Self::Git { source, .. } => source.exit_kind(),
            Self::Within { source, .. } | Self::Located { source, .. } => source.exit_kind(),
            Self::StepFailed(_)
            | Self::Pull(_)
            | Self::BaseImage { .. }
            | Self::Cache(_)
            | Self::Store(_)
            | Self::Layout(_)
            | Self::Layer(_)
            | Self::NoBlob(_)
            | Self::Io(_)
            | Self::System { .. }
            | Self::Download { .. }
            | Self::Checksum { .. }
            | Self::Resolve(_)
            | Self::Diff(_)
            | Self::ReadLayer(_)
            | Self::Decompress { .. }
            | Self::ForeignBinaries { .. }
            | Self::WorkerPanicked
            | Self::Json { .. }
            | Self::Internal(_) => ExitKind::Failed,
        }
    }

    /// The failed `RUN` step this error is about, if it is one.
    pub fn step_failure(&self) -> Option<&StepFailure> {
        match self {
            Self::StepFailed(failure) => Some(failure),
            Self::Within { source, .. } | Self::Located { source, .. } => source.step_failure(),
            _ => None,
        }
    }

    /// The error of the step at `span` of `file` named `step`, located there: a Dockerfile
    /// error names its line already and stays as it is; the step's own context
    /// ([`Self::Within`] naming the step) is replaced by the location.
    pub(crate) fn located(self, file: &str, span: Span, step: &str) -> Self {
        let source = match self {
            Self::Dockerfile(_) | Self::Located { .. } => return self,
            Self::Within { context, source } if context == step => source,
            other => Box::new(other),
        };
        Self::Located {
            file: file.to_owned(),
            span,
            context: step.to_owned(),
            excerpt: None,
            source,
        }
    }

    /// Adds the source lines around a failed step's location ([`Self::Located`]), from the
    /// Dockerfile's `text`.
    pub fn add_source(&mut self, text: &str) {
        match self {
            Self::Located { span, excerpt, .. } => {
                *excerpt = crate::dockerfile::excerpt(text, *span);
            }
            Self::Within { source, .. } => source.add_source(text),
            _ => {}
        }
    }

    /// A Dockerfile error at `line` of `file`.
    pub(crate) fn dockerfile(file: impl fmt::Display, line: usize, kind: ErrorKind) -> Self {
        Self::Dockerfile(DockerfileError::new(line, kind).with_file(file.to_string()))
    }

    /// `what` at `line` of `file` is not supported yet (exit 2).
    pub(crate) fn unsupported(
        file: impl fmt::Display,
        line: usize,
        what: impl Into<String>,
    ) -> Self {
        Self::dockerfile(file, line, ErrorKind::Unsupported { what: what.into() })
    }

    /// `message` about `line` of `file` (exit 2).
    pub(crate) fn invalid(
        file: impl fmt::Display,
        line: usize,
        message: impl fmt::Display,
    ) -> Self {
        Self::dockerfile(
            file,
            line,
            ErrorKind::Invalid {
                message: message.to_string(),
            },
        )
    }
}

/// Adds what was being done to an error, keeping it as the cause (`.within(|| ...)`, the
/// executor's `with_context`).
pub(crate) trait Within<T> {
    /// Wraps the error, if any, in [`ExecutorError::Within`].
    fn within(self, context: impl FnOnce() -> String) -> Result<T, ExecutorError>;
}

impl<T, E: Into<ExecutorError>> Within<T> for Result<T, E> {
    fn within(self, context: impl FnOnce() -> String) -> Result<T, ExecutorError> {
        self.map_err(|error| ExecutorError::Within {
            context: context(),
            source: Box::new(error.into()),
        })
    }
}

/// Boxed: a registry error is large, and every step returns this type.
impl From<PullError> for ExecutorError {
    fn from(error: PullError) -> Self {
        Self::Pull(Box::new(error))
    }
}

/// Boxed, as [`PullError`].
impl From<CacheError> for ExecutorError {
    fn from(error: CacheError) -> Self {
        Self::Cache(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> StepFailure {
        StepFailure {
            platform: Platform::parse("linux/arm64").unwrap(),
            step: "[linux/arm64 build 3/8] RUN make".to_owned(),
            command: "/bin/sh -c make".to_owned(),
            outcome: StepOutcome::Exited { code: 2 },
            output_tail: vec!["cc: error".to_owned()],
            debug_id: "0123456789ab".to_owned(),
        }
    }

    #[test]
    fn a_failed_step_reads_as_before_and_is_found_through_its_context() {
        let error = ExecutorError::StepFailed(Box::new(failure()));
        assert_eq!(
            error.to_string(),
            "[linux/arm64 build 3/8] RUN make: process \"/bin/sh -c make\" did not complete \
             successfully: exit code: 2\n\
             last lines of output:\n  cc: error\n\
             open a shell in the failed state: xbuild debug shell 0123456789ab\n\
             or in the state before the step:  xbuild debug shell --before 0123456789ab"
        );
        let wrapped = Err::<(), _>(error)
            .within(|| "outer".to_owned())
            .unwrap_err();
        assert_eq!(wrapped.exit_kind(), ExitKind::Failed);
        assert_eq!(wrapped.step_failure(), Some(&failure()));
    }

    #[test]
    fn exit_kinds_follow_the_cause() {
        let unsupported = ExecutorError::unsupported("Dockerfile", 3, "ADD --keep-git-dir");
        assert_eq!(
            unsupported.to_string(),
            "Dockerfile:3: ADD --keep-git-dir is not supported yet"
        );
        assert_eq!(unsupported.exit_kind(), ExitKind::BadInput);
        let within = Err::<(), _>(unsupported)
            .within(|| "step".to_owned())
            .unwrap_err();
        assert_eq!(within.exit_kind(), ExitKind::BadInput);
        assert_eq!(ExecutorError::WorkerPanicked.exit_kind(), ExitKind::Failed);
        assert_eq!(
            ExecutorError::from(SandboxError::NotRoot).exit_kind(),
            ExitKind::HostNotReady
        );
    }

    #[test]
    fn a_located_step_error_names_the_line_and_shows_the_source_as_buildkit() {
        let step = "[linux/amd64 stage-0 3/3] RUN what";
        let failed = Err::<(), _>(ExecutorError::Internal("no /bin/sh".to_owned()))
            .within(|| step.to_owned())
            .unwrap_err();
        let span = Span { start: 3, end: 3 };
        let mut located = failed.located("./Dockerfile", span, step);
        // The step's own context is replaced, not repeated.
        assert_eq!(located.to_string(), format!("./Dockerfile:3: {step}"));
        located.add_source("from scratch\nenv foo=bar\nrun what\n");
        assert_eq!(
            located.to_string(),
            format!(
                "./Dockerfile:3: {step}\n\
                 --------------------\n   \
                 1 |     from scratch\n   \
                 2 |     env foo=bar\n   \
                 3 | >>> run what\n   \
                 4 |     \n\
                 --------------------"
            )
        );
        let cause = std::error::Error::source(&located).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("no /bin/sh"));
        // A Dockerfile error names its line already.
        let unsupported = ExecutorError::unsupported("Dockerfile", 5, "X");
        let kept = unsupported.located("Dockerfile", span, step);
        assert_eq!(kept.to_string(), "Dockerfile:5: X is not supported yet");
    }
}

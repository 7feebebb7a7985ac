//! How a failure maps to the process exit status.
//!
//! Module errors stay precise (`thiserror` enums per module). Where the caller knows which
//! kind of failure it is (bad input, host not ready), it wraps the error in a [`Failure`] with
//! an [`ExitKind`]; `main` finds the first `Failure` in the chain and exits with its code.
//! Anything unclassified is a failed build or operation (exit 1).

use std::fmt;

/// Exit statuses, as documented in README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// `1`: a build step, a push or another operation failed.
    Failed,
    /// `2`: bad input: a Dockerfile error, bad arguments, an unsupported feature.
    BadInput,
    /// `3`: the host is not ready: no emulator, not root, no overlayfs.
    HostNotReady,
}

impl ExitKind {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        match self {
            Self::Failed => 1,
            Self::BadInput => 2,
            Self::HostNotReady => 3,
        }
    }
}

/// An error tagged with the exit status it should produce. It displays as the error it
/// wraps, so the printed chain does not change.
#[derive(Debug)]
pub struct Failure {
    /// Which exit status this failure produces.
    pub kind: ExitKind,
    error: anyhow::Error,
}

impl Failure {
    /// Tags `error` with `kind`.
    pub fn new(kind: ExitKind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    /// A bad-input failure (exit 2) with a plain message.
    pub fn bad_input(message: impl fmt::Display) -> Self {
        Self::new(ExitKind::BadInput, anyhow::anyhow!("{message}"))
    }

    /// An "is not supported yet" failure (exit 2): features a user can name but that xbuild
    /// does not implement are refused, never silently ignored.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::bad_input(format_args!("{what} is not supported yet"))
    }

    /// A host-not-ready failure (exit 3) with a plain message.
    pub fn host_not_ready(message: impl fmt::Display) -> Self {
        Self::new(ExitKind::HostNotReady, anyhow::anyhow!("{message}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// An error and its causes on one line, `outer: cause: root cause` (for messages that
/// carry an error as text, e.g. a store check's problem list).
pub fn chain_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The exit kind of an error: the first [`Failure`] in its chain, else [`ExitKind::Failed`].
pub fn exit_kind(error: &anyhow::Error) -> ExitKind {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(ExitKind::Failed, |failure| failure.kind)
}

/// Extension for tagging `Result`s with an exit kind.
pub trait ResultExt<T> {
    /// Tags the error, if any, with `kind`.
    fn exit_kind(self, kind: ExitKind) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn exit_kind(self, kind: ExitKind) -> Result<T, Failure> {
        self.map_err(|error| Failure::new(kind, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_deep_in_chain_sets_the_exit_kind() {
        let error = anyhow::Error::new(Failure::bad_input("Dockerfile:3: bad"))
            .context("reading the Dockerfile");
        assert_eq!(exit_kind(&error), ExitKind::BadInput);
        assert_eq!(
            format!("{error:#}"),
            "reading the Dockerfile: Dockerfile:3: bad"
        );
    }

    #[test]
    fn unclassified_errors_are_failures() {
        let error = anyhow::anyhow!("boom");
        assert_eq!(exit_kind(&error).code(), 1);
    }
}

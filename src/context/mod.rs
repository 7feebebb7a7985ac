//! The build context: what `COPY`/`ADD` may read, after `.dockerignore`, and a digest of
//! exactly that for cache keys.
//!
//! - [`Dockerignore`] reads the ignore file that applies (`<Dockerfile>.dockerignore` beside
//!   the Dockerfile, else `<context>/.dockerignore`) and matches paths exactly as
//!   moby/patternmatcher does, Go regexp quirks included.
//! - [`walk()`] lists the context as BuildKit's client (tonistiigi/fsutil `filter.go`) sends
//!   it: excluded directories are entered only when an exception could re-include something
//!   inside, and an excluded directory is listed only when something beneath it is included.
//!   The Dockerfile and the ignore file need no special case: they are read on their own
//!   (so a build still works when they are excluded) and are in the context only when no
//!   pattern excludes them, as with BuildKit.
//! - [`digest_entries`] hashes selected entries (path, kind, mode, owner, link target, file
//!   bytes), optionally reusing file digests from a [`StatCache`].
//!
//! Every rule is spelled out, with its upstream source, in
//! `shared/conformance/dockerignore/README.md`; the tests run all of its cases in place.
//! This module reads the host file system only; it never writes into the context.

mod digest;
mod dockerignore;
mod goregex;
mod pattern;
mod walk;

use std::io;
use std::path::PathBuf;

pub use digest::{StatCache, digest_entries, digest_entries_cached};
pub use dockerignore::{Dockerignore, MatchInfo};
pub use walk::{ContextEntries, ContextEntry, Entries, EntryKind, Timestamp, walk};

use crate::error::{ExitKind, Failure};

/// `path`, or the lower-case `dockerfile` beside it when `path` is named `Dockerfile`, does
/// not exist and that one does: BuildKit reads `dockerfile` when `Dockerfile` is missing
/// (moby/moby#10858).
pub fn locate_dockerfile(path: &std::path::Path) -> PathBuf {
    if path.file_name().is_some_and(|name| name == "Dockerfile") && !path.exists() {
        let lower = path.with_file_name("dockerfile");
        // On a case-insensitive file system both names are one file: then `path` exists.
        if lower.is_file() {
            return lower;
        }
    }
    path.to_owned()
}

/// What can go wrong reading a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A pattern in the ignore file is malformed (found when the file is read), or its
    /// regexp does not compile (found when it is first tried, as upstream).
    #[error("{source_name}:{line}: invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The ignore file, as named to the user (`.dockerignore`).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// The line as written, trimmed.
        pattern: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The ignore file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    ReadIgnoreFile {
        /// The ignore file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The context directory is missing or not a directory.
    #[error("build context {} is not a directory", path.display())]
    NotADirectory {
        /// The context directory as given.
        path: PathBuf,
    },
    /// A file or directory in the context cannot be read.
    #[error("cannot read {} in the build context", path.display())]
    Read {
        /// The path, relative to the context.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The context holds more than the walk can list.
    #[error("cannot list {} in the build context: {reason}", path.display())]
    TooLarge {
        /// The path, relative to the context.
        path: PathBuf,
        /// What is too large.
        reason: &'static str,
    },
    /// The stat cache file cannot be written.
    #[error("cannot write the context stat cache {}", path.display())]
    WriteStatCache {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Go's `filepath.Match` on Unix, which BuildKit uses for wildcards in `COPY`/`ADD` sources
/// (one path component at a time): `*` any run of non-`/` bytes, `?` one non-`/` character,
/// `[...]` a class (`^` negates, `\` escapes), `\` escapes. `None` when the pattern is
/// malformed — which, as in Go, is only noticed as far as matching reads the pattern: `x*[`
/// against `.` is `Some(false)`, against `xa` `None`.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> Option<bool> {
    pattern::go_match(pattern, name).ok()
}

impl ContextError {
    /// The exit status this error produces: a bad pattern or a missing context is bad input
    /// (2); an I/O failure is a failed build (1).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Pattern { .. } | Self::NotADirectory { .. } => ExitKind::BadInput,
            Self::ReadIgnoreFile { .. }
            | Self::Read { .. }
            | Self::TooLarge { .. }
            | Self::WriteStatCache { .. } => ExitKind::Failed,
        }
    }
}

impl From<ContextError> for Failure {
    fn from(error: ContextError) -> Self {
        Self::new(error.exit_kind(), error)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod locate_tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_lower_case_dockerfile_is_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("Dockerfile");
        assert_eq!(
            locate_dockerfile(&upper),
            upper,
            "neither: the error names Dockerfile"
        );
        fs::write(dir.path().join("dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(locate_dockerfile(&upper), dir.path().join("dockerfile"));
        fs::write(&upper, "FROM scratch\n").unwrap();
        assert_eq!(locate_dockerfile(&upper), upper, "Dockerfile wins");
        let other = dir.path().join("app.Dockerfile");
        assert_eq!(locate_dockerfile(&other), other);
    }
}

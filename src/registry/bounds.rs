//! The bounds on what a registry sends: [`SizeProblem`] (what is wrong with a size) and
//! `Bound` (how much of a body may be taken: the declared size, or the limit of its kind
//! from [`crate::oci::limits`]), checked on `Content-Length` before reading and on every
//! chunk while reading.
//!
//! Must not: do I/O or name a registry: the readers that apply these bounds are
//! `Registry::read_body` ([`super::transport`]) and `Registry::fetch_blob`
//! ([`super::blobs`]).

use crate::oci::limits;

/// What is wrong with the size of something a registry sent. In every case nothing past
/// the bound was read into memory or written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeProblem {
    /// The descriptor declares more than the limit for its kind: not asked for.
    DeclaredOverLimit {
        /// The declared size.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// `Content-Length` announces more than the limit: refused before reading.
    LengthOverLimit {
        /// The announced length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// With no length announced, more than the limit arrived.
    LongerThanLimit {
        /// The limit.
        limit: u64,
    },
    /// `Content-Length` is not the size the descriptor declares: refused before reading.
    LengthNotDeclared {
        /// The announced length.
        length: u64,
        /// The declared size.
        declared: u64,
    },
    /// More than the declared size arrived.
    LongerThanDeclared {
        /// The declared size.
        declared: u64,
    },
}

impl std::fmt::Display for SizeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::DeclaredOverLimit { declared, limit } => write!(
                f,
                "declared as {declared} bytes, over the {} limit ({limit} bytes); not fetched",
                limits::human(limit)
            ),
            Self::LengthOverLimit { length, limit } => write!(
                f,
                "the registry announces Content-Length {length}, over the {} limit ({limit} bytes); not read",
                limits::human(limit)
            ),
            Self::LongerThanLimit { limit } => write!(
                f,
                "more than {limit} bytes arrived, over the {} limit; the rest was not read",
                limits::human(limit)
            ),
            Self::LengthNotDeclared { length, declared } => write!(
                f,
                "the registry announces Content-Length {length}, not the declared size {declared}; not read"
            ),
            Self::LongerThanDeclared { declared } => write!(
                f,
                "more than {declared} bytes arrived, its declared size; the rest was not read"
            ),
        }
    }
}

/// How much of a body may be taken: the size a descriptor declares (itself at most the
/// limit of its kind, when it has one), or, with nothing declared, the limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) declared: Option<u64>,
    limit: u64,
}

impl Bound {
    /// A body of unknown size, at most `limit` bytes.
    pub(super) fn limited(limit: u64) -> Self {
        Self {
            declared: None,
            limit,
        }
    }

    /// A body of exactly `declared` bytes (a layer: no limit but the declared size).
    pub(super) fn exactly(declared: u64) -> Self {
        Self {
            declared: Some(declared),
            limit: u64::MAX,
        }
    }

    /// A body of exactly `declared` bytes, refused when that is over `limit`.
    pub(super) fn declared_within(declared: u64, limit: u64) -> Result<Self, SizeProblem> {
        if declared > limit {
            return Err(SizeProblem::DeclaredOverLimit { declared, limit });
        }
        Ok(Self {
            declared: Some(declared),
            limit,
        })
    }

    /// The most bytes taken.
    pub(super) fn max(self) -> u64 {
        self.declared.unwrap_or(self.limit)
    }

    /// Checks an announced `Content-Length` before anything is read.
    pub(super) fn check_length(self, length: Option<u64>) -> Result<(), SizeProblem> {
        match (length, self.declared) {
            (Some(length), Some(declared)) if length != declared => {
                Err(SizeProblem::LengthNotDeclared { length, declared })
            }
            (Some(length), None) if length > self.limit => Err(SizeProblem::LengthOverLimit {
                length,
                limit: self.limit,
            }),
            _ => Ok(()),
        }
    }

    /// Checks that `total` bytes (what arrived so far, with the chunk at hand) are allowed.
    pub(super) fn check_total(self, total: u64) -> Result<(), SizeProblem> {
        if total <= self.max() {
            return Ok(());
        }
        Err(match self.declared {
            Some(declared) => SizeProblem::LongerThanDeclared { declared },
            None => SizeProblem::LongerThanLimit { limit: self.limit },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::limits::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};

    #[test]
    fn a_declared_size_bounds_the_body_and_its_length() {
        let layer = Bound::exactly(1024);
        assert_eq!(layer.check_length(Some(1024)), Ok(()));
        assert_eq!(layer.check_length(None), Ok(()));
        assert_eq!(
            layer.check_length(Some(2048)),
            Err(SizeProblem::LengthNotDeclared {
                length: 2048,
                declared: 1024
            })
        );
        assert_eq!(
            layer.check_length(Some(512)),
            Err(SizeProblem::LengthNotDeclared {
                length: 512,
                declared: 1024
            })
        );
        assert_eq!(layer.check_total(1024), Ok(()));
        // One byte more is an error.
        assert_eq!(
            layer.check_total(1025),
            Err(SizeProblem::LongerThanDeclared { declared: 1024 })
        );
        let config = Bound::declared_within(2, MAX_CONFIG_SIZE).unwrap();
        assert_eq!(
            config.check_total(3),
            Err(SizeProblem::LongerThanDeclared { declared: 2 })
        );
        assert_eq!(
            Bound::declared_within(50_000_000, MAX_MANIFEST_SIZE).unwrap_err(),
            SizeProblem::DeclaredOverLimit {
                declared: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            }
        );
    }

    #[test]
    fn a_limit_bounds_a_body_of_unknown_size() {
        let manifest = Bound::limited(MAX_MANIFEST_SIZE);
        assert_eq!(manifest.check_length(Some(MAX_MANIFEST_SIZE)), Ok(()));
        assert_eq!(
            manifest.check_length(Some(50_000_000)),
            Err(SizeProblem::LengthOverLimit {
                length: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            })
        );
        assert_eq!(manifest.check_total(MAX_MANIFEST_SIZE), Ok(()));
        assert_eq!(
            manifest.check_total(MAX_MANIFEST_SIZE + 1),
            Err(SizeProblem::LongerThanLimit {
                limit: MAX_MANIFEST_SIZE
            })
        );
        assert_eq!(
            SizeProblem::LengthOverLimit {
                length: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            }
            .to_string(),
            "the registry announces Content-Length 50000000, over the 4 MiB limit (4194304 bytes); not read"
        );
    }
}

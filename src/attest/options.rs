//! What a build is asked to attest: buildx's `--attest type=sbom|provenance`, `--sbom` and
//! `--provenance`, parsed by the CLI into [`Attestations`] and carried in the build request;
//! the pipeline makes the statements after the images are built and attaches them as
//! referrers of each platform's manifest, before the outputs are written.
//!
//! Only outputs that carry referrers get them: the local store, a push and an OCI archive.
//! A build that asked for attestations and also writes an
//! output that has no place for them (a docker-archive, `--load`, a root file system) is
//! refused before any work; the default provenance of a push ([`ProvenanceOptions::by_default`])
//! is not a reason to refuse the other outputs.

use super::provenance::{Mode, SlsaVersion};

/// The attestations of a build's images (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attestations {
    /// An SPDX SBOM of each platform's image, by xbuild's own scanner (`generator=builtin`).
    pub sbom: bool,
    /// A SLSA provenance of each platform's image.
    pub provenance: Option<ProvenanceOptions>,
}

/// `--attest type=provenance,...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvenanceOptions {
    /// `mode=min|max`.
    pub mode: Mode,
    /// `version=v1|v0.2` (the SLSA provenance version).
    pub version: SlsaVersion,
    /// Whether it was not asked for, but added as buildx does on a push.
    pub by_default: bool,
}

impl Attestations {
    /// Whether there is nothing to attest.
    pub fn is_empty(&self) -> bool {
        !self.sbom && self.provenance.is_none()
    }

    /// Whether the user asked for attestations (rather than getting buildx's default).
    pub fn asked(&self) -> bool {
        self.sbom
            || self
                .provenance
                .is_some_and(|provenance| !provenance.by_default)
    }

    /// buildx's default: a `mode=min` provenance when the build pushes, unless the flags
    /// said anything about provenance (`provenance_set`).
    #[must_use]
    pub fn with_default(mut self, pushing: bool, provenance_set: bool) -> Self {
        if pushing && !provenance_set && self.provenance.is_none() {
            self.provenance = Some(ProvenanceOptions {
                by_default: true,
                ..ProvenanceOptions::default()
            });
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_gets_min_provenance_unless_provenance_was_set() {
        let none = Attestations::default();
        let pushed = none.with_default(true, false);
        assert_eq!(
            pushed.provenance,
            Some(ProvenanceOptions {
                mode: Mode::Min,
                version: SlsaVersion::V1,
                by_default: true
            })
        );
        assert!(!pushed.asked());
        assert!(none.with_default(false, false).is_empty());
        assert!(none.with_default(true, true).is_empty());
        let max = Attestations {
            sbom: false,
            provenance: Some(ProvenanceOptions {
                mode: Mode::Max,
                ..ProvenanceOptions::default()
            }),
        };
        assert_eq!(max.with_default(true, true), max);
        assert!(max.asked());
    }
}

//! What a build is asked to attest: buildx's `--attest type=sbom|provenance`, `--sbom` and
//! `--provenance`, parsed by the CLI into [`Attestations`] and carried in the build request;
//! the pipeline makes the statements after the images are built and attaches them as
//! referrers of each platform's manifest, before the outputs are written.
//!
//! Where they go is [`Layout`] (`-o ...,attestation-layout=referrers|buildx`): referrers
//! of each platform's manifest (the default), or BuildKit's in-index attestation manifests
//! (platform `unknown/unknown`), which then make the build's result an index.
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
    /// `--attest type=sbom,scan-stage=true`: the SBOM also scans every stage the target
    /// needs (as `BUILDKIT_SBOM_SCAN_STAGE=true` in every stage does), each its own
    /// statement.
    pub scan_stage: bool,
    /// Where the statements are stored.
    pub layout: Layout,
    /// A build node's sub-build for a build that makes SBOMs: the stages its SBOMs scan
    /// (those the Dockerfile asks for, every one with [`Self::scan_stage`]) are found, for
    /// the node to scan them and send the scans back; nothing is attested here (the build
    /// that sent it attests).
    pub node_stages: bool,
}

/// Where a build's attestations are stored (`-o ...,attestation-layout=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// `referrers`: OCI artifacts whose `subject` is the platform's manifest, outside the
    /// index (found through the referrers API or its tag fallback).
    #[default]
    Referrers,
    /// `buildx`: BuildKit's in-index form, one attestation manifest per platform in the
    /// image index (platform `unknown/unknown`, `vnd.docker.reference.*` annotations).
    Buildx {
        /// `oci-artifact=` (BuildKit's key, default `true`): the attestation manifest is an
        /// OCI artifact (empty config, `artifactType`, `subject`); `false` gives BuildKit's
        /// legacy form (an `unknown/unknown` image config).
        oci_artifact: bool,
    },
}

impl Layout {
    /// Parses `attestation-layout=VALUE` with BuildKit's `oci-artifact=` (`None`: not
    /// given).
    ///
    /// # Errors
    /// An unknown layout, or `oci-artifact=false` without `attestation-layout=buildx` (a
    /// referrer is always an OCI artifact).
    pub fn parse(layout: Option<&str>, oci_artifact: Option<bool>) -> Result<Self, String> {
        match (layout.map(str::trim), oci_artifact) {
            (None | Some("referrers"), Some(false)) => Err(
                "oci-artifact=false needs attestation-layout=buildx (a referrer is always an \
                 OCI artifact)"
                    .to_owned(),
            ),
            (None | Some("referrers"), _) => Ok(Self::Referrers),
            (Some("buildx"), oci_artifact) => Ok(Self::Buildx {
                oci_artifact: oci_artifact.unwrap_or(true),
            }),
            (Some(other), _) => Err(format!(
                "attestation-layout={other}: use referrers or buildx"
            )),
        }
    }
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
            ..Attestations::default()
        };
        assert_eq!(max.with_default(true, true), max);
        assert!(max.asked());
    }

    #[test]
    fn layouts_parse_as_documented() {
        assert_eq!(Layout::parse(None, None), Ok(Layout::Referrers));
        assert_eq!(
            Layout::parse(Some("referrers"), Some(true)),
            Ok(Layout::Referrers)
        );
        assert_eq!(
            Layout::parse(Some("buildx"), None),
            Ok(Layout::Buildx { oci_artifact: true })
        );
        assert_eq!(
            Layout::parse(Some("buildx"), Some(false)),
            Ok(Layout::Buildx {
                oci_artifact: false
            })
        );
        assert!(Layout::parse(None, Some(false)).is_err());
        assert!(Layout::parse(Some("inline"), None).is_err());
    }
}

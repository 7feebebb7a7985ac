//! Attestations about an image: in-toto statements whose subject is a platform's image
//! manifest, with an SPDX 2.3 SBOM ([`spdx`]) or a SLSA provenance ([`provenance`])
//! predicate, and how they are stored: one OCI artifact per statement, a referrer of the
//! manifest ([`artifact_annotations`], [`crate::store::Store::attach_referrer`]).
//!
//! Owns the document formats only: no I/O, no network, no file system (the scan that feeds
//! an SBOM is [`crate::sbom`]; the store and the registry carry the bytes). Everything here
//! is deterministic: the same inputs give the same bytes (JSON objects with sorted keys,
//! times given by the caller, identifiers derived from content).
//!
//! Specs: in-toto statements <https://github.com/in-toto/attestation/tree/main/spec>;
//! BuildKit's use of them <https://github.com/moby/buildkit/blob/master/docs/attestations/>;
//! OCI artifacts and referrers, image-spec 1.1 `manifest.md` (`artifactType`, `subject`).

pub mod options;
pub mod provenance;
pub mod spdx;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;
use crate::sbom::purl::Purl;

pub use crate::oci::referrers::IN_TOTO_MEDIA_TYPE;
/// The annotation naming a statement's predicate type, on the layer (as BuildKit sets it)
/// and on the artifact manifest (so a referrers list shows it without a fetch).
pub const PREDICATE_TYPE_ANNOTATION: &str = crate::oci::referrers::PREDICATE_TYPE;
/// The annotation that marks a referrer as one xbuild made, with its kind (`sbom`,
/// `provenance`): xbuild replaces its own earlier attestation of that kind for the same
/// manifest, and never touches other tools' referrers.
pub const XBUILD_ATTESTATION_ANNOTATION: &str = crate::oci::referrers::KIND_ANNOTATION;
/// The OCI annotation for a creation time.
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// in-toto Statement v0.1, what BuildKit wrote until mid-2026 (buildx 0.10 onwards).
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// in-toto Statement v1, what BuildKit writes since its June 2026 change.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an SPDX SBOM.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The predicate type of SLSA provenance v1.
pub const SLSA_V1_PREDICATE: &str = "https://slsa.dev/provenance/v1";
/// The predicate type of SLSA provenance v0.2.
pub const SLSA_V02_PREDICATE: &str = "https://slsa.dev/provenance/v0.2";

/// Which in-toto statement version to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatementVersion {
    /// `https://in-toto.io/Statement/v0.1`.
    #[default]
    V01,
    /// `https://in-toto.io/Statement/v1`.
    V1,
}

impl StatementVersion {
    /// The `_type` URI.
    pub fn uri(self) -> &'static str {
        match self {
            Self::V01 => STATEMENT_V01,
            Self::V1 => STATEMENT_V1,
        }
    }
}

/// What a statement is about: a name and the digests of the thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// A name for it (BuildKit: the image's purl, or `_`).
    pub name: String,
    /// Algorithm → lower-case hex.
    pub digest: BTreeMap<String, String>,
}

/// An in-toto statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The statement type URI.
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The predicate type URI.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What it is about.
    pub subject: Vec<Subject>,
    /// The claim.
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A statement of `predicate_type` about `subject`.
    pub fn new(
        version: StatementVersion,
        predicate_type: &str,
        subject: Vec<Subject>,
        predicate: serde_json::Value,
    ) -> Self {
        Self {
            statement_type: version.uri().to_owned(),
            predicate_type: predicate_type.to_owned(),
            subject,
            predicate,
        }
    }

    /// The statement as JSON: compact, object keys sorted, so the same statement always
    /// gives the same bytes (and the same digest).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::oci::image::canonical_json(self)
    }
}

/// The subjects BuildKit writes for an image manifest: one per image name, as a purl
/// (`pkg:docker/app@1?platform=linux%2Famd64`), or `_` when the image has no name; each
/// with the manifest's digest.
pub fn image_subjects(names: &[String], platform: &str, manifest: &Digest) -> Vec<Subject> {
    let digest: BTreeMap<String, String> = [(
        manifest.algorithm().as_ref().to_owned(),
        manifest.digest().to_owned(),
    )]
    .into();
    let mut subjects: Vec<Subject> = names
        .iter()
        .map(|name| Subject {
            name: image_purl(name, Some(platform)),
            digest: digest.clone(),
        })
        .collect();
    if subjects.is_empty() {
        subjects.push(Subject {
            name: "_".to_owned(),
            digest,
        });
    }
    subjects
}

/// An image reference as a `pkg:docker` purl, the way BuildKit writes it: the short name
/// Docker shows (`docker.io/library/` left out), the tag (or the digest as a qualifier)
/// as version, and the platform.
pub fn image_purl(reference: &str, platform: Option<&str>) -> String {
    let normalized = crate::store::normalize_ref(reference);
    let (repository, version) = crate::store::split_ref(&normalized);
    let short = crate::store::display_ref(repository);
    let (namespace, name) = match short.rsplit_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, short),
    };
    let mut qualifiers = Vec::new();
    let tag = if version.starts_with("sha256:") {
        qualifiers.push(("digest", version.to_owned()));
        None
    } else {
        Some(version)
    };
    if let Some(platform) = platform {
        qualifiers.push(("platform", platform.to_owned()));
    }
    Purl {
        kind: "docker",
        namespace,
        name,
        version: tag,
        qualifiers,
    }
    .render()
}

/// What an attestation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A software bill of materials.
    Sbom,
    /// How the image was built.
    Provenance,
}

impl Kind {
    /// `sbom` or `provenance`, as buildx's `--attest type=` spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sbom => "sbom",
            Self::Provenance => "provenance",
        }
    }

    /// The kind of a statement of `predicate_type`: an SPDX document is an SBOM, any SLSA
    /// provenance version a provenance; `None` for other predicates.
    pub fn of_predicate(predicate_type: &str) -> Option<Self> {
        if predicate_type == SPDX_PREDICATE {
            Some(Self::Sbom)
        } else if predicate_type.starts_with("https://slsa.dev/provenance/") {
            Some(Self::Provenance)
        } else {
            None
        }
    }
}

/// A statement serialised, ready to be stored as an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// What it is.
    pub kind: Kind,
    /// Its predicate type.
    pub predicate_type: String,
    /// The statement's bytes ([`Statement::to_bytes`]).
    pub bytes: Vec<u8>,
    /// For an SBOM of a stage or of the context (`BUILDKIT_SBOM_SCAN_*`): its name. The
    /// artifact's kind is then `sbom-NAME` (BuildKit's name for extra SBOMs), so that it
    /// replaces only an earlier SBOM of the same stage.
    pub extra: Option<String>,
}

impl Encoded {
    /// Serialises `statement` as an attestation of `kind`.
    pub fn new(kind: Kind, statement: &Statement) -> Self {
        Self {
            kind,
            predicate_type: statement.predicate_type.clone(),
            bytes: statement.to_bytes(),
            extra: None,
        }
    }

    /// The same, as the SBOM of the stage (or `context`) `name`.
    #[must_use]
    pub fn extra(mut self, name: &str) -> Self {
        self.extra = Some(name.to_owned());
        self
    }

    /// The OCI artifact that carries it: artifact type and layer [`IN_TOTO_MEDIA_TYPE`],
    /// the predicate type on the layer and the manifest, the manifest marked as xbuild's
    /// with its kind and `created` (RFC 3339).
    pub fn artifact(&self, created: &str) -> crate::oci::referrers::Artifact<'_> {
        crate::oci::referrers::Artifact {
            artifact_type: IN_TOTO_MEDIA_TYPE,
            layer_media_type: IN_TOTO_MEDIA_TYPE,
            layer: &self.bytes,
            layer_annotations: [(
                PREDICATE_TYPE_ANNOTATION.to_owned(),
                self.predicate_type.clone(),
            )]
            .into(),
            annotations: artifact_annotations(
                &self.predicate_type,
                &self.extra.as_ref().map_or_else(
                    || self.kind.as_str().to_owned(),
                    |name| format!("{}-{name}", self.kind.as_str()),
                ),
                created,
            ),
        }
    }
}

/// The annotations of an attestation's artifact manifest (and its referrers-list entry):
/// its predicate type, xbuild's mark with the kind, and the creation time.
pub fn artifact_annotations(
    predicate_type: &str,
    kind: &str,
    created: &str,
) -> HashMap<String, String> {
    [
        (PREDICATE_TYPE_ANNOTATION, predicate_type),
        (XBUILD_ATTESTATION_ANNOTATION, kind),
        (CREATED_ANNOTATION, created),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The time to write in a document: `SOURCE_DATE_EPOCH` when it is earlier than `now`
/// (clamped, as for layer times), else `now`; RFC 3339 UTC.
pub fn clamped_time(now: i64, source_date_epoch: Option<i64>) -> String {
    crate::oci::image::rfc3339(source_date_epoch.map_or(now, |epoch| epoch.min(now)))
}

/// A name-based UUID (version 5 layout over SHA-256 instead of SHA-1 is not standard, so
/// this is a version 8 "custom" UUID): the first 16 bytes of SHA-256 over `parts`, with
/// the version and variant bits set. Same parts, same UUID.
pub fn derived_uuid(parts: &[&[u8]]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_subjects_are_buildkit_purls() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let subjects = image_subjects(
            &["app:1".to_owned(), "localhost:5000/team/app:2".to_owned()],
            "linux/arm64",
            &digest,
        );
        assert_eq!(subjects[0].name, "pkg:docker/app@1?platform=linux%2Farm64");
        assert_eq!(
            subjects[1].name,
            "pkg:docker/localhost:5000/team/app@2?platform=linux%2Farm64"
        );
        assert_eq!(subjects[0].digest["sha256"], "ab".repeat(32));
        assert_eq!(image_subjects(&[], "linux/amd64", &digest)[0].name, "_");
    }

    #[test]
    fn times_clamp_and_uuids_derive() {
        assert_eq!(clamped_time(2_000_000_000, Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(clamped_time(0, Some(2_000_000_000)), "1970-01-01T00:00:00Z");
        let one = derived_uuid(&[b"a", b"bc"]);
        assert_eq!(one, derived_uuid(&[b"a", b"bc"]));
        assert_ne!(one, derived_uuid(&[b"ab", b"c"]));
        assert_eq!(&one[14..15], "8");
    }
}

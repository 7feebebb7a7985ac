//! Referrers in an OCI image layout: artifacts (attestations, signatures) whose manifest's
//! `subject` is another manifest of the layout.
//!
//! The image-layout spec has no referrers API, so the layout's `index.json` is the index:
//! each referrer is an entry there with no `org.opencontainers.image.ref.name`, with the
//! `artifactType` and annotations of its manifest (what a registry's referrers list shows)
//! and [`SUBJECT_ANNOTATION`] naming its subject. This is how ORAS keeps referrers in an
//! OCI layout (every manifest listed in `index.json`, referrers found by their subject), so
//! other tools that read a layout see them; the annotation lets xbuild list a manifest's
//! referrers from `index.json` alone. Entries without a name are not images: `xbuild
//! images` and name lookups ignore them.
//!
//! Spec: image-spec 1.1 `manifest.md` (`artifactType`, `subject`, the empty descriptor),
//! distribution-spec 1.1 "Listing Referrers".

use std::collections::{HashMap, HashSet};

use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageManifest, ImageManifestBuilder, MediaType,
    Os, PlatformBuilder,
};

use super::layout::{ImageLayout, LayoutError};

/// The media type of an in-toto statement (IANA-registered), used for the attestation
/// layer and as the artifact type of its manifest (the attestations' referrers, and what
/// `imagetools inspect` reads back).
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// The `index.json` annotation that names a referrer's subject (`sha256:...`).
pub const SUBJECT_ANNOTATION: &str = "dev.xbuild.referrer.subject";
/// The annotation that marks a referrer as one xbuild made, with its kind (`sbom`,
/// `provenance`): a new one replaces xbuild's earlier one of the same kind for the same
/// subject, in the store and in a registry's tag-fallback index. Other tools' referrers are
/// never replaced.
pub const KIND_ANNOTATION: &str = "dev.xbuild.attestation";
/// How many levels of referrers of referrers are followed (an attestation's signature is
/// two levels below the image).
pub const REFERRER_DEPTH: usize = 4;
/// The OCI empty JSON document (`{}`), the config of an artifact without one.
pub const EMPTY_JSON: &[u8] = b"{}";

/// BuildKit's in-index attestations: the annotation of an index entry that marks an
/// attestation manifest (value [`ATTESTATION_MANIFEST`]), and the one naming its image.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The value of [`REFERENCE_TYPE`] on BuildKit's attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The annotation naming the image manifest a BuildKit attestation manifest is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The `artifactType` of BuildKit's attestation manifests in their OCI artifact form
/// (`oci-artifact=true`, BuildKit's default since its compatibility version 0.31).
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// The annotation of an in-toto layer naming its statement's predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// One in-toto statement of an in-index attestation manifest.
#[derive(Debug, Clone, Copy)]
pub struct InIndexStatement<'a> {
    /// The statement's bytes (a JSON in-toto statement).
    pub bytes: &'a [u8],
    /// Its predicate type (the layer's [`PREDICATE_TYPE`] annotation).
    pub predicate_type: &'a str,
}

/// Writes BuildKit's attestation manifest about `subject` (a platform's image manifest)
/// into `layout`, as BuildKit's image writer does (`commitAttestationsManifest`): one layer
/// of media type [`IN_TOTO_MEDIA_TYPE`] per statement, annotated with its predicate type;
/// with `oci_artifact` the OCI empty config, `artifactType`
/// [`ATTESTATION_ARTIFACT_TYPE`] and `subject`, else (BuildKit's legacy form) an image
/// config of platform `unknown/unknown` whose `diff_ids` are the layers' digests. Returns
/// the index entry: platform `unknown/unknown`, [`REFERENCE_TYPE`] =
/// [`ATTESTATION_MANIFEST`] and [`REFERENCE_DIGEST`] = the subject's digest.
///
/// # Errors
/// Write failures.
pub fn write_in_index_attestation(
    layout: &ImageLayout,
    subject: &Descriptor,
    statements: &[InIndexStatement<'_>],
    oci_artifact: bool,
) -> Result<Descriptor, LayoutError> {
    let mut layers = Vec::with_capacity(statements.len());
    for statement in statements {
        let (digest, size) = layout.write_blob(statement.bytes)?;
        let mut layer = Descriptor::new(MediaType::from(IN_TOTO_MEDIA_TYPE), size, digest);
        layer.set_annotations(Some(
            [(
                PREDICATE_TYPE.to_owned(),
                statement.predicate_type.to_owned(),
            )]
            .into(),
        ));
        layers.push(layer);
    }
    let config = if oci_artifact {
        layout.write_blob(EMPTY_JSON)?;
        empty_descriptor()
    } else {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest().to_string()).collect();
        let config = serde_json::json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let bytes = super::image::canonical_json(&config);
        let (digest, size) = layout.write_blob(&bytes)?;
        Descriptor::new(MediaType::ImageConfig, size, digest)
    };
    let mut builder = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers);
    if oci_artifact {
        builder = builder
            .artifact_type(MediaType::from(ATTESTATION_ARTIFACT_TYPE))
            .subject(Descriptor::new(
                subject.media_type().clone(),
                subject.size(),
                subject.digest().clone(),
            ));
    }
    let manifest = builder
        .build()
        .expect("an attestation manifest has every required field");
    let bytes = super::image::canonical_json(&manifest);
    let (digest, size) = layout.write_blob(&bytes)?;
    let mut entry = Descriptor::new(MediaType::ImageManifest, size, digest);
    entry.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::from("unknown"))
            .os(Os::from("unknown"))
            .build()
            .expect("a platform with os and architecture is complete"),
    ));
    entry.set_annotations(Some(
        [
            (REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned()),
            (REFERENCE_DIGEST.to_owned(), subject.digest().to_string()),
        ]
        .into(),
    ));
    Ok(entry)
}

/// Whether an index entry is one of BuildKit's in-index attestation manifests.
pub fn is_in_index_attestation(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations()
        .as_ref()
        .is_some_and(|annotations| {
            annotations
                .get(REFERENCE_TYPE)
                .is_some_and(|kind| kind == ATTESTATION_MANIFEST)
        })
}

/// The image manifest an in-index attestation manifest is about, when it names one.
pub fn in_index_subject(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(REFERENCE_DIGEST))
        .map(String::as_str)
}

/// Keeps the first of manifests listed twice: an in-index attestation manifest that has a
/// `subject` (BuildKit's `oci-artifact=true`) is also a referrer on a registry or store
/// that indexes referrers, and its statements must be read once.
pub fn distinct_carriers(carriers: &mut Vec<Descriptor>) {
    let mut seen = std::collections::HashSet::new();
    carriers.retain(|carrier| seen.insert(carrier.digest().clone()));
}

/// An in-toto statement found attached to an image: the manifest that carries it (a
/// referrer, or a BuildKit attestation manifest in the index), and the statement.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundStatement {
    /// The digest of the manifest that carries the statement.
    pub manifest: Digest,
    /// The statement (a JSON object with a `predicateType`).
    pub statement: serde_json::Value,
}

impl FoundStatement {
    /// The layers of an attestation manifest that hold in-toto statements.
    pub fn layers(manifest: &ImageManifest) -> impl Iterator<Item = &Descriptor> {
        manifest
            .layers()
            .iter()
            .filter(|layer| layer.media_type().to_string() == IN_TOTO_MEDIA_TYPE)
    }

    /// The statement in `bytes`, one of [`Self::layers`] of the manifest `manifest`; `None`
    /// when it is not JSON with a `predicateType`.
    pub fn parse(manifest: &Digest, bytes: &[u8]) -> Option<Self> {
        let statement: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        statement.get("predicateType")?;
        Some(Self {
            manifest: manifest.clone(),
            statement,
        })
    }
}

/// An artifact of one layer, to attach to a subject.
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    /// The manifest's `artifactType`.
    pub artifact_type: &'a str,
    /// The layer's media type.
    pub layer_media_type: &'a str,
    /// The layer's bytes.
    pub layer: &'a [u8],
    /// The layer descriptor's annotations.
    pub layer_annotations: HashMap<String, String>,
    /// The manifest's annotations (also shown in referrers lists).
    pub annotations: HashMap<String, String>,
}

/// The OCI empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`, embedded).
pub fn empty_descriptor() -> Descriptor {
    let mut descriptor = Descriptor::new(
        MediaType::EmptyJSON,
        EMPTY_JSON.len() as u64,
        super::sha256_digest(EMPTY_JSON),
    );
    descriptor.set_data(Some("e30=".to_owned()));
    descriptor
}

/// Writes an artifact's blobs and manifest (subject: `subject`) into `layout`; returns the
/// manifest's descriptor as a referrers list shows it (media type, digest, size,
/// `artifactType`, annotations). Nothing is named or indexed: see [`ImageLayout::add_referrer`].
///
/// # Errors
/// Write failures.
pub fn write_artifact(
    layout: &ImageLayout,
    subject: &Descriptor,
    artifact: &Artifact<'_>,
) -> Result<Descriptor, LayoutError> {
    layout.write_blob(EMPTY_JSON)?;
    let (layer_digest, layer_size) = layout.write_blob(artifact.layer)?;
    let mut layer = Descriptor::new(
        MediaType::from(artifact.layer_media_type),
        layer_size,
        layer_digest,
    );
    if !artifact.layer_annotations.is_empty() {
        layer.set_annotations(Some(artifact.layer_annotations.clone()));
    }
    let subject = Descriptor::new(
        subject.media_type().clone(),
        subject.size(),
        subject.digest().clone(),
    );
    let mut builder = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(artifact.artifact_type))
        .config(empty_descriptor())
        .layers(vec![layer])
        .subject(subject);
    if !artifact.annotations.is_empty() {
        builder = builder.annotations(artifact.annotations.clone());
    }
    let manifest = builder
        .build()
        .expect("an artifact manifest has every required field");
    let bytes = super::image::canonical_json(&manifest);
    let (digest, size) = layout.write_blob(&bytes)?;
    Ok(listed_descriptor(
        digest,
        size,
        Some(artifact.artifact_type),
        &artifact.annotations,
    ))
}

/// A referrers-list entry: media type (OCI manifest), digest, size, artifact type,
/// annotations.
pub fn listed_descriptor(
    digest: Digest,
    size: u64,
    artifact_type: Option<&str>,
    annotations: &HashMap<String, String>,
) -> Descriptor {
    let mut builder = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest)
        .size(size);
    if let Some(artifact_type) = artifact_type {
        builder = builder.artifact_type(MediaType::from(artifact_type));
    }
    if !annotations.is_empty() {
        builder = builder.annotations(annotations.clone());
    }
    builder
        .build()
        .expect("a descriptor with media type, digest and size is complete")
}

/// The subject an `index.json` entry is a referrer of, if it is one.
pub fn subject_of(entry: &Descriptor) -> Option<Digest> {
    entry
        .annotations()
        .as_ref()?
        .get(SUBJECT_ANNOTATION)?
        .parse()
        .ok()
}

/// An entry without the layout's own bookkeeping annotation.
fn as_listed(entry: &Descriptor) -> Descriptor {
    let mut listed = entry.clone();
    if let Some(annotations) = entry.annotations() {
        let kept: HashMap<String, String> = annotations
            .iter()
            .filter(|(key, _)| key.as_str() != SUBJECT_ANNOTATION)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        listed.set_annotations((!kept.is_empty()).then_some(kept));
    }
    listed
}

/// Whether `new` replaces `old` among one subject's referrers: the same manifest, or both
/// xbuild's of the same kind.
pub fn replaces(new: &Descriptor, old: &Descriptor) -> bool {
    if new.digest() == old.digest() {
        return true;
    }
    let kind = |descriptor: &Descriptor| {
        descriptor
            .annotations()
            .as_ref()
            .and_then(|annotations| annotations.get(KIND_ANNOTATION).cloned())
    };
    kind(new).is_some() && kind(new) == kind(old)
}

impl ImageLayout {
    /// Lists `referrer` (a manifest in the layout, described as [`write_artifact`] returns
    /// it) as a referrer of `subject` in `index.json`, replacing an entry it
    /// [`replaces`].
    ///
    /// # Errors
    /// `index.json` cannot be read or written.
    pub fn add_referrer(&self, subject: &Digest, referrer: &Descriptor) -> Result<(), LayoutError> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let referrer = as_listed(referrer);
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|entry| {
                subject_of(entry).as_ref() != Some(subject)
                    || !replaces(&referrer, &as_listed(entry))
            })
            .cloned()
            .collect();
        let mut entry = referrer;
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.insert(SUBJECT_ANNOTATION.to_owned(), subject.to_string());
        entry.set_annotations(Some(annotations));
        manifests.push(entry);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The referrers of `subject`, as a referrers list shows them, in the order they were
    /// added.
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, LayoutError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter(|entry| subject_of(entry).as_ref() == Some(subject))
            .map(as_listed)
            .collect())
    }

    /// Every referrer entry: (subject, referrer as listed).
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn all_referrers(&self) -> Result<Vec<(Digest, Descriptor)>, LayoutError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .filter_map(|entry| Some((subject_of(entry)?, as_listed(entry))))
            .collect())
    }

    /// The referrers of the manifests in `subjects`, and of those referrers in turn (a
    /// signature of an attestation), at most `depth` levels down: (subject, referrer).
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn referrer_closure(
        &self,
        subjects: &HashSet<Digest>,
        depth: usize,
    ) -> Result<Vec<(Digest, Descriptor)>, LayoutError> {
        let all = self.all_referrers()?;
        let mut reached: HashSet<Digest> = subjects.clone();
        let mut found = Vec::new();
        for _ in 0..depth {
            let before = found.len();
            for (subject, referrer) in &all {
                if reached.contains(subject) && !reached.contains(referrer.digest()) {
                    found.push((subject.clone(), referrer.clone()));
                }
            }
            if found.len() == before {
                break;
            }
            reached.extend(
                found[before..]
                    .iter()
                    .map(|(_, referrer)| referrer.digest().clone()),
            );
        }
        Ok(found)
    }

    /// Removes the referrer entries whose referrer is in `digests`; returns how many.
    ///
    /// # Errors
    /// `index.json` cannot be read or written.
    pub fn remove_referrers(&self, digests: &HashSet<Digest>) -> Result<usize, LayoutError> {
        if digests.is_empty() {
            return Ok(0);
        }
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let before = index.manifests().len();
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|entry| subject_of(entry).is_none() || !digests.contains(entry.digest()))
            .cloned()
            .collect();
        let removed = before - kept.len();
        if removed > 0 {
            index.set_manifests(kept);
            self.write_index(&index)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_carrier_listed_twice_is_read_once() {
        let descriptor = |byte: char| {
            serde_json::from_value::<super::Descriptor>(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", byte.to_string().repeat(64)),
                "size": 10
            }))
            .expect("a descriptor")
        };
        let mut carriers = vec![descriptor('a'), descriptor('b'), descriptor('a')];
        super::distinct_carriers(&mut carriers);
        let digests: Vec<String> = carriers.iter().map(|c| c.digest().to_string()).collect();
        assert_eq!(
            digests,
            [
                format!("sha256:{}", "a".repeat(64)),
                format!("sha256:{}", "b".repeat(64))
            ]
        );
    }

    use super::*;

    fn artifact<'a>(kind: &'a str, layer: &'a [u8]) -> Artifact<'a> {
        Artifact {
            artifact_type: "application/vnd.in-toto+json",
            layer_media_type: "application/vnd.in-toto+json",
            layer,
            layer_annotations: HashMap::new(),
            annotations: [(KIND_ANNOTATION.to_owned(), kind.to_owned())].into(),
        }
    }

    #[test]
    fn referrers_are_listed_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let (subject_digest, size) = layout.write_blob(b"{\"layers\":[]}").unwrap();
        let subject = Descriptor::new(MediaType::ImageManifest, size, subject_digest.clone());
        layout.set_ref("app:1", &subject).unwrap();
        let sbom = write_artifact(&layout, &subject, &artifact("sbom", b"one")).unwrap();
        layout.add_referrer(&subject_digest, &sbom).unwrap();
        let provenance =
            write_artifact(&layout, &subject, &artifact("provenance", b"two")).unwrap();
        layout.add_referrer(&subject_digest, &provenance).unwrap();
        // The same kind again replaces; the same manifest again is not listed twice.
        let newer = write_artifact(&layout, &subject, &artifact("sbom", b"three")).unwrap();
        layout.add_referrer(&subject_digest, &newer).unwrap();
        layout.add_referrer(&subject_digest, &newer).unwrap();
        let listed = layout.referrers(&subject_digest).unwrap();
        let digests: Vec<&Digest> = listed.iter().map(Descriptor::digest).collect();
        assert_eq!(digests, [provenance.digest(), newer.digest()]);
        assert!(
            listed[0]
                .annotations()
                .as_ref()
                .unwrap()
                .get(SUBJECT_ANNOTATION)
                .is_none()
        );
        assert_eq!(
            listed[0].artifact_type().as_ref().unwrap().to_string(),
            "application/vnd.in-toto+json"
        );
        // The manifest names its subject and the empty config.
        let manifest: oci_spec::image::ImageManifest =
            layout.read_json(newer.digest(), "manifest").unwrap();
        assert_eq!(
            manifest.subject().as_ref().unwrap().digest(),
            &subject_digest
        );
        assert_eq!(manifest.config().media_type(), &MediaType::EmptyJSON);
        // A signature of the SBOM is reached through it.
        let signature = write_artifact(&layout, &newer, &artifact("sig", b"four")).unwrap();
        layout.add_referrer(newer.digest(), &signature).unwrap();
        let closure = layout
            .referrer_closure(&[subject_digest.clone()].into(), 4)
            .unwrap();
        assert_eq!(closure.len(), 3);
        assert_eq!(
            layout
                .remove_referrers(&[newer.digest().clone()].into())
                .unwrap(),
            1
        );
        assert_eq!(layout.referrers(&subject_digest).unwrap().len(), 1);
        // The image's name is untouched.
        assert!(layout.resolve_ref("app:1").unwrap().is_some());
    }
}

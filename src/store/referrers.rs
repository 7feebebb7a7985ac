//! Referrers in the store: artifacts (attestations) attached to a stored image manifest,
//! kept in `index.json` as [`crate::oci::referrers`] describes. A referrer lives as long as
//! its subject: garbage collection keeps the referrers of every manifest it keeps (and
//! theirs in turn), and drops the entries and blobs of the others; `store check` checks
//! them like images.

use std::collections::HashSet;

use oci_spec::image::{Descriptor, Digest, ImageManifest};

use super::{Store, StoreError};
use crate::oci::LayoutError;
use crate::oci::image::{self, ResolvedImage};
use crate::oci::referrers::{self, Artifact, FoundStatement, REFERRER_DEPTH};
use crate::platform::Platform;

impl Store {
    /// Attaches an artifact to `subject` (a manifest in the store): writes its blobs and
    /// manifest and lists it in `index.json`, replacing xbuild's earlier artifact of the
    /// same kind ([`referrers::KIND_ANNOTATION`]) on that subject. Returns the artifact
    /// manifest's descriptor.
    ///
    /// # Errors
    /// The subject is not in the store, or a write fails.
    pub fn attach_referrer(
        &self,
        subject: &Descriptor,
        artifact: &Artifact<'_>,
    ) -> Result<Descriptor, StoreError> {
        if !self.layout().has_blob(subject.digest()) {
            return Err(LayoutError::MissingBlob {
                digest: subject.digest().clone(),
                root: self.root().to_path_buf(),
            }
            .into());
        }
        let descriptor = referrers::write_artifact(self.layout(), subject, artifact)?;
        self.with_index_lock(|layout| Ok(layout.add_referrer(subject.digest(), &descriptor)?))?;
        Ok(descriptor)
    }

    /// Lists `referrer` (its manifest and blobs already in the store) as a referrer of
    /// `subject`, as a pull or a load does.
    ///
    /// # Errors
    /// The manifest is missing, or `index.json` cannot be written.
    pub fn add_referrer(&self, subject: &Digest, referrer: &Descriptor) -> Result<(), StoreError> {
        if !self.layout().has_blob(referrer.digest()) {
            return Err(LayoutError::MissingBlob {
                digest: referrer.digest().clone(),
                root: self.root().to_path_buf(),
            }
            .into());
        }
        self.with_index_lock(|layout| Ok(layout.add_referrer(subject, referrer)?))
    }

    /// The referrers of a manifest (or index), as a registry's referrers list shows them.
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self.layout().referrers(subject)?)
    }

    /// The referrers reachable from the manifests in `subjects` (referrers of referrers
    /// too): (subject, referrer).
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn referrer_closure(
        &self,
        subjects: &HashSet<Digest>,
    ) -> Result<Vec<(Digest, Descriptor)>, StoreError> {
        Ok(self.layout().referrer_closure(subjects, REFERRER_DEPTH)?)
    }

    /// The in-toto statements attached to each platform image of the stored image `name`:
    /// its referrers (xbuild's way), then the attestation manifests BuildKit keeps inside an
    /// index (a loaded BuildKit archive), in the index's order. Platforms whose manifest the
    /// store lacks are left out; a layer that is not an in-toto statement is skipped.
    ///
    /// # Errors
    /// An unknown name, unreadable or corrupt documents.
    pub fn attestations(
        &self,
        name: &str,
    ) -> Result<Vec<(Platform, Vec<FoundStatement>)>, StoreError> {
        let top = self.resolve_ref(name)?;
        let mut images: Vec<(Platform, Digest)> = Vec::new();
        let mut in_index: Vec<Descriptor> = Vec::new();
        if image::is_index(self.layout(), &top)? {
            let index = image::read_index(self.layout(), top.digest())?;
            for entry in index.manifests() {
                if referrers::is_in_index_attestation(entry) {
                    in_index.push(entry.clone());
                } else if self.layout().has_blob(entry.digest()) {
                    let platform = match entry.platform() {
                        Some(platform) => Platform::from(platform),
                        None => self.resolved(entry)?.platform(),
                    };
                    images.push((platform, entry.digest().clone()));
                }
            }
        } else {
            images.push((self.resolved(&top)?.platform(), top.digest().clone()));
        }
        let mut found = Vec::new();
        for (platform, subject) in images {
            let mut carriers = self.referrers(&subject)?;
            carriers.extend(
                in_index
                    .iter()
                    .filter(|entry| referrers::in_index_subject(entry) == Some(subject.as_ref()))
                    .cloned(),
            );
            referrers::distinct_carriers(&mut carriers);
            let mut statements = Vec::new();
            for carrier in carriers {
                if !self.layout().has_blob(carrier.digest()) {
                    continue;
                }
                let Ok(manifest) = self
                    .layout()
                    .read_json::<ImageManifest>(carrier.digest(), "attestation manifest")
                else {
                    continue;
                };
                for layer in FoundStatement::layers(&manifest) {
                    let bytes = self.layout().read_blob(layer.digest())?;
                    statements.extend(FoundStatement::parse(carrier.digest(), &bytes));
                }
            }
            found.push((platform, statements));
        }
        Ok(found)
    }

    fn resolved(&self, manifest: &Descriptor) -> Result<ResolvedImage, StoreError> {
        Ok(image::resolve_image(self.layout(), manifest, None)?)
    }
}

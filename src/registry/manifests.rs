//! Manifest and config endpoints: [`RawManifest`] (exact bytes, media type, digest), the
//! media types read, `GET`/`HEAD`/`PUT` of manifests and indexes, and configs read into
//! memory, each within its bound ([`crate::oci::limits`]) and checked against its digest.
//!
//! Must not: change a manifest's bytes (its digest is its identity), read a document past
//! its bound, or name `blobs.rs` (blobs streamed into the store are there).

use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};

use super::bounds::Bound;
use super::error::{RegistryError, check_status};
use super::transport::{Payload, Registry, Scope, header_str};
use crate::oci::limits::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::oci::sha256_digest;

/// Media types of manifests and indexes we read, OCI and Docker schema 2.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A manifest or index as the registry serves it: exact bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The bytes, unchanged (their digest is the manifest's identity).
    pub bytes: Vec<u8>,
    /// The media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// The sha256 digest of `bytes`.
    pub digest: Digest,
}

impl RawManifest {
    /// Wraps bytes read from elsewhere (the store), computing the digest.
    pub fn new(bytes: Vec<u8>, media_type: String) -> Self {
        let digest = sha256_digest(&bytes);
        Self {
            bytes,
            media_type,
            digest,
        }
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }

    /// A descriptor for it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.as_str().into(),
            self.bytes.len() as u64,
            self.digest.clone(),
        )
    }
}

/// Whether a media type names an index.
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MANIFEST_MEDIA_TYPES[0] || media_type == MANIFEST_MEDIA_TYPES[2]
}

/// `Accept:` every manifest and index media type xbuild reads.
fn accept_manifests() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        MANIFEST_MEDIA_TYPES
            .join(", ")
            .parse()
            .expect("media types are valid header values"),
    );
    headers
}

impl Registry {
    /// Fetches a manifest or index by tag or digest, checking its digest. At most
    /// [`MAX_MANIFEST_SIZE`] bytes are read.
    ///
    /// # Errors
    /// Not found, access denied, transport failures, a manifest over the limit, or bytes
    /// that do not match the digest asked for (or announced in `Docker-Content-Digest`).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<RawManifest, RegistryError> {
        self.fetch_manifest(repository, reference, Bound::limited(MAX_MANIFEST_SIZE))
            .await
    }

    /// Fetches the manifest or index a descriptor names (an index entry), reading no more
    /// than its declared size, which must be at most [`MAX_MANIFEST_SIZE`] (else it is not
    /// asked for).
    ///
    /// # Errors
    /// As [`Self::get_manifest`], and a size other than the declared one.
    pub async fn get_manifest_of(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<RawManifest, RegistryError> {
        let digest = descriptor.digest();
        let bound =
            Bound::declared_within(descriptor.size(), MAX_MANIFEST_SIZE).map_err(|problem| {
                RegistryError::Size {
                    what: "manifest",
                    source_name: format!("{}/{repository}@{digest}", self.name),
                    problem,
                }
            })?;
        self.fetch_manifest(repository, digest.as_ref(), bound)
            .await
    }

    async fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
        bound: Bound,
    ) -> Result<RawManifest, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let headers = accept_manifests();
        let separator = if reference.parse::<Digest>().is_ok() {
            '@'
        } else {
            ':'
        };
        let source_name = format!("{}/{repository}{separator}{reference}", self.name);
        let response = self
            .send(
                Method::GET,
                url.clone(),
                headers,
                Payload::Empty,
                &Scope::pull(repository),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: "manifest",
                name: source_name,
            });
        }
        let response = check_status(Method::GET, &url, response).await?;
        let content_type = header_str(&response, CONTENT_TYPE.as_str())
            .map(|value| value.split(';').next().unwrap_or("").trim().to_owned());
        let announced = header_str(&response, "docker-content-digest")
            .and_then(|digest| digest.parse::<Digest>().ok());
        let bytes = self
            .read_body(response, "manifest", &source_name, bound)
            .await?;
        let media_type = match content_type.filter(|t| MANIFEST_MEDIA_TYPES.contains(&t.as_str())) {
            Some(media_type) => media_type,
            None => media_type_of_document(&bytes).ok_or_else(|| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("{source_name} is not a manifest or index"),
            })?,
        };
        let manifest = RawManifest::new(bytes, media_type);
        let expected = reference.parse::<Digest>().ok().or(announced);
        if let Some(expected) = expected {
            if expected != manifest.digest {
                return Err(RegistryError::DigestMismatch {
                    what: "manifest",
                    source_name,
                    expected,
                    expected_size: bound.declared.unwrap_or(0),
                    actual: manifest.digest,
                    actual_size: manifest.bytes.len() as u64,
                });
            }
        }
        Ok(manifest)
    }

    /// Whether a manifest exists (`HEAD`).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn has_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{digest}"));
        self.exists(url, accept_manifests(), &Scope::push(repository))
            .await
    }

    /// Uploads a manifest or index with its exact bytes under `reference` (a tag or its
    /// digest) and checks the digest the registry computed.
    ///
    /// # Errors
    /// Rejected manifest, transport or auth failures, a different digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            manifest
                .media_type
                .parse()
                .map_err(|_| RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: format!("bad media type {:?}", manifest.media_type),
                })?,
        );
        let response = self
            .send(
                Method::PUT,
                url.clone(),
                headers,
                Payload::Bytes(&manifest.bytes),
                &Scope::push(repository),
            )
            .await?;
        let response = check_status(Method::PUT, &url, response).await?;
        if let Some(returned) = header_str(&response, "docker-content-digest")
            .and_then(|digest| digest.parse::<Digest>().ok())
        {
            if returned != manifest.digest {
                return Err(RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: format!(
                        "stored manifest {reference} as {returned}, not {}",
                        manifest.digest
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses a config whose descriptor declares more than [`MAX_CONFIG_SIZE`], before it
    /// is fetched (into memory by [`Self::get_config`], or into the store by
    /// [`Self::fetch_blob`], from where it is read whole).
    ///
    /// # Errors
    /// [`RegistryError::Size`] when the declared size is over the limit.
    pub fn check_config_size(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<(), RegistryError> {
        self.config_bound(repository, descriptor).map(drop)
    }

    fn config_bound(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Bound, RegistryError> {
        Bound::declared_within(descriptor.size(), MAX_CONFIG_SIZE).map_err(|problem| {
            RegistryError::Size {
                what: "config",
                source_name: format!("{}/{repository}@{}", self.name, descriptor.digest()),
                problem,
            }
        })
    }

    /// Fetches a config into memory, checking its digest; no more than its declared size
    /// is read, and that must be at most [`MAX_CONFIG_SIZE`].
    ///
    /// # Errors
    /// Not found, transport failures, a size over the limit or other than declared, digest
    /// mismatch.
    pub async fn get_config(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let digest = descriptor.digest();
        let bound = self.config_bound(repository, descriptor)?;
        let response = self.get_blob(repository, digest).await?;
        let source_name = format!("{}/{repository}@{digest}", self.name);
        let bytes = self
            .read_body(response, "config", &source_name, bound)
            .await?;
        let actual = sha256_digest(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "config",
                source_name: format!("{}/{repository}", self.name),
                expected: digest.clone(),
                expected_size: descriptor.size(),
                actual,
                actual_size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}

/// The `mediaType` a manifest document declares, for registries that answer with a
/// generic content type.
fn media_type_of_document(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match (probe.media_type, probe.manifests, probe.config) {
        (Some(media_type), _, _) => Some(media_type),
        (None, Some(_), _) => Some(MANIFEST_MEDIA_TYPES[0].to_owned()),
        (None, None, Some(_)) => Some(MANIFEST_MEDIA_TYPES[1].to_owned()),
        _ => None,
    }
}

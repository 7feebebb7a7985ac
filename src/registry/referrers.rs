//! Referrers in a registry (distribution-spec 1.1): artifacts whose manifest's `subject`
//! is an image manifest, found through the referrers API (`GET
//! /v2/<name>/referrers/<digest>` answering `200` with an image index) or, on registries
//! without it (docker-registry 2.8), through the tag fallback: an image index under the
//! tag `<alg>-<hex>` of the subject's digest, listing the referrers.
//!
//! - **Push** ([`push_referrers`]): the store's referrers of the pushed manifests (and
//!   theirs in turn) go after the image: their blobs, their manifests by digest, then, when
//!   the registry has no referrers API, the fallback index is read, changed and written
//!   back: entries other tools put there are kept; xbuild's own earlier attestation of the
//!   same kind for the same subject is replaced. The index is read again after the write
//!   and the update repeated when a concurrent writer lost our entries.
//! - **Fetch** ([`fetch_referrers`]): the direct referrers of given manifests, manifests
//!   and blobs into the local layout, each checked against its digest and its `subject`;
//!   naming them in the store is the caller's business ([`crate::store::Store::add_referrer`]).
//! - **Copy** ([`copy_referrers`]): fetch from one repository, push to another
//!   (`imagetools create`).
//!
//! Owns no store policy; registry code only. Listing answers are read with a bound.

use std::collections::{BTreeMap, HashSet};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode, Url};

use super::manifests::{MANIFEST_MEDIA_TYPES, RawManifest};
use super::progress::NoProgress;
use super::transport::{Payload, Registry, RegistryError, Scope, check_status, header_str};
use crate::oci::ImageLayout;
use crate::oci::referrers::{REFERRER_DEPTH, listed_descriptor, replaces};

/// The largest referrers list page or fallback index read.
const MAX_LISTING: usize = 4 * 1024 * 1024;
/// The most pages of a referrers list followed.
const MAX_PAGES: usize = 64;
/// How many times a fallback index update is tried when concurrent writers interfere.
const FALLBACK_ATTEMPTS: usize = 3;
/// The OCI index media type.
const INDEX_MEDIA_TYPE: &str = MANIFEST_MEDIA_TYPES[0];
/// The OCI manifest media type.
const MANIFEST_MEDIA_TYPE: &str = MANIFEST_MEDIA_TYPES[1];

/// How a repository lists referrers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The referrers API.
    Api,
    /// The `<alg>-<hex>` tag holding an index.
    TagFallback,
}

/// A subject's referrers in a repository.
#[derive(Debug, Clone)]
pub struct RemoteReferrers {
    /// How they were listed.
    pub listing: Listing,
    /// The referrers (descriptors of their manifests, as listed).
    pub descriptors: Vec<Descriptor>,
}

/// The fallback tag of a subject: `<alg>-<hex>` (distribution-spec: the algorithm cut to
/// 32 characters, the hex to 64).
pub fn fallback_tag(subject: &Digest) -> String {
    let algorithm: String = subject.algorithm().as_ref().chars().take(32).collect();
    let hex: String = subject.digest().chars().take(64).collect();
    format!("{algorithm}-{hex}")
}

fn protocol(registry: &Registry, detail: String) -> RegistryError {
    RegistryError::Protocol {
        registry: registry.name().to_owned(),
        detail,
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_limited(
    registry: &Registry,
    url: &Url,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| RegistryError::Connection {
                url: url.to_string(),
                attempts: 1,
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(protocol(
                registry,
                format!("{url}: the answer is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// The referrers API's list, `None` when the registry has no referrers API.
async fn list_api(
    registry: &Registry,
    repository: &str,
    subject: &Digest,
) -> Result<Option<Vec<Descriptor>>, RegistryError> {
    let mut url = registry.url(&format!("v2/{repository}/referrers/{subject}"));
    let mut found = Vec::new();
    for page in 0..MAX_PAGES {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            INDEX_MEDIA_TYPE
                .parse()
                .expect("a media type is a valid header value"),
        );
        let response = registry
            .send(
                Method::GET,
                url.clone(),
                headers,
                Payload::Empty,
                &Scope::pull(repository),
            )
            .await?;
        let status = response.status();
        // distribution-spec: a registry without the API answers 404; others answer 400 or
        // 405 for a route they do not know.
        if page == 0
            && matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
            )
        {
            return Ok(None);
        }
        let response = check_status(Method::GET, &url, response).await?;
        let is_index = header_str(&response, "content-type")
            .is_some_and(|content_type| content_type.starts_with(INDEX_MEDIA_TYPE));
        let next = header_str(&response, "link")
            .and_then(next_link)
            .and_then(|link| url.join(link).ok());
        let body = read_limited(registry, &url, response, MAX_LISTING).await?;
        let index: ImageIndex = match serde_json::from_slice(&body) {
            Ok(index) => index,
            // A 200 that is not an index (a web page): no referrers API.
            Err(_) if page == 0 && !is_index => return Ok(None),
            Err(error) => {
                return Err(protocol(
                    registry,
                    format!(
                        "the referrers list of {subject} in {repository} is not an image index: {error}"
                    ),
                ));
            }
        };
        found.extend(index.manifests().iter().cloned());
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    Ok(Some(found))
}

/// The tag-fallback index of a subject: its entries (none when the tag does not exist).
async fn list_fallback(
    registry: &Registry,
    repository: &str,
    subject: &Digest,
) -> Result<Vec<Descriptor>, RegistryError> {
    let tag = fallback_tag(subject);
    let raw = match registry.get_manifest(repository, &tag).await {
        Ok(raw) => raw,
        Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    if raw.bytes.len() > MAX_LISTING {
        return Err(protocol(
            registry,
            format!("the referrers index {repository}:{tag} is larger than {MAX_LISTING} bytes"),
        ));
    }
    if !raw.is_index() {
        return Err(protocol(
            registry,
            format!(
                "the tag {repository}:{tag} holds a {}, not the referrers index of {subject}",
                raw.media_type
            ),
        ));
    }
    let index: ImageIndex = serde_json::from_slice(&raw.bytes).map_err(|error| {
        protocol(
            registry,
            format!("the referrers index {repository}:{tag} does not parse: {error}"),
        )
    })?;
    Ok(index.manifests().clone())
}

/// The referrers of `subject` in `repository`: through the API when the registry has it,
/// else through the fallback tag.
///
/// # Errors
/// Transport or auth failures, or an answer that is not an index.
pub async fn list(
    registry: &Registry,
    repository: &str,
    subject: &Digest,
) -> Result<RemoteReferrers, RegistryError> {
    if let Some(descriptors) = list_api(registry, repository, subject).await? {
        return Ok(RemoteReferrers {
            listing: Listing::Api,
            descriptors,
        });
    }
    Ok(RemoteReferrers {
        listing: Listing::TagFallback,
        descriptors: list_fallback(registry, repository, subject).await?,
    })
}

/// Pushes the layout's referrers of `subjects` (and theirs in turn) to `repository`;
/// returns how many referrer manifests were pushed.
///
/// # Errors
/// Unreadable store documents, transport or auth failures, a fallback index that cannot be
/// updated.
pub async fn push_referrers(
    registry: &Registry,
    layout: &ImageLayout,
    repository: &str,
    subjects: &[Digest],
) -> Result<usize, RegistryError> {
    let subjects: HashSet<Digest> = subjects.iter().cloned().collect();
    let referrers = layout.referrer_closure(&subjects, REFERRER_DEPTH)?;
    push_listed(registry, layout, repository, &referrers).await
}

/// Pushes given referrers (manifests and blobs in the layout), then lists them.
async fn push_listed(
    registry: &Registry,
    layout: &ImageLayout,
    repository: &str,
    referrers: &[(Digest, Descriptor)],
) -> Result<usize, RegistryError> {
    for (_, referrer) in referrers {
        let manifest: ImageManifest = layout.read_json(referrer.digest(), "referrer manifest")?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            registry
                .push_blob(repository, blob, layout, None, &NoProgress)
                .await?;
        }
        let bytes = layout.read_blob(referrer.digest())?;
        let raw = RawManifest::new(bytes, MANIFEST_MEDIA_TYPE.to_owned());
        registry
            .put_manifest(repository, referrer.digest().as_ref(), &raw)
            .await?;
    }
    let mut by_subject: BTreeMap<String, (Digest, Vec<Descriptor>)> = BTreeMap::new();
    for (subject, referrer) in referrers {
        by_subject
            .entry(subject.to_string())
            .or_insert_with(|| (subject.clone(), Vec::new()))
            .1
            .push(referrer.clone());
    }
    for (subject, ours) in by_subject.values() {
        // A registry with the API indexed them when their manifests were pushed.
        if list_api(registry, repository, subject).await?.is_some() {
            continue;
        }
        update_fallback(registry, repository, subject, ours).await?;
    }
    Ok(referrers.len())
}

/// Adds `ours` to the fallback index of `subject`: read, change, write, read back.
async fn update_fallback(
    registry: &Registry,
    repository: &str,
    subject: &Digest,
    ours: &[Descriptor],
) -> Result<(), RegistryError> {
    let tag = fallback_tag(subject);
    for _ in 0..FALLBACK_ATTEMPTS {
        let existing = list_fallback(registry, repository, subject).await?;
        let mut entries: Vec<Descriptor> = existing
            .iter()
            .filter(|old| !ours.iter().any(|new| replaces(new, old)))
            .cloned()
            .collect();
        entries.extend(ours.iter().cloned());
        if entries != existing {
            let index = crate::oci::image::build_index(entries);
            let raw = RawManifest::new(
                crate::oci::image::canonical_json(&index),
                INDEX_MEDIA_TYPE.to_owned(),
            );
            registry.put_manifest(repository, &tag, &raw).await?;
        }
        let now = list_fallback(registry, repository, subject).await?;
        if ours
            .iter()
            .all(|new| now.iter().any(|entry| entry.digest() == new.digest()))
        {
            return Ok(());
        }
    }
    Err(protocol(
        registry,
        format!(
            "the referrers index {repository}:{tag} kept changing under concurrent writers; our entries are not in it after {FALLBACK_ATTEMPTS} attempts"
        ),
    ))
}

/// Fetches the direct referrers of `subjects` from `repository` into the layout
/// (manifests and blobs, verified); returns (subject, referrer as listed). Entries that are
/// not image manifests, or whose manifest names another subject, are skipped.
///
/// # Errors
/// Transport or auth failures, digest mismatches, store write failures.
pub async fn fetch_referrers(
    registry: &Registry,
    layout: &ImageLayout,
    repository: &str,
    subjects: &[Digest],
) -> Result<Vec<(Digest, Descriptor)>, RegistryError> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for subject in subjects {
        let remote = list(registry, repository, subject).await?;
        for descriptor in remote.descriptors {
            let is_manifest = descriptor.media_type().to_string() == MANIFEST_MEDIA_TYPE;
            if !is_manifest || !seen.insert(descriptor.digest().clone()) {
                continue;
            }
            // Read no further than the size the referrers list declares for it.
            let raw = registry.get_manifest_of(repository, &descriptor).await?;
            let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&raw.bytes) else {
                continue;
            };
            if manifest.subject().as_ref().map(Descriptor::digest) != Some(subject) {
                continue;
            }
            for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
                if !layout.has_blob(blob.digest()) {
                    registry
                        .fetch_blob(repository, blob, layout, &NoProgress)
                        .await?;
                }
            }
            let (digest, size) = layout.write_blob(&raw.bytes).map_err(RegistryError::from)?;
            let artifact_type = manifest
                .artifact_type()
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| Some(manifest.config().media_type().to_string()));
            let annotations = manifest.annotations().clone().unwrap_or_default();
            found.push((
                subject.clone(),
                listed_descriptor(digest, size, artifact_type.as_deref(), &annotations),
            ));
        }
    }
    Ok(found)
}

/// Copies the direct referrers of `subject` from `source_repository` on `origin` to
/// `target_repository` on `destination`, through the layout; returns how many.
///
/// # Errors
/// As [`fetch_referrers`] and [`push_referrers`].
pub async fn copy_referrers(
    origin: &Registry,
    source_repository: &str,
    destination: &Registry,
    target_repository: &str,
    layout: &ImageLayout,
    subject: &Digest,
) -> Result<usize, RegistryError> {
    let fetched = fetch_referrers(
        origin,
        layout,
        source_repository,
        std::slice::from_ref(subject),
    )
    .await?;
    if fetched.is_empty() {
        return Ok(0);
    }
    push_listed(destination, layout, target_repository, &fetched).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_and_links_are_read_as_the_spec_writes_them() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(fallback_tag(&digest), format!("sha256-{}", "a".repeat(64)));
        assert_eq!(
            next_link(r#"</v2/app/referrers/sha256:x?n=2&last=b>; rel="next""#),
            Some("/v2/app/referrers/sha256:x?n=2&last=b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}

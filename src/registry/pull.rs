//! Pull: reference → manifest or index → the manifest(s) for the wanted platform(s) →
//! config and layer blobs streamed into the store, each verified against its digest and
//! size while it streams; several blobs at once; blobs the store has are skipped.
//!
//! What the reference names is stored under its full normalised name, with its exact
//! bytes: an index stays an index (holding only the pulled platforms' blobs, as
//! containerd does), so a later pull of another platform adds to it. The name is set last,
//! after every blob is verified; a failed pull sets no name and keeps only complete,
//! verified blobs (never a partial one), which garbage collection removes if unused.

use std::collections::BTreeSet;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::manifests::RawManifest;
use super::progress::Progress;
use super::reference::ImageRef;
use super::transport::{Registry, RegistryError, RegistryOptions};
use crate::oci::{ImageLayout, LayoutError};
use crate::platform::Platform;

/// Which platforms of an index to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// The best match for this platform ([`Platform::rank`]); a single-platform image of
    /// another platform is refused.
    One(Platform),
    /// As `One` for an index, but a single-platform image is taken whatever its platform
    /// (`docker pull` without `--platform`).
    Prefer(Platform),
    /// Every manifest of the index.
    All,
}

/// Errors of a pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Talking to the registry failed (or content did not match its digest).
    #[error("pulling {reference}")]
    Registry {
        /// What was being pulled.
        reference: String,
        /// The cause.
        #[source]
        source: RegistryError,
    },
    /// The store failed.
    #[error("pulling {reference}: writing to the store")]
    Store {
        /// What was being pulled.
        reference: String,
        /// The cause.
        #[source]
        source: LayoutError,
    },
    /// The index has no manifest for the platform.
    #[error("{reference} has no image for {wanted} (it has: {available})")]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: Platform,
        /// What the index offers, comma separated.
        available: String,
    },
    /// A manifest or index does not parse.
    #[error("{reference}: {what} {digest} is not valid: {reason}")]
    BadDocument {
        /// The image.
        reference: String,
        /// `manifest`, `index`, `config`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The parse error.
        reason: String,
    },
}

/// One platform's image that is now in the store.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// Its platform, from the index entry or the config.
    pub platform: Option<Platform>,
    /// The manifest's descriptor (digest, size, media type).
    pub manifest: Descriptor,
    /// The parsed manifest.
    pub document: ImageManifest,
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference, as pulled.
    pub reference: ImageRef,
    /// What the reference names: an index or a manifest, with its exact digest.
    pub descriptor: Descriptor,
    /// The platform images pulled.
    pub images: Vec<PlatformImage>,
    /// Blobs transferred.
    pub blobs_fetched: usize,
    /// Blobs the store had already (not transferred).
    pub blobs_present: usize,
}

/// Pulls `reference` into the store `layout`.
///
/// # Errors
/// Registry failures, digest mismatches (nothing is kept), no matching platform, store
/// write failures.
pub async fn pull(
    registry: &Arc<Registry>,
    layout: &ImageLayout,
    reference: &ImageRef,
    choice: &PlatformChoice,
    progress: Arc<dyn Progress>,
) -> Result<PulledImage, PullError> {
    let name = reference.to_string();
    let registry_error = |source| PullError::Registry {
        reference: name.clone(),
        source,
    };
    let repository = reference.repository();
    let top = registry
        .get_manifest(repository, &reference.manifest_reference())
        .await
        .map_err(registry_error)?;
    let mut selected: Vec<(Option<Platform>, RawManifest, Descriptor)> = Vec::new();
    let mut top_descriptor = top.descriptor();
    if top.is_index() {
        let index: ImageIndex = parse(&name, "index", &top.digest, &top.bytes)?;
        for entry in select(&name, &index, choice)? {
            let child = registry
                .get_manifest_of(repository, &entry)
                .await
                .map_err(registry_error)?;
            let platform = entry.platform().as_ref().map(Platform::from);
            selected.push((platform, child, entry.clone()));
        }
    } else {
        if let PlatformChoice::One(wanted) = choice {
            // Checked before any layer is fetched: the config is small.
            let document: ImageManifest = parse(&name, "manifest", &top.digest, &top.bytes)?;
            let config = registry
                .get_config(repository, document.config())
                .await
                .map_err(registry_error)?;
            let offered = config_platform(&name, document.config().digest(), &config)?;
            if wanted.rank(&offered).is_none() {
                return Err(PullError::NoMatchingPlatform {
                    reference: name.clone(),
                    wanted: wanted.clone(),
                    available: offered.to_string(),
                });
            }
        }
        let descriptor = top.descriptor();
        selected.push((None, top.clone(), descriptor));
    }

    let mut images = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for (platform, raw, descriptor) in &selected {
        if raw.is_index() {
            return Err(PullError::BadDocument {
                reference: name.clone(),
                what: "manifest",
                digest: raw.digest.clone(),
                reason: "an index inside an index is not supported yet".to_owned(),
            });
        }
        let document: ImageManifest = parse(&name, "manifest", &raw.digest, &raw.bytes)?;
        // Checked before any blob is fetched: the config is read whole from the store later.
        registry
            .check_config_size(repository, document.config())
            .map_err(registry_error)?;
        for blob in std::iter::once(document.config()).chain(document.layers()) {
            if seen.insert(blob.digest().to_string()) {
                blobs.push(blob.clone());
            }
        }
        images.push(PlatformImage {
            platform: platform.clone(),
            manifest: descriptor.clone(),
            document,
        });
    }

    let wanted = blobs.len();
    let missing: Vec<Descriptor> = blobs
        .into_iter()
        .filter(|blob| !layout.has_blob(blob.digest()))
        .collect();
    let blobs_fetched = missing.len();
    // A failed pull keeps the blobs it completed: each was verified against its digest
    // before it was renamed into place, another process pulling the same image may be about
    // to use it, and a retry skips it. Unnamed ones go at the next garbage collection. What
    // did not complete is a temporary file, removed when its writer is dropped.
    fetch_all(registry, layout, repository, &missing, progress)
        .await
        .map_err(registry_error)?;

    let store_error = |source| PullError::Store {
        reference: name.clone(),
        source,
    };
    for image in &mut images {
        let raw = &selected
            .iter()
            .find(|(_, raw, _)| raw.digest == *image.manifest.digest())
            .expect("every image comes from a selected manifest")
            .1;
        layout.write_blob(&raw.bytes).map_err(store_error)?;
        if image.platform.is_none() {
            let config: ImageConfiguration = layout
                .read_json(image.document.config().digest(), "image configuration")
                .map_err(store_error)?;
            let platform = Platform::of_config(&config);
            if !top.is_index() {
                top_descriptor.set_platform(Some(platform.to_oci()));
            }
            image.platform = Some(platform);
        }
    }
    layout.write_blob(&top.bytes).map_err(store_error)?;
    layout
        .set_ref(&reference.store_name(), &top_descriptor)
        .map_err(store_error)?;
    Ok(PulledImage {
        reference: reference.clone(),
        descriptor: top_descriptor,
        images,
        blobs_fetched,
        blobs_present: wanted - blobs_fetched,
    })
}

/// Connects to the reference's registry and pulls it.
///
/// # Errors
/// As [`pull`], and connection set-up failures.
pub async fn pull_reference(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    reference: &ImageRef,
    choice: &PlatformChoice,
    progress: Arc<dyn Progress>,
) -> Result<PulledImage, PullError> {
    let registry = Registry::connect(reference.registry(), options)
        .await
        .map_err(|source| PullError::Registry {
            reference: reference.to_string(),
            source,
        })?;
    pull(&Arc::new(registry), layout, reference, choice, progress).await
}

/// A base image for a build: the store's copy when it has this platform complete, else
/// pulled from the registry (that platform only).
///
/// # Errors
/// As [`pull_reference`], or an unreadable store.
pub async fn resolve(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    reference: &ImageRef,
    platform: &Platform,
    progress: Arc<dyn Progress>,
) -> Result<PlatformImage, PullError> {
    if let Some(image) = local_image(layout, reference, platform)? {
        return Ok(image);
    }
    let choice = PlatformChoice::One(platform.clone());
    let pulled = pull_reference(options, layout, reference, &choice, progress).await?;
    pulled
        .images
        .into_iter()
        .next()
        .ok_or_else(|| PullError::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: platform.clone(),
            available: String::new(),
        })
}

/// The raw image config of `reference` for `platform`, without its layers and without
/// writing to the store: the store's copy when `use_store` and it is complete there, else
/// the registry's manifests and config. For what a build must know before it plans (a base
/// image's `ONBUILD` triggers).
///
/// # Errors
/// As [`pull_reference`] before any layer is fetched.
pub async fn config_of(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    reference: &ImageRef,
    platform: &Platform,
    use_store: bool,
) -> Result<Vec<u8>, PullError> {
    let name = reference.to_string();
    if use_store {
        if let Some(image) = local_image(layout, reference, platform)? {
            return layout
                .read_blob(image.document.config().digest())
                .map_err(|source| PullError::Store {
                    reference: name.clone(),
                    source,
                });
        }
    }
    let registry_error = |source| PullError::Registry {
        reference: name.clone(),
        source,
    };
    let registry = Registry::connect(reference.registry(), options)
        .await
        .map_err(registry_error)?;
    let repository = reference.repository();
    let top = registry
        .get_manifest(repository, &reference.manifest_reference())
        .await
        .map_err(registry_error)?;
    let manifest = if top.is_index() {
        let index: ImageIndex = parse(&name, "index", &top.digest, &top.bytes)?;
        let choice = PlatformChoice::One(platform.clone());
        let entry = select(&name, &index, &choice)?
            .into_iter()
            .next()
            .ok_or_else(|| PullError::NoMatchingPlatform {
                reference: name.clone(),
                wanted: platform.clone(),
                available: String::new(),
            })?;
        registry
            .get_manifest_of(repository, &entry)
            .await
            .map_err(registry_error)?
    } else {
        top
    };
    let document: ImageManifest = parse(&name, "manifest", &manifest.digest, &manifest.bytes)?;
    registry
        .get_config(repository, document.config())
        .await
        .map_err(registry_error)
}

/// The image for `platform` under the reference's name in the store, if it is there with
/// all its blobs.
///
/// # Errors
/// An unreadable store or a malformed document in it.
pub fn local_image(
    layout: &ImageLayout,
    reference: &ImageRef,
    platform: &Platform,
) -> Result<Option<PlatformImage>, PullError> {
    let name = reference.to_string();
    let store_error = |source| PullError::Store {
        reference: name.clone(),
        source,
    };
    let Some(top) = layout
        .resolve_ref(&reference.store_name())
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    if !layout.has_blob(top.digest()) {
        return Ok(None);
    }
    let bytes = layout.read_blob(top.digest()).map_err(store_error)?;
    let manifest_descriptor = if super::manifests::is_index_media_type(top.media_type().as_ref()) {
        let index: ImageIndex = parse(&name, "index", top.digest(), &bytes)?;
        let Ok(entries) = select(&name, &index, &PlatformChoice::One(platform.clone())) else {
            return Ok(None);
        };
        let Some(entry) = entries
            .into_iter()
            .find(|entry| layout.has_blob(entry.digest()))
        else {
            return Ok(None);
        };
        entry
    } else {
        top.clone()
    };
    let bytes = layout
        .read_blob(manifest_descriptor.digest())
        .map_err(store_error)?;
    let document: ImageManifest = parse(&name, "manifest", manifest_descriptor.digest(), &bytes)?;
    let complete = std::iter::once(document.config())
        .chain(document.layers())
        .all(|blob| layout.has_blob(blob.digest()));
    if !complete {
        return Ok(None);
    }
    let entry_platform = manifest_descriptor.platform().as_ref().map(Platform::from);
    if entry_platform
        .as_ref()
        .is_some_and(|found| platform.rank(found).is_none())
    {
        return Ok(None);
    }
    Ok(Some(PlatformImage {
        platform: entry_platform,
        manifest: manifest_descriptor,
        document,
    }))
}

/// The index entries to pull, best match first.
fn select(
    name: &str,
    index: &ImageIndex,
    choice: &PlatformChoice,
) -> Result<Vec<Descriptor>, PullError> {
    match choice {
        PlatformChoice::All => Ok(index.manifests().clone()),
        PlatformChoice::One(wanted) | PlatformChoice::Prefer(wanted) => {
            let best = index
                .manifests()
                .iter()
                .filter_map(|entry| {
                    let offered = Platform::from(entry.platform().as_ref()?);
                    Some((wanted.rank(&offered)?, entry))
                })
                .min_by_key(|(rank, _)| *rank);
            match best {
                Some((_, entry)) => Ok(vec![entry.clone()]),
                None => Err(PullError::NoMatchingPlatform {
                    reference: name.to_owned(),
                    wanted: wanted.clone(),
                    available: index
                        .manifests()
                        .iter()
                        .filter_map(|entry| entry.platform().as_ref())
                        .map(|platform| Platform::from(platform).to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

/// The platform an image config declares.
fn config_platform(name: &str, digest: &Digest, bytes: &[u8]) -> Result<Platform, PullError> {
    let config: ImageConfiguration = parse(name, "config", digest, bytes)?;
    Ok(Platform::of_config(&config))
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|error| PullError::BadDocument {
        reference: name.to_owned(),
        what,
        digest: digest.clone(),
        reason: error.to_string(),
    })
}

/// Fetches blobs, `parallel_blobs` at a time; the first error stops the others.
async fn fetch_all(
    registry: &Arc<Registry>,
    layout: &ImageLayout,
    repository: &str,
    blobs: &[Descriptor],
    progress: Arc<dyn Progress>,
) -> Result<(), RegistryError> {
    let permits = Arc::new(Semaphore::new(registry.options().parallel_blobs.max(1)));
    let mut tasks = JoinSet::new();
    for blob in blobs {
        let (registry, layout, repository, blob, permits, progress) = (
            Arc::clone(registry),
            layout.clone(),
            repository.to_owned(),
            blob.clone(),
            Arc::clone(&permits),
            Arc::clone(&progress),
        );
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            progress.start(blob.digest(), blob.size(), "pulling");
            registry
                .fetch_blob(&repository, &blob, &layout, progress.as_ref())
                .await?;
            progress.finish(blob.digest(), "done");
            Ok::<(), RegistryError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.expect("blob tasks do not panic");
        if let Err(error) = result {
            // Cancel the rest and wait, so no task still writes after we return.
            tasks.shutdown().await;
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use oci_spec::image::MediaType;

    use super::*;

    /// A store holding an index for linux/amd64 and linux/arm64, of which only the arm64
    /// image has its blobs.
    fn store_with_partial_index() -> (tempfile::TempDir, ImageLayout, ImageRef, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let (config, config_size) = layout
            .write_blob(br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
            .unwrap();
        let (layer, layer_size) = layout.write_blob(b"layer").unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{layer_size}}}]}}"#
        );
        let (arm64, arm64_size) = layout.write_blob(manifest.as_bytes()).unwrap();
        let absent = crate::oci::sha256_digest(b"not in the store");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{absent}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{arm64}","size":{arm64_size},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let (index, index_size) = layout.write_blob(index.as_bytes()).unwrap();
        let reference = ImageRef::parse("127.0.0.1:5000/base:1").unwrap();
        layout
            .set_ref(
                &reference.store_name(),
                &Descriptor::new(MediaType::ImageIndex, index_size, index),
            )
            .unwrap();
        (dir, layout, reference, layer)
    }

    #[test]
    fn local_image_finds_a_complete_platform_of_a_stored_index() {
        let (_dir, layout, reference, _) = store_with_partial_index();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let image = local_image(&layout, &reference, &arm64).unwrap().unwrap();
        assert_eq!(image.platform.as_ref(), Some(&arm64));
        assert_eq!(image.document.layers().len(), 1);
        // amd64 is named by the index but not in the store: pull it.
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert!(local_image(&layout, &reference, &amd64).unwrap().is_none());
        let s390x = Platform::parse("linux/s390x").unwrap();
        assert!(local_image(&layout, &reference, &s390x).unwrap().is_none());
        let other = ImageRef::parse("127.0.0.1:5000/other:1").unwrap();
        assert!(local_image(&layout, &other, &arm64).unwrap().is_none());
    }

    #[test]
    fn local_image_with_a_missing_layer_is_not_complete() {
        let (_dir, layout, reference, layer) = store_with_partial_index();
        std::fs::remove_file(layout.blob_path(&layer).unwrap()).unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(local_image(&layout, &reference, &arm64).unwrap().is_none());
    }
}

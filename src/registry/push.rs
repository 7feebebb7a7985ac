//! Push: blobs first (`HEAD` to skip what the registry has, a cross-repository mount where
//! we know a repository of the same registry holds the blob, else an upload), then each
//! platform manifest by digest with its exact bytes and media type, then the index (or the
//! single manifest) under the tag, then the store's referrers of those manifests
//! (attestations; [`super::referrers`]). The pushed digests are the local ones: nothing is
//! re-serialised.

use std::collections::BTreeSet;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::manifests::RawManifest;
use super::progress::Progress;
use super::reference::ImageRef;
use super::transport::{BlobPush, Registry, RegistryError, RegistryOptions};
use crate::oci::{ImageLayout, LayoutError};

/// Errors of a push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The image is not in the store under that name.
    #[error("no image named {name} in the store {store}")]
    NotInStore {
        /// The name looked up.
        name: String,
        /// The store's directory.
        store: String,
    },
    /// The store lacks a manifest of the image (pulled for one platform only).
    #[error(
        "{name}: the store lacks the manifest {digest}{platform} (the image was pulled for other platforms only; pull it with --all-platforms to push it whole)"
    )]
    Incomplete {
        /// The image.
        name: String,
        /// The missing manifest.
        digest: Digest,
        /// ` for linux/arm64`, when known.
        platform: String,
    },
    /// Reading the store failed.
    #[error("pushing {name}: reading the store")]
    Store {
        /// The image.
        name: String,
        /// The cause.
        #[source]
        source: LayoutError,
    },
    /// A document in the store does not parse.
    #[error("pushing {name}: {digest} in the store is not a valid {what}: {reason}")]
    BadDocument {
        /// The image.
        name: String,
        /// `index` or `manifest`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The parse error.
        reason: String,
    },
    /// The registry failed.
    #[error("pushing {target}")]
    Registry {
        /// The destination.
        target: String,
        /// The cause.
        #[source]
        source: RegistryError,
    },
}

/// Push settings.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories of the target registry known to hold the image's blobs (where a base
    /// image was pulled from): blobs are mounted from the first one instead of uploaded.
    pub mount_from: Vec<String>,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The destination.
    pub target: ImageRef,
    /// The digest of the pushed index or manifest (the same as in the store).
    pub digest: Digest,
    /// Blobs uploaded, mounted, and already present.
    pub uploaded: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the registry had.
    pub existing: usize,
    /// Referrers (attestations) pushed with the image.
    pub referrers: usize,
}

/// Pushes the store's image `name` to `target`.
///
/// # Errors
/// Missing or incomplete image in the store, registry failures after retries.
pub async fn push(
    registry: &Arc<Registry>,
    layout: &ImageLayout,
    name: &str,
    target: &ImageRef,
    options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage, PushError> {
    let store_error = |source| PushError::Store {
        name: name.to_owned(),
        source,
    };
    let top = layout
        .resolve_ref(name)
        .map_err(store_error)?
        .ok_or_else(|| PushError::NotInStore {
            name: name.to_owned(),
            store: layout.root().display().to_string(),
        })?;
    push_top(registry, layout, name, &top, target, options, progress).await
}

/// Pushes the store's image `top` (an index or a manifest, named in no ref: `name` says
/// what it is in messages) to `target`.
///
/// # Errors
/// As [`push`].
pub async fn push_top(
    registry: &Arc<Registry>,
    layout: &ImageLayout,
    name: &str,
    top: &Descriptor,
    target: &ImageRef,
    options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage, PushError> {
    let store_error = |source| PushError::Store {
        name: name.to_owned(),
        source,
    };
    let top_raw = RawManifest::new(
        layout.read_blob(top.digest()).map_err(store_error)?,
        top.media_type().to_string(),
    );
    let mut manifests: Vec<RawManifest> = Vec::new();
    if top_raw.is_index() {
        let index: ImageIndex = parse(name, "index", &top_raw)?;
        for entry in index.manifests() {
            if !layout.has_blob(entry.digest()) {
                return Err(PushError::Incomplete {
                    name: name.to_owned(),
                    digest: entry.digest().clone(),
                    platform: entry
                        .platform()
                        .as_ref()
                        .map(|p| format!(" for {}", crate::platform::Platform::from(p)))
                        .unwrap_or_default(),
                });
            }
            manifests.push(RawManifest::new(
                layout.read_blob(entry.digest()).map_err(store_error)?,
                entry.media_type().to_string(),
            ));
        }
    } else {
        manifests.push(top_raw.clone());
    }
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    for manifest in &manifests {
        if manifest.is_index() {
            return Err(PushError::BadDocument {
                name: name.to_owned(),
                what: "manifest",
                digest: manifest.digest.clone(),
                reason: "an index inside an index is not supported yet".to_owned(),
            });
        }
        let document: ImageManifest = parse(name, "manifest", manifest)?;
        for blob in std::iter::once(document.config()).chain(document.layers()) {
            // A blob left in a repository of this registry (a cached step's layer that was
            // not downloaded) is mounted from there.
            if !layout.has_blob(blob.digest())
                && !super::source::known_on(layout, blob.digest(), registry.name())
            {
                return Err(store_error(LayoutError::MissingBlob {
                    digest: blob.digest().clone(),
                    root: layout.root().to_path_buf(),
                }));
            }
            if seen.insert(blob.digest().to_string()) {
                blobs.push(blob.clone());
            }
        }
    }

    let registry_error = |source| PushError::Registry {
        target: target.to_string(),
        source,
    };
    let repository = target.repository();
    let mount_from = options.mount_from.first().map(String::as_str);
    let outcomes = push_blobs(registry, layout, repository, &blobs, mount_from, progress)
        .await
        .map_err(registry_error)?;
    if top_raw.is_index() {
        for manifest in &manifests {
            if registry
                .has_manifest(repository, &manifest.digest)
                .await
                .map_err(registry_error)?
            {
                continue;
            }
            registry
                .put_manifest(repository, manifest.digest.as_ref(), manifest)
                .await
                .map_err(registry_error)?;
        }
    }
    let tag = target.manifest_reference();
    if let Some(pinned) = target.digest() {
        if pinned != &top_raw.digest {
            return Err(registry_error(RegistryError::Protocol {
                registry: target.registry().to_owned(),
                detail: format!(
                    "the target names digest {pinned} but the image is {}",
                    top_raw.digest
                ),
            }));
        }
    }
    registry
        .put_manifest(repository, &tag, &top_raw)
        .await
        .map_err(registry_error)?;
    let mut subjects = vec![top_raw.digest.clone()];
    if top_raw.is_index() {
        subjects.extend(manifests.iter().map(|manifest| manifest.digest.clone()));
    }
    let referrers = super::referrers::push_referrers(registry, layout, repository, &subjects)
        .await
        .map_err(registry_error)?;
    let count = |kind| outcomes.iter().filter(|outcome| **outcome == kind).count();
    Ok(PushedImage {
        target: target.clone(),
        digest: top_raw.digest,
        uploaded: count(BlobPush::Uploaded),
        mounted: count(BlobPush::Mounted),
        existing: count(BlobPush::Exists),
        referrers,
    })
}

/// Connects to the target's registry and pushes the store's image `name` to it.
///
/// # Errors
/// As [`push`], and connection set-up failures.
pub async fn push_reference(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    name: &str,
    target: &ImageRef,
    push_options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage, PushError> {
    let registry = connect_target(options, target).await?;
    push(&registry, layout, name, target, push_options, progress).await
}

/// Connects to the target's registry and pushes the store's image `top` to it, without
/// naming it in the store (`-o type=image,push=true,store=false`); `name` says what it is
/// in messages.
///
/// # Errors
/// As [`push_top`], and connection set-up failures.
pub async fn push_unnamed(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    name: &str,
    top: &Descriptor,
    target: &ImageRef,
    push_options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage, PushError> {
    let registry = connect_target(options, target).await?;
    push_top(&registry, layout, name, top, target, push_options, progress).await
}

async fn connect_target(
    options: Arc<RegistryOptions>,
    target: &ImageRef,
) -> Result<Arc<Registry>, PushError> {
    Registry::connect(target.registry(), options)
        .await
        .map(Arc::new)
        .map_err(|source| PushError::Registry {
            target: target.to_string(),
            source,
        })
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    what: &'static str,
    raw: &RawManifest,
) -> Result<T, PushError> {
    serde_json::from_slice(&raw.bytes).map_err(|error| PushError::BadDocument {
        name: name.to_owned(),
        what,
        digest: raw.digest.clone(),
        reason: error.to_string(),
    })
}

/// Pushes blobs, `parallel_blobs` at a time; the first error stops the others.
pub(crate) async fn push_blobs(
    registry: &Arc<Registry>,
    layout: &ImageLayout,
    repository: &str,
    blobs: &[Descriptor],
    mount_from: Option<&str>,
    progress: Arc<dyn Progress>,
) -> Result<Vec<BlobPush>, RegistryError> {
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
        // An explicit source first, else the repository of this registry the blob was
        // pulled from (see `source`): a mount instead of an upload.
        let mount_from = mount_from.map(str::to_owned).or_else(|| {
            super::source::mount_source(&layout, blob.digest(), registry.name(), &repository)
        });
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            progress.start(blob.digest(), blob.size(), "pushing");
            let outcome = registry
                .push_blob(
                    &repository,
                    &blob,
                    &layout,
                    mount_from.as_deref(),
                    progress.as_ref(),
                )
                .await?;
            progress.finish(
                blob.digest(),
                match outcome {
                    BlobPush::Exists => "exists",
                    BlobPush::Mounted => "mounted",
                    BlobPush::Uploaded => "done",
                },
            );
            Ok::<BlobPush, RegistryError>(outcome)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("blob tasks do not panic") {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                tasks.shutdown().await;
                return Err(error);
            }
        }
    }
    Ok(outcomes)
}

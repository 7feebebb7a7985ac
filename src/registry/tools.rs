//! Manifest tools: inspect what a reference names, and create one index out of several
//! images already in a registry (`imagetools create`): the way CI runners that each build
//! one platform natively combine their results. The images' referrers (attestations) are
//! copied with them.

use std::collections::BTreeSet;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;

use super::progress::NoProgress;
use super::reference::ImageRef;
use super::transport::{
    MANIFEST_MEDIA_TYPES, RawManifest, Registry, RegistryError, RegistryOptions,
};
use crate::oci::ImageLayout;
use crate::platform::Platform;

/// Errors of the manifest tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// The registry failed.
    #[error("{reference}")]
    Registry {
        /// The image being read or written.
        reference: String,
        /// The cause.
        #[source]
        source: RegistryError,
    },
    /// A document does not parse.
    #[error("{reference}: not a valid {what}: {reason}")]
    BadDocument {
        /// The image.
        reference: String,
        /// `index`, `manifest`, `config`.
        what: &'static str,
        /// The parse error.
        reason: String,
    },
    /// Nothing to put in the index.
    #[error("no source images")]
    NoSources,
}

/// Fetches what a reference names, exact bytes.
///
/// # Errors
/// Registry failures.
pub async fn inspect(
    options: Arc<RegistryOptions>,
    reference: &ImageRef,
) -> Result<RawManifest, ToolsError> {
    let error = |source| ToolsError::Registry {
        reference: reference.to_string(),
        source,
    };
    let registry = Registry::connect(reference.registry(), options)
        .await
        .map_err(error)?;
    registry
        .get_manifest(reference.repository(), &reference.manifest_reference())
        .await
        .map_err(error)
}

/// An index entry: descriptor, and the platform it is for.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The manifest's descriptor (with its platform).
    pub descriptor: Descriptor,
    /// The platform, when known.
    pub platform: Option<Platform>,
}

/// The entries of an index document (for display).
///
/// # Errors
/// The bytes are not an index.
pub fn index_entries(
    reference: &ImageRef,
    raw: &RawManifest,
) -> Result<Vec<IndexEntry>, ToolsError> {
    let index: ImageIndex =
        serde_json::from_slice(&raw.bytes).map_err(|error| ToolsError::BadDocument {
            reference: reference.to_string(),
            what: "index",
            reason: error.to_string(),
        })?;
    Ok(index
        .manifests()
        .iter()
        .map(|descriptor| IndexEntry {
            platform: descriptor.platform().as_ref().map(Platform::from),
            descriptor: descriptor.clone(),
        })
        .collect())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [Descriptor],
}

/// Creates one index out of `sources` (single- or multi-platform images, by tag or digest)
/// and pushes it to `target`. Manifests and blobs from another repository are copied
/// first: mounted within the same registry, else streamed through the store (`layout`).
/// Returns the new index.
///
/// # Errors
/// Registry failures, unreadable sources.
pub async fn create(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    sources: &[ImageRef],
    target: &ImageRef,
) -> Result<RawManifest, ToolsError> {
    if sources.is_empty() {
        return Err(ToolsError::NoSources);
    }
    let target_error = |source| ToolsError::Registry {
        reference: target.to_string(),
        source,
    };
    let destination = Arc::new(
        Registry::connect(target.registry(), Arc::clone(&options))
            .await
            .map_err(target_error)?,
    );
    let mut entries: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for source in sources {
        let source_error = |error| ToolsError::Registry {
            reference: source.to_string(),
            source: error,
        };
        let origin = if source.registry() == target.registry() {
            Arc::clone(&destination)
        } else {
            Arc::new(
                Registry::connect(source.registry(), Arc::clone(&options))
                    .await
                    .map_err(source_error)?,
            )
        };
        let top = origin
            .get_manifest(source.repository(), &source.manifest_reference())
            .await
            .map_err(source_error)?;
        let mut children: Vec<(Descriptor, RawManifest)> = Vec::new();
        if top.is_index() {
            for entry in index_entries(source, &top)? {
                let child = origin
                    .get_manifest_of(source.repository(), &entry.descriptor)
                    .await
                    .map_err(source_error)?;
                children.push((entry.descriptor, child));
            }
        } else {
            let document = parse_manifest(source, &top)?;
            let config = origin
                .get_config(source.repository(), document.config())
                .await
                .map_err(source_error)?;
            let config: ImageConfiguration =
                serde_json::from_slice(&config).map_err(|error| ToolsError::BadDocument {
                    reference: source.to_string(),
                    what: "config",
                    reason: error.to_string(),
                })?;
            let mut descriptor = top.descriptor();
            descriptor.set_platform(Some(Platform::of_config(&config).to_oci()));
            children.push((descriptor, top.clone()));
        }
        for (descriptor, child) in children {
            if !seen.insert(child.digest.to_string()) {
                continue;
            }
            let same_repository = source.registry() == target.registry()
                && source.repository() == target.repository();
            if !same_repository {
                copy_manifest(&origin, source, &destination, target, layout, &child).await?;
                super::referrers::copy_referrers(
                    &origin,
                    source.repository(),
                    &destination,
                    target.repository(),
                    layout,
                    &child.digest,
                )
                .await
                .map_err(target_error)?;
            }
            entries.push(descriptor);
        }
    }
    let all_docker = entries
        .iter()
        .all(|entry| entry.media_type().to_string() == MANIFEST_MEDIA_TYPES[3]);
    let media_type = if all_docker {
        MANIFEST_MEDIA_TYPES[2]
    } else {
        MANIFEST_MEDIA_TYPES[0]
    };
    let bytes = serde_json::to_vec(&IndexDocument {
        schema_version: 2,
        media_type,
        manifests: &entries,
    })
    .expect("an index serialises");
    let index = RawManifest::new(bytes, media_type.to_owned());
    destination
        .put_manifest(target.repository(), &target.manifest_reference(), &index)
        .await
        .map_err(target_error)?;
    Ok(index)
}

fn parse_manifest(reference: &ImageRef, raw: &RawManifest) -> Result<ImageManifest, ToolsError> {
    if raw.is_index() {
        return Err(ToolsError::BadDocument {
            reference: reference.to_string(),
            what: "manifest",
            reason: "an index inside an index is not supported yet".to_owned(),
        });
    }
    serde_json::from_slice(&raw.bytes).map_err(|error| ToolsError::BadDocument {
        reference: reference.to_string(),
        what: "manifest",
        reason: error.to_string(),
    })
}

/// Copies one manifest and its blobs into the target repository.
async fn copy_manifest(
    origin: &Arc<Registry>,
    source: &ImageRef,
    destination: &Arc<Registry>,
    target: &ImageRef,
    layout: &ImageLayout,
    manifest: &RawManifest,
) -> Result<(), ToolsError> {
    let document = parse_manifest(source, manifest)?;
    let target_error = |source| ToolsError::Registry {
        reference: target.to_string(),
        source,
    };
    let source_error = |error| ToolsError::Registry {
        reference: source.to_string(),
        source: error,
    };
    let same_registry = source.registry() == target.registry();
    for blob in std::iter::once(document.config()).chain(document.layers()) {
        let scope = super::transport::Scope::push(target.repository());
        if destination
            .has_blob(target.repository(), blob.digest(), &scope)
            .await
            .map_err(target_error)?
        {
            continue;
        }
        if same_registry
            && destination
                .mount_blob(target.repository(), blob.digest(), source.repository())
                .await
                .map_err(target_error)?
        {
            continue;
        }
        if !layout.has_blob(blob.digest()) {
            origin
                .fetch_blob(source.repository(), blob, layout, &NoProgress)
                .await
                .map_err(source_error)?;
        }
        destination
            .push_blob(target.repository(), blob, layout, None, &NoProgress)
            .await
            .map_err(target_error)?;
    }
    destination
        .put_manifest(target.repository(), manifest.digest.as_ref(), manifest)
        .await
        .map_err(target_error)
}

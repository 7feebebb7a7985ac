//! Manifest tools: inspect what a reference names, and create one index out of several
//! images already in a registry (`imagetools create`): the way CI runners that each build
//! one platform natively combine their results. The images' referrers (attestations) are
//! copied with them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;

use super::manifests::{MANIFEST_MEDIA_TYPES, RawManifest};
use super::progress::NoProgress;
use super::reference::ImageRef;
use super::transport::{Registry, RegistryError, RegistryOptions};
use crate::oci::ImageLayout;
use crate::oci::annotation::{Annotation, AnnotationKind};
use crate::oci::referrers::FoundStatement;
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
    /// `--platform` left no manifest.
    #[error("none of the manifests match the platforms given (--platform)")]
    NoPlatformMatches,
    /// Annotations asked for on a Docker manifest list, which has none.
    #[error(
        "annotations need an OCI image index, and every source is a Docker manifest: a Docker manifest list cannot carry them"
    )]
    AnnotationsOnDockerList,
    /// An annotation type `imagetools create` does not write.
    #[error(
        "{} annotations cannot be set by imagetools create (index: and manifest-descriptor: can, as buildx)",
        .0.map_or("untyped (no prefix)", |kind| kind.name())
    )]
    AnnotationKind(Option<AnnotationKind>),
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
    /// Its platform's fields oci-spec misreads, as the document has them ([`platform_extras`]).
    pub platform_extras: PlatformExtras,
}

/// The entries of an index document (for display).
///
/// # Errors
/// The bytes are not an index.
pub fn index_entries(
    reference: &ImageRef,
    raw: &RawManifest,
) -> Result<Vec<IndexEntry>, ToolsError> {
    let bad = |error: serde_json::Error| ToolsError::BadDocument {
        reference: reference.to_string(),
        what: "index",
        reason: error.to_string(),
    };
    let document: serde_json::Value = serde_json::from_slice(&raw.bytes).map_err(bad)?;
    let extras: Vec<PlatformExtras> = document
        .get("manifests")
        .and_then(serde_json::Value::as_array)
        .map(|manifests| manifests.iter().map(platform_extras).collect())
        .unwrap_or_default();
    let index: ImageIndex = serde_json::from_value(document).map_err(bad)?;
    Ok(index
        .manifests()
        .iter()
        // The same array, so one extras entry per descriptor.
        .zip(extras)
        .map(|(descriptor, platform_extras)| IndexEntry {
            platform: descriptor.platform().as_ref().map(Platform::from),
            descriptor: descriptor.clone(),
            platform_extras,
        })
        .collect())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// One source of `imagetools create`: an image in a registry, and what the user said of its
/// descriptor (`-f FILE` with a JSON descriptor), laid over what the registry serves.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where the manifest or index is (by tag or digest).
    pub reference: ImageRef,
    /// A descriptor given by the user: media type, annotations and platform replace the
    /// registry's; a size must agree.
    pub descriptor: Option<Descriptor>,
    /// The given descriptor's platform fields oci-spec misreads ([`platform_extras`]).
    pub platform_extras: PlatformExtras,
}

/// The fields of a descriptor's `platform` that oci-spec 0.10 reads and writes under other
/// keys (`os.version` and `os.features` as `os_version`/`os_features`, see
/// `platform::oci`), kept as the JSON gave them so that an index made of the descriptor
/// carries them.
pub type PlatformExtras = serde_json::Map<String, serde_json::Value>;

/// [`PlatformExtras`] of a descriptor's JSON (empty without a platform or those fields).
pub fn platform_extras(descriptor: &serde_json::Value) -> PlatformExtras {
    descriptor
        .get("platform")
        .and_then(serde_json::Value::as_object)
        .map(|platform| {
            platform
                .iter()
                .filter(|(key, _)| matches!(key.as_str(), "os.version" | "os.features"))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// `document` (an index as serialised from `manifests`) with each manifest's
/// [`PlatformExtras`] added at the end of its `platform`. Only the descriptors that have
/// some are rewritten, as substrings: the rest of the bytes stay what the serialiser wrote.
fn with_platform_extras(
    mut document: String,
    manifests: &[Descriptor],
    extras: &BTreeMap<String, PlatformExtras>,
) -> String {
    for descriptor in manifests {
        let (Some(more), Some(platform)) = (
            extras.get(&descriptor.digest().to_string()),
            descriptor.platform().as_ref(),
        ) else {
            continue;
        };
        if more.is_empty() {
            continue;
        }
        let written = serde_json::to_string(descriptor).expect("a descriptor serialises");
        let platform = serde_json::to_string(platform).expect("a platform serialises");
        let Some(open) = platform.strip_suffix('}') else {
            continue;
        };
        let mut patched_platform = open.to_owned();
        for (key, value) in more {
            if patched_platform.len() > 1 {
                patched_platform.push(',');
            }
            patched_platform.push_str(&serde_json::to_string(key).expect("a key serialises"));
            patched_platform.push(':');
            patched_platform.push_str(&serde_json::to_string(value).expect("a value serialises"));
        }
        patched_platform.push('}');
        let patched = written.replacen(
            &format!("\"platform\":{platform}"),
            &format!("\"platform\":{patched_platform}"),
            1,
        );
        document = document.replacen(&written, &patched, 1);
    }
    document
}

/// What `imagetools create` is asked to make.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The sources, in order (`--append` puts the target's current index first).
    pub sources: Vec<Source>,
    /// Annotations of the index (`index:`) and of its manifest descriptors
    /// (`manifest-descriptor:`, optionally for some platforms).
    pub annotations: Vec<Annotation>,
    /// Keep only manifests of these platforms (empty: all).
    pub platforms: Vec<Platform>,
    /// With one single-platform source: make an index of it (`true`, the default) or push
    /// that manifest as it is.
    pub prefer_index: bool,
}

/// The document `imagetools create` pushes, and the manifests to copy before it.
#[derive(Debug, Clone)]
pub struct Combined {
    /// The index (or, for a carbon copy, the source's own manifest or index), exact bytes.
    pub document: RawManifest,
    /// The manifests it names, each with the source it comes from.
    children: Vec<(RawManifest, usize)>,
    sources: Vec<Source>,
}

/// A connection per registry.
struct Connections {
    options: Arc<RegistryOptions>,
    open: BTreeMap<String, Arc<Registry>>,
}

impl Connections {
    async fn get(&mut self, reference: &ImageRef) -> Result<Arc<Registry>, ToolsError> {
        if let Some(registry) = self.open.get(reference.registry()) {
            return Ok(Arc::clone(registry));
        }
        let registry = Arc::new(
            Registry::connect(reference.registry(), Arc::clone(&self.options))
                .await
                .map_err(|source| ToolsError::Registry {
                    reference: reference.to_string(),
                    source,
                })?,
        );
        self.open
            .insert(reference.registry().to_owned(), Arc::clone(&registry));
        Ok(registry)
    }
}

fn bad(reference: &ImageRef, what: &'static str, reason: impl Into<String>) -> ToolsError {
    ToolsError::BadDocument {
        reference: reference.to_string(),
        what,
        reason: reason.into(),
    }
}

/// Reads every source and makes the document `imagetools create` pushes, as buildx does:
/// one index over the sources' manifests (duplicates once; annotations and platforms
/// filtered in), except that one source alone with no annotation and no platform filter
/// is copied as it is when it is an index (or a single manifest with
/// `prefer_index == false`). Nothing is written.
///
/// # Errors
/// Registry failures, unreadable sources, a descriptor that disagrees with the registry,
/// no manifest left after the platform filter, annotations on a Docker manifest list.
pub async fn combine(
    options: Arc<RegistryOptions>,
    request: CreateRequest,
) -> Result<Combined, ToolsError> {
    if request.sources.is_empty() {
        return Err(ToolsError::NoSources);
    }
    let mut connections = Connections {
        options,
        open: BTreeMap::new(),
    };
    // Each source's top document and descriptor (user's fields laid over the registry's).
    let mut tops: Vec<(RawManifest, Descriptor)> = Vec::new();
    for source in &request.sources {
        let reference = &source.reference;
        let origin = connections.get(reference).await?;
        let wanted = match &source.descriptor {
            Some(descriptor) => descriptor.digest().to_string(),
            None => reference.manifest_reference(),
        };
        let top = origin
            .get_manifest(reference.repository(), &wanted)
            .await
            .map_err(|error| ToolsError::Registry {
                reference: reference.to_string(),
                source: error,
            })?;
        let mut descriptor = top.descriptor();
        if let Some(given) = &source.descriptor {
            if given.size() != 0 && given.size() != descriptor.size() {
                return Err(bad(
                    reference,
                    "descriptor",
                    format!(
                        "size {} given for {}, the registry has {}",
                        given.size(),
                        given.digest(),
                        descriptor.size()
                    ),
                ));
            }
            if given.annotations().as_ref().is_some_and(|a| !a.is_empty()) {
                descriptor.set_annotations(given.annotations().clone());
            }
            if given.platform().is_some() {
                descriptor.set_platform(given.platform().clone());
            }
        }
        if !top.is_index() && descriptor.platform().is_none() {
            let platform = manifest_platform(&origin, reference, &top).await?;
            descriptor.set_platform(Some(platform.to_oci()));
        }
        tops.push((top, descriptor));
    }

    let single = tops.len() == 1 && request.annotations.is_empty() && request.platforms.is_empty();
    if single {
        let (top, _) = &tops[0];
        if top.is_index() {
            let mut children = Vec::new();
            let origin = connections.get(&request.sources[0].reference).await?;
            for entry in index_entries(&request.sources[0].reference, top)? {
                children.push((
                    fetch_child(&origin, &request.sources[0].reference, &entry.descriptor).await?,
                    0,
                ));
            }
            return Ok(Combined {
                document: top.clone(),
                children,
                sources: request.sources,
            });
        }
        if !request.prefer_index {
            return Ok(Combined {
                document: top.clone(),
                children: vec![(top.clone(), 0)],
                sources: request.sources,
            });
        }
    }
    if !request.platforms.is_empty() && tops.len() == 1 && !tops[0].0.is_index() {
        // A single manifest is kept or refused as a whole.
        let platform = tops[0].1.platform().as_ref().map(Platform::from);
        if !platform.is_some_and(|p| request.platforms.iter().any(|w| w.same_target(&p))) {
            return Err(bad(
                &request.sources[0].reference,
                "manifest",
                "its platform matches none of --platform",
            ));
        }
    }

    // Every manifest descriptor, once, with the source that holds it, and the platform
    // fields oci-spec does not carry (by digest; a later platform replaces them too).
    let mut entries: Vec<(Descriptor, usize)> = Vec::new();
    let mut extras: BTreeMap<String, PlatformExtras> = BTreeMap::new();
    for (index, (top, descriptor)) in tops.iter().enumerate() {
        let listed: Vec<(Descriptor, PlatformExtras)> = if top.is_index() {
            index_entries(&request.sources[index].reference, top)?
                .into_iter()
                .map(|entry| (entry.descriptor, entry.platform_extras))
                .collect()
        } else {
            let given = &request.sources[index];
            let more = if given
                .descriptor
                .as_ref()
                .is_some_and(|given| given.platform().is_some())
            {
                given.platform_extras.clone()
            } else {
                PlatformExtras::new()
            };
            vec![(descriptor.clone(), more)]
        };
        for (descriptor, more) in listed {
            if descriptor.platform().is_some() {
                extras.insert(descriptor.digest().to_string(), more);
            }
            match entries
                .iter_mut()
                .find(|(known, _)| known.digest() == descriptor.digest())
            {
                Some((known, _)) => {
                    if descriptor.platform().is_some() {
                        known.set_platform(descriptor.platform().clone());
                    }
                    let mut merged = known.annotations().clone().unwrap_or_default();
                    merged.extend(descriptor.annotations().clone().unwrap_or_default());
                    known.set_annotations(Some(merged));
                }
                None => entries.push((descriptor, index)),
            }
        }
    }
    if !request.platforms.is_empty() {
        let matches = |descriptor: &Descriptor| {
            descriptor.platform().as_ref().is_none_or(|platform| {
                request
                    .platforms
                    .iter()
                    .any(|wanted| wanted.same_target(&Platform::from(platform)))
            })
        };
        let kept_images: BTreeSet<String> = entries
            .iter()
            .filter(|(descriptor, _)| {
                descriptor.platform().is_some()
                    && !is_attestation(descriptor)
                    && matches(descriptor)
            })
            .map(|(descriptor, _)| descriptor.digest().to_string())
            .collect();
        entries.retain(|(descriptor, _)| {
            if is_attestation(descriptor) {
                // Kept with the image it describes.
                crate::oci::referrers::in_index_subject(descriptor)
                    .is_some_and(|subject| kept_images.contains(subject))
            } else {
                matches(descriptor)
            }
        });
        if kept_images.is_empty() {
            return Err(ToolsError::NoPlatformMatches);
        }
    }

    let all_docker = entries.iter().all(|(entry, _)| {
        entry
            .media_type()
            .to_string()
            .starts_with("application/vnd.docker.")
    });
    let media_type = if all_docker {
        MANIFEST_MEDIA_TYPES[2]
    } else {
        MANIFEST_MEDIA_TYPES[0]
    };
    let mut index_annotations = BTreeMap::new();
    if !request.annotations.is_empty() && all_docker {
        return Err(ToolsError::AnnotationsOnDockerList);
    }
    for annotation in &request.annotations {
        match annotation.kind {
            Some(AnnotationKind::Index) => {
                index_annotations.insert(annotation.key.clone(), annotation.value.clone());
            }
            Some(AnnotationKind::ManifestDescriptor) => {
                for (descriptor, _) in &mut entries {
                    let platform = descriptor.platform().as_ref().map(Platform::from);
                    if annotation.applies_to(platform.as_ref()) {
                        let mut merged = descriptor.annotations().clone().unwrap_or_default();
                        merged.insert(annotation.key.clone(), annotation.value.clone());
                        descriptor.set_annotations(Some(merged));
                    }
                }
            }
            _ => return Err(ToolsError::AnnotationKind(annotation.kind)),
        }
    }
    let manifests: Vec<Descriptor> = entries.iter().map(|(d, _)| d.clone()).collect();
    let document = serde_json::to_string(&IndexDocument {
        schema_version: 2,
        media_type,
        manifests: &manifests,
        annotations: index_annotations,
    })
    .expect("an index serialises");
    let bytes = with_platform_extras(document, &manifests, &extras).into_bytes();
    let mut children = Vec::new();
    for (descriptor, index) in &entries {
        let reference = &request.sources[*index].reference;
        let origin = connections.get(reference).await?;
        children.push((fetch_child(&origin, reference, descriptor).await?, *index));
    }
    Ok(Combined {
        document: RawManifest::new(bytes, media_type.to_owned()),
        children,
        sources: request.sources,
    })
}

fn is_attestation(descriptor: &Descriptor) -> bool {
    crate::oci::referrers::is_in_index_attestation(descriptor)
}

async fn fetch_child(
    origin: &Registry,
    reference: &ImageRef,
    descriptor: &Descriptor,
) -> Result<RawManifest, ToolsError> {
    origin
        .get_manifest_of(reference.repository(), descriptor)
        .await
        .map_err(|error| ToolsError::Registry {
            reference: reference.to_string(),
            source: error,
        })
}

/// The platform of a single manifest, from its config.
async fn manifest_platform(
    origin: &Registry,
    reference: &ImageRef,
    top: &RawManifest,
) -> Result<Platform, ToolsError> {
    let config = fetch_config(origin, reference, top).await?;
    Ok(Platform::of_config(&config))
}

/// Pushes what [`combine`] made to `target`: the manifests it names (and their blobs) are
/// copied into the target repository first when they come from another one (mounted within
/// the same registry, else streamed through the store, `layout`), then the document is
/// put under the target's tag.
///
/// # Errors
/// Registry failures.
pub async fn publish(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    combined: &Combined,
    target: &ImageRef,
) -> Result<(), ToolsError> {
    let mut connections = Connections {
        options,
        open: BTreeMap::new(),
    };
    let destination = connections.get(target).await?;
    for (child, index) in &combined.children {
        let source = &combined.sources[*index].reference;
        let same_repository =
            source.registry() == target.registry() && source.repository() == target.repository();
        if !same_repository {
            let origin = connections.get(source).await?;
            copy_manifest(&origin, source, &destination, target, layout, child).await?;
            super::referrers::copy_referrers(
                &origin,
                source.repository(),
                &destination,
                target.repository(),
                layout,
                &child.digest,
            )
            .await
            .map_err(|error| ToolsError::Registry {
                reference: target.to_string(),
                source: error,
            })?;
        }
    }
    destination
        .put_manifest(
            target.repository(),
            &target.manifest_reference(),
            &combined.document,
        )
        .await
        .map_err(|source| ToolsError::Registry {
            reference: target.to_string(),
            source,
        })
}

/// Creates one index out of `sources` (single- or multi-platform images, by tag or digest)
/// and pushes it to `target` ([`combine`] then [`publish`], with buildx's defaults).
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
    let request = CreateRequest {
        sources: sources
            .iter()
            .map(|reference| Source {
                reference: reference.clone(),
                descriptor: None,
                platform_extras: PlatformExtras::new(),
            })
            .collect(),
        annotations: Vec::new(),
        platforms: Vec::new(),
        prefer_index: true,
    };
    let combined = combine(Arc::clone(&options), request).await?;
    publish(options, layout, &combined, target).await?;
    Ok(combined.document)
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

/// The image configs behind what a reference names: one for a manifest, one per platform
/// for an index (attestation manifests left out), for `imagetools inspect --format`.
///
/// # Errors
/// Registry failures, documents that do not parse.
pub async fn image_configs(
    options: Arc<RegistryOptions>,
    reference: &ImageRef,
    top: &RawManifest,
) -> Result<Vec<(Platform, ImageConfiguration)>, ToolsError> {
    let mut connections = Connections {
        options,
        open: BTreeMap::new(),
    };
    let origin = connections.get(reference).await?;
    let manifests = if top.is_index() {
        let mut manifests = Vec::new();
        for entry in index_entries(reference, top)? {
            if is_attestation(&entry.descriptor)
                || entry.descriptor.media_type().to_string().contains("index")
            {
                continue;
            }
            manifests.push(fetch_child(&origin, reference, &entry.descriptor).await?);
        }
        manifests
    } else {
        vec![top.clone()]
    };
    let mut configs = Vec::new();
    for manifest in manifests {
        let config = fetch_config(&origin, reference, &manifest).await?;
        configs.push((Platform::of_config(&config), config));
    }
    Ok(configs)
}

/// The image config of the single-platform `manifest`.
async fn fetch_config(
    origin: &Registry,
    reference: &ImageRef,
    manifest: &RawManifest,
) -> Result<ImageConfiguration, ToolsError> {
    let document = parse_manifest(reference, manifest)?;
    let bytes = origin
        .get_config(reference.repository(), document.config())
        .await
        .map_err(|error| ToolsError::Registry {
            reference: reference.to_string(),
            source: error,
        })?;
    serde_json::from_slice(&bytes).map_err(|error| bad(reference, "config", error.to_string()))
}

/// The in-toto statements about each platform image of what `top` names, for
/// `imagetools inspect --format '{{json .SBOM}}'` / `'{{json .Provenance}}'`: those attached
/// as referrers of the platform's manifest (the referrers API, else the `sha256-<hex>` tag
/// fallback), then those BuildKit keeps inside the index as attestation manifests naming
/// their image (`vnd.docker.reference.digest`). Platforms in the index's order; a layer that
/// is not an in-toto statement is skipped.
///
/// # Errors
/// Registry failures, documents that do not parse.
pub async fn attestations(
    options: Arc<RegistryOptions>,
    reference: &ImageRef,
    top: &RawManifest,
) -> Result<Vec<(Platform, Vec<FoundStatement>)>, ToolsError> {
    let mut connections = Connections {
        options,
        open: BTreeMap::new(),
    };
    let origin = connections.get(reference).await?;
    let registry_error = |source| ToolsError::Registry {
        reference: reference.to_string(),
        source,
    };
    // (platform, manifest digest) of each image; the in-index attestation manifests.
    let mut images: Vec<(Platform, oci_spec::image::Digest)> = Vec::new();
    let mut in_index: Vec<Descriptor> = Vec::new();
    if top.is_index() {
        for entry in index_entries(reference, top)? {
            if is_attestation(&entry.descriptor) {
                in_index.push(entry.descriptor);
            } else if let Some(platform) = entry.platform {
                images.push((platform, entry.descriptor.digest().clone()));
            }
        }
    } else {
        let config = fetch_config(&origin, reference, top).await?;
        images.push((Platform::of_config(&config), top.digest.clone()));
    }
    let mut found = Vec::new();
    for (platform, subject) in images {
        let mut manifests: Vec<Descriptor> =
            super::referrers::list(&origin, reference.repository(), &subject)
                .await
                .map_err(registry_error)?
                .descriptors;
        manifests.extend(
            in_index
                .iter()
                .filter(|descriptor| {
                    crate::oci::referrers::in_index_subject(descriptor)
                        .is_some_and(|digest| digest == subject.as_ref())
                })
                .cloned(),
        );
        crate::oci::referrers::distinct_carriers(&mut manifests);
        let mut statements = Vec::new();
        for descriptor in manifests {
            if descriptor.media_type().to_string().contains("index") {
                continue;
            }
            let raw = fetch_child(&origin, reference, &descriptor).await?;
            let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&raw.bytes) else {
                continue;
            };
            for layer in FoundStatement::layers(&manifest) {
                let bytes = origin
                    .get_config(reference.repository(), layer)
                    .await
                    .map_err(registry_error)?;
                statements.extend(FoundStatement::parse(descriptor.digest(), &bytes));
            }
        }
        found.push((platform, statements));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(json: &str) -> Descriptor {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn os_version_and_features_are_added_to_their_descriptors_platform_only() {
        let windows = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":10,"platform":{"architecture":"amd64","os":"windows","os.version":"10.0.20348.1","os.features":["win32k"]}}"#;
        let linux = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":20,"platform":{"architecture":"arm64","os":"linux"}}"#;
        let raw: Vec<serde_json::Value> = [windows, linux]
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect();
        let manifests = vec![descriptor(windows), descriptor(linux)];
        let document = serde_json::to_string(&IndexDocument {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPES[0],
            manifests: &manifests,
            annotations: BTreeMap::new(),
        })
        .unwrap();
        // Nothing to add: the serialiser's bytes.
        assert_eq!(
            with_platform_extras(document.clone(), &manifests, &BTreeMap::new()),
            document
        );
        let extras: BTreeMap<String, PlatformExtras> = manifests
            .iter()
            .zip(&raw)
            .map(|(descriptor, raw)| (descriptor.digest().to_string(), platform_extras(raw)))
            .collect();
        assert!(extras.values().nth(1).unwrap().is_empty());
        let patched = with_platform_extras(document.clone(), &manifests, &extras);
        let value: serde_json::Value = serde_json::from_str(&patched).unwrap();
        let platforms: Vec<&serde_json::Value> = value["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|manifest| &manifest["platform"])
            .collect();
        assert_eq!(platforms[0], &raw[0]["platform"]);
        assert_eq!(platforms[1], &raw[1]["platform"]);
        // Only the Windows descriptor's platform changed: the linux one is byte for byte.
        assert!(patched.contains(&serde_json::to_string(&manifests[1]).unwrap()));
        assert_eq!(
            patched.len(),
            document.len() + r#","os.version":"10.0.20348.1","os.features":["win32k"]"#.len()
        );
    }
}

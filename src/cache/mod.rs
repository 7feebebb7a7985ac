//! The build cache: the key of a step ([`Key`]), the step cache of one build ([`StepCache`]:
//! lookups and records in the store, records imported from `--cache-from`), and the cache
//! outside the store: `--cache-to` writes the cache records of a build (key → resulting
//! state) with their layer blobs to a registry or an OCI layout directory; `--cache-from`
//! reads them back so that matching steps are `CACHED` on another machine.
//!
//! Format (documented in README.md), the same in a registry and in a directory:
//!
//! ```text
//! index (application/vnd.oci.image.index.v1+json)     the cache ref (tag, or `latest` in a dir)
//!   manifests[i]: one image manifest per platform, with `platform` and the annotation
//!                 dev.xbuild.cache.platform = "linux/arm64"
//!     config: application/vnd.xbuild.cache.config.v1+json
//!             {"version": 1, "platform": "linux/arm64",
//!              "records": [{"key": "<hex>", "platform": "linux/arm64",
//!                           "layers": [<layer descriptors>], "state": {...}}]}
//!     layers: every layer blob the records refer to (ordinary gzip/zstd layers)
//! ```
//!
//! A record's `key` is the build's own cache key (it covers the platform, the instruction,
//! the parent's key, the context files read, ...); `state` is what the step produced: layer
//! descriptors with diff_ids, the image config (history included) and Docker-only config
//! fields. An importer reads only the manifests of the platforms its build runs on, and of
//! those only the config: layer blobs are fetched when something needs their bytes.
//!
//! Exporting to a ref that already holds a cache replaces the manifests of the platforms
//! exported and keeps the others, so runners of different architectures can share one ref.
//!
//! With `oci-mediatypes=false` the index is a Docker manifest list
//! (`application/vnd.docker.distribution.manifest.list.v2+json`) and its manifests Docker
//! schema-2 manifests with Docker layer types (the config keeps xbuild's type).
//!
//! With `image-manifest=true` the ref names one such manifest instead of the index, without
//! `platform`, whose config (no `"platform"`) holds every platform's records; the other
//! platforms' records of the cache already there are kept in it. Imports read both shapes.
//! A local directory (`index.json` naming the cache `latest`, or `tag=`) keeps no blob that
//! none of its entries reaches: each export removes the rest.
//!
//! `--cache-to type=inline` puts the records of an image's own steps into its image config
//! instead ([`inline`] owns that encoding; the executor's image assembly writes it); an
//! import of a ref naming an image (index of images, or one image manifest) reads them from
//! the configs of the wanted platforms.

#![allow(
    clippy::result_large_err,
    reason = "errors are the cold path of registry I/O; they carry the registry's error"
)]

pub mod inline;
pub mod key;
pub mod spec;
pub mod steps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::oci::image as oci_image;
use crate::oci::{ImageLayout, LayoutError};
use crate::platform::Platform;
use crate::registry::transport::BlobPush;
use crate::registry::{NoProgress, RawManifest, Registry, RegistryError, RegistryOptions};
use crate::store::StoreError;

pub use key::Key;
pub use spec::{
    CacheExport, CacheLocation, CacheMode, CacheOptions, CacheSpecError, LocalCache, RegistryCache,
};
pub use steps::StepCache;

/// Media type of the config blob of a cache manifest (the records).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.xbuild.cache.config.v1+json";
/// Annotation of an index entry: the platform whose records the manifest holds.
pub const PLATFORM_ANNOTATION: &str = "dev.xbuild.cache.platform";
/// The name of the cache in a `type=local` directory's `index.json`.
pub const LOCAL_REF_NAME: &str = "latest";
const FORMAT_VERSION: u32 = 1;

/// One exported step result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The build's cache key of the step.
    pub key: String,
    /// The platform of the step (`linux/arm64` in the document).
    pub platform: Platform,
    /// The layer blobs `state` refers to, in order.
    pub layers: Vec<Descriptor>,
    /// The resulting state, as the builder keeps it in its own cache records.
    pub state: serde_json::Value,
}

/// The config blob of a cache manifest.
#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    /// The platform of an index entry's records; absent in the one manifest of an
    /// `image-manifest=true` cache (its records carry their platforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    records: Vec<Record>,
}

/// Where the layer blobs of imported records can be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// The repository of a registry cache ref.
    Registry(RegistryCache),
    /// A `type=local` cache directory.
    Local(PathBuf),
}

/// Records read from one `--cache-from`.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The records of the platforms asked for.
    pub records: Vec<Record>,
    /// Where their layers are.
    pub source: BlobSource,
}

/// Errors of cache export and import.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The registry failed.
    #[error("cache {location}")]
    Registry {
        /// The cache ref.
        location: String,
        /// The cause (boxed: a registry error is large).
        #[source]
        source: Box<RegistryError>,
    },
    /// A layout (the store or a cache directory) failed.
    #[error("cache {location}")]
    Layout {
        /// The cache location.
        location: String,
        /// The cause.
        #[source]
        source: LayoutError,
    },
    /// A document of the cache is not what this format says.
    #[error("cache {location}: {reason}")]
    BadDocument {
        /// The cache location.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The store's cache records could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Layers of imported cache hits could not be fetched.
    #[error("fetching layers of cached steps")]
    Fetch(#[source] Box<Self>),
    /// A step's state could not be encoded as a cache record.
    #[error("encoding the cache record {key}")]
    Encode {
        /// The step's key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn bad(location: &impl ToString, reason: impl ToString) -> CacheError {
    CacheError::BadDocument {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}

/// The distinct layer blobs `records` refer to, in order.
fn record_layers(records: &[Record]) -> Vec<Descriptor> {
    let mut layers = Vec::new();
    let mut seen = BTreeSet::new();
    for record in records {
        for layer in &record.layers {
            if seen.insert(layer.digest().to_string()) {
                layers.push(layer.clone());
            }
        }
    }
    layers
}

/// A cache manifest (config: `records`; layers: every blob they refer to), written into
/// `store`; `platform` is that of an index entry, `None` for an `image-manifest=true` cache
/// holding every platform's records. Returns its descriptor and the blobs it needs (config
/// and layers).
fn cache_manifest(
    store: &ImageLayout,
    location: &str,
    platform: Option<&Platform>,
    records: Vec<Record>,
    docker_types: bool,
) -> Result<(Descriptor, Vec<Descriptor>), CacheError> {
    let layout_error = |source| CacheError::Layout {
        location: location.to_owned(),
        source,
    };
    let layers = record_layers(&records);
    let config = CacheConfig {
        version: FORMAT_VERSION,
        platform: platform.cloned(),
        records,
    };
    let config_descriptor = oci_image::write_json_blob(
        store,
        MediaType::Other(CONFIG_MEDIA_TYPE.to_owned()),
        &config,
    )
    .map_err(layout_error)?;
    let mut layers = layers;
    if docker_types {
        for layer in &mut layers {
            let docker = oci_image::docker_layer_media_type(layer.media_type().as_ref()).to_owned();
            layer.set_media_type(MediaType::Other(docker));
        }
    }
    let mut manifest = oci_image::build_manifest(config_descriptor.clone(), layers.clone(), None);
    if docker_types {
        manifest.set_media_type(Some(MediaType::Other(
            oci_image::DOCKER_MANIFEST.to_owned(),
        )));
    }
    let bytes = oci_image::canonical_json(&manifest);
    let (digest, size) = store.write_blob(&bytes).map_err(layout_error)?;
    let mut descriptor = oci_image::manifest_descriptor(digest, size, platform);
    descriptor.set_media_type(manifest_type(docker_types));
    if let Some(platform) = platform {
        descriptor.set_annotations(Some(HashMap::from([(
            PLATFORM_ANNOTATION.to_owned(),
            platform.to_string(),
        )])));
    }
    let mut blobs = vec![config_descriptor];
    blobs.extend(layers);
    Ok((descriptor, blobs))
}

/// The media type of a cache manifest: OCI's, or Docker's schema 2 (`oci-mediatypes=false`).
fn manifest_type(docker_types: bool) -> MediaType {
    if docker_types {
        MediaType::Other(oci_image::DOCKER_MANIFEST.to_owned())
    } else {
        MediaType::ImageManifest
    }
}

/// The cache index over `entries`: an OCI index, or a Docker manifest list
/// (`oci-mediatypes=false`).
fn cache_index(entries: Vec<Descriptor>, docker_types: bool) -> (ImageIndex, MediaType) {
    let mut index = oci_image::build_index(entries);
    if !docker_types {
        return (index, MediaType::ImageIndex);
    }
    let list = MediaType::Other(oci_image::DOCKER_MANIFEST_LIST.to_owned());
    index.set_media_type(Some(list.clone()));
    (index, list)
}

/// The platform annotation of an index entry, as written.
fn entry_annotation(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(PLATFORM_ANNOTATION))
        .map(String::as_str)
}

/// The platform whose records an index entry holds (its annotation, parsed: `None` when
/// there is none or it is not a platform xbuild builds for).
fn entry_platform(entry: &Descriptor) -> Option<Platform> {
    entry_annotation(entry).and_then(|text| Platform::parse(text).ok())
}

/// Whether an entry of an existing cache index stays when `ours` are exported: another
/// platform's, or one whose annotation this xbuild cannot read.
fn keeps(entry: &Descriptor, ours: &BTreeSet<Platform>) -> bool {
    entry_annotation(entry).is_some() && entry_platform(entry).is_none_or(|p| !ours.contains(&p))
}

/// The entries of an existing cache index that an export keeps ([`keeps`]).
fn kept_entries<'a>(
    index: &'a ImageIndex,
    ours: &'a BTreeSet<Platform>,
) -> impl Iterator<Item = Descriptor> + 'a {
    index
        .manifests()
        .iter()
        .filter(|entry| keeps(entry, ours))
        .cloned()
}

/// What a cache ref names: an index of per-platform manifests (`image-manifest=false`, the
/// default), or one manifest with every platform's records (`image-manifest=true`).
enum Top {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl Top {
    fn parse(location: &str, bytes: &[u8]) -> Result<Self, CacheError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|error| bad(&location, error))?;
        if value.get("manifests").is_some() {
            serde_json::from_value(value)
                .map(|index| Self::Index(Box::new(index)))
                .map_err(|error| bad(&location, error))
        } else if value.get("config").is_some() {
            serde_json::from_value(value)
                .map(|manifest| Self::Manifest(Box::new(manifest)))
                .map_err(|error| bad(&location, error))
        } else {
            Err(bad(&location, "neither an image index nor a manifest"))
        }
    }
}

/// The records of an existing cache at `export`'s location for platforms other than `ours`
/// (an `image-manifest=true` export keeps them). A cache in a shape this xbuild cannot
/// read counts as empty, as the index entries it cannot read are dropped.
async fn kept_records(
    options: Arc<RegistryOptions>,
    location: &CacheLocation,
    ours: &BTreeSet<Platform>,
) -> Result<Vec<Record>, CacheError> {
    match read_records(options, location, &|platform| !ours.contains(platform)).await {
        Ok(found) => Ok(found.map(|found| found.records).unwrap_or_default()),
        Err(CacheError::BadDocument { .. }) => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// Writes `records` to `export`'s location: blobs from `store` (layers of lazily imported
/// hits not in `store` are mounted from where they were imported, see
/// [`crate::registry::push`]). With `image_manifest` the ref names one manifest holding every
/// platform's records (the other platforms' records of an existing cache there kept),
/// otherwise an index of one manifest per platform (the other platforms' entries kept). A
/// local directory keeps no blob that none of its `index.json` entries reaches. Returns a
/// line for the user.
///
/// # Errors
/// Registry or file failures.
pub async fn export(
    options: Arc<RegistryOptions>,
    store: &ImageLayout,
    export: &CacheExport,
    records: Vec<Record>,
) -> Result<String, CacheError> {
    let location = export.location.to_string();
    let count = records.len();
    let ours: BTreeSet<Platform> = records.iter().map(|r| r.platform.clone()).collect();
    // (manifest descriptor, the blobs of ours it needs) per manifest to write.
    let mut manifests = Vec::new();
    // The entries of the index, when the ref names an index.
    let mut entries = Vec::new();
    if export.image_manifest {
        let kept = kept_records(Arc::clone(&options), &export.location, &ours).await?;
        let needed_layers = record_layers(&records);
        let mut all = records;
        all.extend(kept);
        all.sort_by(|a, b| (&a.platform, &a.key).cmp(&(&b.platform, &b.key)));
        let (descriptor, mut needed) =
            cache_manifest(store, &location, None, all, export.docker_types)?;
        // Kept records' layers are there already; ours are pushed with the config.
        needed.truncate(1);
        needed.extend(needed_layers);
        manifests.push((descriptor, needed));
    } else {
        let mut by_platform: BTreeMap<Platform, Vec<Record>> = BTreeMap::new();
        for record in records {
            by_platform
                .entry(record.platform.clone())
                .or_default()
                .push(record);
        }
        for (platform, records) in by_platform {
            let (descriptor, needed) = cache_manifest(
                store,
                &location,
                Some(&platform),
                records,
                export.docker_types,
            )?;
            entries.push(descriptor.clone());
            manifests.push((descriptor, needed));
        }
    }
    match &export.location {
        CacheLocation::Registry(cache) => {
            let reference = &cache.reference;
            let registry_error = |source: RegistryError| CacheError::Registry {
                location: location.clone(),
                source: Box::new(source),
            };
            let registry = Arc::new(
                Registry::connect(reference.registry(), cache.options(options))
                    .await
                    .map_err(registry_error)?,
            );
            let repository = reference.repository();
            if !export.image_manifest {
                // Other platforms' manifests of an existing cache stay.
                match registry
                    .get_manifest(repository, &reference.manifest_reference())
                    .await
                {
                    Ok(existing) if existing.is_index() => {
                        if let Ok(index) = serde_json::from_slice::<ImageIndex>(&existing.bytes) {
                            entries.extend(kept_entries(&index, &ours));
                        }
                    }
                    Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                    Err(error) => return Err(registry_error(error)),
                }
            }
            for (manifest, needed) in &manifests {
                let outcomes: Vec<BlobPush> = crate::registry::push::push_blobs(
                    &registry,
                    store,
                    repository,
                    needed,
                    None,
                    Arc::new(NoProgress),
                )
                .await
                .map_err(registry_error)?;
                drop(outcomes);
                let raw = RawManifest::new(
                    store
                        .read_blob(manifest.digest())
                        .map_err(|source| CacheError::Layout {
                            location: location.clone(),
                            source,
                        })?,
                    manifest.media_type().to_string(),
                );
                let target = if export.image_manifest {
                    reference.manifest_reference()
                } else {
                    manifest.digest().to_string()
                };
                registry
                    .put_manifest(repository, &target, &raw)
                    .await
                    .map_err(registry_error)?;
            }
            if !export.image_manifest {
                entries.sort_by(|a, b| entry_annotation(a).cmp(&entry_annotation(b)));
                let (index, media_type) = cache_index(entries, export.docker_types);
                let raw =
                    RawManifest::new(oci_image::canonical_json(&index), media_type.to_string());
                registry
                    .put_manifest(repository, &reference.manifest_reference(), &raw)
                    .await
                    .map_err(registry_error)?;
            }
        }
        CacheLocation::Local(local) => {
            let layout_error = |source| CacheError::Layout {
                location: location.clone(),
                source,
            };
            let dest = ImageLayout::open_or_create(&local.dir).map_err(layout_error)?;
            if !export.image_manifest {
                if let Some(existing) = dest.resolve_ref(&local.tag).map_err(layout_error)? {
                    if let Ok(index) =
                        dest.read_json::<ImageIndex>(existing.digest(), "cache index")
                    {
                        entries.extend(kept_entries(&index, &ours));
                    }
                }
            }
            for (manifest, needed) in &manifests {
                for blob in needed.iter().chain(std::iter::once(manifest)) {
                    dest.copy_blob_from(store, blob).map_err(layout_error)?;
                }
            }
            let top = if export.image_manifest {
                manifests
                    .first()
                    .map(|(descriptor, _)| descriptor.clone())
                    .ok_or_else(|| bad(&location, "no cache manifest was written"))?
            } else {
                entries.sort_by(|a, b| entry_annotation(a).cmp(&entry_annotation(b)));
                let (index, media_type) = cache_index(entries, export.docker_types);
                oci_image::write_json_blob(&dest, media_type, &index).map_err(layout_error)?
            };
            dest.set_ref(&local.tag, &top).map_err(layout_error)?;
            remove_unreferenced(&dest);
        }
    }
    Ok(format!(
        "exported the cache ({count} records, {}) to {location}",
        ours.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Removes the blobs of a local cache directory that no entry of its `index.json` reaches
/// (the records replaced by this export and earlier ones), so that exporting to one
/// directory again and again does not grow it without bound. Nothing is removed when the
/// directory cannot be read whole: a blob is kept unless it is known to be unreferenced.
fn remove_unreferenced(layout: &ImageLayout) {
    let Ok(index) = layout.index() else {
        return;
    };
    let mut reachable = std::collections::HashSet::new();
    for entry in index.manifests() {
        if oci_image::reachable_blobs(layout, entry, &mut reachable).is_err() {
            return;
        }
    }
    let Ok(blobs) = std::fs::read_dir(layout.root().join("blobs").join("sha256")) else {
        return;
    };
    for blob in blobs.flatten() {
        let name = blob.file_name();
        let Some(digest) = name.to_str().and_then(|hex| {
            format!("sha256:{hex}")
                .parse::<oci_spec::image::Digest>()
                .ok()
        }) else {
            continue;
        };
        if !reachable.contains(&digest) {
            // A blob another process is writing now is still in the layout's tmp directory.
            let _ = std::fs::remove_file(blob.path());
        }
    }
}

/// Reads the records of `platforms` from a cache (an entry's annotation and a record's
/// platform may use any spelling [`Platform::parse`] takes). `None`: there is no cache there
/// yet (as buildx, not an error).
///
/// # Errors
/// Registry or file failures other than "not found", documents not in this format.
pub async fn import(
    options: Arc<RegistryOptions>,
    location: &CacheLocation,
    platforms: &[Platform],
) -> Result<Option<Imported>, CacheError> {
    read_records(options, location, &|platform| platforms.contains(platform)).await
}

/// The records of the platforms `wanted` takes from a cache, in either shape (index or
/// `image-manifest=true`).
async fn read_records(
    options: Arc<RegistryOptions>,
    location: &CacheLocation,
    wanted: &(dyn Fn(&Platform) -> bool + Sync),
) -> Result<Option<Imported>, CacheError> {
    let name = location.to_string();
    // A cache entry by its annotation; an image's manifest (an inline cache) by its platform.
    let entry_wanted = |entry: &Descriptor| match entry_annotation(entry) {
        Some(_) => entry_platform(entry).filter(|p| wanted(p)),
        None => entry
            .platform()
            .as_ref()
            .map(Platform::from)
            .filter(|p| wanted(p)),
    };
    // (the platform of the index entry, or none for a manifest of every platform, config)
    let mut configs: Vec<(Option<Platform>, Vec<u8>)> = Vec::new();
    // Records of an image's inline cache (`--cache-from` naming an image).
    let mut inline = Vec::new();
    let source = match location {
        CacheLocation::Registry(cache) => {
            let reference = &cache.reference;
            let registry_error = |source: RegistryError| CacheError::Registry {
                location: name.clone(),
                source: Box::new(source),
            };
            let registry = Registry::connect(reference.registry(), cache.options(options))
                .await
                .map_err(registry_error)?;
            let repository = reference.repository();
            let top = match registry
                .get_manifest(repository, &reference.manifest_reference())
                .await
            {
                Ok(top) => top,
                Err(RegistryError::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(registry_error(error)),
            };
            let manifests = match Top::parse(&name, &top.bytes)? {
                Top::Manifest(manifest) => vec![(None, *manifest)],
                Top::Index(index) => {
                    let mut manifests = Vec::new();
                    for (entry, platform) in index
                        .manifests()
                        .iter()
                        .filter_map(|entry| Some((entry, entry_wanted(entry)?)))
                    {
                        let raw = registry
                            .get_manifest_of(repository, entry)
                            .await
                            .map_err(registry_error)?;
                        let manifest: ImageManifest = serde_json::from_slice(&raw.bytes)
                            .map_err(|error| bad(&name, error))?;
                        manifests.push((Some(platform), manifest));
                    }
                    manifests
                }
            };
            for (platform, manifest) in manifests {
                let kind = config_kind(&manifest);
                if kind == ConfigKind::Other {
                    continue;
                }
                let bytes = registry
                    .get_config(repository, manifest.config())
                    .await
                    .map_err(registry_error)?;
                if kind == ConfigKind::Image {
                    inline.extend(inline_records(&name, &bytes, &manifest, wanted)?);
                } else {
                    configs.push((platform, bytes));
                }
            }
            BlobSource::Registry(cache.clone())
        }
        CacheLocation::Local(local) => {
            let layout_error = |source| CacheError::Layout {
                location: name.clone(),
                source,
            };
            let Ok(layout) = ImageLayout::open(&local.dir) else {
                return Ok(None);
            };
            let top = match &local.digest {
                Some(digest) => {
                    let digest = digest
                        .parse::<oci_spec::image::Digest>()
                        .map_err(|error| bad(&name, error))?;
                    if !layout.has_blob(&digest) {
                        return Ok(None);
                    }
                    digest
                }
                None => match layout.resolve_ref(&local.tag).map_err(layout_error)? {
                    Some(top) => top.digest().clone(),
                    None => return Ok(None),
                },
            };
            let bytes = layout.read_blob(&top).map_err(layout_error)?;
            let manifests = match Top::parse(&name, &bytes)? {
                Top::Manifest(manifest) => vec![(None, *manifest)],
                Top::Index(index) => index
                    .manifests()
                    .iter()
                    .filter_map(|entry| Some((entry, entry_wanted(entry)?)))
                    .map(|(entry, platform)| {
                        layout
                            .read_json::<ImageManifest>(entry.digest(), "cache manifest")
                            .map(|manifest| (Some(platform), manifest))
                            .map_err(layout_error)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            for (platform, manifest) in manifests {
                let kind = config_kind(&manifest);
                if kind == ConfigKind::Other {
                    continue;
                }
                let bytes = layout
                    .read_blob(manifest.config().digest())
                    .map_err(layout_error)?;
                if kind == ConfigKind::Image {
                    inline.extend(inline_records(&name, &bytes, &manifest, wanted)?);
                } else {
                    configs.push((platform, bytes));
                }
            }
            BlobSource::Local(local.dir.clone())
        }
    };
    let mut records = inline;
    for (platform, bytes) in configs {
        let config: CacheConfig =
            serde_json::from_slice(&bytes).map_err(|error| bad(&name, error))?;
        if config.version != FORMAT_VERSION {
            return Err(bad(
                &name,
                format!(
                    "format version {} (this xbuild reads {FORMAT_VERSION})",
                    config.version
                ),
            ));
        }
        // A record is used only for its own platform, whatever the manifest says.
        records.extend(config.records.into_iter().filter(|record| match &platform {
            Some(platform) => {
                &record.platform == platform && config.platform.as_ref() == Some(platform)
            }
            None => config.platform.is_none() && wanted(&record.platform),
        }));
    }
    Ok(Some(Imported { records, source }))
}

/// What the config of a manifest a cache ref reaches is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigKind {
    /// Cache records (this format).
    Records,
    /// An image config (OCI or Docker), which may hold an inline cache.
    Image,
    /// Anything else (attestations, other tools' artifacts): skipped.
    Other,
}

fn config_kind(manifest: &ImageManifest) -> ConfigKind {
    match manifest.config().media_type().to_string().as_str() {
        CONFIG_MEDIA_TYPE => ConfigKind::Records,
        "application/vnd.oci.image.config.v1+json"
        | "application/vnd.docker.container.image.v1+json" => ConfigKind::Image,
        _ => ConfigKind::Other,
    }
}

/// The inline cache records of an image config (`--cache-to type=inline`).
fn inline_records(
    location: &str,
    config: &[u8],
    manifest: &ImageManifest,
    wanted: &(dyn Fn(&Platform) -> bool + Sync),
) -> Result<Vec<Record>, CacheError> {
    inline::decode(config, manifest.layers(), &|platform| wanted(platform))
        .map_err(|reason| bad(&location, reason))
}

/// Fetches `blobs` from `source` into `layout` (the store); from a registry, notes where each
/// came from so a later push to that registry can mount it.
///
/// # Errors
/// Registry or file failures, digest mismatches.
pub async fn fetch(
    options: Arc<RegistryOptions>,
    layout: &ImageLayout,
    source: &BlobSource,
    blobs: &[Descriptor],
) -> Result<(), CacheError> {
    match source {
        BlobSource::Registry(cache) => {
            let reference = &cache.reference;
            let registry_error = |source: RegistryError| CacheError::Registry {
                location: reference.to_string(),
                source: Box::new(source),
            };
            let registry = Registry::connect(reference.registry(), cache.options(options))
                .await
                .map_err(registry_error)?;
            for blob in blobs {
                if layout.has_blob(blob.digest()) {
                    continue;
                }
                // Also notes where the blob came from (for mounting on a push).
                registry
                    .fetch_blob(reference.repository(), blob, layout, &NoProgress)
                    .await
                    .map_err(registry_error)?;
            }
        }
        BlobSource::Local(dir) => {
            let layout_error = |source| CacheError::Layout {
                location: dir.display().to_string(),
                source,
            };
            let from = ImageLayout::open(dir).map_err(layout_error)?;
            for blob in blobs {
                layout.copy_blob_from(&from, blob).map_err(layout_error)?;
            }
        }
    }
    Ok(())
}

/// Notes, without fetching, that `blob` lives in the registry `source` (so a push there
/// mounts it).
pub fn note_source(layout: &ImageLayout, source: &BlobSource, blob: &Descriptor) {
    if let BlobSource::Registry(RegistryCache { reference, .. }) = source {
        crate::registry::record_source(
            layout,
            blob.digest(),
            reference.registry(),
            reference.repository(),
        );
    }
}

//! Image configs, manifests and indexes: building them (OCI media types by default),
//! reading them back (Docker schema-2 manifests and manifest lists accepted), canonical JSON,
//! and choosing the manifest for a platform in an index. Platforms are
//! [`crate::platform::Platform`]s; the OCI form is made there.
//!
//! Specs: <https://github.com/opencontainers/image-spec/blob/main/manifest.md>,
//! <https://github.com/opencontainers/image-spec/blob/main/image-index.md>,
//! <https://github.com/opencontainers/image-spec/blob/main/config.md>, and Docker's
//! <https://distribution.github.io/distribution/spec/manifest-v2-2/>.

use std::collections::HashMap;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Serialize;

use super::layout::{ImageLayout, LayoutError};
use crate::platform::{self, Platform};

/// Docker schema-2 image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema-2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer media type.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker zstd layer media type (containerd's spelling).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// Errors reading images out of a layout.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The layout could not be read.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A descriptor has a media type that is neither a manifest nor an index.
    #[error("{digest} has media type {media_type}, not an image manifest or index")]
    NotAnImage {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// No manifest in the index matches the requested platform.
    #[error("no image for {wanted} (the index has {available})")]
    NoMatchingPlatform {
        /// The requested platform.
        wanted: String,
        /// The platforms present, comma separated.
        available: String,
    },
    /// An index nests too deeply (loops are not possible with content addressing, but a
    /// hostile layout may nest indexes without end).
    #[error("image index {0} nests too deeply")]
    TooDeep(Digest),
}

/// Serialises a document as compact JSON with object keys sorted, so the same value always
/// gives the same bytes (oci-spec keeps annotations, labels, ports and volumes in
/// `HashMap`s, whose order is random).
pub fn canonical_json(value: &impl Serialize) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("OCI documents serialise to JSON");
    // Without serde_json's `preserve_order` feature, `Value` objects are `BTreeMap`s: sorted.
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// Whether this media type names an image index (OCI index or Docker manifest list).
pub fn is_index_media_type(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex) || media_type.as_ref() == DOCKER_MANIFEST_LIST
}

/// Whether this media type names an image manifest (OCI or Docker schema 2).
pub fn is_manifest_media_type(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageManifest) || media_type.as_ref() == DOCKER_MANIFEST
}

/// Whether a layer media type is gzip-compressed, zstd-compressed or plain: `None` when it is
/// not a layer type xbuild knows.
pub fn layer_compression_of(media_type: &MediaType) -> Option<&'static str> {
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Some("none"),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Some("gzip"),
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Some("zstd"),
        MediaType::Other(other) if other == DOCKER_LAYER_GZIP => Some("gzip"),
        MediaType::Other(other) if other == DOCKER_LAYER_ZSTD => Some("zstd"),
        MediaType::Other(other) if other == DOCKER_LAYER_TAR => Some("none"),
        _ => None,
    }
}

/// Docker's media type for a layer media type, as BuildKit converts them for
/// `oci-mediatypes=false` (a type without a Docker form is kept).
pub fn docker_layer_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" => DOCKER_LAYER_TAR,
        "application/vnd.oci.image.layer.v1.tar+gzip" => DOCKER_LAYER_GZIP,
        "application/vnd.oci.image.layer.v1.tar+zstd" => DOCKER_LAYER_ZSTD,
        "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            "application/vnd.docker.image.rootfs.foreign.diff.tar"
        }
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        }
        other => other,
    }
}

/// A descriptor for a blob.
pub fn descriptor(media_type: MediaType, digest: Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, digest)
}

/// Writes a document as a canonical JSON blob and returns its descriptor.
///
/// # Errors
/// Write failures.
pub fn write_json_blob(
    layout: &ImageLayout,
    media_type: MediaType,
    value: &impl Serialize,
) -> Result<Descriptor, LayoutError> {
    let bytes = canonical_json(value);
    let (digest, size) = layout.write_blob(&bytes)?;
    Ok(descriptor(media_type, digest, size))
}

/// An empty image configuration for `platform` (no layers, no history), `created` as given.
pub fn new_image_config(platform: &Platform, created: Option<String>) -> ImageConfiguration {
    let mut config = ImageConfiguration::default();
    platform.write_to_config(&mut config);
    config.set_created(created);
    config.rootfs_mut().set_typ("layers".to_owned());
    config
}

/// An OCI image manifest over a config and layers.
pub fn build_manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: Option<HashMap<String, String>>,
) -> ImageManifest {
    let mut builder = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers);
    if let Some(annotations) = annotations.filter(|annotations| !annotations.is_empty()) {
        builder = builder.annotations(annotations);
    }
    builder
        .build()
        .expect("a manifest with config and layers has every required field")
}

/// An OCI image index over manifest descriptors (each should carry its platform).
pub fn build_index(manifests: Vec<Descriptor>) -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index with manifests has every required field")
}

/// A descriptor for a manifest blob, tagged with its platform (for use in an index).
pub fn manifest_descriptor(digest: Digest, size: u64, platform: Option<&Platform>) -> Descriptor {
    let builder = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest)
        .size(size);
    match platform {
        Some(platform) => builder.platform(platform.to_oci()).build(),
        None => builder.build(),
    }
    .expect("a descriptor with media type, digest and size is complete")
}

/// One image (one platform) read out of a layout: its manifest and config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest's descriptor (with the platform when it came from an index).
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfiguration,
}

impl ResolvedImage {
    /// The image's platform, from its config.
    pub fn platform(&self) -> Platform {
        Platform::of_config(&self.config)
    }
}

/// Reads the manifest descriptors an index (OCI or Docker list) lists.
///
/// # Errors
/// The blob is missing, corrupt or not an index.
pub fn read_index(layout: &ImageLayout, digest: &Digest) -> Result<ImageIndex, ImageError> {
    Ok(layout.read_json(digest, "image index")?)
}

/// Whether a blob descriptor is an index, looking at the media type and, when that is not
/// conclusive, at the document (`manifests` key).
///
/// # Errors
/// The blob cannot be read.
pub fn is_index(layout: &ImageLayout, descriptor: &Descriptor) -> Result<bool, ImageError> {
    if is_index_media_type(descriptor.media_type()) {
        return Ok(true);
    }
    if is_manifest_media_type(descriptor.media_type()) {
        return Ok(false);
    }
    let value: serde_json::Value = layout.read_json(descriptor.digest(), "JSON document")?;
    if value.get("manifests").is_some() {
        Ok(true)
    } else if value.get("layers").is_some() {
        Ok(false)
    } else {
        Err(ImageError::NotAnImage {
            digest: descriptor.digest().clone(),
            media_type: descriptor.media_type().to_string(),
        })
    }
}

/// Every image (platform manifest) reachable from a descriptor: itself if it is a manifest,
/// the manifests an index lists otherwise (nested indexes followed; attestation manifests,
/// those whose platform is `unknown/unknown`, left out). A manifest an index lists that is
/// not in the layout is left out too: `xbuild pull` fetches one platform of an index and
/// keeps the index whole (its digest stays the registry's), so the others are not pulled.
///
/// # Errors
/// Missing or corrupt blobs.
pub fn list_images(
    layout: &ImageLayout,
    descriptor: &Descriptor,
) -> Result<Vec<ResolvedImage>, ImageError> {
    let mut images = Vec::new();
    collect_images(layout, descriptor, 0, &mut images)?;
    Ok(images)
}

fn collect_images(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    depth: usize,
    images: &mut Vec<ResolvedImage>,
) -> Result<(), ImageError> {
    if depth > 8 {
        return Err(ImageError::TooDeep(descriptor.digest().clone()));
    }
    if is_index(layout, descriptor)? {
        let index = read_index(layout, descriptor.digest())?;
        for child in index.manifests() {
            if child.platform().as_ref().is_some_and(|platform| {
                platform.os().to_string() == "unknown"
                    && platform.architecture().to_string() == "unknown"
            }) {
                continue;
            }
            if !layout.has_blob(child.digest()) {
                continue;
            }
            collect_images(layout, child, depth + 1, images)?;
        }
        return Ok(());
    }
    images.push(read_image(layout, descriptor)?);
    Ok(())
}

/// Reads one manifest and its config.
///
/// # Errors
/// Missing or corrupt blobs.
pub fn read_image(
    layout: &ImageLayout,
    descriptor: &Descriptor,
) -> Result<ResolvedImage, ImageError> {
    let manifest: ImageManifest = layout.read_json(descriptor.digest(), "image manifest")?;
    let config: ImageConfiguration =
        layout.read_json(manifest.config().digest(), "image config")?;
    Ok(ResolvedImage {
        descriptor: descriptor.clone(),
        manifest,
        config,
    })
}

/// The image for `platform` under a descriptor (that platform exactly:
/// [`Platform::same_target`]). Without a platform: the only image, else the host's platform.
///
/// # Errors
/// [`ImageError::NoMatchingPlatform`], or missing or corrupt blobs.
pub fn resolve_image(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    platform: Option<&Platform>,
) -> Result<ResolvedImage, ImageError> {
    let mut images = list_images(layout, descriptor)?;
    if platform.is_none() && images.len() == 1 {
        return Ok(images.remove(0));
    }
    let wanted = platform.cloned().unwrap_or_else(platform::host);
    let position = images
        .iter()
        .position(|image| wanted.same_target(&image.platform()));
    match position {
        Some(position) => Ok(images.swap_remove(position)),
        None => Err(ImageError::NoMatchingPlatform {
            wanted: wanted.to_string(),
            available: images
                .iter()
                .map(|image| image.platform().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Every blob digest reachable from a descriptor: indexes, manifests, configs and layers.
/// Missing blobs below an index or manifest are skipped (a partial image still keeps what it
/// has).
///
/// # Errors
/// A present blob that does not parse.
pub fn reachable_blobs(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    into: &mut std::collections::HashSet<Digest>,
) -> Result<(), ImageError> {
    reachable_inner(layout, descriptor, 0, into)
}

fn reachable_inner(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    depth: usize,
    into: &mut std::collections::HashSet<Digest>,
) -> Result<(), ImageError> {
    if depth > 8 {
        return Err(ImageError::TooDeep(descriptor.digest().clone()));
    }
    if !into.insert(descriptor.digest().clone()) || !layout.has_blob(descriptor.digest()) {
        return Ok(());
    }
    let media_type = descriptor.media_type();
    if !(is_index_media_type(media_type) || is_manifest_media_type(media_type))
        && layer_compression_of(media_type).is_some()
    {
        return Ok(());
    }
    if matches!(media_type, MediaType::ImageConfig) || media_type.as_ref() == DOCKER_CONFIG {
        return Ok(());
    }
    let value: serde_json::Value = match layout.read_json(descriptor.digest(), "JSON document") {
        Ok(value) => value,
        // A blob of an unknown media type that is not JSON is a leaf.
        Err(LayoutError::Json { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    if let Some(manifests) = value.get("manifests") {
        let children: Vec<Descriptor> =
            serde_json::from_value(manifests.clone()).unwrap_or_default();
        for child in &children {
            reachable_inner(layout, child, depth + 1, into)?;
        }
    }
    if let Some(config) = value.get("config") {
        if let Ok(config) = serde_json::from_value::<Descriptor>(config.clone()) {
            into.insert(config.digest().clone());
        }
    }
    if let Some(layers) = value.get("layers") {
        let layers: Vec<Descriptor> = serde_json::from_value(layers.clone()).unwrap_or_default();
        into.extend(layers.iter().map(|layer| layer.digest().clone()));
    }
    Ok(())
}

/// An RFC 3339 UTC time for a Unix time, as image configs spell `created`.
pub fn rfc3339(unix_seconds: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60,
        seconds_of_day % 60
    )
}

/// The time to stamp on new images and history entries: `SOURCE_DATE_EPOCH` when set, else
/// now.
pub fn created_now() -> String {
    let seconds = crate::env::source_date_epoch().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
    });
    rfc3339(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let mut annotations = HashMap::new();
        for key in ["z", "a", "m", "b"] {
            annotations.insert(key.to_owned(), "1".to_owned());
        }
        let bytes = canonical_json(&annotations);
        assert_eq!(bytes, br#"{"a":"1","b":"1","m":"1","z":"1"}"#);
    }

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn docker_manifest_list_is_read_as_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let config =
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (config_digest, config_size) = layout.write_blob(config).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{config_digest}","size":{config_size}}},"layers":[]}}"#
        );
        let (manifest_digest, manifest_size) = layout.write_blob(manifest.as_bytes()).unwrap();
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{manifest_digest}","size":{manifest_size},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let (list_digest, list_size) = layout.write_blob(list.as_bytes()).unwrap();
        let top = descriptor(
            MediaType::from(DOCKER_MANIFEST_LIST),
            list_digest,
            list_size,
        );
        let image = resolve_image(
            &layout,
            &top,
            Some(&Platform::parse("linux/arm64").unwrap()),
        )
        .unwrap();
        assert_eq!(image.manifest.config().digest(), &config_digest);
        assert!(matches!(
            resolve_image(
                &layout,
                &top,
                Some(&Platform::parse("linux/s390x").unwrap())
            ),
            Err(ImageError::NoMatchingPlatform { .. })
        ));
    }
}

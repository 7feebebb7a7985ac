//! The local store at `$XBUILD_ROOT`: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) plus `snapshots/` (unpacked layers by diff_id, in overlay form),
//! `cache/` (cache key → result records), `locks/` and `tmp/`.
//!
//! ```text
//! $XBUILD_ROOT/
//!   oci-layout  index.json  blobs/sha256/<hex>      the OCI image layout (skopeo, umoci read it)
//!   snapshots/sha256/<diff_id hex>/                 one unpacked layer, an overlay lower dir
//!   snapshots/sources/<link key hex>                the diff_id a `COPY` of the context made
//!                                                   last (its unchanged files are hard-linked
//!                                                   from that snapshot next time; a hint)
//!   cache/<key hex>.json                            cache records (roots for GC)
//!   blocks/<blob hex>                               gzip block maps (crate::layer::blocks)
//!   locks/use.lock  locks/index.lock                flock(2) files
//!   tmp/                                            temporary files and snapshot dirs
//! ```
//!
//! Referrers (attestations attached to a stored manifest) are unnamed `index.json` entries
//! ([`crate::oci::referrers`]); they live as long as their subject.
//!
//! Owns no network. Every write is temp + fsync + rename, through [`crate::oci::ImageLayout`]
//! for blobs and `index.json`, and through a temporary directory renamed into place for
//! snapshots; a process killed at any moment leaves the store readable.
//!
//! Locking between processes: every open [`Store`] holds a shared lock on `locks/use.lock`
//! for its life; garbage collection takes it exclusively (so it never removes what a running
//! build has just written and not yet named). Read-modify-write of `index.json` holds
//! `locks/index.lock` exclusively.

mod archive;
mod check;
mod gc;
mod lock;
mod referrers;
mod snapshot;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::env;
use crate::layer::{Compression, LayerError};
use crate::oci::image::{self, ImageError, ResolvedImage};
use crate::oci::{ImageLayout, LayoutError};
use crate::platform::Platform;

pub use archive::{ArchiveError, ArchiveFormat, CONTAINERD_NAME_ANNOTATION, LoadedImage};
pub use check::{CheckReport, Cleanup, Problem};
pub use gc::{CacheEntry, DiskUsage, GcReport, PrunePolicy, RecordType};
pub use lock::{LockError, StoreLock};

/// The store directory: `$XBUILD_ROOT`, else `/var/lib/xbuild` for root, else
/// `$XDG_DATA_HOME/xbuild` (default `~/.local/share/xbuild`).
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os(env::XBUILD_ROOT).filter(|root| !root.is_empty()) {
        return PathBuf::from(root);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/xbuild");
    }
    if let Some(data) = std::env::var_os(env::XDG_DATA_HOME).filter(|data| !data.is_empty()) {
        return PathBuf::from(data).join("xbuild");
    }
    let home = std::env::var_os(env::HOME).map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("share").join("xbuild")
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The image layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// An image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer could not be unpacked or written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A layer could not be unpacked.
    #[error("unpacking layer {digest}")]
    Unpack {
        /// The layer blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: crate::layer::ApplyError,
    },
    /// An image archive is not valid.
    #[error(transparent)]
    Archive(archive::ArchiveError),
    /// An image archive's tar stream is malformed.
    #[error("reading the image archive")]
    ArchiveTar(#[source] crate::layer::read::ReadError),
    /// Locking failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A file of the store could not be read or written.
    #[error("{action} {path}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No image has this name.
    #[error("no image named {0} in the store")]
    UnknownRef(String),
    /// A manifest lists layers that its config does not (or the other way round).
    #[error("image {manifest}: {layers} layers but {diff_ids} diff_ids in its config")]
    LayerCountMismatch {
        /// The manifest.
        manifest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A layer kept only as its snapshot (no blob) whose snapshot is gone.
    #[error(
        "the snapshot of layer {diff_id} is missing from the store and the layer has no blob \
         (run `xbuild store check`, then build again)"
    )]
    MissingSnapshot {
        /// The layer.
        diff_id: Digest,
    },
    /// A cache record does not parse.
    #[error("cache record {path} is not valid")]
    CacheRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn file_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::File {
        action,
        path,
        source,
    }
}

/// A cache record: what a build step produced, and the blobs and snapshots it keeps alive.
/// The store does not interpret `data`; garbage collection keeps every blob in `blobs` and
/// every snapshot in `diff_ids`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Blobs this record refers to (layers, configs, manifests).
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// Snapshots this record refers to.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    /// Anything else the builder wants back (free-form JSON).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// The local store.
#[derive(Debug, Clone)]
pub struct Store {
    layout: ImageLayout,
    /// Shared "in use" lock, held while any clone of this handle lives.
    use_lock: Arc<StoreLock>,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and takes the shared "in use" lock.
    ///
    /// # Errors
    /// The directory cannot be created or is not a store.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let layout = ImageLayout::open_or_create(root)?;
        for dir in [
            "snapshots/sha256",
            "cache",
            "locks",
            crate::layer::blocks::BLOCKS_DIR,
        ] {
            let path = layout.root().join(dir);
            fs::create_dir_all(&path).map_err(|source| LayoutError::File {
                action: "creating",
                path,
                source,
            })?;
        }
        let use_lock =
            StoreLock::shared(&layout.root().join("locks").join("use.lock")).map_err(|error| {
                LayoutError::File {
                    action: "locking",
                    path: layout.root().join("locks").join("use.lock"),
                    source: io::Error::other(error.to_string()),
                }
            })?;
        Ok(Self {
            layout,
            use_lock: Arc::new(use_lock),
        })
    }

    /// Opens the store at [`default_root`].
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_default() -> Result<Self, LayoutError> {
        Self::open(default_root())
    }

    /// The OCI image layout that holds blobs and named images.
    pub fn layout(&self) -> &ImageLayout {
        &self.layout
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Holds the exclusive lock around a read-modify-write of `index.json`.
    fn with_index_lock<T>(
        &self,
        action: impl FnOnce(&ImageLayout) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = StoreLock::exclusive(&self.root().join("locks").join("index.lock"))?;
        action(&self.layout)
    }

    /// Names `descriptor` (a manifest or index already stored) as `name`, replacing what the
    /// name pointed at.
    ///
    /// # Errors
    /// The blob is missing, or `index.json` cannot be written.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        if !self.layout.has_blob(descriptor.digest()) {
            return Err(LayoutError::MissingBlob {
                digest: descriptor.digest().clone(),
                root: self.root().to_path_buf(),
            }
            .into());
        }
        let mut descriptor = descriptor.clone();
        // The name lives in the annotation set_ref adds; drop any stale one.
        if let Some(annotations) = descriptor.annotations().clone() {
            let kept: HashMap<String, String> = annotations
                .into_iter()
                .filter(|(key, _)| key != crate::oci::REF_NAME_ANNOTATION)
                .collect();
            descriptor.set_annotations((!kept.is_empty()).then_some(kept));
        }
        let name = normalize_ref(name);
        self.with_index_lock(|layout| Ok(layout.set_ref(&name, &descriptor)?))
    }

    /// Removes a name; returns what it named. Blobs stay until [`Self::gc`].
    ///
    /// # Errors
    /// `index.json` cannot be written.
    pub fn remove_ref(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let normalized = normalize_ref(name);
        self.with_index_lock(|layout| match layout.remove_ref(&normalized)? {
            Some(removed) => Ok(Some(removed)),
            None => Ok(layout.remove_ref(name)?),
        })
    }

    /// The descriptor a name points at: the normalised name (`busybox` is
    /// `docker.io/library/busybox:latest`), else the name exactly as written in `index.json`
    /// (layouts made by other tools).
    ///
    /// # Errors
    /// [`StoreError::UnknownRef`], or `index.json` cannot be read.
    pub fn resolve_ref(&self, name: &str) -> Result<Descriptor, StoreError> {
        if let Some(descriptor) = self.layout.resolve_ref(&normalize_ref(name))? {
            return Ok(descriptor);
        }
        self.layout
            .resolve_ref(name)?
            .ok_or_else(|| StoreError::UnknownRef(name.to_owned()))
    }

    /// Every named image: (name, descriptor), in `index.json` order.
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn refs(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        Ok(self
            .layout
            .index()?
            .manifests()
            .iter()
            .filter_map(|descriptor| {
                crate::oci::layout::ref_name(descriptor)
                    .map(|name| (name.to_owned(), descriptor.clone()))
            })
            .collect())
    }

    /// The image (manifest + config) a name points at, for a platform (default: the only
    /// one, else the host's).
    ///
    /// # Errors
    /// Unknown name, no such platform, missing or corrupt blobs.
    pub fn image(
        &self,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage, StoreError> {
        let descriptor = self.resolve_ref(name)?;
        Ok(image::resolve_image(&self.layout, &descriptor, platform)?)
    }

    /// Stores an image config and a manifest over it for `layers` (already stored); returns
    /// the manifest's descriptor with the config's platform, ready for an index or a ref.
    ///
    /// # Errors
    /// Write failures.
    pub fn put_image(
        &self,
        config: &ImageConfiguration,
        layers: Vec<Descriptor>,
    ) -> Result<Descriptor, StoreError> {
        let config_descriptor =
            image::write_json_blob(&self.layout, MediaType::ImageConfig, config)?;
        let manifest = image::build_manifest(config_descriptor, layers, None);
        self.put_manifest(&manifest, Some(&Platform::of_config(config)))
    }

    /// Stores a manifest; returns its descriptor (with `platform` when given).
    ///
    /// # Errors
    /// Write failures.
    pub fn put_manifest(
        &self,
        manifest: &ImageManifest,
        platform: Option<&Platform>,
    ) -> Result<Descriptor, StoreError> {
        let bytes = image::canonical_json(manifest);
        let (digest, size) = self.layout.write_blob(&bytes)?;
        let mut descriptor = image::manifest_descriptor(digest, size, platform);
        if let Some(media_type) = manifest.media_type() {
            descriptor.set_media_type(media_type.clone());
        }
        Ok(descriptor)
    }

    /// Stores an index over platform manifests; returns its descriptor.
    ///
    /// # Errors
    /// Write failures.
    pub fn put_index(&self, manifests: Vec<Descriptor>) -> Result<Descriptor, StoreError> {
        self.put_index_annotated(manifests, HashMap::new())
    }

    /// Stores an index over platform manifests with `annotations` (none: as
    /// [`Self::put_index`]); returns its descriptor.
    ///
    /// # Errors
    /// Write failures.
    pub fn put_index_annotated(
        &self,
        manifests: Vec<Descriptor>,
        annotations: HashMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        let mut index = image::build_index(manifests);
        if !annotations.is_empty() {
            index.set_annotations(Some(annotations));
        }
        Ok(image::write_json_blob(
            &self.layout,
            MediaType::ImageIndex,
            &index,
        )?)
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.root().join("cache").join(format!("{safe}.json"))
    }

    /// Records a cache result under `key` (atomically replacing an older one).
    ///
    /// # Errors
    /// Write failures.
    pub fn put_cache_record(&self, key: &str, record: &CacheRecord) -> Result<(), StoreError> {
        let path = self.cache_path(key);
        let bytes = serde_json::to_vec(record).expect("a cache record serialises");
        write_atomic(&self.layout.tmp_dir(), &path, &bytes)
    }

    /// The cache record for `key`, if any.
    ///
    /// # Errors
    /// The record exists but cannot be read or parsed.
    pub fn cache_record(&self, key: &str) -> Result<Option<CacheRecord>, StoreError> {
        let path = self.cache_path(key);
        match fs::read(&path) {
            Ok(bytes) => {
                // Its modification time is its last use, for `prune --filter until=` and
                // least-recently-used pruning; a failure to mark it only makes it look older.
                let _ = fs::File::open(&path)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::CacheRecord { path, source })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::File {
                action: "reading",
                path,
                source,
            }),
        }
    }

    /// The blob of `diff_id` made earlier at `compression` (from its snapshot, or converted
    /// from another blob of the same diff_id), if it is still in the store (see
    /// [`Self::put_layer_blob`]). The level is part of the lookup: a blob made at gzip
    /// level 6 is not the blob of level 9.
    ///
    /// # Errors
    /// The record exists but cannot be read or parsed.
    pub fn layer_blob(
        &self,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<Option<Descriptor>, StoreError> {
        let key = layer_blob_key(diff_id, compression);
        let Some(record) = self.cache_record(&key)? else {
            return Ok(None);
        };
        let path = self.cache_path(&key);
        let descriptor: Descriptor = serde_json::from_value(record.data)
            .map_err(|source| StoreError::CacheRecord { path, source })?;
        Ok(self
            .layout
            .has_blob(descriptor.digest())
            .then_some(descriptor))
    }

    /// Remembers that `blob` is the layer blob of `diff_id` at `compression` (a step's
    /// layer compressed on demand, or a layer converted to another compression), so the
    /// next image that needs it reuses it. A cache record like the others: it keeps the
    /// blob and the snapshot until `xbuild prune`.
    ///
    /// # Errors
    /// Write failures.
    pub fn put_layer_blob(
        &self,
        diff_id: &Digest,
        blob: &Descriptor,
        compression: Compression,
    ) -> Result<(), StoreError> {
        let record = CacheRecord {
            blobs: vec![blob.digest().clone()],
            diff_ids: vec![diff_id.clone()],
            data: serde_json::to_value(blob).expect("a descriptor serialises"),
        };
        self.put_cache_record(&layer_blob_key(diff_id, compression), &record)
    }
}

/// The cache record key of a layer blob of `diff_id` at `compression`: the default
/// level's key has no level (the key of the records made before levels existed).
fn layer_blob_key(diff_id: &Digest, compression: Compression) -> String {
    let media_type = compression.media_type();
    if compression.default_level() {
        format!("layer-{media_type}-{}", diff_id.digest())
    } else {
        format!(
            "layer-{media_type}-level{}-{}",
            compression.level(),
            diff_id.digest()
        )
    }
}

/// Writes a file atomically: temp file in `tmp`, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    fs::create_dir_all(tmp).map_err(file_error("creating", tmp))?;
    let mut file = tempfile::Builder::new()
        .prefix("file-")
        .tempfile_in(tmp)
        .map_err(file_error("creating a temporary file in", tmp))?;
    file.write_all(bytes).map_err(file_error("writing", path))?;
    file.as_file()
        .sync_all()
        .map_err(file_error("syncing", path))?;
    file.persist(path)
        .map_err(|error| error.error)
        .map_err(file_error("renaming into place", path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(file_error("syncing", parent))?;
    }
    Ok(())
}

/// Normalises an image name for the store the way Docker and containerd do, and as the
/// registry code names what it pulls: `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/app` → `localhost:5000/app:latest`. A name that is not a valid reference
/// is kept as is (with `:latest` when it has no tag).
pub fn normalize_ref(name: &str) -> String {
    match crate::oci::reference::parse(name) {
        Ok(reference)
            if !reference
                .repository()
                .chars()
                .any(|c| c.is_ascii_uppercase()) =>
        {
            reference.whole()
        }
        _ => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') || name.contains('@') {
                name.to_owned()
            } else {
                format!("{name}:latest")
            }
        }
    }
}

/// The short form users type and `docker images` shows: `docker.io/library/` and
/// `docker.io/` left out.
pub fn display_ref(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// Splits a stored name into repository and tag (or digest).
pub fn split_ref(name: &str) -> (&str, &str) {
    if let Some((repository, digest)) = name.split_once('@') {
        return (repository, digest);
    }
    let slash = name.rfind('/').map_or(0, |index| index + 1);
    match name[slash..].rfind(':') {
        Some(colon) => (&name[..slash + colon], &name[slash + colon + 1..]),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_and_split_back() {
        assert_eq!(normalize_ref("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize_ref("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_ref("app:1"), "docker.io/library/app:1");
        assert_eq!(
            normalize_ref("docker.io/library/app:1"),
            "docker.io/library/app:1"
        );
        assert_eq!(display_ref("docker.io/library/app:1"), "app:1");
        assert_eq!(display_ref("docker.io/team/app:1"), "team/app:1");
        assert_eq!(
            split_ref("localhost:5000/app:1"),
            ("localhost:5000/app", "1")
        );
        assert_eq!(split_ref("app"), ("app", ""));
    }

    #[test]
    fn gc_keeps_what_names_and_cache_records_reach() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let named = store.layout().write_blob(b"named layer").unwrap().0;
        let cached = store.layout().write_blob(b"cached layer").unwrap().0;
        let loose = store.layout().write_blob(b"loose").unwrap().0;
        let platform = crate::platform::host();
        let mut config = image::new_image_config(&platform, None);
        config
            .rootfs_mut()
            .diff_ids_mut()
            .push(crate::oci::sha256_digest(b"diff").to_string());
        let layer = Descriptor::new(MediaType::ImageLayerGzip, 11, named.clone());
        let manifest = store.put_image(&config, vec![layer]).unwrap();
        store.set_ref("app:1", &manifest).unwrap();
        let kept_snapshot = store.snapshot_path(&crate::oci::sha256_digest(b"diff"));
        let cached_snapshot = store.snapshot_path(&crate::oci::sha256_digest(b"cached diff"));
        let loose_snapshot = store.snapshot_path(&crate::oci::sha256_digest(b"loose diff"));
        for path in [&kept_snapshot, &cached_snapshot, &loose_snapshot] {
            fs::create_dir_all(path).unwrap();
        }
        store
            .put_cache_record(
                "key",
                &CacheRecord {
                    blobs: vec![cached.clone()],
                    diff_ids: vec![crate::oci::sha256_digest(b"cached diff")],
                    data: serde_json::Value::Null,
                },
            )
            .unwrap();
        fs::write(store.layout().tmp_dir().join("left-over"), "x").unwrap();

        let report = store.gc(false).unwrap();
        assert_eq!(
            (report.blobs, report.snapshots, report.cache_records),
            (1, 1, 0)
        );
        assert!(store.layout().has_blob(&named) && store.layout().has_blob(&cached));
        assert!(!store.layout().has_blob(&loose));
        assert!(kept_snapshot.is_dir() && cached_snapshot.is_dir() && !loose_snapshot.exists());
        assert_eq!(fs::read_dir(store.layout().tmp_dir()).unwrap().count(), 0);
        assert!(store.check(Cleanup::Remove).unwrap().is_ok());

        let report = store.gc(true).unwrap();
        assert_eq!(
            (report.blobs, report.snapshots, report.cache_records),
            (1, 1, 1)
        );
        assert!(store.layout().has_blob(&named) && !store.layout().has_blob(&cached));
        store.remove_ref("app:1").unwrap();
        store.gc(true).unwrap();
        assert_eq!(store.disk_usage().unwrap(), DiskUsage::default());
    }

    #[test]
    fn cache_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.cache_record("sha256:abc").unwrap().is_none());
        let record = CacheRecord {
            blobs: vec![crate::oci::sha256_digest(b"x")],
            diff_ids: vec![],
            data: serde_json::json!({"step": 1}),
        };
        store.put_cache_record("sha256:abc", &record).unwrap();
        assert_eq!(store.cache_record("sha256:abc").unwrap(), Some(record));
    }
}

//! `xbuild store check`: the store's integrity, after a crash or at any time.
//!
//! What is checked, and why each is a problem:
//!
//! - **Blobs**: every file under `blobs/sha256/` is read and hashed; a file whose content is
//!   not its name is *corrupt*. A name that is not 64 hex digits is a *stray entry* (blobs
//!   are written to `tmp/` and renamed, so nothing else should ever appear there).
//! - **Named images** (`index.json`): the named blob is there and parses; a manifest's
//!   config and every layer are there, and the config has as many diff_ids as the manifest
//!   has layers. A platform manifest of an index that is absent altogether is *not* a
//!   problem: `xbuild pull --platform` keeps the whole index and only the platforms asked
//!   for (counted as `absent_platforms`). A manifest that is there must be complete.
//! - **Referrers** (unnamed `index.json` entries naming a subject): checked as images are
//!   (the artifact manifest and its blobs are there). A referrer whose subject is gone is
//!   not a problem: garbage collection removes it.
//! - **Cache records** (`cache/*.json`): each parses, and every blob it lists is there
//!   (the build writes blobs before the record, and garbage collection keeps what records
//!   list, so a record with a missing blob is damage, not a race).
//! - **Snapshots** (`snapshots/sha256/`): each entry is a directory named by a diff_id.
//!   Snapshots are unpacked in `tmp/` and renamed into place, so a half-written one can only
//!   be in `tmp/`; their content is not re-hashed (it is in overlay form with real mtimes,
//!   while the layer's diff_id is over clamped ones). A missing one is unpacked again from
//!   its blob when needed; a `RUN` step's layer that was never compressed has no blob, so
//!   without its snapshot that step's cache record is a miss and the step runs again.
//!   A snapshot may share inodes with another (a `COPY` links the files it did not change
//!   from the snapshot it made in an earlier build; snapshots are never written after they
//!   are committed), which is not a problem. The records of which snapshot each `COPY`
//!   made last (`snapshots/sources/`) are hints, not checked: a stale one links nothing.
//! - **Gzip block maps** (`blocks/`, [`crate::layer::blocks`]): each is named by a blob
//!   that is there, is whole (length and checksum) and lists blocks inside its blob. Maps
//!   are written after their blob by rename and removed before it, so anything else is
//!   damage; builds ignore such a map (and verify every block they copy), `xbuild prune`
//!   removes it.
//! - **Temporary files** left by killed processes: everything in `tmp/`, and `.tmp*` files in
//!   `cache/` (the context stat cache's atomic writes). They are removed when no other xbuild
//!   process holds the store (the exclusive "in use" lock, taken without waiting); when one
//!   does, they may be its work in progress and are only counted, not a problem.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest, MediaType};

use super::gc::tree_size;
use super::{CacheRecord, LockError, Store, StoreError, file_error};
use crate::oci::image;

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob's content does not match its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A blob that a named image or a cache record needs is not there.
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// Who needs it (`image app:1`, `cache record <file>`).
        needed_by: String,
    },
    /// A blob that should be an image document (index, manifest, config) does not parse.
    BadDocument {
        /// The blob.
        digest: Digest,
        /// Who names it.
        needed_by: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A manifest and its config disagree on the number of layers.
    LayerCount {
        /// The manifest.
        manifest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in its config.
        diff_ids: usize,
    },
    /// A cache record does not parse.
    BadCacheRecord {
        /// The record file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file or directory that does not belong where it is.
    StrayEntry {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `index.json` cannot be read.
    BadIndex {
        /// Why.
        reason: String,
    },
    /// A gzip block map that builds ignore: torn or damaged, not named by a blob digest,
    /// or left without its blob (`xbuild prune` removes it).
    BadBlockMap {
        /// The map.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A temporary entry could not be removed.
    Uncleanable {
        /// The entry.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CorruptBlob { digest, actual } => {
                write!(f, "corrupt blob {digest}: its content hashes to {actual}")
            }
            Self::MissingBlob { digest, needed_by } => {
                write!(f, "missing blob {digest}, needed by {needed_by}")
            }
            Self::BadDocument {
                digest,
                needed_by,
                reason,
            } => write!(f, "unreadable document {digest} of {needed_by}: {reason}"),
            Self::LayerCount {
                manifest,
                layers,
                diff_ids,
            } => write!(
                f,
                "manifest {manifest} has {layers} layers but its config {diff_ids} diff_ids"
            ),
            Self::BadCacheRecord { path, reason } => {
                write!(
                    f,
                    "cache record {} does not parse: {reason}",
                    path.display()
                )
            }
            Self::StrayEntry { path, reason } => {
                write!(f, "stray entry {}: {reason}", path.display())
            }
            Self::BadIndex { reason } => write!(f, "index.json cannot be read: {reason}"),
            Self::BadBlockMap { path, reason } => write!(
                f,
                "block map {} is ignored by builds ({reason}); `xbuild prune` removes it",
                path.display()
            ),
            Self::Uncleanable { path, reason } => {
                write!(
                    f,
                    "cannot remove the temporary entry {}: {reason}",
                    path.display()
                )
            }
        }
    }
}

/// What [`Store::check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Blobs read and verified.
    pub blobs_verified: u64,
    /// Bytes read to verify them.
    pub bytes_verified: u64,
    /// Named images checked.
    pub images: u64,
    /// Referrers (attestations) checked.
    pub referrers: u64,
    /// Platform manifests that an index names and the store does not have (partial pulls;
    /// not a problem).
    pub absent_platforms: u64,
    /// Cache records checked.
    pub cache_records: u64,
    /// Snapshot directories seen.
    pub snapshots: u64,
    /// Gzip block maps checked (whole, and every block inside its blob).
    pub block_maps: u64,
    /// Temporary entries removed (left by interrupted processes), and their size.
    pub temporary_removed: (u64, u64),
    /// Temporary entries left alone because another xbuild process holds the store.
    pub temporary_in_use: u64,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How [`Store::check`] treats temporary leftovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Remove them when no other process holds the store.
    Remove,
    /// Only count them.
    Keep,
}

impl Store {
    /// Checks the store (see the module documentation) and, with [`Cleanup::Remove`],
    /// removes what killed processes left in `tmp/`. Reads every blob: takes as long as
    /// reading the store once.
    ///
    /// # Errors
    /// Directories cannot be listed, or the lock cannot be taken (other than "busy").
    pub fn check(&self, cleanup: Cleanup) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        self.check_blobs(&mut report)?;
        self.check_images(&mut report);
        self.check_cache_records(&mut report)?;
        self.check_snapshots(&mut report)?;
        self.check_block_maps(&mut report)?;
        let leftovers = self.temporary_entries()?;
        if leftovers.is_empty() {
            return Ok(report);
        }
        if cleanup == Cleanup::Keep {
            report.temporary_in_use = leftovers.len() as u64;
            return Ok(report);
        }
        // Taken without waiting: another process holding the store may own the entries.
        let removal = self.use_lock.while_exclusive(Duration::ZERO, || {
            // Listed again under the lock: the earlier list may name work in progress.
            for path in self.temporary_entries()? {
                let size = tree_size(&path);
                let removed = if path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {
                        report.temporary_removed.0 += 1;
                        report.temporary_removed.1 += size;
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => report.problems.push(Problem::Uncleanable {
                        path,
                        reason: error.to_string(),
                    }),
                }
            }
            Ok::<(), StoreError>(())
        });
        match removal {
            Ok(()) => {}
            Err(StoreError::Lock(LockError::Busy { .. })) => {
                report.temporary_in_use = leftovers.len() as u64;
            }
            Err(error) => return Err(error),
        }
        Ok(report)
    }

    fn check_blobs(&self, report: &mut CheckReport) -> Result<(), StoreError> {
        let dir = self.root().join("blobs").join("sha256");
        for (path, name) in entries(&dir)? {
            let digest = name
                .filter(|name| is_hex_digest(name))
                .and_then(|name| format!("sha256:{name}").parse::<Digest>().ok());
            let Some(digest) = digest.filter(|_| path.is_file() && !path.is_symlink()) else {
                report.problems.push(Problem::StrayEntry {
                    path,
                    reason: "not a blob (a regular file named by a sha256 digest)",
                });
                continue;
            };
            let file = fs::File::open(&path).map_err(file_error("opening", &path))?;
            let (actual, size) = crate::layer::DigestingReader::new(file)
                .finish()
                .map_err(file_error("reading", &path))?;
            report.blobs_verified += 1;
            report.bytes_verified += size;
            if actual != digest {
                report
                    .problems
                    .push(Problem::CorruptBlob { digest, actual });
            }
        }
        Ok(())
    }

    fn check_images(&self, report: &mut CheckReport) {
        let refs = match self.refs() {
            Ok(refs) => refs,
            Err(error) => {
                report.problems.push(Problem::BadIndex {
                    reason: crate::error::chain_text(&error),
                });
                return;
            }
        };
        let mut checked = HashSet::new();
        for (name, descriptor) in refs {
            report.images += 1;
            self.check_image(
                &descriptor,
                &format!("image {}", super::display_ref(&name)),
                0,
                &mut checked,
                report,
            );
        }
        let referrers = match self.layout().all_referrers() {
            Ok(referrers) => referrers,
            Err(error) => {
                report.problems.push(Problem::BadIndex {
                    reason: crate::error::chain_text(&error),
                });
                return;
            }
        };
        for (subject, referrer) in referrers {
            report.referrers += 1;
            self.check_image(
                &referrer,
                &format!("the referrer of {subject}"),
                0,
                &mut checked,
                report,
            );
        }
    }

    /// Checks one named index or manifest, recursively; `checked` avoids repeating shared
    /// manifests.
    fn check_image(
        &self,
        descriptor: &Descriptor,
        needed_by: &str,
        depth: usize,
        checked: &mut HashSet<Digest>,
        report: &mut CheckReport,
    ) {
        let digest = descriptor.digest();
        if !checked.insert(digest.clone()) {
            return;
        }
        let layout = self.layout();
        if !layout.has_blob(digest) {
            report.problems.push(Problem::MissingBlob {
                digest: digest.clone(),
                needed_by: needed_by.to_owned(),
            });
            return;
        }
        let bad = |reason: String| Problem::BadDocument {
            digest: digest.clone(),
            needed_by: needed_by.to_owned(),
            reason,
        };
        if depth > 8 {
            report
                .problems
                .push(bad("indexes nest too deeply".to_owned()));
            return;
        }
        let is_index = match image::is_index(layout, descriptor) {
            Ok(is_index) => is_index,
            Err(error) => {
                report.problems.push(bad(crate::error::chain_text(&error)));
                return;
            }
        };
        if is_index {
            let index = match image::read_index(layout, digest) {
                Ok(index) => index,
                Err(error) => {
                    report.problems.push(bad(crate::error::chain_text(&error)));
                    return;
                }
            };
            for child in index.manifests() {
                if layout.has_blob(child.digest()) {
                    self.check_image(child, needed_by, depth + 1, checked, report);
                } else {
                    report.absent_platforms += 1;
                }
            }
            return;
        }
        let manifest: ImageManifest = match layout.read_json(digest, "image manifest") {
            Ok(manifest) => manifest,
            Err(error) => {
                report.problems.push(bad(crate::error::chain_text(&error)));
                return;
            }
        };
        let needed_by = format!("{needed_by} (manifest {digest})");
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if !layout.has_blob(blob.digest()) {
                report.problems.push(Problem::MissingBlob {
                    digest: blob.digest().clone(),
                    needed_by: needed_by.clone(),
                });
            }
        }
        let config_digest = manifest.config().digest();
        // Only image configs have diff_ids (attestation manifests carry other documents).
        let config_type = manifest.config().media_type();
        let is_image_config = matches!(config_type, MediaType::ImageConfig)
            || config_type.as_ref() == image::DOCKER_CONFIG;
        if !layout.has_blob(config_digest) || !is_image_config {
            return;
        }
        match layout.read_json::<ImageConfiguration>(config_digest, "image configuration") {
            Ok(config) if config.rootfs().diff_ids().len() != manifest.layers().len() => {
                report.problems.push(Problem::LayerCount {
                    manifest: digest.clone(),
                    layers: manifest.layers().len(),
                    diff_ids: config.rootfs().diff_ids().len(),
                });
            }
            Ok(_) => {}
            Err(error) => report.problems.push(Problem::BadDocument {
                digest: config_digest.clone(),
                needed_by,
                reason: crate::error::chain_text(&error),
            }),
        }
    }

    fn check_cache_records(&self, report: &mut CheckReport) -> Result<(), StoreError> {
        for (path, name) in entries(&self.root().join("cache"))? {
            let Some(name) = name else {
                report.problems.push(Problem::StrayEntry {
                    path,
                    reason: "a file name that is not UTF-8",
                });
                continue;
            };
            if name.starts_with(".tmp") || name.starts_with("stat-") {
                // Temporary files (handled with tmp/) and context stat caches (a bad one is
                // only a slower build: it is read again from the files).
                continue;
            }
            if !name.ends_with(".json") || !path.is_file() {
                report.problems.push(Problem::StrayEntry {
                    path,
                    reason: "not a cache record",
                });
                continue;
            }
            report.cache_records += 1;
            let bytes = fs::read(&path).map_err(file_error("reading", &path))?;
            let record: CacheRecord = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(error) => {
                    report.problems.push(Problem::BadCacheRecord {
                        path,
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            for digest in &record.blobs {
                if !self.layout().has_blob(digest) {
                    report.problems.push(Problem::MissingBlob {
                        digest: digest.clone(),
                        needed_by: format!("cache record {}", path.display()),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_snapshots(&self, report: &mut CheckReport) -> Result<(), StoreError> {
        for (path, name) in entries(&self.root().join("snapshots").join("sha256"))? {
            let is_snapshot = name.as_deref().is_some_and(is_hex_digest)
                && fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir());
            if is_snapshot {
                report.snapshots += 1;
            } else {
                report.problems.push(Problem::StrayEntry {
                    path,
                    reason: "not a snapshot (a directory named by a diff_id)",
                });
            }
        }
        Ok(())
    }

    fn check_block_maps(&self, report: &mut CheckReport) -> Result<(), StoreError> {
        let blobs = self.root().join("blobs").join("sha256");
        for (path, name) in entries(&self.root().join(crate::layer::blocks::BLOCKS_DIR))? {
            let bad = |reason: String| Problem::BadBlockMap {
                path: path.clone(),
                reason,
            };
            let Some(name) = name.filter(|name| is_hex_digest(name)) else {
                report
                    .problems
                    .push(bad("not named by a blob digest".to_owned()));
                continue;
            };
            let Ok(blob) = fs::metadata(blobs.join(&name)) else {
                report
                    .problems
                    .push(bad(format!("blob sha256:{name} is gone")));
                continue;
            };
            match crate::layer::blocks::check_map(&path, blob.len()) {
                Ok(_) => report.block_maps += 1,
                Err(error) => report.problems.push(bad(match error {
                    crate::layer::blocks::MapError::Invalid { reason, .. } => reason.to_owned(),
                    crate::layer::blocks::MapError::Read { source, .. } => source.to_string(),
                })),
            }
        }
        Ok(())
    }

    /// What killed processes may have left: every entry of `tmp/`, and `.tmp*` files in
    /// `cache/`.
    pub(super) fn temporary_entries(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut found: Vec<PathBuf> = entries(&self.layout().tmp_dir())?
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        found.extend(
            entries(&self.root().join("cache"))?
                .into_iter()
                .filter(|(_, name)| name.as_deref().is_some_and(|name| name.starts_with(".tmp")))
                .map(|(path, _)| path),
        );
        Ok(found)
    }
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// The entries of a directory (none when it does not exist), sorted, with their names when
/// UTF-8.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>, StoreError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::File {
                action: "listing",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry.map_err(file_error("listing", dir))?;
        found.push((entry.path(), entry.file_name().into_string().ok()));
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::new_image_config;

    fn store_with_image() -> (tempfile::TempDir, Store, Digest, Descriptor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (layer, size) = store.layout().write_blob(b"layer bytes").unwrap();
        let mut config = new_image_config(&crate::platform::host(), None);
        config
            .rootfs_mut()
            .diff_ids_mut()
            .push(crate::oci::sha256_digest(b"diff").to_string());
        let manifest = store
            .put_image(
                &config,
                vec![Descriptor::new(
                    MediaType::ImageLayerGzip,
                    size,
                    layer.clone(),
                )],
            )
            .unwrap();
        let index = store.put_index(vec![manifest]).unwrap();
        store.set_ref("app:1", &index).unwrap();
        (dir, store, layer, index)
    }

    #[test]
    fn a_sound_store_is_clean_and_leftovers_are_removed() {
        let (_dir, store, _, _) = store_with_image();
        store
            .put_cache_record(
                "k",
                &CacheRecord {
                    blobs: vec![crate::oci::sha256_digest(b"layer bytes")],
                    ..CacheRecord::default()
                },
            )
            .unwrap();
        fs::create_dir_all(store.layout().tmp_dir().join("step-x/upper")).unwrap();
        fs::write(store.layout().tmp_dir().join("blob-y"), "half").unwrap();
        fs::write(store.root().join("cache").join(".tmpAbc"), "half").unwrap();
        // What a killed RUN step's sandbox leaves (its mount point, resolv.conf, hosts).
        let sandbox = store.layout().tmp_dir().join("xbuild-step-Ab12");
        fs::create_dir_all(sandbox.join("root")).unwrap();
        fs::write(sandbox.join("resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        let report = store.check(Cleanup::Keep).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.temporary_in_use, 4);
        assert_eq!(
            (report.blobs_verified, report.images, report.cache_records),
            (4, 1, 1)
        );
        let report = store.check(Cleanup::Remove).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.temporary_removed.0, 4);
        assert_eq!(fs::read_dir(store.layout().tmp_dir()).unwrap().count(), 0);
        assert!(!store.root().join("cache").join(".tmpAbc").exists());
    }

    #[test]
    fn leftovers_stay_while_another_process_holds_the_store() {
        let (dir, store, _, _) = store_with_image();
        fs::write(store.layout().tmp_dir().join("blob-y"), "half").unwrap();
        // A second handle is another holder of the shared lock, as another process is.
        let other = Store::open(dir.path()).unwrap();
        let report = store.check(Cleanup::Remove).unwrap();
        assert!(report.is_ok());
        assert_eq!(
            (report.temporary_in_use, report.temporary_removed.0),
            (1, 0)
        );
        assert!(store.layout().tmp_dir().join("blob-y").exists());
        drop(other);
    }

    #[test]
    fn damage_is_reported() {
        let (_dir, store, layer, _) = store_with_image();
        // A corrupt blob, a missing layer, a record naming a blob that is not there, a bad
        // record, stray entries.
        let (config_like, _) = store.layout().write_blob(b"{}").unwrap();
        fs::write(store.layout().blob_path(&config_like).unwrap(), b"{ }").unwrap();
        fs::remove_file(store.layout().blob_path(&layer).unwrap()).unwrap();
        store
            .put_cache_record(
                "k",
                &CacheRecord {
                    blobs: vec![crate::oci::sha256_digest(b"never written")],
                    ..CacheRecord::default()
                },
            )
            .unwrap();
        fs::write(store.root().join("cache").join("bad.json"), "{").unwrap();
        fs::write(store.root().join("blobs/sha256/not-a-digest"), "x").unwrap();
        fs::write(
            store.root().join("snapshots/sha256").join("f".repeat(64)),
            "",
        )
        .unwrap();
        let report = store.check(Cleanup::Remove).unwrap();
        let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|line| line.contains(needle));
        assert!(has(&format!("corrupt blob {config_like}")), "{text:#?}");
        assert!(
            has(&format!("missing blob {layer}, needed by image app:1")),
            "{text:#?}"
        );
        assert!(has("needed by cache record"), "{text:#?}");
        assert!(has("bad.json does not parse"), "{text:#?}");
        assert!(has("not-a-digest: not a blob"), "{text:#?}");
        assert!(has("not a snapshot"), "{text:#?}");
        assert_eq!(report.problems.len(), 6, "{text:#?}");
    }

    #[test]
    fn an_index_missing_whole_platforms_is_a_partial_pull_not_damage() {
        let (_dir, store, _, index) = store_with_image();
        let mut document = image::read_index(store.layout(), index.digest()).unwrap();
        let mut absent = document.manifests()[0].clone();
        absent.set_digest(crate::oci::sha256_digest(b"another platform"));
        let mut manifests = document.manifests().clone();
        manifests.push(absent);
        document.set_manifests(manifests);
        let partial =
            image::write_json_blob(store.layout(), MediaType::ImageIndex, &document).unwrap();
        store.set_ref("partial:1", &partial).unwrap();
        let report = store.check(Cleanup::Remove).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.absent_platforms, 1);
    }
}

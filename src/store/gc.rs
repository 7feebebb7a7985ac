//! Garbage collection (everything not reachable from a name in `index.json` or a cache
//! record goes; a referrer is reachable while its subject is) and disk usage.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::{CacheRecord, Store, StoreError, file_error};
use crate::oci::image;

/// How long garbage collection waits for other xbuild processes to let go of the store.
const GC_WAIT: Duration = Duration::from_secs(60);

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: u64,
    /// Snapshots removed.
    pub snapshots: u64,
    /// Cache records removed.
    pub cache_records: u64,
    /// Referrer entries removed from `index.json` (their subject was gone).
    pub referrers: u64,
    /// Bytes freed (blobs, snapshots, temporary files).
    pub bytes: u64,
}

/// What the store takes on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Blobs reachable from a named image: count and bytes.
    pub image_blobs: (u64, u64),
    /// Blobs kept only by cache records.
    pub cache_blobs: (u64, u64),
    /// Blobs nothing refers to (`xbuild prune` removes them).
    pub unreferenced_blobs: (u64, u64),
    /// Snapshots: count and bytes on disk.
    pub snapshots: (u64, u64),
    /// Snapshots nothing refers to.
    pub unreferenced_snapshots: (u64, u64),
    /// Cache records.
    pub cache_records: u64,
    /// Temporary files (left by interrupted writes).
    pub tmp_bytes: u64,
}

struct Roots {
    image_blobs: HashSet<String>,
    cache_blobs: HashSet<String>,
    diff_ids: HashSet<String>,
    /// Referrers whose subject is not kept: their entries go.
    dangling_referrers: HashSet<oci_spec::image::Digest>,
}

impl Store {
    fn cache_records(&self) -> Result<Vec<(std::path::PathBuf, CacheRecord)>, StoreError> {
        let dir = self.root().join("cache");
        let mut records = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(records),
            Err(source) => {
                return Err(StoreError::File {
                    action: "listing",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries {
            let path = entry.map_err(file_error("listing", &dir))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let bytes = fs::read(&path).map_err(file_error("reading", &path))?;
                // A record that does not parse keeps nothing alive and is reported by du.
                if let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) {
                    records.push((path, record));
                }
            }
        }
        Ok(records)
    }

    fn roots(&self) -> Result<Roots, StoreError> {
        let mut image_digests = HashSet::new();
        let mut diff_ids = HashSet::new();
        for (_, descriptor) in self.refs()? {
            image::reachable_blobs(self.layout(), &descriptor, &mut image_digests)?;
            if let Ok(images) = image::list_images(self.layout(), &descriptor) {
                for resolved in images {
                    diff_ids.extend(resolved.config.rootfs().diff_ids().iter().cloned());
                }
            }
        }
        // Referrers of what is kept are kept, and theirs in turn.
        let reached: HashSet<_> = image_digests.iter().cloned().collect();
        let kept_referrers = self.referrer_closure(&reached)?;
        for (_, referrer) in &kept_referrers {
            image::reachable_blobs(self.layout(), referrer, &mut image_digests)?;
        }
        let kept: HashSet<_> = kept_referrers
            .iter()
            .map(|(_, referrer)| referrer.digest().clone())
            .collect();
        let dangling_referrers = self
            .layout()
            .all_referrers()?
            .into_iter()
            .map(|(_, referrer)| referrer.digest().clone())
            .filter(|digest| !kept.contains(digest))
            .collect();
        let mut cache_blobs = HashSet::new();
        for (_, record) in self.cache_records()? {
            cache_blobs.extend(record.blobs.iter().map(ToString::to_string));
            diff_ids.extend(record.diff_ids.iter().map(ToString::to_string));
        }
        Ok(Roots {
            image_blobs: image_digests.iter().map(ToString::to_string).collect(),
            cache_blobs,
            diff_ids,
            dangling_referrers,
        })
    }

    fn blob_files(&self) -> Result<Vec<(String, fs::Metadata)>, StoreError> {
        list_dir(&self.root().join("blobs").join("sha256"))
    }

    fn snapshot_dirs(&self) -> Result<Vec<(String, fs::Metadata)>, StoreError> {
        list_dir(&self.root().join("snapshots").join("sha256"))
    }

    /// Removes every blob and snapshot not reachable from a named image or a cache record,
    /// and leftover temporary files. With `drop_cache`, cache records go first (so what only
    /// they kept goes too). Waits for other xbuild processes using the store to finish.
    ///
    /// # Errors
    /// The store is busy for too long, or files cannot be removed.
    pub fn gc(&self, drop_cache: bool) -> Result<GcReport, StoreError> {
        self.use_lock.while_exclusive(GC_WAIT, || {
            let mut report = GcReport::default();
            if drop_cache {
                for (path, _) in self.cache_records()? {
                    fs::remove_file(&path).map_err(file_error("removing", &path))?;
                    report.cache_records += 1;
                }
            }
            let roots = self.roots()?;
            // Entries first: a referrer entry never names a removed blob.
            report.referrers = self
                .with_index_lock(|layout| Ok(layout.remove_referrers(&roots.dangling_referrers)?))?
                as u64;
            for (name, meta) in self.blob_files()? {
                let digest = format!("sha256:{name}");
                if roots.image_blobs.contains(&digest) || roots.cache_blobs.contains(&digest) {
                    continue;
                }
                let path = self.root().join("blobs").join("sha256").join(&name);
                fs::remove_file(&path).map_err(file_error("removing", &path))?;
                report.blobs += 1;
                report.bytes += meta.len();
            }
            for (name, _) in self.snapshot_dirs()? {
                if roots.diff_ids.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let path = self.root().join("snapshots").join("sha256").join(&name);
                report.bytes += tree_size(&path);
                fs::remove_dir_all(&path).map_err(file_error("removing", &path))?;
                report.snapshots += 1;
            }
            // Nobody else holds the store: whatever is in tmp/ (and temporary files in cache/)
            // was left by a killed process.
            for path in self.temporary_entries()? {
                report.bytes += tree_size(&path);
                let _ = if path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
            Ok(report)
        })
    }

    /// What the store takes on disk, by kind.
    ///
    /// # Errors
    /// `index.json` or a directory cannot be read.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let roots = self.roots()?;
        let mut usage = DiskUsage::default();
        for (name, meta) in self.blob_files()? {
            let digest = format!("sha256:{name}");
            let slot = if roots.image_blobs.contains(&digest) {
                &mut usage.image_blobs
            } else if roots.cache_blobs.contains(&digest) {
                &mut usage.cache_blobs
            } else {
                &mut usage.unreferenced_blobs
            };
            slot.0 += 1;
            slot.1 += meta.blocks() * 512;
        }
        for (name, _) in self.snapshot_dirs()? {
            let size = tree_size(&self.root().join("snapshots").join("sha256").join(&name));
            usage.snapshots.0 += 1;
            usage.snapshots.1 += size;
            if !roots.diff_ids.contains(&format!("sha256:{name}")) {
                usage.unreferenced_snapshots.0 += 1;
                usage.unreferenced_snapshots.1 += size;
            }
        }
        usage.cache_records = self.cache_records()?.len() as u64;
        usage.tmp_bytes = fs::read_dir(self.layout().tmp_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| tree_size(&entry.path()))
                    .sum()
            })
            .unwrap_or(0);
        Ok(usage)
    }
}

fn list_dir(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, StoreError> {
    let mut items = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(items),
        Err(source) => {
            return Err(StoreError::File {
                action: "listing",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(file_error("listing", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.len() != 64 || !name.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(file_error("inspecting", &entry.path()))?;
        items.push((name, meta));
    }
    Ok(items)
}

/// Bytes a tree takes on disk (allocated blocks), each inode counted once.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&current) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&current) {
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        }
    }
    total
}

//! Garbage collection (everything not reachable from a name in `index.json` or a cache
//! record goes; a referrer is reachable while its subject is), pruning the build cache by BuildKit's rules (record types, last use, a size
//! to keep) and disk usage.
//!
//! The build cache is made of cache records (`cache/*.json`, BuildKit's `regular` records:
//! what they keep alive of blobs and snapshots no named image needs) and cache-mount
//! directories (`cache-mounts/`, BuildKit's `exec.cachemount`). A record's or a mount's last
//! use is its modification time: [`Store::cache_record`] and the build's `RUN --mount=type=cache`
//! touch it. Pruning and collection hold the store exclusively (no build runs meanwhile), so
//! nothing in use is ever removed. A blob's gzip block map (`blocks/<hex>`) goes just before
//! the blob, and maps left without a blob or damaged go too. This module must not decide
//! what a build caches.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{CacheRecord, Store, StoreError, file_error};
use crate::layer::blocks::BLOCKS_DIR;
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
    /// Cache-mount directories removed.
    pub cache_mounts: u64,
    /// Gzip block maps removed (their blob was removed, or they were not valid).
    pub block_maps: u64,
    /// Bytes freed (blobs, snapshots, block maps, temporary files).
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
    /// Snapshots: count and bytes on disk (a file with names in several snapshots, a
    /// `COPY`'s hard link to its earlier snapshot, counted once).
    pub snapshots: (u64, u64),
    /// Snapshots nothing refers to: count, and the bytes removing them frees (not their
    /// files that a kept snapshot links to).
    pub unreferenced_snapshots: (u64, u64),
    /// Cache records.
    pub cache_records: u64,
    /// Temporary files (left by interrupted writes).
    pub tmp_bytes: u64,
    /// Cache-mount directories (`RUN --mount=type=cache`): count and bytes.
    pub cache_mounts: (u64, u64),
    /// Gzip block maps (where the blocks of gzip blobs are, for reuse): count and bytes.
    pub block_maps: (u64, u64),
}

/// The kinds of build-cache records, under BuildKit's names (`docker buildx du --verbose`'s
/// `Type`, `prune --filter type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// A build step's result (`cache/*.json`) and what it keeps of blobs and snapshots.
    Regular,
    /// A `RUN --mount=type=cache` directory.
    ExecCacheMount,
    /// A local build context copy: xbuild reads the context in place and keeps none.
    SourceLocal,
    /// A git checkout: xbuild keeps none (a checkout lives in a temporary directory for one
    /// step or one build; the step cache keeps its result).
    SourceGitCheckout,
    /// BuildKit's internal helper images: xbuild has none.
    Internal,
    /// `# syntax=` frontend images: xbuild has none (its frontend is built in).
    Frontend,
}

impl RecordType {
    /// Every type, in BuildKit's order.
    pub const ALL: [Self; 6] = [
        Self::Internal,
        Self::Frontend,
        Self::SourceLocal,
        Self::SourceGitCheckout,
        Self::ExecCacheMount,
        Self::Regular,
    ];

    /// BuildKit's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::ExecCacheMount => "exec.cachemount",
            Self::SourceLocal => "source.local",
            Self::SourceGitCheckout => "source.git.checkout",
            Self::Internal => "internal",
            Self::Frontend => "frontend",
        }
    }

    /// The type named `name`, if it is one of BuildKit's.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// What `xbuild prune` removes, as BuildKit's prune options say it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Only records of these types (empty: every type).
    pub types: Vec<RecordType>,
    /// Never records of these types (`type!=`).
    pub excluded_types: Vec<RecordType>,
    /// Keep what was used within this long (`--filter until=`).
    pub keep_duration: Option<Duration>,
    /// Always allow this much cache (`--reserved-space`, `--keep-storage`).
    pub reserved_space: u64,
    /// Prune down to this much cache (`--max-used-space`).
    pub max_used_space: u64,
    /// Prune until the file system has this much free (`--min-free-space`).
    pub min_free_space: u64,
}

impl PrunePolicy {
    fn selects(&self, kind: RecordType) -> bool {
        (self.types.is_empty() || self.types.contains(&kind))
            && !self.excluded_types.contains(&kind)
    }

    /// The cache size to prune down to, BuildKit's way: 0 means no cap (remove everything
    /// selected); else the larger of the reserved space and what `max_used_space` and
    /// `min_free_space` allow.
    fn keep_bytes(&self, total: u64, free: u64) -> u64 {
        if self.max_used_space == 0 && self.reserved_space == 0 && self.min_free_space == 0 {
            return 0;
        }
        let mut keep = self.max_used_space;
        let excess = self.min_free_space.saturating_sub(free);
        if excess > 0 {
            let allowed = total.saturating_sub(excess);
            keep = if keep == 0 {
                allowed
            } else {
                keep.min(allowed)
            };
        } else if self.min_free_space != 0 && keep == 0 {
            // Enough is free already: nothing goes for this reason.
            keep = total;
        }
        keep.max(self.reserved_space)
    }
}

/// One build-cache entry, as `xbuild du --verbose` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The record's key, or the cache mount's directory name.
    pub id: String,
    /// Its type.
    pub kind: RecordType,
    /// Bytes of blobs and snapshots it keeps that no named image needs (each counted for
    /// every entry that keeps it), or the mount's size.
    pub size: u64,
    /// Whether it keeps something a named image needs too.
    pub shared: bool,
    /// When it was last used (written, or read by a build).
    pub last_used: SystemTime,
    /// What made it (the step's instruction), when known.
    pub description: Option<String>,
}

struct Roots {
    image_blobs: HashSet<String>,
    cache_blobs: HashSet<String>,
    diff_ids: HashSet<String>,
    /// Referrers whose subject is not kept: their entries go.
    dangling_referrers: HashSet<oci_spec::image::Digest>,
}

struct ImageRoots {
    blobs: HashSet<String>,
    diff_ids: HashSet<String>,
    /// Referrers whose subject is not kept.
    dangling_referrers: HashSet<oci_spec::image::Digest>,
}

/// One cache entry with its file and what it keeps.
struct LedgerItem {
    path: PathBuf,
    entry: CacheEntry,
    units: Vec<String>,
}

/// The build cache's entries, the blobs and snapshots ("units") they keep with how many
/// entries keep each, and the bytes of it all: removing an entry frees a unit only when no
/// other entry keeps it.
#[derive(Default)]
struct Ledger {
    entries: Vec<LedgerItem>,
    units: HashMap<String, (u64, usize)>,
    total: u64,
}

impl Ledger {
    fn add(&mut self, path: PathBuf, entry: CacheEntry, units: Vec<(String, u64)>) {
        if entry.kind == RecordType::ExecCacheMount {
            self.total += entry.size;
        }
        let mut names = Vec::new();
        for (name, size) in units {
            let slot = self.units.entry(name.clone()).or_insert((size, 0));
            if slot.1 == 0 {
                self.total += size;
            }
            slot.1 += 1;
            names.push(name);
        }
        self.entries.push(LedgerItem {
            path,
            entry,
            units: names,
        });
    }

    /// Takes entry `index` out of the totals.
    fn release(&mut self, index: usize) {
        let item = &self.entries[index];
        if item.entry.kind == RecordType::ExecCacheMount {
            self.total = self.total.saturating_sub(item.entry.size);
        }
        for name in &item.units {
            if let Some(slot) = self.units.get_mut(name) {
                slot.1 -= 1;
                if slot.1 == 0 {
                    self.total = self.total.saturating_sub(slot.0);
                }
            }
        }
    }
}

/// A record's description: the last history line of the state it keeps (the step's
/// instruction), when it has one.
fn describe(data: &serde_json::Value) -> Option<String> {
    data.pointer("/config/history")?
        .as_array()?
        .last()?
        .get("created_by")?
        .as_str()
        .map(str::to_owned)
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

    /// The blobs and snapshots named images need.
    fn image_roots(&self) -> Result<ImageRoots, StoreError> {
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
        Ok(ImageRoots {
            blobs: image_digests.iter().map(ToString::to_string).collect(),
            diff_ids,
            dangling_referrers,
        })
    }

    fn roots(&self) -> Result<Roots, StoreError> {
        let ImageRoots {
            blobs: image_blobs,
            mut diff_ids,
            dangling_referrers,
        } = self.image_roots()?;
        let mut cache_blobs = HashSet::new();
        for (_, record) in self.cache_records()? {
            cache_blobs.extend(record.blobs.iter().map(ToString::to_string));
            diff_ids.extend(record.diff_ids.iter().map(ToString::to_string));
        }
        Ok(Roots {
            image_blobs,
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
            self.sweep(&mut report)?;
            Ok(report)
        })
    }

    /// Prunes the build cache by `policy` (least recently used first when a size is to be
    /// kept), then removes what nothing refers to any more, as [`Self::gc`] does. Waits for
    /// other xbuild processes using the store to finish, so no build is using what goes.
    ///
    /// # Errors
    /// The store is busy for too long, or files cannot be read or removed.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<(GcReport, Vec<CacheEntry>), StoreError> {
        self.use_lock.while_exclusive(GC_WAIT, || {
            let mut report = GcReport::default();
            let mut ledger = self.ledger()?;
            let free = nix::sys::statvfs::statvfs(self.root())
                .map(|stat| stat.blocks_available() * stat.fragment_size())
                .unwrap_or(u64::MAX);
            let keep = policy.keep_bytes(ledger.total, free);
            let now = SystemTime::now();
            let mut candidates: Vec<usize> = (0..ledger.entries.len())
                .filter(|&index| {
                    let entry = &ledger.entries[index].entry;
                    policy.selects(entry.kind)
                        && policy.keep_duration.is_none_or(|duration| {
                            now.duration_since(entry.last_used).unwrap_or_default() >= duration
                        })
                })
                .collect();
            candidates.sort_by_key(|&index| ledger.entries[index].entry.last_used);
            let mut removed = Vec::new();
            for index in candidates {
                if keep > 0 && ledger.total <= keep {
                    break;
                }
                ledger.release(index);
                let item = &ledger.entries[index];
                if item.entry.kind == RecordType::ExecCacheMount {
                    report.bytes += item.entry.size;
                    fs::remove_dir_all(&item.path).map_err(file_error("removing", &item.path))?;
                    report.cache_mounts += 1;
                } else {
                    fs::remove_file(&item.path).map_err(file_error("removing", &item.path))?;
                    report.cache_records += 1;
                }
                removed.push(item.entry.clone());
            }
            self.sweep(&mut report)?;
            Ok((report, removed))
        })
    }

    /// Every build-cache entry (records and cache mounts), for `du --verbose`.
    ///
    /// # Errors
    /// `index.json` or a directory cannot be read.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        let mut entries: Vec<CacheEntry> = self
            .ledger()?
            .entries
            .into_iter()
            .map(|item| item.entry)
            .collect();
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.last_used));
        Ok(entries)
    }

    /// The cache-mount directories: path, name and last use.
    fn cache_mount_dirs(&self) -> Result<Vec<(PathBuf, String, SystemTime)>, StoreError> {
        let dir = self.root().join("cache-mounts");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::File {
                    action: "listing",
                    path: dir,
                    source,
                });
            }
        };
        let mut mounts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(file_error("listing", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(file_error("inspecting", &path))?;
            if meta.is_dir() {
                let name = entry.file_name().to_string_lossy().into_owned();
                mounts.push((
                    path,
                    name,
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        Ok(mounts)
    }

    /// The build cache's entries and what each keeps, with the bytes only the cache keeps.
    fn ledger(&self) -> Result<Ledger, StoreError> {
        let images = self.image_roots()?;
        let blob_sizes: HashMap<String, u64> = self
            .blob_files()?
            .into_iter()
            .map(|(name, meta)| (format!("sha256:{name}"), meta.blocks() * 512))
            .collect();
        let snapshot_dir = self.root().join("snapshots").join("sha256");
        let mut ledger = Ledger::default();
        for (path, record) in self.cache_records()? {
            let meta = fs::metadata(&path).map_err(file_error("inspecting", &path))?;
            let mut units = Vec::new();
            let mut shared = false;
            for blob in &record.blobs {
                let digest = blob.to_string();
                if images.blobs.contains(&digest) {
                    shared = true;
                } else {
                    let size = blob_sizes.get(&digest).copied().unwrap_or(0);
                    units.push((format!("blob {digest}"), size));
                }
            }
            for diff_id in &record.diff_ids {
                let digest = diff_id.to_string();
                if images.diff_ids.contains(&digest) {
                    shared = true;
                } else {
                    let key = format!("snapshot {digest}");
                    let size = match ledger.units.get(&key) {
                        Some((size, _)) => *size,
                        None => tree_size(&snapshot_dir.join(diff_id.digest())),
                    };
                    units.push((key, size));
                }
            }
            units.sort();
            units.dedup();
            let id = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let entry = CacheEntry {
                id,
                kind: RecordType::Regular,
                size: units.iter().map(|(_, size)| size).sum(),
                shared,
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                description: describe(&record.data),
            };
            ledger.add(path, entry, units);
        }
        for (path, name, last_used) in self.cache_mount_dirs()? {
            let size = tree_size(&path);
            let entry = CacheEntry {
                id: name,
                kind: RecordType::ExecCacheMount,
                size,
                shared: false,
                last_used,
                description: None,
            };
            ledger.add(path, entry, Vec::new());
        }
        Ok(ledger)
    }

    /// Removes what nothing refers to (the store is held exclusively by the caller).
    fn sweep(&self, report: &mut GcReport) -> Result<(), StoreError> {
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
            // The blob's block map first: a map never outlives its blob.
            self.remove_block_map(&self.root().join(BLOCKS_DIR).join(&name), report)?;
            let path = self.root().join("blobs").join("sha256").join(&name);
            fs::remove_file(&path).map_err(file_error("removing", &path))?;
            report.blobs += 1;
            report.bytes += meta.len();
        }
        // Maps left without their blob, or not valid (builds ignore those).
        for (name, _) in list_dir(&self.root().join(BLOCKS_DIR))? {
            let path = self.root().join(BLOCKS_DIR).join(&name);
            let blob = self.root().join("blobs").join("sha256").join(&name);
            let valid = fs::metadata(&blob)
                .is_ok_and(|meta| crate::layer::blocks::check_map(&path, meta.len()).is_ok());
            if !valid {
                self.remove_block_map(&path, report)?;
            }
        }
        // What the snapshots free is measured before any goes: a file linked from a kept
        // snapshot frees nothing, one linked only among the removed ones frees its bytes once.
        let unreferenced: Vec<PathBuf> = self
            .snapshot_dirs()?
            .into_iter()
            .filter(|(name, _)| !roots.diff_ids.contains(&format!("sha256:{name}")))
            .map(|(name, _)| self.root().join("snapshots").join("sha256").join(name))
            .collect();
        let mut freed = TreeSizes::default();
        for path in &unreferenced {
            freed.add(path);
        }
        for path in &unreferenced {
            fs::remove_dir_all(path).map_err(file_error("removing", path))?;
            report.snapshots += 1;
        }
        report.bytes += freed.freed();
        // Which snapshot each COPY made last: only while that snapshot is there.
        self.remove_stale_snapshot_sources()?;
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
        Ok(())
    }

    /// Removes a block map, if there.
    fn remove_block_map(&self, path: &Path, report: &mut GcReport) -> Result<(), StoreError> {
        let size = match fs::symlink_metadata(path) {
            Ok(meta) => meta.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(file_error("reading", path)(source)),
        };
        let removed = if fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        removed.map_err(file_error("removing", path))?;
        report.block_maps += 1;
        report.bytes += size;
        Ok(())
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
        // Snapshots share files (a `COPY`'s hard links to its earlier snapshot): the total
        // counts each file once, the unreferenced ones what `gc` would free by removing them.
        let mut all = TreeSizes::default();
        let mut unreferenced = TreeSizes::default();
        for (name, _) in self.snapshot_dirs()? {
            let path = self.root().join("snapshots").join("sha256").join(&name);
            usage.snapshots.0 += 1;
            usage.snapshots.1 += all.add(&path);
            if !roots.diff_ids.contains(&format!("sha256:{name}")) {
                usage.unreferenced_snapshots.0 += 1;
                unreferenced.add(&path);
            }
        }
        usage.unreferenced_snapshots.1 = unreferenced.freed();
        for (_, meta) in list_dir(&self.root().join(BLOCKS_DIR))? {
            usage.block_maps.0 += 1;
            usage.block_maps.1 += meta.blocks() * 512;
        }
        usage.cache_records = self.cache_records()?.len() as u64;
        for (path, _, _) in self.cache_mount_dirs()? {
            usage.cache_mounts.0 += 1;
            usage.cache_mounts.1 += tree_size(&path);
        }
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
    let mut sizes = TreeSizes::default();
    sizes.add(path)
}

/// The sizes of trees that may share inodes: a `COPY`'s snapshot holds hard links to the
/// files of the snapshot the same step made before (`executor::copy`), so a file can have
/// names in several snapshots. Each inode counts once across every tree added, and what
/// removing them all would free counts only the inodes with no name left elsewhere.
#[derive(Default)]
pub(crate) struct TreeSizes {
    /// Inode (device, number) → (bytes allocated, names seen in the trees added, names it
    /// has: `st_nlink`, or 0 for a directory, which has no other names).
    inodes: HashMap<(u64, u64), (u64, u64, u64)>,
}

impl TreeSizes {
    /// Adds the tree at `path`; returns the bytes of its inodes that no tree added before
    /// held.
    pub(crate) fn add(&mut self, path: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![path.to_path_buf()];
        while let Some(current) = stack.pop() {
            let Ok(meta) = fs::symlink_metadata(&current) else {
                continue;
            };
            let names = if meta.is_dir() { 0 } else { meta.nlink() };
            let slot = self
                .inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| {
                    total += meta.blocks() * 512;
                    (meta.blocks() * 512, 0, names)
                });
            slot.1 += 1;
            if meta.is_dir() {
                if let Ok(entries) = fs::read_dir(&current) {
                    stack.extend(entries.flatten().map(|entry| entry.path()));
                }
            }
        }
        total
    }

    /// Bytes that removing every tree added would free: an inode with a name outside them
    /// (another snapshot's hard link) stays on disk.
    pub(crate) fn freed(&self) -> u64 {
        self.inodes
            .values()
            .filter(|(_, seen, names)| seen >= names)
            .map(|(bytes, _, _)| bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(path: &Path) -> u64 {
        fs::symlink_metadata(path).unwrap().blocks() * 512
    }

    /// Three trees as a `COPY`'s snapshots are after a rebuild: `kept` (referenced),
    /// `old` (unreferenced) whose `shared` file is a hard link to `kept`'s, and `older`
    /// (unreferenced) whose `pair` file is a hard link to `old`'s.
    #[test]
    fn files_shared_by_hard_links_count_once_and_free_only_with_their_last_name() {
        let dir = tempfile::tempdir().unwrap();
        let [kept, old, older] = ["kept", "old", "older"].map(|name| dir.path().join(name));
        for tree in [&kept, &old, &older] {
            fs::create_dir(tree).unwrap();
        }
        fs::write(kept.join("shared"), vec![1u8; 64 * 1024]).unwrap();
        fs::hard_link(kept.join("shared"), old.join("shared")).unwrap();
        fs::write(old.join("pair"), vec![2u8; 32 * 1024]).unwrap();
        fs::hard_link(old.join("pair"), older.join("pair")).unwrap();
        let (shared, pair) = (blocks(&kept.join("shared")), blocks(&old.join("pair")));
        let dirs = [&kept, &old, &older].map(|tree| blocks(tree));
        assert!(shared > 0 && pair > 0);

        // Each tree alone counts its files in full.
        assert_eq!(tree_size(&old), dirs[1] + shared + pair);

        // Together, each inode once.
        let mut all = TreeSizes::default();
        assert_eq!(all.add(&kept), dirs[0] + shared);
        assert_eq!(all.add(&old), dirs[1] + pair);
        assert_eq!(all.add(&older), dirs[2]);

        // Removing `old` and `older` frees `pair` (both its names go) but not `shared`.
        let mut removed = TreeSizes::default();
        removed.add(&old);
        removed.add(&older);
        assert_eq!(removed.freed(), dirs[1] + dirs[2] + pair);
        // Removing `old` alone frees neither file: each has a name elsewhere.
        let mut removed = TreeSizes::default();
        removed.add(&old);
        assert_eq!(removed.freed(), dirs[1]);
    }
}

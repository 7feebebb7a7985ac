//! A digest of exactly the context entries a `COPY`/`ADD` reads, for cache keys.
//!
//! The digest is a sha256 over one record per entry, in bytewise path order:
//!
//! ```text
//! "xbuild-context-v1\0"
//! per entry: path bytes, 0x00, kind byte (f d l p c b), mode, uid, gid (u32 BE),
//!            file:    size (u64 BE), sha256 of the contents (32 bytes)
//!            symlink: target length (u64 BE), target bytes
//!            device:  rdev (u64 BE)
//! ```
//!
//! Timestamps are not part of it (Docker's cache ignores them too). File contents are read
//! in 64 KiB pieces, never whole, on up to 8 threads. A [`StatCache`] remembers each file's
//! content digest under (path, size, mtime, ctime, inode, device): a file whose stat is
//! unchanged is not read again. Files changed in the two seconds before hashing started are
//! not remembered, so that a write landing in the same timestamp tick as the hash is never
//! mistaken for "unchanged" (git's "racily clean" problem).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::ContextError;
use super::walk::{ContextEntry, EntryKind, Timestamp};
use crate::oci::Digester;

const RECORD_VERSION: &[u8] = b"xbuild-context-v1\0";
const CACHE_MAGIC: &[u8] = b"xbuild-stat-cache-v1\n";
/// Files changed this close to the start of hashing are not remembered.
const RACY_SECONDS: i64 = 2;
const MAX_THREADS: usize = 8;

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(entry: &ContextEntry) -> Self {
        Self {
            size: entry.size,
            mtime: entry.mtime,
            ctime: entry.ctime,
            inode: entry.inode,
            device: entry.device,
        }
    }
}

/// What is remembered of one file.
#[derive(Debug, Clone, Copy)]
struct Record {
    stamp: Stamp,
    digest: [u8; 32],
    /// Looked up or stored since the cache was loaded (kept by
    /// [`StatCache::prune_untouched`]).
    touched: bool,
}

/// Remembered file digests by context path.
type Records = HashMap<Box<[u8]>, Record>;

/// Content digests of context files keyed by their stat, kept in a file the caller chooses
/// (one per context directory) so that a rebuild with nothing changed reads no file.
#[derive(Debug, Default)]
pub struct StatCache {
    /// The context directory the records belong to.
    context: Vec<u8>,
    records: Records,
    changed: bool,
}

impl StatCache {
    /// An empty cache, not backed by a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the cache saved for `context_dir` in `file`. A missing, unreadable or corrupt
    /// file, or one saved for another directory, gives an empty cache: it is only a cache.
    pub fn load(file: &Path, context_dir: &Path) -> Self {
        let context = context_key(context_dir);
        let mut cache = Self {
            context: context.clone(),
            ..Self::default()
        };
        if let Ok(bytes) = std::fs::read(file) {
            if let Some(records) = decode(&bytes, &context) {
                cache.records = records;
            }
        }
        cache
    }

    /// Writes the cache to `file` (temporary file, then rename), if anything changed since
    /// it was loaded.
    ///
    /// # Errors
    /// [`ContextError::WriteStatCache`] when the file cannot be written.
    pub fn save(&mut self, file: &Path) -> Result<(), ContextError> {
        if !self.changed {
            return Ok(());
        }
        let error = |source| ContextError::WriteStatCache {
            path: file.to_path_buf(),
            source,
        };
        let directory = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut temporary = tempfile::NamedTempFile::new_in(directory).map_err(error)?;
        let mut writer = io::BufWriter::new(temporary.as_file_mut());
        writer.write_all(&self.encode()).map_err(error)?;
        writer.flush().map_err(error)?;
        drop(writer);
        temporary
            .persist(file)
            .map_err(|persist| error(persist.error))?;
        self.changed = false;
        Ok(())
    }

    /// Forgets the files no digest has asked about since the cache was loaded (files since
    /// deleted or renamed). Call it after the last digest of a build, before
    /// [`Self::save`]; a build whose `COPY`s read only part of the context keeps only that
    /// part.
    pub fn prune_untouched(&mut self) {
        let before = self.records.len();
        self.records.retain(|_, record| record.touched);
        if self.records.len() != before {
            self.changed = true;
        }
    }

    /// How many files it remembers.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// `true` when it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.records.len() * 120);
        out.extend_from_slice(CACHE_MAGIC);
        put_bytes(&mut out, &self.context);
        out.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        let mut paths: Vec<(&[u8], &Record)> = self
            .records
            .iter()
            .map(|(path, record)| (&**path, record))
            .collect();
        paths.sort_unstable_by_key(|(path, _)| *path);
        for (path, record) in paths {
            let (stamp, digest) = (&record.stamp, &record.digest);
            put_bytes(&mut out, path);
            out.extend_from_slice(&stamp.size.to_le_bytes());
            for time in [stamp.mtime, stamp.ctime] {
                out.extend_from_slice(&time.seconds.to_le_bytes());
                out.extend_from_slice(&time.nanoseconds.to_le_bytes());
            }
            out.extend_from_slice(&stamp.inode.to_le_bytes());
            out.extend_from_slice(&stamp.device.to_le_bytes());
            out.extend_from_slice(digest);
        }
        out
    }
}

/// The context directory as recorded in the cache: canonical when possible.
fn context_key(context_dir: &Path) -> Vec<u8> {
    std::fs::canonicalize(context_dir)
        .unwrap_or_else(|_| context_dir.to_path_buf())
        .as_os_str()
        .as_bytes()
        .to_vec()
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A little reader over the cache bytes; `None` means corrupt.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.u64()?).ok()?;
        self.take(length)
    }
    fn timestamp(&mut self) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: self.i64()?,
            nanoseconds: self.u32()?,
        })
    }
}

fn decode(bytes: &[u8], context: &[u8]) -> Option<Records> {
    let mut cursor = Cursor(bytes.strip_prefix(CACHE_MAGIC)?);
    if cursor.bytes()? != context {
        return None;
    }
    let count = usize::try_from(cursor.u64()?).ok()?;
    let mut records = HashMap::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let path: Box<[u8]> = cursor.bytes()?.into();
        let stamp = Stamp {
            size: cursor.u64()?,
            mtime: cursor.timestamp()?,
            ctime: cursor.timestamp()?,
            inode: cursor.u64()?,
            device: cursor.u64()?,
        };
        let digest: [u8; 32] = cursor.take(32)?.try_into().ok()?;
        records.insert(
            path,
            Record {
                stamp,
                digest,
                touched: false,
            },
        );
    }
    cursor.0.is_empty().then_some(records)
}

/// The digest of `entries` (see the module documentation), reading every file.
///
/// # Errors
/// [`ContextError::Read`] when a file cannot be read.
pub fn digest_entries(
    context_dir: &Path,
    entries: &[ContextEntry],
) -> Result<Digest, ContextError> {
    digest_entries_cached(context_dir, entries, &mut StatCache::new())
}

/// The digest of `entries`, reusing and updating the file digests in `cache`.
///
/// # Errors
/// [`ContextError::Read`] when a file cannot be read.
pub fn digest_entries_cached<'a>(
    context_dir: &Path,
    entries: impl IntoIterator<Item = &'a ContextEntry>,
    cache: &mut StatCache,
) -> Result<Digest, ContextError> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let mut sorted: Vec<&ContextEntry> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.path_bytes().cmp(b.path_bytes()));

    // Content digests: from the cache, or read (in parallel) for the rest.
    let mut contents: Vec<Option<[u8; 32]>> = vec![None; sorted.len()];
    let mut to_read = Vec::new();
    for (index, entry) in sorted.iter().enumerate() {
        if entry.kind != EntryKind::File {
            continue;
        }
        match cache.records.get_mut(entry.path_bytes()) {
            Some(record) => {
                record.touched = true;
                if record.stamp == Stamp::of(entry) {
                    contents[index] = Some(record.digest);
                } else {
                    to_read.push(index);
                }
            }
            None => to_read.push(index),
        }
    }
    let read = hash_files(context_dir, &sorted, &to_read)?;
    for (index, digest) in to_read.iter().zip(read) {
        contents[*index] = Some(digest);
        let entry = sorted[*index];
        let recent = |time: Timestamp| time.seconds >= started - RACY_SECONDS;
        if !recent(entry.mtime) && !recent(entry.ctime) {
            cache.records.insert(
                entry.path_bytes().into(),
                Record {
                    stamp: Stamp::of(entry),
                    digest,
                    touched: true,
                },
            );
            cache.changed = true;
        }
    }

    let mut digester = Digester::default();
    digester.update(RECORD_VERSION);
    for (entry, content) in sorted.iter().zip(&contents) {
        digester.update(entry.path_bytes());
        digester.update(&[0]);
        digester.update(&[match entry.kind {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Fifo => b'p',
            EntryKind::CharDevice => b'c',
            EntryKind::BlockDevice => b'b',
            EntryKind::Socket => b's',
        }]);
        for number in [entry.mode, entry.uid, entry.gid] {
            digester.update(&number.to_be_bytes());
        }
        match entry.kind {
            EntryKind::File => {
                digester.update(&entry.size.to_be_bytes());
                digester.update(&content.expect("every file was hashed above"));
            }
            EntryKind::Symlink => {
                let target = entry
                    .link_target
                    .as_deref()
                    .map_or(&[][..], |target| target.as_os_str().as_bytes());
                digester.update(&(target.len() as u64).to_be_bytes());
                digester.update(target);
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                digester.update(&entry.rdev.to_be_bytes());
            }
            EntryKind::Dir | EntryKind::Fifo | EntryKind::Socket => {}
        }
    }
    Ok(digester.finish().0)
}

/// The sha256 of each file `sorted[index]` for `index` in `indexes`, in that order.
fn hash_files(
    context_dir: &Path,
    sorted: &[&ContextEntry],
    indexes: &[usize],
) -> Result<Vec<[u8; 32]>, ContextError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |count| count.get())
        .clamp(1, MAX_THREADS)
        .min(indexes.len().div_ceil(64));
    let results: Mutex<Vec<Option<[u8; 32]>>> = Mutex::new(vec![None; indexes.len()]);
    let first_error: Mutex<Option<ContextError>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let position = next.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = indexes.get(position) else {
                break;
            };
            let entry = sorted[index];
            match hash_file(&context_dir.join(&entry.path), &mut buffer) {
                Ok(digest) => {
                    results.lock().expect("no panics while locked")[position] = Some(digest);
                }
                Err(source) => {
                    let mut slot = first_error.lock().expect("no panics while locked");
                    if slot.is_none() {
                        *slot = Some(ContextError::Read {
                            path: entry.path.clone(),
                            source,
                        });
                    }
                    // Stop everyone: the digest is lost anyway.
                    next.store(indexes.len(), Ordering::Relaxed);
                    break;
                }
            }
        }
    };
    if threads <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(work);
            }
        });
    }
    if let Some(error) = first_error.into_inner().expect("no panics while locked") {
        return Err(error);
    }
    Ok(results
        .into_inner()
        .expect("no panics while locked")
        .into_iter()
        .map(|digest| digest.expect("every file was hashed or an error returned"))
        .collect())
}

/// Streams one file through sha256.
fn hash_file(path: &PathBuf, buffer: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let count = match file.read(buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..count]);
    }
    Ok(hasher.finalize().into())
}

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
}

/// One remembered file: its record and where its path is in [`Records::paths`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    record: Record,
    start: u32,
    length: u32,
    /// Looked up or stored since the cache was loaded (kept by
    /// [`StatCache::prune_untouched`]).
    touched: bool,
}

/// Remembered file digests by context path: one array sorted by path and one buffer holding
/// the paths back to back, not a hash map with a heap key per file (at 100,000 files
/// about 14 MB instead of 20; issue 19 item 4).
#[derive(Debug, Default)]
struct Records {
    /// Sorted by path, each path once.
    slots: Vec<Slot>,
    /// The slots' paths (and, after a prune, some no slot names any more).
    paths: Vec<u8>,
}

impl Records {
    fn path(&self, slot: &Slot) -> &[u8] {
        &self.paths[slot.start as usize..slot.start as usize + slot.length as usize]
    }

    fn find(&self, path: &[u8]) -> Result<usize, usize> {
        let paths = &self.paths;
        self.slots.binary_search_by(|slot| {
            paths[slot.start as usize..slot.start as usize + slot.length as usize].cmp(path)
        })
    }

    fn get_mut(&mut self, path: &[u8]) -> Option<&mut Slot> {
        let index = self.find(path).ok()?;
        Some(&mut self.slots[index])
    }

    /// Adds `path` at the end of [`Self::paths`]: `None` when the buffer would pass 4 GiB
    /// (the file is then not remembered: it is only a cache).
    fn store_path(&mut self, path: &[u8]) -> Option<(u32, u32)> {
        let start = u32::try_from(self.paths.len()).ok()?;
        let length = u32::try_from(path.len()).ok()?;
        start.checked_add(length)?;
        self.paths.extend_from_slice(path);
        Some((start, length))
    }

    /// Appends a slot whose path sorts after every other (when decoding a saved cache,
    /// which is sorted); `None` when it does not.
    fn push_sorted(&mut self, path: &[u8], record: Record) -> Option<()> {
        if let Some(last) = self.slots.last() {
            if self.path(last) >= path {
                return None;
            }
        }
        let (start, length) = self.store_path(path)?;
        self.slots.push(Slot {
            record,
            start,
            length,
            touched: false,
        });
        Some(())
    }

    /// Stores `record` for `path`: replaced in place when the path is remembered, else
    /// added (to be merged into the sorted slots by [`Self::merge_added`]).
    fn store(&mut self, path: &[u8], record: Record, added: &mut Vec<Slot>) {
        if let Some(slot) = self.get_mut(path) {
            slot.record = record;
            slot.touched = true;
        } else if let Some((start, length)) = self.store_path(path) {
            added.push(Slot {
                record,
                start,
                length,
                touched: true,
            });
        }
    }

    /// Merges `added` (new paths, sorted, none twice) into the sorted slots, in place from
    /// the end (no second array).
    fn merge_added(&mut self, added: Vec<Slot>) {
        if added.is_empty() {
            return;
        }
        // Nothing remembered yet (a first build): the added slots are the slots, not copied
        // beside them.
        if self.slots.is_empty() {
            self.slots = added;
            return;
        }
        let old = self.slots.len();
        self.slots.reserve_exact(added.len());
        self.slots.extend_from_slice(&added);
        let (mut i, mut j, mut write) = (old, added.len(), old + added.len());
        while j > 0 {
            write -= 1;
            if i > 0 && self.path(&self.slots[i - 1]) > self.path(&added[j - 1]) {
                self.slots[write] = self.slots[i - 1];
                i -= 1;
            } else {
                self.slots[write] = added[j - 1];
                j -= 1;
            }
        }
    }
}

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
        if let Ok(saved) = File::open(file) {
            if let Some(records) = decode(io::BufReader::with_capacity(1 << 16, saved), &context) {
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
        let mut writer = io::BufWriter::with_capacity(1 << 16, temporary.as_file_mut());
        self.encode_into(&mut writer).map_err(error)?;
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
        let before = self.records.slots.len();
        self.records.slots.retain(|slot| slot.touched);
        if self.records.slots.len() != before {
            self.changed = true;
        }
    }

    /// How many files it remembers.
    pub fn len(&self) -> usize {
        self.records.slots.len()
    }

    /// `true` when it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.records.slots.is_empty()
    }

    /// The saved form, written as it is made (at 100,000 files about 13 MB that are not
    /// held in memory).
    fn encode_into(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(CACHE_MAGIC)?;
        put_bytes(out, &self.context)?;
        out.write_all(&(self.records.slots.len() as u64).to_le_bytes())?;
        // Sorted by path already.
        for slot in &self.records.slots {
            let (path, record) = (self.records.path(slot), &slot.record);
            let (stamp, digest) = (&record.stamp, &record.digest);
            put_bytes(out, path)?;
            out.write_all(&stamp.size.to_le_bytes())?;
            for time in [stamp.mtime, stamp.ctime] {
                out.write_all(&time.seconds.to_le_bytes())?;
                out.write_all(&time.nanoseconds.to_le_bytes())?;
            }
            out.write_all(&stamp.inode.to_le_bytes())?;
            out.write_all(&stamp.device.to_le_bytes())?;
            out.write_all(digest)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out).expect("writing to a Vec");
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

fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)
}

/// The longest path or context directory a saved cache may hold (Linux's `PATH_MAX` is
/// 4096): a longer length is corrupt, not something to allocate.
const MAX_SAVED_PATH: usize = 1 << 16;

/// A little reader over the saved cache, read as it is decoded (not whole into memory);
/// `None` means corrupt or unreadable.
struct Cursor<R> {
    reader: R,
    /// The last path read.
    bytes: Vec<u8>,
}

impl<R: Read> Cursor<R> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut array = [0; N];
        self.reader.read_exact(&mut array).ok()?;
        Some(array)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let length = usize::try_from(self.u64()?).ok()?;
        if length > MAX_SAVED_PATH {
            return None;
        }
        self.bytes.resize(length, 0);
        self.reader.read_exact(&mut self.bytes).ok()?;
        Some(&self.bytes)
    }
    fn timestamp(&mut self) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: self.i64()?,
            nanoseconds: self.u32()?,
        })
    }
    fn at_end(&mut self) -> bool {
        matches!(self.reader.read(&mut [0]), Ok(0))
    }
}

fn decode(reader: impl Read, context: &[u8]) -> Option<Records> {
    let mut cursor = Cursor {
        reader,
        bytes: Vec::new(),
    };
    if cursor.array::<{ CACHE_MAGIC.len() }>()? != CACHE_MAGIC {
        return None;
    }
    if cursor.bytes()? != context {
        return None;
    }
    let count = usize::try_from(cursor.u64()?).ok()?;
    let mut records = Records {
        slots: Vec::with_capacity(count.min(1 << 20)),
        paths: Vec::new(),
    };
    for _ in 0..count {
        cursor.bytes()?;
        // Kept aside while the rest is read, then given back (one buffer for every path).
        let path = std::mem::take(&mut cursor.bytes);
        let stamp = Stamp {
            size: cursor.u64()?,
            mtime: cursor.timestamp()?,
            ctime: cursor.timestamp()?,
            inode: cursor.u64()?,
            device: cursor.u64()?,
        };
        let digest: [u8; 32] = cursor.array()?;
        // Saved sorted, each path once: anything else is corrupt.
        records.push_sorted(&path, Record { stamp, digest })?;
        cursor.bytes = path;
    }
    records.paths.shrink_to_fit();
    cursor.at_end().then_some(records)
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
    // Files the cache does not know, and their paths' bytes: what it may add (room made
    // once, not grown to up to twice that: 10 MB of slots at 100,000 files).
    let (mut unknown, mut unknown_bytes) = (0, 0);
    for (index, entry) in sorted.iter().enumerate() {
        if entry.kind != EntryKind::File {
            continue;
        }
        match cache.records.get_mut(entry.path_bytes()) {
            Some(slot) => {
                slot.touched = true;
                if slot.record.stamp == Stamp::of(entry) {
                    contents[index] = Some(slot.record.digest);
                } else {
                    to_read.push(index);
                }
            }
            None => {
                to_read.push(index);
                unknown += 1;
                unknown_bytes += entry.path_bytes().len();
            }
        }
    }
    cache.records.paths.reserve_exact(unknown_bytes);
    let read = hash_files(context_dir, &sorted, &to_read)?;
    // In path order (`to_read` follows `sorted`): what is new merges into the sorted slots.
    let mut added = Vec::with_capacity(unknown);
    let mut last_added: Option<&[u8]> = None;
    for (index, digest) in to_read.iter().zip(read) {
        contents[*index] = Some(digest);
        let entry = sorted[*index];
        let recent = |time: Timestamp| time.seconds >= started - RACY_SECONDS;
        // The same path twice (entries given twice) is stored once.
        if !recent(entry.mtime) && !recent(entry.ctime) && last_added != Some(entry.path_bytes()) {
            let record = Record {
                stamp: Stamp::of(entry),
                digest,
            };
            cache.records.store(entry.path_bytes(), record, &mut added);
            last_added = Some(entry.path_bytes());
            cache.changed = true;
        }
    }
    cache.records.merge_added(added);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64) -> Record {
        Record {
            stamp: Stamp {
                size,
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                inode: size,
                device: 1,
            },
            digest: [u8::try_from(size % 256).unwrap(); 32],
        }
    }

    fn paths(records: &Records) -> Vec<&[u8]> {
        records
            .slots
            .iter()
            .map(|slot| records.path(slot))
            .collect()
    }

    #[test]
    fn stored_records_stay_sorted_and_replace_in_place() {
        // One per remembered file, no heap key beside it.
        assert!(std::mem::size_of::<Slot>() <= 104);
        let mut records = Records::default();
        let mut added = Vec::new();
        for (size, path) in [(1, &b"b"[..]), (2, b"d"), (3, b"f")] {
            records.store(path, record(size), &mut added);
        }
        records.merge_added(added);
        let mut added = Vec::new();
        for (size, path) in [(4, &b"a"[..]), (5, b"c"), (6, b"d"), (7, b"g")] {
            records.store(path, record(size), &mut added);
        }
        assert_eq!(added.len(), 3, "d is replaced in place");
        records.merge_added(added);
        assert_eq!(paths(&records), [&b"a"[..], b"b", b"c", b"d", b"f", b"g"]);
        assert_eq!(records.get_mut(b"d").unwrap().record.stamp.size, 6);
        assert_eq!(records.get_mut(b"g").unwrap().record.stamp.size, 7);
        assert!(records.get_mut(b"e").is_none());
    }

    #[test]
    fn a_saved_cache_round_trips_and_an_unsorted_one_is_corrupt() {
        let mut cache = StatCache {
            context: b"/ctx".to_vec(),
            ..StatCache::default()
        };
        let mut added = Vec::new();
        for (size, path) in [(1, &b"x/a"[..]), (2, b"x/b"), (3, b"y")] {
            cache.records.store(path, record(size), &mut added);
        }
        cache.records.merge_added(added);
        let bytes = cache.encode();
        let decoded = decode(&bytes[..], b"/ctx").unwrap();
        assert_eq!(paths(&decoded), [&b"x/a"[..], b"x/b", b"y"]);
        assert_eq!(decoded.slots[1].record.digest, [2; 32]);
        assert!(decoded.slots.iter().all(|slot| !slot.touched));
        // The same records, the first two swapped: not what `encode` writes.
        let mut swapped = Records::default();
        for (size, path) in [(2, &b"x/b"[..]), (1, b"x/a")] {
            let (start, length) = swapped.store_path(path).unwrap();
            swapped.slots.push(Slot {
                record: record(size),
                start,
                length,
                touched: false,
            });
        }
        let unsorted = StatCache {
            context: b"/ctx".to_vec(),
            records: swapped,
            changed: true,
        };
        assert!(decode(&unsorted.encode()[..], b"/ctx").is_none());
        // Cut short, or with bytes after the last record: corrupt too.
        assert!(decode(&bytes[..bytes.len() - 1], b"/ctx").is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer[..], b"/ctx").is_none());
    }
}

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
//! unchanged is not read again. In memory the cache is tied to the build's walk (a digest
//! per walk index; paths and stamps are the walk's); its saved form is unchanged. Files changed in the two seconds before hashing started are
//! not remembered, so that a write landing in the same timestamp tick as the hash is never
//! mistaken for "unchanged" (git's "racily clean" problem).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::ContextError;
use super::walk::{ContextEntries, ContextEntry, EntryKind, Timestamp};
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
    fn of(entry: &ContextEntry<'_>) -> Self {
        Self {
            size: entry.size(),
            mtime: entry.mtime(),
            ctime: entry.ctime(),
            inode: entry.inode(),
            device: entry.device(),
        }
    }
}

/// One remembered file: its index in the walk and its content digest. Its path and stamp
/// are the walk's: a saved record whose stamp differs from the walk's is dropped when
/// loading, so what is kept is valid for the whole build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    index: u32,
    digest: [u8; 32],
}

/// Content digests of context files keyed by their stat, kept in a file the caller chooses
/// (one per context directory) so that a rebuild with nothing changed reads no file.
///
/// In memory it is tied to one walk of the context ([`Self::load`]): 36 bytes per
/// remembered file, by the walk's index, with the walk's paths and stamps (at 100,000 files
/// 3.6 MB instead of 14 with paths and stamps of its own; issue 19 item 4). Entries of
/// another walk are neither looked up nor remembered.
#[derive(Debug, Default)]
pub struct StatCache {
    /// The context directory the records belong to.
    context: Vec<u8>,
    /// The walk the slots' indexes are of.
    walk: Option<Arc<ContextEntries>>,
    /// Sorted by index, each index once.
    slots: Vec<Slot>,
    /// One bit per index of the walk: looked up or stored since the cache was loaded
    /// (kept by [`StatCache::prune_untouched`]).
    touched: Vec<u64>,
    changed: bool,
}

impl StatCache {
    /// An empty cache, not backed by a file nor tied to a walk: it remembers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the cache saved for `context_dir` in `file`, keeping the files of `walk` (a
    /// walk of `context_dir`) whose saved stamp is the walk's. A missing, unreadable or
    /// corrupt file, or one saved for another directory, gives an empty cache: it is only
    /// a cache.
    pub fn load(file: &Path, context_dir: &Path, walk: Arc<ContextEntries>) -> Self {
        let context = context_key(context_dir);
        let slots = File::open(file)
            .ok()
            .and_then(|saved| {
                decode(
                    io::BufReader::with_capacity(1 << 16, saved),
                    &context,
                    &walk,
                )
            })
            .unwrap_or_default();
        Self {
            context,
            touched: vec![0; walk.len().div_ceil(64)],
            walk: Some(walk),
            slots,
            changed: false,
        }
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

    /// Forgets the files no digest has asked about since the cache was loaded. Call it
    /// after the last digest of a build, before [`Self::save`]; a build whose `COPY`s read
    /// only part of the context keeps only that part. (Files since deleted, renamed or
    /// ignored are forgotten when loading.)
    pub fn prune_untouched(&mut self) {
        let before = self.slots.len();
        let touched = &self.touched;
        self.slots
            .retain(|slot| is_set(touched, slot.index as usize));
        if self.slots.len() != before {
            self.changed = true;
        }
    }

    /// How many files it remembers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` when it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The index of `entry` in the walk the cache is tied to, if it is of that walk.
    fn index_of(&self, entry: &ContextEntry<'_>) -> Option<u32> {
        let walk = self.walk.as_ref()?;
        if walk.walk_id() != entry.walk_id() {
            return None;
        }
        u32::try_from(entry.index()).ok()
    }

    /// The remembered digest of the file at `index` of the walk, marked asked about.
    fn lookup(&mut self, index: u32) -> Option<[u8; 32]> {
        set(&mut self.touched, index as usize);
        self.remembered(index)
    }

    /// The remembered digest of the file at `index` of the walk.
    fn remembered(&self, index: u32) -> Option<[u8; 32]> {
        let at = self
            .slots
            .binary_search_by_key(&index, |slot| slot.index)
            .ok()?;
        Some(self.slots[at].digest)
    }

    /// Merges `added` (indexes not remembered, increasing) into the sorted slots, in place
    /// from the end (no second array).
    fn merge_added(&mut self, added: Vec<Slot>) {
        if added.is_empty() {
            return;
        }
        for slot in &added {
            set(&mut self.touched, slot.index as usize);
        }
        self.changed = true;
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
            if i > 0 && self.slots[i - 1].index > added[j - 1].index {
                self.slots[write] = self.slots[i - 1];
                i -= 1;
            } else {
                self.slots[write] = added[j - 1];
                j -= 1;
            }
        }
    }

    /// The saved form, written as it is made (at 100,000 files about 13 MB that are not
    /// held in memory): the paths and stamps are the walk's.
    fn encode_into(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(CACHE_MAGIC)?;
        put_bytes(out, &self.context)?;
        let Some(walk) = &self.walk else {
            return out.write_all(&0u64.to_le_bytes());
        };
        out.write_all(&(self.slots.len() as u64).to_le_bytes())?;
        // Sorted by index, so by path.
        for slot in &self.slots {
            let entry = walk.at(slot.index as usize);
            let stamp = Stamp::of(&entry);
            put_bytes(out, entry.path_bytes())?;
            out.write_all(&stamp.size.to_le_bytes())?;
            for time in [stamp.mtime, stamp.ctime] {
                out.write_all(&time.seconds.to_le_bytes())?;
                out.write_all(&time.nanoseconds.to_le_bytes())?;
            }
            out.write_all(&stamp.inode.to_le_bytes())?;
            out.write_all(&stamp.device.to_le_bytes())?;
            out.write_all(&slot.digest)?;
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

fn is_set(bits: &[u64], index: usize) -> bool {
    bits.get(index / 64)
        .is_some_and(|word| word & (1 << (index % 64)) != 0)
}

fn set(bits: &mut [u64], index: usize) {
    if let Some(word) = bits.get_mut(index / 64) {
        *word |= 1 << (index % 64);
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

/// The slots of the saved cache read from `reader` for the files of `walk` whose saved
/// stamp is the walk's (saved records and walk both sorted by path: one merge); `None` when
/// the cache is corrupt or saved for another `context`.
fn decode(reader: impl Read, context: &[u8], walk: &ContextEntries) -> Option<Vec<Slot>> {
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
    let mut slots = Vec::with_capacity(count.min(walk.len()));
    let mut previous: Option<Vec<u8>> = None;
    // The walk's first entry whose path is not before the last saved path.
    let mut at = 0;
    for _ in 0..count {
        cursor.bytes()?;
        // Kept aside while the rest is read, then given back (two buffers for every path).
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
        if previous.as_ref().is_some_and(|previous| *previous >= path) {
            return None;
        }
        while at < walk.len() && walk.at(at).path_bytes() < path.as_slice() {
            at += 1;
        }
        if let Some(entry) = walk.get(at) {
            if entry.path_bytes() == path.as_slice()
                && entry.kind() == EntryKind::File
                && Stamp::of(&entry) == stamp
            {
                slots.push(Slot {
                    index: u32::try_from(at).ok()?,
                    digest,
                });
            }
        }
        cursor.bytes = previous.replace(path).unwrap_or_default();
    }
    slots.shrink_to_fit();
    cursor.at_end().then_some(slots)
}

/// The digest of `entries` (see the module documentation), reading every file.
///
/// # Errors
/// [`ContextError::Read`] when a file cannot be read.
pub fn digest_entries(
    context_dir: &Path,
    entries: &ContextEntries,
) -> Result<Digest, ContextError> {
    digest_entries_cached(context_dir, entries, &mut StatCache::new())
}

/// The digest of `entries`, reusing and updating the file digests in `cache` (for entries
/// of the walk it was loaded with).
///
/// # Errors
/// [`ContextError::Read`] when a file cannot be read.
pub fn digest_entries_cached<'a>(
    context_dir: &Path,
    entries: impl IntoIterator<Item = ContextEntry<'a>>,
    cache: &mut StatCache,
) -> Result<Digest, ContextError> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let mut sorted: Vec<ContextEntry<'a>> = entries.into_iter().collect();
    if !sorted.is_sorted_by(|a, b| a.path_bytes() <= b.path_bytes()) {
        sorted.sort_by(|a, b| a.path_bytes().cmp(b.path_bytes()));
    }

    // Content digests: from the cache (looked up again below, not copied: 33 bytes an entry
    // at 100,000 files), or read (in parallel) for the rest.
    let mut to_read = Vec::new();
    // Files of the cache's walk it does not know: what it may add (room made once, not
    // grown to up to twice that).
    let mut unknown = 0;
    for (index, entry) in sorted.iter().enumerate() {
        if entry.kind() != EntryKind::File {
            continue;
        }
        match cache.index_of(entry).map(|at| cache.lookup(at)) {
            Some(Some(_)) => {}
            Some(None) => {
                to_read.push(index);
                unknown += 1;
            }
            None => to_read.push(index),
        }
    }
    let read = hash_files(context_dir, &sorted, &to_read)?;
    // In path order (`to_read` follows `sorted`), so in index order: what is new merges
    // into the sorted slots.
    let mut added: Vec<Slot> = Vec::with_capacity(unknown);
    for (index, digest) in to_read.iter().zip(&read) {
        let digest = *digest;
        let entry = &sorted[*index];
        let recent = |time: Timestamp| time.seconds >= started - RACY_SECONDS;
        if recent(entry.mtime()) || recent(entry.ctime()) {
            continue;
        }
        // The same entry twice (entries given twice) is stored once.
        if let Some(at) = cache.index_of(entry) {
            if added.last().is_none_or(|last| last.index < at) {
                added.push(Slot { index: at, digest });
            }
        }
    }
    cache.merge_added(added);

    let mut digester = Digester::default();
    digester.update(RECORD_VERSION);
    let mut read = to_read.iter().zip(&read).peekable();
    for (index, entry) in sorted.iter().enumerate() {
        digester.update(entry.path_bytes());
        digester.update(&[0]);
        digester.update(&[match entry.kind() {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Fifo => b'p',
            EntryKind::CharDevice => b'c',
            EntryKind::BlockDevice => b'b',
            EntryKind::Socket => b's',
        }]);
        for number in [entry.mode(), entry.uid(), entry.gid()] {
            digester.update(&number.to_be_bytes());
        }
        match entry.kind() {
            EntryKind::File => {
                digester.update(&entry.size().to_be_bytes());
                let content = match read.next_if(|(at, _)| **at == index) {
                    Some((_, digest)) => *digest,
                    None => cache
                        .index_of(entry)
                        .and_then(|at| cache.remembered(at))
                        .expect("every file was read or found in the cache above"),
                };
                digester.update(&content);
            }
            EntryKind::Symlink => {
                let target = entry
                    .link_target()
                    .map_or(&[][..], |target| target.as_os_str().as_bytes());
                digester.update(&(target.len() as u64).to_be_bytes());
                digester.update(target);
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                digester.update(&entry.rdev().to_be_bytes());
            }
            EntryKind::Dir | EntryKind::Fifo | EntryKind::Socket => {}
        }
    }
    Ok(digester.finish().0)
}

/// The sha256 of each file `sorted[index]` for `index` in `indexes`, in that order.
fn hash_files(
    context_dir: &Path,
    sorted: &[ContextEntry<'_>],
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
            match hash_file(&context_dir.join(entry.path()), &mut buffer) {
                Ok(digest) => {
                    results.lock().expect("no panics while locked")[position] = Some(digest);
                }
                Err(source) => {
                    let mut slot = first_error.lock().expect("no panics while locked");
                    if slot.is_none() {
                        *slot = Some(ContextError::Read {
                            path: entry.path().to_path_buf(),
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
    use crate::context::{Dockerignore, walk};

    /// A walk of a temporary directory holding `files` (and the directories above them).
    fn walked(files: &[&str]) -> (tempfile::TempDir, Arc<ContextEntries>) {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        let entries = walk(dir.path(), &Dockerignore::empty()).unwrap();
        (dir, Arc::new(entries))
    }

    fn slot(walk: &ContextEntries, path: &str, digest: u8) -> Slot {
        Slot {
            index: u32::try_from(walk.find(path.as_bytes()).unwrap()).unwrap(),
            digest: [digest; 32],
        }
    }

    fn cache_of(walk: &Arc<ContextEntries>, slots: Vec<Slot>) -> StatCache {
        StatCache {
            context: b"/ctx".to_vec(),
            touched: vec![0; walk.len().div_ceil(64)],
            walk: Some(walk.clone()),
            slots,
            changed: true,
        }
    }

    #[test]
    fn added_slots_merge_in_index_order() {
        // One per remembered file: no path, no stamp of its own.
        assert_eq!(std::mem::size_of::<Slot>(), 36);
        let (_dir, walk) = walked(&["a", "b", "c", "d", "e", "f", "g"]);
        let mut cache = cache_of(&walk, Vec::new());
        cache.merge_added(vec![slot(&walk, "b", 1), slot(&walk, "d", 2)]);
        cache.merge_added(vec![
            slot(&walk, "a", 3),
            slot(&walk, "c", 4),
            slot(&walk, "g", 5),
        ]);
        let digests: Vec<u8> = cache.slots.iter().map(|slot| slot.digest[0]).collect();
        assert_eq!(digests, [3, 1, 4, 2, 5]);
        assert_eq!(cache.lookup(slot(&walk, "g", 0).index), Some([5; 32]));
        assert_eq!(cache.lookup(slot(&walk, "e", 0).index), None);
        // Looked up or added: touched; `f` neither.
        let f = slot(&walk, "f", 0).index as usize;
        assert!(!is_set(&cache.touched, f));
        assert!(is_set(&cache.touched, slot(&walk, "e", 0).index as usize));
    }

    #[test]
    fn a_saved_cache_round_trips_and_an_unsorted_one_is_corrupt() {
        let (dir, walk) = walked(&["x/a", "x/b", "y"]);
        let cache = cache_of(
            &walk,
            vec![
                slot(&walk, "x/a", 1),
                slot(&walk, "x/b", 2),
                slot(&walk, "y", 3),
            ],
        );
        let bytes = cache.encode();
        let decoded = decode(&bytes[..], b"/ctx", &walk).unwrap();
        assert_eq!(decoded, cache.slots);
        // Saved for another walk of the same directory, with `x/b` changed since: its
        // record is dropped (its stamp is not the walk's), so is `y`'s (gone).
        std::fs::write(dir.path().join("x/b"), "longer now").unwrap();
        std::fs::remove_file(dir.path().join("y")).unwrap();
        let later = walk_of(dir.path());
        let kept = decode(&bytes[..], b"/ctx", &later).unwrap();
        assert_eq!(kept, [slot(&later, "x/a", 1)]);
        // Another context: not used.
        assert!(decode(&bytes[..], b"/other", &walk).is_none());
        // The same records, the first two swapped: not what `encode` writes.
        let swapped = cache_of(&walk, vec![slot(&walk, "x/b", 2), slot(&walk, "x/a", 1)]);
        assert!(decode(&swapped.encode()[..], b"/ctx", &walk).is_none());
        // Cut short, or with bytes after the last record: corrupt too.
        assert!(decode(&bytes[..bytes.len() - 1], b"/ctx", &walk).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer[..], b"/ctx", &walk).is_none());
    }

    fn walk_of(dir: &Path) -> ContextEntries {
        walk(dir, &Dockerignore::empty()).unwrap()
    }
}

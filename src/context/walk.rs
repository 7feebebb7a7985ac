//! Walking a build context with a [`Dockerignore`], as BuildKit's client does
//! (tonistiigi/fsutil `filter.go`; conformance README rules 17, 19).
//!
//! Depth first, symlinks not followed. For an excluded directory: with no exception at all
//! it is skipped with everything beneath it; otherwise the walk goes in when some exception
//! has a wildcard (ignoring a trailing `/*` or `/**`), or when some exception, minus such a
//! trailing glob, plus `/`, starts with `dir/`; otherwise it is skipped. Paths beneath are
//! matched with their parent's [`MatchInfo`]. An excluded directory is listed, with its own
//! metadata, only when something beneath it is included. Reading an excluded directory that
//! turns out to be unreadable (permission denied) is not an error, as upstream.
//!
//! FIFOs, device nodes and sockets are listed with their own [`EntryKind`]; a socket is
//! sent as BuildKit's fsutil sends it (the socket bit cleared: an empty regular file with
//! the socket's permissions), so `COPY` makes it one.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ContextError;
use super::dockerignore::{Dockerignore, MatchInfo};

/// What a context entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A Unix socket: copied as an empty regular file, as BuildKit copies it.
    Socket,
}

/// A point in time as the file system records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

/// What is kept of one walked path: 64 bytes, its path (and a symlink's target) in
/// [`ContextEntries`]' one buffer, its device by number in a small table, a device node's
/// `st_rdev` in a side table (issue 19 item 4: 136 bytes and a heap path each before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    size: u64,
    inode: u64,
    mtime_seconds: i64,
    ctime_seconds: i64,
    /// Where the path starts in [`ContextEntries::paths`]; a symlink's target follows it.
    path_start: u32,
    uid: u32,
    gid: u32,
    mtime_nanoseconds: u32,
    ctime_nanoseconds: u32,
    nlink: u32,
    /// Index in [`ContextEntries::devices`].
    device: u32,
    path_length: u16,
    /// [`EntryKind`] in bits 12-14, permission bits (`& 0o7777`) below.
    kind_mode: u16,
}

const KINDS: [EntryKind; 7] = [
    EntryKind::File,
    EntryKind::Dir,
    EntryKind::Symlink,
    EntryKind::Fifo,
    EntryKind::CharDevice,
    EntryKind::BlockDevice,
    EntryKind::Socket,
];

impl Record {
    fn path_range(&self) -> std::ops::Range<usize> {
        self.path_start as usize..self.path_start as usize + usize::from(self.path_length)
    }

    fn kind(&self) -> EntryKind {
        KINDS[usize::from(self.kind_mode >> 12)]
    }
}

/// Numbers each walk, so that a [`super::StatCache`] knows the walk its indexes refer to.
static NEXT_WALK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_walk_id() -> u64 {
    NEXT_WALK.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The walked build context: one entry per path, sorted bytewise by path, read through
/// [`ContextEntry`] views ([`Self::iter`], [`Self::at`]). Entries are kept compactly (64
/// bytes each plus the path bytes once).
#[derive(Debug, Clone)]
pub struct ContextEntries {
    /// Identifies this walk (a filtered or forged copy gets its own).
    id: u64,
    /// Sorted by path.
    records: Vec<Record>,
    /// Every listed path, each followed by its symlink target if it is one.
    paths: Vec<u8>,
    /// The distinct `st_dev` values (usually one).
    devices: Vec<u64>,
    /// (path start, target length) of each symlink, by path start.
    targets: Vec<(u32, u32)>,
    /// (path start, `st_rdev`) of each device node, by path start.
    rdevs: Vec<(u32, u64)>,
}

impl Default for ContextEntries {
    fn default() -> Self {
        Self {
            id: next_walk_id(),
            records: Vec::new(),
            paths: Vec::new(),
            devices: Vec::new(),
            targets: Vec::new(),
            rdevs: Vec::new(),
        }
    }
}

impl ContextEntries {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// `true` when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The entry at `index`, if any.
    pub fn get(&self, index: usize) -> Option<ContextEntry<'_>> {
        (index < self.records.len()).then_some(ContextEntry {
            entries: self,
            index,
        })
    }

    /// The entry at `index`.
    ///
    /// # Panics
    /// When `index` is not below [`Self::len`], as slice indexing does.
    pub fn at(&self, index: usize) -> ContextEntry<'_> {
        assert!(
            index < self.records.len(),
            "entry {index} of a walk of {}",
            self.records.len()
        );
        ContextEntry {
            entries: self,
            index,
        }
    }

    /// The entries in path order.
    pub fn iter(&self) -> Entries<'_> {
        self.range(0..self.records.len())
    }

    /// The entries at the indexes `range`, in order.
    ///
    /// # Panics
    /// When `range` goes past [`Self::len`].
    pub fn range(&self, range: std::ops::Range<usize>) -> Entries<'_> {
        assert!(range.end <= self.records.len(), "a range past the walk");
        Entries {
            entries: self,
            range,
        }
    }

    /// The index of the entry whose path is `path` (`Ok`), or where it would be (`Err`).
    pub fn find(&self, path: &[u8]) -> Result<usize, usize> {
        self.records
            .binary_search_by(|record| self.paths[record.path_range()].cmp(path))
    }

    /// The number of entries, from the first, whose paths `before` holds true for (the
    /// entries being sorted by path, it must hold for a prefix of them).
    pub fn partition_point(&self, mut before: impl FnMut(&[u8]) -> bool) -> usize {
        self.records
            .partition_point(|record| before(&self.paths[record.path_range()]))
    }

    /// Keeps only the entries `keep` holds true for (a new walk for a stat cache).
    pub fn retain(&mut self, mut keep: impl FnMut(ContextEntry<'_>) -> bool) {
        let kept: Vec<bool> = self.iter().map(&mut keep).collect();
        let mut kept = kept.into_iter();
        self.records.retain(|_| kept.next().unwrap_or(false));
        self.id = next_walk_id();
    }

    /// Identifies the walk (see [`ContextEntry::walk_id`]).
    pub fn walk_id(&self) -> u64 {
        self.id
    }

    /// Gives every entry the change time `ctime` (for stat cache tests, which need stamps
    /// older than the racy window); a new walk.
    #[cfg(test)]
    pub(crate) fn forge_ctime(&mut self, ctime: Timestamp) {
        for record in &mut self.records {
            record.ctime_seconds = ctime.seconds;
            record.ctime_nanoseconds = ctime.nanoseconds;
        }
        self.id = next_walk_id();
    }

    fn side<T: Copy>(table: &[(u32, T)], start: u32) -> Option<T> {
        table
            .binary_search_by_key(&start, |(at, _)| *at)
            .ok()
            .map(|found| table[found].1)
    }
}

impl<'a> IntoIterator for &'a ContextEntries {
    type Item = ContextEntry<'a>;
    type IntoIter = Entries<'a>;
    fn into_iter(self) -> Entries<'a> {
        self.iter()
    }
}

/// The entries of a [`ContextEntries`] in order ([`ContextEntries::iter`], `range`).
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    entries: &'a ContextEntries,
    range: std::ops::Range<usize>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = ContextEntry<'a>;
    fn next(&mut self) -> Option<ContextEntry<'a>> {
        let index = self.range.next()?;
        Some(ContextEntry {
            entries: self.entries,
            index,
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Entries<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let index = self.range.next_back()?;
        Some(ContextEntry {
            entries: self.entries,
            index,
        })
    }
}

impl ExactSizeIterator for Entries<'_> {}

/// One path of the build context, with the metadata `COPY` needs: a view of an entry of
/// [`ContextEntries`].
#[derive(Clone, Copy)]
pub struct ContextEntry<'a> {
    entries: &'a ContextEntries,
    index: usize,
}

impl<'a> ContextEntry<'a> {
    fn record(&self) -> &'a Record {
        &self.entries.records[self.index]
    }

    /// Its index in the walk ([`ContextEntries::at`]).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The walk it belongs to ([`ContextEntries::walk_id`]).
    pub fn walk_id(&self) -> u64 {
        self.entries.id
    }

    /// Relative to the context root, `/`-separated, never empty, no `.` or `..`.
    pub fn path(&self) -> &'a Path {
        Path::new(std::ffi::OsStr::from_bytes(self.path_bytes()))
    }

    /// The path as bytes (what patterns and digests see).
    pub fn path_bytes(&self) -> &'a [u8] {
        &self.entries.paths[self.record().path_range()]
    }

    /// File, directory, symlink, ...
    pub fn kind(&self) -> EntryKind {
        self.record().kind()
    }

    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub fn mode(&self) -> u32 {
        u32::from(self.record().kind_mode & 0o7777)
    }

    /// Owner.
    pub fn uid(&self) -> u32 {
        self.record().uid
    }

    /// Group.
    pub fn gid(&self) -> u32 {
        self.record().gid
    }

    /// Size in bytes (of the file; of the link text for a symlink).
    pub fn size(&self) -> u64 {
        self.record().size
    }

    /// A symlink's target, as stored; `None` for anything else.
    pub fn link_target(&self) -> Option<&'a Path> {
        let record = self.record();
        if record.kind() != EntryKind::Symlink {
            return None;
        }
        let length = ContextEntries::side(&self.entries.targets, record.path_start)?;
        let start = record.path_range().end;
        let bytes = &self.entries.paths[start..start + length as usize];
        Some(Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }

    /// Device number of a device node (`st_rdev`); 0 otherwise.
    pub fn rdev(&self) -> u64 {
        ContextEntries::side(&self.entries.rdevs, self.record().path_start).unwrap_or(0)
    }

    /// Last modification.
    pub fn mtime(&self) -> Timestamp {
        let record = self.record();
        Timestamp {
            seconds: record.mtime_seconds,
            nanoseconds: record.mtime_nanoseconds,
        }
    }

    /// Last status change (part of the stat cache key).
    pub fn ctime(&self) -> Timestamp {
        let record = self.record();
        Timestamp {
            seconds: record.ctime_seconds,
            nanoseconds: record.ctime_nanoseconds,
        }
    }

    /// Inode number (part of the stat cache key).
    pub fn inode(&self) -> u64 {
        self.record().inode
    }

    /// Device holding the file (part of the stat cache key).
    pub fn device(&self) -> u64 {
        self.entries.devices[self.record().device as usize]
    }

    /// Number of names of the inode (`st_nlink`; hard links among what `COPY` selects are
    /// kept).
    pub fn nlink(&self) -> u32 {
        self.record().nlink
    }

    /// Every field, for comparing and printing.
    #[allow(clippy::type_complexity)]
    fn fields(
        &self,
    ) -> (
        &'a [u8],
        EntryKind,
        [u32; 4],
        [u64; 4],
        Option<&'a Path>,
        [Timestamp; 2],
    ) {
        (
            self.path_bytes(),
            self.kind(),
            [self.mode(), self.uid(), self.gid(), self.nlink()],
            [self.size(), self.rdev(), self.inode(), self.device()],
            self.link_target(),
            [self.mtime(), self.ctime()],
        )
    }
}

impl PartialEq for ContextEntry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for ContextEntry<'_> {}

impl std::fmt::Debug for ContextEntry<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ContextEntry")
            .field("path", &self.path())
            .field("kind", &self.kind())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("uid", &self.uid())
            .field("gid", &self.gid())
            .field("size", &self.size())
            .field("link_target", &self.link_target())
            .field("rdev", &self.rdev())
            .field("mtime", &self.mtime())
            .field("ctime", &self.ctime())
            .field("inode", &self.inode())
            .field("device", &self.device())
            .field("nlink", &self.nlink())
            .finish()
    }
}

/// Lists the build context in `context_dir` after `ignore`, sorted bytewise by path. The
/// root itself is not listed.
///
/// # Errors
/// [`ContextError::NotADirectory`] for a bad context; [`ContextError::Pattern`] when a
/// pattern that must be tried does not compile; [`ContextError::Read`] when a directory or
/// entry that is sent cannot be read; [`ContextError::TooLarge`] for a path longer than
/// 65,535 bytes or more than 4 GiB of paths.
pub fn walk(context_dir: &Path, ignore: &Dockerignore) -> Result<ContextEntries, ContextError> {
    match fs::metadata(context_dir) {
        Ok(metadata) if metadata.is_dir() => {}
        _ => {
            return Err(ContextError::NotADirectory {
                path: context_dir.to_path_buf(),
            });
        }
    }
    let mut walker = Walker {
        ignore,
        only_prefix_exceptions: ignore.only_prefix_exceptions(),
        has_exceptions: ignore.has_exceptions(),
        out: ContextEntries::default(),
        pending: Vec::new(),
    };
    let mut absolute = context_dir.to_path_buf();
    let mut relative = Vec::new();
    walker.directory(&mut absolute, &mut relative, &MatchInfo::default(), false)?;
    let mut entries = walker.out;
    let paths = &entries.paths;
    // Paths are unique: an unstable sort gives the same order, with no buffer beside.
    entries
        .records
        .sort_unstable_by(|a, b| paths[a.path_range()].cmp(&paths[b.path_range()]));
    // Kept for the whole build: not with the spare room of their growth (up to half).
    entries.records.shrink_to_fit();
    entries.paths.shrink_to_fit();
    entries.targets.shrink_to_fit();
    entries.rdevs.shrink_to_fit();
    Ok(entries)
}

/// An excluded directory not yet listed: listed when something beneath it is.
struct Pending {
    path: Vec<u8>,
    record: Record,
}

struct Walker<'a> {
    ignore: &'a Dockerignore,
    only_prefix_exceptions: bool,
    has_exceptions: bool,
    out: ContextEntries,
    /// The directories being walked, outermost first: `Some` for an excluded one not yet
    /// listed (it is listed when something beneath it is).
    pending: Vec<Option<Pending>>,
}

impl Walker<'_> {
    /// Walks the directory at `absolute` (`relative` in the context; empty for the root).
    fn directory(
        &mut self,
        absolute: &mut PathBuf,
        relative: &mut Vec<u8>,
        info: &MatchInfo,
        excluded: bool,
    ) -> Result<(), ContextError> {
        let read_error = |relative: &[u8], source| ContextError::Read {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(relative)),
            source,
        };
        let reader = match fs::read_dir(&*absolute) {
            Ok(reader) => reader,
            Err(error) if excluded && error.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(());
            }
            // Removed or replaced while walking: as fsutil, not an error.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    || error.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(());
            }
            Err(error) => return Err(read_error(relative, error)),
        };
        // The entries keep the directory open, so their metadata comes from `fstatat` on
        // it rather than from resolving the whole path again.
        let mut children = Vec::new();
        for child in reader {
            let child = child.map_err(|error| read_error(relative, error))?;
            children.push((child.file_name(), child));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        for (name, child) in children {
            let parent_length = relative.len();
            if !relative.is_empty() {
                relative.push(b'/');
            }
            relative.extend_from_slice(name.as_bytes());
            absolute.push(&name);
            let result = self.child(&child, absolute, relative, info);
            absolute.pop();
            relative.truncate(parent_length);
            result?;
        }
        Ok(())
    }

    /// One entry of a directory being walked.
    fn child(
        &mut self,
        child: &fs::DirEntry,
        absolute: &mut PathBuf,
        relative: &mut Vec<u8>,
        parent_info: &MatchInfo,
    ) -> Result<(), ContextError> {
        let metadata = || match child.metadata() {
            Ok(metadata) => Ok(Some(metadata)),
            // Removed while walking: as fsutil, not an error.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ContextError::Read {
                path: PathBuf::from(std::ffi::OsStr::from_bytes(relative)),
                source,
            }),
        };
        // The type usually comes with the directory entry; metadata only for what is sent.
        let is_dir = match child.file_type() {
            Ok(file_type) => file_type.is_dir(),
            Err(_) => match metadata()? {
                Some(metadata) => metadata.is_dir(),
                None => return Ok(()),
            },
        };
        let (excluded, info) = self.ignore.matches(relative, parent_info)?;
        if excluded {
            if !is_dir {
                return Ok(());
            }
            if self.only_prefix_exceptions
                && (!self.has_exceptions || !self.ignore.exception_may_be_under(relative))
            {
                return Ok(());
            }
            let Some(metadata) = metadata()? else {
                return Ok(());
            };
            let Some(kind) = kind_of(&metadata) else {
                return Ok(());
            };
            let record = self.record(relative, kind, &metadata)?;
            self.pending.push(Some(Pending {
                path: relative.clone(),
                record,
            }));
            let result = self.directory(absolute, relative, &info, true);
            self.pending.pop();
            return result;
        }

        let Some(metadata) = metadata()? else {
            return Ok(());
        };
        let Some(kind) = kind_of(&metadata) else {
            return Ok(());
        };
        let record = self.record(relative, kind, &metadata)?;
        // Read before anything is listed: a failure leaves nothing half listed.
        let target = if kind == EntryKind::Symlink {
            Some(
                fs::read_link(&*absolute).map_err(|source| ContextError::Read {
                    path: PathBuf::from(std::ffi::OsStr::from_bytes(relative)),
                    source,
                })?,
            )
        } else {
            None
        };
        // Something is included: list the excluded directories above it first.
        for at in 0..self.pending.len() {
            if let Some(parent) = self.pending[at].take() {
                self.list(&parent.path, parent.record)?;
            }
        }
        let start = self.list(relative, record)?;
        if let Some(target) = target {
            let target = target.as_os_str().as_bytes();
            let length = u32::try_from(target.len())
                .ok()
                .filter(|_| self.room_for(target.len()))
                .ok_or_else(|| too_large(relative, "more than 4 GiB of paths"))?;
            self.out.paths.extend_from_slice(target);
            self.out.targets.push((start, length));
        }
        if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            self.out.rdevs.push((start, metadata.rdev()));
        }
        if is_dir {
            self.pending.push(None);
            let result = self.directory(absolute, relative, &info, false);
            self.pending.pop();
            result?;
        }
        Ok(())
    }

    /// Whether `length` more bytes keep every path's start below 4 GiB.
    fn room_for(&self, length: usize) -> bool {
        self.out
            .paths
            .len()
            .checked_add(length)
            .is_some_and(|end| u32::try_from(end).is_ok())
    }

    /// Lists `record` with its path `path`: its start in the buffer of paths.
    fn list(&mut self, path: &[u8], mut record: Record) -> Result<u32, ContextError> {
        let start = u32::try_from(self.out.paths.len())
            .ok()
            .filter(|_| self.room_for(path.len()))
            .ok_or_else(|| too_large(path, "more than 4 GiB of paths"))?;
        self.out.paths.extend_from_slice(path);
        record.path_start = start;
        self.out.records.push(record);
        Ok(start)
    }

    /// The record of a path (its start in the buffer of paths still to be set).
    fn record(
        &mut self,
        relative: &[u8],
        kind: EntryKind,
        metadata: &Metadata,
    ) -> Result<Record, ContextError> {
        let path_length = u16::try_from(relative.len())
            .map_err(|_| too_large(relative, "a path longer than 65,535 bytes"))?;
        let device = metadata.dev();
        let devices = &mut self.out.devices;
        let device = match devices.iter().rposition(|known| *known == device) {
            Some(index) => index,
            None => {
                devices.push(device);
                devices.len() - 1
            }
        };
        let kind_index = KINDS
            .iter()
            .position(|known| *known == kind)
            .expect("every kind is in KINDS");
        // 3 bits of kind above 12 bits of mode.
        #[allow(clippy::cast_possible_truncation)]
        let kind_mode = ((kind_index as u16) << 12) | (metadata.mode() & 0o7777) as u16;
        Ok(Record {
            size: metadata.size(),
            inode: metadata.ino(),
            mtime_seconds: metadata.mtime(),
            ctime_seconds: metadata.ctime(),
            path_start: 0,
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime_nanoseconds: u32::try_from(metadata.mtime_nsec()).unwrap_or(0),
            ctime_nanoseconds: u32::try_from(metadata.ctime_nsec()).unwrap_or(0),
            nlink: u32::try_from(metadata.nlink()).unwrap_or(u32::MAX),
            // At most one device per entry: the index fits.
            device: u32::try_from(device)
                .map_err(|_| too_large(relative, "more than 2^32 devices"))?,
            path_length,
            kind_mode,
        })
    }
}

fn too_large(relative: &[u8], reason: &'static str) -> ContextError {
    ContextError::TooLarge {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(relative)),
        reason,
    }
}

/// The kind of a path, or `None` for what is none of [`EntryKind`]'s kinds.
fn kind_of(metadata: &Metadata) -> Option<EntryKind> {
    let file_type = metadata.file_type();
    Some(if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_fifo() {
        EntryKind::Fifo
    } else if file_type.is_char_device() {
        EntryKind::CharDevice
    } else if file_type.is_block_device() {
        EntryKind::BlockDevice
    } else if file_type.is_socket() {
        EntryKind::Socket
    } else {
        return None;
    })
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn records_are_64_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 64);
    }

    #[test]
    fn kind_and_mode_share_a_field() {
        for (index, kind) in KINDS.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let record = Record {
                size: 0,
                inode: 0,
                mtime_seconds: 0,
                ctime_seconds: 0,
                path_start: 0,
                uid: 0,
                gid: 0,
                mtime_nanoseconds: 0,
                ctime_nanoseconds: 0,
                nlink: 1,
                device: 0,
                path_length: 0,
                kind_mode: ((index as u16) << 12) | 0o7777,
            };
            assert_eq!(record.kind(), *kind);
        }
    }
}

//! The layer's file list as a `COPY` (or a `WORKDIR`) makes it ([`Listing`]), and the list
//! it hands to the layer ([`CopyList`]): an entry a source lists replaces whatever is listed
//! at its path (a later source wins, as files overwrite), the directories the copy makes
//! around them go only where nothing is listed, and the list is settled in path order.
//!
//! A file of the build context that a source selects as a run of the walk's entries
//! ([`super::sources::ContextRun`]: `COPY . /app`) is listed as its walk index (8 bytes),
//! not as a [`FileListEntry`] with two paths (about 200 bytes): its tar entry is made from
//! the walk's entry when the tar is written, by the same [`EntryRules`] that make the other
//! items' entries when they are listed, so the tar is the same bytes (issue 19 item 4: a
//! 100,000-file context). A file of a run with more than one name (a hard link's inode) is
//! listed whole, so that the list's hard links are rewritten among whole entries only
//! ([`layer::relink`]).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Components, Path, PathBuf};

use super::permissions::ModeChange;
use super::sources::{ContextFiles, Item};
use crate::layer::{self, DiffError, EntryKind, FileListEntry, TarEntry, TarWriter};

/// How a copy makes the tar entry of an item it copies, whenever it is made.
#[derive(Clone, Copy)]
pub(super) struct EntryRules<'a> {
    /// `--chown`, resolved.
    pub(super) owner: Option<(u64, u64)>,
    /// `--chmod`.
    pub(super) chmod: Option<&'a ModeChange>,
    /// The items are the build context's (their owners are root's, a socket is a file).
    pub(super) from_context: bool,
}

impl EntryRules<'_> {
    /// The entry of `item` at `target` (its path in the image).
    ///
    /// # Errors
    /// A symlink's target or the xattrs cannot be read; a socket not from the context.
    pub(super) fn entry(&self, target: &Path, item: &Item) -> Result<TarEntry, DiffError> {
        // A socket of the context is an empty regular file with its permissions, as
        // BuildKit's fsutil sends it (the socket bit cleared).
        let mut entry = if self.from_context && item.meta.is_socket() {
            let mut entry = TarEntry::new(
                target.to_path_buf(),
                EntryKind::File { size: 0 },
                item.meta.mode & 0o7777,
            );
            entry.uid = u64::from(item.meta.uid);
            entry.gid = u64::from(item.meta.gid);
            entry.mtime = item.meta.mtime;
            entry
        } else {
            layer::entry_from_stat(target, &item.abs, &item.meta)?
        };
        if let Some((uid, gid)) = self.owner {
            entry.uid = uid;
            entry.gid = gid;
        } else if self.from_context {
            entry.uid = 0;
            entry.gid = 0;
        }
        if let Some(change) = self.chmod {
            entry.mode = change.apply(entry.mode, item.meta.is_dir());
        }
        Ok(entry)
    }
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// An entry held whole: its position in `full`.
    Full(u32),
    /// A file of the build context, made when written: its run (in `runs`) and its index
    /// in the walk ([`ContextFiles::entries`]).
    Context { run: u16, index: u32 },
}

/// Where the files of one run of the walk go: entry `path` lands at `dest/` + its path
/// below `top`.
struct Run {
    dest: PathBuf,
    top: PathBuf,
}

/// A path's components, of a whole entry or of a run's file (the destination's, then the
/// file's below the run's directory): compared as [`Path`]s compare.
type PathParts<'a> = std::iter::Chain<Components<'a>, Components<'a>>;

/// What the entries made when written are made from.
#[derive(Clone, Copy)]
struct Source<'c> {
    files: &'c ContextFiles,
    rules: EntryRules<'c>,
}

/// The entries and how to make the compact ones: what [`Listing`] and [`CopyList`] share.
struct Entries<'c> {
    full: Vec<FileListEntry>,
    slots: Vec<Slot>,
    runs: Vec<Run>,
    source: Option<Source<'c>>,
}

impl<'c> Entries<'c> {
    fn full(&self, at: u32) -> &FileListEntry {
        &self.full[at as usize]
    }

    /// The walk's entry `index` and its path below `run`'s directory.
    fn below(&self, run: u16, index: u32) -> (&'c ContextFiles, &'c Path) {
        let files = self
            .source
            .expect("context entries are listed only with their context")
            .files;
        let path = files.entries().at(index as usize).path();
        let below = path
            .strip_prefix(&self.runs[usize::from(run)].top)
            .unwrap_or(path);
        (files, below)
    }

    fn parts(&self, slot: Slot) -> PathParts<'_> {
        match slot {
            Slot::Full(at) => self
                .full(at)
                .entry
                .path
                .components()
                .chain(Path::new("").components()),
            Slot::Context { run, index } => {
                let (_, below) = self.below(run, index);
                self.runs[usize::from(run)]
                    .dest
                    .components()
                    .chain(below.components())
            }
        }
    }

    /// The path of `slot` in the image.
    fn path(&self, slot: Slot) -> Cow<'_, Path> {
        match slot {
            Slot::Full(at) => Cow::Borrowed(self.full(at).entry.path.as_path()),
            Slot::Context { run, index } => {
                let (_, below) = self.below(run, index);
                Cow::Owned(self.runs[usize::from(run)].dest.join(below))
            }
        }
    }

    /// The paths of `a` and `b` compared as paths, without making either.
    fn cmp_slots(&self, a: Slot, b: Slot) -> Ordering {
        match (a, b) {
            (Slot::Full(a), Slot::Full(b)) => self.full(a).entry.path.cmp(&self.full(b).entry.path),
            // The same run: the same destination and directory before each.
            (
                Slot::Context { run, index: a },
                Slot::Context {
                    run: other,
                    index: b,
                },
            ) if run == other => {
                let entries = self.below(run, a).0.entries();
                entries
                    .at(a as usize)
                    .path()
                    .cmp(entries.at(b as usize).path())
            }
            _ => self.parts(a).cmp(self.parts(b)),
        }
    }

    fn cmp_path(&self, slot: Slot, path: &Path) -> Ordering {
        match slot {
            Slot::Full(at) => self.full(at).entry.path.as_path().cmp(path),
            Slot::Context { .. } => self.parts(slot).cmp(path.components()),
        }
    }

    /// The entry of a run's file, made now.
    fn made(&self, run: u16, index: u32) -> Result<FileListEntry, DiffError> {
        let source = self
            .source
            .expect("context entries are listed only with their context");
        let item = source
            .files
            .item_at(index as usize)
            .map_err(|error| DiffError::File {
                action: "listing",
                path: source.files.dir.clone(),
                source: std::io::Error::other(error.to_string()),
            })?;
        let below = item
            .rel
            .strip_prefix(&self.runs[usize::from(run)].top)
            .unwrap_or(&item.rel);
        let target = self.runs[usize::from(run)].dest.join(below);
        let entry = source.rules.entry(&target, &item)?;
        Ok(FileListEntry {
            entry,
            source: item.meta.is_file().then_some(item.abs),
        })
    }
}

/// The layer's file list as a copy makes it: an entry a source lists replaces whatever is
/// listed at its path (a later source wins, as files overwrite), and the directories the
/// copy makes around them (the destination and its parents, the directories between it and
/// an item, the parents of what an archive placed) go only where nothing is listed. Where
/// each path was listed is told by the list itself, settled once the sources are listed
/// ([`Self::settle`]: sorted, one entry per path), and a set of the directories listed (a
/// few per thousand files), so that a directory is made once, not once per file below it.
pub(super) struct Listing<'c> {
    entries: Entries<'c>,
    /// Positions in `slots` of the directories made (ascending): an entry a source lists
    /// at the same path replaces them, whenever it comes.
    made: Vec<usize>,
    /// The paths of the directories listed so far, made or a source's.
    dirs: HashSet<PathBuf>,
    /// How many entries at the start of `slots` are settled (sorted, one per path).
    settled: usize,
}

impl<'c> Listing<'c> {
    /// A list of whole entries only.
    pub(super) fn new() -> Self {
        Self {
            entries: Entries {
                full: Vec::new(),
                slots: Vec::new(),
                runs: Vec::new(),
                source: None,
            },
            made: Vec::new(),
            dirs: HashSet::new(),
            settled: 0,
        }
    }

    /// A list that may name files of `files` by their walk index ([`Self::push_context`]),
    /// their entries made by `rules` when written.
    pub(super) fn with_context(files: &'c ContextFiles, rules: EntryRules<'c>) -> Self {
        let mut listing = Self::new();
        listing.entries.source = Some(Source { files, rules });
        listing
    }

    /// Room for `whole` more whole entries and `compact` more of a run's files.
    pub(super) fn reserve_exact(&mut self, whole: usize, compact: usize) {
        self.entries.full.reserve_exact(whole);
        self.entries.slots.reserve_exact(whole + compact);
    }

    /// A run of the walk whose files below `top` (relative to the context) land below
    /// `dest` (relative to the image's root): its number for [`Self::push_context`], or
    /// `None` when its files must be listed whole (no context; too many runs).
    pub(super) fn add_run(&mut self, dest: &Path, top: &Path) -> Option<u16> {
        self.entries.source?;
        let run = u16::try_from(self.entries.runs.len()).ok()?;
        self.entries.runs.push(Run {
            dest: dest.to_path_buf(),
            top: top.to_path_buf(),
        });
        Some(run)
    }

    fn unsettled(&self) {
        debug_assert_eq!(
            self.settled, 0,
            "an entry listed after the list was settled"
        );
    }

    /// Lists `item`, replacing what is listed at its path. Only before the list is settled.
    pub(super) fn push(&mut self, item: FileListEntry) {
        self.unsettled();
        self.push_whole(item);
    }

    fn push_whole(&mut self, item: FileListEntry) {
        if item.entry.kind == EntryKind::Directory {
            self.dirs.insert(item.entry.path.clone());
        }
        let at = u32::try_from(self.entries.full.len()).expect("fewer than 2^32 entries");
        self.entries.full.push(item);
        self.entries.slots.push(Slot::Full(at));
    }

    /// Lists the walk's entry `index` of `run` ([`Self::add_run`]), whose path in the image
    /// is `target` (a directory when `is_dir`), replacing what is listed there. Its entry
    /// is made when the list is written; it must not be a file with more than one name
    /// (those are listed whole, [`Self::push`]).
    pub(super) fn push_context(&mut self, run: u16, index: u32, target: &Path, is_dir: bool) {
        self.unsettled();
        if is_dir {
            self.dirs.insert(target.to_path_buf());
        }
        self.entries.slots.push(Slot::Context { run, index });
    }

    /// The entry listed last, when it is held whole.
    pub(super) fn last_mut(&mut self) -> Option<&mut FileListEntry> {
        match self.entries.slots.last() {
            Some(&Slot::Full(at)) => self.entries.full.get_mut(at as usize),
            _ => None,
        }
    }

    /// Whether a directory, or a settled entry, is at `path`. A file listed since the list
    /// was settled is not seen: a directory made at its path then is dropped when the list
    /// is settled again.
    pub(super) fn is_listed(&self, path: &Path) -> bool {
        self.dirs.contains(path)
            || self.entries.slots[..self.settled]
                .binary_search_by(|&slot| self.entries.cmp_path(slot, path))
                .is_ok()
    }

    /// Makes the directory `entry` unless something is listed at its path.
    pub(super) fn make(&mut self, entry: TarEntry) {
        if self.is_listed(&entry.path) {
            return;
        }
        self.made.push(self.entries.slots.len());
        self.push_whole(FileListEntry {
            entry,
            source: None,
        });
    }

    /// One entry per path, sorted by path (as [`layer::normalize_file_list`] sorts): at
    /// each path the last entry a source listed, else the first directory made there.
    /// Sorted in place, through a list of positions (8 bytes an entry), not a second list.
    pub(super) fn settle(&mut self) {
        let entries = &self.entries;
        let slots = &entries.slots;
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_unstable_by(|&a, &b| entries.cmp_slots(slots[a], slots[b]).then(a.cmp(&b)));
        // The positions that lose to another at the same path.
        let mut dropped = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let first = slots[order[start]];
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|&&at| entries.cmp_slots(slots[at], first) == Ordering::Equal)
                    .count();
            let same = &order[start..end];
            if same.len() > 1 {
                let winner = same
                    .iter()
                    .rev()
                    .find(|at| self.made.binary_search(at).is_err())
                    .unwrap_or(&same[0]);
                dropped.extend(same.iter().filter(|&at| at != winner));
            }
            start = end;
        }
        let slots = &mut self.entries.slots;
        if !dropped.is_empty() {
            dropped.sort_unstable();
            // Each kept position's new one: less the dropped ones before it.
            order.retain(|at| dropped.binary_search(at).is_err());
            for at in &mut order {
                *at -= dropped.partition_point(|&gone| gone < *at);
            }
            let mut position = 0;
            slots.retain(|_| {
                let keep = dropped.binary_search(&position).is_err();
                position += 1;
                keep
            });
        }
        permute(slots, &mut order);
        self.made.clear();
        self.settled = slots.len();
    }

    /// The parent directories of settled entries that are not listed, as absolute paths
    /// (repeats included).
    pub(super) fn missing_parents(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for &slot in &self.entries.slots[..self.settled] {
            let path = self.entries.path(slot);
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty() && !self.is_listed(parent))
            {
                missing.push(format!("/{}", parent.to_string_lossy()));
            }
        }
        missing
    }

    /// The list, settled; its whole entries in list order (those replaced dropped).
    pub(super) fn into_list(mut self) -> CopyList<'c> {
        if self.settled != self.entries.slots.len() {
            self.settle();
        }
        let mut entries = self.entries;
        // Each whole entry's place in the list, `usize::MAX` when it was replaced.
        let mut place = vec![usize::MAX; entries.full.len()];
        let mut kept = 0;
        for slot in &mut entries.slots {
            if let Slot::Full(at) = slot {
                place[*at as usize] = kept;
                *at = u32::try_from(kept).expect("fewer than 2^32 entries");
                kept += 1;
            }
        }
        let mut position = 0;
        entries.full.retain(|_| {
            let keep = place[position] != usize::MAX;
            position += 1;
            keep
        });
        place.retain(|&at| at != usize::MAX);
        // `place[i]` is where the kept entry i goes: `order[place[i]] = i`.
        let mut order = vec![0; place.len()];
        for (at, &to) in place.iter().enumerate() {
            order[to] = at;
        }
        drop(place);
        permute(&mut entries.full, &mut order);
        CopyList { entries }
    }
}

/// `items[i]` becomes the item at `order[i]`, cycle by cycle (`order` is used up).
fn permute<T>(items: &mut [T], order: &mut [usize]) {
    for start in 0..order.len() {
        let mut current = start;
        while order[current] != usize::MAX {
            let source = order[current];
            order[current] = usize::MAX;
            if source == start {
                break;
            }
            items.swap(current, source);
            current = source;
        }
    }
}

/// A copy's settled file list ([`Listing::into_list`]), as the layer writes it
/// ([`layer::FileList`]): the whole entries in list order, the files of the context's runs
/// made as they are written.
pub(super) struct CopyList<'c> {
    entries: Entries<'c>,
}

impl CopyList<'_> {
    /// Each entry's path and whether a layer can hold it: the first one it cannot, with
    /// whether its name is reserved (`.wh.`, else it is a character device 0/0).
    ///
    /// # Errors
    /// A run's file whose entry cannot be made.
    pub(super) fn unstorable(&self) -> Result<Option<(PathBuf, bool)>, DiffError> {
        for &slot in &self.entries.slots {
            let (name_reserved, whiteout) = match slot {
                Slot::Full(at) => {
                    let entry = &self.entries.full(at).entry;
                    (
                        is_reserved(&entry.path),
                        matches!(entry.kind, EntryKind::CharDevice { major: 0, minor: 0 }),
                    )
                }
                Slot::Context { run, index } => {
                    let (files, below) = self.entries.below(run, index);
                    // Only a device's entry can be a whiteout: made to tell.
                    let whiteout = files.entries().at(index as usize).kind()
                        == crate::context::EntryKind::CharDevice
                        && matches!(
                            self.entries.made(run, index)?.entry.kind,
                            EntryKind::CharDevice { major: 0, minor: 0 }
                        );
                    (is_reserved(below), whiteout)
                }
            };
            if name_reserved || whiteout {
                return Ok(Some((self.entries.path(slot).into_owned(), name_reserved)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
impl CopyList<'_> {
    /// The list's whole entries, in list order, when it holds no other.
    fn whole(self) -> Vec<FileListEntry> {
        assert!(
            self.entries
                .slots
                .iter()
                .all(|slot| matches!(slot, Slot::Full(_))),
            "a list of whole entries"
        );
        self.entries.full
    }
}

fn is_reserved(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.as_encoded_bytes().starts_with(b".wh."))
}

impl layer::FileList for CopyList<'_> {
    fn len(&self) -> usize {
        self.entries.slots.len()
    }

    fn normalize(&mut self) -> Result<(), DiffError> {
        for item in &mut self.entries.full {
            layer::normalize_entry(item)?;
        }
        // Every name of a hard-linked inode is a whole entry (`Listing::push_context`).
        layer::relink(&mut self.entries.full)
    }

    fn write<W: Write>(&self, writer: &mut TarWriter<W>) -> Result<u64, DiffError> {
        let entries = &self.entries;
        layer::write_made_file_list(writer, entries.slots.len(), |at| match entries.slots[at] {
            Slot::Full(at) => Ok(Cow::Borrowed(entries.full(at))),
            Slot::Context { run, index } => entries.made(run, index).map(Cow::Owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::executor::sources::{Filter, select_in_context};
    use crate::layer::FileList as _;

    fn file(path: &str, size: u64) -> FileListEntry {
        FileListEntry {
            entry: TarEntry::new(path, EntryKind::File { size }, 0o644),
            source: Some(PathBuf::from(format!("/src/{path}"))),
        }
    }

    fn dir(path: &str, mode: u32) -> TarEntry {
        TarEntry::new(path, EntryKind::Directory, mode)
    }

    fn listed(listing: Listing<'_>) -> Vec<(String, EntryKind, u32)> {
        listing
            .into_list()
            .whole()
            .into_iter()
            .map(|item| {
                (
                    item.entry.path.display().to_string(),
                    item.entry.kind,
                    item.entry.mode,
                )
            })
            .collect()
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one_and_made_directories_only_fill_gaps() {
        let mut listing = Listing::new();
        listing.make(dir("app", 0o700));
        listing.make(dir("app", 0o711)); // already listed: not made again
        listing.push(file("app/b", 1));
        listing.push(file("app/a", 1));
        listing.make(dir("app/x", 0o700)); // a source's x comes later and wins
        listing.push(file("app/b", 2)); // the second source wins
        listing.push(file("app/x", 3));
        listing.push(FileListEntry {
            entry: dir("app/d", 0o755),
            source: None,
        });
        listing.make(dir("app/d", 0o700)); // a source's directory is there
        listing.push(file("app/a-b", 4));
        listing.push(file("app/a/c", 5)); // sorted as a path: after a, before a-b
        assert_eq!(
            listed(listing),
            [
                ("app", EntryKind::Directory, 0o700),
                ("app/a", EntryKind::File { size: 1 }, 0o644),
                ("app/a/c", EntryKind::File { size: 5 }, 0o644),
                ("app/a-b", EntryKind::File { size: 4 }, 0o644),
                ("app/b", EntryKind::File { size: 2 }, 0o644),
                ("app/d", EntryKind::Directory, 0o755),
                ("app/x", EntryKind::File { size: 3 }, 0o644),
            ]
            .map(|(path, kind, mode)| (path.to_owned(), kind, mode))
        );
    }

    #[test]
    fn a_settled_listing_is_sorted_by_path_with_its_missing_parents_found() {
        // Many entries in a shuffled order: the in-place permutation puts each where it goes.
        let mut listing = Listing::new();
        let mut names: Vec<String> = (0..500).map(|n| format!("p{}/f{n:03}", n % 7)).collect();
        names.reverse();
        names.swap(3, 400);
        names.swap(17, 250);
        for (n, name) in names.iter().enumerate() {
            listing.push(file(name, n as u64));
            if n % 50 == 0 {
                listing.push(file(name, 1000 + n as u64)); // replaced at once
            }
        }
        listing.make(dir("p0", 0o755));
        listing.settle();
        let paths: Vec<PathBuf> = listing
            .entries
            .slots
            .iter()
            .map(|&slot| listing.entries.path(slot).into_owned())
            .collect();
        assert_eq!(paths.len(), 501);
        assert!(paths.windows(2).all(|pair| pair[0] < pair[1]));
        let sizes: Vec<u64> = listing
            .entries
            .slots
            .iter()
            .map(|&slot| match slot {
                Slot::Full(at) => listing.entries.full(at),
                Slot::Context { .. } => panic!("only whole entries were listed"),
            })
            .filter_map(|item| match item.entry.kind {
                EntryKind::File { size } => Some(size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes.iter().filter(|&&size| size >= 1000).count(), 10);
        let mut missing = listing.missing_parents();
        missing.sort();
        missing.dedup();
        assert_eq!(missing, ["/p1", "/p2", "/p3", "/p4", "/p5", "/p6"]);
        for parent in missing {
            listing.make(dir(parent.trim_start_matches('/'), 0o755));
        }
        listing.make(dir("p0", 0o700)); // listed: not made
        let entries = listing.into_list().whole();
        assert_eq!(entries.len(), 507);
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[0].entry.path < pair[1].entry.path)
        );
        assert_eq!(entries[0].entry.mode, 0o755);
    }

    /// A context with what a copy's entries can differ in: names that sort differently as
    /// bytes (the walk) and as paths (the layer), an empty file, a symlink, a fifo, a
    /// socket, files of one inode whose first name differs in the two orders, an xattr.
    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a", "a/c", "h", "z"] {
            fs::create_dir(root.join(sub)).unwrap();
        }
        fs::write(root.join("a/c/f"), b"in a/c").unwrap();
        fs::write(root.join("a-b"), b"a-b").unwrap();
        fs::write(root.join("a.txt"), b"").unwrap();
        fs::write(root.join("z/x"), b"linked").unwrap();
        // Linked: "h-1" comes first in the walk, "h/1" first in the layer.
        fs::write(root.join("h-1"), b"one inode").unwrap();
        fs::hard_link(root.join("h-1"), root.join("h/1")).unwrap();
        fs::hard_link(root.join("h-1"), root.join("z/h")).unwrap();
        std::os::unix::fs::symlink("a-b", root.join("z/l")).unwrap();
        std::os::unix::fs::symlink("missing", root.join("a/dangling")).unwrap();
        nix::unistd::mkfifo(
            &root.join("z/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("z/sock")).unwrap();
        fs::set_permissions(root.join("a/c/f"), fs::Permissions::from_mode(0o751)).unwrap();
        // Not every file system under the tests keeps user xattrs: then there is none.
        let _ = xattr::set(root.join("a-b"), "user.flist", b"kept");
        dir
    }

    fn tar_of(list: &mut impl layer::FileList) -> Vec<u8> {
        list.normalize().unwrap();
        let mut writer = TarWriter::new(Vec::new(), Some(1_700_000_000));
        let count = list.write(&mut writer).unwrap();
        assert_eq!(count, list.len() as u64);
        writer.finish().unwrap()
    }

    /// The list a copy of the whole context into `app` makes: with `compact`, its files
    /// named by walk index, else whole (as every list was before).
    fn copy_list<'c>(
        files: &'c ContextFiles,
        rules: EntryRules<'c>,
        compact: bool,
    ) -> CopyList<'c> {
        let mut listing = if compact {
            Listing::with_context(files, rules)
        } else {
            Listing::new()
        };
        let dest = Path::new("app");
        listing.make(TarEntry::new(dest, EntryKind::Directory, 0o755));
        let selected = select_in_context(files, ".", &Filter::default()).unwrap();
        let top = selected
            .context_run
            .as_ref()
            .expect("a run")
            .top()
            .to_path_buf();
        let run = compact.then(|| listing.add_run(dest, &top).unwrap());
        let hardlinks = selected.hardlinks(Some(files)).unwrap();
        for (index, item) in selected.into_items(Some(files)).unwrap().enumerate() {
            let (below, item) = item.unwrap();
            let target = dest.join(&below);
            let linked = item.meta.is_file() && item.meta.nlink >= 2;
            if let (Some(run), Some(at), false) = (run, item.context, linked) {
                listing.push_context(run, at, &target, item.meta.is_dir());
                continue;
            }
            let entry = rules.entry(&target, &item).unwrap();
            let source = item.meta.is_file().then_some(item.abs);
            listing.push(FileListEntry { entry, source });
            if let (Some(first), Some(last)) = (hardlinks.get(&index), listing.last_mut()) {
                last.entry.kind = EntryKind::Hardlink {
                    target: dest.join(first),
                };
                last.entry.xattrs.clear();
                last.source = None;
            }
        }
        listing.into_list()
    }

    #[test]
    fn a_list_naming_the_walk_writes_the_tar_of_whole_entries() {
        let dir = context();
        let store = tempfile::tempdir().unwrap();
        let files =
            ContextFiles::load(dir.path(), &dir.path().join("Dockerfile"), store.path()).unwrap();
        let symbolic = ModeChange::Symbolic("u+x,g-w,o=r".to_owned());
        let octal = ModeChange::Set(0o640);
        let variants = [
            (None, None),
            (None, Some(&octal)),
            (Some((1000, 1001)), Some(&symbolic)),
            (Some((0, 0)), None),
        ];
        for (owner, chmod) in variants {
            let rules = EntryRules {
                owner,
                chmod,
                from_context: true,
            };
            let mut compact = copy_list(&files, rules, true);
            let compact_slots = compact
                .entries
                .slots
                .iter()
                .filter(|slot| matches!(slot, Slot::Context { .. }))
                .count();
            // All but the three names of the linked inode and the made `app`.
            assert_eq!(compact_slots, compact.len() - 4, "{owner:?} {chmod:?}");
            assert!(compact.entries.full.len() == 4);
            // Today's form: whole entries, normalized and written as a `Vec`.
            let mut whole = copy_list(&files, rules, false).whole();
            let expected = tar_of(&mut whole);
            assert_eq!(tar_of(&mut compact), expected, "{owner:?} {chmod:?}");
            // Twice (the snapshot, then the blob) gives the same bytes.
            assert_eq!(tar_of(&mut compact), expected);
            // The linked inode's first name in path order holds the content.
            let names: Vec<(String, bool)> = tar::Archive::new(expected.as_slice())
                .entries()
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    (
                        entry.path().unwrap().display().to_string(),
                        entry.header().entry_type().is_hard_link(),
                    )
                })
                .filter(|(path, _)| path.starts_with("app/h") && path != "app/h/")
                .collect();
            assert_eq!(
                names,
                [("app/h/1", false), ("app/h-1", true)].map(|(path, link)| (path.to_owned(), link))
            );
        }
    }

    #[test]
    fn a_list_naming_the_walk_unpacks_and_links_as_whole_entries_do() {
        let dir = context();
        let store = tempfile::tempdir().unwrap();
        let files =
            ContextFiles::load(dir.path(), &dir.path().join("Dockerfile"), store.path()).unwrap();
        let rules = EntryRules {
            owner: None,
            chmod: None,
            from_context: true,
        };
        let mut whole = copy_list(&files, rules, false).whole();
        let first = tempfile::tempdir().unwrap();
        let target = first.path().join("snapshot");
        fs::create_dir(&target).unwrap();
        let expected =
            layer::unpack_file_list_layer_linking(&mut whole, Some(1), &target, None).unwrap();
        let again = tempfile::tempdir().unwrap();
        let linked_target = again.path().join("snapshot");
        fs::create_dir(&linked_target).unwrap();
        let mut compact = copy_list(&files, rules, true);
        let unpacked = layer::unpack_file_list_layer_linking(
            &mut compact,
            Some(1),
            &linked_target,
            Some(&target),
        )
        .unwrap();
        assert_eq!(unpacked.diff_id, expected.diff_id);
        assert_eq!(unpacked.files, expected.files);
        if unpacked.exact {
            // As root: the files are taken from the first snapshot.
            assert!(unpacked.linked > 0);
        }
        // The blob written from the same list afterwards (a snapshot that is not exact, or
        // one there already) is the same layer.
        let layout = crate::oci::ImageLayout::open_or_create(store.path().join("layout")).unwrap();
        let blob = layer::write_file_list_layer(
            &layout,
            compact,
            layer::Compression::of(layer::Algorithm::Gzip),
            Some(1),
        )
        .unwrap();
        assert_eq!(blob.diff_id, expected.diff_id);
    }
}

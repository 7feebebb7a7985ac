//! Where `COPY`/`ADD` and `RUN --mount=type=bind` read from: the build context (walked
//! once per build), another stage's or image's files, downloads and local archives.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::image::Digest;
use tokio::runtime::Handle;

use super::error::{ExecutorError, Within as _};
use super::state::join_path;
use crate::context::{self, ContextEntries, ContextEntry, Dockerignore, StatCache};
use crate::layer::tree::{HostDir, Node, Tree, resolve};
use crate::layer::{self, FileStat};

/// The build context, walked once.
pub(crate) struct ContextFiles {
    pub(crate) dir: PathBuf,
    /// Shared with the stat cache, which keeps digests by the walk's indexes.
    entries: Arc<ContextEntries>,
    pub(crate) stat_cache: Mutex<StatCache>,
    cache_file: PathBuf,
}

impl ContextFiles {
    /// Walks `context` after the `.dockerignore` that goes with `dockerfile`; the stat cache
    /// of the context's digests lives in the store under `store_root`.
    pub(crate) fn load(
        context: &Path,
        dockerfile: &Path,
        store_root: &Path,
    ) -> Result<Self, ExecutorError> {
        let dir = context.to_path_buf();
        let ignore = Dockerignore::load(&dir, dockerfile)?;
        let entries = Arc::new(context::walk(&dir, &ignore)?);
        let canonical = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let hash = hex::encode(
            &crate::oci::sha256_digest(canonical.as_os_str().as_encoded_bytes())
                .digest()
                .as_bytes()[..16],
        );
        let cache_file = store_root.join("cache").join(format!("stat-{hash}"));
        let stat_cache = StatCache::load(&cache_file, &dir, entries.clone());
        Ok(Self {
            dir,
            entries,
            stat_cache: Mutex::new(stat_cache),
            cache_file,
        })
    }

    /// The entries after `.dockerignore`, parents before children.
    pub(crate) fn entries(&self) -> &ContextEntries {
        &self.entries
    }

    /// The entries the items of `selections` are (each once, in path order): what a step's
    /// cache key digests of the context.
    pub(crate) fn selected<'a>(
        &'a self,
        selections: impl IntoIterator<Item = &'a Selected>,
    ) -> Vec<ContextEntry<'a>> {
        let mut indexes: Vec<u32> = Vec::new();
        for selected in selections {
            match &selected.context_run {
                // Indexes of the walk: below 2^32 (`entry_index` checked them as selected).
                #[allow(clippy::cast_possible_truncation)]
                Some(run) => indexes.extend(run.range.clone().map(|index| index as u32)),
                None => indexes.extend(selected.items.iter().filter_map(|(_, item)| item.context)),
            }
        }
        // The entries are sorted by path: so are their indexes.
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .map(|index| self.entries.at(index as usize))
            .collect()
    }

    /// The digest of the whole context (`sha256:...`), reusing the file digests the build
    /// already read.
    pub(crate) fn digest(&self) -> Result<String, ExecutorError> {
        let mut cache = self
            .stat_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(context::digest_entries_cached(&self.dir, self.entries.iter(), &mut cache)?.to_string())
    }

    /// Saves the stat cache (failures only cost a re-read next time).
    pub(crate) fn save_stat_cache(&self) {
        if let Ok(mut cache) = self.stat_cache.lock() {
            let _ = cache.save(&self.cache_file);
        }
    }
}

/// A file found in a source tree: one per file a `COPY` selects, so kept small (a context
/// file's comes from the walk's entry, not from a second `lstat`).
pub(crate) struct Item {
    /// Path relative to the source root.
    pub(crate) rel: PathBuf,
    /// Where to read it.
    pub(crate) abs: PathBuf,
    /// Its `lstat`, the fields a layer needs.
    pub(crate) meta: FileStat,
    /// Its index in [`ContextFiles::entries`] when it is a file of the build context.
    pub(crate) context: Option<u32>,
}

impl Item {
    /// An item of a host directory, with its `lstat` now.
    pub(crate) fn host(rel: PathBuf, abs: PathBuf) -> Result<Self, ExecutorError> {
        let meta = FileStat::from(&fs::symlink_metadata(&abs)?);
        Ok(Self {
            rel,
            abs,
            meta,
            context: None,
        })
    }
}

/// The `lstat` fields of a context entry, as the walk read them.
fn context_stat(entry: &ContextEntry<'_>) -> FileStat {
    let file_type = match entry.kind() {
        context::EntryKind::File => libc::S_IFREG,
        context::EntryKind::Dir => libc::S_IFDIR,
        context::EntryKind::Symlink => libc::S_IFLNK,
        context::EntryKind::Fifo => libc::S_IFIFO,
        context::EntryKind::CharDevice => libc::S_IFCHR,
        context::EntryKind::BlockDevice => libc::S_IFBLK,
        context::EntryKind::Socket => libc::S_IFSOCK,
    };
    FileStat {
        mode: file_type | entry.mode(),
        uid: entry.uid(),
        gid: entry.gid(),
        nlink: entry.nlink(),
        size: entry.size(),
        mtime: entry.mtime().seconds,
        rdev: entry.rdev(),
        dev: entry.device(),
        ino: entry.inode(),
    }
}

/// A read-only view of a state's file system, unmounted on drop.
pub(crate) struct StateView {
    pub(crate) root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl StateView {
    /// A view of the snapshot directories `lowers` (top first), mounted under `tmp` when
    /// there are several.
    pub(crate) fn new(lowers: Vec<PathBuf>, tmp: &Path) -> Result<Self, ExecutorError> {
        fs::create_dir_all(tmp)?;
        let dir = tempfile::Builder::new().prefix("view-").tempdir_in(tmp)?;
        match lowers.as_slice() {
            [] => Ok(Self {
                root: dir.path().to_path_buf(),
                _dir: Some(dir),
                mounted: false,
            }),
            [only] => Ok(Self {
                root: only.clone(),
                _dir: None,
                mounted: false,
            }),
            many => {
                let lowerdir = many
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                nix::mount::mount(
                    Some("overlay"),
                    dir.path(),
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(format!("lowerdir={lowerdir}").as_str()),
                )
                .map_err(|source| ExecutorError::System {
                    context: "mounting the source stage read-only".to_owned(),
                    source,
                })?;
                Ok(Self {
                    root: dir.path().to_path_buf(),
                    _dir: Some(dir),
                    mounted: true,
                })
            }
        }
    }
}

impl Drop for StateView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub(crate) fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

pub(crate) fn clean_source(path: &str) -> String {
    join_path("/", path).trim_start_matches('/').to_owned()
}

/// Items of a directory tree under `root` (not the root), sorted by path.
pub(crate) fn walk_dir(root: &Path, rel: &Path, out: &mut Vec<Item>) -> Result<(), ExecutorError> {
    let mut children: Vec<_> = fs::read_dir(root.join(rel))
        .within(|| format!("reading {}", root.join(rel).display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let rel = rel.join(child.file_name());
        let abs = root.join(&rel);
        let item = Item::host(rel.clone(), abs)?;
        let is_dir = item.meta.is_dir();
        out.push(item);
        if is_dir {
            walk_dir(root, &rel, out)?;
        }
    }
    Ok(())
}

/// What one source selects: (top-level items, the items to copy with their path below the
/// destination).
pub(crate) struct Selected {
    /// (path under the destination, item). Empty when `context_run` holds them.
    pub(crate) items: Vec<(PathBuf, Item)>,
    /// Instead of `items`: the build context's entries below the one directory the source
    /// names, by their walk indexes, made into items one at a time as they are used
    /// ([`Self::into_items`], [`Self::each`]): a `COPY . /app` of 100,000 files holds no
    /// item per file, 144 bytes and three paths each (issue 19 item 4).
    pub(crate) context_run: Option<ContextRun>,
    /// Number of top-level matches (for the "several sources" rule).
    pub(crate) tops: usize,
    /// Whether the only match is a file.
    pub(crate) single_file_name: Option<std::ffi::OsString>,
    /// Downloaded (`ADD URL`): never unpacked.
    pub(crate) from_url: bool,
    /// A git checkout (`ADD <git URL>`): never unpacked, modes kept.
    pub(crate) from_git: bool,
    /// Indexes in `items` of the files the source names itself (not found below a directory
    /// it names): only those are archives `ADD` unpacks, as in BuildKit.
    pub(crate) named_files: Vec<usize>,
}

/// The build context's entries a source selects below the one directory it names
/// ([`Selected::context_run`]).
#[derive(Debug, Clone)]
pub(crate) struct ContextRun {
    /// Indexes in [`ContextFiles::entries`]: all the entries below the directory.
    range: std::ops::Range<usize>,
    /// The directory, relative to the context: each entry's path below the destination is
    /// its path below it.
    top: PathBuf,
}

impl ContextRun {
    /// The directory the run is below, relative to the context.
    pub(crate) fn top(&self) -> &Path {
        &self.top
    }
}

/// A selection's items, consumed in order ([`Selected::into_items`]).
pub(crate) type Items<'a> = Box<dyn Iterator<Item = Result<(PathBuf, Item), ExecutorError>> + 'a>;

/// A selection that holds a [`ContextRun`] used without the context it was made from.
fn no_context() -> ExecutorError {
    ExecutorError::Internal("a selection of the build context read without it".to_owned())
}

impl Selected {
    /// How many items it selects.
    pub(crate) fn len(&self) -> usize {
        self.context_run
            .as_ref()
            .map_or(self.items.len(), |run| run.range.len())
    }

    /// Calls `visit` with each item (its index, its path below the destination, the item),
    /// in order; a [`ContextRun`]'s are made from `files` (the context it was selected in)
    /// one at a time.
    ///
    /// # Errors
    /// What `visit` returns; a run without `files`.
    pub(crate) fn each(
        &self,
        files: Option<&ContextFiles>,
        mut visit: impl FnMut(usize, &Path, &Item) -> Result<(), ExecutorError>,
    ) -> Result<(), ExecutorError> {
        match &self.context_run {
            None => {
                for (index, (below, item)) in self.items.iter().enumerate() {
                    visit(index, below, item)?;
                }
            }
            Some(run) => {
                let files = files.ok_or_else(no_context)?;
                for (index, at) in run.range.clone().enumerate() {
                    let (below, item) = files.run_item(run, at)?;
                    visit(index, &below, &item)?;
                }
            }
        }
        Ok(())
    }

    /// The items, in order, consumed: a [`ContextRun`]'s made from `files` one at a time.
    ///
    /// # Errors
    /// A run without `files` (an item that cannot be made is an error of the iterator).
    pub(crate) fn into_items<'a>(
        self,
        files: Option<&'a ContextFiles>,
    ) -> Result<Items<'a>, ExecutorError> {
        match self.context_run {
            None => Ok(Box::new(self.items.into_iter().map(Ok))),
            Some(run) => {
                let files = files.ok_or_else(no_context)?;
                Ok(Box::new(
                    run.range.clone().map(move |at| files.run_item(&run, at)),
                ))
            }
        }
    }

    /// The hard links among the files it selects, found in order ([`LinkFinder`]): a
    /// run's paths are made only for files with more than one name.
    fn links(&self, files: Option<&ContextFiles>) -> Result<LinkFinder, ExecutorError> {
        let mut links = LinkFinder::default();
        match &self.context_run {
            None => {
                for (index, (below, item)) in self.items.iter().enumerate() {
                    links.see(index, below, &item.meta);
                }
            }
            Some(run) => {
                let files = files.ok_or_else(no_context)?;
                links.see_run(files, run.range.clone(), &run.top)?;
            }
        }
        Ok(links)
    }

    /// The hard links among the files it selects, as BuildKit's copier keeps them (fsutil's
    /// `getLinkSource`, one copier per source): a file that shares its inode with a file
    /// selected before it (in path order) is a link to that one, by its index among the
    /// items, with the first one's path below the destination. A name of the inode that is
    /// not selected (excluded, ignored, outside the source) plays no part: the first one
    /// selected is the file. `files`: the context a [`ContextRun`] was selected in.
    ///
    /// # Errors
    /// A run without `files`.
    pub(crate) fn hardlinks(
        &self,
        files: Option<&ContextFiles>,
    ) -> Result<std::collections::HashMap<usize, PathBuf>, ExecutorError> {
        Ok(self.links(files)?.by_index())
    }

    /// [`Self::hardlinks`] as a step's cache key reads them: (path of the link below the
    /// destination, path of the first name), sorted.
    ///
    /// # Errors
    /// A run without `files`.
    pub(crate) fn hardlink_pairs(
        &self,
        files: Option<&ContextFiles>,
    ) -> Result<Vec<(PathBuf, PathBuf)>, ExecutorError> {
        Ok(self.links(files)?.pairs())
    }
}

/// Finds the hard links among files seen in order, as BuildKit's copier does (fsutil's
/// `getLinkSource`): a regular file with more than one name whose inode was seen before is
/// a link to the first name seen. Only files with more than one name keep a path. The one
/// finder behind [`Selected::hardlinks`], [`Selected::hardlink_pairs`] and
/// [`ContextFiles::key_parts`], whose keys must agree.
#[derive(Default)]
struct LinkFinder {
    /// (device, inode) -> the first name's path below the destination.
    first: std::collections::HashMap<(u64, u64), PathBuf>,
    /// (index among the items, path of the link below the destination, first name's).
    links: Vec<(usize, PathBuf, PathBuf)>,
}

impl LinkFinder {
    /// The item at `index`, at `below` under the destination, with its `lstat` `meta`.
    fn see(&mut self, index: usize, below: &Path, meta: &FileStat) {
        if meta.is_file() && meta.nlink >= 2 {
            self.see_inode(index, below, (meta.dev, meta.ino));
        }
    }

    /// The context's entries at `range`, the items of a source naming the directory `top`
    /// (relative to the context), numbered from 0: each path below `top` is made only for
    /// a file with more than one name.
    fn see_run(
        &mut self,
        files: &ContextFiles,
        range: std::ops::Range<usize>,
        top: &Path,
    ) -> Result<(), ExecutorError> {
        for (index, entry) in files.entries.range(range).enumerate() {
            if entry.kind() == context::EntryKind::File && entry.nlink() >= 2 {
                let below = entry
                    .path()
                    .strip_prefix(top)
                    .map_err(|error| ExecutorError::Internal(error.to_string()))?;
                self.see_inode(index, below, (entry.device(), entry.inode()));
            }
        }
        Ok(())
    }

    /// A file with more than one name, by its (device, inode).
    fn see_inode(&mut self, index: usize, below: &Path, inode: (u64, u64)) {
        match self.first.entry(inode) {
            std::collections::hash_map::Entry::Occupied(seen) => {
                self.links
                    .push((index, below.to_path_buf(), seen.get().clone()));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(below.to_path_buf());
            }
        }
    }

    /// Each link's first name's path, by the link's index.
    fn by_index(self) -> std::collections::HashMap<usize, PathBuf> {
        self.links
            .into_iter()
            .map(|(index, _, first)| (index, first))
            .collect()
    }

    /// (link, first name) pairs, sorted: as a cache key reads them.
    fn pairs(self) -> Vec<(PathBuf, PathBuf)> {
        let mut pairs: Vec<_> = self
            .links
            .into_iter()
            .map(|(_, below, first)| (below, first))
            .collect();
        pairs.sort();
        pairs
    }
}

/// What a step's cache key reads of the build context for its sources: the entries they
/// select and the hard links among each source's files.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ContextKeyParts {
    /// Indexes in [`ContextFiles::entries`], each once, in path order.
    pub(crate) indexes: Vec<u32>,
    /// Per source, in source order, its (link, first name) pairs below the destination,
    /// sorted ([`Selected::hardlink_pairs`]).
    pub(crate) hardlinks: Vec<(PathBuf, PathBuf)>,
}

impl ContextFiles {
    /// What the cache key of a copy of `patterns` from the context reads, found without
    /// making the selection's items: a `COPY . /app` of 100,000 files that is a cache hit
    /// then costs 4 bytes per file instead of an item with three paths (issue 19 item 4).
    /// The same parts as [`Self::selected`] and [`Selected::hardlink_pairs`] of what
    /// [`select_in_context`] selects (a unit test holds them equal). `None` when only the
    /// full selection can tell: with `--exclude` or `--parents`, or a source that is
    /// missing or does not resolve (the full selection reports it).
    pub(crate) fn key_parts(
        &self,
        patterns: &[&str],
        filter: &Filter,
    ) -> Result<Option<ContextKeyParts>, ExecutorError> {
        if filter.parents || filter.exclude.is_some() {
            return Ok(None);
        }
        let mut indexes = Vec::new();
        let mut hardlinks = Vec::new();
        for pattern in patterns {
            let pattern = clean_source(pattern);
            let Ok(paths) = source_paths(self, &pattern) else {
                return Ok(None);
            };
            if paths.is_empty() {
                if has_wildcard(&pattern) {
                    continue;
                }
                return Ok(None);
            }
            let mut links = LinkFinder::default();
            for (named, resolved) in paths {
                match self.node(&resolved) {
                    None => return Ok(None),
                    Some(Node::Dir) => {
                        let top = Path::new(resolved.trim_start_matches('/'));
                        let below = self.below(&resolved);
                        indexes.reserve(below.len());
                        for index in below.clone() {
                            indexes.push(entry_index(index)?);
                        }
                        // Numbered from 0 for each: only the pairs matter here.
                        links.see_run(self, below, top)?;
                    }
                    Some(_) => {
                        let Some(index) = self.find(&resolved) else {
                            return Ok(None);
                        };
                        indexes.push(entry_index(index)?);
                        let name = Path::new(&named).file_name().unwrap_or_default();
                        links.see(0, Path::new(name), &context_stat(&self.entries.at(index)));
                    }
                }
            }
            hardlinks.extend(links.pairs());
        }
        indexes.sort_unstable();
        indexes.dedup();
        Ok(Some(ContextKeyParts { indexes, hardlinks }))
    }

    /// The entries at `indexes`.
    pub(crate) fn entries_at<'a>(
        &'a self,
        indexes: &'a [u32],
    ) -> impl Iterator<Item = ContextEntry<'a>> + 'a {
        indexes.iter().map(|&index| self.entries.at(index as usize))
    }
}

/// An index in [`ContextFiles::entries`] as items keep it.
fn entry_index(index: usize) -> Result<u32, ExecutorError> {
    u32::try_from(index).map_err(|_| {
        ExecutorError::Internal("more than 2^32 files in the build context".to_owned())
    })
}

/// A tree `COPY` reads from: the build context after `.dockerignore`, or a directory (the
/// view of a stage or image).
pub(crate) trait SourceTree: Tree {
    /// The names in the directory `dir` (absolute in the tree, resolved), sorted.
    fn children(&self, dir: &str) -> Vec<String>;
    /// The items below the directory `top` (resolved), each with its path below `top`,
    /// in path order; links inside are kept as links.
    fn items_below(&self, top: &str, out: &mut Selected) -> Result<(), ExecutorError>;
    /// The item at `path` (resolved, not a directory).
    fn item(&self, path: &str) -> Result<Item, ExecutorError>;
    /// What [`Self::items_below`] gives, as a [`ContextRun`] when the tree is the build
    /// context; `None` otherwise.
    fn run_below(&self, _top: &str) -> Option<ContextRun> {
        None
    }
}

impl ContextFiles {
    /// The index of the entry at `path` (absolute in the context).
    fn find(&self, path: &str) -> Option<usize> {
        let rel = path.trim_start_matches('/').as_bytes();
        self.entries.find(rel).ok()
    }

    /// The indexes of the entries strictly below the directory `dir` (absolute in the
    /// context).
    fn below(&self, dir: &str) -> std::ops::Range<usize> {
        let rel = dir.trim_start_matches('/');
        if rel.is_empty() {
            return 0..self.entries.len();
        }
        let prefix = format!("{rel}/");
        let start = self
            .entries
            .partition_point(|path| path < prefix.as_bytes());
        let len = self
            .entries
            .range(start..self.entries.len())
            .take_while(|entry| entry.path_bytes().starts_with(prefix.as_bytes()))
            .count();
        start..start + len
    }

    /// The item of the entry at `index` of `run`, with its path below the run's directory.
    fn run_item(&self, run: &ContextRun, index: usize) -> Result<(PathBuf, Item), ExecutorError> {
        let item = self.item_at(index)?;
        let below = item
            .rel
            .strip_prefix(&run.top)
            .map_err(|error| ExecutorError::Internal(error.to_string()))?
            .to_path_buf();
        Ok((below, item))
    }

    /// The item of the entry at `index`.
    pub(crate) fn item_at(&self, index: usize) -> Result<Item, ExecutorError> {
        let entry = self.entries.at(index);
        Ok(Item {
            rel: entry.path().to_path_buf(),
            abs: self.dir.join(entry.path()),
            meta: context_stat(&entry),
            context: Some(entry_index(index)?),
        })
    }
}

impl Tree for ContextFiles {
    fn node(&self, path: &str) -> Option<Node> {
        if path == "/" {
            return Some(Node::Dir);
        }
        let entry = self.entries.at(self.find(path)?);
        Some(match entry.kind() {
            context::EntryKind::Dir => Node::Dir,
            context::EntryKind::Symlink => Node::Symlink(
                entry
                    .link_target()
                    .map(|target| target.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => Node::Other,
        })
    }
}

impl SourceTree for ContextFiles {
    fn children(&self, dir: &str) -> Vec<String> {
        let depth = dir
            .trim_start_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .count();
        self.entries
            .range(self.below(dir))
            .filter(|entry| entry.path().components().count() == depth + 1)
            .filter_map(|entry| entry.path().file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    fn items_below(&self, top: &str, out: &mut Selected) -> Result<(), ExecutorError> {
        let top_rel = Path::new(top.trim_start_matches('/'));
        let below = self.below(top);
        out.items.reserve_exact(below.len());
        for index in below {
            let item = self.item_at(index)?;
            let below = item
                .rel
                .strip_prefix(top_rel)
                .map_err(|error| ExecutorError::Internal(error.to_string()))?
                .to_path_buf();
            out.items.push((below, item));
        }
        Ok(())
    }

    fn item(&self, path: &str) -> Result<Item, ExecutorError> {
        let index = self
            .find(path)
            .ok_or_else(|| ExecutorError::Internal(format!("{path}: not in the build context")))?;
        self.item_at(index)
    }

    fn run_below(&self, top: &str) -> Option<ContextRun> {
        let range = self.below(top);
        // Items keep their index as a u32 (`entry_index`): a run's too.
        u32::try_from(range.end).ok()?;
        Some(ContextRun {
            range,
            top: PathBuf::from(top.trim_start_matches('/')),
        })
    }
}

impl SourceTree for HostDir<'_> {
    fn children(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.host_path(dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn items_below(&self, top: &str, out: &mut Selected) -> Result<(), ExecutorError> {
        let top_rel = PathBuf::from(top.trim_start_matches('/'));
        let mut below = Vec::new();
        walk_dir(self.0, &top_rel, &mut below)?;
        for item in below {
            let rel = item
                .rel
                .strip_prefix(&top_rel)
                .map_err(|error| ExecutorError::Internal(error.to_string()))?
                .to_path_buf();
            out.items.push((rel, item));
        }
        Ok(())
    }

    fn item(&self, path: &str) -> Result<Item, ExecutorError> {
        Item::host(
            PathBuf::from(path.trim_start_matches('/')),
            self.host_path(path),
        )
    }
}

/// The paths a source pattern names in `tree`, as BuildKit finds them (fsutil's
/// `ResolveWildcards` with links followed): the part before the first wildcard component is
/// resolved inside the tree; the wildcard components match the names of real directories
/// (a link is not descended into); each match, a link included, is then resolved. Returns
/// (the path as named, resolved path), in path order; an empty pattern is the whole tree.
pub(crate) fn source_paths(
    tree: &dyn SourceTree,
    pattern: &str,
) -> Result<Vec<(String, String)>, ExecutorError> {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let first_wildcard = parts.iter().position(|part| has_wildcard(part));
    let Some(first_wildcard) = first_wildcard else {
        let named = format!("/{}", parts.join("/"));
        let resolved = resolve(tree, &named, true)?;
        return Ok(vec![(named, resolved)]);
    };
    let base = resolve(tree, &parts[..first_wildcard].join("/"), true)?;
    let mut candidates = vec![base];
    for part in &parts[first_wildcard..] {
        let mut next = Vec::new();
        for candidate in candidates {
            if tree.node(&candidate) != Some(Node::Dir) {
                continue;
            }
            for name in tree.children(&candidate) {
                if context::glob_match(part.as_bytes(), name.as_bytes()) == Some(true) {
                    next.push(join_path(&candidate, &name));
                }
            }
        }
        candidates = next;
    }
    candidates
        .into_iter()
        .map(|named| Ok((named.clone(), resolve(tree, &named, true)?)))
        .collect()
}

/// What `COPY --parents` and `--exclude` leave of a source directory, as fsutil's copier
/// filters it (patternmatcher's `.dockerignore` semantics, paths relative to the directory
/// copied): an item is copied when it (or a parent) matches the include pattern and no
/// exclude pattern excludes it; a directory that is not copied itself is still made when
/// something below it is, with its own metadata.
#[derive(Default)]
pub(crate) struct Filter {
    /// `--exclude` patterns; `None` when there are none.
    pub(crate) exclude: Option<Dockerignore>,
    /// `--parents`: keep the source's path (after its `/./` pivot) below the destination.
    pub(crate) parents: bool,
}

impl Filter {
    /// The filter of `COPY`/`ADD` flags; a bad `--exclude` pattern is an error naming it.
    pub(crate) fn new(excludes: &[String], parents: bool) -> Result<Self, ExecutorError> {
        let exclude = if excludes.is_empty() {
            None
        } else {
            let patterns: Vec<&[u8]> = excludes.iter().map(String::as_bytes).collect();
            Some(Dockerignore::from_patterns(&patterns, "--exclude")?)
        };
        Ok(Self { exclude, parents })
    }
}

/// Keeps the items (path below the copied directory, item) that `include` and `exclude`
/// let through, each directory that is not copied itself only when something below it is
/// (placed before it).
fn filter_items(
    items: Vec<(PathBuf, Item)>,
    include: Option<&Dockerignore>,
    exclude: Option<&Dockerignore>,
    out: &mut Selected,
) -> Result<(), ExecutorError> {
    let mut pending: std::collections::HashMap<PathBuf, Item> = std::collections::HashMap::new();
    for (below, item) in items {
        let included = match include {
            Some(include) => include.is_excluded(&below)?,
            None => true,
        };
        let excluded = match exclude {
            Some(exclude) => exclude.is_excluded(&below)?,
            None => false,
        };
        if !included || excluded {
            if item.meta.is_dir() {
                pending.insert(below, item);
            }
            continue;
        }
        // Directories above it that were not copied on their own, shallowest first.
        let mut above: Vec<PathBuf> = below
            .ancestors()
            .skip(1)
            .filter(|dir| pending.contains_key(*dir))
            .map(Path::to_path_buf)
            .collect();
        above.reverse();
        for dir in above {
            if let Some(parent) = pending.remove(&dir) {
                out.items.push((dir, parent));
            }
        }
        out.items.push((below, item));
    }
    Ok(())
}

/// What one source pattern selects in `tree`, links on the source path followed (BuildKit's
/// `FollowSymlinks` for `COPY`/`ADD`), links inside a copied directory kept; a directory's
/// contents pass `filter`'s `--exclude` (a file named by the source itself is copied).
pub(crate) fn select(
    tree: &dyn SourceTree,
    pattern: &str,
    filter: &Filter,
    what: &str,
    place: &str,
) -> Result<Selected, ExecutorError> {
    if filter.parents {
        return select_parents(tree, pattern, filter, what, place);
    }
    let pattern = clean_source(pattern);
    let mut selected = empty_selection();
    let paths = source_paths(tree, &pattern)?;
    // A wildcard that matches nothing copies nothing (BuildKit's `AllowEmptyWildcard`).
    if paths.is_empty() && has_wildcard(&pattern) {
        return Ok(selected);
    }
    if paths.is_empty() {
        return Err(ExecutorError::MissingSource {
            what: what.to_owned(),
            path: pattern,
            through: String::new(),
            place: place.to_owned(),
        });
    }
    selected.tops = paths.len();
    // A source naming one directory of the context selects it as a run of the walk's
    // entries, no item per file (several matches keep their items in order).
    let single = paths.len() == 1;
    for (named, resolved) in paths {
        match tree.node(&resolved) {
            None => {
                let shown = named.trim_start_matches('/');
                let through = if named == resolved {
                    String::new()
                } else {
                    format!(" (a link to {resolved})")
                };
                return Err(ExecutorError::MissingSource {
                    what: what.to_owned(),
                    path: shown.to_owned(),
                    through,
                    place: place.to_owned(),
                });
            }
            Some(Node::Dir) => match &filter.exclude {
                None => match tree.run_below(&resolved).filter(|_| single) {
                    Some(run) => selected.context_run = Some(run),
                    None => tree.items_below(&resolved, &mut selected)?,
                },
                Some(exclude) => {
                    let mut all = empty_selection();
                    tree.items_below(&resolved, &mut all)?;
                    let mut kept = empty_selection();
                    filter_items(all.items, None, Some(exclude), &mut kept)?;
                    selected.items.append(&mut kept.items);
                }
            },
            Some(_) => {
                let name = Path::new(&named).file_name().unwrap_or_default().to_owned();
                let item = tree.item(&resolved)?;
                selected.single_file_name = Some(name.clone());
                selected.named_files.push(selected.items.len());
                selected.items.push((PathBuf::from(name), item));
            }
        }
    }
    Ok(selected)
}

fn empty_selection() -> Selected {
    Selected {
        items: Vec::new(),
        context_run: None,
        tops: 0,
        single_file_name: None,
        from_url: false,
        from_git: false,
        named_files: Vec::new(),
    }
}

/// `COPY --parents`, as BuildKit's `dispatchCopy` turns it into a copy: the source splits at
/// its first `/./` into the directory copied (the whole tree without one; wildcards allowed,
/// each match copied) and an include pattern below it (`**` allowed); what the pattern
/// matches keeps its path below that directory, parents included. A match-nothing pattern
/// copies nothing, unless neither part has a wildcard: the path must then exist (BuildKit's
/// `RequiredPaths`).
fn select_parents(
    tree: &dyn SourceTree,
    source: &str,
    filter: &Filter,
    what: &str,
    place: &str,
) -> Result<Selected, ExecutorError> {
    let (base, pattern) = source.split_once("/./").unwrap_or(("/", source));
    let pattern = clean_source(pattern);
    let base = clean_source(base);
    let required = (!has_wildcard(&base) && !has_wildcard(&pattern))
        .then(|| join_path("/", &format!("{base}/{pattern}")));
    let include = Dockerignore::from_patterns(&[pattern.as_bytes()], "--parents")?;
    let mut selected = empty_selection();
    selected.tops = 1;
    // The part of the pattern before its first wildcard (and before its last component)
    // names directories that must be real ones: only below them is walked.
    let parts: Vec<&str> = pattern.split('/').filter(|part| !part.is_empty()).collect();
    let literal = parts
        .iter()
        .position(|part| has_wildcard(part))
        .unwrap_or(parts.len())
        .min(parts.len().saturating_sub(1));
    let mut found_required = required.is_none();
    for (_, root) in source_paths(tree, &base)? {
        if tree.node(&root) != Some(Node::Dir) {
            continue;
        }
        let mut items = Vec::new();
        let mut walked = root.clone();
        let mut reachable = true;
        for part in &parts[..literal] {
            walked = join_path(&walked, part);
            if tree.node(&walked) != Some(Node::Dir) {
                reachable = false;
                break;
            }
            let item = tree.item(&walked)?;
            let below = Path::new(walked.trim_start_matches('/'))
                .strip_prefix(root.trim_start_matches('/'))
                .map_err(|error| ExecutorError::Internal(error.to_string()))?
                .to_path_buf();
            items.push((below, item));
        }
        if !reachable {
            continue;
        }
        let mut all = empty_selection();
        tree.items_below(&walked, &mut all)?;
        let prefix = PathBuf::from(parts[..literal].join("/"));
        items.extend(
            all.items
                .into_iter()
                .map(|(below, item)| (prefix.join(below), item)),
        );
        let mut kept = empty_selection();
        filter_items(items, Some(&include), filter.exclude.as_ref(), &mut kept)?;
        if !found_required {
            found_required = kept
                .items
                .iter()
                .any(|(below, _)| below.starts_with(&pattern));
        }
        selected.items.append(&mut kept.items);
    }
    if let (false, Some(path)) = (found_required, required) {
        return Err(ExecutorError::RequiredSource {
            what: what.to_owned(),
            path,
            place: place.to_owned(),
        });
    }
    Ok(selected)
}

/// What `pattern` selects in the build context.
pub(crate) fn select_in_context(
    files: &ContextFiles,
    pattern: &str,
    filter: &Filter,
) -> Result<Selected, ExecutorError> {
    select(
        files,
        pattern,
        filter,
        "COPY source",
        "in the build context (after .dockerignore)",
    )
}

/// What `pattern` selects in another stage's or image's tree, mounted at `root`. Only the
/// directories on the pattern's path are read (a wildcard component lists its one
/// directory), and only matched directories are walked: the source stage is often a whole
/// distribution, and a `COPY --from=build /out/app` must not read all of it.
pub(crate) fn select_in_dir(
    root: &Path,
    pattern: &str,
    filter: &Filter,
) -> Result<Selected, ExecutorError> {
    select(
        &HostDir(root),
        pattern,
        filter,
        "COPY --from source",
        "in the source stage or image",
    )
}

/// Whether `path` is an archive `ADD` unpacks, as BuildKit's `isArchivePath` decides: a
/// regular file whose content, once decompressed (gzip, zstd; xz and bzip2 by their magic
/// only), starts with a tar header whose checksum holds. A compressed file that is not a
/// tar is copied as it is.
pub(crate) fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 6];
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || head.starts_with(b"BZh") {
        return true;
    }
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok(reader) = layer::decompressed(file) else {
        return false;
    };
    let mut block = Vec::with_capacity(512);
    if std::io::Read::read_to_end(&mut std::io::Read::take(reader, 512), &mut block).is_err() {
        return false;
    }
    layer::read::is_tar_header(&block)
}

/// Unpacks a local archive (gzip, xz, bzip2, zstd or plain tar) into `target`; returns the
/// paths its entries name (relative, clean), in archive order: the directories that are
/// not among them were made only to hold an entry.
pub(crate) fn extract_archive(path: &Path, target: &Path) -> Result<Vec<PathBuf>, ExecutorError> {
    let file = fs::File::open(path)?;
    let mut head = [0u8; 6];
    std::io::Read::read(&mut fs::File::open(path)?, &mut head)?;
    let reader: Box<dyn std::io::Read> = if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(external_decompress("xz", path)?)
    } else if head.starts_with(b"BZh") {
        Box::new(external_decompress("bzip2", path)?)
    } else {
        layer::decompressed(file)?
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_preserve_mtime(true);
    let unpacking = || format!("ADD: unpacking {}", path.display());
    let mut named = Vec::new();
    for entry in archive.entries().within(unpacking)? {
        let mut entry = entry.within(unpacking)?;
        let name: PathBuf = entry
            .path()
            .within(unpacking)?
            .components()
            .filter(|part| matches!(part, std::path::Component::Normal(_)))
            .collect();
        // `unpack_in` refuses what would land outside `target` (`..`, links out of it).
        if entry.unpack_in(target).within(unpacking)? && !name.as_os_str().is_empty() {
            named.push(name);
        }
    }
    Ok(named)
}

pub(crate) fn external_decompress(
    program: &'static str,
    path: &Path,
) -> Result<std::io::Cursor<Vec<u8>>, ExecutorError> {
    let output = std::process::Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .within(|| format!("running {program} to unpack {}", path.display()))?;
    if !output.status.success() {
        return Err(ExecutorError::Decompress {
            program,
            path: path.display().to_string(),
        });
    }
    Ok(std::io::Cursor::new(output.stdout))
}

/// A URL `ADD` reads, as BuildKit's HTTP source gives it: its content in the store (a blob
/// the cache record `http-<url digest>` keeps), the file name, the `Last-Modified` time.
pub(crate) struct Downloaded {
    /// The file name: the URL path's last component, `__unnamed__` when it has none.
    pub(crate) file_name: String,
    /// The content's digest (`sha256:...`).
    pub(crate) digest: String,
    /// Where the content is (a blob of the store).
    pub(crate) path: PathBuf,
    /// `Last-Modified` as seconds since the epoch (the file's mtime; 0 without one).
    pub(crate) mtime: i64,
}

/// What a download left for the next build to ask about.
#[derive(serde::Serialize, serde::Deserialize)]
struct UrlRecord {
    etag: String,
    digest: String,
    last_modified: Option<i64>,
}

/// The file name BuildKit's frontend gives a URL's download (`path.Base` of its path).
pub(crate) fn url_file_name(url: &reqwest::Url) -> String {
    url.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty() && *name != ".")
        .map_or_else(|| "__unnamed__".to_owned(), str::to_owned)
}

/// `ADD URL`: the content of `url`, checked against `--checksum`. A URL downloaded before
/// with an `ETag` is first asked about with a `HEAD` request (`If-None-Match`), as BuildKit
/// does: when its `ETag` is the same, the stored content is used and nothing is
/// downloaded. Downloads stream into the store and are hashed on the way, never whole in
/// memory: a URL without end is bounded by the disk only, as in BuildKit.
pub(crate) fn download(
    runtime: &Handle,
    store: &crate::store::Store,
    url: &str,
    checksum: Option<&str>,
    name: &str,
) -> Result<Downloaded, ExecutorError> {
    let parsed = reqwest::Url::parse(url).map_err(|error| ExecutorError::BadReference {
        reference: format!("ADD {url}"),
        reason: error.to_string(),
    })?;
    let file_name = url_file_name(&parsed);
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ExecutorError::Download {
        step: name.to_owned(),
        url: url.to_owned(),
        source,
    };
    let record_key = format!(
        "http-{}",
        crate::oci::sha256_digest(url.as_bytes()).digest()
    );
    let layout = store.layout();
    let known = store
        .cache_record(&record_key)?
        .and_then(|record| serde_json::from_value::<UrlRecord>(record.data).ok())
        .filter(|known| {
            known
                .digest
                .parse::<Digest>()
                .is_ok_and(|digest| layout.has_blob(&digest))
        });
    let client = reqwest::Client::new();
    let etag_of = |headers: &reqwest::header::HeaderMap| {
        headers
            .get(reqwest::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim_start_matches("W/").to_owned())
    };
    let unchanged = known.and_then(|known| {
        let answer = runtime.block_on(
            client
                .head(parsed.clone())
                .header(reqwest::header::IF_NONE_MATCH, &known.etag)
                .header(reqwest::header::ACCEPT_ENCODING, "gzip")
                .send(),
        );
        let response = answer.ok()?;
        let status = response.status();
        if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::NOT_MODIFIED {
            return None;
        }
        let etag = etag_of(response.headers()).or_else(|| {
            (status == reqwest::StatusCode::NOT_MODIFIED).then(|| known.etag.clone())
        })?;
        (etag == known.etag).then_some(known)
    });
    let (digest, last_modified) = if let Some(known) = unchanged {
        (known.digest, known.last_modified)
    } else {
        let streamed = runtime.block_on(async {
            let response = client.get(parsed.clone()).send().await?;
            let mut response = response.error_for_status()?;
            let etag = etag_of(response.headers());
            let last_modified = response
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|value| value.to_str().ok())
                .and_then(crate::remote::context::parse_http_date);
            let mut blob = layout.blob_writer()?;
            while let Some(chunk) = response.chunk().await? {
                std::io::Write::write_all(&mut blob, &chunk)?;
            }
            let (digest, _) = blob.commit(None)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                digest.to_string(),
                etag,
                last_modified,
            ))
        });
        let (digest, etag, last_modified) = streamed.map_err(failed)?;
        if let Some(etag) = etag {
            if checksum.is_none_or(|expected| expected == digest) {
                let record = crate::store::CacheRecord {
                    blobs: vec![
                        digest
                            .parse::<Digest>()
                            .map_err(|error| ExecutorError::Internal(error.to_string()))?,
                    ],
                    diff_ids: Vec::new(),
                    data: serde_json::to_value(UrlRecord {
                        etag,
                        digest: digest.clone(),
                        last_modified,
                    })
                    .map_err(|error| ExecutorError::Internal(error.to_string()))?,
                };
                store.put_cache_record(&record_key, &record)?;
            }
        }
        (digest, last_modified)
    };
    if let Some(expected) = checksum {
        if expected != digest {
            return Err(ExecutorError::Checksum {
                step: name.to_owned(),
                url: url.to_owned(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
    }
    let path = layout
        .blob_path(
            &digest
                .parse::<Digest>()
                .map_err(|error| ExecutorError::Internal(error.to_string()))?,
        )
        .map_err(|error| ExecutorError::Internal(error.to_string()))?;
    Ok(Downloaded {
        file_name,
        digest,
        path,
        mtime: last_modified.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `COPY` of a big context keeps per file (issue 19 item 4: peak RSS at 100,000
    /// files): the walk's entry, and while the step selects, one item. A field added to
    /// either is a cost per context file: these bounds say so.
    #[test]
    fn per_file_records_stay_small() {
        // The walk's entry: 64 bytes and its path in the walk's one buffer (136 bytes and a
        // heap path each before).
        assert!(std::mem::size_of::<ContextEntry<'_>>() <= 16);
        assert!(std::mem::size_of::<FileStat>() <= 64);
        assert!(std::mem::size_of::<Item>() <= 120);
        // Before: a whole `std::fs::Metadata` per item, and a clone of its entry.
        assert!(std::mem::size_of::<Item>() < std::mem::size_of::<fs::Metadata>());
    }

    #[test]
    fn a_context_item_is_its_walked_entry() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"hello").unwrap();
        fs::hard_link(dir.path().join("d/f"), dir.path().join("d/g")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/l")).unwrap();
        let store = tempfile::tempdir().unwrap();
        let files =
            ContextFiles::load(dir.path(), &dir.path().join("Dockerfile"), store.path()).unwrap();
        let mut selected = empty_selection();
        files.items_below("/d", &mut selected).unwrap();
        let names: Vec<_> = selected
            .items
            .iter()
            .map(|(below, _)| below.clone())
            .collect();
        assert_eq!(names, ["f", "g", "l"].map(PathBuf::from));
        for (below, item) in &selected.items {
            let stat = FileStat::from(&fs::symlink_metadata(&item.abs).unwrap());
            assert_eq!(item.meta, stat, "{}", below.display());
            let index = item.context.unwrap() as usize;
            assert_eq!(files.entries().at(index).path(), item.rel);
        }
        assert_eq!(
            selected.hardlinks(None).unwrap().len(),
            1,
            "g is a link to f"
        );
        let entries = files.selected([&selected]);
        let paths: Vec<_> = entries
            .iter()
            .map(|entry| entry.path().to_path_buf())
            .collect();
        assert_eq!(paths, ["d/f", "d/g", "d/l"].map(PathBuf::from));

        // The source naming the directory selects it as a run of the walk's entries: the
        // same items, made one at a time, no item held.
        let run = select_in_context(&files, "d", &Filter::default()).unwrap();
        assert!(run.items.is_empty() && run.context_run.is_some());
        assert_eq!(run.len(), 3);
        // Everything an item says, with its index and path below the source.
        let fields = |index: usize, below: &Path, item: &Item| {
            (
                index,
                below.to_path_buf(),
                item.rel.clone(),
                item.abs.clone(),
                item.meta,
                item.context,
            )
        };
        let mut made = Vec::new();
        run.each(Some(&files), |index, below, item| {
            made.push(fields(index, below, item));
            Ok(())
        })
        .unwrap();
        let held: Vec<_> = selected
            .items
            .iter()
            .enumerate()
            .map(|(index, (below, item))| fields(index, below, item))
            .collect();
        assert_eq!(made, held);
        assert_eq!(
            run.hardlinks(Some(&files)).unwrap(),
            selected.hardlinks(None).unwrap()
        );
        assert!(run.hardlinks(None).is_err(), "a run needs its context");
        assert_eq!(files.selected([&run]), entries);
        let consumed: Vec<_> = run
            .into_items(Some(&files))
            .unwrap()
            .map(|item| item.unwrap().0)
            .collect();
        assert_eq!(consumed, ["f", "g", "l"].map(PathBuf::from));
        // Several matches keep their items.
        let three = select_in_context(&files, "d/*", &Filter::default()).unwrap();
        assert!(three.context_run.is_none());
        assert_eq!(three.len(), 3);
    }

    #[test]
    fn the_key_parts_of_a_context_copy_are_those_of_its_selection() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("d/f"), b"hello").unwrap();
        fs::hard_link(root.join("d/f"), root.join("d/g")).unwrap();
        fs::hard_link(root.join("d/f"), root.join("t2")).unwrap();
        fs::write(root.join("d/e/h.txt"), b"h").unwrap();
        fs::write(root.join("a.txt"), b"a").unwrap();
        std::os::unix::fs::symlink("d", root.join("l")).unwrap();
        let store = tempfile::tempdir().unwrap();
        let files = ContextFiles::load(root, &root.join("Dockerfile"), store.path()).unwrap();
        let cases: &[&[&str]] = &[
            &["."],
            &["d"],
            &["d/f", "t2"],
            &["d/*"],
            &["*.txt", "d/e"],
            &["d", "t2", "l"],
            &["l/"],
            &["nothing*"],
            &["d/", "."],
        ];
        for patterns in cases {
            let selections: Vec<Selected> = patterns
                .iter()
                .map(|pattern| select_in_context(&files, pattern, &Filter::default()).unwrap())
                .collect();
            let parts = files
                .key_parts(patterns, &Filter::default())
                .unwrap()
                .unwrap();
            let early: Vec<_> = files.entries_at(&parts.indexes).collect();
            assert_eq!(early, files.selected(&selections), "{patterns:?}");
            let links: Vec<_> = selections
                .iter()
                .flat_map(|selected| selected.hardlink_pairs(Some(&files)).unwrap())
                .collect();
            assert_eq!(parts.hardlinks, links, "{patterns:?}");
        }
        // "." links t2 to d/f; "d/f" and "t2" are two sources, each with one name.
        let parts = files
            .key_parts(&["."], &Filter::default())
            .unwrap()
            .unwrap();
        assert_eq!(parts.hardlinks.len(), 2);
        assert_eq!(parts.indexes.len(), files.entries().len());
        let parts = files
            .key_parts(&["d/f", "t2"], &Filter::default())
            .unwrap()
            .unwrap();
        assert!(parts.hardlinks.is_empty());
        // Only the full selection can tell: a missing source (it reports it), a filter.
        assert_eq!(
            files.key_parts(&["missing"], &Filter::default()).unwrap(),
            None
        );
        let exclude = Filter::new(&["*.txt".to_owned()], false).unwrap();
        assert_eq!(files.key_parts(&["."], &exclude).unwrap(), None);
        let parents = Filter::new(&[], true).unwrap();
        assert_eq!(files.key_parts(&["d"], &parents).unwrap(), None);
    }
}

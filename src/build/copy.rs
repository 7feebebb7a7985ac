//! `COPY`, `ADD` and the directory `WORKDIR` creates: each makes one layer from a file list
//! ([`crate::layer::write_file_list_layer`]) whose snapshot is made by unpacking it.
//!
//! Sources: the build context after `.dockerignore` (walked once per build), another stage
//! or an image (`--from`): its layers are mounted as a read-only overlay on a temporary
//! directory in the host's mount namespace (we are root) for the time of the copy, so
//! whiteouts and opaque directories are the kernel's business. `--chown` names are looked
//! up in `/etc/passwd` and `/etc/group` of the destination state, reading its snapshots top
//! down (whiteouts honoured), with a size bound.
//!
//! Links resolve inside the tree they belong to, never on the host
//! ([`crate::layer::tree`]), as BuildKit resolves them: a source path's links are followed
//! (`COPY --from=base /bin/sh /out/` copies dash), links inside a copied directory are kept;
//! the destination's links are followed (`COPY f /bin/f` on a merged-/usr image writes
//! `/usr/bin/f`); a directory is never written where the image has a file or a link.
//!
//! Not supported yet (exit 2): `--parents`, `--exclude`, `ADD --keep-git-dir` and git
//! sources, checksums other than sha256. `--chmod` takes octal or chmod(1) symbolic modes. `ADD` of an http(s) URL
//! downloads it (mode 0600, not unpacked), checked against `--checksum` when given. `--link` is accepted and treated as a plain
//! `COPY` (same result, no layer reuse across bases).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, anyhow};

use super::exec::{Ctx, Done, Key, State, join_path};
use crate::context::{self, ContextEntry, Dockerignore, StatCache};
use crate::dockerfile::Instruction;
use crate::dockerfile::instruction::{Chmod, Source};
use crate::error::Failure;
use crate::layer::tree::{HostDir, Node, Stack, Tree, resolve};
use crate::layer::{self, EntryKind, FileListEntry, TarEntry};
use crate::plan::Vertex;
use crate::progress::Event;

/// The build context, walked once.
pub(crate) struct ContextFiles {
    pub(crate) dir: PathBuf,
    entries: Vec<ContextEntry>,
    pub(crate) stat_cache: Mutex<StatCache>,
    cache_file: PathBuf,
}

impl ContextFiles {
    fn load(ctx: &Ctx<'_>) -> anyhow::Result<Self> {
        let dir = ctx.options.context.clone();
        let ignore = Dockerignore::load(&dir, &ctx.options.dockerfile)?;
        let entries = context::walk(&dir, &ignore)?;
        let canonical = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        let hash = hex::encode(
            &crate::oci::sha256_digest(canonical.as_os_str().as_encoded_bytes())
                .digest()
                .as_bytes()[..16],
        );
        let cache_file = ctx.store.root().join("cache").join(format!("stat-{hash}"));
        let stat_cache = StatCache::load(&cache_file, &dir);
        Ok(Self {
            dir,
            entries,
            stat_cache: Mutex::new(stat_cache),
            cache_file,
        })
    }

    /// Saves the stat cache (failures only cost a re-read next time).
    pub(crate) fn save_stat_cache(&self) {
        if let Ok(mut cache) = self.stat_cache.lock() {
            let _ = cache.save(&self.cache_file);
        }
    }
}

impl Ctx<'_> {
    pub(crate) fn context_files(&self) -> anyhow::Result<Arc<ContextFiles>> {
        let mut slot = self
            .context
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?;
        if let Some(files) = slot.as_ref() {
            return Ok(files.clone());
        }
        let files = Arc::new(ContextFiles::load(self)?);
        *slot = Some(files.clone());
        Ok(files)
    }
}

/// The most of `/etc/passwd` or `/etc/group` read to resolve `--chown` (a base image's file
/// could be a link to `/dev/zero`, or just huge).
const ACCOUNTS_LIMIT: u64 = 16 * 1024 * 1024;

/// A file found in a source tree.
struct Item {
    /// Path relative to the source root.
    rel: PathBuf,
    /// Where to read it.
    abs: PathBuf,
    meta: fs::Metadata,
}

/// A read-only view of a state's file system, unmounted on drop.
pub(crate) struct StateView {
    pub(crate) root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl StateView {
    pub(crate) fn new(ctx: &Ctx<'_>, state: &State) -> anyhow::Result<Self> {
        let lowers = ctx.lower_dirs(state)?;
        let tmp = ctx.store.layout().tmp_dir();
        fs::create_dir_all(&tmp)?;
        let dir = tempfile::Builder::new().prefix("view-").tempdir_in(&tmp)?;
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
                .context("mounting the source stage read-only")?;
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

/// `user[:group]` to numbers, through the state's `/etc/passwd` and `/etc/group`.
fn resolve_chown(lowers: &[PathBuf], spec: &str) -> anyhow::Result<(u64, u64)> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let stack = Stack::new(lowers);
    let read = |file: &str| -> anyhow::Result<String> {
        let data = stack
            .read_file(file, ACCOUNTS_LIMIT)
            .map_err(|error| Failure::bad_input(format_args!("--chown: {error}")))?;
        Ok(String::from_utf8_lossy(&data.unwrap_or_default()).into_owned())
    };
    let find = |text: &str, name: &str| -> Option<(u64, u64)> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().unwrap_or(0))))
                .flatten()
        })
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(uid) => (
            uid,
            find(&read("/etc/passwd")?, user).map_or(uid, |(_, gid)| gid),
        ),
        Err(_) => find(&read("/etc/passwd")?, user).ok_or_else(|| {
            Failure::bad_input(format_args!("--chown: no user {user:?} in the image"))
        })?,
    };
    let gid = match group {
        None => {
            if user.parse::<u64>().is_ok() {
                uid
            } else {
                primary
            }
        }
        Some(group) => match group.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => find(&read("/etc/group")?, group)
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    Failure::bad_input(format_args!("--chown: no group {group:?} in the image"))
                })?,
        },
    };
    Ok((uid, gid))
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

fn clean_source(path: &str) -> String {
    join_path("/", path).trim_start_matches('/').to_owned()
}

/// Items of a directory tree under `root` (not the root), sorted by path.
fn walk_dir(root: &Path, rel: &Path, out: &mut Vec<Item>) -> anyhow::Result<()> {
    let mut children: Vec<_> = fs::read_dir(root.join(rel))
        .with_context(|| format!("reading {}", root.join(rel).display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let rel = rel.join(child.file_name());
        let abs = root.join(&rel);
        let meta = fs::symlink_metadata(&abs)?;
        let is_dir = meta.is_dir();
        out.push(Item {
            rel: rel.clone(),
            abs,
            meta,
        });
        if is_dir {
            walk_dir(root, &rel, out)?;
        }
    }
    Ok(())
}

/// What one source selects: (top-level items, the items to copy with their path below the
/// destination).
pub(crate) struct Selected {
    /// (path under the destination, item).
    items: Vec<(PathBuf, Item)>,
    /// Number of top-level matches (for the "several sources" rule).
    tops: usize,
    /// Whether the only match is a file.
    single_file_name: Option<std::ffi::OsString>,
    pub(crate) context_entries: Vec<ContextEntry>,
    /// Downloaded (`ADD URL`): never unpacked.
    from_url: bool,
}

/// A tree `COPY` reads from: the build context after `.dockerignore`, or a directory (the
/// view of a stage or image).
trait SourceTree: Tree {
    /// The names in the directory `dir` (absolute in the tree, resolved), sorted.
    fn children(&self, dir: &str) -> Vec<String>;
    /// The items below the directory `top` (resolved), each with its path below `top`,
    /// in path order; links inside are kept as links.
    fn items_below(&self, top: &str, out: &mut Selected) -> anyhow::Result<()>;
    /// The item at `path` (resolved, not a directory).
    fn item(&self, path: &str, out: &mut Selected) -> anyhow::Result<Item>;
}

impl ContextFiles {
    /// The index of the entry at `path` (absolute in the context).
    fn find(&self, path: &str) -> Option<usize> {
        let rel = path.trim_start_matches('/').as_bytes();
        self.entries
            .binary_search_by(|entry| entry.path_bytes().cmp(rel))
            .ok()
    }

    /// The entries strictly below the directory `dir` (absolute in the context).
    fn below(&self, dir: &str) -> &[ContextEntry] {
        let rel = dir.trim_start_matches('/');
        if rel.is_empty() {
            return &self.entries;
        }
        let prefix = format!("{rel}/");
        let start = self
            .entries
            .partition_point(|entry| entry.path_bytes() < prefix.as_bytes());
        let len = self.entries[start..]
            .iter()
            .take_while(|entry| entry.path_bytes().starts_with(prefix.as_bytes()))
            .count();
        &self.entries[start..start + len]
    }
}

impl Tree for ContextFiles {
    fn node(&self, path: &str) -> Option<Node> {
        if path == "/" {
            return Some(Node::Dir);
        }
        let entry = &self.entries[self.find(path)?];
        Some(match entry.kind {
            context::EntryKind::Dir => Node::Dir,
            context::EntryKind::Symlink => Node::Symlink(
                entry
                    .link_target
                    .as_ref()
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
        self.below(dir)
            .iter()
            .filter(|entry| entry.path.components().count() == depth + 1)
            .filter_map(|entry| entry.path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    fn items_below(&self, top: &str, out: &mut Selected) -> anyhow::Result<()> {
        let top_rel = Path::new(top.trim_start_matches('/'));
        for entry in self.below(top) {
            let abs = self.dir.join(&entry.path);
            let meta = fs::symlink_metadata(&abs)?;
            let below = entry.path.strip_prefix(top_rel)?.to_path_buf();
            out.items.push((
                below,
                Item {
                    rel: entry.path.clone(),
                    abs,
                    meta,
                },
            ));
            out.context_entries.push(entry.clone());
        }
        Ok(())
    }

    fn item(&self, path: &str, out: &mut Selected) -> anyhow::Result<Item> {
        let index = self
            .find(path)
            .ok_or_else(|| anyhow!("{path}: not in the build context"))?;
        let entry = &self.entries[index];
        out.context_entries.push(entry.clone());
        let abs = self.dir.join(&entry.path);
        let meta = fs::symlink_metadata(&abs)?;
        Ok(Item {
            rel: entry.path.clone(),
            abs,
            meta,
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

    fn items_below(&self, top: &str, out: &mut Selected) -> anyhow::Result<()> {
        let top_rel = PathBuf::from(top.trim_start_matches('/'));
        let mut below = Vec::new();
        walk_dir(self.0, &top_rel, &mut below)?;
        for item in below {
            let rel = item.rel.strip_prefix(&top_rel)?.to_path_buf();
            out.items.push((rel, item));
        }
        Ok(())
    }

    fn item(&self, path: &str, _out: &mut Selected) -> anyhow::Result<Item> {
        let abs = self.host_path(path);
        let meta = fs::symlink_metadata(&abs)?;
        Ok(Item {
            rel: PathBuf::from(path.trim_start_matches('/')),
            abs,
            meta,
        })
    }
}

/// The paths a source pattern names in `tree`, as BuildKit finds them (fsutil's
/// `ResolveWildcards` with links followed): the part before the first wildcard component is
/// resolved inside the tree; the wildcard components match the names of real directories
/// (a link is not descended into); each match, a link included, is then resolved. Returns
/// (the path as named, resolved path), in path order; an empty pattern is the whole tree.
fn source_paths(tree: &dyn SourceTree, pattern: &str) -> anyhow::Result<Vec<(String, String)>> {
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

/// What one source pattern selects in `tree`, links on the source path followed (BuildKit's
/// `FollowSymlinks` for `COPY`/`ADD`), links inside a copied directory kept.
fn select(
    tree: &dyn SourceTree,
    pattern: &str,
    what: &str,
    place: &str,
) -> anyhow::Result<Selected> {
    let pattern = clean_source(pattern);
    let mut selected = Selected {
        items: Vec::new(),
        tops: 0,
        single_file_name: None,
        context_entries: Vec::new(),
        from_url: false,
    };
    let paths = source_paths(tree, &pattern)?;
    if paths.is_empty() {
        return Err(Failure::bad_input(format_args!(
            "{what} {pattern:?}: no such file or directory {place}"
        ))
        .into());
    }
    selected.tops = paths.len();
    for (named, resolved) in paths {
        match tree.node(&resolved) {
            None => {
                let shown = named.trim_start_matches('/');
                let through = if named == resolved {
                    String::new()
                } else {
                    format!(" (a link to {resolved})")
                };
                return Err(Failure::bad_input(format_args!(
                    "{what} {shown:?}{through}: no such file or directory {place}"
                ))
                .into());
            }
            Some(Node::Dir) => tree.items_below(&resolved, &mut selected)?,
            Some(_) => {
                let name = Path::new(&named).file_name().unwrap_or_default().to_owned();
                let item = tree.item(&resolved, &mut selected)?;
                selected.single_file_name = Some(name.clone());
                selected.items.push((PathBuf::from(name), item));
            }
        }
    }
    Ok(selected)
}

/// What `pattern` selects in the build context.
pub(crate) fn select_in_context(files: &ContextFiles, pattern: &str) -> anyhow::Result<Selected> {
    select(
        files,
        pattern,
        "COPY source",
        "in the build context (after .dockerignore)",
    )
}

/// What `pattern` selects in another stage's or image's tree, mounted at `root`. Only the
/// directories on the pattern's path are read (a wildcard component lists its one
/// directory), and only matched directories are walked: the source stage is often a whole
/// distribution, and a `COPY --from=build /out/app` must not read all of it.
fn select_in_dir(root: &Path, pattern: &str) -> anyhow::Result<Selected> {
    select(
        &HostDir(root),
        pattern,
        "COPY --from source",
        "in the source stage or image",
    )
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// Unpacks a local archive (gzip, xz, bzip2, zstd or plain tar) into `target`.
fn extract_archive(path: &Path, target: &Path) -> anyhow::Result<()> {
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
    archive
        .unpack(target)
        .with_context(|| format!("ADD: unpacking {}", path.display()))?;
    Ok(())
}

fn external_decompress(program: &str, path: &Path) -> anyhow::Result<std::io::Cursor<Vec<u8>>> {
    let output = std::process::Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {program} to unpack {}", path.display()))?;
    if !output.status.success() {
        return Err(anyhow!("{program} -dc {} failed", path.display()));
    }
    Ok(std::io::Cursor::new(output.stdout))
}

/// Adds `dir` and its missing parents as directory entries (existing ones keep their
/// metadata from the state).
fn add_parents(
    entries: &mut Vec<FileListEntry>,
    listed: &mut std::collections::BTreeSet<PathBuf>,
    lowers: &[PathBuf],
    dir: &str,
    owner: Option<(u64, u64)>,
    mtime: i64,
    include_self: bool,
) {
    let rel = dir.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let mut path = PathBuf::new();
    for (index, part) in parts.iter().enumerate() {
        path.push(part);
        let is_self = index + 1 == parts.len();
        if is_self && !include_self {
            break;
        }
        if !listed.insert(path.clone()) {
            continue;
        }
        let entry = match Stack::new(lowers).lookup(&format!("/{}", path.display())) {
            Some((_, meta)) if meta.is_dir() => {
                let mut entry =
                    TarEntry::new(path.clone(), EntryKind::Directory, meta.mode() & 0o7777);
                entry.uid = u64::from(meta.uid());
                entry.gid = u64::from(meta.gid());
                entry.mtime = meta.mtime();
                entry
            }
            _ => {
                let mut entry = TarEntry::new(path.clone(), EntryKind::Directory, 0o755);
                if is_self {
                    if let Some((uid, gid)) = owner {
                        entry.uid = uid;
                        entry.gid = gid;
                    }
                }
                entry.mtime = mtime;
                entry
            }
        };
        entries.push(FileListEntry {
            entry,
            source: None,
        });
    }
}

/// `WORKDIR`: a layer making the directory when the state lacks it, else nothing.
pub(crate) fn workdir_step(
    ctx: &Ctx<'_>,
    vertex: &Vertex,
    mut state: State,
    dir: &str,
    created_by: String,
    key: Key,
) -> anyhow::Result<Done> {
    let key = key.finish();
    // A hit of an imported cache is decided without the parent's layers (they may still be
    // in the cache): CACHED when it made a layer, silent when the directory was there.
    if !ctx.options.no_cache && ctx.imported_only(&key)? {
        let made_layer = ctx
            .lookup(&key)?
            .is_some_and(|hit| hit.layers.len() > state.layers.len());
        if made_layer {
            if let Some(state) = ctx.cache_hit(&key, &vertex.display_name())? {
                return Ok(Done { state, key });
            }
        } else if let Some(state) = ctx.lookup(&key)? {
            return Ok(Done { state, key });
        }
    }
    let lowers = ctx.lower_dirs(&state)?;
    let stack = Stack::new(&lowers);
    // `WORKDIR /link` makes (or finds) the directory the link names, inside the image.
    let dir = &resolve(&stack, dir, true)
        .map_err(|error| Failure::bad_input(format_args!("{created_by}: {error}")))?;
    if dir == "/" || stack.lookup(dir).is_some_and(|(_, meta)| meta.is_dir()) {
        if !ctx.options.no_cache {
            if let Some(state) = ctx.lookup(&key)? {
                return Ok(Done { state, key });
            }
        }
        state.push_history(&ctx.created, created_by, true);
        ctx.record(&key, &state)?;
        return Ok(Done { state, key });
    }
    let name = vertex.display_name();
    if let Some(state) = ctx.cache_hit(&key, &name)? {
        return Ok(Done { state, key });
    }
    let mut entries = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    let mtime = ctx.options.source_date_epoch.unwrap_or_else(now);
    add_parents(&mut entries, &mut listed, &lowers, dir, None, mtime, true);
    commit(ctx, vertex, state, entries, created_by, &key)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |e| i64::try_from(e.as_secs()).unwrap_or(0))
}

fn commit(
    ctx: &Ctx<'_>,
    vertex: &Vertex,
    mut state: State,
    entries: Vec<FileListEntry>,
    created_by: String,
    key: &str,
) -> anyhow::Result<Done> {
    let name = vertex.display_name();
    let blob = layer::write_file_list_layer(
        ctx.store.layout(),
        entries,
        ctx.options.compression,
        ctx.options.source_date_epoch,
    )
    .with_context(|| format!("{name}: writing the layer"))?;
    ctx.store
        .unpack_snapshot(&blob.descriptor, &blob.diff_id)
        .with_context(|| format!("{name}: unpacking the layer's snapshot"))?;
    state.push_layer(&blob);
    state.push_history(&ctx.created, created_by, false);
    ctx.record(key, &state)?;
    Ok(Done {
        state,
        key: key.to_owned(),
    })
}

/// `COPY` / `ADD`.
pub(crate) fn copy_step(
    ctx: &Ctx<'_>,
    vertex: &Vertex,
    instruction: &Instruction,
    parent: &Done,
    inputs: &[Arc<Done>],
    mut key: Key,
) -> anyhow::Result<Done> {
    let file = ctx.options.dockerfile.display();
    let line = instruction.span().start;
    let unsupported = |what: &str| -> anyhow::Error {
        Failure::unsupported(format_args!("{file}:{line}: {what}")).into()
    };
    let mut checksum = None;
    let (sources, destination, from, chown, chmod, is_add, text) = match instruction {
        Instruction::Copy(copy) => {
            if copy.parents {
                return Err(unsupported("COPY --parents"));
            }
            if !copy.excludes.is_empty() {
                return Err(unsupported("COPY --exclude"));
            }
            (
                &copy.sources,
                &copy.destination,
                copy.from.clone(),
                copy.chown.clone(),
                copy.chmod.clone(),
                false,
                "COPY",
            )
        }
        Instruction::Add(add) => {
            if add.keep_git_dir {
                return Err(unsupported("ADD --keep-git-dir"));
            }
            if !add.excludes.is_empty() {
                return Err(unsupported("ADD --exclude"));
            }
            checksum.clone_from(&add.checksum);
            (
                &add.sources,
                &add.destination,
                None,
                add.chown.clone(),
                add.chmod.clone(),
                true,
                "ADD",
            )
        }
        _ => return Err(anyhow!("not a COPY or ADD")),
    };
    let chmod = match chmod {
        None => None,
        Some(Chmod::Octal(mode)) => Some(ModeChange::Set(mode)),
        Some(Chmod::Symbolic(spec) | Chmod::Unexpanded(spec)) => {
            // Checked once here, so a bad clause is a Dockerfile error, not a per-file one.
            apply_symbolic_mode(&spec, 0, false).map_err(|reason| {
                crate::error::Failure::bad_input(format_args!(
                    "{}:{}: --chmod={spec}: {reason}",
                    ctx.options.dockerfile.display(),
                    instruction.span().start
                ))
            })?;
            Some(ModeChange::Symbolic(spec))
        }
    };
    let name = vertex.display_name();
    let started = Instant::now();
    let workdir = parent.state.workdir();
    let dest_abs = join_path(&workdir, destination);
    let dest_dir_syntax =
        destination.ends_with('/') || destination.ends_with("/.") || destination == ".";

    // The source tree.
    let view;
    let source_root: Option<PathBuf> = match &from {
        None => None,
        Some(from_name) => {
            let state = if let Some(input) = inputs.first() {
                input.state.clone()
            } else {
                let id = ctx.counter.next();
                let (manifest, state) = ctx.resolve_image(from_name, &vertex.platform, id)?;
                key.add("from-image", manifest.digest().as_ref());
                state
            };
            // Without URL sources the key is known now (the stage's files do not enter it):
            // a hit needs no view of the stage, whose layers may still be in a cache.
            let reads_urls = sources.iter().any(|source| {
                matches!(source, Source::Path(path) if path.starts_with("http://") || path.starts_with("https://"))
            });
            if !reads_urls {
                let mut early = key.clone();
                for source in sources {
                    if let Source::Inline(heredoc) = source {
                        early.add("inline", &heredoc.content);
                    }
                }
                let early = early.finish();
                if let Some(state) = ctx.cache_hit(&early, &name)? {
                    return Ok(Done { state, key: early });
                }
            }
            view = StateView::new(ctx, &state)?;
            Some(view.root.clone())
        }
    };
    let context_files =
        if source_root.is_none() && sources.iter().any(|s| matches!(s, Source::Path(_))) {
            Some(ctx.context_files()?)
        } else {
            None
        };

    let scratch = ctx.scratch_dirs()?;
    let mut selections = Vec::new();
    let mut inline = Vec::new();
    for source in sources {
        match source {
            Source::Path(path) => {
                if path.starts_with("http://") || path.starts_with("https://") {
                    if !is_add {
                        return Err(Failure::bad_input(format_args!(
                            "{file}:{line}: COPY cannot read URLs; use ADD"
                        ))
                        .into());
                    }
                    let target_dir = scratch.path().join(format!("url-{}", selections.len()));
                    fs::create_dir(&target_dir)?;
                    let (name, digest) = download(
                        ctx,
                        path,
                        checksum.as_deref(),
                        &target_dir,
                        &vertex.display_name(),
                    )?;
                    key.add("url", &format!("{path} {digest}"));
                    let abs = target_dir.join(&name);
                    let meta = fs::symlink_metadata(&abs)?;
                    selections.push(Selected {
                        items: vec![(
                            PathBuf::from(&name),
                            Item {
                                rel: PathBuf::from(&name),
                                abs,
                                meta,
                            },
                        )],
                        tops: 1,
                        single_file_name: Some(name.into()),
                        context_entries: Vec::new(),
                        from_url: true,
                    });
                    continue;
                }
                if path.starts_with("git@") || path.ends_with(".git") {
                    return Err(unsupported("git sources"));
                }
                let selected = match (&source_root, &context_files) {
                    (Some(root), _) => select_in_dir(root, path),
                    (None, Some(files)) => select_in_context(files, path),
                    (None, None) => return Err(anyhow!("no source for {path}")),
                }
                .map_err(|error| Failure::bad_input(format_args!("{file}:{line}: {error}")))?;
                selections.push(selected);
            }
            Source::Inline(heredoc) => inline.push(heredoc.clone()),
        }
    }
    // Cache key: exactly what is read from the context.
    if let Some(files) = &context_files {
        let mut entries: Vec<ContextEntry> = selections
            .iter()
            .flat_map(|s| s.context_entries.iter().cloned())
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        let mut cache = files
            .stat_cache
            .lock()
            .map_err(|_| anyhow!("a build thread panicked"))?;
        let digest = context::digest_entries_cached(&files.dir, &entries, &mut cache)?;
        key.add("context", digest.as_ref());
    }
    for heredoc in &inline {
        key.add("inline", &heredoc.content);
    }
    let key = key.finish();
    if let Some(state) = ctx.cache_hit(&key, &name)? {
        return Ok(Done { state, key });
    }
    let lowers = ctx.lower_dirs(&parent.state)?;
    let id = ctx.counter.next();
    ctx.sink.emit(Event::Started {
        vertex: id,
        name: name.clone(),
        emulated: false,
    });

    let owner = chown
        .as_deref()
        .map(|spec| resolve_chown(&lowers, spec))
        .transpose()?;
    let tops: usize = selections.iter().map(|s| s.tops).sum::<usize>() + inline.len();
    let stack = Stack::new(&lowers);
    // The destination resolves inside the image with every link followed, as BuildKit's
    // `fs.RootPath` does: on a merged-/usr image `/bin/f` is `/usr/bin/f`, and a link to a
    // directory is that directory.
    let dest_abs = resolve(&stack, &dest_abs, true).map_err(|error| {
        Failure::bad_input(format_args!("{file}:{line}: {text} destination: {error}"))
    })?;
    let dest_exists_dir = stack
        .lookup(&dest_abs)
        .is_some_and(|(_, meta)| meta.is_dir());
    let any_dir_source = selections.iter().any(|s| s.single_file_name.is_none());
    let dest_is_dir = dest_dir_syntax || tops > 1 || dest_exists_dir || any_dir_source;
    let mtime_now = ctx.options.source_date_epoch.unwrap_or_else(now);

    let mut entries: Vec<FileListEntry> = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    let (dest_dir, file_target) = if dest_is_dir {
        (dest_abs.clone(), None)
    } else {
        let parent_dir = Path::new(&dest_abs)
            .parent()
            .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
        (parent_dir, Some(dest_abs.clone()))
    };
    add_parents(
        &mut entries,
        &mut listed,
        &lowers,
        &dest_dir,
        owner,
        mtime_now,
        dest_is_dir,
    );
    let dest_rel = PathBuf::from(dest_dir.trim_start_matches('/'));
    let from_context = source_root.is_none();
    let mut targets = Targets {
        stack,
        fresh: std::collections::HashSet::new(),
    };
    if dest_is_dir && !dest_exists_dir {
        targets.fresh.insert(dest_rel.clone());
    }

    let push_item = |below: &Path,
                     item: &Item,
                     url_file: bool,
                     entries: &mut Vec<FileListEntry>,
                     listed: &mut std::collections::BTreeSet<PathBuf>|
     -> anyhow::Result<()> {
        let target = match &file_target {
            Some(target) => PathBuf::from(target.trim_start_matches('/')),
            None => dest_rel.join(below),
        };
        if !listed.insert(target.clone()) {
            // A later source wins over an earlier one, as files overwrite.
            entries.retain(|e| e.entry.path != target);
        }
        let mut entry = layer::entry_from_metadata(&target, &item.abs, &item.meta)?;
        if let Some((uid, gid)) = owner {
            entry.uid = uid;
            entry.gid = gid;
        } else if from_context {
            entry.uid = 0;
            entry.gid = 0;
        }
        if let Some(change) = &chmod {
            entry.mode = change.apply(entry.mode, item.meta.is_dir());
        } else if url_file {
            entry.mode = 0o600;
        }
        let source = item.meta.is_file().then(|| item.abs.clone());
        entries.push(FileListEntry { entry, source });
        Ok(())
    };

    let mut extracted = 0;
    for selected in &selections {
        for (below, item) in &selected.items {
            if is_add && !selected.from_url && item.meta.is_file() && is_archive(&item.abs) {
                // ADD of a local archive: unpacked into the destination directory.
                let target = scratch.path().join(format!("archive-{extracted}"));
                extracted += 1;
                fs::create_dir(&target)?;
                extract_archive(&item.abs, &target)?;
                let mut unpacked = Vec::new();
                walk_dir(&target, Path::new(""), &mut unpacked)?;
                let base = if selected.single_file_name.is_some() {
                    PathBuf::new()
                } else {
                    below.parent().map(Path::to_path_buf).unwrap_or_default()
                };
                let saved = file_target.clone();
                let _ = saved;
                for inner in unpacked {
                    let path = dest_rel.join(&base).join(&inner.rel);
                    if !listed.insert(path.clone()) {
                        entries.retain(|e| e.entry.path != path);
                    }
                    let mut entry = layer::entry_from_metadata(&path, &inner.abs, &inner.meta)?;
                    if let Some((uid, gid)) = owner {
                        entry.uid = uid;
                        entry.gid = gid;
                    }
                    let source = inner.meta.is_file().then(|| inner.abs.clone());
                    entries.push(FileListEntry { entry, source });
                }
                continue;
            }
            // Directories in between the destination and the item.
            if let Some(parent) = below.parent().filter(|p| !p.as_os_str().is_empty()) {
                let mut path = dest_rel.clone();
                for component in parent.components() {
                    path.push(component);
                    if listed.insert(path.clone()) {
                        let mut entry = TarEntry::new(path.clone(), EntryKind::Directory, 0o755);
                        entry.mtime = mtime_now;
                        if let Some((uid, gid)) = owner {
                            entry.uid = uid;
                            entry.gid = gid;
                        }
                        entries.push(FileListEntry {
                            entry,
                            source: None,
                        });
                    }
                }
            }
            let target = match &file_target {
                Some(target) => PathBuf::from(target.trim_start_matches('/')),
                None => dest_rel.join(below),
            };
            targets
                .check(&target, item.meta.is_dir())
                .map_err(|reason| Failure::bad_input(format_args!("{file}:{line}: {reason}")))?;
            push_item(below, item, selected.from_url, &mut entries, &mut listed)?;
        }
    }
    for (index, heredoc) in inline.iter().enumerate() {
        let content_file = scratch.path().join(format!("inline-{index}"));
        fs::write(&content_file, heredoc.content.as_bytes())?;
        let target = match &file_target {
            Some(target) => PathBuf::from(target.trim_start_matches('/')),
            None => dest_rel.join(&heredoc.name),
        };
        let mut entry = TarEntry::new(
            target.clone(),
            EntryKind::File {
                size: heredoc.content.len() as u64,
            },
            chmod
                .as_ref()
                .map_or(0o644, |change| change.apply(0o644, false)),
        );
        entry.mtime = mtime_now;
        if let Some((uid, gid)) = owner {
            entry.uid = uid;
            entry.gid = gid;
        }
        listed.insert(target.clone());
        entries.retain(|e| e.entry.path != target);
        entries.push(FileListEntry {
            entry,
            source: Some(content_file),
        });
    }
    let created_by = format!(
        "{text} {} # buildkit",
        instruction_summary(sources, destination)
    );
    let done = commit(ctx, vertex, parent.state.clone(), entries, created_by, &key)?;
    ctx.sink.emit(Event::Finished {
        vertex: id,
        duration: started.elapsed(),
    });
    Ok(done)
}

/// Where a copy's items land in the destination state, checked as BuildKit's copier checks
/// them: a directory cannot go where the image has a file or a link (`COPY rootfs/ /` does
/// not replace the `/bin` link of a merged-/usr image), a file cannot replace a directory.
struct Targets<'a> {
    stack: Stack<'a>,
    /// Directories this copy creates (nothing below them exists yet: not looked up).
    fresh: std::collections::HashSet<PathBuf>,
}

impl Targets<'_> {
    fn check(&mut self, target: &Path, is_dir: bool) -> Result<(), String> {
        let known_new = target
            .parent()
            .is_some_and(|parent| self.fresh.contains(parent));
        let existing = if known_new {
            None
        } else {
            self.stack
                .lookup(&format!("/{}", target.display()))
                .map(|(_, meta)| meta.is_dir())
        };
        match existing {
            None => {
                if is_dir {
                    self.fresh.insert(target.to_path_buf());
                }
                Ok(())
            }
            Some(false) if is_dir => Err(format!(
                "cannot copy to non-directory: /{} (a file or a link in the image)",
                target.display()
            )),
            Some(true) if !is_dir => Err(format!(
                "cannot replace directory /{} with a file",
                target.display()
            )),
            Some(_) => Ok(()),
        }
    }
}

fn instruction_summary(sources: &[Source], destination: &str) -> String {
    let mut words: Vec<String> = sources
        .iter()
        .map(|s| match s {
            Source::Path(p) => p.clone(),
            Source::Inline(h) => format!("<<{}", h.name),
        })
        .collect();
    words.push(destination.to_owned());
    words.join(" ")
}

/// Downloads `url` into `dir` (`ADD URL`), checking `--checksum`; returns the file name
/// (the last path segment of the URL, `download` when it has none) and the content digest.
fn download(
    ctx: &Ctx<'_>,
    url: &str,
    checksum: Option<&str>,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| Failure::bad_input(format_args!("ADD {url}: {error}")))?;
    let file_name = parsed
        .path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .filter(|segment| !segment.is_empty())
        .unwrap_or_else(|| "download".to_owned());
    // Streamed into the step's scratch directory and hashed on the way, never whole in
    // memory: a URL without end is bounded by the disk only, as in BuildKit.
    let path = dir.join(&file_name);
    let streamed = ctx.runtime.block_on(async {
        let response = reqwest::Client::new().get(parsed.clone()).send().await?;
        let mut response = response.error_for_status()?;
        let mut file =
            fs::File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut digester = crate::oci::Digester::default();
        while let Some(chunk) = response.chunk().await? {
            digester.update(&chunk);
            std::io::Write::write_all(&mut file, &chunk)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        anyhow::Ok(digester.finish().0.to_string())
    });
    let digest = match streamed {
        Ok(digest) => digest,
        Err(error) => {
            let _ = fs::remove_file(&path);
            return Err(error.context(format!("{name}: downloading {url}")));
        }
    };
    if let Some(expected) = checksum {
        if expected != digest {
            let _ = fs::remove_file(&path);
            return Err(anyhow!(
                "{name}: {url}: checksum mismatch: expected {expected}, got {digest}"
            ));
        }
    }
    Ok((file_name, digest))
}

/// `--chmod`: an octal mode, or chmod(1)'s symbolic form applied to each file's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModeChange {
    /// `--chmod=0755`.
    Set(u32),
    /// `--chmod=u+x,g-w,o=r` (validated when the step starts).
    Symbolic(String),
}

impl ModeChange {
    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Self::Set(mode) => mode & 0o7777,
            Self::Symbolic(spec) => apply_symbolic_mode(spec, mode, is_dir).unwrap_or(mode),
        }
    }
}

/// Applies chmod(1)'s symbolic clauses (`[ugoa]*[+-=][rwxXst]*`, comma separated) to `mode`.
/// An empty "who" means all (no umask, as BuildKit); `X` sets execute for directories and for
/// files that already have an execute bit.
fn apply_symbolic_mode(spec: &str, mode: u32, is_dir: bool) -> Result<u32, String> {
    let mut mode = mode & 0o7777;
    for clause in spec.split(',') {
        let op_at = clause
            .find(['+', '-', '='])
            .ok_or_else(|| format!("\"{clause}\" has no +, - or ="))?;
        let (who, rest) = clause.split_at(op_at);
        let mut who_mask = 0;
        for c in who.chars() {
            who_mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                other => return Err(format!("unknown \"who\" {other:?} in \"{clause}\"")),
            };
        }
        if who_mask == 0 {
            who_mask = 0o7777;
        }
        let mut chars = rest.chars();
        let op = chars.next().unwrap_or('=');
        let mut bits = 0;
        for c in chars {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                other => return Err(format!("unknown permission {other:?} in \"{clause}\"")),
            };
        }
        let bits = bits & who_mask;
        mode = match op {
            '+' => mode | bits,
            '-' => mode & !bits,
            _ => (mode & !who_mask) | bits,
        };
    }
    Ok(mode)
}

#[cfg(test)]
mod symbolic_mode_tests {
    use super::apply_symbolic_mode;

    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(apply_symbolic_mode("u+x", 0o644, false), Ok(0o744));
        assert_eq!(apply_symbolic_mode("g-w,o=r", 0o664, false), Ok(0o644));
        assert_eq!(apply_symbolic_mode("a+X", 0o644, false), Ok(0o644));
        assert_eq!(apply_symbolic_mode("a+X", 0o644, true), Ok(0o755));
        assert_eq!(apply_symbolic_mode("+x", 0o600, false), Ok(0o711));
        assert_eq!(apply_symbolic_mode("u=rwx,go=", 0o644, false), Ok(0o700));
        assert_eq!(apply_symbolic_mode("u+s", 0o755, false), Ok(0o4755));
        assert!(apply_symbolic_mode("q+x", 0o644, false).is_err());
        assert!(apply_symbolic_mode("u+z", 0o644, false).is_err());
        assert!(apply_symbolic_mode("ux", 0o644, false).is_err());
    }
}

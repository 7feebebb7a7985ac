//! `COPY`, `ADD` and the directory `WORKDIR` creates: each makes one layer from a file list
//! ([`crate::layer::write_file_list_layer`]) whose snapshot is made by unpacking it.
//!
//! Sources: the build context after `.dockerignore` (walked once per build), another stage
//! or an image (`--from`): its layers are mounted as a read-only overlay on a temporary
//! directory in the host's mount namespace (we are root) for the time of the copy, so
//! whiteouts and opaque directories are the kernel's business. `--chown` names are looked
//! up in `/etc/passwd` and `/etc/group` of the destination state, reading its snapshots top
//! down (whiteouts honoured; symlinked parents of those files are not followed).
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

/// Looks up `path` (absolute in the image) through snapshots, top first.
fn lookup(lowers: &[PathBuf], path: &str) -> Option<(PathBuf, fs::Metadata)> {
    let rel = path.trim_start_matches('/');
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for lower in lowers {
        let mut here = lower.clone();
        let mut stop = false;
        for (index, component) in components.iter().enumerate() {
            here.push(component);
            match fs::symlink_metadata(&here) {
                Ok(meta) if layer::apply::is_overlay_whiteout(&meta) => return None,
                Ok(meta) if index + 1 == components.len() => return Some((here, meta)),
                Ok(meta) if meta.is_dir() => {
                    if xattr::get(&here, layer::apply::OVERLAY_OPAQUE_XATTR)
                        .ok()
                        .flatten()
                        .is_some_and(|v| v == b"y")
                    {
                        stop = true;
                    }
                }
                Ok(_) => return None,
                Err(_) => break,
            }
        }
        if components.is_empty() {
            return fs::symlink_metadata(lower).ok().map(|m| (lower.clone(), m));
        }
        if stop {
            return None;
        }
    }
    None
}

/// `user[:group]` to numbers, through the state's `/etc/passwd` and `/etc/group`.
fn resolve_chown(lowers: &[PathBuf], spec: &str) -> anyhow::Result<(u64, u64)> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let read = |file: &str| {
        lookup(lowers, file)
            .and_then(|(path, _)| fs::read_to_string(path).ok())
            .unwrap_or_default()
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
            find(&read("/etc/passwd"), user).map_or(uid, |(_, gid)| gid),
        ),
        Err(_) => find(&read("/etc/passwd"), user).ok_or_else(|| {
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
            Err(_) => find(&read("/etc/group"), group)
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

pub(crate) fn select_in_context(files: &ContextFiles, pattern: &str) -> anyhow::Result<Selected> {
    let pattern = clean_source(pattern);
    let is_top = |entry: &ContextEntry| -> bool {
        if pattern.is_empty() {
            return false;
        }
        if has_wildcard(&pattern) {
            let pattern_parts: Vec<&str> = pattern.split('/').collect();
            let path = entry.path.to_string_lossy();
            let parts: Vec<&str> = path.split('/').collect();
            parts.len() == pattern_parts.len()
                && parts.iter().zip(&pattern_parts).all(|(name, pat)| {
                    context::glob_match(pat.as_bytes(), name.as_bytes()) == Some(true)
                })
        } else {
            entry.path.as_os_str() == pattern.as_str()
        }
    };
    let mut selected = Selected {
        items: Vec::new(),
        tops: 0,
        single_file_name: None,
        context_entries: Vec::new(),
        from_url: false,
    };
    let tops: Vec<&ContextEntry> = if pattern.is_empty() {
        Vec::new()
    } else {
        files.entries.iter().filter(|e| is_top(e)).collect()
    };
    if pattern.is_empty() {
        // The whole context.
        selected.tops = 1;
        for entry in &files.entries {
            let abs = files.dir.join(&entry.path);
            let meta = fs::symlink_metadata(&abs)?;
            selected.items.push((
                entry.path.clone(),
                Item {
                    rel: entry.path.clone(),
                    abs,
                    meta,
                },
            ));
            selected.context_entries.push(entry.clone());
        }
        return Ok(selected);
    }
    if tops.is_empty() {
        return Err(Failure::bad_input(format_args!(
            "COPY source {pattern:?}: no such file or directory in the build context (after .dockerignore)"
        ))
        .into());
    }
    selected.tops = tops.len();
    for top in tops {
        let abs = files.dir.join(&top.path);
        let meta = fs::symlink_metadata(&abs)?;
        selected.context_entries.push(top.clone());
        if meta.is_dir() {
            for entry in files
                .entries
                .iter()
                .filter(|e| e.path.starts_with(&top.path) && e.path != top.path)
            {
                let abs = files.dir.join(&entry.path);
                let meta = fs::symlink_metadata(&abs)?;
                let below = entry.path.strip_prefix(&top.path)?.to_path_buf();
                selected.items.push((
                    below,
                    Item {
                        rel: entry.path.clone(),
                        abs,
                        meta,
                    },
                ));
                selected.context_entries.push(entry.clone());
            }
        } else {
            selected.single_file_name = top.path.file_name().map(ToOwned::to_owned);
            let name = PathBuf::from(top.path.file_name().unwrap_or_default());
            selected.items.push((
                name,
                Item {
                    rel: top.path.clone(),
                    abs,
                    meta,
                },
            ));
        }
    }
    Ok(selected)
}

/// Selects `pattern` in another stage's or image's tree. Only the directories on the
/// pattern's path are read (a wildcard component lists its one directory), and only matched
/// directories are walked: the source stage is often a whole distribution, and a
/// `COPY --from=build /out/app` must not read all of it. Components are matched as in the
/// tree (an intermediate symlink is not followed), in sorted order.
fn select_in_dir(root: &Path, pattern: &str) -> anyhow::Result<Selected> {
    let pattern = clean_source(pattern);
    let mut selected = Selected {
        items: Vec::new(),
        tops: 0,
        single_file_name: None,
        context_entries: Vec::new(),
        from_url: false,
    };
    if pattern.is_empty() {
        let mut all = Vec::new();
        walk_dir(root, Path::new(""), &mut all)?;
        selected.tops = 1;
        for item in all {
            selected.items.push((item.rel.clone(), item));
        }
        return Ok(selected);
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    let mut candidates = vec![PathBuf::new()];
    for part in &parts {
        let mut next = Vec::new();
        for candidate in candidates {
            let dir = root.join(&candidate);
            if !fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
                continue;
            }
            if has_wildcard(part) {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<_> = entries.flatten().map(|entry| entry.file_name()).collect();
                names.sort();
                for name in names {
                    let matched = context::glob_match(part.as_bytes(), name.as_encoded_bytes());
                    if matched == Some(true) {
                        next.push(candidate.join(name));
                    }
                }
            } else if fs::symlink_metadata(dir.join(part)).is_ok() {
                next.push(candidate.join(part));
            }
        }
        candidates = next;
    }
    if candidates.is_empty() {
        return Err(
            Failure::bad_input(format_args!("COPY --from source {pattern:?}: not found")).into(),
        );
    }
    selected.tops = candidates.len();
    for top in candidates {
        let abs = root.join(&top);
        let meta = fs::symlink_metadata(&abs)?;
        if meta.is_dir() {
            let mut below = Vec::new();
            walk_dir(root, &top, &mut below)?;
            for item in below {
                let rel = item.rel.strip_prefix(&top)?.to_path_buf();
                selected.items.push((rel, item));
            }
        } else {
            let name = top.file_name().unwrap_or_default().to_owned();
            selected.single_file_name = Some(name.clone());
            selected.items.push((
                PathBuf::from(name),
                Item {
                    rel: top,
                    abs,
                    meta,
                },
            ));
        }
    }
    Ok(selected)
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
        let entry = match lookup(lowers, &format!("/{}", path.display())) {
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
    if dir == "/" || lookup(&lowers, dir).is_some_and(|(_, meta)| meta.is_dir()) {
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
    let dest_exists_dir = lookup(&lowers, &dest_abs).is_some_and(|(_, meta)| meta.is_dir());
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
    let bytes = ctx.runtime.block_on(async {
        let response = reqwest::Client::new().get(parsed.clone()).send().await?;
        let response = response.error_for_status()?;
        response.bytes().await
    });
    let bytes = bytes.with_context(|| format!("{name}: downloading {url}"))?;
    let digest = crate::oci::sha256_digest(&bytes).to_string();
    if let Some(expected) = checksum {
        if expected != digest {
            return Err(anyhow!(
                "{name}: {url}: checksum mismatch: expected {expected}, got {digest}"
            ));
        }
    }
    fs::write(dir.join(&file_name), &bytes)?;
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

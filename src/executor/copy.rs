//! `COPY`, `ADD` and the directory `WORKDIR` creates: each makes one layer from a file list,
//! kept as its snapshot ([`crate::layer::unpack_file_list_layer`]: the tar unpacked as it is
//! written); its blob is made from the snapshot when an image needs it ([`super::blobs`]).
//!
//! A `COPY`/`ADD` of context files takes the files it did not change from the snapshot the
//! same step (its cache key without the context's digest, the "link key") made last, as
//! hard links ([`crate::layer::unpack_file_list_layer_linking`]: same metadata, content
//! compared byte for byte), and syncs only the files it wrote and its directories
//! ([`crate::store::Store::adopt_linked_snapshot`]): a one-file change of a big context
//! writes one file. The tar and the diff_id are the same bytes either way. Inside later
//! steps such a file's link count (`stat`, `ls -l`) is that of the shared inode
//! (`XBUILD_COPY_LINK=0` writes every file).
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
//! `ADD <git URL>` ([`crate::remote::git`]): the reference is resolved to a commit first
//! (`ls-remote`; the commit and what shapes the tree are the cache key, not `--checksum`),
//! and fetched only on a cache miss; the checkout's contents are copied as a directory's
//! (modes and the commit time as mtime kept, never unpacked), `.git` with `--keep-git-dir`.
//!
//! `COPY --parents` keeps a source's path below the destination (from its `/./` pivot, if
//! any; wildcards and `**` allowed), `--exclude` leaves out what its `.dockerignore`-style
//! patterns match below a copied directory, both as fsutil's copier filters
//! ([`super::sources::Filter`]).
//!
//! `ADD` unpacks an archive (a file that is a tar once decompressed, BuildKit's
//! `isArchivePath`) that a source names itself: a local one unless `--unpack=false`, a
//! download only with `--unpack=true`, into the destination directory, through the
//! image's links ([`Archive`]).
//!
//! Not supported yet (exit 2): checksums other than sha256; a git remote over ssh is fetched through `--ssh default`. `--chmod` takes
//! octal or chmod(1) symbolic modes. `ADD` of an http(s) URL downloads it into the store
//! ([`super::sources::download`]: named after the URL path's last component, else
//! `__unnamed__`; mode 0600; mtime its `Last-Modified`, else 0), checked against
//! `--checksum` when given; a rebuild asks with `HEAD` whether its `ETag` changed first. `--link` is accepted and treated as a
//! plain `COPY` (same result, no layer reuse across bases).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::checksum;
use super::error::{ExecutorError, Within as _};
use super::from::resolve_image;
use super::listing::{EntryRules, Listing};
use super::materials::Material;
use super::permissions::{ModeChange, resolve_chown};
use super::services::Services;
use super::sources::{
    ContextFiles, Filter, Item, Selected, download, extract_archive, is_archive, select_in_context,
    select_in_dir, walk_dir,
};
use super::state::{Done, join_path};
use crate::cache::Key;
use crate::context;
use crate::dockerfile::Instruction;
use crate::dockerfile::instruction::{Chmod, Source};
use crate::layer::tree::{Node, Stack, Tree, resolve};
use crate::layer::{self, EntryKind, FileListEntry, TarEntry};
use crate::oci::ImageState;
use crate::plan::Vertex;
use crate::progress::{Event, Stream, VertexId};
use crate::remote::git::{self, FetchOptions};
use crate::source::gitref::{GitRef, is_git_source};

/// Adds `dir` and its missing parents as directory entries (existing ones keep their
/// metadata from the state; missing ones get `mode`).
fn add_parents(
    listing: &mut Listing<'_>,
    lowers: &[PathBuf],
    dir: &str,
    owner: Option<(u64, u64)>,
    mtime: i64,
    include_self: bool,
    mode: u32,
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
        if listing.is_listed(&path) {
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
                let mut entry = TarEntry::new(path.clone(), EntryKind::Directory, mode);
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
        listing.make(entry);
    }
}

/// `WORKDIR`: a layer making the directory when the state lacks it, an empty layer when it
/// has it (as BuildKit's `mkdir -p` step), nothing but history for `/`.
pub(crate) fn workdir(
    services: &Services<'_>,
    vertex: &Vertex,
    mut state: ImageState,
    created_by: String,
    mut key: Key,
) -> Result<Done, ExecutorError> {
    let dir = &state.workdir();
    // Records made before an existing directory got its empty layer are not reused.
    key.add("workdir", "empty-layer");
    let key = key.finish();
    // A hit of an imported cache is decided without the parent's layers (they may still be
    // in the cache): CACHED when it made a layer, silent for `WORKDIR /`.
    if services.uses_cache(vertex) && services.cache.imported_only(&key)? {
        let made_layer = services
            .cache
            .lookup(&key)?
            .is_some_and(|hit| hit.layers.len() > state.layers.len());
        if made_layer {
            if let Some(state) = services.cache_hit(vertex, &key, &vertex.display_name())? {
                return Ok(Done::new(state, key));
            }
        } else if let Some(state) = services.cache.lookup(&key)? {
            return Ok(Done::new(state, key));
        }
    }
    let lowers = services.lower_dirs(&state)?;
    let stack = Stack::new(&lowers);
    // `WORKDIR /link` makes (or finds) the directory the link names, inside the image.
    let dir = &resolve(&stack, dir, true).map_err(|error| ExecutorError::ImagePath {
        instruction: created_by.clone(),
        reason: error.to_string(),
    })?;
    // BuildKit's `dispatchWorkdir`: `WORKDIR /` is history only; any other path is a
    // `mkdir -p` whose diff is a layer, empty when the directory is there already.
    if state.workdir() == "/" {
        if services.uses_cache(vertex) {
            if let Some(state) = services.cache.lookup(&key)? {
                return Ok(Done::new(state, key));
            }
        }
        state.push_history(&services.created, created_by, true);
        services.cache.record(&key, &state)?;
        return Ok(Done::new(state, key));
    }
    let name = vertex.display_name();
    if let Some(state) = services.cache_hit(vertex, &key, &name)? {
        return Ok(Done::new(state, key));
    }
    if dir == "/" || stack.lookup(dir).is_some_and(|(_, meta)| meta.is_dir()) {
        return commit(services, vertex, state, Vec::new(), created_by, &key, None);
    }
    // Owned by the USER in force, as BuildKit's `Mkdir` with the config's user.
    let owner = state
        .cfg()
        .user()
        .clone()
        .filter(|user| !user.is_empty())
        .map(|user| resolve_chown(&lowers, &user))
        .transpose()?;
    let mut listing = Listing::new();
    let mtime = services.options.source_date_epoch.unwrap_or_else(now);
    add_parents(&mut listing, &lowers, dir, owner, mtime, true, 0o755);
    commit(
        services,
        vertex,
        state,
        listing.into_list(),
        created_by,
        &key,
        None,
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |e| i64::try_from(e.as_secs()).unwrap_or(0))
}

/// Makes the step's layer from `entries`. With `link` (a `COPY` of the context: its key
/// without the digest of the files it reads, and the step's progress vertex), the snapshot
/// the same step made last is looked up, its unchanged files are hard-linked instead of
/// written ([`layer::unpack_file_list_layer_linking`]), and this snapshot is remembered for
/// the next build.
fn commit<L: layer::FileList>(
    services: &Services<'_>,
    vertex: &Vertex,
    mut state: ImageState,
    mut entries: L,
    created_by: String,
    key: &str,
    link: Option<(&str, VertexId)>,
) -> Result<Done, ExecutorError> {
    let link_key = link.map(|(link_key, _)| link_key);
    let listed = entries.len();
    let name = vertex.display_name();
    // The tar is unpacked into the snapshot as it is written, not compressed: the blob is
    // made from the snapshot when an image needs it, as for `RUN` (super::blobs).
    let clamp = services.options.source_date_epoch;
    let tmp = services.store.snapshot_tmp_dir()?;
    let earlier = link_key.and_then(|link_key| services.store.earlier_snapshot(link_key));
    let unpacked =
        layer::unpack_file_list_layer_linking(&mut entries, clamp, tmp.path(), earlier.as_deref())
            .within(|| format!("{name}: writing the layer's snapshot"))?;
    if let (Some((_, vertex)), true) = (link, unpacked.linked > 0) {
        services.sink.emit(Event::Log {
            vertex,
            stream: Stream::Stdout,
            line: format!(
                "{} of {} files linked from the snapshot of an earlier build",
                unpacked.linked, unpacked.files
            ),
        });
    }
    let diff_id = unpacked.diff_id;
    // The blob is left for later when the snapshot's own tar is this one (unpacked
    // exactly, as root: the layer module makes it so, no second pass) and the snapshot is
    // this step's (one already there may come from a pulled blob, as in `RUN`); otherwise
    // it is written now from the file list.
    let compression = services.options.compression;
    let existing = services.store.snapshot(&diff_id).is_some();
    // An exact snapshot already there, with the blob an earlier build made of it at this
    // compression: that blob is this layer's (the same tar, compressor and level).
    let stored_blob = if unpacked.exact && existing {
        services.store.layer_blob(&diff_id, compression)?
    } else {
        None
    };
    if let Some(descriptor) = stored_blob {
        services
            .store
            .adopt_snapshot(&diff_id, tmp.keep())
            .within(|| format!("{name}: keeping the layer's snapshot"))?;
        state.push_own_layer(descriptor, diff_id.clone());
    } else if !unpacked.exact || existing {
        let blob = layer::write_file_list_layer(
            services.store.layout(),
            entries,
            services.options.compression,
            clamp,
        )
        .within(|| format!("{name}: writing the layer"))?;
        services.store.put_layer_blob(
            &blob.diff_id,
            &blob.descriptor,
            services.options.compression,
        )?;
        services
            .store
            .adopt_snapshot(&diff_id, tmp.keep())
            .within(|| format!("{name}: keeping the layer's snapshot"))?;
        state.push_own_layer(blob.descriptor, blob.diff_id);
    } else {
        // The list is not needed any more: freed before the snapshot is synced.
        drop(entries);
        // Files linked from an earlier snapshot were synced with it: only the others are.
        match &unpacked.written {
            Some(written) => services
                .store
                .adopt_linked_snapshot(&diff_id, tmp.keep(), written),
            None => services.store.adopt_snapshot(&diff_id, tmp.keep()),
        }
        .within(|| format!("{name}: keeping the layer's snapshot"))?;
        state.push_snapshot_layer(diff_id.clone(), clamp);
    }
    if let Some(link_key) = link_key {
        services
            .store
            .remember_snapshot_source(link_key, &diff_id)
            .within(|| format!("{name}: remembering the layer's snapshot"))?;
    }
    state.push_history(&services.created, created_by, false);
    services.cache.record(key, &state)?;
    if listed >= TRIM_AFTER_ENTRIES {
        release_free_memory();
    }
    Ok(Done::new(state, key.to_owned()))
}

/// A layer of at least this many entries frees enough (its list, the unpacking's pieces,
/// the context digest's buffers before it) to hand back to the system at once.
const TRIM_AFTER_ENTRIES: usize = 10_000;

/// Hands the allocator's free pages back to the system (glibc's `malloc_trim`, every
/// arena). What a big `COPY` freed otherwise stays in its thread's arena while the layer
/// is compressed in others' (issue 19 item 4: 100,000 files, RSS over the heap by the
/// size of the freed file list).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The cache key of a copy whose sources are all in the build context (paths, no URL or git
/// repository; inline files), from [`ContextFiles::key_parts`]: the key the full selection
/// makes, added to in the same order (the context's digest, inline files, hard links).
/// `None` when the sources are not all in the context or only the full selection can tell.
fn early_context_key(
    files: &ContextFiles,
    sources: &[Source],
    is_add: bool,
    filter: &Filter,
    key: &Key,
) -> Result<Option<String>, ExecutorError> {
    let mut patterns = Vec::new();
    let mut inline = Vec::new();
    for source in sources {
        match source {
            Source::Path(path) => {
                if (is_add && is_git_source(path))
                    || path.starts_with("http://")
                    || path.starts_with("https://")
                {
                    return Ok(None);
                }
                patterns.push(path.as_str());
            }
            Source::Inline(heredoc) => inline.push(&heredoc.content),
        }
    }
    let Some(parts) = files.key_parts(&patterns, filter)? else {
        return Ok(None);
    };
    let context = context_digest(files, files.entries_at(&parts.indexes))?;
    Ok(Some(finish_copy_key(
        key.clone(),
        Some(&context),
        inline,
        &parts.hardlinks,
    )))
}

/// The digest of the context `entries` a copy reads (through the build's stat cache).
fn context_digest<'a>(
    files: &ContextFiles,
    entries: impl IntoIterator<Item = crate::context::ContextEntry<'a>>,
) -> Result<oci_spec::image::Digest, ExecutorError> {
    let mut cache = files
        .stat_cache
        .lock()
        .map_err(|_| ExecutorError::WorkerPanicked)?;
    Ok(context::digest_entries_cached(
        &files.dir, entries, &mut cache,
    )?)
}

/// A copy's key: `key` with what it reads of the context (`context`), its inline files and
/// the hard links among what its sources select, in this order. The one place both of a
/// context copy's keys are finished (`early_context_key` and the selection's in [`step`]),
/// which must be the same.
fn finish_copy_key<'a>(
    mut key: Key,
    context: Option<&oci_spec::image::Digest>,
    inline: impl IntoIterator<Item = &'a String>,
    hardlinks: &[(PathBuf, PathBuf)],
) -> String {
    if let Some(context) = context {
        key.add("context", context.as_ref());
    }
    for content in inline {
        key.add("inline", content);
    }
    for (below, first) in hardlinks {
        key.add(
            "hardlink",
            &format!("{} {}", below.display(), first.display()),
        );
    }
    key.finish()
}

/// `COPY` / `ADD`. A `COPY --from` has a second key, `by_content` (its key without the
/// identity of what it reads from, super::dispatch), looked up with the checksum of the
/// sources it selects ([`super::checksum`]) when its key misses: a stage rebuilt to the
/// same files takes the layer the step made before, as BuildKit's content-based cache of a
/// copy's sources. A step that runs is recorded under both.
#[allow(clippy::too_many_lines)]
pub(crate) fn step(
    services: &Services<'_>,
    vertex: &Vertex,
    instruction: &Instruction,
    parent: &Done,
    inputs: &[Arc<Done>],
    mut key: Key,
    by_content: Option<Key>,
) -> Result<Done, ExecutorError> {
    let file = services.options.dockerfile.display();
    let line = instruction.span().start;
    // Flags and sources not supported yet were refused before any work
    // (super::validate).
    let mut checksum = None;
    let mut keep_git_dir = None;
    let mut unpack = None;
    let (sources, destination, from, chown, chmod, is_add, text) = match instruction {
        Instruction::Copy(copy) => (
            &copy.sources,
            &copy.destination,
            copy.from.clone(),
            copy.chown.clone(),
            copy.chmod.clone(),
            false,
            if copy.parents {
                "COPY --parents"
            } else {
                "COPY"
            },
        ),
        Instruction::Add(add) => {
            checksum.clone_from(&add.checksum);
            keep_git_dir = Some(add.keep_git_dir);
            unpack = add.unpack;
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
        _ => return Err(ExecutorError::Internal("not a COPY or ADD".to_owned())),
    };
    let filter = match instruction {
        Instruction::Copy(copy) => Filter::new(&copy.excludes, copy.parents),
        Instruction::Add(add) => Filter::new(&add.excludes, false),
        _ => Ok(Filter::default()),
    }
    .map_err(|error| ExecutorError::invalid(&file, line, error))?;
    let chmod = match chmod {
        None => None,
        Some(Chmod::Octal(mode)) => Some(ModeChange::Set(mode)),
        Some(Chmod::Symbolic(spec) | Chmod::Unexpanded(spec)) => Some(ModeChange::Symbolic(spec)),
    };
    let name = vertex.display_name();
    let started = Instant::now();
    let workdir = parent.state.workdir();
    let dest_abs = join_path(&workdir, destination);
    let dest_dir_syntax =
        destination.ends_with('/') || destination.ends_with("/.") || destination == ".";

    // The source tree.
    let view;
    // A copy from a stage or an image without URL sources: its key, looked up before the
    // stage is viewed (the key the selection makes below must be the same).
    let mut early_from_key = None;
    let source_root: Option<PathBuf> = match &from {
        None => None,
        Some(from_name) => {
            let state = if let Some(input) = inputs.first() {
                input.state.clone()
            } else {
                let id = services.counter.next();
                let (manifest, state) = resolve_image(services, from_name, vertex, id)?;
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
                if let Some(state) = services.cache_hit(vertex, &early, &name)? {
                    return Ok(Done::new(state, early));
                }
                early_from_key = Some(early);
            }
            view = services.view(&state)?;
            Some(view.root.clone())
        }
    };
    let context_files =
        if source_root.is_none() && sources.iter().any(|s| matches!(s, Source::Path(_))) {
            Some(services.context_files()?)
        } else {
            None
        };

    // A copy from the context only: its key needs the entries' indexes, not the selection's
    // items, so a cache hit makes none (issue 19 item 4: peak RSS at 100,000 files).
    let early_key = match &context_files {
        Some(files) => early_context_key(files, sources, is_add, &filter, &key)?,
        None => None,
    };
    if let Some(early) = &early_key {
        if let Some(state) = services.cache_hit(vertex, early, &name)? {
            return Ok(Done::new(state, early.clone()));
        }
    }

    let scratch = services.scratch_dirs()?;
    let mut selections = Vec::new();
    let mut pending_git = Vec::new();
    // Downloads: their `Last-Modified` times (the files' mtimes, as BuildKit sets them).
    let mut url_mtimes = std::collections::HashMap::new();
    let mut inline = Vec::new();
    for source in sources {
        match source {
            Source::Path(path) => {
                // Only ADD reads URLs and git repositories (checked by the frontend); an ssh
                // remote has a `default` agent (checked before any work, super::validate).
                if is_add && is_git_source(path) {
                    // Resolved now (the commit is the key); fetched on a cache miss only.
                    let git = GitRef::parse(path)
                        .ok()
                        .flatten()
                        .ok_or_else(|| ExecutorError::Internal(format!("{path}: not git")))?;
                    let options = FetchOptions {
                        keep_git_dir: keep_git_dir.unwrap_or(false),
                        checksum: checksum.clone(),
                        // An ssh remote: BuildKit's `default` agent (checked by validate).
                        ssh_agent: services.ssh.socket("default").map(Path::to_path_buf),
                    };
                    let resolved =
                        git::resolve(&git, &options).map_err(|source| ExecutorError::Git {
                            step: name.clone(),
                            source,
                        })?;
                    key.add("git", &resolved.cache_key(&git, &options));
                    services.materials.record(
                        vertex,
                        &Material::Git {
                            url: git.remote.clone(),
                            commit: resolved.commit.clone(),
                        },
                    );
                    pending_git.push((selections.len(), git, resolved, options));
                    selections.push(Selected {
                        items: Vec::new(),
                        context_run: None,
                        tops: 1,
                        single_file_name: None,
                        from_url: false,
                        from_git: true,
                        named_files: Vec::new(),
                    });
                    continue;
                }
                if path.starts_with("http://") || path.starts_with("https://") {
                    let downloaded = download(
                        services.runtime,
                        services.store,
                        path,
                        checksum.as_deref(),
                        &vertex.display_name(),
                    )?;
                    let (name, digest) = (downloaded.file_name.clone(), downloaded.digest.clone());
                    key.add("url", &format!("{path} {digest}"));
                    services.materials.record(
                        vertex,
                        &Material::Http {
                            url: path.clone(),
                            digest: digest.clone(),
                        },
                    );
                    url_mtimes.insert(downloaded.path.clone(), downloaded.mtime);
                    let item = Item::host(PathBuf::from(&name), downloaded.path)?;
                    selections.push(Selected {
                        items: vec![(PathBuf::from(&name), item)],
                        context_run: None,
                        tops: 1,
                        single_file_name: Some(name.into()),
                        from_url: true,
                        from_git: false,
                        named_files: vec![0],
                    });
                    continue;
                }
                let selected = match (&source_root, &context_files) {
                    (Some(root), _) => select_in_dir(root, path, &filter),
                    (None, Some(files)) => select_in_context(files, path, &filter),
                    (None, None) => {
                        return Err(ExecutorError::Internal(format!("no source for {path}")));
                    }
                }
                .map_err(|error| ExecutorError::invalid(&file, line, error))?;
                selections.push(selected);
            }
            Source::Inline(heredoc) => inline.push(heredoc.clone()),
        }
    }
    // The snapshot this step made last (a hint, see `commit`): its key without the context's
    // files.
    let links = crate::env::switch(crate::env::XBUILD_COPY_LINK, true);
    let link_key = context_files.as_ref().filter(|_| links).map(|_| {
        let mut link_key = key.clone();
        link_key.add("snapshot-source", "context");
        link_key.finish()
    });
    // Cache key: exactly what is read from the context. Made from the selection only when the
    // early key could not be; debug builds (the integration tests') make both and hold them
    // equal (`sources::ContextFiles::key_parts` has a unit test of that too).
    let key = match early_key {
        Some(early) if !cfg!(debug_assertions) => early,
        _ => {
            let context = match &context_files {
                Some(files) => Some(context_digest(files, files.selected(&selections))?),
                None => None,
            };
            // Hard links among what a source selects are kept: which names are linked is
            // content. Of the context only: a stage's or an image's are already in the key
            // (its chain key, its manifest), which the early lookup above relies on.
            let mut hardlinks = Vec::new();
            if let Some(files) = context_files.as_deref() {
                for selected in &selections {
                    hardlinks.extend(selected.hardlink_pairs(Some(files))?);
                }
            }
            let key = finish_copy_key(
                key,
                context.as_ref(),
                inline.iter().map(|heredoc| &heredoc.content),
                &hardlinks,
            );
            if let Some(early) = early_key {
                assert_eq!(
                    early, key,
                    "{name}: the early context key differs from the selection's"
                );
            } else if let Some(early) = &early_from_key {
                // Looked up already (it missed). Debug builds, the integration tests',
                // hold the two equal.
                debug_assert_eq!(
                    early, &key,
                    "{name}: the early key of a copy from a stage differs from the selection's"
                );
            } else if let Some(state) = services.cache_hit(vertex, &key, &name)? {
                return Ok(Done::new(state, key));
            }
            key
        }
    };
    // The second key: what the selected sources hold (modification times left out), read
    // only now that the first key missed.
    let by_content = match by_content {
        Some(mut by_content) if source_root.is_some() => {
            by_content.add("copy-sources", &checksum::of_selections(&selections)?);
            for heredoc in &inline {
                by_content.add("inline", &heredoc.content);
            }
            let by_content = by_content.finish();
            if let Some(state) = services.cache_hit_by_content(vertex, &key, &by_content, &name)? {
                return Ok(Done::new(state, key));
            }
            Some(by_content)
        }
        _ => None,
    };
    let lowers = services.lower_dirs(&parent.state)?;
    let id = services.counter.next();
    services.sink.emit(Event::Started {
        vertex: id,
        name: name.clone(),
        emulated: false,
    });
    // Git sources: the checkout of the commit resolved above, its contents copied as a
    // directory's are.
    for (index, git, resolved, options) in pending_git {
        let dest = scratch.path().join(format!("git-{index}"));
        let checkout =
            git::fetch(&git, &resolved, &dest, &options).map_err(|source| ExecutorError::Git {
                step: name.clone(),
                source,
            })?;
        let mut items = Vec::new();
        walk_dir(&checkout.dir, Path::new(""), &mut items)?;
        selections[index].items = items
            .into_iter()
            .map(|item| (item.rel.clone(), item))
            .collect();
    }

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
        ExecutorError::invalid(&file, line, format_args!("{text} destination: {error}"))
    })?;
    let dest_exists_dir = stack
        .lookup(&dest_abs)
        .is_some_and(|(_, meta)| meta.is_dir());
    let any_dir_source = selections.iter().any(|s| s.single_file_name.is_none());
    let dest_is_dir = dest_dir_syntax || tops > 1 || dest_exists_dir || any_dir_source;
    let mtime_now = services.options.source_date_epoch.unwrap_or_else(now);

    let from_context = source_root.is_none();
    let rules = EntryRules {
        owner,
        chmod: chmod.as_ref(),
        from_context,
    };
    let files = context_files.as_deref();
    let mut listing = match files {
        Some(files) => Listing::with_context(files, rules),
        None => Listing::new(),
    };
    let (dest_dir, file_target) = if dest_is_dir {
        (dest_abs.clone(), None)
    } else {
        let parent_dir = Path::new(&dest_abs)
            .parent()
            .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
        (parent_dir, Some(dest_abs.clone()))
    };
    // The directories made for the destination (a file's directory included) get a
    // numeric `--chmod`'s mode, else 0755, as BuildKit's copy makes them (fsutil's
    // `MkdirAll` with `CopyInfo.Mode`).
    let new_dir_mode = match &chmod {
        Some(ModeChange::Set(mode)) => mode & 0o777,
        _ => 0o755,
    };
    add_parents(
        &mut listing,
        &lowers,
        &dest_dir,
        owner,
        mtime_now,
        true,
        new_dir_mode,
    );
    let dest_rel = PathBuf::from(dest_dir.trim_start_matches('/'));
    let mut targets = Targets {
        stack,
        fresh: std::collections::HashSet::new(),
    };
    if dest_is_dir && !dest_exists_dir {
        targets.fresh.insert(dest_rel.clone());
    }

    let push_item = |target: &Path,
                     item: Item,
                     url_file: bool,
                     listing: &mut Listing<'_>|
     -> Result<(), ExecutorError> {
        // A later source wins over an earlier one, as files overwrite (`Listing::push`).
        // The same rules make the entries of a run's files when the list is written.
        let mut entry = rules.entry(target, &item)?;
        if chmod.is_none() && url_file {
            entry.mode = 0o600;
        }
        if let Some(mtime) = url_mtimes.get(&item.abs) {
            entry.mtime = *mtime;
        }
        // The item's own path, moved: not a second copy of every file's.
        let source = item.meta.is_file().then_some(item.abs);
        listing.push(FileListEntry { entry, source });
        Ok(())
    };

    let mut extracted = 0;
    // One entry per item (and a few directories): room for them at once, not up to twice
    // that from the list's growth. The selections are consumed: each item's paths are freed
    // (or moved into the list) as its entry is listed, not kept beside the whole list (issue
    // 19 item 4).
    let (mut whole, mut compact) = (inline.len() + 64, 0);
    for selected in &selections {
        if selected.context_run.is_some() {
            compact += selected.len();
        } else {
            whole += selected.len();
        }
    }
    listing.reserve_exact(whole, compact);
    for mut selected in selections {
        // BuildKit's `AttemptUnpack`: a local ADD source unless `--unpack=false`, a URL only
        // with `--unpack=true`, a git checkout never; only files the source names itself.
        let attempt_unpack = if selected.from_git {
            false
        } else if selected.from_url {
            unpack == Some(true)
        } else {
            is_add && unpack != Some(false)
        };
        let hardlinks = selected.hardlinks(files)?;
        let named_files = std::mem::take(&mut selected.named_files);
        let from_url = selected.from_url;
        // A source naming a directory of the context: its items made one at a time, and
        // listed by their walk index (a file of several names whole), their entries made
        // when the layer is written. Not into a single file's path.
        let run = match (&selected.context_run, &file_target) {
            (Some(run), None) => listing.add_run(&dest_rel, run.top()),
            _ => None,
        };
        for (index, item) in selected.into_items(files)?.enumerate() {
            let (below, item) = item?;
            if attempt_unpack
                && named_files.contains(&index)
                && item.meta.is_file()
                && is_archive(&item.abs)
            {
                let target = scratch.path().join(format!("archive-{extracted}"));
                extracted += 1;
                fs::create_dir(&target)?;
                let named = extract_archive(&item.abs, &target)?;
                // The destination is a directory the archive goes into (made if missing).
                add_parents(
                    &mut listing,
                    &lowers,
                    &dest_abs,
                    owner,
                    mtime_now,
                    true,
                    0o755,
                );
                let mut archive = Archive {
                    stack: targets.stack,
                    placed: std::collections::HashMap::new(),
                    owner,
                    mtime: mtime_now,
                };
                archive
                    .place(&target, &named, &dest_abs, &mut listing)
                    .map_err(|reason| ExecutorError::invalid(&file, line, reason))?;
                continue;
            }
            // Directories in between the destination and the item.
            if let Some(parent) = below.parent().filter(|p| !p.as_os_str().is_empty()) {
                let mut path = dest_rel.clone();
                for component in parent.components() {
                    path.push(component);
                    if !listing.is_listed(&path) {
                        let mut entry = TarEntry::new(path.clone(), EntryKind::Directory, 0o755);
                        entry.mtime = mtime_now;
                        if let Some((uid, gid)) = owner {
                            entry.uid = uid;
                            entry.gid = gid;
                        }
                        listing.make(entry);
                    }
                }
            }
            let target = match &file_target {
                Some(target) => PathBuf::from(target.trim_start_matches('/')),
                None => dest_rel.join(&below),
            };
            targets
                .check(&target, item.meta.is_dir())
                .map_err(|reason| ExecutorError::invalid(&file, line, reason))?;
            let linked = item.meta.is_file() && item.meta.nlink >= 2;
            if let (Some(run), Some(at), false) = (run, item.context, linked) {
                listing.push_context(run, at, &target, item.meta.is_dir());
                continue;
            }
            push_item(&target, item, from_url, &mut listing)?;
            // A file sharing its inode with one copied before it: a tar hard link to it.
            if let (Some(first), None, Some(last)) =
                (hardlinks.get(&index), &file_target, listing.last_mut())
            {
                last.entry.kind = EntryKind::Hardlink {
                    target: dest_rel.join(first),
                };
                last.entry.xattrs.clear();
                last.source = None;
            }
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
        listing.push(FileListEntry {
            entry,
            source: Some(content_file),
        });
    }
    // Every entry's parent directories are in the layer, as in a diff of the copy (the
    // snapshot would have them, made by the unpacking, and the tar not): an archive's
    // entries can land below a directory of the image reached through its links
    // (`var/run/x` in `/run/x`). The image's own directories keep their metadata.
    listing.settle();
    for parent in listing.missing_parents() {
        add_parents(&mut listing, &lowers, &parent, None, mtime_now, true, 0o755);
    }
    let entries = listing.into_list();
    // What a layer cannot hold is refused before it is written (exit 2).
    if let Some((path, reserved)) = entries.unstorable()? {
        return Err(ExecutorError::invalid(
            &file,
            line,
            format_args!(
                "{text}: /{}: {}",
                path.display(),
                if reserved {
                    "a name starting with \".wh.\" cannot be stored in a layer (OCI layers mark deletions with it)"
                } else {
                    "a character device 0/0 cannot be stored in a layer (it is an overlay whiteout)"
                }
            ),
        ));
    }
    let created_by = format!(
        "{text} {} # buildkit",
        instruction_summary(sources, destination)
    );
    let done = commit(
        services,
        vertex,
        parent.state.clone(),
        entries,
        created_by,
        &key,
        link_key.as_deref().map(|link_key| (link_key, id)),
    )?;
    if let Some(by_content) = &by_content {
        services.cache.record(by_content, &done.state)?;
    }
    services.sink.emit(Event::Finished {
        vertex: id,
        duration: started.elapsed(),
    });
    Ok(done)
}

/// An archive `ADD` unpacks, placed in the destination state as BuildKit's untar into the
/// mounted state places it: a directory the archive only implies (it names something
/// below it) is the image's own when the image has one there, links on the way followed
/// inside the image (`var/run -> /run` from an earlier layer: `var/run/x` lands in
/// `/run/x`); what the archive names itself replaces what is there, a directory merged
/// with a directory. Hard links inside the archive stay hard links.
struct Archive<'a> {
    stack: Stack<'a>,
    /// What this copy placed so far (absolute path in the image), over the image.
    placed: std::collections::HashMap<String, Node>,
    owner: Option<(u64, u64)>,
    mtime: i64,
}

impl Tree for Archive<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        match self.placed.get(path) {
            Some(node) => Some(node.clone()),
            None => self.stack.node(path),
        }
    }
}

impl Archive<'_> {
    /// Adds the entries of the archive unpacked in `unpacked` (the paths it names:
    /// `named`) below the directory `root` (absolute, resolved) of the image.
    fn place(
        &mut self,
        unpacked: &Path,
        named: &[PathBuf],
        root: &str,
        listing: &mut Listing,
    ) -> Result<(), String> {
        let named: std::collections::HashSet<&Path> = named.iter().map(PathBuf::as_path).collect();
        let mut items = Vec::new();
        walk_dir(unpacked, Path::new(""), &mut items).map_err(|error| error.to_string())?;
        // Where each unpacked path is in the image.
        let mut landed: std::collections::HashMap<PathBuf, String> =
            std::collections::HashMap::new();
        let mut links: std::collections::HashMap<(u64, u64), PathBuf> =
            std::collections::HashMap::new();
        for item in items {
            let parent = item
                .rel
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .and_then(|parent| landed.get(parent).cloned())
                .unwrap_or_else(|| root.to_owned());
            let name = item.rel.file_name().unwrap_or_default().to_string_lossy();
            let path = join_path(&parent, &name);
            if item.meta.is_dir() && !named.contains(item.rel.as_path()) {
                let resolved = resolve(self, &path, true).map_err(|error| error.to_string())?;
                if self.node(&resolved) == Some(Node::Dir) {
                    landed.insert(item.rel.clone(), resolved);
                    continue;
                }
            }
            let rel = PathBuf::from(path.trim_start_matches('/'));
            let mut entry =
                layer::entry_from_stat(&rel, &item.abs, &item.meta).map_err(|e| e.to_string())?;
            if !named.contains(item.rel.as_path()) {
                entry.mode = 0o755;
                entry.uid = 0;
                entry.gid = 0;
                entry.mtime = self.mtime;
            }
            if let Some((uid, gid)) = self.owner {
                entry.uid = uid;
                entry.gid = gid;
            }
            let mut source = item.meta.is_file().then(|| item.abs.clone());
            if item.meta.is_file() && item.meta.nlink > 1 {
                let inode = (item.meta.dev, item.meta.ino);
                if let Some(first) = links.get(&inode) {
                    entry.kind = EntryKind::Hardlink {
                        target: first.clone(),
                    };
                    entry.xattrs.clear();
                    source = None;
                } else {
                    links.insert(inode, rel.clone());
                }
            }
            let node = if item.meta.is_dir() {
                Node::Dir
            } else if let EntryKind::Symlink { target } = &entry.kind {
                Node::Symlink(target.to_string_lossy().into_owned())
            } else {
                Node::Other
            };
            self.placed.insert(path.clone(), node);
            landed.insert(item.rel.clone(), path);
            listing.push(FileListEntry { entry, source });
        }
        Ok(())
    }
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

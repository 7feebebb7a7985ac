//! `RUN --mount`: `type=cache` (a persistent directory per id under
//! `$XBUILD_ROOT/cache-mounts/`, used at once, one step at a time or copied as `sharing=`
//! says; `source=` a path inside it, which must exist, bound as a directory or as a file;
//! with `from=STAGE|IMAGE` a cache of its own per id and stage content, first made as a copy
//! of the whole stage, as BuildKit's cache over its input starts as that input, `source=`
//! only selecting what is shown of it),
//! `type=secret` (the `--secret`'s content handed to the sandbox, which writes it on a tmpfs
//! of the step's own and binds it read-only, `/run/secrets/<id>` by default: it never
//! reaches a disk; the sandbox removes the mount point it had to create, so nothing of it
//! reaches the layer, and only the id enters the cache key), `type=bind` (read-only, from the
//! context — what the step sees is the context after `.dockerignore`, as in BuildKit, where
//! the context a step can see *is* the filtered one: the selected entries are linked (or
//! copied) into a scratch directory of the store's `tmp/` and that is bound; `source` is
//! resolved inside the context, so a link cannot lead out of it — or from a stage or image,
//! mounted as a read-only overlay), `type=tmpfs` (a fresh tmpfs of the step's mount
//! namespace, `size=` honoured: nothing written there reaches the layer).
//!
//! `type=secret,env=NAME` puts the secret in the step's environment (and in a file only when
//! a `target` is given too, as BuildKit); the variable is in no config, history, cache key
//! or failed-step record, and the step's progress name shows `****` for it.
//!
//! `type=ssh` binds a socket of our own at its target (`/run/buildkit/ssh_agent.N` by
//! default, with the mount's `uid`/`gid`/`mode`) that relays to the `--ssh` agent of its id
//! ([`super::ssh`]); `SSH_AUTH_SOCK` names the first one. An optional one whose id was not
//! given is left out, as in BuildKit.
//!
//! `type=bind,rw`: the step writes to a throw-away overlay over what is mounted
//! ([`Scratch`]); nothing reaches the context, the source stage or the layer. A stage
//! mounted with `from=` keys the step by the content mounted ([`super::checksum::of_path`]), not by
//! how the stage was made, as BuildKit's content-based cache does.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ExecutorError, Within as _};
use super::from::resolve_image;
use super::services::Services;
use super::sources::{ContextFiles, Filter, Selected, StateView, select_in_context};
use super::ssh::Relay;
use super::state::{Done, join_path};
use crate::cache::Key;
use crate::dockerfile::instruction;
use crate::dockerfile::mount::{MountType, Sharing};
use crate::plan::Vertex;
use crate::sandbox::{BindMount, MountSource, SecretFile};

/// What a step's mounts need, kept alive while it runs.
pub(crate) struct Prepared {
    /// The binds for the sandbox.
    pub(crate) binds: Vec<BindMount>,
    /// The secrets for the sandbox.
    pub(crate) secrets: Vec<SecretFile>,
    /// `type=secret,env=NAME`: (NAME, value) for the step's environment only (never the
    /// image's config, the cache key or a failed step's record).
    pub(crate) secret_env: Vec<(String, String)>,
    _views: Vec<StateView>,
    /// Filtered copies of the context for `type=bind` mounts, removed on drop.
    _context_views: Vec<tempfile::TempDir>,
    /// The sockets of `type=ssh` mounts, relaying to the agents while the step runs.
    _relays: Vec<Relay>,
    /// `SSH_AUTH_SOCK` for the step: the first `type=ssh` mount's target (as BuildKit).
    pub(crate) ssh_auth_sock: Option<String>,
    /// Writable copies for `type=bind,rw` mounts.
    _scratch: Vec<Scratch>,
    /// `flock(2)`s on cache mount directories (`sharing=locked|private`), held for the step.
    _locks: Vec<nix::fcntl::Flock<std::fs::File>>,
}

/// Prepares every `--mount` of a `RUN`, adding what they read to `key`.
pub(crate) fn prepare(
    services: &Services<'_>,
    vertex: &Vertex,
    run: &instruction::Run,
    parent: &Done,
    inputs: &[Arc<Done>],
    key: &mut Key,
) -> Result<Prepared, ExecutorError> {
    let mut prepared = Prepared {
        binds: Vec::new(),
        secrets: Vec::new(),
        secret_env: Vec::new(),
        _views: Vec::new(),
        _context_views: Vec::new(),
        _relays: Vec::new(),
        _locks: Vec::new(),
        ssh_auth_sock: None,
        _scratch: Vec::new(),
    };
    let mut ssh_index = 0;
    // Mount types and options not supported yet, and required secrets not given, were
    // refused before any work (super::validate): what is left cannot fail that way.
    let validated = |what: &str| {
        ExecutorError::Internal(format!(
            "{}: RUN --mount {what} (refused by validation)",
            vertex.display_name()
        ))
    };
    let workdir = parent.state.workdir();
    let mut next_input = 0;
    for mount in &run.mounts {
        let target = mount
            .target
            .as_deref()
            .map(|target| join_path(&workdir, target));
        match mount.kind {
            MountType::Cache => {
                let target = target.ok_or_else(|| validated("type=cache without target"))?;
                let id = mount.id.clone().unwrap_or_else(|| target.clone());
                let source = join_path("/", mount.source.as_deref().unwrap_or("/"));
                // `from=`: BuildKit's cache of that id over that stage's (or image's)
                // content starts as a copy of the whole stage (its key is the id and the
                // stage, `getRefCacheDir`'s `id:ref`), and `source` is only what the mount
                // shows of it: two mounts of one id and stage with different sources share
                // one cache.
                let (name, seed) = match &mount.from {
                    None => (id, None),
                    Some(from) => {
                        let (state, identity, _) =
                            mount_from_state(services, vertex, from, inputs, &mut next_input)?;
                        let view = services.view(&state)?;
                        let tree = crate::layer::tree::HostDir(&view.root);
                        key.add("cache-from", &format!("{source}:{identity}"));
                        let owned =
                            mount.uid.is_some() || mount.gid.is_some() || mount.mode.is_some();
                        if source == "/" && owned {
                            // BuildKit makes `/cache` (mode, uid, gid) in the stage and shows
                            // it: a new empty directory, made below as a cache without `from=`
                            // (its input is the stage and that mkdir, a cache of its own).
                            if crate::layer::tree::Tree::node(&tree, "/cache").is_some() {
                                return Err(io::Error::from(io::ErrorKind::AlreadyExists))
                                    .within(|| {
                                        format!(
                                            "{}: cache mount from={from} with uid, gid or mode: mkdir /cache",
                                            vertex.display_name()
                                        )
                                    });
                            }
                            let owner = format!("{:?}:{:?}:{:?}", mount.uid, mount.gid, mount.mode);
                            (format!("{id}:{identity}:/cache:{owner}"), None)
                        } else {
                            let seed = view.root.clone();
                            prepared._views.push(view);
                            (format!("{id}:{identity}"), Some(seed))
                        }
                    }
                };
                let hash = hex::encode(
                    &crate::oci::sha256_digest(name.as_bytes())
                        .digest()
                        .as_bytes()[..24],
                );
                let base = services.store.root().join("cache-mounts").join(hash);
                let (dir, lock) = cache_instance(&base, mount.sharing)?;
                if !dir.is_dir() {
                    match &seed {
                        Some(seed) => seed_cache(seed, &dir).within(|| {
                            format!(
                                "{}: cache mount from={}",
                                vertex.display_name(),
                                mount.from.as_deref().unwrap_or_default()
                            )
                        })?,
                        None => {
                            std::fs::create_dir_all(&dir)
                                .within(|| "creating a cache mount".to_owned())?;
                            if mount.uid.is_some() || mount.gid.is_some() {
                                std::os::unix::fs::chown(&dir, mount.uid, mount.gid)?;
                            }
                            std::fs::set_permissions(
                                &dir,
                                std::fs::Permissions::from_mode(mount.mode.unwrap_or(0o755)),
                            )?;
                        }
                    }
                }
                // `source=` is a path inside the cache (BuildKit's mount selector), resolved
                // inside it: it must exist (a link out of the cache names nothing in it).
                // A file is mounted as that file, as BuildKit mounts it.
                let shown = if source != "/" {
                    let tree = crate::layer::tree::HostDir(&dir);
                    let resolved = crate::layer::tree::resolve(&tree, &source, true)
                        .map_err(|error| io::Error::other(error.to_string()))
                        .and_then(|resolved| {
                            let host = tree.host_path(&resolved);
                            fs::symlink_metadata(&host).map(|_| host)
                        })
                        .within(|| match &mount.from {
                            None => format!(
                                "{}: cache mount source {source} (a path in the cache {:?})",
                                vertex.display_name(),
                                mount.id.as_deref().unwrap_or(&target)
                            ),
                            Some(from) => format!(
                                "{}: cache mount source {source} of {from} (a path in the cache \
                                 {:?}, a copy of {from})",
                                vertex.display_name(),
                                mount.id.as_deref().unwrap_or(&target)
                            ),
                        })?;
                    if mount.from.is_none() {
                        key.add("cache-source", &source);
                    }
                    resolved
                } else {
                    dir.clone()
                };
                if let Some(lock) = lock {
                    prepared._locks.push(lock);
                } else if mount
                    .sharing
                    .is_some_and(|sharing| sharing != Sharing::Shared)
                {
                    prepared._locks.push(lock_dir(&dir, false)?.ok_or_else(|| {
                        ExecutorError::Internal("a blocking lock returned none".to_owned())
                    })?);
                }
                // Its modification time is its last use (`xbuild prune --filter until=`).
                let _ = std::fs::File::open(&dir)
                    .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                prepared.binds.push(BindMount {
                    source: MountSource::Host(shown),
                    target: PathBuf::from(target),
                    readonly: mount.read_only,
                });
            }
            MountType::Secret => {
                let id = mount
                    .id
                    .clone()
                    .or_else(|| {
                        target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next().map(str::to_owned))
                    })
                    .ok_or_else(|| validated("type=secret without id or target"))?;
                key.add("secret-id", &id);
                let Some(value) = services.options.secrets.get(&id) else {
                    // Not required (a required one was checked before any work).
                    continue;
                };
                if let Some(name) = &mount.env {
                    // Text without NUL, checked before any work.
                    let text = String::from_utf8(value.clone())
                        .map_err(|_| validated("type=secret,env= of a value that is not text"))?;
                    prepared.secret_env.push((name.clone(), text));
                    if target.is_none() {
                        // As BuildKit: with env= and no target, no file.
                        continue;
                    }
                }
                prepared.secrets.push(SecretFile {
                    content: value.clone(),
                    target: PathBuf::from(target.unwrap_or_else(|| format!("/run/secrets/{id}"))),
                    mode: mount.mode.unwrap_or(0o400),
                    uid: mount.uid.unwrap_or(0),
                    gid: mount.gid.unwrap_or(0),
                });
            }
            MountType::Bind => {
                let target = target.ok_or_else(|| validated("type=bind without target"))?;
                let source = mount.source.clone().unwrap_or_else(|| ".".to_owned());
                let relative = join_path("/", &source).trim_start_matches('/').to_owned();
                let host = match &mount.from {
                    None => {
                        let files = services.context_files()?;
                        let selected = select_in_context(&files, &source, &Filter::default())?;
                        let mut cache = files
                            .stat_cache
                            .lock()
                            .map_err(|_| ExecutorError::WorkerPanicked)?;
                        let digest = crate::context::digest_entries_cached(
                            &files.dir,
                            files.selected([&selected]),
                            &mut cache,
                        )?;
                        key.add("bind-context", &format!("{relative}:{digest}"));
                        drop(cache);
                        let tmp = services.store.layout().tmp_dir();
                        fs::create_dir_all(&tmp)?;
                        let view = tempfile::Builder::new()
                            .prefix("bind-context-")
                            .tempdir_in(&tmp)?;
                        let host = context_view(
                            &selected,
                            &files,
                            &files.dir.join(&relative),
                            view.path(),
                        )?;
                        prepared._context_views.push(view);
                        host
                    }
                    Some(from) => {
                        let (state, identity, image) =
                            mount_from_state(services, vertex, from, inputs, &mut next_input)?;
                        if image {
                            key.add("bind-image", &identity);
                        }
                        let view = services.view(&state)?;
                        // Links in `source` resolve inside the stage (a link to `/etc`
                        // there is the stage's `/etc`), never on the host, where the bind
                        // mount would follow them.
                        let tree = crate::layer::tree::HostDir(&view.root);
                        let resolved = crate::layer::tree::resolve(&tree, &relative, true)
                            .map_err(|error| io::Error::other(error.to_string()))
                            .within(|| format!("{}: bind mount source", vertex.display_name()))?;
                        let host = tree.host_path(&resolved);
                        // The mounted files are the key, not how the stage made them: a
                        // stage rebuilt to the same `out/` does not run this step again.
                        key.add(
                            "bind-from",
                            &format!("{relative}:{}", super::checksum::of_path(&host)?),
                        );
                        prepared._views.push(view);
                        host
                    }
                };
                let host = if mount.read_only {
                    host
                } else {
                    // `rw`: the step writes to a throw-away copy (an overlay over what is
                    // mounted, removed after the step); nothing reaches the source.
                    let scratch = Scratch::new(services, &host)?;
                    let path = scratch.path.clone();
                    prepared._scratch.push(scratch);
                    path
                };
                prepared.binds.push(BindMount {
                    source: MountSource::Host(host),
                    target: PathBuf::from(target),
                    readonly: mount.read_only,
                });
            }
            MountType::Tmpfs => {
                let target = target.ok_or_else(|| validated("type=tmpfs without target"))?;
                prepared.binds.push(BindMount {
                    source: MountSource::Tmpfs { size: mount.size },
                    target: PathBuf::from(target),
                    readonly: mount.read_only,
                });
            }
            MountType::Ssh => {
                // BuildKit's default target counts the step's ssh mounts.
                let target =
                    target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
                ssh_index += 1;
                prepared.ssh_auth_sock.get_or_insert_with(|| target.clone());
                let id = mount.id.as_deref().unwrap_or("default");
                let Some(agent) = services.ssh.socket(id) else {
                    // Not required (a required one was refused before any work): no socket.
                    continue;
                };
                let relay = Relay::start(
                    agent,
                    mount.uid.unwrap_or(0),
                    mount.gid.unwrap_or(0),
                    mount.mode.unwrap_or(0o600),
                )
                .within(|| format!("{}: forwarding --ssh {id}", vertex.display_name()))?;
                prepared.binds.push(BindMount {
                    source: MountSource::Host(relay.path().to_path_buf()),
                    target: PathBuf::from(target),
                    readonly: false,
                });
                prepared._relays.push(relay);
            }
        }
    }
    // Inputs no bind mount read (none today) still key the step by the whole stage.
    for input in inputs.iter().skip(next_input) {
        key.add("input", &input.chain_key());
    }
    Ok(prepared)
}

/// What a mount's `from=` names: a stage, or a `--build-context` of that name (the
/// vertex's next input), else an image (resolved for the step's platform); with its
/// identity (the stage's chain key, the image manifest's digest) and whether it is an image.
fn mount_from_state(
    services: &Services<'_>,
    vertex: &Vertex,
    from: &str,
    inputs: &[Arc<Done>],
    next_input: &mut usize,
) -> Result<(crate::oci::ImageState, String, bool), ExecutorError> {
    let named = crate::dockerfile::context_name(from)
        .is_some_and(|name| services.options.named_contexts.contains_key(&name));
    if services.stages.find(from).is_some() || named {
        let input = inputs.get(*next_input).ok_or_else(|| {
            ExecutorError::Internal(format!(
                "{}: no input for --mount from={from}",
                vertex.display_name()
            ))
        })?;
        *next_input += 1;
        return Ok((input.state.clone(), input.chain_key(), false));
    }
    let id = services.counter.next();
    let (manifest, state) = resolve_image(services, from, vertex, id)?;
    Ok((state, manifest.digest().to_string(), true))
}

/// Makes the cache directory `dir` a copy of the directory `seed` (a stage's root), kinds,
/// modes, owners and times kept, devices left out. Built beside `dir` and renamed into place
/// without replacing: when two steps seed one cache at once, the first rename wins and the
/// other copy is dropped, so a step never sees a half-made cache.
fn seed_cache(seed: &Path, dir: &Path) -> Result<(), ExecutorError> {
    let parent = dir
        .parent()
        .ok_or_else(|| ExecutorError::Internal(format!("{}: no parent", dir.display())))?;
    fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(parent)?;
    let copy = tmp.path().join("cache");
    let meta = fs::symlink_metadata(seed)?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory").into());
    }
    copy_entry(seed, &copy, &meta)?;
    let mut items = Vec::new();
    super::sources::walk_dir(seed, Path::new(""), &mut items)?;
    for item in &items {
        copy_entry(
            &item.abs,
            &copy.join(&item.rel),
            &fs::symlink_metadata(&item.abs)?,
        )?;
    }
    // Directory times last: writing into a directory changes its own.
    for item in items.iter().rev().filter(|item| item.meta.is_dir()) {
        set_times(&copy.join(&item.rel), &fs::symlink_metadata(&item.abs)?)?;
    }
    set_times(&copy, &meta)?;
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &copy,
        nix::fcntl::AT_FDCWD,
        dir,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(source) => Err(ExecutorError::System {
            context: format!("moving the seeded cache mount to {}", dir.display()),
            source,
        }),
    }
}

/// One entry of [`seed_cache`]'s copy: its kind, content, mode, owner and times.
fn copy_entry(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<(), ExecutorError> {
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(to)?;
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if kind.is_file() {
        let mut source = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)?;
        let mut target = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        io::copy(&mut source, &mut target)?;
    } else {
        // Fifos, sockets, devices: not cache content.
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if !kind.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    if !kind.is_dir() {
        set_times(to, meta)?;
    }
    Ok(())
}

/// Gives `path` (a link itself, not what it names) the access and modification times of `meta`.
fn set_times(path: &Path, meta: &fs::Metadata) -> Result<(), ExecutorError> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(meta.atime(), meta.atime_nsec()),
        &TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|source| ExecutorError::System {
        context: format!("setting the times of {}", path.display()),
        source,
    })
}

/// A writable throw-away copy of a bind mount's source (`rw`): an overlay of the source
/// directory with an upper directory of its own in the store's tmp (a file is copied), in
/// the host's mount namespace for the time of the step; unmounted and removed on drop.
struct Scratch {
    path: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl Scratch {
    fn new(services: &Services<'_>, source: &Path) -> Result<Self, ExecutorError> {
        let dir = services.scratch_dirs()?;
        let meta = fs::symlink_metadata(source)?;
        if !meta.is_dir() {
            let path = dir.path().join("file");
            if meta.is_file() {
                fs::copy(source, &path).within(|| "copying a rw bind mount".to_owned())?;
            } else {
                fs::File::create(&path)?;
            }
            return Ok(Self {
                path,
                mounted: false,
                _dir: dir,
            });
        }
        let path = dir.path().join("merged");
        fs::create_dir(&path)?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            source.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &path,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| ExecutorError::System {
            context: "mounting a writable copy of a rw bind mount".to_owned(),
            source,
        })?;
        Ok(Self {
            path,
            mounted: true,
            _dir: dir,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Writes what `selected` holds of the context (after `.dockerignore`) into `view`, and
/// returns what to bind: `view` itself for a directory (with the mode of `top`, the
/// directory the mount's `source` names), or the one file in it. Files are hard links where
/// the store and the context share a file system (the bind is read-only, so the step cannot
/// write through them), copies otherwise; links stay links (resolved inside the step's root,
/// never on the host); other kinds (fifos, devices) are left out.
fn context_view(
    selected: &Selected,
    files: &ContextFiles,
    top: &Path,
    view: &Path,
) -> Result<PathBuf, ExecutorError> {
    selected.each(Some(files), |_, below, item| {
        let path = view.join(below);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if item.meta.is_dir() {
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(item.meta.mode & 0o7777))?;
        } else if item.meta.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&item.abs)?, &path)?;
        } else if item.meta.is_file() {
            link_or_copy(&item.abs, &path)?;
        }
        Ok(())
    })?;
    if let Some(name) = &selected.single_file_name {
        return Ok(view.join(name));
    }
    let mode = fs::symlink_metadata(top).map_or(0o755, |meta| meta.mode() & 0o7777);
    fs::set_permissions(view, fs::Permissions::from_mode(mode))?;
    Ok(view.to_path_buf())
}

/// A hard link of `from` at `to` (never following a link at `from`), or a copy when they
/// are on different file systems.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EXDEV) => {
            let mut source = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(from)?;
            let mode = source.metadata()?.mode();
            let mut target = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .open(to)?;
            io::copy(&mut source, &mut target)?;
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// The directory a cache mount uses, as its `sharing=` asks (BuildKit's meanings): `shared`
/// (the default) is `base` for every step at once; `locked` is `base`, one step at a time
/// (a step waits for the one holding it); `private` is `base`, or `base-1`, `base-2`, ...
/// when steps hold those: each step using it at a time has a directory of its own. The lock
/// of `private` is taken here (the directory must exist to be locked; the caller makes and
/// locks a new `locked` one).
fn cache_instance(
    base: &Path,
    sharing: Option<Sharing>,
) -> Result<(PathBuf, Option<nix::fcntl::Flock<std::fs::File>>), ExecutorError> {
    if sharing != Some(Sharing::Private) {
        return Ok((base.to_path_buf(), None));
    }
    let mut instance = 0_usize;
    loop {
        let dir = if instance == 0 {
            base.to_path_buf()
        } else {
            PathBuf::from(format!("{}-{instance}", base.display()))
        };
        if !dir.is_dir() {
            // Nobody uses a directory that is not there yet: the caller makes and locks it.
            return Ok((dir, None));
        }
        if let Some(lock) = lock_dir(&dir, true)? {
            return Ok((dir, Some(lock)));
        }
        instance += 1;
    }
}

/// An exclusive `flock(2)` on a cache directory: waiting for it, or (`try_only`) `None`
/// when another step holds it.
fn lock_dir(
    dir: &Path,
    try_only: bool,
) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, ExecutorError> {
    use nix::fcntl::{Flock, FlockArg};
    let file =
        std::fs::File::open(dir).within(|| format!("opening the cache mount {}", dir.display()))?;
    let arg = if try_only {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockExclusive
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if try_only => Ok(None),
        Err((_, errno)) => Err(ExecutorError::Internal(format!(
            "locking the cache mount {}: {errno}",
            dir.display()
        ))),
    }
}

//! Safe unpacking of a layer into a directory.
//!
//! A layer never writes outside its target: absolute paths, `..` components, writes through a
//! symlink (whether planted by an earlier entry of this layer or by an earlier layer), hard
//! links whose target is outside (or reached through a symlink), device nodes when not
//! allowed, and duplicate non-directory entries are each refused with an error naming the
//! entry. Every parent directory is checked with `lstat` component by component, so no path
//! is ever resolved through a symlink.
//!
//! Whiteouts (<https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts>)
//! are applied in one of two ways:
//! - [`WhiteoutMode::Overlay`]: the target is a snapshot that will be an overlay lower
//!   directory; `.wh.<name>` becomes a character device 0/0 and `.wh..wh..opq` the
//!   `trusted.overlay.opaque=y` xattr (needs root).
//! - [`WhiteoutMode::Merge`]: the target is a flattened root filesystem; whiteouts delete
//!   what earlier layers put there.
//!
//! [`ApplyOptions::exact`] unpacks a tar that must come back unchanged from the tree it
//! makes (a `COPY` snapshot, whose blob is made from the tree later): nothing is made that
//! the tar does not list (no parent directory, no whiteout), nothing it lists is left out
//! or changed (xattrs read back, every mtime set), and an entry a tree would give back
//! otherwise (a link's mode, a hard link with metadata of its own, a 0/0 device) is refused.
//!
//! An exact unpacking may also be given an earlier snapshot to take files from
//! ([`apply_layer_linking`]): a regular file whose path there holds a regular file with the
//! entry's metadata (mode, owner, mtime, the same extended attributes and no others) and,
//! compared byte for byte as the tar's content streams in, the same content, is made a hard
//! link to it instead of being written. Snapshots are never written after they are
//! committed (overlay lower directories only), so sharing the inode changes nothing for
//! either: each snapshot still holds that file at that path once, and a tree walk (which
//! makes tar hard links only of names it meets twice) gives it back as a plain file. The
//! earlier file's data was synced when its snapshot was committed.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;

use super::read::{ReadError, TarReader};
use super::tar::EntryKind;

/// The prefix of whiteout file names.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The overlayfs xattr that marks a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Into a snapshot used as an overlay lower directory: overlay whiteouts.
    Overlay,
    /// Onto a flattened tree: delete.
    Merge,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// Whether character and block devices may be created (only as root).
    pub allow_devices: bool,
    /// Whether to set owners from the tar (only as root; otherwise files belong to us).
    pub set_owners: bool,
    /// Whether the target must be exactly what the tar lists, so that its tree gives the
    /// same tar back (see the module documentation); needs `set_owners`. The target must be
    /// empty.
    pub exact: bool,
}

impl ApplyOptions {
    /// Options for this process: devices and owners when running as root.
    pub fn for_current_user(whiteouts: WhiteoutMode) -> Self {
        let is_root = nix::unistd::geteuid().is_root();
        Self {
            whiteouts,
            allow_devices: is_root,
            set_owners: is_root,
            exact: false,
        }
    }
}

/// Errors applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The tar stream is malformed.
    #[error(transparent)]
    Tar(#[from] ReadError),
    /// An entry would write outside the target, or is otherwise refused.
    #[error("refusing layer entry {entry:?}: {reason}")]
    Refused {
        /// The entry's path as stored in the tar.
        entry: String,
        /// Why.
        reason: String,
    },
    /// Writing an entry failed.
    #[error("layer entry {entry:?}: {action}")]
    Write {
        /// The entry.
        entry: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What an applied layer held.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    /// Entries written (whiteouts included).
    pub entries: u64,
    /// Content bytes written (those of linked files included).
    pub bytes: u64,
    /// Regular files (hard links to earlier entries not counted).
    pub files: u64,
    /// Regular files made hard links to an earlier snapshot's ([`apply_layer_linking`]).
    pub linked: u64,
}

/// Unpacks a (decompressed) tar stream into `target`, which must exist.
///
/// # Errors
/// [`ApplyError::Refused`] for an unsafe entry (nothing outside `target` is touched; what
/// was written inside before the error stays, so unpack into a temporary directory);
/// [`ApplyError::Tar`] for a malformed stream; [`ApplyError::Write`] for I/O failures.
pub fn apply_layer(
    stream: impl Read,
    target: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    apply_layer_linking(stream, target, options, None)
}

/// As [`apply_layer`]; with [`ApplyOptions::exact`] and `earlier` (a committed snapshot,
/// never written again), a regular file whose path in `earlier` holds the same file
/// (metadata and content, see the module documentation) is made a hard link to it instead
/// of being written; the files written are listed in [`Earlier::written`]. Without
/// `exact`, `earlier` is not used.
///
/// # Errors
/// As [`apply_layer`].
pub fn apply_layer_linking(
    stream: impl Read,
    target: &Path,
    options: &ApplyOptions,
    earlier: Option<&mut Earlier>,
) -> Result<ApplyStats, ApplyError> {
    let mut reader = TarReader::new(stream);
    let mut state = State {
        root: target.to_path_buf(),
        options: *options,
        created: HashSet::new(),
        directories: Vec::new(),
        stats: ApplyStats::default(),
        earlier: earlier.filter(|_| options.exact),
    };
    while let Some(entry) = reader.next_entry()? {
        let name = entry.display_path();
        let refuse = |reason: String| ApplyError::Refused {
            entry: name.clone(),
            reason,
        };
        let components = normalize(&entry.path).map_err(refuse)?;
        state.stats.entries += 1;
        let Some((last, parents)) = components.split_last() else {
            // The root itself ("./"): its metadata is the snapshot's business, not the layer's.
            continue;
        };
        let last_bytes = last.as_bytes();
        if last_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            state.whiteout(&name, parents, last)?;
            continue;
        }
        let parent = state.resolve_parent(&name, parents)?;
        let path = parent.join(last);
        let relative: PathBuf = components.iter().collect();
        state.prepare_target(&name, &relative, &path, &entry.kind)?;
        let write = |action: &'static str| {
            let name = name.clone();
            move |source: io::Error| ApplyError::Write {
                entry: name,
                action,
                source,
            }
        };
        match &entry.kind {
            EntryKind::File { size } => {
                let candidate = state.link_candidate(&relative, &entry, *size);
                let mut content = reader.content();
                let written = match candidate {
                    Some(earlier) => link_or_write(&path, earlier, &mut content, *size)
                        .map_err(write("writing the file"))?,
                    None => Some(write_file(&path, None, &[], &mut content, *size).map_err(
                        |(action, source)| ApplyError::Write {
                            entry: name.clone(),
                            action,
                            source,
                        },
                    )?),
                };
                state.stats.bytes += *size;
                state.stats.files += 1;
                match written {
                    Some(file) => {
                        state.finish_metadata(&name, &path, &entry, Some(&file))?;
                        if let Some(earlier) = state.earlier.as_deref_mut() {
                            earlier.written.push(relative.clone());
                        }
                    }
                    None => state.stats.linked += 1,
                }
            }
            EntryKind::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(write("creating the directory"))?;
                }
                state.finish_metadata(&name, &path, &entry, None)?;
                state.directories.push((path.clone(), entry.mtime));
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(write("creating the symlink"))?;
                state.finish_metadata(&name, &path, &entry, None)?;
            }
            EntryKind::Hardlink { target } => {
                let source = state.resolve_link_target(&name, target)?;
                fs::hard_link(&source, &path).map_err(write("creating the hard link"))?;
                if state.options.exact {
                    state.check_hardlink(&name, &path, &entry)?;
                }
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                if !state.options.allow_devices {
                    return Err(refuse(
                        "device nodes can only be created as root".to_owned(),
                    ));
                }
                if state.options.exact
                    && matches!(entry.kind, EntryKind::CharDevice { major: 0, minor: 0 })
                {
                    return Err(refuse(
                        "a character device 0/0 (an overlay whiteout in a snapshot)".to_owned(),
                    ));
                }
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(
                    &path,
                    kind,
                    Mode::from_bits_truncate(entry.mode & 0o777),
                    makedev(u64::from(*major), u64::from(*minor)),
                )
                .map_err(|errno| ApplyError::Write {
                    entry: name.clone(),
                    action: "creating the device node",
                    source: errno.into(),
                })?;
                state.finish_metadata(&name, &path, &entry, None)?;
            }
            EntryKind::Fifo => {
                nix::unistd::mkfifo(&path, Mode::from_bits_truncate(entry.mode & 0o777)).map_err(
                    |errno| ApplyError::Write {
                        entry: name.clone(),
                        action: "creating the fifo",
                        source: errno.into(),
                    },
                )?;
                state.finish_metadata(&name, &path, &entry, None)?;
            }
        }
        // An exact unpacking never reads it (a path there already, a whiteout, a missing
        // parent are refused): not kept, a path per file (10 MB at 100,000 files).
        if !state.options.exact {
            state.created.insert(relative);
        }
    }
    // Directory mtimes last: writing their children changed them.
    for (path, mtime) in state.directories.iter().rev() {
        let set = set_mtime(path, *mtime);
        if state.options.exact {
            set.map_err(|source| ApplyError::Write {
                entry: path.display().to_string(),
                action: "setting the directory's modification time",
                source,
            })?;
        }
    }
    Ok(state.stats)
}

struct State<'a> {
    root: PathBuf,
    options: ApplyOptions,
    /// Paths (relative) this layer created, for duplicate detection and opaque dirs; empty
    /// in an exact unpacking, which refuses what they are for.
    created: HashSet<PathBuf>,
    directories: Vec<(PathBuf, i64)>,
    stats: ApplyStats,
    /// The snapshot files may be linked from ([`apply_layer_linking`]).
    earlier: Option<&'a mut Earlier>,
}

/// An earlier snapshot an exact unpacking takes unchanged files from
/// ([`apply_layer_linking`]), and what the unpacking wrote instead.
#[derive(Debug)]
pub struct Earlier {
    root: PathBuf,
    /// The regular files the unpacking wrote (paths relative to its target), not linked:
    /// the only ones whose data is new.
    pub written: Vec<PathBuf>,
    /// Directories (relative) of the earlier snapshot already looked at: whether each is a
    /// real directory there (never reached through a symlink).
    directories: HashMap<PathBuf, bool>,
    /// Inodes of the earlier snapshot already linked into the target: one is never linked
    /// at a second path (two files the tar lists apart must stay apart).
    inodes: HashSet<(u64, u64)>,
}

impl Earlier {
    /// Files may be taken from the snapshot at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            written: Vec::new(),
            directories: HashMap::new(),
            inodes: HashSet::new(),
        }
    }

    /// Makes room for `files` linked inodes at once, on the caller's thread: grown by the
    /// unpacking thread, the table and its growth would stay in that thread's allocator
    /// arena.
    pub fn reserve(&mut self, files: usize) {
        self.inodes.reserve(files);
    }
}

/// A file of the earlier snapshot whose metadata is the entry's, open.
struct Candidate {
    path: PathBuf,
    file: File,
}

/// Creates the file at `path` and writes `prefix_len` bytes from the start of `prefix`
/// (content already matched), then `first`, then the rest of `content`: `size` bytes in
/// all. Errors carry the action that failed.
fn write_file(
    path: &Path,
    prefix: Option<(&mut File, u64)>,
    first: &[u8],
    content: &mut impl Read,
    size: u64,
) -> Result<File, (&'static str, io::Error)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| ("creating the file", error))?;
    let writing = |error| ("writing the file", error);
    let mut copied = 0;
    if let Some((earlier, length)) = prefix {
        io::Seek::seek(earlier, io::SeekFrom::Start(0)).map_err(writing)?;
        copied += io::copy(&mut Read::take(earlier, length), &mut file).map_err(writing)?;
        if copied != length {
            return Err(writing(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    io::Write::write_all(&mut file, first).map_err(writing)?;
    copied += first.len() as u64;
    copied += io::copy(content, &mut file).map_err(writing)?;
    if copied != size {
        return Err(writing(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(file)
}

/// Bytes compared at a time between the tar's content and an earlier snapshot's file.
pub(crate) const COMPARE_CHUNK: usize = 128 * 1024;

/// Reads `content` (`size` bytes) and compares it with the earlier file as it comes: all
/// the same, `path` becomes a hard link to it (`None`: nothing left to set); at the first
/// difference, or when the link cannot be made (another file system, the inode's link
/// limit), the file is written from what matched and the rest of the stream (`Some`: its
/// metadata is still to be set).
fn link_or_write(
    path: &Path,
    mut earlier: Candidate,
    content: &mut impl Read,
    size: u64,
) -> io::Result<Option<File>> {
    let mut ours = vec![0_u8; COMPARE_CHUNK];
    let mut theirs = vec![0_u8; COMPARE_CHUNK];
    let mut matched = 0_u64;
    let as_io = |(_, error): (&'static str, io::Error)| error;
    while matched < size {
        let length =
            usize::try_from((size - matched).min(COMPARE_CHUNK as u64)).unwrap_or(COMPARE_CHUNK);
        content.read_exact(&mut ours[..length])?;
        let same = earlier.file.read_exact(&mut theirs[..length]).is_ok()
            && ours[..length] == theirs[..length];
        if !same {
            let prefix = Some((&mut earlier.file, matched));
            return write_file(path, prefix, &ours[..length], content, size)
                .map(Some)
                .map_err(as_io);
        }
        matched += length as u64;
    }
    match fs::hard_link(&earlier.path, path) {
        Ok(()) => Ok(None),
        Err(_) => write_file(path, Some((&mut earlier.file, size)), &[], content, size)
            .map(Some)
            .map_err(as_io),
    }
}

/// Splits a tar path into normal components, refusing absolute paths and `..`.
fn normalize(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".to_owned());
    }
    let mut components = Vec::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => components.push(part.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains \"..\"".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path".to_owned());
            }
        }
    }
    Ok(components)
}

impl State<'_> {
    fn refuse(entry: &str, reason: impl Into<String>) -> ApplyError {
        ApplyError::Refused {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    /// Walks `parents` under the root with `lstat`, creating missing directories; a symlink
    /// or non-directory on the way is refused.
    fn resolve_parent(&mut self, entry: &str, parents: &[OsString]) -> Result<PathBuf, ApplyError> {
        let mut current = self.root.clone();
        let mut relative = PathBuf::new();
        for part in parents {
            current.push(part);
            relative.push(part);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Self::refuse(
                        entry,
                        format!("writes through the symlink {:?}", relative),
                    ));
                }
                Ok(_) => {
                    return Err(Self::refuse(
                        entry,
                        format!("parent {:?} is not a directory", relative),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound && self.options.exact => {
                    return Err(Self::refuse(
                        entry,
                        format!(
                            "its parent directory {:?} is not listed before it (an exact unpacking makes none)",
                            relative
                        ),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(|source| ApplyError::Write {
                        entry: entry.to_owned(),
                        action: "creating a parent directory",
                        source,
                    })?;
                    let _ = fs::set_permissions(&current, fs::Permissions::from_mode(0o755));
                    self.created.insert(relative.clone());
                }
                Err(source) => {
                    return Err(ApplyError::Write {
                        entry: entry.to_owned(),
                        action: "inspecting a parent directory",
                        source,
                    });
                }
            }
        }
        Ok(current)
    }

    /// Makes room for an entry at `path`: refuses duplicates of this layer (except a
    /// directory listed again), removes what an earlier layer put there (a directory
    /// replaced by a file goes with its content).
    fn prepare_target(
        &mut self,
        entry: &str,
        relative: &Path,
        path: &Path,
        kind: &EntryKind,
    ) -> Result<(), ApplyError> {
        let existing = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ApplyError::Write {
                    entry: entry.to_owned(),
                    action: "inspecting the existing file",
                    source,
                });
            }
        };
        if self.options.exact {
            return Err(Self::refuse(
                entry,
                "listed twice (an exact unpacking writes each path once)",
            ));
        }
        let is_directory_again =
            matches!(kind, EntryKind::Directory) && existing.file_type().is_dir();
        if self.created.contains(relative) && !is_directory_again {
            return Err(Self::refuse(entry, "duplicate entry in the layer"));
        }
        if is_directory_again {
            return Ok(());
        }
        let removed = if existing.file_type().is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        removed.map_err(|source| ApplyError::Write {
            entry: entry.to_owned(),
            action: "removing what an earlier layer put there",
            source,
        })
    }

    fn resolve_link_target(&mut self, entry: &str, target: &Path) -> Result<PathBuf, ApplyError> {
        let components = normalize(target.as_os_str().as_bytes())
            .map_err(|reason| Self::refuse(entry, format!("hard link target: {reason}")))?;
        let Some((last, parents)) = components.split_last() else {
            return Err(Self::refuse(entry, "hard link to the root directory"));
        };
        let mut current = self.root.clone();
        let mut relative = PathBuf::new();
        for part in parents {
            current.push(part);
            relative.push(part);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) | Err(_) => {
                    return Err(Self::refuse(
                        entry,
                        format!(
                            "hard link target {:?} is not inside the layer's tree ({:?} is not a directory)",
                            target, relative
                        ),
                    ));
                }
            }
        }
        current.push(last);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => Err(Self::refuse(
                entry,
                format!("hard link to the directory {target:?}"),
            )),
            Ok(_) => Ok(current),
            Err(_) => Err(Self::refuse(
                entry,
                format!("hard link target {target:?} does not exist"),
            )),
        }
    }

    fn whiteout(
        &mut self,
        entry: &str,
        parents: &[OsString],
        last: &OsStr,
    ) -> Result<(), ApplyError> {
        if self.options.exact {
            return Err(Self::refuse(
                entry,
                "a whiteout (an exact unpacking holds only what the tar lists)",
            ));
        }
        let parent = self.resolve_parent(entry, parents)?;
        let parent_relative: PathBuf = parents.iter().collect();
        let write = |action: &'static str| {
            move |source: io::Error| ApplyError::Write {
                entry: entry.to_owned(),
                action,
                source,
            }
        };
        if last.as_bytes() == OPAQUE_MARKER.as_bytes() {
            match self.options.whiteouts {
                WhiteoutMode::Overlay => {
                    xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                        .map_err(write("marking the directory opaque (needs root)"))?;
                }
                WhiteoutMode::Merge => {
                    for child in fs::read_dir(&parent).map_err(write("listing the directory"))? {
                        let child = child.map_err(write("listing the directory"))?;
                        let relative = parent_relative.join(child.file_name());
                        if self.created.contains(&relative) {
                            continue;
                        }
                        remove_any(&child.path())
                            .map_err(write("emptying the opaque directory"))?;
                    }
                }
            }
            return Ok(());
        }
        let hidden = &last.as_bytes()[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // `.wh.` alone or other `.wh..wh.*` AUFS metadata: nothing to apply.
            return Ok(());
        }
        let hidden = OsStr::from_bytes(hidden);
        if hidden.as_bytes().contains(&b'/') || hidden == ".." || hidden == "." {
            return Err(Self::refuse(entry, "whiteout of a special name"));
        }
        let relative = parent_relative.join(hidden);
        if self.created.contains(&relative) {
            // A whiteout only hides what lower layers hold.
            return Ok(());
        }
        let path = parent.join(hidden);
        if fs::symlink_metadata(&path).is_ok() {
            remove_any(&path).map_err(write("removing the whited-out file"))?;
        }
        if self.options.whiteouts == WhiteoutMode::Overlay {
            mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|errno| {
                ApplyError::Write {
                    entry: entry.to_owned(),
                    action: "creating the overlay whiteout (a 0/0 device: needs root)",
                    source: errno.into(),
                }
            })?;
        }
        Ok(())
    }

    /// The earlier snapshot's file at `relative`, when it has the entry's metadata exactly
    /// (its content is compared as the tar's streams in). Anything that cannot be
    /// inspected is simply not a candidate.
    fn link_candidate(
        &mut self,
        relative: &Path,
        entry: &super::read::ReadEntry,
        size: u64,
    ) -> Option<Candidate> {
        let earlier = self.earlier.as_deref_mut()?;
        // Every parent a real directory of the earlier snapshot, never a symlink (which
        // would lead out of it).
        let mut below = PathBuf::new();
        for part in relative.parent()?.components() {
            below.push(part);
            let root = &earlier.root;
            let is_dir = *earlier.directories.entry(below.clone()).or_insert_with(|| {
                fs::symlink_metadata(root.join(&below)).is_ok_and(|meta| meta.is_dir())
            });
            if !is_dir {
                return None;
            }
        }
        let path = earlier.root.join(relative);
        // Looked at before it is opened: only a regular file is (never a device or a fifo).
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        let file = OpenOptions::new()
            .read(true)
            // Reading leaves the earlier snapshot as it was, access times included.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        let inode = (meta.dev(), meta.ino());
        let same = meta.file_type().is_file()
            && meta.len() == size
            && meta.mode() & 0o7777 == entry.mode & 0o7777
            && u64::from(meta.uid()) == entry.uid
            && u64::from(meta.gid()) == entry.gid
            && meta.mtime() == entry.mtime
            && meta.mtime_nsec() == 0
            && !earlier.inodes.contains(&inode);
        if !same {
            return None;
        }
        // The same extended attributes, no more, no fewer.
        let names: Vec<OsString> = xattr::FileExt::list_xattr(&file).ok()?.collect();
        if names.len() != entry.xattrs.len() {
            return None;
        }
        for (name, value) in &entry.xattrs {
            let theirs = xattr::FileExt::get_xattr(&file, name).ok()??;
            if &theirs != value {
                return None;
            }
        }
        earlier.inodes.insert(inode);
        Some(Candidate { path, file })
    }

    /// An exact unpacking's hard link: a tree gives it the metadata of its file (a regular
    /// file), so the tar must too.
    fn check_hardlink(
        &self,
        entry: &str,
        path: &Path,
        tar_entry: &super::read::ReadEntry,
    ) -> Result<(), ApplyError> {
        let meta = fs::symlink_metadata(path).map_err(|source| ApplyError::Write {
            entry: entry.to_owned(),
            action: "inspecting the hard link",
            source,
        })?;
        let same = meta.file_type().is_file()
            && meta.mode() & 0o7777 == tar_entry.mode & 0o7777
            && u64::from(meta.uid()) == tar_entry.uid
            && u64::from(meta.gid()) == tar_entry.gid
            && meta.mtime() == tar_entry.mtime
            && tar_entry.xattrs.is_empty();
        if same {
            Ok(())
        } else {
            Err(Self::refuse(
                entry,
                "a hard link whose metadata is not its file's (or not to a regular file)",
            ))
        }
    }

    fn finish_metadata(
        &self,
        entry: &str,
        path: &Path,
        tar_entry: &super::read::ReadEntry,
        file: Option<&File>,
    ) -> Result<(), ApplyError> {
        let write = |action: &'static str| {
            move |source: io::Error| ApplyError::Write {
                entry: entry.to_owned(),
                action,
                source,
            }
        };
        let is_symlink = matches!(tar_entry.kind, EntryKind::Symlink { .. });
        if self.options.exact && is_symlink && tar_entry.mode & 0o7777 != 0o777 {
            return Err(Self::refuse(
                entry,
                format!(
                    "a symlink of mode {:o} (links have mode 777)",
                    tar_entry.mode & 0o7777
                ),
            ));
        }
        if self.options.set_owners {
            let uid = u32::try_from(tar_entry.uid)
                .map_err(|_| Self::refuse(entry, "uid out of range"))?;
            let gid = u32::try_from(tar_entry.gid)
                .map_err(|_| Self::refuse(entry, "gid out of range"))?;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(write("setting the owner"))?;
        }
        // After chown, which clears setuid/setgid and file capabilities.
        if !is_symlink {
            let permissions = fs::Permissions::from_mode(tar_entry.mode & 0o7777);
            match file {
                Some(file) => file.set_permissions(permissions),
                None => fs::set_permissions(path, permissions),
            }
            .map_err(write("setting the mode"))?;
        }
        for (name, value) in &tar_entry.xattrs {
            // overlay's own xattrs would let a layer redirect lookups; SELinux labels
            // belong to the host.
            let skipped = name.starts_with("trusted.")
                || name == "security.selinux"
                || (is_symlink && name.starts_with("user."));
            if skipped && self.options.exact {
                return Err(Self::refuse(
                    entry,
                    format!("the extended attribute {name} (not written)"),
                ));
            }
            if skipped {
                continue;
            }
            if let Err(error) = xattr::set(path, name, value) {
                if self.options.set_owners || self.options.exact {
                    return Err(ApplyError::Write {
                        entry: entry.to_owned(),
                        action: "setting an extended attribute",
                        source: error,
                    });
                }
            }
            if self.options.exact
                && xattr::get(path, name).ok().flatten().as_deref() != Some(value.as_slice())
            {
                return Err(Self::refuse(
                    entry,
                    format!("the extended attribute {name} reads back changed"),
                ));
            }
        }
        set_mtime(path, tar_entry.mtime).map_err(write("setting the modification time"))?;
        Ok(())
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let time = TimeSpec::new(mtime, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Whether a file in an overlay upper directory or snapshot is an overlay whiteout (a
/// character device 0/0).
pub fn is_overlay_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The raw bytes of a path, for messages from callers that have an `OsString`.
pub fn lossy(path: &OsStr) -> String {
    String::from_utf8_lossy(&path.to_os_string().into_vec()).into_owned()
}

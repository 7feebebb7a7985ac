//! Turning a directory into tar entries: an overlay upper directory (a step's change set,
//! whose whiteout devices and opaque directories become OCI whiteouts), a whole root
//! filesystem (`xbuild import DIR`), or an explicit list of files (`COPY`).
//!
//! Entries come out in a fixed order: depth first, each directory's children sorted by the
//! bytes of their names, an opaque marker first among its directory's children. Hard links
//! (same device and inode) become tar hard links to the first path seen.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::apply::{OPAQUE_MARKER, WHITEOUT_PREFIX, is_overlay_whiteout};
use super::tar::{EntryKind, TarEntry, TarWriter};

/// How a directory tree is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// An overlay upper directory: 0/0 character devices are whiteouts and
    /// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) marks an opaque directory.
    OverlayUpper,
    /// A plain root filesystem: everything is content.
    RootFs,
}

/// Errors reading a tree or a file list.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A file could not be read.
    #[error("{action} {path}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the tar failed.
    #[error("writing the tar entry for {path}")]
    Write {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The upper directory uses an overlay feature that has no tar form.
    #[error("{path}: overlay {feature} is not supported in a layer (mount with {option})")]
    OverlayFeature {
        /// The file.
        path: PathBuf,
        /// The feature (`redirect_dir`, `metacopy`).
        feature: &'static str,
        /// The mount option that turns it off.
        option: &'static str,
    },
    /// Two entries of a file list name the same path.
    #[error("{0} is listed twice")]
    Duplicate(PathBuf),
    /// A file list entry has an absolute path or `..`, or names the root itself.
    #[error("{0} is not a relative path inside the image")]
    BadPath(PathBuf),
    /// A name OCI layers reserve for deletions (`.wh.` first): unpacked, it would be a
    /// whiteout, not a file.
    #[error(
        "{0}: a name starting with \".wh.\" cannot be stored in a layer (OCI layers mark deletions with it)"
    )]
    ReservedName(PathBuf),
    /// A character device 0/0: in a snapshot it is an overlay whiteout, not a device.
    #[error(
        "{0}: a character device 0/0 cannot be stored in a layer (in a snapshot it is an overlay whiteout)"
    )]
    WhiteoutDevice(PathBuf),
    /// An entry of a list that must come sorted ([`write_made_file_list`]) comes after one
    /// it sorts before.
    #[error("{0} is listed out of order")]
    Unsorted(PathBuf),
    /// An entry whose parent directory is not listed (the unpacked snapshot would have a
    /// directory the tar lacks).
    #[error("{0}: its parent directory is not listed in the layer")]
    MissingParent(PathBuf),
    /// A hard link to a path that is not a regular file of the same list.
    #[error("{path}: hard link to {target}, which is not a regular file of the layer")]
    BadHardlink {
        /// The link.
        path: PathBuf,
        /// What it names.
        target: PathBuf,
    },
}

/// xattrs recorded in layers: file capabilities and user attributes (not overlay's own).
fn is_recorded_xattr(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, DiffError> {
    let mut xattrs = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattr support have none to record.
        Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(xattrs),
        Err(source) => {
            return Err(DiffError::File {
                action: "listing extended attributes of",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    for name in names {
        let bytes = name.as_bytes();
        if !is_recorded_xattr(bytes) {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, &name) {
            xattrs.insert(String::from_utf8_lossy(bytes).into_owned(), value);
        }
    }
    Ok(xattrs)
}

fn overlay_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, format!("trusted.overlay.{name}"))
        .ok()
        .flatten()
        .or_else(|| {
            xattr::get(path, format!("user.overlay.{name}"))
                .ok()
                .flatten()
        })
}

/// The few `lstat` fields a tar entry needs, 64 bytes (a `std::fs::Metadata` is 144): what
/// a list of many files keeps per file instead of the whole `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// `st_mode`: the file type bits and the permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of names of the inode (`st_nlink`).
    pub nlink: u32,
    /// Size in bytes (of the file; of the link text for a symlink).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Device number of a device node (`st_rdev`).
    pub rdev: u64,
    /// Device holding the file.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl From<&fs::Metadata> for FileStat {
    fn from(meta: &fs::Metadata) -> Self {
        Self {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
            size: meta.size(),
            mtime: meta.mtime(),
            rdev: meta.rdev(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl FileStat {
    fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK
    }
    /// A Unix socket.
    pub fn is_socket(&self) -> bool {
        self.file_type() == libc::S_IFSOCK
    }
}

/// A tar entry describing `path` (relative name `name`) from its `lstat` metadata.
///
/// # Errors
/// A symlink target or xattrs cannot be read.
pub fn entry_from_metadata(
    name: &Path,
    path: &Path,
    meta: &fs::Metadata,
) -> Result<TarEntry, DiffError> {
    entry_from_stat(name, path, &FileStat::from(meta))
}

/// [`entry_from_metadata`] from the fields of the `lstat` it needs.
///
/// # Errors
/// A symlink target or xattrs cannot be read; a socket (no tar form).
pub fn entry_from_stat(name: &Path, path: &Path, stat: &FileStat) -> Result<TarEntry, DiffError> {
    let kind = match stat.file_type() {
        libc::S_IFDIR => EntryKind::Directory,
        libc::S_IFLNK => EntryKind::Symlink {
            target: fs::read_link(path).map_err(|source| DiffError::File {
                action: "reading the symlink",
                path: path.to_path_buf(),
                source,
            })?,
        },
        file_type @ (libc::S_IFCHR | libc::S_IFBLK) => {
            let rdev = stat.rdev;
            let (major, minor) = (
                u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX),
                u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX),
            );
            if file_type == libc::S_IFCHR {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        }
        libc::S_IFIFO => EntryKind::Fifo,
        libc::S_IFSOCK => {
            // Sockets have no tar form; Docker skips them too.
            return Err(DiffError::File {
                action: "archiving (sockets cannot be stored in a layer)",
                path: path.to_path_buf(),
                source: io::ErrorKind::Unsupported.into(),
            });
        }
        _ => EntryKind::File { size: stat.size },
    };
    let xattrs = if stat.is_symlink() {
        BTreeMap::new()
    } else {
        read_xattrs(path)?
    };
    Ok(TarEntry {
        path: name.to_path_buf(),
        kind,
        mode: stat.mode & 0o7777,
        uid: u64::from(stat.uid),
        gid: u64::from(stat.gid),
        mtime: stat.mtime,
        xattrs,
    })
}

/// Writes every entry under `root` (not `root` itself) in the fixed order.
///
/// # Errors
/// Read or write failures, and overlay features with no tar form.
pub fn write_tree<W: Write>(
    writer: &mut TarWriter<W>,
    root: &Path,
    kind: TreeKind,
) -> Result<u64, DiffError> {
    let mut walker = Walker {
        kind,
        hardlinks: FirstNames::default(),
        count: 0,
    };
    walker.walk_directory(writer, root, Path::new(""))?;
    Ok(walker.count)
}

/// Writes every entry under `root` as if `root` were `prefix` in the image (the entry for
/// `prefix` itself is the caller's): `COPY dir/ /app/` without a copy on disk.
///
/// # Errors
/// As [`write_tree`].
pub fn write_tree_at<W: Write>(
    writer: &mut TarWriter<W>,
    root: &Path,
    prefix: &Path,
    kind: TreeKind,
) -> Result<u64, DiffError> {
    let mut walker = Walker {
        kind,
        hardlinks: FirstNames::default(),
        count: 0,
    };
    walker.walk_directory(writer, root, prefix)?;
    Ok(walker.count)
}

struct Walker {
    kind: TreeKind,
    hardlinks: FirstNames,
    count: u64,
}

/// Where a tree walk met the first name of each inode with more than one name, so that
/// its other names in the tree become tar hard links to it. Every file of a `COPY`
/// snapshot that shares its inodes with an earlier build's has two names (one there): at
/// 100,000 files a map to a path each held 10 MB while the blob was written (issue 19 item
/// 4). Kept instead: the name's directory (one path per directory that holds such a name)
/// and its position among the directory's sorted names, 8 bytes, in a map keyed by the
/// inode alone while every file is on one device (16 bytes an entry, not 24). The name is
/// read back from its directory when a second one is met (rare: a link inside the tree).
#[derive(Default)]
struct FirstNames {
    /// The device of the first file recorded, and the inodes on it.
    device: Option<u64>,
    on_device: HashMap<u64, (u32, u32)>,
    /// Inodes of other devices.
    elsewhere: HashMap<(u64, u64), (u32, u32)>,
    /// Directories holding first names: on the host, and in the image.
    directories: Vec<(PathBuf, PathBuf)>,
    /// The sorted names of the directory read back last (its number).
    listed: Option<(u32, Vec<OsString>)>,
}

impl FirstNames {
    fn get(&self, (device, inode): (u64, u64)) -> Option<(u32, u32)> {
        if self.device == Some(device) {
            self.on_device.get(&inode).copied()
        } else {
            self.elsewhere.get(&(device, inode)).copied()
        }
    }

    fn insert(&mut self, (device, inode): (u64, u64), at: (u32, u32)) {
        if *self.device.get_or_insert(device) == device {
            self.on_device.insert(inode, at);
        } else {
            self.elsewhere.insert((device, inode), at);
        }
    }

    /// The number of the directory at `directory` (`relative` in the image), recorded now.
    fn directory(&mut self, directory: &Path, relative: &Path) -> Result<u32, DiffError> {
        let number = u32::try_from(self.directories.len()).map_err(|_| DiffError::File {
            action: "recording hard links in",
            path: directory.to_path_buf(),
            source: io::Error::other("more than 2^32 directories"),
        })?;
        self.directories
            .push((directory.to_path_buf(), relative.to_path_buf()));
        Ok(number)
    }

    /// The name in the image of the first name `at` of `inode`, read back from its
    /// directory (which must still hold it there).
    fn name(&mut self, at: (u32, u32), inode: (u64, u64)) -> Result<PathBuf, DiffError> {
        let (number, position) = at;
        let (directory, relative) = &self.directories[number as usize];
        if self
            .listed
            .as_ref()
            .is_none_or(|(listed, _)| *listed != number)
        {
            self.listed = Some((number, sorted_names(directory)?));
        }
        let names = self
            .listed
            .as_ref()
            .map_or(&[][..], |(_, names)| names.as_slice());
        let moved = || DiffError::File {
            action: "finding the first name of a hard-linked file in",
            path: directory.clone(),
            source: io::Error::other("the directory changed during the walk"),
        };
        let name = names.get(position as usize).ok_or_else(moved)?;
        let meta = fs::symlink_metadata(directory.join(name)).map_err(|_| moved())?;
        if (meta.dev(), meta.ino()) != inode {
            return Err(moved());
        }
        Ok(relative.join(name))
    }
}

/// The names in `directory`, sorted by their bytes: the order a tree walk writes them in.
fn sorted_names(directory: &Path) -> Result<Vec<OsString>, DiffError> {
    let listing = |source| DiffError::File {
        action: "listing",
        path: directory.to_path_buf(),
        source,
    };
    let mut names: Vec<OsString> = fs::read_dir(directory)
        .map_err(listing)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()
        .map_err(listing)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

impl Walker {
    fn walk_directory<W: Write>(
        &mut self,
        writer: &mut TarWriter<W>,
        directory: &Path,
        relative: &Path,
    ) -> Result<(), DiffError> {
        let names = sorted_names(directory)?;
        // This directory's number among those holding first names, once it holds one.
        let mut number = None;
        for (position, name) in names.into_iter().enumerate() {
            let path = directory.join(&name);
            let name_in_image = relative.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|source| DiffError::File {
                action: "inspecting",
                path: path.clone(),
                source,
            })?;
            if self.kind == TreeKind::OverlayUpper {
                if is_overlay_whiteout(&meta) {
                    let mut whiteout_name = OsString::from(WHITEOUT_PREFIX);
                    whiteout_name.push(&name);
                    let mut entry = TarEntry::new(
                        relative.join(whiteout_name),
                        EntryKind::File { size: 0 },
                        0o600,
                    );
                    entry.mtime = meta.mtime();
                    self.append(writer, &entry, None)?;
                    continue;
                }
                if overlay_xattr(&path, "redirect").is_some() {
                    return Err(DiffError::OverlayFeature {
                        path,
                        feature: "redirect_dir",
                        option: "redirect_dir=off",
                    });
                }
                if !meta.is_dir() && overlay_xattr(&path, "metacopy").is_some() {
                    return Err(DiffError::OverlayFeature {
                        path,
                        feature: "metacopy",
                        option: "metacopy=off",
                    });
                }
            }
            let mut entry = entry_from_metadata(&name_in_image, &path, &meta)?;
            if let EntryKind::File { .. } = entry.kind {
                if meta.nlink() > 1 {
                    let inode = (meta.dev(), meta.ino());
                    if let Some(at) = self.hardlinks.get(inode) {
                        entry.kind = EntryKind::Hardlink {
                            target: self.hardlinks.name(at, inode)?,
                        };
                        entry.xattrs.clear();
                        self.append(writer, &entry, None)?;
                        continue;
                    }
                    let number = match number {
                        Some(number) => number,
                        None => *number.insert(self.hardlinks.directory(directory, relative)?),
                    };
                    let position = u32::try_from(position).map_err(|_| DiffError::File {
                        action: "recording hard links in",
                        path: directory.to_path_buf(),
                        source: io::Error::other("more than 2^32 names"),
                    })?;
                    self.hardlinks.insert(inode, (number, position));
                }
                let mut file = File::open(&path).map_err(|source| DiffError::File {
                    action: "opening",
                    path: path.clone(),
                    source,
                })?;
                self.append(writer, &entry, Some(&mut file))?;
                continue;
            }
            self.append(writer, &entry, None)?;
            if meta.is_dir() {
                if self.kind == TreeKind::OverlayUpper
                    && overlay_xattr(&path, "opaque").as_deref() == Some(b"y")
                {
                    let mut marker = TarEntry::new(
                        name_in_image.join(OPAQUE_MARKER),
                        EntryKind::File { size: 0 },
                        0o600,
                    );
                    marker.mtime = meta.mtime();
                    self.append(writer, &marker, None)?;
                }
                self.walk_directory(writer, &path, &name_in_image)?;
            }
        }
        Ok(())
    }

    fn append<W: Write>(
        &mut self,
        writer: &mut TarWriter<W>,
        entry: &TarEntry,
        content: Option<&mut dyn io::Read>,
    ) -> Result<(), DiffError> {
        let written = match (&entry.kind, content) {
            (EntryKind::File { size: 0 }, None) => writer.append(entry, Some(&mut io::empty())),
            (_, content) => writer.append(entry, content),
        };
        written.map_err(|source| DiffError::Write {
            path: entry.path.clone(),
            source,
        })?;
        self.count += 1;
        Ok(())
    }
}

/// The mode of every symlink on Linux (`lstat` gives it; `chmod` cannot change it).
const SYMLINK_MODE: u32 = 0o777;

/// One file of a file list: where it goes in the image, its metadata, and for regular files
/// where its content is read from.
#[derive(Debug, Clone)]
pub struct FileListEntry {
    /// Metadata (path in the image, type, mode, owner, mtime, xattrs).
    pub entry: TarEntry,
    /// Host file with the content (regular files only).
    pub source: Option<PathBuf>,
}

/// A file list in the form in which a directory holds it: what [`write_file_list`] writes,
/// so that the tree of the list unpacked (a `COPY` snapshot) gives back the same tar
/// ([`write_tree`]) entry for entry. Sorted by path, component by component (parents
/// before children, as the tree is walked); paths in their canonical bytes (`a//b` is
/// `a/b`). What a directory cannot hold differently is written as it holds it:
///
/// - a symlink has mode 0777 and no xattrs (`COPY --chmod` gives every listed entry its
///   mode; Linux links have none of their own), which is also what BuildKit's layer, a diff
///   of the copied files, holds;
/// - xattrs are those a tree's tar records (`security.capability`, `user.*` but overlay's),
///   `user.*` only on files and directories (the kernel keeps them nowhere else);
/// - the names of one hard-linked inode: the first in the list's order is the file (with
///   the content), the others hard links to it, each with the inode's metadata (the
///   file's), as the tree's walk finds them; a link may name any of them.
///
/// What cannot be held at all is refused: a name starting with `.wh.` (unpacked, a
/// whiteout), a character device 0/0 (in a snapshot, an overlay whiteout), an entry whose
/// parent directory is not listed (unpacking would make one the tar lacks: parents are
/// never invented here), duplicates, paths that are absolute, empty or hold `..`.
///
/// # Errors
/// The refusals above, as [`DiffError`].
pub fn normalize_file_list(
    mut entries: Vec<FileListEntry>,
) -> Result<Vec<FileListEntry>, DiffError> {
    for item in &mut entries {
        normalize_entry(item)?;
    }
    // A list given sorted (a copy settles its list so) is not sorted again, and none is
    // sorted through a scratch copy (a stable sort's, up to 8 MB at 100,000 files): equal
    // paths are refused below, so their order does not matter.
    if !entries.is_sorted_by(|a, b| a.entry.path <= b.entry.path) {
        entries.sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    }
    for pair in entries.windows(2) {
        if pair[0].entry.path == pair[1].entry.path {
            return Err(DiffError::Duplicate(pair[0].entry.path.clone()));
        }
    }
    let mut directories = std::collections::HashSet::new();
    for item in &entries {
        let path = &item.entry.path;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            if !directories.contains(parent) {
                return Err(DiffError::MissingParent(path.clone()));
            }
        }
        if item.entry.kind == EntryKind::Directory {
            directories.insert(path.clone());
        }
    }
    relink(&mut entries)?;
    Ok(entries)
}

/// The part of [`normalize_file_list`] that is one entry's own: its path in its canonical
/// bytes, the names and devices a layer cannot hold refused, what a directory holds of a
/// symlink's or a hard link's mode and xattrs. The same for every list, whole or made one
/// entry at a time ([`write_made_file_list`]); doing it twice changes nothing.
///
/// # Errors
/// [`DiffError::BadPath`], [`DiffError::ReservedName`], [`DiffError::WhiteoutDevice`].
pub fn normalize_entry(item: &mut FileListEntry) -> Result<(), DiffError> {
    let path = &item.entry.path;
    if path.as_os_str().is_empty()
        || path
            .components()
            .any(|component| !matches!(component, std::path::Component::Normal(_)))
    {
        return Err(DiffError::BadPath(path.clone()));
    }
    // Rebuilt only when it is not in its canonical bytes already (`a//b`, `a/./b`,
    // `a/`): a list of many files is not copied for nothing.
    let parts = path.components().count();
    let bytes: usize = path.components().map(|part| part.as_os_str().len()).sum();
    if bytes + parts - 1 != path.as_os_str().len() {
        item.entry.path = path.components().collect();
    }
    let canonical = &item.entry.path;
    if canonical
        .file_name()
        .is_some_and(|name| name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
    {
        return Err(DiffError::ReservedName(canonical.clone()));
    }
    let entry = &mut item.entry;
    match &mut entry.kind {
        EntryKind::CharDevice { major: 0, minor: 0 } => {
            return Err(DiffError::WhiteoutDevice(entry.path.clone()));
        }
        EntryKind::Symlink { .. } => {
            entry.mode = SYMLINK_MODE;
            entry.xattrs.clear();
        }
        EntryKind::Hardlink { target } => {
            *target = target.components().collect();
            entry.xattrs.clear();
        }
        EntryKind::File { .. } | EntryKind::Directory => {
            entry
                .xattrs
                .retain(|name, _| is_recorded_xattr(name.as_bytes()));
        }
        EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } | EntryKind::Fifo => {
            entry.xattrs.retain(|name, _| name == "security.capability");
        }
    }
    Ok(())
}

/// Rewrites the hard links of a sorted list so that each inode's first name is its file:
/// see [`normalize_file_list`]. `entries` may be the part of a sorted list that holds
/// every name of each hard-linked inode (in list order): the others play no part.
///
/// # Errors
/// [`DiffError::BadHardlink`]: a link to a path that is not a regular file of `entries`.
pub fn relink(entries: &mut [FileListEntry]) -> Result<(), DiffError> {
    if !entries
        .iter()
        .any(|item| matches!(item.entry.kind, EntryKind::Hardlink { .. }))
    {
        return Ok(());
    }
    let index: HashMap<PathBuf, usize> = entries
        .iter()
        .enumerate()
        .map(|(position, item)| (item.entry.path.clone(), position))
        .collect();
    // Each link's file: its target, followed through other links.
    let mut file_of = vec![None; entries.len()];
    for position in 0..entries.len() {
        let mut current = position;
        let mut steps = 0;
        while let EntryKind::Hardlink { target } = &entries[current].entry.kind {
            let bad = || DiffError::BadHardlink {
                path: entries[position].entry.path.clone(),
                target: target.clone(),
            };
            current = *index.get(target).ok_or_else(bad)?;
            steps += 1;
            if steps > entries.len() {
                return Err(bad());
            }
        }
        if current != position {
            if !matches!(entries[current].entry.kind, EntryKind::File { .. }) {
                let target = entries[current].entry.path.clone();
                return Err(DiffError::BadHardlink {
                    path: entries[position].entry.path.clone(),
                    target,
                });
            }
            file_of[position] = Some(current);
        }
    }
    // The names of each file, in list order (a file's own position among them).
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (position, file) in file_of.iter().enumerate() {
        if let Some(file) = file {
            groups.entry(*file).or_default().push(position);
        }
    }
    for (file, mut names) in groups {
        names.push(file);
        names.sort_unstable();
        let first = names[0];
        let first_path = entries[first].entry.path.clone();
        let content = entries[file].clone();
        for &name in &names {
            let item = &mut entries[name];
            let path = item.entry.path.clone();
            item.entry = content.entry.clone();
            item.entry.path = path;
            if name == first {
                item.source.clone_from(&content.source);
            } else {
                item.entry.kind = EntryKind::Hardlink {
                    target: first_path.clone(),
                };
                item.entry.xattrs.clear();
                item.source = None;
            }
        }
    }
    Ok(())
}

/// Writes a file list in the form [`normalize_file_list`] gives it.
///
/// # Errors
/// [`normalize_file_list`]'s refusals, read or write failures.
pub fn write_file_list<W: Write>(
    writer: &mut TarWriter<W>,
    entries: Vec<FileListEntry>,
) -> Result<u64, DiffError> {
    write_normalized_file_list(writer, &normalize_file_list(entries)?)
}

/// Writes a file list that [`normalize_file_list`] gave (written as it is: not checked
/// again).
///
/// # Errors
/// Read or write failures.
pub fn write_normalized_file_list<W: Write>(
    writer: &mut TarWriter<W>,
    entries: &[FileListEntry],
) -> Result<u64, DiffError> {
    for item in entries {
        write_entry(writer, item)?;
    }
    Ok(entries.len() as u64)
}

/// Writes one entry of a normalized list, its content read from its source.
fn write_entry<W: Write>(writer: &mut TarWriter<W>, item: &FileListEntry) -> Result<(), DiffError> {
    let result = match (&item.entry.kind, &item.source) {
        (EntryKind::File { .. }, Some(source)) => {
            let mut file = File::open(source).map_err(|error| DiffError::File {
                action: "opening",
                path: source.clone(),
                source: error,
            })?;
            writer.append(&item.entry, Some(&mut file))
        }
        (EntryKind::File { size: 0 }, None) => writer.append(&item.entry, Some(&mut io::empty())),
        _ => writer.append(&item.entry, None),
    };
    result.map_err(|source| DiffError::Write {
        path: item.entry.path.clone(),
        source,
    })
}

/// A list of files a layer is written from ([`crate::layer::write_file_list_layer`],
/// [`crate::layer::unpack_file_list_layer_linking`]): [`FileListEntry`]s held whole (a
/// `Vec`), or a list that holds less per file and makes each entry as it is written
/// ([`write_made_file_list`]; a `COPY` of the build context names the walk's entries by
/// index, issue 19 item 4). The tar is the same either way.
pub trait FileList {
    /// How many entries.
    fn len(&self) -> usize;
    /// Whether there is none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Puts the list in the form [`normalize_file_list`] gives, in place; what it refuses
    /// is refused here or, for entries made as they are written, by [`Self::write`].
    ///
    /// # Errors
    /// [`normalize_file_list`]'s refusals.
    fn normalize(&mut self) -> Result<(), DiffError>;
    /// Writes the list [`Self::normalize`] gave; returns how many entries it wrote.
    ///
    /// # Errors
    /// Read or write failures, and the refusals of entries made as they are written.
    fn write<W: Write>(&self, writer: &mut TarWriter<W>) -> Result<u64, DiffError>;
}

impl FileList for Vec<FileListEntry> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn normalize(&mut self) -> Result<(), DiffError> {
        *self = normalize_file_list(std::mem::take(self))?;
        Ok(())
    }

    fn write<W: Write>(&self, writer: &mut TarWriter<W>) -> Result<u64, DiffError> {
        write_normalized_file_list(writer, self)
    }
}

/// Writes a list of `len` entries that `entry` gives one at a time, in list order: one it
/// makes (`Cow::Owned`) is normalized as it comes ([`normalize_entry`]), one it lends is
/// taken as normalized already. What [`normalize_file_list`] checks of the whole list is
/// checked as the entries come: each path after the one before (sorted, none twice: such a
/// list is not sorted here), each parent directory listed before its entries. Hard links
/// must be in their final form already ([`relink`]).
///
/// # Errors
/// What `entry` returns, [`normalize_entry`]'s refusals, [`DiffError::Unsorted`],
/// [`DiffError::Duplicate`], [`DiffError::MissingParent`], read or write failures.
pub fn write_made_file_list<'a, W: Write>(
    writer: &mut TarWriter<W>,
    len: usize,
    mut entry: impl FnMut(usize) -> Result<std::borrow::Cow<'a, FileListEntry>, DiffError>,
) -> Result<u64, DiffError> {
    use std::borrow::Cow;
    let mut previous: Option<PathBuf> = None;
    let mut directories = std::collections::HashSet::new();
    for at in 0..len {
        let item = match entry(at)? {
            Cow::Owned(mut made) => {
                normalize_entry(&mut made)?;
                Cow::Owned(made)
            }
            lent @ Cow::Borrowed(_) => lent,
        };
        let path = &item.entry.path;
        if let Some(previous) = &previous {
            match previous.as_path().cmp(path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(DiffError::Duplicate(path.clone())),
                std::cmp::Ordering::Greater => return Err(DiffError::Unsorted(path.clone())),
            }
        }
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            if !directories.contains(parent) {
                return Err(DiffError::MissingParent(path.clone()));
            }
        }
        write_entry(writer, &item)?;
        let is_dir = item.entry.kind == EntryKind::Directory;
        let path = match item {
            Cow::Owned(made) => made.entry.path,
            Cow::Borrowed(lent) => lent.entry.path.clone(),
        };
        if is_dir {
            directories.insert(path.clone());
        }
        previous = Some(path);
    }
    Ok(len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(bytes: &[u8]) -> Vec<String> {
        let mut reader = super::super::read::TarReader::new(bytes);
        let mut names = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            names.push(entry.display_path());
        }
        names
    }

    /// A tree walk makes tar hard links of the names of one inode it meets twice, to the
    /// first one met (read back from its directory), across directories; a file whose
    /// other name is outside the tree (a snapshot's file linked from an earlier one) is a
    /// plain file.
    #[test]
    fn a_tree_walk_links_names_met_twice_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["a", "b/c"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for name in ["a/1", "a/2", "b/0", "b/c/z"] {
            fs::write(root.join(name), name.as_bytes()).unwrap();
        }
        fs::hard_link(root.join("a/2"), root.join("b/c/y")).unwrap();
        fs::hard_link(root.join("a/2"), root.join("b/x")).unwrap();
        fs::hard_link(root.join("b/0"), root.join("b/c/x")).unwrap();
        fs::hard_link(root.join("a/1"), dir.path().join("outside")).unwrap();
        let mut writer = TarWriter::new(Vec::new(), None);
        write_tree(&mut writer, &root, TreeKind::RootFs).unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = super::super::read::TarReader::new(bytes.as_slice());
        let mut links = Vec::new();
        let mut files = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            match &entry.kind {
                EntryKind::Hardlink { target } => {
                    links.push(format!("{} -> {}", entry.display_path(), target.display()));
                }
                EntryKind::File { .. } => files.push(entry.display_path()),
                _ => {}
            }
        }
        assert_eq!(files, ["a/1", "a/2", "b/0", "b/c/z"]);
        assert_eq!(links, ["b/c/x -> b/0", "b/c/y -> a/2", "b/x -> a/2"]);
    }

    #[test]
    fn file_lists_are_sorted_parents_first_and_checked() {
        let entry = |path: &str, kind: EntryKind| FileListEntry {
            entry: TarEntry::new(path, kind, 0o644),
            source: None,
        };
        let list = vec![
            entry("a/b", EntryKind::File { size: 0 }),
            entry("a-b", EntryKind::Fifo),
            entry("a", EntryKind::Directory),
        ];
        let mut writer = TarWriter::new(Vec::new(), None);
        write_file_list(&mut writer, list.clone()).unwrap();
        assert_eq!(names(&writer.finish().unwrap()), ["a/", "a/b", "a-b"]);

        let mut duplicate = list.clone();
        duplicate.push(entry("a/b", EntryKind::Fifo));
        let mut writer = TarWriter::new(Vec::new(), None);
        assert!(matches!(
            write_file_list(&mut writer, duplicate),
            Err(DiffError::Duplicate(_))
        ));
        let mut writer = TarWriter::new(Vec::new(), None);
        assert!(matches!(
            write_file_list(&mut writer, vec![entry("../x", EntryKind::Fifo)]),
            Err(DiffError::BadPath(_))
        ));
    }

    #[test]
    fn overlay_upper_whiteouts_and_opaque_dirs_become_oci_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir(upper.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir(upper.join("opt")).unwrap();
        xattr::set(upper.join("opt"), "trusted.overlay.opaque", b"y").unwrap();
        fs::write(upper.join("opt/!first"), "x").unwrap();
        let mut writer = TarWriter::new(Vec::new(), None);
        write_tree(&mut writer, upper, TreeKind::OverlayUpper).unwrap();
        assert_eq!(
            names(&writer.finish().unwrap()),
            [
                "etc/",
                "etc/.wh.gone",
                "opt/",
                "opt/.wh..wh..opq",
                "opt/!first"
            ]
        );
    }
}

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

/// One path of the build context, with the metadata `COPY` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Relative to the context root, `/`-separated, never empty, no `.` or `..`.
    pub path: PathBuf,
    /// File, directory, symlink, ...
    pub kind: EntryKind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (of the file; of the link text for a symlink).
    pub size: u64,
    /// A symlink's target, as stored.
    pub link_target: Option<PathBuf>,
    /// Device number of a device node (`st_rdev`); 0 otherwise.
    pub rdev: u64,
    /// Last modification.
    pub mtime: Timestamp,
    /// Last status change (part of the stat cache key).
    pub ctime: Timestamp,
    /// Inode number (part of the stat cache key).
    pub inode: u64,
    /// Device holding the file (part of the stat cache key).
    pub device: u64,
    /// Number of names of the inode (`st_nlink`; hard links among what `COPY` selects are
    /// kept).
    pub nlink: u32,
}

impl ContextEntry {
    /// The path as bytes (what patterns and digests see).
    pub fn path_bytes(&self) -> &[u8] {
        self.path.as_os_str().as_bytes()
    }
}

/// Lists the build context in `context_dir` after `ignore`, sorted bytewise by path. The
/// root itself is not listed.
///
/// # Errors
/// [`ContextError::NotADirectory`] for a bad context; [`ContextError::Pattern`] when a
/// pattern that must be tried does not compile; [`ContextError::Read`] when a directory or
/// entry that is sent cannot be read.
pub fn walk(context_dir: &Path, ignore: &Dockerignore) -> Result<Vec<ContextEntry>, ContextError> {
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
        out: Vec::new(),
        pending: Vec::new(),
    };
    let mut absolute = context_dir.to_path_buf();
    let mut relative = Vec::new();
    walker.directory(&mut absolute, &mut relative, &MatchInfo::default(), false)?;
    let mut entries = walker.out;
    entries.sort_by(|a, b| a.path_bytes().cmp(b.path_bytes()));
    // Kept for the whole build: not with the spare room of its growth (up to half).
    entries.shrink_to_fit();
    Ok(entries)
}

struct Walker<'a> {
    ignore: &'a Dockerignore,
    only_prefix_exceptions: bool,
    has_exceptions: bool,
    out: Vec<ContextEntry>,
    /// The directories being walked, outermost first: `Some` for an excluded one not yet
    /// listed (it is listed when something beneath it is).
    pending: Vec<Option<ContextEntry>>,
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
            let Some(entry) = entry(absolute, relative, &metadata)? else {
                return Ok(());
            };
            self.pending.push(Some(entry));
            let result = self.directory(absolute, relative, &info, true);
            self.pending.pop();
            return result;
        }

        let Some(metadata) = metadata()? else {
            return Ok(());
        };
        let Some(entry) = entry(absolute, relative, &metadata)? else {
            return Ok(());
        };
        // Something is included: list the excluded directories above it first.
        for parent in &mut self.pending {
            if let Some(parent) = parent.take() {
                self.out.push(parent);
            }
        }
        self.out.push(entry);
        if is_dir {
            self.pending.push(None);
            let result = self.directory(absolute, relative, &info, false);
            self.pending.pop();
            result?;
        }
        Ok(())
    }
}

/// The entry for a path, or `None` for what is none of [`EntryKind`]'s kinds.
fn entry(
    absolute: &Path,
    relative: &[u8],
    metadata: &Metadata,
) -> Result<Option<ContextEntry>, ContextError> {
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(relative));
    let file_type = metadata.file_type();
    let kind = if file_type.is_dir() {
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
        return Ok(None);
    };
    let link_target = if kind == EntryKind::Symlink {
        Some(
            fs::read_link(absolute).map_err(|source| ContextError::Read {
                path: path.clone(),
                source,
            })?,
        )
    } else {
        None
    };
    Ok(Some(ContextEntry {
        path,
        kind,
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        size: metadata.size(),
        link_target,
        rdev: if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            metadata.rdev()
        } else {
            0
        },
        mtime: Timestamp {
            seconds: metadata.mtime(),
            nanoseconds: u32::try_from(metadata.mtime_nsec()).unwrap_or(0),
        },
        ctime: Timestamp {
            seconds: metadata.ctime(),
            nanoseconds: u32::try_from(metadata.ctime_nsec()).unwrap_or(0),
        },
        inode: metadata.ino(),
        device: metadata.dev(),
        nlink: u32::try_from(metadata.nlink()).unwrap_or(u32::MAX),
    }))
}

//! The image's root file system as the scanner sees it: a directory on the host (a merged
//! tree: an unpacked image, a `type=local` export) or the image's snapshot directories read
//! top down with overlay rules (whiteouts, opaque directories), without mounting them.
//!
//! Nothing here follows a link on the host. The walk never descends through a symlink; a
//! fixed path (`/etc/os-release`, often a link) is resolved inside the image with
//! [`crate::layer::tree::resolve`]; a file is opened with `O_NOFOLLOW | O_NONBLOCK` and
//! checked to be a regular file after opening, so a device, a fifo or a file swapped for a
//! link is never read. Every read is bounded by its caller's limit.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::layer::apply::{OVERLAY_OPAQUE_XATTR, is_overlay_whiteout};
use crate::layer::tree::{self, HostDir, Node, Stack, Tree};

/// How deep the walk goes below the root (a hostile image may nest without end).
const MAX_DEPTH: usize = 128;

/// A root file system to scan.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    /// One directory on the host holding the whole tree.
    Dir(&'a Path),
    /// Snapshot directories (overlay form), top first: the `lowerdir=` order.
    Layers(&'a [PathBuf]),
}

/// One entry met by [`Root::walk`].
#[derive(Debug)]
pub struct Entry<'a> {
    /// Its absolute path in the image (`/usr/bin/app`; lossy UTF-8).
    pub path: &'a str,
    /// Where it is on the host.
    pub host: &'a Path,
    /// Its metadata (`lstat`: a link is a link).
    pub meta: &'a fs::Metadata,
}

/// Why the tree cannot be walked at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the image's root directory {path}")]
pub struct WalkError {
    /// The host directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Why a file of the image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A link loop on the way.
    #[error(transparent)]
    Resolve(#[from] tree::ResolveError),
    /// Larger than the caller's bound.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// Reading it failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Tree for Root<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        match self {
            Self::Dir(dir) => HostDir(dir).node(path),
            Self::Layers(layers) => Stack::new(layers).node(path),
        }
    }
}

impl Root<'_> {
    /// The host path and metadata of what is at `path` (absolute, clean), no component
    /// followed.
    pub fn lookup(&self, path: &str) -> Option<(PathBuf, fs::Metadata)> {
        match self {
            Self::Dir(dir) => {
                let host = HostDir(dir).host_path(path);
                fs::symlink_metadata(&host).ok().map(|meta| (host, meta))
            }
            Self::Layers(layers) => Stack::new(layers).lookup(path),
        }
    }

    /// The content of the regular file `path` names (links resolved inside the image), at
    /// most `limit` bytes; `None` when there is none or it is not a regular file.
    ///
    /// # Errors
    /// A link loop, a file over `limit`, or a read failure.
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let resolved = tree::resolve(self, path, true)?;
        let Some((host, meta)) = self.lookup(&resolved) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let Some(file) = open_regular(&host)? else {
            return Ok(None);
        };
        read_bounded(file, limit).map(Some)
    }

    /// Visits every entry of the tree once, a directory's entries (in byte order) before
    /// anything below them.
    /// Directories reached through a link are not entered. Entries that vanish or cannot
    /// be listed on the way are skipped.
    ///
    /// # Errors
    /// The root itself cannot be listed.
    pub fn walk(&self, visit: &mut dyn FnMut(&Entry<'_>)) -> Result<(), WalkError> {
        let tops: Vec<PathBuf> = match self {
            Self::Dir(dir) => vec![dir.to_path_buf()],
            Self::Layers(layers) => layers.to_vec(),
        };
        let first = tops.first().cloned().unwrap_or_default();
        fs::read_dir(&first).map_err(|source| WalkError {
            path: first.clone(),
            source,
        })?;
        // Each pending directory: its image path and the host directories that make it up.
        let mut pending: Vec<(String, Vec<PathBuf>, usize)> = vec![(String::new(), tops, 0)];
        while let Some((path, hosts, depth)) = pending.pop() {
            let entries = merged_entries(&hosts);
            let mut children = Vec::new();
            for (name, merged) in entries {
                let child = format!("{path}/{}", String::from_utf8_lossy(name.as_bytes()));
                match merged {
                    Merged::Hidden => {}
                    Merged::Dir { hosts, meta, .. } => {
                        visit(&Entry {
                            path: &child,
                            host: &hosts[0],
                            meta: &meta,
                        });
                        if depth < MAX_DEPTH {
                            children.push((child, hosts, depth + 1));
                        }
                    }
                    Merged::Other { host, meta } => visit(&Entry {
                        path: &child,
                        host: &host,
                        meta: &meta,
                    }),
                }
            }
            // Popped from the end: push in reverse so names come out in order.
            pending.extend(children.into_iter().rev());
        }
        Ok(())
    }
}

/// What a name in a merged directory is.
enum Merged {
    /// A whiteout (or what a whiteout hides).
    Hidden,
    /// A directory: the host directories that make it up, top first.
    Dir {
        hosts: Vec<PathBuf>,
        meta: fs::Metadata,
        /// Whether lower layers can still add to it (no opaque marker, no file below).
        open: bool,
    },
    /// Anything else: the topmost one wins.
    Other { host: PathBuf, meta: fs::Metadata },
}

/// The entries of a directory made of `hosts` (top first), with overlay rules: a whiteout
/// hides the name below it, an opaque directory hides lower directories' contents, a file
/// hides a lower directory of the same name.
fn merged_entries(hosts: &[PathBuf]) -> BTreeMap<OsString, Merged> {
    let layered = hosts.len() > 1;
    let mut merged: BTreeMap<OsString, Merged> = BTreeMap::new();
    for host in hosts {
        let Ok(listing) = fs::read_dir(host) else {
            continue;
        };
        for entry in listing.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let name = entry.file_name();
            let whiteout = layered && is_overlay_whiteout(&meta);
            match merged.get_mut(&name) {
                None => {
                    let host = entry.path();
                    let value = if whiteout {
                        Merged::Hidden
                    } else if meta.is_dir() {
                        let open = layered && !is_opaque(&host);
                        Merged::Dir {
                            hosts: vec![host],
                            meta,
                            open,
                        }
                    } else {
                        Merged::Other { host, meta }
                    };
                    merged.insert(name, value);
                }
                Some(Merged::Dir { hosts, open, .. }) if *open => {
                    if meta.is_dir() && !whiteout {
                        let host = entry.path();
                        *open = !is_opaque(&host);
                        hosts.push(host);
                    } else {
                        *open = false;
                    }
                }
                Some(_) => {}
            }
        }
    }
    merged
}

fn is_opaque(dir: &Path) -> bool {
    xattr::get(dir, OVERLAY_OPAQUE_XATTR)
        .ok()
        .flatten()
        .is_some_and(|value| value == b"y")
}

/// Opens a host file for reading only if it is a regular file: `O_NOFOLLOW` (no link
/// swapped in), `O_NONBLOCK` (a fifo swapped in does not block the open), then `fstat`.
///
/// # Errors
/// The open or the `fstat` fails for a reason other than the file being a link.
pub fn open_regular(host: &Path) -> io::Result<Option<File>> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(host)
    {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Reads a whole file of at most `limit` bytes.
///
/// # Errors
/// [`ReadError::TooLarge`] past the limit, or the read fails.
pub fn read_bounded(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut data = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(data)
}

/// Reads up to `length` bytes at `offset` (fewer at the end of the file).
///
/// # Errors
/// The read fails.
pub fn read_at(file: &File, offset: u64, length: usize) -> io::Result<Vec<u8>> {
    let mut data = vec![0; length];
    let mut filled = 0;
    while filled < length {
        match file.read_at(&mut data[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    data.truncate(filled);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn walk_paths(root: &Root<'_>) -> Vec<String> {
        let mut seen = Vec::new();
        root.walk(&mut |entry| seen.push(entry.path.to_owned()))
            .unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn a_walk_lists_each_entry_once_in_order_and_never_enters_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("usr/lib/os-release"), "ID=test\n").unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        symlink("/", root.join("usr/host")).unwrap();
        let root = Root::Dir(&root);
        assert_eq!(
            walk_paths(&root),
            [
                "/etc",
                "/etc/os-release",
                "/usr",
                "/usr/host",
                "/usr/lib",
                "/usr/lib/os-release"
            ]
        );
        assert_eq!(
            root.read_file("/etc/os-release", 100).unwrap().unwrap(),
            b"ID=test\n"
        );
        assert!(matches!(
            root.read_file("/etc/os-release", 3),
            Err(ReadError::TooLarge { limit: 3 })
        ));
    }

    #[test]
    fn layers_merge_with_whiteouts_and_opaque_directories() {
        if !nix::unistd::geteuid().is_root() {
            // Whiteouts are 0/0 character devices: only root can make them.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        for path in ["app/old", "opaque/gone", "etc"] {
            fs::create_dir_all(lower.join(path)).unwrap();
        }
        fs::write(lower.join("app/old/file"), "x").unwrap();
        fs::write(lower.join("app/kept"), "x").unwrap();
        fs::write(lower.join("opaque/gone/file"), "x").unwrap();
        fs::write(lower.join("etc/deleted"), "x").unwrap();
        fs::create_dir_all(upper.join("app")).unwrap();
        fs::create_dir_all(upper.join("opaque")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("app/new"), "y").unwrap();
        fs::write(upper.join("opaque/fresh"), "y").unwrap();
        xattr::set(upper.join("opaque"), OVERLAY_OPAQUE_XATTR, b"y").unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/deleted"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let layers = [upper, lower];
        let root = Root::Layers(&layers);
        assert_eq!(
            walk_paths(&root),
            [
                "/app",
                "/app/kept",
                "/app/new",
                "/app/old",
                "/app/old/file",
                "/etc",
                "/opaque",
                "/opaque/fresh"
            ]
        );
    }
}

//! Paths inside an image's root file system, resolved the way the kernel resolves them in a
//! chroot of it: [`resolve`] follows symlinks one component at a time and never leaves the
//! root (`..` at the root stays there; an absolute link target starts again at the root).
//! Nothing here follows a link on the host: the root is a [`Tree`], asked what is at a path,
//! and every answer is an `lstat` or a listing.
//!
//! Trees: [`HostDir`] (one directory on the host: a mounted view of a stage, a source
//! directory), [`Stack`] (a state's snapshot directories, read top down with overlay
//! semantics, without mounting them), and the build context after `.dockerignore` (in the
//! executor), so a link never reaches a file the context excludes.
//!
//! BuildKit does the same with containerd's `fs.RootPath` (continuity): `COPY f /bin/f` on a
//! merged-`/usr` image writes `usr/bin/f`, never a directory in place of the `/bin` link.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::apply::{OVERLAY_OPAQUE_XATTR, is_overlay_whiteout};

/// How many symlinks one resolution may follow (filepath-securejoin's limit; the kernel's
/// own is 40 per lookup).
pub const MAX_SYMLINKS: usize = 255;

/// What is at a path of a tree, links not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A symbolic link, with its target as stored.
    Symlink(String),
    /// Anything else: a file, a device, a socket, a fifo.
    Other,
}

/// A root file system that can be asked what is at a path.
pub trait Tree {
    /// What is at `path` (absolute, clean: `/a/b`), without following a link at any
    /// component; `None` when nothing is.
    fn node(&self, path: &str) -> Option<Node>;
}

/// Why a path could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A loop of links, or a chain longer than [`MAX_SYMLINKS`].
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks {
        /// The path being resolved.
        path: String,
    },
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
}

/// Resolves `path` (absolute in the tree, or relative to its root) to the absolute path it
/// names inside the tree, following every symlink on the way, and the last component's own
/// link too when `follow_last`. Components that do not exist are kept as they are, so the
/// result is where a file would be created.
pub fn resolve(tree: &dyn Tree, path: &str, follow_last: bool) -> Result<String, ResolveError> {
    let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let last = pending.is_empty();
        resolved.push(part);
        if last && !follow_last {
            break;
        }
        let here = format!("/{}", resolved.join("/"));
        if let Some(Node::Symlink(target)) = tree.node(&here) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ResolveError::TooManyLinks {
                    path: path.to_owned(),
                });
            }
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(&target).rev().map(str::to_owned));
        }
    }
    Ok(format!("/{}", resolved.join("/")))
}

fn node_of(path: &Path, meta: &fs::Metadata) -> Node {
    if meta.is_dir() {
        Node::Dir
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(path).unwrap_or_default();
        Node::Symlink(String::from_utf8_lossy(target.as_os_str().as_bytes()).into_owned())
    } else {
        Node::Other
    }
}

/// One directory on the host taken as a root.
#[derive(Debug, Clone, Copy)]
pub struct HostDir<'a>(pub &'a Path);

impl HostDir<'_> {
    /// The host path of `path` (absolute in the tree); not resolved.
    pub fn host_path(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            self.0.to_path_buf()
        } else {
            self.0.join(rel)
        }
    }
}

impl Tree for HostDir<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        let host = self.host_path(path);
        fs::symlink_metadata(&host)
            .ok()
            .map(|meta| node_of(&host, &meta))
    }
}

/// A state's root file system as its snapshot directories, top first (overlay `lowerdir=`
/// order): a whiteout hides what is below it, an opaque directory hides the lower
/// directories' contents.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    lowers: &'a [PathBuf],
}

/// Why a small file of the image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// A link loop on the way.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Larger than the caller's bound.
    #[error("{path} in the image is larger than {limit} bytes")]
    TooLarge {
        /// The path in the image.
        path: String,
        /// The bound.
        limit: u64,
    },
    /// Reading it failed.
    #[error("reading {path} in the image: {source}")]
    Io {
        /// The path in the image.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl<'a> Stack<'a> {
    /// The stack of `lowers`, top first.
    pub fn new(lowers: &'a [PathBuf]) -> Self {
        Self { lowers }
    }

    /// The host path and metadata of what is at `path` (absolute, clean; no component is
    /// followed): the topmost layer that has it, unless a whiteout or an opaque directory
    /// above hides it.
    pub fn lookup(&self, path: &str) -> Option<(PathBuf, fs::Metadata)> {
        let parts: Vec<&str> = components(path).collect();
        for lower in self.lowers {
            if parts.is_empty() {
                return fs::symlink_metadata(lower).ok().map(|m| (lower.clone(), m));
            }
            let mut here = lower.clone();
            let mut opaque = false;
            for (index, part) in parts.iter().enumerate() {
                here.push(part);
                match fs::symlink_metadata(&here) {
                    Ok(meta) if is_overlay_whiteout(&meta) => return None,
                    Ok(meta) if index + 1 == parts.len() => return Some((here, meta)),
                    Ok(meta) if meta.is_dir() => {
                        if xattr::get(&here, OVERLAY_OPAQUE_XATTR)
                            .ok()
                            .flatten()
                            .is_some_and(|value| value == b"y")
                        {
                            opaque = true;
                        }
                    }
                    // A file or a link where a directory would be hides everything below.
                    Ok(_) => return None,
                    Err(_) => break,
                }
            }
            if opaque {
                return None;
            }
        }
        None
    }

    /// The content of the regular file `path` names in the image (links resolved inside
    /// the image), at most `limit` bytes; `None` when there is none or it is not a regular
    /// file (a device, a fifo: never read).
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ReadFileError> {
        let resolved = resolve(self, path, true)?;
        let Some((host, meta)) = self.lookup(&resolved) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let io = |source| ReadFileError::Io {
            path: path.to_owned(),
            source,
        };
        // O_NOFOLLOW: the file may not be swapped for a link between the lookup and here.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)
            .map_err(io)?;
        let mut data = Vec::new();
        file.take(limit + 1).read_to_end(&mut data).map_err(io)?;
        if data.len() as u64 > limit {
            return Err(ReadFileError::TooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        Ok(Some(data))
    }
}

impl Tree for Stack<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        self.lookup(path).map(|(host, meta)| node_of(&host, &meta))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A tree given as a table: a path ending in `/` is a directory, `-> target` a link.
    struct Table(BTreeMap<String, Node>);

    fn table(rows: &[&str]) -> Table {
        let mut nodes = BTreeMap::new();
        for row in rows {
            let (path, node) = match row.split_once(" -> ") {
                Some((path, target)) => (path.to_owned(), Node::Symlink(target.to_owned())),
                None if row.ends_with('/') => (row.trim_end_matches('/').to_owned(), Node::Dir),
                None => ((*row).to_owned(), Node::Other),
            };
            nodes.insert(path, node);
        }
        Table(nodes)
    }

    impl Tree for Table {
        fn node(&self, path: &str) -> Option<Node> {
            self.0.get(path).cloned()
        }
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let tree = table(&[
            "/usr/",
            "/usr/bin/",
            "/usr/bin/dash",
            "/bin -> usr/bin",
            "/usr/bin/sh -> dash",
            "/lib -> /usr/lib",
            "/usr/lib/",
            "/escape -> ../../../../etc",
            "/abs -> /etc/shadow",
            "/loop -> loop",
            "/a -> b",
            "/b -> a",
        ]);
        let cases = [
            ("/bin/entrypoint.sh", true, "/usr/bin/entrypoint.sh"),
            ("/bin", true, "/usr/bin"),
            ("/bin", false, "/bin"),
            ("/bin/", true, "/usr/bin"),
            ("/bin/sh", true, "/usr/bin/dash"),
            ("/bin/sh", false, "/usr/bin/sh"),
            ("/lib/custom/f", true, "/usr/lib/custom/f"),
            ("bin/./sh", true, "/usr/bin/dash"),
            ("/bin/../etc", true, "/usr/etc"),
            ("/../../bin", true, "/usr/bin"),
            ("/escape/passwd", true, "/etc/passwd"),
            ("/abs", true, "/etc/shadow"),
            ("/missing/x/y", true, "/missing/x/y"),
            ("/", true, "/"),
        ];
        for (path, follow, want) in cases {
            assert_eq!(
                resolve(&tree, path, follow).unwrap(),
                want,
                "{path} {follow}"
            );
        }
        for path in ["/loop", "/a", "/a/x"] {
            assert_eq!(
                resolve(&tree, path, true),
                Err(ResolveError::TooManyLinks {
                    path: path.to_owned()
                })
            );
        }
        // Not followed, a looping last component is just a name.
        assert_eq!(resolve(&tree, "/loop", false).unwrap(), "/loop");
    }

    #[test]
    fn a_stack_reads_top_down_and_never_follows_a_host_link() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        symlink("usr/bin", lower.join("bin")).unwrap();
        fs::write(lower.join("usr/bin/tool"), b"lower").unwrap();
        fs::write(upper.join("etc/group"), b"root:x:0:\n").unwrap();
        fs::write(dir.path().join("host-secret"), b"host").unwrap();
        // The image's passwd is a link to a host path: resolved inside the image, it names
        // the image's own (missing) file.
        symlink(dir.path().join("host-secret"), upper.join("etc/passwd")).unwrap();
        let lowers = [upper.clone(), lower.clone()];
        let stack = Stack::new(&lowers);
        assert_eq!(stack.read_file("/etc/passwd", 1024).unwrap(), None);
        assert_eq!(
            stack.read_file("/etc/group", 1024).unwrap().unwrap(),
            b"root:x:0:\n"
        );
        assert_eq!(
            stack.read_file("/bin/tool", 1024).unwrap().unwrap(),
            b"lower"
        );
        assert!(matches!(
            stack.read_file("/bin/tool", 3),
            Err(ReadFileError::TooLarge { limit: 3, .. })
        ));
        assert_eq!(stack.node("/bin"), Some(Node::Symlink("usr/bin".into())));
        assert_eq!(resolve(&stack, "/bin/new", true).unwrap(), "/usr/bin/new");
        // A fifo (like a device) is never read: reading it would block or never end.
        nix::unistd::mkfifo(&lower.join("etc/shadow"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(stack.read_file("/etc/shadow", 1024).unwrap(), None);
        let host = HostDir(dir.path());
        assert_eq!(
            host.node("/lower/bin"),
            Some(Node::Symlink("usr/bin".into()))
        );
        assert_eq!(host.node("/nothing"), None);
    }
}

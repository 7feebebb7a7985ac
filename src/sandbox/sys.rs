//! The syscall seam (youki's `Syscall` trait): every call that changes the mount table or
//! the file system while a root is set up goes through [`Sys`], so the mount plan is tested
//! with [`RecordingSys`] without root, and run with [`LinuxSys`] in the child.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// The kind of a path, as `lstat` says (symbolic links are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing there.
    Missing,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// The calls a root setup makes.
pub trait Sys {
    /// `mount(2)`.
    ///
    /// # Errors
    /// The errno.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// `umount2(2)`.
    ///
    /// # Errors
    /// The errno.
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// `pivot_root(2)`.
    ///
    /// # Errors
    /// The errno.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// `chdir(2)`.
    ///
    /// # Errors
    /// The errno.
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// `lstat(2)`, reduced to the kind of file.
    fn kind(&self, path: &Path) -> PathKind;
    /// `mkdir(2)` of one directory (mode 0755).
    ///
    /// # Errors
    /// The I/O error.
    fn mkdir(&self, path: &Path) -> std::io::Result<()>;
    /// Creates an empty regular file (mode 0644), for a bind mount point.
    ///
    /// # Errors
    /// The I/O error.
    fn create_file(&self, path: &Path) -> std::io::Result<()>;
    /// `symlink(2)`.
    ///
    /// # Errors
    /// The I/O error.
    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()>;
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSys;

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn kind(&self, path: &Path) -> PathKind {
        match std::fs::symlink_metadata(path) {
            Err(_) => PathKind::Missing,
            Ok(metadata) if metadata.file_type().is_symlink() => PathKind::Symlink,
            Ok(metadata) if metadata.is_dir() => PathKind::Directory,
            Ok(metadata) if metadata.is_file() => PathKind::File,
            Ok(_) => PathKind::Other,
        }
    }

    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o755).create(path)
    }

    fn create_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// File system type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Options string.
        data: Option<String>,
    },
    /// `umount2(target, flags)`.
    Umount {
        /// Target.
        target: PathBuf,
        /// Flags.
        flags: MntFlags,
    },
    /// `pivot_root(new_root, put_old)`.
    PivotRoot {
        /// New root.
        new_root: PathBuf,
        /// Where the old root goes.
        put_old: PathBuf,
    },
    /// `chdir(path)`.
    Chdir(PathBuf),
    /// `mkdir(path)`.
    Mkdir(PathBuf),
    /// File created.
    CreateFile(PathBuf),
    /// `symlink(target, link)`.
    Symlink {
        /// What the link points to.
        target: PathBuf,
        /// The link.
        link: PathBuf,
    },
}

/// Records every call and pretends it worked; paths "exist" when listed in
/// [`RecordingSys::files`]/[`RecordingSys::dirs`] or created through it.
#[derive(Debug, Default)]
pub struct RecordingSys {
    /// The calls, in order.
    pub calls: RefCell<Vec<Call>>,
    /// Paths that are regular files.
    pub files: RefCell<HashSet<PathBuf>>,
    /// Paths that are directories.
    pub dirs: RefCell<HashSet<PathBuf>>,
    /// Paths that are symbolic links.
    pub symlinks: RefCell<HashSet<PathBuf>>,
}

impl RecordingSys {
    /// The recorded calls, taken out.
    pub fn take(&self) -> Vec<Call> {
        self.calls.take()
    }
}

impl Sys for RecordingSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        });
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::Umount {
            target: target.to_path_buf(),
            flags,
        });
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::PivotRoot {
            new_root: new_root.to_path_buf(),
            put_old: put_old.to_path_buf(),
        });
        Ok(())
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Chdir(path.to_path_buf()));
        Ok(())
    }

    fn kind(&self, path: &Path) -> PathKind {
        if self.symlinks.borrow().contains(path) {
            PathKind::Symlink
        } else if self.dirs.borrow().contains(path) {
            PathKind::Directory
        } else if self.files.borrow().contains(path) {
            PathKind::File
        } else {
            PathKind::Missing
        }
    }

    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Mkdir(path.to_path_buf()));
        self.dirs.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn create_file(&self, path: &Path) -> std::io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::CreateFile(path.to_path_buf()));
        self.files.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        self.calls.borrow_mut().push(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        });
        self.symlinks.borrow_mut().insert(link.to_path_buf());
        Ok(())
    }
}

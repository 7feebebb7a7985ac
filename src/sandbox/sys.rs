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
    /// Mounts overlayfs on `target` through the new mount API (`fsopen`, one
    /// `fsconfig(lowerdir+)` per layer, top first, `fsmount`, `move_mount`; Linux 6.8+), for
    /// layer lists whose option string would not fit the one page `mount(2)` takes.
    /// `options` are further `key=value` settings.
    ///
    /// # Errors
    /// The errno of the first call that fails.
    fn mount_overlay_layers(
        &self,
        target: &Path,
        lower_dirs: &[PathBuf],
        upper_dir: &Path,
        work_dir: &Path,
        options: &[(&str, &str)],
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

    fn mount_overlay_layers(
        &self,
        target: &Path,
        lower_dirs: &[PathBuf],
        upper_dir: &Path,
        work_dir: &Path,
        options: &[(&str, &str)],
    ) -> nix::Result<()> {
        new_mount_api::mount_overlay(target, lower_dirs, upper_dir, work_dir, options)
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
    /// Overlayfs through the new mount API.
    OverlayLayers {
        /// Target.
        target: PathBuf,
        /// Lower directories, top first.
        lower_dirs: Vec<PathBuf>,
        /// Upper directory.
        upper_dir: PathBuf,
        /// Work directory.
        work_dir: PathBuf,
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

    fn mount_overlay_layers(
        &self,
        target: &Path,
        lower_dirs: &[PathBuf],
        upper_dir: &Path,
        work_dir: &Path,
        _options: &[(&str, &str)],
    ) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::OverlayLayers {
            target: target.to_path_buf(),
            lower_dirs: lower_dirs.to_vec(),
            upper_dir: upper_dir.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
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

/// The new mount API (Linux 5.2+; overlayfs's `lowerdir+` since 6.8), through raw system
/// calls: the libc crate has their numbers but no wrappers.
mod new_mount_api {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use nix::errno::Errno;

    // <linux/mount.h>
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    fn c_string(bytes: &[u8]) -> nix::Result<CString> {
        CString::new(bytes).map_err(|_| Errno::EINVAL)
    }

    fn set_string(context: &OwnedFd, key: &str, value: &[u8]) -> nix::Result<()> {
        let key = c_string(key.as_bytes())?;
        let value = c_string(value)?;
        // SAFETY: fsconfig(2) reads two NUL-terminated strings that outlive the call; the
        // descriptor is an open file system context.
        let result = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        Errno::result(result).map(drop)
    }

    pub(super) fn mount_overlay(
        target: &Path,
        lower_dirs: &[PathBuf],
        upper_dir: &Path,
        work_dir: &Path,
        options: &[(&str, &str)],
    ) -> nix::Result<()> {
        let fstype = c_string(b"overlay")?;
        // SAFETY: fsopen(2) reads one NUL-terminated string that outlives the call.
        let raw = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
        let raw = Errno::result(raw)?;
        // SAFETY: fsopen returned a new descriptor that nothing else owns.
        let context = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
        for lower in lower_dirs {
            // One layer per call, unescaped: no option string, no page limit.
            set_string(&context, "lowerdir+", lower.as_os_str().as_bytes())?;
        }
        set_string(&context, "upperdir", upper_dir.as_os_str().as_bytes())?;
        set_string(&context, "workdir", work_dir.as_os_str().as_bytes())?;
        for (key, value) in options {
            set_string(&context, key, value.as_bytes())?;
        }
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value pointers.
        let result = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        Errno::result(result)?;
        // SAFETY: fsmount(2) takes the context descriptor and flags, no pointers.
        let raw =
            unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
        let raw = Errno::result(raw)?;
        // SAFETY: fsmount returned a new descriptor that nothing else owns.
        let mount = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
        let empty = c_string(b"")?;
        let target = c_string(target.as_os_str().as_bytes())?;
        // SAFETY: move_mount(2) reads two NUL-terminated paths that outlive the call.
        let result = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mount.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(result).map(drop)
    }
}

//! [`LinuxSys`]: the real system calls, made by the re-executed child.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Forked, PathKind, Sys};

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
        nodev: bool,
    ) -> nix::Result<()> {
        new_mount_api::mount_overlay(target, lower_dirs, upper_dir, work_dir, options, nodev)
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

    fn read_link(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn write_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(content)?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn join_cgroup(&self, procs: &Path) -> std::io::Result<()> {
        // "0" is the writing process (cgroups(7)).
        std::fs::write(procs, "0")
    }

    fn join_session_keyring(&self) -> nix::Result<()> {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1; // <linux/keyctl.h>
        // SAFETY: a NULL name asks for a new anonymous keyring; no memory is passed.
        let result = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        };
        nix::errno::Errno::result(result).map(drop)
    }

    fn die_with_parent(&self) -> nix::Result<()> {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
        let result = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        nix::errno::Errno::result(result).map(drop)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn fork(&self) -> nix::Result<Forked> {
        // SAFETY: the seam's contract: only a single-threaded process forks (the re-executed
        // child started no threads), so the new process may run any code.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => Ok(Forked::Child),
            nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent { child }),
        }
    }

    fn take_terminal(&self) -> nix::Result<()> {
        nix::unistd::setsid()?;
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and no pointers.
        let result = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        nix::errno::Errno::result(result).map(drop)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn bring_loopback_up(&self) -> nix::Result<()> {
        crate::sandbox::namespaces::bring_loopback_up()
    }

    fn read_file(&self, path: &Path, limit: u64) -> Option<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .ok()?
            .take(limit + 1)
            .read_to_string(&mut text)
            .ok()?;
        (text.len() as u64 <= limit).then_some(text)
    }

    fn is_executable(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }

    fn personality(&self, persona: libc::c_ulong) -> nix::Result<()> {
        // SAFETY: personality(2) takes a flag word and no pointers.
        let result = unsafe { libc::personality(persona) };
        nix::errno::Errno::result(result).map(drop)
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit(2) reads the one struct it is given, which lives for the call.
        let result = unsafe { libc::setrlimit(resource as _, &limit) };
        nix::errno::Errno::result(result).map(drop)
    }

    fn install_seccomp(&self, program: &mut [libc::sock_filter]) -> nix::Result<()> {
        let length = u16::try_from(program.len()).map_err(|_| nix::errno::Errno::E2BIG)?;
        let prog = libc::sock_fprog {
            len: length,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prog points at `program`, which outlives the call; the kernel copies it.
        let result = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &raw const prog as libc::c_ulong,
                0,
                0,
            )
        };
        nix::errno::Errno::result(result).map(drop)
    }

    fn limit_capabilities(&self, mask: u64) -> nix::Result<()> {
        crate::sandbox::capabilities::limit_to(mask)
    }

    fn setgroups(&self, gids: &[u32]) -> nix::Result<()> {
        let gids = gids
            .iter()
            .map(|gid| nix::unistd::Gid::from_raw(*gid))
            .collect::<Vec<_>>();
        nix::unistd::setgroups(&gids)
    }

    fn setgid(&self, gid: u32) -> nix::Result<()> {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
    }

    fn setuid(&self, uid: u32) -> nix::Result<()> {
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
    }

    fn execve(&self, path: &CString, argv: &[CString], env: &[CString]) -> nix::errno::Errno {
        match nix::unistd::execve(path, argv, env) {
            Err(errno) => errno,
            Ok(never) => match never {},
        }
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
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

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
        nodev: bool,
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
        let attributes = if nodev { MOUNT_ATTR_NODEV } else { 0 };
        // SAFETY: fsmount(2) takes the context descriptor and flags, no pointers.
        let raw = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                context.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attributes,
            )
        };
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

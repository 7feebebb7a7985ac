//! The syscall seam (youki's `Syscall` trait): every call the child makes to set up a step
//! goes through [`Sys`]: the namespaces, the fork of the step's PID 1, the mounts of its
//! root and `pivot_root`, the host name, the working directory, the personality, the
//! seccomp filter, the capabilities, the groups and ids, and the `execve`. [`LinuxSys`]
//! makes the real calls in the child; [`RecordingSys`] records them and pretends they
//! worked, so the mount plan and the security-relevant order (filter, capabilities, groups,
//! gid, uid, exec) are tested without root.
//!
//! What it must not do: decide anything. The order and the arguments are `child.rs`'s and
//! `mounts.rs`'s; an implementation only carries a call out (or records it).

mod linux;
mod recording;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

pub use linux::LinuxSys;
pub use recording::RecordingSys;

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

/// Which side of a [`Sys::fork`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The calling process, with the new process's pid.
    Parent {
        /// The child's pid.
        child: nix::unistd::Pid,
    },
}

/// The calls a step's setup makes.
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
    /// `nodev` mounts it so that device nodes on it cannot be opened.
    fn mount_overlay_layers(
        &self,
        target: &Path,
        lower_dirs: &[PathBuf],
        upper_dir: &Path,
        work_dir: &Path,
        options: &[(&str, &str)],
        nodev: bool,
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

    /// `readlink(2)`.
    ///
    /// # Errors
    /// The I/O error.
    fn read_link(&self, path: &Path) -> std::io::Result<PathBuf>;
    /// Writes a new file with `content`, `mode`, owner and group (a secret on the step's
    /// tmpfs).
    ///
    /// # Errors
    /// The I/O error.
    fn write_file(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()>;

    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: this process dies when its parent does.
    ///
    /// # Errors
    /// The errno.
    fn die_with_parent(&self) -> nix::Result<()>;
    /// `unshare(2)`.
    ///
    /// # Errors
    /// The errno.
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// `fork(2)`. Only for a single-threaded process (the re-executed child is one).
    ///
    /// # Errors
    /// The errno.
    fn fork(&self) -> nix::Result<Forked>;
    /// `setsid(2)`, then `ioctl(0, TIOCSCTTY)`: a session of its own with stdin, a
    /// terminal, as its controlling terminal.
    ///
    /// # Errors
    /// The errno of the call that failed.
    fn take_terminal(&self) -> nix::Result<()>;
    /// Moves this process into the cgroup whose `cgroup.procs` file is `procs`.
    ///
    /// # Errors
    /// The I/O error.
    fn join_cgroup(&self, procs: &Path) -> std::io::Result<()>;
    /// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: a new, empty session keyring.
    ///
    /// # Errors
    /// The errno.
    fn join_session_keyring(&self) -> nix::Result<()>;
    /// `sethostname(2)`.
    ///
    /// # Errors
    /// The errno.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Brings `lo` up (`SIOCSIFFLAGS`).
    ///
    /// # Errors
    /// The errno.
    fn bring_loopback_up(&self) -> nix::Result<()>;
    /// Reads a text file of at most `limit` bytes (`None`: missing, unreadable, longer, or
    /// not UTF-8).
    fn read_file(&self, path: &Path, limit: u64) -> Option<String>;
    /// Whether `path` is a regular file with an execute bit (symbolic links followed).
    fn is_executable(&self, path: &Path) -> bool;
    /// `mkdir -p`.
    ///
    /// # Errors
    /// The I/O error.
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()>;
    /// `umask(2)`.
    fn umask(&self, mask: u32);
    /// `personality(2)`.
    ///
    /// # Errors
    /// The errno.
    fn personality(&self, persona: libc::c_ulong) -> nix::Result<()>;
    /// `setrlimit(2)` of resource `resource` (a `RLIMIT_*` number).
    ///
    /// # Errors
    /// The errno.
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()>;
    /// Installs a seccomp filter (`prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)`), kept across
    /// `execve` and by children. Allocates nothing.
    ///
    /// # Errors
    /// The errno.
    fn install_seccomp(&self, program: &mut [libc::sock_filter]) -> nix::Result<()>;
    /// Keeps only the capabilities in `mask` (bounding, effective, permitted and
    /// inheritable sets), see [`super::capabilities::limit_to`].
    ///
    /// # Errors
    /// The errno.
    fn limit_capabilities(&self, mask: u64) -> nix::Result<()>;
    /// `setgroups(2)`.
    ///
    /// # Errors
    /// The errno.
    fn setgroups(&self, gids: &[u32]) -> nix::Result<()>;
    /// `setgid(2)`.
    ///
    /// # Errors
    /// The errno.
    fn setgid(&self, gid: u32) -> nix::Result<()>;
    /// `setuid(2)`.
    ///
    /// # Errors
    /// The errno.
    fn setuid(&self, uid: u32) -> nix::Result<()>;
    /// `execve(2)`: returns only when it failed, with the errno.
    fn execve(&self, path: &CString, argv: &[CString], env: &[CString]) -> nix::errno::Errno;
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
    /// A secret written.
    WriteFile {
        /// Where.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
    },
    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
    DieWithParent,
    /// Moved into a cgroup (its `cgroup.procs`).
    JoinCgroup(PathBuf),
    /// A new session keyring.
    SessionKeyring,
    /// `unshare(flags)`.
    Unshare(CloneFlags),
    /// `fork()`.
    Fork,
    /// `setsid()` and `TIOCSCTTY`.
    TakeTerminal,
    /// `sethostname(name)`.
    Sethostname(String),
    /// `lo` brought up.
    LoopbackUp,
    /// `mkdir -p path`.
    CreateDirAll(PathBuf),
    /// `umask(mask)`.
    Umask(u32),
    /// `personality(persona)`.
    Personality(libc::c_ulong),
    /// `setrlimit(resource, soft, hard)`.
    Setrlimit(u32, u64, u64),
    /// A seccomp filter of this many instructions.
    Seccomp {
        /// Its length.
        instructions: usize,
    },
    /// Capabilities limited to `mask`.
    Capabilities(u64),
    /// `setgroups(gids)`.
    Setgroups(Vec<u32>),
    /// `setgid(gid)`.
    Setgid(u32),
    /// `setuid(uid)`.
    Setuid(u32),
    /// `execve(path, argv, env)`.
    Execve {
        /// The program.
        path: String,
        /// Its arguments.
        argv: Vec<String>,
        /// Its environment.
        env: Vec<String>,
    },
}

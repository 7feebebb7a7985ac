//! [`RecordingSys`]: records every call and pretends it worked, for tests without root.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Call, Forked, PathKind, Sys};

/// Records every call and pretends it worked; paths "exist" when listed in
/// [`RecordingSys::files`]/[`RecordingSys::dirs`] or created through it. Its `fork` answers
/// [`Forked::Child`] (the code after it is the step's), and its `execve` fails with
/// `ENOSYS` after recording the call (it cannot replace the process).
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
    /// What [`Sys::read_file`] gives for a path (missing: `None`).
    pub contents: RefCell<HashMap<PathBuf, String>>,
    /// What [`Sys::read_link`] gives for a path in [`RecordingSys::symlinks`].
    pub link_targets: RefCell<HashMap<PathBuf, PathBuf>>,
    /// Paths [`Sys::is_executable`] says yes to.
    pub executables: RefCell<HashSet<PathBuf>>,
    /// Paths another process makes (as a directory) just before our `mkdir` or
    /// `create_file` of them, which then fails with `EEXIST`.
    pub raced: RefCell<HashSet<PathBuf>>,
}

impl RecordingSys {
    /// The recorded calls, taken out.
    pub fn take(&self) -> Vec<Call> {
        self.calls.take()
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    fn lose_race(&self, path: &Path) -> std::io::Result<()> {
        if self.raced.borrow_mut().remove(path) {
            self.dirs.borrow_mut().insert(path.to_path_buf());
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        Ok(())
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
        self.record(Call::Mount {
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
        _nodev: bool,
    ) -> nix::Result<()> {
        self.record(Call::OverlayLayers {
            target: target.to_path_buf(),
            lower_dirs: lower_dirs.to_vec(),
            upper_dir: upper_dir.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
        });
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount {
            target: target.to_path_buf(),
            flags,
        });
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(Call::PivotRoot {
            new_root: new_root.to_path_buf(),
            put_old: put_old.to_path_buf(),
        });
        Ok(())
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Chdir(path.to_path_buf()));
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
        self.lose_race(path)?;
        self.record(Call::Mkdir(path.to_path_buf()));
        self.dirs.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn create_file(&self, path: &Path) -> std::io::Result<()> {
        self.lose_race(path)?;
        self.record(Call::CreateFile(path.to_path_buf()));
        self.files.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> std::io::Result<()> {
        self.record(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        });
        self.symlinks.borrow_mut().insert(link.to_path_buf());
        Ok(())
    }

    fn read_link(&self, path: &Path) -> std::io::Result<PathBuf> {
        self.link_targets
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    }

    fn write_file(
        &self,
        path: &Path,
        _content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()> {
        self.record(Call::WriteFile {
            path: path.to_path_buf(),
            mode,
            uid,
            gid,
        });
        self.files.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn join_cgroup(&self, procs: &Path) -> std::io::Result<()> {
        self.record(Call::JoinCgroup(procs.to_path_buf()));
        Ok(())
    }

    fn join_session_keyring(&self) -> nix::Result<()> {
        self.record(Call::SessionKeyring);
        Ok(())
    }

    fn die_with_parent(&self) -> nix::Result<()> {
        self.record(Call::DieWithParent);
        Ok(())
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags));
        Ok(())
    }

    fn fork(&self) -> nix::Result<Forked> {
        self.record(Call::Fork);
        Ok(Forked::Child)
    }

    fn take_terminal(&self) -> nix::Result<()> {
        self.record(Call::TakeTerminal);
        Ok(())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Sethostname(name.to_owned()));
        Ok(())
    }

    fn bring_loopback_up(&self) -> nix::Result<()> {
        self.record(Call::LoopbackUp);
        Ok(())
    }

    fn read_file(&self, path: &Path, limit: u64) -> Option<String> {
        self.contents
            .borrow()
            .get(path)
            .filter(|text| text.len() as u64 <= limit)
            .cloned()
    }

    fn is_executable(&self, path: &Path) -> bool {
        self.executables.borrow().contains(path)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.record(Call::CreateDirAll(path.to_path_buf()));
        Ok(())
    }

    fn umask(&self, mask: u32) {
        self.record(Call::Umask(mask));
    }

    fn personality(&self, persona: libc::c_ulong) -> nix::Result<()> {
        self.record(Call::Personality(persona));
        Ok(())
    }

    fn install_seccomp(&self, program: &mut [libc::sock_filter]) -> nix::Result<()> {
        self.record(Call::Seccomp {
            instructions: program.len(),
        });
        Ok(())
    }

    fn limit_capabilities(&self, mask: u64) -> nix::Result<()> {
        self.record(Call::Capabilities(mask));
        Ok(())
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()> {
        self.record(Call::Setrlimit(resource, soft, hard));
        Ok(())
    }

    fn setgroups(&self, gids: &[u32]) -> nix::Result<()> {
        self.record(Call::Setgroups(gids.to_vec()));
        Ok(())
    }

    fn setgid(&self, gid: u32) -> nix::Result<()> {
        self.record(Call::Setgid(gid));
        Ok(())
    }

    fn setuid(&self, uid: u32) -> nix::Result<()> {
        self.record(Call::Setuid(uid));
        Ok(())
    }

    fn execve(&self, path: &CString, argv: &[CString], env: &[CString]) -> nix::errno::Errno {
        let text = |value: &CString| value.to_string_lossy().into_owned();
        self.record(Call::Execve {
            path: text(path),
            argv: argv.iter().map(text).collect(),
            env: env.iter().map(text).collect(),
        });
        nix::errno::Errno::ENOSYS
    }
}

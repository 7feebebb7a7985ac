//! Code that runs in the re-executed child (`xbuild __run-step`), a fresh single-threaded
//! process: no async runtime, no other threads, so `fork` is safe here.
//!
//! The child reads a [`ChildSpec`] as JSON on fd 4 ([`SPEC_FD`]; stdin is the step's),
//! enters new namespaces, and forks the
//! step's PID 1, which sets up the root, drops privileges and execs the step. The child
//! waits for it and reports how it ended. Every failure becomes a [`Message::Failed`] on the
//! channel and a fixed exit code ([`SETUP_FAILED`]); nothing here panics on bad input.
//!
//! Re-executing `/proc/self/exe` is safe from CVE-2019-5736 (a container overwriting the
//! runtime binary through `/proc/<pid>/exe`): nothing of the step runs while a process of
//! ours is visible in its PID namespace; PID 1 is our code only until it execs the step.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::capabilities;
use super::channel::{CHILD_FD, Message, SPEC_FD};
use super::mounts::{self, RootPlan};
use super::namespaces;
use super::spec::{Network, Security, Stdio, StepSpec};
use super::sys::LinuxSys;
use super::user;

/// Exit code of the child and of PID 1 when the setup failed (Docker uses 125 too).
pub const SETUP_FAILED: i32 = 125;

/// `PATH` when the step's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the parent sends the child: the step plus what the parent prepared for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The step.
    pub step: StepSpec,
    /// Empty directory to mount the overlay on (becomes `/`).
    pub root: PathBuf,
    /// Lower directories to use (the step's, or one empty directory for an empty root).
    pub lower_dirs: Vec<PathBuf>,
    /// Private copy of the host's `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Private copy of the host's `/etc/hosts`.
    pub hosts: PathBuf,
    /// Run with personality `PER_LINUX32` (32-bit target on its 64-bit host family).
    pub linux32: bool,
    /// The parent's pid: if our parent is already another process, it died; stop.
    pub parent_pid: i32,
    /// With [`Stdio::Terminal`]: the host path of the pseudo-terminal slave (our stdin,
    /// stdout and stderr), bound on the step's `/dev/console`.
    #[serde(default)]
    pub console: Option<PathBuf>,
}

/// A failure in the child, sent to the parent as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// Which stage failed.
    pub stage: String,
    /// What failed.
    pub detail: String,
}

impl SetupError {
    /// A failure with a message.
    pub fn new(stage: &str, detail: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            detail: detail.into(),
        }
    }

    /// A failed system call.
    pub fn errno(stage: &str, detail: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::new(stage, format!("{}: {}", detail.into(), errno.desc()))
    }

    fn into_message(self) -> Message {
        Message::Failed {
            stage: self.stage,
            detail: self.detail,
        }
    }
}

/// Entry point of `xbuild __run-step`. Never returns.
///
/// # Errors
/// Never: the process exits with the step's status, 0 or [`SETUP_FAILED`].
pub fn main() -> anyhow::Result<()> {
    // The channel is our fd 3, set up by the parent; without it there is nobody to report
    // to (someone ran `xbuild __run-step` by hand).
    // SAFETY: F_GETFD on a descriptor number only reads its flags.
    if unsafe { libc::fcntl(CHILD_FD, libc::F_GETFD) } == -1
        // SAFETY: as above.
        || unsafe { libc::fcntl(SPEC_FD, libc::F_GETFD) } == -1
    {
        return Err(crate::error::Failure::bad_input(
            "__run-step is internal to the sandbox and cannot be run by hand",
        )
        .into());
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this fresh process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(CHILD_FD) };
    // The step must not inherit the channel: close it on exec.
    // SAFETY: F_SETFD on a descriptor we own sets its flags and touches no memory.
    unsafe { libc::fcntl(CHILD_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let code = match supervise(&channel) {
        Ok(code) => code,
        Err(error) => {
            let _ = error.into_message().send(std::fs::File::from(channel));
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

/// Reads the spec, unshares, forks PID 1 and waits for it.
fn supervise(channel: &OwnedFd) -> Result<i32, SetupError> {
    // Die with the parent: a build killed half-way must not leave a step running.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut text = Vec::new();
    // SAFETY: the parent put the spec pipe on fd 4 (checked open in `main`); nothing else in
    // this fresh process owns it.
    let mut spec_pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(SPEC_FD) });
    spec_pipe
        .read_to_end(&mut text)
        .map_err(|error| SetupError::new("spec", format!("cannot read the step spec: {error}")))?;
    drop(spec_pipe);
    let spec: ChildSpec = serde_json::from_slice(&text)
        .map_err(|error| SetupError::new("spec", format!("bad step spec: {error}")))?;
    if nix::unistd::getppid().as_raw() != spec.parent_pid {
        return Err(SetupError::new(
            "spec",
            "the parent exited before the step started",
        ));
    }
    // stdin is what the parent chose: /dev/null for a captured step, ours or a terminal for
    // an interactive one.

    nix::sched::unshare(namespaces::unshare_flags(spec.step.network))
        .map_err(|errno| SetupError::errno("unshare", "cannot create namespaces", errno))?;

    // SAFETY: this process is single-threaded (a fresh exec of our binary that started no
    // threads), so the child may run any code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => Err(SetupError::errno("fork", "cannot fork the step", errno)),
        Ok(nix::unistd::ForkResult::Child) => {
            let error = match step_main(&spec, channel) {
                Ok(never) => match never {},
                Err(error) => error,
            };
            if let Ok(out) = channel.try_clone() {
                let _ = error.into_message().send(std::fs::File::from(out));
            }
            // SAFETY: _exit ends this forked process without running the parent's atexit
            // handlers or flushing buffers that belong to the parent.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let message = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                        break Message::Exited { code };
                    }
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => {
                        break Message::Signaled {
                            signal: signal as i32,
                        };
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(errno) => {
                        return Err(SetupError::errno("wait", "cannot wait for the step", errno));
                    }
                }
            };
            let out = channel
                .try_clone()
                .map_err(|error| SetupError::new("wait", format!("channel: {error}")))?;
            message
                .send(std::fs::File::from(out))
                .map_err(|error| SetupError::new("wait", format!("channel: {error}")))?;
            Ok(0)
        }
    }
}

/// PID 1 of the step: root, user, environment, exec. Returns only on failure.
fn step_main(spec: &ChildSpec, channel: &OwnedFd) -> Result<std::convert::Infallible, SetupError> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let step = &spec.step;
    if step.stdio == Stdio::Terminal {
        // A session of its own with the terminal as its controlling tty: job control, ^C
        // and `/dev/tty` work in the step as in `docker run -t`.
        nix::unistd::setsid().map_err(|errno| SetupError::errno("terminal", "setsid", errno))?;
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and no pointers.
        let result = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        nix::errno::Errno::result(result).map_err(|errno| {
            SetupError::errno(
                "terminal",
                "cannot make the terminal the controlling tty",
                errno,
            )
        })?;
    }
    let sys = LinuxSys;
    let plan = RootPlan {
        root: &spec.root,
        lower_dirs: &spec.lower_dirs,
        upper_dir: &step.upper_dir,
        work_dir: &step.work_dir,
        resolv_conf: &spec.resolv_conf,
        hosts: &spec.hosts,
        console: spec.console.as_deref(),
        binds: &step.mounts,
    };
    let placeholders = mounts::setup_root(&sys, &plan)?;
    let out = channel
        .try_clone()
        .map_err(|error| SetupError::new("mount", format!("channel: {error}")))?;
    Message::Placeholders(placeholders)
        .send(std::fs::File::from(out))
        .map_err(|error| SetupError::new("mount", format!("channel: {error}")))?;
    mounts::pivot(&sys, &spec.root)?;

    nix::unistd::sethostname(&step.hostname).map_err(|errno| {
        SetupError::errno(
            "hostname",
            format!("cannot set host name {:?}", step.hostname),
            errno,
        )
    })?;
    if step.network == Network::None {
        namespaces::bring_loopback_up()
            .map_err(|errno| SetupError::errno("network", "cannot bring lo up", errno))?;
    }

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = user::resolve(step.user.as_deref(), &passwd, &group)
        .map_err(|error| SetupError::new("user", error.to_string()))?;

    let cwd = if step.cwd.is_empty() {
        "/"
    } else {
        step.cwd.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(SetupError::new(
            "workdir",
            format!("{cwd} is not an absolute path"),
        ));
    }
    std::fs::create_dir_all(cwd)
        .map_err(|error| SetupError::new("workdir", format!("cannot create {cwd}: {error}")))?;
    nix::unistd::chdir(cwd)
        .map_err(|errno| SetupError::errno("workdir", format!("cannot enter {cwd}"), errno))?;

    let mut env = step.env.clone();
    let has =
        |env: &[String], key: &str| env.iter().any(|pair| pair.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    let argv = step.command.argv();
    let Some(program) = argv.first() else {
        return Err(SetupError::new("exec", "empty command"));
    };
    let path_value = env
        .iter()
        .rev()
        .find_map(|pair| pair.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let executable = find_executable(program, path_value).ok_or_else(|| {
        SetupError::new(
            "exec",
            format!("exec: \"{program}\": executable file not found in $PATH"),
        )
    })?;
    let to_c = |text: &str| {
        CString::new(text)
            .map_err(|_| SetupError::new("exec", format!("{text:?} contains a NUL byte")))
    };
    let c_argv = argv
        .iter()
        .map(|arg| to_c(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|pair| to_c(pair))
        .collect::<Result<Vec<_>, _>>()?;
    let c_path = CString::new(executable.as_os_str().as_bytes())
        .map_err(|_| SetupError::new("exec", "path contains a NUL byte"))?;

    // A fixed umask: the modes of the files a step creates end up in the layer, and must not
    // depend on the umask of whoever ran xbuild (Docker's is 022 too).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if spec.linux32 {
        // PER_LINUX32: `uname -m` reports i686/armv7l, as on a 32-bit kernel (runc sets it
        // for 386 on amd64 and arm on arm64 too).
        const PER_LINUX32: libc::c_ulong = 0x0008; // <linux/personality.h>
        // SAFETY: personality(2) takes a flag word and no pointers.
        let result = unsafe { libc::personality(PER_LINUX32) };
        if result == -1 {
            return Err(SetupError::errno(
                "personality",
                "cannot set PER_LINUX32",
                nix::errno::Errno::last(),
            ));
        }
    }
    if std::env::var_os(crate::env::XBUILD_STEP_FSYNC).is_none_or(|value| value != "1") {
        // Before capabilities go: installing a filter without no_new_privs needs
        // CAP_SYS_ADMIN. Without it (an unusual host) the step simply syncs for real.
        let _ = super::nosync::install();
    }
    if step.security == Security::Sandbox {
        capabilities::limit_to(capabilities::default_mask()).map_err(|errno| {
            SetupError::errno("capabilities", "cannot drop capabilities", errno)
        })?;
    }
    let groups = user
        .groups
        .iter()
        .map(|gid| nix::unistd::Gid::from_raw(*gid))
        .collect::<Vec<_>>();
    nix::unistd::setgroups(&groups)
        .map_err(|errno| SetupError::errno("user", "setgroups", errno))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid))
        .map_err(|errno| SetupError::errno("user", format!("setgid {}", user.gid), errno))?;
    // Leaving uid 0 clears the permitted and effective capabilities (capabilities(7),
    // "Effect of user ID changes on capabilities").
    nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid))
        .map_err(|errno| SetupError::errno("user", format!("setuid {}", user.uid), errno))?;

    let errno = match nix::unistd::execve(&c_path, &c_argv, &c_env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let advice = if errno == nix::errno::Errno::ENOEXEC {
        " (no binfmt_misc handler for this executable's architecture?)"
    } else {
        ""
    };
    Err(SetupError::errno(
        "exec",
        format!("cannot execute {}{advice}", executable.display()),
        errno,
    ))
}

/// `execvp`'s search, but in the step's `PATH` (glibc's `execvpe` would use ours).
fn find_executable(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_in_the_steps_path() {
        assert_eq!(find_executable("./x", "/bin"), Some(PathBuf::from("./x")));
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_executable("no-such-program-xyz", "/bin:/usr/bin"),
            None
        );
    }
}

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
use super::error::SetupError;
use super::mounts::{self, RootPlan};
use super::namespaces;
use super::spec::{Network, Security, Stdio, StepSpec};
use super::sys::{Forked, LinuxSys, Sys};
use super::user;

/// Exit code of the child and of PID 1 when the setup failed (Docker uses 125 too).
pub const SETUP_FAILED: i32 = 125;

/// `PATH` when the step's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most of the image's `/etc/passwd` and `/etc/group` read (a larger one counts as
/// missing): the image may make them links to `/dev/zero`.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// `PER_LINUX32` (<linux/personality.h>).
const PER_LINUX32: libc::c_ulong = 0x0008;

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
    /// Keep the real `fsync` calls (`XBUILD_STEP_FSYNC=1`): no `nosync` filter.
    #[serde(default)]
    pub keep_fsync: bool,
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
    let code = match supervise(&LinuxSys, &channel) {
        Ok(code) => code,
        Err(error) => {
            let _ = Message::from(error).send(std::fs::File::from(channel));
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

/// Sends `message` on the channel.
fn send(channel: &OwnedFd, stage: &str, message: Message) -> Result<(), SetupError> {
    let out = channel
        .try_clone()
        .map_err(|error| SetupError::new(stage, format!("channel: {error}")))?;
    message
        .send(std::fs::File::from(out))
        .map_err(|error| SetupError::new(stage, format!("channel: {error}")))
}

/// Reads the spec, unshares, forks PID 1 and waits for it.
fn supervise(sys: &dyn Sys, channel: &OwnedFd) -> Result<i32, SetupError> {
    // Die with the parent: a build killed half-way must not leave a step running.
    sys.die_with_parent()
        .map_err(|errno| SetupError::errno("spec", "PR_SET_PDEATHSIG", errno))?;
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
    match start(sys, &spec)? {
        Forked::Child => {
            let error = step_main(sys, &spec, &mut |message| send(channel, "mount", message));
            let _ = send(channel, &error.stage, Message::from(error.clone()));
            // SAFETY: _exit ends this forked process without running the parent's atexit
            // handlers or flushing buffers that belong to the parent.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        Forked::Parent { child } => {
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
            send(channel, "wait", message)?;
            Ok(0)
        }
    }
}

/// Enters the step's new namespaces and forks its PID 1 (`unshare(CLONE_NEWPID)` only
/// applies to children).
fn start(sys: &dyn Sys, spec: &ChildSpec) -> Result<Forked, SetupError> {
    sys.unshare(namespaces::unshare_flags(spec.step.network))
        .map_err(|errno| SetupError::errno("unshare", "cannot create namespaces", errno))?;
    sys.fork()
        .map_err(|errno| SetupError::errno("fork", "cannot fork the step", errno))
}

/// PID 1 of the step: root, user, environment, exec. Returns only on failure, with it.
/// `report` sends a message to the parent (the mount points the root needed).
fn step_main(
    sys: &dyn Sys,
    spec: &ChildSpec,
    report: &mut dyn FnMut(Message) -> Result<(), SetupError>,
) -> SetupError {
    match prepare_and_exec(sys, spec, report) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

fn prepare_and_exec(
    sys: &dyn Sys,
    spec: &ChildSpec,
    report: &mut dyn FnMut(Message) -> Result<(), SetupError>,
) -> Result<std::convert::Infallible, SetupError> {
    sys.die_with_parent()
        .map_err(|errno| SetupError::errno("spec", "PR_SET_PDEATHSIG", errno))?;
    let step = &spec.step;
    if step.stdio == Stdio::Terminal {
        // A session of its own with the terminal as its controlling tty: job control, ^C
        // and `/dev/tty` work in the step as in `docker run -t`.
        sys.take_terminal().map_err(|errno| {
            SetupError::errno(
                "terminal",
                "cannot make the terminal the controlling tty",
                errno,
            )
        })?;
    }
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
    let placeholders = mounts::setup_root(sys, &plan)?;
    report(Message::Placeholders(placeholders))?;
    mounts::pivot(sys, &spec.root)?;

    sys.sethostname(&step.hostname).map_err(|errno| {
        SetupError::errno(
            "hostname",
            format!("cannot set host name {:?}", step.hostname),
            errno,
        )
    })?;
    if step.network == Network::None {
        sys.bring_loopback_up()
            .map_err(|errno| SetupError::errno("network", "cannot bring lo up", errno))?;
    }

    let passwd = sys
        .read_file(Path::new("/etc/passwd"), MAX_ACCOUNT_FILE)
        .unwrap_or_default();
    let group = sys
        .read_file(Path::new("/etc/group"), MAX_ACCOUNT_FILE)
        .unwrap_or_default();
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
    sys.create_dir_all(Path::new(cwd))
        .map_err(|error| SetupError::new("workdir", format!("cannot create {cwd}: {error}")))?;
    sys.chdir(Path::new(cwd))
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
    let executable = find_executable(sys, program, path_value).ok_or_else(|| {
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
    sys.umask(0o022);
    if spec.linux32 {
        // PER_LINUX32: `uname -m` reports i686/armv7l, as on a 32-bit kernel (runc sets it
        // for 386 on amd64 and arm on arm64 too).
        sys.personality(PER_LINUX32)
            .map_err(|errno| SetupError::errno("personality", "cannot set PER_LINUX32", errno))?;
    }
    if !spec.keep_fsync {
        // Before capabilities go: installing a filter without no_new_privs needs
        // CAP_SYS_ADMIN. Without it (an unusual host) the step simply syncs for real.
        let _ = sys.install_seccomp(&mut super::nosync::program());
    }
    if step.security == Security::Sandbox {
        sys.limit_capabilities(capabilities::default_mask())
            .map_err(|errno| {
                SetupError::errno("capabilities", "cannot drop capabilities", errno)
            })?;
    }
    sys.setgroups(&user.groups)
        .map_err(|errno| SetupError::errno("user", "setgroups", errno))?;
    sys.setgid(user.gid)
        .map_err(|errno| SetupError::errno("user", format!("setgid {}", user.gid), errno))?;
    // Leaving uid 0 clears the permitted and effective capabilities (capabilities(7),
    // "Effect of user ID changes on capabilities").
    sys.setuid(user.uid)
        .map_err(|errno| SetupError::errno("user", format!("setuid {}", user.uid), errno))?;

    let errno = sys.execve(&c_path, &c_argv, &c_env);
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
fn find_executable(sys: &dyn Sys, program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| sys.is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::spec::StepCommand;
    use crate::sandbox::sys::{Call, RecordingSys};
    use nix::sched::CloneFlags;

    fn child_spec(step: StepSpec) -> ChildSpec {
        ChildSpec {
            step,
            root: PathBuf::from("/s/root"),
            lower_dirs: vec![PathBuf::from("/l")],
            resolv_conf: PathBuf::from("/s/resolv.conf"),
            hosts: PathBuf::from("/s/hosts"),
            linux32: false,
            parent_pid: 1,
            console: None,
            keep_fsync: false,
        }
    }

    fn recording_image() -> RecordingSys {
        let sys = RecordingSys::default();
        sys.contents.borrow_mut().insert(
            PathBuf::from("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_owned(),
        );
        sys.contents.borrow_mut().insert(
            PathBuf::from("/etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1000:\n".to_owned(),
        );
        sys.executables
            .borrow_mut()
            .insert(PathBuf::from("/bin/sh"));
        sys
    }

    /// Runs the child's sequence against `sys`: namespaces and fork, then PID 1 up to its
    /// (recorded, failing) `execve`. Returns the calls that are not part of the mount plan.
    fn sequence(sys: &RecordingSys, spec: &ChildSpec) -> (Vec<Call>, Vec<Call>, SetupError) {
        assert_eq!(start(sys, spec).unwrap(), Forked::Child);
        let mut reports = Vec::new();
        let error = step_main(sys, spec, &mut |message| {
            reports.push(message);
            Ok(())
        });
        assert!(
            matches!(reports.as_slice(), [Message::Placeholders(_)]),
            "{reports:?}"
        );
        let calls = sys.take();
        let process = calls
            .iter()
            .filter(|call| {
                !matches!(
                    call,
                    Call::Mount { .. }
                        | Call::OverlayLayers { .. }
                        | Call::Mkdir(_)
                        | Call::CreateFile(_)
                        | Call::Symlink { .. }
                )
            })
            .cloned()
            .collect();
        (calls, process, error)
    }

    #[test]
    fn the_whole_sequence_goes_through_the_seam_in_order() {
        let sys = recording_image();
        let mut step = StepSpec::new(
            vec![PathBuf::from("/l")],
            PathBuf::from("/s/upper"),
            PathBuf::from("/s/work"),
            crate::platform::host(),
            StepCommand::sh("make"),
        );
        step.user = Some("app".to_owned());
        step.cwd = "/src".to_owned();
        step.hostname = "step".to_owned();
        step.network = Network::None;
        step.stdio = Stdio::Terminal;
        step.env = vec!["A=b".to_owned()];
        let mut spec = child_spec(step);
        spec.linux32 = true;
        let (calls, process, error) = sequence(&sys, &spec);
        // The recording execve cannot replace the process: the step "fails" there.
        assert_eq!(error.stage, "exec", "{error:?}");
        let seccomp = Call::Seccomp {
            instructions: super::super::nosync::program().len(),
        };
        assert_eq!(
            process,
            [
                Call::Unshare(
                    CloneFlags::CLONE_NEWNS
                        | CloneFlags::CLONE_NEWPID
                        | CloneFlags::CLONE_NEWIPC
                        | CloneFlags::CLONE_NEWUTS
                        | CloneFlags::CLONE_NEWNET
                ),
                Call::Fork,
                Call::DieWithParent,
                Call::TakeTerminal,
                // pivot_root
                Call::Chdir(PathBuf::from("/s/root")),
                Call::PivotRoot {
                    new_root: PathBuf::from("."),
                    put_old: PathBuf::from(".")
                },
                Call::Umount {
                    target: PathBuf::from("."),
                    flags: nix::mount::MntFlags::MNT_DETACH
                },
                Call::Chdir(PathBuf::from("/")),
                Call::Sethostname("step".to_owned()),
                Call::LoopbackUp,
                Call::CreateDirAll(PathBuf::from("/src")),
                Call::Chdir(PathBuf::from("/src")),
                Call::Umask(0o022),
                Call::Personality(PER_LINUX32),
                // The filter while CAP_SYS_ADMIN is still there, then capabilities, then
                // groups and gid while CAP_SETGID is, the uid last, then exec.
                seccomp,
                Call::Capabilities(capabilities::default_mask()),
                Call::Setgroups(vec![50]),
                Call::Setgid(1000),
                Call::Setuid(1000),
                Call::Execve {
                    path: "/bin/sh".to_owned(),
                    argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), "make".to_owned()],
                    env: vec![
                        "A=b".to_owned(),
                        format!("PATH={DEFAULT_PATH}"),
                        "HOME=/home/app".to_owned()
                    ],
                },
            ]
        );
        // Every mount of the root comes after PID 1 exists and before pivot_root.
        let position = |wanted: &dyn Fn(&Call) -> bool| calls.iter().position(wanted);
        let first_mount = position(&|call| matches!(call, Call::Mount { .. })).unwrap();
        let last_mount = calls
            .iter()
            .rposition(|call| matches!(call, Call::Mount { .. }))
            .unwrap();
        let pivot = position(&|call| matches!(call, Call::PivotRoot { .. })).unwrap();
        let pid1 = position(&|call| *call == Call::TakeTerminal).unwrap();
        assert!(pid1 < first_mount && last_mount < pivot, "{calls:#?}");
    }

    #[test]
    fn what_a_plain_step_leaves_out() {
        // Root, host network, no terminal, native, real fsync, --security=insecure: no
        // terminal, no lo, no personality, no filter, every capability kept.
        let sys = recording_image();
        let mut step = StepSpec::new(
            vec![PathBuf::from("/l")],
            PathBuf::from("/s/upper"),
            PathBuf::from("/s/work"),
            crate::platform::host(),
            StepCommand::Exec(vec!["/bin/sh".to_owned()]),
        );
        step.security = Security::Insecure;
        let mut spec = child_spec(step);
        spec.keep_fsync = true;
        let (_, process, error) = sequence(&sys, &spec);
        assert_eq!(error.stage, "exec");
        let names = process
            .iter()
            .map(|call| {
                format!("{call:?}")
                    .split(['(', ' '])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect::<Vec<_>>();
        assert_eq!(
            names,
            [
                "Unshare",
                "Fork",
                "DieWithParent",
                "Chdir",
                "PivotRoot",
                "Umount",
                "Chdir",
                "Sethostname",
                "CreateDirAll",
                "Chdir",
                "Umask",
                "Setgroups",
                "Setgid",
                "Setuid",
                "Execve"
            ]
        );
    }

    #[test]
    fn a_failure_stops_the_sequence_before_privileges_change() {
        let sys = recording_image();
        let mut step = StepSpec::new(
            vec![PathBuf::from("/l")],
            PathBuf::from("/s/upper"),
            PathBuf::from("/s/work"),
            crate::platform::host(),
            StepCommand::sh("true"),
        );
        step.user = Some("nosuchuser".to_owned());
        let (_, process, error) = sequence(&sys, &child_spec(step));
        assert_eq!(error.stage, "user");
        assert!(
            !process.iter().any(|call| matches!(
                call,
                Call::Capabilities(_) | Call::Setuid(_) | Call::Execve { .. }
            )),
            "{process:?}"
        );
    }

    #[test]
    fn executables_are_found_in_the_steps_path() {
        let sys = LinuxSys;
        assert_eq!(
            find_executable(&sys, "./x", "/bin"),
            Some(PathBuf::from("./x"))
        );
        assert_eq!(
            find_executable(&sys, "sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_executable(&sys, "no-such-program-xyz", "/bin:/usr/bin"),
            None
        );
    }
}

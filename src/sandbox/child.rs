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
use super::cgroup::StepCgroup;
use super::channel::{CHILD_FD, Message, SPEC_FD};
use super::error::SetupError;
use super::mounts::{self, RootPlan};
use super::namespaces;
use super::network::{self, UserNetwork};
use super::spec::{Network, Security, Stdio, StepSpec};
use super::sys::{Forked, LinuxSys, Sys};
use super::{nosync, seccomp, user};

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
    /// An empty directory outside the root, for the secrets' tmpfs.
    #[serde(default)]
    pub secrets_dir: PathBuf,
}

/// What PID 1 tells the re-executed child, and waits for.
trait Link {
    /// Sends a message to the parent.
    fn report(&mut self, message: Message) -> Result<(), SetupError>;
    /// PID 1 is in its own network namespace: the child may connect it.
    fn network_unshared(&mut self) -> Result<(), SetupError>;
    /// Waits until the child says the network is configured.
    fn wait_for_network(&mut self) -> Result<(), SetupError>;
}

/// Two pipes between the child and PID 1 for the default network: "unshared" and "go".
struct Handshake {
    unshared: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
}

impl Handshake {
    fn new() -> Result<Self, SetupError> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|errno| SetupError::errno("network", "creating a pipe", errno))
        };
        Ok(Self {
            unshared: pipe()?,
            go: pipe()?,
        })
    }
}

/// PID 1's side of the channel and the handshake.
struct Pid1Link<'a> {
    channel: &'a OwnedFd,
    /// Write "unshared", read "go".
    network: Option<(OwnedFd, OwnedFd)>,
}

impl Link for Pid1Link<'_> {
    fn report(&mut self, message: Message) -> Result<(), SetupError> {
        send(self.channel, "mount", message)
    }

    fn network_unshared(&mut self) -> Result<(), SetupError> {
        if let Some((unshared, _)) = &self.network {
            nix::unistd::write(unshared, b"u")
                .map_err(|errno| SetupError::errno("network", "handshake", errno))?;
        }
        Ok(())
    }

    fn wait_for_network(&mut self) -> Result<(), SetupError> {
        let Some((_, go)) = &self.network else {
            return Ok(());
        };
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(go, &mut byte) {
                Ok(1) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                // The child closed it without a word: it reported why itself.
                _ => return Err(SetupError::new("network", "the network was not set up")),
            }
        }
    }
}

/// Entry point of `xbuild __run-step`. Never returns. `at_exit` runs just before the
/// process exits with the step's status (the caller's bookkeeping, e.g. the peak RSS
/// record: `std::process::exit` skips what the caller would do after a return).
///
/// # Errors
/// Only when run without the sandbox's descriptors (`xbuild __run-step` by hand): a bad-input
/// error. Otherwise it never returns: the process exits with the step's status, 0 or
/// [`SETUP_FAILED`].
pub fn main(at_exit: impl FnOnce()) -> anyhow::Result<()> {
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
    at_exit();
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
    let cgroup = match spec.step.pids_limit {
        Some(limit) => {
            StepCgroup::create(limit, std::process::id(), spec.step.pids_limit_required)?
        }
        None => None,
    };
    let handshake = if namespaces::pid1_unshares_network(spec.step.network) {
        let program = network::find().ok_or_else(|| {
            SetupError::new(
                "network",
                format!(
                    "{} is not installed (apt-get install slirp4netns), or use --network=none",
                    network::PROGRAM
                ),
            )
        })?;
        let log = spec.root.with_file_name("slirp4netns.log");
        // Forked now, outside the namespaces the step is about to get.
        Some((Handshake::new()?, UserNetwork::prepare(&program, &log)?))
    } else {
        None
    };
    let forked = match start(sys, &spec) {
        Ok(forked) => forked,
        Err(error) => {
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            return Err(error);
        }
    };
    match forked {
        Forked::Child => {
            let mut link = Pid1Link {
                channel,
                network: handshake.map(|(handshake, _)| (handshake.unshared.1, handshake.go.0)),
            };
            let procs = cgroup.as_ref().map(StepCgroup::procs);
            let error = step_main(sys, &spec, procs.as_deref(), &mut link);
            let _ = send(channel, &error.stage, Message::from(error.clone()));
            // SAFETY: _exit ends this forked process without running the parent's atexit
            // handlers or flushing buffers that belong to the parent.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        Forked::Parent { child } => {
            let mut user_network = None;
            let mut network_error = None;
            if let Some((handshake, mut network)) = handshake {
                let Handshake { unshared, go } = handshake;
                drop((unshared.1, go.0));
                let mut byte = [0u8; 1];
                // End of file instead: PID 1 failed first and reports it itself.
                if matches!(nix::unistd::read(&unshared.0, &mut byte), Ok(1)) {
                    match network.start(child.as_raw()) {
                        Ok(()) => {
                            let _ = nix::unistd::write(&go.1, b"g");
                        }
                        Err(error) => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            network_error = Some(error);
                        }
                    }
                }
                user_network = Some(network);
            }
            let waited = wait_for(child);
            if let Some(running) = user_network {
                running.stop();
            }
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            if let Some(error) = network_error {
                return Err(error);
            }
            send(channel, "wait", waited?)?;
            Ok(0)
        }
    }
}

/// Waits for PID 1 and says how it ended.
fn wait_for(child: nix::unistd::Pid) -> Result<Message, SetupError> {
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                return Ok(Message::Exited { code });
            }
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => {
                return Ok(Message::Signaled {
                    signal: signal as i32,
                });
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => {
                return Err(SetupError::errno("wait", "cannot wait for the step", errno));
            }
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

/// PID 1 of the step: network namespace, cgroup, root, keyring, user, environment, filter,
/// capabilities, ids, exec. Returns only on failure, with it.
fn step_main(
    sys: &dyn Sys,
    spec: &ChildSpec,
    cgroup_procs: Option<&Path>,
    link: &mut dyn Link,
) -> SetupError {
    match prepare_and_exec(sys, spec, cgroup_procs, link) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

fn prepare_and_exec(
    sys: &dyn Sys,
    spec: &ChildSpec,
    cgroup_procs: Option<&Path>,
    link: &mut dyn Link,
) -> Result<std::convert::Infallible, SetupError> {
    sys.die_with_parent()
        .map_err(|errno| SetupError::errno("spec", "PR_SET_PDEATHSIG", errno))?;
    let step = &spec.step;
    // The network namespace first, so that slirp4netns starts (its set-up takes 10-20 ms)
    // while this process enters the cgroup below (a cgroup v1 migration waits for an RCU
    // grace period: as long again) and mounts the root, not after. Nothing runs yet.
    let own_network = namespaces::pid1_unshares_network(step.network);
    if own_network {
        sys.unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|errno| {
                SetupError::errno("unshare", "cannot create the network namespace", errno)
            })?;
        link.network_unshared()?;
    }
    if let Some(procs) = cgroup_procs {
        // Before any process of the step: every one is a child of this one, inside the
        // limit.
        sys.join_cgroup(procs).map_err(|error| {
            SetupError::new(
                "cgroup",
                format!("cannot enter {}: {error}", procs.display()),
            )
        })?;
    }
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
        secrets: &step.secrets,
        secrets_dir: &spec.secrets_dir,
        restrict_devices: step.security == Security::Sandbox,
        shm_size: step.shm_size.unwrap_or(super::spec::DEFAULT_SHM_SIZE),
    };
    let placeholders = mounts::setup_root(sys, &plan)?;
    link.report(Message::Placeholders(placeholders))?;
    mounts::pivot(sys, &spec.root)?;
    if own_network {
        link.wait_for_network()?;
    }

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
    // A new, empty session keyring: the host's is not the step's (runc does the same).
    sys.join_session_keyring().map_err(|errno| {
        SetupError::errno("keyring", "cannot join a new session keyring", errno)
    })?;

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

    // `--ulimit`: before privileges go (raising a hard limit needs CAP_SYS_RESOURCE).
    for ulimit in &step.ulimits {
        let resource = ulimit
            .resource()
            .ok_or_else(|| SetupError::new("ulimit", format!("unknown type {}", ulimit.name)))?;
        sys.setrlimit(resource, ulimit.soft, ulimit.hard)
            .map_err(|errno| {
                SetupError::errno("ulimit", format!("cannot set {}", ulimit.name), errno)
            })?;
    }
    // A fixed umask: the modes of the files a step creates end up in the layer, and must not
    // depend on the umask of whoever ran xbuild (Docker's is 022 too).
    sys.umask(0o022);
    if spec.linux32 {
        // PER_LINUX32: `uname -m` reports i686/armv7l, as on a 32-bit kernel (runc sets it
        // for 386 on amd64 and arm on arm64 too).
        sys.personality(PER_LINUX32)
            .map_err(|errno| SetupError::errno("personality", "cannot set PER_LINUX32", errno))?;
    }
    // Before capabilities go: installing a filter without no_new_privs needs
    // CAP_SYS_ADMIN. Docker's profile must be there; the `fsync` filter alone (with
    // --security=insecure) is an optimisation, and without it the step syncs for real.
    if step.security == Security::Sandbox {
        let mut program = seccomp::docker_default(!spec.keep_fsync)
            .map_err(|error| SetupError::new("seccomp", error.to_string()))?;
        sys.install_seccomp(&mut program).map_err(|errno| {
            SetupError::errno("seccomp", "cannot install Docker's default profile", errno)
        })?;
    } else if !spec.keep_fsync {
        let _ = sys.install_seccomp(&mut nosync::program());
    }
    if step.security == Security::Sandbox {
        sys.limit_capabilities(capabilities::default_mask())
            .map_err(|errno| {
                SetupError::errno("capabilities", "cannot drop capabilities", errno)
            })?;
    }
    // The primary group first, then the user's others, as Docker (containerd's
    // `WithAdditionalGIDs`) sets them.
    let mut groups = vec![user.gid];
    groups.extend(user.groups.iter().filter(|gid| **gid != user.gid));
    sys.setgroups(&groups)
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
            secrets_dir: PathBuf::from("/s/secrets"),
        }
    }

    /// Records what PID 1 tells the child.
    #[derive(Default)]
    struct RecordingLink {
        reports: Vec<Message>,
        events: Vec<&'static str>,
    }

    impl Link for RecordingLink {
        fn report(&mut self, message: Message) -> Result<(), SetupError> {
            self.reports.push(message);
            Ok(())
        }

        fn network_unshared(&mut self) -> Result<(), SetupError> {
            self.events.push("unshared");
            Ok(())
        }

        fn wait_for_network(&mut self) -> Result<(), SetupError> {
            self.events.push("network ready");
            Ok(())
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
        let mut link = RecordingLink::default();
        let error = step_main(sys, spec, Some(Path::new("/cg/cgroup.procs")), &mut link);
        assert!(
            matches!(link.reports.as_slice(), [Message::Placeholders(_)]),
            "{:?}",
            link.reports
        );
        if namespaces::pid1_unshares_network(spec.step.network) {
            assert_eq!(link.events, ["unshared", "network ready"]);
        }
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
            instructions: seccomp::docker_default(true).unwrap().len(),
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
                // Into the pids cgroup before anything of the step runs.
                Call::JoinCgroup(PathBuf::from("/cg/cgroup.procs")),
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
                Call::SessionKeyring,
                Call::CreateDirAll(PathBuf::from("/src")),
                Call::Chdir(PathBuf::from("/src")),
                Call::Umask(0o022),
                Call::Personality(PER_LINUX32),
                // The filter while CAP_SYS_ADMIN is still there, then capabilities, then
                // groups and gid while CAP_SETGID is, the uid last, then exec.
                seccomp,
                Call::Capabilities(capabilities::default_mask()),
                // The primary group first, as Docker does.
                Call::Setgroups(vec![1000, 50]),
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
        step.network = Network::Host;
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
                "JoinCgroup",
                "Chdir",
                "PivotRoot",
                "Umount",
                "Chdir",
                "Sethostname",
                "SessionKeyring",
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
    fn the_default_network_is_pid_1s_own_namespace_ready_before_anything_runs() {
        let sys = recording_image();
        let step = StepSpec::new(
            vec![PathBuf::from("/l")],
            PathBuf::from("/s/upper"),
            PathBuf::from("/s/work"),
            crate::platform::host(),
            StepCommand::sh("true"),
        );
        assert_eq!(step.network, Network::Default);
        let (calls, process, _) = sequence(&sys, &child_spec(step));
        // The child stays in the host's network namespace (slirp4netns runs there); PID 1
        // makes its own first, so that slirp4netns starts while PID 1 enters the cgroup.
        assert!(
            matches!(&process[0], Call::Unshare(flags) if !flags.contains(CloneFlags::CLONE_NEWNET))
        );
        assert_eq!(process[3], Call::Unshare(CloneFlags::CLONE_NEWNET));
        assert_eq!(
            process[4],
            Call::JoinCgroup(PathBuf::from("/cg/cgroup.procs"))
        );
        // Devices: the root and /dev are nodev.
        let nodev = |wanted: &dyn Fn(&Call) -> bool| calls.iter().any(wanted);
        assert!(nodev(&|call| matches!(call,
            Call::Mount { target, flags, .. }
                if target == Path::new("/s/root/dev") && flags.contains(nix::mount::MsFlags::MS_NODEV))));
        assert!(nodev(&|call| matches!(call,
            Call::Mount { fstype: Some(fstype), flags, .. }
                if fstype == "overlay" && flags.contains(nix::mount::MsFlags::MS_NODEV))));
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

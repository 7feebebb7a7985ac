//! The default network of a step: a network namespace of its own (PID 1's), connected to
//! the outside by `slirp4netns`, user-mode networking in a process on the host's side: the
//! step sees `lo` and `eth0` (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3), and its
//! connections leave as ordinary sockets of the `slirp4netns` process. No bridge, no
//! iptables, nothing changed on the host.
//!
//! Why `slirp4netns` (Debian 12: 1.2.0, package `slirp4netns`) and not `pasta` (package
//! `passt`, 2023-03): `pasta` drops to `nobody` when started as root and then cannot open
//! the step's namespace; `slirp4netns` runs as root, has `--disable-host-loopback`
//! (10.0.2.2 does not lead to the host's 127.0.0.1, and the host's loopback is not
//! reachable otherwise: it is not the step's), forwards DNS on 10.0.2.3 from the host's
//! side (so a host resolver on a loopback address, such as systemd-resolved's 127.0.0.53,
//! works too), and is what rootless BuildKit, podman and rootlesskit use. It is started
//! per step (about 40 ms, while PID 1 sets up its root), sandboxed (`--enable-sandbox`,
//! `--enable-seccomp`), from a helper forked before the child enters the step's
//! namespaces, so that it is not in the step's PID namespace (a process there could signal
//! or trace it, and through it act in the host's network namespace). It ends with the step
//! (`--exit-fd`), or with the child if that is killed (parent-death signal).
//!
//! CAP_NET_RAW stays in the step's capability set, as in Docker: in its own namespace a
//! packet socket sees only the step's own traffic.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::SetupError;

/// The program.
pub const PROGRAM: &str = "slirp4netns";

/// The step's name server (slirp4netns's DNS forwarder).
pub const NAMESERVER: &str = "10.0.2.3";

/// How long `slirp4netns` may take to configure the namespace.
const READY_TIMEOUT_MS: i32 = 10_000;

/// Finds `slirp4netns` in `PATH` (or the usual directories when there is none).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(PROGRAM))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

/// The step's `/etc/resolv.conf` on the default network: the forwarder, and the host's
/// `search` and `options` lines.
pub fn resolv_conf(host: &str) -> String {
    let mut text = format!("nameserver {NAMESERVER}\n");
    for line in host.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("search ") || trimmed.starts_with("options ") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// `slirp4netns` for one step: a helper process forked by the re-executed child *before*
/// it enters the step's namespaces (so that it stays in the host's PID and network
/// namespaces: the step can neither see nor signal nor trace it), which waits for PID 1's
/// pid, moves into a mount namespace of its own with every mount private, and then becomes
/// `slirp4netns`.
#[derive(Debug)]
pub struct UserNetwork {
    helper: nix::unistd::Pid,
    program: PathBuf,
    log: PathBuf,
    /// Where the pid goes; closing it unused tells the helper to exit.
    pid: Option<OwnedFd>,
    /// `slirp4netns --ready-fd`.
    ready: Option<OwnedFd>,
    /// Closing it tells `slirp4netns` to exit (`--exit-fd`).
    exit: OwnedFd,
}

/// A descriptor copy numbered 10 or more, close-on-exec.
fn high(fd: &OwnedFd) -> Result<OwnedFd, SetupError> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|errno| SetupError::errno("network", "duplicating a pipe", errno))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

impl UserNetwork {
    /// Forks the helper. Call it in a single-threaded process, before `unshare`.
    ///
    /// # Errors
    /// A pipe, the log file or the fork failed.
    pub fn prepare(program: &Path, log: &Path) -> Result<Self, SetupError> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|errno| SetupError::errno("network", "creating a pipe", errno))
        };
        let (pid_read, pid_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        let (exit_read, exit_write) = pipe()?;
        let log_file = std::fs::File::create(log).map_err(|error| {
            SetupError::new(
                "network",
                format!("cannot create {}: {error}", log.display()),
            )
        })?;
        // SAFETY: the caller is single-threaded (the re-executed child), so the new process
        // may run any code; it only reads a pipe and execs.
        match unsafe { nix::unistd::fork() }
            .map_err(|errno| SetupError::errno("network", "cannot fork", errno))?
        {
            nix::unistd::ForkResult::Child => {
                drop((pid_write, ready_read, exit_write));
                let code = helper(program, pid_read, ready_write, exit_read, log_file);
                // SAFETY: _exit ends this forked process without the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Self {
                helper: child,
                program: program.to_path_buf(),
                log: log.to_path_buf(),
                pid: Some(pid_write),
                ready: Some(ready_read),
                exit: exit_write,
            }),
        }
    }

    /// Connects the network namespace of `pid` (a pid of the host's PID namespace) and
    /// waits until `eth0` is configured.
    ///
    /// # Errors
    /// `slirp4netns` ended or timed out before the namespace was ready; the message has
    /// the end of its log.
    pub fn start(&mut self, pid: i32) -> Result<(), SetupError> {
        if let Some(pipe) = self.pid.take() {
            nix::unistd::write(&pipe, pid.to_string().as_bytes())
                .map_err(|errno| SetupError::errno("network", "handing over the pid", errno))?;
        }
        let Some(ready) = self.ready.take() else {
            return Err(SetupError::new("network", "started twice"));
        };
        let mut poll = [libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one live pollfd for the call's duration.
        let answered = unsafe { libc::poll(poll.as_mut_ptr(), 1, READY_TIMEOUT_MS) };
        let mut byte = [0u8; 1];
        let configured = answered == 1
            && std::fs::File::from(ready)
                .read(&mut byte)
                .is_ok_and(|count| count == 1);
        if configured {
            return Ok(());
        }
        let _ = nix::sys::signal::kill(self.helper, nix::sys::signal::SIGKILL);
        let status = nix::sys::wait::waitpid(self.helper, None);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail = log.lines().rev().take(5).collect::<Vec<_>>();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("; ");
        Err(SetupError::new(
            "network",
            format!(
                "{} did not configure the step's network ({}){}",
                self.program.display(),
                match status {
                    _ if answered == 0 => "no answer in 10 s".to_owned(),
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => format!("exit code {code}"),
                    Ok(other) => format!("{other:?}"),
                    Err(errno) => errno.desc().to_owned(),
                },
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ),
        ))
    }

    /// Ends it (or the helper that never started it) and waits for it.
    pub fn stop(self) {
        let Self {
            helper, pid, exit, ..
        } = self;
        drop((pid, exit));
        let _ = nix::sys::wait::waitpid(helper, None);
    }
}

/// The helper: waits for the pid, then execs `slirp4netns` with the ready and exit pipes on
/// fds 3 and 4 and its output in the log. Returns only on failure (its exit code).
fn helper(program: &Path, pid: OwnedFd, ready: OwnedFd, exit: OwnedFd, log: std::fs::File) -> i32 {
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
    // slirp4netns's own sandbox (`--enable-sandbox`) pivots into an empty root and detaches
    // the old one, but makes only `/` private, not what is mounted below it: run as root in
    // the host's mount namespace, the detach propagated to the host and took every shared
    // leaf mount with it (`ip netns` names under /run/netns vanished after a build). A mount
    // namespace of its own whose mounts are all private keeps that inside.
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
        || nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .is_err()
    {
        return 126;
    }
    let mut text = String::new();
    if std::fs::File::from(pid).read_to_string(&mut text).is_err() || text.is_empty() {
        // Nothing to connect: PID 1 failed before its namespace existed.
        return 0;
    }
    let (Ok(ready), Ok(exit)) = (high(&ready), high(&exit)) else {
        return 126;
    };
    let (ready_fd, exit_fd) = (ready.as_raw_fd(), exit.as_raw_fd());
    let Ok(log_copy) = log.try_clone() else {
        return 126;
    };
    let mut command = Command::new(program);
    command
        .args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
            "--ready-fd=3",
            "--exit-fd=4",
        ])
        .arg(text.trim())
        .arg("eth0")
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log);
    // SAFETY: the closure runs just before exec and only calls dup2, async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(ready_fd, 3), (exit_fd, 4)] {
                if libc::dup2(from, to) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let _error = command.exec();
    127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_forwarder_and_keeps_search_and_options() {
        let host =
            "# generated\nnameserver 127.0.0.53\nsearch example.org\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 10.0.2.3\nsearch example.org\noptions edns0 trust-ad\n"
        );
    }
}

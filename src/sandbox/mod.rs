//! Runs one build step (`RUN`) in an isolated root filesystem, with what Docker gives a
//! container by default and no more: overlayfs over the parent snapshots with a fresh upper
//! directory (the step's change set), new mount, PID, IPC, UTS and network namespaces (the
//! default network through `slirp4netns`, `none`, or the host's with `network.host`),
//! `/proc` and `/sys` with Docker's masked and read-only paths, a minimal `/dev` and
//! Docker's device policy (`nodev`), the image's user with its groups, a fresh session
//! keyring, a pids limit (cgroup), secrets on a tmpfs, Docker's default capabilities (none
//! inheritable) and seccomp profile, and QEMU through binfmt_misc for foreign platforms.
//!
//! Shape: [`run`] (the parent side, blocking; call it from `spawn_blocking`) re-executes our
//! own binary as `xbuild __run-step` ([`child`]), a fresh single-threaded process, because
//! forking from inside a multi-threaded async runtime allows only async-signal-safe calls
//! in the child. The spec goes over a pipe on the child's fd 4 as JSON; the step's stdout
//! and stderr come back on pipes, line by line ([`Stdio::Captured`]), or the step uses our
//! streams ([`Stdio::Inherit`]) or a pseudo-terminal we relay ([`Stdio::Terminal`]); setup
//! failures and the exit status come back as [`channel::Message`]s on a pipe on fd 3.
//!
//! Modules, leaves first (each imports only modules before it): [`spec`] (what to run),
//! [`error`] (a setup failure as data), [`capabilities`], [`namespaces`], [`user`] (`USER`
//! from the image's `/etc/passwd`), `nosync`, [`seccomp`] (Docker's profile as BPF),
//! [`cgroup`] (the pids limit), [`network`] (slirp4netns), [`sys`] (the syscall seam:
//! `Sys`, `LinuxSys`, `RecordingSys`), [`mounts`] (the mount plan), [`channel`],
//! `terminal`, [`child`] (the whole sequence in the child, through `Sys`).
//!
//! It knows nothing about Dockerfiles. Linux only; needs root (rootless is not supported
//! yet).

pub mod capabilities;
pub mod cgroup;
pub mod channel;
pub mod child;
pub mod error;
pub mod mounts;
pub mod namespaces;
pub mod network;
mod nosync;
pub mod seccomp;
pub mod spec;
pub mod sys;
mod terminal;
pub mod user;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

pub use mounts::Placeholder;
pub use spec::{
    BindMount, DEFAULT_HOSTNAME, DEFAULT_PIDS_LIMIT, DEFAULT_SHM_SIZE, HostEntry, MountSource,
    Network, SecretFile, Security, Stdio, StepCommand, StepOutcome, StepSpec, Stream, Ulimit,
};

use crate::binfmt::{self, BinfmtError};
use crate::platform;
use channel::Message;
use child::ChildSpec;

/// Longest line handed to the output callback; longer ones arrive in pieces.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a step could not be run (a step that ran and failed is a [`StepOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The platform cannot run here; the message holds the fix (exit 3 at the CLI).
    #[error(transparent)]
    NotRunnable(#[from] BinfmtError),
    /// The sandbox needs root.
    #[error("running build steps needs root (rootless builds are not supported yet)")]
    NotRoot,
    /// The default network needs `slirp4netns`, which is not installed (exit 3).
    #[error(
        "RUN steps' default network needs slirp4netns: apt-get install slirp4netns (or build with --network=none)"
    )]
    NoUserModeNetwork,
    /// A directory of the spec is unusable.
    #[error("{what} {path} is not a directory")]
    BadDirectory {
        /// Which field.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Preparing the step in the parent failed.
    #[error("cannot prepare the step: {what}")]
    Prepare {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The child reported a failure while setting up the step.
    #[error("{stage}: {detail}")]
    Setup {
        /// Which stage (`mount`, `user`, `exec`, ...).
        stage: String,
        /// What failed.
        detail: String,
    },
    /// The child ended without saying how the step ended.
    #[error("the sandbox process ended unexpectedly ({status})")]
    ChildDied {
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

impl SandboxError {
    /// How the CLI should exit for this error: the host is not ready (3) when the platform
    /// cannot run or we are not root, a failed step (1) otherwise.
    pub fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            Self::NotRunnable(_) | Self::NotRoot | Self::NoUserModeNetwork => {
                crate::error::ExitKind::HostNotReady
            }
            _ => crate::error::ExitKind::Failed,
        }
    }

    fn prepare(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Prepare { what, source }
    }
}

/// Runs one step and waits for it. With [`Stdio::Captured`] (the default) each complete
/// output line (without its `\n`) is passed to `on_output` as it arrives, and a final line
/// without `\n` at the end; with [`Stdio::Inherit`] and [`Stdio::Terminal`] the step talks
/// to our streams (or a terminal relayed to them) and `on_output` is not called.
///
/// Before anything starts, the platform is checked with [`binfmt::check_runnable`].
/// Afterwards the step's namespaces, and every mount, are gone; the mount points the image
/// lacked have been removed from the upper directory again.
///
/// # Errors
/// [`SandboxError`] when the step could not be run. A step that ran and exited non-zero is
/// `Ok(StepOutcome::Exited { code })`.
pub fn run(
    spec: &StepSpec,
    on_output: impl FnMut(Stream, &[u8]),
) -> Result<StepOutcome, SandboxError> {
    run_with(Path::new("/proc/self/exe"), spec, on_output)
}

/// [`run`], re-executing `exe` (an `xbuild` binary) instead of ourselves: for tests, whose
/// own executable is the test harness.
///
/// # Errors
/// As [`run`].
pub fn run_with(
    exe: &Path,
    spec: &StepSpec,
    mut on_output: impl FnMut(Stream, &[u8]),
) -> Result<StepOutcome, SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::NotRoot);
    }
    for (what, path) in [
        ("upper directory", &spec.upper_dir),
        ("work directory", &spec.work_dir),
    ]
    .into_iter()
    .chain(spec.lower_dirs.iter().map(|dir| ("lower directory", dir)))
    {
        if !path.is_dir() {
            return Err(SandboxError::BadDirectory {
                what,
                path: path.clone(),
            });
        }
    }
    binfmt::check_runnable(&spec.platform)?;
    check_network(spec.network)?;

    let mut scratch = tempfile::Builder::new();
    scratch.prefix("xbuild-step-");
    let scratch = match &spec.scratch_parent {
        Some(parent) => scratch.tempdir_in(parent),
        None => scratch.tempdir(),
    }
    .map_err(SandboxError::prepare("creating a temporary directory"))?;
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).map_err(SandboxError::prepare("creating the root mount point"))?;
    let mut lower_dirs = spec.lower_dirs.clone();
    if lower_dirs.is_empty() {
        // overlayfs needs at least one lower directory: an empty root is an empty one.
        let empty = scratch.path().join("empty");
        std::fs::create_dir(&empty).map_err(SandboxError::prepare("creating an empty layer"))?;
        lower_dirs.push(empty);
    }
    let resolv_conf = scratch.path().join("resolv.conf");
    let hosts = scratch.path().join("hosts");
    if spec.network == Network::Default {
        // The host's name servers may be on its loopback, which the step cannot reach:
        // slirp4netns's forwarder asks them from the host's side.
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(&resolv_conf, network::resolv_conf(&host))
            .map_err(SandboxError::prepare("writing resolv.conf"))?;
    } else {
        copy_host_file("/etc/resolv.conf", &resolv_conf, "")?;
    }
    let secrets_dir = scratch.path().join("secrets");
    std::fs::create_dir(&secrets_dir)
        .map_err(SandboxError::prepare("creating the secrets' mount point"))?;
    copy_host_file(
        "/etc/hosts",
        &hosts,
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    )?;
    if spec.hostname != DEFAULT_HOSTNAME {
        // Another host name (`BUILDKIT_SANDBOX_HOSTNAME`) resolves to the step, as in
        // BuildKit's hosts file.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&hosts)
            .map_err(SandboxError::prepare("opening the step's hosts file"))?;
        file.write_all(format!("127.0.0.1\tlocalhost {}\n", spec.hostname).as_bytes())
            .map_err(SandboxError::prepare("writing the step's hosts file"))?;
    }
    if !spec.extra_hosts.is_empty() {
        // `--add-host`: after the host's lines, as Docker appends them.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&hosts)
            .map_err(SandboxError::prepare("opening the step's hosts file"))?;
        let mut text = String::new();
        for entry in &spec.extra_hosts {
            text.push_str(&entry.line());
        }
        file.write_all(text.as_bytes())
            .map_err(SandboxError::prepare("writing the step's hosts file"))?;
    }
    let existed_in_upper = ["etc", "proc", "dev", "sys"]
        .into_iter()
        .filter(|name| std::fs::symlink_metadata(spec.upper_dir.join(name)).is_ok())
        .map(PathBuf::from)
        .collect::<Vec<_>>();

    let child_spec = ChildSpec {
        step: spec.clone(),
        root,
        lower_dirs,
        resolv_conf,
        hosts,
        linux32: spec.platform.needs_linux32_on(&platform::host()),
        parent_pid: i32::try_from(std::process::id()).unwrap_or(0),
        console: None,
        secrets_dir,
        keep_fsync: crate::env::switch(crate::env::XBUILD_STEP_FSYNC, false),
    };

    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| SandboxError::prepare("creating a pipe")(errno.into()))
    };
    let (channel_read, channel_write) = pipe()?;
    let (spec_read, spec_write) = pipe()?;
    // Copies numbered 10 and up, so that placing them on 3 and 4 in the child cannot
    // overwrite one with the other; close-on-exec, so no other child inherits them.
    let high = |fd: &OwnedFd| -> Result<OwnedFd, SandboxError> {
        let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map_err(|errno| SandboxError::prepare("duplicating a pipe")(errno.into()))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    };
    let channel_high = high(&channel_write)?;
    let spec_high = high(&spec_read)?;
    drop((channel_write, spec_read));
    let (channel_fd, spec_fd) = (channel_high.as_raw_fd(), spec_high.as_raw_fd());

    let terminal = match spec.stdio {
        Stdio::Terminal => Some(
            terminal::Pty::open().map_err(SandboxError::prepare("allocating a pseudo-terminal"))?,
        ),
        _ => None,
    };
    let mut child_spec = child_spec;
    child_spec.console = terminal.as_ref().map(|pty| pty.slave_path.clone());
    let text = serde_json::to_vec(&child_spec).map_err(|error| SandboxError::Prepare {
        what: "encoding the step spec".to_owned(),
        source: std::io::Error::other(error),
    })?;

    let mut command = Command::new(exe);
    command.arg("__run-step");
    match (&spec.stdio, &terminal) {
        (Stdio::Terminal, Some(pty)) => {
            let slave = |pty: &terminal::Pty| {
                pty.slave
                    .try_clone()
                    .map_err(SandboxError::prepare("duplicating the terminal"))
            };
            command
                .stdin(slave(pty)?)
                .stdout(slave(pty)?)
                .stderr(slave(pty)?);
        }
        (Stdio::Inherit | Stdio::Terminal, _) => {
            command
                .stdin(process::Stdio::inherit())
                .stdout(process::Stdio::inherit())
                .stderr(process::Stdio::inherit());
        }
        (Stdio::Captured, _) => {
            command
                .stdin(process::Stdio::null())
                .stdout(process::Stdio::piped())
                .stderr(process::Stdio::piped());
        }
    }
    // SAFETY: the closure runs between fork and exec in the child and only calls dup2,
    // which is async-signal-safe. dup2 gives fds 3 and 4 without close-on-exec, so only
    // this child inherits the channel and the spec pipe, not children other threads spawn
    // meanwhile.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(channel_fd, channel::CHILD_FD), (spec_fd, channel::SPEC_FD)] {
                if libc::dup2(from, to) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(SandboxError::prepare("starting the sandbox process"))?;
    // The command holds copies of the terminal's slave: the master reads end-of-file only
    // once every copy outside the step is closed.
    drop(command);
    drop((channel_high, spec_high));
    {
        // A child that died at once closes the pipe: its status tells the story below.
        let mut spec_pipe = std::fs::File::from(spec_write);
        let _ = spec_pipe.write_all(&text);
    }
    let messages = match terminal {
        Some(pty) => {
            let terminal::Pty { master, slave, .. } = pty;
            drop(slave);
            terminal::relay(&master, &channel_read)
                .map_err(SandboxError::prepare("relaying the terminal"))?
        }
        None if spec.stdio == Stdio::Captured => {
            let stdout: OwnedFd = child.stdout.take().expect("stdout is piped").into();
            let stderr: OwnedFd = child.stderr.take().expect("stderr is piped").into();
            pump(&stdout, &stderr, &channel_read, &mut on_output)
                .map_err(SandboxError::prepare("reading the step's output"))?
        }
        None => read_messages(channel_read)
            .map_err(SandboxError::prepare("reading the sandbox's messages"))?,
    };
    let status = child
        .wait()
        .map_err(SandboxError::prepare("waiting for the sandbox process"))?;

    // The child, and with it the mount namespace, is gone: the overlay is unmounted and the
    // upper directory may be changed again.
    for message in &messages {
        if let Message::Placeholders(placeholders) = message {
            remove_placeholders(&spec.upper_dir, placeholders, &existed_in_upper);
        }
    }
    let mut outcome = None;
    for message in messages {
        match message {
            Message::Failed { stage, detail } => return Err(SandboxError::Setup { stage, detail }),
            Message::Exited { code } => outcome = Some(StepOutcome::Exited { code }),
            Message::Signaled { signal } => outcome = Some(StepOutcome::Signaled { signal }),
            Message::Placeholders(_) => {}
        }
    }
    outcome.ok_or(SandboxError::ChildDied { status })
}

/// Whether this host can give steps `network`: the default one needs `slirp4netns`. For
/// callers that want to refuse before any work ([`run`] checks it too).
///
/// # Errors
/// [`SandboxError::NoUserModeNetwork`].
pub fn check_network(network: Network) -> Result<(), SandboxError> {
    if network == Network::Default && network::find().is_none() {
        return Err(SandboxError::NoUserModeNetwork);
    }
    Ok(())
}

/// Copies a host file the step sees (bound over its own), or writes `fallback` when the host
/// has none.
fn copy_host_file(source: &str, target: &Path, fallback: &str) -> Result<(), SandboxError> {
    let content = std::fs::read(source).unwrap_or_else(|_| fallback.as_bytes().to_vec());
    std::fs::write(target, content).map_err(SandboxError::prepare(format!("copying {source}")))
}

/// Removes from `upper` the mount points the child created (an empty file or an empty
/// directory, as created; anything else means the step put something there, and it stays),
/// then the directories their creation copied up (`etc` when only `/etc/hosts` was added),
/// when they are empty and did not exist in `upper` before the step.
fn remove_placeholders(upper: &Path, placeholders: &[Placeholder], existed_before: &[PathBuf]) {
    for placeholder in placeholders.iter().rev() {
        let path = upper.join(&placeholder.path);
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if placeholder.is_dir && metadata.is_dir() {
            // Fails, and keeps it, when the directory is not empty.
            let _ = std::fs::remove_dir(&path);
        } else if !placeholder.is_dir && metadata.is_file() && metadata.len() == 0 {
            let _ = std::fs::remove_file(&path);
        }
    }
    let parents = placeholders
        .iter()
        .filter_map(|placeholder| placeholder.path.parent())
        .filter(|parent| !parent.as_os_str().is_empty())
        .collect::<std::collections::BTreeSet<_>>();
    for parent in parents.into_iter().rev() {
        if !existed_before.iter().any(|existing| existing == parent) {
            let _ = std::fs::remove_dir(upper.join(parent));
        }
    }
}

/// Reads the channel's messages until it is closed (the step's streams are not ours).
fn read_messages(channel: OwnedFd) -> std::io::Result<Vec<Message>> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(std::fs::File::from(channel));
    let mut messages = Vec::new();
    for line in reader.split(b'\n') {
        messages.extend(Message::parse(&line?));
    }
    Ok(messages)
}

/// Reads stdout, stderr and the channel until all three are closed, handing out lines.
fn pump(
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    channel: &OwnedFd,
    on_output: &mut impl FnMut(Stream, &[u8]),
) -> std::io::Result<Vec<Message>> {
    let mut buffers = [Vec::new(), Vec::new(), Vec::new()];
    let mut open = [true, true, true];
    let streams = [Some(Stream::Stdout), Some(Stream::Stderr), None];
    let fds = [stdout.as_fd(), stderr.as_fd(), channel.as_fd()];
    let mut messages = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while open.iter().any(|is_open| *is_open) {
        for index in poll_readable(&fds, &open)? {
            let count = match nix::unistd::read(fds[index], &mut chunk) {
                Ok(count) => count,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(errno) => return Err(errno.into()),
            };
            let buffer = &mut buffers[index];
            if count == 0 {
                open[index] = false;
            } else {
                buffer.extend_from_slice(&chunk[..count]);
            }
            // Hand out every complete line; at EOF the rest too.
            loop {
                let end = match buffer.iter().position(|byte| *byte == b'\n') {
                    Some(newline) => newline,
                    None if !open[index] && !buffer.is_empty() => buffer.len(),
                    None if buffer.len() >= MAX_LINE => MAX_LINE,
                    None => break,
                };
                let line = buffer[..end].to_vec();
                buffer.drain(..(end + 1).min(buffer.len()));
                match streams[index] {
                    Some(stream) => on_output(stream, &line),
                    None => messages.extend(Message::parse(&line)),
                }
            }
        }
    }
    Ok(messages)
}

/// Waits until one or more of the descriptors of `fds` still `open` can be read (data, end
/// of file or an error to read), through a signal that interrupts the wait; returns their
/// indexes in `fds`.
///
/// # Errors
/// `poll` fails other than by an interruption.
pub(crate) fn poll_readable<const N: usize>(
    fds: &[std::os::fd::BorrowedFd<'_>; N],
    open: &[bool; N],
) -> std::io::Result<Vec<usize>> {
    let indexes = (0..N).filter(|index| open[*index]).collect::<Vec<_>>();
    let mut poll_fds = indexes
        .iter()
        .map(|index| libc::pollfd {
            fd: fds[*index].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect::<Vec<_>>();
    loop {
        // SAFETY: `poll_fds` is a live array of `len` pollfd structs for the call's duration,
        // and every descriptor in it is open (borrowed for the call).
        let result =
            unsafe { libc::poll(poll_fds.as_mut_ptr(), poll_fds.len() as libc::nfds_t, -1) };
        if result != -1 {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(indexes
        .into_iter()
        .zip(&poll_fds)
        .filter(|(_, fd)| fd.revents != 0)
        .map(|(index, _)| index)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_removed_but_not_what_the_step_wrote() {
        let upper = tempfile::tempdir().unwrap();
        let path = upper.path();
        std::fs::create_dir_all(path.join("etc")).unwrap();
        std::fs::write(path.join("etc/hosts"), "").unwrap();
        std::fs::write(path.join("etc/resolv.conf"), "").unwrap();
        std::fs::create_dir(path.join("proc")).unwrap();
        std::fs::create_dir(path.join("dev")).unwrap();
        std::fs::write(path.join("dev/kept"), "x").unwrap();
        let placeholders = [
            Placeholder {
                path: "proc".into(),
                is_dir: true,
            },
            Placeholder {
                path: "dev".into(),
                is_dir: true,
            },
            Placeholder {
                path: "etc/resolv.conf".into(),
                is_dir: false,
            },
            Placeholder {
                path: "etc/hosts".into(),
                is_dir: false,
            },
        ];
        remove_placeholders(path, &placeholders, &[]);
        assert!(!path.join("proc").exists());
        assert!(
            !path.join("etc").exists(),
            "copied-up /etc, now empty, is removed"
        );
        assert!(path.join("dev/kept").exists());
    }

    #[test]
    fn a_directory_that_was_in_upper_before_stays() {
        let upper = tempfile::tempdir().unwrap();
        let path = upper.path();
        std::fs::create_dir(path.join("etc")).unwrap();
        std::fs::write(path.join("etc/hosts"), "").unwrap();
        let placeholders = [Placeholder {
            path: "etc/hosts".into(),
            is_dir: false,
        }];
        remove_placeholders(path, &placeholders, &[PathBuf::from("etc")]);
        assert!(!path.join("etc/hosts").exists());
        assert!(path.join("etc").is_dir());
    }

    #[test]
    fn not_root_is_refused_before_anything_starts() {
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let spec = StepSpec::new(
            vec![],
            "/nonexistent".into(),
            "/nonexistent".into(),
            platform::host(),
            StepCommand::sh("true"),
        );
        assert!(matches!(run(&spec, |_, _| {}), Err(SandboxError::NotRoot)));
    }
}

//! The system `ssh` client: the command lines xbuild runs, and the probe of a node.
//!
//! OpenSSH is what users have configured (keys, agent, `known_hosts`, `~/.ssh/config`,
//! jump hosts), so xbuild runs it rather than speaking SSH itself, as buildx does for
//! `ssh://` endpoints. Every command runs with `BatchMode=yes` (never a password prompt that
//! would hang a build), a `ConnectTimeout`, keep-alives (a node that vanishes mid-build ends
//! the build instead of hanging it), no TTY and no X11 forwarding. `$XBUILD_SSH_CONFIG`
//! names a configuration file passed as `-F` (tests use it for their own `known_hosts` and
//! key).
//!
//! The remote command is one string that the node's login shell runs:
//! `[env XBUILD_ROOT='ROOT'] 'XBUILD' SUBCOMMAND`, every value single-quoted.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::node::{Endpoint, Node};
use crate::platform::Platform;

/// Seconds ssh may take to connect to a node.
pub const CONNECT_TIMEOUT_SECONDS: u32 = 10;
/// How long a probe (`builder ls`, the check before a build) may take in all.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// ssh's exit status when ssh itself failed (connection, authentication), not the command.
pub const SSH_FAILED: i32 = 255;

/// What a node says about itself (`xbuild __node-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's xbuild version.
    pub version: String,
    /// The platform its CPU runs.
    pub native: Platform,
    /// The platforms it runs through binfmt_misc (QEMU).
    pub emulated: Vec<Platform>,
}

impl NodeInfo {
    /// This machine's answer.
    pub fn here() -> Self {
        let emulated = crate::binfmt::status(false)
            .map(|rows| {
                rows.into_iter()
                    .filter(|row| matches!(row.runner, crate::binfmt::Runner::Emulated(_)))
                    .map(|row| row.platform)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            native: crate::platform::host(),
            emulated,
        }
    }

    /// Whether the node can build `platform` at all (natively or by emulation).
    pub fn runs(&self, platform: &Platform) -> bool {
        self.native == *platform || self.emulated.contains(platform)
    }
}

/// Why a node could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// ssh could not run at all.
    #[error("cannot run ssh: {0}")]
    NoSsh(String),
    /// ssh failed: connection refused, timed out, host key, authentication.
    #[error("node {node} ({endpoint}) does not answer: {message}")]
    Unreachable {
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// What ssh said (its last lines).
        message: String,
    },
    /// The probe took longer than [`PROBE_TIMEOUT`].
    #[error("node {node} ({endpoint}) does not answer: no reply in {seconds} s")]
    Timeout {
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// The limit.
        seconds: u64,
    },
    /// ssh worked but xbuild on the node did not.
    #[error("node {node} ({endpoint}): {command} failed (exit status {status}): {message}")]
    Remote {
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// The remote command.
        command: String,
        /// Its exit status.
        status: i32,
        /// Its last lines of stderr, with a hint when xbuild was not found.
        message: String,
    },
    /// The node answered something that is not a `__node-info` reply.
    #[error(
        "node {node} ({endpoint}) answered something that is not xbuild's node info: {message}"
    )]
    BadReply {
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// The parse error.
        message: String,
    },
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.,:=@%+".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The remote command line running xbuild's `subcommand` on the node.
pub fn remote_command(endpoint: &Endpoint, subcommand: &str) -> String {
    let program = shell_quote(endpoint.xbuild.as_deref().unwrap_or("xbuild"));
    match &endpoint.root {
        Some(root) => format!(
            "env {}={} {program} {subcommand}",
            crate::env::XBUILD_ROOT,
            shell_quote(root)
        ),
        None => format!("{program} {subcommand}"),
    }
}

/// An `ssh` command running xbuild's `subcommand` on the node.
pub fn command(endpoint: &Endpoint, subcommand: &str) -> Command {
    command_forwarding(endpoint, subcommand, &[])
}

/// As [`command`], with each `(socket on the node, socket here)` of `forwards` forwarded by
/// the connection (`-R`): a program on the node connecting to the first reaches the second.
/// sshd creates each socket for the login user alone (`StreamLocalBindMask`, 0177 by
/// default) before the command runs; a forward the server refuses fails the command
/// (`ExitOnForwardFailure`).
pub fn command_forwarding(
    endpoint: &Endpoint,
    subcommand: &str,
    forwards: &[(String, std::path::PathBuf)],
) -> Command {
    let mut command = Command::new("ssh");
    if let Some(config) = std::env::var_os(crate::env::XBUILD_SSH_CONFIG) {
        command.arg("-F").arg(config);
    }
    command.args([
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("ConnectTimeout={CONNECT_TIMEOUT_SECONDS}"),
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
        "-T",
        "-x",
    ]);
    if let Some(port) = endpoint.port {
        command.arg("-p").arg(port.to_string());
    }
    if !forwards.is_empty() {
        command.args(["-o", "ExitOnForwardFailure=yes"]);
    }
    for (remote, local) in forwards {
        let mut spec = std::ffi::OsString::from(remote);
        spec.push(":");
        spec.push(local);
        command.arg("-R").arg(spec);
    }
    command
        .arg("--")
        .arg(endpoint.destination())
        .arg(remote_command(endpoint, subcommand));
    command
}

/// The last non-empty lines of a command's stderr, joined with `; `.
pub fn tail(stderr: &str, lines: usize) -> String {
    let kept: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let start = kept.len().saturating_sub(lines);
    let text = kept[start..].join("; ");
    if text.is_empty() {
        "no message".to_owned()
    } else {
        text
    }
}

/// Turns a failed ssh run into a [`ProbeError`].
pub fn failure(node: &Node, subcommand: &str, status: i32, stderr: &str) -> ProbeError {
    let endpoint = node.endpoint.to_string();
    if status == SSH_FAILED {
        return ProbeError::Unreachable {
            node: node.name.clone(),
            endpoint,
            message: tail(stderr, 3),
        };
    }
    let mut message = tail(stderr, 3);
    if status == 127 {
        message.push_str(
            " (xbuild is not on the node's PATH for non-interactive logins: install it there, \
             or give its path in the endpoint, ssh://HOST?xbuild=/path/to/xbuild)",
        );
    }
    ProbeError::Remote {
        node: node.name.clone(),
        endpoint,
        command: remote_command(&node.endpoint, subcommand),
        status,
        message,
    }
}

/// Probes `nodes` at once (one thread each), answers in the same order.
pub fn probe_all(nodes: &[&Node]) -> Vec<Result<NodeInfo, ProbeError>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| scope.spawn(move || probe(node)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(ProbeError::NoSsh("the probe panicked".into())))
            })
            .collect()
    })
}

/// Asks the node for its [`NodeInfo`] (within [`PROBE_TIMEOUT`]).
///
/// # Errors
/// [`ProbeError`]: ssh missing, the node unreachable or slow, xbuild missing there.
pub fn probe(node: &Node) -> Result<NodeInfo, ProbeError> {
    let subcommand = "__node-info";
    let mut child = command(&node.endpoint, subcommand)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| ProbeError::NoSsh(error.to_string()))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Timeout {
                    node: node.name.clone(),
                    endpoint: node.endpoint.to_string(),
                    seconds: PROBE_TIMEOUT.as_secs(),
                });
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(failure(
            node,
            subcommand,
            status.code().unwrap_or(SSH_FAILED),
            &stderr,
        ));
    }
    serde_json::from_str(stdout.trim()).map_err(|error| ProbeError::BadReply {
        node: node.name.clone(),
        endpoint: node.endpoint.to_string(),
        message: error.to_string(),
    })
}

/// Bytes moved over one node's ssh channel (what xbuild wrote to and read from the `ssh`
/// process, before ssh's own encryption and framing).
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes written to the node (request, context).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read from the node (reply, result, progress).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Counts what `reader` gives as received.
    pub fn reading<R: Read>(&self, reader: R) -> Counted<'_, R> {
        Counted {
            inner: reader,
            count: &self.received,
        }
    }

    /// Counts what goes through `writer` as sent.
    pub fn writing<W: Write>(&self, writer: W) -> Counted<'_, W> {
        Counted {
            inner: writer,
            count: &self.sent,
        }
    }
}

/// A reader or writer whose bytes are added to a [`Traffic`] counter.
pub struct Counted<'a, T> {
    inner: T,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.count.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_counts_both_ways() {
        let traffic = Traffic::default();
        let mut out = Vec::new();
        traffic.writing(&mut out).write_all(b"request").unwrap();
        let mut back = String::new();
        traffic
            .reading(&b"reply!"[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!((traffic.sent(), traffic.received()), (7, 6));
    }

    #[test]
    fn quotes_for_the_remote_shell() {
        assert_eq!(shell_quote("/usr/bin/xbuild"), "/usr/bin/xbuild");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        let endpoint = Endpoint::parse("ssh://h?xbuild=/opt/x%20b/xbuild&root=/srv/x").unwrap();
        assert_eq!(
            remote_command(&endpoint, "__node-build"),
            "env XBUILD_ROOT=/srv/x '/opt/x b/xbuild' __node-build"
        );
        let endpoint = Endpoint::parse("ssh://h").unwrap();
        assert_eq!(
            remote_command(&endpoint, "__node-info"),
            "xbuild __node-info"
        );
    }

    #[test]
    fn ssh_failures_name_the_node_and_keep_the_message() {
        let node = Node::parse("arm0", "linux/arm64=ssh://root@10.9.9.9:2222").unwrap();
        let error = failure(
            &node,
            "__node-info",
            255,
            "ssh: connect to host 10.9.9.9 port 2222: Connection refused\n",
        );
        assert_eq!(
            error.to_string(),
            "node arm0 (ssh://root@10.9.9.9:2222) does not answer: ssh: connect to host \
             10.9.9.9 port 2222: Connection refused"
        );
        let error = failure(&node, "__node-info", 127, "sh: 1: xbuild: not found\n");
        assert!(
            error.to_string().contains("?xbuild=/path/to/xbuild"),
            "{error}"
        );
    }
}

//! `--ssh` and `RUN --mount=type=ssh`, as buildx and BuildKit have them: an ssh agent of the
//! client (its socket, or keys loaded into an `ssh-agent` we start for the build) reached
//! from a step through a socket of our own bound at the mount's target
//! (`/run/buildkit/ssh_agent.N` by default), with the mount's `uid`, `gid` and `mode`, so the
//! user's agent socket is never bound into the step nor changed. Each connection to it is
//! relayed to the agent; the relay stops with the step.
//!
//! This module starts and stops processes and threads; it refuses nothing a Dockerfile
//! says (that is `validate`'s), only what the agent cannot do (a key it cannot load).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::ExecutorError;

/// What one `--ssh ID=...` forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's socket (`--ssh default` is `$SSH_AUTH_SOCK`).
    Socket(PathBuf),
    /// Private key files, loaded into an `ssh-agent` started for the build.
    Keys(Vec<PathBuf>),
}

/// The `--ssh default` agent, for a git repository fetched over ssh before the build runs
/// (a git build context or a named context): its socket lives as long as the value (an
/// `ssh-agent` started for key files is stopped on drop).
pub struct DefaultAgent(Agents);

impl DefaultAgent {
    /// Starts `--ssh default` when it was given (`None` otherwise).
    ///
    /// # Errors
    /// A key file the agent cannot load.
    pub fn start(sources: &BTreeMap<String, SshSource>) -> Result<Option<Self>, ExecutorError> {
        let Some(source) = sources.get("default") else {
            return Ok(None);
        };
        let only = BTreeMap::from([("default".to_owned(), source.clone())]);
        Ok(Some(Self(Agents::start(&only)?)))
    }

    /// The agent's socket.
    pub fn socket(&self) -> Option<&Path> {
        self.0.socket("default")
    }
}

/// The agents of a build, by `--ssh` id: the sockets steps are relayed to, and the
/// `ssh-agent` processes started for key files (stopped on drop).
#[derive(Default)]
pub(crate) struct Agents {
    sockets: BTreeMap<String, PathBuf>,
    started: Vec<(Child, tempfile::TempDir)>,
}

impl Agents {
    /// Makes every source usable: a socket is taken as it is; key files are loaded into a
    /// fresh `ssh-agent` (a key `ssh-add` cannot load without a passphrase is an error).
    pub(crate) fn start(sources: &BTreeMap<String, SshSource>) -> Result<Self, ExecutorError> {
        let mut agents = Self::default();
        for (id, source) in sources {
            match source {
                SshSource::Socket(path) => {
                    agents.sockets.insert(id.clone(), path.clone());
                }
                SshSource::Keys(keys) => {
                    let socket = agents.start_agent(id, keys)?;
                    agents.sockets.insert(id.clone(), socket);
                }
            }
        }
        Ok(agents)
    }

    /// The agent socket of `--ssh id`.
    pub(crate) fn socket(&self, id: &str) -> Option<&Path> {
        self.sockets.get(id).map(PathBuf::as_path)
    }

    fn start_agent(&mut self, id: &str, keys: &[PathBuf]) -> Result<PathBuf, ExecutorError> {
        let refuse = |reason: String| ExecutorError::Ssh {
            id: id.to_owned(),
            reason,
        };
        let dir = tempfile::Builder::new()
            .prefix("xbuild-ssh-agent-")
            .tempdir()?;
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                refuse(format!(
                    "cannot start ssh-agent to hold the keys ({error}); install openssh-client"
                ))
            })?;
        self.started.push((child, dir));
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                return Err(refuse("ssh-agent did not start".to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            let output = Command::new("ssh-add")
                .arg("-q")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .env("SSH_ASKPASS_REQUIRE", "never")
                .env_remove("DISPLAY")
                .stdin(Stdio::null())
                .output()
                .map_err(|error| refuse(format!("cannot run ssh-add ({error})")))?;
            if !output.status.success() {
                return Err(refuse(format!(
                    "cannot load the key {} (a key with a passphrase cannot be used): {}",
                    key.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        Ok(socket)
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (child, _) in &mut self.started {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A socket of our own that relays each connection to an agent, for one step's mount.
pub(crate) struct Relay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Listens on a new socket owned by `uid:gid` with `mode`, relaying to `agent`.
    pub(crate) fn start(agent: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<Self> {
        // In the system's temporary directory: a socket path is at most 107 bytes.
        let dir = tempfile::Builder::new().prefix("xbuild-ssh-").tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ssh-relay".to_owned())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => relay(client, &agent),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => break,
                    }
                }
            })?;
        Ok(Self {
            path,
            stop,
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The socket to bind into the step.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways between a step's connection and a new connection to the agent, on two
/// threads that end when either side closes.
fn relay(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::thread::Builder::new()
        .name("ssh-relay-up".to_owned())
        .spawn(move || {
            let _ = io::copy(&mut client_read, &mut upstream_write);
            let _ = upstream_write.shutdown(std::net::Shutdown::Write);
        });
    let _ = std::thread::Builder::new()
        .name("ssh-relay-down".to_owned())
        .spawn(move || {
            let _ = io::copy(&mut upstream_read, &mut client_write);
            let _ = client_write.shutdown(std::net::Shutdown::Write);
        });
}

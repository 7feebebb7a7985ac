//! What one step needs: a plain value the build fills in and the sandbox carries out. It is
//! sent to the re-executed child as JSON, so every field serialises.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// One `RUN` to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// Read-only layers, top first (overlayfs `lowerdir` order). Empty means an empty root
    /// (`FROM scratch`).
    pub lower_dirs: Vec<PathBuf>,
    /// A fresh, empty directory that receives the step's changes (overlayfs `upperdir`).
    pub upper_dir: PathBuf,
    /// An empty directory on the same file system as `upper_dir` (overlayfs `workdir`).
    pub work_dir: PathBuf,
    /// The platform the step runs as; foreign ones go through QEMU.
    pub platform: Platform,
    /// What to execute.
    pub command: StepCommand,
    /// Environment, `KEY=VALUE`. `PATH` and `HOME` are added when missing, as Docker does.
    pub env: Vec<String>,
    /// `USER`: `name`, `uid`, `name:group`, `uid:gid`; `None` is root.
    pub user: Option<String>,
    /// `WORKDIR`: an absolute path inside the root, created (as root) when missing.
    pub cwd: String,
    /// The host name the step sees.
    pub hostname: String,
    /// `RUN --network`.
    pub network: Network,
    /// `RUN --security`.
    pub security: Security,
    /// How the step's standard streams are connected (build steps: captured).
    #[serde(default)]
    pub stdio: Stdio,
    /// Extra bind mounts (`RUN --mount=type=cache|secret|bind`), in order; mount points the
    /// image lacks are created and removed again afterwards, so they leave no trace in the
    /// step's upper directory.
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// Secrets (`RUN --mount=type=secret`): written on a tmpfs that exists only in the
    /// step's mount namespace and bound read-only on their targets, so they never reach a
    /// disk, and vanish with the step whatever happens to the build.
    #[serde(default)]
    pub secrets: Vec<SecretFile>,
    /// The most processes and threads the step may have at once (a cgroup's `pids.max`);
    /// `None`: no limit.
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Whether the step must fail when the limit cannot be set (the user asked for it with
    /// `--pids-limit`); otherwise (the default limit) a host without a reachable cgroup
    /// `pids` controller runs the step without one.
    #[serde(default)]
    pub pids_limit_required: bool,
    /// Where the sandbox makes its own temporary directory (`xbuild-step-*`: the root mount
    /// point, the step's `resolv.conf` and `hosts`). Builds give the store's `tmp/`, which
    /// `xbuild store check` empties of what a killed build left; `None` is the system's
    /// temporary directory.
    #[serde(default)]
    pub scratch_parent: Option<PathBuf>,
    /// `--add-host`: lines added to the step's `/etc/hosts` (never to a layer).
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
    /// `--shm-size`: the size of the step's `/dev/shm` tmpfs, bytes (`None`: Docker's 64 MiB).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--ulimit`s, set in the step's process before it runs the command.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
}

/// Docker's default size of `/dev/shm`.
pub const DEFAULT_SHM_SIZE: u64 = 64 * 1024 * 1024;

/// One `--ulimit TYPE=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name of the resource (`nofile`).
    pub name: String,
    /// The soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// The hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

impl Ulimit {
    /// Docker's names of the resources and their `RLIMIT_*` numbers.
    pub const NAMES: [(&'static str, u32); 15] = [
        ("core", libc::RLIMIT_CORE),
        ("cpu", libc::RLIMIT_CPU),
        ("data", libc::RLIMIT_DATA),
        ("fsize", libc::RLIMIT_FSIZE),
        ("locks", libc::RLIMIT_LOCKS),
        ("memlock", libc::RLIMIT_MEMLOCK),
        ("msgqueue", libc::RLIMIT_MSGQUEUE),
        ("nice", libc::RLIMIT_NICE),
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
        ("rss", libc::RLIMIT_RSS),
        ("rtprio", libc::RLIMIT_RTPRIO),
        ("rttime", libc::RLIMIT_RTTIME),
        ("sigpending", libc::RLIMIT_SIGPENDING),
        ("stack", libc::RLIMIT_STACK),
    ];

    /// Reads Docker's `TYPE=SOFT[:HARD]` (`-1`: unlimited; HARD defaults to SOFT).
    ///
    /// # Errors
    /// An unknown type, a value that is not a number, a soft limit above the hard one.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (name, values) = input
            .split_once('=')
            .ok_or_else(|| "expected TYPE=SOFT[:HARD]".to_owned())?;
        if !Self::NAMES.iter().any(|(known, _)| *known == name) {
            let known: Vec<&str> = Self::NAMES.iter().map(|(known, _)| *known).collect();
            return Err(format!(
                "unknown ulimit type {name:?} (known: {})",
                known.join(", ")
            ));
        }
        let number = |text: &str| -> Result<u64, String> {
            match text.trim() {
                "-1" | "unlimited" => Ok(u64::MAX),
                text => text
                    .parse::<u64>()
                    .map_err(|_| format!("{text:?} is not a number")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => (number(values)?, number(values)?),
        };
        if soft > hard {
            return Err(format!(
                "the soft limit {soft} is above the hard limit {hard}"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }

    /// The `RLIMIT_*` number.
    pub fn resource(&self) -> Option<u32> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == self.name)
            .map(|(_, number)| *number)
    }
}

/// One `--add-host` line: a host name and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostEntry {
    /// The host name.
    pub host: String,
    /// Its address.
    pub ip: std::net::IpAddr,
}

impl HostEntry {
    /// Reads `HOST:IP` or `HOST=IP` (the address may be IPv6, `HOST:::1`, or buildx's
    /// `host-gateway`, refused: the step has no gateway to the host).
    ///
    /// # Errors
    /// A missing separator, an empty or malformed host name, an address that is not one.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (host, ip) = match (input.find('='), input.find(':')) {
            (Some(eq), Some(colon)) if eq < colon => input.split_at(eq),
            (Some(eq), None) => input.split_at(eq),
            (_, Some(colon)) => input.split_at(colon),
            (None, None) => return Err("expected HOST:IP or HOST=IP".to_owned()),
        };
        let ip = &ip[1..];
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("{host:?} is not a host name"));
        }
        if ip == "host-gateway" {
            return Err("host-gateway is not supported: give the address".to_owned());
        }
        let ip = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        Ok(Self {
            host: host.to_owned(),
            ip,
        })
    }

    /// The line in `/etc/hosts`: `IP\tHOST`.
    pub fn line(&self) -> String {
        format!("{}\t{}\n", self.ip, self.host)
    }
}

/// A secret file the step sees (`RUN --mount=type=secret`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFile {
    /// Its content.
    pub content: Vec<u8>,
    /// Absolute path inside the step.
    pub target: PathBuf,
    /// Its mode (`0400` by default).
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content: specs end up in error messages and logs.
        f.debug_struct("SecretFile")
            .field("target", &self.target)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

/// The default of [`StepSpec::pids_limit`]: generous for parallel compilers and test
/// runners (podman's default is 2048), far below the kernel's `pid_max` (32768 by default),
/// so a fork bomb in a step stops there.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// A step's host name unless the build names another (BuildKit's).
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// What an extra mount of a step puts at its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host file, directory or socket, bound.
    Host(PathBuf),
    /// A fresh tmpfs (`RUN --mount=type=tmpfs`), of at most `size` bytes when given: gone
    /// with the step's mount namespace, never in the layer.
    Tmpfs {
        /// `size=` in bytes; the kernel's default (half the memory) when `None`.
        size: Option<u64>,
    },
}

/// A host file or directory bound into the step's root, or a tmpfs mounted there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// What is mounted.
    pub source: MountSource,
    /// Absolute path inside the step.
    pub target: PathBuf,
    /// Read-only.
    pub readonly: bool,
}

impl StepSpec {
    /// A spec with Docker's defaults around `command`: root, `/`, a network namespace of its
    /// own with outbound access ([`Network::Default`]), host name `buildkitsandbox` (what
    /// BuildKit's steps see), at most [`DEFAULT_PIDS_LIMIT`] processes.
    pub fn new(
        lower_dirs: Vec<PathBuf>,
        upper_dir: PathBuf,
        work_dir: PathBuf,
        platform: Platform,
        command: StepCommand,
    ) -> Self {
        Self {
            lower_dirs,
            upper_dir,
            work_dir,
            platform,
            command,
            env: Vec::new(),
            user: None,
            cwd: "/".to_owned(),
            hostname: DEFAULT_HOSTNAME.to_owned(),
            network: Network::Default,
            security: Security::Sandbox,
            stdio: Stdio::Captured,
            mounts: Vec::new(),
            secrets: Vec::new(),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            pids_limit_required: false,
            scratch_parent: None,
            extra_hosts: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
        }
    }
}

/// The two forms of `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepCommand {
    /// Exec form: `RUN ["make", "all"]`; `argv[0]` is looked up in the step's `PATH`.
    Exec(Vec<String>),
    /// Shell form: `RUN make all` runs `shell... script` (`SHELL` default
    /// `["/bin/sh", "-c"]`).
    Shell {
        /// The `SHELL` instruction's argv.
        shell: Vec<String>,
        /// The command line.
        script: String,
    },
}

impl StepCommand {
    /// Shell form with the default shell `/bin/sh -c`.
    pub fn sh(script: impl Into<String>) -> Self {
        Self::Shell {
            shell: vec!["/bin/sh".to_owned(), "-c".to_owned()],
            script: script.into(),
        }
    }

    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Self::Exec(argv) => argv.clone(),
            Self::Shell { shell, script } => {
                let mut argv = shell.clone();
                argv.push(script.clone());
                argv
            }
        }
    }
}

/// `RUN --network=default|none|host`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A network namespace of its own with outbound access through user-mode networking
    /// (`slirp4netns`, started for the step): `lo` and `eth0` (10.0.2.100, gateway
    /// 10.0.2.2, DNS 10.0.2.3), the host's loopback not reachable. BuildKit's default.
    #[default]
    Default,
    /// The host's network namespace (`--allow network.host`).
    Host,
    /// A new network namespace with only `lo` (brought up).
    None,
}

/// `RUN --security=sandbox|insecure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// Docker's default capability set only.
    Sandbox,
    /// Every capability (`--allow security.insecure`).
    Insecure,
}

/// How a step's standard streams are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdio {
    /// stdin is `/dev/null`; stdout and stderr are read line by line and handed to the
    /// output callback (build steps, `xbuild run` without `-i`/`-t`).
    #[default]
    Captured,
    /// The step inherits our stdin, stdout and stderr as they are (`xbuild run -i`, a
    /// `debug shell` whose stdin is not a terminal). The output callback is not called.
    Inherit,
    /// A new pseudo-terminal: the step gets its slave as stdin, stdout, stderr, controlling
    /// terminal (in a new session) and `/dev/console`; we put our terminal in raw mode and
    /// relay bytes both ways until the step ends (`xbuild run -t`, `debug shell` on a
    /// terminal). The output callback is not called.
    Terminal,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How the step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// It exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl StepOutcome {
    /// Exit code 0.
    pub fn is_success(self) -> bool {
        self == Self::Exited { code: 0 }
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited { code } => write!(f, "exit code {code}"),
            Self::Signaled { signal } => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map_or_else(|_| signal.to_string(), |signal| signal.as_str().to_owned());
                write!(f, "killed by signal {name}")
            }
        }
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn host_entries_read_both_separators_and_ipv6() {
        let entry = HostEntry::parse("db:10.0.0.2").unwrap();
        assert_eq!(
            (entry.host.as_str(), entry.line()),
            ("db", "10.0.0.2\tdb\n".to_owned())
        );
        let entry = HostEntry::parse("db=10.0.0.2").unwrap();
        assert_eq!(entry.ip.to_string(), "10.0.0.2");
        let entry = HostEntry::parse("v6:::1").unwrap();
        assert_eq!(entry.ip.to_string(), "::1");
        let entry = HostEntry::parse("v6=fd00::1").unwrap();
        assert_eq!(
            (entry.host.as_str(), entry.ip.to_string()),
            ("v6", "fd00::1".to_owned())
        );
        for bad in [
            "nohost",
            ":1.2.3.4",
            "h:300.1.1.1",
            "h:host-gateway",
            "a b:1.2.3.4",
        ] {
            assert!(HostEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits_read_docker_spelling() {
        let limit = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((limit.soft, limit.hard), (1024, 2048));
        assert_eq!(limit.resource(), Some(libc::RLIMIT_NOFILE));
        let limit = Ulimit::parse("core=-1").unwrap();
        assert_eq!((limit.soft, limit.hard), (u64::MAX, u64::MAX));
        for bad in ["nofile", "bogus=1", "nofile=x", "nofile=2:1", "nproc=1:y"] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }
}

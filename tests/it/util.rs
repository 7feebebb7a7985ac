//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command for the `xbuild` binary under test, with a private store.
pub fn xbuild(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xbuild"));
    command.env("XBUILD_ROOT", root.join("store"));
    command.env_remove("SOURCE_DATE_EPOCH");
    command
}

/// Runs the command, returning its output; panics if it could not start.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("xbuild runs")
}

/// The largest peak RSS (KiB) in an `XBUILD_PEAK_RSS_FILE`: one record per process, VmHWM
/// first (src/cli/mod.rs, `peak_rss_record`).
pub fn peak_rss_kib(rss_file: &Path) -> u64 {
    std::fs::read_to_string(rss_file)
        .expect("the peak RSS file")
        .lines()
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|field| field.parse::<u64>().ok())
                .expect("a VmHWM field")
        })
        .max()
        .expect("a peak RSS record")
}

/// Stdout of an output, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr of an output, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a privileged or environment-dependent test needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Running as root.
    Root,
    /// A binfmt_misc handler for this QEMU cpu name (`aarch64`, `arm`, ...).
    Binfmt(&'static str),
    /// An executable on PATH.
    Program(&'static str),
    /// The fixture base images made by `scripts/fixtures.sh`.
    Fixtures,
}

/// Checks the needs. Returns `false` (and prints `skipped: needs ...`) when one is missing,
/// so the test can return early; under `XBUILD_TEST_STRICT=1` a missing need panics
/// instead, so CI cannot go green by skipping.
pub fn require(needs: &[Need]) -> bool {
    for need in needs {
        if let Some(missing) = missing(*need) {
            if std::env::var("XBUILD_TEST_STRICT").as_deref() == Ok("1") {
                panic!("needs {missing} (XBUILD_TEST_STRICT=1)");
            }
            eprintln!("skipped: needs {missing}");
            return false;
        }
    }
    true
}

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Root => (!nix_is_root()).then(|| "root".to_owned()),
        Need::Binfmt(cpu) => {
            let entry = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{cpu}"));
            (!entry.exists()).then(|| format!("a binfmt_misc entry qemu-{cpu}"))
        }
        Need::Program(name) => which(name)
            .is_none()
            .then(|| format!("the program {name} on PATH")),
        Need::Fixtures => fixtures_dir()
            .is_none()
            .then(|| "fixtures (run scripts/fixtures.sh, or set XBUILD_FIXTURES)".to_owned()),
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The fixtures directory (`$XBUILD_FIXTURES`, else the default cache of
/// `scripts/fixtures.sh`), if it has been made.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("XBUILD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/xbuild-fixtures/current"));
    dir.join("READY").exists().then_some(dir)
}

/// The shared conformance data: `$XBUILD_CONFORMANCE_DIR`, else the first
/// `shared/conformance` walking up from the crate. Missing data is a setup bug: panic.
pub fn conformance_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XBUILD_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(current) = dir {
        let candidate = current.join("shared").join("conformance");
        if candidate.is_dir() {
            return candidate;
        }
        dir = current.parent();
    }
    panic!(
        "shared/conformance not found above {}: set XBUILD_CONFORMANCE_DIR",
        env!("CARGO_MANIFEST_DIR")
    );
}

/// A temporary directory removed at the end of the test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("xbuild-test-")
        .tempdir()
        .expect("temp dir")
}

/// Starts a private dockerd (own socket, data root, no iptables) for the test's lifetime.
pub struct Dockerd {
    pid: i32,
    /// The daemon's unix socket.
    pub socket: PathBuf,
}

impl Dockerd {
    /// Starts it in `dir`; `None` when it does not answer within 30 s.
    pub fn start(dir: &Path) -> Option<Self> {
        let socket = dir.join("docker.sock");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--bridge=none"])
            .stdout(std::fs::File::create(dir.join("dockerd.log")).expect("dockerd.log"))
            .stderr(std::fs::File::create(dir.join("dockerd.err")).expect("dockerd.err"))
            .spawn()
            .ok()?;
        let daemon = Self {
            pid: i32::try_from(child.id()).expect("a pid fits in i32"),
            socket,
        };
        for _ in 0..60 {
            if daemon
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|out| out.status.success())
            {
                return Some(daemon);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        None
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command.env("DOCKER_HOST", format!("unix://{}", self.socket.display()));
        command
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

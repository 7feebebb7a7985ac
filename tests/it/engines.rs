//! Loading a multi-platform build into the engines people run: `-o type=containerd` into a
//! private containerd (Debian's 1.6, own root, state and socket), judged by `ctr`; `--load`
//! into a fake Docker engine on a unix socket that answers `/_ping`, `/info` (with or
//! without the containerd image store) and `/images/load`, the archive it receives judged
//! by skopeo and tar. The classic path against a real dockerd 20.10 is
//! `export::load_puts_the_host_platform_under_the_tag_and_others_under_suffixed_tags`, and
//! with `oci-mediatypes=true` (the OCI-typed archive, `docker run` of the host platform)
//! `load_with_oci_media_types_into_dockerd_runs_the_host_platform`.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::util::{self, Need};

/// A private containerd for the test's lifetime: its own root, state and sockets under a
/// temporary directory, the CRI plugin off.
struct Containerd {
    pid: i32,
    socket: PathBuf,
}

impl Containerd {
    /// Starts it in `dir`; `None` when it does not answer within 30 s.
    fn start(dir: &Path) -> Option<Self> {
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("containerd.err")).unwrap())
            .spawn()
            .ok()?;
        let daemon = Self {
            pid: i32::try_from(child.id()).unwrap(),
            socket,
        };
        for _ in 0..60 {
            if daemon
                .ctr("default", &["version"])
                .output()
                .is_ok_and(|out| out.status.success())
            {
                return Some(daemon);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        None
    }

    /// A `ctr` command on this containerd, in `namespace`.
    fn ctr(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args);
        command
    }

    /// `ctr`'s stdout; panics with its output when it fails.
    fn ok(&self, namespace: &str, args: &[&str]) -> String {
        checked(
            &self.ctr(namespace, args).output().unwrap(),
            &format!("ctr {args:?}"),
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

fn checked(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        util::stdout(output),
        util::stderr(output)
    );
    util::stdout(output)
}

/// A build context whose image records the architecture it ran on.
fn context(home: &Path) -> PathBuf {
    let ctx = home.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    )
    .unwrap();
    ctx
}

/// The `ctr images ls` line of `name`.
fn listed<'a>(list: &'a str, name: &str) -> &'a str {
    list.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
}

/// `-o type=containerd` of a two-platform build: `ctr images ls` lists the tag with both
/// platforms and the index digest xbuild printed, `ctr images check` says complete, and
/// `ctr run --platform linux/arm64` (under QEMU) prints what the arm64 RUN step wrote;
/// `unpack=false` leaves the snapshotter empty, `unpack=true` (and `name=`, several names)
/// fills it before any run.
#[test]
fn containerd_keeps_the_whole_index_and_ctr_runs_the_arm64_platform() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("containerd"),
        Need::Program("ctr"),
        Need::Program("runc"),
    ]) {
        return;
    }
    let home = util::temp_dir();
    let daemon_dir = home.path().join("containerd");
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let Some(daemon) = Containerd::start(&daemon_dir) else {
        let log = std::fs::read_to_string(daemon_dir.join("containerd.err")).unwrap_or_default();
        panic!("containerd did not start:\n{log}");
    };
    crate::build::store_with_fixtures(home.path());
    let ctx = context(home.path());
    let build = |args: &[&str]| {
        let output = util::xbuild(home.path())
            .current_dir(&ctx)
            .env("CONTAINERD_ADDRESS", &daemon.socket)
            .env_remove("CONTAINERD_NAMESPACE")
            .args(["build", "--progress", "plain"])
            .args(["--platform", "linux/amd64,linux/arm64"])
            .args(args)
            .arg(".")
            .output()
            .unwrap();
        checked(&output, "xbuild build");
        (
            util::stdout(&output).trim().to_owned(),
            util::stderr(&output),
        )
    };

    let (digest, stderr) = build(&[
        "-t",
        "xbuild-test/ctrd:1",
        "-o",
        "type=containerd,namespace=xbtest",
    ]);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(
        stderr.contains(&format!(
            "loaded into containerd on {} (namespace xbtest): docker.io/xbuild-test/ctrd:1 \
             (linux/amd64, linux/arm64: every platform under each name)",
            daemon.socket.display()
        )),
        "{stderr}"
    );
    let list = daemon.ok("xbtest", &["images", "ls"]);
    let line = listed(&list, "docker.io/xbuild-test/ctrd:1");
    assert!(line.contains(&digest), "{line}");
    assert!(
        line.contains("application/vnd.oci.image.index.v1+json"),
        "{line}"
    );
    assert!(line.contains("linux/amd64,linux/arm64"), "{line}");
    let check = daemon.ok("xbtest", &["images", "check"]);
    assert!(
        listed(&check, "docker.io/xbuild-test/ctrd:1").contains("complete"),
        "{check}"
    );
    // Nothing unpacked (unpack=false is the default, as BuildKit's).
    let snapshots = daemon.ok("xbtest", &["snapshots", "ls"]);
    assert_eq!(snapshots.lines().count(), 1, "{snapshots}");
    // Each platform runs from what was loaded (its FIFOs and runc state under the test's
    // directory, not /run/containerd).
    let fifo_dir = daemon_dir.join("fifo").display().to_string();
    let runc_root = daemon_dir.join("runc").display().to_string();
    for (platform, arch) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let ran = daemon.ok(
            "xbtest",
            &[
                "run",
                "--rm",
                "--fifo-dir",
                &fifo_dir,
                "--runc-root",
                &runc_root,
                "--platform",
                platform,
                "docker.io/xbuild-test/ctrd:1",
                &format!("xbuild-test-{arch}"),
            ],
        );
        assert_eq!(ran.trim(), arch, "{platform}");
    }
    // Nothing went to the default namespace.
    let default = daemon.ok("default", &["images", "ls", "-q"]);
    assert!(default.trim().is_empty(), "{default}");

    // unpack=true unpacks the host's platform; every name of -t and name= is loaded.
    let (digest2, _) = build(&[
        "-t",
        "xbuild-test/ctrd:2",
        "-o",
        "type=containerd,namespace=xbtest2,unpack=true,name=xbuild-test/other:3",
    ]);
    assert_eq!(digest2, digest, "the same build, cached");
    let list = daemon.ok("xbtest2", &["images", "ls"]);
    for name in [
        "docker.io/xbuild-test/ctrd:2",
        "docker.io/xbuild-test/other:3",
    ] {
        assert!(listed(&list, name).contains(&digest), "{list}");
    }
    let snapshots = daemon.ok("xbtest2", &["snapshots", "ls"]);
    assert!(snapshots.lines().count() > 1, "{snapshots}");
    let check = daemon.ok("xbtest2", &["images", "check"]);
    let line = listed(&check, "docker.io/xbuild-test/ctrd:2");
    assert!(
        line.contains("complete") && line.ends_with("true"),
        "{check}"
    );
}

/// Before any work: no name is bad input (exit 2); no containerd on the socket is a host
/// not ready (exit 3) naming the socket; attestations are refused (exit 2). No step runs.
#[test]
fn containerd_output_refuses_before_any_work() {
    if !util::require(&[Need::Root, Need::Fixtures, Need::Program("ctr")]) {
        return;
    }
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let ctx = context(home.path());
    let missing = home.path().join("nothing.sock");
    // Something listens here, so the attestations' refusal is the one met.
    let listening = home.path().join("listening.sock");
    let _listener = UnixListener::bind(&listening).unwrap();
    let cases: [(&[&str], &Path, i32, String); 3] = [
        (
            &["-o", "type=containerd"],
            &missing,
            2,
            "type=containerd needs a name".to_owned(),
        ),
        (
            &["-t", "app:1", "-o", "type=containerd"],
            &missing,
            3,
            format!("no containerd answers on {}", missing.display()),
        ),
        (
            &["-t", "app:1", "--sbom=true", "-o", "type=containerd"],
            &listening,
            2,
            "type=containerd (containerd 1.6 keeps no referrers)".to_owned(),
        ),
    ];
    for (args, socket, code, fragment) in cases {
        let output = util::xbuild(home.path())
            .current_dir(&ctx)
            .env("CONTAINERD_ADDRESS", format!("unix://{}", socket.display()))
            .args(["build", "--progress", "plain"])
            .args(args)
            .arg(".")
            .output()
            .unwrap();
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&fragment), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("RUN uname"),
            "{args:?} ran a step: {stderr}"
        );
    }
}

/// A fake Docker engine on a unix socket: answers `/_ping`, `/info` (with the containerd
/// image store's `DriverStatus` or a classic one) and `/images/load`, keeping what it was
/// sent.
struct FakeEngine {
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    loaded: PathBuf,
}

impl FakeEngine {
    fn start(dir: &Path, containerd_store: bool) -> Self {
        let socket = dir.join("docker.sock");
        let loaded = dir.join("loaded.tar");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, body_path) = (Arc::clone(&requests), loaded.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut head = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    head.push(line.trim_end().to_owned());
                    line.clear();
                }
                let Some(request) = head.first().cloned() else {
                    continue;
                };
                let length: u64 = head
                    .iter()
                    .find_map(|h| {
                        h.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                let mut body = Vec::new();
                reader.by_ref().take(length).read_to_end(&mut body).unwrap();
                seen.lock().unwrap().push(request.clone());
                let reply = if request.starts_with("GET /_ping") {
                    "OK".to_owned()
                } else if request.starts_with("GET /info") {
                    if containerd_store {
                        r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#.to_owned()
                    } else {
                        r#"{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#
                            .to_owned()
                    }
                } else if request.starts_with("POST /images/load") {
                    std::fs::write(&body_path, &body).unwrap();
                    "{\"stream\":\"Loaded image: fake\\n\"}\n".to_owned()
                } else {
                    String::new()
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Self {
            socket,
            requests,
            loaded,
        }
    }
}

/// `--load` of two platforms: an engine with the containerd image store (told by
/// `/info`'s `DriverStatus`, as buildx tells it) gets an OCI archive of the whole index,
/// named after the tag (skopeo reads it, with both platforms and the digest xbuild
/// printed); a classic engine gets a docker-archive with the host's platform under the tag
/// and the other under `tag-arm64`, and the output says so.
#[test]
fn load_sends_the_whole_index_to_an_engine_with_the_containerd_image_store() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("skopeo"),
        Need::Program("tar"),
    ]) {
        return;
    }
    if xbuild::platform::host() != xbuild::platform::Platform::parse("linux/amd64").unwrap() {
        eprintln!("skipped: the expectations are written for an amd64 host");
        return;
    }
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let ctx = context(home.path());
    for containerd_store in [true, false] {
        let engine_dir = home.path().join(if containerd_store {
            "containerd"
        } else {
            "classic"
        });
        std::fs::create_dir_all(&engine_dir).unwrap();
        let engine = FakeEngine::start(&engine_dir, containerd_store);
        let output = util::xbuild(home.path())
            .current_dir(&ctx)
            .env("DOCKER_HOST", format!("unix://{}", engine.socket.display()))
            .args(["build", "--progress", "plain"])
            .args(["--platform", "linux/amd64,linux/arm64"])
            .args(["-t", "xbuild-test/fake:1", "--load", "."])
            .output()
            .unwrap();
        checked(&output, "xbuild build --load");
        let digest = util::stdout(&output).trim().to_owned();
        let stderr = util::stderr(&output);
        let requests = engine.requests.lock().unwrap().clone();
        assert!(
            requests.iter().any(|r| r.starts_with("GET /info")),
            "{requests:?}"
        );
        assert!(
            requests.iter().any(|r| r.starts_with("POST /images/load")),
            "{requests:?}"
        );
        let archive = engine.loaded.display().to_string();
        let listing = checked(
            &Command::new("tar")
                .arg("-tf")
                .arg(&archive)
                .output()
                .unwrap(),
            "tar -tf",
        );
        if containerd_store {
            assert!(listing.lines().any(|l| l == "index.json"), "{listing}");
            assert!(!listing.lines().any(|l| l == "manifest.json"), "{listing}");
            let raw = checked(
                &Command::new("skopeo")
                    .args(["inspect", "--raw"])
                    .arg(format!("oci-archive:{archive}:1"))
                    .output()
                    .unwrap(),
                "skopeo inspect --raw",
            );
            let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
            let platforms: Vec<String> = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
                .collect();
            assert_eq!(
                platforms,
                ["\"linux\"/\"amd64\"", "\"linux\"/\"arm64\""],
                "{raw}"
            );
            let index_json = checked(
                &Command::new("tar")
                    .args(["-xOf", &archive, "index.json"])
                    .output()
                    .unwrap(),
                "tar -xOf index.json",
            );
            let top: serde_json::Value = serde_json::from_str(&index_json).unwrap();
            let entry = &top["manifests"][0];
            assert_eq!(entry["digest"], digest.as_str(), "{index_json}");
            assert_eq!(
                entry["annotations"]["io.containerd.image.name"], "docker.io/xbuild-test/fake:1",
                "{index_json}"
            );
            assert!(
                stderr.contains(
                    "(containerd image store): xbuild-test/fake:1 (linux/amd64, linux/arm64: \
                     every platform under each name)"
                ),
                "{stderr}"
            );
        } else {
            assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
            let manifest = checked(
                &Command::new("tar")
                    .args(["-xOf", &archive, "manifest.json"])
                    .output()
                    .unwrap(),
                "tar -xOf manifest.json",
            );
            let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
            let tags: Vec<&serde_json::Value> = manifest
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| &entry["RepoTags"])
                .collect();
            assert_eq!(
                tags,
                [
                    &serde_json::json!(["xbuild-test/fake:1"]),
                    &serde_json::json!(["xbuild-test/fake:1-arm64"])
                ],
                "{manifest}"
            );
            for (tag, arch) in [
                ("xbuild-test/fake:1", "amd64"),
                ("xbuild-test/fake:1-arm64", "arm64"),
            ] {
                let inspected = checked(
                    &Command::new("skopeo")
                        .args(["inspect", "--format", "{{.Architecture}}"])
                        .arg(format!("docker-archive:{archive}:{tag}"))
                        .output()
                        .unwrap(),
                    "skopeo inspect docker-archive",
                );
                assert_eq!(inspected.trim(), arch, "{tag}");
            }
            assert!(
                stderr.contains(
                    "the Docker engine keeps images in its classic store, one platform per tag"
                ),
                "{stderr}"
            );
        }
    }
}

/// `-o type=docker,oci-mediatypes=true` without `dest` (a load, as `--load` with that key)
/// into a private dockerd 20.10 (a classic store): the OCI-typed docker archive is loaded,
/// the host's platform under the tag and arm64 under `tag-arm64` with the same note as the
/// docker-typed load, `docker image inspect` shows each with its architecture and `docker
/// run` of the tag prints what the host platform's RUN step wrote.
#[test]
fn load_with_oci_media_types_into_dockerd_runs_the_host_platform() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("dockerd"),
        Need::Program("docker"),
    ]) {
        return;
    }
    if xbuild::platform::host() != xbuild::platform::Platform::parse("linux/amd64").unwrap() {
        eprintln!("skipped: the expectations are written for an amd64 host");
        return;
    }
    let home = util::temp_dir();
    let daemon_dir = home.path().join("dockerd");
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let Some(daemon) = util::Dockerd::start(&daemon_dir) else {
        let log = std::fs::read_to_string(daemon_dir.join("dockerd.err")).unwrap_or_default();
        panic!("dockerd did not start:\n{log}");
    };
    crate::build::store_with_fixtures(home.path());
    let ctx = context(home.path());
    let output = util::xbuild(home.path())
        .current_dir(&ctx)
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket.display()))
        .args(["build", "--progress", "plain"])
        .args(["--platform", "linux/amd64,linux/arm64"])
        .args(["-t", "xbuild-test/ocild:1"])
        .args(["-o", "type=docker,oci-mediatypes=true", "."])
        .output()
        .unwrap();
    checked(&output, "xbuild build -o type=docker,oci-mediatypes=true");
    let stderr = util::stderr(&output);
    assert!(
        stderr.contains(
            "linux/amd64 is loaded as xbuild-test/ocild:1, the others as xbuild-test/ocild:1-arm64"
        ),
        "{stderr}"
    );
    for (tag, arch) in [
        ("xbuild-test/ocild:1", "amd64"),
        ("xbuild-test/ocild:1-arm64", "arm64"),
    ] {
        let inspected = checked(
            &daemon
                .docker()
                .args(["image", "inspect", "--format", "{{.Architecture}}", tag])
                .output()
                .unwrap(),
            "docker image inspect",
        );
        assert_eq!(inspected.trim(), arch, "{tag}");
    }
    let ran = checked(
        &daemon
            .docker()
            .args(["run", "--rm", "--network", "none", "xbuild-test/ocild:1"])
            .output()
            .unwrap(),
        "docker run",
    );
    assert_eq!(ran.trim(), "x86_64");
}

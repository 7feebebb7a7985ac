//! Native build nodes over SSH: a real OpenSSH `sshd` in a network namespace of its own
//! (a veth pair to this one) is the linux/arm64 node of a builder; it runs xbuild from this
//! build with a store of its own (arm64 steps run there under emulation, which is fine: what
//! matters is that the work happens on the node). Judged by the index digest of a purely
//! local build, skopeo, the node's store, the progress lines, and exit codes.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::attest::assert_valid_spdx;
use crate::util::{self, Need};

const EPOCH: &str = "1700000000";

const DOCKERFILE: &str = r#"
FROM busybox
ARG TARGETARCH
COPY hello.txt /hello.txt
RUN echo "ran-on $(uname -m) for $TARGETARCH" && uname -m > /arch
CMD ["/bin/cat", "/arch"]
"#;

fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("ip"),
        Need::Program("ssh"),
        Need::Program("ssh-keygen"),
        Need::Program("skopeo"),
    ]) && {
        let present = Path::new("/usr/sbin/sshd").exists();
        if !present {
            // Same rule as `require`: a missing sshd fails under XBUILD_TEST_STRICT=1.
            assert!(
                std::env::var("XBUILD_TEST_STRICT").as_deref() != Ok("1"),
                "needs /usr/sbin/sshd (openssh-server) (XBUILD_TEST_STRICT=1)"
            );
            eprintln!("skipped: needs /usr/sbin/sshd (openssh-server)");
        }
        present
    }
}

/// A store at `store` holding the fixture images under the names `FROM busybox` resolves.
fn store_with_fixtures(store: &Path) {
    let fixtures = util::fixtures_dir().expect("fixtures checked by require");
    let status = Command::new("cp")
        .arg("-al")
        .arg(fixtures.join("oci"))
        .arg(store)
        .status()
        .unwrap();
    assert!(status.success());
    let index = std::fs::read_to_string(store.join("index.json")).unwrap();
    let index = index
        .replace("\"busybox:latest\"", "\"docker.io/library/busybox:latest\"")
        .replace(
            "\"debian:bookworm\"",
            "\"docker.io/library/debian:bookworm\"",
        );
    std::fs::remove_file(store.join("index.json")).unwrap();
    std::fs::write(store.join("index.json"), index).unwrap();
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        util::stderr(&output)
    );
}

/// An sshd in its own network namespace, reached over a veth pair; everything is removed on
/// drop (also when the test panics).
struct SshNode {
    netns: String,
    veth: String,
    address: String,
    host_address: String,
    dir: PathBuf,
    sshd: Option<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl SshNode {
    /// Starts the node; `sshd_extra` is appended to its sshd configuration.
    fn start(dir: &Path, sshd_extra: impl Fn(&str) -> String) -> Self {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", pid % 100_000);
        // /30 subnets from 10.213.0.0/16, picked from the pid so parallel runs differ.
        let block = (pid % 16_000) * 4 + n * 4;
        let (third, fourth) = ((block / 256) % 256, block % 256);
        let host_address = format!("10.213.{third}.{}", fourth + 1);
        let node_address = format!("10.213.{third}.{}", fourth + 2);
        let mut node = Self {
            netns: format!("xbnode-{tag}"),
            veth: format!("xbh{tag}"),
            address: node_address.clone(),
            host_address: host_address.clone(),
            dir: dir.to_path_buf(),
            sshd: None,
        };
        let peer = format!("xbn{tag}");
        ip(&["netns", "add", &node.netns]);
        ip(&[
            "link", "add", &node.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &node.netns]);
        ip(&[
            "addr",
            "add",
            &format!("{host_address}/30"),
            "dev",
            &node.veth,
        ]);
        ip(&["link", "set", &node.veth, "up"]);
        ip(&[
            "-n",
            &node.netns,
            "addr",
            "add",
            &format!("{node_address}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &node.netns, "link", "set", &peer, "up"]);
        ip(&["-n", &node.netns, "link", "set", "lo", "up"]);

        for (key, kind) in [("host_key", "ed25519"), ("id", "ed25519")] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .unwrap();
            assert!(status.success());
        }
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let extra = sshd_extra(&host_address);
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress {node_address}\nPort 22\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {dir}/sshd.pid\n{extra}",
                dir = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {dir}/id\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking accept-new\n  \
                 LogLevel ERROR\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        node.start_sshd();
        node
    }

    fn start_sshd(&mut self) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        self.sshd = Some(child);
        let address: SocketAddr = format!("{}:22", self.address).parse().unwrap();
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "sshd did not listen on {address}: {}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_sshd(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoint(&self, store: &Path) -> String {
        format!(
            "ssh://root@{}?xbuild={}&root={}",
            self.address,
            env!("CARGO_BIN_EXE_xbuild"),
            store.display()
        )
    }
}

impl Drop for SshNode {
    fn drop(&mut self) {
        self.stop_sshd();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// xbuild with the store `store`, the test's builders file and ssh configuration.
fn xbuild(dir: &Path, store: &str) -> Command {
    let mut command = util::xbuild(dir);
    command
        .env("XBUILD_ROOT", dir.join(store))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XBUILD_SSH_CONFIG", dir.join("ssh_config"));
    command
}

fn build(dir: &Path, store: &str, extra: &[&str]) -> Output {
    let mut command = xbuild(dir, store);
    command
        .current_dir(dir.join("ctx"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--progress",
            "plain",
            "-t",
            "app:1",
        ])
        .args(extra)
        .arg(".");
    util::run(&mut command)
}

fn digest(output: &Output) -> String {
    assert!(
        output.status.success(),
        "build failed:\n{}",
        util::stderr(output)
    );
    util::stdout(output).trim().to_owned()
}

/// The index named `app:1` in a store, read by skopeo: its digest and platforms.
fn skopeo_index(dir: &Path, store: &str) -> (String, Vec<String>) {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:docker.io/library/app:1",
            dir.join(store).display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    let index: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let platforms = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    (crate::regenv::digest_of(&output.stdout), platforms)
}

fn cache_records(store: &Path) -> usize {
    std::fs::read_dir(store.join("cache"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// A docker-registry, killed on drop.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node, and a registry listening on this side's veth address, which both sides reach;
/// plain HTTP is allowed for it on both (on the node through sshd's SetEnv). Returns the
/// node, the registry's `host:port` and the registry process.
fn node_and_registry(dir: &Path) -> (SshNode, String, Registry) {
    node_and_registry_with(dir, "")
}

/// As [`node_and_registry`], with `extra` appended to the registry's configuration.
fn node_and_registry_with(dir: &Path, extra: &str) -> (SshNode, String, Registry) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = SshNode::start(dir, |host| {
        format!("SetEnv XBUILD_INSECURE_REGISTRIES={host}:{port}\n")
    });
    let registry = format!("{}:{port}", node.host_address);
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    std::fs::write(
        dir.join("registry.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {registry}\n{extra}",
            dir.join("registry").display()
        ),
    )
    .unwrap();
    let process = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(&registry).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "no registry");
        std::thread::sleep(Duration::from_millis(50));
    }
    (node, registry, process)
}

/// The bytes the ssh channel of node `name` moved, from the build's note: (sent, received).
fn ssh_traffic(stderr: &str, name: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|line| line.contains(&format!("[node {name}] ssh: sent ")))
        .unwrap_or_else(|| panic!("no ssh traffic note:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{line}");
    (numbers[0], numbers[1])
}

/// `skopeo inspect --raw` of `reference` in the registry: its digest and its JSON.
fn skopeo_raw(reference: &str) -> (String, serde_json::Value) {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    (
        crate::regenv::digest_of(&output.stdout),
        serde_json::from_slice(&output.stdout).unwrap(),
    )
}

#[test]
fn arm64_node_over_ssh_gives_the_local_index_and_fails_clearly_when_stopped() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from the context\n").unwrap();
    std::fs::write(ctx.join("ignored.log"), "not sent\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
    for store in ["local-store", "store", "node-store"] {
        store_with_fixtures(&dir.join(store));
    }

    // The reference: everything here.
    let local = digest(&build(dir, "local-store", &["--builder", "default"]));

    let mut node = SshNode::start(dir, |_| String::new());
    let node_store = dir.join("node-store");
    let mut create = xbuild(dir, "store");
    create.args([
        "builder",
        "create",
        "--name",
        "arm",
        "--node",
        &format!("linux/arm64={}", node.endpoint(&node_store)),
        "--use",
    ]);
    let output = util::run(&mut create);
    assert!(output.status.success(), "{}", util::stderr(&output));

    let output = util::run(xbuild(dir, "store").args(["builder", "ls"]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    let table = util::stdout(&output);
    let row = table
        .lines()
        .find(|line| line.contains("arm0"))
        .unwrap_or_else(|| panic!("no arm0 row:\n{table}"));
    assert!(
        row.contains(&format!("ssh://root@{}", node.address)),
        "{table}"
    );
    assert!(row.contains("running"), "{table}");
    assert!(row.contains("linux/arm64"), "{table}");
    // The node is this machine in another network namespace: amd64 natively, arm64 by
    // emulation.
    assert!(row.contains("linux/amd64*"), "{table}");
    assert!(
        table.lines().any(|line| line.starts_with("arm *")),
        "{table}"
    );

    // With the node: the same index digest as the local build.
    let output = build(dir, "store", &[]);
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    let (index_digest, platforms) = skopeo_index(dir, "store");
    assert_eq!(index_digest, local);
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // The arm64 work happened on the node: its progress is named after it, its store has
    // the cache records, and no arm64 step ran here.
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("[node arm0] [linux/arm64") && line.contains("RUN")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("ran-on aarch64 for arm64")),
        "{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|line| line.contains("[linux/arm64") && !line.contains("[node arm0]")),
        "an arm64 step ran here:\n{stderr}"
    );
    assert!(
        cache_records(&node_store) > 0,
        "the node's store has no cache"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("ran-on x86_64 for amd64")),
        "{stderr}"
    );

    // A stopped sshd: a clear error before any work, exit 3, in bounded time.
    node.stop_sshd();
    let started = Instant::now();
    let output = build(dir, "store", &["--no-cache"]);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(stderr.contains("node arm0"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("RUN"), "work started:\n{stderr}");
    let output = util::run(xbuild(dir, "store").args(["builder", "ls"]));
    let table = util::stdout(&output);
    assert!(
        table
            .lines()
            .any(|line| line.contains("arm0") && line.contains("unreachable")),
        "{table}"
    );

    // --fallback=emulate builds arm64 here instead, and says so.
    let output = build(dir, "store", &["--fallback", "emulate"]);
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    assert!(stderr.contains("--fallback=emulate"), "{stderr}");
}

#[test]
fn push_with_a_node_pushes_its_platform_by_digest_and_the_index_here() {
    if !needs() || !util::require(&[Need::Program("docker-registry")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "pushed\n").unwrap();
    for store in ["local-store", "store", "node-store"] {
        store_with_fixtures(&dir.join(store));
    }
    let local = digest(&build(dir, "local-store", &["--builder", "default"]));

    let (node, registry, _registry_guard) = node_and_registry(dir);
    let node_store = dir.join("node-store");
    let output = util::run(xbuild(dir, "store").args([
        "builder",
        "create",
        "--name",
        "arm",
        "--node",
        &format!("linux/arm64={}", node.endpoint(&node_store)),
        "--use",
    ]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    let reference = format!("{registry}/app:1");
    let output = util::run(
        xbuild(dir, "store")
            .current_dir(&ctx)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("XBUILD_INSECURE_REGISTRIES", &registry)
            .args([
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--progress",
                "plain",
                "--push",
                "-t",
                &reference,
                ".",
            ]),
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    assert!(
        stderr.lines().any(|line| line.contains("[node arm0]")
            && line.contains(&format!("{registry}/app@sha256:"))),
        "the node did not push by digest:\n{stderr}"
    );
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(crate::regenv::digest_of(&output.stdout), local);
    let index: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let architectures: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(architectures, ["amd64", "arm64"]);
}

#[test]
fn a_pushing_node_sends_back_only_manifests_and_shares_a_registry_cache() {
    if !needs() || !util::require(&[Need::Program("docker-registry")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    // A context large enough that the node's archive outweighs its progress lines.
    let big: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(ctx.join("hello.txt"), &big).unwrap();
    for store in [
        "local-store",
        "archive-store",
        "store",
        "node-store",
        "store2",
        "node-store2",
    ] {
        store_with_fixtures(&dir.join(store));
    }
    let annotations = [
        "--annotation",
        "index:org.opencontainers.image.description=two sides",
        "--annotation",
        "manifest[linux/arm64]:com.example.side=arm",
    ];
    let local = digest(&build(
        dir,
        "local-store",
        &[&["--builder", "default"][..], &annotations].concat(),
    ));

    let (node, registry, _registry_guard) = node_and_registry(dir);
    for (name, store) in [("arm", "node-store"), ("arm2", "node-store2")] {
        let output = util::run(xbuild(dir, "store").args([
            "builder",
            "create",
            "--name",
            name,
            "--node",
            &format!("linux/arm64={}", node.endpoint(&dir.join(store))),
        ]));
        assert!(output.status.success(), "{}", util::stderr(&output));
    }
    let reference = format!("{registry}/app:1");
    let cache = format!("{registry}/app:cache");
    let run = |store: &str, builder: &str, extra: &[&str]| {
        util::run(
            xbuild(dir, store)
                .current_dir(&ctx)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .env("XBUILD_INSECURE_REGISTRIES", &registry)
                .args([
                    "build",
                    "--builder",
                    builder,
                    "--platform",
                    "linux/amd64,linux/arm64",
                    "--progress",
                    "plain",
                ])
                .args(annotations)
                .args(extra)
                .arg("."),
        )
    };

    // Into the store: the node's whole archive comes back.
    let output = run("archive-store", "arm", &["-t", "app:1"]);
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    let (sent_archive, received_archive) = ssh_traffic(&stderr, "arm0");

    // A push: the node pushes, only manifests and configs come back; the registry cache is
    // written by both sides, one after the other.
    let output = run(
        "store",
        "arm",
        &[
            "--push",
            "-t",
            &reference,
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    let (sent_push, received_push) = ssh_traffic(&stderr, "arm0");
    eprintln!(
        "ssh bytes: store build sent {sent_archive} received {received_archive}; \
         push sent {sent_push} received {received_push}"
    );
    assert!(
        received_push * 4 < received_archive,
        "the push brought back {received_push} bytes, the store build {received_archive}"
    );
    // What the registry holds, read by skopeo: the local index, with its annotation, and
    // the node's manifest with its own; every blob is there (skopeo copies the image out).
    let (index_digest, index) = skopeo_raw(&reference);
    assert_eq!(index_digest, local);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.description"],
        "two sides"
    );
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, manifest) = skopeo_raw(&format!("{registry}/app@{arm}"));
    assert_eq!(manifest["annotations"]["com.example.side"], "arm");
    let copied = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:app", dir.join("copied").display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", util::stderr(&copied));
    // The node's layers did not come here.
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    assert!(dir.join("copied/blobs/sha256").join(&layer).exists());
    assert!(
        !dir.join("store/blobs/sha256").join(&layer).exists(),
        "the node's layer came back"
    );
    // The cache holds both platforms, whichever side finished first.
    let (_, cache_index) = skopeo_raw(&cache);
    let mut architectures: Vec<String> = cache_index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{cache_index}"))
        .iter()
        .filter_map(|m| {
            m["platform"]["architecture"]
                .as_str()
                .map(ToOwned::to_owned)
        })
        .collect();
    architectures.sort();
    assert_eq!(architectures, ["amd64", "arm64"], "{cache_index}");

    // Fresh stores on both sides: the node reads the registry cache itself, so no RUN step
    // runs anywhere.
    let output = run(
        "store2",
        "arm2",
        &[
            "--push",
            "-t",
            &reference,
            "--cache-from",
            &format!("type=registry,ref={cache}"),
        ],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    assert!(
        !stderr.contains("ran-on aarch64") && !stderr.contains("ran-on x86_64"),
        "a RUN step ran:\n{stderr}"
    );
    let run_step = stderr
        .lines()
        .find(|line| line.contains("[node arm20] [linux/arm64") && line.contains("RUN"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no arm64 RUN step:\n{stderr}"))
        .to_owned();
    assert!(
        stderr
            .lines()
            .any(|line| line == format!("{run_step} CACHED")),
        "the node's RUN step was not cached:\n{stderr}"
    );

    // A docker-image:// named context is resolved by the node (an image named `base`
    // exists nowhere else, so without it the node's FROM would fail).
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("Dockerfile"),
        "FROM base\nARG TARGETARCH\nRUN echo \"named-$TARGETARCH\" > /named\n",
    )
    .unwrap();
    let output = run(
        "store2",
        "arm2",
        &[
            "-f",
            other.join("Dockerfile").to_str().unwrap(),
            "--build-context",
            "base=docker-image://docker.io/library/busybox:latest",
        ],
    );
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("[node arm20] [linux/arm64") && line.contains("FROM")),
        "{stderr}"
    );
}

/// A builder whose linux/arm64 node is started; its node store and this side's hold the
/// fixtures. Returns the node (stopped on drop).
fn started_node(dir: &Path) -> SshNode {
    for store in ["store", "node-store"] {
        store_with_fixtures(&dir.join(store));
    }
    let node = SshNode::start(dir, |_| String::new());
    let create = util::run(xbuild(dir, "store").args([
        "builder",
        "create",
        "--name",
        "arm",
        "--node",
        &format!("linux/arm64={}", node.endpoint(&dir.join("node-store"))),
        "--use",
    ]));
    assert!(create.status.success(), "{}", util::stderr(&create));
    node
}

/// `--ssh` (an agent of the user's, and key files loaded into an agent xbuild starts) and
/// `--build-context NAME=DIR` reach a node: its step lists the agents' keys over the agent
/// protocol, through the socket the connection forwards; a named directory goes over the
/// channel after its own `.dockerignore`, and one the build does not read is not sent.
/// Judged with skopeo and umoci (the images' files, both platforms) and the ssh byte count.
#[test]
fn ssh_agents_and_named_directories_reach_the_node() {
    if !needs() || !util::require(&[Need::Program("ssh-agent"), Need::Program("umoci")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let _node = started_node(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\n\
         COPY --from=extra / /extra/\n\
         COPY --from=tools list-keys.pl /t/\n\
         RUN --mount=type=ssh perl /t/list-keys.pl > /default-keys\n\
         RUN --mount=type=ssh,id=deploy,required=true perl /t/list-keys.pl > /deploy-keys\n",
    )
    .unwrap();
    let (tools, extra, unused) = (dir.join("tools"), dir.join("extra"), dir.join("unused"));
    for named in [&tools, &extra, &unused] {
        std::fs::create_dir_all(named).unwrap();
    }
    std::fs::write(tools.join("list-keys.pl"), crate::stepflags::LIST_KEYS).unwrap();
    std::fs::write(extra.join("kept.txt"), "kept\n").unwrap();
    // Random bytes: the channel's byte count cannot hide them by compression.
    let noise = |size: usize| -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut urandom, &mut bytes).unwrap();
        bytes
    };
    std::fs::write(extra.join("big.bin"), noise(1 << 20)).unwrap();
    std::fs::write(extra.join(".dockerignore"), "big.bin\n").unwrap();
    std::fs::write(unused.join("unused.bin"), noise(2 << 20)).unwrap();

    let socket = dir.join("agent.sock");
    let _agent = crate::stepflags::TestAgent(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::stepflags::keygen(&dir.join("agent-key"), "key-in-the-agent");
    let added = util::run(
        Command::new("ssh-add")
            .arg("-q")
            .arg(dir.join("agent-key"))
            .env("SSH_AUTH_SOCK", &socket),
    );
    assert!(added.status.success(), "{}", util::stderr(&added));
    crate::stepflags::keygen(&dir.join("file-key"), "key-from-a-file");

    let mut command = xbuild(dir, "store");
    command
        .current_dir(&ctx)
        .env("SSH_AUTH_SOCK", &socket)
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .args(["--progress", "plain", "-t", "app:1", "--ssh", "default"])
        .arg("--ssh")
        .arg(format!("deploy={}", dir.join("file-key").display()));
    for (name, path) in [("tools", &tools), ("extra", &extra), ("unused", &unused)] {
        command
            .arg("--build-context")
            .arg(format!("{name}={}", path.display()));
    }
    let output = util::run(command.arg("."));
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("[node arm0] "), "{stderr}");
    let (sent, received) = ssh_traffic(&stderr, "arm0");
    eprintln!("ssh with --ssh and named directories: sent {sent} bytes, received {received}");
    // Neither the ignored 1 MiB file nor the unused context's 2 MiB went over the channel.
    assert!(sent < 1 << 20, "sent {sent} bytes:\n{stderr}");
    for arch in ["amd64", "arm64"] {
        let rootfs = crate::build::unpack(dir, "docker.io/library/app:1", arch);
        let read = |path: &str| std::fs::read_to_string(rootfs.join(path)).unwrap();
        assert_eq!(read("default-keys"), "key-in-the-agent\n", "{arch}");
        assert_eq!(read("deploy-keys"), "key-from-a-file\n", "{arch}");
        assert_eq!(read("extra/kept.txt"), "kept\n", "{arch}");
        assert!(!rootfs.join("extra/big.bin").exists(), "{arch}");
    }
}

/// An OCI layout context, a registry `--cache-to` two nodes write (nodes4) and extra SBOMs
/// (sbomnode) are no longer refused: such builds go on to the nodes (which do not answer
/// here, exit 3, before any work).
#[test]
fn layouts_shared_caches_and_extra_sboms_go_on_to_the_nodes() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("ssh-agent"),
        Need::Program("ssh-keygen"),
    ]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(&dir.join("store"));
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let create = util::run(xbuild(dir, "store").args([
        "builder",
        "create",
        "--name",
        "arm",
        "--node",
        "linux/arm64=ssh://root@127.0.0.1:1",
        "--use",
    ]));
    assert!(create.status.success(), "{}", util::stderr(&create));
    let layout = util::fixtures_dir().unwrap().join("oci");
    let with_layout = |dockerfile: &str| {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        util::run(
            xbuild(dir, "store")
                .current_dir(&ctx)
                .args(["build", "--progress", "plain", "--platform", "linux/arm64"])
                .arg("--build-context")
                .arg(format!(
                    "base=oci-layout://{}:busybox:latest",
                    layout.display()
                ))
                .arg("."),
        )
    };
    // Read or not, the build goes on to the node, which does not answer (exit 3).
    let read = with_layout("FROM base\nRUN echo must-not-run\n");
    let stderr = util::stderr(&read);
    assert_eq!(read.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("must-not-run"), "{stderr}");
    let unread = with_layout("FROM busybox\nRUN echo must-not-run\n");
    let stderr = util::stderr(&unread);
    assert_eq!(unread.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("must-not-run"), "{stderr}");

    // Extra SBOMs (the node scans its stages), and a registry --cache-to two nodes write,
    // go on to the nodes.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG BUILDKIT_SBOM_SCAN_CONTEXT\nRUN echo must-not-run\n",
    )
    .unwrap();
    let sbom = util::run(
        xbuild(dir, "store")
            .current_dir(&ctx)
            .args(["build", "--progress", "plain", "--platform", "linux/arm64"])
            .args([
                "--sbom=true",
                "--build-arg",
                "BUILDKIT_SBOM_SCAN_CONTEXT=true",
                ".",
            ]),
    );
    let stderr = util::stderr(&sbom);
    assert_eq!(sbom.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("arm0"), "{stderr}");
    assert!(!stderr.contains("must-not-run"), "{stderr}");
    let create = util::run(xbuild(dir, "store").args([
        "builder",
        "create",
        "--name",
        "two",
        "--node",
        "linux/arm64=ssh://root@127.0.0.1:1",
        "--node",
        "linux/arm/v7=ssh://root@127.0.0.1:2",
    ]));
    assert!(create.status.success(), "{}", util::stderr(&create));
    let two = util::run(
        xbuild(dir, "store")
            .current_dir(&ctx)
            .args(["build", "--builder", "two", "--progress", "plain"])
            .args(["--platform", "linux/arm64,linux/arm/v7"])
            .args(["--cache-to", "type=registry,ref=127.0.0.1:1/cache", "."]),
    );
    let stderr = util::stderr(&two);
    assert_eq!(two.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("two0"), "{stderr}");
    assert!(!stderr.contains("must-not-run"), "{stderr}");

    // A platform built here with --ssh and a builder of nodes: the agent, as with the
    // default builder (the node is never contacted).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\"\n",
    )
    .unwrap();
    crate::stepflags::keygen(&dir.join("key"), "key");
    let built = util::run(
        xbuild(dir, "store")
            .current_dir(&ctx)
            .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
            .arg("--ssh")
            .arg(format!("default={}", dir.join("key").display()))
            .arg("."),
    );
    assert!(built.status.success(), "{}", util::stderr(&built));
}

/// Extra SBOMs with a node: a two-stage Dockerfile whose build stage has
/// `BUILDKIT_SBOM_SCAN_STAGE=true` and whose final stage has `BUILDKIT_SBOM_SCAN_CONTEXT=true`,
/// built with `--sbom=true` for linux/arm64 on the node: the node scans the stage it built
/// and sends the scan back, this side scans the context; the platform manifest's referrers
/// are the image's SBOM, `sbom-build` and `sbom-context`, each valid SPDX (pyspdxtools), with
/// the same packages as the same build made here. Prints the bytes the channel moved with
/// and without the stage's scan (the node's step is cached the second time).
#[test]
fn a_node_scans_its_stages_for_extra_sboms() {
    if !needs() {
        return;
    }
    let Some(venv) = crate::attest::venv() else {
        return;
    };
    let temp = util::temp_dir();
    let dir = temp.path();
    let _node = started_node(dir);
    store_with_fixtures(&dir.join("local-store"));
    let ctx = dir.join("ctx");
    let package = ctx.join("node_modules/left-pad");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("package.json"),
        r#"{"name": "left-pad", "version": "1.3.0"}"#,
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm AS build\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
         RUN echo built > /built.txt\n\
         FROM busybox\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
         COPY --from=build /built.txt /built.txt\n",
    )
    .unwrap();
    let sbom_build = |store: &str, extra: &[&str]| {
        util::run(
            xbuild(dir, store)
                .current_dir(&ctx)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["build", "--platform", "linux/arm64", "--progress", "plain"])
                .args(["--sbom=true", "-t", "app:1"])
                .args(extra)
                .arg("."),
        )
    };
    // Each SBOM of app:1's arm64 manifest in `store`, by kind: its SPDX document.
    let documents = |store: &str| -> std::collections::BTreeMap<String, serde_json::Value> {
        let listed =
            util::run(xbuild(dir, store).args(["attest", "ls", "app:1", "--format", "json"]));
        assert!(listed.status.success(), "{}", util::stderr(&listed));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let blob = |digest: &str| -> serde_json::Value {
            let hex = digest.strip_prefix("sha256:").unwrap();
            serde_json::from_slice(
                &std::fs::read(dir.join(store).join("blobs/sha256").join(hex)).unwrap(),
            )
            .unwrap()
        };
        let mut documents = std::collections::BTreeMap::new();
        for row in listed.as_array().unwrap() {
            let manifest = blob(row["manifest"].as_str().unwrap());
            let kind = manifest["annotations"]["dev.xbuild.attestation"]
                .as_str()
                .unwrap()
                .to_owned();
            let statement = blob(manifest["layers"][0]["digest"].as_str().unwrap());
            documents.insert(kind, statement["predicate"].clone());
        }
        documents
    };
    // (name, version, purls) of each package.
    let packages = |document: &serde_json::Value| -> Vec<(String, String, Vec<String>)> {
        let mut listed: Vec<_> = document["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|package| {
                (
                    package["name"].as_str().unwrap_or_default().to_owned(),
                    package["versionInfo"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    package["externalRefs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|reference| reference["referenceLocator"].as_str())
                        .map(str::to_owned)
                        .collect(),
                )
            })
            .collect();
        listed.sort();
        listed
    };

    let local = sbom_build("local-store", &["--builder", "default"]);
    assert!(local.status.success(), "{}", util::stderr(&local));
    let on_node = sbom_build("store", &[]);
    let stderr = util::stderr(&on_node);
    assert!(on_node.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("[node arm0] [build 2/2] RUN")),
        "the stage was not built on the node:\n{stderr}"
    );
    let (sent, with_scan) = ssh_traffic(&stderr, "arm0");

    let (here, there) = (documents("local-store"), documents("store"));
    assert_eq!(
        there.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sbom", "sbom-build", "sbom-context"],
        "{there:?}"
    );
    assert_eq!(
        here.keys().collect::<Vec<_>>(),
        there.keys().collect::<Vec<_>>()
    );
    for (kind, document) in &there {
        assert_valid_spdx(&venv, document.to_string().as_bytes());
        assert_eq!(packages(document), packages(&here[kind]), "{kind}");
    }
    assert!(
        packages(&there["sbom-build"])
            .iter()
            .flat_map(|(_, _, purls)| purls)
            .any(|purl| purl.starts_with("pkg:deb/debian/dpkg@") && purl.contains("arch=arm64")),
        "{}",
        there["sbom-build"]
    );
    assert!(
        packages(&there["sbom-context"])
            .iter()
            .flat_map(|(_, _, purls)| purls)
            .any(|purl| purl == "pkg:npm/left-pad@1.3.0"),
        "{}",
        there["sbom-context"]
    );

    // The same build without the stage's SBOM: what the scan added to the reply.
    let without = sbom_build("store", &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=false"]);
    let stderr = util::stderr(&without);
    assert!(without.status.success(), "{stderr}");
    let (_, without_scan) = ssh_traffic(&stderr, "arm0");
    eprintln!(
        "ssh with the stage's scan: sent {sent} bytes, received {with_scan}; \
         without it: received {without_scan}"
    );
}

/// `--cache-to type=inline` with a node: the node's pushed arm64 image carries its inline
/// cache records (BuildKit's config key, read with skopeo), and a build with fresh stores on
/// both sides and `--cache-from` of that image runs no RUN step (the node reads the
/// records itself) and pushes the same index digest.
#[test]
fn a_node_writes_and_reads_an_inline_cache() {
    if !needs() || !util::require(&[Need::Program("docker-registry")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "inline\n").unwrap();
    for store in ["store", "node-store", "store2", "node-store2"] {
        store_with_fixtures(&dir.join(store));
    }
    let (node, registry, _registry_guard) = node_and_registry(dir);
    for (name, store) in [("arm", "node-store"), ("arm2", "node-store2")] {
        let output = util::run(xbuild(dir, "store").args([
            "builder",
            "create",
            "--name",
            name,
            "--node",
            &format!("linux/arm64={}", node.endpoint(&dir.join(store))),
        ]));
        assert!(output.status.success(), "{}", util::stderr(&output));
    }
    let reference = format!("{registry}/inline/app:1");
    let run = |store: &str, builder: &str, extra: &[&str]| {
        util::run(
            xbuild(dir, store)
                .current_dir(&ctx)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .env("XBUILD_INSECURE_REGISTRIES", &registry)
                .args(["build", "--builder", builder])
                .args([
                    "--platform",
                    "linux/amd64,linux/arm64",
                    "--progress",
                    "plain",
                ])
                .args(["--push", "-t", &reference])
                .args(extra)
                .arg("."),
        )
    };
    let output = run("store", "arm", &["--cache-to", "type=inline"]);
    let first = digest(&output);
    let stderr = util::stderr(&output);
    assert!(stderr.contains("ran-on aarch64"), "{stderr}");
    let config = Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false"])
        .args(["--raw", "--override-arch", "arm64"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(config.status.success(), "{}", util::stderr(&config));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert!(
        config["moby.buildkit.cache.v0"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "no inline cache in the node's image config: {config}"
    );

    let output = run(
        "store2",
        "arm2",
        &["--cache-from", &reference, "--cache-to", "type=inline"],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), first, "{stderr}");
    assert!(
        !stderr.contains("ran-on aarch64") && !stderr.contains("ran-on x86_64"),
        "a RUN step ran:\n{stderr}"
    );
}

/// A registry behind htpasswd: the node pushes its platform and exports a registry cache
/// with the credentials of the local user (`xbuild login` here; the node has none of its
/// own), which it keeps in memory only: no file of the node's store holds the password.
/// Judged by skopeo with the credentials (the index and both platforms in the registry).
#[test]
fn a_node_pushes_with_the_local_users_credentials() {
    if !needs() || !util::require(&[Need::Program("docker-registry"), Need::Program("htpasswd")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "credentials\n").unwrap();
    for store in ["store", "node-store"] {
        store_with_fixtures(&dir.join(store));
    }
    let (user, password) = ("builder", "n0de-Secret-4f2c");
    let htpasswd = util::run(Command::new("htpasswd").args(["-Bbn", user, password]));
    assert!(htpasswd.status.success(), "{}", util::stderr(&htpasswd));
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
    let (node, registry, _registry_guard) = node_and_registry_with(
        dir,
        &format!(
            "auth:\n  htpasswd:\n    realm: nodes\n    path: {}\n",
            dir.join("htpasswd").display()
        ),
    );
    let create = util::run(xbuild(dir, "store").args([
        "builder",
        "create",
        "--name",
        "arm",
        "--node",
        &format!("linux/arm64={}", node.endpoint(&dir.join("node-store"))),
        "--use",
    ]));
    assert!(create.status.success(), "{}", util::stderr(&create));
    let docker_config = dir.join("docker");
    let with_config = |command: &mut Command| {
        command
            .env("DOCKER_CONFIG", &docker_config)
            .env("XBUILD_INSECURE_REGISTRIES", &registry);
    };
    let mut login = xbuild(dir, "store");
    with_config(&mut login);
    login.args(["login", "-u", user, "--password-stdin", &registry]);
    let output = crate::regenv::run_with_stdin(&mut login, &format!("{password}\n"));
    assert!(output.status.success(), "{}", util::stderr(&output));

    let reference = format!("{registry}/private/app:1");
    let mut command = xbuild(dir, "store");
    with_config(&mut command);
    command
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .args(["--progress", "plain", "--push", "-t", &reference])
        .arg("--cache-to")
        .arg(format!("type=registry,ref={registry}/private/app:cache"))
        .arg(".");
    let output = util::run(&mut command);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains(password), "{stderr}");
    assert!(
        stderr.lines().any(|line| line.contains("[node arm0]")
            && line.contains(&format!("{registry}/private/app@sha256:"))),
        "the node did not push by digest:\n{stderr}"
    );
    let (sent, received) = ssh_traffic(&stderr, "arm0");
    eprintln!("ssh with forwarded credentials: sent {sent} bytes, received {received}");
    let creds = format!("--creds={user}:{password}");
    let inspect = |reference: &str| {
        let output = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &creds])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", util::stderr(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let index = inspect(&reference);
    let architectures: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(architectures, ["amd64", "arm64"]);
    let cache = inspect(&format!("{registry}/private/app:cache"));
    assert!(
        cache["manifests"].as_array().is_some_and(|m| !m.is_empty()),
        "{cache}"
    );
    // Without credentials the registry refuses (the test would prove nothing otherwise).
    let anonymous = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    // The password is in no file of the node's store.
    let grep = Command::new("grep")
        .args(["-r", "-l", "-F", password])
        .arg(dir.join("node-store"))
        .output()
        .unwrap();
    assert_eq!(grep.status.code(), Some(1), "{}", util::stdout(&grep));
}

/// The size of every file under `dir`, in bytes.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            tree_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// The blob files of an OCI layout directory, sorted.
fn blob_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `skopeo inspect --raw` of the cache named `latest` in a local cache directory.
fn skopeo_cache(dir: &Path) -> (String, serde_json::Value) {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", dir.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    (
        crate::regenv::digest_of(&output.stdout),
        serde_json::from_slice(&output.stdout).unwrap(),
    )
}

/// An `oci-layout://` context and local cache directories with a node (issue 16, issue
/// 19 item 5): the node gets only the part of the layout its platform reads; a
/// `--cache-to type=local` comes back from the node and is merged into the directory
/// exactly as a purely local build writes it (same cache index digest read by skopeo, same
/// blobs: unreferenced ones removed); a `--cache-from type=local` of it, shipped to a node
/// with a fresh store, makes every RUN step cached there and here.
#[test]
fn an_oci_layout_context_and_local_caches_reach_the_node() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let _node = started_node(dir);
    for store in ["local-store", "store2", "node-store2"] {
        store_with_fixtures(&dir.join(store));
    }
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nARG TARGETARCH\nCOPY hello.txt /hello.txt\n\
         RUN echo \"ran-on $(uname -m) for $TARGETARCH\" && uname -m > /arch\n",
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    let layout = util::fixtures_dir().unwrap().join("oci");
    let context = format!("base=oci-layout://{}:busybox:latest", layout.display());
    let cache_to = |name: &str| format!("type=local,dest={},mode=max", dir.join(name).display());

    let local = build(
        dir,
        "local-store",
        &[
            "--builder",
            "default",
            "--build-context",
            &context,
            "--cache-to",
            &cache_to("cache-local"),
        ],
    );
    let local = digest(&local);
    // A stale cache there already: its blobs go when the merge replaces its records.
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile.old"),
        "FROM base\nRUN echo stale > /stale\n",
    )
    .unwrap();
    let stale = build(
        dir,
        "store",
        &[
            "--builder",
            "default",
            "-f",
            ctx.join("Dockerfile.old").to_str().unwrap(),
            "--build-context",
            &context,
            "--cache-to",
            &cache_to("cache"),
        ],
    );
    assert!(stale.status.success(), "{}", util::stderr(&stale));
    let stale_blobs = blob_names(&dir.join("cache"));
    let output = build(
        dir,
        "store",
        &[
            "--build-context",
            &context,
            "--cache-to",
            &cache_to("cache"),
        ],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    assert!(stderr.contains("[node arm0] [linux/arm64"), "{stderr}");
    let (sent, received) = ssh_traffic(&stderr, "arm0");
    let whole = tree_size(&layout);
    eprintln!(
        "ssh with an oci-layout context and a local cache-to: sent {sent} bytes (the whole \
         layout: {whole}), received {received}"
    );
    assert!(
        sent * 4 < whole,
        "sent {sent} bytes of a {whole} byte layout"
    );
    // The merged cache is the local build's, byte for byte, as skopeo reads it.
    let (merged, index) = skopeo_cache(&dir.join("cache"));
    let (expected, _) = skopeo_cache(&dir.join("cache-local"));
    assert_eq!(merged, expected, "{index}");
    let blobs = blob_names(&dir.join("cache"));
    assert_eq!(blobs, blob_names(&dir.join("cache-local")));
    assert!(
        stale_blobs.iter().any(|blob| !blobs.contains(blob)),
        "no stale blob was removed"
    );

    // Fresh stores on both sides, the cache from the directory: no RUN step runs.
    let create = util::run(xbuild(dir, "store2").args([
        "builder",
        "create",
        "--name",
        "arm2",
        "--node",
        &format!("linux/arm64={}", _node.endpoint(&dir.join("node-store2"))),
    ]));
    assert!(create.status.success(), "{}", util::stderr(&create));
    let output = build(
        dir,
        "store2",
        &[
            "--builder",
            "arm2",
            "--build-context",
            &context,
            "--cache-from",
            &format!("type=local,src={}", dir.join("cache").display()),
        ],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), local, "{stderr}");
    assert!(
        !stderr.contains("ran-on aarch64") && !stderr.contains("ran-on x86_64"),
        "a RUN step ran:\n{stderr}"
    );
    let run_step = stderr
        .lines()
        .find(|line| line.contains("[node arm20] [linux/arm64") && line.contains("RUN"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no arm64 RUN step:\n{stderr}"))
        .to_owned();
    assert!(
        stderr
            .lines()
            .any(|line| line == format!("{run_step} CACHED")),
        "the node's RUN step was not cached:\n{stderr}"
    );
    let (sent, received) = ssh_traffic(&stderr, "arm20");
    eprintln!(
        "ssh with a local cache-from: sent {sent} bytes (the cache directory: {} bytes), \
         received {received}",
        tree_size(&dir.join("cache"))
    );
}

/// A registry `--cache-to` with two nodes (issue 19 item 5): each node sends its records
/// back and this side writes one cache index holding both platforms (read by skopeo), where
/// buildx's nodes would each overwrite the other's; a `--cache-from` of it with fresh
/// stores on both nodes runs no RUN step anywhere.
#[test]
fn two_nodes_share_one_registry_cache() {
    if !needs() || !util::require(&[Need::Program("docker-registry")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    for store in [
        "store",
        "arm-store",
        "amd-store",
        "store2",
        "arm-store2",
        "amd-store2",
    ] {
        store_with_fixtures(&dir.join(store));
    }
    let (arm, registry, _registry_guard) = node_and_registry(dir);
    let amd_dir = dir.join("amd-node");
    std::fs::create_dir_all(&amd_dir).unwrap();
    let amd = SshNode::start(&amd_dir, |_| {
        format!("SetEnv XBUILD_INSECURE_REGISTRIES={registry}\n")
    });
    // The registry listens on the first node's link: the second reaches it through its own.
    ip(&[
        "-n",
        &amd.netns,
        "route",
        "add",
        "default",
        "via",
        &amd.host_address,
    ]);
    // The second node's ssh configuration is the first's (one client, two keys).
    std::fs::copy(dir.join("id.pub"), amd_dir.join("authorized_keys")).unwrap();
    for (name, suffix) in [("two", ""), ("two2", "2")] {
        let output = util::run(xbuild(dir, "store").args([
            "builder",
            "create",
            "--name",
            name,
            "--node",
            &format!(
                "linux/arm64={}",
                arm.endpoint(&dir.join(format!("arm-store{suffix}")))
            ),
            "--node",
            &format!(
                "linux/amd64={}",
                amd.endpoint(&dir.join(format!("amd-store{suffix}")))
            ),
        ]));
        assert!(output.status.success(), "{}", util::stderr(&output));
    }
    let cache = format!("{registry}/app:cache");
    let run = |store: &str, builder: &str, extra: &[&str]| {
        util::run(
            xbuild(dir, store)
                .current_dir(&ctx)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .env("XBUILD_INSECURE_REGISTRIES", &registry)
                .args(["build", "--builder", builder])
                .args(["--platform", "linux/amd64,linux/arm64"])
                .args(["--progress", "plain", "-t", "app:1"])
                .args(extra)
                .arg("."),
        )
    };
    let output = run(
        "store",
        "two",
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    let stderr = util::stderr(&output);
    let first = digest(&output);
    assert!(
        stderr.contains("[node two0] [linux/arm64") && stderr.contains("[node two1] [linux/amd64"),
        "{stderr}"
    );
    for node in ["two0", "two1"] {
        let (sent, received) = ssh_traffic(&stderr, node);
        eprintln!("ssh of node {node} with a registry cache-to: sent {sent}, received {received}");
    }
    let (_, cache_index) = skopeo_raw(&cache);
    let mut architectures: Vec<String> = cache_index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{cache_index}"))
        .iter()
        .filter_map(|m| {
            m["platform"]["architecture"]
                .as_str()
                .map(ToOwned::to_owned)
        })
        .collect();
    architectures.sort();
    assert_eq!(architectures, ["amd64", "arm64"], "{cache_index}");

    let output = run(
        "store2",
        "two2",
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let stderr = util::stderr(&output);
    assert_eq!(digest(&output), first, "{stderr}");
    assert!(
        !stderr.contains("ran-on aarch64") && !stderr.contains("ran-on x86_64"),
        "a RUN step ran:\n{stderr}"
    );
    for (node, platform) in [("two20", "linux/arm64"), ("two21", "linux/amd64")] {
        let run_step = stderr
            .lines()
            .find(|line| {
                line.contains(&format!("[node {node}] [{platform}")) && line.contains("RUN")
            })
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {platform} RUN step:\n{stderr}"))
            .to_owned();
        assert!(
            stderr
                .lines()
                .any(|line| line == format!("{run_step} CACHED")),
            "{node}'s RUN step was not cached:\n{stderr}"
        );
    }
}

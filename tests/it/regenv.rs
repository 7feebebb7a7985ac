//! Registries for the push/pull/auth tests: a `docker-registry` on 127.0.0.1 (a free port,
//! its own config and storage in a temp dir) in three set-ups: plain HTTP; HTTPS with a CA
//! made here by `openssl` and htpasswd basic auth; plain HTTP behind [`FaultProxy`], which
//! drops every fifth connection, answers 500 to one request in five and can serve a
//! tampered blob. skopeo, the outside judge, always talks to the registry directly.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    reason = "helpers shared by the test modules"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::util::{self, Need};

/// The user and password of the HTTPS set-up.
pub const USER: &str = "xbuilder";
/// Contains a marker the tests look for in output: it must never appear.
pub const PASSWORD: &str = "s3cret-Pa55-9f2e";

/// Which set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Plain HTTP on loopback.
    Plain,
    /// HTTPS with a test CA, and htpasswd basic auth.
    TlsAuth,
    /// Plain HTTP behind the fault-injecting proxy.
    Faulty,
}

/// Skips (or, under XBUILD_TEST_STRICT=1, fails) when the tools are missing.
pub fn ready(setup: Setup) -> bool {
    let mut needs = vec![
        Need::Program("docker-registry"),
        Need::Program("skopeo"),
        Need::Fixtures,
    ];
    if setup == Setup::TlsAuth {
        needs.push(Need::Program("openssl"));
        needs.push(Need::Program("htpasswd"));
    }
    util::require(&needs)
}

/// A running registry (and proxy), removed on drop.
pub struct TestRegistry {
    /// The set-up.
    pub setup: Setup,
    /// Where xbuild talks to: the registry, or the proxy in front of it.
    pub host: String,
    /// The registry itself (skopeo's address).
    pub direct: String,
    /// The proxy, in the faulty and tamper set-ups.
    pub proxy: Option<FaultProxy>,
    /// Temp dir: config, storage, certificates, and the test's own files.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(proxy) = &self.proxy {
            proxy.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl TestRegistry {
    /// Starts a registry in this set-up. `proxy` puts the fault proxy in front (always for
    /// [`Setup::Faulty`]; a proxy without faults for the tamper test in the plain set-up).
    pub fn start(setup: Setup) -> Self {
        Self::start_with_proxy(setup, setup == Setup::Faulty)
    }

    /// As [`Self::start`], forcing a proxy (faults only in [`Setup::Faulty`]).
    pub fn start_with_proxy(setup: Setup, proxy: bool) -> Self {
        let dir = util::temp_dir();
        let port = free_port();
        let direct = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {direct}\n",
            dir.path().join("data").display()
        );
        if setup == Setup::TlsAuth {
            make_certificates(dir.path());
            let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
            std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: xbuild-test\n    path: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display(),
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&direct).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {direct}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let proxy = proxy.then(|| FaultProxy::start(&direct, setup == Setup::Faulty));
        let host = proxy
            .as_ref()
            .map_or_else(|| direct.clone(), |p| p.host.clone());
        Self {
            setup,
            host,
            direct,
            proxy,
            dir,
            child,
        }
    }

    /// The CA certificate of the HTTPS set-up.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A skopeo command with the TLS and credential options for `direct`, in the given
    /// roles (`src`, `dest`, or `` for inspect).
    pub fn skopeo(&self, args: &[&str], roles: &[&str]) -> Command {
        let mut command = Command::new("skopeo");
        command.arg("--insecure-policy");
        let sub = args[0];
        command.arg(sub);
        for role in roles {
            let prefix = if role.is_empty() {
                String::from("--")
            } else {
                format!("--{role}-")
            };
            match self.setup {
                Setup::TlsAuth => {
                    let certs = self.dir.path().join("skopeo-certs");
                    std::fs::create_dir_all(&certs).unwrap();
                    std::fs::copy(self.ca(), certs.join("ca.crt")).unwrap();
                    command.arg(format!("{prefix}cert-dir={}", certs.display()));
                    command.arg(format!("{prefix}creds={USER}:{PASSWORD}"));
                }
                _ => {
                    command.arg(format!("{prefix}tls-verify=false"));
                }
            }
        }
        command.args(&args[1..]);
        command
    }

    /// `skopeo inspect --raw` of `docker://direct/<name>`.
    pub fn skopeo_raw(&self, name: &str) -> Vec<u8> {
        let reference = format!("docker://{}/{name}", self.direct);
        run_ok(&mut self.skopeo(&["inspect", "--raw", &reference], &[""])).stdout
    }

    /// Copies the fixture image `busybox:latest` (all platforms, or one with
    /// `--override-arch`) to `direct/<name>` with skopeo.
    pub fn skopeo_push_fixture(&self, name: &str, arch: Option<&str>) {
        let source = format!("oci:{}:busybox:latest", fixture_layout().display());
        let dest = format!("docker://{}/{name}", self.direct);
        let mut args = vec!["copy", "--quiet"];
        let arch_arg;
        match arch {
            Some(arch) => {
                arch_arg = format!("--override-arch={arch}");
                args.push(&arch_arg);
            }
            None => args.push("--all"),
        }
        args.push(&source);
        args.push(&dest);
        run_ok(&mut self.skopeo(&args, &["dest"]));
    }

    /// An xbuild command with a private store, Docker config and (HTTPS) the CA in
    /// `certs.d`.
    pub fn xbuild(&self, home: &Path) -> Command {
        let mut command = util::xbuild(home);
        command.env("DOCKER_CONFIG", home.join("docker"));
        command.env_remove("XBUILD_INSECURE_REGISTRIES");
        if self.setup == Setup::TlsAuth {
            let certs = home.join("store").join("certs.d").join(&self.host);
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::copy(self.ca(), certs.join("ca.crt")).unwrap();
        }
        command
    }

    /// Logs xbuild in (HTTPS set-up) through `--password-stdin`.
    pub fn login(&self, home: &Path) {
        if self.setup != Setup::TlsAuth {
            return;
        }
        let output = run_with_stdin(
            self.xbuild(home)
                .args(["login", "-u", USER, "--password-stdin", &self.host]),
            &format!("{PASSWORD}\n"),
        );
        assert!(output.status.success(), "login: {}", util::stderr(&output));
    }
}

/// Runs a command with text on stdin.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Makes `ca.crt`/`ca.key` (a test CA) and `server.crt`/`server.key` for 127.0.0.1 and
/// `localhost` in `dir`, with `openssl`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(dir));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=xbuild test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// The fixture OCI layout (`busybox:latest`, `debian:bookworm`).
pub fn fixture_layout() -> PathBuf {
    util::fixtures_dir()
        .expect("fixtures are ready")
        .join("oci")
}

/// sha256 of bytes, `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Reads a blob of a layout.
pub fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    std::fs::read(layout.join("blobs").join("sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", layout.display()))
}

/// Reads a blob as JSON.
pub fn json_blob(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// The descriptor named `name` in a layout's index.json.
pub fn named(layout: &Path, name: &str) -> Option<serde_json::Value> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .cloned()
}

/// The fixture busybox image: index digest, and per platform (`linux/arm/v7`) the manifest
/// digest.
pub struct Fixture {
    /// The index digest.
    pub index: String,
    /// Platform → manifest digest.
    pub platforms: BTreeMap<String, String>,
    /// Every blob digest of the image (index, manifests, configs, layers).
    pub blobs: Vec<String>,
}

/// Reads the fixture busybox image.
pub fn busybox() -> Fixture {
    let layout = fixture_layout();
    let top = named(&layout, "busybox:latest").expect("busybox:latest in the fixtures");
    let index_digest = top["digest"].as_str().unwrap().to_owned();
    let index = json_blob(&layout, &index_digest);
    let mut platforms = BTreeMap::new();
    let mut blobs = vec![index_digest.clone()];
    for entry in index["manifests"].as_array().unwrap() {
        let p = &entry["platform"];
        let mut name = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        if let Some(variant) = p["variant"].as_str() {
            name.push('/');
            name.push_str(variant);
        }
        let digest = entry["digest"].as_str().unwrap().to_owned();
        let manifest = json_blob(&layout, &digest);
        blobs.push(digest.clone());
        blobs.push(manifest["config"]["digest"].as_str().unwrap().to_owned());
        for layer in manifest["layers"].as_array().unwrap() {
            blobs.push(layer["digest"].as_str().unwrap().to_owned());
        }
        platforms.insert(name, digest);
    }
    blobs.sort();
    blobs.dedup();
    Fixture {
        index: index_digest,
        platforms,
        blobs,
    }
}

/// Makes a store at `home/store` holding the fixture busybox image (all platforms) under
/// `name`, as xbuild would after a build.
pub fn store_with_busybox(home: &Path, name: &str) {
    let fixture = busybox();
    let store = home.join("store");
    std::fs::create_dir_all(store.join("blobs").join("sha256")).unwrap();
    for digest in &fixture.blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::write(
            store.join("blobs").join("sha256").join(hex),
            blob(&fixture_layout(), digest),
        )
        .unwrap();
    }
    let top = named(&fixture_layout(), "busybox:latest").unwrap();
    let mut top = top.clone();
    top["annotations"]["org.opencontainers.image.ref.name"] = name.into();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [top],
    });
    std::fs::write(store.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        store.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// The blob files of a layout, by digest, each checked against its name.
pub fn layout_blobs(layout: &Path) -> Vec<String> {
    let mut digests: Vec<String> = std::fs::read_dir(layout.join("blobs").join("sha256"))
        .map(|entries| {
            entries
                .map(|entry| format!("sha256:{}", entry.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    digests.sort();
    for digest in &digests {
        assert_eq!(
            &digest_of(&blob(layout, digest)),
            digest,
            "blob content matches its name"
        );
    }
    digests
}

/// A TCP proxy in front of a registry. With `faults`, it drops every fifth connection and
/// answers 500 to one request in five (each request gets its own connection: the proxy
/// asks both sides to close after one exchange). It serves a tampered body for the blob
/// set with [`FaultProxy::tamper`].
pub struct FaultProxy {
    /// `127.0.0.1:<port>`.
    pub host: String,
    stop: Arc<AtomicBool>,
    tamper: Arc<Mutex<Option<(String, u64)>>>,
    decline_mounts: Arc<AtomicBool>,
    stall_every: Arc<AtomicUsize>,
    /// Every request line seen (`POST /v2/...`), in order.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Connections dropped and requests answered 500, for the test to check that faults
    /// really happened.
    pub faults: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: &str, faults_on: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let tamper: Arc<Mutex<Option<(String, u64)>>> = Arc::default();
        let faults = Arc::new(AtomicUsize::new(0));
        let decline_mounts = Arc::new(AtomicBool::new(false));
        let stall_every = Arc::new(AtomicUsize::new(0));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        {
            let (stop, tamper, faults) = (stop.clone(), tamper.clone(), faults.clone());
            let (decline_mounts, log) = (decline_mounts.clone(), log.clone());
            let stall_every = stall_every.clone();
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let n = connections.fetch_add(1, Ordering::SeqCst);
                    if faults_on && n % 5 == 4 {
                        faults.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    let stall = stall_every.load(Ordering::SeqCst);
                    if stall > 0 && n % stall == stall - 1 {
                        // Accepted and never answered: the client must time out.
                        faults.fetch_add(1, Ordering::SeqCst);
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            let _held = client;
                            let until = Instant::now() + Duration::from_secs(300);
                            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        });
                        continue;
                    }
                    let proxy = Shared {
                        upstream: upstream.clone(),
                        faults_on,
                        tamper: tamper.clone(),
                        faults: faults.clone(),
                        requests: requests.clone(),
                        decline_mounts: decline_mounts.clone(),
                        log: log.clone(),
                    };
                    std::thread::spawn(move || {
                        let _ = serve(client, &proxy);
                    });
                }
            });
        }
        Self {
            host,
            stop,
            tamper,
            decline_mounts,
            stall_every,
            log,
            faults,
        }
    }

    /// From now on, every `n`th connection is accepted and never answered (0: none), as a
    /// registry or load balancer that hangs does.
    pub fn stall_every(&self, n: usize) {
        self.stall_every.store(n, Ordering::SeqCst);
    }

    /// From now on, cross-repository mount requests reach the registry without their
    /// `mount`/`from` parameters: it answers `202` with an upload session, as a registry
    /// that declines the mount does.
    pub fn decline_mounts(&self) {
        self.decline_mounts.store(true, Ordering::SeqCst);
    }

    /// The request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// From now on, `GET .../blobs/<digest>` answers `size` bytes that are not the blob.
    pub fn tamper(&self, digest: &str, size: u64) {
        *self.tamper.lock().unwrap() = Some((digest.to_owned(), size));
    }
}

/// What a proxy connection needs.
struct Shared {
    upstream: String,
    faults_on: bool,
    tamper: Arc<Mutex<Option<(String, u64)>>>,
    faults: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    decline_mounts: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(mut client: TcpStream, proxy: &Shared) -> std::io::Result<()> {
    let Shared {
        upstream,
        faults_on,
        tamper,
        faults,
        requests,
        decline_mounts,
        log,
    } = proxy;
    let faults_on = *faults_on;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        // Not HTTP (a TLS ClientHello from a scheme probe): hang up.
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or("").to_owned();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    log.lock().unwrap().push(format!("{method} {path}"));
    let n = requests.fetch_add(1, Ordering::SeqCst);
    if faults_on && n % 5 == 2 {
        faults.fetch_add(1, Ordering::SeqCst);
        client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if let Some((digest, size)) = tamper.lock().unwrap().clone() {
        if method == "GET" && path.ends_with(&format!("/blobs/{digest}")) {
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            answer.extend(std::iter::repeat_n(b'X', usize::try_from(size).unwrap()));
            client.write_all(&answer)?;
            return Ok(());
        }
    }
    let mut text = text;
    if decline_mounts.load(Ordering::SeqCst) && method == "POST" && path.contains("mount=") {
        let bare = path.split('?').next().unwrap_or("").to_owned();
        text = text.replacen(&path, &bare, 1);
    }
    let mut rewritten = String::new();
    for line in text.trim_end_matches("\r\n\r\n").split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(rewritten.as_bytes())?;
    let mut client_reader = client.try_clone()?;
    let mut server_writer = server.try_clone()?;
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut server_writer);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = body.join();
    Ok(())
}

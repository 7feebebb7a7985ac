//! A hostile registry on 127.0.0.1, written here: docker-registry never lies, this one lies
//! where a test tells it to (endless bodies, a `Content-Length` that is not the descriptor's
//! size, huge manifests, an index naming a huge manifest, token realms on other hosts and
//! schemes, redirect loops and redirects to other hosts). Otherwise it serves one small
//! honest image, which a control pull checks (and skopeo reads back from the store).
//!
//! Each attack is a test that fails if the attack works. It checks the exit status and the
//! message, the peak RSS of the xbuild process (`XBUILD_PEAK_RSS_FILE`), what the server
//! managed to send, the most the store's `tmp/` held while the body streamed (the server
//! looks between blocks), what is left in the store's `blobs/` and `tmp/` afterwards, and
//! that `xbuild store check` is clean.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test helpers and tests"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::regenv::{self, PASSWORD, USER, digest_of};
use crate::util::{self, Need};

/// The most an endless body sends when nobody stops reading it: far beyond every bound
/// xbuild sets, so an attack that works shows in every figure the tests check.
const ENDLESS_CAP: u64 = 256 << 20;
/// Bytes written at a time for generated bodies.
const BLOCK: usize = 64 << 10;
/// The peak RSS above which an xbuild pull counts as having read an attack into memory.
/// A pull of the tiny image peaks at about 20 MiB (debug build); reading a 50 MB manifest
/// or an endless body capped at 256 MiB goes far above.
const RSS_LIMIT_KIB: u64 = 64 << 10;
/// The repository every test pulls from.
const REPOSITORY: &str = "hostile/app";

/// One request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The target, with its query.
    pub path: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The path without its query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// An answer's body.
pub enum Body {
    /// These bytes.
    Bytes(Vec<u8>),
    /// This many filler bytes, made as they are sent.
    Filler(u64),
    /// Filler until the client hangs up (or [`ENDLESS_CAP`]).
    Endless,
}

/// The `Content-Length` an answer announces.
pub enum Length {
    /// The body's real length (none for [`Body::Endless`]).
    True,
    /// None: the body ends when the connection closes.
    Omitted,
}

/// What the server answers.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// The announced length.
    pub length: Length,
}

impl Answer {
    /// A status with an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
            length: Length::True,
        }
    }

    /// `200` with these bytes.
    pub fn bytes(content_type: &str, bytes: Vec<u8>) -> Self {
        Self::status(200)
            .header("Content-Type", content_type)
            .body(Body::Bytes(bytes))
    }

    /// `200` with an endless body and no length.
    pub fn endless() -> Self {
        Self::status(200)
            .header("Content-Type", "application/octet-stream")
            .body(Body::Endless)
            .length(Length::Omitted)
    }

    /// A `307` redirect.
    pub fn redirect(location: &str) -> Self {
        Self::status(307).header("Location", location)
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// With this body.
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// Announcing this length.
    pub fn length(mut self, length: Length) -> Self {
        self.length = length;
        self
    }
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// What every connection of a server shares.
struct Shared {
    handler: Box<Handler>,
    log: Mutex<Vec<Request>>,
    sent: AtomicU64,
    watch: Mutex<Option<PathBuf>>,
    watched_max: AtomicU64,
    stop: AtomicBool,
}

/// An HTTP (or HTTPS) server on 127.0.0.1 that answers each request with its handler, one
/// request per connection.
pub struct Server {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The port.
    pub port: u16,
    shared: Arc<Shared>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    /// Starts a plain HTTP server.
    pub fn start(handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        Self::start_with(None, Box::new(handler))
    }

    /// Starts an HTTPS server with `server.crt`/`server.key` of `certificates` (made by
    /// [`regenv::make_certificates`]).
    pub fn start_tls(
        certificates: &Path,
        handler: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(certificates.join("server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(certificates.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start_with(Some(Arc::new(config)), Box::new(handler))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            handler,
            log: Mutex::default(),
            sent: AtomicU64::new(0),
            watch: Mutex::default(),
            watched_max: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            while !accepting.stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let (shared, tls) = (Arc::clone(&accepting), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut stream = rustls::StreamOwned::new(connection, stream);
                        if serve(&mut stream, &shared).is_ok() {
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                        let _ = stream.sock.shutdown(std::net::Shutdown::Both);
                    }
                    None => {
                        let mut stream = stream;
                        let _ = serve(&mut stream, &shared);
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                });
            }
        });
        Self {
            host: format!("127.0.0.1:{port}"),
            port,
            shared,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Requests whose path ends with `suffix`.
    pub fn requests_to(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|request| request.route().ends_with(suffix))
            .collect()
    }

    /// Body bytes written so far (the client may have read fewer).
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// While generated bodies stream, measure the bytes in the files under `dir` between
    /// blocks, keeping the largest figure ([`Self::watched_max`]).
    pub fn watch(&self, dir: &Path) {
        *self.shared.watch.lock().unwrap() = Some(dir.to_path_buf());
    }

    /// The most bytes seen under the watched directory.
    pub fn watched_max(&self) -> u64 {
        self.shared.watched_max.load(Ordering::SeqCst)
    }
}

fn serve(stream: &mut (impl Read + Write), shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        // Not HTTP (the TLS hello of xbuild's scheme probe of a plain server): hang up.
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split_whitespace();
    let request = Request {
        method: request_line.next().unwrap_or("").to_owned(),
        path: request_line.next().unwrap_or("").to_owned(),
        headers: lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect(),
    };
    // A request body (the OAuth2 form) is not needed by any test: left unread.
    shared.log.lock().unwrap().push(request.clone());
    let answer = (shared.handler)(&request);
    let mut out = format!("HTTP/1.1 {} Hostile\r\n", answer.status);
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let true_length = match &answer.body {
        Body::Bytes(bytes) => Some(bytes.len() as u64),
        Body::Filler(length) => Some(*length),
        Body::Endless => None,
    };
    let announced = match answer.length {
        Length::True => true_length,
        Length::Omitted => None,
    };
    if let Some(length) = announced {
        out.push_str(&format!("Content-Length: {length}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    stream.write_all(out.as_bytes())?;
    if request.method == "HEAD" {
        return stream.flush();
    }
    match answer.body {
        Body::Bytes(bytes) => {
            stream.write_all(&bytes)?;
            shared.sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        Body::Filler(length) => write_filler(stream, shared, length)?,
        Body::Endless => write_filler(stream, shared, ENDLESS_CAP)?,
    }
    stream.flush()
}

/// Writes `length` filler bytes in blocks, measuring the watched directory between them.
fn write_filler(stream: &mut impl Write, shared: &Shared, length: u64) -> std::io::Result<()> {
    let block = vec![b'x'; BLOCK];
    let mut left = length;
    while left > 0 {
        let now = usize::try_from(left.min(BLOCK as u64)).unwrap();
        stream.write_all(&block[..now])?;
        stream.flush()?;
        shared.sent.fetch_add(now as u64, Ordering::SeqCst);
        left -= now as u64;
        let watched = shared.watch.lock().unwrap().clone();
        if let Some(dir) = watched {
            shared
                .watched_max
                .fetch_max(tree_bytes(&dir), Ordering::SeqCst);
        }
    }
    Ok(())
}

/// Bytes in the regular files under `dir` (0 when it does not exist).
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A manifest document naming a config and layers by `(digest, declared size)`.
pub fn manifest_json(config: (&str, u64), layers: &[(&str, u64)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(digest, size)| serde_json::json!({"mediaType": LAYER, "digest": digest, "size": size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

/// An index document naming linux/amd64 manifests by `(digest, declared size)`.
pub fn index_json(manifests: &[(&str, u64)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(digest, size)| {
            serde_json::json!({
                "mediaType": MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"architecture": "amd64", "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": manifests,
    }))
    .unwrap()
}

/// What the honest part of the server holds: manifests by tag and digest, blobs by digest.
#[derive(Clone, Default)]
pub struct Content {
    manifests: BTreeMap<String, (&'static str, Vec<u8>)>,
    blobs: BTreeMap<String, Vec<u8>>,
}

/// The digests of [`Content::tiny`].
#[derive(Clone)]
pub struct Tiny {
    /// The 1 KiB layer.
    pub layer: String,
    /// The config's size.
    pub config_size: u64,
    /// The manifest (tag `1`).
    pub manifest: String,
}

impl Content {
    /// A linux/amd64 image of one 1 KiB layer, tagged `1`, and an index of it tagged
    /// `multi`.
    pub fn tiny() -> (Self, Tiny) {
        let mut content = Self::default();
        let layer: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let layer_digest = content.blob(layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(b"a diff_id")]},
        }))
        .unwrap();
        let config_size = config.len() as u64;
        let config_digest = content.blob(config);
        let manifest = manifest_json((&config_digest, config_size), &[(&layer_digest, 1024)]);
        let manifest_size = manifest.len() as u64;
        let manifest_digest = content.manifest(Some("1"), MANIFEST, manifest);
        content.manifest(
            Some("multi"),
            INDEX,
            index_json(&[(&manifest_digest, manifest_size)]),
        );
        (
            content,
            Tiny {
                layer: layer_digest,
                config_size,
                manifest: manifest_digest,
            },
        )
    }

    /// Adds a blob; returns its digest.
    pub fn blob(&mut self, bytes: Vec<u8>) -> String {
        let digest = digest_of(&bytes);
        self.blobs.insert(digest.clone(), bytes);
        digest
    }

    /// Adds a manifest or index under its digest (and `tag`); returns its digest.
    pub fn manifest(
        &mut self,
        tag: Option<&str>,
        media_type: &'static str,
        bytes: Vec<u8>,
    ) -> String {
        let digest = digest_of(&bytes);
        if let Some(tag) = tag {
            self.manifests
                .insert(tag.to_owned(), (media_type, bytes.clone()));
        }
        self.manifests.insert(digest.clone(), (media_type, bytes));
        digest
    }

    /// The honest answer: `/v2/`, manifests, blobs, else 404.
    pub fn answer(&self, request: &Request) -> Answer {
        let route = request.route();
        if route == "/v2/" {
            return Answer::bytes("application/json", b"{}".to_vec());
        }
        let prefix = format!("/v2/{REPOSITORY}/");
        let Some(rest) = route.strip_prefix(&prefix) else {
            return Answer::status(404);
        };
        if let Some(reference) = rest.strip_prefix("manifests/") {
            if let Some((media_type, bytes)) = self.manifests.get(reference) {
                return Answer::bytes(media_type, bytes.clone())
                    .header("Docker-Content-Digest", &digest_of(bytes));
            }
        }
        if let Some(digest) = rest.strip_prefix("blobs/") {
            if let Some(bytes) = self.blobs.get(digest) {
                return Answer::bytes("application/octet-stream", bytes.clone())
                    .header("Docker-Content-Digest", digest);
            }
        }
        Answer::status(404)
    }
}

/// Where a blob or manifest is served.
pub fn blob_route(digest: &str) -> String {
    format!("/v2/{REPOSITORY}/blobs/{digest}")
}

/// Where a manifest is served.
pub fn manifest_route(reference: &str) -> String {
    format!("/v2/{REPOSITORY}/manifests/{reference}")
}

/// One xbuild run with its figures.
pub struct Run {
    /// Exit status and output.
    pub output: Output,
    /// The xbuild process's peak RSS (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Bytes in the store's `blobs/` afterwards.
    pub blob_bytes: u64,
    /// Bytes in the store's `tmp/` afterwards (before `store check` cleans it).
    pub tmp_bytes: u64,
}

impl Run {
    /// Stderr as text.
    pub fn stderr(&self) -> String {
        util::stderr(&self.output)
    }

    /// Asserts exit status 1 and that stderr has every one of `parts`.
    pub fn assert_failed_with(&self, parts: &[&str]) {
        let stderr = self.stderr();
        assert_eq!(self.output.status.code(), Some(1), "{stderr}");
        for part in parts {
            assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
        }
        assert!(!stderr.contains(PASSWORD), "the password leaked:\n{stderr}");
    }

    /// Asserts the process stayed under [`RSS_LIMIT_KIB`].
    pub fn assert_memory_bounded(&self) {
        assert!(
            self.peak_rss_kib > 0 && self.peak_rss_kib < RSS_LIMIT_KIB,
            "peak RSS {} KiB (limit {} KiB):\n{}",
            self.peak_rss_kib,
            RSS_LIMIT_KIB,
            self.stderr()
        );
    }
}

/// A private home: store, Docker config, RSS report file.
pub struct Home {
    /// The directory.
    pub dir: tempfile::TempDir,
}

impl Home {
    /// An empty home.
    pub fn new() -> Self {
        Self {
            dir: util::temp_dir(),
        }
    }

    /// The store.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// An xbuild command on this home's store and Docker config.
    pub fn xbuild(&self) -> Command {
        let mut command = util::xbuild(self.dir.path());
        command.env("DOCKER_CONFIG", self.dir.path().join("docker"));
        command.env_remove("XBUILD_INSECURE_REGISTRIES");
        command.env("XBUILD_REGISTRY_TIMEOUT", "20");
        command
    }

    /// Writes `user:password` credentials for `host` into the Docker config.
    pub fn credentials(&self, host: &str) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let dir = self.dir.path().join("docker");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
    }

    /// Trusts the test CA of `certificates` for `host` (the store's `certs.d`).
    pub fn trust(&self, host: &str, certificates: &Path) {
        let dir = self.store().join("certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(certificates.join("ca.crt"), dir.join("ca.crt")).unwrap();
    }

    /// Runs an xbuild command (from [`Self::xbuild`]) and measures it.
    pub fn run(&self, command: &mut Command) -> Run {
        let rss_file = self.dir.path().join("peak-rss");
        let _ = std::fs::remove_file(&rss_file);
        command.env("XBUILD_PEAK_RSS_FILE", &rss_file);
        let started = Instant::now();
        let output = util::run(command);
        let elapsed = started.elapsed();
        let peak_rss_kib = std::fs::read_to_string(&rss_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Run {
            output,
            peak_rss_kib,
            elapsed,
            blob_bytes: tree_bytes(&self.store().join("blobs")),
            tmp_bytes: tree_bytes(&self.store().join("tmp")),
        }
    }

    /// `xbuild pull ARGS... host/hostile/app:TAG`, measured.
    pub fn pull(&self, host: &str, reference: &str, args: &[&str]) -> Run {
        let name = format!("{host}/{REPOSITORY}{reference}");
        self.run(self.xbuild().arg("pull").args(args).arg(name))
    }

    /// Asserts that `xbuild store check` finds nothing wrong.
    pub fn assert_store_checks_clean(&self) {
        let output = util::run(self.xbuild().args(["store", "check"]));
        assert!(
            output.status.success(),
            "store check: {}{}",
            util::stdout(&output),
            util::stderr(&output)
        );
    }
}

/// The figures every failed attack must show: exit 1 with the message parts, bounded
/// memory, at most `blob_bytes` left in `blobs/` (the honest blobs a pull kept), nothing in
/// `tmp/`, a clean store check.
fn assert_refused(home: &Home, run: &Run, parts: &[&str], blob_bytes: u64) {
    eprintln!(
        "refused in {:.2}s, peak RSS {} KiB, {} bytes in blobs/, {} in tmp/",
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib,
        run.blob_bytes,
        run.tmp_bytes
    );
    run.assert_failed_with(parts);
    run.assert_memory_bounded();
    assert!(
        run.blob_bytes <= blob_bytes,
        "{} bytes in blobs/ (at most {blob_bytes} expected)",
        run.blob_bytes
    );
    assert_eq!(run.tmp_bytes, 0, "bytes left in tmp/");
    home.assert_store_checks_clean();
}

/// The honest server works: both tags pull, skopeo reads the result from the store, the
/// store checks clean. (Proves the failures below come from the lies.)
#[test]
fn the_honest_hostile_registry_pulls() {
    if !util::require(&[Need::Program("skopeo")]) {
        return;
    }
    let (content, tiny) = Content::tiny();
    let server = Server::start(move |request| content.answer(request));
    let home = Home::new();
    for tag in [":1", ":multi"] {
        let run = home.pull(&server.host, tag, &[]);
        assert!(run.output.status.success(), "{}", run.stderr());
        run.assert_memory_bounded();
    }
    let output = util::run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!(
            "oci:{}:{}/{REPOSITORY}:1",
            home.store().display(),
            server.host
        ),
    ]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(digest_of(&output.stdout), tiny.manifest);
    home.assert_store_checks_clean();
}

/// A layer declared as 1 KiB and served without `Content-Length` and without end: cut
/// after the declared size, and nothing past it reaches the disk.
#[test]
fn an_endless_layer_is_cut_at_its_declared_size() {
    let (content, tiny) = Content::tiny();
    let layer_route = blob_route(&tiny.layer);
    let server = Server::start(move |request| {
        if request.route() == layer_route {
            Answer::endless()
        } else {
            content.answer(request)
        }
    });
    let home = Home::new();
    server.watch(&home.store().join("tmp"));
    let run = home.pull(&server.host, ":1", &[]);
    assert_refused(
        &home,
        &run,
        &[&tiny.layer, "more than 1024 bytes"],
        tiny.config_size,
    );
    assert!(
        server.watched_max() <= 1024,
        "{} bytes in tmp/ while the layer streamed",
        server.watched_max()
    );
    // What the server wrote before xbuild hung up: socket buffers, not the endless body.
    assert!(server.sent() < 32 << 20, "{} bytes sent", server.sent());
    // Not retried: the registry lied, asking again does not help.
    assert_eq!(server.requests_to(&tiny.layer).len(), 1);
}

/// A `Content-Length` other than the descriptor's size is refused before the body is read,
/// longer or shorter.
#[test]
fn a_content_length_other_than_the_declared_size_is_refused() {
    for announced in [2048, 512] {
        let (content, tiny) = Content::tiny();
        let layer_route = blob_route(&tiny.layer);
        let server = Server::start(move |request| {
            if request.route() == layer_route {
                Answer::status(200)
                    .body(Body::Filler(announced))
                    .length(Length::True)
            } else {
                content.answer(request)
            }
        });
        let home = Home::new();
        server.watch(&home.store().join("tmp"));
        let run = home.pull(&server.host, ":1", &[]);
        assert_refused(
            &home,
            &run,
            &[
                &tiny.layer,
                &format!("Content-Length {announced}"),
                "declared size 1024",
            ],
            tiny.config_size,
        );
        // tmp/ held the honest config (fetched at the same time), never the layer's body.
        assert!(
            server.watched_max() <= tiny.config_size,
            "{} bytes in tmp/: the body was written",
            server.watched_max()
        );
    }
}

/// A layer that ends before its declared size (no `Content-Length`) is a size and digest
/// mismatch; nothing is kept.
#[test]
fn a_layer_shorter_than_declared_is_refused() {
    let (content, tiny) = Content::tiny();
    let layer_route = blob_route(&tiny.layer);
    let server = Server::start(move |request| {
        if request.route() == layer_route {
            Answer::status(200)
                .body(Body::Filler(512))
                .length(Length::Omitted)
        } else {
            content.answer(request)
        }
    });
    let home = Home::new();
    let run = home.pull(&server.host, ":1", &[]);
    assert_refused(
        &home,
        &run,
        &[&tiny.layer, "1024 bytes", "512 bytes"],
        tiny.config_size,
    );
}

/// A config declared as 2 bytes with an endless body: read into memory to check the
/// platform (`--platform` on a single-platform image), and streamed to the store by a plain
/// pull. Both stop after 2 bytes.
#[test]
fn an_endless_config_declared_as_two_bytes_is_cut() {
    let (mut content, _) = Content::tiny();
    let config = digest_of(b"{}");
    // No layer: what streams into tmp/ is the config alone.
    content.manifest(Some("2"), MANIFEST, manifest_json((&config, 2), &[]));
    let config_route = blob_route(&config);
    let server = Server::start(move |request| {
        if request.route() == config_route {
            Answer::endless()
        } else {
            content.answer(request)
        }
    });
    for args in [&["--platform", "linux/amd64"][..], &[]] {
        let home = Home::new();
        server.watch(&home.store().join("tmp"));
        let run = home.pull(&server.host, ":2", args);
        assert_refused(&home, &run, &[&config, "more than 2 bytes"], 0);
        assert!(server.watched_max() <= 2, "{}", server.watched_max());
    }
}

/// A config declared larger than the config limit is refused before it is asked for.
#[test]
fn a_config_declared_over_the_limit_is_not_fetched() {
    let (mut content, tiny) = Content::tiny();
    let config = digest_of(b"a config that is never served");
    content.manifest(
        Some("big"),
        MANIFEST,
        manifest_json((&config, 1 << 30), &[(&tiny.layer, 1024)]),
    );
    let server = Server::start(move |request| content.answer(request));
    for args in [&["--platform", "linux/amd64"][..], &[]] {
        let home = Home::new();
        let run = home.pull(&server.host, ":big", args);
        assert_refused(&home, &run, &[&config, "20 MiB"], 0);
    }
    assert!(server.requests_to(&config).is_empty());
}

/// A 50 MB manifest is refused naming the registry, the reference and the limit: before
/// reading when `Content-Length` says so, after 4 MiB + 1 byte when the body has no length.
#[test]
fn a_huge_manifest_is_refused() {
    for omitted in [false, true] {
        let (content, _) = Content::tiny();
        let server = Server::start(move |request| {
            if request.route() == manifest_route("huge") {
                Answer::status(200)
                    .header("Content-Type", MANIFEST)
                    .body(Body::Filler(50_000_000))
                    .length(if omitted {
                        Length::Omitted
                    } else {
                        Length::True
                    })
            } else {
                content.answer(request)
            }
        });
        let home = Home::new();
        let run = home.pull(&server.host, ":huge", &[]);
        let reference = format!("{}/{REPOSITORY}:huge", server.host);
        let detail = if omitted {
            "more than 4194304 bytes"
        } else {
            "Content-Length 50000000"
        };
        assert_refused(&home, &run, &[&reference, "4 MiB", detail], 0);
        assert_eq!(server.requests_to("/manifests/huge").len(), 1, "retried");
    }
}

/// An index naming a huge manifest: declared huge, it is never asked for; declared small
/// and served endless, it is cut after its declared size.
#[test]
fn an_index_naming_a_huge_manifest_is_refused() {
    let (mut content, _) = Content::tiny();
    let huge = digest_of(b"a manifest of 50 MB");
    let endless = digest_of(b"a manifest that never ends");
    content.manifest(
        Some("declared-huge"),
        INDEX,
        index_json(&[(&huge, 50_000_000)]),
    );
    content.manifest(Some("served-huge"), INDEX, index_json(&[(&endless, 300)]));
    let endless_route = manifest_route(&endless);
    let server = Server::start(move |request| {
        if request.route() == endless_route {
            Answer::endless().header("Content-Type", MANIFEST)
        } else {
            content.answer(request)
        }
    });
    let home = Home::new();
    let run = home.pull(&server.host, ":declared-huge", &[]);
    assert_refused(&home, &run, &[&huge, "50000000", "4 MiB"], 0);
    assert!(
        server.requests_to(&huge).is_empty(),
        "the manifest was asked for"
    );
    let run = home.pull(&server.host, ":served-huge", &[]);
    assert_refused(&home, &run, &[&endless, "more than 300 bytes"], 0);
    assert!(server.sent() < 32 << 20, "{} bytes sent", server.sent());
}

/// Error answers with endless bodies: their message is read only up to a small bound.
#[test]
fn an_endless_error_body_is_not_read_whole() {
    let (content, _) = Content::tiny();
    let server = Server::start(move |request| {
        if request.route() == manifest_route("denied") {
            Answer::status(403)
                .header("Content-Type", "application/json")
                .body(Body::Endless)
                .length(Length::Omitted)
        } else {
            content.answer(request)
        }
    });
    let home = Home::new();
    let run = home.pull(&server.host, ":denied", &[]);
    assert_refused(&home, &run, &["403"], 0);
    assert!(server.sent() < 32 << 20, "{} bytes sent", server.sent());
}

/// A redirect loop on a blob fails after the redirect limit, at once (not retried).
#[test]
fn a_redirect_loop_fails_without_retries() {
    let (content, tiny) = Content::tiny();
    let layer_route = blob_route(&tiny.layer);
    let server = Server::start(move |request| {
        if request.route() == layer_route {
            let hop: u32 = request
                .path
                .split_once("?hop=")
                .map_or(0, |(_, hop)| hop.parse().unwrap_or(0));
            Answer::redirect(&format!("{layer_route}?hop={}", hop + 1))
        } else {
            content.answer(request)
        }
    });
    let home = Home::new();
    let run = home.pull(&server.host, ":1", &[]);
    assert_refused(&home, &run, &[&tiny.layer, "redirect"], tiny.config_size);
    let hops = server.requests_to(&tiny.layer).len();
    assert!((10..=12).contains(&hops), "{hops} requests for the layer");
}

/// A blob redirected to another host (a CDN): the registry's `Authorization` is not sent
/// there, the bytes are still checked (an endless body there is cut as well).
#[test]
fn a_redirect_to_another_host_gets_no_authorization() {
    for endless in [false, true] {
        let (content, tiny) = Content::tiny();
        let layer = content.answer(&Request {
            method: "GET".into(),
            path: blob_route(&tiny.layer),
            headers: Vec::new(),
        });
        let Body::Bytes(layer) = layer.body else {
            panic!("the layer is served as bytes");
        };
        let cdn = Server::start(move |_| {
            if endless {
                Answer::endless()
            } else {
                Answer::bytes("application/octet-stream", layer.clone())
            }
        });
        let cdn_url = format!("http://{}/blob", cdn.host);
        let layer_route = blob_route(&tiny.layer);
        let server = Server::start(move |request| {
            // Basic auth: the credentials themselves would travel with the redirect.
            if request.route() != "/v2/" && request.header("Authorization").is_none() {
                return Answer::status(401).header("WWW-Authenticate", "Basic realm=\"hostile\"");
            }
            if request.route() == layer_route {
                Answer::redirect(&cdn_url)
            } else {
                content.answer(request)
            }
        });
        let home = Home::new();
        home.credentials(&server.host);
        let run = home.pull(&server.host, ":1", &[]);
        if endless {
            assert_refused(
                &home,
                &run,
                &[&tiny.layer, "more than 1024 bytes"],
                tiny.config_size,
            );
        } else {
            assert!(run.output.status.success(), "{}", run.stderr());
            home.assert_store_checks_clean();
        }
        let at_registry = server.requests_to(&tiny.layer);
        assert!(
            at_registry.iter().all(|request| request
                .header("Authorization")
                .is_some_and(|a| a.starts_with("Basic "))),
            "{at_registry:?}"
        );
        let at_cdn = cdn.requests();
        assert_eq!(at_cdn.len(), 1, "{at_cdn:?}");
        assert!(
            at_cdn
                .iter()
                .all(|request| request.header("Authorization").is_none()),
            "{at_cdn:?}"
        );
    }
}

/// The test CA and server certificate (127.0.0.1 and localhost) in a temp dir.
fn certificates() -> tempfile::TempDir {
    let dir = util::temp_dir();
    regenv::make_certificates(dir.path());
    dir
}

/// A bearer registry over HTTPS whose token realm is `realm`; it accepts the token `tok`.
fn bearer_registry(certificates: &Path, realm: String) -> Server {
    let (content, _) = Content::tiny();
    Server::start_tls(certificates, move |request| {
        if request.header("Authorization") == Some("Bearer tok") {
            content.answer(request)
        } else {
            Answer::status(401).header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"{realm}\",service=\"hostile\",scope=\"repository:{REPOSITORY}:pull\""
                ),
            )
        }
    })
}

/// A token service that grants `tok` to Basic `USER:PASSWORD`.
fn token_answer(request: &Request) -> Answer {
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if request.header("Authorization") == Some(basic.as_str()) {
        Answer::bytes("application/json", br#"{"token":"tok"}"#.to_vec())
    } else {
        Answer::status(401)
    }
}

/// An HTTPS registry whose token realm is plain HTTP: the credentials are never sent there,
/// and the error says why.
#[test]
fn an_http_realm_of_an_https_registry_gets_no_credentials() {
    if !util::require(&[Need::Program("openssl")]) {
        return;
    }
    let certificates = certificates();
    let realm = Server::start(token_answer);
    let registry = bearer_registry(certificates.path(), format!("http://{}/token", realm.host));
    let home = Home::new();
    home.trust(&registry.host, certificates.path());
    home.credentials(&registry.host);
    let run = home.pull(&registry.host, ":1", &[]);
    assert_refused(
        &home,
        &run,
        &[
            &format!("http://{}/token", realm.host),
            "plain HTTP",
            "HTTPS",
        ],
        0,
    );
    assert!(realm.requests().is_empty(), "{:?}", realm.requests());
}

/// An HTTPS registry whose token realm is on another host over HTTPS: the credentials go
/// there, with a note the first time.
#[test]
fn an_https_realm_on_another_host_gets_credentials_with_a_note_once() {
    if !util::require(&[Need::Program("openssl")]) {
        return;
    }
    let certificates = certificates();
    let realm = Server::start_tls(certificates.path(), token_answer);
    // `localhost` is another host name than the registry's 127.0.0.1.
    let realm_url = format!("https://localhost:{}/token", realm.port);
    let registry = bearer_registry(certificates.path(), realm_url.clone());
    let home = Home::new();
    home.trust(&registry.host, certificates.path());
    home.credentials(&registry.host);
    let run = home.pull(&registry.host, ":1", &[]);
    assert!(run.output.status.success(), "{}", run.stderr());
    let note = format!("sending the credentials for {} to", registry.host);
    assert!(run.stderr().contains(&note), "{}", run.stderr());
    assert!(run.stderr().contains(&realm_url), "{}", run.stderr());
    assert_eq!(run.stderr().matches(&note).count(), 1, "{}", run.stderr());
    // The second time: no note.
    let run = home.pull(&registry.host, ":multi", &[]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(!run.stderr().contains(&note), "{}", run.stderr());
    assert!(
        realm.requests().iter().all(|request| request
            .header("Authorization")
            .is_some_and(|a| a.starts_with("Basic "))),
        "{:?}",
        realm.requests()
    );
    home.assert_store_checks_clean();
}

/// An OCI archive whose `index.json` names a 100 MB blob as its manifest (a valid digest):
/// `xbuild load` refuses to read it into memory.
#[test]
fn a_load_of_an_archive_naming_a_huge_manifest_is_refused() {
    use sha2::Digest as _;
    if !util::require(&[Need::Program("tar")]) {
        return;
    }
    let work = util::temp_dir();
    let layout = work.path().join("layout");
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let size: u64 = 100 << 20;
    let part = blobs.join("part");
    let mut hasher = sha2::Sha256::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&part).unwrap());
        let block = vec![b' '; BLOCK];
        for _ in 0..size / BLOCK as u64 {
            hasher.update(&block);
            file.write_all(&block).unwrap();
        }
    }
    let hex = hex::encode(hasher.finalize());
    std::fs::rename(&part, blobs.join(&hex)).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": MANIFEST, "digest": format!("sha256:{hex}"), "size": size}],
        }))
        .unwrap(),
    )
    .unwrap();
    let archive = work.path().join("huge.tar");
    let tar = util::run(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    assert!(tar.status.success(), "{}", util::stderr(&tar));
    std::fs::remove_dir_all(&layout).unwrap();
    let home = Home::new();
    let run = home.run(
        home.xbuild()
            .args(["load", "-t", "huge:1", "-i"])
            .arg(&archive),
    );
    eprintln!(
        "load refused in {:.2}s, peak RSS {} KiB",
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib
    );
    run.assert_failed_with(&[&hex, "104857600 bytes", "20 MiB"]);
    run.assert_memory_bounded();
    home.assert_store_checks_clean();
}

/// `ADD http://...` of a 100 MB file streams it to disk, hashed on the way: the build's
/// memory does not grow with the download (a URL without end is bounded by the disk only,
/// as in BuildKit).
#[test]
fn an_add_of_a_large_download_streams_to_disk() {
    if !util::require(&[Need::Root]) {
        return;
    }
    let size: u64 = 100 << 20;
    let server = Server::start(move |request| {
        if request.route() == "/big.bin" {
            Answer::status(200)
                .header("Content-Type", "application/octet-stream")
                .body(Body::Filler(size))
        } else {
            Answer::status(404)
        }
    });
    let home = Home::new();
    let context = home.dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\nADD http://{}/big.bin /big.bin\n",
            server.host
        ),
    )
    .unwrap();
    let run = home.run(
        home.xbuild()
            .args(["build", "--progress=plain", "-t", "download:1"])
            .arg(&context),
    );
    eprintln!(
        "ADD of {size} bytes in {:.2}s, peak RSS {} KiB",
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    assert_eq!(server.sent(), size);
    run.assert_memory_bounded();
    home.assert_store_checks_clean();
}

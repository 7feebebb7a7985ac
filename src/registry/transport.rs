//! The HTTP side of the distribution API: one [`Registry`] per registry host, with TLS
//! set-up, the authentication handshake, retries, and the blob and manifest endpoints.
//!
//! - **Scheme.** HTTPS. A loopback host (`localhost`, `127.0.0.0/8`, `::1`) or one named
//!   insecure (`--insecure-registry`, `$XBUILD_INSECURE_REGISTRIES`) is probed: HTTPS first,
//!   plain HTTP when the TLS handshake fails for a reason other than the certificate (as
//!   Docker treats `localhost`).
//! - **Trust.** The system roots plus `$XBUILD_ROOT/certs.d/<host>/*.crt` (as Docker's
//!   `certs.d`; `ca.crt` by convention).
//! - **Retries.** Connection errors, timeouts, `5xx` and `429` are retried with exponential
//!   backoff and jitter, honouring `Retry-After`; a body cut short is restarted by the caller.
//! - **Auth.** A `401` is answered once per request with the challenge's scheme (see
//!   [`super::auth`]); bearer tokens are cached per scope. The credentials go to a token
//!   realm only as [`super::realm`] allows (HTTPS, or the registry's own plain-HTTP host).
//! - **Bounded reads.** Nothing a registry sends is read without a bound
//!   ([`crate::oci::limits`]): a blob stops at the size its descriptor declares (one byte
//!   more is an error, and nothing past it is written); a manifest or index at its declared
//!   size when an index names it, else at 4 MiB; a config at its declared size, which must
//!   be at most 20 MiB; a `Content-Length` that says otherwise is refused before the body is
//!   read. Error messages and token answers are read up to 64 KiB and 1 MiB. None of these
//!   is retried: the registry lied, asking again does not help.
//! - **Redirects.** At most [`MAX_REDIRECTS`] are followed (a loop fails at once, not
//!   retried); reqwest drops `Authorization` when a redirect leaves the registry's scheme,
//!   host and port (a blob on a CDN gets no credentials).
//!
//! Why not oci-client for this part: it has no retries (nor a hook for them), cannot stream a
//! blob into our verifying [`crate::oci::BlobWriter`] and restart it, re-serialises an index pushed with
//! its list helper (the digest changes), has no refresh-token grant, and reports the `202`
//! answer to a cross-repository mount as an error. The protocol is small; we speak it with
//! reqwest (oci-client's own HTTP client) directly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{Challenge, Credentials, DockerConfig};
use super::progress::Progress;
use super::realm::{self, CredentialNotes};
use crate::oci::limits::{self, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use crate::oci::{ImageLayout, LayoutError, sha256_digest};

/// Media types of manifests and indexes we read, OCI and Docker schema 2.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long the HTTPS probe of a loopback or insecure registry may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The most redirects followed for one request, as Go's HTTP client (Docker, containerd).
pub const MAX_REDIRECTS: usize = 10;

/// How much of an error answer is read for its message (containerd reads 64 KB).
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// The largest token service answer read (a JSON object with a token of a few KiB).
const TOKEN_ANSWER_LIMIT: u64 = 1 << 20;

/// What is wrong with the size of something a registry sent. In every case nothing past
/// the bound was read into memory or written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeProblem {
    /// The descriptor declares more than the limit for its kind: not asked for.
    DeclaredOverLimit {
        /// The declared size.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// `Content-Length` announces more than the limit: refused before reading.
    LengthOverLimit {
        /// The announced length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// With no length announced, more than the limit arrived.
    LongerThanLimit {
        /// The limit.
        limit: u64,
    },
    /// `Content-Length` is not the size the descriptor declares: refused before reading.
    LengthNotDeclared {
        /// The announced length.
        length: u64,
        /// The declared size.
        declared: u64,
    },
    /// More than the declared size arrived.
    LongerThanDeclared {
        /// The declared size.
        declared: u64,
    },
}

impl std::fmt::Display for SizeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::DeclaredOverLimit { declared, limit } => write!(
                f,
                "declared as {declared} bytes, over the {} limit ({limit} bytes); not fetched",
                limits::human(limit)
            ),
            Self::LengthOverLimit { length, limit } => write!(
                f,
                "the registry announces Content-Length {length}, over the {} limit ({limit} bytes); not read",
                limits::human(limit)
            ),
            Self::LongerThanLimit { limit } => write!(
                f,
                "more than {limit} bytes arrived, over the {} limit; the rest was not read",
                limits::human(limit)
            ),
            Self::LengthNotDeclared { length, declared } => write!(
                f,
                "the registry announces Content-Length {length}, not the declared size {declared}; not read"
            ),
            Self::LongerThanDeclared { declared } => write!(
                f,
                "more than {declared} bytes arrived, its declared size; the rest was not read"
            ),
        }
    }
}

/// How much of a body may be taken: the size a descriptor declares (itself at most the
/// limit of its kind, when it has one), or, with nothing declared, the limit.
#[derive(Debug, Clone, Copy)]
struct Bound {
    declared: Option<u64>,
    limit: u64,
}

impl Bound {
    /// A body of unknown size, at most `limit` bytes.
    fn limited(limit: u64) -> Self {
        Self {
            declared: None,
            limit,
        }
    }

    /// A body of exactly `declared` bytes (a layer: no limit but the declared size).
    fn exactly(declared: u64) -> Self {
        Self {
            declared: Some(declared),
            limit: u64::MAX,
        }
    }

    /// A body of exactly `declared` bytes, refused when that is over `limit`.
    fn declared_within(declared: u64, limit: u64) -> Result<Self, SizeProblem> {
        if declared > limit {
            return Err(SizeProblem::DeclaredOverLimit { declared, limit });
        }
        Ok(Self {
            declared: Some(declared),
            limit,
        })
    }

    /// The most bytes taken.
    fn max(self) -> u64 {
        self.declared.unwrap_or(self.limit)
    }

    /// Checks an announced `Content-Length` before anything is read.
    fn check_length(self, length: Option<u64>) -> Result<(), SizeProblem> {
        match (length, self.declared) {
            (Some(length), Some(declared)) if length != declared => {
                Err(SizeProblem::LengthNotDeclared { length, declared })
            }
            (Some(length), None) if length > self.limit => Err(SizeProblem::LengthOverLimit {
                length,
                limit: self.limit,
            }),
            _ => Ok(()),
        }
    }

    /// Checks that `total` bytes (what arrived so far, with the chunk at hand) are allowed.
    fn check_total(self, total: u64) -> Result<(), SizeProblem> {
        if total <= self.max() {
            return Ok(());
        }
        Err(match self.declared {
            Some(declared) => SizeProblem::LongerThanDeclared { declared },
            None => SizeProblem::LongerThanLimit { limit: self.limit },
        })
    }
}

/// Errors talking to a registry. None of them ever holds a password or token.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (after retries).
    #[error("cannot reach {url} (after {attempts} attempts)")]
    Connection {
        /// The request URL.
        url: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{method} {url}: {status}{detail}")]
    Status {
        /// The request method.
        method: Method,
        /// The request URL.
        url: String,
        /// The answer.
        status: StatusCode,
        /// The registry's error message, if any (`: CODE: message`).
        detail: String,
    },
    /// Authentication failed: missing or wrong credentials.
    #[error("authentication to {registry} failed: {detail}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// Why (never contains the secret).
        detail: String,
    },
    /// A manifest or blob does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// `manifest` or `blob`.
        what: &'static str,
        /// What was asked for.
        name: String,
    },
    /// Content from the registry does not match its digest: it was changed on the way or
    /// on the server. Nothing of it was kept.
    #[error(
        "{what} from {source_name} does not match its digest: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)"
    )]
    DigestMismatch {
        /// `manifest` or `blob`.
        what: &'static str,
        /// Where it came from.
        source_name: String,
        /// The announced digest.
        expected: Digest,
        /// The announced size (0 when unknown).
        expected_size: u64,
        /// The digest of what arrived.
        actual: Digest,
        /// How much arrived.
        actual_size: u64,
    },
    /// Something the registry sent is larger than it may be, or not the size its descriptor
    /// declares. Not retried; nothing past the bound was read or kept.
    #[error("{what} {source_name}: {problem}")]
    Size {
        /// `manifest`, `config`, `blob`, `token answer`.
        what: &'static str,
        /// Where it came from (`registry/repository@digest`, or `:tag`).
        source_name: String,
        /// What is wrong.
        problem: SizeProblem,
    },
    /// Following redirects failed: more than [`MAX_REDIRECTS`] (a loop), or a bad
    /// `Location`. Not retried.
    #[error("{url}: gave up following the registry's redirects (at most {MAX_REDIRECTS})")]
    Redirect {
        /// The request URL (before any redirect).
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// The registry's token service is where the credentials must not go.
    #[error(
        "the token service of {registry} is {realm}: {reason}; xbuild sends credentials to a token service only over HTTPS (or over plain HTTP on the host of a plain-HTTP registry)"
    )]
    RealmRefused {
        /// The registry.
        registry: String,
        /// The realm, without its query.
        realm: String,
        /// Why.
        reason: &'static str,
    },
    /// The registry's answer makes no sense (missing header, bad JSON).
    #[error("unexpected answer from {registry}: {detail}")]
    Protocol {
        /// The registry.
        registry: String,
        /// What was wrong.
        detail: String,
    },
    /// TLS or client set-up failed (bad CA file).
    #[error("setting up the connection to {registry}: {detail}")]
    Setup {
        /// The registry.
        registry: String,
        /// What failed.
        detail: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Reading credentials failed.
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
}

/// How to reach registries: insecure hosts, extra CAs, timeouts, retries, credentials.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host` or `host:port`) where plain HTTP is allowed.
    pub insecure_registries: Vec<String>,
    /// Directory of per-host CA certificates (`<dir>/<host>/*.crt`), normally
    /// `$XBUILD_ROOT/certs.d`.
    pub certs_dir: Option<PathBuf>,
    /// Where credentials come from.
    pub docker_config: DockerConfig,
    /// Attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with ±50% jitter, capped at 10 s.
    pub backoff: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any bytes of an answer.
    pub read_timeout: Duration,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
    /// Blobs transferred at once.
    pub parallel_blobs: usize,
    /// The note shown the first time credentials go to a token service on another host.
    pub notes: CredentialNotes,
}

impl RegistryOptions {
    /// Defaults, with `certs.d` under the store root, credentials from `$DOCKER_CONFIG`,
    /// insecure hosts from `$XBUILD_INSECURE_REGISTRIES`, the chunk size from
    /// `$XBUILD_UPLOAD_CHUNK_SIZE` and the read timeout from `$XBUILD_REGISTRY_TIMEOUT`.
    pub fn from_env(store_root: &std::path::Path) -> Self {
        let insecure_registries = std::env::var(crate::env::XBUILD_INSECURE_REGISTRIES)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(str::to_owned)
            .collect();
        let chunk_size = std::env::var(crate::env::XBUILD_UPLOAD_CHUNK_SIZE)
            .ok()
            .and_then(|size| size.parse().ok())
            .filter(|size| *size > 0)
            .unwrap_or(16 << 20);
        let read_timeout = std::env::var(crate::env::XBUILD_REGISTRY_TIMEOUT)
            .ok()
            .and_then(|seconds| seconds.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .map_or(Duration::from_secs(120), Duration::from_secs_f64);
        Self {
            insecure_registries,
            certs_dir: Some(store_root.join("certs.d")),
            docker_config: DockerConfig::from_env(),
            max_attempts: 6,
            backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(30),
            read_timeout,
            chunk_size,
            parallel_blobs: 4,
            notes: CredentialNotes::remembered_in(Some(store_root.join("realm-notes"))),
        }
    }

    /// The same, showing notes (credentials sent to a token service on another host, the
    /// first time) as progress events on `sink`.
    #[must_use]
    pub fn showing_notes(mut self, sink: crate::progress::SharedSink) -> Self {
        self.notes = self.notes.shown_on(sink);
        self
    }

    fn is_insecure(&self, host: &str) -> bool {
        let bare = host_without_port(host);
        self.insecure_registries
            .iter()
            .any(|insecure| insecure == host || insecure == bare)
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether a registry host is on the loopback interface.
pub fn is_loopback(host: &str) -> bool {
    let bare = host_without_port(host);
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The access a request needs, as token scopes (`repository:<name>:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Read access to a repository.
    pub fn pull(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull")])
    }

    /// Read and write access to a repository.
    pub fn push(repository: &str) -> Self {
        Self(vec![format!("repository:{repository}:pull,push")])
    }

    /// Write access to `repository` and read access to `from` (a cross-repository mount).
    pub fn mount(repository: &str, from: &str) -> Self {
        let mut scope = Self::push(repository);
        if from != repository {
            scope.0.push(format!("repository:{from}:pull"));
        }
        scope
    }

    /// No repository (a login check).
    pub fn none() -> Self {
        Self(Vec::new())
    }
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<Scope, String>,
}

/// A connection to one registry host.
#[derive(Debug)]
pub struct Registry {
    name: String,
    /// The API host with its port: the `certs.d` directory name.
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    options: Arc<RegistryOptions>,
}

/// A manifest or index as the registry serves it: exact bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The bytes, unchanged (their digest is the manifest's identity).
    pub bytes: Vec<u8>,
    /// The media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// The sha256 digest of `bytes`.
    pub digest: Digest,
}

impl RawManifest {
    /// Wraps bytes read from elsewhere (the store), computing the digest.
    pub fn new(bytes: Vec<u8>, media_type: String) -> Self {
        let digest = sha256_digest(&bytes);
        Self {
            bytes,
            media_type,
            digest,
        }
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }

    /// A descriptor for it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.as_str().into(),
            self.bytes.len() as u64,
            self.digest.clone(),
        )
    }
}

/// Whether a media type names an index.
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MANIFEST_MEDIA_TYPES[0] || media_type == MANIFEST_MEDIA_TYPES[2]
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub(super) enum Payload<'a> {
    /// None (`Content-Length: 0` on `PUT` and `POST`).
    Empty,
    /// Bytes in memory: manifests, small.
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, read as they are sent: blob uploads.
    File {
        /// The file.
        path: &'a std::path::Path,
        /// Where the range starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
}

/// How much of a file is read at a time for an upload.
const UPLOAD_READ_SIZE: usize = 256 << 10;

/// A body that streams `len` bytes of the file at `path` from `offset`.
fn file_range_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<reqwest::Body, RegistryError> {
    use std::io::Seek as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = std::fs::File::open(path).map_err(|source| LayoutError::File {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    file.seek(std::io::SeekFrom::Start(offset))
        .map_err(|source| LayoutError::File {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    let range = tokio::fs::File::from_std(file).take(len);
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(range, UPLOAD_READ_SIZE),
    ))
}

/// What happened to a blob on push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it already.
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

impl Registry {
    /// Connects to the registry named `registry` (`docker.io`, `host:port`) with the
    /// credentials from the Docker configuration.
    ///
    /// # Errors
    /// Unreadable credentials, bad CA files, or (for loopback/insecure hosts) neither
    /// HTTPS nor HTTP answers.
    pub async fn connect(
        registry: &str,
        options: Arc<RegistryOptions>,
    ) -> Result<Self, RegistryError> {
        let credentials = options.docker_config.credentials(registry)?;
        Self::connect_with(registry, options, credentials).await
    }

    /// Connects with the given credentials (or none) instead of the configured ones.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_with(
        registry: &str,
        options: Arc<RegistryOptions>,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        let host = super::reference::api_host(registry).to_owned();
        let http = http_client(registry, &host, &options)?;
        let url = |scheme: &str| {
            Url::parse(&format!("{scheme}://{host}/")).map_err(|error| RegistryError::Setup {
                registry: registry.to_owned(),
                detail: format!("bad registry host: {error}"),
            })
        };
        let mut base = url("https")?;
        if is_loopback(&host) || options.is_insecure(&host) || options.is_insecure(registry) {
            base = probe_scheme(&http, &host, url("https")?, url("http")?, &options).await?;
        }
        Ok(Self {
            name: registry.to_owned(),
            host,
            base,
            http,
            credentials,
            auth: Mutex::new(AuthState::default()),
            options,
        })
    }

    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options in use.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    pub(super) fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry API paths are valid relative URLs")
    }

    /// Sends a request with retries and authentication. `body` is sent again on retries
    /// (a file range is read again from the file).
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Payload<'_>,
        scope: &Scope,
    ) -> Result<Response, RegistryError> {
        let mut authenticated_after_challenge = false;
        loop {
            let auth_header = self.auth_header(scope);
            let response = self
                .execute(|| {
                    let mut request = self
                        .http
                        .request(method.clone(), url.clone())
                        .headers(headers.clone());
                    if let Some(value) = &auth_header {
                        request = request.header(AUTHORIZATION, value);
                    }
                    Ok(match body {
                        Payload::Bytes(bytes) => request.body(bytes.to_vec()),
                        Payload::File { path, offset, len } => request
                            .header(CONTENT_LENGTH, len)
                            .body(file_range_body(path, offset, len)?),
                        Payload::Empty if method == Method::PUT || method == Method::POST => {
                            request.header(CONTENT_LENGTH, 0)
                        }
                        Payload::Empty => request,
                    })
                })
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || authenticated_after_challenge {
                if response.status() == StatusCode::UNAUTHORIZED {
                    let detail = error_detail(response).await;
                    return Err(self.unauthorized(if let Some(credentials) = &self.credentials {
                        format!(
                            "the registry refused the credentials of {:?} (wrong user name or password?){detail}",
                            credentials.username
                        )
                    } else {
                        format!(
                            "the registry needs credentials (xbuild login {}){detail}",
                            self.name
                        )
                    }));
                }
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .and_then(Challenge::parse)
                .ok_or_else(|| RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: "401 without a WWW-Authenticate challenge".to_owned(),
                })?;
            self.authenticate(challenge, scope).await?;
            authenticated_after_challenge = true;
        }
    }

    fn unauthorized(&self, detail: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.name.clone(),
            detail,
        }
    }

    fn auth_header(&self, scope: &Scope) -> Option<String> {
        let state = self.auth.lock().expect("auth state lock is never poisoned");
        match state.challenge.as_ref()?.scheme.as_str() {
            "basic" => self.credentials.as_ref().map(Credentials::basic_header),
            "bearer" => state
                .tokens
                .get(scope)
                .map(|token| format!("Bearer {token}")),
            _ => None,
        }
    }

    /// Answers a challenge: remembers Basic, or fetches a bearer token for `scope`.
    async fn authenticate(&self, challenge: Challenge, scope: &Scope) -> Result<(), RegistryError> {
        match challenge.scheme.as_str() {
            "basic" => {
                if self.credentials.is_none() {
                    return Err(self.unauthorized(format!(
                        "the registry needs credentials (xbuild login {})",
                        self.name
                    )));
                }
            }
            "bearer" => {
                let token = self.fetch_token(&challenge, scope).await?;
                self.auth
                    .lock()
                    .expect("auth state lock is never poisoned")
                    .tokens
                    .insert(scope.clone(), token);
            }
            other => {
                return Err(
                    self.unauthorized(format!("unsupported authentication scheme {other:?}"))
                );
            }
        }
        self.auth
            .lock()
            .expect("auth state lock is never poisoned")
            .challenge = Some(challenge);
        Ok(())
    }

    /// The bearer token flow: GET the realm with `service` and `scope` (Basic credentials
    /// when we have them), or POST the OAuth2 refresh-token grant for an identity token.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &Scope,
    ) -> Result<String, RegistryError> {
        let realm = challenge.realm().ok_or_else(|| RegistryError::Protocol {
            registry: self.name.clone(),
            detail: "bearer challenge without a realm".to_owned(),
        })?;
        let realm = Url::parse(realm).map_err(|error| RegistryError::Protocol {
            registry: self.name.clone(),
            detail: format!("bad token realm: {error}"),
        })?;
        let realm_text = realm.as_str().split('?').next().unwrap_or("").to_owned();
        let policy =
            realm::policy(&self.base, &realm).map_err(|detail| RegistryError::Protocol {
                registry: self.name.clone(),
                detail,
            })?;
        let credentials = match (&self.credentials, policy) {
            (None, _) => None,
            (Some(_), realm::Policy::NoCredentials { reason }) => {
                return Err(RegistryError::RealmRefused {
                    registry: self.name.clone(),
                    realm: realm_text,
                    reason,
                });
            }
            (Some(credentials), realm::Policy::OtherHost) => {
                self.options.notes.foreign_realm(&self.name, &realm);
                Some(credentials)
            }
            (Some(credentials), realm::Policy::SameHost) => Some(credentials),
        };
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let response = match credentials {
            Some(credentials) if credentials.is_identity_token() => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", credentials.secret.expose().to_owned()),
                    ("service", service.clone()),
                    ("client_id", "xbuild".to_owned()),
                ];
                if !scope.0.is_empty() {
                    form.push(("scope", scope.0.join(" ")));
                }
                self.execute(|| Ok(self.http.post(realm.clone()).form(&form)))
                    .await?
            }
            credentials => {
                let mut query = vec![("service", service.clone())];
                query.extend(scope.0.iter().map(|scope| ("scope", scope.clone())));
                if let Some(credentials) = credentials {
                    query.push(("account", credentials.username.clone()));
                }
                self.execute(|| {
                    let request = self.http.get(realm.clone()).query(&query);
                    Ok(match credentials {
                        Some(credentials) => {
                            request.header(AUTHORIZATION, credentials.basic_header())
                        }
                        None => request,
                    })
                })
                .await?
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(response).await;
            return Err(self.unauthorized(format!(
                "the token service refused the credentials ({status}){detail}"
            )));
        }
        if !status.is_success() {
            let detail = error_detail(response).await;
            return Err(RegistryError::Status {
                method: Method::GET,
                url: realm.to_string(),
                status,
                detail,
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = self
            .read_body(
                response,
                "token answer",
                &realm_text,
                Bound::limited(TOKEN_ANSWER_LIMIT),
            )
            .await?;
        let answer: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|_| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: "the token service's answer is not JSON with a token".to_owned(),
            })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: "the token service's answer has no token".to_owned(),
            })
    }

    /// Sends a request built by `build`, retrying connection errors, `5xx` and `429` (not
    /// failed redirects: a loop stays a loop).
    async fn execute(
        &self,
        build: impl Fn() -> Result<reqwest::RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = build()?.build().map_err(|error| RegistryError::Setup {
                registry: self.name.clone(),
                detail: error.to_string(),
            })?;
            let url = request
                .url()
                .as_str()
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned();
            match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let retryable =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    if !retryable || attempt >= max {
                        return Ok(response);
                    }
                    let wait = retry_after(&response)
                        .unwrap_or_else(|| backoff(self.options.backoff, attempt));
                    drop(response);
                    tokio::time::sleep(wait).await;
                }
                Err(error) if error.is_builder() => {
                    return Err(RegistryError::Setup {
                        registry: self.name.clone(),
                        detail: error.to_string(),
                    });
                }
                Err(error) if error.is_redirect() => {
                    return Err(RegistryError::Redirect {
                        url,
                        source: error.without_url(),
                    });
                }
                Err(error) => {
                    if let Some(refused) = untrusted_certificate(&error, &self.host) {
                        return Err(refused);
                    }
                    if attempt >= max {
                        return Err(RegistryError::Connection {
                            url: error.url().map(ToString::to_string).unwrap_or_default(),
                            attempts: attempt,
                            source: error.without_url(),
                        });
                    }
                    tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
                }
            }
        }
    }

    /// Checks that the registry accepts our credentials (`GET /v2/`).
    ///
    /// # Errors
    /// [`RegistryError::Unauthorized`] for wrong credentials, others for transport failures.
    pub async fn check_login(&self) -> Result<(), RegistryError> {
        let url = self.url("v2/");
        let response = self
            .send(
                Method::GET,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                &Scope::none(),
            )
            .await?;
        check_status(Method::GET, &url, response).await.map(drop)
    }

    /// Fetches a manifest or index by tag or digest, checking its digest. At most
    /// [`MAX_MANIFEST_SIZE`] bytes are read.
    ///
    /// # Errors
    /// Not found, access denied, transport failures, a manifest over the limit, or bytes
    /// that do not match the digest asked for (or announced in `Docker-Content-Digest`).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<RawManifest, RegistryError> {
        self.fetch_manifest(repository, reference, Bound::limited(MAX_MANIFEST_SIZE))
            .await
    }

    /// Fetches the manifest or index a descriptor names (an index entry), reading no more
    /// than its declared size, which must be at most [`MAX_MANIFEST_SIZE`] (else it is not
    /// asked for).
    ///
    /// # Errors
    /// As [`Self::get_manifest`], and a size other than the declared one.
    pub async fn get_manifest_of(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<RawManifest, RegistryError> {
        let digest = descriptor.digest();
        let bound =
            Bound::declared_within(descriptor.size(), MAX_MANIFEST_SIZE).map_err(|problem| {
                RegistryError::Size {
                    what: "manifest",
                    source_name: format!("{}/{repository}@{digest}", self.name),
                    problem,
                }
            })?;
        self.fetch_manifest(repository, digest.as_ref(), bound)
            .await
    }

    async fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
        bound: Bound,
    ) -> Result<RawManifest, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            MANIFEST_MEDIA_TYPES
                .join(", ")
                .parse()
                .expect("media types are valid header values"),
        );
        let separator = if reference.parse::<Digest>().is_ok() {
            '@'
        } else {
            ':'
        };
        let source_name = format!("{}/{repository}{separator}{reference}", self.name);
        let response = self
            .send(
                Method::GET,
                url.clone(),
                headers,
                Payload::Empty,
                &Scope::pull(repository),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: "manifest",
                name: source_name,
            });
        }
        let response = check_status(Method::GET, &url, response).await?;
        let content_type = header_str(&response, CONTENT_TYPE.as_str())
            .map(|value| value.split(';').next().unwrap_or("").trim().to_owned());
        let announced = header_str(&response, "docker-content-digest")
            .and_then(|digest| digest.parse::<Digest>().ok());
        let bytes = self
            .read_body(response, "manifest", &source_name, bound)
            .await?;
        let media_type = match content_type.filter(|t| MANIFEST_MEDIA_TYPES.contains(&t.as_str())) {
            Some(media_type) => media_type,
            None => media_type_of_document(&bytes).ok_or_else(|| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("{source_name} is not a manifest or index"),
            })?,
        };
        let manifest = RawManifest::new(bytes, media_type);
        let expected = reference.parse::<Digest>().ok().or(announced);
        if let Some(expected) = expected {
            if expected != manifest.digest {
                return Err(RegistryError::DigestMismatch {
                    what: "manifest",
                    source_name,
                    expected,
                    expected_size: bound.declared.unwrap_or(0),
                    actual: manifest.digest,
                    actual_size: manifest.bytes.len() as u64,
                });
            }
        }
        Ok(manifest)
    }

    /// Whether a manifest exists (`HEAD`).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn has_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{digest}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            MANIFEST_MEDIA_TYPES
                .join(", ")
                .parse()
                .expect("media types are valid header values"),
        );
        let response = self
            .send(
                Method::HEAD,
                url.clone(),
                headers,
                Payload::Empty,
                &Scope::push(repository),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_status(Method::HEAD, &url, response)
            .await
            .map(|_| true)
    }

    /// Uploads a manifest or index with its exact bytes under `reference` (a tag or its
    /// digest) and checks the digest the registry computed.
    ///
    /// # Errors
    /// Rejected manifest, transport or auth failures, a different digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            manifest
                .media_type
                .parse()
                .map_err(|_| RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: format!("bad media type {:?}", manifest.media_type),
                })?,
        );
        let response = self
            .send(
                Method::PUT,
                url.clone(),
                headers,
                Payload::Bytes(&manifest.bytes),
                &Scope::push(repository),
            )
            .await?;
        let response = check_status(Method::PUT, &url, response).await?;
        if let Some(returned) = header_str(&response, "docker-content-digest")
            .and_then(|digest| digest.parse::<Digest>().ok())
        {
            if returned != manifest.digest {
                return Err(RegistryError::Protocol {
                    registry: self.name.clone(),
                    detail: format!(
                        "stored manifest {reference} as {returned}, not {}",
                        manifest.digest
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether a blob exists in the repository (`HEAD`).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn has_blob(
        &self,
        repository: &str,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let response = self
            .send(
                Method::HEAD,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                scope,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_status(Method::HEAD, &url, response)
            .await
            .map(|_| true)
    }

    /// Refuses a config whose descriptor declares more than [`MAX_CONFIG_SIZE`], before it
    /// is fetched (into memory by [`Self::get_config`], or into the store by
    /// [`Self::fetch_blob`], from where it is read whole).
    ///
    /// # Errors
    /// [`RegistryError::Size`] when the declared size is over the limit.
    pub fn check_config_size(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<(), RegistryError> {
        self.config_bound(repository, descriptor).map(drop)
    }

    fn config_bound(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Bound, RegistryError> {
        Bound::declared_within(descriptor.size(), MAX_CONFIG_SIZE).map_err(|problem| {
            RegistryError::Size {
                what: "config",
                source_name: format!("{}/{repository}@{}", self.name, descriptor.digest()),
                problem,
            }
        })
    }

    /// Fetches a config into memory, checking its digest; no more than its declared size
    /// is read, and that must be at most [`MAX_CONFIG_SIZE`].
    ///
    /// # Errors
    /// Not found, transport failures, a size over the limit or other than declared, digest
    /// mismatch.
    pub async fn get_config(
        &self,
        repository: &str,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let digest = descriptor.digest();
        let bound = self.config_bound(repository, descriptor)?;
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let response = self
            .send(
                Method::GET,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                &Scope::pull(repository),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: "blob",
                name: format!("{}/{repository}@{digest}", self.name),
            });
        }
        let response = check_status(Method::GET, &url, response).await?;
        let source_name = format!("{}/{repository}@{digest}", self.name);
        let bytes = self
            .read_body(response, "config", &source_name, bound)
            .await?;
        let actual = sha256_digest(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "config",
                source_name: format!("{}/{repository}", self.name),
                expected: digest.clone(),
                expected_size: descriptor.size(),
                actual,
                actual_size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Reads an answer's body into memory within `bound`: a `Content-Length` the bound
    /// does not allow is refused before reading, and the read stops at the first chunk
    /// that would take it past the bound. The buffer is sized once from the announced
    /// length (never more than the bound), so the bytes are copied once, from the socket's
    /// chunks into it.
    async fn read_body(
        &self,
        mut response: Response,
        what: &'static str,
        source_name: &str,
        bound: Bound,
    ) -> Result<Vec<u8>, RegistryError> {
        let size_error = |problem| RegistryError::Size {
            what,
            source_name: source_name.to_owned(),
            problem,
        };
        let url = response
            .url()
            .as_str()
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned();
        let announced = response.content_length();
        bound.check_length(announced).map_err(size_error)?;
        let expected = bound.declared.or(announced).unwrap_or(0).min(bound.max());
        let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bound
                        .check_total(bytes.len() as u64 + chunk.len() as u64)
                        .map_err(size_error)?;
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(bytes),
                Err(source) => {
                    return Err(RegistryError::Connection {
                        url,
                        attempts: 1,
                        source: source.without_url(),
                    });
                }
            }
        }
    }

    /// Streams a blob into the layout, verifying digest and size as it arrives. No more than
    /// its declared size is read or written: a `Content-Length` other than that size is
    /// refused before reading, and one byte more is an error (neither is retried). A body
    /// cut short is fetched again from the start; a mismatch is an error and nothing is
    /// kept.
    ///
    /// # Errors
    /// Not found, transport failures after retries, digest or size mismatch.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let digest = descriptor.digest();
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let bound = Bound::exactly(descriptor.size());
        let size_error = |problem| RegistryError::Size {
            what: "blob",
            source_name: format!("{}/{repository}@{digest}", self.name),
            problem,
        };
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            progress.reset(digest);
            let response = self
                .send(
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    Payload::Empty,
                    &Scope::pull(repository),
                )
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    what: "blob",
                    name: format!("{}/{repository}@{digest}", self.name),
                });
            }
            let mut response = check_status(Method::GET, &url, response).await?;
            bound
                .check_length(response.content_length())
                .map_err(size_error)?;
            let mut writer = layout.blob_writer()?;
            let mut write_error = None;
            let streamed = loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        // Nothing past the declared size reaches the disk: the chunk that
                        // would cross it is not written, and the unfinished temporary file
                        // goes with the writer.
                        bound
                            .check_total(writer.size() + chunk.len() as u64)
                            .map_err(size_error)?;
                        if let Err(error) = std::io::Write::write_all(&mut writer, &chunk) {
                            write_error = Some(error);
                            break Ok(());
                        }
                        progress.advance(digest, chunk.len() as u64);
                    }
                    Ok(None) => break Ok(()),
                    Err(error) => break Err(error),
                }
            };
            if let Some(source) = write_error {
                return Err(LayoutError::File {
                    action: "writing a blob in",
                    path: layout.tmp_dir(),
                    source,
                }
                .into());
            }
            match streamed {
                Ok(()) => {
                    return match writer.commit(Some((digest, descriptor.size()))) {
                        Ok(_) => {
                            super::source::record(layout, digest, &self.name, repository);
                            Ok(())
                        }
                        Err(LayoutError::DigestMismatch {
                            expected,
                            expected_size,
                            actual,
                            actual_size,
                        }) => Err(RegistryError::DigestMismatch {
                            what: "blob",
                            source_name: format!("{}/{repository}", self.name),
                            expected,
                            expected_size,
                            actual,
                            actual_size,
                        }),
                        Err(error) => Err(error.into()),
                    };
                }
                // The body was cut short: the uncommitted writer removes its temporary
                // file; fetch again from the start.
                Err(_) if attempt < max => {
                    drop(writer);
                    tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
                }
                Err(source) => {
                    return Err(RegistryError::Connection {
                        url: url.to_string(),
                        attempts: attempt,
                        source: source.without_url(),
                    });
                }
            }
        }
    }

    /// Pushes one blob from the layout: nothing if the repository has it (`HEAD`), a
    /// cross-repository mount when `mount_from` (a repository of this registry) is given,
    /// else an upload: monolithic up to the chunk size, chunked above it. A failed upload
    /// is restarted from the beginning with a new upload session.
    ///
    /// # Errors
    /// Missing local blob, transport or auth failures after retries, a rejected upload.
    pub async fn push_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        mount_from: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        let digest = descriptor.digest();
        let scope = match mount_from {
            Some(from) => Scope::mount(repository, from),
            None => Scope::push(repository),
        };
        if self.has_blob(repository, digest, &scope).await? {
            return Ok(BlobPush::Exists);
        }
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .try_push_blob(repository, descriptor, layout, mount_from, &scope, progress)
                .await;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(error @ (RegistryError::Layout(_) | RegistryError::Unauthorized { .. })) => {
                    return Err(error);
                }
                Err(_) if attempt < max => {
                    progress.reset(digest);
                    tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_push_blob(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        layout: &ImageLayout,
        mount_from: Option<&str>,
        scope: &Scope,
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        let digest = descriptor.digest();
        let mut start = self.url(&format!("v2/{repository}/blobs/uploads/"));
        if let Some(from) = mount_from.filter(|from| *from != repository) {
            start
                .query_pairs_mut()
                .append_pair("mount", digest.as_ref())
                .append_pair("from", from);
        }
        let response = self
            .send(
                Method::POST,
                start.clone(),
                HeaderMap::new(),
                Payload::Empty,
                scope,
            )
            .await?;
        // 201: mounted. 202: an upload session (also the answer to a mount the registry
        // declined, which oci-client reports as an error; we upload into that session).
        let response = check_status(Method::POST, &start, response).await?;
        if response.status() == StatusCode::CREATED {
            progress.advance(digest, descriptor.size());
            return Ok(BlobPush::Mounted);
        }
        let mut location = self.location(&response)?;
        if !layout.has_blob(digest) {
            // The mount was declined and the blob was never downloaded: fetch it from where
            // it lives, then upload it.
            if let Some(from) = mount_from.filter(|from| *from != repository) {
                self.fetch_blob(from, descriptor, layout, progress).await?;
                progress.reset(digest);
            }
        }
        // The upload streams from the file, a range per request: a blob (or a chunk of
        // one) is never whole in memory. Checked here so that a missing or short blob is
        // an error of the store, not a failed request retried.
        let path = layout.blob_path(digest)?;
        let size = descriptor.size();
        let on_disk = layout
            .open_blob(digest)?
            .metadata()
            .map_err(|source| LayoutError::File {
                action: "inspecting",
                path: path.clone(),
                source,
            })?
            .len();
        if on_disk != size {
            return Err(LayoutError::File {
                action: "reading",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the blob is {on_disk} bytes, its descriptor says {size}"),
                ),
            }
            .into());
        }
        let chunk_size = self.options.chunk_size.max(1);
        let mut octet = HeaderMap::new();
        octet.insert(
            CONTENT_TYPE,
            "application/octet-stream"
                .parse()
                .expect("a valid header value"),
        );
        if size > chunk_size {
            let mut offset = 0;
            while offset < size {
                let len = chunk_size.min(size - offset);
                let mut headers = octet.clone();
                headers.insert(
                    "content-range",
                    format!("{offset}-{}", offset + len - 1)
                        .parse()
                        .expect("a valid header value"),
                );
                let response = self
                    .send(
                        Method::PATCH,
                        location.clone(),
                        headers,
                        Payload::File {
                            path: &path,
                            offset,
                            len,
                        },
                        scope,
                    )
                    .await?;
                let response = check_status(Method::PATCH, &location, response).await?;
                location = self.location(&response)?;
                offset += len;
                progress.advance(digest, len);
            }
            let mut put = location.clone();
            put.query_pairs_mut().append_pair("digest", digest.as_ref());
            let response = self
                .send(Method::PUT, put.clone(), octet, Payload::Empty, scope)
                .await?;
            check_status(Method::PUT, &put, response).await?;
        } else {
            let mut put = location.clone();
            put.query_pairs_mut().append_pair("digest", digest.as_ref());
            let body = Payload::File {
                path: &path,
                offset: 0,
                len: size,
            };
            let response = self
                .send(Method::PUT, put.clone(), octet, body, scope)
                .await?;
            check_status(Method::PUT, &put, response).await?;
            progress.advance(digest, size);
        }
        Ok(BlobPush::Uploaded)
    }

    /// Asks the registry to mount a blob from another repository of it. `true`: mounted;
    /// `false`: declined (the registry answered `202` with an upload session instead,
    /// which oci-client would report as an error; the session is left to expire).
    ///
    /// # Errors
    /// Transport or auth failures.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_ref())
            .append_pair("from", from);
        let response = self
            .send(
                Method::POST,
                url.clone(),
                HeaderMap::new(),
                Payload::Empty,
                &Scope::mount(repository, from),
            )
            .await?;
        let response = check_status(Method::POST, &url, response).await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// The upload session URL of an answer (`Location`, possibly relative).
    fn location(&self, response: &Response) -> Result<Url, RegistryError> {
        let location = header_str(response, "location").ok_or_else(|| RegistryError::Protocol {
            registry: self.name.clone(),
            detail: "upload answer without a Location".to_owned(),
        })?;
        response
            .url()
            .join(location)
            .map_err(|error| RegistryError::Protocol {
                registry: self.name.clone(),
                detail: format!("bad upload Location: {error}"),
            })
    }
}

pub(super) fn header_str<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// The `mediaType` a manifest document declares, for registries that answer with a
/// generic content type.
fn media_type_of_document(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match (probe.media_type, probe.manifests, probe.config) {
        (Some(media_type), _, _) => Some(media_type),
        (None, Some(_), _) => Some(MANIFEST_MEDIA_TYPES[0].to_owned()),
        (None, None, Some(_)) => Some(MANIFEST_MEDIA_TYPES[1].to_owned()),
        _ => None,
    }
}

/// Turns an error status into [`RegistryError::Status`], passing successes through.
pub(super) async fn check_status(
    method: Method,
    url: &Url,
    response: Response,
) -> Result<Response, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = error_detail(response).await;
    Err(RegistryError::Status {
        method,
        url: url.as_str().split('?').next().unwrap_or("").to_owned(),
        status,
        detail,
    })
}

/// The registry's error message (`{"errors":[{"code":..,"message":..}]}`), as `: CODE:
/// message`, or empty.
async fn error_detail(response: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    // Bounded: a hostile registry may answer an error with an endless body. A message cut
    // at the bound does not parse, and the error goes without its detail.
    let mut response = response;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() as u64 + chunk.len() as u64 > ERROR_BODY_LIMIT {
            return String::new();
        }
        body.extend_from_slice(&chunk);
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return String::new();
    };
    envelope
        .errors
        .iter()
        .map(|entry| {
            format!(
                ": {}: {}",
                entry.code.as_deref().unwrap_or("ERROR"),
                entry.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// Exponential backoff with ±50% jitter, capped at 10 s.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let capped = exponential.min(Duration::from_secs(10));
    capped.mul_f64(0.5 + fastrand::f64())
}

/// `Retry-After` in seconds (the HTTP-date form is not used by registries), capped at 60 s.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = header_str(response, "retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

/// The HTTP client for one registry: timeouts and the extra CAs of `certs.d/<host>/`.
fn http_client(
    registry: &str,
    host: &str,
    options: &RegistryOptions,
) -> Result<reqwest::Client, RegistryError> {
    let setup = |detail: String| RegistryError::Setup {
        registry: registry.to_owned(),
        detail,
    };
    let mut certificates = Vec::new();
    if let Some(certs_dir) = &options.certs_dir {
        let dir = certs_dir.join(host);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
                .collect();
            paths.sort();
            for path in paths {
                let pem = std::fs::read(&path)
                    .map_err(|error| setup(format!("reading {}: {error}", path.display())))?;
                let bundle = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                    setup(format!(
                        "{} is not a PEM certificate: {error}",
                        path.display()
                    ))
                })?;
                certificates.extend(bundle);
            }
        }
    }
    reqwest::Client::builder()
        .user_agent(concat!("xbuild/", env!("CARGO_PKG_VERSION")))
        // reqwest's default too; said here because the module's promise depends on it. Its
        // redirect handling also drops `Authorization` when the scheme, host or port
        // changes (tests/it/hostile.rs checks it on a blob sent to another host).
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .tls_certs_merge(certificates)
        .build()
        .map_err(|error| setup(error.to_string()))
}

/// For loopback and insecure hosts: HTTPS if it answers, else plain HTTP. A certificate
/// error is reported, not papered over with HTTP.
async fn probe_scheme(
    http: &reqwest::Client,
    host: &str,
    https: Url,
    plain: Url,
    options: &RegistryOptions,
) -> Result<Url, RegistryError> {
    let probe = https.join("v2/").expect("a valid path");
    // Bounded: a plain-HTTP server may sit silently on a TLS hello.
    match http
        .get(probe)
        .timeout(PROBE_TIMEOUT.min(options.read_timeout))
        .send()
        .await
    {
        Ok(_) => return Ok(https),
        Err(error) => {
            if let Some(refused) = untrusted_certificate(&error, host) {
                return Err(refused);
            }
        }
    }
    // Plain HTTP: any answer (even 401 or 500) shows it speaks HTTP. Connection errors are
    // retried as for any request.
    let probe = plain.join("v2/").expect("a valid path");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match http.get(probe.clone()).send().await {
            Ok(_) => return Ok(plain),
            Err(source) if attempt >= options.max_attempts.max(1) => {
                return Err(RegistryError::Connection {
                    url: probe.to_string(),
                    attempts: attempt,
                    source: source.without_url(),
                });
            }
            Err(_) => tokio::time::sleep(backoff(options.backoff, attempt)).await,
        }
    }
}

/// A TLS failure over the server's certificate, as an error with advice (retrying does not
/// help, and falling back to plain HTTP would hide it).
fn untrusted_certificate(error: &reqwest::Error, host: &str) -> Option<RegistryError> {
    let chain = crate::error::chain_text(error);
    (chain.contains("certificate") || chain.contains("Certificate")).then(|| {
        RegistryError::Setup {
            registry: host.to_owned(),
            detail: format!(
                "TLS certificate not trusted ({chain}); put the registry's CA in certs.d/{host}/ca.crt under the store"
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection-per-request HTTP server on 127.0.0.1 that plays `answers` in
    /// order (`None`: drop the connection without answering) and counts requests. Non-HTTP
    /// connections (the HTTPS probe) are closed and not counted.
    async fn scripted_server(answers: Vec<Option<&'static str>>) -> (String, Arc<Mutex<usize>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let count = Arc::new(Mutex::new(0));
        let served = Arc::clone(&count);
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                    if !head[0].is_ascii_uppercase() {
                        break;
                    }
                }
                if head.first().is_none_or(|b| !b.is_ascii_uppercase()) {
                    continue;
                }
                *served.lock().unwrap() += 1;
                match answers.next().flatten() {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    None => drop(stream),
                }
            }
        });
        (host, count)
    }

    fn test_options() -> Arc<RegistryOptions> {
        let mut options = RegistryOptions::from_env(std::path::Path::new("/nonexistent"));
        options.docker_config = DockerConfig::at("/nonexistent/config.json");
        options.backoff = Duration::from_millis(10);
        Arc::new(options)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

    #[tokio::test]
    async fn retries_connection_drops_and_server_errors() {
        // The first answer goes to the scheme probe.
        let (host, count) = scripted_server(vec![
            Some(OK),
            None,
            None,
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Some(OK),
        ])
        .await;
        let registry = Registry::connect_with(&host, test_options(), None)
            .await
            .unwrap();
        registry.check_login().await.unwrap();
        assert_eq!(*count.lock().unwrap(), 5);
    }

    #[tokio::test]
    async fn too_many_requests_waits_for_retry_after() {
        let (host, count) = scripted_server(vec![
            Some(OK),
            Some("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Some(OK),
        ])
        .await;
        let registry = Registry::connect_with(&host, test_options(), None)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        registry.check_login().await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(*count.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let (host, count) = scripted_server(vec![Some(OK)]).await;
        let mut options = (*test_options()).clone();
        options.max_attempts = 3;
        let registry = Registry::connect_with(&host, Arc::new(options), None)
            .await
            .unwrap();
        let error = registry.check_login().await.unwrap_err();
        assert!(
            matches!(error, RegistryError::Connection { attempts: 3, .. }),
            "{error}"
        );
        assert_eq!(*count.lock().unwrap(), 4);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn insecure_registries_match_with_or_without_port() {
        let mut options = RegistryOptions::from_env(std::path::Path::new("/nonexistent"));
        options.insecure_registries = vec!["reg.lan".to_owned(), "other.lan:5000".to_owned()];
        assert!(options.is_insecure("reg.lan:5000"));
        assert!(options.is_insecure("reg.lan"));
        assert!(options.is_insecure("other.lan:5000"));
        assert!(!options.is_insecure("other.lan:6000"));
        assert!(!options.is_insecure("registry.example"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 1) <= Duration::from_millis(150));
        assert!(backoff(base, 3) >= Duration::from_millis(200));
        assert!(backoff(base, 30) <= Duration::from_secs(15));
    }

    #[test]
    fn a_declared_size_bounds_the_body_and_its_length() {
        let layer = Bound::exactly(1024);
        assert_eq!(layer.check_length(Some(1024)), Ok(()));
        assert_eq!(layer.check_length(None), Ok(()));
        assert_eq!(
            layer.check_length(Some(2048)),
            Err(SizeProblem::LengthNotDeclared {
                length: 2048,
                declared: 1024
            })
        );
        assert_eq!(
            layer.check_length(Some(512)),
            Err(SizeProblem::LengthNotDeclared {
                length: 512,
                declared: 1024
            })
        );
        assert_eq!(layer.check_total(1024), Ok(()));
        // One byte more is an error.
        assert_eq!(
            layer.check_total(1025),
            Err(SizeProblem::LongerThanDeclared { declared: 1024 })
        );
        let config = Bound::declared_within(2, MAX_CONFIG_SIZE).unwrap();
        assert_eq!(
            config.check_total(3),
            Err(SizeProblem::LongerThanDeclared { declared: 2 })
        );
        assert_eq!(
            Bound::declared_within(50_000_000, MAX_MANIFEST_SIZE).unwrap_err(),
            SizeProblem::DeclaredOverLimit {
                declared: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            }
        );
    }

    #[test]
    fn a_limit_bounds_a_body_of_unknown_size() {
        let manifest = Bound::limited(MAX_MANIFEST_SIZE);
        assert_eq!(manifest.check_length(Some(MAX_MANIFEST_SIZE)), Ok(()));
        assert_eq!(
            manifest.check_length(Some(50_000_000)),
            Err(SizeProblem::LengthOverLimit {
                length: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            })
        );
        assert_eq!(manifest.check_total(MAX_MANIFEST_SIZE), Ok(()));
        assert_eq!(
            manifest.check_total(MAX_MANIFEST_SIZE + 1),
            Err(SizeProblem::LongerThanLimit {
                limit: MAX_MANIFEST_SIZE
            })
        );
        assert_eq!(
            SizeProblem::LengthOverLimit {
                length: 50_000_000,
                limit: MAX_MANIFEST_SIZE
            }
            .to_string(),
            "the registry announces Content-Length 50000000, over the 4 MiB limit (4194304 bytes); not read"
        );
    }

    #[tokio::test]
    async fn an_endless_manifest_is_cut_after_the_limit() {
        // A body without length: the server writes until the client hangs up.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&sent);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let read = stream.read(&mut head).await.unwrap_or(0);
                    if read == 0 || !head[0].is_ascii_uppercase() {
                        return;
                    }
                    let answer = if head.starts_with(b"GET /v2/ ") {
                        OK.as_bytes().to_vec()
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n".to_vec()
                    };
                    if stream.write_all(&answer).await.is_err() || head.starts_with(b"GET /v2/ ") {
                        return;
                    }
                    let block = vec![b' '; 64 << 10];
                    for _ in 0..(256 << 20) / block.len() {
                        if stream.write_all(&block).await.is_err() {
                            return;
                        }
                        counted.fetch_add(block.len() as u64, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        let registry = Registry::connect_with(&host, test_options(), None)
            .await
            .unwrap();
        let error = registry.get_manifest("app", "endless").await.unwrap_err();
        assert!(
            matches!(
                &error,
                RegistryError::Size {
                    what: "manifest",
                    problem: SizeProblem::LongerThanLimit { limit: MAX_MANIFEST_SIZE },
                    source_name,
                } if source_name == &format!("{host}/app:endless")
            ),
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(sent < 64 << 20, "{sent} bytes sent");
    }

    #[test]
    fn mount_scope_asks_pull_on_the_source() {
        assert_eq!(
            Scope::mount("a/b", "c").0,
            ["repository:a/b:pull,push", "repository:c:pull"]
        );
        assert_eq!(Scope::mount("a", "a").0, ["repository:a:pull,push"]);
    }
}

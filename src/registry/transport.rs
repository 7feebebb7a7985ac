//! The HTTP side of the distribution API: one [`Registry`] per registry host, the core its
//! endpoints share: connecting, sending a request with retries and the authentication
//! handshake, and reading an answer's body within a bound. The endpoints are in sibling
//! files: [`super::manifests`] (manifests, indexes, configs), `blobs.rs` (fetch, push,
//! mount); [`super::referrers`] adds the referrers API.
//!
//! - **Scheme.** HTTPS. A loopback host (`localhost`, `127.0.0.0/8`, `::1`) or one named
//!   insecure (`--insecure-registry`, `$XBUILD_INSECURE_REGISTRIES`) is probed: HTTPS first,
//!   plain HTTP when the TLS handshake fails for a reason other than the certificate (as
//!   Docker treats `localhost`). A host an output or cache names with
//!   `registry.insecure=true` is probed the same way, its certificate not verified (as
//!   BuildKit pushes then).
//! - **Trust.** The system roots plus `$XBUILD_ROOT/certs.d/<host>/*.crt` (as Docker's
//!   `certs.d`; `ca.crt` by convention). Set up in `client.rs`.
//! - **Retries.** Connection errors, timeouts, `5xx` and `429` are retried with exponential
//!   backoff and jitter, honouring `Retry-After`; a body cut short is restarted by the caller.
//! - **Auth.** A `401` is answered once per request with the challenge's scheme (see
//!   [`super::auth`]); bearer tokens are cached per scope. The credentials go to a token
//!   realm only as [`super::realm`] allows (HTTPS, or the registry's own plain-HTTP host).
//! - **Bounded reads.** Nothing a registry sends is read without a bound
//!   ([`crate::oci::limits`], `bounds.rs`): a blob stops at the size its descriptor
//!   declares (one byte more is an error, and nothing past it is written); a manifest or
//!   index at its declared size when an index names it, else at 4 MiB; a config at its
//!   declared size, which must be at most 20 MiB; a `Content-Length` that says otherwise is
//!   refused before the body is read. Error messages and token answers are read up to 64 KiB
//!   and 1 MiB. None of these is retried: the registry lied, asking again does not help.
//! - **Redirects.** At most [`MAX_REDIRECTS`] are followed (a loop fails at once, not
//!   retried); reqwest drops `Authorization` when a redirect leaves the registry's scheme,
//!   host and port (a blob on a CDN gets no credentials).
//!
//! Must not: name the endpoint files ([`super::manifests`], `blobs.rs`,
//! [`super::referrers`]): they build on this file, not the other way round. The types it
//! shares downwards ([`RegistryOptions`], [`RegistryError`], [`SizeProblem`]) are defined in
//! `options.rs`, `error.rs` and `bounds.rs` and re-exported here.
//!
//! Why not oci-client for this part: it has no retries (nor a hook for them), cannot stream a
//! blob into our verifying [`crate::oci::BlobWriter`] and restart it, re-serialises an index pushed with
//! its list helper (the digest changes), has no refresh-token grant, and reports the `202`
//! answer to a cross-repository mount as an error. The protocol is small; we speak it with
//! reqwest (oci-client's own HTTP client) directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{Challenge, Credentials};
use super::bounds::Bound;
pub use super::bounds::SizeProblem;
use super::client::{backoff, http_client, probe_scheme, untrusted_certificate};
pub use super::error::RegistryError;
pub(super) use super::error::check_status;
use super::error::error_detail;
pub use super::options::{MAX_REDIRECTS, RegistryOptions, is_loopback};
use super::realm;
use crate::oci::LayoutError;

/// The largest token service answer read (a JSON object with a token of a few KiB).
const TOKEN_ANSWER_LIMIT: u64 = 1 << 20;

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
    pub(super) name: String,
    /// The API host with its port: the `certs.d` directory name.
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    pub(super) options: Arc<RegistryOptions>,
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
        if is_loopback(&host)
            || options.is_insecure(&host)
            || options.is_insecure(registry)
            || options.is_unverified(&host)
            || options.is_unverified(registry)
        {
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

    /// Whether what `url` names exists: a `HEAD` that answers 404 is `false`, any other
    /// error status an error.
    pub(super) async fn exists(
        &self,
        url: Url,
        headers: HeaderMap,
        scope: &Scope,
    ) -> Result<bool, RegistryError> {
        let response = self
            .send(Method::HEAD, url.clone(), headers, Payload::Empty, scope)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check_status(Method::HEAD, &url, response)
            .await
            .map(|_| true)
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

    /// Reads an answer's body into memory within `bound`: a `Content-Length` the bound
    /// does not allow is refused before reading, and the read stops at the first chunk
    /// that would take it past the bound. The buffer is sized once from the announced
    /// length (never more than the bound), so the bytes are copied once, from the socket's
    /// chunks into it.
    pub(super) async fn read_body(
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
}

pub(super) fn header_str<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// `Retry-After` in seconds (the HTTP-date form is not used by registries), capped at 60 s.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = header_str(response, "retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::limits::MAX_MANIFEST_SIZE;
    use crate::registry::auth::DockerConfig;

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

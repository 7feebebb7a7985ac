//! How to reach registries: [`RegistryOptions`] (insecure hosts, `certs.d`, credentials,
//! timeouts, retries, chunk size) read from the environment, which hosts are loopback, and
//! [`MAX_REDIRECTS`].
//!
//! Must not: open connections or name the transport: [`super::client`] and
//! [`super::transport`] apply these options.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::DockerConfig;
use super::realm::CredentialNotes;

/// The most redirects followed for one request, as Go's HTTP client (Docker, containerd).
pub const MAX_REDIRECTS: usize = 10;

/// How to reach registries: insecure hosts, extra CAs, timeouts, retries, credentials.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host` or `host:port`) where plain HTTP is allowed.
    pub insecure_registries: Vec<String>,
    /// Hosts (`host:port` as a reference names them) reached over HTTPS without verifying
    /// the certificate, else plain HTTP: BuildKit's `registry.insecure=true` of an output or
    /// a cache. Never read from the environment: only the output or cache that says so.
    pub unverified_registries: Vec<String>,
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
    /// `$XBUILD_UPLOAD_CHUNK_SIZE`, the read timeout from `$XBUILD_REGISTRY_TIMEOUT` and the
    /// attempts per request from `$XBUILD_REGISTRY_ATTEMPTS`.
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
        let max_attempts = std::env::var(crate::env::XBUILD_REGISTRY_ATTEMPTS)
            .ok()
            .and_then(|attempts| attempts.trim().parse::<u32>().ok())
            .filter(|attempts| (1..=100).contains(attempts))
            .unwrap_or(6);
        Self {
            insecure_registries,
            unverified_registries: Vec::new(),
            certs_dir: Some(store_root.join("certs.d")),
            docker_config: DockerConfig::from_env(),
            max_attempts,
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

    /// The same options, with `registry` (a reference's registry, `host[:port]`) reached as
    /// BuildKit's `registry.insecure=true` does: HTTPS without verifying the certificate,
    /// else plain HTTP.
    #[must_use]
    pub fn with_unverified(mut self, registry: &str) -> Self {
        self.unverified_registries.push(registry.to_owned());
        self
    }

    /// Whether `host` is reached without verifying its certificate (see
    /// [`Self::with_unverified`]).
    pub(super) fn is_unverified(&self, host: &str) -> bool {
        self.unverified_registries
            .iter()
            .any(|unverified| unverified == host)
    }

    pub(super) fn is_insecure(&self, host: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

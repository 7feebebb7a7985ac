//! The HTTP client of one registry host: the extra CAs of `certs.d/<host>/`, timeouts, the
//! redirect policy ([`MAX_REDIRECTS`]), the HTTPS-then-HTTP probe of loopback and insecure
//! hosts, certificate errors with advice, and the retry backoff.
//!
//! Must not: send API requests or answer auth challenges (that is [`super::transport`]), or
//! fall back to plain HTTP when a certificate is not trusted. The one host whose
//! certificate is not verified is one an output or cache named with `registry.insecure=true`
//! ([`RegistryOptions::with_unverified`]).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::error::RegistryError;
use super::options::{MAX_REDIRECTS, RegistryOptions};

/// How long the HTTPS probe of a loopback or insecure registry may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Exponential backoff with ±50% jitter, capped at 10 s.
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let capped = exponential.min(Duration::from_secs(10));
    capped.mul_f64(0.5 + fastrand::f64())
}

/// The HTTP client for one registry: timeouts and the extra CAs of `certs.d/<host>/`.
pub(super) fn http_client(
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
        // `registry.insecure=true` of an output or cache, for its registry only.
        .tls_danger_accept_invalid_certs(
            options.is_unverified(host) || options.is_unverified(registry),
        )
        .build()
        .map_err(|error| setup(error.to_string()))
}

/// For loopback and insecure hosts: HTTPS if it answers, else plain HTTP. A certificate
/// error is reported, not papered over with HTTP.
pub(super) async fn probe_scheme(
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
pub(super) fn untrusted_certificate(error: &reqwest::Error, host: &str) -> Option<RegistryError> {
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

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 1) <= Duration::from_millis(150));
        assert!(backoff(base, 3) >= Duration::from_millis(200));
        assert!(backoff(base, 30) <= Duration::from_secs(15));
    }
}

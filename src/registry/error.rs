//! [`RegistryError`], the errors of talking to a registry, and the mapping of an error
//! answer to it ([`check_status`]: the status with the registry's bounded error message).
//!
//! Must not: hold a password or token in any error, read more than `ERROR_BODY_LIMIT` of an
//! error answer, or name the transport or its endpoints (they use these errors).

use oci_spec::image::Digest;
use reqwest::{Method, Response, StatusCode, Url};

use super::bounds::SizeProblem;
use super::options::MAX_REDIRECTS;
use crate::oci::LayoutError;

/// How much of an error answer is read for its message (containerd reads 64 KB).
const ERROR_BODY_LIMIT: u64 = 64 << 10;

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
pub(super) async fn error_detail(response: Response) -> String {
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

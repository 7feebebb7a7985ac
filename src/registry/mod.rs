//! Registries: references ([`mod@reference`]), credentials and the auth handshake
//! ([`auth`]), where credentials may go ([`realm`]: token services on other hosts), the HTTP
//! transport and the distribution API endpoints, [`pull`] into the local store, [`push`] from
//! it, manifest tools ([`tools`]: inspect, create an index), and [`referrers`] (attestations
//! pushed, fetched and copied with their image: the referrers API or its tag fallback).
//!
//! The transport, from the bottom up (a file names only those before it):
//! - `bounds.rs`: the size bounds of what a registry sends (`SizeProblem`, `Bound`).
//! - `options.rs`: [`RegistryOptions`] (insecure hosts, `certs.d`, timeouts, retries),
//!   loopback hosts, the redirect limit.
//! - `error.rs`: [`RegistryError`], and an error answer mapped to it (bounded message).
//! - `client.rs`: the reqwest client of one host (TLS trust, timeouts, redirects), the
//!   HTTPS/HTTP probe, the retry backoff.
//! - [`transport`]: [`Registry`], the core the endpoints share: connect, send with retries
//!   and the auth handshake, bodies read within a bound; re-exports the types above.
//! - [`manifests`]: manifest, index and config endpoints, [`RawManifest`].
//! - `blobs.rs`: blob endpoints: fetch into the store, push (exists, mount, upload), mount.
//! - [`referrers`]: the referrers API (also an `impl Registry` over the core).
//!
//! Owns the network; never touches root filesystems. Blobs go into the store through
//! [`crate::oci::BlobWriter`], verified while they stream and never past their declared
//! size; manifests, indexes and configs are read into memory within the bounds of
//! [`crate::oci::limits`].
//!
//! What a build calls:
//! - [`RegistryOptions::from_env`] once (store root → `certs.d`, `$DOCKER_CONFIG`,
//!   insecure hosts), shared as an `Arc`.
//! - [`pull::resolve`] for each `FROM`: the store's copy of that platform when complete,
//!   else a pull of that platform; gives the manifest descriptor and document.
//! - [`push::push_unnamed`] for `--push`: the build's result (named in the store first,
//!   unless `store=false`) to `target`, blobs then manifests then the index, digests
//!   unchanged; with `registry.insecure=true` through options
//!   [`RegistryOptions::with_unverified`] for that registry.
//! - [`SinkProgress::aggregate`] to report transfer bytes on the step's progress vertex.
//!
//! Spec: <https://github.com/opencontainers/distribution-spec/blob/main/spec.md>.

#![allow(
    clippy::result_large_err,
    reason = "errors are the cold path of network I/O; they carry digests and URLs for the message"
)]

pub mod auth;
mod blobs;
mod bounds;
mod client;
mod error;
pub mod manifests;
mod options;
pub mod progress;
pub mod pull;
pub mod push;
pub mod realm;
pub mod reference;
pub mod referrers;
mod source;
pub mod tools;
pub mod transport;

pub use auth::{Credentials, DockerConfig, Secret, forward_credentials};
pub use manifests::RawManifest;
pub use progress::{NoProgress, Progress, SinkProgress};
pub use pull::{PlatformChoice, PlatformImage, PulledImage};
pub use push::{PushOptions, PushedImage};
pub use reference::ImageRef;
pub use transport::{Registry, RegistryError, RegistryOptions};

pub(crate) use source::record as record_source;

//! xbuild: a daemonless, multi-platform container image builder.
//!
//! A Dockerfile is parsed ([`dockerfile`]), planned once per target platform ([`plan`]),
//! built step by step in an isolated root filesystem under QEMU emulation where needed
//! ([`executor`], [`sandbox`], [`binfmt`]), turned into deterministic layers ([`layer`]) and
//! images ([`oci`]), and kept in a local OCI image layout ([`store`]) or pushed to a registry
//! ([`registry`]). Attestations ([`attest`]: an SBOM from [`sbom`]'s scan of the image, SLSA
//! provenance) are stored and pushed with the image as OCI referrers of its manifests.
//!
//! Glossary, used the same way everywhere: *stage* (a Dockerfile `FROM` section), *step*
//! (one planned unit of work), *snapshot* (a root filesystem on disk), *layer* (one tar blob),
//! *image* (config + layers for one platform), *index* (the multi-platform list), *target*
//! (a platform being built for), *build platform* (the host).

pub mod attest;
pub mod binfmt;
pub mod cache;
pub mod check;
pub mod cli;
pub mod container;
pub mod context;
pub mod dockerfile;
pub mod env;
pub mod error;
pub mod executor;
pub mod export;
pub mod gostd;
pub mod layer;
pub mod nodes;
pub mod oci;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod registry;
pub mod remote;
pub mod sandbox;
pub mod sbom;
pub mod source;
pub mod store;

pub use error::{ExitKind, Failure};
pub use pipeline::{BuildError, BuildFailure, BuildRequest, BuildResult, build};

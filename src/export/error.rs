//! Why an output could not be written ([`ExportError`]), and which exit status each reason
//! gives.

use std::path::{Path, PathBuf};

use super::containerd::ContainerdError;
use super::engine::EngineError;
use crate::store::StoreError;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A `-t` name is not a valid image reference.
    #[error("invalid tag")]
    Tag(#[source] crate::registry::reference::ReferenceError),
    /// `--push` (or `push-by-digest`) without a `-t` naming the repository.
    #[error("pushing needs a name: give -t registry/repository[:tag]")]
    PushWithoutName,
    /// A docker-archive file holds one platform per tag; several were built.
    #[error(
        "type=docker writes one platform per tag, but this build made {platforms}: build one \
         --platform, or use type=oci (which keeps the index), or --load (which tags each \
         platform)"
    )]
    DockerMultiPlatform {
        /// The platforms built, comma separated.
        platforms: String,
    },
    /// Reading the build's images from the store failed.
    #[error("reading the built image from the store")]
    Store(#[source] Box<StoreError>),
    /// Naming the result in the store failed.
    #[error("naming {name} in the store")]
    Name {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// A destination could not be written.
    #[error("writing {}", dest.display())]
    Write {
        /// The destination.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Unpacking the root filesystem failed.
    #[error("unpacking the image into {}", dest.display())]
    Unpack {
        /// The directory.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// Reading an unpacked tree into a tar failed.
    #[error("writing the root filesystem to {}", dest.display())]
    Tree {
        /// The destination.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: Box<crate::layer::DiffError>,
    },
    /// The push failed.
    #[error("pushing to {target}")]
    Push {
        /// Where.
        target: String,
        /// The cause.
        #[source]
        source: Box<crate::registry::push::PushError>,
    },
    /// The build handed over no image.
    #[error("the build produced no image")]
    NothingBuilt,
    /// A background export task panicked or was cancelled.
    #[error("the export task did not finish")]
    Task(#[source] tokio::task::JoinError),
    /// `--load` failed.
    #[error("loading into the Docker engine")]
    Load(#[source] EngineError),
    /// `-o type=containerd` failed.
    #[error("loading into containerd")]
    Containerd(#[source] ContainerdError),
    /// `platform-split=false`: two platforms have the same path and it is not a directory
    /// in both (BuildKit's local exporter refuses the same; directories are merged).
    #[error(
        "cannot overwrite {} from {first} with {second} when split option is disabled \
         (platform-split=false merges the platforms' trees: drop it, or make the platforms' \
         files differ in path)",
        path.display()
    )]
    PlatformConflict {
        /// The path, relative to the root filesystem.
        path: PathBuf,
        /// The platform whose tree has it first.
        first: String,
        /// The platform whose tree has it too.
        second: String,
    },
    /// An output key's value xbuild does not support yet (the CLI refuses it before the
    /// build where it can tell).
    #[error("{0}")]
    Unsupported(String),
}

impl ExportError {
    pub(crate) fn reading(error: impl Into<StoreError>) -> Self {
        Self::Store(Box::new(error.into()))
    }

    pub(crate) fn writing(dest: &Path) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| Self::Write {
            dest: dest.to_path_buf(),
            source,
        }
    }

    /// The exit status this error should give: bad input (2) for bad tags, a push without a
    /// name, a multi-platform docker-archive, a path two platforms share with
    /// `platform-split=false` or an unsupported `DOCKER_HOST`; host not ready
    /// (3) when no Docker engine answers `--load`; `type=containerd` as
    /// [`ContainerdError::exit_kind`]; failed (1) otherwise.
    pub fn exit_kind(&self) -> crate::ExitKind {
        match self {
            Self::Tag(_)
            | Self::PushWithoutName
            | Self::DockerMultiPlatform { .. }
            | Self::Unsupported(_)
            | Self::PlatformConflict { .. }
            | Self::Load(EngineError::UnsupportedHost(_)) => crate::ExitKind::BadInput,
            Self::Load(EngineError::Unreachable { .. }) => crate::ExitKind::HostNotReady,
            Self::Containerd(error) => error.exit_kind(),
            _ => crate::ExitKind::Failed,
        }
    }
}

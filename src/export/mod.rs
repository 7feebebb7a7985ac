//! Outputs of a build: names in the local store (the default), `--push`, `-o type=oci|docker|
//! local|tar[,dest=...]`, `--load` into a Docker engine, `--metadata-file`, `--iidfile`.
//!
//! The build hands over [`Built`]: one image per target platform, already in the store, and
//! the index joining them. Everything here reads from the store; nothing rebuilds.

use std::path::PathBuf;

use crate::oci::Descriptor;
use crate::platform::Platform;

/// What a build produced, all of it already written to the store's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// One manifest per target platform, in the order the user gave the platforms.
    pub images: Vec<BuiltImage>,
    /// The index over `images` (also for a single platform: buildx pushes an index for
    /// `--platform` builds too; a single-platform build without `--platform` may leave the
    /// manifest alone, see [`Built::result`]).
    pub index: Descriptor,
    /// Whether the user asked for platforms explicitly (`--platform`).
    pub explicit_platforms: bool,
}

/// One platform's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The target platform.
    pub platform: Platform,
    /// Its manifest, in the store.
    pub manifest: Descriptor,
}

impl Built {
    /// What a tag names: the index when several platforms were built or any was asked for
    /// explicitly, else the single manifest (as `docker build` gives).
    pub fn result(&self) -> &Descriptor {
        match self.images.as_slice() {
            [only] if !self.explicit_platforms => &only.manifest,
            _ => &self.index,
        }
    }
}

/// One `-o` output (`--push` is `Registry`, `--load` is `Docker` loaded into the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Names in the local store under each tag (the default when no output is given).
    Store,
    /// Push to the registry of each tag (`--push`, `-o type=registry`).
    Registry {
        /// `push-by-digest=true`: push without a tag.
        by_digest: bool,
    },
    /// `-o type=oci,dest=FILE` (an OCI archive with the index).
    Oci {
        /// Where (`-` for stdout).
        dest: PathBuf,
    },
    /// `-o type=docker,dest=FILE` (a docker-archive, loadable by `docker load`).
    Docker {
        /// Where; `None` means load into the engine (`--load`).
        dest: Option<PathBuf>,
    },
    /// `-o type=local,dest=DIR`: the root filesystem, one folder per platform when several.
    Local {
        /// Where.
        dest: PathBuf,
    },
    /// `-o type=tar,dest=FILE`: the root filesystem as a tar (one folder per platform).
    Tar {
        /// Where.
        dest: PathBuf,
    },
}

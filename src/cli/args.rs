//! clap argument structures, with no behaviour beyond turning them into requests.

use clap::{Parser, Subcommand};

/// Daemonless multi-platform container image builder.
///
/// `xbuild [OPTIONS] PATH` is short for `xbuild build [OPTIONS] PATH`.
#[derive(Debug, Parser)]
#[command(name = "xbuild", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image for one or more platforms from a Dockerfile.
    Build(Box<BuildArgs>),
    /// List images in the local store.
    Images(super::image::ImagesArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(super::image::InspectArgs),
    /// Show the history of an image.
    History(super::image::HistoryArgs),
    /// Give an image another name.
    Tag(super::image::TagArgs),
    /// Remove image names (blobs go at the next prune).
    Rmi(super::image::RmiArgs),
    /// Remove the build cache and everything no named image needs.
    Prune(super::prune::PruneArgs),
    /// Show what images, the build cache and snapshots take on disk.
    Du(super::prune::DuArgs),
    /// Make an image from a root filesystem (a tar, a directory or stdin).
    Import(super::image::ImportArgs),
    /// Write an image to an OCI or docker archive.
    Save(super::image::SaveArgs),
    /// Load images from an OCI or docker archive.
    Load(super::image::LoadArgs),
    /// The old name of `store check`.
    #[command(hide = true)]
    Fsck(super::store::CheckArgs),
    /// Pull an image from a registry into the local store.
    Pull(super::registry::PullArgs),
    /// Push an image from the local store to its registry.
    Push(super::registry::PushArgs),
    /// Log in to a registry (checks and stores the credentials).
    Login(super::registry::LoginArgs),
    /// Log out from a registry (removes the stored credentials).
    Logout(super::registry::LogoutArgs),
    /// Inspect images in a registry, or combine them into a multi-platform index.
    Imagetools(super::imagetools::ImagetoolsArgs),
    /// Inspect a manifest or index in a registry.
    Manifest(super::registry::ManifestArgs),
    /// List or print an image's attestations (SBOM, provenance), from the store or a
    /// registry.
    Attest(super::attestations::AttestArgs),
    /// Run a command in an image from the local store (pulled when missing), under QEMU
    /// when the image is foreign.
    Run(super::run::RunArgs),
    /// Manage QEMU emulation through binfmt_misc (list, install, uninstall).
    Binfmt(super::binfmt::BinfmtArgs),
    /// Internal: the sandbox's re-executed child (reads a step spec on stdin).
    #[command(name = "__run-step", hide = true)]
    RunStep,
    /// Inspect what xbuild makes of a Dockerfile (`debug ast`, `debug stages`).
    #[command(hide = true)]
    Debug(super::debug::DebugArgs),
    /// Manage builders: native build nodes over SSH (create, ls, use, rm).
    Builder(super::nodes::BuilderArgs),
    /// Internal: what a build node reports about itself (JSON on stdout).
    #[command(name = "__node-info", hide = true)]
    NodeInfo,
    /// Internal: a build node's sub-build (request and context on stdin).
    #[command(name = "__node-build", hide = true)]
    NodeBuild,
    /// Check a Dockerfile against best practices and BuildKit's checks, without building.
    Check(super::check::CheckArgs),
    /// Check the local store (`store check`).
    Store(super::store::StoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(super::completion::CompletionArgs),
    /// Internal: write the man pages into a directory (`scripts/install.sh`).
    #[command(name = "__man-pages", hide = true)]
    ManPages(super::completion::ManPagesArgs),
}

pub use super::build::BuildArgs;

//! Fetching remote build inputs into directories the caller owns: git repositories
//! ([`git`], for `ADD <git URL>` and a git build context, with the `git` program) and a URL
//! given as the build context ([`context`]: a git repository, a tarball, a lone Dockerfile),
//! and whether a local context is a clean git checkout, of which commit ([`vcs`], for the
//! provenance).
//!
//! What this module must not do: read or parse a Dockerfile (the frontend and the executor
//! decide what to fetch, from [`crate::source`]'s pure classification), or write into the
//! store (it fetches into a directory the caller owns and removes).

pub mod context;
pub mod git;
pub mod vcs;

pub use context::{
    ContextOptions, ContextUrlError, RemoteContext, fetch_context, is_remote_context,
};
pub use git::{Checkout, FetchOptions, GitError, Resolved};

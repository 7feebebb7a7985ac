//! Sources of build inputs other than a local directory: git repositories and HTTP(S) URLs,
//! for `ADD <git URL>` and for a URL given as the build context.
//!
//! - [`gitref`]: which strings are git references and what they ask for (pure, as BuildKit's
//!   `dfgitutil.ParseGitRef`); the Dockerfile frontend uses it to classify `ADD` sources.
//! - [`git`]: resolving a reference to a commit and fetching its tree with the `git` program
//!   (for `ADD <git URL>` and a git build context).
//! - [`context`]: a URL given as the build context (a git repository, a tarball, a plain
//!   Dockerfile), fetched into a directory that is then a local context; and where the
//!   Dockerfile of a local context is (`Dockerfile`, else `dockerfile`).
//!
//! What this module must not do: read a Dockerfile (it fetches trees; the frontend and the
//! executor decide what to fetch), or write into the store (it fetches into a directory the
//! caller owns).

pub mod context;
pub mod git;
pub mod gitref;

pub use context::{LocalContext, fetch_context, locate_dockerfile};
pub use gitref::{GitRef, GitRefError, GitScheme, MtimePolicy};

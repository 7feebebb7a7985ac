//! Sources of build inputs other than a local directory: git repositories and HTTP(S) URLs,
//! for `ADD <git URL>` and for a URL given as the build context.
//!
//! - [`checkout`]: whether a local context is a clean git checkout, and of which commit
//!   (for the provenance).
//! - [`gitref`]: which strings are git references and what they ask for (pure, as BuildKit's
//!   `dfgitutil.ParseGitRef`); the Dockerfile frontend uses it to classify `ADD` sources.
//!
//! What this module must not do: read a Dockerfile (it fetches trees; the frontend and the
//! executor decide what to fetch), or write into the store (it fetches into a directory the
//! caller owns).

pub mod checkout;
pub mod gitref;

pub use gitref::{GitRef, GitRefError, GitScheme, MtimePolicy};

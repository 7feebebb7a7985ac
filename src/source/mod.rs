//! Sources of build inputs other than a local directory: git repositories and HTTP(S) URLs,
//! for `ADD <git URL>` and for a URL given as the build context.
//!
//! - [`gitref`]: which strings are git references and what they ask for (pure, as BuildKit's
//!   `dfgitutil.ParseGitRef`); the Dockerfile frontend uses it to classify `ADD` sources.
//!
//! What this module must not do: any I/O. Fetching what a reference names is
//! [`crate::remote`]'s.

pub mod gitref;

pub use gitref::{GitRef, GitRefError, GitScheme, MtimePolicy};

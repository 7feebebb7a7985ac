//! The Dockerfile frontend: text to a tree ([`syntax`]), the tree to typed instructions in
//! stages ([`instruction`]), and stages to a resolved build for one target ([`resolve`]):
//! build arguments applied, the instructions Docker expands expanded ([`expand`]), the stage
//! graph pruned to what `--target` needs.
//!
//! This module does no I/O and knows nothing about platforms: the automatic platform
//! arguments (`TARGETPLATFORM`, ...) are given by the caller. Behaviour follows BuildKit's
//! `frontend/dockerfile` (parser, shell, instructions) and is checked against its conformance
//! data (`tests/it/parse.rs`, `expand.rs` tests).
//!
//! ```
//! use xbuild::dockerfile;
//! let tree = dockerfile::parse("FROM alpine AS base\nRUN echo hi\n")?;
//! let stages = dockerfile::stages(&tree)?;
//! let build = dockerfile::resolve(&stages, &dockerfile::ResolveOptions::default())?;
//! assert_eq!(build.target, 0);
//! # Ok::<(), dockerfile::DockerfileError>(())
//! ```

pub mod error;
pub mod expand;
pub mod frontend;
pub mod instruction;
pub mod mount;
pub mod outline;
pub mod resolve;
pub mod sbomscan;
pub mod syntax;

pub use error::{DockerfileError, ErrorKind, Span, excerpt};
pub use expand::{ExpandError, Expander, Expansion, Variables, expand_word, split_words};
pub use frontend::check_syntax;
pub use instruction::{CommandLine, Instruction, Stage, Stages, stages};
pub use mount::Mount;
pub use resolve::{
    Base, Dependency, ResolveOptions, ResolvedInstruction, ResolvedStage, ResolvedStages,
    SANDBOX_HOSTNAME_BUILD_ARG, context_name, proxy_env, resolve,
};
pub use syntax::{Directives, Dockerfile, Heredoc, Node, parse};

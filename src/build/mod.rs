//! The build driver: walks a [`crate::plan::BuildGraph`], resolves and pulls base images,
//! runs steps in the sandbox, commits layers, keeps the cache, and assembles one image per
//! target platform.

pub mod archcheck;
pub mod failed;

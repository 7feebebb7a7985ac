//! Option values shared by several subcommands, parsed one way (`--platform` everywhere).

use crate::error::{ExitKind, ResultExt};
use crate::platform::{self, Platform};

/// A `--platform` value, whichever subcommand takes it: [`Platform::parse`] (linux and the
/// architectures of `platforms/`, every alias), exit 2 when it is not one.
///
/// # Errors
/// Not a platform xbuild builds for (exit 2).
pub fn platform_arg(text: &str) -> anyhow::Result<Platform> {
    Ok(Platform::parse(text).exit_kind(ExitKind::BadInput)?)
}

/// A `--platform` list (comma separated or repeated): each parsed by [`platform_arg`], the
/// same platform spelled twice kept once, in the order given; the host's when empty.
///
/// # Errors
/// One is not a platform xbuild builds for (exit 2).
pub fn platform_args(texts: &[String]) -> anyhow::Result<Vec<Platform>> {
    if texts.is_empty() {
        return Ok(vec![platform::host()]);
    }
    let mut platforms = Vec::new();
    for text in texts {
        let platform = platform_arg(text)?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    Ok(platforms)
}

//! Shell completions (`xbuild completion bash|zsh|fish|...`) and man pages (the hidden
//! `xbuild __man-pages DIR`, run by `scripts/install.sh`), both generated from the clap
//! definitions in [`super::args`], so they never drift from the parser. This module only
//! renders; it must not define arguments of other commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;

use super::output;

/// `xbuild completion SHELL`: prints the completion script for SHELL on stdout.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    xbuild completion bash > /usr/share/bash-completion/completions/xbuild\n  \
    xbuild completion zsh > /usr/share/zsh/vendor-completions/_xbuild\n  \
    xbuild completion fish > /usr/share/fish/vendor_completions.d/xbuild.fish")]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

impl CompletionArgs {
    /// Prints the script.
    ///
    /// # Errors
    /// None in practice (the script is rendered in memory).
    pub fn run(self, full: &clap::Command) -> anyhow::Result<()> {
        output::stdout_bytes(render(full, self.shell).as_bytes());
        Ok(())
    }
}

/// The completion script for `shell`, over the visible subcommands only: clap_complete
/// would offer hidden ones too (`__run-step`, `fsck`, ...).
pub(crate) fn render(full: &clap::Command, shell: Shell) -> String {
    let mut visible = clap::Command::new("xbuild")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true);
    for argument in full.get_arguments() {
        visible = visible.arg(argument.clone());
    }
    for sub in full.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        visible = visible.subcommand(sub.clone());
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible, "xbuild", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// `xbuild __man-pages DIR`: writes `xbuild.1` and one page per visible subcommand
/// (`xbuild-build.1`, `xbuild-imagetools-create.1`, ...) into DIR.
#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// The directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

impl ManPagesArgs {
    /// Writes the pages.
    ///
    /// # Errors
    /// The directory cannot be created or a page cannot be written.
    pub fn run(self, full: clap::Command) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        clap_mangen::generate_to(full, &self.dir)
            .with_context(|| format!("writing man pages into {}", self.dir.display()))?;
        Ok(())
    }
}

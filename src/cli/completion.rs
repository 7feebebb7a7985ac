//! Shell completions (`xbuild completion bash|zsh|fish|...`) and man pages (the hidden
//! `xbuild __man-pages DIR`, run by `scripts/install.sh`), both generated from the clap
//! definitions in [`super::args`], so they never drift from the parser. This module only
//! renders; it must not define arguments of other commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::args::Cli;
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
    pub fn run(self) -> anyhow::Result<()> {
        output::stdout_bytes(render(self.shell).as_bytes());
        Ok(())
    }
}

/// The completion script for `shell`, over the visible subcommands only: clap_complete
/// would offer hidden ones too (`__run-step`, `fsck`, ...).
fn render(shell: Shell) -> String {
    let full = Cli::command();
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
    pub fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        clap_mangen::generate_to(Cli::command(), &self.dir)
            .with_context(|| format!("writing man pages into {}", self.dir.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_subcommands_and_hide_internal_ones() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = render(shell);
            assert!(script.contains("imagetools"), "{shell}");
            assert!(script.contains("platform"), "{shell}");
            assert!(!script.contains("__run-step"), "{shell}");
            assert!(!script.contains("fsck"), "{shell}");
        }
    }

    #[test]
    fn man_pages_cover_visible_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        ManPagesArgs {
            dir: dir.path().join("man1"),
        }
        .run()
        .unwrap();
        let page = std::fs::read_to_string(dir.path().join("man1/xbuild-build.1")).unwrap();
        assert!(page.contains("platform"));
        assert!(dir.path().join("man1/xbuild.1").is_file());
        assert!(dir.path().join("man1/xbuild-imagetools-create.1").is_file());
        assert!(!dir.path().join("man1/xbuild-__run-step.1").exists());
    }
}

//! `xbuild binfmt ls|install|uninstall`: what `docker run --privileged tonistiigi/binfmt`
//! does, without a container.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::output;
use crate::binfmt::{self, BinfmtError, BinfmtMisc, InstallOutcome, Runner, UninstallOutcome};
use crate::error::{ExitKind, Failure};
use crate::platform::{self, Platform};

/// `xbuild binfmt`: QEMU emulation through binfmt_misc.
#[derive(Debug, Args)]
pub struct BinfmtArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BinfmtCommand,
}

/// The `binfmt` subcommands.
#[derive(Debug, Subcommand)]
pub enum BinfmtCommand {
    /// List every platform: native, emulated (by which entry) or not available.
    Ls {
        /// Run a tiny probe program for each platform to prove it really runs.
        #[arg(long)]
        verify: bool,
        /// Also list every binfmt_misc entry, QEMU's or not.
        #[arg(long)]
        all: bool,
    },
    /// Register QEMU for platforms (`linux/arm64 riscv64 ...`, or `all`).
    Install {
        /// Platforms, or `all`.
        #[arg(required = true, value_name = "PLATFORM")]
        platforms: Vec<String>,
    },
    /// Remove the entries xbuild registered (`linux/arm64 ...`, or `all`).
    Uninstall {
        /// Platforms, or `all`.
        #[arg(required = true, value_name = "PLATFORM")]
        platforms: Vec<String>,
    },
}

impl BinfmtArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// Bad platforms (exit 2), binfmt_misc or QEMU missing, not root (exit 3), or an entry
    /// that is not ours (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let prefix = std::env::var(crate::env::XBUILD_BINFMT_PREFIX).unwrap_or_default();
        match self.command {
            BinfmtCommand::Ls { verify, all } => ls(verify, all),
            BinfmtCommand::Install { platforms } => install(&platforms, &prefix),
            BinfmtCommand::Uninstall { platforms } => uninstall(&platforms, &prefix),
        }
    }
}

/// Exit code of a binfmt error: the host is not ready (3) unless it is a refusal to touch
/// someone else's entry or the kernel refusing a line (1).
fn classify(error: BinfmtError) -> Failure {
    let kind = match error {
        BinfmtError::NotOurs { .. }
        | BinfmtError::Register { .. }
        | BinfmtError::Unregister { .. }
        | BinfmtError::Read { .. }
        | BinfmtError::State { .. } => ExitKind::Failed,
        BinfmtError::NoHandler { .. } => ExitKind::BadInput,
        _ => ExitKind::HostNotReady,
    };
    Failure::new(kind, error)
}

fn ls(verify: bool, all: bool) -> anyhow::Result<()> {
    let rows = binfmt::status(verify).map_err(classify)?;
    let mut table = vec![
        [
            "PLATFORM",
            "STATUS",
            "HANDLER",
            "INTERPRETER",
            "FLAGS",
            "QEMU",
            "VERIFIED",
        ]
        .map(str::to_owned),
    ];
    let mut notes = Vec::new();
    for row in &rows {
        let (status, handler, interpreter, flags) = match &row.runner {
            Runner::Native => ("native", "-".to_owned(), "-".to_owned(), "-".to_owned()),
            Runner::Emulated(entry) => (
                "emulated",
                if row.is_ours {
                    format!("{} (xbuild)", entry.name)
                } else {
                    entry.name.clone()
                },
                entry.interpreter.clone(),
                entry.flags.clone(),
            ),
            Runner::Unavailable => (
                "not available",
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        let verified = match &row.verified {
            None => "-".to_owned(),
            Some(Ok(())) => "yes".to_owned(),
            Some(Err(reason)) => {
                notes.push(format!("{}: probe failed: {reason}", row.platform));
                "FAILED".to_owned()
            }
        };
        if let Some(advice) = &row.advice {
            notes.push(format!("{}: {advice}", row.platform));
        }
        table.push([
            row.platform.to_string(),
            status.to_owned(),
            handler,
            interpreter,
            if flags.is_empty() {
                "-".to_owned()
            } else {
                flags
            },
            row.qemu_version.clone().unwrap_or_else(|| "-".to_owned()),
            verified,
        ]);
    }
    print_table(&table);
    if all {
        let misc = BinfmtMisc::open().map_err(classify)?;
        let mut entries =
            vec![["ENTRY", "STATE", "FLAGS", "INTERPRETER", "MATCHES"].map(str::to_owned)];
        for entry in misc.entries().map_err(classify)? {
            entries.push([
                entry.name.clone(),
                if entry.is_enabled {
                    "enabled"
                } else {
                    "disabled"
                }
                .to_owned(),
                if entry.flags.is_empty() {
                    "-".to_owned()
                } else {
                    entry.flags.clone()
                },
                entry.interpreter.clone(),
                entry.extension.clone().map_or_else(
                    || format!("magic {}", hex::encode(&entry.magic)),
                    |extension| format!("extension {extension}"),
                ),
            ]);
        }
        output::stdout("");
        print_table(&entries);
    }
    for note in notes {
        output::stderr(format!("note: {note}"));
    }
    let failed = rows
        .iter()
        .filter(|row| matches!(row.verified, Some(Err(_))))
        .count();
    if failed > 0 {
        return Err(anyhow::anyhow!("{failed} platform(s) failed their probe"));
    }
    Ok(())
}

/// Prints rows as left-aligned columns, two spaces apart.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths = (0..N)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect::<Vec<_>>();
    for row in rows {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        output::stdout(line.trim_end());
    }
}

/// The platforms of `binfmt install` and `uninstall`: `all` → every platform of the table;
/// otherwise each argument (comma separated too) parsed by [`super::values::platform_arg`].
///
/// # Errors
/// An argument that is not a platform xbuild builds for (exit 2).
pub fn targets(arguments: &[String]) -> anyhow::Result<Vec<Platform>> {
    if arguments.iter().any(|argument| argument == "all") {
        return Ok(platform::catalog::all()
            .iter()
            .map(platform::PlatformInfo::platform)
            .collect());
    }
    arguments
        .iter()
        .flat_map(|argument| argument.split(','))
        .map(super::values::platform_arg)
        .collect()
}

fn install(arguments: &[String], prefix: &str) -> anyhow::Result<()> {
    let platforms = targets(arguments)?;
    let misc = BinfmtMisc::open().map_err(classify)?;
    let is_all = arguments.iter().any(|argument| argument == "all");
    let mut done = std::collections::HashSet::new();
    for target in platforms {
        // arm/v6 and arm/v7 share qemu-arm: one registration.
        let handler = binfmt::handler_for(&target).map_err(classify)?;
        if !done.insert(handler.cpu.clone()) {
            continue;
        }
        match binfmt::install(&misc, &target, prefix) {
            Ok(InstallOutcome::Installed { name, line }) => {
                output::stdout(format!("{target}: installed {name}"));
                output::stderr(format!("  {line}"));
            }
            Ok(InstallOutcome::AlreadyInstalled { name }) => {
                output::stdout(format!("{target}: {name} already installed"));
            }
            Ok(InstallOutcome::Native) => output::stdout(format!("{target}: native")),
            Ok(InstallOutcome::HandledBy { name }) => {
                output::stdout(format!("{target}: already handled by {name}"));
            }
            // `all` skips the CPUs this host has no QEMU for, with a note.
            Err(error @ BinfmtError::InterpreterMissing { .. }) if is_all => {
                output::warning(format!("{target}: {error}"));
            }
            Err(error) => {
                return Err(anyhow::Error::new(classify(error)))
                    .with_context(|| format!("installing {target}"));
            }
        }
    }
    Ok(())
}

fn uninstall(arguments: &[String], prefix: &str) -> anyhow::Result<()> {
    let misc = BinfmtMisc::open().map_err(classify)?;
    let outcomes = if arguments.iter().any(|argument| argument == "all") {
        let outcomes = binfmt::uninstall_all(&misc, prefix).map_err(classify)?;
        if outcomes.is_empty() {
            output::stdout("no entries registered by xbuild");
        }
        outcomes
    } else {
        let mut outcomes = Vec::new();
        let mut done = std::collections::HashSet::new();
        for target in targets(arguments)? {
            let handler = binfmt::handler_for(&target).map_err(classify)?;
            if done.insert(handler.cpu.clone()) {
                outcomes.push(
                    binfmt::uninstall(&misc, &target, prefix)
                        .map_err(classify)
                        .with_context(|| format!("uninstalling {target}"))?,
                );
            }
        }
        outcomes
    };
    for outcome in outcomes {
        match outcome {
            UninstallOutcome::Removed { name } => output::stdout(format!("removed {name}")),
            UninstallOutcome::NotInstalled { name } => {
                output::stdout(format!("{name} is not registered"));
            }
        }
    }
    Ok(())
}

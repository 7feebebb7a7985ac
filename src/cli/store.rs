//! `xbuild store check` (and the hidden `fsck`, its old name): the store's integrity.

use clap::{Args, Subcommand};

use super::image::human_size;
use super::output;
use crate::store::{Cleanup, Store};

/// `xbuild store ...`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// What to do with the store.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify every blob's digest, that named images and cache records are complete, and
    /// remove what killed processes left (exit 1 when something is wrong).
    Check(CheckArgs),
}

impl StoreArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// As the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            StoreCommand::Check(check) => check.run(),
        }
    }
}

/// `xbuild store check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only count temporary files left by interrupted processes; do not remove them.
    #[arg(long)]
    pub keep_temporary: bool,
}

impl CheckArgs {
    /// Checks the store and prints what it found on stdout.
    ///
    /// # Errors
    /// Problems found (exit 1), or the store cannot be read.
    pub fn run(self) -> anyhow::Result<()> {
        let root = crate::store::default_root();
        let store = Store::open(&root)
            .map_err(anyhow::Error::from)
            .map_err(|error| error.context(format!("opening the store at {}", root.display())))?;
        let cleanup = if self.keep_temporary {
            Cleanup::Keep
        } else {
            Cleanup::Remove
        };
        let report = store.check(cleanup)?;
        output::stdout(format!(
            "checked {} blobs ({}), {} images, {} cache records, {} snapshots, {} block maps",
            report.blobs_verified,
            human_size(report.bytes_verified),
            report.images,
            report.cache_records,
            report.snapshots,
            report.block_maps
        ));
        if report.referrers > 0 {
            output::stdout(format!(
                "checked {} referrers (attestations)",
                report.referrers
            ));
        }
        if report.absent_platforms > 0 {
            output::stdout(format!(
                "{} platform manifests named by indexes are not in the store (partial pulls)",
                report.absent_platforms
            ));
        }
        let (removed, bytes) = report.temporary_removed;
        if removed > 0 {
            output::stdout(format!(
                "removed {removed} temporary entries left by interrupted processes ({})",
                human_size(bytes)
            ));
        }
        if report.temporary_in_use > 0 {
            let why = if self.keep_temporary {
                "kept (--keep-temporary)"
            } else {
                "kept: another xbuild process is using the store"
            };
            output::stdout(format!(
                "{} temporary entries {why}",
                report.temporary_in_use
            ));
        }
        for problem in &report.problems {
            output::stdout(format!("problem: {problem}"));
        }
        if report.is_ok() {
            output::stdout("ok");
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "the store at {} has {} problems",
                root.display(),
                report.problems.len()
            ))
        }
    }
}

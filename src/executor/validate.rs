//! What is refused before any work: a platform whose `RUN` steps this host cannot run (a
//! missing QEMU handler is registered first when we are root).

use crate::binfmt;
use crate::dockerfile::Instruction;
use crate::error::{ExitKind, Failure};
use crate::plan::{BuildGraph, Op};
use crate::platform::Platform;
use crate::progress::{Event, SharedSink};

/// Checks every platform that runs a `RUN` step; registers missing QEMU handlers as root.
///
/// # Errors
/// A platform the host cannot run, with the command that fixes it (exit 3).
pub fn ensure_emulators(graph: &BuildGraph, sink: &SharedSink) -> anyhow::Result<()> {
    let mut platforms: Vec<&Platform> = graph
        .vertices
        .iter()
        .filter(|vertex| {
            matches!(&vertex.op, Op::Step { instruction } if matches!(instruction.instruction, Instruction::Run(_)))
        })
        .map(|vertex| &vertex.platform)
        .collect();
    platforms.sort();
    platforms.dedup();
    for platform in platforms {
        if binfmt::check_runnable(platform).is_ok() {
            continue;
        }
        if nix::unistd::geteuid().is_root() {
            if let Ok(misc) = binfmt::BinfmtMisc::open() {
                if let Ok(binfmt::InstallOutcome::Installed { name, .. }) =
                    binfmt::install(&misc, platform, "")
                {
                    sink.emit(Event::Note {
                        message: format!("registered {name} to run {platform} steps under QEMU"),
                    });
                }
            }
        }
        binfmt::check_runnable(platform)
            .map_err(|error| Failure::new(ExitKind::HostNotReady, error))?;
    }
    Ok(())
}

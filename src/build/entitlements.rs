//! Entitlements, checked before any work: `RUN --network=host` needs `--allow network.host`
//! and `RUN --security=insecure` needs `--allow security.insecure`, as in buildx. A
//! Dockerfile that asks for one without it stops here (exit 2), naming the file, the line
//! and the flag to add, before a base image is pulled or a step runs. Only the steps the
//! build runs count (a stage the target does not need may ask for anything). A step on the
//! default network also needs `slirp4netns` on the host: its absence is refused here too
//! (exit 3, with the package to install).

use crate::dockerfile::instruction::{self, Instruction};
use crate::error::Failure;
use crate::plan::{BuildGraph, Op};

use super::BuildOptions;

/// Refuses the first `RUN` of the graph that needs an entitlement the options lack.
///
/// # Errors
/// A bad-input [`Failure`]: `Dockerfile:LINE: entitlement network.host is not allowed: RUN --network=host needs --allow network.host`.
pub(crate) fn ensure_entitled(graph: &BuildGraph, options: &BuildOptions) -> anyhow::Result<()> {
    let file = options.dockerfile.display();
    let mut runs = graph
        .vertices
        .iter()
        .filter_map(|vertex| match &vertex.op {
            Op::Step { instruction } => match &instruction.instruction {
                Instruction::Run(run) => Some(run),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>();
    runs.sort_by_key(|run| run.span.start);
    for run in runs {
        let line = run.span.start;
        if run.network == Some(instruction::Network::Host) && !options.allow_network_host {
            return Err(Failure::bad_input(format_args!(
                "{file}:{line}: entitlement network.host is not allowed: RUN --network=host needs --allow network.host"
            ))
            .into());
        }
        if run.security == Some(instruction::Security::Insecure) && !options.allow_insecure {
            return Err(Failure::bad_input(format_args!(
                "{file}:{line}: entitlement security.insecure is not allowed: RUN --security=insecure needs --allow security.insecure"
            ))
            .into());
        }
        let default_network = matches!(run.network, None | Some(instruction::Network::Default))
            && !options.network_none
            && !options.network_host;
        if default_network {
            // The host must be able to give it (slirp4netns): exit 3 with the fix.
            crate::sandbox::check_network(crate::sandbox::Network::Default)
                .map_err(|error| Failure::new(error.exit_kind(), anyhow::Error::new(error)))?;
        }
    }
    Ok(())
}

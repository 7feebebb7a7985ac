//! What is refused before any work: every instruction flag, source and mount the executor
//! does not implement yet and
//! every one a build's options rule out (`RUN --network=host` or `RUN --security=insecure`
//! without its entitlement, as buildx: only the steps the build runs count; a required
//! secret not given; the default network where the host has no `slirp4netns`), with the
//! Dockerfile's file and line; and a platform whose
//! `RUN` steps this host cannot run (a missing QEMU handler is registered first when we are
//! root).
//!
//! [`graph`] checks every planned step, before the first one runs; a base image's `ONBUILD`
//! triggers are planned steps too (the pipeline reads them first and validates the graph
//! again). The dispatcher checks an instruction again with [`instruction`] after expanding
//! it over the base image's environment. The steps themselves no longer refuse anything.

use super::BuildOptions;
use super::error::ExecutorError;
use super::permissions::apply_symbolic_mode;
use super::sources::Filter;
use super::state::join_path;
use crate::binfmt;
use crate::dockerfile::Instruction;
use crate::dockerfile::instruction::{Chmod, Network, Run, Security, Source};
use crate::dockerfile::mount::MountType;
use crate::plan::{BuildGraph, Op};
use crate::platform::Platform;
use crate::progress::{Event, SharedSink};
use crate::source::gitref::{GitRef, is_git_source};

/// Checks every step of `graph` against what the executor implements and what `options`
/// allow.
///
/// # Errors
/// The first refusal, naming the Dockerfile's file and line (exit 2).
pub fn graph(graph: &BuildGraph, options: &BuildOptions) -> Result<(), ExecutorError> {
    for vertex in &graph.vertices {
        if let Op::Step {
            instruction: resolved,
        } = &vertex.op
        {
            instruction(&resolved.instruction, options)?;
        }
    }
    Ok(())
}

/// Checks one instruction (expanded) against what the executor implements and what
/// `options` allow.
///
/// # Errors
/// A refusal naming the Dockerfile's file and line (exit 2).
pub fn instruction(instruction: &Instruction, options: &BuildOptions) -> Result<(), ExecutorError> {
    let file = options.dockerfile.display();
    let line = instruction.span().start;
    let (sources, chmod, is_add) = match instruction {
        Instruction::Copy(copy) => {
            check_excludes(&copy.excludes, &file, line)?;
            (&copy.sources, &copy.chmod, false)
        }
        Instruction::Add(add) => {
            check_excludes(&add.excludes, &file, line)?;
            (&add.sources, &add.chmod, true)
        }
        Instruction::Run(run) => return run_step(run, options),
        _ => return Ok(()),
    };
    if let Some(Chmod::Symbolic(spec) | Chmod::Unexpanded(spec)) = chmod {
        // Checked once here, so a bad clause is a Dockerfile error, not a per-file one.
        apply_symbolic_mode(spec, 0, false).map_err(|reason| {
            ExecutorError::invalid(&file, line, format_args!("--chmod={spec}: {reason}"))
        })?;
    }
    for source in sources {
        let Source::Path(path) = source else {
            continue;
        };
        if is_add && is_git_source(path) {
            // Fetched over ssh through the `default` agent, as BuildKit's git source does.
            if !options.ssh.contains_key("default")
                && GitRef::parse(path)
                    .ok()
                    .flatten()
                    .is_some_and(|git| git.is_ssh())
            {
                return Err(ExecutorError::invalid(
                    &file,
                    line,
                    format_args!(
                        "ADD {path}: git over ssh needs an SSH agent: pass --ssh default (the \
                         agent of $SSH_AUTH_SOCK) or --ssh default=KEYFILE"
                    ),
                ));
            }
            continue;
        }
        if path.starts_with("http://") || path.starts_with("https://") {
            if !is_add {
                return Err(ExecutorError::invalid(
                    &file,
                    line,
                    "COPY cannot read URLs; use ADD",
                ));
            }
            continue;
        }
    }
    Ok(())
}

/// `--exclude` patterns must compile (as `.dockerignore` lines do).
fn check_excludes(
    excludes: &[String],
    file: impl std::fmt::Display,
    line: usize,
) -> Result<(), ExecutorError> {
    Filter::new(excludes, false)
        .map(drop)
        .map_err(|error| ExecutorError::invalid(file, line, error))
}

/// `RUN`: its entitlement and its mounts.
fn run_step(run: &Run, options: &BuildOptions) -> Result<(), ExecutorError> {
    let file = options.dockerfile.display();
    let line = run.span.start;
    // Entitlements, as buildx has them, in BuildKit's words first.
    if run.network == Some(Network::Host) && !options.allow_network_host {
        return Err(ExecutorError::invalid(
            &file,
            line,
            "entitlement network.host is not allowed: RUN --network=host needs --allow network.host",
        ));
    }
    if run.security == Some(Security::Insecure) && !options.allow_insecure {
        return Err(ExecutorError::invalid(
            &file,
            line,
            "entitlement security.insecure is not allowed: RUN --security=insecure needs --allow security.insecure",
        ));
    }
    // A step on the default network needs slirp4netns on the host (exit 3, with the fix).
    if matches!(run.network, None | Some(Network::Default))
        && !options.network_none
        && !options.network_host
    {
        crate::sandbox::check_network(crate::sandbox::Network::Default)?;
    }
    let unsupported = |what: &str| {
        Err(ExecutorError::unsupported(
            &file,
            line,
            format!("RUN --mount={what}"),
        ))
    };
    for mount in &run.mounts {
        match mount.kind {
            MountType::Cache if mount.target.is_none() => {
                return unsupported("type=cache without target");
            }
            MountType::Cache => {}
            MountType::Secret => {
                // The id is the target's file name when not given (the target joined with
                // the working directory has the same file name).
                let id = mount.id.clone().or_else(|| {
                    mount.target.as_deref().and_then(|target| {
                        join_path("/", target).rsplit('/').next().map(str::to_owned)
                    })
                });
                let Some(id) = id else {
                    return unsupported("type=secret without id or target");
                };
                if mount.required && !options.secrets.contains_key(&id) {
                    return Err(ExecutorError::invalid(
                        &file,
                        line,
                        format_args!(
                            "secret {id}: not found (required=true): pass --secret id={id},src=FILE"
                        ),
                    ));
                }
                if let (Some(name), Some(value)) = (&mount.env, options.secrets.get(&id)) {
                    if std::str::from_utf8(value).is_err() || value.contains(&0) {
                        return Err(ExecutorError::invalid(
                            &file,
                            line,
                            format_args!(
                                "secret {id:?} is not text without NUL bytes: it cannot be the environment variable {name}"
                            ),
                        ));
                    }
                }
            }
            MountType::Bind => {
                if mount.target.is_none() {
                    return unsupported("type=bind without target");
                }
            }
            MountType::Tmpfs if mount.target.is_none() => {
                return unsupported("type=tmpfs without target");
            }
            MountType::Tmpfs => {}
            MountType::Ssh => {
                let id = mount.id.as_deref().unwrap_or("default");
                if mount.required && !options.ssh.contains_key(id) {
                    return Err(ExecutorError::invalid(
                        &file,
                        line,
                        format_args!(
                            "no SSH key {id:?} forwarded from the client: pass --ssh {id} (the agent of $SSH_AUTH_SOCK) or --ssh {id}=PATH"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks every platform that runs a `RUN` step; registers missing QEMU handlers as root.
///
/// # Errors
/// [`ExecutorError::Emulator`]: a platform the host cannot run, with the command that
/// fixes it (exit 3).
pub fn ensure_emulators(graph: &BuildGraph, sink: &SharedSink) -> Result<(), ExecutorError> {
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
        binfmt::check_runnable(platform)?;
    }
    Ok(())
}

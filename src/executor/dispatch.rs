//! Which step runs an instruction: the instruction is expanded again over the base image's
//! environment, its cache key started (the instruction and platform, `Vertex::own_id`; the
//! parent's and input stages' chain keys; `SOURCE_DATE_EPOCH`), and it goes to `RUN` ([`super::run`]), `COPY`/`ADD`
//! ([`super::copy`]), `WORKDIR` (config, then the directory), or a config instruction
//! ([`super::config`]) or `ARG` (a history entry only), recorded here (config-only steps are
//! cached too, silently, so a rebuild with nothing changed keeps every history timestamp
//! and gives the same digests).

use std::sync::Arc;

use super::error::ExecutorError;
use super::services::Services;
use super::state::Done;
use super::{config, copy, run, validate};
use crate::cache::Key;
use crate::dockerfile::{Expander, Instruction, ResolvedInstruction, Stages};
use crate::oci::ImageState;
use crate::plan::Vertex;

/// Runs one step: `resolved` on `parent`'s result, with the results of the stages it reads
/// (`inputs`).
///
/// # Errors
/// Whatever the step fails with.
pub(crate) fn step(
    services: &Services<'_>,
    vertex: &Vertex,
    resolved: &ResolvedInstruction,
    parent: &Done,
    inputs: &[Arc<Done>],
) -> Result<Done, ExecutorError> {
    let instruction = reexpand_over_base(services.stages, vertex, resolved, &parent.state);
    // Expanded again over the base image: checked again.
    validate::instruction(&instruction, services.options)?;
    // The step's own instruction and platform (`Vertex::own_id`), and its parent's and
    // inputs' content, not only their keys: a stage re-run by `--no-cache-filter` (or a
    // nondeterministic step run again) gives its readers new keys. Not `vertex.id`, which
    // holds the identities of every stage read on the way (their `ARG`s, their steps): the
    // chain keys say what of them the step sees, and after a `COPY --from` that is what it
    // copied (`Done::cut_off`), not how the stage made it.
    let own_id = vertex.own_id();
    let mut key = Key::new(&own_id, Some(&parent.chain_key()));
    // A `COPY --from`'s key without what it reads from: its own instruction, its parent's
    // content and the epoch. With the checksum of the sources it selects, it is the step's
    // second key (super::copy); its readers chain on it and on what the step made
    // (`Done::cut_off`).
    let mut own = key.clone();
    // A RUN keys the stages it mounts by what it mounts of them (super::mounts), as
    // BuildKit's content-based cache of a mount's selector does.
    if !matches!(instruction, Instruction::Run(_)) {
        for input in inputs {
            key.add("input", &input.chain_key());
        }
    }
    if let Some(epoch) = services.options.source_date_epoch {
        key.add("epoch", &epoch.to_string());
        own.add("epoch", &epoch.to_string());
    }
    let is_config_only = !matches!(
        instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    );
    if is_config_only && services.uses_cache(vertex) {
        let finished = key.clone().finish();
        if let Some(state) = services.cache.lookup(&finished)? {
            return Ok(Done::new(state, finished));
        }
    }
    match &instruction {
        Instruction::Run(run) => run::step(services, vertex, resolved, run, parent, inputs, key),
        Instruction::Copy(copy) if copy.from.is_some() => {
            // Marked so that it is never the key of a record.
            let mut readers = own.clone();
            readers.add("readers-of", "copy-from");
            copy::step(
                services,
                vertex,
                &instruction,
                parent,
                inputs,
                key,
                Some(own),
            )
            .map(|done| done.cut_off(readers.finish()))
        }
        Instruction::Copy(_) | Instruction::Add(_) => {
            copy::step(services, vertex, &instruction, parent, inputs, key, None)
        }
        Instruction::Workdir(_) => {
            let mut state = parent.state.clone();
            let created_by = config::apply(&mut state, &instruction)?.unwrap_or_default();
            copy::workdir(services, vertex, state, created_by, key)
        }
        _ => {
            let mut state = parent.state.clone();
            // An ARG changes no config (its value is in the scope of what follows): only
            // its history entry, as BuildKit's `dispatchArg`.
            let created_by = match &instruction {
                Instruction::Arg(arg) => Some(config::arg_created_by(arg)),
                _ => config::apply(&mut state, &instruction)?,
            };
            if let Some(created_by) = created_by {
                state.push_history(&services.created, created_by, true);
            }
            let key = key.finish();
            services.cache.record(&key, &state)?;
            Ok(Done::new(state, key))
        }
    }
}

/// The instruction expanded again with the state's environment underneath (the base
/// image's `ENV` is not known to the frontend).
fn reexpand_over_base(
    stages: &Stages,
    vertex: &Vertex,
    resolved: &ResolvedInstruction,
    state: &ImageState,
) -> Instruction {
    let base_env = state.env();
    // An ARG was resolved with the build arguments (which the original does not know).
    if base_env.is_empty() || matches!(resolved.instruction, Instruction::Arg(_)) {
        return resolved.instruction.clone();
    }
    let line = resolved.instruction.span().start;
    // A trigger of the base is not among the stage's instructions, and was written with the
    // default escape character.
    let (original, escape) = match &resolved.trigger {
        Some(trigger) => (&**trigger, '\\'),
        None => {
            let Some(original) = stages.stages.get(vertex.stage).and_then(|stage| {
                stage
                    .instructions
                    .iter()
                    .find(|instruction| instruction.span().start == line)
            }) else {
                return resolved.instruction.clone();
            };
            (original, stages.directives.escape)
        }
    };
    // Image env, then ARGs, then the Dockerfile's ENV (last wins).
    let mut vars: Vec<(String, String)> = base_env;
    vars.extend(resolved.args.iter().cloned());
    vars.extend(resolved.env.iter().cloned());
    let expander = Expander::new(escape);
    original
        .expand(&expander, &vars)
        .unwrap_or_else(|_| resolved.instruction.clone())
}

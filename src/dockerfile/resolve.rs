//! Stages to a resolved build: build arguments applied, `FROM` lines and the instructions
//! Docker expands expanded, the ARG/ENV scope in effect at every instruction, and the stage
//! dependency graph pruned to what the target stage needs.
//!
//! Scoping, as Docker does it:
//! - `ARG`s before the first `FROM` (meta-ARGs) and the automatic platform arguments are
//!   visible in `FROM` lines only; inside a stage a meta-ARG is visible after `ARG NAME`
//!   re-declares it, and an automatic one after `ARG TARGETPLATFORM` etc.
//! - A build argument given by the user overrides an `ARG` default; `ENV` overrides `ARG`.
//! - A stage built `FROM` another stage inherits that stage's `ENV`, not its `ARG`s.
//!
//! The base image's own `ENV` is not known here (no I/O): instructions are expanded with the
//! Dockerfile's variables only. The planner, which has the image config, re-expands the
//! original instruction with [`super::Instruction::expand`] and a scope that puts the image
//! environment under [`ResolvedInstruction::env`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::error::{DockerfileError, ErrorKind, Span, suggest};
use super::expand::{Expander, Variables};
use super::frontend::{SYNTAX_BUILD_ARG, check_syntax};
use super::instruction::{Arg, From};
use super::instruction::{ArgDeclaration, Instruction, Stages, is_valid_arg_name};

/// What to resolve for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// `--build-arg KEY=VALUE`s.
    pub build_args: BTreeMap<String, String>,
    /// `TARGETPLATFORM`, `BUILDPLATFORM` and friends, computed by the caller.
    pub automatic_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// `--build-context` names, as [`context_name`] writes them: a stage of that name is
    /// replaced by the context, and a `FROM`, `COPY --from` or `RUN --mount from=` image of
    /// that name reads it instead.
    pub named_contexts: BTreeSet<String>,
    /// The `ONBUILD` triggers of stages' base images, by stage index, as the build found
    /// them in the images' configs (the frontend reads no image). They run first in the
    /// stage, and the stages and images they read are its dependencies, as in BuildKit.
    pub base_triggers: BTreeMap<usize, Vec<String>>,
}

/// The name a `--build-context` (or an image reference in the Dockerfile) is looked up
/// under, as BuildKit's `NamedContext` writes it: the familiar form of the reference
/// (`docker.io/library/alpine:latest` and `alpine` are both `alpine`; `alpine:3` stays),
/// without a `:latest` tag. `None` for a name that is not a valid lower-case reference
/// (BuildKit's "invalid context name"), and for `scratch` and `context`, which BuildKit
/// never looks up.
pub fn context_name(reference: &str) -> Option<String> {
    let valid = !reference.is_empty()
        && reference.bytes().all(|byte| {
            byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || matches!(byte, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
        && !reference.starts_with(['.', '_', '-', '/', ':', '@'])
        && !reference.ends_with(['/', ':', '@']);
    if !valid || reference == "scratch" || reference == "context" {
        return None;
    }
    let mut name = reference;
    for registry in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(registry) {
            name = rest;
            // `library/` is familiar only for a one-part name (`library/alpine`).
            if let Some(rest) = name.strip_prefix("library/") {
                if !rest.split('@').next().unwrap_or(rest).contains('/') {
                    name = rest;
                }
            }
            break;
        }
    }
    Some(name.strip_suffix(":latest").unwrap_or(name).to_owned())
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`: an empty file system.
    Scratch,
    /// An image to pull (the reference as written, after expansion).
    Image {
        /// The reference.
        reference: String,
    },
    /// An earlier stage of this Dockerfile.
    Stage {
        /// Its index.
        index: usize,
    },
    /// A `--build-context` (the stage's own name, or the image it names).
    Context {
        /// The context's name ([`context_name`]).
        name: String,
    },
}

/// How one stage uses another stage or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// `FROM <stage>`.
    From,
    /// `COPY --from=<stage>`.
    CopyFrom,
    /// `RUN --mount=from=<stage>`.
    MountFrom,
}

/// What a dependency points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// A stage, by index.
    Stage {
        /// Its index.
        index: usize,
    },
    /// An image (`COPY --from=nginx:1`).
    Image {
        /// The reference.
        reference: String,
    },
    /// A `--build-context` named where an image name would be (`COPY --from=nginx:1` with
    /// `--build-context nginx:1=...`).
    Context {
        /// The context's name ([`context_name`]).
        name: String,
    },
}

/// One edge of the stage graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// The line that makes it.
    pub line: usize,
    /// The position in [`ResolvedStage::instructions`] of the instruction that makes it
    /// (`None`: the `FROM`). Triggers share their `FROM`'s line, so the line alone does not
    /// tell which instruction reads what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<usize>,
    /// Which instruction makes it.
    pub via: Via,
    /// What it points at.
    pub target: Target,
}

/// An instruction after expansion, with the scope it sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedInstruction {
    /// The instruction, expanded where Docker expands (an `ARG` shows the value it gets).
    pub instruction: Instruction,
    /// `ARG`s in scope before it, with their values (only those that have one).
    pub args: Vec<(String, String)>,
    /// `ENV` set by the Dockerfile before it (inherited from a base stage included).
    pub env: Vec<(String, String)>,
    /// The names the stage's `ARG`s declared before it, in the order first declared, once
    /// each, with a value or not: a `RUN`'s history lists them (`|2 foo=1 bar=2 ...`), as
    /// BuildKit's `runCommandString`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arg_names: Vec<String>,
    /// For an `ONBUILD` trigger of the base (image or stage), run first in the stage: the
    /// trigger before expansion (it is not among the stage's own instructions), to expand
    /// again over the base image's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Box<Instruction>>,
}

/// A stage after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedStage {
    /// Position among all stages.
    pub index: usize,
    /// `AS name`.
    pub name: Option<String>,
    /// Where it is.
    pub span: Span,
    /// The `FROM`, expanded.
    pub from: From,
    /// What it starts from.
    pub base: Base,
    /// Its instructions.
    pub instructions: Vec<ResolvedInstruction>,
    /// The stages and images it uses.
    pub dependencies: Vec<Dependency>,
    /// The `ENV` in effect at its end.
    pub env: Vec<(String, String)>,
}

/// A Dockerfile resolved for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedStages {
    /// The index of the target stage.
    pub target: usize,
    /// The stages the target needs (itself included), in index order.
    pub stages: Vec<ResolvedStage>,
    /// Indices of those stages in an order that builds dependencies first.
    pub order: Vec<usize>,
    /// Meta-ARG values (what `FROM` lines saw, automatic arguments excluded).
    pub meta_args: Vec<(String, String)>,
    /// Build arguments no needed `ARG` consumed (Docker warns about these).
    pub unused_build_args: Vec<String>,
    /// Doubtful things worth a warning (a `--from` image named like a stage), and notes the
    /// build prints (`# syntax=docker/dockerfile:1` is built by the built-in frontend).
    pub warnings: Vec<String>,
    /// The predefined proxy arguments given as build arguments (`HTTP_PROXY`, `http_proxy`,
    /// `HTTPS_PROXY`, `FTP_PROXY`, `NO_PROXY`, `ALL_PROXY`, in either case): every `RUN` gets
    /// them in its environment without `ARG`, in both cases, as BuildKit does. They are not in
    /// any scope the Dockerfile expands with (unless declared with `ARG`), and belong in no
    /// image config, history or cache key.
    pub proxy_env: Vec<(String, String)>,
}

/// The build argument that sets `RUN`'s host name (BuildKit's frontend reads it as its
/// `hostname` option); used by the executor, never unused.
pub const SANDBOX_HOSTNAME_BUILD_ARG: &str = "BUILDKIT_SANDBOX_HOSTNAME";

/// The build argument that also exports the inline cache (`--cache-to type=inline`), as
/// BuildKit's `BUILDKIT_INLINE_CACHE=1`; read by the CLI, never unused.
pub const INLINE_CACHE_BUILD_ARG: &str = "BUILDKIT_INLINE_CACHE";

/// The build argument that makes a build of one platform an index too, as BuildKit's
/// `BUILDKIT_MULTI_PLATFORM=1` (what `--platform` does); read by the CLI, never unused.
pub const MULTI_PLATFORM_BUILD_ARG: &str = "BUILDKIT_MULTI_PLATFORM";

/// The proxy variables BuildKit passes to `RUN` (`llb.ProxyEnv`), matched in any case.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// Whether `name` is one of the predefined proxy arguments (any case, as BuildKit's
/// `strings.EqualFold`).
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS
        .iter()
        .any(|proxy| proxy.eq_ignore_ascii_case(name))
}

/// The environment `RUN` gets from the proxy build arguments: each one given, upper and
/// lower case (`HTTP_PROXY=v`, `http_proxy=v`), in BuildKit's order (http, https, ftp, no,
/// all). When both spellings are given, the one sorting last wins, as in BuildKit
/// (`http_proxy` over `HTTP_PROXY`).
pub fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for proxy in PROXY_ARGS {
        // BTreeMap order is BuildKit's sorted keys: the last match wins.
        let value = build_args
            .iter()
            .filter(|(name, _)| proxy.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .next_back();
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            env.push(((*proxy).to_owned(), value.clone()));
            env.push((proxy.to_lowercase(), value.clone()));
        }
    }
    env
}

impl ResolvedStages {
    /// The resolved stage with index `index`, if it is needed.
    pub fn stage(&self, index: usize) -> Option<&ResolvedStage> {
        self.stages.iter().find(|stage| stage.index == index)
    }
}

/// Variables: `ENV` first (it overrides `ARG`), then `ARG`s, then extra ones.
struct Scope<'a> {
    env: &'a [(String, String)],
    args: &'a [(String, String)],
    extra: Option<&'a BTreeMap<String, String>>,
}

impl Variables for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.env
            .lookup(name)
            .or_else(|| self.args.lookup(name))
            .or_else(|| self.extra.and_then(|extra| extra.lookup(name)))
    }
}

fn set(list: &mut Vec<(String, String)>, name: &str, value: String) {
    list.retain(|(key, _)| key != name);
    list.push((name.to_owned(), value));
}

/// Resolves stages for a build.
///
/// Besides the caller's automatic arguments, `TARGETSTAGE` is defined as BuildKit defines
/// it: the `--target` as given, else the last stage's name, else `default` (visible, like
/// the platform arguments, in `FROM` lines and after `ARG TARGETSTAGE`).
///
/// # Errors
/// A `# syntax=` naming a frontend other than `docker/dockerfile:1`, a bad build argument
/// name, failed expansion in a needed stage, an unknown `--target` (with a "did you mean"),
/// a `--from` index that does not exist, a dependency cycle, a `COPY --from` or
/// `RUN --mount from=` naming a stage defined after the instruction.
pub fn resolve(
    stages: &Stages,
    options: &ResolveOptions,
) -> Result<ResolvedStages, DockerfileError> {
    let mut warnings = Vec::new();
    if let Some(note) = check_syntax(&stages.directives, &options.build_args)? {
        warnings.push(note);
    }
    for name in options.build_args.keys() {
        if !is_valid_arg_name(name) {
            return Err(DockerfileError::global(ErrorKind::BadArgName {
                name: name.clone(),
            }));
        }
    }
    let mut with_stage = options.clone();
    let target_stage = options
        .target
        .clone()
        .or_else(|| stages.stages.last().and_then(|stage| stage.name.clone()))
        .unwrap_or_else(|| "default".to_owned());
    with_stage
        .automatic_args
        .entry("TARGETSTAGE".to_owned())
        .or_insert(target_stage);
    let options = &with_stage;
    let expander = Expander::new(stages.directives.escape);
    let mut used = BTreeSet::new();
    let meta = resolve_meta(stages, options, &expander, &mut used)?;
    let mut results: Vec<Result<(ResolvedStage, BTreeSet<String>), DockerfileError>> = Vec::new();
    for stage in &stages.stages {
        let result = resolve_stage(
            stages,
            stage.index,
            options,
            &meta,
            &expander,
            &results,
            &mut warnings,
        );
        results.push(result);
    }
    let target = match &options.target {
        None => stages.stages.len() - 1,
        Some(name) => {
            let lower = name.to_lowercase();
            // The last stage of the name: BuildKit warns about a duplicated name and builds
            // (`DuplicateStageName`), and its `--target` finds the last one.
            stages
                .stages
                .iter()
                .rev()
                .find(|stage| stage.name.as_deref() == Some(lower.as_str()))
                .map(|stage| stage.index)
                .ok_or_else(|| {
                    let names: Vec<&str> = stages
                        .stages
                        .iter()
                        .filter_map(|stage| stage.name.as_deref())
                        .collect();
                    DockerfileError::global(ErrorKind::UnknownTarget {
                        name: name.clone(),
                        suggestion: suggest(name, &names).map(str::to_owned),
                    })
                })?
        }
    };
    // Depth-first from the target: post-order is a build order; a stage met again while
    // still open closes a cycle.
    let mut order = Vec::new();
    let mut state = vec![0u8; results.len()]; // 0 new, 1 open, 2 done
    let mut path: Vec<usize> = Vec::new();
    visit(target, &results, &mut state, &mut path, &mut order, stages)?;
    let mut needed: Vec<ResolvedStage> = Vec::new();
    for index in 0..results.len() {
        if state[index] == 2 {
            let (stage, consumed) = results[index].as_ref().map_err(Clone::clone)?;
            check_defined_before(stage, stages)?;
            used.extend(consumed.iter().cloned());
            needed.push(stage.clone());
        }
    }
    // The proxy arguments are used by every RUN, declared or not; `BUILDKIT_SYNTAX` by the
    // frontend choice; `BUILDKIT_INLINE_CACHE` and `BUILDKIT_MULTI_PLATFORM` by the CLI.
    let unused_build_args = options
        .build_args
        .keys()
        .filter(|name| {
            !used.contains(*name)
                && !is_proxy_arg(name)
                && *name != SYNTAX_BUILD_ARG
                && *name != SANDBOX_HOSTNAME_BUILD_ARG
                && *name != INLINE_CACHE_BUILD_ARG
                && *name != MULTI_PLATFORM_BUILD_ARG
        })
        .cloned()
        .collect();
    Ok(ResolvedStages {
        target,
        stages: needed,
        order,
        meta_args: meta
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
            .collect(),
        unused_build_args,
        warnings,
        proxy_env: proxy_env(&options.build_args),
    })
}

/// BuildKit's rule for `COPY --from` and `RUN --mount from=`: the stage named must be
/// defined before the instruction's own stage (a stage is built once, in file order).
fn check_defined_before(stage: &ResolvedStage, stages: &Stages) -> Result<(), DockerfileError> {
    for dependency in &stage.dependencies {
        let Target::Stage { index } = dependency.target else {
            continue;
        };
        if index < stage.index || dependency.via == Via::From {
            continue;
        }
        let named = &stages.stages[index];
        let name = named.name.clone().unwrap_or_else(|| index.to_string());
        let mount = dependency.via == Via::MountFrom;
        // The mount's target, for BuildKit's message.
        let target = stage
            .instructions
            .iter()
            .filter(|resolved| resolved.instruction.span().start == dependency.line)
            .find_map(|resolved| match &resolved.instruction {
                Instruction::Run(run) => run
                    .mounts
                    .iter()
                    .find(|mount| {
                        mount.from.as_deref().is_some_and(|from| {
                            from.eq_ignore_ascii_case(&name) || from == index.to_string()
                        })
                    })
                    .and_then(|mount| mount.target.clone()),
                _ => None,
            });
        return Err(DockerfileError::new(
            dependency.line,
            ErrorKind::StageDefinedLater {
                mount,
                name,
                current: stage
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{}", stage.index)),
                target,
            },
        ));
    }
    Ok(())
}

fn stage_label(stages: &Stages, index: usize) -> String {
    stages.stages[index]
        .name
        .clone()
        .unwrap_or_else(|| format!("stage {index}"))
}

fn visit(
    index: usize,
    results: &[Result<(ResolvedStage, BTreeSet<String>), DockerfileError>],
    state: &mut [u8],
    path: &mut Vec<usize>,
    order: &mut Vec<usize>,
    stages: &Stages,
) -> Result<(), DockerfileError> {
    match state[index] {
        2 => return Ok(()),
        1 => {
            let start = path.iter().position(|open| *open == index).unwrap_or(0);
            let mut cycle: Vec<String> = path[start..]
                .iter()
                .map(|open| stage_label(stages, *open))
                .collect();
            cycle.push(stage_label(stages, index));
            return Err(DockerfileError::new(
                stages.stages[index].span.start,
                ErrorKind::StageCycle { stages: cycle },
            ));
        }
        _ => {}
    }
    let (stage, _) = results[index].as_ref().map_err(Clone::clone)?;
    state[index] = 1;
    path.push(index);
    for dependency in &stage.dependencies {
        if let Target::Stage { index: next } = dependency.target {
            visit(next, results, state, path, order, stages)?;
        }
    }
    path.pop();
    state[index] = 2;
    order.push(index);
    Ok(())
}

/// Values of the meta-ARGs: build argument, else automatic value, else expanded default,
/// else declared without a value (`None`).
fn resolve_meta(
    stages: &Stages,
    options: &ResolveOptions,
    expander: &Expander,
    used: &mut BTreeSet<String>,
) -> Result<Vec<(String, Option<String>)>, DockerfileError> {
    let mut meta: Vec<(String, Option<String>)> = Vec::new();
    for arg in &stages.meta_args {
        for declaration in &arg.args {
            let known: Vec<(String, String)> = meta
                .iter()
                .filter_map(|(name, value)| value.clone().map(|value| (name.clone(), value)))
                .collect();
            let scope = Scope {
                env: &[],
                args: &known,
                extra: Some(&options.automatic_args),
            };
            let value = arg_value(
                declaration,
                options,
                expander,
                &scope,
                None,
                arg.span.start,
                used,
            )?;
            meta.retain(|(name, _)| *name != declaration.name);
            meta.push((declaration.name.clone(), value));
        }
    }
    Ok(meta)
}

fn arg_value(
    declaration: &ArgDeclaration,
    options: &ResolveOptions,
    expander: &Expander,
    scope: &dyn Variables,
    meta_value: Option<&str>,
    line: usize,
    used: &mut BTreeSet<String>,
) -> Result<Option<String>, DockerfileError> {
    let name = &declaration.name;
    if let Some(value) = options.build_args.get(name) {
        used.insert(name.clone());
        return Ok(Some(value.clone()));
    }
    if let Some(value) = options.automatic_args.get(name) {
        return Ok(Some(value.clone()));
    }
    if let Some(default) = &declaration.default {
        return expander
            .expand(default, scope)
            .map(|e| Some(e.text))
            .map_err(|error| {
                DockerfileError::new(
                    line,
                    ErrorKind::Expansion {
                        instruction: "ARG".to_owned(),
                        message: error.to_string(),
                    },
                )
            });
    }
    Ok(meta_value.map(str::to_owned))
}

fn resolve_stage(
    stages: &Stages,
    index: usize,
    options: &ResolveOptions,
    meta: &[(String, Option<String>)],
    expander: &Expander,
    earlier: &[Result<(ResolvedStage, BTreeSet<String>), DockerfileError>],
    warnings: &mut Vec<String>,
) -> Result<(ResolvedStage, BTreeSet<String>), DockerfileError> {
    let stage = &stages.stages[index];
    let meta_values: Vec<(String, String)> = meta
        .iter()
        .filter_map(|(name, value)| value.clone().map(|value| (name.clone(), value)))
        .collect();
    let from_scope = Scope {
        env: &[],
        args: &meta_values,
        extra: Some(&options.automatic_args),
    };
    let Instruction::From(from) =
        Instruction::From(stage.from.clone()).expand(expander, &from_scope)?
    else {
        unreachable!("expanding FROM gives FROM");
    };
    if from.image.trim().is_empty() {
        return Err(DockerfileError::new(
            stage.from.span.start,
            ErrorKind::Arguments {
                instruction: "FROM".to_owned(),
                message: format!("base name ({}) should not be blank", stage.from.image),
            },
        ));
    }
    let lower = from.image.to_lowercase();
    // The nearest earlier stage of that name (a duplicated name means the latest one so far,
    // as in BuildKit).
    let base_stage = stages.stages[..index]
        .iter()
        .rev()
        .find(|earlier| earlier.name.as_deref() == Some(lower.as_str()));
    let mut dependencies = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    // A stage whose name is a build context is that context: its FROM and instructions
    // are not built (as BuildKit replaces the stage).
    if let Some(name) = stage
        .name
        .as_deref()
        .and_then(context_name)
        .filter(|name| options.named_contexts.contains(name))
    {
        return Ok((
            ResolvedStage {
                index,
                name: stage.name.clone(),
                span: stage.span,
                from,
                base: Base::Context { name },
                instructions: Vec::new(),
                dependencies: Vec::new(),
                env: Vec::new(),
            },
            BTreeSet::new(),
        ));
    }
    let named_base = context_name(&from.image).filter(|name| options.named_contexts.contains(name));
    let base = if let Some(base_stage) = base_stage {
        dependencies.push(Dependency {
            line: stage.from.span.start,
            instruction: None,
            via: Via::From,
            target: Target::Stage {
                index: base_stage.index,
            },
        });
        let (parent, _) = earlier[base_stage.index].as_ref().map_err(Clone::clone)?;
        env.clone_from(&parent.env);
        Base::Stage {
            index: base_stage.index,
        }
    } else if lower == "scratch" {
        Base::Scratch
    } else if let Some(name) = named_base {
        Base::Context { name }
    } else {
        dependencies.push(Dependency {
            line: stage.from.span.start,
            instruction: None,
            via: Via::From,
            target: Target::Image {
                reference: from.image.clone(),
            },
        });
        Base::Image {
            reference: from.image.clone(),
        }
    };
    // The base's ONBUILD triggers run first (BuildKit: those of a base image's config, or
    // the ONBUILD instructions of a base stage, which its image does not pass on), at the
    // FROM's line.
    let mut triggers: Vec<Instruction> = Vec::new();
    if let Base::Stage { index: base_index } = &base {
        for instruction in &stages.stages[*base_index].instructions {
            if let Instruction::Onbuild(onbuild) = instruction {
                let mut trigger = (*onbuild.instruction).clone();
                *trigger.span_mut() = stage.from.span;
                triggers.push(trigger);
            }
        }
    }
    for text in options.base_triggers.get(&index).into_iter().flatten() {
        triggers.push(super::instruction::trigger(text, stage.from.span)?);
    }
    let originals = triggers
        .iter()
        .map(|trigger| (trigger, true))
        .chain(stage.instructions.iter().map(|own| (own, false)));
    let mut args: Vec<(String, String)> = Vec::new();
    let mut arg_names: Vec<String> = Vec::new();
    let mut consumed = BTreeSet::new();
    let mut instructions = Vec::new();
    for (instruction, is_trigger) in originals {
        let line = instruction.span().start;
        let before_args = args.clone();
        let before_names = arg_names.clone();
        let before_env = env.clone();
        let expanded = match instruction {
            Instruction::Arg(arg) => {
                let mut declarations = Vec::new();
                for declaration in &arg.args {
                    let scope = Scope {
                        env: &env,
                        args: &args,
                        extra: None,
                    };
                    let meta_value = meta
                        .iter()
                        .find(|(name, _)| *name == declaration.name)
                        .and_then(|(_, value)| value.as_deref());
                    let value = arg_value(
                        declaration,
                        options,
                        expander,
                        &scope,
                        meta_value,
                        line,
                        &mut consumed,
                    )?;
                    if let Some(value) = &value {
                        set(&mut args, &declaration.name, value.clone());
                    }
                    if !arg_names.contains(&declaration.name) {
                        arg_names.push(declaration.name.clone());
                    }
                    declarations.push(ArgDeclaration {
                        name: declaration.name.clone(),
                        default: value,
                    });
                }
                Instruction::Arg(Arg {
                    span: arg.span,
                    args: declarations,
                })
            }
            other => {
                let scope = Scope {
                    env: &env,
                    args: &args,
                    extra: None,
                };
                let expanded = other.expand(expander, &scope)?;
                if let Instruction::Env(set_env) = &expanded {
                    for pair in &set_env.variables {
                        set(&mut env, &pair.key, pair.value.clone());
                    }
                }
                expanded
            }
        };
        let mut uses = Vec::new();
        match &expanded {
            Instruction::Copy(copy) => {
                uses.extend(copy.from.iter().map(|from| (from.clone(), Via::CopyFrom)))
            }
            Instruction::Run(run) => uses.extend(
                run.mounts
                    .iter()
                    .filter_map(|mount| mount.from.clone())
                    .map(|from| (from, Via::MountFrom)),
            ),
            _ => {}
        }
        for (reference, via) in uses {
            let target = stage_reference(stages, options, &reference, line, warnings)?;
            dependencies.push(Dependency {
                line,
                instruction: Some(instructions.len()),
                via,
                target,
            });
        }
        instructions.push(ResolvedInstruction {
            instruction: expanded,
            args: before_args,
            env: before_env,
            arg_names: before_names,
            trigger: is_trigger.then(|| Box::new(instruction.clone())),
        });
    }
    Ok((
        ResolvedStage {
            index,
            name: stage.name.clone(),
            span: stage.span,
            from,
            base,
            instructions,
            dependencies,
            env,
        },
        consumed,
    ))
}

/// What `--from=<reference>` names: a stage by name or index, else an image.
fn stage_reference(
    stages: &Stages,
    options: &ResolveOptions,
    reference: &str,
    line: usize,
    warnings: &mut Vec<String>,
) -> Result<Target, DockerfileError> {
    let lower = reference.to_lowercase();
    // The last stage of the name in the whole file, as BuildKit looks it up (whether it is
    // defined before the instruction is checked once the graph is known).
    if let Some(stage) = stages
        .stages
        .iter()
        .rev()
        .find(|stage| stage.name.as_deref() == Some(lower.as_str()))
    {
        return Ok(Target::Stage { index: stage.index });
    }
    if let Ok(index) = reference.parse::<usize>() {
        if index < stages.stages.len() {
            return Ok(Target::Stage { index });
        }
        return Err(DockerfileError::new(
            line,
            ErrorKind::UnknownStage {
                name: reference.to_owned(),
                suggestion: None,
            },
        ));
    }
    if let Some(name) = context_name(reference).filter(|name| options.named_contexts.contains(name))
    {
        return Ok(Target::Context { name });
    }
    let names: Vec<&str> = stages
        .stages
        .iter()
        .filter_map(|stage| stage.name.as_deref())
        .collect();
    if let Some(near) = suggest(reference, &names) {
        warnings.push(format!(
            "line {line}: {reference:?} is not a stage, so it is used as an image (did you mean the stage {near:?}?)"
        ));
    }
    Ok(Target::Image {
        reference: reference.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::instruction::{Source, stages};
    use crate::dockerfile::syntax::parse;

    fn resolved(
        text: &str,
        build_args: &[(&str, &str)],
        target: Option<&str>,
    ) -> Result<ResolvedStages, DockerfileError> {
        let options = ResolveOptions {
            build_args: build_args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            automatic_args: [
                ("BUILDPLATFORM", "linux/amd64"),
                ("TARGETPLATFORM", "linux/arm64"),
                ("TARGETARCH", "arm64"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            target: target.map(str::to_owned),
            named_contexts: BTreeSet::new(),
            base_triggers: BTreeMap::new(),
        };
        resolve(&stages(&parse(text)?)?, &options)
    }

    fn args_of(step: &ResolvedInstruction) -> BTreeMap<&str, &str> {
        step.args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn context_names_are_familiar_references_as_buildkit_looks_them_up() {
        for (reference, name) in [
            ("alpine", "alpine"),
            ("alpine:latest", "alpine"),
            ("docker.io/library/alpine:latest", "alpine"),
            ("docker.io/library/alpine:3", "alpine:3"),
            ("docker.io/org/app", "org/app"),
            ("docker.io/library/a/b", "library/a/b"),
            ("reg.example:5000/app:latest", "reg.example:5000/app"),
            ("base", "base"),
        ] {
            assert_eq!(
                context_name(reference).as_deref(),
                Some(name),
                "{reference}"
            );
        }
        for bad in ["", "Base", "scratch", "context", "/x", "a:"] {
            assert_eq!(context_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn named_contexts_replace_stages_and_images() {
        let text = "FROM busybox AS base\nRUN x\nFROM docker.io/library/alpine:latest\nCOPY --from=base /a /a\nCOPY --from=nginx:1 /b /b\nCOPY --from=other /c /c\n";
        let stages = stages(&parse(text).unwrap()).unwrap();
        let options = ResolveOptions {
            named_contexts: ["base", "alpine", "nginx:1"]
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            ..ResolveOptions::default()
        };
        let result = resolve(&stages, &options).unwrap();
        let base = result.stage(0).unwrap();
        assert_eq!(
            base.base,
            Base::Context {
                name: "base".to_owned()
            }
        );
        assert!(base.instructions.is_empty());
        let last = result.stage(1).unwrap();
        assert_eq!(
            last.base,
            Base::Context {
                name: "alpine".to_owned()
            }
        );
        let targets: Vec<&Target> = last.dependencies.iter().map(|d| &d.target).collect();
        assert_eq!(
            targets,
            [
                &Target::Stage { index: 0 },
                &Target::Context {
                    name: "nginx:1".to_owned()
                },
                &Target::Image {
                    reference: "other".to_owned()
                },
            ]
        );
    }

    #[test]
    fn meta_args_are_visible_in_from_only() {
        let text = "ARG BASE=alpine\nARG TAG=3\nFROM --platform=$BUILDPLATFORM $BASE:$TAG\nRUN echo\nWORKDIR /$TAG\nARG TAG\nWORKDIR /$TAG";
        let result = resolved(text, &[], None).unwrap();
        let stage = &result.stages[0];
        assert_eq!(stage.from.image, "alpine:3");
        assert_eq!(stage.from.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(
            stage.base,
            Base::Image {
                reference: "alpine:3".into()
            }
        );
        let Instruction::Workdir(first) = &stage.instructions[1].instruction else {
            panic!()
        };
        assert_eq!(first.path, "/");
        let Instruction::Workdir(second) = &stage.instructions[3].instruction else {
            panic!()
        };
        assert_eq!(second.path, "/3");
        assert_eq!(
            result.meta_args,
            [
                ("BASE".to_owned(), "alpine".to_owned()),
                ("TAG".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn build_args_override_defaults_and_env_overrides_arg() {
        let text = "FROM a\nARG V=1\nRUN x\nENV V=env\nARG V=2\nWORKDIR /$V\nARG W=$V";
        let result = resolved(text, &[("V", "cli")], None).unwrap();
        let steps = &result.stages[0].instructions;
        assert_eq!(args_of(&steps[1])["V"], "cli");
        let Instruction::Workdir(workdir) = &steps[4].instruction else {
            panic!()
        };
        assert_eq!(workdir.path, "/env");
        let Instruction::Arg(arg) = &steps[5].instruction else {
            panic!()
        };
        assert_eq!(arg.args[0].default.as_deref(), Some("env"));
        assert!(result.unused_build_args.is_empty());
    }

    #[test]
    fn automatic_args_need_declaring_in_a_stage() {
        let text = "FROM a\nWORKDIR /$TARGETARCH\nARG TARGETARCH\nWORKDIR /$TARGETARCH";
        let result = resolved(text, &[], None).unwrap();
        let steps = &result.stages[0].instructions;
        assert!(matches!(&steps[0].instruction, Instruction::Workdir(w) if w.path == "/"));
        assert!(matches!(&steps[2].instruction, Instruction::Workdir(w) if w.path == "/arm64"));
    }

    #[test]
    fn env_expansion_uses_values_before_the_instruction() {
        let text = "FROM a\nENV A=1\nENV A=2 B=$A\nCOPY $B /";
        let result = resolved(text, &[], None).unwrap();
        let Instruction::Copy(copy) = &result.stages[0].instructions[2].instruction else {
            panic!()
        };
        assert_eq!(copy.sources, [Source::Path("1".into())]);
        assert_eq!(
            result.stages[0].env,
            [
                ("A".to_owned(), "2".to_owned()),
                ("B".to_owned(), "1".to_owned())
            ]
        );
    }

    #[test]
    fn stage_inherits_env_not_args() {
        let text = "FROM a AS base\nENV E=1\nARG X=2\nFROM base\nWORKDIR /$E$X";
        let result = resolved(text, &[], None).unwrap();
        let Instruction::Workdir(workdir) = &result.stages[1].instructions[0].instruction else {
            panic!()
        };
        assert_eq!(workdir.path, "/1");
        assert_eq!(result.stages[1].base, Base::Stage { index: 0 });
    }

    #[test]
    fn graph_and_pruning() {
        let text = "FROM a AS deps\nFROM b AS unused\nFROM d AS tools\nFROM c AS build\nCOPY --from=deps / /\nRUN --mount=from=tools,target=/t x\nFROM scratch\nCOPY --from=build /out /\nCOPY --from=nginx:1 /etc /etc";
        let result = resolved(text, &[("UNUSED", "1")], None).unwrap();
        let indices: Vec<usize> = result.stages.iter().map(|stage| stage.index).collect();
        assert_eq!(indices, [0, 2, 3, 4]);
        assert_eq!(result.target, 4);
        assert_eq!(result.order, [0, 2, 3, 4]);
        assert_eq!(result.stage(4).unwrap().base, Base::Scratch);
        let deps = &result.stage(4).unwrap().dependencies;
        assert_eq!(
            deps[1].target,
            Target::Image {
                reference: "nginx:1".into()
            }
        );
        assert_eq!(result.unused_build_args, ["UNUSED"]);
        let result = resolved(text, &[], Some("Build")).unwrap();
        assert_eq!(result.order, [0, 2, 3]);
    }

    #[test]
    fn copy_from_by_index() {
        let result = resolved("FROM a\nFROM b\nCOPY --from=0 / /", &[], None).unwrap();
        assert_eq!(result.order, [0, 1]);
        let error = resolved("FROM a\nCOPY --from=3 / /", &[], None).unwrap_err();
        assert!(matches!(error.kind, ErrorKind::UnknownStage { .. }));
    }

    #[test]
    fn unknown_target_has_a_hint() {
        let error = resolved("FROM a AS build\nFROM b AS test", &[], Some("biuld")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Dockerfile: target stage \"biuld\" could not be found (did you mean build?)"
        );
    }

    #[test]
    fn near_miss_from_is_a_warning() {
        let result = resolved("FROM a AS build\nFROM b\nCOPY --from=biuld / /", &[], None).unwrap();
        assert_eq!(result.warnings.len(), 1, "{:?}", result.warnings);
    }

    #[test]
    fn cycles_are_rejected() {
        let error = resolved(
            "FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nCOPY --from=one / /",
            &[],
            Some("two"),
        )
        .unwrap_err();
        assert_eq!(
            error.kind,
            ErrorKind::StageCycle {
                stages: vec!["two".into(), "one".into(), "two".into()]
            }
        );
        let error = resolved("FROM a AS self\nCOPY --from=self / /", &[], None).unwrap_err();
        assert!(matches!(error.kind, ErrorKind::StageCycle { .. }));
    }

    #[test]
    fn from_with_the_stage_own_name_is_an_image() {
        let result = resolved("FROM node AS node\nRUN x", &[], None).unwrap();
        assert_eq!(
            result.stages[0].base,
            Base::Image {
                reference: "node".into()
            }
        );
    }

    #[test]
    fn errors_in_unneeded_stages_do_not_matter() {
        let text = "FROM a AS broken\nWORKDIR ${X:?unset}\nFROM b AS good";
        assert!(resolved(text, &[], Some("good")).is_ok());
        let error = resolved(text, &[], Some("broken")).unwrap_err();
        assert_eq!(error.line, Some(2));
    }

    #[test]
    fn blank_base_after_expansion() {
        let error = resolved("ARG BASE\nFROM $BASE", &[], None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("base name ($BASE) should not be blank"),
            "{error}"
        );
        assert_eq!(
            resolved("ARG BASE\nFROM $BASE", &[("BASE", "alpine")], None)
                .unwrap()
                .stages[0]
                .from
                .image,
            "alpine"
        );
    }

    #[test]
    fn bad_build_arg_name() {
        let error = resolved("FROM a", &[("1X", "y")], None).unwrap_err();
        assert!(matches!(error.kind, ErrorKind::BadArgName { .. }));
    }

    /// BuildKit's duplicate stage names: `FROM name` is the latest such stage above, `--target`
    /// and `COPY --from` the last one in the file.
    #[test]
    fn duplicate_stage_names_resolve_as_buildkit() {
        let text =
            "FROM a AS x\nFROM b AS x\nFROM x AS y\nFROM c AS x\nFROM scratch\nCOPY --from=x / /";
        let result = resolved(text, &[], Some("y")).unwrap();
        assert_eq!(result.stage(2).unwrap().base, Base::Stage { index: 1 });
        let result = resolved(text, &[], None).unwrap();
        assert_eq!(result.order, [3, 4]);
        let result = resolved(text, &[], Some("X")).unwrap();
        assert_eq!(result.target, 3);
    }

    /// BuildKit's testOutOfOrderStage: `COPY --from` (and `RUN --mount from=`) must name a stage
    /// defined above the instruction's stage.
    #[test]
    fn stages_used_before_they_are_defined_are_refused() {
        let text = "FROM busybox AS target\nCOPY --from=build /d2 /out\nFROM alpine AS build\nCOPY /Dockerfile /d2\nFROM target\n";
        let error = resolved(text, &[], None).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert_eq!(
            error.kind.to_string(),
            "cannot copy from stage \"build\", it needs to be defined before current stage \"target\""
        );
        let text = "FROM a AS first\nRUN --mount=from=later,target=/src true\nFROM b AS later\nFROM first\n";
        let error = resolved(text, &[], None).unwrap_err();
        assert_eq!(error.line, Some(2));
        assert_eq!(
            error.kind.to_string(),
            "cannot mount from stage \"later\" to \"/src\", stage needs to be defined before current command"
        );
        let error = resolved("FROM a\nCOPY --from=1 / /\nFROM b\n", &[], Some("0")).unwrap_err();
        assert!(matches!(error.kind, ErrorKind::UnknownTarget { .. }));
        let error = resolved(
            "FROM a AS one\nCOPY --from=1 / /\nFROM b\n",
            &[],
            Some("one"),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("cannot copy from stage \"1\""),
            "{error}"
        );
        // A stage nobody needs may be wrong: only what the target needs is resolved.
        assert!(
            resolved(
                "FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nFROM c",
                &[],
                None
            )
            .is_ok()
        );
    }

    /// BuildKit's testTargetStageNameArg: `TARGETSTAGE` is the `--target` as given, else the
    /// last stage's name, else `default`; visible after `ARG TARGETSTAGE`.
    #[test]
    fn targetstage_is_the_target() {
        let text = "FROM a AS base\nWORKDIR /$TARGETSTAGE\nARG TARGETSTAGE\nWORKDIR /$TARGETSTAGE\nFROM scratch AS foo\nCOPY --from=base / /\nFROM scratch\nCOPY --from=base / /\n";
        let workdir = |target: Option<&str>, step: usize| {
            let result = resolved(text, &[], target).unwrap();
            match &result.stage(0).unwrap().instructions[step].instruction {
                Instruction::Workdir(workdir) => workdir.path.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(workdir(Some("foo"), 0), "/");
        assert_eq!(workdir(Some("foo"), 2), "/foo");
        assert_eq!(workdir(None, 2), "/default");
        let named_last = "FROM a AS base\nARG TARGETSTAGE\nWORKDIR /$TARGETSTAGE\n";
        let result = resolved(named_last, &[], None).unwrap();
        assert!(
            matches!(&result.stages[0].instructions[1].instruction, Instruction::Workdir(w) if w.path == "/base")
        );
        let result = resolved(named_last, &[("TARGETSTAGE", "given")], None).unwrap();
        assert!(
            matches!(&result.stages[0].instructions[1].instruction, Instruction::Workdir(w) if w.path == "/given")
        );
        assert!(result.unused_build_args.is_empty());
    }

    /// BuildKit's testBuiltinArgs: the proxy arguments reach RUN without ARG (both cases), are
    /// not in the Dockerfile's scope, and are not unused build arguments.
    #[test]
    fn proxy_arguments_are_for_run_only() {
        let text = "FROM a\nWORKDIR /$HTTP_PROXY\nRUN true\n";
        let result = resolved(
            text,
            &[("http_proxy", "hp"), ("NO_PROXY", "np"), ("FOO", "x")],
            None,
        )
        .unwrap();
        assert!(
            matches!(&result.stages[0].instructions[0].instruction, Instruction::Workdir(w) if w.path == "/")
        );
        assert_eq!(result.stages[0].instructions[1].args, []);
        assert_eq!(
            result.proxy_env,
            [
                ("HTTP_PROXY".to_owned(), "hp".to_owned()),
                ("http_proxy".to_owned(), "hp".to_owned()),
                ("NO_PROXY".to_owned(), "np".to_owned()),
                ("no_proxy".to_owned(), "np".to_owned()),
            ]
        );
        assert_eq!(result.unused_build_args, ["FOO"]);
        // Declared, a proxy argument is an ordinary ARG.
        let result = resolved(
            "FROM a\nARG HTTP_PROXY\nWORKDIR /$HTTP_PROXY\n",
            &[("HTTP_PROXY", "p")],
            None,
        )
        .unwrap();
        assert!(
            matches!(&result.stages[0].instructions[1].instruction, Instruction::Workdir(w) if w.path == "/p")
        );
        let both: BTreeMap<String, String> = [
            ("HTTP_PROXY".to_owned(), "upper".to_owned()),
            ("http_proxy".to_owned(), "lower".to_owned()),
        ]
        .into();
        assert_eq!(
            proxy_env(&both)[0],
            ("HTTP_PROXY".to_owned(), "lower".to_owned())
        );
    }

    /// `# syntax=`: docker/dockerfile:1 proceeds with a note; another frontend is refused on
    /// the directive's line (BuildKit's testErrorsSourceMap/invalidsyntax).
    #[test]
    fn syntax_directive() {
        let result = resolved("# syntax=docker/dockerfile:1\nFROM a\n", &[], None).unwrap();
        assert_eq!(result.warnings.len(), 1, "{:?}", result.warnings);
        assert!(result.warnings[0].starts_with("# syntax=docker/dockerfile:1: "));
        let error = resolved("#syntax=foobar\nfrom alpine\n", &[], None).unwrap_err();
        assert_eq!(error.line, Some(1));
        assert!(matches!(error.kind, ErrorKind::UnsupportedFrontend { .. }));
        let result = resolved(
            "#syntax=foobar\nFROM a\n",
            &[("BUILDKIT_SYNTAX", "docker/dockerfile:1.7")],
            None,
        )
        .unwrap();
        assert!(result.unused_build_args.is_empty());
    }
}

//! The platform planner: one build graph for all target platforms, with every vertex that
//! does not depend on the target built once and shared.
//!
//! Pure: no I/O, no clock, no environment. Input: typed stages, the target platforms, the
//! build platform, build arguments and `--target`. For each target it sets BuildKit's
//! automatic arguments (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
//! `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`), resolves the stages (scoping,
//! expansion, pruning to what the target stage needs: [`crate::dockerfile::resolve`]), works
//! out each stage's platform (`FROM --platform=...`, else the target), and turns every
//! instruction into a vertex.
//!
//! A vertex is identified by a digest of what determines its result: its parent's identity,
//! the identities of stages it reads (`COPY --from`, `RUN --mount=from=`), the platform it
//! runs as, the instruction after expansion (without its line numbers) and the build
//! arguments it sees. Two targets that produce the same identity share the vertex, so a
//! `FROM --platform=$BUILDPLATFORM` stage that does not read `TARGET*` arguments is built
//! once, natively, for any number of targets. The build turns identities into cache keys by
//! adding what only I/O can tell: base image digests and the content `COPY` reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use crate::dockerfile::instruction::Source;
use crate::dockerfile::resolve::Target;
use crate::dockerfile::{
    self, Base, DockerfileError, Instruction, ResolveOptions, ResolvedInstruction, Stages,
};
use crate::oci::sha256_digest;
use crate::platform::{Platform, PlatformError};

/// What to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Target platforms, in the order the user gave them (at least one).
    pub targets: Vec<Platform>,
    /// The platform of this machine.
    pub build_platform: Platform,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target_stage: Option<String>,
    /// `--build-context`s by name ([`dockerfile::context_name`]).
    pub named_contexts: BTreeMap<String, ContextKind>,
    /// The `ONBUILD` triggers of base images (the config's `OnBuild`, empty for none), by
    /// reference and platform, as the caller read them. A stage whose base is listed runs
    /// them first and depends on what they read; an image vertex not listed has
    /// [`Op::Image::triggers`] empty, and [`BuildGraph::unknown_bases`] says so.
    pub base_triggers: BTreeMap<(String, Platform), Vec<String>>,
    /// The build has several target platforms, here or across build nodes (BuildKit's
    /// `MultiPlatformRequested`): step names carry the platform. Also true when `targets`
    /// has more than one.
    pub multi_platform: bool,
}

/// What a `--build-context` is, as far as the plan cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ContextKind {
    /// `docker-image://REF`: a `FROM` of the context is a `FROM REF` (`scratch` included);
    /// `COPY --from` and `RUN --mount from=` read it through an [`Op::Context`] vertex.
    Image {
        /// The reference the context names.
        reference: String,
    },
    /// Files or an image read by the executor (a directory, an OCI layout): an
    /// [`Op::Context`] vertex wherever it is used.
    Other,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The Dockerfile does not resolve for a target.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `FROM --platform=` names no platform xbuild knows.
    #[error("line {line}: FROM --platform={value}: {source}")]
    StagePlatform {
        /// The `FROM` line.
        line: usize,
        /// The expanded value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: PlatformError,
    },
    /// No target platform was given.
    #[error("no target platform")]
    NoTargets,
}

impl PlanError {
    /// The Dockerfile line the error is about, where there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::StagePlatform { line, .. } => Some(*line),
            Self::Dockerfile(_) | Self::NoTargets => None,
        }
    }
}

/// What a vertex does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// `FROM scratch`: an empty root filesystem and config.
    Scratch,
    /// `FROM image`: the image for the vertex's platform.
    Image {
        /// The reference, as written after expansion.
        reference: String,
        /// The image's `ONBUILD` triggers the plan runs after it (the steps that follow),
        /// which the image must still carry when it is pulled.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        triggers: Vec<String>,
    },
    /// A `--build-context` (read by the executor: an image, a directory's files as one
    /// layer, an OCI layout's image for the vertex's platform).
    Context {
        /// The context's name.
        name: String,
    },
    /// One instruction of a stage.
    Step {
        /// The instruction with the scope it sees.
        instruction: Box<ResolvedInstruction>,
    },
}

/// A unit of work in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vertex {
    /// Hex digest of everything that determines the result (see the module doc).
    pub id: String,
    /// The platform the vertex runs as (the stage's platform).
    pub platform: Platform,
    /// The stage's index in the Dockerfile.
    pub stage: usize,
    /// The stage's name (`AS name`), if it has one.
    pub stage_name: Option<String>,
    /// The position in its stage, from 1 (the `FROM`), for `[linux/arm64 build 3/8]`.
    pub step: usize,
    /// The number of steps in its stage.
    pub steps: usize,
    /// What progress and errors put before [`Self::description`], as BuildKit's
    /// `prefixCommand` writes it: `[linux/arm64 build 3/8] ` (the platform only when the
    /// build has several targets, the stage name unless the Dockerfile has one stage and
    /// reads no other image, the number for the steps BuildKit counts: a `FROM` of an image,
    /// `ADD`, `COPY`, `RUN`, `WORKDIR` and base-image triggers, `ONBUILD ` after it for a
    /// trigger). The vertices BuildKit makes none of (`ENV`, `FROM scratch`, ...) get the
    /// brackets without a number; empty when there is nothing to put in them.
    pub label: String,
    /// What it does.
    pub op: Op,
    /// The vertex whose result this one starts from.
    pub parent: Option<usize>,
    /// Final vertices of other stages it reads (`COPY --from`, `RUN --mount=from=`), in the
    /// order the instruction names them.
    pub inputs: Vec<usize>,
    /// Target platforms whose images need this vertex.
    pub needed_by: BTreeSet<Platform>,
}

impl Vertex {
    /// The digest of what the vertex does by itself: its instruction (with the scope it
    /// sees) and its platform, without its parent's identity or those of the stages it reads
    /// (whose `ARG` values and steps are in [`Self::id`]). A step keyed on the content of
    /// what it reads (a `COPY --from`'s sources) takes this with its parent's content.
    pub fn own_id(&self) -> String {
        identity_of(None, Vec::new(), &self.platform, &self.op)
    }

    /// What the vertex does, as one line (`FROM debian:bookworm`, `RUN make`), for the
    /// provenance's steps.
    pub fn description(&self) -> String {
        match &self.op {
            Op::Scratch => "FROM scratch".to_owned(),
            Op::Image { reference, .. } => format!("FROM {reference}"),
            Op::Context { name } => format!("context {name}"),
            Op::Step { instruction } => summary(&instruction.instruction),
        }
    }

    /// `[linux/arm64 build 3/8] RUN make`-style name for progress and errors (see
    /// [`Self::label`]).
    pub fn display_name(&self) -> String {
        if let Op::Context { .. } = &self.op {
            return format!("{}load", self.label);
        }
        format!("{}{}", self.label, self.description())
    }
}

/// The image built for one target platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetImage {
    /// The target platform (the image's platform in the index).
    pub platform: Platform,
    /// The vertex whose result is the image.
    pub vertex: usize,
    /// The target stage's index.
    pub stage: usize,
}

/// The plan for a build: all vertices of all targets, deduplicated, in an order where every
/// vertex comes after its parent and inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildGraph {
    /// The vertices, dependencies first.
    pub vertices: Vec<Vertex>,
    /// One image per target platform, in the order of [`PlanOptions::targets`].
    pub images: Vec<TargetImage>,
    /// Build arguments that no target consumed (worth a warning, as Docker gives).
    pub unused_build_args: Vec<String>,
    /// Other warnings from resolution, deduplicated.
    pub warnings: Vec<String>,
    /// Base images (reference, platform) not in [`PlanOptions::base_triggers`]: the caller
    /// reads their triggers and plans again, until none is left.
    pub unknown_bases: Vec<(String, Platform)>,
}

impl BuildGraph {
    /// A text rendering, one vertex a line, for `xbuild debug plan` and golden tests:
    /// `#3 [linux/arm64 build 2/4] RUN make  <- #2 (+#1)  targets: linux/arm64`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (index, vertex) in self.vertices.iter().enumerate() {
            let _ = write!(text, "#{index} {}", vertex.display_name());
            if let Some(parent) = vertex.parent {
                let _ = write!(text, "  <- #{parent}");
            }
            for input in &vertex.inputs {
                let _ = write!(text, " (+#{input})");
            }
            let targets = vertex
                .needed_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(text, "  targets: {targets}");
        }
        for image in &self.images {
            let _ = writeln!(text, "image {} = #{}", image.platform, image.vertex);
        }
        text
    }
}

/// BuildKit's automatic platform arguments for one target.
pub fn automatic_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        args.insert(format!("{prefix}PLATFORM"), platform.to_string());
        args.insert(format!("{prefix}OS"), platform.os.clone());
        args.insert(format!("{prefix}ARCH"), platform.architecture.clone());
        args.insert(
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        );
    }
    args
}

/// Plans a build for every target platform.
///
/// # Errors
/// [`PlanError`]: the Dockerfile does not resolve for a target (unknown `--target`, failed
/// expansion, cycles), or a stage names a platform xbuild does not know.
pub fn for_targets(stages: &Stages, options: &PlanOptions) -> Result<BuildGraph, PlanError> {
    if options.targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    let mut planner = Planner::default();
    let mut images = Vec::new();
    let mut unused: Option<BTreeSet<String>> = None;
    let mut warnings = Vec::new();
    let mut unknown_bases = BTreeSet::new();
    for target in &options.targets {
        let (resolved, platforms) = resolve_with_triggers(stages, options, target)?;
        let this_unused: BTreeSet<String> = resolved.unused_build_args.iter().cloned().collect();
        unused = Some(match unused {
            None => this_unused,
            Some(previous) => previous.intersection(&this_unused).cloned().collect(),
        });
        for warning in &resolved.warnings {
            if !warnings.contains(warning) {
                warnings.push(warning.clone());
            }
        }
        // BuildKit names no stage when the Dockerfile has one and reads no image or context
        // through `--from` (each of those is a state of its own).
        let lone_stage = stages.stages.len() == 1
            && resolved.stages.iter().all(|stage| {
                stage.dependencies.iter().all(|dependency| {
                    dependency.instruction.is_none()
                        || matches!(dependency.target, Target::Stage { .. })
                })
            });
        // The final vertex of each stage, for this target.
        let mut stage_ends: HashMap<usize, usize> = HashMap::new();
        for &stage_index in &resolved.order {
            let stage = resolved
                .stage(stage_index)
                .expect("resolve orders only stages it returns");
            let platform = platforms[&stage_index].clone();
            // BuildKit's step names: the platform in a build of several, the stage's name
            // unless it is the only one, and its count of numbered steps.
            let shown_platform =
                (options.multi_platform || options.targets.len() > 1).then_some(&platform);
            let stage_label = match &stage.name {
                _ if lone_stage => None,
                Some(name) => Some(name.clone()),
                None => Some(format!("stage-{}", stage.index)),
            };
            let from_counts = match &stage.base {
                Base::Stage { .. } | Base::Scratch => false,
                Base::Context { name } => !matches!(
                    options.named_contexts.get(name),
                    Some(ContextKind::Image { reference }) if reference == "scratch"
                ),
                Base::Image { .. } => true,
            };
            let numbered_total = usize::from(from_counts)
                + stage
                    .instructions
                    .iter()
                    .filter(|resolved| {
                        resolved.trigger.is_some() || is_numbered(&resolved.instruction)
                    })
                    .count();
            let mut numbered = 0;
            let mut next_label = |counts: bool, trigger: bool| {
                let number = counts.then(|| {
                    numbered += 1;
                    (numbered, numbered_total)
                });
                step_label(shown_platform, stage_label.as_deref(), number, trigger)
            };
            let steps = 1 + stage
                .instructions
                .iter()
                .filter(|resolved| !is_scope_only(&resolved.instruction))
                .count();
            let mut current = match &stage.base {
                Base::Stage { index } => stage_ends[index],
                base => {
                    // A FROM of an image: its ONBUILD triggers when the pipeline read its
                    // config, else the base is noted as unknown.
                    let mut image_op = |reference: &String| {
                        let key = (reference.clone(), platform.clone());
                        let triggers = options.base_triggers.get(&key).cloned();
                        if triggers.is_none() {
                            unknown_bases.insert(key);
                        }
                        Op::Image {
                            reference: reference.clone(),
                            triggers: triggers.unwrap_or_default(),
                        }
                    };
                    let op = match base {
                        Base::Scratch => Op::Scratch,
                        Base::Image { reference } => image_op(reference),
                        Base::Context { name } => match options.named_contexts.get(name) {
                            Some(ContextKind::Image { reference }) if reference == "scratch" => {
                                Op::Scratch
                            }
                            // A FROM of an image context is a FROM of its image, ONBUILD
                            // triggers included.
                            Some(ContextKind::Image { reference }) => image_op(reference),
                            _ => Op::Context { name: name.clone() },
                        },
                        Base::Stage { .. } => unreachable!("handled above"),
                    };
                    planner.add(VertexSpec {
                        platform: platform.clone(),
                        stage: stage.index,
                        stage_name: stage.name.clone(),
                        step: 1,
                        steps,
                        label: next_label(from_counts, false),
                        op,
                        parent: None,
                        inputs: Vec::new(),
                        target,
                    })
                }
            };
            let mut step = 1;
            for (position, resolved_instruction) in stage.instructions.iter().enumerate() {
                // An ARG is a vertex (it writes its history entry, as BuildKit's
                // `dispatchArg`) but not a numbered step: it shares the number before it.
                if !is_scope_only(&resolved_instruction.instruction) {
                    step += 1;
                }
                let inputs = stage
                    .dependencies
                    .iter()
                    .filter(|dependency| dependency.instruction == Some(position))
                    .filter_map(|dependency| match &dependency.target {
                        Target::Stage { index } => stage_ends.get(index).copied(),
                        Target::Context { name } => Some(planner.add(VertexSpec {
                            platform: platform.clone(),
                            stage: stage.index,
                            stage_name: None,
                            step: 1,
                            steps: 1,
                            label: step_label(
                                shown_platform,
                                Some(&format!("context {name}")),
                                None,
                                false,
                            ),
                            op: Op::Context { name: name.clone() },
                            parent: None,
                            inputs: Vec::new(),
                            target,
                        })),
                        Target::Image { .. } => None,
                    })
                    .collect::<Vec<_>>();
                current = planner.add(VertexSpec {
                    platform: platform.clone(),
                    stage: stage.index,
                    stage_name: stage.name.clone(),
                    step,
                    steps,
                    // A trigger counts in the total; only those BuildKit numbers take a number.
                    label: next_label(
                        is_numbered(&resolved_instruction.instruction),
                        resolved_instruction.trigger.is_some(),
                    ),
                    op: Op::Step {
                        instruction: Box::new(resolved_instruction.clone()),
                    },
                    parent: Some(current),
                    inputs,
                    target,
                });
            }
            stage_ends.insert(stage_index, current);
        }
        let vertex = stage_ends[&resolved.target];
        planner.mark_needed(vertex, target);
        images.push(TargetImage {
            platform: target.clone(),
            vertex,
            stage: resolved.target,
        });
    }
    Ok(BuildGraph {
        vertices: planner.vertices,
        images,
        unused_build_args: unused.unwrap_or_default().into_iter().collect(),
        warnings,
        unknown_bases: unknown_bases.into_iter().collect(),
    })
}

/// The Dockerfile resolved for `target` with the `ONBUILD` triggers of its stages' base
/// images (those in [`PlanOptions::base_triggers`]), and each needed stage's platform.
/// Triggers can make more stages needed, whose bases can have triggers: resolved again
/// until the stages with triggers stay the same.
fn resolve_with_triggers(
    stages: &Stages,
    options: &PlanOptions,
    target: &Platform,
) -> Result<(dockerfile::ResolvedStages, HashMap<usize, Platform>), PlanError> {
    let mut resolve_options = ResolveOptions {
        build_args: options.build_args.clone(),
        automatic_args: automatic_args(target, &options.build_platform),
        target: options.target_stage.clone(),
        named_contexts: options.named_contexts.keys().cloned().collect(),
        base_triggers: BTreeMap::new(),
    };
    // Each round adds at least one stage with triggers, or ends: at most one round more
    // than there are stages.
    loop {
        let resolved = dockerfile::resolve(stages, &resolve_options)?;
        let platforms = stage_platforms(&resolved, target)?;
        let mut triggers = BTreeMap::new();
        for stage in &resolved.stages {
            // A FROM of an image context is a FROM of its image: its triggers too.
            let reference = match &stage.base {
                Base::Image { reference } => Some(reference),
                Base::Context { name } => match options.named_contexts.get(name) {
                    Some(ContextKind::Image { reference }) => Some(reference),
                    _ => None,
                },
                _ => None,
            };
            if let Some(reference) = reference {
                let key = (reference.clone(), platforms[&stage.index].clone());
                match options.base_triggers.get(&key) {
                    Some(found) if !found.is_empty() => {
                        triggers.insert(stage.index, found.clone());
                    }
                    _ => {}
                }
            }
        }
        let known = resolve_options.base_triggers.len();
        resolve_options.base_triggers.extend(triggers);
        if resolve_options.base_triggers.len() == known {
            return Ok((resolved, platforms));
        }
    }
}

/// The platform each needed stage runs as: its `FROM --platform=`, else its base stage's,
/// else the target.
fn stage_platforms(
    resolved: &dockerfile::ResolvedStages,
    target: &Platform,
) -> Result<HashMap<usize, Platform>, PlanError> {
    let mut platforms: HashMap<usize, Platform> = HashMap::new();
    for &stage_index in &resolved.order {
        let stage = resolved
            .stage(stage_index)
            .expect("resolve orders only stages it returns");
        let platform = match &stage.from.platform {
            Some(value) => Platform::parse(value).map_err(|source| PlanError::StagePlatform {
                line: stage.span.start,
                value: value.clone(),
                source,
            })?,
            // A stage built FROM another stage runs as that stage's platform.
            None => match stage.base {
                Base::Stage { index } => platforms[&index].clone(),
                _ => target.clone(),
            },
        };
        platforms.insert(stage_index, platform);
    }
    Ok(platforms)
}

/// `ARG` changes what later instructions see (which is part of their identity) and adds a
/// history entry; BuildKit makes no LLB vertex of it, so progress does not number it.
fn is_scope_only(instruction: &Instruction) -> bool {
    matches!(instruction, Instruction::Arg(_))
}

/// The instructions BuildKit's progress numbers (`dispatchState.cmdTotal`): the others make
/// no LLB vertex of their own.
fn is_numbered(instruction: &Instruction) -> bool {
    matches!(
        instruction,
        Instruction::Add(_) | Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_)
    )
}

/// `[linux/arm64 build 3/8] ` ([`Vertex::label`]): the parts given, the number padded to the
/// width of the total as BuildKit's `%*d/%d`; empty when no part is given.
fn step_label(
    platform: Option<&Platform>,
    stage: Option<&str>,
    number: Option<(usize, usize)>,
    trigger: bool,
) -> String {
    let mut parts = Vec::new();
    if let Some(platform) = platform {
        parts.push(platform.to_string());
    }
    if let Some(stage) = stage {
        parts.push(stage.to_owned());
    }
    if let Some((index, total)) = number {
        let width = total.to_string().len();
        parts.push(format!("{index:>width$}/{total}"));
    }
    if parts.is_empty() {
        return String::new();
    }
    let onbuild = if trigger && number.is_some() {
        "ONBUILD "
    } else {
        ""
    };
    format!("[{}] {onbuild}", parts.join(" "))
}

struct VertexSpec<'a> {
    platform: Platform,
    stage: usize,
    stage_name: Option<String>,
    step: usize,
    steps: usize,
    label: String,
    op: Op,
    parent: Option<usize>,
    inputs: Vec<usize>,
    target: &'a Platform,
}

#[derive(Default)]
struct Planner {
    vertices: Vec<Vertex>,
    by_id: HashMap<String, usize>,
}

impl Planner {
    fn add(&mut self, spec: VertexSpec<'_>) -> usize {
        let id = identity(&spec, &self.vertices);
        if let Some(&existing) = self.by_id.get(&id) {
            return existing;
        }
        let index = self.vertices.len();
        self.vertices.push(Vertex {
            id: id.clone(),
            platform: spec.platform,
            stage: spec.stage,
            stage_name: spec.stage_name,
            step: spec.step,
            steps: spec.steps,
            label: spec.label,
            op: spec.op,
            parent: spec.parent,
            inputs: spec.inputs,
            needed_by: BTreeSet::new(),
        });
        self.by_id.insert(id, index);
        let _ = spec.target;
        index
    }

    /// Marks `vertex` and everything it depends on as needed by `target`.
    fn mark_needed(&mut self, vertex: usize, target: &Platform) {
        let mut pending = vec![vertex];
        while let Some(index) = pending.pop() {
            if self.vertices[index].needed_by.insert(target.clone()) {
                pending.extend(self.vertices[index].parent);
                pending.extend(self.vertices[index].inputs.iter().copied());
            }
        }
    }
}

/// The digest of what determines a vertex's result. Line numbers are left out, so moving an
/// instruction down by adding a comment above it changes nothing.
fn identity(spec: &VertexSpec<'_>, vertices: &[Vertex]) -> String {
    identity_of(
        spec.parent.map(|parent| vertices[parent].id.as_str()),
        spec.inputs
            .iter()
            .map(|&input| vertices[input].id.as_str())
            .collect(),
        &spec.platform,
        &spec.op,
    )
}

/// The digest of a vertex's parent and input identities, platform and op (lines left out).
fn identity_of(parent: Option<&str>, inputs: Vec<&str>, platform: &Platform, op: &Op) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        parent: Option<&'a str>,
        inputs: Vec<&'a str>,
        platform: String,
        op: serde_json::Value,
    }
    let mut value = serde_json::to_value(op).expect("an op serialises to JSON");
    strip_spans(&mut value);
    // `ADD --checksum=<commit>` of a git source only checks what the ref resolves to (the
    // step's key has the commit): as in BuildKit, adding it changes nothing.
    if let Op::Step { instruction } = op {
        if let Instruction::Add(add) = &instruction.instruction {
            if add.sources.iter().any(
                |source| matches!(source, Source::Path(path) if crate::source::gitref::is_git_source(path)),
            ) {
                strip_key(&mut value, "checksum");
            }
        }
    }
    let identity = Identity {
        parent,
        inputs,
        platform: platform.to_string(),
        op: value,
    };
    let bytes = serde_json::to_vec(&identity).expect("an identity serialises to JSON");
    sha256_digest(&bytes).digest().to_owned()
}

/// Removes every `key` field of `value`, at any depth.
fn strip_key(value: &mut serde_json::Value, key: &str) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|value| strip_key(value, key));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|value| strip_key(value, key)),
        _ => {}
    }
}

fn strip_spans(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("span");
            map.remove("line");
            map.values_mut().for_each(strip_spans);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_spans),
        _ => {}
    }
}

/// One line for an instruction: its name and the start of its arguments.
fn summary(instruction: &Instruction) -> String {
    let json = serde_json::to_value(instruction).unwrap_or_default();
    let detail = match instruction {
        Instruction::Run(run) => match &run.command {
            dockerfile::CommandLine::Shell(text) => text.clone(),
            dockerfile::CommandLine::Exec(argv) => format!("{argv:?}"),
        },
        Instruction::Copy(copy) => {
            // The flags, as BuildKit's progress shows the instruction's own text.
            let mut words = Vec::new();
            if let Some(from) = &copy.from {
                words.push(format!("--from={from}"));
            }
            if let Some(chown) = &copy.chown {
                words.push(format!("--chown={chown}"));
            }
            match &copy.chmod {
                Some(dockerfile::instruction::Chmod::Octal(mode)) => {
                    words.push(format!("--chmod={mode:04o}"));
                }
                Some(
                    dockerfile::instruction::Chmod::Symbolic(mode)
                    | dockerfile::instruction::Chmod::Unexpanded(mode),
                ) => words.push(format!("--chmod={mode}")),
                None => {}
            }
            if copy.link {
                words.push("--link".to_owned());
            }
            if copy.parents {
                words.push("--parents".to_owned());
            }
            words.extend(
                copy.excludes
                    .iter()
                    .map(|pattern| format!("--exclude={pattern}")),
            );
            for source in &copy.sources {
                words.push(match source {
                    dockerfile::instruction::Source::Path(path) => path.clone(),
                    dockerfile::instruction::Source::Inline(heredoc) => {
                        format!("<<{}", heredoc.name)
                    }
                });
            }
            words.push(copy.destination.clone());
            words.join(" ")
        }
        Instruction::Arg(arg) => arg
            .args
            .iter()
            .map(|declaration| match &declaration.default {
                Some(value) => format!("{}={value}", declaration.name),
                None => declaration.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => {
            let mut fields = json;
            strip_spans(&mut fields);
            if let serde_json::Value::Object(map) = &mut fields {
                map.remove("instruction");
            }
            compact(&fields)
        }
    };
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut line = format!("{} {detail}", instruction.name());
    if line.chars().count() > 100 {
        line = line.chars().take(97).collect::<String>() + "...";
    }
    line
}

/// A JSON value as short text: strings bare, lists and objects by their values.
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(compact)
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Object(map) => map
            .values()
            .map(compact)
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Null | serde_json::Value::Bool(false) => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    fn plan(dockerfile: &str, targets: &[&str]) -> BuildGraph {
        try_plan(dockerfile, targets, &[]).unwrap()
    }

    fn try_plan(
        dockerfile: &str,
        targets: &[&str],
        build_args: &[(&str, &str)],
    ) -> Result<BuildGraph, PlanError> {
        let tree = dockerfile::parse(dockerfile).unwrap();
        let stages = dockerfile::stages(&tree).unwrap();
        for_targets(
            &stages,
            &PlanOptions {
                base_triggers: BTreeMap::new(),
                multi_platform: false,
                targets: targets.iter().map(|target| platform(target)).collect(),
                build_platform: platform("linux/amd64"),
                build_args: build_args
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                target_stage: None,
                named_contexts: BTreeMap::new(),
            },
        )
    }

    const CROSS: &str = "\
FROM --platform=$BUILDPLATFORM busybox AS build
RUN echo compile > /out
FROM busybox
COPY --from=build /out /out
";

    #[test]
    fn automatic_args_follow_buildkit() {
        let args = automatic_args(&platform("linux/arm/v7"), &platform("linux/amd64"));
        assert_eq!(args["TARGETPLATFORM"], "linux/arm/v7");
        assert_eq!(args["TARGETARCH"], "arm");
        assert_eq!(args["TARGETVARIANT"], "v7");
        assert_eq!(args["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(args["BUILDVARIANT"], "");
        assert_eq!(args.len(), 8);
    }

    #[test]
    fn buildplatform_stage_is_planned_once_for_two_targets() {
        let graph = plan(CROSS, &["linux/amd64", "linux/arm64"]);
        // build: FROM + RUN once; final: FROM + COPY per target, where the amd64 FROM is the
        // same vertex as the build stage's (same image, same platform).
        assert_eq!(graph.vertices.len(), 5, "{}", graph.render());
        let shared: Vec<_> = graph
            .vertices
            .iter()
            .filter(|vertex| vertex.stage == 0)
            .collect();
        assert_eq!(shared.len(), 2);
        for vertex in shared {
            assert_eq!(vertex.platform, platform("linux/amd64"));
            assert_eq!(vertex.needed_by.len(), 2);
        }
        assert_eq!(graph.images.len(), 2);
        assert_ne!(graph.images[0].vertex, graph.images[1].vertex);
        let arm = &graph.vertices[graph.images[1].vertex];
        assert_eq!(arm.platform, platform("linux/arm64"));
        assert_eq!(arm.inputs.len(), 1);
    }

    #[test]
    fn a_stage_reading_targetarch_is_planned_per_target() {
        let dockerfile = "\
FROM --platform=$BUILDPLATFORM busybox AS build
ARG TARGETARCH
RUN echo $TARGETARCH > /out
FROM busybox
COPY --from=build /out /out
";
        let graph = plan(dockerfile, &["linux/amd64", "linux/arm64"]);
        // The FROM of the build stage is shared; its ARG (a vertex for its history entry)
        // and RUN are not.
        assert_eq!(graph.vertices.len(), 8, "{}", graph.render());
        let runs = graph
            .vertices
            .iter()
            .filter(|vertex| vertex.stage == 0 && vertex.step == 2)
            .count();
        assert_eq!(runs, 2);
    }

    #[test]
    fn stages_the_target_does_not_need_are_not_planned() {
        let dockerfile = "\
FROM busybox AS unused
RUN exit 1
FROM busybox
RUN echo ok
";
        let graph = plan(dockerfile, &["linux/amd64"]);
        assert!(graph.vertices.iter().all(|vertex| vertex.stage == 1));
        assert_eq!(graph.vertices.len(), 2);
    }

    #[test]
    fn identity_ignores_line_numbers() {
        let moved = format!("# a comment\n\n{CROSS}");
        let before = plan(CROSS, &["linux/arm64"]);
        let after = plan(&moved, &["linux/arm64"]);
        let ids = |graph: &BuildGraph| {
            graph
                .vertices
                .iter()
                .map(|vertex| vertex.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&before), ids(&after));
    }

    #[test]
    fn identity_changes_with_the_instruction_and_everything_after_it() {
        let changed = CROSS.replace("echo compile", "echo compile2");
        let before = plan(CROSS, &["linux/arm64"]);
        let after = plan(&changed, &["linux/arm64"]);
        // FROM of both stages unchanged; the RUN and the COPY reading its result change.
        let same = before
            .vertices
            .iter()
            .filter(|vertex| after.vertices.iter().any(|other| other.id == vertex.id))
            .count();
        assert_eq!(same, 2, "{}\n{}", before.render(), after.render());
    }

    #[test]
    fn build_args_change_identity_of_steps_that_see_them() {
        let dockerfile = "FROM busybox\nARG V=1\nRUN echo $V\n";
        let one = try_plan(dockerfile, &["linux/amd64"], &[]).unwrap();
        let two = try_plan(dockerfile, &["linux/amd64"], &[("V", "2")]).unwrap();
        assert_eq!(one.vertices[0].id, two.vertices[0].id);
        assert_ne!(one.vertices[1].id, two.vertices[1].id);
    }

    #[test]
    fn unused_build_args_are_reported() {
        let graph = try_plan(
            "FROM busybox\nARG USED\nRUN true\n",
            &["linux/amd64"],
            &[("USED", "1"), ("NOBODY", "2")],
        )
        .unwrap();
        assert_eq!(graph.unused_build_args, ["NOBODY"]);
    }

    #[test]
    fn unknown_stage_platform_names_the_line() {
        let error = try_plan(
            "FROM busybox\nFROM --platform=linux/sparc99 busybox\nRUN true\n",
            &["linux/amd64"],
            &[],
        )
        .unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
    }

    #[test]
    fn display_names_read_like_buildkit() {
        // One target: no platform in the names (BuildKit's testStepNames).
        let graph = plan(CROSS, &["linux/arm64"]);
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(names[0], "[build 1/2] FROM busybox");
        assert_eq!(names[1], "[build 2/2] RUN echo compile > /out");
        assert_eq!(names[2], "[stage-1 1/2] FROM busybox");
        assert!(names[3].starts_with("[stage-1 2/2] COPY"), "{}", names[3]);
        // Several: the platform of each step first.
        let graph = plan(CROSS, &["linux/amd64", "linux/arm64"]);
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(names[0], "[linux/amd64 build 1/2] FROM busybox");
        assert!(
            names.contains(&"[linux/arm64 stage-1 1/2] FROM busybox".to_owned()),
            "{names:?}"
        );
        // BuildKit numbers a FROM of an image, ADD, COPY, RUN and WORKDIR only; FROM scratch
        // and config instructions are named without a number.
        let graph = plan(
            "FROM busybox AS base\nWORKDIR /out\nENV A=1\nRUN echo \"base\" > base\n\
             FROM scratch\nCOPY --from=base --chmod=0644 /out /out\n",
            &["linux/amd64"],
        );
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(
            names,
            [
                "[base 1/3] FROM busybox",
                "[base 2/3] WORKDIR /out",
                "[base] ENV A 1",
                "[base 3/3] RUN echo \"base\" > base",
                "[stage-1] FROM scratch",
                "[stage-1 1/1] COPY --from=base --chmod=0644 /out /out",
            ]
        );
        // One stage: no stage name; numbers padded to the total's width.
        let mut text = "FROM busybox\nENV A=1\n".to_owned();
        for index in 2..=10 {
            text.push_str(&format!("RUN echo {index}\n"));
        }
        let graph = plan(&text, &["linux/amd64"]);
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(names[0], "[ 1/10] FROM busybox");
        assert_eq!(names[1], "ENV A 1");
        assert_eq!(names[2], "[ 2/10] RUN echo 2");
        assert_eq!(names[10], "[10/10] RUN echo 10");
        // A stage that reads an image through --from is not alone (BuildKit counts the
        // image's state).
        let graph = plan("FROM busybox\nCOPY --from=alpine /a /a\n", &["linux/amd64"]);
        assert_eq!(
            graph.vertices[0].display_name(),
            "[stage-0 1/2] FROM busybox"
        );
    }

    #[test]
    fn a_stage_from_a_stage_inherits_its_platform() {
        let dockerfile = "\
FROM --platform=linux/amd64 busybox AS tools
FROM tools
RUN true
";
        let graph = plan(dockerfile, &["linux/arm64"]);
        assert_eq!(graph.vertices[1].platform, platform("linux/amd64"));
    }

    /// The stage whose base is `child-base` (given its triggers) and what reads what.
    fn plan_with_triggers(triggers: &[&str]) -> BuildGraph {
        let text =
            "FROM busybox AS other\nRUN echo hi > /a\nFROM child-base AS child\nRUN cat /b\n";
        let tree = dockerfile::parse(text).unwrap();
        let stages = dockerfile::stages(&tree).unwrap();
        let amd64 = platform("linux/amd64");
        for_targets(
            &stages,
            &PlanOptions {
                targets: vec![amd64.clone()],
                build_platform: amd64.clone(),
                build_args: BTreeMap::new(),
                target_stage: None,
                named_contexts: BTreeMap::new(),
                base_triggers: [(
                    ("child-base".to_owned(), amd64),
                    triggers.iter().map(|t| (*t).to_owned()).collect(),
                )]
                .into(),
                multi_platform: false,
            },
        )
        .unwrap()
    }

    #[test]
    fn base_image_triggers_run_first_and_bring_in_the_stages_they_read() {
        // Without triggers the stage `other` is not needed.
        let graph = plan_with_triggers(&[]);
        assert_eq!(
            graph.render(),
            "#0 [child 1/2] FROM child-base  targets: linux/amd64\n\
             #1 [child 2/2] RUN cat /b  <- #0  targets: linux/amd64\n\
             image linux/amd64 = #1\n"
        );
        assert!(graph.unknown_bases.is_empty());
        // A trigger copying from `other` makes it needed, runs after FROM and reads it.
        let graph = plan_with_triggers(&["COPY --from=other /a /b", "ENV X=1"]);
        assert_eq!(
            graph.render(),
            "#0 [other 1/2] FROM busybox  targets: linux/amd64\n\
             #1 [other 2/2] RUN echo hi > /a  <- #0  targets: linux/amd64\n\
             #2 [child 1/4] FROM child-base  targets: linux/amd64\n\
             #3 [child 2/4] ONBUILD COPY --from=other /a /b  <- #2 (+#1)  targets: linux/amd64\n\
             #4 [child] ENV X 1  <- #3  targets: linux/amd64\n\
             #5 [child 3/4] RUN cat /b  <- #4  targets: linux/amd64\n\
             image linux/amd64 = #5\n"
        );
        let Op::Image { triggers, .. } = &graph.vertices[2].op else {
            panic!("not an image: {:?}", graph.vertices[2].op)
        };
        assert_eq!(triggers.len(), 2);
        // The new stage's base is not known yet: the caller reads it and plans again.
        assert_eq!(
            graph.unknown_bases,
            vec![("busybox".to_owned(), platform("linux/amd64"))]
        );
    }

    #[test]
    fn a_stage_runs_the_onbuild_of_the_stage_it_is_built_from() {
        let graph = plan(
            "FROM busybox AS base\nONBUILD RUN echo trigger\nFROM base AS mid\nRUN echo own\n",
            &["linux/amd64"],
        );
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(
            names,
            [
                "[base 1/1] FROM busybox",
                "[base] ONBUILD RUN echo trigger",
                "[mid 1/2] ONBUILD RUN echo trigger",
                "[mid 2/2] RUN echo own",
            ]
        );
    }

    #[test]
    fn a_trigger_that_does_not_parse_is_an_error_at_the_from_line() {
        let tree = dockerfile::parse("FROM scratch\n\nFROM child-base\n").unwrap();
        let stages = dockerfile::stages(&tree).unwrap();
        let amd64 = platform("linux/amd64");
        let error = for_targets(
            &stages,
            &PlanOptions {
                targets: vec![amd64.clone()],
                build_platform: amd64.clone(),
                build_args: BTreeMap::new(),
                target_stage: None,
                named_contexts: BTreeMap::new(),
                base_triggers: [(
                    ("child-base".to_owned(), amd64),
                    vec!["FROM busybox".to_owned()],
                )]
                .into(),
                multi_platform: false,
            },
        )
        .unwrap_err();
        let PlanError::Dockerfile(error) = error else {
            panic!("{error}")
        };
        assert_eq!(error.line, Some(3));
        assert!(
            error
                .to_string()
                .contains("isn't allowed as an ONBUILD trigger"),
            "{error}"
        );
    }
}

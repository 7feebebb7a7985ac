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
    /// What the vertex does, as one line (`FROM debian:bookworm`, `RUN make`), for the
    /// provenance's steps.
    pub fn description(&self) -> String {
        match &self.op {
            Op::Scratch => "FROM scratch".to_owned(),
            Op::Image { reference } => format!("FROM {reference}"),
            Op::Step { instruction } => summary(&instruction.instruction),
        }
    }

    /// `[linux/arm64 build 3/8] RUN make`-style name for progress and errors.
    pub fn display_name(&self) -> String {
        let stage = match &self.stage_name {
            Some(name) => name.clone(),
            None => format!("stage-{}", self.stage),
        };
        let what = match &self.op {
            Op::Scratch => "FROM scratch".to_owned(),
            Op::Image { reference } => format!("FROM {reference}"),
            Op::Step { instruction } => summary(&instruction.instruction),
        };
        format!(
            "[{} {stage} {}/{}] {what}",
            self.platform, self.step, self.steps
        )
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
    for target in &options.targets {
        let resolved = dockerfile::resolve(
            stages,
            &ResolveOptions {
                build_args: options.build_args.clone(),
                automatic_args: automatic_args(target, &options.build_platform),
                target: options.target_stage.clone(),
            },
        )?;
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
        // The final vertex of each stage, for this target.
        let mut stage_ends: HashMap<usize, usize> = HashMap::new();
        for &stage_index in &resolved.order {
            let stage = resolved
                .stage(stage_index)
                .expect("resolve orders only stages it returns");
            let platform = match &stage.from.platform {
                Some(value) => {
                    Platform::parse(value).map_err(|source| PlanError::StagePlatform {
                        line: stage.span.start,
                        value: value.clone(),
                        source,
                    })?
                }
                // A stage built FROM another stage runs as that stage's platform.
                None => match stage.base {
                    Base::Stage { index } => {
                        let end = stage_ends[&index];
                        planner.vertices[end].platform.clone()
                    }
                    _ => target.clone(),
                },
            };
            let steps = 1 + stage
                .instructions
                .iter()
                .filter(|resolved| !is_scope_only(&resolved.instruction))
                .count();
            let mut current = match &stage.base {
                Base::Stage { index } => stage_ends[index],
                base => {
                    let op = match base {
                        Base::Scratch => Op::Scratch,
                        Base::Image { reference } => Op::Image {
                            reference: reference.clone(),
                        },
                        Base::Stage { .. } => unreachable!("handled above"),
                    };
                    planner.add(VertexSpec {
                        platform: platform.clone(),
                        stage: stage.index,
                        stage_name: stage.name.clone(),
                        step: 1,
                        steps,
                        op,
                        parent: None,
                        inputs: Vec::new(),
                        target,
                    })
                }
            };
            let mut step = 1;
            for resolved_instruction in &stage.instructions {
                if is_scope_only(&resolved_instruction.instruction) {
                    continue;
                }
                step += 1;
                let inputs = stage
                    .dependencies
                    .iter()
                    .filter(|dependency| {
                        dependency.line == resolved_instruction.instruction.span().start
                    })
                    .filter_map(|dependency| match &dependency.target {
                        Target::Stage { index } => stage_ends.get(index).copied(),
                        Target::Image { .. } => None,
                    })
                    .collect();
                current = planner.add(VertexSpec {
                    platform: platform.clone(),
                    stage: stage.index,
                    stage_name: stage.name.clone(),
                    step,
                    steps,
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
    })
}

/// `ARG` only changes what later instructions see (which is part of their identity); it
/// makes no vertex of its own, as in BuildKit.
fn is_scope_only(instruction: &Instruction) -> bool {
    matches!(instruction, Instruction::Arg(_))
}

struct VertexSpec<'a> {
    platform: Platform,
    stage: usize,
    stage_name: Option<String>,
    step: usize,
    steps: usize,
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
    #[derive(Serialize)]
    struct Identity<'a> {
        parent: Option<&'a str>,
        inputs: Vec<&'a str>,
        platform: String,
        op: serde_json::Value,
    }
    let mut op = serde_json::to_value(&spec.op).expect("an op serialises to JSON");
    strip_spans(&mut op);
    // `ADD --checksum=<commit>` of a git source only checks what the ref resolves to (the
    // step's key has the commit): as in BuildKit, adding it changes nothing.
    if let Op::Step { instruction } = &spec.op {
        if let Instruction::Add(add) = &instruction.instruction {
            if add.sources.iter().any(
                |source| matches!(source, Source::Path(path) if crate::source::gitref::is_git_source(path)),
            ) {
                strip_key(&mut op, "checksum");
            }
        }
    }
    let identity = Identity {
        parent: spec.parent.map(|parent| vertices[parent].id.as_str()),
        inputs: spec
            .inputs
            .iter()
            .map(|&input| vertices[input].id.as_str())
            .collect(),
        platform: spec.platform.to_string(),
        op,
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
            let mut words = Vec::new();
            if let Some(from) = &copy.from {
                words.push(format!("--from={from}"));
            }
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
                targets: targets.iter().map(|target| platform(target)).collect(),
                build_platform: platform("linux/amd64"),
                build_args: build_args
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                target_stage: None,
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
        // The FROM of the build stage is shared; its RUN is not.
        assert_eq!(graph.vertices.len(), 6, "{}", graph.render());
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
        let graph = plan(CROSS, &["linux/arm64"]);
        let names: Vec<String> = graph.vertices.iter().map(Vertex::display_name).collect();
        assert_eq!(names[0], "[linux/amd64 build 1/2] FROM busybox");
        assert_eq!(names[1], "[linux/amd64 build 2/2] RUN echo compile > /out");
        assert_eq!(names[2], "[linux/arm64 stage-1 1/2] FROM busybox");
        assert!(
            names[3].starts_with("[linux/arm64 stage-1 2/2] COPY"),
            "{}",
            names[3]
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
}

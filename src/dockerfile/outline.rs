//! What a Dockerfile offers without building it, as BuildKit's frontend answers
//! `docker buildx build --call=targets|outline`: its stages ([`targets`]), and for one target
//! the build arguments, secrets and ssh forwards it takes ([`outline`]), with the
//! descriptions its comments give (a comment line right above a `FROM` or an `ARG` that
//! starts with the stage's or the argument's name: `# base-builder is the base stage`).
//!
//! The arguments of a target, as BuildKit counts them: every `ARG` of the target stage and
//! of the stages it builds on (`FROM stage`) or reads (`COPY --from`, `RUN --mount=from=`),
//! and the global `ARG`s (before the first `FROM`) that those stages' `FROM` lines use,
//! with the global arguments their defaults use in turn. A value is the `--build-arg` when
//! given, else the default, expanded. A stage `ARG` without a default that takes a global
//! one's value is that global argument (its line, its description).
//!
//! [`print_outline`] and [`print_targets`] write the text BuildKit's printers write (columns
//! as Go's `tabwriter`); the structures serialise as BuildKit's `result.json`.
//!
//! Pure: no I/O; the caller passes the automatic platform arguments.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;

use super::expand::{Expander, Variables};
use super::instruction::{Instruction, Stage, Stages};
use super::mount::MountType;
use super::syntax::Dockerfile;
use super::{DockerfileError, ErrorKind, Span};

/// A source location as BuildKit's `pb.Location` serialises (lines from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// One range: the instruction's first and last line.
    pub ranges: Vec<Range>,
}

/// A range of lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// The first line.
    pub start: Position,
    /// The last line.
    pub end: Position,
}

/// A line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
}

impl From<Span> for Location {
    fn from(span: Span) -> Self {
        Self {
            ranges: vec![Range {
                start: Position { line: span.start },
                end: Position { line: span.end },
            }],
        }
    }
}

/// One stage, as `--call=targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `AS name` (empty for an unnamed stage).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The last stage: what a build without `--target` builds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// From the comment above its `FROM`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The `FROM` image as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
    /// `FROM --platform=` as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// The `FROM` line.
    pub location: Location,
}

/// `--call=targets`: BuildKit's `targets.List`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetList {
    /// Every stage, in order.
    pub targets: Vec<Target>,
    /// The Dockerfile, base64 (BuildKit's `Sources`).
    pub sources: Vec<String>,
}

/// A build argument of an outline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    /// Its name.
    pub name: String,
    /// From the comment above its `ARG`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The value the build would use (`--build-arg`, else the default).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Its `ARG` line.
    pub location: Location,
}

/// A secret or ssh forward an outline lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineNeed {
    /// The id.
    pub name: String,
    /// `required=true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The first `RUN` that mounts it.
    pub location: Location,
}

/// `--call=outline`: BuildKit's `outline.Outline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// The target stage's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// From the comment above its `FROM`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The build arguments, in the order of their lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    /// The secrets `RUN --mount=type=secret` reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineNeed>,
    /// The ssh forwards `RUN --mount=type=ssh` uses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<OutlineNeed>,
    /// The Dockerfile, base64.
    pub sources: Vec<String>,
}

/// The description a comment gives `name` (BuildKit's `getDocComment`).
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_owned()
}

/// The comment lines above the instruction that starts on `line`.
fn comments_at(tree: &Dockerfile, line: usize) -> &[String] {
    tree.nodes
        .iter()
        .find(|node| node.span.start == line)
        .map_or(&[][..], |node| node.prev_comment.as_slice())
}

/// Every stage of the Dockerfile whose text is `text`.
pub fn targets(text: &str, tree: &Dockerfile, stages: &Stages) -> TargetList {
    let last = stages.stages.len().saturating_sub(1);
    let targets = stages
        .stages
        .iter()
        .map(|stage| {
            let name = stage.name.clone().unwrap_or_default();
            Target {
                description: doc_comment(comments_at(tree, stage.from.span.start), &name),
                name,
                default: stage.index == last,
                base: stage.from.image.clone(),
                platform: stage.from.platform.clone().unwrap_or_default(),
                location: stage.from.span.into(),
            }
        })
        .collect();
    TargetList {
        targets,
        sources: vec![base64::engine::general_purpose::STANDARD.encode(text)],
    }
}

/// An argument as the outline tracks it.
#[derive(Debug, Clone)]
struct ArgInfo {
    name: String,
    value: Option<String>,
    description: String,
    span: Span,
    /// Position on its line (`ARG A B`), for the order.
    position: usize,
    /// The global arguments its default used.
    deps: BTreeSet<String>,
}

/// A [`Variables`] that remembers which names it found.
struct Recording<'v> {
    inner: &'v dyn Variables,
    found: RefCell<BTreeSet<String>>,
}

impl Variables for Recording<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        let value = self.inner.lookup(name);
        if value.is_some() {
            self.found.borrow_mut().insert(name.to_owned());
        }
        value
    }
}

/// Expands `word` with `vars`; returns the text and the names it used.
fn expand_recording(
    expander: &Expander,
    word: &str,
    vars: &dyn Variables,
    span: Span,
    instruction: &str,
) -> Result<(String, BTreeSet<String>), DockerfileError> {
    let recording = Recording {
        inner: vars,
        found: RefCell::default(),
    };
    let text = expander
        .expand(word, &recording)
        .map_err(|error| {
            DockerfileError::new(
                span.start,
                ErrorKind::Expansion {
                    instruction: instruction.to_owned(),
                    message: error.to_string(),
                },
            )
        })?
        .text;
    Ok((text, recording.found.into_inner()))
}

/// What one stage takes, before its base and dependencies are added.
#[derive(Default)]
struct StageNeeds {
    args: BTreeMap<String, ArgInfo>,
    used: BTreeSet<String>,
    secrets: BTreeMap<String, (bool, Span)>,
    ssh: BTreeMap<String, (bool, Span)>,
    /// The stages it builds on or reads, by index.
    stages: Vec<usize>,
}

/// The outline of `target` (default: the last stage) with `build_args` given, `automatic`
/// the platform arguments (`TARGETPLATFORM`, ...) of the build.
///
/// # Errors
/// An unknown target stage; a bad substitution in a `FROM` or an `ARG` default.
pub fn outline(
    text: &str,
    tree: &Dockerfile,
    stages: &Stages,
    target: Option<&str>,
    build_args: &BTreeMap<String, String>,
    automatic: &BTreeMap<String, String>,
) -> Result<Outline, DockerfileError> {
    let expander = Expander::new(stages.directives.escape);
    let chosen = match target {
        Some(name) => stages.find(name).ok_or_else(|| {
            DockerfileError::global(ErrorKind::UnknownTarget {
                name: name.to_owned(),
                suggestion: None,
            })
        })?,
        None => stages
            .stages
            .last()
            .ok_or_else(|| DockerfileError::global(ErrorKind::Empty))?,
    };

    // The global arguments, in order (BuildKit's buildMetaArgs).
    let mut global_env: BTreeMap<String, String> = automatic.clone();
    let mut global: BTreeMap<String, ArgInfo> = BTreeMap::new();
    for arg in &stages.meta_args {
        let comments = comments_at(tree, arg.span.start);
        for (position, declaration) in arg.args.iter().enumerate() {
            let name = &declaration.name;
            let mut deps = BTreeSet::new();
            let value = match (build_args.get(name), &declaration.default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => {
                    let (value, used) =
                        expand_recording(&expander, default, &global_env, arg.span, "ARG")?;
                    deps = used;
                    if deps.remove(name) {
                        if let Some(old) = global.get(name) {
                            deps.extend(old.deps.iter().cloned());
                        }
                    }
                    Some(value)
                }
                (None, None) => None,
            };
            if let Some(value) = &value {
                global_env.insert(name.clone(), value.clone());
            }
            global.insert(
                name.clone(),
                ArgInfo {
                    name: name.clone(),
                    value,
                    description: doc_comment(comments, name),
                    span: arg.span,
                    position,
                    deps,
                },
            );
        }
    }

    let mut needs: Vec<Option<StageNeeds>> = Vec::new();
    needs.resize_with(stages.stages.len(), || None);
    let mut order = vec![chosen.index];
    let mut seen = BTreeSet::from([chosen.index]);
    while let Some(index) = order.pop() {
        let stage = &stages.stages[index];
        let found = stage_needs(
            &expander,
            tree,
            stages,
            stage,
            &global,
            &global_env,
            build_args,
        )?;
        for &other in &found.stages {
            if seen.insert(other) {
                order.push(other);
            }
        }
        needs[index] = Some(found);
    }

    // BuildKit's dispatchState.args/secrets/ssh: the stage's own, then its base's and its
    // dependencies', each name once.
    let mut args: Vec<ArgInfo> = Vec::new();
    let mut listed = BTreeSet::new();
    let mut secrets: BTreeMap<String, (bool, Span)> = BTreeMap::new();
    let mut ssh: BTreeMap<String, (bool, Span)> = BTreeMap::new();
    for found in needs.iter().flatten() {
        let mut used = BTreeSet::new();
        let mut pending: Vec<String> = found.used.iter().cloned().collect();
        while let Some(name) = pending.pop() {
            if used.insert(name.clone()) {
                if let Some(info) = found.args.get(&name) {
                    pending.extend(info.deps.iter().cloned());
                }
            }
        }
        for name in used {
            if let Some(info) = found.args.get(&name) {
                if listed.insert(name) {
                    args.push(info.clone());
                }
            }
        }
        for (id, need) in &found.secrets {
            secrets.entry(id.clone()).or_insert(*need);
        }
        for (id, need) in &found.ssh {
            ssh.entry(id.clone()).or_insert(*need);
        }
    }
    args.sort_by_key(|info| (info.span.start, info.position));
    let needs_list = |map: BTreeMap<String, (bool, Span)>| -> Vec<OutlineNeed> {
        let mut list: Vec<OutlineNeed> = map
            .into_iter()
            .map(|(name, (required, span))| OutlineNeed {
                name,
                required,
                location: span.into(),
            })
            .collect();
        list.sort_by_key(|need| need.location.ranges[0].start.line);
        list
    };
    let name = chosen.name.clone().unwrap_or_default();
    Ok(Outline {
        description: doc_comment(comments_at(tree, chosen.from.span.start), &name),
        name,
        args: args
            .into_iter()
            .map(|info| OutlineArg {
                name: info.name,
                description: info.description,
                value: info.value.unwrap_or_default(),
                location: info.span.into(),
            })
            .collect(),
        secrets: needs_list(secrets),
        ssh: needs_list(ssh),
        sources: vec![base64::engine::general_purpose::STANDARD.encode(text)],
    })
}

/// What `stage` itself takes: its `FROM`'s global arguments, its own `ARG`s, its secrets
/// and ssh forwards, and the stages it builds on or reads.
fn stage_needs(
    expander: &Expander,
    tree: &Dockerfile,
    stages: &Stages,
    stage: &Stage,
    global: &BTreeMap<String, ArgInfo>,
    global_env: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> Result<StageNeeds, DockerfileError> {
    let mut found = StageNeeds {
        args: global.clone(),
        ..StageNeeds::default()
    };
    let span = stage.from.span;
    let (image, used) = expand_recording(expander, &stage.from.image, global_env, span, "FROM")?;
    found.used.extend(used);
    if let Some(platform) = &stage.from.platform {
        let (_, used) = expand_recording(expander, platform, global_env, span, "FROM")?;
        found.used.extend(used);
    }
    let earlier = |name: &str| -> Option<usize> {
        let lower = name.to_lowercase();
        stages
            .stages
            .iter()
            .take(stage.index)
            .rev()
            .find(|other| other.name.as_deref() == Some(lower.as_str()))
            .map(|other| other.index)
    };
    let named = |name: &str| -> Option<usize> {
        name.parse::<usize>()
            .ok()
            .filter(|index| *index < stages.stages.len())
            .or_else(|| stages.find(name).map(|other| other.index))
    };
    if let Some(base) = earlier(&image) {
        found.stages.push(base);
    }
    // The stage's own variables so far: its ARGs (ENV values are not known without the
    // base image; BuildKit reads them from it).
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for instruction in &stage.instructions {
        match instruction {
            Instruction::Arg(arg) => {
                let comments = comments_at(tree, arg.span.start);
                for (position, declaration) in arg.args.iter().enumerate() {
                    let name = &declaration.name;
                    let given = build_args.get(name);
                    let inherited = given.is_none() && declaration.default.is_none();
                    let value = match (given, &declaration.default) {
                        (Some(value), _) => Some(value.clone()),
                        (None, Some(default)) => {
                            Some(expand_recording(expander, default, &env, arg.span, "ARG")?.0)
                        }
                        (None, None) => global_env.get(name).cloned(),
                    };
                    if let Some(value) = &value {
                        env.insert(name.clone(), value.clone());
                    }
                    // Inherited from a global ARG: that one is the argument.
                    if !(inherited && global_env.contains_key(name)) {
                        found.args.insert(
                            name.clone(),
                            ArgInfo {
                                name: name.clone(),
                                value,
                                description: doc_comment(comments, name),
                                span: arg.span,
                                position,
                                deps: BTreeSet::new(),
                            },
                        );
                    }
                    found.used.insert(name.clone());
                }
            }
            Instruction::Copy(copy) => {
                if let Some(from) = copy.from.as_deref().and_then(named) {
                    found.stages.push(from);
                }
            }
            Instruction::Run(run) => {
                for mount in &run.mounts {
                    if let Some(from) = mount.from.as_deref().and_then(named) {
                        found.stages.push(from);
                    }
                    let entry = match mount.kind {
                        MountType::Secret => {
                            let id = mount.id.clone().or_else(|| {
                                mount
                                    .target
                                    .as_deref()
                                    .and_then(|target| target.rsplit('/').next().map(str::to_owned))
                            });
                            id.map(|id| (&mut found.secrets, id))
                        }
                        MountType::Ssh => Some((
                            &mut found.ssh,
                            mount.id.clone().unwrap_or_else(|| "default".to_owned()),
                        )),
                        _ => None,
                    };
                    if let Some((map, id)) = entry {
                        map.entry(id).or_insert((mount.required, run.span));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Go's `tabwriter` with `padding`: every cell but the last of a line padded to its
/// column's widest cell plus `padding` spaces.
fn columns(rows: &[Vec<String>], padding: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (column, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let width = cell.chars().count();
            match widths.get_mut(column) {
                Some(widest) => *widest = (*widest).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if column + 1 < row.len() {
                let _ = write!(out, "{cell:<width$}", width = widths[column] + padding);
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

/// The text `docker buildx build --call=targets` prints.
pub fn print_targets(list: &TargetList) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for target in &list.targets {
        let name = match (target.name.is_empty(), target.default) {
            (true, true) => "(default)".to_owned(),
            (false, true) => format!("{} (default)", target.name),
            _ => target.name.clone(),
        };
        rows.push(vec![name, target.description.clone()]);
    }
    columns(&rows, 1)
}

/// The text `docker buildx build --call=outline` prints.
pub fn print_outline(outline: &Outline) -> String {
    let mut out = String::new();
    if !outline.name.is_empty() || !outline.description.is_empty() {
        let name = if outline.name.is_empty() {
            "(default)".to_owned()
        } else {
            outline.name.clone()
        };
        let mut rows = vec![vec!["TARGET:".to_owned(), name]];
        if !outline.description.is_empty() {
            rows.push(vec!["DESCRIPTION:".to_owned(), outline.description.clone()]);
        }
        out.push_str(&columns(&rows, 1));
        out.push('\n');
    }
    if !outline.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_owned(),
            "VALUE".to_owned(),
            "DESCRIPTION".to_owned(),
        ]];
        for arg in &outline.args {
            rows.push(vec![
                arg.name.clone(),
                arg.value.clone(),
                arg.description.clone(),
            ]);
        }
        out.push_str(&columns(&rows, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", &outline.secrets), ("SSH", &outline.ssh)] {
        if list.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_owned(), "REQUIRED".to_owned()]];
        for need in list {
            let required = if need.required { "true" } else { "" };
            rows.push(vec![need.name.clone(), required.to_owned()]);
        }
        out.push_str(&columns(&rows, 3));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (Dockerfile, Stages) {
        let tree = crate::dockerfile::parse(text).unwrap();
        let stages = crate::dockerfile::stages(&tree).unwrap();
        (tree, stages)
    }

    /// The example of buildx's documentation (`--call` descriptions).
    #[test]
    fn buildx_documentation_example() {
        let text = "# syntax=docker/dockerfile:1\n\n\
                    # GO_VERSION sets the Go version for the build\n\
                    ARG GO_VERSION=1.22\n\n\
                    # base-builder is the base stage for building the project\n\
                    FROM golang:${GO_VERSION} AS base-builder\n";
        let (tree, stages) = parts(text);
        let outline = outline(
            text,
            &tree,
            &stages,
            None,
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            print_outline(&outline),
            "TARGET:      base-builder\n\
             DESCRIPTION: is the base stage for building the project\n\
             \n\
             BUILD ARG    VALUE   DESCRIPTION\n\
             GO_VERSION   1.22    sets the Go version for the build\n\
             \n"
        );
        let list = targets(text, &tree, &stages);
        assert_eq!(
            print_targets(&list),
            format!(
                "{:<23}DESCRIPTION\nbase-builder (default) is the base stage for building the project\n",
                "TARGET"
            )
        );
    }

    #[test]
    fn a_target_takes_the_args_of_its_stages_and_the_globals_their_from_lines_use() {
        let text = "ARG BASE=busybox\n\
                    ARG TAG=${BASE}-latest\n\
                    ARG UNUSED=1\n\
                    # VERSION of the tool\n\
                    ARG VERSION\n\
                    FROM ${BASE} AS tools\n\
                    # TOOL_FLAGS passed to make\n\
                    ARG TOOL_FLAGS=-O2\n\
                    RUN --mount=type=secret,id=token,required=true --mount=type=ssh true\n\
                    FROM busybox AS other\n\
                    ARG OTHER\n\
                    FROM busybox AS app\n\
                    ARG VERSION\n\
                    ARG LEVEL=${VERSION}-x\n\
                    COPY --from=tools /a /a\n\
                    RUN --mount=type=secret,target=/run/secrets/npmrc true\n";
        let (tree, stages) = parts(text);
        let given = BTreeMap::from([("VERSION".to_owned(), "2.0".to_owned())]);
        let outline = outline(text, &tree, &stages, None, &given, &BTreeMap::new()).unwrap();
        let args: Vec<(&str, &str, &str)> = outline
            .args
            .iter()
            .map(|arg| {
                (
                    arg.name.as_str(),
                    arg.value.as_str(),
                    arg.description.as_str(),
                )
            })
            .collect();
        // BASE (tools' FROM), TOOL_FLAGS, VERSION (the stage's: a value was given, so it
        // is not the global one inherited), LEVEL; not TAG, UNUSED, nor OTHER (a stage the
        // target does not read).
        assert_eq!(
            args,
            [
                ("BASE", "busybox", ""),
                ("TOOL_FLAGS", "-O2", "passed to make"),
                ("VERSION", "2.0", ""),
                ("LEVEL", "2.0-x", ""),
            ]
        );
        // Without a value given, a stage `ARG BASE` is the global one (its line and
        // description).
        let small = "# BASE image to start from\nARG BASE=busybox\nFROM busybox\nARG BASE\n";
        let (small_tree, small_stages) = parts(small);
        let inherited = super::outline(
            small,
            &small_tree,
            &small_stages,
            None,
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(inherited.args.len(), 1);
        assert_eq!(
            (
                inherited.args[0].value.as_str(),
                inherited.args[0].description.as_str(),
                inherited.args[0].location.ranges[0].start.line
            ),
            ("busybox", "image to start from", 2)
        );
        let secrets: Vec<(&str, bool)> = outline
            .secrets
            .iter()
            .map(|need| (need.name.as_str(), need.required))
            .collect();
        assert_eq!(secrets, [("token", true), ("npmrc", false)]);
        assert_eq!(outline.ssh[0].name, "default");
        assert_eq!(outline.name, "app");
        let printed = print_outline(&outline);
        assert!(
            printed.contains("SECRET   REQUIRED\ntoken    true\nnpmrc    \n"),
            "{printed}"
        );

        let other = super::outline(
            text,
            &tree,
            &stages,
            Some("other"),
            &given,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(other.args.len(), 1);
        assert_eq!(other.args[0].name, "OTHER");
        assert!(
            super::outline(text, &tree, &stages, Some("nope"), &given, &BTreeMap::new()).is_err()
        );
    }

    #[test]
    fn json_has_buildkits_field_names() {
        let text = "FROM busybox AS a\nFROM a\n";
        let (tree, stages) = parts(text);
        let list = targets(text, &tree, &stages);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["targets"][0]["name"], "a");
        assert_eq!(json["targets"][0]["base"], "busybox");
        assert!(json["targets"][0].get("default").is_none());
        assert_eq!(json["targets"][1]["default"], true);
        assert_eq!(
            json["targets"][1]["location"]["ranges"][0]["start"]["line"],
            2
        );
        assert!(json["sources"][0].is_string());
    }
}

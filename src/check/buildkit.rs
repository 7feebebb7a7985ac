//! BuildKit's 21 build checks, under their names, with their conditions and messages
//! (moby/buildkit `frontend/dockerfile/linter/ruleset.go`, `dockerfile2llb/convert.go`,
//! `instructions/parse.go`; documented at `https://docs.docker.com/go/dockerfile/rule/`).
//!
//! Differences, all from checking without pulling base images: a base image's `ENV` is
//! unknown (only `PATH` is assumed, as BuildKit sets it on every image), so `UndefinedVar`
//! may name a variable such an image defines, and `JSONArgsRecommended` assumes the base
//! image sets no `SHELL`. `UndefinedVar` leaves the automatic platform arguments to
//! [`super::multiplatform`]'s `UndeclaredPlatformArg`, which also looks into `RUN`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Findings, Item, Model, Names, PLATFORM_ARGS, Recorder, Rule};
use crate::dockerfile::error::suggest;
use crate::dockerfile::instruction::{Chmod, Source};
use crate::dockerfile::{CommandLine, Instruction, Node};
use crate::platform::Platform;

const fn rule(
    name: &'static str,
    url: &'static str,
    description: &'static str,
    fix: &'static str,
    experimental: bool,
) -> Rule {
    Rule {
        name,
        description,
        url,
        fix,
        family: super::Family::Buildkit,
        experimental,
    }
}

/// `FROM image AS Build`.
pub const STAGE_NAME_CASING: Rule = rule(
    "StageNameCasing",
    "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
    "Stage names should be lowercase",
    "write the stage name in lower case",
    false,
);
/// `FROM image as build` with `FROM` upper case.
pub const FROM_AS_CASING: Rule = rule(
    "FromAsCasing",
    "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
    "The 'as' keyword should match the case of the 'from' keyword",
    "write AS in the same case as FROM",
    false,
);
/// A blank line inside a continued instruction.
pub const NO_EMPTY_CONTINUATION: Rule = rule(
    "NoEmptyContinuation",
    "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
    "Empty continuation lines will become errors in a future release",
    "remove the empty line, or make it a comment",
    false,
);
/// `run` among `RUN`s.
pub const CONSISTENT_INSTRUCTION_CASING: Rule = rule(
    "ConsistentInstructionCasing",
    "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "write every instruction in the same case (upper case is usual)",
    false,
);
/// Two stages with one name.
pub const DUPLICATE_STAGE_NAME: Rule = rule(
    "DuplicateStageName",
    "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
    "Stage names should be unique",
    "give each stage its own name",
    false,
);
/// `AS scratch`, `AS context`.
pub const RESERVED_STAGE_NAME: Rule = rule(
    "ReservedStageName",
    "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
    "Reserved words should not be used as stage names",
    "rename the stage (scratch and context are reserved)",
    false,
);
/// `CMD node app.js`.
pub const JSON_ARGS_RECOMMENDED: Rule = rule(
    "JSONArgsRecommended",
    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "use the exec form: CMD [\"program\", \"arg\"] (or set SHELL explicitly if a shell is wanted)",
    false,
);
/// `MAINTAINER`.
pub const MAINTAINER_DEPRECATED: Rule = rule(
    "MaintainerDeprecated",
    "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "use LABEL org.opencontainers.image.authors=\"name <mail>\"",
    false,
);
/// `FROM $UNDECLARED`.
pub const UNDEFINED_ARG_IN_FROM: Rule = rule(
    "UndefinedArgInFrom",
    "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
    "FROM command must use declared ARGs",
    "declare the variable with ARG before the first FROM",
    false,
);
/// `WORKDIR app` with no absolute `WORKDIR` before.
pub const WORKDIR_RELATIVE_PATH: Rule = rule(
    "WorkdirRelativePath",
    "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    "use an absolute path (WORKDIR /app)",
    false,
);
/// `COPY $foo .` with `foo` never declared.
pub const UNDEFINED_VAR: Rule = rule(
    "UndefinedVar",
    "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
    "Variables should be defined before their use",
    "declare it with ARG or ENV before this instruction (or fix its spelling)",
    false,
);
/// Two `CMD`s in a stage.
pub const MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = rule(
    "MultipleInstructionsDisallowed",
    "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
    "Multiple instructions of the same type should not be used in the same stage",
    "keep only the last one",
    false,
);
/// `ENV key value`.
pub const LEGACY_KEY_VALUE_FORMAT: Rule = rule(
    "LegacyKeyValueFormat",
    "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
    "Legacy key/value format with whitespace separator should not be used",
    "write key=value (quote values with spaces)",
    false,
);
/// `FROM --platform=$TARGETPLATFORM`.
pub const REDUNDANT_TARGET_PLATFORM: Rule = rule(
    "RedundantTargetPlatform",
    "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "remove --platform=$TARGETPLATFORM",
    false,
);
/// `ARG API_TOKEN`.
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = rule(
    "SecretsUsedInArgOrEnv",
    "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
    "Sensitive data should not be used in the ARG or ENV commands",
    "pass secrets with RUN --mount=type=secret,id=NAME and --secret id=NAME,src=FILE",
    false,
);
/// `ARG TAG` then `FROM alpine:$TAG`: empty tag without a build argument.
pub const INVALID_DEFAULT_ARG_IN_FROM: Rule = rule(
    "InvalidDefaultArgInFrom",
    "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
    "Default value for global ARG results in an empty or invalid base image name",
    "give the ARG a default value that makes a valid image name",
    false,
);
/// `FROM --platform=linux/amd64`.
pub const FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = rule(
    "FromPlatformFlagConstDisallowed",
    "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
    "FROM --platform flag should not use a constant value",
    "drop --platform (use the command line's), use $BUILDPLATFORM, or name the stage after its platform",
    false,
);
/// `COPY` of a file `.dockerignore` excludes.
pub const COPY_IGNORED_FILE: Rule = rule(
    "CopyIgnoredFile",
    "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
    "Attempting to Copy file that is excluded by .dockerignore",
    "remove the file from .dockerignore, or stop copying it",
    true,
);
/// A comment above `ARG`/`FROM ... AS` that does not start with its name.
pub const INVALID_DEFINITION_DESCRIPTION: Rule = rule(
    "InvalidDefinitionDescription",
    "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    "start the comment with the name, or separate it from the instruction by an empty line",
    true,
);
/// `EXPOSE 80/TCP`.
pub const EXPOSE_PROTO_CASING: Rule = rule(
    "ExposeProtoCasing",
    "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
    "Protocol in EXPOSE instruction should be lowercase",
    "write the protocol in lower case (80/tcp)",
    false,
);
/// `EXPOSE 127.0.0.1:80:80`.
pub const EXPOSE_INVALID_FORMAT: Rule = rule(
    "ExposeInvalidFormat",
    "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    "expose the container port only (EXPOSE 80); map ports when running the container",
    false,
);

/// Runs BuildKit's rules.
pub(crate) fn run(model: &Model<'_>, findings: &mut Findings) {
    for warning in &model.tree.warnings {
        if warning.message == "empty continuation line" {
            let span = model
                .tree
                .nodes
                .iter()
                .find(|node| node.span.start == warning.line)
                .map_or(
                    crate::dockerfile::Span::new(warning.line, warning.line),
                    |node| node.span,
                );
            findings.add(&NO_EMPTY_CONTINUATION, span, "Empty continuation line");
        }
    }
    for (node, arg) in &model.meta_args {
        let keys: Vec<&str> = arg.args.iter().map(|d| d.name.as_str()).collect();
        definition_description(node, "ARG", &keys, findings);
        for declaration in &arg.args {
            secret_key("ARG", &declaration.name, node, findings);
        }
    }
    casing(model, findings);
    from_lines(model, findings);
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut scopes: Vec<StageScope> = Vec::new();
    for stage in &model.stages {
        if let Some(name) = &stage.from.name {
            if name == "context" || name == "scratch" {
                findings.add(
                    &RESERVED_STAGE_NAME,
                    stage.node.span,
                    format!("Stage name should not use the same name as reserved stage {name:?}"),
                );
            }
            if !seen_names.insert(name.clone()) {
                findings.add(
                    &DUPLICATE_STAGE_NAME,
                    stage.node.span,
                    format!("Duplicate stage name {name:?}, stage names should be unique"),
                );
            }
            definition_description(stage.node, "FROM", &[name.as_str()], findings);
        }
        let inherited = stage
            .parent
            .and_then(|parent| scopes.get(parent).cloned())
            .unwrap_or_default();
        let scope = stage_rules(model, &stage.items, inherited, findings);
        scopes.push(scope);
    }
}

/// What a stage passes to a stage built `FROM` it.
#[derive(Debug, Clone, Default)]
struct StageScope {
    /// Names of `ARG`s and `ENV`s.
    defined: BTreeSet<String>,
    workdir_set: bool,
    shell_set: bool,
}

fn stage_rules(
    model: &Model<'_>,
    items: &[Item<'_>],
    mut scope: StageScope,
    findings: &mut Findings,
) -> StageScope {
    scope.defined.insert("PATH".to_owned());
    let mut once: BTreeMap<&'static str, &Node> = BTreeMap::new();
    for item in items {
        let node = item.node;
        let span = node.span;
        let mut used: Vec<&str> = Vec::new();
        match &item.instruction {
            Instruction::Arg(arg) => {
                let keys: Vec<&str> = arg.args.iter().map(|d| d.name.as_str()).collect();
                definition_description(node, "ARG", &keys, findings);
                for declaration in &arg.args {
                    secret_key("ARG", &declaration.name, node, findings);
                    if let Some(default) = &declaration.default {
                        undefined_vars(model, &[default.as_str()], &scope.defined, node, findings);
                    }
                    scope.defined.insert(declaration.name.clone());
                }
            }
            Instruction::Env(env) => {
                legacy_key_value(node, "ENV", findings);
                let values: Vec<&str> = env.variables.iter().map(|kv| kv.value.as_str()).collect();
                undefined_vars(model, &values, &scope.defined, node, findings);
                for kv in &env.variables {
                    secret_key("ENV", &kv.key, node, findings);
                    scope.defined.insert(kv.key.clone());
                }
            }
            Instruction::Label(label) => {
                legacy_key_value(node, "LABEL", findings);
                for kv in &label.labels {
                    used.push(&kv.key);
                    used.push(&kv.value);
                }
            }
            Instruction::Maintainer(_) => findings.add(
                &MAINTAINER_DEPRECATED,
                span,
                "Maintainer instruction is deprecated in favor of using label",
            ),
            Instruction::Workdir(workdir) => {
                used.push(&workdir.path);
                if !scope.workdir_set {
                    let path = expand_quietly(model, &workdir.path, &scope.defined);
                    if !path.starts_with('/') {
                        findings.add(
                            &WORKDIR_RELATIVE_PATH,
                            span,
                            format!(
                                "Relative workdir {path:?} can have unexpected results if the base image changes"
                            ),
                        );
                    }
                }
                scope.workdir_set = true;
            }
            Instruction::Shell(_) => scope.shell_set = true,
            Instruction::Cmd(cmd) => {
                json_args(&cmd.command, "CMD", scope.shell_set, node, findings);
                used_once(&mut once, "CMD", node, findings);
            }
            Instruction::Entrypoint(entrypoint) => {
                json_args(
                    &entrypoint.command,
                    "ENTRYPOINT",
                    scope.shell_set,
                    node,
                    findings,
                );
                used_once(&mut once, "ENTRYPOINT", node, findings);
            }
            Instruction::Healthcheck(_) => used_once(&mut once, "HEALTHCHECK", node, findings),
            Instruction::Expose(expose) => {
                for port in &expose.ports {
                    used.push(port);
                    if port.contains('$') {
                        continue;
                    }
                    if port.contains(':') {
                        findings.add(
                            &EXPOSE_INVALID_FORMAT,
                            span,
                            format!(
                                "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
                            ),
                        );
                    }
                    if let Some((_, protocol)) = port.split_once('/') {
                        if protocol != protocol.to_lowercase() {
                            findings.add(
                                &EXPOSE_PROTO_CASING,
                                span,
                                format!(
                                    "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                                ),
                            );
                        }
                    }
                }
            }
            Instruction::Copy(copy) => {
                paths(&copy.sources, &copy.destination, &mut used);
                used.extend(copy.chown.as_deref());
                if let Some(Chmod::Unexpanded(chmod)) = &copy.chmod {
                    used.push(chmod);
                }
                if copy.from.is_none() {
                    ignored_files(model, "Copy", &copy.sources, node, findings);
                }
            }
            Instruction::Add(add) => {
                paths(&add.sources, &add.destination, &mut used);
                used.extend(add.chown.as_deref());
                ignored_files(model, "Add", &add.sources, node, findings);
            }
            Instruction::User(user) => used.push(&user.user),
            Instruction::Volume(volume) => used.extend(volume.paths.iter().map(String::as_str)),
            Instruction::Stopsignal(signal) => used.push(&signal.signal),
            Instruction::Run(_) | Instruction::From(_) | Instruction::Onbuild(_) => {}
        }
        undefined_vars(model, &used, &scope.defined, node, findings);
    }
    scope
}

fn paths<'i>(sources: &'i [Source], destination: &'i str, used: &mut Vec<&'i str>) {
    for source in sources {
        if let Source::Path(path) = source {
            used.push(path);
        }
    }
    used.push(destination);
}

/// Expands with every defined name empty (for the shape of a path).
fn expand_quietly(model: &Model<'_>, word: &str, defined: &BTreeSet<String>) -> String {
    model
        .expander
        .expand(word, &Names(defined))
        .map_or_else(|_| word.to_owned(), |expansion| expansion.text)
}

fn undefined_vars(
    model: &Model<'_>,
    words: &[&str],
    defined: &BTreeSet<String>,
    node: &Node,
    findings: &mut Findings,
) {
    let names = Names(defined);
    let recorder = Recorder::new(&names);
    for word in words {
        let _ = model.expander.expand(word, &recorder);
    }
    let candidates: Vec<&str> = defined.iter().map(String::as_str).collect();
    for name in recorder.missing.borrow().iter() {
        if PLATFORM_ARGS.contains(&name.as_str()) {
            continue;
        }
        let mut message = format!("Usage of undefined variable '${name}'");
        if let Some(suggestion) = suggest(name, &candidates) {
            message.push_str(&format!(" (did you mean ${suggestion}?)"));
        }
        findings.add(&UNDEFINED_VAR, node.span, message);
    }
}

fn json_args(
    command: &CommandLine,
    name: &str,
    shell_set: bool,
    node: &Node,
    findings: &mut Findings,
) {
    if matches!(command, CommandLine::Shell(_)) && !shell_set {
        findings.add(
            &JSON_ARGS_RECOMMENDED,
            node.span,
            format!(
                "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
            ),
        );
    }
}

/// Reports the earlier of two `CMD`/`ENTRYPOINT`/`HEALTHCHECK`s: it is the one ignored.
fn used_once<'n>(
    once: &mut BTreeMap<&'static str, &'n Node>,
    name: &'static str,
    node: &'n Node,
    findings: &mut Findings,
) {
    if let Some(earlier) = once.insert(name, node) {
        findings.add(
            &MULTIPLE_INSTRUCTIONS_DISALLOWED,
            earlier.span,
            format!(
                "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
            ),
        );
    }
}

fn legacy_key_value(node: &Node, name: &str, findings: &mut Findings) {
    let legacy = node
        .args
        .chunks(3)
        .any(|triple| triple.len() == 3 && triple[2].is_empty());
    if legacy {
        findings.add(
            &LEGACY_KEY_VALUE_FORMAT,
            node.span,
            format!(
                "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
            ),
        );
    }
}

/// BuildKit's secret-name test: an `_`-separated part of the name is one of the secret
/// words, and none is `public`.
pub fn is_secret_key(key: &str) -> bool {
    const SECRET: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let parts: Vec<String> = key.split('_').map(str::to_lowercase).collect();
    parts.iter().any(|part| SECRET.contains(&part.as_str()))
        && !parts.iter().any(|part| part == "public")
}

fn secret_key(instruction: &str, key: &str, node: &Node, findings: &mut Findings) {
    if is_secret_key(key) {
        findings.add(
            &SECRETS_USED_IN_ARG_OR_ENV,
            node.span,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
            ),
        );
    }
}

fn definition_description(node: &Node, instruction: &str, keys: &[&str], findings: &mut Findings) {
    let Some(last) = node.prev_comment.last() else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let first_word = last.split(' ').next().unwrap_or_default();
    if keys.contains(&first_word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { keys[0] };
    findings.add(
        &INVALID_DEFINITION_DESCRIPTION,
        node.span,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}

fn ignored_files(
    model: &Model<'_>,
    verb: &str,
    sources: &[Source],
    node: &Node,
    findings: &mut Findings,
) {
    let ignore = &model.options.dockerignore;
    if ignore.is_empty() {
        return;
    }
    for source in sources {
        let Source::Path(path) = source else { continue };
        if path.contains("://") || path.starts_with("git@") {
            continue;
        }
        let mut relative = path.as_str();
        loop {
            let trimmed = relative.trim_start_matches('/');
            let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
            if trimmed == relative {
                break;
            }
            relative = trimmed;
        }
        if relative.is_empty() || relative == "." {
            continue;
        }
        if ignore
            .matches_or_parent_matches(relative.as_bytes())
            .unwrap_or(false)
        {
            findings.add(
                &COPY_IGNORED_FILE,
                node.span,
                format!("Attempting to {verb} file {path:?} that is excluded by .dockerignore"),
            );
        }
    }
}

/// The instruction keyword as written (`Run`), from the node's logical line.
fn keyword(node: &Node) -> &str {
    node.original
        .trim_start()
        .split(|ch: char| ch.is_whitespace())
        .next()
        .unwrap_or_default()
}

fn is_self_consistent(word: &str) -> bool {
    word == word.to_lowercase() || word == word.to_uppercase()
}

fn casing(model: &Model<'_>, findings: &mut Findings) {
    let nodes: Vec<&Node> = model
        .stages
        .iter()
        .flat_map(|stage| std::iter::once(stage.node).chain(stage.items.iter().map(|i| i.node)))
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for node in &nodes {
        let word = keyword(node);
        if is_self_consistent(word) {
            if word == word.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for node in &nodes {
        let word = keyword(node);
        let correct = if majority_lower && word != word.to_lowercase() {
            "lowercase"
        } else if !majority_lower && word != word.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        findings.add(
            &CONSISTENT_INSTRUCTION_CASING,
            node.span,
            format!("Command '{word}' should match the case of the command majority ({correct})"),
        );
    }
}

fn from_lines(model: &Model<'_>, findings: &mut Findings) {
    let with_build_args = model.scope_for_from(true);
    let defaults_only = model.scope_for_from(false);
    // UndefinedArgInFrom: names declared as meta-ARGs or automatic, value or not.
    let mut declared: BTreeSet<String> = model.automatic.keys().cloned().collect();
    declared.insert("TARGETSTAGE".to_owned());
    for (_, arg) in &model.meta_args {
        declared.extend(arg.args.iter().map(|d| d.name.clone()));
    }
    let declared_list: Vec<&str> = declared.iter().map(String::as_str).collect();
    for stage in &model.stages {
        let node = stage.node;
        let span = node.span;
        let from_args = &node.args;
        if from_args.len() == 3 {
            let name = &from_args[2];
            if *name != name.to_lowercase() {
                findings.add(
                    &STAGE_NAME_CASING,
                    span,
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
            let from_word = keyword(node);
            let as_word = &from_args[1];
            let matches = if from_word == from_word.to_lowercase() {
                *as_word == as_word.to_lowercase()
            } else if from_word == from_word.to_uppercase() {
                *as_word == as_word.to_uppercase()
            } else {
                true
            };
            if !matches {
                findings.add(
                    &FROM_AS_CASING,
                    span,
                    format!("'{as_word}' and '{from_word}' keywords' casing do not match"),
                );
            }
        }
        let mut words = vec![stage.from.image.as_str()];
        words.extend(stage.from.platform.as_deref());
        for word in words {
            let names = Names(&declared);
            let recorder = Recorder::new(&names);
            let _ = model.expander.expand(word, &recorder);
            for name in recorder.missing.borrow().iter() {
                let mut message = format!("FROM argument '{name}' is not declared");
                if let Some(suggestion) = suggest(name, &declared_list) {
                    message.push_str(&format!(" (did you mean {suggestion}?)"));
                }
                findings.add(&UNDEFINED_ARG_IN_FROM, span, message);
            }
        }
        if stage.from.image.contains('$') && stage.parent.is_none() {
            let image = model
                .expander
                .expand(&stage.from.image, &defaults_only)
                .map(|expansion| expansion.text);
            let is_stage = image.as_ref().is_ok_and(|image| {
                let lower = image.to_lowercase();
                model.stages[..stage.index]
                    .iter()
                    .any(|earlier| earlier.from.name.as_deref() == Some(lower.as_str()))
            });
            if !is_stage && !image.as_deref().is_ok_and(is_valid_reference) {
                findings.add(
                    &INVALID_DEFAULT_ARG_IN_FROM,
                    span,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.from.image
                    ),
                );
            }
        }
        if let Some(platform) = &stage.from.platform {
            let recorder = Recorder::new(&with_build_args);
            let expanded = model
                .expander
                .expand(platform, &recorder)
                .map(|expansion| expansion.text)
                .unwrap_or_default();
            let matched = recorder.matched.borrow();
            let missing = recorder.missing.borrow();
            if matched.len() == 1
                && missing.is_empty()
                && matched.contains("TARGETPLATFORM")
                && with_build_args.get("TARGETPLATFORM") == Some(&expanded)
            {
                findings.add(
                    &REDUNDANT_TARGET_PLATFORM,
                    span,
                    format!(
                        "Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"
                    ),
                );
            }
            if matched.is_empty() && missing.is_empty() {
                if let Ok(parsed) = Platform::parse(&expanded) {
                    let name = stage.from.name.clone().unwrap_or_default();
                    if !name.contains(&parsed.os) && !name.contains(&parsed.architecture) {
                        findings.add(
                            &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                            span,
                            format!(
                                "FROM --platform flag should not use constant value {expanded:?}"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Whether `reference` could name an image (`name[:tag][@digest]`, the distribution
/// reference grammar, lower-case repository path).
pub(crate) fn is_valid_reference(reference: &str) -> bool {
    if reference.is_empty() || reference.chars().any(char::is_whitespace) {
        return false;
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        if algorithm.is_empty() || hex.is_empty() {
            return false;
        }
    }
    let last_slash = name_tag.rfind('/').map_or(0, |at| at + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(at) => (
            &name_tag[..last_slash + at],
            Some(&name_tag[last_slash + at + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|ch: char| ch.is_ascii_alphanumeric() || ch == '_')
            && tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
        if !valid_tag {
            return false;
        }
    }
    let components: Vec<&str> = name.split('/').collect();
    components.iter().enumerate().all(|(index, component)| {
        let is_host = index == 0
            && components.len() > 1
            && (component.contains('.') || component.contains(':') || *component == "localhost");
        if is_host {
            return !component.is_empty()
                && component
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | ':'));
        }
        !component.is_empty()
            && component.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && component.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && component.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::super::CheckOptions;
    use super::super::tests::{fired, fired_with, fires};
    use super::*;

    /// Each rule: a Dockerfile that fires it, and a close one that must not.
    #[rstest::rstest]
    #[case(
        "StageNameCasing",
        "FROM alpine:3 AS Build\nUSER 1\n",
        "FROM alpine:3 AS build\nUSER 1\n"
    )]
    #[case(
        "FromAsCasing",
        "FROM alpine:3 as build\nUSER 1\n",
        "FROM alpine:3 AS build\nUSER 1\n"
    )]
    #[case(
        "FromAsCasing",
        "from alpine:3 AS build\nuser 1\n",
        "from alpine:3 as build\nuser 1\n"
    )]
    #[case(
        "NoEmptyContinuation",
        "FROM alpine:3\nRUN echo a \\\n\n  b\nUSER 1\n",
        "FROM alpine:3\nRUN echo a \\\n  b\nUSER 1\n"
    )]
    #[case(
        "ConsistentInstructionCasing",
        "FROM alpine:3\nRUN true\nrun true\nUSER 1\n",
        "FROM alpine:3\nRUN true\nRUN true\nUSER 1\n"
    )]
    #[case(
        "DuplicateStageName",
        "FROM alpine:3 AS a\nFROM alpine:3 AS a\nUSER 1\n",
        "FROM alpine:3 AS a\nFROM alpine:3 AS b\nUSER 1\n"
    )]
    #[case(
        "ReservedStageName",
        "FROM alpine:3 AS scratch\nUSER 1\n",
        "FROM alpine:3 AS scratches\nUSER 1\n"
    )]
    #[case(
        "JSONArgsRecommended",
        "FROM alpine:3\nUSER 1\nCMD my-app start\n",
        "FROM alpine:3\nUSER 1\nSHELL [\"/bin/sh\", \"-c\"]\nCMD my-app start\n"
    )]
    #[case(
        "JSONArgsRecommended",
        "FROM alpine:3\nUSER 1\nENTRYPOINT my-app start\n",
        "FROM alpine:3\nUSER 1\nENTRYPOINT [\"my-app\", \"start\"]\n"
    )]
    #[case(
        "MaintainerDeprecated",
        "FROM alpine:3\nMAINTAINER me\nUSER 1\n",
        "FROM alpine:3\nLABEL org.opencontainers.image.authors=me\nUSER 1\n"
    )]
    #[case(
        "UndefinedArgInFrom",
        "FROM alpine:$TAG\nUSER 1\n",
        "ARG TAG=3\nFROM alpine:$TAG\nUSER 1\n"
    )]
    #[case(
        "WorkdirRelativePath",
        "FROM alpine:3\nWORKDIR app\nUSER 1\n",
        "FROM alpine:3\nWORKDIR /usr\nWORKDIR app\nUSER 1\n"
    )]
    #[case(
        "UndefinedVar",
        "FROM alpine:3\nCOPY $foo .\nUSER 1\n",
        "FROM alpine:3\nARG foo\nCOPY $foo .\nUSER 1\n"
    )]
    #[case(
        "UndefinedVar",
        "FROM alpine:3\nENV PATH=$PAHT:/app/bin\nUSER 1\n",
        "FROM alpine:3\nENV PATH=$PATH:/app/bin\nUSER 1\n"
    )]
    #[case(
        "MultipleInstructionsDisallowed",
        "FROM alpine:3\nUSER 1\nCMD [\"a\"]\nCMD [\"b\"]\n",
        "FROM alpine:3 AS a\nCMD [\"a\"]\nFROM a\nUSER 1\nCMD [\"b\"]\n"
    )]
    #[case(
        "LegacyKeyValueFormat",
        "FROM alpine:3\nENV key value\nUSER 1\n",
        "FROM alpine:3\nENV key=value\nUSER 1\n"
    )]
    #[case(
        "LegacyKeyValueFormat",
        "FROM alpine:3\nLABEL key value with spaces\nUSER 1\n",
        "FROM alpine:3\nLABEL key=\"value with spaces\"\nUSER 1\n"
    )]
    #[case(
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM alpine:3\nUSER 1\n",
        "FROM --platform=$BUILDPLATFORM alpine:3\nUSER 1\n"
    )]
    #[case(
        "SecretsUsedInArgOrEnv",
        "FROM alpine:3\nARG GITHUB_TOKEN\nUSER 1\n",
        "FROM alpine:3\nARG GITHUB_TOKENS_URL\nUSER 1\n"
    )]
    #[case(
        "SecretsUsedInArgOrEnv",
        "FROM alpine:3\nENV DB_PASSWORD=x\nUSER 1\n",
        "FROM alpine:3\nENV PUBLIC_KEY=x\nUSER 1\n"
    )]
    #[case(
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM busybox:${TAG}\nUSER 1\n",
        "ARG TAG=latest\nFROM busybox:${TAG}\nUSER 1\n"
    )]
    #[case(
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/amd64 alpine:3 AS base\nUSER 1\n",
        "FROM --platform=linux/amd64 alpine:3 AS build_amd64\nUSER 1\n"
    )]
    #[case(
        "InvalidDefinitionDescription",
        "# The version of Go\nARG GO_VERSION=1.22\nFROM alpine:3\nUSER 1\n",
        "# GO_VERSION the version of Go\nARG GO_VERSION=1.22\nFROM alpine:3\nUSER 1\n"
    )]
    #[case(
        "InvalidDefinitionDescription",
        "# compiles the program\nFROM alpine:3 AS build\nUSER 1\n",
        "# compiles the program\n\nFROM alpine:3 AS build\nUSER 1\n"
    )]
    #[case(
        "ExposeProtoCasing",
        "FROM alpine:3\nEXPOSE 80/TCP\nUSER 1\n",
        "FROM alpine:3\nEXPOSE 80/tcp\nUSER 1\n"
    )]
    #[case(
        "ExposeInvalidFormat",
        "FROM alpine:3\nEXPOSE 127.0.0.1:80:80\nUSER 1\n",
        "FROM alpine:3\nEXPOSE 80\nUSER 1\n"
    )]
    #[case(
        "ExposeInvalidFormat",
        "FROM alpine:3\nEXPOSE 80:80\nUSER 1\n",
        "FROM alpine:3\nEXPOSE 80 8080/udp\nUSER 1\n"
    )]
    fn rule_fires_and_close_one_does_not(
        #[case] rule: &str,
        #[case] bad: &str,
        #[case] good: &str,
    ) {
        assert!(
            fires(rule, bad),
            "{rule} should fire on:\n{bad}\n{:?}",
            fired(bad)
        );
        assert!(
            !fires(rule, good),
            "{rule} should not fire on:\n{good}\n{:?}",
            fired(good)
        );
    }

    #[test]
    fn copy_ignored_file_uses_the_dockerignore() {
        let mut options = CheckOptions::new(super::super::tests::amd64());
        options.dockerignore =
            crate::context::Dockerignore::parse(b"secrets/\n*.log\n", ".dockerignore").unwrap();
        let bad = "FROM alpine:3\nCOPY secrets/key.pem /etc/\nUSER 1\n";
        let good = "FROM alpine:3\nCOPY config/app.toml /etc/\nCOPY --from=alpine:3 /secrets/x /x\nUSER 1\n";
        let has = |text: &str| {
            fired_with(text, &options)
                .iter()
                .any(|(rule, _)| *rule == "CopyIgnoredFile")
        };
        assert!(has(bad));
        assert!(!has(good));
    }

    #[test]
    fn messages_match_buildkit() {
        let text = "FROM alpine:3 as Build\nENV PATH=$PAHT:/x\nUSER 1\nCMD [\"a\"]\nCMD [\"b\"]\n";
        let report =
            super::super::check_text(text, &CheckOptions::new(super::super::tests::amd64()))
                .unwrap();
        let messages: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
                "Dockerfile:1: StageNameCasing: Stage name 'Build' should be lowercase",
                "Dockerfile:2: UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?)",
                "Dockerfile:4: MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used",
            ]
        );
    }

    #[test]
    fn references() {
        for valid in [
            "alpine",
            "alpine:3.20",
            "localhost:5000/a/b:1",
            "ghcr.io/x/y@sha256:ab",
            "a_b.c-d",
        ] {
            assert!(is_valid_reference(valid), "{valid}");
        }
        for invalid in ["", "busybox:", "Alpine", "a b", "a:b:c", "-a", "a@sha256"] {
            assert!(!is_valid_reference(invalid), "{invalid}");
        }
    }

    #[test]
    fn undefined_var_sees_args_env_and_parent_stages() {
        let text = "FROM alpine:3 AS base\nARG V=1\nENV E=2\nFROM base\nCOPY $V$E /x\nUSER 1\n";
        assert!(!fires("UndefinedVar", text), "{:?}", fired(text));
        // ENV pairs see the values from before the instruction, as in Docker.
        assert!(fires(
            "UndefinedVar",
            "FROM alpine:3\nENV A=1 B=$A\nUSER 1\n"
        ));
    }
}

//! BuildKit's 21 build checks, under their names, with their conditions and messages
//! (moby/buildkit `frontend/dockerfile/linter/ruleset.go`, `dockerfile2llb/convert.go`,
//! `instructions/parse.go`; documented at `https://docs.docker.com/go/dockerfile/rule/`).
//!
//! Differences, all from checking without pulling base images: a base image's `ENV` is
//! unknown (only `PATH` is assumed, as BuildKit sets it on every image), so `UndefinedVar`
//! may name a variable such an image defines, and `JSONArgsRecommended` assumes the base
//! image sets no `SHELL`. `UndefinedVar` leaves the automatic platform arguments to
//! [`super::multiplatform`]'s `UndeclaredPlatformArg`, which also looks into `RUN`.
//!
//! The files: `rules` names the rules (name, URL, description, fix); this one runs the
//! per-stage rules; `from` the ones about `FROM` lines and instruction casing.

use std::collections::{BTreeMap, BTreeSet};

use super::{Findings, Item, Model, Names, PLATFORM_ARGS, Recorder};
use crate::dockerfile::error::suggest;
use crate::dockerfile::instruction::{Chmod, Source};
use crate::dockerfile::{CommandLine, Instruction, Node};
mod from;
mod rules;

#[cfg(test)]
use from::is_valid_reference;
use from::{casing, from_lines};
pub use rules::*;

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

//! Rules for multi-platform builds, which no builder checks:
//! - `EmulatedCompile`: a compile step (`gcc`, `make`, `go build`, `cargo build`, `javac`,
//!   ...) in a stage that runs under QEMU for a target: a stage runs emulated when its
//!   platform, worked out as the planner does ([`crate::plan::automatic_args`], an expanded
//!   `FROM --platform=...`, else the platform of the stage it is built from, else the
//!   target), is not one the build machine runs natively. (Every stage is looked at, as
//!   BuildKit's checks do, not only those the final stage needs; a full plan would resolve
//!   the Dockerfile once per target, too slow for a check.)
//!   Compiling under emulation is often 5–20 times slower than cross-compiling in a
//!   `FROM --platform=$BUILDPLATFORM` stage.
//! - `UndeclaredPlatformArg`: `$TARGETARCH` (or another automatic platform argument) used
//!   in a stage without `ARG TARGETARCH`: it is empty there, in `RUN` as elsewhere.
//!
//! `FROM --platform=` with a constant is BuildKit's `FromPlatformFlagConstDisallowed`
//! ([`super::buildkit`]).

use std::collections::BTreeSet;

use super::shell::{commands, run_script, subcommand};
use super::{Findings, Model, PLATFORM_ARGS, Rule};
use crate::dockerfile::Instruction;
use crate::plan;
use crate::platform::Platform;

/// A compile step in a stage that runs under emulation.
pub const EMULATED_COMPILE: Rule = Rule {
    name: "EmulatedCompile",
    description: "Compile steps should run natively and cross-compile, not under emulation",
    url: "https://docs.docker.com/build/building/multi-platform/#cross-compilation",
    fix: "build this stage FROM --platform=$BUILDPLATFORM and cross-compile for $TARGETARCH (ARG TARGETARCH; GOARCH=$TARGETARCH go build, cargo build --target, a cross gcc), then COPY --from the result",
    family: super::Family::Multiplatform,
    experimental: false,
};

/// `$TARGETARCH` without `ARG TARGETARCH`.
pub const UNDECLARED_PLATFORM_ARG: Rule = Rule {
    name: "UndeclaredPlatformArg",
    description: "Automatic platform arguments (TARGETARCH, BUILDPLATFORM, ...) must be declared with ARG in the stage that uses them",
    url: "https://docs.docker.com/reference/dockerfile/#automatic-platform-args-in-the-global-scope",
    fix: "add ARG NAME after the stage's FROM",
    family: super::Family::Multiplatform,
    experimental: false,
};

/// Runs the multi-platform rules.
pub(crate) fn run(model: &Model<'_>, findings: &mut Findings) {
    undeclared_platform_args(model, findings);
    emulated_compile(model, findings);
}

fn undeclared_platform_args(model: &Model<'_>, findings: &mut Findings) {
    let mut scopes: Vec<BTreeSet<String>> = Vec::new();
    for stage in &model.stages {
        let mut declared = stage
            .parent
            .and_then(|parent| scopes.get(parent).cloned())
            .unwrap_or_default();
        for item in &stage.items {
            let mut texts: Vec<String> = Vec::new();
            let mut defines: Vec<String> = Vec::new();
            match &item.instruction {
                Instruction::Arg(arg) => {
                    for declaration in &arg.args {
                        texts.extend(declaration.default.clone());
                        defines.push(declaration.name.clone());
                    }
                }
                Instruction::Env(env) => {
                    for kv in &env.variables {
                        texts.push(kv.value.clone());
                        defines.push(kv.key.clone());
                    }
                }
                Instruction::Run(run) => texts.push(run_script(run)),
                Instruction::Onbuild(_) | Instruction::From(_) => {}
                _ => {
                    let original = item.node.original.trim_start();
                    let arguments = original
                        .split_once(char::is_whitespace)
                        .map_or("", |(_, rest)| rest);
                    texts.push(arguments.to_owned());
                    for heredoc in &item.node.heredocs {
                        if heredoc.expand {
                            texts.push(heredoc.content.clone());
                        }
                    }
                }
            }
            let mut reported = BTreeSet::new();
            for text in &texts {
                for name in platform_references(text) {
                    if !declared.contains(name) && reported.insert(name) {
                        findings.add_with_fix(
                            &UNDECLARED_PLATFORM_ARG,
                            item.node.span,
                            format!(
                                "${name} is used without ARG {name} in this stage: it is empty here"
                            ),
                            format!("add ARG {name} after the stage's FROM"),
                        );
                    }
                }
            }
            declared.extend(defines);
        }
        scopes.push(declared);
    }
}

/// The automatic platform arguments `text` refers to (`$TARGETARCH`, `${BUILDOS}`,
/// `${TARGETVARIANT:-v8}`).
fn platform_references(text: &str) -> Vec<&'static str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] != b'$' {
            position += 1;
            continue;
        }
        let mut start = position + 1;
        if bytes.get(start) == Some(&b'{') {
            start += 1;
        }
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if let Some(name) = PLATFORM_ARGS
            .iter()
            .find(|name| **name == &text[start..end])
        {
            if !found.contains(name) {
                found.push(*name);
            }
        }
        position = end.max(position + 1);
    }
    found
}

/// The compile step a simple command runs, named for the message (`go build`), if any.
fn compile_step(command: &[String]) -> Option<String> {
    let program = command.first()?.as_str();
    let sub = subcommand(command, &["-C", "-f", "-j", "-o"]).map(|(_, sub)| sub);
    let named = |text: &str| Some(text.to_owned());
    match (program, sub) {
        (
            "gcc" | "g++" | "cc" | "c++" | "clang" | "clang++" | "rustc" | "javac" | "kotlinc"
            | "scalac" | "ghc" | "gfortran" | "make" | "gmake" | "ninja",
            _,
        ) => named(program),
        ("cmake", _) if command.iter().any(|word| word == "--build") => named("cmake --build"),
        ("go", Some(sub @ ("build" | "install" | "test"))) => named(&format!("go {sub}")),
        ("cargo", Some(sub @ ("build" | "install" | "rustc" | "test"))) => {
            named(&format!("cargo {sub}"))
        }
        ("mvn" | "mvnw", Some(goal @ ("compile" | "package" | "install" | "verify"))) => {
            named(&format!("mvn {goal}"))
        }
        ("gradle" | "gradlew", Some(task @ ("build" | "assemble" | "jar" | "installDist"))) => {
            named(&format!("gradle {task}"))
        }
        ("dotnet", Some(sub @ ("build" | "publish"))) => named(&format!("dotnet {sub}")),
        ("zig", Some(sub @ ("build" | "cc" | "build-exe"))) => named(&format!("zig {sub}")),
        _ => None,
    }
}

/// Whether some stage may run under emulation: a foreign target, or a constant
/// `FROM --platform` the build machine does not run natively.
fn may_emulate(model: &Model<'_>) -> bool {
    let build = &model.options.build_platform;
    model
        .options
        .targets
        .iter()
        .any(|target| !build.is_native_for(target))
        || model.stages.iter().any(|stage| {
            stage.from.platform.as_deref().is_some_and(|value| {
                !value.contains('$')
                    && Platform::parse(value).is_ok_and(|platform| !build.is_native_for(&platform))
            })
        })
}

fn emulated_compile(model: &Model<'_>, findings: &mut Findings) {
    if !may_emulate(model) {
        return;
    }
    let build = &model.options.build_platform;
    // Each stage's platform for each target, as the planner works it out: an expanded
    // `FROM --platform`, else the platform of the stage it is built from, else the target.
    let mut emulated_for: Vec<BTreeSet<Platform>> = vec![BTreeSet::new(); model.stages.len()];
    for target in &model.options.targets {
        let automatic = plan::automatic_args(target, build);
        let scope = model.scope_for_from_with(&automatic, true);
        let mut platforms: Vec<Platform> = Vec::with_capacity(model.stages.len());
        for stage in &model.stages {
            let platform = match &stage.from.platform {
                Some(value) => model
                    .expander
                    .expand(value, &scope)
                    .ok()
                    .and_then(|expansion| Platform::parse(&expansion.text).ok())
                    .unwrap_or_else(|| target.clone()),
                None => stage
                    .parent
                    .and_then(|parent| platforms.get(parent).cloned())
                    .unwrap_or_else(|| target.clone()),
            };
            if !build.is_native_for(&platform) {
                emulated_for[stage.index].insert(platform.clone());
            }
            platforms.push(platform);
        }
    }
    for stage in &model.stages {
        let platforms = &emulated_for[stage.index];
        if platforms.is_empty() {
            continue;
        }
        let label = stage
            .from
            .name
            .as_ref()
            .map_or_else(|| stage.index.to_string(), |name| format!("{name:?}"));
        let platforms: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        for item in &stage.items {
            let Instruction::Run(run) = &item.instruction else {
                continue;
            };
            let mut steps: Vec<String> = Vec::new();
            for command in commands(&run_script(run)) {
                if let Some(step) = compile_step(&command) {
                    if !steps.contains(&step) {
                        steps.push(step);
                    }
                }
            }
            if steps.is_empty() {
                continue;
            }
            findings.add(
                &EMULATED_COMPILE,
                item.node.span,
                format!(
                    "{} runs in stage {label}, under emulation for {} (build machine {build}): compiling under QEMU is often 5-20x slower than cross-compiling natively",
                    steps.join(", "),
                    platforms.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::CheckOptions;
    use super::super::tests::{amd64, fired, fired_with, fires};
    use super::*;

    fn two_platforms() -> CheckOptions {
        let mut options = CheckOptions::new(amd64());
        options.targets = vec![amd64(), Platform::parse("linux/arm64").unwrap()];
        options
    }

    fn fires_multi(rule: &str, text: &str) -> bool {
        fired_with(text, &two_platforms())
            .iter()
            .any(|(name, _)| *name == rule)
    }

    #[test]
    fn compiling_in_an_emulated_stage_fires() {
        let bad = "FROM golang:1.22 AS build\nWORKDIR /src\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN go build -o /app .\nFROM alpine:3\nCOPY --from=build /app /app\nUSER 1\n";
        let good = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nARG TARGETARCH\nWORKDIR /src\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN GOARCH=$TARGETARCH go build -o /app .\nFROM alpine:3\nCOPY --from=build /app /app\nUSER 1\n";
        assert!(
            fires_multi("EmulatedCompile", bad),
            "{:?}",
            fired_with(bad, &two_platforms())
        );
        assert!(
            !fires_multi("EmulatedCompile", good),
            "{:?}",
            fired_with(good, &two_platforms())
        );
        // Built for the build machine only, nothing is emulated.
        assert!(!fires("EmulatedCompile", bad));
        let report = super::super::check_text(bad, &two_platforms()).unwrap();
        let warning = report
            .warnings
            .iter()
            .find(|w| w.rule == "EmulatedCompile")
            .unwrap();
        assert_eq!(warning.line, 6);
        assert!(
            warning.message.contains("linux/arm64"),
            "{}",
            warning.message
        );
        assert!(
            !warning.message.contains("linux/amd64,"),
            "{}",
            warning.message
        );
    }

    #[test]
    fn make_in_a_stage_built_from_an_emulated_stage_fires() {
        let bad = "FROM debian:12 AS base\nFROM base AS build\nRUN make -j4\nFROM base\nCOPY --from=build /out /out\nUSER 1\n";
        let good = "FROM debian:12 AS base\nFROM base AS build\nRUN echo make\nFROM base\nCOPY --from=build /out /out\nUSER 1\n";
        assert!(fires_multi("EmulatedCompile", bad));
        assert!(!fires_multi("EmulatedCompile", good));
    }

    #[rstest::rstest]
    #[case(
        "FROM alpine:3\nRUN echo building for $TARGETARCH\nUSER 1\n",
        "FROM alpine:3\nARG TARGETARCH\nRUN echo building for $TARGETARCH\nUSER 1\n"
    )]
    #[case(
        "FROM alpine:3\nCOPY bin/app-${TARGETARCH} /app\nUSER 1\n",
        "FROM alpine:3 AS base\nARG TARGETARCH\nFROM base\nCOPY bin/app-${TARGETARCH} /app\nUSER 1\n"
    )]
    #[case(
        "ARG TARGETPLATFORM\nFROM alpine:3\nRUN echo $TARGETPLATFORM\nUSER 1\n",
        "FROM --platform=$BUILDPLATFORM alpine:3\nARG TARGETPLATFORM\nRUN echo $TARGETPLATFORM\nUSER 1\n"
    )]
    fn platform_args_need_an_arg(#[case] bad: &str, #[case] good: &str) {
        assert!(fires("UndeclaredPlatformArg", bad), "{:?}", fired(bad));
        assert!(!fires("UndeclaredPlatformArg", good), "{:?}", fired(good));
    }

    #[test]
    fn references_are_found() {
        assert_eq!(
            platform_references("a $TARGETARCH ${BUILDOS:-x} $TARGETARCHX $HOME"),
            ["TARGETARCH", "BUILDOS"]
        );
    }
}

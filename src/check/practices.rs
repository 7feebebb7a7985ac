//! Dockerfile best practices that no builder checks (Docker's "Building best practices",
//! `https://docs.docker.com/build/building/best-practices/`): what keeps a build
//! reproducible (no lone `apt-get update`, no `apt-get upgrade`, pinned base images), small
//! (package caches removed in the layer that made them, no recommended packages) and fast
//! (dependency manifests copied and installed before the sources), and what keeps the
//! result safe to run (a `USER` in the final stage).
//!
//! `RUN` scripts are read with [`super::shell`]: simple commands, quotes removed, no
//! expansion.

use std::collections::BTreeSet;

use super::shell::{commands, run_script, subcommand};
use super::{Findings, Model, Rule};
use crate::dockerfile::instruction::{Run, Source};
use crate::dockerfile::mount::MountType;
use crate::dockerfile::{Instruction, Span};

const fn rule(
    name: &'static str,
    url: &'static str,
    description: &'static str,
    fix: &'static str,
) -> Rule {
    Rule {
        name,
        description,
        url,
        fix,
        family: super::Family::Practice,
        experimental: false,
    }
}

/// `RUN apt-get update` with no install in the same `RUN`.
pub const LONE_APT_GET_UPDATE: Rule = rule(
    "LoneAptGetUpdate",
    "https://docs.docker.com/build/building/best-practices/#apt-get",
    "Package index updates belong in the RUN that installs: a cached update goes stale",
    "RUN apt-get update && apt-get install -y --no-install-recommends PACKAGES && rm -rf /var/lib/apt/lists/*",
);
/// `apt-get upgrade`, `dist-upgrade`, `apk upgrade`, `dnf upgrade`.
pub const PACKAGE_UPGRADE: Rule = rule(
    "PackageUpgrade",
    "https://docs.docker.com/build/building/best-practices/#apt-get",
    "Upgrading all packages in a cached layer never upgrades again and makes the image depend on the build day",
    "use a newer base image tag (and rebuild with --pull) instead of upgrading in the Dockerfile",
);
/// `apt-get install` without removing `/var/lib/apt/lists` in the same `RUN`, `apk add`
/// without `--no-cache`, `dnf install` without `dnf clean all`.
pub const PACKAGE_CACHE_NOT_CLEANED: Rule = rule(
    "PackageCacheNotCleaned",
    "https://docs.docker.com/build/building/best-practices/#apt-get",
    "Package manager caches must be removed in the RUN that fills them, or they stay in the image",
    "clean up in the same RUN (rm -rf /var/lib/apt/lists/*, apk add --no-cache, dnf clean all), or use RUN --mount=type=cache",
);
/// `apt-get install` without `-y` or without `--no-install-recommends`.
pub const APT_GET_INSTALL_FLAGS: Rule = rule(
    "AptGetInstallFlags",
    "https://docs.docker.com/build/building/best-practices/#apt-get",
    "apt-get install needs -y (no prompt in a build) and --no-install-recommends (no unasked-for packages)",
    "apt-get install -y --no-install-recommends PACKAGES",
);
/// A dependency install after `COPY . .`.
pub const COPY_ALL_BEFORE_DEPENDENCY_INSTALL: Rule = rule(
    "CopyAllBeforeDependencyInstall",
    "https://docs.docker.com/build/cache/optimize/#order-your-layers",
    "Dependencies should be installed from their manifest before the sources are copied, so a source edit keeps the dependency layer cached",
    "COPY the dependency manifest first, install, then COPY . .",
);
/// `FROM debian` or `FROM debian:latest`.
pub const UNTAGGED_BASE_IMAGE: Rule = rule(
    "UntaggedBaseImage",
    "https://docs.docker.com/build/building/best-practices/#pin-base-image-versions",
    "Base images should be pinned to a version tag or digest, not latest",
    "pin a version (FROM debian:bookworm-20240812, or @sha256:...)",
);
/// `ADD` of local files that are not archives.
pub const ADD_INSTEAD_OF_COPY: Rule = rule(
    "AddInsteadOfCopy",
    "https://docs.docker.com/build/building/best-practices/#add-or-copy",
    "COPY should be used for local files: ADD also downloads and extracts, which is surprising",
    "use COPY; keep ADD for URLs, git repositories and local tar archives to extract",
);
/// The final stage has no `USER` (or `USER root`).
pub const NO_USER_IN_FINAL_STAGE: Rule = rule(
    "NoUserInFinalStage",
    "https://docs.docker.com/build/building/best-practices/#user",
    "The final stage should run as a non-root user",
    "add USER with a non-root user (a numeric uid such as USER 65532 needs no /etc/passwd)",
);

/// Runs the practice rules.
pub(crate) fn run(model: &Model<'_>, findings: &mut Findings) {
    let mut states: Vec<StageState> = Vec::new();
    for stage in &model.stages {
        let mut state = stage
            .parent
            .and_then(|parent| states.get(parent).cloned())
            .unwrap_or_default();
        if stage.parent.is_none() {
            base_image(model, stage.index, findings);
        }
        for item in &stage.items {
            let span = item.node.span;
            match &item.instruction {
                Instruction::Run(run) => {
                    let script = run_script(run);
                    let commands = commands(&script);
                    packages(run, &commands, span, findings);
                    dependencies(&commands, &mut state, span, findings);
                }
                Instruction::Copy(copy)
                    if copy.from.is_none()
                        && copies_everything(&copy.sources)
                        && state.copied_all.is_none() =>
                {
                    state.copied_all = Some(span.start);
                }
                Instruction::Add(add) => {
                    if copies_everything(&add.sources) && state.copied_all.is_none() {
                        state.copied_all = Some(span.start);
                    }
                    add_instead_of_copy(add, span, findings);
                }
                Instruction::User(user) => state.user = Some((user.user.clone(), span)),
                _ => {}
            }
        }
        states.push(state);
    }
    let last = model.final_stage();
    let final_node = model.stages[last].node;
    match states.get(last).and_then(|state| state.user.clone()) {
        None => findings.add(
            &NO_USER_IN_FINAL_STAGE,
            final_node.span,
            "the final stage sets no USER: the container runs as root (unless the base image sets a user)",
        ),
        Some((user, span)) => {
            let name = user.split(':').next().unwrap_or_default();
            if name == "root" || name == "0" {
                findings.add(
                    &NO_USER_IN_FINAL_STAGE,
                    span,
                    format!("USER {user} in the final stage: the container runs as root"),
                );
            }
        }
    }
}

/// What a stage hands to a stage built `FROM` it.
#[derive(Debug, Clone, Default)]
struct StageState {
    /// The line of the first `COPY . .`.
    copied_all: Option<usize>,
    /// Ecosystems whose dependencies were installed before `copied_all`.
    installed: BTreeSet<&'static str>,
    /// The last `USER`.
    user: Option<(String, Span)>,
}

/// `COPY . .`, `COPY ./ /app`, `COPY * ./`: the whole context.
fn copies_everything(sources: &[Source]) -> bool {
    sources.iter().any(|source| {
        matches!(source, Source::Path(path)
            if matches!(path.as_str(), "." | "./" | "*" | "./*" | "/" | "/."))
    })
}

fn base_image(model: &Model<'_>, index: usize, findings: &mut Findings) {
    let stage = &model.stages[index];
    let name = &stage.base_name;
    if name.is_empty() || name.contains('$') || name.eq_ignore_ascii_case("scratch") {
        return;
    }
    if name.contains('@') {
        return;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let written = &stage.from.image;
    match last.split_once(':').map(|(_, tag)| tag) {
        Some("latest") => findings.add(
            &UNTAGGED_BASE_IMAGE,
            stage.node.span,
            format!(
                "FROM {written} uses the tag latest: the base changes under you and rebuilds are not reproducible"
            ),
        ),
        Some(_) => {}
        None => findings.add(
            &UNTAGGED_BASE_IMAGE,
            stage.node.span,
            format!(
                "FROM {written} has no tag (it means :latest): the base changes under you and rebuilds are not reproducible"
            ),
        ),
    }
}

fn add_instead_of_copy(
    add: &crate::dockerfile::instruction::Add,
    span: Span,
    findings: &mut Findings,
) {
    if add.checksum.is_some() || add.keep_git_dir || add.unpack == Some(true) {
        return;
    }
    let mut local = Vec::new();
    for source in &add.sources {
        match source {
            Source::Path(path) => {
                let lower = path.to_lowercase();
                let is_remote = lower.contains("://") || lower.starts_with("git@");
                let is_archive = [
                    ".tar", ".tgz", ".tbz", ".tbz2", ".txz", ".tzst", ".tar.gz", ".tar.bz2",
                    ".tar.xz", ".tar.zst",
                ]
                .iter()
                .any(|extension| lower.ends_with(extension))
                    || lower.contains(".tar.");
                if is_remote || is_archive || path.contains('$') || path.contains('*') {
                    return;
                }
                local.push(path.clone());
            }
            Source::Inline(heredoc) => local.push(format!("<<{}", heredoc.name)),
        }
    }
    if local.is_empty() {
        return;
    }
    findings.add(
        &ADD_INSTEAD_OF_COPY,
        span,
        format!(
            "ADD {} copies local files that are not archives: COPY does that, without ADD's downloading and extracting",
            local.join(" ")
        ),
    );
}

/// The package manager and its subcommand of a simple command (`apt-get install`).
fn package_command(command: &[String]) -> Option<(&'static str, String)> {
    let program = command.first()?.as_str();
    let manager = match program {
        "apt-get" | "apt" | "aptitude" => "apt",
        "apk" => "apk",
        "dnf" | "yum" | "microdnf" | "tdnf" => "dnf",
        "zypper" => "zypper",
        _ => return None,
    };
    let (_, sub) = subcommand(command, &["-o", "-c", "-t", "-X", "--repository", "-R"])?;
    Some((manager, sub.to_owned()))
}

fn packages(run: &Run, commands: &[Vec<String>], span: Span, findings: &mut Findings) {
    let cache_mounted = |prefixes: &[&str]| {
        run.mounts.iter().any(|mount| {
            mount.kind == MountType::Cache
                && mount
                    .target
                    .as_deref()
                    .is_some_and(|target| prefixes.iter().any(|prefix| target.starts_with(prefix)))
        })
    };
    let removes = |prefixes: &[&str]| {
        commands.iter().any(|command| {
            command.first().is_some_and(|program| program == "rm")
                && command[1..]
                    .iter()
                    .any(|arg| prefixes.iter().any(|prefix| arg.starts_with(prefix)))
        })
    };
    let parsed: Vec<(&'static str, String, &Vec<String>)> = commands
        .iter()
        .filter_map(|command| package_command(command).map(|(m, s)| (m, s, command)))
        .collect();
    let has = |manager: &str, subs: &[&str]| {
        parsed
            .iter()
            .any(|(m, sub, _)| *m == manager && subs.contains(&sub.as_str()))
    };
    for (manager, sub, command) in &parsed {
        let program = &command[0];
        match (*manager, sub.as_str()) {
            ("apt", "update") | ("apk", "update")
                if !has(
                    manager,
                    &["install", "add", "upgrade", "dist-upgrade", "full-upgrade"],
                ) =>
            {
                findings.add(
                    &LONE_APT_GET_UPDATE,
                    span,
                    format!(
                        "`{program} update` without an install in the same RUN: its cached layer goes stale, and a later install fails or gets old versions"
                    ),
                );
            }
            ("apt", "upgrade" | "dist-upgrade" | "full-upgrade")
            | ("apk", "upgrade")
            | ("dnf", "upgrade" | "update" | "distro-sync" | "upgrade-minimal")
            | ("zypper", "up" | "update" | "dup" | "dist-upgrade") => {
                findings.add(
                    &PACKAGE_UPGRADE,
                    span,
                    format!(
                        "`{program} {sub}` in a cached layer: it never upgrades again once cached, and the image depends on the day it was built"
                    ),
                );
            }
            ("apt", "install" | "reinstall") => {
                if program != "aptitude" {
                    apt_install_flags(program, command, span, findings);
                }
                let lists = ["/var/lib/apt/lists"];
                if !removes(&lists) && !cache_mounted(&["/var/lib/apt", "/var/cache/apt"]) {
                    findings.add_with_fix(
                        &PACKAGE_CACHE_NOT_CLEANED,
                        span,
                        format!(
                            "`{program} {sub}` without `rm -rf /var/lib/apt/lists/*` in the same RUN: the package lists stay in the layer (a later RUN that deletes them does not shrink the image)"
                        ),
                        "end the RUN with && rm -rf /var/lib/apt/lists/* (or mount a cache on /var/lib/apt/lists)",
                    );
                }
            }
            ("apk", "add") => {
                let no_cache = command.iter().any(|word| word == "--no-cache");
                if !no_cache
                    && !removes(&["/var/cache/apk"])
                    && !cache_mounted(&["/var/cache/apk", "/etc/apk/cache"])
                {
                    findings.add_with_fix(
                        &PACKAGE_CACHE_NOT_CLEANED,
                        span,
                        "`apk add` without `--no-cache`: the package index stays in the layer",
                        "apk add --no-cache PACKAGES",
                    );
                }
            }
            ("dnf", "install" | "groupinstall" | "reinstall") => {
                let cleaned = has("dnf", &["clean"]);
                if !cleaned
                    && !removes(&["/var/cache/dnf", "/var/cache/yum"])
                    && !cache_mounted(&["/var/cache/dnf", "/var/cache/yum"])
                {
                    findings.add_with_fix(
                        &PACKAGE_CACHE_NOT_CLEANED,
                        span,
                        format!(
                            "`{program} {sub}` without `{program} clean all` in the same RUN: the package cache stays in the layer"
                        ),
                        format!("end the RUN with && {program} clean all"),
                    );
                }
            }
            _ => {}
        }
    }
}

fn apt_install_flags(program: &str, command: &[String], span: Span, findings: &mut Findings) {
    let assume_yes = command.iter().any(|word| {
        matches!(word.as_str(), "--yes" | "--assume-yes" | "--force-yes")
            || (word.starts_with('-')
                && !word.starts_with("--")
                && word[1..].chars().all(|ch| ch.is_ascii_alphabetic())
                && word.contains('y'))
            || word.to_lowercase().contains("assume-yes=")
    });
    let no_recommends = command
        .iter()
        .any(|word| word == "--no-install-recommends" || word.contains("Install-Recommends"));
    let missing: Vec<&str> = [
        (!assume_yes).then_some("-y"),
        (!no_recommends).then_some("--no-install-recommends"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return;
    }
    let why = if assume_yes {
        "recommended packages make the image bigger than asked"
    } else if no_recommends {
        "without -y the build stops at the confirmation prompt"
    } else {
        "without -y the build stops at the confirmation prompt, and recommended packages make the image bigger than asked"
    };
    findings.add(
        &APT_GET_INSTALL_FLAGS,
        span,
        format!(
            "`{program} install` without {}: {why}",
            missing.join(" and ")
        ),
    );
}

/// An ecosystem's dependency step in a simple command: `(ecosystem, what it runs, fix)`.
/// `fetch_only` is true for commands that only fetch dependencies (the step to run before
/// copying the sources).
struct DependencyStep {
    ecosystem: &'static str,
    fetch_only: bool,
    manifest: &'static str,
    install: &'static str,
}

fn dependency_step(command: &[String]) -> Option<DependencyStep> {
    let program = command.first()?.as_str();
    let sub = subcommand(command, &[]).map(|(_, sub)| sub);
    let positional: Vec<&str> = command[1..]
        .iter()
        .map(String::as_str)
        .filter(|word| !word.starts_with('-'))
        .collect();
    let step = |ecosystem, fetch_only, manifest, install| {
        Some(DependencyStep {
            ecosystem,
            fetch_only,
            manifest,
            install,
        })
    };
    let js = "package.json package-lock.json (or yarn.lock, pnpm-lock.yaml)";
    match (program, sub) {
        ("npm", Some("ci")) => step("npm", true, js, "npm ci"),
        ("npm", Some("install" | "i")) if positional.len() == 1 => step("npm", true, js, "npm ci"),
        ("yarn", None) | ("yarn", Some("install")) => {
            step("npm", true, js, "yarn install --frozen-lockfile")
        }
        ("pnpm", Some("install" | "i")) if positional.len() == 1 => {
            step("npm", true, js, "pnpm install --frozen-lockfile")
        }
        ("pip" | "pip3", Some("install")) => {
            let from_manifest = command.iter().any(|word| {
                word == "-r" || word.starts_with("--requirement") || word.starts_with("-r")
            }) || positional
                .iter()
                .skip(1)
                .any(|word| *word == "." || word.starts_with("./"));
            if !from_manifest {
                return None;
            }
            step(
                "pip",
                positional
                    .iter()
                    .skip(1)
                    .all(|word| *word != "." && !word.starts_with("./")),
                "requirements.txt",
                "pip install -r requirements.txt",
            )
        }
        ("pipenv", Some("install" | "sync")) => step(
            "pip",
            true,
            "Pipfile Pipfile.lock",
            "pipenv install --deploy",
        ),
        ("poetry", Some("install")) => step(
            "poetry",
            true,
            "pyproject.toml poetry.lock",
            "poetry install --no-root",
        ),
        ("uv", Some("sync")) => step(
            "pip",
            true,
            "pyproject.toml uv.lock",
            "uv sync --no-install-project",
        ),
        ("bundle" | "bundler", Some("install")) => {
            step("bundle", true, "Gemfile Gemfile.lock", "bundle install")
        }
        ("composer", Some("install")) => step(
            "composer",
            true,
            "composer.json composer.lock",
            "composer install --no-scripts",
        ),
        ("go", Some("mod")) if command.iter().any(|word| word == "download") => {
            step("go", true, "go.mod go.sum", "go mod download")
        }
        ("go", Some("build" | "install")) if !command.iter().any(|word| word.contains('@')) => {
            step("go", false, "go.mod go.sum", "go mod download")
        }
        ("cargo", Some("fetch")) => step("cargo", true, "Cargo.toml Cargo.lock", "cargo fetch"),
        ("cargo", Some("build" | "install")) => {
            step("cargo", false, "Cargo.toml Cargo.lock", "cargo fetch")
        }
        ("mvn" | "mvnw", Some(goal)) if goal.starts_with("dependency:") => {
            step("maven", true, "pom.xml", "mvn dependency:go-offline")
        }
        ("mvn" | "mvnw", Some(_)) => step("maven", false, "pom.xml", "mvn dependency:go-offline"),
        ("gradle" | "gradlew", Some("dependencies")) => step(
            "gradle",
            true,
            "build.gradle settings.gradle (and gradle/)",
            "gradle dependencies",
        ),
        ("gradle" | "gradlew", Some(_)) => step(
            "gradle",
            false,
            "build.gradle settings.gradle (and gradle/)",
            "gradle dependencies",
        ),
        _ => None,
    }
}

fn dependencies(
    commands: &[Vec<String>],
    state: &mut StageState,
    span: Span,
    findings: &mut Findings,
) {
    let mut reported = BTreeSet::new();
    for command in commands {
        let Some(step) = dependency_step(command) else {
            continue;
        };
        match state.copied_all {
            None => {
                if step.fetch_only {
                    state.installed.insert(step.ecosystem);
                }
            }
            Some(line) => {
                if state.installed.contains(step.ecosystem) || !reported.insert(step.ecosystem) {
                    continue;
                }
                findings.add_with_fix(
                    &COPY_ALL_BEFORE_DEPENDENCY_INSTALL,
                    span,
                    format!(
                        "`{}` runs after the whole context was copied (line {line}): any source edit throws away this dependency layer",
                        command.join(" ")
                    ),
                    format!(
                        "COPY {} ./ first, RUN {}, and COPY . . after it",
                        step.manifest, step.install
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fired, fires};

    #[rstest::rstest]
    #[case(
        "LoneAptGetUpdate",
        "FROM debian:12\nRUN apt-get update\nRUN apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n",
        "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )]
    #[case(
        "LoneAptGetUpdate",
        "FROM alpine:3\nRUN apk update\nUSER 1\n",
        "FROM alpine:3\nRUN apk add --no-cache curl\nUSER 1\n"
    )]
    #[case(
        "PackageUpgrade",
        "FROM debian:12\nRUN apt-get update && apt-get -y dist-upgrade && rm -rf /var/lib/apt/lists/*\nUSER 1\n",
        "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )]
    #[case(
        "PackageUpgrade",
        "FROM fedora:40\nRUN dnf -y upgrade && dnf clean all\nUSER 1\n",
        "FROM fedora:40\nRUN dnf -y install gcc && dnf clean all\nUSER 1\n"
    )]
    #[case(
        "PackageCacheNotCleaned",
        "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl\nRUN rm -rf /var/lib/apt/lists/*\nUSER 1\n",
        "FROM debian:12\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends curl \\\n && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )]
    #[case(
        "PackageCacheNotCleaned",
        "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl\nUSER 1\n",
        "FROM debian:12\nRUN --mount=type=cache,target=/var/lib/apt/lists apt-get update && apt-get install -y --no-install-recommends curl\nUSER 1\n"
    )]
    #[case(
        "PackageCacheNotCleaned",
        "FROM alpine:3\nRUN apk add curl\nUSER 1\n",
        "FROM alpine:3\nRUN apk --no-cache add curl\nUSER 1\n"
    )]
    #[case(
        "PackageCacheNotCleaned",
        "FROM fedora:40\nRUN dnf -y install gcc\nUSER 1\n",
        "FROM fedora:40\nRUN dnf -y install gcc && dnf clean all\nUSER 1\n"
    )]
    #[case(
        "AptGetInstallFlags",
        "FROM debian:12\nRUN apt-get update && apt-get install curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n",
        "FROM debian:12\nRUN apt-get update && apt-get -qy install --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )]
    #[case(
        "AptGetInstallFlags",
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n",
        "FROM debian:12\nRUN apt-get update && apt-get install --yes -o APT::Install-Recommends=false curl && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM node:20\nWORKDIR /app\nCOPY . .\nRUN npm ci\nUSER 1\n",
        "FROM node:20\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci\nCOPY . .\nRUN npm run build\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM python:3.12\nWORKDIR /app\nCOPY . .\nRUN pip install --no-cache-dir -r requirements.txt\nUSER 1\n",
        "FROM python:3.12\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM golang:1.22 AS build\nWORKDIR /src\nCOPY . .\nRUN go build -o /app .\nFROM build\nUSER 1\n",
        "FROM golang:1.22 AS build\nWORKDIR /src\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN go build -o /app .\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM ruby:3.3\nCOPY . .\nRUN bundle install\nUSER 1\n",
        "FROM ruby:3.3\nCOPY Gemfile Gemfile.lock ./\nRUN bundle install\nCOPY . .\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM maven:3 AS build\nCOPY . .\nRUN mvn -B package\nFROM build\nUSER 1\n",
        "FROM maven:3 AS build\nCOPY pom.xml .\nRUN mvn -B dependency:go-offline\nCOPY . .\nRUN mvn -B package\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM rust:1 AS build\nCOPY . .\nRUN cargo build --release\nUSER 1\n",
        "FROM rust:1 AS build\nCOPY Cargo.toml Cargo.lock ./\nRUN cargo fetch\nCOPY . .\nRUN cargo build --release\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM python:3.12\nCOPY . .\nRUN poetry install\nUSER 1\n",
        "FROM python:3.12\nCOPY pyproject.toml poetry.lock ./\nRUN poetry install --no-root\nCOPY . .\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM node:20\nCOPY . .\nRUN yarn install --frozen-lockfile\nUSER 1\n",
        "FROM node:20\nCOPY . .\nRUN yarn add left-pad\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM gradle:8\nCOPY . .\nRUN gradle build\nUSER 1\n",
        "FROM gradle:8\nCOPY build.gradle settings.gradle ./\nRUN gradle dependencies\nCOPY . .\nRUN gradle build\nUSER 1\n"
    )]
    #[case(
        "CopyAllBeforeDependencyInstall",
        "FROM node:20\nCOPY . .\nRUN pnpm install\nUSER 1\n",
        "FROM node:20\nCOPY . .\nRUN pnpm install -g typescript\nUSER 1\n"
    )]
    #[case(
        "UntaggedBaseImage",
        "FROM debian\nUSER 1\n",
        "FROM debian:12\nUSER 1\n"
    )]
    #[case(
        "UntaggedBaseImage",
        "FROM registry:5000/team/app:latest\nUSER 1\n",
        "FROM registry:5000/team/app@sha256:0123\nUSER 1\n"
    )]
    #[case(
        "UntaggedBaseImage",
        "ARG BASE=alpine\nFROM $BASE\nUSER 1\n",
        "ARG BASE=alpine:3\nFROM $BASE AS base\nFROM base\nUSER 1\n"
    )]
    #[case(
        "AddInsteadOfCopy",
        "FROM alpine:3\nADD config.json /etc/app/\nUSER 1\n",
        "FROM alpine:3\nADD rootfs.tar.gz /\nADD https://example.com/x.txt /x\nCOPY config.json /etc/app/\nUSER 1\n"
    )]
    #[case(
        "NoUserInFinalStage",
        "FROM alpine:3 AS build\nUSER 1000\nFROM alpine:3\nCOPY --from=build /x /x\n",
        "FROM alpine:3 AS build\nFROM alpine:3\nCOPY --from=build /x /x\nUSER 1000\n"
    )]
    #[case(
        "NoUserInFinalStage",
        "FROM alpine:3\nUSER 1000\nUSER root\n",
        "FROM alpine:3 AS base\nUSER 1000\nFROM base\nCMD [\"id\"]\n"
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
    fn heredoc_scripts_are_read() {
        let text = "FROM debian:12\nRUN <<EOF\nset -e\napt-get update\napt-get install -y curl\nEOF\nUSER 1\n";
        let found = fired(text);
        assert!(found.contains(&("AptGetInstallFlags", 2)), "{found:?}");
        assert!(found.contains(&("PackageCacheNotCleaned", 2)), "{found:?}");
        assert!(!found.iter().any(|(rule, _)| *rule == "LoneAptGetUpdate"));
    }
}

//! `xbuild check`: rules that teach what makes an image reproducible, small and fast to
//! build, run on a parsed Dockerfile before (or instead of) a build.
//!
//! Three families, each rule with a stable name, a description, a URL and a short fix:
//! - [`buildkit`]: BuildKit's 21 build checks (`docker build --check`), under their names,
//!   conditions and messages (moby/buildkit `frontend/dockerfile/linter`,
//!   `docs/rules/*.md`). `CopyIgnoredFile` and `InvalidDefinitionDescription` are
//!   experimental there and here: they run only with `# check=experimental=...`.
//! - [`practices`]: Docker's best practices no builder checks: a lone `apt-get update`,
//!   `apt-get upgrade`, package caches left in the layer, `apt-get install` without `-y` or
//!   `--no-install-recommends`, dependency installs after `COPY . .`, untagged base images,
//!   `ADD` where `COPY` does, no `USER` in the final stage.
//! - [`multiplatform`]: compile steps that will run under emulation, and the platform
//!   arguments used without `ARG`.
//!
//! The `# check=skip=Rule1,Rule2;error=true;experimental=all` directive is honoured as
//! BuildKit reads it (`--build-arg BUILDKIT_DOCKERFILE_CHECK=...` overrides it).
//!
//! Pure apart from what the caller hands in: the `.dockerignore` (for `CopyIgnoredFile`),
//! the target platforms and the build platform. Base images are not pulled, so variables set
//! by a base image's `ENV` are unknown here (`PATH` excepted, which every image has).

pub mod buildkit;
pub mod multiplatform;
pub mod practices;
mod shell;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::context::Dockerignore;
use crate::dockerfile::expand::{Expander, Variables};
use crate::dockerfile::instruction::{Arg, From};
use crate::dockerfile::{Dockerfile, DockerfileError, Instruction, Node, Span};
use crate::platform::Platform;

/// The family a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// One of BuildKit's build checks.
    Buildkit,
    /// A Dockerfile best practice.
    Practice,
    /// A multi-platform build rule.
    Multiplatform,
}

/// A rule: what it checks, where it is documented, how to fix what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The stable name (`StageNameCasing`, `LoneAptGetUpdate`), used by `# check=skip=`.
    pub name: &'static str,
    /// One sentence: what the rule wants.
    pub description: &'static str,
    /// Where the rule is explained.
    pub url: &'static str,
    /// A short fix, printed under each warning.
    pub fix: &'static str,
    /// Its family.
    pub family: Family,
    /// Runs only when enabled with `# check=experimental=NAME` (or `all`), as in BuildKit.
    pub experimental: bool,
}

/// Every rule, BuildKit's first (in the order of its documentation), then ours.
pub const RULES: &[&Rule] = &[
    &buildkit::STAGE_NAME_CASING,
    &buildkit::FROM_AS_CASING,
    &buildkit::NO_EMPTY_CONTINUATION,
    &buildkit::CONSISTENT_INSTRUCTION_CASING,
    &buildkit::DUPLICATE_STAGE_NAME,
    &buildkit::RESERVED_STAGE_NAME,
    &buildkit::JSON_ARGS_RECOMMENDED,
    &buildkit::MAINTAINER_DEPRECATED,
    &buildkit::UNDEFINED_ARG_IN_FROM,
    &buildkit::WORKDIR_RELATIVE_PATH,
    &buildkit::UNDEFINED_VAR,
    &buildkit::MULTIPLE_INSTRUCTIONS_DISALLOWED,
    &buildkit::LEGACY_KEY_VALUE_FORMAT,
    &buildkit::REDUNDANT_TARGET_PLATFORM,
    &buildkit::SECRETS_USED_IN_ARG_OR_ENV,
    &buildkit::INVALID_DEFAULT_ARG_IN_FROM,
    &buildkit::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    &buildkit::COPY_IGNORED_FILE,
    &buildkit::INVALID_DEFINITION_DESCRIPTION,
    &buildkit::EXPOSE_PROTO_CASING,
    &buildkit::EXPOSE_INVALID_FORMAT,
    &practices::LONE_APT_GET_UPDATE,
    &practices::PACKAGE_UPGRADE,
    &practices::PACKAGE_CACHE_NOT_CLEANED,
    &practices::APT_GET_INSTALL_FLAGS,
    &practices::COPY_ALL_BEFORE_DEPENDENCY_INSTALL,
    &practices::UNTAGGED_BASE_IMAGE,
    &practices::ADD_INSTEAD_OF_COPY,
    &practices::NO_USER_IN_FINAL_STAGE,
    &multiplatform::EMULATED_COMPILE,
    &multiplatform::UNDECLARED_PLATFORM_ARG,
];

/// The rule called `name`, if there is one.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().copied().find(|rule| rule.name == name)
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The rule's name.
    pub rule: &'static str,
    /// The rule's description.
    pub description: &'static str,
    /// Where the rule is explained.
    pub url: &'static str,
    /// What was found, naming the instruction or value.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// The Dockerfile, as the user named it.
    pub file: String,
    /// The first line of the instruction concerned (1-based).
    pub line: usize,
    /// Its last line.
    pub end_line: usize,
}

impl std::fmt::Display for Warning {
    /// `Dockerfile:LINE: RuleName: message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.rule, self.message
        )
    }
}

/// The `# check=` configuration (BuildKit's `linter.ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=Rule1,Rule2`.
    pub skip: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=Rule1,Rule2`.
    pub experimental: Vec<String>,
    /// `error=true`: a warning fails the build (before it starts).
    pub error: bool,
}

impl CheckConfig {
    /// Reads `skip=...;error=...;experimental=...` (at most three parts, as BuildKit).
    ///
    /// # Errors
    /// A part without `=`, an unknown key, an `error=` value that is not a boolean.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut config = Self::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            let value = value.trim();
            let list = || -> Vec<String> {
                value
                    .split(',')
                    .map(|rule| rule.trim().to_owned())
                    .collect()
            };
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config.skip = list(),
                "experimental" if value == "all" => config.experimental_all = true,
                "experimental" => config.experimental = list(),
                "error" => {
                    config.error = crate::gostd::parse_bool(value)
                        .ok_or_else(|| format!("invalid boolean {value:?} in {part:?}"))?;
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(config)
    }

    /// Whether `rule` runs under this configuration.
    pub fn enables(&self, rule: &Rule) -> bool {
        if rule.experimental
            && !self.experimental_all
            && !self.experimental.iter().any(|name| name == rule.name)
        {
            return false;
        }
        !self.skip_all && !self.skip.iter().any(|name| name == rule.name)
    }
}

/// The build argument that overrides the `# check=` directive, as in BuildKit.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What to check for.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How the Dockerfile is named in warnings.
    pub file: String,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// Target platforms (at least one; the first gives the automatic arguments).
    pub targets: Vec<Platform>,
    /// The platform of this machine.
    pub build_platform: Platform,
    /// `--target`: the final stage (default: the last).
    pub target_stage: Option<String>,
    /// The `.dockerignore` that applies (for `CopyIgnoredFile`).
    pub dockerignore: Dockerignore,
}

impl CheckOptions {
    /// Options for a `Dockerfile` built for `platform` on itself, no build arguments, no
    /// `.dockerignore`.
    pub fn new(platform: Platform) -> Self {
        Self {
            file: "Dockerfile".to_owned(),
            build_args: BTreeMap::new(),
            targets: vec![platform.clone()],
            build_platform: platform,
            target_stage: None,
            dockerignore: Dockerignore::empty(),
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The Dockerfile, as named in warnings.
    pub file: String,
    /// What the enabled rules found, by line.
    pub warnings: Vec<Warning>,
    /// The `# check=` configuration in effect.
    pub config: CheckConfig,
}

impl Report {
    /// The names of the rules that fired, sorted, once each.
    pub fn rules_fired(&self) -> Vec<&'static str> {
        let names: BTreeSet<&'static str> = self.warnings.iter().map(|w| w.rule).collect();
        names.into_iter().collect()
    }

    /// `error=true` and something fired: the build must not start.
    pub fn is_error(&self) -> bool {
        self.config.error && !self.warnings.is_empty()
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The Dockerfile does not type (unknown instruction, bad flag).
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// The `# check=` directive (or `BUILDKIT_DOCKERFILE_CHECK`) does not parse.
    #[error("{file}: failed to parse check options: {message}")]
    Directive {
        /// The Dockerfile.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// Runs every enabled rule on a parsed Dockerfile.
///
/// # Errors
/// [`CheckError`]: an instruction that does not type, a bad `# check=` directive, an
/// unknown `--target`, a `# syntax=` naming a frontend other than `docker/dockerfile:1`.
pub fn check(tree: &Dockerfile, options: &CheckOptions) -> Result<Report, CheckError> {
    // Another frontend's rules are that frontend's: refused as a build would refuse it.
    crate::dockerfile::check_syntax(&tree.directives, &options.build_args)
        .map_err(|error| CheckError::Dockerfile(error.with_file(options.file.clone())))?;
    let directive = options
        .build_args
        .get(CHECK_BUILD_ARG)
        .cloned()
        .or_else(|| tree.directives.check.clone())
        .unwrap_or_default();
    let config = CheckConfig::parse(&directive).map_err(|message| CheckError::Directive {
        file: options.file.clone(),
        message,
    })?;
    let model = Model::new(tree, options)
        .map_err(|error| CheckError::Dockerfile(error.with_file(options.file.clone())))?;
    let mut findings = Findings::default();
    buildkit::run(&model, &mut findings);
    practices::run(&model, &mut findings);
    multiplatform::run(&model, &mut findings);
    let mut warnings: Vec<Warning> = findings
        .found
        .into_iter()
        .filter(|found| config.enables(found.rule))
        .map(|found| Warning {
            rule: found.rule.name,
            description: found.rule.description,
            url: found.rule.url,
            message: found.message,
            fix: found.fix.unwrap_or_else(|| found.rule.fix.to_owned()),
            file: options.file.clone(),
            line: found.span.start,
            end_line: found.span.end,
        })
        .collect();
    warnings.sort_by(|a, b| (a.line, a.rule).cmp(&(b.line, b.rule)));
    warnings.dedup();
    Ok(Report {
        file: options.file.clone(),
        warnings,
        config,
    })
}

/// Parses `text` and checks it.
///
/// # Errors
/// As [`check`], plus parse errors.
pub fn check_text(text: &str, options: &CheckOptions) -> Result<Report, CheckError> {
    let tree = crate::dockerfile::parse(text)
        .map_err(|error| CheckError::Dockerfile(error.with_file(options.file.clone())))?;
    check(&tree, options)
}

/// What the rules found, before the configuration filters it.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    found: Vec<Found>,
}

#[derive(Debug)]
struct Found {
    rule: &'static Rule,
    span: Span,
    message: String,
    fix: Option<String>,
}

impl Findings {
    /// A finding with the rule's own fix.
    pub(crate) fn add(&mut self, rule: &'static Rule, span: Span, message: impl Into<String>) {
        self.found.push(Found {
            rule,
            span,
            message: message.into(),
            fix: None,
        });
    }

    /// A finding with a fix written for it.
    pub(crate) fn add_with_fix(
        &mut self,
        rule: &'static Rule,
        span: Span,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.found.push(Found {
            rule,
            span,
            message: message.into(),
            fix: Some(fix.into()),
        });
    }
}

/// One instruction of a stage, with its node (for casing, comments, raw arguments).
#[derive(Debug)]
pub(crate) struct Item<'a> {
    pub(crate) node: &'a Node,
    pub(crate) instruction: Instruction,
}

/// A stage as the rules see it.
#[derive(Debug)]
pub(crate) struct StageModel<'a> {
    pub(crate) index: usize,
    pub(crate) node: &'a Node,
    pub(crate) from: From,
    /// The earlier stage this one is built `FROM`, if any.
    pub(crate) parent: Option<usize>,
    /// The base name after expansion with the first target's arguments.
    pub(crate) base_name: String,
    pub(crate) items: Vec<Item<'a>>,
}

/// The Dockerfile typed for the rules: meta-ARGs and stages, each instruction beside its
/// node (the rules read the nodes: casing, comments, raw arguments).
#[derive(Debug)]
pub(crate) struct Model<'a> {
    pub(crate) tree: &'a Dockerfile,
    pub(crate) options: &'a CheckOptions,
    pub(crate) expander: Expander,
    pub(crate) meta_args: Vec<(&'a Node, Arg)>,
    pub(crate) stages: Vec<StageModel<'a>>,
    /// Automatic arguments of the first target.
    pub(crate) automatic: BTreeMap<String, String>,
}

impl<'a> Model<'a> {
    fn new(tree: &'a Dockerfile, options: &'a CheckOptions) -> Result<Self, DockerfileError> {
        let target = options
            .targets
            .first()
            .unwrap_or(&options.build_platform)
            .clone();
        let mut model = Self {
            tree,
            options,
            expander: Expander::new(tree.directives.escape),
            meta_args: Vec::new(),
            stages: Vec::new(),
            automatic: crate::plan::automatic_args(&target, &options.build_platform),
        };
        for node in &tree.nodes {
            let instruction = Instruction::from_node(node)?;
            match instruction {
                Instruction::From(from) => {
                    let index = model.stages.len();
                    model.stages.push(StageModel {
                        index,
                        node,
                        from,
                        parent: None,
                        base_name: String::new(),
                        items: Vec::new(),
                    });
                }
                instruction => match model.stages.last_mut() {
                    Some(stage) => stage.items.push(Item { node, instruction }),
                    None => match instruction {
                        Instruction::Arg(arg) => model.meta_args.push((node, arg)),
                        other => {
                            return Err(DockerfileError::new(
                                other.span().start,
                                crate::dockerfile::ErrorKind::InstructionBeforeFrom {
                                    instruction: node.name(),
                                },
                            ));
                        }
                    },
                },
            }
        }
        if model.stages.is_empty() {
            let line = tree.nodes.last().map_or(1, |node| node.span.start);
            return Err(DockerfileError::new(
                line,
                crate::dockerfile::ErrorKind::MissingFrom,
            ));
        }
        if let Some(name) = &options.target_stage {
            let lower = name.to_lowercase();
            if !model
                .stages
                .iter()
                .any(|stage| stage.from.name.as_deref() == Some(lower.as_str()))
            {
                let names: Vec<&str> = model
                    .stages
                    .iter()
                    .filter_map(|stage| stage.from.name.as_deref())
                    .collect();
                return Err(DockerfileError::global(
                    crate::dockerfile::ErrorKind::UnknownTarget {
                        name: name.clone(),
                        suggestion: crate::dockerfile::error::suggest(name, &names)
                            .map(str::to_owned),
                    },
                ));
            }
        }
        let scope = model.scope_for_from(true);
        for index in 0..model.stages.len() {
            let base_name = model
                .expander
                .expand(&model.stages[index].from.image, &scope)
                .map(|expansion| expansion.text)
                .unwrap_or_else(|_| model.stages[index].from.image.clone());
            let lower = base_name.to_lowercase();
            let parent = model.stages[..index]
                .iter()
                .rev()
                .find(|earlier| earlier.from.name.as_deref() == Some(lower.as_str()))
                .map(|earlier| earlier.index);
            model.stages[index].parent = parent;
            model.stages[index].base_name = base_name;
        }
        Ok(model)
    }

    /// The variables `FROM` lines see: automatic arguments, then meta-ARGs (with the build
    /// arguments when `with_build_args`, else their defaults only).
    pub(crate) fn scope_for_from(&self, with_build_args: bool) -> BTreeMap<String, String> {
        self.scope_for_from_with(&self.automatic, with_build_args)
    }

    /// [`Self::scope_for_from`] with the automatic arguments of another target.
    pub(crate) fn scope_for_from_with(
        &self,
        automatic: &BTreeMap<String, String>,
        with_build_args: bool,
    ) -> BTreeMap<String, String> {
        let mut scope = automatic.clone();
        for (_, arg) in &self.meta_args {
            for declaration in &arg.args {
                let value = match self.options.build_args.get(&declaration.name) {
                    Some(value) if with_build_args => Some(value.clone()),
                    _ => match &declaration.default {
                        Some(default) => Some(
                            self.expander
                                .expand(default, &scope)
                                .map(|expansion| expansion.text)
                                .unwrap_or_default(),
                        ),
                        None => automatic.get(&declaration.name).cloned(),
                    },
                };
                if let Some(value) = value {
                    scope.insert(declaration.name.clone(), value);
                }
            }
        }
        scope
    }

    /// The stage built: `--target`, else the last.
    pub(crate) fn final_stage(&self) -> usize {
        self.options
            .target_stage
            .as_ref()
            .and_then(|name| {
                let lower = name.to_lowercase();
                // The last stage of that name, as BuildKit finds a duplicated one.
                self.stages
                    .iter()
                    .rev()
                    .find(|stage| stage.from.name.as_deref() == Some(lower.as_str()))
            })
            .map_or(self.stages.len() - 1, |stage| stage.index)
    }
}

/// The automatic platform arguments: visible in a stage only after `ARG NAME`.
pub(crate) const PLATFORM_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Variables that remember which names were looked up: found (`matched`) or not
/// (`missing`), as BuildKit's `ProcessWordWithMatches`.
pub(crate) struct Recorder<'v> {
    values: &'v dyn Variables,
    pub(crate) matched: RefCell<BTreeSet<String>>,
    pub(crate) missing: RefCell<BTreeSet<String>>,
}

impl<'v> Recorder<'v> {
    pub(crate) fn new(values: &'v dyn Variables) -> Self {
        Self {
            values,
            matched: RefCell::default(),
            missing: RefCell::default(),
        }
    }
}

impl Variables for Recorder<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        let value = self.values.lookup(name);
        let set = if value.is_some() {
            &self.matched
        } else {
            &self.missing
        };
        set.borrow_mut().insert(name.to_owned());
        value
    }
}

/// Names defined in a scope, for [`Recorder`] (values do not matter).
pub(crate) struct Names<'n>(pub(crate) &'n BTreeSet<String>);

impl Variables for Names<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.contains(name).then_some("")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The rule names that fire on `text` (built for linux/amd64 on linux/amd64), with
    /// every experimental rule enabled.
    pub(crate) fn fired_with(text: &str, options: &CheckOptions) -> Vec<(&'static str, usize)> {
        let text = format!("# check=experimental=all\n{text}");
        let report = check_text(&text, options).unwrap();
        report
            .warnings
            .iter()
            .map(|warning| (warning.rule, warning.line - 1))
            .collect()
    }

    pub(crate) fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    pub(crate) fn fired(text: &str) -> Vec<(&'static str, usize)> {
        fired_with(text, &CheckOptions::new(amd64()))
    }

    /// Whether `rule` fires on `text`.
    pub(crate) fn fires(rule: &str, text: &str) -> bool {
        fired(text).iter().any(|(name, _)| *name == rule)
    }

    #[test]
    fn every_rule_is_listed_once_with_a_url_and_fix() {
        let mut names = BTreeSet::new();
        for rule in RULES {
            assert!(names.insert(rule.name), "{} twice", rule.name);
            assert!(rule.url.starts_with("https://"), "{}", rule.name);
            assert!(!rule.fix.is_empty() && !rule.description.is_empty());
        }
        assert_eq!(
            RULES
                .iter()
                .filter(|rule| rule.family == Family::Buildkit)
                .count(),
            21
        );
    }

    #[test]
    fn directive_parses_like_buildkit() {
        let config = CheckConfig::parse("skip=A, B;error=true").unwrap();
        assert_eq!(config.skip, ["A", "B"]);
        assert!(config.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(
            CheckConfig::parse("experimental=all")
                .unwrap()
                .experimental_all
        );
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("nonsense").is_err());
        assert!(CheckConfig::parse("color=red").is_err());
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
    }

    #[test]
    fn directive_skips_rules_and_error_is_reported() {
        let text = "# check=skip=MaintainerDeprecated\nFROM alpine:3\nMAINTAINER me\nUSER 1\n";
        let report = check_text(text, &CheckOptions::new(amd64())).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let text = "# check=error=true\nFROM alpine:3\nMAINTAINER me\nUSER 1\n";
        let report = check_text(text, &CheckOptions::new(amd64())).unwrap();
        assert_eq!(report.rules_fired(), ["MaintainerDeprecated"]);
        assert!(report.is_error());
        let text = "# check=skip=all\nfrom alpine\nMAINTAINER me\n";
        let report = check_text(text, &CheckOptions::new(amd64())).unwrap();
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn build_arg_overrides_the_directive() {
        let mut options = CheckOptions::new(amd64());
        options
            .build_args
            .insert(CHECK_BUILD_ARG.to_owned(), "skip=all".to_owned());
        let report = check_text("FROM alpine\nMAINTAINER me\n", &options).unwrap();
        assert!(report.warnings.is_empty());
        let error = check_text("# check=skip\nFROM alpine:3\n", &CheckOptions::new(amd64()));
        assert!(matches!(error, Err(CheckError::Directive { .. })));
    }

    #[test]
    fn unknown_target_is_bad_input() {
        let mut options = CheckOptions::new(amd64());
        options.target_stage = Some("buidl".to_owned());
        let error = check_text("FROM alpine:3 AS build\nUSER 1\n", &options).unwrap_err();
        assert!(matches!(error, CheckError::Dockerfile(_)), "{error}");
        assert!(error.to_string().contains("build"), "{error}");
        options.target_stage = Some("BUILD".to_owned());
        assert!(check_text("FROM alpine:3 AS build\nUSER 1\n", &options).is_ok());
    }

    #[test]
    fn experimental_rules_need_enabling() {
        let text = "# a comment that is not a description\nARG VERSION=1\nFROM alpine:3\nUSER 1\n";
        let report = check_text(text, &CheckOptions::new(amd64())).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert!(fires("InvalidDefinitionDescription", text));
    }

    #[test]
    fn warnings_name_file_line_and_rule() {
        let mut options = CheckOptions::new(amd64());
        options.file = "app.Dockerfile".to_owned();
        let report = check_text("FROM alpine:3\nUSER 1\nMAINTAINER me\n", &options).unwrap();
        assert_eq!(
            report.warnings[0].to_string(),
            "app.Dockerfile:3: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label"
        );
    }

    /// A Dockerfile that follows every practice, multi-platform included: nothing fires.
    #[test]
    fn a_dockerfile_following_all_practices_is_clean() {
        let text = include_str!("../../examples/practices/Dockerfile");
        let mut options = CheckOptions::new(amd64());
        options.targets = vec![amd64(), Platform::parse("linux/arm64").unwrap()];
        let report = check_text(&format!("# check=experimental=all\n{text}"), &options).unwrap();
        assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    }
}

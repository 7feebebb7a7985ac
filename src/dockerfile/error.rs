//! Dockerfile errors. Every error names the file and the line it comes from and reads
//! `Dockerfile:7: unknown instruction: RUNN (did you mean RUN?)`: where BuildKit has a message
//! for the same mistake, the message is BuildKit's (what users search for), its "did you
//! mean" included; a `hint:` line follows where more helps. The CLI maps them to exit code 2
//! (bad input).

use std::fmt;

/// A line range in the Dockerfile, 1-based and inclusive (`start == end` for a one-line
/// instruction; heredoc bodies and continuation lines extend `end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    /// First line.
    pub start: usize,
    /// Last line.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

/// An error in a Dockerfile, with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileError {
    /// The file name as the user gave it (default `Dockerfile`).
    pub file: String,
    /// The 1-based line, or `None` for errors about the file as a whole (`--target`).
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl DockerfileError {
    /// An error on `line`, in the file `Dockerfile`.
    pub fn new(line: usize, kind: ErrorKind) -> Self {
        Self {
            file: "Dockerfile".to_owned(),
            line: Some(line.max(1)),
            kind,
        }
    }

    /// An error about the Dockerfile as a whole (no line applies).
    pub fn global(kind: ErrorKind) -> Self {
        Self {
            file: "Dockerfile".to_owned(),
            line: None,
            kind,
        }
    }

    /// The same error, naming the file as the user gave it.
    #[must_use]
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }

    /// The hint shown under the message, if any.
    pub fn hint(&self) -> Option<String> {
        self.kind.hint()
    }
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind)?,
            None => write!(f, "{}: {}", self.file, self.kind)?,
        }
        if let Some(hint) = self.hint() {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DockerfileError {}

/// The lines of `text` around `span`, as BuildKit prints an error's source (`>>>` marks the
/// span's lines; two lines of context around a one-line span, one around a longer one),
/// between dashed rules, each line ending in a newline. `None` when `span` is not in `text`.
pub fn excerpt(text: &str, span: Span) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let (mut start, mut end) = (span.start, span.end.max(span.start).min(lines.len()));
    if start < 1 || start > lines.len() {
        return None;
    }
    let marked = start..=end;
    let pad = if start == end { 4 } else { 2 };
    // BuildKit's loop: one line before and one after per round, counting the round too.
    let mut counted = 0;
    while counted < pad {
        if start > 1 {
            start -= 1;
            counted += 1;
        }
        if end != lines.len() {
            end += 1;
            counted += 1;
        }
        counted += 1;
    }
    let rule = "--------------------\n";
    let mut out = String::from(rule);
    for number in start..=end {
        let mark = if marked.contains(&number) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {number:>3} | {mark} {}\n", lines[number - 1]));
    }
    out.push_str(rule);
    Some(out)
}

/// What is wrong with a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// No instruction at all (empty, or only comments and blank lines).
    #[error("the Dockerfile has no instructions")]
    Empty,
    /// A parser directive (`# escape=`, `# syntax=`, `# check=`) is invalid.
    #[error("{message}")]
    Directive {
        /// What is wrong with it.
        message: String,
    },
    /// A heredoc (`<<EOF`) whose terminator never comes.
    #[error("unterminated heredoc <<{name}: no line \"{name}\" ends it")]
    UnterminatedHeredoc {
        /// The heredoc's delimiter word.
        name: String,
    },
    /// A heredoc delimiter that cannot be read.
    #[error("invalid heredoc: {message}")]
    Heredoc {
        /// What is wrong with it.
        message: String,
    },
    /// A JSON array holding something other than strings (`CMD ["a", ["b"]]`).
    #[error(
        "{instruction}: when using JSON array syntax, arrays must be comprised of strings only"
    )]
    NotStringArray {
        /// The instruction, upper case.
        instruction: String,
    },
    /// Exec form was clearly meant (`[...]`) but the text is not a JSON array of strings.
    #[error("{instruction}: invalid JSON array {text:?}: {detail}")]
    InvalidJson {
        /// The instruction, upper case.
        instruction: String,
        /// The text after the instruction.
        text: String,
        /// What the JSON reader said.
        detail: String,
    },
    /// An instruction name BuildKit does not know.
    #[error("unknown instruction: {name}{}", did_you_mean(.suggestion.as_deref()))]
    UnknownInstruction {
        /// The name as written.
        name: String,
        /// The nearest known instruction, if close enough.
        suggestion: Option<String>,
    },
    /// No `FROM` at all.
    #[error("dockerfile contains no stages to build")]
    MissingFrom,
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("{instruction} before the first FROM: only ARG may come before FROM")]
    InstructionBeforeFrom {
        /// The instruction, upper case.
        instruction: String,
    },
    /// A `--flag` the instruction does not take.
    #[error("unknown flag: --{flag}{}", did_you_mean(near_flag(.flag, .valid)))]
    UnknownFlag {
        /// The instruction, upper case.
        instruction: String,
        /// The flag name, without dashes.
        flag: String,
        /// The flags the instruction takes, without dashes.
        valid: Vec<String>,
    },
    /// A flag with a bad value, a missing value or given twice.
    #[error("{instruction} --{flag}: {message}")]
    FlagValue {
        /// The instruction, upper case.
        instruction: String,
        /// The flag name, without dashes.
        flag: String,
        /// What is wrong with the value.
        message: String,
    },
    /// Wrong arguments for an instruction (too few, malformed).
    #[error("{instruction}: {message}")]
    Arguments {
        /// The instruction, upper case.
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// An `ARG` (or build argument) name that is not a valid variable name.
    #[error(
        "invalid ARG name {name:?}: a name starts with a letter or _ and holds only letters, digits and _"
    )]
    BadArgName {
        /// The name as written.
        name: String,
    },
    /// A `--from` index naming a stage that does not exist.
    #[error("invalid stage index {name}: the Dockerfile has no stage {name}")]
    UnknownStage {
        /// The index used.
        name: String,
        /// The nearest stage name, if close enough.
        suggestion: Option<String>,
    },
    /// `--target` naming a stage that does not exist.
    #[error("target stage {name:?} could not be found{}", did_you_mean(.suggestion.as_deref()))]
    UnknownTarget {
        /// The name given.
        name: String,
        /// The nearest stage name, if close enough.
        suggestion: Option<String>,
    },
    /// `COPY --from` or `RUN --mount from=` naming a stage defined after the instruction (or
    /// the stage itself).
    #[error("{}", stage_defined_later(*.mount, .name, .current, .target.as_deref()))]
    StageDefinedLater {
        /// `true` for `RUN --mount from=`, `false` for `COPY --from`.
        mount: bool,
        /// The stage named.
        name: String,
        /// The stage the instruction is in (its name, or `stage-N`).
        current: String,
        /// The mount's target, for `RUN --mount`.
        target: Option<String>,
    },
    /// `# syntax=` (or `BUILDKIT_SYNTAX`) naming a frontend image other than
    /// `docker/dockerfile`: xbuild runs no frontend images.
    #[error(
        "# syntax={reference}: xbuild does not run frontend images, and {reference:?} is not \
         docker/dockerfile:1 (the Dockerfile syntax xbuild implements)"
    )]
    UnsupportedFrontend {
        /// The image named.
        reference: String,
    },
    /// Stages that depend on each other in a circle.
    #[error("circular dependency between stages: {}", .stages.join(" -> "))]
    StageCycle {
        /// The stages on the cycle, the first repeated at the end.
        stages: Vec<String>,
    },
    /// Variable expansion failed (`${X:?unset}`, bad substitution).
    #[error("{instruction}: {message}")]
    Expansion {
        /// The instruction, upper case.
        instruction: String,
        /// The expander's message.
        message: String,
    },
    /// A feature a Dockerfile can name that xbuild does not implement yet (`ADD
    /// --keep-git-dir`, `RUN --mount=type=bind,rw`): refused, never ignored.
    #[error("{what} is not supported yet")]
    Unsupported {
        /// The feature, as written (`ADD --keep-git-dir`).
        what: String,
    },
    /// What the instruction asks cannot be done, found when it is checked against the build
    /// (its options, the context, the image): a missing `COPY` source, a required secret not
    /// given, a `RUN --security=insecure` without its entitlement.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}

/// BuildKit's suggestion suffix: ` (did you mean X?)`, or nothing.
fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |near| format!(" (did you mean {near}?)"))
}

/// The flag `flag` was probably meant to be, as BuildKit suggests it (without dashes).
fn near_flag<'v>(flag: &str, valid: &'v [String]) -> Option<&'v str> {
    let names: Vec<&str> = valid.iter().map(String::as_str).collect();
    suggest(flag, &names)
        .and_then(|near| valid.iter().find(|name| *name == near))
        .map(String::as_str)
}

/// BuildKit's messages for a stage used before it is defined.
fn stage_defined_later(mount: bool, name: &str, current: &str, target: Option<&str>) -> String {
    if mount {
        format!(
            "cannot mount from stage {name:?} to {:?}, stage needs to be defined before current command",
            target.unwrap_or_default()
        )
    } else {
        format!(
            "cannot copy from stage {name:?}, it needs to be defined before current stage {current:?}"
        )
    }
}

impl ErrorKind {
    /// The hint line for this error, if one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::UnknownFlag {
                instruction,
                flag,
                valid,
            } => match near_flag(flag, valid) {
                Some(_) => None,
                None if valid.is_empty() => Some(format!("{instruction} takes no flags")),
                None => Some(format!(
                    "valid flags for {instruction}: {}",
                    valid
                        .iter()
                        .map(|name| format!("--{name}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            Self::StageDefinedLater { .. } => Some(
                "a stage can use only stages defined above it: move the stage it names up"
                    .to_owned(),
            ),
            Self::UnsupportedFrontend { .. } => Some(
                "remove the # syntax= line, or use docker/dockerfile:1 (any 1.x tag or digest)"
                    .to_owned(),
            ),
            Self::InvalidJson { .. } => Some(
                "exec form is a JSON array of double-quoted strings, e.g. [\"echo\", \"hello\"]"
                    .to_owned(),
            ),
            Self::MissingFrom | Self::InstructionBeforeFrom { .. } => {
                Some("start the stage with FROM <image>".to_owned())
            }
            _ => None,
        }
    }
}

/// The candidate nearest to `name` (case-insensitive), if its edit distance is at most 2
/// (BuildKit's `suggest` uses the same bound). Exact matches are not suggestions.
pub fn suggest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .iter()
        .map(|candidate| (edit_distance(&name, &candidate.to_lowercase()), *candidate))
        .filter(|(distance, _)| *distance > 0 && *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_pads_as_buildkit_prints_a_source() {
        let text = "a\nb\nc\nd\ne\nf\ng";
        // One line: two around it; several: one around them; clipped at the ends.
        assert_eq!(
            excerpt(text, Span { start: 4, end: 4 }).unwrap(),
            "--------------------\n   2 |     b\n   3 |     c\n   4 | >>> d\n   5 |     e\n   6 |     f\n--------------------\n"
        );
        assert_eq!(
            excerpt(text, Span { start: 1, end: 2 }).unwrap(),
            "--------------------\n   1 | >>> a\n   2 | >>> b\n   3 |     c\n--------------------\n"
        );
        assert_eq!(excerpt(text, Span { start: 9, end: 9 }), None);
    }

    #[test]
    fn display_has_file_line_and_buildkits_suggestion() {
        let error = DockerfileError::new(
            7,
            ErrorKind::UnknownInstruction {
                name: "RUNN".into(),
                suggestion: Some("RUN".into()),
            },
        );
        assert_eq!(
            error.to_string(),
            "Dockerfile:7: unknown instruction: RUNN (did you mean RUN?)"
        );
        assert_eq!(
            error.with_file("ci/Dockerfile.prod").to_string(),
            "ci/Dockerfile.prod:7: unknown instruction: RUNN (did you mean RUN?)"
        );
        let error = DockerfileError::global(ErrorKind::UnknownTarget {
            name: "bulid".into(),
            suggestion: Some("build".into()),
        });
        assert_eq!(
            error.to_string(),
            "Dockerfile: target stage \"bulid\" could not be found (did you mean build?)"
        );
    }

    #[test]
    fn suggestions_within_distance_two() {
        assert_eq!(suggest("RUNN", &["RUN", "COPY"]), Some("RUN"));
        assert_eq!(suggest("cpy", &["RUN", "COPY"]), Some("COPY"));
        assert_eq!(suggest("XYZZY", &["RUN", "COPY"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_flag_suggests_or_lists_valid_flags() {
        let kind = ErrorKind::UnknownFlag {
            instruction: "COPY".into(),
            flag: "xyz".into(),
            valid: vec!["from".into(), "chown".into()],
        };
        assert_eq!(kind.to_string(), "unknown flag: --xyz");
        assert_eq!(
            kind.hint().unwrap(),
            "valid flags for COPY: --from, --chown"
        );
        let kind = ErrorKind::UnknownFlag {
            instruction: "RUN".into(),
            flag: "mont".into(),
            valid: vec!["mount".into(), "network".into()],
        };
        assert_eq!(
            kind.to_string(),
            "unknown flag: --mont (did you mean mount?)"
        );
        assert_eq!(kind.hint(), None);
    }

    #[test]
    fn stage_defined_later_reads_as_buildkit() {
        let copy = ErrorKind::StageDefinedLater {
            mount: false,
            name: "build".into(),
            current: "target".into(),
            target: None,
        };
        assert_eq!(
            copy.to_string(),
            "cannot copy from stage \"build\", it needs to be defined before current stage \"target\""
        );
        let mount = ErrorKind::StageDefinedLater {
            mount: true,
            name: "build".into(),
            current: "target".into(),
            target: Some("/src".into()),
        };
        assert_eq!(
            mount.to_string(),
            "cannot mount from stage \"build\" to \"/src\", stage needs to be defined before current command"
        );
    }
}

//! The `--flag`s of one instruction, checked against the flags it takes.

use super::super::error::{DockerfileError, ErrorKind};
use super::super::syntax::Node;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    Text,
    /// `--exclude=x`, repeatable.
    List,
}

/// The flags given to one instruction, checked against what it takes.
pub(super) struct Flags {
    instruction: String,
    line: usize,
    values: Vec<(&'static str, Vec<Option<String>>)>,
}

impl Flags {
    pub(super) fn parse(
        node: &Node,
        specs: &[(&'static str, FlagKind)],
    ) -> Result<Self, DockerfileError> {
        let instruction = node.name();
        let line = node.span.start;
        let mut values: Vec<(&'static str, Vec<Option<String>>)> =
            specs.iter().map(|(name, _)| (*name, Vec::new())).collect();
        for flag in &node.flags {
            let body = flag.strip_prefix("--").unwrap_or(flag);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let Some(index) = specs
                .iter()
                .position(|(spec, _)| spec.eq_ignore_ascii_case(name))
            else {
                return Err(DockerfileError::new(
                    line,
                    ErrorKind::UnknownFlag {
                        instruction,
                        flag: name.to_owned(),
                        valid: specs.iter().map(|(name, _)| (*name).to_owned()).collect(),
                    },
                ));
            };
            let (spec_name, kind) = specs[index];
            let flag_error = |message: String| {
                DockerfileError::new(
                    line,
                    ErrorKind::FlagValue {
                        instruction: instruction.clone(),
                        flag: spec_name.to_owned(),
                        message,
                    },
                )
            };
            let slot = &mut values[index].1;
            match kind {
                FlagKind::Bool => {
                    if let Some(value) = &value {
                        if !matches!(value.to_lowercase().as_str(), "true" | "false") {
                            return Err(flag_error(format!(
                                "expects true or false, not {value:?}"
                            )));
                        }
                    }
                    if !slot.is_empty() {
                        return Err(flag_error("given twice".to_owned()));
                    }
                }
                FlagKind::Text | FlagKind::List => {
                    if value.is_none() {
                        return Err(flag_error(format!("needs a value (--{spec_name}=...)")));
                    }
                    if kind == FlagKind::Text && !slot.is_empty() {
                        return Err(flag_error("given twice".to_owned()));
                    }
                }
            }
            slot.push(value);
        }
        Ok(Self {
            instruction,
            line,
            values,
        })
    }

    fn slot(&self, name: &str) -> &[Option<String>] {
        self.values
            .iter()
            .find(|(spec, _)| *spec == name)
            .map(|(_, values)| values.as_slice())
            .expect("flag names are listed in the instruction's spec")
    }

    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.slot(name).first().cloned().flatten()
    }

    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.slot(name).iter().flatten().cloned().collect()
    }

    /// `None` when not given; `--flag` alone is `true`.
    pub(super) fn boolean(&self, name: &str) -> Option<bool> {
        self.slot(name).first().map(|value| {
            value
                .as_deref()
                .is_none_or(|value| value.eq_ignore_ascii_case("true"))
        })
    }

    pub(super) fn error(&self, flag: &str, message: impl Into<String>) -> DockerfileError {
        DockerfileError::new(
            self.line,
            ErrorKind::FlagValue {
                instruction: self.instruction.clone(),
                flag: flag.to_owned(),
                message: message.into(),
            },
        )
    }
}

//! The rules about `FROM` lines (casing of `AS`, stage names, arguments and platforms in
//! `FROM`) and the casing of instruction keywords.

use super::*;
use crate::platform::Platform;

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

pub(super) fn casing(model: &Model<'_>, findings: &mut Findings) {
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

pub(super) fn from_lines(model: &Model<'_>, findings: &mut Findings) {
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

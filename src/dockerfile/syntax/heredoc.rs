//! The heredocs a line announces (`<<EOF`, `<<-EOF`, `3<<"EOF"`), as BuildKit finds them.

use super::super::error::ErrorKind;
use super::super::expand::Expander;
use super::{Heredoc, Node};

/// Heredocs are read for `ADD`, `COPY` and `RUN` in shell form (also under `ONBUILD`).
pub(super) fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.instruction[..], &node.sub) {
        ("onbuild", Some(sub)) => sub,
        _ => node,
    };
    matches!(node.instruction.as_str(), "add" | "copy" | "run") && !node.is_json
}

/// The heredocs announced on a line (`<<EOF`, `<<-EOF`, `3<<"EOF"`), in order.
pub(super) fn heredocs_in(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let lexer = Expander {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        ..Expander::new('\\')
    };
    let no_variables: Vec<(String, String)> = Vec::new();
    let words = lexer
        .expand(line, &no_variables)
        .map(|e| e.words)
        .unwrap_or_default();
    let mut heredocs = Vec::new();
    let mut words = words.into_iter().peekable();
    while let Some(mut word) = words.next() {
        // `<< EOF` and `<<- EOF`: the delimiter may follow after spaces.
        let operator = word.trim_start_matches(|ch: char| ch.is_ascii_digit());
        if operator == "<<" || operator == "<<-" {
            if let Some(next) = words.next() {
                word.push(' ');
                word.push_str(&next);
            }
        }
        if let Some(heredoc) = heredoc_from_word(&word)? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// Reads one word as a heredoc announcement (`<<EOF`, `<<-EOF`, `3<<"EOF"`); `None` when it
/// is not one. The body is left empty.
pub(crate) fn heredoc_from_word(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let no_variables: Vec<(String, String)> = Vec::new();
    let digits = word.len()
        - word
            .trim_start_matches(|ch: char| ch.is_ascii_digit())
            .len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let plain = Expander {
        skip_unset: true,
        ..Expander::new('\\')
    };
    let heredoc_error = |error: super::super::expand::ExpandError| ErrorKind::Heredoc {
        message: format!("{rest}: {error}"),
    };
    let names = plain
        .expand(rest, &no_variables)
        .map_err(heredoc_error)?
        .words;
    if names.len() != 1 {
        return Ok(None);
    }
    let raw = Expander {
        raw_quotes: true,
        ..plain
    };
    let raw_names = raw
        .expand(rest, &no_variables)
        .map_err(heredoc_error)?
        .words;
    let quotes = |text: &str| text.chars().filter(|ch| *ch == '\'' || *ch == '"').count();
    let expand = raw_names.len() == 1 && quotes(&names[0]) == quotes(&raw_names[0]);
    Ok(Some(Heredoc {
        name: names[0].clone(),
        fd: word[..digits].parse().unwrap_or(0),
        expand,
        chomp,
        content: String::new(),
    }))
}

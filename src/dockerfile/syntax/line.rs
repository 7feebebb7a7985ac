//! One logical line to a [`Node`]: the instruction word, its `--flags`, and its arguments
//! read in the instruction's form (JSON array or text, words, key-value pairs, a list).

use super::super::error::{ErrorKind, Span};
use super::Node;

/// Which argument form an instruction uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `ADD`, `COPY`, `VOLUME`: JSON array, else whitespace-separated list.
    JsonOrList,
    /// `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`: JSON array, else the whole text.
    JsonOrText,
    /// `ARG`: words, `name` or `name=value`.
    Names,
    /// `ENV`, `LABEL`: `key value` or `key=value ...`.
    KeyValues,
    /// `EXPOSE`, `FROM`: whitespace-separated list.
    List,
    /// `MAINTAINER`, `STOPSIGNAL`, `USER`, `WORKDIR`: the whole text.
    Text,
    /// `HEALTHCHECK`: a type word then JSON-or-text.
    Health,
    /// `ONBUILD`: another instruction.
    Sub,
    /// Not an instruction BuildKit knows.
    Unknown,
}

fn form_of(instruction: &str) -> Form {
    match instruction {
        "add" | "copy" | "volume" => Form::JsonOrList,
        "run" | "cmd" | "entrypoint" | "shell" => Form::JsonOrText,
        "arg" => Form::Names,
        "env" | "label" => Form::KeyValues,
        "expose" | "from" => Form::List,
        "maintainer" | "stopsignal" | "user" | "workdir" => Form::Text,
        "healthcheck" => Form::Health,
        "onbuild" => Form::Sub,
        _ => Form::Unknown,
    }
}

/// BuildKit's whitespace for splitting: space, tab, `\v`, `\f`, `\r`.
fn is_split_space(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

fn split_whitespace(text: &str) -> Vec<String> {
    text.split(is_split_space)
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Splits a logical line into instruction, flags and arguments, and reads the arguments in
/// the instruction's form.
pub(super) fn node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    let line = line.trim();
    let (command, rest) = match line.find(is_split_space) {
        Some(at) => (&line[..at], line[at..].trim_start_matches(is_split_space)),
        None => (line, ""),
    };
    let instruction = command.to_lowercase();
    let (rest, flags) = if rest.is_empty() {
        (String::new(), Vec::new())
    } else {
        extract_flags(rest)
    };
    let rest = rest.trim();
    let mut node = Node {
        instruction: instruction.clone(),
        flags,
        args: Vec::new(),
        sub: None,
        is_json: false,
        heredocs: Vec::new(),
        original: line.to_owned(),
        comments: Vec::new(),
        prev_comment: Vec::new(),
        span: Span::default(),
    };
    let name = || instruction.to_uppercase();
    match form_of(&instruction) {
        Form::JsonOrList => match parse_json(rest) {
            Json::Strings(args) => {
                node.args = args;
                node.is_json = true;
            }
            Json::NotStrings => {
                return Err(ErrorKind::NotStringArray {
                    instruction: name(),
                });
            }
            Json::Invalid(_) => node.args = split_whitespace(rest),
        },
        Form::JsonOrText => {
            if !rest.is_empty() {
                match parse_json(rest) {
                    Json::Strings(args) => {
                        node.args = args;
                        node.is_json = true;
                    }
                    Json::NotStrings => {
                        return Err(ErrorKind::NotStringArray {
                            instruction: name(),
                        });
                    }
                    Json::Invalid(_) => node.args = vec![rest.to_owned()],
                }
            }
        }
        Form::Names => node.args = parse_words(rest, escape),
        Form::KeyValues => node.args = parse_key_values(rest, escape, &name())?,
        Form::List => node.args = split_whitespace(rest),
        Form::Text => {
            if !rest.is_empty() {
                node.args = vec![rest.to_owned()];
            }
        }
        Form::Health => {
            let kind_end = rest
                .find(|ch: char| ch.is_ascii_whitespace())
                .unwrap_or(rest.len());
            if kind_end > 0 {
                node.args.push(rest[..kind_end].to_owned());
                let command =
                    rest[kind_end..].trim_start_matches(|ch: char| ch.is_ascii_whitespace());
                if !command.is_empty() {
                    match parse_json(command) {
                        Json::Strings(args) => {
                            node.args.extend(args);
                            node.is_json = true;
                        }
                        Json::NotStrings => {
                            return Err(ErrorKind::NotStringArray {
                                instruction: name(),
                            });
                        }
                        Json::Invalid(_) => node.args.push(command.to_owned()),
                    }
                }
            }
        }
        Form::Sub => {
            if !rest.is_empty() {
                node.sub = Some(Box::new(node_from_line(rest, escape)?));
            }
        }
        Form::Unknown => node.args = vec![String::new()],
    }
    Ok(node)
}

/// What a would-be JSON array turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Json {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// A JSON array with something else in it: an error in BuildKit.
    NotStrings,
    /// Not JSON at all (or not an array): BuildKit reads it as shell form.
    Invalid(String),
}

pub(crate) fn parse_json(text: &str) -> Json {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Json::Invalid("not a JSON array".to_owned());
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(text) {
        Ok(values) => {
            let mut strings = Vec::with_capacity(values.len());
            for value in values {
                match value {
                    serde_json::Value::String(string) => strings.push(string),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(strings)
        }
        Err(error) => Json::Invalid(error.to_string()),
    }
}

/// Pulls the leading `--flag[=value]` words off `line`; a lone `--` ends the flags. Quotes
/// and backslashes inside a flag are removed. Returns the rest and the flags.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let bytes: Vec<char> = line.chars().collect();
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut blank_ok = false;
    let mut position = 0;
    let rest_from = |position: usize| bytes[position..].iter().collect::<String>();
    loop {
        let ch = bytes.get(position).copied();
        if phase == Phase::Spaces {
            let Some(ch) = ch else { break };
            if ch.is_whitespace() {
                position += 1;
                continue;
            }
            if ch != '-' || bytes.get(position + 1) != Some(&'-') {
                return (rest_from(position), flags);
            }
            phase = Phase::Word;
        }
        let Some(mut ch) = ch else {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(word);
            }
            break;
        };
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (rest_from(position), flags);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    position += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    position += 1;
                    continue;
                }
                if ch == '\\' {
                    if position + 1 == bytes.len() {
                        position += 1;
                        continue;
                    }
                    position += 1;
                    ch = bytes[position];
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                    position += 1;
                    continue;
                }
                if ch == '\\' {
                    if position + 1 == bytes.len() {
                        phase = Phase::Word;
                        position += 1;
                        continue;
                    }
                    position += 1;
                    ch = bytes[position];
                }
                word.push(ch);
            }
            Phase::Spaces => unreachable!("handled above"),
        }
        position += 1;
    }
    (String::new(), flags)
}

/// Splits into words at white space, keeping quotes and escapes as written (they are removed
/// when the words are expanded).
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut position = 0;
    while position < chars.len() {
        let mut ch = chars[position];
        if !in_word {
            if ch.is_whitespace() {
                position += 1;
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    in_word = false;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    position += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if position + 1 == chars.len() {
                        position += 1;
                        continue;
                    }
                    word.push(ch);
                    position += 1;
                    ch = chars[position];
                }
                word.push(ch);
            }
            Some(open) => {
                if ch == open {
                    quote = None;
                }
                if ch == escape && open != '\'' {
                    if position + 1 == chars.len() {
                        quote = None;
                        position += 1;
                        continue;
                    }
                    word.push(ch);
                    position += 1;
                    ch = chars[position];
                }
                word.push(ch);
            }
        }
        position += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `key value` (old form, one pair, separator "") or `key=value ...` (separator "=").
fn parse_key_values(rest: &str, escape: char, name: &str) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(at) = rest.find(is_split_space) else {
            return Err(ErrorKind::Arguments {
                instruction: name.to_owned(),
                message: format!(
                    "{name} must have two arguments: {name} <name> <value>, or {name} <name>=<value> ..."
                ),
            });
        };
        let value = rest[at..].trim_start_matches(is_split_space);
        return Ok(vec![rest[..at].to_owned(), value.to_owned(), String::new()]);
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ErrorKind::Arguments {
                instruction: name.to_owned(),
                message: format!(
                    "can't find = in {word:?}: every pair must have the form name=value"
                ),
            });
        };
        args.extend([key.to_owned(), value.to_owned(), "=".to_owned()]);
    }
    Ok(args)
}

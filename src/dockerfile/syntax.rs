//! Text to tree: parser directives, comments, line continuations, heredocs, and the
//! per-instruction argument forms (JSON or shell, key-value pairs, whitespace lists). Nothing
//! here knows what an instruction means; [`super::instruction`] types the tree.
//!
//! The tree is BuildKit's (`frontend/dockerfile/parser`): one [`Node`] per instruction with its
//! lower-cased name, its `--flags`, its arguments and its line span. [`Dockerfile::dump`]
//! renders BuildKit's s-expression dump, which the conformance data checks byte for byte.

use super::error::{DockerfileError, ErrorKind, Span};
use super::expand::Expander;

/// Parser directives from the comment lines at the top (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    /// `# syntax=` (the frontend image BuildKit would use; recorded, not acted on).
    pub syntax: Option<String>,
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` (lint configuration; recorded).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A heredoc (`<<EOF` ... `EOF`) attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF`).
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
    /// `false` when the delimiter was quoted (`<<'EOF'`): the body is not expanded.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from every body line.
    pub chomp: bool,
    /// The body, each line with its newline, exactly as written (see [`Heredoc::body`]).
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed when `chomp` is set.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|line| line.trim_start_matches('\t'))
            .collect()
    }
}

/// One instruction of the tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The instruction name, lower case (`run`).
    pub instruction: String,
    /// The `--flags` given before the arguments, as written (`--from=build`).
    pub flags: Vec<String>,
    /// The arguments as BuildKit's tree holds them: the elements of a JSON array, the rest of
    /// the line for shell form, key/value/separator triples for `ENV` and `LABEL`. An
    /// instruction BuildKit does not know has one empty argument, as in its tree.
    pub args: Vec<String>,
    /// `ONBUILD`'s instruction.
    pub sub: Option<Box<Self>>,
    /// The arguments were a JSON array (exec form).
    pub is_json: bool,
    /// Heredocs, in the order their bodies follow the instruction.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, comments removed).
    pub original: String,
    /// The comment lines just above the instruction, `#` removed.
    pub comments: Vec<String>,
    /// BuildKit's `PrevComment`: the comment lines right above the instruction, `#` and
    /// surrounding white space removed, where a blank line or a bare `#` starts over (what
    /// describes a stage or an `ARG`; read by `xbuild check`).
    pub prev_comment: Vec<String>,
    /// Where the instruction is, heredoc bodies included.
    pub span: Span,
}

impl Node {
    /// The instruction name in upper case, for messages.
    pub fn name(&self) -> String {
        self.instruction.to_uppercase()
    }

    /// BuildKit's dump of this node, without the surrounding parentheses.
    fn dump(&self) -> String {
        let mut out = self.instruction.clone();
        if !self.flags.is_empty() {
            out.push_str(" [");
            let quoted: Vec<String> = self.flags.iter().map(|flag| go_quote(flag)).collect();
            out.push_str(&quoted.join(" "));
            out.push(']');
        }
        if let Some(sub) = &self.sub {
            out.push_str(" (");
            out.push_str(&sub.dump());
            out.push(')');
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_owned()
    }
}

/// A parsed Dockerfile: directives and instructions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dockerfile {
    /// The parser directives.
    pub directives: Directives,
    /// The instructions, in order.
    pub nodes: Vec<Node>,
    /// Things accepted but worth a warning (empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// A warning about accepted but doubtful syntax.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The first line of the instruction concerned.
    pub line: usize,
    /// What is doubtful.
    pub message: String,
}

impl Dockerfile {
    /// The tree in BuildKit's dump format: one `(instruction ["--flag"] "arg" ...)` a line,
    /// ending with a newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        let mut out = out.trim().to_owned();
        out.push('\n');
        out
    }
}

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

/// Parses Dockerfile text into the tree.
///
/// # Errors
/// Bad directives, unterminated heredocs, JSON arrays of non-strings, `ENV`/`LABEL` without a
/// value, and a file with no instruction.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    Parser::new(text).run()
}

struct Parser<'a> {
    lines: std::iter::Peekable<std::str::SplitInclusive<'a, char>>,
    line: usize,
    directives: Directives,
    directives_done: bool,
    seen_directives: Vec<String>,
}

/// Removes trailing `\r` and `\n` characters.
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self {
            lines: text.split_inclusive('\n').peekable(),
            line: 0,
            directives: Directives::default(),
            directives_done: false,
            seen_directives: Vec::new(),
        }
    }

    fn next_line(&mut self) -> Option<&'a str> {
        let line = self.lines.next()?;
        self.line += 1;
        Some(line)
    }

    /// Strips the newline (and leading white space on first lines), looks for a directive,
    /// and blanks a whole-line comment.
    fn process_line(&mut self, raw: &str, strip_left: bool) -> Result<String, DockerfileError> {
        let mut line = trim_newline(raw);
        if strip_left {
            line = line.trim_start();
        }
        self.directive(line)
            .map_err(|message| DockerfileError::new(self.line, ErrorKind::Directive { message }))?;
        Ok(if line.starts_with('#') {
            String::new()
        } else {
            line.to_owned()
        })
    }

    /// Parser directives: `# key=value` lines at the very top, each at most once.
    fn directive(&mut self, line: &str) -> Result<(), String> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value)) = parse_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        if self.seen_directives.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen_directives.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    ));
                }
            },
            "syntax" => self.directives.syntax = Some(value.to_owned()),
            _ => self.directives.check = Some(value.to_owned()),
        }
        Ok(())
    }

    /// Removes a line-continuation escape at the end of `line`: returns the line and whether
    /// the instruction ends here. An escaped escape (`\\`) at the end does not continue.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let escape = self.directives.escape;
        let trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(before) = trimmed.strip_suffix(escape) {
            if !before.ends_with(escape) {
                return (before.to_owned(), false);
            }
        }
        (line.to_owned(), true)
    }

    fn run(mut self) -> Result<Dockerfile, DockerfileError> {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut prev_comment: Vec<String> = Vec::new();
        while let Some(raw) = self.next_line() {
            let processed = self.process_line(raw, true)?;
            if is_comment(raw) {
                let comment = trim_newline(raw).trim_start();
                let comment = comment[1..].trim();
                comments.push(comment.to_owned());
                // Parser directives describe nothing.
                if self.directives_done {
                    if comment.is_empty() {
                        prev_comment.clear();
                    } else {
                        prev_comment.push(comment.to_owned());
                    }
                }
            }
            let start = self.line;
            let (mut line, mut ends) = self.trim_continuation(&processed);
            if ends && line.is_empty() {
                if !is_comment(raw) {
                    prev_comment.clear();
                }
                continue;
            }
            let mut empty_continuation = false;
            while !ends {
                let Some(raw) = self.next_line() else { break };
                let processed = self.process_line(raw, false)?;
                if is_comment(raw) {
                    continue;
                }
                if processed.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (continued, now_ends) = self.trim_continuation(&processed);
                line.push_str(&continued);
                ends = now_ends;
            }
            if empty_continuation {
                warnings.push(Warning {
                    line: start,
                    message: "empty continuation line".to_owned(),
                });
            }
            let mut node = node_from_line(&line, self.directives.escape)
                .map_err(|kind| DockerfileError::new(start, kind))?;
            if can_contain_heredoc(&node) {
                let heredocs =
                    heredocs_in(&line).map_err(|kind| DockerfileError::new(start, kind))?;
                for mut heredoc in heredocs {
                    let mut terminated = false;
                    while let Some(raw) = self.next_line() {
                        let mut candidate = trim_newline(raw);
                        if heredoc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                        heredoc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(DockerfileError::new(
                            start,
                            ErrorKind::UnterminatedHeredoc { name: heredoc.name },
                        ));
                    }
                    node.heredocs.push(heredoc);
                }
            }
            node.span = Span::new(start, self.line);
            if let Some(sub) = &mut node.sub {
                sub.span = node.span;
            }
            node.comments = std::mem::take(&mut comments);
            node.prev_comment = std::mem::take(&mut prev_comment);
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(DockerfileError::new(self.line, ErrorKind::Empty));
        }
        Ok(Dockerfile {
            directives: self.directives,
            nodes,
            warnings,
        })
    }
}

/// `#\s*key\s*=\s*value\s*` with `key` starting with a letter.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_end = rest
        .find(|ch: char| !ch.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let key = &rest[..key_end];
    if !key.starts_with(|ch: char| ch.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[key_end..].trim_start().strip_prefix('=')?.trim();
    (!value.is_empty()).then_some((key, value))
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
fn node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
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

/// Heredocs are read for `ADD`, `COPY` and `RUN` in shell form (also under `ONBUILD`).
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.instruction[..], &node.sub) {
        ("onbuild", Some(sub)) => sub,
        _ => node,
    };
    matches!(node.instruction.as_str(), "add" | "copy" | "run") && !node.is_json
}

/// The heredocs announced on a line (`<<EOF`, `<<-EOF`, `3<<"EOF"`), in order.
fn heredocs_in(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
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
    let heredoc_error = |error: super::expand::ExpandError| ErrorKind::Heredoc {
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

/// Quotes like Go's `strconv.Quote`: `\"`, `\\`, `\n`-style escapes, `\xNN` for other control
/// bytes and `\uNNNN` for other non-printable characters.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ch if (ch as u32) < 0x20 || ch == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            }
            ch if is_go_printable(ch) => out.push(ch),
            ch if (ch as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", ch as u32)),
            ch => out.push_str(&format!("\\U{:08x}", ch as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables: control characters,
/// white space other than the ASCII space, the common format characters, private-use
/// characters and non-characters are not printable.
fn is_go_printable(ch: char) -> bool {
    if ch == ' ' {
        return true;
    }
    if ch.is_control() || ch.is_whitespace() {
        return false;
    }
    let code = ch as u32;
    let format = matches!(code,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xf0000..=0x10ffff | 0xfffe | 0xffff | 0xe0001 | 0xe0020..=0xe007f);
    !format
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(text: &str) -> String {
        parse(text).unwrap().dump()
    }

    #[test]
    fn shell_and_json_forms() {
        assert_eq!(dump("RUN echo hi\n"), "(run \"echo hi\")\n");
        assert_eq!(dump("CMD [\"a\", \"b\"]"), "(cmd \"a\" \"b\")\n");
        assert_eq!(dump("CMD ['a']"), "(cmd \"['a']\")\n");
        assert!(parse("FROM x\nRUN [\"a\", 1]").is_err());
    }

    #[test]
    fn flags_and_double_dash() {
        assert_eq!(
            dump("COPY --from=build --chown=\"a b\" -- src dst"),
            "(copy [\"--from=build\" \"--chown=a b\"] \"src\" \"dst\")\n"
        );
    }

    #[test]
    fn continuation_with_comments_and_blank_lines() {
        let tree = parse("RUN a \\\n# note\n\n  b\nRUN c").unwrap();
        assert_eq!(tree.nodes[0].args, ["a   b"]);
        assert_eq!(tree.nodes[0].span, Span::new(1, 4));
        assert_eq!(tree.nodes[1].span, Span::new(5, 5));
        assert_eq!(tree.warnings.len(), 1);
    }

    #[test]
    fn directives() {
        let tree =
            parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM a `\n  b")
                .unwrap();
        assert_eq!(tree.directives.escape, '`');
        assert_eq!(
            tree.directives.syntax.as_deref(),
            Some("docker/dockerfile:1")
        );
        assert_eq!(tree.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(tree.nodes[0].args, ["a", "b"]);
        let error = parse("# escape=x\nFROM a").unwrap_err();
        assert_eq!(error.line, Some(1));
        let error = parse("# escape=`\n# escape=`\nFROM a").unwrap_err();
        assert!(error.to_string().contains("only one escape"), "{error}");
    }

    #[test]
    fn heredocs() {
        let text = "FROM a\nRUN <<EOF bash\necho $X\nEOF\nCOPY <<-'one' 3<<two /dst/\n\tx\n\tone\ny\ntwo\nRUN done";
        let tree = parse(text).unwrap();
        let run = &tree.nodes[1];
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].content, "echo $X\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.span, Span::new(2, 4));
        let copy = &tree.nodes[2];
        assert_eq!(copy.heredocs[0].name, "one");
        assert!(!copy.heredocs[0].expand);
        assert!(copy.heredocs[0].chomp);
        assert_eq!(copy.heredocs[0].body(), "x\n");
        assert_eq!(copy.heredocs[1].fd, 3);
        assert_eq!(copy.heredocs[1].content, "y\n");
        assert_eq!(tree.nodes[3].span, Span::new(10, 10));
        assert_eq!(
            tree.dump(),
            "(from \"a\")\n(run \"<<EOF bash\")\n(copy \"<<-'one'\" \"3<<two\" \"/dst/\")\n(run \"done\")\n"
        );
    }

    /// The extraction cases of BuildKit's `parser_heredoc_test.go`: name, body, expand,
    /// chomp and file descriptor per instruction.
    #[test]
    fn heredoc_extraction_like_buildkit() {
        let text = "FROM alpine\nUSER <<INVALID\nINVALID\nRUN <<EMPTY\nEMPTY\nRUN 3<<EMPTY2\nEMPTY2\n\
            RUN \"<<NOHEREDOC\"\nRUN <<INDENT\n\tfoo\nINDENT\nRUN <<-UNINDENT2\n\tbaz\n\tUNINDENT2\n\
            RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\
            RUN <<COMMENT\n# internal comment\necho # trailing\nCOMMENT\n\
            RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\
            COPY <<X <<Y /dest\nY\nX\nX\nY\n\
            RUN <<eo'f'\necho foo\neof\nRUN <<eo\\'f\necho foo\neo'f\nRUN <<'e'o\\'f\necho foo\neo'f\n\
            RUN <<'one two'\necho bar\none two\nRUN <<$EOF\n$EOF\nRUN <<  EOF\nEOF\nRUN <<  EOF  > foo\nEOF\n\
            RUN << -EOF\n-EOF\nRUN <<- EOF\n\tEOF\n";
        let tree = parse(text).unwrap();
        type Facts = (String, String, bool, bool, u32);
        let summary: Vec<Vec<Facts>> = tree.nodes[1..]
            .iter()
            .map(|node| {
                node.heredocs
                    .iter()
                    .map(|h| (h.name.clone(), h.content.clone(), h.expand, h.chomp, h.fd))
                    .collect()
            })
            .collect();
        let one = |name: &str, content: &str, expand: bool, chomp: bool, fd: u32| {
            vec![(name.to_owned(), content.to_owned(), expand, chomp, fd)]
        };
        assert_eq!(summary[0], vec![], "USER takes no heredoc");
        assert_eq!(tree.nodes[2].instruction, "invalid");
        assert_eq!(summary[2], one("EMPTY", "", true, false, 0));
        assert_eq!(summary[3], one("EMPTY2", "", true, false, 3));
        assert_eq!(summary[4], vec![], "a quoted <<NOHEREDOC is not one");
        assert_eq!(summary[5], one("INDENT", "\tfoo\n", true, false, 0));
        assert_eq!(summary[6], one("UNINDENT2", "\tbaz\n", true, true, 0));
        assert_eq!(
            summary[7],
            one("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)
        );
        assert_eq!(
            summary[8],
            one(
                "COMMENT",
                "# internal comment\necho # trailing\n",
                true,
                false,
                0
            )
        );
        assert_eq!(summary[9], one("MOUNT", "echo hello\n", true, false, 0));
        assert_eq!(
            summary[10],
            [
                one("X", "Y\n", true, false, 0),
                one("Y", "X\n", true, false, 0)
            ]
            .concat()
        );
        assert_eq!(summary[11], one("eof", "echo foo\n", false, false, 0));
        assert_eq!(summary[12], one("eo'f", "echo foo\n", true, false, 0));
        assert_eq!(summary[13], one("eo'f", "echo foo\n", false, false, 0));
        assert_eq!(summary[14], one("one two", "echo bar\n", false, false, 0));
        assert_eq!(summary[15], one("$EOF", "", true, false, 0));
        assert_eq!(summary[16], one("EOF", "", true, false, 0));
        assert_eq!(summary[17], one("EOF", "", true, false, 0));
        assert_eq!(summary[18], one("-EOF", "", true, false, 0));
        assert_eq!(summary[19], one("EOF", "", true, true, 0));
    }

    #[test]
    fn heredoc_delimiters_like_buildkit() {
        for valid in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(
                heredoc_from_word(valid).unwrap().unwrap().name,
                "EOF",
                "{valid}"
            );
        }
        for invalid in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(heredoc_from_word(invalid).is_err(), "{invalid}");
        }
        for not_heredoc in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(
                heredoc_from_word(not_heredoc).unwrap(),
                None,
                "{not_heredoc}"
            );
        }
    }

    #[test]
    fn heredoc_not_in_json_form_or_other_instructions() {
        let tree = parse("FROM a\nRUN [\"<<EOF\"]\nLABEL a=<<EOF\n").unwrap();
        assert!(tree.nodes.iter().all(|node| node.heredocs.is_empty()));
    }

    #[test]
    fn unterminated_heredoc_names_its_line() {
        let error = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(error.line, Some(2));
        assert_eq!(
            error.kind,
            ErrorKind::UnterminatedHeredoc { name: "EOF".into() }
        );
    }

    #[test]
    fn prev_comment_is_the_block_right_above() {
        let tree = parse(
            "# syntax=docker/dockerfile:1\n# VERSION the version\nARG VERSION=1\n# far\n\n# near\n#\n# nearest\nFROM a AS b\n",
        )
        .unwrap();
        assert_eq!(tree.nodes[0].prev_comment, ["VERSION the version"]);
        assert_eq!(tree.nodes[1].prev_comment, ["nearest"]);
        assert_eq!(tree.nodes[1].comments.len(), 4);
    }

    #[test]
    fn onbuild_holds_an_instruction() {
        assert_eq!(dump("ONBUILD RUN [\"a\"]"), "(onbuild (run \"a\"))\n");
    }

    #[test]
    fn empty_files_are_errors() {
        assert_eq!(parse("").unwrap_err().kind, ErrorKind::Empty);
        assert_eq!(parse("# just\n\n").unwrap_err().line, Some(2));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(
            go_quote("a\"b\\c\u{0}\u{7f}é\u{a0}"),
            "\"a\\\"b\\\\c\\x00\\x7fé\\u00a0\""
        );
    }
}

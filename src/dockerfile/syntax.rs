//! Text to tree: parser directives, comments, line continuations, heredocs, and the
//! per-instruction argument forms (JSON or shell, key-value pairs, whitespace lists). Nothing
//! here knows what an instruction means; [`super::instruction`] types the tree.
//!
//! The tree is BuildKit's (`frontend/dockerfile/parser`): one [`Node`] per instruction with its
//! lower-cased name, its `--flags`, its arguments and its line span. [`Dockerfile::dump`]
//! renders BuildKit's s-expression dump, which the conformance data checks byte for byte.
//!
//! The files: this one reads lines (directives, comments, continuations, heredoc bodies);
//! `line` splits one logical line into instruction, flags and arguments in the instruction's
//! form; `heredoc` finds the heredocs a line announces; `quote` is Go's string quoting for
//! the dump.

use super::error::{DockerfileError, ErrorKind, Span};

mod heredoc;
mod line;
mod quote;

pub(crate) use heredoc::heredoc_from_word;
use heredoc::{can_contain_heredoc, heredocs_in};
use line::node_from_line;
pub(crate) use line::{Json, parse_json};
pub use quote::go_quote;

/// Parser directives from the comment lines at the top (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    /// `# syntax=` (the frontend image BuildKit would run; checked by
    /// [`super::frontend::check_syntax`]: only `docker/dockerfile:1...` is built, by xbuild
    /// itself).
    pub syntax: Option<String>,
    /// The line of `# syntax=`.
    pub syntax_line: Option<usize>,
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` (lint configuration; recorded).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            syntax: None,
            syntax_line: None,
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

/// Parses Dockerfile text into the tree.
///
/// # Errors
/// Bad directives, unterminated heredocs, JSON arrays of non-strings, `ENV`/`LABEL` without a
/// value, and a file with no instruction.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let mut dockerfile = Parser::new(text).run()?;
    if dockerfile.directives.syntax.is_none() {
        if let Some((value, line)) = syntax_after_shebang(text) {
            dockerfile.directives.syntax = Some(value);
            dockerfile.directives.syntax_line = Some(line);
        }
    }
    Ok(dockerfile)
}

/// BuildKit looks for `# syntax=` after a first `#!` line too (`DetectSyntax`), though that
/// line ends the other directives: the directive lines right after the shebang, read the
/// same way as at the top.
fn syntax_after_shebang(text: &str) -> Option<(String, usize)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    if !lines.next()?.starts_with("#!") {
        return None;
    }
    for (index, line) in lines.enumerate() {
        let (key, value) = parse_directive(trim_newline(line))?;
        match key.to_lowercase().as_str() {
            "syntax" => return Some((value.to_owned(), index + 2)),
            "escape" | "check" => {}
            _ => return None,
        }
    }
    None
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
            "syntax" => {
                self.directives.syntax = Some(value.to_owned());
                self.directives.syntax_line = Some(self.line);
            }
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
    fn syntax_directive_line_and_after_a_shebang() {
        let tree = parse("# escape=`\n#syntax = docker/dockerfile:1.7\nFROM a").unwrap();
        assert_eq!(
            tree.directives.syntax.as_deref(),
            Some("docker/dockerfile:1.7")
        );
        assert_eq!(tree.directives.syntax_line, Some(2));
        // BuildKit's DetectSyntax skips a first `#!` line; the directives after it are read.
        let tree =
            parse("#!/usr/bin/env xbuild\n# check=skip=all\n# syntax=foobar\nFROM a").unwrap();
        assert_eq!(tree.directives.syntax.as_deref(), Some("foobar"));
        assert_eq!(tree.directives.syntax_line, Some(3));
        assert_eq!(
            tree.directives.check, None,
            "the shebang ends the other directives"
        );
        let tree = parse("#!/bin/sh\n# a comment\n# syntax=foobar\nFROM a").unwrap();
        assert_eq!(tree.directives.syntax, None);
        let tree = parse("FROM a\n# syntax=foobar\n").unwrap();
        assert_eq!(tree.directives.syntax, None);
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

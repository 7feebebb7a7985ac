//! Shell-style word expansion, as Dockerfile instructions do it: quotes (`'...'`, `"..."`),
//! the escape character (`\` or the `# escape=` one), `$VAR`, `${VAR}` and the modifiers
//! `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`,
//! `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`, `${VAR/pat/repl}`,
//! `${VAR//pat/repl}` (patterns with `*` and `?`).
//!
//! No command substitution, no arithmetic, no globbing: the shell of a `RUN` does that, not
//! us. Behaviour follows BuildKit's `shell/lex.go` and is checked against its `envVarTest` and
//! `wordsTest` tables (tests at the bottom read them in place).

use std::collections::{BTreeMap, HashMap};

/// Where variables come from.
pub trait Variables {
    /// The value of `name`, if set (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Variables for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Variables for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Variables for [(String, String)] {
    /// The last entry wins, as with repeated `ENV` lines.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Variables for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A quote that is never closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// `${X/pat` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${X:?message}` with `X` unset (or empty).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message given, or the default one.
        message: String,
    },
    /// `${X:=y}` and other modifiers we (and BuildKit) do not support.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// A bad `#`/`%`/`/` pattern.
    #[error("invalid pattern ({pattern}) in substitution: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The result of expanding one word: the expanded text, and the same split into words at
/// unquoted white space (spaces coming from variable values split too, as in a shell).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The whole expanded text, white space kept.
    pub text: String,
    /// The words.
    pub words: Vec<String>,
}

/// A configured expander. [`Expander::new`] gives the Dockerfile behaviour: quotes removed,
/// escapes applied, unset variables empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expander {
    /// The escape character (`\`, or `` ` `` with `# escape=``).
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written (`$X`, `${X:-y}`).
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
}

impl Expander {
    /// The Dockerfile expander for `escape`.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// The expander for `COPY`/`ADD` heredoc bodies with an unquoted delimiter, as BuildKit's
    /// (`SkipProcessQuotes`): variables expand, quotes stay as written, and the escape
    /// character escapes the next one (`\\` is `\`, `\$` is `$`, a backslash before a newline
    /// leaves the newline). BuildKit uses `\` here whatever `# escape=` says.
    pub fn heredoc(escape: char) -> Self {
        Self {
            skip_quotes: true,
            ..Self::new(escape)
        }
    }

    /// Expands `word` with `vars`.
    ///
    /// # Errors
    /// Unterminated quotes or `${`, bad substitutions, `${X:?msg}` with `X` unset.
    pub fn expand(&self, word: &str, vars: &dyn Variables) -> Result<Expansion, ExpandError> {
        let mut state = State {
            lexer: *self,
            chars: word.chars().collect(),
            position: 0,
            vars,
            raw_escapes: self.raw_escapes,
        };
        let (text, words) = state.until(None, self.raw_escapes)?;
        Ok(Expansion { text, words })
    }
}

/// Expands one word the Dockerfile way (quotes removed, unset variables empty).
///
/// # Errors
/// As [`Expander::expand`].
pub fn expand_word(word: &str, vars: &dyn Variables, escape: char) -> Result<String, ExpandError> {
    Expander::new(escape).expand(word, vars).map(|e| e.text)
}

/// Expands `text` and splits it into words, the way `COPY a "b c" d` is read.
///
/// # Errors
/// As [`Expander::expand`].
pub fn split_words(
    text: &str,
    vars: &dyn Variables,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    Expander::new(escape).expand(text, vars).map(|e| e.words)
}

/// Word splitting state.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct State<'a> {
    lexer: Expander,
    chars: Vec<char>,
    position: usize,
    vars: &'a dyn Variables,
    raw_escapes: bool,
}

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.position += 1;
        Some(ch)
    }

    /// Reads up to `stop` (consumed) or the end, returning the text and its words.
    fn until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn until_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.position += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' if !self.lexer.skip_quotes => {
                    let value = self.single_quoted()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if !self.lexer.skip_quotes => {
                    let value = self.double_quoted()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.position += 1;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape escapes the next character; at the end it vanishes.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some('}') => Err(ExpandError::Unterminated("}")),
            Some(_) => Err(ExpandError::Unterminated("/")),
            None => Ok((result, words.finish())),
        }
    }

    /// `'...'`: everything literal, no escapes.
    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let quote = self.next();
        if self.lexer.raw_quotes {
            result.extend(quote);
        }
        loop {
            match self.next() {
                None => return Err(ExpandError::Unterminated("single-quote")),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: `$` expands; the escape only escapes `"`, `$` and itself.
    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let quote = self.next();
        if self.lexer.raw_quotes {
            result.extend(quote);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandError::Unterminated("double-quote")),
                Some('"') => {
                    self.position += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.position += 1;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                ch = next;
                                self.position += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.lookup(name).map(str::to_owned)
    }

    /// `$NAME` or `${...}`, with the `$` next.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.position += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.position += 1;
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(ExpandError::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(&name, ch),
            '/' => self.replace(&name),
            other => Err(ExpandError::UnsupportedModifier(other.to_string())),
        }
    }

    /// `${NAME<op>word}` with `first` the character after the name.
    fn modifier(&mut self, name: &str, first: char) -> Result<String, ExpandError> {
        let mut operator = first.to_string();
        let null_is_unset = first == ':';
        let modifier = if null_is_unset {
            let Some(next) = self.next() else {
                return Err(ExpandError::MissingBrace);
            };
            operator.push(next);
            next
        } else {
            first
        };
        let (word, _) = self
            .until(Some('}'), modifier == '#' || modifier == '%')
            .map_err(|error| {
                if self.peek().is_none() {
                    ExpandError::MissingBrace
                } else {
                    error
                }
            })?;
        let value = self.lookup(name);
        if self.lexer.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{operator}{word}}}"));
        }
        let is_unset = match &value {
            None => true,
            Some(value) => null_is_unset && value.is_empty(),
        };
        match modifier {
            '-' => Ok(if is_unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if is_unset { String::new() } else { word }),
            '?' => match value {
                None => Err(ExpandError::Required {
                    name: name.to_owned(),
                    message: non_empty_or(word, "is not allowed to be unset"),
                }),
                Some(value) if null_is_unset && value.is_empty() => Err(ExpandError::Required {
                    name: name.to_owned(),
                    message: non_empty_or(word, "is not allowed to be empty"),
                }),
                Some(value) => Ok(value),
            },
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(modifier) {
                    Some(rest) => (true, rest.to_owned()),
                    None => (false, word),
                };
                let compiled = Pattern::parse(&pattern)?;
                Ok(if modifier == '#' {
                    compiled.trim_prefix(&value, greedy)
                } else {
                    compiled.trim_suffix(&value, greedy)
                })
            }
            _ => Err(ExpandError::UnsupportedModifier(operator)),
        }
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`, after the first `/`.
    fn replace(&mut self, name: &str) -> Result<String, ExpandError> {
        let all = self.peek() == Some('/');
        if all {
            self.position += 1;
        }
        let (pattern, _) = self.until(Some('/'), true).map_err(|error| {
            if self.peek().is_none() {
                ExpandError::MissingSlash
            } else {
                error
            }
        })?;
        let (replacement, _) = self.until(Some('}'), true).map_err(|error| {
            if self.peek().is_none() {
                ExpandError::MissingBrace
            } else {
                error
            }
        })?;
        let value = self.lookup(name);
        let Some(value) = value else {
            if self.lexer.skip_unset {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        Ok(Pattern::parse(&pattern)?.replace(&value, &replacement, all))
    }

    /// A variable name: letters, digits and `_`; or all digits (positional); or one special
    /// parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(digit) = self.peek().filter(char::is_ascii_digit) {
                    name.push(digit);
                    self.position += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.position += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.position += 1;
        }
        name
    }
}

fn non_empty_or(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}

/// One element of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    Any,
    /// A literal character.
    Literal(char),
}

/// A shell pattern with `*` and `?` (no bracket expressions, as in BuildKit). Like the regular
/// expressions BuildKit compiles them to, `*` and `?` do not match a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Piece>);

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, ExpandError> {
        let mut pieces = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(ch) = chars.next() {
            pieces.push(match ch {
                '*' => Piece::Star,
                '?' => Piece::Any,
                '\\' => match chars.peek() {
                    // `\}` and `\/` only protect the character from ending the ${}.
                    Some('}' | '/') => continue,
                    Some(&next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Piece::Literal(next)
                    }
                    other => {
                        return Err(ExpandError::Pattern {
                            pattern: pattern.to_owned(),
                            message: format!(
                                "invalid escape '\\{}'",
                                other.map(char::to_string).unwrap_or_default()
                            ),
                        });
                    }
                },
                other => Piece::Literal(other),
            });
        }
        Ok(Self(pieces))
    }

    /// Where a match of `pieces` starting at `position` ends, trying longer (`greedy`) or
    /// shorter stars first, as a backtracking regular expression engine would.
    fn match_at(pieces: &[Piece], text: &[char], position: usize, greedy: bool) -> Option<usize> {
        let Some((first, rest)) = pieces.split_first() else {
            return Some(position);
        };
        match first {
            Piece::Literal(ch) => (text.get(position) == Some(ch))
                .then(|| Self::match_at(rest, text, position + 1, greedy))
                .flatten(),
            Piece::Any => text
                .get(position)
                .filter(|ch| **ch != '\n')
                .and_then(|_| Self::match_at(rest, text, position + 1, greedy)),
            Piece::Star => {
                let limit = text[position..]
                    .iter()
                    .position(|ch| *ch == '\n')
                    .map_or(text.len(), |offset| position + offset);
                if greedy {
                    (position..=limit)
                        .rev()
                        .find_map(|end| Self::match_at(rest, text, end, greedy))
                } else {
                    (position..=limit).find_map(|end| Self::match_at(rest, text, end, greedy))
                }
            }
        }
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let text: Vec<char> = value.chars().collect();
        match Self::match_at(&self.0, &text, 0, greedy) {
            Some(end) => text[end..].iter().collect(),
            None => value.to_owned(),
        }
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let reversed = Self(self.0.iter().rev().copied().collect());
        let text: Vec<char> = value.chars().rev().collect();
        match Self::match_at(&reversed.0, &text, 0, greedy) {
            Some(end) => text[end..].iter().rev().collect(),
            None => value.to_owned(),
        }
    }

    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let text: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut copied = 0;
        let mut search = 0;
        let mut last_end = None;
        while search <= text.len() {
            let Some((start, end)) = (search..=text.len()).find_map(|start| {
                Self::match_at(&self.0, &text, start, true).map(|end| (start, end))
            }) else {
                break;
            };
            // An empty match right after the previous match is skipped (Go's rule).
            if !(start == end && last_end == Some(start)) {
                out.extend(&text[copied..start]);
                out.push_str(replacement);
                copied = end;
                last_end = Some(end);
                if !all {
                    break;
                }
            }
            search = if end > start { end } else { start + 1 };
        }
        out.extend(&text[copied..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rstest::rstest;

    use super::*;

    /// BuildKit's shell tables, read in place (missing data fails the test).
    fn shell_data(name: &str) -> String {
        let dir = match std::env::var_os("XBUILD_CONFORMANCE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|dir| dir.join("shared").join("conformance"))
                .find(|dir| dir.is_dir())
                .expect("shared/conformance above the crate (or XBUILD_CONFORMANCE_DIR)"),
        };
        let path = dir.join("buildkit").join("shell").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn buildkit_env_var_test() {
        let env = vars(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let mut checked = 0;
        let mut failures = Vec::new();
        for line in shell_data("envVarTest").lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 3, "bad line {line:?}");
            let platform = fields[0].trim();
            if platform == "W" {
                continue;
            }
            let source = fields[1].trim();
            let expected = fields[2].trim();
            let got = expand_word(source, &env, '\\');
            let ok = match (&got, expected) {
                (Err(_), "error") => true,
                (Ok(word), expected) => word == expected,
                _ => false,
            };
            if !ok {
                failures.push(format!("{source:?}: expected {expected:?}, got {got:?}"));
            }
            checked += 1;
        }
        assert!(checked > 200, "only {checked} lines read");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn buildkit_words_test() {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut checked = 0;
        let mut failures = Vec::new();
        for line in shell_data("wordsTest").lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("ENV ") {
                let rest = rest.trim_start_matches(' ');
                let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
                env.push((key.to_owned(), value.to_owned()));
                continue;
            }
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(fields.len(), 2, "bad line {line:?}");
            let source = fields[0].trim();
            let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
            let got = split_words(source, &env, '\\').unwrap_or_else(|_| vec!["error".into()]);
            if got != expected {
                failures.push(format!("{source:?}: expected {expected:?}, got {got:?}"));
            }
            checked += 1;
        }
        assert!(checked > 20, "only {checked} lines read");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[rstest]
    #[case("${X#*/}", "a/b/c", "b/c")]
    #[case("${X##*/}", "a/b/c", "c")]
    #[case("${X%/*}", "a/b/c", "a/b")]
    #[case("${X%%/*}", "a/b/c", "a")]
    #[case("${X/b/B}", "abab", "aBab")]
    #[case("${X//b/B}", "abab", "aBaB")]
    #[case("${X/?b/_}", "abab", "_ab")]
    #[case("${X#\\*}", "*x", "x")]
    #[case("${X%.tar.gz}", "app.tar.gz", "app")]
    fn patterns(#[case] word: &str, #[case] value: &str, #[case] expected: &str) {
        assert_eq!(
            expand_word(word, &vars(&[("X", value)]), '\\').unwrap(),
            expected
        );
    }

    #[test]
    fn backtick_escape() {
        let env = vars(&[("A", "x")]);
        assert_eq!(expand_word("`$A$A", &env, '`').unwrap(), "$Ax");
        assert_eq!(expand_word("C:\\dir", &env, '`').unwrap(), "C:\\dir");
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lexer = Expander {
            skip_unset: true,
            ..Expander::new('\\')
        };
        let env = vars(&[("A", "x")]);
        assert_eq!(
            lexer.expand("$A $B ${C:-d}", &env).unwrap().text,
            "x $B ${C:-d}"
        );
    }

    #[test]
    fn heredoc_bodies_expand_variables_and_escapes_not_quotes() {
        let env = vars(&[("A", "x")]);
        let text = Expander::heredoc('\\')
            .expand("echo \"$A\" '${A}' \\n\n", &env)
            .unwrap()
            .text;
        assert_eq!(text, "echo \"x\" 'x' n\n");
        // BuildKit's testCopyHeredocSpecialSymbols: `\` + newline, `\\`, `\$`.
        let body = |text: &str| Expander::heredoc('\\').expand(text, &env).unwrap().text;
        assert_eq!(body("\\\n"), "\n");
        assert_eq!(body("\\\\\n"), "\\\n");
        assert_eq!(body("\\$\n"), "$\n");
        assert_eq!(body("\"quotes in file\"\n"), "\"quotes in file\"\n");
    }

    #[test]
    fn required_variable_message() {
        let error = expand_word("${X:?set X please}", &vars(&[]), '\\').unwrap_err();
        assert_eq!(error.to_string(), "X: set X please");
    }
}

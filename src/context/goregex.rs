//! Translates the Go regexp strings that patternmatcher builds into the `regex` crate's
//! syntax, with Go's meaning and Go's errors.
//!
//! The two dialects agree on most of what patternmatcher emits, but not all of it, and a
//! pattern's regexp is partly user text (`[...]` classes and `\` escapes pass through). The
//! differences that matter here, all handled by parsing the Go string the way Go's
//! `regexp/syntax` does (Perl flags) and emitting explicit Rust syntax:
//! - inside a class Go reads `[` as a literal (`[*]` becomes `[[^/]*]`: a class of `[`, `^`,
//!   `/`, repeated, then `]`), Rust as a nested class; `&&`, `--`, `~~` are set operations in
//!   Rust only;
//! - Go's `\d`, `\s`, `\w`, `\b` are ASCII-only, Rust's are Unicode;
//! - Go has `\Q...\E`, octal escapes (`\012`) and `\C` (an error); Rust has none of these,
//!   and Rust reads `\<`, `\>` as word boundaries where Go reads literals;
//! - Go's `\pC` leaves out unassigned code points, Rust's includes them.
//!
//! Every literal is emitted as `\x{..}`, every class as explicit ranges, so nothing else
//! depends on the Rust parser agreeing with Go's.

use std::fmt::Write as _;

/// Translates a Go (RE2, Perl flags) regexp into an equivalent `regex` crate pattern.
///
/// # Errors
/// Where Go's `regexp.Compile` fails: the message names the offending part as Go does.
pub(crate) fn translate(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut translator = Translator {
        s: &chars,
        i: 0,
        out: String::with_capacity(go.len() * 4),
        depth: 0,
        can_repeat: false,
        last_was_repeat: false,
    };
    translator.run()?;
    Ok(translator.out)
}

struct Translator<'a> {
    s: &'a [char],
    i: usize,
    out: String,
    /// Open groups.
    depth: usize,
    /// Whether the last item can take a repetition operator (Go: the stack top is not a
    /// left parenthesis or `|` marker, and the stack is not empty).
    can_repeat: bool,
    /// Whether the last item was a repetition operator (`a**` is an error in Go).
    last_was_repeat: bool,
}

/// `(lo, hi)` code point ranges.
type Ranges = &'static [(u32, u32)];

const DIGIT: Ranges = &[(0x30, 0x39)];
/// Go's Perl `\s`: `[\t\n\f\r ]`.
const PERL_SPACE: Ranges = &[(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)];
const WORD: Ranges = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];

/// Go's POSIX classes (`regexp/syntax/perl_groups.go`).
fn posix_class(name: &str) -> Option<Ranges> {
    Some(match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
        "alpha" => &[(0x41, 0x5A), (0x61, 0x7A)],
        "ascii" => &[(0x00, 0x7F)],
        "blank" => &[(0x09, 0x09), (0x20, 0x20)],
        "cntrl" => &[(0x00, 0x1F), (0x7F, 0x7F)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7E)],
        "lower" => &[(0x61, 0x7A)],
        "print" => &[(0x20, 0x7E)],
        "punct" => &[(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
        "space" => &[(0x09, 0x0D), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5A)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    })
}

/// Go's Perl class escapes: `\d \s \w` and their negations.
fn perl_class(letter: char) -> Option<(Ranges, bool)> {
    Some(match letter {
        'd' => (DIGIT, false),
        'D' => (DIGIT, true),
        's' => (PERL_SPACE, false),
        'S' => (PERL_SPACE, true),
        'w' => (WORD, false),
        'W' => (WORD, true),
        _ => return None,
    })
}

/// A Rust class (`[...]` or `[^...]`) holding `ranges`.
fn class_of(ranges: Ranges, negated: bool) -> String {
    let mut class = String::from(if negated { "[^" } else { "[" });
    for &(lo, hi) in ranges {
        push_range(&mut class, lo, hi);
    }
    class.push(']');
    class
}

fn push_range(out: &mut String, lo: u32, hi: u32) {
    if lo == hi {
        let _ = write!(out, "\\x{{{lo:X}}}");
    } else {
        let _ = write!(out, "\\x{{{lo:X}}}-\\x{{{hi:X}}}");
    }
}

/// Go's `parseInt` for repeat counts: digits without a leading zero; values past 10^8 are
/// clamped to 1001 (an invalid count either way).
fn parse_int(s: &[char], i: &mut usize) -> Option<u32> {
    let start = *i;
    if !s.get(start).is_some_and(char::is_ascii_digit) {
        return None;
    }
    if s[start] == '0' && s.get(start + 1).is_some_and(char::is_ascii_digit) {
        return None;
    }
    let mut value: u32 = 0;
    while let Some(d) = s.get(*i).and_then(|c| c.to_digit(10)) {
        value = if value >= 100_000_000 {
            1001
        } else {
            value * 10 + d
        };
        *i += 1;
    }
    Some(value)
}

fn is_octal(c: Option<&char>) -> bool {
    matches!(c, Some('0'..='7'))
}

impl Translator<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    /// The Go text from `start` to the current position, for error messages.
    fn text(&self, start: usize) -> String {
        self.s[start..self.i.min(self.s.len())].iter().collect()
    }

    fn atom(&mut self, rust: &str) {
        self.out.push_str(rust);
        self.can_repeat = true;
    }

    fn literal(&mut self, c: char) {
        if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
            self.out.push(c);
        } else {
            let _ = write!(self.out, "\\x{{{:X}}}", u32::from(c));
        }
        self.can_repeat = true;
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(c) = self.peek() {
            let start = self.i;
            self.i += 1;
            let was_repeat = std::mem::replace(&mut self.last_was_repeat, false);
            match c {
                '(' => {
                    self.out.push_str("(?:");
                    self.depth += 1;
                    self.can_repeat = false;
                }
                ')' => {
                    if self.depth == 0 {
                        return Err(format!("unexpected ): `{}`", self.text(0)));
                    }
                    self.depth -= 1;
                    self.atom(")");
                }
                '|' => {
                    self.out.push('|');
                    self.can_repeat = false;
                }
                // Perl flags include OneLine: `^` and `$` anchor the whole text.
                '^' => self.atom("(?:\\A)"),
                '$' => self.atom("(?:\\z)"),
                // Without DotNL, `.` is any character but newline, as in Rust.
                '.' => self.atom("."),
                '*' | '+' | '?' => {
                    let mut operator = c.to_string();
                    if self.peek() == Some('?') {
                        self.i += 1;
                        operator.push('?');
                    }
                    if was_repeat {
                        return Err(format!(
                            "invalid nested repetition operator: `{}`",
                            self.text(start.saturating_sub(1))
                        ));
                    }
                    if !self.can_repeat {
                        return Err(format!(
                            "missing argument to repetition operator: `{}`",
                            self.text(start)
                        ));
                    }
                    self.out.push_str(&operator);
                    self.last_was_repeat = true;
                }
                '{' => match self.repeat_range() {
                    // Not a valid `{n}`, `{n,}` or `{n,m}`: a literal `{`.
                    None => self.literal('{'),
                    Some((min, max)) => {
                        if min > 1000 || max.is_some_and(|max| max > 1000 || min > max) {
                            return Err(format!("invalid repeat count: `{}`", self.text(start)));
                        }
                        if self.peek() == Some('?') {
                            self.i += 1;
                        }
                        if was_repeat {
                            return Err(format!(
                                "invalid nested repetition operator: `{}`",
                                self.text(start)
                            ));
                        }
                        if !self.can_repeat {
                            return Err(format!(
                                "missing argument to repetition operator: `{}`",
                                self.text(start)
                            ));
                        }
                        match max {
                            Some(max) if max == min => {
                                let _ = write!(self.out, "{{{min}}}");
                            }
                            Some(max) => {
                                let _ = write!(self.out, "{{{min},{max}}}");
                            }
                            None => {
                                let _ = write!(self.out, "{{{min},}}");
                            }
                        }
                        self.last_was_repeat = true;
                    }
                },
                '[' => self.class(start)?,
                '\\' => self.escape(start)?,
                _ => self.literal(c),
            }
        }
        if self.depth > 0 {
            return Err(format!("missing closing ): `{}`", self.text(0)));
        }
        Ok(())
    }

    /// Go's `parseRepeat`, positioned after a `{`: `{n}`, `{n,}` or `{n,m}` (no leading
    /// zeros) is consumed and returned (`None` for no maximum); anything else is not a
    /// repetition and nothing is consumed. A count too large to parse comes back as 1001.
    fn repeat_range(&mut self) -> Option<(u32, Option<u32>)> {
        let mut i = self.i;
        let min = parse_int(self.s, &mut i)?;
        let max = match self.s.get(i) {
            Some('}') => Some(min),
            Some(',') => {
                i += 1;
                if self.s.get(i) == Some(&'}') {
                    None
                } else {
                    Some(parse_int(self.s, &mut i)?)
                }
            }
            _ => return None,
        };
        if self.s.get(i) != Some(&'}') {
            return None;
        }
        self.i = i + 1;
        Some((min, max))
    }

    /// After a `\` outside a class.
    fn escape(&mut self, start: usize) -> Result<(), String> {
        let Some(c) = self.peek() else {
            return Err("trailing backslash at end of expression".to_string());
        };
        match c {
            'A' => {
                self.i += 1;
                self.atom("(?:\\A)");
            }
            'z' => {
                self.i += 1;
                self.atom("(?:\\z)");
            }
            // Go's word boundaries are ASCII.
            'b' => {
                self.i += 1;
                self.atom("(?:(?-u:\\b))");
            }
            'B' => {
                self.i += 1;
                self.atom("(?:(?-u:\\B))");
            }
            'C' => {
                self.i += 1;
                return Err(format!("invalid escape sequence: `{}`", self.text(start)));
            }
            'Q' => {
                self.i += 1;
                // Literal text up to `\E` or the end.
                while let Some(c) = self.peek() {
                    if c == '\\' && self.s.get(self.i + 1) == Some(&'E') {
                        self.i += 2;
                        break;
                    }
                    self.i += 1;
                    self.literal(c);
                }
            }
            'p' | 'P' => {
                let class = self.unicode_class(start)?;
                self.atom(&format!("[{class}]"));
            }
            _ => {
                if let Some((ranges, negated)) = perl_class(c) {
                    self.i += 1;
                    self.atom(&class_of(ranges, negated));
                } else {
                    let c = self.parse_escape(start)?;
                    self.literal(c);
                }
            }
        }
        Ok(())
    }

    /// Go's `parseEscape`, positioned after the `\`: a single escaped character.
    fn parse_escape(&mut self, start: usize) -> Result<char, String> {
        let invalid = |this: &Self| format!("invalid escape sequence: `{}`", this.text(start));
        let Some(c) = self.peek() else {
            return Err("trailing backslash at end of expression".to_string());
        };
        self.i += 1;
        match c {
            '1'..='7' if !is_octal(self.s.get(self.i)) => Err(invalid(self)),
            '0'..='7' => {
                let mut value = c as u32 - '0' as u32;
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            value = value * 8 + (d as u32 - '0' as u32);
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(value).ok_or_else(|| invalid(self))
            }
            'x' => {
                let Some(first) = self.peek() else {
                    return Err(invalid(self));
                };
                self.i += 1;
                if first == '{' {
                    let mut value: u32 = 0;
                    let mut digits = 0;
                    loop {
                        let Some(d) = self.peek() else {
                            return Err(invalid(self));
                        };
                        self.i += 1;
                        if d == '}' {
                            break;
                        }
                        let Some(v) = d.to_digit(16) else {
                            return Err(invalid(self));
                        };
                        value = value * 16 + v;
                        if value > 0x10FFFF {
                            return Err(invalid(self));
                        }
                        digits += 1;
                    }
                    if digits == 0 {
                        return Err(invalid(self));
                    }
                    return char::from_u32(value).ok_or_else(|| invalid(self));
                }
                let second = self.peek();
                if second.is_some() {
                    self.i += 1;
                }
                match (first.to_digit(16), second.and_then(|d| d.to_digit(16))) {
                    (Some(x), Some(y)) => char::from_u32(x * 16 + y).ok_or_else(|| invalid(self)),
                    _ => Err(invalid(self)),
                }
            }
            'a' => Ok('\u{7}'),
            'f' => Ok('\u{c}'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\u{b}'),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            _ => Err(invalid(self)),
        }
    }

    /// Go's `parseUnicodeClass`, positioned at the `p` or `P` after a `\`: the Rust class
    /// items (without brackets).
    fn unicode_class(&mut self, start: usize) -> Result<String, String> {
        let mut negated = self.peek() == Some('P');
        self.i += 1;
        let mut name = String::new();
        match self.peek() {
            Some('{') => {
                self.i += 1;
                loop {
                    match self.peek() {
                        None => {
                            return Err(format!(
                                "invalid character class range: `{}`",
                                self.text(start)
                            ));
                        }
                        Some('}') => {
                            self.i += 1;
                            break;
                        }
                        Some(c) => {
                            self.i += 1;
                            name.push(c);
                        }
                    }
                }
            }
            Some(c) => {
                self.i += 1;
                name.push(c);
            }
            None => {}
        }
        if let Some(rest) = name.strip_prefix('^') {
            negated = !negated;
            name = rest.to_string();
        }
        let bad = || format!("invalid character class range: `{}`", self.text(start));
        let p = if negated { 'P' } else { 'p' };
        Ok(match name.as_str() {
            "Any" if negated => "[^\\x{0}-\\x{10FFFF}]".to_string(),
            "Any" => "\\x{0}-\\x{10FFFF}".to_string(),
            // Go's `C` (Other) is Cc, Cf, Co, Cs: unassigned code points are not in it.
            "C" if negated => "[^\\p{Cc}\\p{Cf}\\p{Co}]".to_string(),
            "C" => "\\p{Cc}\\p{Cf}\\p{Co}".to_string(),
            "L" | "M" | "N" | "P" | "S" | "Z" => format!("\\{p}{{{name}}}"),
            // Only reachable with braces, which patternmatcher always escapes; Rust knows
            // the same category and script names (and a few aliases Go does not).
            _ if name.len() > 1
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && regex::Regex::new(&format!("\\p{{{name}}}")).is_ok() =>
            {
                format!("\\{p}{{{name}}}")
            }
            _ => return Err(bad()),
        })
    }

    /// Go's `parseClass`, positioned after the `[`.
    fn class(&mut self, start: usize) -> Result<(), String> {
        let mut items = String::new();
        let negated = self.peek() == Some('^');
        if negated {
            self.i += 1;
        }
        let missing = |this: &Self| format!("missing closing ]: `{}`", this.text(start));
        let mut first = true;
        loop {
            if self.peek() == Some(']') && !first {
                self.i += 1;
                break;
            }
            first = false;
            let here = self.i;
            // POSIX `[:alpha:]` (Go searches for `:]` anywhere after `[:`).
            if self.peek() == Some('[')
                && self.s.get(self.i + 1) == Some(&':')
                && self.s.len() - self.i > 2
            {
                let rest = &self.s[self.i + 2..];
                if let Some(end) = rest.windows(2).position(|w| w == [':', ']']) {
                    let name: String = rest[..end].iter().collect();
                    self.i += 2 + end + 2;
                    let (name, negated_group) = match name.strip_prefix('^') {
                        Some(name) => (name.to_string(), true),
                        None => (name, false),
                    };
                    let Some(ranges) = posix_class(&name) else {
                        return Err(format!(
                            "invalid character class range: `{}`",
                            self.text(here)
                        ));
                    };
                    push_group(&mut items, ranges, negated_group);
                    continue;
                }
            }
            if self.peek() == Some('\\') {
                match self.s.get(self.i + 1) {
                    Some('p' | 'P') => {
                        self.i += 1;
                        let class = self.unicode_class(here)?;
                        items.push_str(&class);
                        continue;
                    }
                    Some(&c) => {
                        if let Some((ranges, negated_group)) = perl_class(c) {
                            self.i += 2;
                            push_group(&mut items, ranges, negated_group);
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let lo = self.class_char(start, &missing)?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&c| c != ']') {
                self.i += 1;
                hi = self.class_char(start, &missing)?;
                if hi < lo {
                    return Err(format!(
                        "invalid character class range: `{}`",
                        self.text(here)
                    ));
                }
            }
            push_range(&mut items, u32::from(lo), u32::from(hi));
        }
        let class = if negated {
            format!("[^{items}]")
        } else {
            format!("[{items}]")
        };
        self.atom(&class);
        Ok(())
    }

    /// Go's `parseClassChar`.
    fn class_char(
        &mut self,
        start: usize,
        missing: &dyn Fn(&Self) -> String,
    ) -> Result<char, String> {
        match self.peek() {
            None => Err(missing(self)),
            Some('\\') => {
                self.i += 1;
                self.parse_escape(start)
            }
            Some(c) => {
                self.i += 1;
                Ok(c)
            }
        }
    }
}

/// Adds a named group to a class being built: its ranges, or a nested negated class.
fn push_group(items: &mut String, ranges: Ranges, negated: bool) {
    if negated {
        items.push_str(&class_of(ranges, true));
    } else {
        for &(lo, hi) in ranges {
            push_range(items, lo, hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(go: &str, text: &str) -> bool {
        let rust = translate(go).unwrap_or_else(|error| panic!("{go}: {error}"));
        regex::Regex::new(&rust)
            .unwrap_or_else(|error| panic!("{go} as {rust}: {error}"))
            .is_match(text)
    }

    #[test]
    fn bracket_inside_a_class_is_a_literal_as_in_go() {
        // The glob `[*]` becomes `[[^/]*]`: a class of `[`, `^`, `/`, repeated, then `]`.
        assert!(is_match("^[[^/]*]$", "]"));
        assert!(is_match("^[[^/]*]$", "[^/]"));
        assert!(!is_match("^[[^/]*]$", "*"));
        assert!(!is_match("^[[^/]*]$", "a]"));
    }

    #[test]
    fn perl_classes_and_word_boundaries_are_ascii() {
        assert!(is_match(r"^file\d\.txt$", "file1.txt"));
        assert!(!is_match(r"^file\d\.txt$", "file\u{663}.txt"));
        assert!(!is_match(r"^\w$", "é"));
        assert!(is_match(r"^a\b", "a"));
    }

    #[test]
    fn go_only_escapes() {
        assert!(is_match(r"^\Qa[^/]*\E$", "a[^/]*"));
        assert!(is_match(r"^\101$", "A"));
        assert!(is_match(r"^\x41$", "A"));
        assert!(is_match(r"^\<$", "<"));
        assert!(translate(r"^\C$").is_err());
        assert!(translate(r"^\1$").is_err());
        assert!(translate(r"^\e$").is_err());
    }

    #[test]
    fn set_operators_are_literals_in_go() {
        assert!(is_match("^[a&&b]$", "&"));
        assert!(is_match("^[a~~b]$", "~"));
    }

    #[test]
    fn posix_classes_and_errors() {
        assert!(is_match("^[[:alpha:]]$", "q"));
        assert!(!is_match("^[[:alpha:]]$", "1"));
        assert!(is_match("^[[:^alpha:]]$", "1"));
        assert!(translate("^[[:nope:]]$").is_err());
        assert!(translate("^[z-a]$").is_err());
        assert!(translate("^[Local-Only]$").is_err());
        assert!(translate("^[a$").is_err());
        assert!(translate(r"^\p\{L\}$").is_err());
        assert!(is_match(r"^\pL$", "ζ"));
    }
}

//! One `.dockerignore` pattern, checked, compiled and matched exactly as
//! moby/patternmatcher does (`New`, `compile`, `match`): the rules are spelled out in
//! `shared/conformance/dockerignore/README.md` (rules 5, 7–14).
//!
//! - `New`: trim whitespace, Go `filepath.Clean`, a leading `!` marks an exception (a lone
//!   `!` is an error), then the Go `filepath.Match(pattern, ".")` syntax check.
//! - `compile`: the pattern becomes a Go regexp string with patternmatcher's quirks: `\` plus
//!   a letter leaks into the regexp, `^` is not escaped, `[...]` is passed through as a
//!   regexp class, `. + ( ) $` are escaped but `| { }` are not (the README's rule 14 says
//!   they are; upstream's escape bitmap cannot hold them, see [`compile`]). A pattern
//!   without `* ? [ ] \` is compared as a plain string, `x/**` as a prefix and `**...` as a
//!   suffix. The regexp string is then translated from Go's RE2 dialect to the `regex`
//!   crate's ([`super::goregex`]).
//! - Compilation errors (a reversed range such as `[z-a]` passes the syntax check) are kept
//!   and reported at the first match, as upstream does.
//!
//! Paths and patterns are bytes: Linux file names need not be UTF-8. Where Go decodes
//! UTF-8 (its scanner and its regexp engine), every invalid byte counts as one U+FFFD, and so
//! it does here.

use std::borrow::Cow;

use super::goregex;

/// The message of Go's `filepath.ErrBadPattern`.
const BAD_PATTERN: &str = "syntax error in pattern";

/// A compiled pattern (patternmatcher's `Pattern`).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// The pattern after `New`: trimmed, cleaned, without the leading `!`.
    cleaned: Vec<u8>,
    /// `true` for a `!` exception (re-includes what it matches).
    exclusion: bool,
    /// How the pattern matches, or why its regexp does not compile (reported at the first
    /// match, as upstream).
    matcher: Result<Matcher, String>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// The path equals the pattern.
    Exact,
    /// `x/**`: the path starts with the pattern minus its two trailing stars.
    Prefix,
    /// `**...`: the path ends with the pattern minus its two leading stars, or equals it
    /// minus `**/`.
    Suffix,
    /// Everything else: the translated regexp.
    Regex(regex::Regex),
}

impl Pattern {
    /// patternmatcher's `New` for one pattern: `Ok(None)` for a blank one.
    ///
    /// # Errors
    /// The Go error message: a lone `!`, or a pattern that fails Go's `filepath.Match`
    /// syntax check.
    pub(crate) fn new(raw: &[u8]) -> Result<Option<Self>, String> {
        let trimmed = trim_space(raw);
        if trimmed.is_empty() {
            return Ok(None);
        }
        let mut cleaned = clean(trimmed);
        let mut exclusion = false;
        if cleaned[0] == b'!' {
            if cleaned.len() == 1 {
                return Err("illegal exclusion pattern: \"!\"".to_string());
            }
            exclusion = true;
            cleaned.remove(0);
        }
        if !glob_syntax_is_valid(&cleaned) {
            return Err(BAD_PATTERN.to_string());
        }
        let matcher = compile(&cleaned);
        Ok(Some(Self {
            cleaned,
            exclusion,
            matcher,
        }))
    }

    /// `true` for a `!` exception.
    pub(crate) fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// The cleaned pattern, without its `!` (patternmatcher's `Pattern.String()`).
    pub(crate) fn cleaned(&self) -> &[u8] {
        &self.cleaned
    }

    /// Whether the pattern matches `path` itself (no parent logic).
    ///
    /// # Errors
    /// The regexp did not compile (a reversed character range): Go's `ErrBadPattern`,
    /// with the regexp error added.
    pub(crate) fn matches(&self, path: &[u8]) -> Result<bool, String> {
        let matcher = self.matcher.as_ref().map_err(Clone::clone)?;
        Ok(match matcher {
            Matcher::Exact => path == self.cleaned.as_slice(),
            Matcher::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Matcher::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Matcher::Regex(regex) => regex.is_match(&go_decode(path)),
        })
    }
}

/// Go's `strings.TrimSpace` on bytes: Unicode white space at both ends; an invalid UTF-8
/// byte is not space.
pub(crate) fn trim_space(mut bytes: &[u8]) -> &[u8] {
    while let Some((Some(c), width)) = decode_rune(bytes) {
        if !c.is_whitespace() {
            break;
        }
        bytes = &bytes[width..];
    }
    while let Some((Some(c), width)) = decode_last_rune(bytes) {
        if !c.is_whitespace() {
            break;
        }
        bytes = &bytes[..bytes.len() - width];
    }
    bytes
}

/// Go's `utf8.DecodeRune`: the first character and its width; `None` for an invalid byte
/// (width 1); `None` overall for empty input.
fn decode_rune(bytes: &[u8]) -> Option<(Option<char>, usize)> {
    let chunk = bytes.utf8_chunks().next()?;
    match chunk.valid().chars().next() {
        Some(c) => Some((Some(c), c.len_utf8())),
        None => Some((None, 1)),
    }
}

/// Go's `utf8.DecodeLastRune`, for trimming.
fn decode_last_rune(bytes: &[u8]) -> Option<(Option<char>, usize)> {
    if bytes.is_empty() {
        return None;
    }
    let start = bytes.len().saturating_sub(4);
    for begin in start..bytes.len() {
        if let Ok(text) = std::str::from_utf8(&bytes[begin..]) {
            let mut chars = text.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                return Some((Some(c), c.len_utf8()));
            }
        }
    }
    Some((None, 1))
}

/// Go's string decoding of `bytes` (as its scanner and regexp engine see them): every
/// invalid byte becomes one U+FFFD.
pub(crate) fn go_decode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut text = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for _ in chunk.invalid() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    Cow::Owned(text)
}

/// Go's `filepath.Clean` (Unix): shortest equivalent path by lexical processing.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || path[r + 1] == b'/')) {
            // An empty or `.` element.
            r += 1;
        } else if path[r] == b'.'
            && path.get(r + 1) == Some(&b'.')
            && (r + 2 == n || path[r + 2] == b'/')
        {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

/// Whether Go's `filepath.Match(pattern, ".")` returns no error: patternmatcher's syntax
/// check. `filepath.Match` gives up at the first chunk that cannot match without reading the
/// rest of the pattern (unlike `path.Match`), so `a[` is an error but `x*[` is not: its
/// first chunk `x` already fails against `.`. Hence a straight port of `Match`.
fn glob_syntax_is_valid(pattern: &[u8]) -> bool {
    go_match(pattern, b".").is_ok()
}

/// Go's `filepath.Match` (Unix): `Err(())` is `ErrBadPattern`.
pub(crate) fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, ()> {
    'pattern: while !pattern.is_empty() {
        let star = pattern[0] == b'*';
        let (chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        // A match at the current position (if it is the last chunk, it must use up the name).
        let (matched, err) = match_chunk(chunk, name);
        if let Some(rest) = matched {
            if rest.is_empty() || !pattern.is_empty() {
                name = rest;
                continue;
            }
        }
        if err {
            return Err(());
        }
        if star {
            // Skip i+1 bytes, never a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (matched, err) = match_chunk(chunk, &name[i + 1..]);
                if let Some(rest) = matched {
                    if pattern.is_empty() && !rest.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = rest;
                    continue 'pattern;
                }
                if err {
                    return Err(());
                }
                i += 1;
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Go's `scanChunk`: leading stars dropped, then up to the next `*` outside a class.
fn scan_chunk(mut pattern: &[u8]) -> (&[u8], &[u8]) {
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (&pattern[..i], &pattern[i..])
}

/// Go's `matchChunk`: whether `chunk` matches the start of `s` (`Some(rest)`), and whether
/// the chunk is malformed. After a mismatch the chunk is still read to the end for syntax
/// errors, but `s` no longer is.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> (Option<&'a [u8]>, bool) {
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut r: Option<char> = None;
                let mut decoded_invalid = false;
                if !failed {
                    let (c, width) = decode_rune(s).unwrap_or((None, 0));
                    r = c;
                    decoded_invalid = c.is_none();
                    s = &s[width..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut is_match = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let Some((lo, rest)) = get_esc(chunk) else {
                        return (None, true);
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let Some((high, rest)) = get_esc(&chunk[1..]) else {
                            return (None, true);
                        };
                        hi = high;
                        chunk = rest;
                    }
                    // An invalid byte in the name reads as U+FFFD.
                    let r = match r {
                        Some(c) => c,
                        None if decoded_invalid => char::REPLACEMENT_CHARACTER,
                        None => '\0',
                    };
                    if lo <= r && r <= hi {
                        is_match = true;
                    }
                    ranges += 1;
                }
                if is_match == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, width) = decode_rune(s).unwrap_or((None, 1));
                    s = &s[width..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return (None, true);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        (None, false)
    } else {
        (Some(s), false)
    }
}

/// Go's `getEsc`: one possibly escaped class character and the rest; `None` on a syntax
/// error. The rest is never empty (a class must still be closed).
fn get_esc(mut chunk: &[u8]) -> Option<(char, &[u8])> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return None;
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return None;
        }
    }
    let (c, width) = decode_rune(chunk)?;
    let c = c?;
    let rest = &chunk[width..];
    if rest.is_empty() {
        return None;
    }
    Some((c, rest))
}

/// patternmatcher's `compile`: decides the match type and, for regexps, builds the Go
/// regexp string and translates it.
fn compile(cleaned: &[u8]) -> Result<Matcher, String> {
    // Go's text/scanner: invalid bytes read as U+FFFD, a BOM at the very start is skipped.
    let decoded = go_decode(cleaned);
    let mut runes: Vec<char> = decoded.chars().collect();
    if runes.first() == Some(&'\u{FEFF}') {
        runes.remove(0);
    }

    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let mut regex = String::from("^");
    let mut detected = Detected::Exact;
    let mut index = 0;
    let mut iteration = 0;
    while index < runes.len() {
        let ch = runes[index];
        index += 1;
        if ch == '*' {
            if runes.get(index) == Some(&'*') {
                index += 1;
                // `**/` is treated as `**`.
                if runes.get(index) == Some(&'/') {
                    index += 1;
                }
                if index == runes.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        regex.push_str(".*");
                        detected = Detected::Regexp;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    detected = Detected::Regexp;
                }
                if iteration == 0 {
                    detected = Detected::Suffix;
                }
            } else {
                regex.push_str("[^/]*");
                detected = Detected::Regexp;
            }
        } else if ch == '?' {
            regex.push_str("[^/]");
            detected = Detected::Regexp;
        } else if ".+()$".contains(ch) {
            // patternmatcher means to escape `. + ( ) | { } $`, but its bitmap (8 bytes, bit
            // `c / 8` of byte `c % 8`) only has room for characters below 64: `|`, `{` and
            // `}` are never escaped. So `|` is an alternation and `{n}` a repetition in the
            // regexp, as they are in Docker.
            regex.push('\\');
            regex.push(ch);
        } else if ch == '\\' {
            if let Some(&next) = runes.get(index) {
                index += 1;
                regex.push('\\');
                regex.push(next);
                detected = Detected::Regexp;
            } else {
                regex.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            regex.push(ch);
            detected = Detected::Regexp;
        } else {
            regex.push(ch);
        }
        iteration += 1;
    }

    Ok(match detected {
        Detected::Exact => Matcher::Exact,
        Detected::Prefix => Matcher::Prefix,
        Detected::Suffix => Matcher::Suffix,
        Detected::Regexp => {
            regex.push('$');
            let translated = goregex::translate(&regex)
                .map_err(|error| format!("{BAD_PATTERN} (regexp {regex:?}: {error})"))?;
            let compiled = regex::Regex::new(&translated).map_err(|error| {
                format!("{BAD_PATTERN} (regexp {regex:?} as {translated:?}: {error})")
            })?;
            Matcher::Regex(compiled)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, expected) in [
            ("", "."),
            ("./a", "a"),
            ("a/../b", "b"),
            ("a//b", "a/b"),
            ("a/", "a"),
            ("/../d", "/d"),
            ("../c", "../c"),
            ("x/y/../../g", "g"),
            ("/", "/"),
            ("./", "."),
            ("!/", "!"),
            ("a/../..", ".."),
            ("../../a/..", "../.."),
        ] {
            assert_eq!(
                String::from_utf8(clean(input.as_bytes())).expect("utf-8"),
                expected,
                "clean({input:?})"
            );
        }
    }

    #[test]
    fn trim_space_trims_unicode_space_and_keeps_invalid_bytes() {
        assert_eq!(trim_space(b" \t a b \r\n"), b"a b");
        assert_eq!(trim_space("\u{a0}x\u{3000}".as_bytes()), b"x");
        assert_eq!(trim_space(b" \xff "), b"\xff");
        assert_eq!(trim_space(b"   "), b"");
    }

    #[test]
    fn syntax_check_follows_go_filepath_match() {
        for good in [
            "a", "*", "[a-b]", "[^a]", "[\\]]", "a\\*", "[z-a]", "[*]", "[!x]",
        ] {
            assert!(glob_syntax_is_valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "[", "a[", "[]a]", "[-]", "[x-]", "[a-b-c]", "\\", "a\\", "[a", "*[",
        ] {
            assert!(!glob_syntax_is_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn invalid_utf8_counts_one_character_per_byte() {
        let pattern = Pattern::new(b"a??b").expect("valid").expect("not blank");
        assert!(pattern.matches(b"a\xff\xfeb").expect("compiles"));
        assert!(!pattern.matches(b"a\xffb").expect("compiles"));
    }

    #[test]
    fn reversed_range_fails_at_match_time() {
        let pattern = Pattern::new(b"[z-a]").expect("passes the syntax check");
        let error = pattern
            .expect("not blank")
            .matches(b"a")
            .expect_err("regexp does not compile");
        assert!(error.starts_with(BAD_PATTERN), "{error}");
    }
}

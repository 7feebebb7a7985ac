//! Reading a `.dockerignore` and deciding what it excludes, as Docker/BuildKit do
//! (`shared/conformance/dockerignore/README.md` rules 1–16 and 20).
//!
//! Reading follows moby/patternmatcher `ignorefile.ReadAll`: the BOM is removed from the
//! first line only, lines split on LF with one trailing CR dropped, a line is a comment only
//! when its first byte is `#`, whitespace is trimmed (after a leading `!` too), each pattern
//! goes through `filepath.Clean`, and one leading `/` is removed when the pattern is longer
//! than one character. Matching follows `PatternMatcher.MatchesUsingParentResults`: the last
//! pattern that matches decides, an exception is only tried on an excluded path and a plain
//! pattern only on an included one, and a pattern counts as matching a path when it matched
//! the path itself or was recorded as matching its parent directory.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::ContextError;
use super::pattern::{Pattern, clean, trim_space};

/// The parsed patterns of one ignore file (or none), ready to match context paths.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    /// How the file is named in messages (`.dockerignore`, `app.Dockerfile.dockerignore`);
    /// empty when there is no file.
    source: String,
    patterns: Vec<SourcePattern>,
}

#[derive(Debug, Clone)]
struct SourcePattern {
    pattern: Pattern,
    /// 1-based line in the ignore file.
    line: usize,
    /// The line as written, trimmed (for messages).
    text: String,
}

impl SourcePattern {
    /// Compiles `raw` (line `line` of `source_name`, `text` as written there) and pushes it
    /// onto `patterns`; a pattern that matches nothing (`Ok(None)`) is left out.
    ///
    /// # Errors
    /// [`ContextError::Pattern`] naming the file, line and pattern.
    fn push(
        patterns: &mut Vec<Self>,
        raw: &[u8],
        text: &[u8],
        line: usize,
        source_name: &str,
    ) -> Result<(), ContextError> {
        let text = String::from_utf8_lossy(text).into_owned();
        match Pattern::new(raw) {
            Ok(Some(pattern)) => patterns.push(Self {
                pattern,
                line,
                text,
            }),
            Ok(None) => {}
            Err(reason) => {
                return Err(ContextError::Pattern {
                    source_name: source_name.to_string(),
                    line,
                    pattern: text,
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Which patterns matched a directory, handed to its children
/// (patternmatcher's `MatchInfo`). The default value means "no information": a path at the
/// context root, or a path matched on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl Dockerignore {
    /// No patterns: nothing is excluded.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads the ignore file that applies to a build: `<Dockerfile>.dockerignore` beside the
    /// Dockerfile when it exists (BuildKit), else `<context>/.dockerignore`, else none.
    /// `dockerfile` is the Dockerfile's path as the user gave it (absolute, or relative to
    /// the current directory).
    ///
    /// # Errors
    /// [`ContextError::ReadIgnoreFile`] when a file exists but cannot be read;
    /// [`ContextError::Pattern`] for a lone `!` or a malformed pattern.
    pub fn load(context_dir: &Path, dockerfile: &Path) -> Result<Self, ContextError> {
        let mut candidates = Vec::with_capacity(2);
        if let Some(name) = dockerfile.file_name() {
            let mut beside = name.to_os_string();
            beside.push(".dockerignore");
            candidates.push(dockerfile.with_file_name(beside));
        }
        candidates.push(context_dir.join(".dockerignore"));
        for candidate in candidates {
            match std::fs::read(&candidate) {
                Ok(bytes) => {
                    let source = match candidate.strip_prefix(context_dir) {
                        Ok(relative) => relative.display().to_string(),
                        Err(_) => candidate.display().to_string(),
                    };
                    return Self::parse(&bytes, &source);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ContextError::ReadIgnoreFile {
                        path: candidate,
                        source,
                    });
                }
            }
        }
        Ok(Self::empty())
    }

    /// Parses the bytes of an ignore file; `source_name` names it in error messages.
    ///
    /// # Errors
    /// [`ContextError::Pattern`] for a lone `!` or a pattern that fails Go's
    /// `filepath.Match` syntax check. A pattern whose regexp does not compile (a reversed
    /// range such as `[z-a]`) is accepted here and fails at its first match, as upstream.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, ContextError> {
        let mut patterns = Vec::new();
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // bufio.ScanLines: a final empty line (after a trailing LF) is no line.
        if lines.last().is_some_and(|line| line.is_empty()) {
            lines.pop();
        }
        for (index, mut line) in lines.into_iter().enumerate() {
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if index == 0 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            if line.first() == Some(&b'#') {
                continue;
            }
            let trimmed = trim_space(line);
            if trimmed.is_empty() {
                continue;
            }
            let pattern = read_all_pattern(trimmed);
            SourcePattern::push(&mut patterns, &pattern, trimmed, index + 1, source_name)?;
        }
        Ok(Self {
            source: source_name.to_string(),
            patterns,
        })
    }

    /// Patterns given directly, as patternmatcher's `New` takes them (trimmed and cleaned,
    /// a leading `!` is an exception; no comments, no leading-`/` removal): for patterns
    /// that come from elsewhere than an ignore file, such as `COPY --exclude`. Errors name
    /// the pattern's 1-based position as its line, and `source_name` as its file.
    ///
    /// # Errors
    /// [`ContextError::Pattern`] as for [`Self::parse`].
    pub fn from_patterns(patterns: &[&[u8]], source_name: &str) -> Result<Self, ContextError> {
        let mut parsed = Vec::new();
        for (index, raw) in patterns.iter().enumerate() {
            SourcePattern::push(&mut parsed, raw, trim_space(raw), index + 1, source_name)?;
        }
        Ok(Self {
            source: source_name.to_string(),
            patterns: parsed,
        })
    }

    /// The ignore file's name as used in messages; empty when there is none.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// `true` when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// How many patterns there are.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether any pattern is a `!` exception (patternmatcher's `Exclusions`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.pattern.is_exclusion())
    }

    /// BuildKit's (fsutil `filter.go`) walk optimisation: `true` when no exception has a
    /// wildcard (`* ? [ ] ^ \`) once a trailing `/*` or `/**` is ignored, so that only
    /// exceptions spelled as a path under an excluded directory can re-include something
    /// in it.
    pub(crate) fn only_prefix_exceptions(&self) -> bool {
        !self.patterns.iter().any(|p| {
            p.pattern.is_exclusion()
                && without_trailing_glob(p.pattern.cleaned())
                    .iter()
                    .any(|b| b"*[]?^\\".contains(b))
        })
    }

    /// Whether some exception, minus a trailing `/*` or `/**`, plus `/`, starts with
    /// `dir/` (fsutil's test for walking into an excluded directory).
    pub(crate) fn exception_may_be_under(&self, dir: &[u8]) -> bool {
        self.patterns.iter().any(|p| {
            if !p.pattern.is_exclusion() {
                return false;
            }
            let mut pattern = without_trailing_glob(p.pattern.cleaned()).to_vec();
            pattern.push(b'/');
            pattern.starts_with(dir) && pattern.get(dir.len()) == Some(&b'/')
        })
    }

    /// patternmatcher's `MatchesUsingParentResults`: whether `path` (relative to the context,
    /// `/`-separated) is excluded, given what matched its parent directory; the returned
    /// [`MatchInfo`] is what its children need. Pass `MatchInfo::default()` for paths at the
    /// context root (or without a walk: parents are then tried by prefix, as in
    /// `MatchesOrParentMatches`).
    ///
    /// # Errors
    /// [`ContextError::Pattern`] when a pattern that must be tried does not compile.
    pub fn matches(
        &self,
        path: &[u8],
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), ContextError> {
        let parent_matched = &parent.parent_matched;
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        // Parent directories by prefix, computed only when a pattern needs them.
        let mut parent_dirs: Option<Vec<Vec<u8>>> = None;
        for (index, source) in self.patterns.iter().enumerate() {
            let pattern = &source.pattern;
            let mut is_match = parent_matched.get(index).copied().unwrap_or(false);
            if !is_match {
                // An exception is only tried on an excluded path, a plain pattern only on
                // an included one.
                if pattern.is_exclusion() != matched {
                    continue;
                }
                is_match = pattern
                    .matches(path)
                    .map_err(|reason| self.error(source, reason))?;
                if !is_match && parent_matched.is_empty() {
                    is_match = parent_dirs
                        .get_or_insert_with(|| parent_prefixes(path))
                        .iter()
                        .any(|dir| pattern.matches(dir).unwrap_or(false));
                }
            }
            info.parent_matched[index] = is_match;
            if is_match {
                matched = !pattern.is_exclusion();
            }
        }
        Ok((matched, info))
    }

    /// patternmatcher's `MatchesOrParentMatches`: whether `path` or one of its parent
    /// directories is excluded, with parents tried by prefix rather than by a walk.
    ///
    /// # Errors
    /// As [`Self::matches`].
    pub fn matches_or_parent_matches(&self, path: &[u8]) -> Result<bool, ContextError> {
        self.matches(path, &MatchInfo::default())
            .map(|(matched, _)| matched)
    }

    /// Whether a context path is excluded, deciding each of its parent directories first
    /// as the context walk does for the paths it visits (rule 16). `path` is relative to the
    /// context. (The walk may also skip an excluded directory whole; what it skips, this
    /// reports as excluded too.)
    ///
    /// # Errors
    /// As [`Self::matches`].
    pub fn is_excluded(&self, path: &Path) -> Result<bool, ContextError> {
        let mut prefix: Vec<u8> = Vec::new();
        let mut info = MatchInfo::default();
        let mut excluded = false;
        for component in path.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.as_bytes());
            (excluded, info) = self.matches(&prefix, &info)?;
        }
        Ok(excluded)
    }

    fn error(&self, source: &SourcePattern, reason: String) -> ContextError {
        ContextError::Pattern {
            source_name: self.source.clone(),
            line: source.line,
            pattern: source.text.clone(),
            reason,
        }
    }
}

/// `ignorefile.ReadAll` for one trimmed, non-comment line: `!` handling, `filepath.Clean`,
/// and the leading `/` removed when the pattern is longer than one character.
fn read_all_pattern(trimmed: &[u8]) -> Vec<u8> {
    let (invert, mut pattern) = match trimmed.strip_prefix(b"!") {
        Some(rest) => (true, trim_space(rest).to_vec()),
        None => (false, trimmed.to_vec()),
    };
    if !pattern.is_empty() {
        pattern = clean(&pattern);
        if pattern.len() > 1 && pattern[0] == b'/' {
            pattern.remove(0);
        }
    }
    if invert {
        pattern.insert(0, b'!');
    }
    pattern
}

/// fsutil's `patternWithoutTrailingGlob`: one trailing `/**`, then one trailing `/*`, removed.
fn without_trailing_glob(pattern: &[u8]) -> &[u8] {
    let pattern = pattern.strip_suffix(b"/**").unwrap_or(pattern);
    pattern.strip_suffix(b"/*").unwrap_or(pattern)
}

/// The parent directories of `path` by prefix, as `MatchesOrParentMatches` tries them:
/// `filepath.Dir(path)` split at `/`, each leading run of elements joined; none when the
/// parent is `.`. (Empty for every path at the context root, so a walk never pays for it.)
fn parent_prefixes(path: &[u8]) -> Vec<Vec<u8>> {
    // filepath.Dir: everything up to the last `/`, cleaned.
    let dir = match path.iter().rposition(|&b| b == b'/') {
        Some(index) => &path[..=index],
        None => &path[..0],
    };
    let dir = clean(dir);
    if dir == b"." {
        return Vec::new();
    }
    let elements: Vec<&[u8]> = dir.split(|&b| b == b'/').collect();
    (1..=elements.len())
        .map(|count| elements[..count].join(&b'/'))
        .collect()
}

//! Git references as BuildKit reads them in `ADD` sources and build contexts: which strings are
//! git repositories (rather than HTTP downloads or local paths), and what they ask for.
//!
//! The forms (BuildKit's `dfgitutil.ParseGitRef` over `gitutil.ParseURL`):
//! - `https://host/repo.git`, `http://...`: a git URL only when the path ends in `.git`
//!   (`https://host/repo` is a file download);
//! - `git://host/repo`, `ssh://[user@]host[:port]/repo`: any path;
//! - `user@host:path` (scp style, ssh);
//! - `github.com/org/repo` (no scheme): only as a build context, never in `ADD`
//!   ([`GitRef::indistinguishable_from_local`]).
//!
//! What follows: a fragment `#ref[:subdir]` (a branch, tag or commit, then a directory inside
//! the repository), and/or a query `?ref=&tag=&branch=&subdir=&checksum=&commit=
//! &keep-git-dir&submodules=&mtime=checkout|commit&fetch-by-commit`, with BuildKit's
//! conflicts refused (`ref conflicts`, `branch conflicts with tag`). Pure: no I/O.

use std::collections::BTreeMap;

/// How the repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitScheme {
    /// `http://` (smart or dumb HTTP).
    Http,
    /// `https://`.
    Https,
    /// `ssh://` or `user@host:path`.
    Ssh,
    /// `git://` (the git daemon protocol).
    Git,
}

/// When checked-out files get their modification time (`?mtime=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtimePolicy {
    /// The time of the checkout (BuildKit's default).
    Checkout,
    /// The commit's committer time, for every file and directory.
    Commit,
}

/// A parsed git reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GitRef {
    /// What `git` fetches from: the URL without fragment and query (`https://host/repo.git`,
    /// `git@host:repo.git`; for the `github.com/...` form, `https://github.com/...`).
    pub remote: String,
    /// How it is reached.
    pub scheme: GitScheme,
    /// A branch, tag, commit or full ref (`refs/tags/v1` from `?tag=v1`); `None`: the
    /// repository's default branch.
    pub reference: Option<String>,
    /// `?checksum=` / `?commit=`: the commit (hex, full or a prefix) the reference must
    /// resolve to.
    pub checksum: Option<String>,
    /// A directory inside the repository: only its contents are used.
    pub subdir: Option<String>,
    /// `?keep-git-dir[=bool]`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=bool` (default: submodules are fetched).
    pub submodules: Option<bool>,
    /// `?mtime=checkout|commit`.
    pub mtime: Option<MtimePolicy>,
    /// `?fetch-by-commit`: fetch the checksum's commit directly, trusting it.
    pub fetch_by_commit: bool,
    /// The `github.com/org/repo` form (no scheme), which only a build context accepts.
    pub indistinguishable_from_local: bool,
}

/// A string that is a git reference but not a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}: {message}")]
pub struct GitRefError {
    /// The reference as given (credentials removed).
    pub text: String,
    /// What is wrong (BuildKit's wording).
    pub message: String,
}

impl GitRef {
    /// Reads `text` as a git reference: `Ok(None)` when it is not one (a local path, an HTTP
    /// URL not ending in `.git`, another scheme), `Err` when it is one with a bad query.
    ///
    /// # Errors
    /// [`GitRefError`]: a query key BuildKit does not know, a repeated or empty value, a
    /// conflict between the fragment and the query.
    pub fn parse(text: &str) -> Result<Option<Self>, GitRefError> {
        let error = |message: String| GitRefError {
            text: redact(text),
            message,
        };
        if text.starts_with("./") || text.starts_with("../") {
            return Ok(None);
        }
        let (mut parsed, indistinguishable) = if let Some(rest) = text.strip_prefix("github.com/") {
            let Some(parsed) = parse_url(&format!("https://github.com/{rest}"))? else {
                return Ok(None);
            };
            (parsed, true)
        } else {
            match parse_url(text)? {
                Some(parsed) => (parsed, false),
                None => return Ok(None),
            }
        };
        if matches!(parsed.scheme, GitScheme::Http | GitScheme::Https)
            && !indistinguishable
            && !parsed.path.ends_with(".git")
        {
            return Ok(None);
        }
        let mut reference = Self {
            remote: parsed.remote,
            scheme: parsed.scheme,
            reference: None,
            checksum: None,
            subdir: None,
            keep_git_dir: None,
            submodules: None,
            mtime: None,
            fetch_by_commit: false,
            indistinguishable_from_local: indistinguishable,
        };
        if let Some(fragment) = parsed.fragment.take().filter(|f| !f.is_empty()) {
            let (git_ref, subdir) = fragment.split_once(':').unwrap_or((&fragment, ""));
            if !git_ref.is_empty() {
                reference.reference = Some(git_ref.to_owned());
            }
            let subdir = clean_subdir(subdir);
            if !subdir.is_empty() {
                reference.subdir = Some(subdir);
            }
        }
        reference.load_query(&parsed.query).map_err(error)?;
        Ok(Some(reference))
    }

    /// The query keys, as BuildKit's `loadQuery`.
    fn load_query(&mut self, query: &[(String, String)]) -> Result<(), String> {
        let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, value) in query {
            values.entry(key).or_default().push(value);
        }
        let flag = |key: &str, value: Option<&str>| -> Result<bool, String> {
            match value {
                None => Ok(true),
                Some(value) => crate::gostd::parse_bool(value)
                    .ok_or_else(|| format!("invalid {key} value: {value:?}")),
            }
        };
        let (mut tag, mut branch) = (None, None);
        for (key, list) in values {
            if list.len() > 1 {
                return Err(format!("query {key:?} has multiple values"));
            }
            let value = list.first().copied().filter(|value| !value.is_empty());
            if value.is_none() && !matches!(key, "submodules" | "keep-git-dir" | "fetch-by-commit")
            {
                return Err(format!("query {key:?} has no value"));
            }
            let text = value.unwrap_or_default();
            match key {
                "ref" => {
                    if let Some(existing) = &self.reference {
                        if existing != text {
                            return Err(format!("ref conflicts: {existing:?} vs {text:?}"));
                        }
                    }
                    self.reference = Some(text.to_owned());
                }
                "tag" => tag = Some(text.to_owned()),
                "branch" => branch = Some(text.to_owned()),
                "subdir" => {
                    if let Some(existing) = &self.subdir {
                        if *existing != clean_subdir(text) {
                            return Err(format!("subdir conflicts: {existing:?} vs {text:?}"));
                        }
                    }
                    self.subdir = Some(clean_subdir(text)).filter(|subdir| !subdir.is_empty());
                }
                "checksum" | "commit" => self.checksum = Some(text.to_owned()),
                "keep-git-dir" => self.keep_git_dir = Some(flag(key, value)?),
                "submodules" => self.submodules = Some(flag(key, value)?),
                "fetch-by-commit" => self.fetch_by_commit = flag(key, value)?,
                "mtime" => {
                    self.mtime = Some(match text {
                        "checkout" => MtimePolicy::Checkout,
                        "commit" => MtimePolicy::Commit,
                        other => {
                            return Err(format!(
                                "invalid mtime value: {other:?} (must be \"checkout\" or \"commit\")"
                            ));
                        }
                    });
                }
                other => return Err(format!("unexpected query {other:?}")),
            }
        }
        for (prefix, value) in [("refs/tags/", &tag), ("refs/heads/", &branch)] {
            let Some(value) = value else { continue };
            if prefix == "refs/heads/" && tag.is_some() {
                return Err("branch conflicts with tag".to_owned());
            }
            let full = if value.starts_with(prefix) {
                value.clone()
            } else {
                format!("{prefix}{value}")
            };
            if let Some(existing) = &self.reference {
                if *existing != full {
                    return Err(format!("ref conflicts: {existing:?} vs {full:?}"));
                }
            }
            self.reference = Some(full);
        }
        Ok(())
    }

    /// Whether the remote is reached over ssh (and so needs an SSH agent).
    pub fn is_ssh(&self) -> bool {
        self.scheme == GitScheme::Ssh
    }

    /// The remote with any password or token in it replaced by `xxxxx`, for messages.
    pub fn redacted_remote(&self) -> String {
        redact(&self.remote)
    }
}

/// Whether `text` is an `ADD` source BuildKit downloads over HTTP: `http://` or `https://`
/// and not a git repository.
pub fn is_http_source(text: &str) -> bool {
    (text.starts_with("http://") || text.starts_with("https://")) && !is_git_source(text)
}

/// Whether `text` is an `ADD` source BuildKit clones (a git reference other than the
/// scheme-less `github.com/...` form, which `ADD` reads as a local path). A git reference
/// with a bad query counts: it is refused when read.
pub fn is_git_source(text: &str) -> bool {
    match GitRef::parse(text) {
        Ok(Some(reference)) => !reference.indistinguishable_from_local,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Whether `text` is a full commit id (40 or 64 lower-case hex digits), as BuildKit's
/// `IsCommitSHA`.
pub fn is_commit_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `path.Join("/", subdir)` without the leading slash: `a/../b/` is `b`, `/` is empty.
fn clean_subdir(subdir: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in subdir.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// A URL taken apart the way `gitutil.ParseURL` does.
struct ParsedUrl {
    scheme: GitScheme,
    path: String,
    remote: String,
    query: Vec<(String, String)>,
    fragment: Option<String>,
}

/// `Ok(None)` for what is not a git transport (another scheme, no scheme and not scp style).
fn parse_url(text: &str) -> Result<Option<ParsedUrl>, GitRefError> {
    let scheme_end = text
        .find("://")
        .filter(|at| *at > 0 && text[..*at].bytes().all(|b| b.is_ascii_alphanumeric()));
    if let Some(at) = scheme_end {
        let scheme = match text[..at].to_ascii_lowercase().as_str() {
            "http" => GitScheme::Http,
            "https" => GitScheme::Https,
            "ssh" => GitScheme::Ssh,
            "git" => GitScheme::Git,
            _ => return Ok(None),
        };
        let Ok(mut url) = reqwest::Url::parse(text) else {
            return Ok(None);
        };
        let query = url
            .query_pairs()
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        let fragment = url.fragment().map(percent_decode);
        url.set_query(None);
        url.set_fragment(None);
        let path = percent_decode(url.path());
        return Ok(Some(ParsedUrl {
            scheme,
            path,
            remote: url.to_string(),
            query,
            fragment,
        }));
    }
    // scp style: `user@host:path[?query][#fragment]` (BuildKit's gitSSHRegex).
    let Some((user, rest)) = text.split_once('@') else {
        return Ok(None);
    };
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let Some((host, rest)) = rest.split_once(':') else {
        return Ok(None);
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !user_ok || !host_ok {
        return Ok(None);
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment.to_owned())),
        None => (rest, None),
    };
    let (path, raw_query) = match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    };
    let query = if raw_query.is_empty() {
        Vec::new()
    } else {
        // The form encoding of a query, as Go's `url.ParseQuery`.
        let url = reqwest::Url::parse(&format!("http://query.invalid/?{raw_query}")).map_err(
            |error| GitRefError {
                text: redact(text),
                message: format!("invalid query in scp-style url: {error}"),
            },
        )?;
        url.query_pairs()
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    };
    Ok(Some(ParsedUrl {
        scheme: GitScheme::Ssh,
        path: path.to_owned(),
        remote: format!("{user}@{host}:{path}"),
        query,
        fragment,
    }))
}

/// `%XX` sequences decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let digit = |byte: u8| char::from(byte).to_digit(16);
            if let (Some(high), Some(low)) = (digit(bytes[index + 1]), digit(bytes[index + 2])) {
                out.push(u8::try_from(high * 16 + low).unwrap_or_default());
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://user:secret@host/...` with the password replaced, as BuildKit's
/// `urlutil.RedactCredentials`; over HTTP(S) a user name alone is replaced too (a token given
/// as the user, `https://TOKEN@host/...`).
pub(crate) fn redact(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let (scheme, rest) = (&text[..scheme_end + 3], &text[scheme_end + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') else {
        return text.to_owned();
    };
    let tail = &rest[authority_end..];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:xxxxx@{host}{tail}"),
        None if scheme.starts_with("http") => format!("{scheme}xxxxx@{host}{tail}"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> GitRef {
        GitRef::parse(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .unwrap_or_else(|| panic!("{text}: not git"))
    }

    /// BuildKit's `TestParseGitRef` table (frontend/dockerfile/dfgitutil): what is git,
    /// the remote, the ref and the subdirectory.
    #[rstest::rstest]
    #[case(
        "https://example.com/foo.git",
        "https://example.com/foo.git",
        None,
        None
    )]
    #[case(
        "https://example.com/foo.git#deadbeef",
        "https://example.com/foo.git",
        Some("deadbeef"),
        None
    )]
    #[case(
        "https://example.com/foo.git#release/1.2",
        "https://example.com/foo.git",
        Some("release/1.2"),
        None
    )]
    #[case("git://example.com/foo", "git://example.com/foo", None, None)]
    #[case(
        "github.com/moby/buildkit#master",
        "https://github.com/moby/buildkit",
        Some("master"),
        None
    )]
    #[case(
        "https://github.com/moby/buildkit.git",
        "https://github.com/moby/buildkit.git",
        None,
        None
    )]
    #[case(
        "https://foo:bar@github.com/moby/buildkit.git",
        "https://foo:bar@github.com/moby/buildkit.git",
        None,
        None
    )]
    #[case(
        "git@github.com:moby/buildkit",
        "git@github.com:moby/buildkit",
        None,
        None
    )]
    #[case(
        "git@bitbucket.org:atlassianlabs/atlassian-docker.git",
        "git@bitbucket.org:atlassianlabs/atlassian-docker.git",
        None,
        None
    )]
    #[case(
        "https://github.com/foo/bar.git#baz/qux:quux/quuz",
        "https://github.com/foo/bar.git",
        Some("baz/qux"),
        Some("quux/quuz")
    )]
    #[case(
        "https://github.com/docker/docker.git#:myfolder",
        "https://github.com/docker/docker.git",
        None,
        Some("myfolder")
    )]
    #[case(
        "https://github.com/docker/docker.git?ref=v1.0.0&subdir=/subdir",
        "https://github.com/docker/docker.git",
        Some("v1.0.0"),
        Some("subdir")
    )]
    #[case(
        "https://github.com/moby/buildkit.git?subdir=/subdir#v1.0.0",
        "https://github.com/moby/buildkit.git",
        Some("v1.0.0"),
        Some("subdir")
    )]
    #[case(
        "https://github.com/moby/buildkit.git?tag=v1.0.0",
        "https://github.com/moby/buildkit.git",
        Some("refs/tags/v1.0.0"),
        None
    )]
    #[case(
        "https://github.com/moby/buildkit.git?branch=v1.0",
        "https://github.com/moby/buildkit.git",
        Some("refs/heads/v1.0"),
        None
    )]
    #[case(
        "git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0",
        "git@github.com:moby/buildkit.git",
        Some("v1.0.0"),
        Some("subdir")
    )]
    #[case(
        "ssh://git@github.com:22/moby/buildkit.git#v1:hack",
        "ssh://git@github.com:22/moby/buildkit.git",
        Some("v1"),
        Some("hack")
    )]
    #[case(
        "http://127.0.0.1:8080/repo/.git#v0.0.2",
        "http://127.0.0.1:8080/repo/.git",
        Some("v0.0.2"),
        None
    )]
    fn git_references(
        #[case] text: &str,
        #[case] remote: &str,
        #[case] reference: Option<&str>,
        #[case] subdir: Option<&str>,
    ) {
        let git = parsed(text);
        assert_eq!(git.remote, remote, "{text}");
        assert_eq!(git.reference.as_deref(), reference, "{text}");
        assert_eq!(git.subdir.as_deref(), subdir, "{text}");
    }

    #[rstest::rstest]
    #[case("https://example.com/")]
    #[case("https://example.com/foo")]
    #[case("https://example.com/foo.git/")]
    #[case("https://example.com/foo.git.bar")]
    #[case("custom.xyz/moby/buildkit.git")]
    #[case("https://github.com/moby/buildkit")]
    #[case("http://github.com/docker/docker.git:#branch")]
    #[case("./.git")]
    #[case(".git")]
    #[case("foo")]
    #[case("file:///srv/repo.git")]
    #[case("httpx://github.com/moby/buildkit.git")]
    #[case("https://example.com/archive.tar.gz#frag")]
    fn not_git(#[case] text: &str) {
        assert_eq!(GitRef::parse(text), Ok(None), "{text}");
    }

    #[rstest::rstest]
    #[case(
        "https://github.com/moby/buildkit.git?ref=v1.0.0#v1.2.3",
        "ref conflicts"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?ref=v1.0.0&tag=v1.2.3",
        "ref conflicts"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?tag=v1.0.0&branch=v1.0",
        "branch conflicts with tag"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?mtime=invalid",
        "invalid mtime value"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?fetch-by-commit=invalid",
        "invalid fetch-by-commit value"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?invalid=123",
        "unexpected query \"invalid\""
    )]
    #[case(
        "https://github.com/moby/buildkit.git?ref=",
        "query \"ref\" has no value"
    )]
    #[case(
        "https://github.com/moby/buildkit.git?ref=a&ref=b",
        "has multiple values"
    )]
    fn bad_queries(#[case] text: &str, #[case] message: &str) {
        let error = GitRef::parse(text).unwrap_err();
        assert!(error.message.contains(message), "{text}: {error}");
        assert!(is_git_source(text), "{text}");
    }

    #[test]
    fn query_flags_and_checksums() {
        let git = parsed(
            "https://github.com/moby/buildkit.git?fetch-by-commit=true&checksum=deadbeef#refs/heads/branch",
        );
        assert_eq!(git.reference.as_deref(), Some("refs/heads/branch"));
        assert_eq!(git.checksum.as_deref(), Some("deadbeef"));
        assert!(git.fetch_by_commit);
        let git = parsed("https://h/r.git?keep-git-dir&submodules=false&mtime=commit&commit=abc");
        assert_eq!(git.keep_git_dir, Some(true));
        assert_eq!(git.submodules, Some(false));
        assert_eq!(git.mtime, Some(MtimePolicy::Commit));
        assert_eq!(git.checksum.as_deref(), Some("abc"));
        assert!(!parsed("https://h/r.git?fetch-by-commit=false").fetch_by_commit);
        assert!(parsed("git@h:r.git").is_ssh());
    }

    #[test]
    fn sources_of_add() {
        assert!(is_git_source("https://h/r.git#main"));
        assert!(is_git_source("git@github.com:moby/buildkit.git"));
        assert!(
            !is_git_source("github.com/moby/buildkit"),
            "a local path for ADD"
        );
        assert!(is_http_source("https://h/file.tar.gz"));
        assert!(!is_http_source("https://h/r.git"));
        assert!(!is_http_source("file.tar.gz"));
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_sha(&"a".repeat(40)));
        assert!(is_commit_sha(&"0".repeat(64)));
        assert!(!is_commit_sha(&"A".repeat(40)));
        assert!(!is_commit_sha("deadbeef"));
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("https://user:token@host/r.git#x"),
            "https://user:xxxxx@host/r.git#x"
        );
        assert_eq!(
            redact("https://token@host/r.git"),
            "https://xxxxx@host/r.git"
        );
        assert_eq!(redact("https://host/r.git"), "https://host/r.git");
        assert_eq!(redact("git@host:r.git"), "git@host:r.git");
        assert_eq!(redact("ssh://git@host/r.git"), "ssh://git@host/r.git");
    }
}

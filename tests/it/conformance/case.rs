//! The data of the conformance suite: `tests/conformance/buildkit/<go-file-stem>/`, one
//! `tests.toml` naming every Go test of that BuildKit file (ported or skipped with a reason),
//! and one folder per ported Go test (or part of one) holding `case.toml`, the Dockerfiles and
//! a `context/` directory. The format is described in `tests/conformance/README.md`; this
//! module only reads and checks it (unknown keys are errors, so a misspelt expectation cannot
//! be silently ignored). It runs nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The root of the suite's data.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("conformance")
        .join("buildkit")
}

/// `tests.toml`: the Go tests of one BuildKit source file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoFile {
    /// The file in moby/buildkit, e.g. `frontend/dockerfile/dockerfile_copy_test.go`.
    pub(crate) source: String,
    /// The moby/buildkit commit read.
    pub(crate) commit: String,
    /// Every `func test...` of the file, in the file's order.
    pub(crate) tests: Vec<String>,
    /// Go tests not ported, with the reason (`Category: details`).
    #[serde(default)]
    pub(crate) skip: BTreeMap<String, String>,
}

/// One Go source file with its cases, as loaded.
#[derive(Debug)]
pub(crate) struct Suite {
    /// The folder name: the Go file's stem (`dockerfile_copy_test`).
    pub(crate) stem: String,
    /// `tests.toml`.
    pub(crate) file: GoFile,
    /// The case folders, sorted by name.
    pub(crate) folders: Vec<Folder>,
}

/// One case folder: `case.toml` and what sits beside it.
#[derive(Debug)]
pub(crate) struct Folder {
    /// The folder's path.
    pub(crate) dir: PathBuf,
    /// `<stem>/<folder>`.
    pub(crate) id: String,
    /// `case.toml`.
    pub(crate) spec: CaseFile,
}

/// `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaseFile {
    /// The Go test function this folder ports (`testCopyChown`).
    pub(crate) go: String,
    /// What of the Go test is not ported, and why (free text, for readers of the data).
    #[serde(default)]
    #[allow(dead_code, reason = "read by people, not by the harness")]
    pub(crate) note: Option<String>,
    /// Entries git cannot hold (modes, empty directories, sockets, tar archives...), applied
    /// to the copy of `context/` before the first build.
    #[serde(default)]
    pub(crate) context: Vec<Entry>,
    /// What the loopback HTTP server serves for this folder at `{{HTTP}}`.
    #[serde(default)]
    pub(crate) serve: Option<Serve>,
    /// Placeholders for every case of the folder.
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, String>,
    /// The cases, each reported on its own line per platform.
    #[serde(rename = "case")]
    pub(crate) cases: Vec<Case>,
}

/// A file-system entry of a build context (or an edit of it between builds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    /// Path inside the context.
    pub(crate) path: String,
    /// What to make there.
    #[serde(default)]
    pub(crate) kind: EntryKind,
    /// File content (`file`), or nothing.
    #[serde(default)]
    pub(crate) content: Option<String>,
    /// Permission bits, octal (`"0600"`).
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// Link target (`symlink`: as written; `hardlink`: a context path).
    #[serde(default)]
    pub(crate) target: Option<String>,
    /// Members of a `tar` entry, in order.
    #[serde(default)]
    pub(crate) member: Vec<TarMember>,
    /// Gzip the `tar` entry.
    #[serde(default)]
    pub(crate) gzip: bool,
    /// Modification time, seconds since the epoch.
    #[serde(default)]
    pub(crate) mtime: Option<i64>,
}

/// What an [`Entry`] makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EntryKind {
    /// A regular file (the default).
    #[default]
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `target`.
    Symlink,
    /// A hard link to the context path `target`.
    Hardlink,
    /// A named pipe.
    Fifo,
    /// A unix socket (bound, then left behind).
    Socket,
    /// A tar archive of `member`s (`gzip` to compress it).
    Tar,
    /// Removes whatever is at `path` (edits between builds).
    Absent,
}

/// One member of a generated tar archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TarMember {
    /// The member's name, as written in the header.
    pub(crate) name: String,
    /// `file` (default), `dir`, `symlink` or `hardlink`.
    #[serde(default)]
    pub(crate) kind: EntryKind,
    /// File content.
    #[serde(default)]
    pub(crate) content: Option<String>,
    /// Permission bits, octal.
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// Link name (symlink target, or hardlink's member name).
    #[serde(default)]
    pub(crate) target: Option<String>,
    /// Owner.
    #[serde(default)]
    pub(crate) uid: Option<u64>,
    /// Group.
    #[serde(default)]
    pub(crate) gid: Option<u64>,
    /// Modification time, seconds since the epoch (default 1700000000).
    #[serde(default)]
    pub(crate) mtime: Option<u64>,
}

/// What the loopback HTTP server serves for a folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Serve {
    /// A shell script run (with `sh -eu`) in the served directory before the first build,
    /// with `$HTTP` set to its URL: makes git repositories (served as git's "dumb" HTTP
    /// protocol after `git update-server-info`) or files.
    #[serde(default)]
    pub(crate) script: Option<String>,
    /// Placeholders whose value is `git rev-parse` of a revision after the script ran:
    /// `NAME = "repo-dir:rev"`; `{{NAME}}` is the full hash, `{{NAME_SHORT}}` its first 8 hex.
    #[serde(default)]
    pub(crate) revs: BTreeMap<String, String>,
    /// Files with their content and headers.
    #[serde(default)]
    pub(crate) file: Vec<ServedFile>,
    /// A TCP server on 127.0.0.1 that writes this text to every connection; its port is
    /// `{{ECHO_PORT}}`.
    #[serde(default)]
    pub(crate) echo: Option<String>,
}

/// One file served at a fixed URL path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServedFile {
    /// The URL path under `{{HTTP}}` (`/foo`, or `/` itself).
    pub(crate) path: String,
    /// The body.
    #[serde(default)]
    pub(crate) content: Option<String>,
    /// Or a file (relative to the case folder) as the body.
    #[serde(default)]
    pub(crate) from: Option<String>,
    /// Or a generated tar archive as the body.
    #[serde(default)]
    pub(crate) member: Vec<TarMember>,
    /// Gzip the generated archive.
    #[serde(default)]
    pub(crate) gzip: bool,
    /// `Last-Modified`, in HTTP date form.
    #[serde(default)]
    pub(crate) last_modified: Option<String>,
    /// `ETag` (sent quoted).
    #[serde(default)]
    pub(crate) etag: Option<String>,
    /// `Content-Disposition`.
    #[serde(default)]
    pub(crate) content_disposition: Option<String>,
}

/// One case: a sequence of builds, reported as one line per platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Case {
    /// The case's name inside its folder (default: none, the folder is the case).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Target platforms, each built and judged on its own (default: `linux/amd64`, and
    /// `linux/arm64` when a Dockerfile of the case has a `RUN`).
    #[serde(default)]
    pub(crate) platforms: Option<Vec<String>>,
    /// Known to fail today: the reason (what xbuild lacks or does wrong). A case marked
    /// `xfail` that passes fails the run, so markers go as features land.
    #[serde(default)]
    pub(crate) xfail: Option<String>,
    /// With `xfail`: a substring of the first difference the case is known to fail with; a
    /// case that fails otherwise is reported as a failure (a new problem is not hidden).
    #[serde(default)]
    pub(crate) xfail_match: Option<String>,
    /// Restricts `xfail` to these platforms.
    #[serde(default)]
    pub(crate) xfail_platforms: Option<Vec<String>>,
    /// Not run here: the reason (`Category: details`).
    #[serde(default)]
    pub(crate) skip: Option<String>,
    /// A host shell check (`sh -euc`) the case needs; when it fails, the case is reported as
    /// skipped with `needs_host_reason` (what BuildKit's test assumes of the host).
    #[serde(default)]
    pub(crate) needs_host: Option<String>,
    /// Why `needs_host` matters.
    #[serde(default)]
    pub(crate) needs_host_reason: Option<String>,
    /// Placeholders for this case (override the folder's).
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, String>,
    /// The builds, in order, on one store.
    pub(crate) build: Vec<Build>,
}

/// One `xbuild build`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Build {
    /// The Dockerfile (a file of the case folder; default `Dockerfile`), placeholders
    /// substituted, written into the context as `dockerfile_name` (not written for a
    /// `context_url` build, unless `dockerfile_outside`).
    #[serde(default)]
    pub(crate) dockerfile: Option<String>,
    /// Its name inside the context (default `Dockerfile`; xbuild is given no `-f`, so another
    /// name is found only as BuildKit finds it, or through a `Dockerfile` link or `file`).
    #[serde(default)]
    pub(crate) dockerfile_name: Option<String>,
    /// Write the Dockerfile outside the context and pass it with `-f`.
    #[serde(default)]
    pub(crate) dockerfile_outside: bool,
    /// `-f`, relative to the context.
    #[serde(default)]
    pub(crate) file: Option<String>,
    /// Build from this URL instead of the context directory (remote build context).
    #[serde(default)]
    pub(crate) context_url: Option<String>,
    /// `--build-arg K=V`.
    #[serde(default)]
    pub(crate) args: BTreeMap<String, String>,
    /// `--target`.
    #[serde(default)]
    pub(crate) target: Option<String>,
    /// `--secret id=ID,src=FILE` (the file holds the value) or `env=`.
    #[serde(default)]
    pub(crate) secret: Vec<Secret>,
    /// `--ssh` values (`default` gets an agent holding a fresh key).
    #[serde(default)]
    pub(crate) ssh: Vec<String>,
    /// `--allow` values.
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// `--network`.
    #[serde(default)]
    pub(crate) network: Option<String>,
    /// `--no-cache`.
    #[serde(default)]
    pub(crate) no_cache: bool,
    /// Other flags, passed as they are (placeholders substituted).
    #[serde(default)]
    pub(crate) flags: Vec<String>,
    /// Environment of the xbuild process (e.g. `SOURCE_DATE_EPOCH`).
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// `-t`: the name later builds use as a base (default: a name of the harness).
    #[serde(default)]
    pub(crate) tag: Option<String>,
    /// Seconds to wait before this build (so that times of day differ from the last one).
    #[serde(default)]
    pub(crate) wait_before: u64,
    /// Changes to the context before this build.
    #[serde(default)]
    pub(crate) edit: Vec<Entry>,
    /// What the build must give.
    #[serde(default)]
    pub(crate) expect: Expect,
}

/// A secret given to a build.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Secret {
    /// The id.
    pub(crate) id: String,
    /// Its value (written to a file, passed as `src=`).
    #[serde(default)]
    pub(crate) value: Option<String>,
    /// Or: pass it as `env=VAR` with this variable set to `value`.
    #[serde(default)]
    pub(crate) env: Option<String>,
}

/// What a build must give.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// The exit code (default 0; 2 is bad input, 1 a failed step, as README says).
    #[serde(default)]
    pub(crate) exit: i32,
    /// Substrings of stderr (error messages, or the output of `RUN` steps).
    #[serde(default)]
    pub(crate) stderr: Vec<String>,
    /// Substrings stderr must not have.
    #[serde(default)]
    pub(crate) not_stderr: Vec<String>,
    /// The error names this line of the Dockerfile (`Dockerfile:N`).
    #[serde(default)]
    pub(crate) line: Option<u32>,
    /// Files of the image's root file system (read from umoci's unpacking of it).
    #[serde(default)]
    pub(crate) file: Vec<FileExpect>,
    /// Image config fields, by JSON pointer into `skopeo inspect --config`, equal to a value.
    #[serde(default)]
    pub(crate) config: BTreeMap<String, toml::Value>,
    /// Arrays of the config (by JSON pointer) that contain these values.
    #[serde(default)]
    pub(crate) config_contains: BTreeMap<String, Vec<toml::Value>>,
    /// Times of the config (JSON pointers to RFC 3339 strings; a `*` segment means every
    /// element of an array), in seconds since the epoch.
    #[serde(default)]
    pub(crate) config_time: BTreeMap<String, i64>,
    /// Config fields (JSON pointers) that must be absent (or null).
    #[serde(default)]
    pub(crate) config_absent: Vec<String>,
    /// The last history entries of the config, in order (with `base`: exactly the entries
    /// after the base image's).
    #[serde(default)]
    pub(crate) history: Vec<HistoryExpect>,
    /// The stored base image (`busybox`) the result is built on: `history` is then the whole
    /// history after the base's, and `layers_added` counts from its layers.
    #[serde(default)]
    pub(crate) base: Option<String>,
    /// With `base`: how many layers (diff_ids) the build added.
    #[serde(default)]
    pub(crate) layers_added: Option<usize>,
    /// The number of layers of the image (`skopeo inspect --raw` of its manifest).
    #[serde(default)]
    pub(crate) layers: Option<usize>,
    /// The image's manifest digest equals that of an earlier build (index into `build`).
    #[serde(default)]
    pub(crate) same_digest_as: Option<usize>,
    /// ... or differs from it.
    #[serde(default)]
    pub(crate) other_digest_than: Option<usize>,
    /// The requests the HTTP server saw during this build, in order (`"GET /foo"`).
    #[serde(default)]
    pub(crate) http_requests: Option<Vec<String>>,
    /// Shell commands run on the host (`sh -eu`, `$ROOTFS` set to the unpacked image,
    /// `$CONTEXT` to the build context):
    /// each must exit 0. For what a file expectation cannot say.
    #[serde(default)]
    pub(crate) check: Vec<String>,
}

/// A file (or its absence) in the image.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileExpect {
    /// Path in the image.
    pub(crate) path: String,
    /// Exact content (files; links are followed inside the image).
    #[serde(default)]
    pub(crate) content: Option<String>,
    /// Substrings of the content.
    #[serde(default)]
    pub(crate) contains: Vec<String>,
    /// Substrings the content must not have.
    #[serde(default)]
    pub(crate) not_contains: Vec<String>,
    /// `file`, `dir`, `symlink`, or `absent` (nothing there).
    #[serde(default)]
    pub(crate) kind: Option<String>,
    /// Permission bits, octal (`"0755"`; with setuid/setgid/sticky when set).
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// `uid:gid`.
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// Symlink target, as stored.
    #[serde(default)]
    pub(crate) link: Option<String>,
    /// Modification time, seconds since the epoch.
    #[serde(default)]
    pub(crate) mtime: Option<i64>,
    /// The same inode as this other path (a hard link).
    #[serde(default)]
    pub(crate) hardlink_of: Option<String>,
    /// The same content as in the image of an earlier build (index into `build`).
    #[serde(default)]
    pub(crate) same_as_build: Option<usize>,
    /// Other content than in the image of an earlier build.
    #[serde(default)]
    pub(crate) differs_from_build: Option<usize>,
}

/// One expected history entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryExpect {
    /// `created_by`, exactly.
    #[serde(default)]
    pub(crate) created_by: Option<String>,
    /// Substrings of `created_by`.
    #[serde(default)]
    pub(crate) created_by_contains: Vec<String>,
    /// Substrings `created_by` must not have.
    #[serde(default)]
    pub(crate) created_by_not_contains: Vec<String>,
    /// `empty_layer` (absent counts as false).
    #[serde(default)]
    pub(crate) empty_layer: Option<bool>,
    /// `comment`.
    #[serde(default)]
    pub(crate) comment: Option<String>,
    /// `created` is there.
    #[serde(default)]
    pub(crate) has_created: bool,
}

impl Case {
    /// The platforms this case runs on: its own list, else amd64 and, when a Dockerfile it
    /// builds has a `RUN` (ONBUILD RUN included), arm64.
    pub(crate) fn platforms(&self, folder: &Path) -> Vec<String> {
        if let Some(platforms) = &self.platforms {
            return platforms.clone();
        }
        let has_run = self.build.iter().any(|build| {
            let name = build.dockerfile.as_deref().unwrap_or("Dockerfile");
            fs::read_to_string(folder.join(name)).is_ok_and(|text| has_run(&text))
        });
        let mut platforms = vec!["linux/amd64".to_owned()];
        if has_run {
            platforms.push("linux/arm64".to_owned());
        }
        platforms
    }

    /// Whether this case is expected to fail on `platform`: the reason.
    pub(crate) fn xfail_on(&self, platform: &str) -> Option<&str> {
        let reason = self.xfail.as_deref()?;
        match &self.xfail_platforms {
            Some(list) if !list.iter().any(|p| p == platform) => None,
            _ => Some(reason),
        }
    }
}

/// Whether a Dockerfile runs a command: a `RUN` instruction, or `ONBUILD RUN`.
fn has_run(text: &str) -> bool {
    text.lines().any(|line| {
        let words: Vec<String> = line
            .split_whitespace()
            .take(2)
            .map(str::to_ascii_uppercase)
            .collect();
        matches!(words.first().map(String::as_str), Some("RUN"))
            || (words.first().map(String::as_str) == Some("ONBUILD")
                && words.get(1).map(String::as_str) == Some("RUN"))
    })
}

/// Loads every Go file's folder. Panics with the file and the cause on bad data: bad data
/// is a bug of the suite, not a result.
pub(crate) fn load_all() -> Vec<Suite> {
    let root = root();
    let mut suites = Vec::new();
    let mut stems: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    stems.sort();
    for dir in stems {
        let stem = dir
            .file_name()
            .and_then(|name| name.to_str())
            .expect("UTF-8 folder name")
            .to_owned();
        let file: GoFile = read_toml(&dir.join("tests.toml"));
        let mut folders = Vec::new();
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.is_dir())
            .collect();
        names.sort();
        for case_dir in names {
            let name = case_dir
                .file_name()
                .and_then(|name| name.to_str())
                .expect("UTF-8 folder name")
                .to_owned();
            let spec: CaseFile = read_toml(&case_dir.join("case.toml"));
            folders.push(Folder {
                dir: case_dir,
                id: format!("{stem}/{name}"),
                spec,
            });
        }
        suites.push(Suite {
            stem,
            file,
            folders,
        });
    }
    suites
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces every `{{NAME}}` of `text` from `vars`; an unknown name is an error (a typo must
/// not become literal text that happens to pass).
pub(crate) fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn placeholders_are_replaced_and_unknown_ones_refused() {
    let vars = BTreeMap::from([("HTTP".to_owned(), "http://127.0.0.1:1".to_owned())]);
    assert_eq!(
        substitute("ADD {{HTTP}}/foo /", &vars).unwrap(),
        "ADD http://127.0.0.1:1/foo /"
    );
    assert!(substitute("{{HTPP}}", &vars).is_err());
    assert!(substitute("{{HTTP", &vars).is_err());
    assert_eq!(substitute("${A} {B}", &vars).unwrap(), "${A} {B}");
}

#[test]
fn run_detection_sees_run_and_onbuild_run_only() {
    assert!(has_run("FROM busybox\nrun true\n"));
    assert!(has_run("FROM busybox\n  ONBUILD RUN true\n"));
    assert!(!has_run("FROM busybox\nCOPY RUN /\n# RUN no\n"));
}

//! The `.dockerignore` conformance data (`shared/conformance/dockerignore`), read in place:
//! every row of `matches.tsv` and every case of `files/`, plus the behaviour the data does
//! not cover (`<Dockerfile>.dockerignore`, error messages, digests and the stat cache).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::*;

/// `$XBUILD_CONFORMANCE_DIR/dockerignore`, else the first `shared/conformance/dockerignore`
/// walking up from the crate. Missing data is a setup bug: panic, never skip.
fn conformance_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(crate::env::XBUILD_CONFORMANCE_DIR) {
        return PathBuf::from(dir).join("dockerignore");
    }
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(current) = dir {
        let candidate = current.join("shared").join("conformance");
        if candidate.is_dir() {
            return candidate.join("dockerignore");
        }
        dir = current.parent();
    }
    panic!(
        "shared/conformance not found above {}: set XBUILD_CONFORMANCE_DIR",
        env!("CARGO_MANIFEST_DIR")
    );
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("xbuild-test-")
        .tempdir()
        .expect("temp dir")
}

/// What a `New([pattern])` + `MatchesOrParentMatches(path)` gives: "match", "nomatch" or
/// "error".
fn match_result(pattern: &str, path: &str) -> String {
    let ignore = match Dockerignore::from_patterns(&[pattern.as_bytes()], "matches.tsv") {
        Ok(ignore) => ignore,
        Err(_) => return "error".to_string(),
    };
    match ignore.matches_or_parent_matches(path.as_bytes()) {
        Ok(true) => "match".to_string(),
        Ok(false) => "nomatch".to_string(),
        Err(_) => "error".to_string(),
    }
}

#[test]
fn matches_tsv_every_row_agrees() {
    let file = conformance_dir().join("matches.tsv");
    let text = fs::read_to_string(&file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("pattern\tpath\texpected"));
    let mut rows = 0;
    let mut failures = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "bad row {line:?}");
        let (pattern, path, expected) = (fields[0], fields[1], fields[2]);
        assert!(
            ["match", "nomatch", "error"].contains(&expected),
            "{line:?}"
        );
        rows += 1;
        let actual = match_result(pattern, path);
        if actual != expected {
            failures.push(format!(
                "{pattern:?} vs {path:?}: expected {expected}, got {actual}"
            ));
        }
    }
    assert_eq!(rows, 127, "matches.tsv should hold 127 rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Builds the case's context in a temp dir and returns the walk's listing (directories with
/// a trailing `/`, sorted bytewise), or the error.
fn run_files_case(case: &Path) -> (tempfile::TempDir, Result<Vec<String>, ContextError>) {
    let dir = temp_dir();
    let paths = fs::read_to_string(case.join("paths")).expect("paths");
    for path in paths.lines() {
        let target = dir.path().join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&target).expect("mkdir");
        } else {
            let contents: &[u8] = match path {
                ".dockerignore" => &fs::read(case.join("dockerignore")).expect("dockerignore"),
                "Dockerfile" => b"FROM scratch\nCOPY . /ctx\n",
                _ => b"",
            };
            fs::write(&target, contents).expect("write");
        }
    }
    let result = Dockerignore::load(dir.path(), &dir.path().join("Dockerfile"))
        .and_then(|ignore| walk(dir.path(), &ignore))
        .map(|entries| {
            let mut listed: Vec<String> = entries
                .iter()
                .map(|entry| {
                    let mut path = String::from_utf8(entry.path_bytes().to_vec()).expect("utf-8");
                    if entry.kind() == EntryKind::Dir {
                        path.push('/');
                    }
                    path
                })
                .collect();
            listed.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            listed
        });
    (dir, result)
}

#[test]
fn files_every_case_agrees() {
    let files = conformance_dir().join("files");
    let mut cases: Vec<PathBuf> = fs::read_dir(&files)
        .unwrap_or_else(|error| panic!("reading {}: {error}", files.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 33, "files/ should hold 33 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let (_dir, result) = run_files_case(case);
        let expected_file = case.join("expected");
        if expected_file.exists() {
            let expected: Vec<String> = fs::read_to_string(&expected_file)
                .expect("expected")
                .lines()
                .map(str::to_string)
                .collect();
            match result {
                Ok(listed) if listed == expected => {}
                Ok(listed) => failures.push(format!(
                    "{name}: expected {expected:?}\n{:width$}got      {listed:?}",
                    "",
                    width = name.len() + 2
                )),
                Err(error) => failures.push(format!("{name}: unexpected error: {error}")),
            }
        } else {
            assert!(
                case.join("error").exists(),
                "{name} has neither expected nor error"
            );
            match result {
                Err(ContextError::Pattern { .. }) => {}
                Err(error) => failures.push(format!("{name}: wrong kind of error: {error}")),
                Ok(listed) => failures.push(format!("{name}: expected an error, got {listed:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Quirks the conformance data does not show, with results taken from patternmatcher
/// itself (run with Go 1.19): `|` and `{}` are not escaped (its escape bitmap only covers
/// characters below 64), and Go's `filepath.Match` syntax check stops at the first chunk
/// that cannot match `.`, so some malformed patterns only fail when first matched.
#[test]
fn go_quirks_beyond_the_conformance_data() {
    for (pattern, path, expected) in [
        ("*.log|foo", "x.log", "match"),
        ("*.log|foo", "afoo", "match"),
        ("*.log|foo", "x.txt", "nomatch"),
        ("*.log|foo", "sub/afoo", "match"),
        ("a|b", "a", "nomatch"),
        ("a|b", "a|b", "match"),
        ("a{2}*", "aa", "match"),
        ("a{2}*", "aab", "match"),
        ("a{2}*", "a{2}", "nomatch"),
        ("a{2}", "a{2}", "match"),
        ("a{2}", "aa", "nomatch"),
        ("x*[", "xa", "error"),
        ("x*\\", "x$", "match"),
        ("x*\\", "xa$b", "match"),
        ("x*\\", "x", "nomatch"),
        ("{*", "{a", "match"),
        ("*{1,2}", "a", "error"),
        ("a\\", "a", "error"),
    ] {
        assert_eq!(
            match_result(pattern, path),
            expected,
            "{pattern:?} vs {path:?}"
        );
    }
    // `x*[` passes the syntax check (its first chunk `x` already fails against `.`) and
    // fails at its first match; `a\` fails the syntax check.
    assert!(Dockerignore::parse(b"x*[\n", ".dockerignore").is_ok());
    assert!(Dockerignore::parse(b"a\\\n", ".dockerignore").is_err());
}

#[test]
fn pattern_errors_name_the_file_line_and_pattern_and_exit_2() {
    let error = Dockerignore::parse(b"# c\na.txt\n  foo[  \n", ".dockerignore")
        .expect_err("foo[ is malformed");
    assert_eq!(
        error.to_string(),
        ".dockerignore:3: invalid pattern \"foo[\": syntax error in pattern"
    );
    assert_eq!(crate::Failure::from(error).kind.code(), 2);

    let error = Dockerignore::parse(b"a\r\n!\r\n", "x.dockerignore").expect_err("lone !");
    assert_eq!(
        error.to_string(),
        "x.dockerignore:2: invalid pattern \"!\": illegal exclusion pattern: \"!\""
    );

    // A reversed range passes the syntax check and fails at the first match.
    let ignore = Dockerignore::parse(b"ok\n[z-a]\n", ".dockerignore").expect("accepted");
    let error = ignore
        .matches_or_parent_matches(b"a")
        .expect_err("fails when tried");
    let message = error.to_string();
    assert!(
        message.starts_with(".dockerignore:2: invalid pattern \"[z-a]\": syntax error in pattern"),
        "{message}"
    );
    assert_eq!(error.exit_kind(), crate::ExitKind::BadInput);
}

#[test]
fn an_exception_never_tried_does_not_fail() {
    // As upstream: `![z-a]` is only tried on an excluded path, and nothing is excluded.
    let ignore = Dockerignore::parse(b"![z-a]\n", ".dockerignore").expect("accepted");
    assert!(!ignore.matches_or_parent_matches(b"a").expect("not tried"));
}

fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let target = root.join(path);
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs::write(target, contents).expect("write");
    }
}

fn listed(entries: &ContextEntries) -> Vec<String> {
    entries
        .iter()
        .map(|entry| String::from_utf8_lossy(entry.path_bytes()).into_owned())
        .collect()
}

#[test]
fn dockerfile_dockerignore_beside_the_dockerfile_replaces_the_root_one() {
    let dir = temp_dir();
    write_tree(
        dir.path(),
        &[
            (".dockerignore", "a.txt\n"),
            ("sub/app.Dockerfile", "FROM scratch\n"),
            ("sub/app.Dockerfile.dockerignore", "b.txt\n"),
            ("a.txt", ""),
            ("b.txt", ""),
        ],
    );
    let ignore =
        Dockerignore::load(dir.path(), &dir.path().join("sub/app.Dockerfile")).expect("load");
    assert_eq!(ignore.source_name(), "sub/app.Dockerfile.dockerignore");
    let entries = walk(dir.path(), &ignore).expect("walk");
    assert_eq!(
        listed(&entries),
        [
            ".dockerignore",
            "a.txt",
            "sub",
            "sub/app.Dockerfile",
            "sub/app.Dockerfile.dockerignore"
        ]
    );

    // Without it, the root file applies.
    fs::remove_file(dir.path().join("sub/app.Dockerfile.dockerignore")).expect("rm");
    let ignore =
        Dockerignore::load(dir.path(), &dir.path().join("sub/app.Dockerfile")).expect("load");
    assert_eq!(ignore.source_name(), ".dockerignore");
    let entries = walk(dir.path(), &ignore).expect("walk");
    assert_eq!(
        listed(&entries),
        [".dockerignore", "b.txt", "sub", "sub/app.Dockerfile"]
    );
}

#[test]
fn is_excluded_follows_the_walk() {
    // Case 23: `a/b/*` then `!a/b`: a/b/c stays excluded (rule 16).
    let ignore = Dockerignore::parse(b"a/b/*\n!a/b\n", ".dockerignore").expect("parse");
    assert!(!ignore.is_excluded(Path::new("a/b")).expect("ok"));
    assert!(ignore.is_excluded(Path::new("a/b/c")).expect("ok"));
    assert!(!ignore.is_excluded(Path::new("a/x")).expect("ok"));
}

#[test]
fn walk_records_metadata_and_does_not_follow_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    write_tree(dir.path(), &[("d/f", "hello"), ("real/x", "")]);
    fs::set_permissions(dir.path().join("d/f"), fs::Permissions::from_mode(0o4751)).expect("chmod");
    std::os::unix::fs::symlink("../real", dir.path().join("d/link")).expect("symlink");
    let entries = walk(dir.path(), &Dockerignore::empty()).expect("walk");
    assert_eq!(listed(&entries), ["d", "d/f", "d/link", "real", "real/x"]);
    let file = entries.at(1);
    assert_eq!(
        (file.kind(), file.mode(), file.size()),
        (EntryKind::File, 0o4751, 5)
    );
    let link = entries.at(2);
    assert_eq!(link.kind(), EntryKind::Symlink);
    assert_eq!(link.link_target(), Some(Path::new("../real")));
    assert_eq!(file.link_target(), None);
    // The target is kept beside the path, not instead of the next path.
    assert_eq!(entries.at(3).path(), Path::new("real"));
}

#[test]
fn missing_context_is_bad_input() {
    let dir = temp_dir();
    let error = walk(&dir.path().join("nope"), &Dockerignore::empty()).expect_err("missing");
    assert_eq!(error.exit_kind(), crate::ExitKind::BadInput);
}

#[test]
fn digest_covers_content_mode_and_paths_and_not_mtime() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    write_tree(dir.path(), &[("a", "one"), ("b/c", "two")]);
    let digest = |dir: &Path| {
        let entries = walk(dir, &Dockerignore::empty()).expect("walk");
        digest_entries(dir, &entries).expect("digest")
    };
    let first = digest(dir.path());
    assert_eq!(first, digest(dir.path()), "stable");

    // mtime alone does not change it.
    let file = fs::File::options()
        .write(true)
        .open(dir.path().join("a"))
        .expect("open");
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .expect("set mtime");
    assert_eq!(first, digest(dir.path()), "mtime is not part of it");

    fs::write(dir.path().join("a"), "One").expect("write");
    let edited = digest(dir.path());
    assert_ne!(first, edited, "content is part of it");

    fs::set_permissions(dir.path().join("a"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let chmodded = digest(dir.path());
    assert_ne!(edited, chmodded, "mode is part of it");

    fs::rename(dir.path().join("b/c"), dir.path().join("b/d")).expect("rename");
    assert_ne!(chmodded, digest(dir.path()), "paths are part of it");
}

#[test]
fn digest_of_a_subset_hashes_only_that_subset() {
    let dir = temp_dir();
    write_tree(dir.path(), &[("src/a", "1"), ("docs/b", "2")]);
    let mut src = walk(dir.path(), &Dockerignore::empty()).expect("walk");
    src.retain(|entry| entry.path().starts_with("src"));
    assert_eq!(listed(&src), ["src", "src/a"]);
    let before = digest_entries(dir.path(), &src).expect("digest");
    fs::write(dir.path().join("docs/b"), "changed").expect("write");
    let mut src = walk(dir.path(), &Dockerignore::empty()).expect("walk");
    src.retain(|entry| entry.path().starts_with("src"));
    assert_eq!(before, digest_entries(dir.path(), &src).expect("digest"));
}

#[test]
fn stat_cache_reuses_digests_of_unchanged_files_only() {
    let dir = temp_dir();
    let context = dir.path().join("ctx");
    write_tree(&context, &[("a", "one"), ("b", "two")]);
    // Make the files old enough to be remembered.
    for name in ["a", "b"] {
        let file = fs::File::options()
            .write(true)
            .open(context.join(name))
            .expect("open");
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .expect("mtime");
    }
    let cache_file = dir.path().join("stat-cache");
    let entries = std::sync::Arc::new(walk(&context, &Dockerignore::empty()).expect("walk"));
    let mut cache = StatCache::load(&cache_file, &context, entries.clone());
    assert!(cache.is_empty());
    let cold = digest_entries_cached(&context, entries.iter(), &mut cache).expect("digest");
    assert_eq!(cold, digest_entries(&context, &entries).expect("digest"));
    // ctime is "now", so nothing is remembered yet (racily clean) ...
    assert_eq!(cache.len(), 0);

    // ... but an entry whose stat is old is. Forge old stamps to test the reuse itself: the
    // cache must return the remembered digest for an identical stamp, even if the bytes
    // changed behind its back (which a real file system would show in ctime).
    let mut old = (*entries).clone();
    old.forge_ctime(Timestamp {
        seconds: 1000,
        nanoseconds: 0,
    });
    let old = std::sync::Arc::new(old);
    // Entries of another walk than the cache's are neither looked up nor remembered.
    digest_entries_cached(&context, old.iter(), &mut cache).expect("digest");
    assert_eq!(cache.len(), 0);
    let mut cache = StatCache::load(&cache_file, &context, old.clone());
    let first = digest_entries_cached(&context, old.iter(), &mut cache).expect("digest");
    assert_eq!(first, cold);
    assert_eq!(cache.len(), 2);
    cache.save(&cache_file).expect("save");
    fs::write(context.join("a"), "ONE").expect("same size, new bytes");
    let mut reloaded = StatCache::load(&cache_file, &context, old.clone());
    assert_eq!(reloaded.len(), 2);
    assert_eq!(
        first,
        digest_entries_cached(&context, old.iter(), &mut reloaded).expect("digest"),
        "an unchanged stamp reuses the remembered digest"
    );
    // A fresh walk sees the new stamp: that record is not loaded, the file is read again.
    let fresh = std::sync::Arc::new(walk(&context, &Dockerignore::empty()).expect("walk"));
    let mut reloaded = StatCache::load(&cache_file, &context, fresh.clone());
    assert!(reloaded.len() < 2);
    assert_ne!(
        first,
        digest_entries_cached(&context, fresh.iter(), &mut reloaded).expect("digest")
    );

    // Pruning keeps what was asked about since loading, drops the rest.
    let mut pruned = StatCache::load(&cache_file, &context, old.clone());
    let a = old.find(b"a").expect("a is walked");
    digest_entries_cached(&context, old.range(a..a + 1), &mut pruned).expect("digest");
    pruned.prune_untouched();
    assert_eq!(pruned.len(), 1);

    // A cache saved for another directory is not used.
    assert!(StatCache::load(&cache_file, dir.path(), old.clone()).is_empty());
    // Nor a corrupt one.
    fs::write(&cache_file, b"xbuild-stat-cache-v1\ngarbage").expect("write");
    assert!(StatCache::load(&cache_file, &context, old).is_empty());
}

#[test]
fn non_utf8_names_are_matched_as_go_does() {
    let dir = temp_dir();
    let name = std::ffi::OsStr::from_bytes(b"x\xffy");
    fs::write(dir.path().join(name), "").expect("write");
    fs::write(dir.path().join("xay"), "").expect("write");
    let ignore = Dockerignore::parse(b"x?y\n", ".dockerignore").expect("parse");
    let entries = walk(dir.path(), &ignore).expect("walk");
    assert!(entries.is_empty(), "{:?}", listed(&entries));
}

#[test]
fn fifos_and_sockets_are_listed() {
    let dir = temp_dir();
    nix::unistd::mkfifo(
        &dir.path().join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    let _listener =
        std::os::unix::net::UnixListener::bind(dir.path().join("socket")).expect("bind");
    fs::write(dir.path().join("file"), "x").expect("write");
    let entries = walk(dir.path(), &Dockerignore::empty()).expect("walk");
    // A socket is listed (BuildKit sends it as an empty regular file; it used to be left
    // out here).
    assert_eq!(listed(&entries), ["file", "pipe", "socket"]);
    assert_eq!(entries.at(1).kind(), EntryKind::Fifo);
    assert_eq!(entries.at(1).mode(), 0o640);
    assert_eq!(entries.at(2).kind(), EntryKind::Socket);
    // A FIFO and a socket are hashed by their metadata, never opened (opening a FIFO would
    // block, a socket cannot be opened).
    digest_entries(dir.path(), &entries).expect("digest");
}

#[test]
fn large_repeat_counts_compile_as_in_go() {
    // Go accepts counts up to 1000; `?{1000}` is the regexp `[^/]{1000}`.
    let started = std::time::Instant::now();
    let ignore = Dockerignore::parse(b"?{1000}\n\\pL{1000}x*\n", ".dockerignore").expect("parse");
    let path = "é".repeat(1000);
    assert!(
        ignore
            .matches_or_parent_matches(path.as_bytes())
            .expect("compiles")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn glob_match_is_go_filepath_match() {
    // Results from Go's filepath.Match (Go 1.19; unchanged in current Go).
    for (pattern, name, expected) in [
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "ab/c", Some(false)),
        ("a*/b", "abc/b", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a?b", "a☺b", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[]a]", "]", None),
        ("[x-]", "x", None),
        ("a[", "a", None),
        ("x*[", ".", Some(false)),
        ("x*[", "xa", None),
        ("*x", "xxx", Some(true)),
    ] {
        assert_eq!(
            glob_match(pattern.as_bytes(), name.as_bytes()),
            expected,
            "{pattern:?} vs {name:?}"
        );
    }
}

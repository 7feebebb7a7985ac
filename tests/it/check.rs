//! `xbuild check` through the binary: text and JSON output, exit codes, the `# check=`
//! directive, `.dockerignore`, and the warnings a real build prints (or fails on).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{self, Need, require, run, stderr, stdout, temp_dir, xbuild};

/// A context with `files`, and `xbuild check -f Dockerfile . ARGS` run inside it.
fn check(dir: &Path, files: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, content).expect("write a context file");
    }
    run(xbuild(dir)
        .current_dir(dir)
        .args(["check", "-f", "Dockerfile"])
        .args(args)
        .arg("."))
}

const BAD: &str = "FROM debian\nMAINTAINER me@example.com\nRUN apt-get update\nRUN apt-get install -y curl\nCMD run-me\n";

#[test]
fn text_output_names_line_rule_and_fix_and_exits_1() {
    let dir = temp_dir();
    let out = check(dir.path(), &[("Dockerfile", BAD)], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "Dockerfile:1: UntaggedBaseImage: FROM debian has no tag",
        "Dockerfile:1: NoUserInFinalStage: the final stage sets no USER",
        "Dockerfile:2: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label",
        "Dockerfile:3: LoneAptGetUpdate: `apt-get update` without an install in the same RUN",
        "Dockerfile:4: AptGetInstallFlags: `apt-get install` without --no-install-recommends",
        "Dockerfile:4: PackageCacheNotCleaned:",
        "Dockerfile:5: JSONArgsRecommended: JSON arguments recommended for CMD",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("  fix: "), "{text}");
    assert!(
        stderr(&out).contains("7 warnings found (rules: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn clean_dockerfile_exits_0_with_no_output() {
    let dir = temp_dir();
    let clean = "FROM alpine:3.20\nRUN apk add --no-cache curl\nUSER 65532\nCMD [\"curl\", \"--version\"]\n";
    let out = check(dir.path(), &[("Dockerfile", clean)], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = temp_dir();
    let out = check(dir.path(), &[("Dockerfile", BAD)], &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["file"], "Dockerfile");
    assert_eq!(json["error"], false);
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 7);
    let first = &warnings[0];
    for key in [
        "rule",
        "description",
        "url",
        "message",
        "fix",
        "file",
        "line",
        "end_line",
    ] {
        assert!(!first[key].is_null(), "{key} missing in {first}");
    }
    let maintainer = warnings
        .iter()
        .find(|w| w["rule"] == "MaintainerDeprecated")
        .unwrap();
    assert_eq!(maintainer["line"], 2);
    assert_eq!(
        maintainer["url"],
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    );
    assert!(json["rules"].as_array().unwrap().len() >= 6);
    // An outside reader agrees it is JSON.
    if util::which("python3").is_some() {
        let mut python = Command::new("python3")
            .args([
                "-c",
                "import json,sys; d=json.load(sys.stdin); print(len(d['warnings']))",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        python.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let read = python.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "7");
    }
}

#[test]
fn directive_skips_rules_and_skip_all_is_clean() {
    let dir = temp_dir();
    let text =
        format!("# check=skip=UntaggedBaseImage,NoUserInFinalStage,JSONArgsRecommended\n{BAD}");
    let out = check(dir.path(), &[("Dockerfile", &text)], &[]);
    assert_eq!(out.status.code(), Some(1));
    let found = stdout(&out);
    assert!(!found.contains("UntaggedBaseImage") && !found.contains("JSONArgsRecommended"));
    assert!(found.contains("MaintainerDeprecated"), "{found}");
    let out = check(
        dir.path(),
        &[("Dockerfile", &format!("# check=skip=all\n{BAD}"))],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = check(
        dir.path(),
        &[("Dockerfile", BAD)],
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn bad_input_exits_2() {
    let dir = temp_dir();
    let out = check(
        dir.path(),
        &[("Dockerfile", "FROM alpine:3\nRUNN true\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Dockerfile:2: unknown instruction"),
        "{}",
        stderr(&out)
    );
    let out = check(
        dir.path(),
        &[("Dockerfile", "# check=skip\nFROM alpine:3\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = check(
        dir.path(),
        &[("Dockerfile", "FROM alpine:3\n")],
        &["--platform", "nope/x"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn copy_ignored_file_reads_the_dockerignore() {
    let dir = temp_dir();
    let text = "# check=experimental=CopyIgnoredFile\nFROM alpine:3\nCOPY secrets/token.txt /run/\nUSER 1\n";
    let out = check(
        dir.path(),
        &[("Dockerfile", text), (".dockerignore", "secrets\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "Dockerfile:3: CopyIgnoredFile: Attempting to Copy file \"secrets/token.txt\" that is excluded by .dockerignore"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn emulated_compile_depends_on_the_platforms() {
    let dir = temp_dir();
    let text = "FROM gcc:14 AS build\nCOPY hello.c .\nRUN gcc -static -o /hello hello.c\nFROM scratch\nCOPY --from=build /hello /hello\nUSER 65532\nENTRYPOINT [\"/hello\"]\n";
    let host = xbuild_host_platform();
    let foreign = if host == "linux/arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let out = check(dir.path(), &[("Dockerfile", text)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = check(
        dir.path(),
        &[("Dockerfile", text)],
        &["--platform", &format!("{host},{foreign}")],
    );
    assert_eq!(out.status.code(), Some(1));
    let found = stdout(&out);
    assert!(
        found.contains(
            "Dockerfile:3: EmulatedCompile: gcc runs in stage \"build\", under emulation for"
        ) && found.contains(foreign),
        "{found}"
    );
}

fn xbuild_host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// The examples follow every practice: nothing fires, for one platform or two.
#[test]
fn examples_pass_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for example in ["practices", "hello"] {
        let out = run(xbuild(&root)
            .arg("check")
            .arg("--platform")
            .arg("linux/amd64,linux/arm64")
            .arg(root.join(example)));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn build_prints_the_warnings_and_error_true_stops_it() {
    if !require(&[Need::Root]) {
        return;
    }
    let dir = temp_dir();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let dockerfile = "FROM scratch\nCOPY hello.txt /hello.txt\nMAINTAINER me\n";
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let out = run(xbuild(dir.path())
        .args(["build", "--progress", "plain", "-t", "check-test:1"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:3: MaintainerDeprecated: Maintainer instruction is deprecated")
            && err.contains("WARNING: ")
            && err.contains("NoUserInFinalStage"),
        "{err}"
    );
    // stdout holds the digest only.
    assert!(
        stdout(&out).trim().starts_with("sha256:"),
        "{}",
        stdout(&out)
    );
    // -q: nothing but the digest, no warnings.
    let out = run(xbuild(dir.path()).args(["build", "-q"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("MaintainerDeprecated"),
        "{}",
        stderr(&out)
    );
    // error=true: the build fails before it starts.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("# check=error=true\n{dockerfile}"),
    )
    .unwrap();
    let out = run(xbuild(dir.path())
        .args(["build", "--progress", "plain", "-t", "check-test:2"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("lint violation found for rules: MaintainerDeprecated, NoUserInFinalStage"),
        "{err}"
    );
    assert!(
        !err.contains("steps cached"),
        "the build must not start: {err}"
    );
    let images = run(xbuild(dir.path()).arg("images"));
    assert!(
        !stdout(&images).contains("check-test:2"),
        "{}",
        stdout(&images)
    );
    // A check directive that does not parse is bad input, for a build too.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("# check=skip\n{dockerfile}"),
    )
    .unwrap();
    let out = run(xbuild(dir.path()).args(["build", "-q"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to parse check options"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_warns_about_an_empty_continuation_line_once() {
    if !require(&[Need::Root]) {
        return;
    }
    let dir = temp_dir();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    let dockerfile = "FROM scratch\nCOPY hello.txt \\\n\n  /hello.txt\nUSER 65532\n";
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let out = run(xbuild(dir.path())
        .args(["build", "--progress", "plain"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let count = err
        .to_lowercase()
        .matches("empty continuation line")
        .count();
    assert_eq!(
        count, 1,
        "one warning, from the NoEmptyContinuation rule: {err}"
    );
    assert!(err.contains("NoEmptyContinuation"), "{err}");
}

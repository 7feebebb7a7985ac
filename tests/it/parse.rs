//! The Dockerfile frontend through the binary: BuildKit's parser conformance data (read in
//! place from `shared/conformance/buildkit`; missing data fails) and our golden cases under
//! `tests/golden/dockerfile*/<case>/` (`UPDATE_GOLDEN=1` rewrites the expected files).
//!
//! A golden case is a folder with a `Dockerfile`, optionally `args` (extra arguments for
//! `xbuild debug stages`, one a line), and the expected output: `ast.txt` (`debug ast`) and
//! `stages.json` (`debug stages --platform linux/arm64 --build-platform linux/amd64`) for
//! valid cases, `error.txt` (stderr, exit 2) for invalid ones.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{conformance_dir, run, stderr, stdout, temp_dir, xbuild};

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn buildkit_parser_dir() -> PathBuf {
    let dir = conformance_dir().join("buildkit").join("parser");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

#[test]
fn buildkit_parser_testfiles_dump_byte_for_byte() {
    let store = temp_dir();
    let cases = case_dirs(&buildkit_parser_dir().join("testfiles"));
    assert_eq!(cases.len(), 33, "expected BuildKit's 33 parser cases");
    let mut failures = Vec::new();
    for case in &cases {
        let output = run(xbuild(store.path())
            .args(["debug", "ast"])
            .arg(case.join("Dockerfile")));
        let expected = fs::read(case.join("result")).unwrap();
        if output.status.code() != Some(0) || output.stdout != expected {
            failures.push(format!(
                "{}: exit {:?}\n--- got\n{}--- expected\n{}{}",
                case.display(),
                output.status.code(),
                stdout(&output),
                String::from_utf8_lossy(&expected),
                stderr(&output)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn buildkit_negative_cases_exit_2_with_a_line() {
    let store = temp_dir();
    let cases = case_dirs(&buildkit_parser_dir().join("testfiles-negative"));
    assert_eq!(cases.len(), 4, "expected BuildKit's 4 negative cases");
    for case in &cases {
        let output = run(xbuild(store.path())
            .args(["debug", "ast", "Dockerfile"])
            .current_dir(case));
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {message}",
            case.display()
        );
        let line = message
            .strip_prefix("error: Dockerfile:")
            .and_then(|rest| rest.split(':').next())
            .and_then(|line| line.parse::<usize>().ok());
        assert!(
            line.is_some_and(|line| line >= 1),
            "{}: no line number in {message:?}",
            case.display()
        );
    }
}

fn golden_root(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(kind)
}

fn extra_args(case: &Path) -> Vec<String> {
    fs::read_to_string(case.join("args"))
        .map(|text| {
            text.lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Compares `actual` with the file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(path, actual).expect("golden file is writable");
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{}:\n--- got\n{actual}--- expected\n{expected}",
            path.display()
        ));
    }
}

#[test]
fn golden_dockerfiles() {
    let store = temp_dir();
    let cases = case_dirs(&golden_root("dockerfile"));
    assert!(cases.len() >= 5, "golden cases missing");
    let mut failures = Vec::new();
    for case in &cases {
        let ast = run(xbuild(store.path())
            .args(["debug", "ast", "Dockerfile"])
            .current_dir(case));
        assert_eq!(
            ast.status.code(),
            Some(0),
            "{}: {}",
            case.display(),
            stderr(&ast)
        );
        check_golden(&case.join("ast.txt"), &stdout(&ast), &mut failures);
        let stages = run(xbuild(store.path())
            .args([
                "debug",
                "stages",
                "Dockerfile",
                "--platform",
                "linux/arm64",
                "--build-platform",
                "linux/amd64",
            ])
            .args(extra_args(case))
            .current_dir(case));
        assert_eq!(
            stages.status.code(),
            Some(0),
            "{}: {}",
            case.display(),
            stderr(&stages)
        );
        check_golden(&case.join("stages.json"), &stdout(&stages), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_invalid_dockerfiles() {
    let store = temp_dir();
    let cases = case_dirs(&golden_root("dockerfile-invalid"));
    assert!(cases.len() >= 10, "golden cases missing");
    let mut failures = Vec::new();
    let mut with_line = 0;
    let line_number = regex::Regex::new(r"^error: Dockerfile:[0-9]+: ").unwrap();
    for case in &cases {
        let output = run(xbuild(store.path())
            .args([
                "debug",
                "stages",
                "Dockerfile",
                "--platform",
                "linux/arm64",
                "--build-platform",
                "linux/amd64",
            ])
            .args(extra_args(case))
            .current_dir(case));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {}",
            case.display(),
            stderr(&output)
        );
        check_golden(&case.join("error.txt"), &stderr(&output), &mut failures);
        // Every error points at its line, except those about the command line (`--target`).
        if line_number.is_match(&stderr(&output)) {
            with_line += 1;
        } else if !extra_args(case).iter().any(|arg| arg == "--target") {
            failures.push(format!(
                "{}: no Dockerfile:LINE: in {}",
                case.display(),
                stderr(&output)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        with_line >= 37,
        "issue 7 asks for at least 37 bad Dockerfiles with a line number: {with_line}"
    );
}

#[test]
fn file_name_as_given_appears_in_errors() {
    let dir = temp_dir();
    let file = dir.path().join("build.Dockerfile");
    fs::write(&file, "FROM a\nRUNN make\n").unwrap();
    let output = run(xbuild(dir.path())
        .args(["debug", "ast", "build.Dockerfile"])
        .current_dir(dir.path()));
    assert_eq!(
        output.status.code(),
        Some(0),
        "the tree has no opinion on instruction names"
    );
    let output = run(xbuild(dir.path())
        .args(["debug", "stages", "build.Dockerfile"])
        .current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: build.Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)\n"
    );
}

#[test]
fn missing_file_is_bad_input() {
    let dir = temp_dir();
    let output = run(xbuild(dir.path())
        .args(["debug", "ast", "nope"])
        .current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read nope"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn build_args_and_target_reach_the_stages() {
    let dir = temp_dir();
    fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE=alpine\nFROM $BASE AS one\nARG V=default\nENV V=$V\nFROM one AS two\nFROM scratch\n",
    )
    .unwrap();
    let output = run(xbuild(dir.path())
        .args([
            "debug",
            "stages",
            "Dockerfile",
            "--build-arg",
            "BASE=debian",
            "--build-arg",
            "V=cli",
            "--target",
            "two",
        ])
        .current_dir(dir.path()));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["target"], 1);
    assert_eq!(json["order"], serde_json::json!([0, 1]));
    assert_eq!(json["stages"][0]["from"]["image"], "debian");
    assert_eq!(json["stages"][1]["env"], serde_json::json!([["V", "cli"]]));
}

#[test]
fn debug_is_hidden_but_documented() {
    let dir = temp_dir();
    let help = run(xbuild(dir.path()).arg("--help"));
    assert!(!stdout(&help).contains("debug"), "{}", stdout(&help));
    let help = run(xbuild(dir.path()).args(["debug", "--help"]));
    assert_eq!(help.status.code(), Some(0));
    let text = stdout(&help);
    assert!(text.contains("ast") && text.contains("stages"), "{text}");
}

//! Usage, help and exit codes of the binary itself.

use crate::util::{run, stderr, stdout, temp_dir, xbuild};

#[test]
fn help_lists_build_and_exits_zero() {
    let dir = temp_dir();
    let output = run(xbuild(dir.path()).arg("--help"));
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("build"), "{}", stdout(&output));
}

#[test]
fn unknown_flag_is_a_usage_error_with_exit_2() {
    let dir = temp_dir();
    let output = run(xbuild(dir.path()).args(["build", "--no-such-flag", "."]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--no-such-flag"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn version_prints_the_crate_version() {
    let dir = temp_dir();
    let output = run(xbuild(dir.path()).arg("--version"));
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains(env!("CARGO_PKG_VERSION")));
}

/// A variable xbuild parses, set to a value it cannot use, stops the command before any
/// work (no store is made), naming the variable, the value and what it takes; an empty
/// value is as unset.
#[test]
fn an_environment_value_xbuild_cannot_use_is_refused_before_any_work() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY Dockerfile /\n",
    )
    .unwrap();
    for (name, value, wanted) in [
        ("XBUILD_COPY_LINK", "false", "0 or 1"),
        ("XBUILD_STEP_FSYNC", "on", "0 or 1"),
        ("SOURCE_DATE_EPOCH", "yesterday", "whole number"),
        ("XBUILD_REGISTRY_ATTEMPTS", "0", "from 1 to 100"),
    ] {
        let output = run(xbuild(dir.path())
            .env(name, value)
            .args(["build", "-q", "-t", "t:1"])
            .arg(dir.path()));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {err}");
        assert!(
            err.contains(name) && err.contains(value) && err.contains(wanted),
            "{err}"
        );
        assert!(
            !dir.path().join("store").exists(),
            "{name}={value}: the store was made"
        );
    }
    let output = run(xbuild(dir.path())
        .env("XBUILD_COPY_LINK", "")
        .args(["images"]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// `build --call=outline|targets|check` and `--check` on the Dockerfile of buildx's
/// documentation (`--call` descriptions): the text buildx's documentation shows, BuildKit's
/// JSON field names with `format=json`, the checks' exit status, and flags that only apply
/// to a built result refused before anything is read.
#[test]
fn call_outline_targets_and_check_print_what_buildx_prints() {
    let dir = temp_dir();
    let ctx = dir.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        "# syntax=docker/dockerfile:1\n\n\
         # GO_VERSION sets the Go version for the build\n\
         ARG GO_VERSION=1.22\n\n\
         # base-builder is the base stage for building the project\n\
         FROM golang:${GO_VERSION} AS base-builder\n",
    )
    .unwrap();
    let call = |args: &[&str]| {
        let mut command = xbuild(ctx);
        command.current_dir(ctx).arg("build").args(args).arg(".");
        run(&mut command)
    };
    let output = call(&["-q", "--call=outline"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "TARGET:      base-builder\n\
         DESCRIPTION: is the base stage for building the project\n\
         \n\
         BUILD ARG    VALUE   DESCRIPTION\n\
         GO_VERSION   1.22    sets the Go version for the build\n\
         \n"
    );
    // A --build-arg is the value the build would use.
    let output = call(&["--call", "outline", "--build-arg", "GO_VERSION=1.23"]);
    assert!(
        stdout(&output).contains("GO_VERSION   1.23    sets"),
        "{}",
        stdout(&output)
    );
    let output = call(&["--call=targets"]);
    assert_eq!(
        stdout(&output),
        "TARGET                 DESCRIPTION\n\
         base-builder (default) is the base stage for building the project\n"
    );
    let output = call(&["--call=targets,format=json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["targets"][0]["name"], "base-builder");
    assert_eq!(json["targets"][0]["default"], true);
    assert_eq!(json["targets"][0]["base"], "golang:${GO_VERSION}");
    assert_eq!(
        json["targets"][0]["location"]["ranges"][0]["start"]["line"],
        7
    );
    let output = call(&["--call=outline,format=json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["args"][0]["name"], "GO_VERSION");
    assert_eq!(json["args"][0]["value"], "1.22");
    // The checks: an untagged-but-variable base and no USER are found (exit 1), and
    // ignorestatus=true exits 0; a clean Dockerfile exits 0.
    let output = call(&["--check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("NoUserInFinalStage"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        call(&["--call=check,ignorestatus=true"]).status.code(),
        Some(0)
    );
    for refused in [
        &["--call=outline", "-t", "app:1"][..],
        &["--call=targets", "--push"],
        &["--check", "-o", "type=oci,dest=x.tar"],
        &["--call=describe"],
        &["--call=outline", "--target", "nope"],
    ] {
        let output = call(refused);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{refused:?}: {}",
            stderr(&output)
        );
    }
    assert!(!ctx.join("x.tar").exists());
    // A URL context is not read by --call yet: refused before anything is fetched.
    let mut command = xbuild(ctx);
    command.args(["build", "--call=targets", "https://127.0.0.1:9/repo.git"]);
    let output = run(&mut command);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not supported yet"),
        "{}",
        stderr(&output)
    );
    // A lower-case `dockerfile` alone is found, as the build finds it.
    std::fs::rename(ctx.join("Dockerfile"), ctx.join("dockerfile")).unwrap();
    let output = call(&["--call=targets"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("base-builder (default)"),
        "{}",
        stdout(&output)
    );
}

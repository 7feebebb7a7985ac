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

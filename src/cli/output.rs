//! The only writer of stdout and stderr. Everything a user reads goes through here, so
//! `-q`, `--progress=plain|rawjson` and terminal detection have one place to act.

use std::io::Write;

/// Prints a result line on stdout (digests, tables, JSON).
pub fn stdout(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`xbuild images | head`) is not an error worth reporting.
    let _ = writeln!(out, "{line}");
}

/// Writes bytes on stdout as they are (a generated script), with no newline added.
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    // A closed pipe is not worth reporting, as in `stdout`.
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Prints a note or warning on stderr. A closed stderr (`xbuild push 2>&1 | head`) must not
/// abort the work in progress, so write errors are ignored (`eprintln!` would panic).
pub fn stderr(line: impl std::fmt::Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Prints a warning on stderr, prefixed `warning:`.
pub fn warning(message: impl std::fmt::Display) {
    stderr(format_args!("warning: {message}"));
}

/// Prints an error and its causes once, `error: outer: inner: root`, as one line per
/// cause when there are several.
pub fn error(error: &anyhow::Error) {
    let mut causes = error.chain().map(ToString::to_string).collect::<Vec<_>>();
    // A `Failure` displays as the error it wraps; drop the repeated line.
    causes.dedup();
    let mut first = true;
    for cause in causes {
        if first {
            stderr(format_args!("error: {cause}"));
            first = false;
        } else {
            stderr(format_args!("  caused by: {cause}"));
        }
    }
}

/// Writes one line of a container's output as it came (bytes, not necessarily UTF-8) on
/// stdout or stderr, with a newline: `xbuild run` without a terminal.
pub fn passthrough(to_stderr: bool, line: &[u8]) {
    let result = if to_stderr {
        let mut err = std::io::stderr().lock();
        err.write_all(line).and_then(|()| err.write_all(b"\n"))
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
    };
    // A closed pipe is not worth reporting, as in `stdout`.
    let _ = result;
}

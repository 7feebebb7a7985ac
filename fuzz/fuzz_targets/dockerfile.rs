//! The Dockerfile frontend on arbitrary text: parse, type the instructions, resolve the
//! stages for a target. Errors are fine; panics, hangs and overflows are not. An error must
//! name a line inside the file.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use xbuild::dockerfile::{self, ResolveOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    let check_line = |error: &dockerfile::DockerfileError| {
        if let Some(line) = error.line {
            assert!(line >= 1 && line <= lines + 1, "{error}: line {line} of {lines}");
        }
    };
    let parsed = match dockerfile::parse(text) {
        Ok(parsed) => parsed,
        Err(error) => return check_line(&error),
    };
    let stages = match dockerfile::stages(&parsed) {
        Ok(stages) => stages,
        Err(error) => return check_line(&error),
    };
    let automatic_args: BTreeMap<String, String> = [
        ("TARGETPLATFORM", "linux/arm64"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm64"),
        ("BUILDPLATFORM", "linux/amd64"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let options = ResolveOptions {
        automatic_args,
        ..ResolveOptions::default()
    };
    if let Err(error) = dockerfile::resolve(&stages, &options) {
        check_line(&error);
    }
});

//! `.dockerignore` parsing and matching. Input: the first line is a context path, the rest
//! is the `.dockerignore` file. Also the raw glob matcher.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xbuild::context::{Dockerignore, glob_match};

fuzz_target!(|data: &[u8]| {
    let (path, patterns) = match data.iter().position(|&byte| byte == b'\n') {
        Some(newline) => (&data[..newline], &data[newline + 1..]),
        None => (data, &b""[..]),
    };
    if let Ok(ignore) = Dockerignore::parse(patterns, ".dockerignore") {
        let _ = ignore.matches_or_parent_matches(path);
        if let Ok(text) = std::str::from_utf8(path) {
            let _ = ignore.is_excluded(Path::new(text));
        }
    }
    if let Some(line) = patterns.split(|&byte| byte == b'\n').next() {
        let _ = glob_match(line, path);
    }
});

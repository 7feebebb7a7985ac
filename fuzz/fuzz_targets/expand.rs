//! Dockerfile word expansion (`$A`, `${A:-x}`, `${A/pat/rep}`, quotes, escapes) on
//! arbitrary words. The first byte picks the escape character.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use xbuild::dockerfile::{Expander, expand_word, split_words};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(rest) else {
        return;
    };
    let escape = if first & 1 == 0 { '\\' } else { '`' };
    let vars: BTreeMap<String, String> = [
        ("A", "a"),
        ("EMPTY", ""),
        ("SPACED", "two words"),
        ("PATH", "/usr/bin:/bin"),
        ("Q", "\"'$`\\"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let _ = expand_word(word, &vars, escape);
    let _ = split_words(word, &vars, escape);
    let _ = Expander::heredoc(escape).expand(word, &vars);
});

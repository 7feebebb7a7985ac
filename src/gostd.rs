//! Go standard-library parsing that BuildKit's values follow, so that xbuild reads them as
//! BuildKit does: `strconv.ParseBool`. Pure, a leaf: names no other module.

/// Go's `strconv.ParseBool`: `1`, `t`, `T`, `true`, `TRUE`, `True` and their false
/// counterparts; anything else is `None`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_as_go_does() {
        for text in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(super::parse_bool(text), Some(true), "{text}");
        }
        for text in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(super::parse_bool(text), Some(false), "{text}");
        }
        for text in ["", "yes", "tRUE", " true"] {
            assert_eq!(super::parse_bool(text), None, "{text}");
        }
    }
}

//! Go standard-library parsing and printing that BuildKit's values follow, so that xbuild
//! reads and writes them as BuildKit does: `strconv.ParseBool`, `time.Duration.String`.
//! Pure, a leaf: names no other module.

use std::time::Duration;

/// Go's `strconv.ParseBool`: `1`, `t`, `T`, `true`, `TRUE`, `True` and their false
/// counterparts; anything else is `None`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.Duration.String`: `0s`, `500ms`, `1.5s`, `1m30s`, `2h0m0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, per) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(nanos, per));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    let rest = nanos - (hours * 3600 + minutes * 60) * 1_000_000_000;
    text.push_str(&decimal(rest, 1_000_000_000));
    text.push('s');
    text
}

/// `value / per` with the fraction's trailing zeros left out (`per` a power of ten).
fn decimal(value: u128, per: u128) -> String {
    let (whole, fraction) = (value / per, value % per);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_print_as_go_does() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_millis(3_723_250), "1h2m3.25s"),
        ] {
            assert_eq!(super::format_duration(duration), text);
        }
    }

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

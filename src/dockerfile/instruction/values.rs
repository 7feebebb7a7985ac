//! Checks of flag and argument values, as BuildKit makes them: `--chmod`, `--chown`,
//! `--checksum`, `EXPOSE` ports, `HEALTHCHECK` durations, `ARG` names.

use std::time::Duration;

use super::{Chmod, Source};
use crate::source::gitref::{GitRef, is_git_source, is_http_source};

/// Is `name` a valid variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn is_valid_arg_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Parses a Go duration (`1m30s`, `500ms`, `0s`).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .filter(|end| *end > 0)?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Checks one expanded `EXPOSE` word the way BuildKit does (moby's `nat.ParsePortSpec`):
/// `[[ip:]host-port:]port[-port][/proto]`, ports 0 to 65535 (a range low to high), protocol
/// `tcp`, `udp` or `sctp` in any case (none means `tcp`).
pub(super) fn check_port_spec(spec: &str) -> Result<(), String> {
    parse_port_spec(spec).map(|_| ())
}

/// The image config entries (`port/proto`) of one `EXPOSE` word, as BuildKit writes them
/// (moby's `nat.ParsePortSpecs`): the container side only (`8080:80` exposes `80/tcp`), one
/// entry per port of a range, the protocol in lower case, `tcp` when none.
///
/// # Errors
/// A word BuildKit rejects (the message of the parse error).
pub fn exposed_ports(spec: &str) -> Result<Vec<String>, String> {
    let (start, end, proto) = parse_port_spec(spec)?;
    Ok((start..=end)
        .map(|port| format!("{port}/{proto}"))
        .collect())
}

/// Parses one expanded `EXPOSE` word: the container port range and the lower-case protocol.
fn parse_port_spec(spec: &str) -> Result<(u16, u16, String), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [container] => ("", "", *container),
        [host, container] => ("", *host, *container),
        [ip @ .., host, container] => (&spec[..ip.join(":").len()], *host, *container),
        [] => ("", "", ""),
    };
    let (port, proto) = match container.split_once('/') {
        Some((port, proto)) => {
            let proto = proto.split('/').next().unwrap_or_default();
            (port, if proto.is_empty() { "tcp" } else { proto })
        }
        None => (container, "tcp"),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    if port.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host.is_empty() {
        let (host_start, host_end) =
            port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if start != end && end - start != host_end - host_start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host}"
            ));
        }
    }
    let lower = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&lower.as_str()) {
        return Err(format!("invalid proto: {proto} (tcp, udp or sctp)"));
    }
    Ok((start, end, lower))
}

/// A port (`80`) or range (`8000-8010`, low to high), each 0 to 65535 in decimal digits.
fn port_range(text: &str) -> Option<(u16, u16)> {
    let number = |digits: &str| {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok()
    };
    match text.split_once('-') {
        None => number(text).map(|port| (port, port)),
        Some((start, end)) => {
            let (start, end) = (number(start)?, number(end)?);
            (start <= end).then_some((start, end))
        }
    }
}

/// Checks a `--chmod` value: octal up to 07777, or symbolic (`u+x,go-w`, `a=rX`). A value
/// that starts like a number and is not an octal mode gets BuildKit's message.
pub(super) fn parse_chmod(value: &str) -> Result<Chmod, String> {
    if value.contains('$') {
        return Ok(Chmod::Unexpanded(value.to_owned()));
    }
    if value.starts_with(|ch: char| ch.is_ascii_digit()) {
        return value
            .chars()
            .all(|ch| ch.is_ascii_digit())
            .then(|| u32::from_str_radix(value, 8).ok())
            .flatten()
            .filter(|mode| *mode <= 0o7777)
            .map(Chmod::Octal)
            .ok_or_else(|| {
                format!(
                    "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
                )
            });
    }
    let symbolic_ok = !value.is_empty() && value.split(',').all(is_symbolic_clause);
    if symbolic_ok {
        Ok(Chmod::Symbolic(value.to_owned()))
    } else {
        Err(format!(
            "{value:?} is not a mode: use octal (0755) or symbolic (u+x,go-w)"
        ))
    }
}

/// One clause of a symbolic mode: `[ugoa]*([+-=][rwxXst]*)+`.
fn is_symbolic_clause(clause: &str) -> bool {
    let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
    let mut seen_operator = false;
    for ch in rest.chars() {
        if matches!(ch, '+' | '-' | '=') {
            seen_operator = true;
        } else if !seen_operator || !"rwxXst".contains(ch) {
            return false;
        }
    }
    seen_operator
}

/// Checks a `--chown` value: `user`, `user:group`, names or numbers.
pub(super) fn check_chown(value: &str) -> Result<(), String> {
    let mut parts = value.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if user.is_empty() || group.is_some_and(str::is_empty) || parts.next().is_some() {
        return Err(format!("{value:?} is not user, user:group or uid:gid"));
    }
    Ok(())
}

/// Checks an `ADD --checksum` value against its (expanded) sources, as BuildKit does: one
/// source only, an HTTP(S) URL (the value a digest, `sha256:<64 hex>`, sha384, sha512) or a
/// git repository (the value a commit, full or a hex prefix, agreeing with the URL's own
/// `?checksum=`/`?commit=`).
pub(super) fn check_checksum(value: &str, sources: &[Source]) -> Result<(), String> {
    let [Source::Path(source)] = sources else {
        return Err("checksum can't be specified for multiple sources".to_owned());
    };
    if is_git_source(source) {
        if value.is_empty() || !value.chars().all(|ch| ch.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid checksum {value} for Git URL, expected hex commit hash"
            ));
        }
        if let Ok(Some(reference)) = GitRef::parse(source) {
            if let Some(own) = reference.checksum.filter(|own| own != value) {
                return Err(format!("checksum mismatch {value:?} != {own:?}"));
            }
        }
        return Ok(());
    }
    if !is_http_source(source) {
        return Err("checksum requires HTTP(S) or Git sources".to_owned());
    }
    let valid = value.split_once(':').is_some_and(|(algorithm, hex)| {
        let length = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return false,
        };
        hex.len() == length && hex.chars().all(|ch| ch.is_ascii_hexdigit())
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a digest (sha256:<64 hex digits>)"
        ))
    }
}

/// `ADD --keep-git-dir` agrees with a git source's `?keep-git-dir=` (BuildKit: "inconsistent
/// keep-git-dir configuration"); `COPY` takes no git or HTTP source ("source can't be a git
/// ref for COPY", "source can't be a URL for COPY").
pub(super) fn check_remote_sources(
    instruction: &str,
    sources: &[Source],
    keep_git_dir: Option<bool>,
) -> Result<(), String> {
    for source in sources {
        let Source::Path(source) = source else {
            continue;
        };
        let git = is_git_source(source);
        if instruction == "COPY" {
            if git {
                return Err("source can't be a git ref for COPY".to_owned());
            }
            if is_http_source(source) {
                return Err("source can't be a URL for COPY".to_owned());
            }
            continue;
        }
        if !git {
            continue;
        }
        let reference = GitRef::parse(source).map_err(|error| error.to_string())?;
        if let (Some(flag), Some(Some(query))) = (
            keep_git_dir,
            reference.map(|reference| reference.keep_git_dir),
        ) {
            if flag != query {
                return Err("inconsistent keep-git-dir configuration".to_owned());
            }
        }
    }
    Ok(())
}

//! Image references parsed as [`oci_spec::distribution::Reference`] parses them, without
//! its regular expression when the reference is plain ASCII.
//!
//! oci-spec matches a reference against Docker's grammar with one regular expression
//! whose tag part (`[\w][\w.-]{0,127}`, Unicode `\w`) compiles to a large automaton: about
//! 20 ms of CPU on the first parse of every process, at the start of every build (a `-t`
//! name, a `FROM`). [`parse`] checks an ASCII reference against the same grammar by hand
//! (on ASCII, Unicode `\w` is `[0-9A-Za-z_]`) and builds the same value, with oci-spec's
//! own domain split, default tag and digest checks; anything else (non-ASCII input, and
//! every reference it would refuse, so that the error is oci-spec's) goes to oci-spec.

use oci_spec::distribution::{ParseError, Reference};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy registry name, normalised to [`DOCKER_HUB`].
pub const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Longest repository name, as oci-spec and Docker check it.
const NAME_MAX: usize = 255;

/// `input` as [`Reference::try_from`] parses it: the same value or the same error.
///
/// # Errors
/// oci-spec's [`ParseError`] for a reference that does not follow the grammar.
pub fn parse(input: &str) -> Result<Reference, ParseError> {
    match plain(input) {
        Some(reference) => Ok(reference),
        None => Reference::try_from(input),
    }
}

/// The reference when `input` is ASCII and valid; `None` sends it to oci-spec.
fn plain(input: &str) -> Option<Reference> {
    if input.is_empty() || !input.is_ascii() {
        return None;
    }
    // `@` is in no part but the separator of the digest, `/` in none after the name, `:` in
    // the name only before a `/` (a port): so the split is the only one that can match.
    let (left, digest) = match input.split_once('@') {
        Some((left, digest)) => (left, Some(digest)),
        None => (input, None),
    };
    let (name, tag) = match left.rfind(':') {
        Some(colon) if left.rfind('/').is_none_or(|slash| slash < colon) => {
            (&left[..colon], Some(&left[colon + 1..]))
        }
        _ => (left, None),
    };
    if !valid_name(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest_syntax) {
        return None;
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return None;
    }
    if let Some(digest) = digest {
        let length = match digest.split_once(':')? {
            ("sha256", hex) => (hex.len(), 64),
            ("sha384", hex) => (hex.len(), 96),
            ("sha512", hex) => (hex.len(), 128),
            _ => return None,
        };
        if length.0 != length.1 {
            return None;
        }
    }
    Some(match (tag, digest) {
        (None, None) => Reference::with_tag(registry, repository, "latest".to_owned()),
        (Some(tag), None) => Reference::with_tag(registry, repository, tag.to_owned()),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_owned()),
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.to_owned(), digest.to_owned())
        }
    })
}

/// `(domain/)? path (/path)*`: the first part is a path component, or a domain when more
/// follow.
fn valid_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let Some(first) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    (valid_path_component(first) || (!rest.is_empty() && valid_domain(first)))
        && rest.iter().all(|part| valid_path_component(part))
}

/// `[a-z0-9]+ ((?:[._]|__|[-]*) [a-z0-9]+)*`: lower-case letters and digits, separated by
/// `.`, `_`, `__` or a run of `-`.
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alnum(bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alnum(bytes[index]) {
            index += 1;
        }
        let separator = &part[start..index];
        let dashes = separator.bytes().all(|byte| byte == b'-');
        if !(dashes || matches!(separator, "." | "_" | "__")) {
            return false;
        }
    }
    true
}

/// `component(.component)*(:[0-9]+)?`, a component being letters, digits and inner `-`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let component = |part: &str| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}` on ASCII.
fn valid_tag(tag: &str) -> bool {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let bytes = tag.as_bytes();
    (1..=128).contains(&bytes.len())
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn valid_digest_syntax(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let component = |part: &str| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.iter().all(u8::is_ascii_alphanumeric)
    };
    algorithm.split(['-', '_', '+', '.']).all(component)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Docker's domain split (`reference/normalize.go`), as oci-spec does it.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => {
            (left.to_owned(), right.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB.clone_into(&mut domain);
    }
    if domain == DOCKER_HUB && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    (domain, remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input: [`parse`] gives what oci-spec gives, value or error.
    #[test]
    fn the_same_as_oci_spec() {
        let hex64 = "a".repeat(64);
        let mut inputs: Vec<String> = [
            "alpine",
            "alpine:3.19",
            "library/alpine",
            "docker.io/alpine",
            "index.docker.io/alpine:edge",
            "index.docker.io/user/app",
            "localhost/app",
            "localhost:5000/app:1",
            "127.0.0.1:5077/debian:bookworm",
            "127.0.0.1:5077/busybox:latest",
            "bench/app:1",
            "registry.example.com/a/b/c:v1.2.3-rc_1",
            "Registry.Example.com/app",
            "my-reg.example.com:443/team/app",
            "a.b-c.d/e",
            "-bad.com/app",
            "bad-.com/app",
            "host:port/app",
            "host:/app",
            "App",
            "app/App",
            "a__b/c--d/e.f/g_h",
            "a___b",
            "a..b",
            "a._b",
            "a-.b",
            "a-",
            "-a",
            "a/",
            "/a",
            "a//b",
            "",
            ":tag",
            "app:",
            "app:-tag",
            "app:_tag",
            "app:.tag",
            "app:tag/x",
            "app:t:u",
            "host:5000",
            "host:5000/app:5000",
            "app@sha256:",
            "app@sha256:abc",
            "app@md5:0123456789abcdef0123456789abcdef",
            "app@sha256+x:0123456789abcdef0123456789abcdef",
            "app@1sha:0123456789abcdef0123456789abcdef",
            "app@sha256:ZZ23456789abcdef0123456789abcdef",
            "app@@sha256:0123456789abcdef0123456789abcdef",
            "app@",
            "@sha256:0123456789abcdef0123456789abcdef",
            "tag\u{e9}/x",
            "app:t\u{e9}g",
            "app:tag@sha256:0123",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        for name in ["app", "localhost:5000/a/b", "docker.io/x"] {
            inputs.push(format!("{name}@sha256:{hex64}"));
            inputs.push(format!("{name}:1.0@sha256:{hex64}"));
            inputs.push(format!("{name}@sha512:{}", "b".repeat(128)));
            inputs.push(format!("{name}@sha384:{}", "c".repeat(96)));
            inputs.push(format!("{name}@sha256:{}", "d".repeat(63)));
            inputs.push(format!("{name}@SHA256:{hex64}"));
        }
        inputs.push(format!("app:{}", "t".repeat(128)));
        inputs.push(format!("app:{}", "t".repeat(129)));
        inputs.push(format!("a/{}", "b".repeat(253)));
        inputs.push(format!("a/{}", "b".repeat(254)));
        inputs.push(format!("reg.io/{}", "b".repeat(255)));
        inputs.push(format!("reg.io/{}", "b".repeat(256)));
        for input in &inputs {
            assert_eq!(
                parse(input),
                Reference::try_from(input.as_str()),
                "{input:?}"
            );
        }
        // The fast path takes the plain ones (and leaves the others to oci-spec).
        assert!(plain("127.0.0.1:5077/debian:bookworm").is_some());
        assert!(plain(&format!("app:1.0@sha256:{hex64}")).is_some());
        assert!(plain("app:t\u{e9}g").is_none());
        assert!(plain("App").is_none());
    }
}

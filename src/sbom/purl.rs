//! Package URLs (<https://github.com/package-url/purl-spec>):
//! `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`, in the canonical form: each namespace
//! segment, the name, the version and each qualifier value percent-encoded (everything but
//! `A-Z a-z 0-9 . - _ ~` and `:`), qualifiers sorted by key, empty ones left out.

use std::fmt::Write;

/// A package URL being put together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purl<'a> {
    /// The type (`deb`, `apk`, `pypi`, `npm`, `golang`, `cargo`, `docker`).
    pub kind: &'a str,
    /// The namespace (`debian`, `@scope`, `github.com/org`), `/`-separated segments.
    pub namespace: Option<&'a str>,
    /// The name.
    pub name: &'a str,
    /// The version.
    pub version: Option<&'a str>,
    /// Qualifiers, any order (sorted when rendered); empty values are left out.
    pub qualifiers: Vec<(&'a str, String)>,
}

impl Purl<'_> {
    /// The canonical string.
    pub fn render(&self) -> String {
        let mut out = format!("pkg:{}/", self.kind);
        if let Some(namespace) = self.namespace.filter(|namespace| !namespace.is_empty()) {
            for segment in namespace.split('/').filter(|segment| !segment.is_empty()) {
                out.push_str(&encode(segment));
                out.push('/');
            }
        }
        out.push_str(&encode(self.name));
        if let Some(version) = self.version.filter(|version| !version.is_empty()) {
            out.push('@');
            out.push_str(&encode(version));
        }
        let mut qualifiers: Vec<&(&str, String)> = self
            .qualifiers
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        qualifiers.sort_by_key(|(key, _)| *key);
        for (index, (key, value)) in qualifiers.iter().enumerate() {
            out.push(if index == 0 { '?' } else { '&' });
            out.push_str(key);
            out.push('=');
            out.push_str(&encode(value));
        }
        out
    }
}

/// Percent-encodes a purl component.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_render_in_canonical_form() {
        let deb = Purl {
            kind: "deb",
            namespace: Some("debian"),
            name: "login",
            version: Some("1:4.13+dfsg1-1+b1"),
            qualifiers: vec![
                ("distro", "debian-12".to_owned()),
                ("arch", "amd64".to_owned()),
                ("upstream", String::new()),
            ],
        };
        assert_eq!(
            deb.render(),
            "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12"
        );
        let npm = Purl {
            kind: "npm",
            namespace: Some("@babel"),
            name: "core",
            version: Some("7.0.0"),
            qualifiers: Vec::new(),
        };
        assert_eq!(npm.render(), "pkg:npm/%40babel/core@7.0.0");
        let golang = Purl {
            kind: "golang",
            namespace: Some("github.com/google"),
            name: "uuid",
            version: Some("v1.3.0"),
            qualifiers: Vec::new(),
        };
        assert_eq!(golang.render(), "pkg:golang/github.com/google/uuid@v1.3.0");
        let docker = Purl {
            kind: "docker",
            namespace: None,
            name: "alpine",
            version: Some("3.17"),
            qualifiers: vec![("platform", "linux/arm64".to_owned())],
        };
        assert_eq!(
            docker.render(),
            "pkg:docker/alpine@3.17?platform=linux%2Farm64"
        );
    }
}

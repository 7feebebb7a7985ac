//! Language package managers' installed packages: Python distributions
//! (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO` or a `*.egg-info` file, in a
//! `site-packages` or `dist-packages` directory) and npm packages
//! (`node_modules/NAME/package.json`, `node_modules/@SCOPE/NAME/package.json`).

use serde::Deserialize;

use super::control;
use super::purl::Purl;
use super::{Ecosystem, Package, Warning};

/// What kind of language metadata file a path is, from its place in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// A Python distribution's metadata.
    Python,
    /// An npm package's `package.json`.
    Npm,
}

/// Whether the file at `path` (absolute in the image) is a package manager's record.
pub fn candidate(path: &str) -> Option<Candidate> {
    let mut parts = path.rsplit('/');
    let file = parts.next()?;
    let parent = parts.next()?;
    let grandparent = parts.next()?;
    let python_dir = |name: &str| name == "site-packages" || name == "dist-packages";
    match file {
        "METADATA" if parent.ends_with(".dist-info") && python_dir(grandparent) => {
            Some(Candidate::Python)
        }
        "PKG-INFO" if parent.ends_with(".egg-info") && python_dir(grandparent) => {
            Some(Candidate::Python)
        }
        _ if file.ends_with(".egg-info") && python_dir(parent) => Some(Candidate::Python),
        "package.json" if grandparent == "node_modules" && !parent.starts_with(['.', '@']) => {
            Some(Candidate::Npm)
        }
        "package.json" if grandparent.starts_with('@') && parts.next() == Some("node_modules") => {
            Some(Candidate::Npm)
        }
        _ => None,
    }
}

/// PEP 503 name normalisation: lower case, runs of `-`, `_`, `.` become one `-`.
fn normalize_python_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The distribution a `METADATA`/`PKG-INFO` file describes.
pub fn python_package(text: &str, path: &str, warnings: &mut Vec<Warning>) -> Option<Package> {
    let headers = control::headers(text);
    let found = headers
        .as_ref()
        .and_then(|headers| Some((headers.get("Name")?, headers.get("Version")?)));
    let Some((name, version)) =
        found.filter(|(name, version)| !name.is_empty() && !version.is_empty())
    else {
        warnings.push(Warning {
            path: path.to_owned(),
            line: None,
            message: "Python metadata without Name or Version: skipped".to_owned(),
        });
        return None;
    };
    let purl = Purl {
        kind: "pypi",
        namespace: None,
        name: &normalize_python_name(name),
        version: Some(version),
        qualifiers: Vec::new(),
    }
    .render();
    Some(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_owned(),
        version: version.to_owned(),
        arch: None,
        purl,
        supplier: headers
            .as_ref()
            .and_then(|headers| {
                headers
                    .get("Author")
                    .or_else(|| headers.get("Author-email"))
            })
            .map(str::to_owned),
        source: None,
        evidence: vec![path.to_owned()],
    })
}

#[derive(Deserialize)]
struct PackageJson {
    name: Option<String>,
    version: Option<String>,
}

/// The npm package a `package.json` describes.
pub fn npm_package(bytes: &[u8], path: &str, warnings: &mut Vec<Warning>) -> Option<Package> {
    let parsed: PackageJson = match serde_json::from_slice(bytes) {
        Ok(parsed) => parsed,
        Err(error) => {
            warnings.push(Warning {
                path: path.to_owned(),
                line: Some(error.line()),
                message: format!("package.json does not parse ({error}): skipped"),
            });
            return None;
        }
    };
    let (Some(name), Some(version)) = (parsed.name, parsed.version) else {
        // Packages without a version (workspace roots, stubs) are not installed releases.
        return None;
    };
    // The purl spec lowercases npm names and scopes.
    let (namespace, short) = match name.split_once('/') {
        Some((scope, short)) if scope.starts_with('@') => (Some(scope.to_lowercase()), short),
        _ => (None, name.as_str()),
    };
    let purl = Purl {
        kind: "npm",
        namespace: namespace.as_deref(),
        name: &short.to_lowercase(),
        version: Some(&version),
        qualifiers: Vec::new(),
    }
    .render();
    Some(Package {
        ecosystem: Ecosystem::Npm,
        name: name.clone(),
        version,
        arch: None,
        purl,
        supplier: None,
        source: None,
        evidence: vec![path.to_owned()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_recognised_by_their_place() {
        let cases = [
            (
                "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
                Some(Candidate::Python),
            ),
            (
                "/app/.venv/lib/python3.11/site-packages/idna-3.6.dist-info/METADATA",
                Some(Candidate::Python),
            ),
            (
                "/usr/lib/python3/dist-packages/chardet-5.1.0.egg-info/PKG-INFO",
                Some(Candidate::Python),
            ),
            (
                "/usr/lib/python3/dist-packages/old.egg-info",
                Some(Candidate::Python),
            ),
            ("/srv/six-1.16.0.dist-info/METADATA", None),
            (
                "/app/node_modules/left-pad/package.json",
                Some(Candidate::Npm),
            ),
            (
                "/app/node_modules/@babel/core/package.json",
                Some(Candidate::Npm),
            ),
            ("/app/node_modules/left-pad/lib/package.json", None),
            ("/app/node_modules/.bin/package.json", None),
            ("/app/package.json", None),
        ];
        for (path, want) in cases {
            assert_eq!(candidate(path), want, "{path}");
        }
    }

    #[test]
    fn python_and_npm_packages_get_their_purls() {
        let mut warnings = Vec::new();
        let python = python_package(
            "Metadata-Version: 2.1\nName: Typing_Extensions\nVersion: 4.9.0\n\nbody",
            "/m",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(python.purl, "pkg:pypi/typing-extensions@4.9.0");
        let npm = npm_package(
            br#"{"name":"@Types/Node","version":"20.1.0"}"#,
            "/p",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(npm.purl, "pkg:npm/%40types/node@20.1.0");
        assert!(npm_package(br#"{"name":"x"}"#, "/p", &mut warnings).is_none());
        assert!(warnings.is_empty());
        assert!(npm_package(b"{", "/p", &mut warnings).is_none());
        assert!(python_package("Version: 1\n", "/m", &mut warnings).is_none());
        assert_eq!(warnings.len(), 2);
    }
}

//! The SBOM scanner: what is installed in an image's root file system.
//!
//! [`scan`] walks the tree once and reads only where package managers keep their records:
//! the distribution (`/etc/os-release`), Debian/Ubuntu packages (dpkg's status database
//! and distroless's `status.d`), Alpine packages (apk's installed database), Python
//! distributions (`*.dist-info`, `*.egg-info` in `site-packages`/`dist-packages`), npm
//! packages (`node_modules/**/package.json`), and, in executable files only, Go modules
//! (the build information of Go 1.18+ binaries) and Rust crates (cargo-auditable's
//! `.dep-v0`). Each package comes with its name, version, a purl and the files that
//! evidence it, whose SHA-1 and SHA-256 are computed for the SBOM.
//!
//! Owns no network and writes nothing; never runs a program of the image. The tree is a
//! [`Root`]: a host directory or the image's snapshot directories read with overlay rules.
//! A link is never followed onto the host (see [`root`]); every read is bounded, so a hostile
//! image's huge files or devices cost nothing. A damaged record is a [`Warning`] naming
//! the file (and line), not a failure: the rest of the image is still listed.
//!
//! The result is deterministic: packages sorted, one entry per (ecosystem, name, version,
//! purl) with all its evidence. [`crate::attest::spdx`] turns it into an SPDX document.

pub mod binary;
pub mod control;
pub mod distro;
pub mod lang;
pub mod purl;
pub mod root;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

pub use root::{ReadError, Root, WalkError};

/// Largest os-release file read.
const MAX_OS_RELEASE: u64 = 64 * 1024;
/// Largest package database read (dpkg's status, apk's installed, one status.d file).
const MAX_DATABASE: u64 = 64 * 1024 * 1024;
/// How much of a Python metadata file is read (only its headers matter).
const MAX_PYTHON_METADATA: u64 = 1024 * 1024;
/// Largest `package.json` read.
const MAX_PACKAGE_JSON: u64 = 4 * 1024 * 1024;
/// Largest evidence file hashed for the SBOM; a larger one is named but not listed with
/// checksums.
pub const MAX_HASHED: u64 = 512 * 1024 * 1024;
/// Smallest file worth opening as a possible ELF executable (an ELF header is 52 bytes).
const MIN_ELF: u64 = 52;

/// Where packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// dpkg (Debian, Ubuntu, distroless).
    Deb,
    /// apk (Alpine, Wolfi).
    Apk,
    /// Python distributions.
    Python,
    /// npm packages.
    Npm,
    /// Go modules compiled into a binary.
    Go,
    /// Rust crates compiled into a binary (cargo-auditable).
    Cargo,
}

impl Ecosystem {
    /// Its short name (`deb`, `python`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deb => "deb",
            Self::Apk => "apk",
            Self::Python => "python",
            Self::Npm => "npm",
            Self::Go => "go",
            Self::Cargo => "cargo",
        }
    }

    /// Where the information was found, as words (syft's `sourceInfo` style).
    pub fn source_info(self) -> &'static str {
        match self {
            Self::Deb => "acquired package info from DPKG DB",
            Self::Apk => "acquired package info from APK DB",
            Self::Python => "acquired package info from installed python package manifest file",
            Self::Npm => "acquired package info from installed node module manifest file",
            Self::Go => "acquired package info from go module information in a Go binary",
            Self::Cargo => "acquired package info from cargo-auditable dependency information",
        }
    }
}

/// The distribution, from os-release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distro {
    /// `ID` (`debian`, `ubuntu`, `alpine`), lower case.
    pub id: String,
    /// `VERSION_ID` (`12`, `3.19.1`).
    pub version_id: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// `ID_LIKE`.
    pub id_like: Vec<String>,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Where it comes from.
    pub ecosystem: Ecosystem,
    /// Its name, as its package manager spells it.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its architecture, when the package manager records one.
    pub arch: Option<String>,
    /// Its package URL.
    pub purl: String,
    /// Its maintainer or author, as recorded (free text).
    pub supplier: Option<String>,
    /// The source package it was built from, when it differs from the name.
    pub source: Option<String>,
    /// The files whose content shows it is installed (absolute paths in the image).
    pub evidence: Vec<String>,
}

/// An evidence file with its checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Absolute path in the image.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1, lower-case hex (SPDX requires it).
    pub sha1: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// Something the scan could not read, named by file (and line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The file in the image.
    pub path: String,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The distribution, when os-release names one.
    pub distro: Option<Distro>,
    /// Installed packages, sorted by ecosystem, name, version, purl.
    pub packages: Vec<Package>,
    /// The evidence files that could be hashed, sorted by path.
    pub files: Vec<FileDigest>,
    /// What could not be read.
    pub warnings: Vec<Warning>,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root cannot be listed.
    #[error(transparent)]
    Walk(#[from] WalkError),
}

/// A file found by the walk that needs reading.
enum Found {
    Python(String, PathBuf),
    Npm(String, PathBuf),
    Executable(String, PathBuf),
    StatusD(String, PathBuf),
}

/// Lists what is installed under `root` (see the module documentation).
///
/// # Errors
/// The root cannot be listed.
pub fn scan(root: &Root<'_>) -> Result<Scan, ScanError> {
    let mut warnings = Vec::new();
    let mut evidence_hosts: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut packages = Vec::new();

    let distro = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| fixed_file(root, path, MAX_OS_RELEASE, &mut warnings))
        .and_then(|(_, _, bytes)| distro::parse_os_release(&String::from_utf8_lossy(&bytes)));

    if let Some((path, host, bytes)) =
        fixed_file(root, "/var/lib/dpkg/status", MAX_DATABASE, &mut warnings)
    {
        let text = String::from_utf8_lossy(&bytes);
        packages.extend(distro::dpkg_packages(
            &text,
            &path,
            distro.as_ref(),
            &mut warnings,
        ));
        evidence_hosts.insert(path, host);
    }
    if let Some((path, host, bytes)) =
        fixed_file(root, "/lib/apk/db/installed", MAX_DATABASE, &mut warnings)
    {
        let text = String::from_utf8_lossy(&bytes);
        packages.extend(distro::apk_packages(
            &text,
            &path,
            distro.as_ref(),
            &mut warnings,
        ));
        evidence_hosts.insert(path, host);
    }
    let status_d = crate::layer::tree::resolve(root, "/var/lib/dpkg/status.d", true)
        .map(|dir| format!("{dir}/"))
        .ok();

    let mut found = Vec::new();
    root.walk(&mut |entry| {
        if !entry.meta.is_file() {
            return;
        }
        let path = entry.path;
        if let Some(dir) = &status_d {
            if path
                .strip_prefix(dir.as_str())
                .is_some_and(|name| !name.contains('/') && !name.ends_with(".md5sums"))
            {
                found.push(Found::StatusD(path.to_owned(), entry.host.to_path_buf()));
                return;
            }
        }
        match lang::candidate(path) {
            Some(lang::Candidate::Python) => {
                found.push(Found::Python(path.to_owned(), entry.host.to_path_buf()));
                return;
            }
            Some(lang::Candidate::Npm) => {
                found.push(Found::Npm(path.to_owned(), entry.host.to_path_buf()));
                return;
            }
            None => {}
        }
        if entry.meta.permissions().mode() & 0o111 != 0 && entry.meta.len() >= MIN_ELF {
            found.push(Found::Executable(path.to_owned(), entry.host.to_path_buf()));
        }
    })?;

    for item in found {
        match item {
            Found::StatusD(path, host) => {
                if let Some(bytes) = read_host(&path, &host, MAX_DATABASE, &mut warnings) {
                    let text = String::from_utf8_lossy(&bytes);
                    let listed =
                        distro::dpkg_packages(&text, &path, distro.as_ref(), &mut warnings);
                    if !listed.is_empty() {
                        packages.extend(listed);
                        evidence_hosts.insert(path, host);
                    }
                }
            }
            Found::Python(path, host) => {
                let bytes = match root::open_regular(&host) {
                    Ok(Some(file)) => read_prefix(file, MAX_PYTHON_METADATA),
                    Ok(None) => continue,
                    Err(error) => Err(error),
                };
                match bytes {
                    Ok(bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        if let Some(package) = lang::python_package(&text, &path, &mut warnings) {
                            packages.push(package);
                            evidence_hosts.insert(path, host);
                        }
                    }
                    Err(error) => warnings.push(Warning {
                        path,
                        line: None,
                        message: format!("cannot be read: {error}"),
                    }),
                }
            }
            Found::Npm(path, host) => {
                if let Some(bytes) = read_host(&path, &host, MAX_PACKAGE_JSON, &mut warnings) {
                    if let Some(package) = lang::npm_package(&bytes, &path, &mut warnings) {
                        packages.push(package);
                        evidence_hosts.insert(path, host);
                    }
                }
            }
            Found::Executable(path, host) => {
                let Ok(Some(file)) = root::open_regular(&host) else {
                    continue;
                };
                let Some(embedded) = binary::read_embedded(&file) else {
                    continue;
                };
                for problem in &embedded.problems {
                    warnings.push(Warning {
                        path: path.clone(),
                        line: None,
                        message: problem.clone(),
                    });
                }
                let before = packages.len();
                packages.extend(binary_packages(&embedded, &path));
                if packages.len() > before {
                    evidence_hosts.insert(path, host);
                }
            }
        }
    }

    let packages = merge(packages);
    let files = hash_evidence(&evidence_hosts, &mut warnings);
    Ok(Scan {
        distro,
        packages,
        files,
        warnings,
    })
}

/// Reads a file at a fixed path of the image (resolved inside it): its resolved path, host
/// path and content; `None` (with a warning when it exists but cannot be read) otherwise.
fn fixed_file(
    root: &Root<'_>,
    path: &str,
    limit: u64,
    warnings: &mut Vec<Warning>,
) -> Option<(String, PathBuf, Vec<u8>)> {
    let resolved = match crate::layer::tree::resolve(root, path, true) {
        Ok(resolved) => resolved,
        Err(error) => {
            warnings.push(Warning {
                path: path.to_owned(),
                line: None,
                message: error.to_string(),
            });
            return None;
        }
    };
    let (host, meta) = root.lookup(&resolved)?;
    if !meta.is_file() {
        return None;
    }
    let bytes = read_host(&resolved, &host, limit, warnings)?;
    Some((resolved, host, bytes))
}

/// Reads a whole regular file of at most `limit` bytes; a warning otherwise.
fn read_host(
    path: &str,
    host: &std::path::Path,
    limit: u64,
    warnings: &mut Vec<Warning>,
) -> Option<Vec<u8>> {
    let result = match root::open_regular(host) {
        Ok(Some(file)) => root::read_bounded(file, limit),
        Ok(None) => return None,
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            warnings.push(Warning {
                path: path.to_owned(),
                line: None,
                message: format!("not read: {error}"),
            });
            None
        }
    }
}

/// The first `limit` bytes of a file.
fn read_prefix(file: std::fs::File, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.take(limit).read_to_end(&mut data)?;
    Ok(data)
}

/// The Go modules and Rust crates an executable embeds.
fn binary_packages(embedded: &binary::Embedded, path: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let package = |ecosystem, kind, name: &str, version: &str| {
        let (namespace, short) = match name.rsplit_once('/') {
            Some((namespace, short)) if ecosystem == Ecosystem::Go => (Some(namespace), short),
            _ => (None, name),
        };
        Package {
            ecosystem,
            name: name.to_owned(),
            version: version.to_owned(),
            arch: None,
            purl: purl::Purl {
                kind,
                namespace,
                name: short,
                version: Some(version),
                qualifiers: Vec::new(),
            }
            .render(),
            supplier: None,
            source: None,
            evidence: vec![path.to_owned()],
        }
    };
    if let Some(go) = &embedded.go {
        for module in go.main.iter().chain(&go.deps) {
            packages.push(package(
                Ecosystem::Go,
                "golang",
                &module.path,
                &module.version,
            ));
        }
        // The standard library, as syft lists it: `go1.21.5 X:...` gives 1.21.5.
        let version = go
            .go_version
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_start_matches("go");
        if !version.is_empty() {
            packages.push(package(Ecosystem::Go, "golang", "stdlib", version));
        }
    }
    for krate in &embedded.cargo {
        // Build dependencies ran at build time; they are not in the binary.
        if krate.kind.as_deref() == Some("build") {
            continue;
        }
        packages.push(package(
            Ecosystem::Cargo,
            "cargo",
            &krate.name,
            &krate.version,
        ));
    }
    packages
}

/// One entry per (ecosystem, name, version, purl), evidence joined, sorted.
fn merge(packages: Vec<Package>) -> Vec<Package> {
    let mut merged: BTreeMap<(Ecosystem, String, String, String), Package> = BTreeMap::new();
    for package in packages {
        let key = (
            package.ecosystem,
            package.name.clone(),
            package.version.clone(),
            package.purl.clone(),
        );
        match merged.get_mut(&key) {
            Some(existing) => {
                let mut evidence: BTreeSet<String> = existing.evidence.drain(..).collect();
                evidence.extend(package.evidence);
                existing.evidence = evidence.into_iter().collect();
            }
            None => {
                merged.insert(key, package);
            }
        }
    }
    merged.into_values().collect()
}

/// SHA-1 and SHA-256 of every evidence file that is not too large.
fn hash_evidence(
    hosts: &BTreeMap<String, PathBuf>,
    warnings: &mut Vec<Warning>,
) -> Vec<FileDigest> {
    let mut files = Vec::new();
    for (path, host) in hosts {
        match hash_file(host) {
            Ok(Some(digest)) => files.push(FileDigest {
                path: path.clone(),
                ..digest
            }),
            Ok(None) => {}
            Err(message) => warnings.push(Warning {
                path: path.clone(),
                line: None,
                message,
            }),
        }
    }
    files
}

fn hash_file(host: &std::path::Path) -> Result<Option<FileDigest>, String> {
    let Some(file) = root::open_regular(host).map_err(|error| format!("not hashed: {error}"))?
    else {
        return Ok(None);
    };
    let mut reader = file.take(MAX_HASHED + 1);
    let mut sha1 = sha1::Sha1::new();
    let mut sha256 = sha2::Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    let mut size: u64 = 0;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("not hashed: {error}")),
        };
        sha1.update(&buffer[..read]);
        sha256.update(&buffer[..read]);
        size += read as u64;
    }
    if size > MAX_HASHED {
        return Err(format!(
            "larger than {MAX_HASHED} bytes: named as evidence, not listed with checksums"
        ));
    }
    Ok(Some(FileDigest {
        path: String::new(),
        size,
        sha1: hex::encode(sha1.finalize()),
        sha256: hex::encode(sha256.finalize()),
    }))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_tree_with_every_ecosystem_is_listed_with_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("root");
        let write = |path: &str, content: &[u8]| {
            let path = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        };
        write("/usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        write(
            "/var/lib/dpkg/status",
            b"Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n",
        );
        write(
            "/var/lib/dpkg/status.d/tzdata",
            b"Package: tzdata\nArchitecture: all\nVersion: 2024a-0+deb12u1\n",
        );
        write(
            "/var/lib/dpkg/status.d/tzdata.md5sums",
            b"abc  usr/share/zoneinfo\n",
        );
        write(
            "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            b"Name: six\nVersion: 1.16.0\n",
        );
        write(
            "/app/node_modules/left-pad/package.json",
            br#"{"name":"left-pad","version":"1.3.0"}"#,
        );
        write(
            "/app/node_modules/a/node_modules/left-pad/package.json",
            br#"{"name":"left-pad","version":"1.3.0"}"#,
        );
        // A link to a host file is resolved inside the image, where nothing is.
        let host_database = dir.path().join("installed");
        fs::write(&host_database, "P:host-secret\nV:1\n").unwrap();
        fs::create_dir_all(root.join("lib/apk/db")).unwrap();
        symlink(&host_database, root.join("lib/apk/db/installed")).unwrap();
        let scan = scan(&Root::Dir(root)).unwrap();
        assert_eq!(scan.distro.as_ref().unwrap().id, "debian");
        let listed: Vec<(&str, &str, &str)> = scan
            .packages
            .iter()
            .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("deb", "base-files", "12.4+deb12u5"),
                ("deb", "tzdata", "2024a-0+deb12u1"),
                ("python", "six", "1.16.0"),
                ("npm", "left-pad", "1.3.0"),
            ]
        );
        assert_eq!(
            scan.packages[3].evidence,
            [
                "/app/node_modules/a/node_modules/left-pad/package.json",
                "/app/node_modules/left-pad/package.json"
            ]
        );
        let paths: Vec<&str> = scan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/app/node_modules/a/node_modules/left-pad/package.json",
                "/app/node_modules/left-pad/package.json",
                "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
                "/var/lib/dpkg/status",
                "/var/lib/dpkg/status.d/tzdata",
            ]
        );
        assert_eq!(
            scan.files[4].sha1,
            hex::encode(sha1::Sha1::digest(
                b"Package: tzdata\nArchitecture: all\nVersion: 2024a-0+deb12u1\n"
            ))
        );
        assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
    }
}

//! Attestations, judged by other tools: the SBOM scanner on real trees (the Debian fixture
//! against `dpkg-query`, `pip install` against `pip list`, `npm install` against `npm ls`, a
//! Go binary against `go version -m`, a cargo-auditable binary against `objcopy` and
//! zlib), SPDX documents validated by the SPDX tools (`pyspdxtools -i`), provenance parsed
//! by the in-toto-attestation SLSA v1 definitions with unknown fields rejected; referrers
//! stored, pushed (tag fallback on docker-registry 2.8, read back by skopeo and curl; the
//! referrers API through a shim in front of it), pulled, saved and loaded, copied by
//! `imagetools create`, and kept by `prune` exactly while their image is.
//!
//! The validators live in a venv under `target/attest-venv` (made once, from PyPI, on
//! first use), the cargo-auditable tool under `target/attest-tools`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::regenv::{self, Setup, TestRegistry};
use crate::util::{self, Need};

const EPOCH: &str = "1700000000";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        util::stdout(&output),
        util::stderr(&output)
    );
    output
}

/// Skips (or fails under XBUILD_TEST_STRICT=1) with a reason.
fn skip(reason: &str) -> bool {
    if std::env::var("XBUILD_TEST_STRICT").as_deref() == Ok("1") {
        panic!("needs {reason} (XBUILD_TEST_STRICT=1)");
    }
    eprintln!("skipped: needs {reason}");
    false
}

/// The validators' venv: spdx-tools (pyspdxtools) and in-toto-attestation, made once.
pub(crate) fn venv() -> Option<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = VENV.get_or_init(|| {
        let dir = target_dir().join("attest-venv");
        let marker = dir.join("xbuild-validators-1");
        if marker.exists() {
            return Ok(dir);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let venv = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .output()
            .map_err(|error| format!("python3 -m venv: {error}"))?;
        if !venv.status.success() {
            return Err(format!("python3 -m venv: {}", util::stderr(&venv)));
        }
        let pip = Command::new(dir.join("bin").join("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "spdx-tools==0.8.5",
                "in-toto-attestation==0.9.3",
            ])
            .output()
            .map_err(|error| format!("pip: {error}"))?;
        if !pip.status.success() {
            return Err(format!("pip install (PyPI): {}", util::stderr(&pip)));
        }
        std::fs::write(&marker, "spdx-tools==0.8.5 in-toto-attestation==0.9.3\n").unwrap();
        Ok(dir)
    });
    match made {
        Ok(dir) => Some(dir.clone()),
        Err(reason) => {
            skip(&format!("the validators venv ({reason})"));
            None
        }
    }
}

/// `pyspdxtools -i` on an SPDX document: valid or the test fails with its messages.
pub(crate) fn assert_valid_spdx(venv: &Path, document: &[u8]) {
    // pyspdxtools chooses its parser by the file name's suffix.
    let file = tempfile::Builder::new()
        .suffix(".spdx.json")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), document).unwrap();
    let output = Command::new(venv.join("bin").join("pyspdxtools"))
        .arg("-i")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyspdxtools: {}{}",
        util::stdout(&output),
        util::stderr(&output)
    );
}

/// Parses with the in-toto-attestation protobuf definitions, unknown fields rejected:
/// `provenance` (an SLSA v1 predicate) or `statement` (an in-toto statement).
const PROTO_CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
kind, path = sys.argv[1], sys.argv[2]
message = provenance_pb2.Provenance() if kind == "provenance" else statement_pb2.Statement()
json_format.ParseDict(json.load(open(path)), message, ignore_unknown_fields=False)
print("parsed")
"#;

fn proto_check(venv: &Path, kind: &str, document: &[u8]) -> Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document).unwrap();
    Command::new(venv.join("bin").join("python"))
        .args(["-c", PROTO_CHECK, kind])
        .arg(file.path())
        .output()
        .unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(bytes)))
}

/// `xbuild debug sbom DIR --format json`: (ecosystem, name, version) → purl, and the scan.
fn scan_dir(
    home: &Path,
    dir: &Path,
) -> (
    BTreeMap<(String, String, String), String>,
    serde_json::Value,
) {
    let output = ok(util::xbuild(home)
        .args(["debug", "sbom", "--format", "json"])
        .arg(dir));
    let scan = json(&output.stdout);
    let packages = scan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            (
                (
                    package["ecosystem"].as_str().unwrap().to_owned(),
                    package["name"].as_str().unwrap().to_owned(),
                    package["version"].as_str().unwrap().to_owned(),
                ),
                package["purl"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (packages, scan)
}

/// Two string fields of a JSON object.
fn pair(value: &serde_json::Value, first: &str, second: &str) -> (String, String) {
    (
        value[first].as_str().unwrap().to_owned(),
        value[second].as_str().unwrap().to_owned(),
    )
}

fn of_ecosystem(
    packages: &BTreeMap<(String, String, String), String>,
    ecosystem: &str,
) -> BTreeSet<(String, String)> {
    packages
        .keys()
        .filter(|(kind, _, _)| kind == ecosystem)
        .map(|(_, name, version)| (name.clone(), version.clone()))
        .collect()
}

/// The fixture Debian rootfs lists exactly the packages `dpkg-query -W` lists against it,
/// with purls carrying dpkg's architecture; the SPDX document validates; with
/// `SOURCE_DATE_EPOCH` two scans give the same bytes and `created` is clamped.
#[test]
fn the_debian_fixture_lists_what_dpkg_query_lists() {
    if !util::require(&[Need::Fixtures, Need::Program("dpkg-query")]) {
        return;
    }
    let Some(venv) = venv() else {
        return;
    };
    let home = util::temp_dir();
    for platform in ["linux-amd64", "linux-arm64"] {
        let rootfs = util::fixtures_dir()
            .unwrap()
            .join("rootfs")
            .join("debian")
            .join(platform);
        let query = ok(Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                rootfs.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package}\t${Version}\t${Architecture}\n"]));
        let expected: BTreeSet<(String, String, String)> = util::stdout(&query)
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (
                    fields[0].to_owned(),
                    fields[1].to_owned(),
                    fields[2].to_owned(),
                )
            })
            .collect();
        assert!(expected.len() > 50, "{platform}: {expected:?}");
        let (packages, _) = scan_dir(home.path(), &rootfs);
        let listed: BTreeSet<(String, String)> = of_ecosystem(&packages, "deb");
        let wanted: BTreeSet<(String, String)> = expected
            .iter()
            .map(|(name, version, _)| (name.clone(), version.clone()))
            .collect();
        assert_eq!(listed, wanted, "{platform}");
        assert_eq!(
            packages.len(),
            expected.len(),
            "{platform}: only dpkg packages"
        );
        for (name, version, arch) in &expected {
            let purl = &packages[&("deb".to_owned(), name.clone(), version.clone())];
            assert!(
                purl.starts_with(&format!("pkg:deb/debian/{}@", name.replace('+', "%2B")))
                    && purl.contains(&format!("arch={arch}"))
                    && purl.contains("distro=debian-12"),
                "{purl}"
            );
        }

        let spdx = |epoch: &str| {
            ok(util::xbuild(home.path())
                .env("SOURCE_DATE_EPOCH", epoch)
                .args(["debug", "sbom", "--format", "spdx"])
                .arg(&rootfs))
            .stdout
        };
        let first = spdx(EPOCH);
        assert_eq!(first, spdx(EPOCH), "{platform}: two scans, two documents");
        let document = json(&first);
        assert_eq!(document["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(document["spdxVersion"], "SPDX-2.3");
        assert_valid_spdx(&venv, &first);
    }
}

/// Copies a fixture image (every blob its index reaches) into `home/store` under `name`.
fn store_with_fixture(home: &Path, fixture: &str, name: &str) -> (serde_json::Value, String) {
    let layout = regenv::fixture_layout();
    let top = regenv::named(&layout, fixture).expect("the fixture image");
    let store = home.join("store");
    let blobs = store.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let copy = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let from = layout.join("blobs").join("sha256").join(hex);
        let to = blobs.join(hex);
        if !to.exists() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    };
    let index_digest = top["digest"].as_str().unwrap();
    copy(index_digest);
    let index = regenv::json_blob(&layout, index_digest);
    for entry in index["manifests"].as_array().unwrap() {
        let digest = entry["digest"].as_str().unwrap();
        copy(digest);
        let manifest = regenv::json_blob(&layout, digest);
        copy(manifest["config"]["digest"].as_str().unwrap());
        for layer in manifest["layers"].as_array().unwrap() {
            copy(layer["digest"].as_str().unwrap());
        }
    }
    let mut top = top.clone();
    top["annotations"]["org.opencontainers.image.ref.name"] = name.into();
    let document = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [top],
    });
    std::fs::write(store.join("index.json"), document.to_string()).unwrap();
    std::fs::write(
        store.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    (index, index_digest.to_owned())
}

/// The platform → manifest digest of a fixture index.
fn platform_manifests(index: &serde_json::Value) -> BTreeMap<String, String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let platform = &entry["platform"];
            let mut name = format!(
                "{}/{}",
                platform["os"].as_str().unwrap(),
                platform["architecture"].as_str().unwrap()
            );
            if let Some(variant) = platform["variant"].as_str() {
                name = format!("{name}/{variant}");
            }
            (name, entry["digest"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// A stored image is scanned from its layers (snapshots read as a stack, not mounted):
/// the arm64 Debian image lists what `dpkg-query` lists against the arm64 rootfs, and the
/// statement's subject is that platform's manifest.
#[test]
fn a_stored_image_is_scanned_from_its_layers() {
    if !util::require(&[Need::Root, Need::Fixtures, Need::Program("dpkg-query")]) {
        return;
    }
    let Some(venv) = venv() else {
        return;
    };
    let home = util::temp_dir();
    let (index, _) = store_with_fixture(home.path(), "debian:bookworm", "debian:bookworm");
    let manifests = platform_manifests(&index);
    let output = ok(util::xbuild(home.path())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "debug",
            "sbom",
            "--image",
            "debian:bookworm",
            "--platform",
            "linux/arm64",
            "--format",
            "statement",
        ]));
    let statement = json(&output.stdout);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(statement["predicateType"], "https://spdx.dev/Document");
    assert_eq!(
        statement["subject"][0]["name"],
        "pkg:docker/debian@bookworm?platform=linux%2Farm64"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        manifests["linux/arm64"]
    );
    let parsed = proto_check(&venv, "statement", &output.stdout);
    assert!(parsed.status.success(), "{}", util::stderr(&parsed));
    assert_valid_spdx(&venv, statement["predicate"].to_string().as_bytes());
    let names: BTreeSet<String> = statement["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|package| {
            format!(
                "{}\t{}",
                package["name"].as_str().unwrap(),
                package["versionInfo"].as_str().unwrap()
            )
        })
        .collect();
    let rootfs = util::fixtures_dir()
        .unwrap()
        .join("rootfs/debian/linux-arm64/var/lib/dpkg");
    let query = ok(Command::new("dpkg-query")
        .arg(format!("--admindir={}", rootfs.display()))
        .args(["-W", "-f", "${Package}\t${Version}\n"]));
    let expected: BTreeSet<String> = util::stdout(&query).lines().map(str::to_owned).collect();
    assert_eq!(names, expected);
}

/// A tree with packages installed by pip (`--target` into site-packages) and npm (a plain
/// and a scoped package, with a dependency): the scan lists what `pip list` and `npm ls`
/// list there, with their purls, and the SPDX document validates.
#[test]
fn pip_and_npm_packages_are_listed_as_pip_and_npm_list_them() {
    if !util::require(&[Need::Program("python3"), Need::Program("npm")]) {
        return;
    }
    let Some(venv) = venv() else {
        return;
    };
    let home = util::temp_dir();
    let tree = home.path().join("tree");
    let site = tree.join("usr/local/lib/python3.11/site-packages");
    ok(Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(&site)
        .args(["six==1.16.0", "idna==3.6"]));
    let app = tree.join("app");
    std::fs::create_dir_all(&app).unwrap();
    ok(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&app)
        .args(["left-pad@1.3.0", "@types/ms@0.7.34", "is-odd@3.0.1"]));

    let (packages, scan) = scan_dir(home.path(), &tree);
    assert!(scan["warnings"].as_array().unwrap().is_empty(), "{scan}");

    let pip = ok(Command::new(venv.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "list",
            "--disable-pip-version-check",
            "--format",
            "json",
            "--path",
        ])
        .arg(&site));
    let pip: BTreeSet<(String, String)> = json(&pip.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| pair(p, "name", "version"))
        .collect();
    assert_eq!(of_ecosystem(&packages, "python"), pip);
    assert_eq!(
        packages[&("python".to_owned(), "six".to_owned(), "1.16.0".to_owned())],
        "pkg:pypi/six@1.16.0"
    );

    let npm = ok(Command::new("npm")
        .args(["ls", "--all", "--json", "--prefix"])
        .arg(&app));
    let mut listed = BTreeSet::new();
    let mut pending = vec![json(&npm.stdout)];
    while let Some(node) = pending.pop() {
        if let Some(dependencies) = node["dependencies"].as_object() {
            for (name, dependency) in dependencies {
                listed.insert((
                    name.clone(),
                    dependency["version"].as_str().unwrap().to_owned(),
                ));
                pending.push(dependency.clone());
            }
        }
    }
    assert!(listed.len() >= 4, "is-odd brings is-number: {listed:?}");
    assert_eq!(of_ecosystem(&packages, "npm"), listed);
    assert_eq!(
        packages[&(
            "npm".to_owned(),
            "@types/ms".to_owned(),
            "0.7.34".to_owned()
        )],
        "pkg:npm/%40types/ms@0.7.34"
    );

    let spdx = ok(util::xbuild(home.path())
        .args(["debug", "sbom", "--format", "spdx"])
        .arg(&tree));
    assert_valid_spdx(&venv, &spdx.stdout);
}

/// A Go binary built offline with a vendored module dependency: the scan lists the main
/// module, the dependency and the standard library as `go version -m` reads them.
#[test]
fn a_go_binary_lists_the_modules_go_version_reads() {
    if !util::require(&[Need::Program("go")]) {
        return;
    }
    let home = util::temp_dir();
    let source = home.path().join("hello");
    let vendored = source.join("vendor/example.com/greet");
    std::fs::create_dir_all(&vendored).unwrap();
    std::fs::write(
        source.join("go.mod"),
        "module example.com/hello\n\ngo 1.18\n\nrequire example.com/greet v1.2.3\n",
    )
    .unwrap();
    std::fs::write(
        source.join("main.go"),
        "package main\n\nimport \"example.com/greet\"\n\nfunc main() { greet.Hello() }\n",
    )
    .unwrap();
    std::fs::write(
        vendored.join("greet.go"),
        "package greet\n\nimport \"fmt\"\n\nfunc Hello() { fmt.Println(\"hello\") }\n",
    )
    .unwrap();
    std::fs::write(
        source.join("vendor/modules.txt"),
        "# example.com/greet v1.2.3\n## explicit\nexample.com/greet\n",
    )
    .unwrap();
    let tree = home.path().join("tree");
    let binary = tree.join("usr/local/bin/hello");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    ok(Command::new("go")
        .args(["build", "-mod=vendor", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=vendor")
        .env("GOCACHE", target_dir().join("attest-gocache"))
        .env("GOPATH", home.path().join("gopath"))
        .env("CGO_ENABLED", "0"));

    // go version -m: "\tpath\t...", "\tmod\tPATH\tVERSION\t...", "\tdep\tPATH\tVERSION\t...".
    let version = ok(Command::new("go").arg("version").arg("-m").arg(&binary));
    let text = util::stdout(&version);
    let mut expected = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().split('\t').collect();
        if matches!(fields.first(), Some(&"mod") | Some(&"dep")) {
            expected.insert((fields[1].to_owned(), fields[2].to_owned()));
        }
    }
    let go = text.lines().next().unwrap().rsplit(' ').next().unwrap();
    expected.insert(("stdlib".to_owned(), go.trim_start_matches("go").to_owned()));
    assert!(
        expected.contains(&("example.com/greet".to_owned(), "v1.2.3".to_owned())),
        "{text}"
    );

    let (packages, _) = scan_dir(home.path(), &tree);
    assert_eq!(of_ecosystem(&packages, "go"), expected, "{text}");
    assert_eq!(
        packages[&(
            "go".to_owned(),
            "example.com/greet".to_owned(),
            "v1.2.3".to_owned()
        )],
        "pkg:golang/example.com/greet@v1.2.3"
    );
}

/// A binary built with cargo-auditable: the scan lists the crates that `.dep-v0` holds,
/// as objcopy extracts it and zlib inflates it; build dependencies are left out.
#[test]
fn a_cargo_auditable_binary_lists_its_crates() {
    if !util::require(&[
        Need::Program("cargo"),
        Need::Program("objcopy"),
        Need::Program("python3"),
    ]) {
        return;
    }
    let tools = target_dir().join("attest-tools");
    let auditable = tools.join("bin").join("cargo-auditable");
    if !auditable.exists() {
        let install = Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--quiet",
                "cargo-auditable@0.7.7",
                "--root",
            ])
            .arg(&tools)
            .output()
            .unwrap();
        if !install.status.success() {
            skip(&format!(
                "cargo-auditable from crates.io: {}",
                util::stderr(&install)
            ));
            return;
        }
    }
    let home = util::temp_dir();
    let source = home.path().join("app");
    std::fs::create_dir_all(source.join("src")).unwrap();
    std::fs::write(
        source.join("Cargo.toml"),
        "[package]\nname = \"audited\"\nversion = \"0.3.1\"\nedition = \"2021\"\n\n[dependencies]\nhex = \"=0.4.3\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        source.join("src/main.rs"),
        "fn main() { println!(\"{}\", hex::encode(b\"audited\")); }\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        tools.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ok(Command::new("cargo")
        .args(["auditable", "build", "--quiet"])
        .current_dir(&source)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir().join("attest-cargo-target")));
    let tree = home.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::copy(
        target_dir().join("attest-cargo-target/debug/audited"),
        tree.join("usr/bin/audited"),
    )
    .unwrap();

    let section = home.path().join("dep-v0");
    ok(Command::new("objcopy")
        .arg(format!("--dump-section=.dep-v0={}", section.display()))
        .arg(tree.join("usr/bin/audited"))
        .arg(home.path().join("copy")));
    let inflated = ok(Command::new("python3")
        .args([
            "-c",
            "import sys, zlib; sys.stdout.write(zlib.decompress(open(sys.argv[1], 'rb').read()).decode())",
        ])
        .arg(&section));
    let expected: BTreeSet<(String, String)> = json(&inflated.stdout)["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"].as_str() != Some("build"))
        .map(|p| pair(p, "name", "version"))
        .collect();
    assert!(
        expected.contains(&("hex".to_owned(), "0.4.3".to_owned())),
        "{expected:?}"
    );
    assert!(
        expected.contains(&("audited".to_owned(), "0.3.1".to_owned())),
        "{expected:?}"
    );

    let (packages, _) = scan_dir(home.path(), &tree);
    assert_eq!(of_ecosystem(&packages, "cargo"), expected);
    assert_eq!(
        packages[&("cargo".to_owned(), "hex".to_owned(), "0.4.3".to_owned())],
        "pkg:cargo/hex@0.4.3"
    );
}

/// A build record as the pipeline fills it: mode=max, a secret-looking build argument, a
/// secret, a clean git checkout as context.
fn build_record(mode: &str) -> serde_json::Value {
    serde_json::json!({
        "mode": mode,
        "dockerfilePath": "Dockerfile",
        "dockerfile": "FROM busybox:latest\nARG NPM_TOKEN\nRUN echo $NPM_TOKEN > /dev/null\n",
        "target": null,
        "buildArgs": {"NPM_TOKEN": "npm_TopSecretValue42", "VERSION": "1.2"},
        "labels": {},
        "platforms": ["linux/amd64", "linux/arm64"],
        "platform": "linux/arm64",
        "builderPlatform": "linux/amd64",
        "baseImages": [{"reference": "busybox:latest", "platform": "linux/arm64",
                        "digest": format!("sha256:{}", "c".repeat(64))}],
        "context": {"sha256": "d".repeat(64),
                    "git": {"url": "https://ci:ghp_AnotherSecret@git.example/app.git",
                            "commit": "e".repeat(40)}},
        "http": [],
        "secrets": [{"id": "npmrc"}],
        "ssh": [],
        "steps": [{"id": "step0", "platform": "linux/arm64", "stage": "0",
                   "instruction": "RUN echo npm_TopSecretValue42 > /dev/null",
                   "lines": [3, 3], "inputs": [], "cached": false, "layer": null}],
        "network": true,
        "reproducible": false,
        "builderId": "https://ci.example/runs/1",
        "invocationId": "fixedinvocationid00000000",
        "started": 2_000_000_000_i64,
        "finished": 2_000_000_100_i64,
        "sourceDateEpoch": 1_700_000_000_i64,
    })
}

/// SLSA v1 provenance parses with the in-toto-attestation definitions, unknown fields
/// rejected (a BuildKit-style `buildkit_hermetic` in `metadata` is: the check can fail);
/// the statement parses too; no secret value appears; v0.2 has BuildKit's v0.2 shape; the
/// same record gives the same bytes.
#[test]
fn provenance_parses_strictly_and_holds_no_secret() {
    let Some(venv) = venv() else {
        return;
    };
    let home = util::temp_dir();
    for mode in ["min", "max"] {
        let record = home.path().join(format!("record-{mode}.json"));
        std::fs::write(&record, build_record(mode).to_string()).unwrap();
        let predicate = ok(util::xbuild(home.path())
            .args(["debug", "provenance"])
            .arg(&record))
        .stdout;
        let parsed = proto_check(&venv, "provenance", &predicate);
        assert!(parsed.status.success(), "{mode}: {}", util::stderr(&parsed));
        let mut tampered = json(&predicate);
        tampered["runDetails"]["metadata"]["buildkit_hermetic"] = true.into();
        let rejected = proto_check(&venv, "provenance", tampered.to_string().as_bytes());
        assert!(
            !rejected.status.success(),
            "unknown fields must be rejected"
        );

        let subject = format!("sha256:{}", "a".repeat(64));
        let statement = ok(util::xbuild(home.path())
            .args(["debug", "provenance", "--subject", &subject])
            .arg(&record))
        .stdout;
        let parsed = proto_check(&venv, "statement", &statement);
        assert!(parsed.status.success(), "{mode}: {}", util::stderr(&parsed));
        let document = json(&statement);
        assert_eq!(document["predicateType"], "https://slsa.dev/provenance/v1");
        let v02 = ok(util::xbuild(home.path())
            .args(["debug", "provenance", "--slsa", "v0.2"])
            .arg(&record))
        .stdout;
        for text in [&predicate, &statement, &v02] {
            let text = String::from_utf8_lossy(text);
            assert!(!text.contains("npm_TopSecretValue42"), "{mode}: {text}");
            assert!(!text.contains("ghp_AnotherSecret"), "{mode}: {text}");
        }
        let v1 = json(&predicate);
        let request = &v1["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(request["frontend"], "dockerfile.v0");
        let v02 = json(&v02);
        // BuildKit's documented v0.2 fields.
        for pointer in [
            "/builder/id",
            "/buildType",
            "/invocation/configSource/entryPoint",
            "/invocation/configSource/digest/sha1",
            "/invocation/parameters/frontend",
            "/invocation/environment/platform",
            "/materials/0/uri",
            "/materials/0/digest/sha256",
            "/metadata/buildInvocationID",
            "/metadata/buildStartedOn",
            "/metadata/buildFinishedOn",
            "/metadata/completeness/parameters",
            "/metadata/reproducible",
        ] {
            assert!(v02.pointer(pointer).is_some(), "{mode}: {pointer} in {v02}");
        }
        assert_eq!(v02["metadata"]["buildStartedOn"], "2023-11-14T22:13:20Z");
        if mode == "max" {
            assert_eq!(request["args"]["build-arg:NPM_TOKEN"], "<redacted>");
            assert_eq!(request["args"]["build-arg:VERSION"], "1.2");
            assert_eq!(request["secrets"][0]["id"], "npmrc");
            assert_eq!(request["redacted"][0]["arg"], "build-arg:NPM_TOKEN");
            assert!(
                v1.pointer("/buildDefinition/internalParameters/source/infos/0/data")
                    .is_some()
            );
        } else {
            assert!(
                request["args"].get("build-arg:VERSION").is_none(),
                "{request}"
            );
            assert!(request.get("secrets").is_none());
            assert_eq!(v02["metadata"]["completeness"]["parameters"], false);
        }
        let again = ok(util::xbuild(home.path())
            .args(["debug", "provenance"])
            .arg(&record))
        .stdout;
        assert_eq!(again, predicate);
    }
}

/// Attaches an SBOM and a provenance to each platform of the stored image; returns the
/// referrer digests per platform manifest.
fn attach_both(
    command: &dyn Fn() -> Command,
    home: &Path,
    name: &str,
    platforms: &[&str],
) -> BTreeMap<String, Vec<String>> {
    let record = home.join("record.json");
    std::fs::write(&record, build_record("min").to_string()).unwrap();
    let mut attached = BTreeMap::new();
    for platform in platforms {
        let mut digests = Vec::new();
        for kind in [
            &["--sbom"][..],
            &["--provenance", record.to_str().unwrap()][..],
        ] {
            let output = ok(command()
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["debug", "attach", name, "--platform", platform])
                .args(kind));
            digests.push(util::stdout(&output).trim().to_owned());
        }
        attached.insert((*platform).to_owned(), digests);
    }
    attached
}

/// `xbuild debug referrers NAME`: subject → referrer digests.
fn store_referrers(command: &mut Command, name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let output = ok(command.args(["debug", "referrers", name]));
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in util::stdout(&output).lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        found
            .entry(fields[0].to_owned())
            .or_default()
            .insert(fields[1].to_owned());
    }
    found
}

/// `GET` over plain HTTP with curl (the registry read by another client): status and body.
fn curl(url: &str, accept: &str) -> (u16, Vec<u8>) {
    let output = ok(Command::new("curl").args([
        "-s",
        "-H",
        &format!("Accept: {accept}"),
        "-w",
        "\n%{http_code}",
        url,
    ]));
    let text = output.stdout;
    let split = text.iter().rposition(|byte| *byte == b'\n').unwrap();
    let status = String::from_utf8_lossy(&text[split + 1..]).parse().unwrap();
    (status, text[..split].to_vec())
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A two-platform image with an SBOM and a provenance per platform, pushed to
/// docker-registry 2.8 (no referrers API): the tag holds the same index with exactly the
/// two platforms (no `unknown/unknown`), each platform's fallback index (`sha256-<hex>`)
/// lists its two referrers and keeps an entry another tool put there, the referrer
/// manifests name their subject, and their statements validate. A new SBOM replaces the
/// old entry on the next push. Then: pull into a new store brings the referrers; save and
/// load carry them (skopeo still reads the archive); imagetools create copies them to
/// another repository; prune keeps them while the image is named and removes them with it.
#[test]
fn referrers_travel_with_the_image_through_the_tag_fallback() {
    if !regenv::ready(Setup::Plain) || !util::require(&[Need::Root, Need::Program("curl")]) {
        return;
    }
    let Some(venv) = venv() else {
        return;
    };
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let name = format!("{}/attest/busybox:latest", registry.host);
    let (index, index_digest) = store_with_fixture(home.path(), "busybox:latest", &name);
    let manifests = platform_manifests(&index);
    let platforms = ["linux/amd64", "linux/arm64"];
    let command = || registry.xbuild(home.path());
    let attached = attach_both(&command, home.path(), &name, &platforms);
    let listed = store_referrers(&mut command(), &name);
    for platform in platforms {
        let expected: BTreeSet<String> = attached[platform].iter().cloned().collect();
        assert_eq!(listed[&manifests[platform]], expected, "{platform}");
    }
    // The store checks clean with the referrers counted.
    let check = ok(command().args(["store", "check"]));
    assert!(
        util::stdout(&check).contains("checked 4 referrers"),
        "{}",
        util::stdout(&check)
    );

    // Another tool's referrer of the amd64 manifest (a signature artifact), already in the
    // fallback index before xbuild pushes.
    let amd64 = &manifests["linux/amd64"];
    let amd64_hex = amd64.strip_prefix("sha256:").unwrap();
    let amd64_size = regenv::blob(&regenv::fixture_layout(), amd64).len();
    let base = format!("http://{}/v2/attest/busybox", registry.direct);
    let put = |reference: &str, media_type: &str, body: &[u8]| {
        curl_put(&format!("{base}/manifests/{reference}"), media_type, body);
    };
    let empty = upload_blob(&base, b"{}");
    let signature = b"a signature that another tool made";
    let signature_digest = upload_blob(&base, signature);
    let foreign_manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature", "digest": signature_digest, "size": signature.len()}],
        "subject": {"mediaType": MANIFEST, "digest": amd64, "size": amd64_size},
    })
    .to_string()
    .into_bytes();
    let foreign = regenv::digest_of(&foreign_manifest);
    put(&foreign, MANIFEST, &foreign_manifest);
    let foreign_entry = serde_json::json!({
        "mediaType": MANIFEST,
        "digest": foreign,
        "size": foreign_manifest.len(),
        "artifactType": "application/vnd.example.signature",
    });
    let fallback = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [foreign_entry],
    });
    put(
        &format!("sha256-{amd64_hex}"),
        INDEX,
        fallback.to_string().as_bytes(),
    );

    let pushed = ok(command().args(["push", &name]));
    assert!(
        util::stderr(&pushed).contains("pushed 4 referrers"),
        "{}",
        util::stderr(&pushed)
    );
    // The index under the tag: the image's own, exactly its platforms.
    let raw = registry.skopeo_raw("attest/busybox:latest");
    assert_eq!(regenv::digest_of(&raw), index_digest);
    assert!(!String::from_utf8_lossy(&raw).contains("unknown"));

    let fallback_entries = |platform: &str| -> Vec<serde_json::Value> {
        let hex = manifests[platform].strip_prefix("sha256:").unwrap();
        let raw = registry.skopeo_raw(&format!("attest/busybox:sha256-{hex}"));
        json(&raw)["manifests"].as_array().unwrap().clone()
    };
    // What curl reads from the registry, per platform and predicate type.
    let mut read: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for platform in platforms {
        let entries = fallback_entries(platform);
        let ours: BTreeSet<String> = entries
            .iter()
            .filter(|entry| entry["artifactType"] == "application/vnd.in-toto+json")
            .map(|entry| entry["digest"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            ours,
            attached[platform].iter().cloned().collect(),
            "{platform}"
        );
        let predicates: BTreeSet<&str> = entries
            .iter()
            .filter_map(|entry| entry["annotations"]["in-toto.io/predicate-type"].as_str())
            .collect();
        assert_eq!(
            predicates,
            [
                "https://slsa.dev/provenance/v1",
                "https://spdx.dev/Document"
            ]
            .into(),
            "{platform}"
        );
        for digest in &ours {
            let manifest = json(&registry.skopeo_raw(&format!("attest/busybox@{digest}")));
            assert_eq!(manifest["subject"]["digest"], manifests[platform].as_str());
            assert_eq!(manifest["artifactType"], "application/vnd.in-toto+json");
            let layer = &manifest["layers"][0];
            assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
            let (status, body) = curl(
                &format!("{base}/blobs/{}", layer["digest"].as_str().unwrap()),
                "*/*",
            );
            assert_eq!(status, 200);
            let statement = json(&body);
            assert_eq!(
                statement["predicateType"],
                layer["annotations"]["in-toto.io/predicate-type"]
            );
            read.insert(
                (
                    platform.to_owned(),
                    statement["predicateType"].as_str().unwrap().to_owned(),
                ),
                statement["predicate"].clone(),
            );
            if statement["predicateType"] == "https://spdx.dev/Document" {
                assert_valid_spdx(&venv, statement["predicate"].to_string().as_bytes());
            } else {
                let parsed = proto_check(
                    &venv,
                    "provenance",
                    statement["predicate"].to_string().as_bytes(),
                );
                assert!(parsed.status.success(), "{}", util::stderr(&parsed));
            }
        }
    }
    assert!(
        fallback_entries("linux/amd64")
            .iter()
            .any(|entry| entry["digest"] == foreign.as_str()),
        "the foreign entry is kept"
    );
    // imagetools inspect --format as buildx: per platform, {"SPDX": ...} and {"SLSA": ...},
    // the predicates curl read; the foreign signature is no attestation.
    for (field, key, predicate) in [
        (".SBOM", "SPDX", "https://spdx.dev/Document"),
        (".Provenance", "SLSA", "https://slsa.dev/provenance/v1"),
    ] {
        let output = ok(command().args([
            "imagetools",
            "inspect",
            &name,
            "--format",
            &format!("{{{{json {field}}}}}"),
        ]));
        let shown = json(&output.stdout);
        for platform in platforms {
            assert_eq!(
                shown[platform][key],
                read[&(platform.to_owned(), predicate.to_owned())],
                "{field} {platform}"
            );
            assert_eq!(shown[platform].as_object().unwrap().len(), 1, "{shown}");
        }
    }

    // A new SBOM (another time) replaces the old one here and in the fallback index.
    let newer = ok(command().env("SOURCE_DATE_EPOCH", "1700000500").args([
        "debug",
        "attach",
        &name,
        "--platform",
        "linux/amd64",
        "--sbom",
    ]));
    let newer = util::stdout(&newer).trim().to_owned();
    assert_ne!(newer, attached["linux/amd64"][0]);
    ok(command().args(["push", &name]));
    let entries = fallback_entries("linux/amd64");
    let digests: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        [
            newer.as_str(),
            attached["linux/amd64"][1].as_str(),
            foreign.as_str()
        ]
        .into()
    );

    // Pull into a new store: the referrers come along.
    let puller = util::temp_dir();
    let pulled = ok(registry
        .xbuild(puller.path())
        .args(["pull", "--all-platforms", &name]));
    assert!(
        util::stderr(&pulled).contains("referrers"),
        "{}",
        util::stderr(&pulled)
    );
    let listed = store_referrers(&mut registry.xbuild(puller.path()), &name);
    assert!(
        listed[&manifests["linux/arm64"]]
            .is_superset(&attached["linux/arm64"].iter().cloned().collect())
    );
    assert!(listed[&manifests["linux/amd64"]].contains(&newer));
    assert!(
        listed[&manifests["linux/amd64"]].contains(&foreign),
        "other tools' referrers come too"
    );
    ok(registry.xbuild(puller.path()).args(["store", "check"]));

    // save / load: an OCI archive carries them; skopeo reads the archive as before.
    let archive = home.path().join("busybox.tar");
    ok(command().args(["save", "-o", archive.to_str().unwrap(), &name]));
    let inspect = ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:{name}", archive.display()),
    ]));
    assert_eq!(regenv::digest_of(&inspect.stdout), index_digest);
    let loader = util::temp_dir();
    ok(util::xbuild(loader.path()).args(["load", "-i", archive.to_str().unwrap()]));
    let loaded = store_referrers(&mut util::xbuild(loader.path()), &name);
    assert_eq!(loaded, store_referrers(&mut command(), &name));
    let check = ok(util::xbuild(loader.path()).args(["store", "check"]));
    assert!(
        util::stdout(&check).contains("checked 4 referrers"),
        "{}",
        util::stdout(&check)
    );

    // imagetools create into another repository copies each manifest's referrers.
    let target = format!("{}/attest/copied:1", registry.host);
    let sources: Vec<String> = platforms
        .iter()
        .map(|platform| format!("{}/attest/busybox@{}", registry.host, manifests[*platform]))
        .collect();
    ok(command()
        .args(["imagetools", "create", "-t", &target])
        .args(&sources));
    let arm64_hex = manifests["linux/arm64"].strip_prefix("sha256:").unwrap();
    let copied = json(&registry.skopeo_raw(&format!("attest/copied:sha256-{arm64_hex}")));
    let copied: BTreeSet<String> = copied["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(copied, attached["linux/arm64"].iter().cloned().collect());

    // prune keeps them while the image is named, removes them with it.
    ok(command().args(["prune"]));
    assert_eq!(store_referrers(&mut command(), &name).len(), 2);
    let blobs_before = regenv::layout_blobs(&home.path().join("store"));
    for digest in attached
        .values()
        .flatten()
        .filter(|digest| **digest != attached["linux/amd64"][0])
    {
        assert!(blobs_before.contains(digest), "{digest}");
    }
    ok(command().args(["rmi", &name]));
    let pruned = ok(command().args(["prune"]));
    assert!(
        util::stdout(&pruned).contains("Removed 4 referrers"),
        "{}",
        util::stdout(&pruned)
    );
    let index_json = std::fs::read_to_string(home.path().join("store/index.json")).unwrap();
    assert!(
        !index_json.contains("dev.xbuild.referrer.subject"),
        "{index_json}"
    );
    let blobs_after = regenv::layout_blobs(&home.path().join("store"));
    assert!(blobs_after.is_empty(), "{blobs_after:?}");
    ok(command().args(["store", "check"]));
}

/// `PUT` with curl; fails the test on an error status.
fn curl_put(url: &str, content_type: &str, body: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    ok(Command::new("curl").args([
        "-sS",
        "--fail-with-body",
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {content_type}"),
        "--data-binary",
        &format!("@{}", file.path().display()),
        url,
    ]));
}

/// Uploads a blob with curl (POST, then PUT with the digest); returns its digest.
fn upload_blob(base: &str, bytes: &[u8]) -> String {
    let digest = regenv::digest_of(bytes);
    let start = ok(Command::new("curl").args([
        "-sS",
        "-i",
        "-X",
        "POST",
        &format!("{base}/blobs/uploads/"),
    ]));
    let text = util::stdout(&start);
    let location = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Location: {text}"));
    let separator = if location.contains('?') { '&' } else { '?' };
    curl_put(
        &format!("{location}{separator}digest={digest}"),
        "application/octet-stream",
        bytes,
    );
    digest
}

/// A proxy in front of docker-registry that gives it the referrers API, as a registry with
/// one behaves: a manifest pushed with a `subject` is indexed, and `GET
/// /v2/<name>/referrers/<digest>` answers an index of them (everything else is passed on).
struct ReferrersShim {
    host: String,
    stop: Arc<AtomicBool>,
    /// Requests seen: `METHOD PATH`.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for ReferrersShim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Index = Arc<Mutex<BTreeMap<(String, String), Vec<serde_json::Value>>>>;

impl ReferrersShim {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let index: Index = Arc::default();
        let (stop_thread, log_thread, upstream) = (stop.clone(), log.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            while !stop_thread.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (log, index, upstream) =
                            (log_thread.clone(), index.clone(), upstream.clone());
                        std::thread::spawn(move || {
                            let _ = shim_serve(client, &upstream, &log, &index);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { host, stop, log }
    }
}

fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if head.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length: usize = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    client.read_exact(&mut body)?;
    Ok(Some((text, body)))
}

fn shim_serve(
    mut client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<String>>,
    index: &Index,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some((head, body)) = read_request(&mut client)? else {
        return Ok(());
    };
    let request_line = head.lines().next().unwrap_or("").to_owned();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    log.lock().unwrap().push(format!("{method} {path}"));
    let route = path.split('?').next().unwrap_or("");
    if method == "GET" {
        if let Some((repository, subject)) = route
            .strip_prefix("/v2/")
            .and_then(|rest| rest.split_once("/referrers/"))
        {
            let manifests = index
                .lock()
                .unwrap()
                .get(&(repository.to_owned(), subject.to_owned()))
                .cloned()
                .unwrap_or_default();
            let body =
                serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
                    .to_string();
            write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: {INDEX}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
    }
    if method == "PUT" {
        if let Some((repository, _)) = route
            .strip_prefix("/v2/")
            .and_then(|rest| rest.split_once("/manifests/"))
        {
            if let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(subject) = document["subject"]["digest"].as_str() {
                    let digest = regenv::digest_of(&body);
                    let mut entry = serde_json::json!({"mediaType": MANIFEST, "digest": digest, "size": body.len()});
                    if let Some(artifact_type) = document.get("artifactType") {
                        entry["artifactType"] = artifact_type.clone();
                    }
                    if let Some(annotations) = document.get("annotations") {
                        entry["annotations"] = annotations.clone();
                    }
                    let mut index = index.lock().unwrap();
                    let list = index
                        .entry((repository.to_owned(), subject.to_owned()))
                        .or_default();
                    if !list.iter().any(|known| known["digest"] == digest.as_str()) {
                        list.push(entry);
                    }
                }
            }
        }
    }
    // Everything else goes to the registry, one exchange per connection.
    let mut server = TcpStream::connect(upstream)?;
    let mut forwarded = String::new();
    for line in head.lines().filter(|line| !line.is_empty()) {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    server.write_all(forwarded.as_bytes())?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    Ok(())
}

/// On a registry with the referrers API (the shim), push lists the referrers through it
/// and writes no fallback tag; pull finds them through it.
#[test]
fn referrers_use_the_referrers_api_when_the_registry_has_one() {
    if !regenv::ready(Setup::Plain) || !util::require(&[Need::Root]) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let shim = ReferrersShim::start(&registry.direct);
    let home = util::temp_dir();
    let name = format!("{}/api/busybox:latest", shim.host);
    let (index, _) = store_with_fixture(home.path(), "busybox:latest", &name);
    let manifests = platform_manifests(&index);
    let command = || {
        let mut command = util::xbuild(home.path());
        command.env("DOCKER_CONFIG", home.path().join("docker"));
        command
    };
    let attached = attach_both(&command, home.path(), &name, &["linux/arm64"]);
    ok(command().args(["push", &name]));
    let arm64 = &manifests["linux/arm64"];
    let (status, body) = curl(
        &format!("http://{}/v2/api/busybox/referrers/{arm64}", shim.host),
        INDEX,
    );
    assert_eq!(status, 200);
    let listed: BTreeSet<String> = json(&body)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, attached["linux/arm64"].iter().cloned().collect());
    // No fallback tag was written: the registry itself does not know the tag.
    let hex = arm64.strip_prefix("sha256:").unwrap();
    let (status, _) = curl(
        &format!(
            "http://{}/v2/api/busybox/manifests/sha256-{hex}",
            registry.direct
        ),
        INDEX,
    );
    assert_eq!(status, 404);
    assert!(
        !shim
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("/manifests/sha256-")),
        "{:?}",
        shim.log.lock().unwrap()
    );

    let puller = util::temp_dir();
    let mut pull = util::xbuild(puller.path());
    pull.env("DOCKER_CONFIG", puller.path().join("docker"));
    ok(pull.args(["pull", "--platform", "linux/arm64", &name]));
    // The index is kept whole and one platform pulled: the store lists and inspects what it
    // has (it said "unreadable: blob ... is missing" before).
    let images = ok(util::xbuild(puller.path()).arg("images"));
    let images = util::stdout(&images);
    let row = images
        .lines()
        .find(|line| line.contains("linux/arm64"))
        .unwrap_or_else(|| panic!("{images}"));
    assert!(!row.contains("linux/amd64"), "{images}");
    let inspected = ok(util::xbuild(puller.path()).args(["inspect", &name]));
    assert!(util::stdout(&inspected).contains("linux/arm64"));
    let mut list = util::xbuild(puller.path());
    let pulled = store_referrers(&mut list, &name);
    assert_eq!(
        pulled[arm64],
        attached["linux/arm64"].iter().cloned().collect()
    );
}

/// A stored blob of `home`'s store, by digest.
fn store_blob(home: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(home.join("store/blobs/sha256").join(hex)).unwrap()
}

/// `xbuild debug referrers NAME --platform P`: the platform manifest and, per predicate
/// type, the statement of its referrer (read from the store's blobs).
fn built_statements(
    home: &Path,
    name: &str,
    platform: &str,
) -> (String, BTreeMap<String, serde_json::Value>) {
    let output = ok(util::xbuild(home).args(["debug", "referrers", name, "--platform", platform]));
    let mut subject = String::new();
    let mut statements = BTreeMap::new();
    for line in util::stdout(&output).lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        subject = fields[0].to_owned();
        let manifest = json(&store_blob(home, fields[1]));
        assert_eq!(manifest["subject"]["digest"], fields[0], "{manifest}");
        assert_eq!(manifest["artifactType"], "application/vnd.in-toto+json");
        let statement = json(&store_blob(
            home,
            manifest["layers"][0]["digest"].as_str().unwrap(),
        ));
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            fields[0].strip_prefix("sha256:").unwrap()
        );
        statements.insert(fields[3].to_owned(), statement);
    }
    (subject, statements)
}

const BUILT_DOCKERFILE: &str = "FROM debian:bookworm\nARG API_TOKEN\nCOPY hello.txt /hello.txt\n";

/// A build context with [`BUILT_DOCKERFILE`] under `home/ctx`.
fn built_context(home: &Path, dockerfile: &str) -> PathBuf {
    let ctx = home.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    ctx
}

/// `build --sbom=true --provenance=mode=max` into the local store: the platform manifest
/// has an SPDX referrer that pyspdxtools validates and that lists exactly the Debian
/// packages `dpkg-query` lists in the fixture's root file system, and a SLSA v1 provenance
/// referrer (parsed strictly by the in-toto-attestation definitions) naming the Dockerfile,
/// with its content (mode=max) and the secret-looking build argument redacted.
#[test]
fn build_flags_attach_an_sbom_and_a_max_provenance_to_each_platform_manifest() {
    if !util::require(&[Need::Root, Need::Fixtures, Need::Program("dpkg-query")]) {
        return;
    }
    let Some(venv) = venv() else {
        return;
    };
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let ctx = built_context(home.path(), BUILT_DOCKERFILE);
    ok(util::xbuild(home.path())
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            "--sbom=true",
            "--provenance=mode=max",
            "--build-arg",
            "API_TOKEN=s3cr3t-value",
            "-t",
            "attest/built:1",
            ".",
        ]));
    let (subject, statements) = built_statements(home.path(), "attest/built:1", "linux/amd64");
    assert!(subject.starts_with("sha256:"), "{statements:?}");
    assert_eq!(
        statements.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ]
    );

    let sbom = &statements["https://spdx.dev/Document"];
    assert_valid_spdx(&venv, sbom["predicate"].to_string().as_bytes());
    let listed: BTreeSet<(String, String)> = sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| {
            package["externalRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|reference| {
                    reference["referenceLocator"]
                        .as_str()
                        .is_some_and(|purl| purl.starts_with("pkg:deb/"))
                })
        })
        .map(|package| {
            (
                package["name"].as_str().unwrap().to_owned(),
                package["versionInfo"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rootfs = util::fixtures_dir()
        .unwrap()
        .join("rootfs/debian/linux-amd64");
    let query = ok(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package}\t${Version}\n"]));
    let expected: BTreeSet<(String, String)> = util::stdout(&query)
        .lines()
        .map(|line| {
            let (name, version) = line.split_once('\t').unwrap();
            (name.to_owned(), version.to_owned())
        })
        .collect();
    assert!(expected.len() > 50, "{expected:?}");
    assert_eq!(listed, expected);

    let provenance = &statements["https://slsa.dev/provenance/v1"];
    let predicate = provenance["predicate"].to_string();
    let parsed = proto_check(&venv, "provenance", predicate.as_bytes());
    assert!(parsed.status.success(), "{}", util::stderr(&parsed));
    let definition = &provenance["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["configSource"]["path"], "Dockerfile",
        "{definition}"
    );
    use base64::Engine as _;
    let content = base64::engine::general_purpose::STANDARD.encode(BUILT_DOCKERFILE);
    assert!(
        predicate.contains(&content),
        "mode=max has the Dockerfile: {predicate}"
    );
    assert!(!predicate.contains("s3cr3t-value"), "{predicate}");
    assert!(predicate.contains("<redacted>"), "{predicate}");
    // mode=max lists the steps: what each did, its lines, what it built on, whether the
    // cache gave it, and the layer it made (the COPY's is the image's top layer).
    let steps = definition["internalParameters"]["buildConfig"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no buildConfig.steps: {definition}"));
    let summary: Vec<(String, serde_json::Value, bool)> = steps
        .iter()
        .map(|step| {
            (
                step["instruction"].as_str().unwrap().to_owned(),
                step["lines"].clone(),
                step["cached"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary.first().map(|(what, _, _)| what.as_str()),
        Some("FROM debian:bookworm"),
        "{steps:?}"
    );
    let copy = steps.last().unwrap();
    assert!(
        copy["instruction"]
            .as_str()
            .unwrap()
            .starts_with("COPY hello.txt /hello.txt"),
        "{steps:?}"
    );
    assert_eq!(copy["lines"], serde_json::json!([3, 3]));
    assert_eq!(copy["platform"], "linux/amd64");
    assert!(!copy["cached"].as_bool().unwrap(), "{steps:?}");
    let previous = &steps[steps.len() - 2]["id"];
    assert_eq!(copy["inputs"], serde_json::json!([previous]), "{steps:?}");
    let manifest = json(&store_blob(home.path(), &subject));
    let config = json(&store_blob(
        home.path(),
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(&copy["layer"], diff_ids.last().unwrap(), "{steps:?}");

    // `xbuild attest` lists and prints the same statements from the store.
    let listed = util::stdout(&ok(util::xbuild(home.path()).args([
        "attest",
        "ls",
        "attest/built:1",
    ])));
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let mut kinds: Vec<(&str, &str, &str)> =
        rows.iter().map(|row| (row[0], row[1], row[2])).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            (
                "linux/amd64",
                "provenance",
                "https://slsa.dev/provenance/v1"
            ),
            ("linux/amd64", "sbom", "https://spdx.dev/Document")
        ],
        "{listed}"
    );
    let got = json(
        &ok(util::xbuild(home.path()).args([
            "attest",
            "get",
            "attest/built:1",
            "--type",
            "sbom",
            "--predicate",
        ]))
        .stdout,
    );
    assert_eq!(got, sbom["predicate"]);
    let ambiguous = util::xbuild(home.path())
        .args(["attest", "get", "attest/built:1"])
        .output()
        .unwrap();
    assert_eq!(ambiguous.status.code(), Some(2));
    assert!(
        util::stderr(&ambiguous).contains("2 attestations match: name one with --type"),
        "{}",
        util::stderr(&ambiguous)
    );
    let none = util::xbuild(home.path())
        .args([
            "attest",
            "ls",
            "attest/built:1",
            "--platform",
            "linux/arm64",
        ])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(
        util::stderr(&none).contains("no linux/arm64 image (it has linux/amd64)"),
        "{}",
        util::stderr(&none)
    );

    // -o type=oci writes the referrers into the archive, as `xbuild save` does: unnamed
    // index.json entries naming their subject, their blobs with them. The same build
    // argument: its value is in the image's `ARG` history, as BuildKit writes it.
    ok(util::xbuild(home.path())
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            "--sbom=true",
            "--provenance=mode=max",
            "--build-arg",
            "API_TOKEN=s3cr3t-value",
            "-o",
            "type=oci,dest=out.tar",
            ".",
        ]));
    let archive = ctx.join("out.tar");
    let index = json(
        &ok(Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("index.json"))
        .stdout,
    );
    let listing = util::stdout(&ok(Command::new("tar").arg("-tf").arg(&archive)));
    let mut archived = BTreeSet::new();
    for entry in index["manifests"].as_array().unwrap() {
        if entry["annotations"]["dev.xbuild.referrer.subject"] == subject.as_str() {
            let hex = entry["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            assert!(listing.contains(hex), "{listing}");
            archived.insert(
                entry["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(
        archived,
        statements.keys().cloned().collect::<BTreeSet<_>>(),
        "{index}"
    );
}

/// `--attest` specs xbuild does not know, an SBOM generator it does not have, and
/// attestations with an output that cannot carry them: exit 2, before any work (no store
/// is opened, no output written).
#[test]
fn attest_flags_it_does_not_know_exit_2_before_any_work() {
    let home = util::temp_dir();
    let ctx = built_context(home.path(), "FROM busybox\nRUN exit 0\n");
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--attest", "type=foo"],
            &["type=foo", "known: sbom, provenance"],
        ),
        (
            &["--attest", "type=sbom,bogus=1"],
            &["bogus", "known: type, generator, scan-stage, disabled"],
        ),
        (
            &["--attest", "type=provenance,mode=max,bogus=1"],
            &["bogus", "known: type, mode, version, disabled"],
        ),
        (
            &[
                "--attest",
                "type=sbom,generator=docker/buildkit-syft-scanner",
            ],
            &["not supported"],
        ),
        (
            &["--sbom=true", "-o", "type=local,dest=out"],
            &["type=local", "referrers"],
        ),
    ];
    for (flags, words) in cases {
        let output = util::run(
            util::xbuild(home.path())
                .current_dir(&ctx)
                .arg("build")
                .args(flags)
                .arg("."),
        );
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{flags:?}: {stderr}");
        }
        assert!(
            !home.path().join("store").exists(),
            "{flags:?}: no store opened"
        );
        assert!(!ctx.join("out").exists(), "{flags:?}");
    }
}

/// A `--push` without attestation flags carries a `mode=min` provenance, as buildx's
/// default: the platform manifest's fallback index (`sha256-<hex>`) on docker-registry
/// lists a SLSA provenance referrer, whose statement has no Dockerfile content; the tag's
/// index holds only the image's platform.
#[test]
fn a_push_carries_a_min_provenance_by_default() {
    if !regenv::ready(Setup::Plain) || !util::require(&[Need::Root]) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let ctx = built_context(home.path(), "FROM busybox\nCOPY hello.txt /hello.txt\n");
    let name = format!("{}/attest/pushed:1", registry.host);
    ok(registry.xbuild(home.path()).current_dir(&ctx).args([
        "build",
        "--platform",
        "linux/amd64",
        "--progress",
        "plain",
        "--push",
        "-t",
        &name,
        ".",
    ]));
    let raw = registry.skopeo_raw("attest/pushed:1");
    let index = json(&raw);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert!(!String::from_utf8_lossy(&raw).contains("unknown"));
    let manifest = manifests[0]["digest"].as_str().unwrap();
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let fallback = json(&registry.skopeo_raw(&format!("attest/pushed:sha256-{hex}")));
    let entries = fallback["manifests"].as_array().unwrap();
    let predicates: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["annotations"]["in-toto.io/predicate-type"].as_str())
        .collect();
    assert_eq!(predicates, ["https://slsa.dev/provenance/v1"], "{fallback}");
    let referrer = json(&registry.skopeo_raw(&format!(
        "attest/pushed@{}",
        entries[0]["digest"].as_str().unwrap()
    )));
    assert_eq!(referrer["subject"]["digest"], manifest);
    let base = format!("http://{}/v2/attest/pushed", registry.direct);
    let (status, body) = curl(
        &format!(
            "{base}/blobs/{}",
            referrer["layers"][0]["digest"].as_str().unwrap()
        ),
        "*/*",
    );
    assert_eq!(status, 200);
    let statement = json(&body);
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let text = statement.to_string();
    use base64::Engine as _;
    let content = base64::engine::general_purpose::STANDARD
        .encode("FROM busybox\nCOPY hello.txt /hello.txt\n");
    assert!(!text.contains(&content), "mode=min: no Dockerfile: {text}");

    // `xbuild attest` reads the same from the registry (the image is not in the store).
    let listed = json(
        &ok(registry
            .xbuild(home.path())
            .args(["attest", "ls", &name, "--format", "json"]))
        .stdout,
    );
    assert_eq!(
        listed,
        serde_json::json!([{
            "platform": "linux/amd64",
            "kind": "provenance",
            "predicateType": "https://slsa.dev/provenance/v1",
            "manifest": entries[0]["digest"],
        }])
    );
    let got = json(
        &ok(registry
            .xbuild(home.path())
            .args(["attest", "get", &name, "--type", "provenance"]))
        .stdout,
    );
    assert_eq!(got, statement);
}

/// The resolved dependencies of one platform's provenance in `home`'s store.
fn resolved_dependencies(home: &Path, name: &str, platform: &str) -> Vec<serde_json::Value> {
    let (_, statements) = built_statements(home, name, platform);
    let provenance = &statements["https://slsa.dev/provenance/v1"];
    provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap_or_else(|| panic!("{provenance}"))
        .clone()
}

/// The digest (`sha256` hex) of the dependency whose `uri` starts with `prefix`, once.
fn dependency_digests(dependencies: &[serde_json::Value], prefix: &str) -> Vec<String> {
    dependencies
        .iter()
        .filter(|entry| {
            entry["uri"]
                .as_str()
                .is_some_and(|uri| uri.starts_with(prefix))
        })
        .map(|entry| entry["digest"]["sha256"].as_str().unwrap().to_owned())
        .collect()
}

/// The provenance names what each platform's image was built from, by digest: the base of
/// the target stage for that platform only (digests read by skopeo from the store), the
/// base of a `--platform=$BUILDPLATFORM` stage in both, the file `ADD` fetched (sha256 by
/// `sha256sum`), and the context after `.dockerignore` (its digest follows a change of a
/// file in the context, not of an ignored one); when the context is a clean git checkout,
/// the commit and the remote, as `git` reads them, and not once the tree has a change.
#[test]
fn provenance_names_every_base_image_url_and_the_context_by_digest() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("skopeo"),
        Need::Program("git"),
        Need::Program("sha256sum"),
    ]) {
        return;
    }
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let body: &'static [u8] = b"remote-file\n";
    let port = crate::build::serve(body);
    let dockerfile = format!(
        "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
         FROM debian:bookworm\n\
         COPY --from=tools /bin/busybox /bb\n\
         COPY hello.txt /hello.txt\n\
         ADD http://127.0.0.1:{port}/remote.txt /remote.txt\n"
    );
    let ctx = built_context(home.path(), &dockerfile);
    std::fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();
    let build = |tag: &str| {
        ok(util::xbuild(home.path())
            .current_dir(&ctx)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args([
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--progress",
                "plain",
                "--provenance=true",
                "-t",
                tag,
                ".",
            ]));
    };
    build("attest/deps:1");

    let store = home.path().join("store");
    let inspect = |name: &str| {
        let output = ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:{name}", store.display()),
        ]));
        platform_manifests(&json(&output.stdout))
    };
    let debian = inspect("docker.io/library/debian:bookworm");
    let busybox = inspect("docker.io/library/busybox:latest");
    let hex = |digest: &String| digest.strip_prefix("sha256:").unwrap().to_owned();
    let sha256sum = {
        let mut child = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        let output = child.wait_with_output().unwrap();
        util::stdout(&output)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let url = format!("http://127.0.0.1:{port}/remote.txt");
    let mut contexts = BTreeSet::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let dependencies = resolved_dependencies(home.path(), "attest/deps:1", platform);
        let shown = serde_json::Value::Array(dependencies.clone());
        assert_eq!(
            dependency_digests(&dependencies, "pkg:docker/debian@bookworm"),
            [hex(&debian[platform])],
            "{platform}: {shown}"
        );
        assert_eq!(
            dependency_digests(&dependencies, "pkg:docker/busybox@latest"),
            [hex(&busybox["linux/amd64"])],
            "{platform}: {shown}"
        );
        assert_eq!(
            dependency_digests(&dependencies, &url),
            std::slice::from_ref(&sha256sum),
            "{shown}"
        );
        let context: Vec<&serde_json::Value> = dependencies
            .iter()
            .filter(|entry| entry["name"] == "context")
            .collect();
        assert_eq!(context.len(), 1, "{shown}");
        contexts.insert(context[0]["digest"]["sha256"].as_str().unwrap().to_owned());
        // A local directory: not complete, and no git entry.
        assert_eq!(dependencies.len(), 4, "{shown}");
    }
    assert_eq!(contexts.len(), 1, "both platforms read one context");
    let context_digest = |name: &str| -> String {
        let dependencies = resolved_dependencies(home.path(), name, "linux/amd64");
        dependencies
            .iter()
            .find(|entry| entry["name"] == "context")
            .map(|entry| entry["digest"]["sha256"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let first = contexts.into_iter().next().unwrap();
    std::fs::write(ctx.join("ignored.txt"), "not in the context\n").unwrap();
    build("attest/deps:2");
    assert_eq!(context_digest("attest/deps:2"), first, "an ignored file");
    std::fs::write(ctx.join("hello.txt"), "changed\n").unwrap();
    build("attest/deps:3");
    assert_ne!(
        context_digest("attest/deps:3"),
        first,
        "a file of the context"
    );

    // A clean git checkout: the commit, from its remote.
    let git = |args: &[&str]| {
        ok(Command::new("git")
            .arg("-C")
            .arg(&ctx)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null"))
    };
    std::fs::write(ctx.join(".gitignore"), "ignored.txt\n").unwrap();
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "app"]);
    git(&["remote", "add", "origin", "https://example.invalid/app.git"]);
    let commit = util::stdout(&git(&["rev-parse", "HEAD"])).trim().to_owned();
    build("attest/deps:4");
    let (_, statements) = built_statements(home.path(), "attest/deps:4", "linux/arm64");
    let definition = &statements["https://slsa.dev/provenance/v1"]["predicate"]["buildDefinition"];
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    assert!(
        dependencies
            .iter()
            .any(|entry| entry["uri"] == "https://example.invalid/app.git"
                && entry["digest"]["sha1"] == commit.as_str()),
        "{definition}"
    );
    assert_eq!(
        definition["externalParameters"]["configSource"]["digest"]["sha1"],
        commit.as_str(),
        "{definition}"
    );
    // A change to a tracked file: no longer the commit's tree.
    std::fs::write(ctx.join("hello.txt"), "changed again\n").unwrap();
    build("attest/deps:5");
    let dependencies = resolved_dependencies(home.path(), "attest/deps:5", "linux/arm64");
    assert!(
        !dependencies
            .iter()
            .any(|entry| entry["uri"] == "https://example.invalid/app.git"),
        "{dependencies:?}"
    );
}

/// With `SOURCE_DATE_EPOCH`, two builds of the same context and Dockerfile into two fresh
/// stores give the same attestations, byte for byte: the same referrer manifests (so the
/// same statements: times clamped, invocation id derived, lists in a stable order), for
/// both platforms, and the same image index.
#[test]
fn attestations_are_reproducible_with_source_date_epoch() {
    if !util::require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let shared = util::temp_dir();
    let ctx = built_context(shared.path(), BUILT_DOCKERFILE);
    let build = |home: &Path| {
        crate::build::store_with_fixtures(home);
        let output = ok(util::xbuild(home)
            .current_dir(&ctx)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args([
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--progress",
                "plain",
                "--sbom=true",
                "--provenance=mode=max",
                "--build-arg",
                "API_TOKEN=s3cr3t-value",
                "-t",
                "attest/again:1",
                "--iidfile",
            ])
            .arg(home.join("iid"))
            .arg("."));
        drop(output);
        let listed = json(
            &ok(util::xbuild(home).args(["attest", "ls", "attest/again:1", "--format", "json"]))
                .stdout,
        );
        let iid = std::fs::read_to_string(home.join("iid")).unwrap();
        (listed, iid)
    };
    let first = util::temp_dir();
    let second = util::temp_dir();
    let (listed, iid) = build(first.path());
    // Two platforms, an SBOM and a provenance each.
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{listed}");
    for platform in ["linux/amd64", "linux/arm64"] {
        let kinds: BTreeSet<&str> = rows
            .iter()
            .filter(|row| row["platform"] == platform)
            .map(|row| row["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, BTreeSet::from(["provenance", "sbom"]), "{listed}");
    }
    // Some time passes between the builds: the clamp, not luck, makes them equal.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (again, iid_again) = build(second.path());
    assert_eq!(iid, iid_again);
    assert_eq!(listed, again);
}

/// `BUILDKIT_SBOM_SCAN_STAGE` in a stage and `BUILDKIT_SBOM_SCAN_CONTEXT` in the target
/// stage: with `--sbom`, the platform manifest gets the image's SBOM and one more each, for
/// the stage (its Debian packages, which the busybox image has none of) and for the context
/// (an npm package in it), as BuildKit's extra SBOMs; neither argument is in a step's
/// environment; without `--sbom` nothing is scanned.
#[test]
fn scan_arguments_add_the_sboms_of_a_stage_and_the_context() {
    if !util::require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let dockerfile = "FROM debian:bookworm AS build\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
                      RUN env > /env.txt\n\
                      FROM busybox\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
                      COPY --from=build /env.txt /env.txt\n";
    let ctx = built_context(home.path(), dockerfile);
    let package = ctx.join("node_modules/left-pad");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("package.json"),
        r#"{"name": "left-pad", "version": "1.3.0"}"#,
    )
    .unwrap();
    ok(util::xbuild(home.path())
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            "--sbom=true",
            "-t",
            "attest/scan:1",
            ".",
        ]));
    let listed = json(
        &ok(util::xbuild(home.path()).args(["attest", "ls", "attest/scan:1", "--format", "json"]))
            .stdout,
    );
    let mut documents = BTreeMap::new();
    for row in listed.as_array().unwrap() {
        assert_eq!(row["kind"], "sbom", "{listed}");
        let manifest = json(&store_blob(home.path(), row["manifest"].as_str().unwrap()));
        let kind = manifest["annotations"]["dev.xbuild.attestation"]
            .as_str()
            .unwrap()
            .to_owned();
        let statement = json(&store_blob(
            home.path(),
            manifest["layers"][0]["digest"].as_str().unwrap(),
        ));
        documents.insert(kind, statement["predicate"].clone());
    }
    assert_eq!(
        documents.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sbom", "sbom-build", "sbom-context"],
        "{listed}"
    );
    let purls = |document: &serde_json::Value| -> Vec<String> {
        document["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|package| package["externalRefs"].as_array().into_iter().flatten())
            .filter_map(|reference| reference["referenceLocator"].as_str())
            .map(str::to_owned)
            .collect()
    };
    assert!(
        !purls(&documents["sbom"])
            .iter()
            .any(|p| p.starts_with("pkg:deb/")),
        "the busybox image has no Debian packages"
    );
    assert!(
        purls(&documents["sbom-build"])
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/dpkg@")),
        "{}",
        documents["sbom-build"]
    );
    assert!(
        purls(&documents["sbom-context"]).contains(&"pkg:npm/left-pad@1.3.0".to_owned()),
        "{}",
        documents["sbom-context"]
    );
    let run = util::xbuild(home.path())
        .args(["run", "--rm", "attest/scan:1", "cat", "/env.txt"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", util::stderr(&run));
    assert!(
        !util::stdout(&run).contains("BUILDKIT_SBOM"),
        "{}",
        util::stdout(&run)
    );
}

/// What buildx's `imagetools inspect --format '{{json .Provenance}}'` / `'{{json .SBOM}}'`
/// prints for a two-platform image, written from buildx's util/imagetools (loader.go:
/// `provenanceStub{SLSA}`, `sbomStub{SPDX, AdditionalSPDXs}`, a map by platform when there
/// are several): each platform's value has exactly these keys.
const BUILDX_PROVENANCE_SHAPE: &str = r#"{"linux/amd64": ["SLSA"], "linux/arm64": ["SLSA"]}"#;
const BUILDX_SBOM_SHAPE: &str = r#"{"linux/amd64": ["SPDX"], "linux/arm64": ["SPDX"]}"#;

fn shape(value: &serde_json::Value) -> serde_json::Value {
    let map = value.as_object().unwrap();
    map.iter()
        .map(|(platform, stub)| {
            let keys: Vec<String> = stub.as_object().unwrap().keys().cloned().collect();
            (platform.clone(), serde_json::json!(keys))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn buildx_layout_keeps_attestation_manifests_in_the_index_as_buildkit_does() {
    if !regenv::ready(Setup::Plain) || !util::require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    let ctx = built_context(home.path(), "FROM busybox\nCOPY hello.txt /hello.txt\n");
    let name = format!("{}/attest/inindex:1", registry.host);
    ok(registry
        .xbuild(home.path())
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--progress",
            "plain",
            "--sbom=true",
            "--provenance=mode=max",
            "-o",
            "type=image,push=true,attestation-layout=buildx",
            "-t",
            &name,
            ".",
        ]));
    // skopeo reads the pushed index: two images, then one attestation manifest for each.
    let index = json(&registry.skopeo_raw("attest/inindex:1"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 4, "{index}");
    let images: Vec<&serde_json::Value> = manifests[..2].iter().collect();
    let base = format!("http://{}/v2/attest/inindex", registry.direct);
    for (image, attestation) in images.iter().zip(&manifests[2..]) {
        assert_ne!(image["platform"]["os"], "unknown", "{index}");
        assert_eq!(
            attestation["platform"],
            serde_json::json!({"architecture": "unknown", "os": "unknown"})
        );
        assert_eq!(
            attestation["annotations"],
            serde_json::json!({
                "vnd.docker.reference.digest": image["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            })
        );
        let manifest = json(&registry.skopeo_raw(&format!(
            "attest/inindex@{}",
            attestation["digest"].as_str().unwrap()
        )));
        // BuildKit's default form (oci-artifact=true): empty config, artifactType, subject.
        assert_eq!(
            manifest["artifactType"],
            "application/vnd.docker.attestation.manifest.v1+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(manifest["subject"]["digest"], image["digest"]);
        let layers = manifest["layers"].as_array().unwrap();
        let predicates: Vec<&str> = layers
            .iter()
            .map(|layer| {
                assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
                layer["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            predicates,
            [
                "https://spdx.dev/Document",
                "https://slsa.dev/provenance/v1"
            ]
        );
        for layer in layers {
            let (status, body) = curl(
                &format!("{base}/blobs/{}", layer["digest"].as_str().unwrap()),
                "*/*",
            );
            assert_eq!(status, 200);
            let statement = json(&body);
            assert_eq!(
                statement["predicateType"],
                layer["annotations"]["in-toto.io/predicate-type"]
            );
            let subject = statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap();
            assert_eq!(
                format!("sha256:{subject}"),
                image["digest"].as_str().unwrap()
            );
        }
        // No referrer beside them: the tag fallback does not exist.
        let hex = image["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let (status, _) = curl(
            &format!("{base}/manifests/sha256-{hex}"),
            "application/vnd.oci.image.index.v1+json",
        );
        assert_eq!(status, 404, "no tag fallback for {hex}");
    }

    // imagetools inspect reads them in buildx's shape.
    let inspect = |format: &str| {
        json(
            &ok(registry.xbuild(home.path()).args([
                "imagetools",
                "inspect",
                &name,
                "--format",
                format,
            ]))
            .stdout,
        )
    };
    let provenance = inspect("{{json .Provenance}}");
    assert_eq!(
        shape(&provenance),
        serde_json::from_str::<serde_json::Value>(BUILDX_PROVENANCE_SHAPE).unwrap()
    );
    assert_eq!(
        provenance["linux/arm64"]["SLSA"]["buildDefinition"]["externalParameters"]["configSource"]
            ["path"],
        "Dockerfile"
    );
    let sbom = inspect("{{json .SBOM}}");
    assert_eq!(
        shape(&sbom),
        serde_json::from_str::<serde_json::Value>(BUILDX_SBOM_SHAPE).unwrap()
    );
    assert_eq!(sbom["linux/amd64"]["SPDX"]["spdxVersion"], "SPDX-2.3");

    // An OCI archive in BuildKit's legacy form (oci-artifact=false): an unknown/unknown image
    // config; skopeo reads it, and `xbuild load` of it keeps what `attest ls` reads.
    let archive = home.path().join("legacy.tar");
    ok(util::xbuild(home.path())
        .current_dir(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "build",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            "--sbom=true",
            "-o",
        ])
        .arg(format!(
            "type=oci,dest={},attestation-layout=buildx,oci-artifact=false",
            archive.display()
        ))
        .args(["-t", "attest/legacy:1", "."]));
    let reference = format!("oci-archive:{}", archive.display());
    // skopeo resolves the archive's one entry: the image index the build made.
    let built = json(&ok(Command::new("skopeo").args(["inspect", "--raw", &reference])).stdout);
    let unpacked = home.path().join("legacy");
    std::fs::create_dir_all(&unpacked).unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked));
    let blob = |digest: &str| {
        json(
            &std::fs::read(
                unpacked
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
    };
    let entries = built["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{built}");
    assert_eq!(entries[1]["platform"]["os"], "unknown");
    let manifest = blob(entries[1]["digest"].as_str().unwrap());
    assert!(manifest.get("artifactType").is_none(), "{manifest}");
    assert!(manifest.get("subject").is_none(), "{manifest}");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["architecture"], "unknown");
    assert_eq!(config["os"], "unknown");
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        manifest["layers"][0]["digest"]
    );
    let other = util::temp_dir();
    ok(util::xbuild(other.path())
        .arg("load")
        .arg("-i")
        .arg(&archive));
    let listed = json(
        &ok(util::xbuild(other.path()).args([
            "attest",
            "ls",
            "attest/legacy:1",
            "--format",
            "json",
        ]))
        .stdout,
    );
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["kind"], "sbom");
    assert_eq!(rows[0]["manifest"], entries[1]["digest"]);
}

#[test]
fn scan_stage_true_adds_an_sbom_of_every_stage_the_target_needs() {
    if !util::require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let home = util::temp_dir();
    crate::build::store_with_fixtures(home.path());
    // No scan argument in the Dockerfile: scan-stage=true alone asks for the stages.
    let dockerfile = "FROM debian:bookworm\n\
                      FROM busybox AS deps\nCOPY hello.txt /deps.txt\n\
                      FROM busybox AS final\n\
                      COPY --from=0 /etc/debian_version /debian_version\n\
                      COPY --from=deps /deps.txt /deps.txt\n\
                      FROM busybox AS unused\n";
    let ctx = built_context(home.path(), dockerfile);
    ok(util::xbuild(home.path()).current_dir(&ctx).args([
        "build",
        "--platform",
        "linux/amd64",
        "--progress",
        "plain",
        "--attest",
        "type=sbom,scan-stage=true",
        "--target",
        "final",
        "-t",
        "attest/scanstage:1",
        ".",
    ]));
    let listed = json(
        &ok(util::xbuild(home.path()).args([
            "attest",
            "ls",
            "attest/scanstage:1",
            "--format",
            "json",
        ]))
        .stdout,
    );
    let mut documents = BTreeMap::new();
    for row in listed.as_array().unwrap() {
        let manifest = json(&store_blob(home.path(), row["manifest"].as_str().unwrap()));
        let kind = manifest["annotations"]["dev.xbuild.attestation"]
            .as_str()
            .unwrap()
            .to_owned();
        let statement = json(&store_blob(
            home.path(),
            manifest["layers"][0]["digest"].as_str().unwrap(),
        ));
        documents.insert(kind, statement["predicate"].clone());
    }
    // BuildKit's names: the stage's name, `stage-N` for an unnamed one; neither the target
    // nor a stage it does not need.
    assert_eq!(
        documents.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sbom", "sbom-deps", "sbom-stage-0"],
        "{listed}"
    );
    let has_dpkg = |document: &serde_json::Value| {
        document["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|package| package["externalRefs"].as_array().into_iter().flatten())
            .filter_map(|reference| reference["referenceLocator"].as_str())
            .any(|purl| purl.starts_with("pkg:deb/debian/dpkg@"))
    };
    assert!(
        has_dpkg(&documents["sbom-stage-0"]),
        "{}",
        documents["sbom-stage-0"]
    );
    assert!(!has_dpkg(&documents["sbom"]));
}

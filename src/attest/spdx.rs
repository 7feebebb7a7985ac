//! An SBOM as an SPDX 2.3 JSON document, from a [`crate::sbom::Scan`], in the shape
//! buildkit-syft-scanner writes (packages with a purl external reference and `sourceInfo`,
//! evidence files with checksums, `evident-by` relationships), made to validate with the
//! SPDX tools (`pyspdxtools -i`): relative file names (`./var/lib/dpkg/status`), SHA-1 on
//! every file, one root package the document `DESCRIBES`, and no `CONTAINS` from a package
//! whose files were not analysed to a file.
//!
//! Deterministic: `created` is given by the caller (clamped to `SOURCE_DATE_EPOCH` by
//! [`super::clamped_time`]), the document namespace and every SPDX id are derived from the
//! content, and lists come in the scan's sorted order, so the same tree scanned twice gives
//! the same bytes.
//!
//! Spec: <https://spdx.github.io/spdx-spec/v2.3/>.

use serde_json::{Value, json};

use super::{Statement, StatementVersion, Subject, derived_uuid};
use crate::sbom::{Package, Scan};

/// The SPDX relationship comment syft uses for evidence.
const EVIDENT_BY: &str =
    "evident-by: indicates the package's existence is evident by the given file";

/// What the document says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo<'a> {
    /// The document's name and its root package's: what was scanned (an image reference,
    /// or `linux/amd64` for an unnamed image).
    pub name: &'a str,
    /// The creation time, RFC 3339 (see [`super::clamped_time`]).
    pub created: &'a str,
    /// The tool, for `creators` (`xbuild-0.1.0`).
    pub tool: &'a str,
}

/// The tool name for `creators`: `xbuild-<version>`.
pub fn tool_name() -> String {
    format!("xbuild-{}", env!("CARGO_PKG_VERSION"))
}

/// Keeps what an SPDX id may hold (`[A-Za-z0-9.-]`), the rest as `-`.
fn id_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn short_hash(parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|part| part.as_bytes()).collect();
    derived_uuid(&bytes).replace('-', "")[..16].to_owned()
}

fn package_id(package: &Package) -> String {
    let evidence = package.evidence.join("\n");
    format!(
        "SPDXRef-Package-{}-{}-{}",
        package.ecosystem.as_str(),
        id_part(&package.name),
        short_hash(&[&package.purl, &evidence])
    )
}

fn file_id(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    format!("SPDXRef-File-{}-{}", id_part(base), short_hash(&[path]))
}

/// An SPDX actor from free text such as `Name <mail@example.org>`: `Person: Name
/// (mail@example.org)`; `None` when there is no name.
fn actor(text: &str) -> Option<String> {
    let (name, mail) = match text.split_once('<') {
        Some((name, rest)) => (name, rest.split('>').next().unwrap_or_default()),
        None => (text, ""),
    };
    // Parentheses would be read as the mail part; line breaks end a tag-value line.
    let clean = |value: &str| -> String {
        value
            .chars()
            .filter(|c| !matches!(c, '(' | ')' | '\n' | '\r'))
            .collect::<String>()
            .trim()
            .trim_end_matches(',')
            .to_owned()
    };
    let name = clean(name);
    if name.is_empty() {
        return None;
    }
    let mail = clean(mail);
    Some(if mail.is_empty() {
        format!("Person: {name}")
    } else {
        format!("Person: {name} ({mail})")
    })
}

/// The SPDX 2.3 document for a scan.
pub fn document(scan: &Scan, info: &DocumentInfo<'_>) -> Value {
    let root_id = "SPDXRef-DocumentRoot";
    let hashed: std::collections::BTreeSet<&str> =
        scan.files.iter().map(|file| file.path.as_str()).collect();
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root_id,
    })];
    let mut root = json!({
        "SPDXID": root_id,
        "name": info.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    });
    if let Some(distro) = &scan.distro {
        let version = distro.version_id.as_deref().unwrap_or("");
        let pretty = distro.pretty_name.as_deref().unwrap_or(&distro.id);
        root["comment"] = json!(format!(
            "distro: {pretty} (os-release ID={} VERSION_ID={version})",
            distro.id
        ));
    }
    packages.push(root);
    for package in &scan.packages {
        let id = package_id(package);
        let mut entry = json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!(
                "{}: {}",
                package.ecosystem.source_info(),
                package.evidence.join(", ")
            ),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": package.purl,
            }],
        });
        if let Some(supplier) = package.supplier.as_deref().and_then(actor) {
            entry["supplier"] = json!(supplier);
        }
        relationships.push(json!({
            "spdxElementId": root_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
        for path in &package.evidence {
            if hashed.contains(path.as_str()) {
                relationships.push(json!({
                    "spdxElementId": id,
                    "relationshipType": "OTHER",
                    "relatedSpdxElement": file_id(path),
                    "comment": EVIDENT_BY,
                }));
            }
        }
        packages.push(entry);
    }
    let files: Vec<Value> = scan
        .files
        .iter()
        .map(|file| {
            json!({
                "SPDXID": file_id(&file.path),
                "fileName": format!(".{}", file.path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": file.sha1},
                    {"algorithm": "SHA256", "checksumValue": file.sha256},
                ],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            })
        })
        .collect();
    let mut document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": info.name,
        "creationInfo": {
            "created": info.created,
            "creators": [format!("Tool: {}", info.tool)],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    // The namespace is unique per document content: everything above, hashed.
    let content = crate::oci::image::canonical_json(&document);
    document["documentNamespace"] = json!(format!(
        "https://spdx.org/spdxdocs/{}-{}",
        id_part(info.name),
        derived_uuid(&[&content])
    ));
    document
}

/// The SBOM as BuildKit attaches it: an in-toto statement with the SPDX document as its
/// predicate.
pub fn statement(
    scan: &Scan,
    info: &DocumentInfo<'_>,
    subjects: Vec<Subject>,
    version: StatementVersion,
) -> Statement {
    Statement::new(
        version,
        super::SPDX_PREDICATE,
        subjects,
        document(scan, info),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::{Distro, Ecosystem, FileDigest};

    fn scan() -> Scan {
        Scan {
            distro: Some(Distro {
                id: "debian".to_owned(),
                version_id: Some("12".to_owned()),
                pretty_name: None,
                id_like: Vec::new(),
            }),
            packages: vec![Package {
                ecosystem: Ecosystem::Deb,
                name: "base-files".to_owned(),
                version: "12.4".to_owned(),
                arch: Some("amd64".to_owned()),
                purl: "pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12".to_owned(),
                supplier: Some("Santiago Vila <sanvila@debian.org>".to_owned()),
                source: None,
                evidence: vec!["/var/lib/dpkg/status".to_owned()],
            }],
            files: vec![FileDigest {
                path: "/var/lib/dpkg/status".to_owned(),
                size: 1,
                sha1: "a".repeat(40),
                sha256: "b".repeat(64),
            }],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_document_is_deterministic_and_well_formed() {
        let info = DocumentInfo {
            name: "app:1",
            created: "2024-01-01T00:00:00Z",
            tool: "xbuild-test",
        };
        let one = document(&scan(), &info);
        assert_eq!(
            crate::oci::image::canonical_json(&one),
            crate::oci::image::canonical_json(&document(&scan(), &info))
        );
        assert_eq!(one["files"][0]["fileName"], "./var/lib/dpkg/status");
        assert_eq!(
            one["packages"][1]["supplier"],
            "Person: Santiago Vila (sanvila@debian.org)"
        );
        let relationships = one["relationships"].as_array().unwrap();
        assert_eq!(relationships.len(), 3);
        assert_eq!(
            relationships[2]["relatedSpdxElement"],
            one["files"][0]["SPDXID"]
        );
        assert!(
            one["documentNamespace"]
                .as_str()
                .unwrap()
                .starts_with("https://spdx.org/spdxdocs/app-1-")
        );
        // Another time, another document.
        let later = DocumentInfo {
            created: "2024-01-02T00:00:00Z",
            ..info
        };
        assert_ne!(
            document(&scan(), &later)["documentNamespace"],
            one["documentNamespace"]
        );
    }

    #[test]
    fn actors_are_spdx_persons() {
        assert_eq!(
            actor("Debian Install System Team <debian-boot@lists.debian.org>").as_deref(),
            Some("Person: Debian Install System Team (debian-boot@lists.debian.org)")
        );
        assert_eq!(actor("Jane (Doe)").as_deref(), Some("Person: Jane Doe"));
        assert_eq!(actor(" <a@b>"), None);
    }
}

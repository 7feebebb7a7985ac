//! The distribution and its package databases: `/etc/os-release` (else
//! `/usr/lib/os-release`), dpkg's `/var/lib/dpkg/status` and distroless's
//! `/var/lib/dpkg/status.d/*`, apk's `/lib/apk/db/installed`.

use super::control::{self, Paragraph};
use super::purl::Purl;
use super::{Distro, Ecosystem, Package, Warning};

/// Parses an os-release file (shell-style `KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> Option<Distro> {
    let mut id = None;
    let mut version_id = None;
    let mut pretty_name = None;
    let mut id_like = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => id = Some(value.to_lowercase()),
            "VERSION_ID" => version_id = Some(value),
            "PRETTY_NAME" => pretty_name = Some(value),
            "ID_LIKE" => id_like = value.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    Some(Distro {
        id: id.filter(|id| !id.is_empty())?,
        version_id: version_id.filter(|version| !version.is_empty()),
        pretty_name,
        id_like,
    })
}

fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"'))
            || (value.starts_with('\'') && value.ends_with('\'')));
    if !quoted {
        return value.to_owned();
    }
    let inner = &value[1..value.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && value.starts_with('"') {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `distro` qualifier of a purl: `debian-12`, `alpine-3.19.1`, or the id alone.
fn distro_qualifier(distro: Option<&Distro>) -> String {
    match distro {
        Some(Distro {
            id,
            version_id: Some(version),
            ..
        }) => format!("{id}-{version}"),
        Some(distro) => distro.id.clone(),
        None => String::new(),
    }
}

/// The namespace of a distribution's packages: its id, else `fallback`.
fn namespace(distro: Option<&Distro>, fallback: &'static str) -> String {
    distro.map_or_else(|| fallback.to_owned(), |distro| distro.id.clone())
}

/// Whether dpkg still has the package's files on disk: every state but `not-installed`
/// and `config-files` (a status without a state, as distroless writes, counts as installed).
fn dpkg_has_files(paragraph: &Paragraph<'_>) -> bool {
    match paragraph
        .get("Status")
        .and_then(|status| status.split_whitespace().nth(2))
    {
        Some("not-installed" | "config-files") => false,
        Some(_) | None => true,
    }
}

/// What a distribution's database says of a package.
struct DistroFields<'a> {
    name: &'a str,
    version: &'a str,
    arch: Option<&'a str>,
    /// The source package (dpkg) or origin (apk).
    source: Option<&'a str>,
    supplier: Option<&'a str>,
}

/// A dpkg or apk package: `pkg:deb|apk/<distro id>/NAME@VERSION?arch=&distro=&upstream=`,
/// `upstream` only when the source differs from the name.
fn distro_package(
    ecosystem: Ecosystem,
    distro: Option<&Distro>,
    fields: DistroFields<'_>,
    path: &str,
) -> Package {
    let (kind, fallback) = match ecosystem {
        Ecosystem::Apk => ("apk", "alpine"),
        _ => ("deb", "debian"),
    };
    let source = fields.source.filter(|source| *source != fields.name);
    let purl = Purl {
        kind,
        namespace: Some(&namespace(distro, fallback)),
        name: fields.name,
        version: Some(fields.version),
        qualifiers: vec![
            ("arch", fields.arch.unwrap_or_default().to_owned()),
            ("distro", distro_qualifier(distro)),
            ("upstream", source.unwrap_or_default().to_owned()),
        ],
    }
    .render();
    Package {
        ecosystem,
        name: fields.name.to_owned(),
        version: fields.version.to_owned(),
        arch: fields.arch.map(str::to_owned),
        purl,
        supplier: fields.supplier.map(str::to_owned),
        source: source.map(str::to_owned),
        evidence: vec![path.to_owned()],
    }
}

/// The packages of a dpkg status file (or one `status.d` file) at `path`.
pub fn dpkg_packages(
    text: &str,
    path: &str,
    distro: Option<&Distro>,
    warnings: &mut Vec<Warning>,
) -> Vec<Package> {
    let mut packages = Vec::new();
    for paragraph in control::paragraphs(text) {
        let (Some(name), Some(version)) = (paragraph.get("Package"), paragraph.get("Version"))
        else {
            warnings.push(Warning {
                path: path.to_owned(),
                line: Some(paragraph.line),
                message: "a package entry without Package or Version: skipped".to_owned(),
            });
            continue;
        };
        if !dpkg_has_files(&paragraph) {
            continue;
        }
        // `Source: name` or `Source: name (version)`.
        let source = paragraph
            .get("Source")
            .and_then(|source| source.split_whitespace().next());
        packages.push(distro_package(
            Ecosystem::Deb,
            distro,
            DistroFields {
                name,
                version,
                arch: paragraph.get("Architecture"),
                source,
                supplier: paragraph.get("Maintainer"),
            },
            path,
        ));
    }
    packages
}

/// The packages of apk's installed database at `path`.
pub fn apk_packages(
    text: &str,
    path: &str,
    distro: Option<&Distro>,
    warnings: &mut Vec<Warning>,
) -> Vec<Package> {
    let mut packages = Vec::new();
    // `K:value` lines; paragraphs as dpkg's (the `:` split gives the same fields).
    for paragraph in control::paragraphs(text) {
        let get = |key: &str| {
            paragraph
                .fields
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| value.as_str())
        };
        let (Some(name), Some(version)) = (get("P"), get("V")) else {
            warnings.push(Warning {
                path: path.to_owned(),
                line: Some(paragraph.line),
                message: "a package entry without P: or V: skipped".to_owned(),
            });
            continue;
        };
        packages.push(distro_package(
            Ecosystem::Apk,
            distro,
            DistroFields {
                name,
                version,
                arch: get("A"),
                source: get("o"),
                supplier: get("m"),
            },
            path,
        ));
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> Distro {
        parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        )
        .unwrap()
    }

    #[test]
    fn os_release_is_read_like_a_shell_would() {
        let distro = debian();
        assert_eq!(distro.id, "debian");
        assert_eq!(distro.version_id.as_deref(), Some("12"));
        assert_eq!(
            distro.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let alpine =
            parse_os_release("NAME='Alpine Linux'\nID=alpine\nVERSION_ID=3.19.1\nID_LIKE=\"a b\"")
                .unwrap();
        assert_eq!(alpine.id_like, ["a", "b"]);
        assert!(parse_os_release("NAME=nothing\n").is_none());
    }

    #[test]
    fn dpkg_lists_installed_packages_with_purls() {
        let status = "Package: login\nStatus: install ok installed\nArchitecture: amd64\nSource: shadow (1:4.13+dfsg1-1)\nVersion: 1:4.13+dfsg1-1+b1\nMaintainer: Shadow Team <x@y>\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: broken\nStatus: install ok installed\n";
        let mut warnings = Vec::new();
        let distro = debian();
        let packages = dpkg_packages(status, "/var/lib/dpkg/status", Some(&distro), &mut warnings);
        assert_eq!(packages.len(), 1);
        assert_eq!(
            packages[0].purl,
            "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12&upstream=shadow"
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, Some(12));
    }

    #[test]
    fn apk_lists_its_database() {
        let installed = "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\nm:Someone <a@b>\n\nC:Q1def=\nP:ssl_client\nV:3.1.4-r5\nA:x86_64\no:openssl\n";
        let distro = parse_os_release("ID=alpine\nVERSION_ID=3.19.1\n").unwrap();
        let mut warnings = Vec::new();
        let packages = apk_packages(
            installed,
            "/lib/apk/db/installed",
            Some(&distro),
            &mut warnings,
        );
        let purls: Vec<&str> = packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
                "pkg:apk/alpine/ssl_client@3.1.4-r5?arch=x86_64&distro=alpine-3.19.1&upstream=openssl"
            ]
        );
        assert!(warnings.is_empty());
    }
}

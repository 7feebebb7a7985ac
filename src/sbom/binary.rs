//! Packages embedded in executables: Go modules from a Go binary's build information (the
//! `.go.buildinfo` section, Go 1.18 and later), and Rust crates that cargo-auditable
//! embedded (the `.dep-v0` section: zlib-compressed JSON).
//!
//! Only as much of a file is read as needed: the ELF header (64 bytes), the section header
//! table, the section name table, then the two sections themselves, each read with a bound.
//! A file that is not ELF costs one 64-byte read. Go's older pointer-based format (Go 1.17
//! and before) and binaries without section headers are not read (nothing is reported for
//! them).
//!
//! Formats: Go's `debug/buildinfo` (`\xff Go buildinf:`, pointer size, flags with bit 2 set
//! for inline strings, then two varint-prefixed strings: the Go version and the module
//! information between 16-byte sentinels); cargo-auditable's
//! <https://github.com/rust-secure-code/cargo-auditable/blob/master/PARAMETERS.md>.

use std::fs::File;
use std::io::Read;

use goblin::container::{Container, Ctx};
use goblin::elf::SectionHeader;
use serde::Deserialize;

use super::root::read_at;

/// Most section headers read (each 64 bytes at most).
const MAX_SECTIONS: usize = 4096;
/// Largest section name table read.
const MAX_SECTION_NAMES: u64 = 256 * 1024;
/// Largest `.go.buildinfo` section read.
const MAX_GO_BUILDINFO: u64 = 4 * 1024 * 1024;
/// Largest `.dep-v0` section read, and the most it may decompress to.
const MAX_DEP_V0: u64 = 4 * 1024 * 1024;
const MAX_DEP_V0_JSON: u64 = 32 * 1024 * 1024;

/// What an executable embeds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// Go build information.
    pub go: Option<GoBuildInfo>,
    /// cargo-auditable's dependency list.
    pub cargo: Vec<CargoPackage>,
    /// What could not be read (a damaged section), for a warning.
    pub problems: Vec<String>,
}

/// A Go binary's build information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// The Go version (`go1.21.5`).
    pub go_version: String,
    /// The main package's import path.
    pub path: Option<String>,
    /// The main module.
    pub main: Option<GoModule>,
    /// The dependencies, replacements applied.
    pub deps: Vec<GoModule>,
}

/// A Go module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoModule {
    /// Its module path.
    pub path: String,
    /// Its version (`v1.2.3`, `(devel)`).
    pub version: String,
    /// Its `go.sum` hash (`h1:...`), when recorded.
    pub sum: Option<String>,
}

/// One crate of cargo-auditable's list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CargoPackage {
    /// The crate name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it came from (`crates.io`, `local`, `git`, `registry`).
    #[serde(default)]
    pub source: String,
    /// `runtime` (default) or `build` (a build dependency: not in the binary).
    #[serde(default)]
    pub kind: Option<String>,
    /// Whether this is the binary's own crate.
    #[serde(default)]
    pub root: bool,
}

#[derive(Deserialize)]
struct DepV0 {
    packages: Vec<CargoPackage>,
}

/// Reads what `file` embeds; `None` when it is not an ELF file (or has no sections).
pub fn read_embedded(file: &File) -> Option<Embedded> {
    let head = read_at(file, 0, 64).ok()?;
    if head.len() < 52 || !head.starts_with(b"\x7fELF") {
        return None;
    }
    let header = goblin::elf::Elf::parse_header(&head).ok()?;
    let container = header.container().ok()?;
    let ctx = Ctx::new(container, header.endianness().ok()?);
    let count = usize::from(header.e_shnum);
    if header.e_shoff == 0 || count == 0 || count > MAX_SECTIONS {
        return None;
    }
    let entry_size = match container {
        Container::Big => 64,
        Container::Little => 40,
    };
    let table = read_at(file, header.e_shoff, count * entry_size).ok()?;
    let sections = SectionHeader::parse_from(&table, 0, count, ctx).ok()?;
    let names = sections.get(usize::from(header.e_shstrndx))?;
    let names = read_section(file, names, MAX_SECTION_NAMES).ok()?;
    let name_of = |section: &SectionHeader| -> &[u8] {
        let start = section.sh_name;
        let tail = names.get(start..).unwrap_or_default();
        &tail[..tail
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(tail.len())]
    };
    let mut embedded = Embedded::default();
    for section in &sections {
        match name_of(section) {
            b".go.buildinfo" => match read_section(file, section, MAX_GO_BUILDINFO) {
                Ok(data) => embedded.go = parse_go_buildinfo(&data),
                Err(problem) => embedded.problems.push(format!(".go.buildinfo: {problem}")),
            },
            b".dep-v0" => {
                match read_section(file, section, MAX_DEP_V0).and_then(|data| parse_dep_v0(&data)) {
                    Ok(packages) => embedded.cargo = packages,
                    Err(problem) => embedded.problems.push(format!(".dep-v0: {problem}")),
                }
            }
            _ => {}
        }
    }
    Some(embedded)
}

fn read_section(file: &File, section: &SectionHeader, limit: u64) -> Result<Vec<u8>, String> {
    // SHT_NOBITS (.bss) has no bytes in the file.
    if section.sh_type == goblin::elf::section_header::SHT_NOBITS {
        return Ok(Vec::new());
    }
    if section.sh_size > limit {
        return Err(format!(
            "the section is {} bytes, more than the {limit} read",
            section.sh_size
        ));
    }
    let size = usize::try_from(section.sh_size).map_err(|error| error.to_string())?;
    let data = read_at(file, section.sh_offset, size).map_err(|error| error.to_string())?;
    if data.len() != size {
        return Err("the section ends past the end of the file".to_owned());
    }
    Ok(data)
}

/// Parses a `.go.buildinfo` section (inline-string format of Go 1.18 and later).
pub fn parse_go_buildinfo(data: &[u8]) -> Option<GoBuildInfo> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if data.len() < 32 || !data.starts_with(MAGIC) {
        return None;
    }
    let flags = data[15];
    if flags & 0x2 == 0 {
        // Pointer-based format (Go 1.17 and before): the strings live elsewhere.
        return None;
    }
    let mut rest = &data[32..];
    let version = read_varint_string(&mut rest)?;
    let mut modinfo = read_varint_string(&mut rest)?;
    // The module information sits between two 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let mut info = GoBuildInfo {
        go_version: String::from_utf8_lossy(version).into_owned(),
        path: None,
        main: None,
        deps: Vec::new(),
    };
    let text = String::from_utf8_lossy(modinfo);
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let module = || {
            Some(GoModule {
                path: (*fields.get(1)?).to_owned(),
                version: fields.get(2).copied().unwrap_or_default().to_owned(),
                sum: fields
                    .get(3)
                    .filter(|sum| !sum.is_empty())
                    .map(|sum| (*sum).to_owned()),
            })
        };
        match fields.first().copied() {
            Some("path") => info.path = fields.get(1).map(|path| (*path).to_owned()),
            Some("mod") => info.main = module(),
            Some("dep") => info.deps.extend(module()),
            // A replacement of the module on the line before.
            Some("=>") => {
                if let (Some(last), Some(replacement)) = (info.deps.last_mut(), module()) {
                    *last = replacement;
                }
            }
            _ => {}
        }
    }
    Some(info)
}

fn read_varint_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut length: u64 = 0;
    let mut shift = 0;
    loop {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        length |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let length = usize::try_from(length).ok()?;
    if length > data.len() {
        return None;
    }
    let (value, rest) = data.split_at(length);
    *data = rest;
    Some(value)
}

/// Decompresses and parses a `.dep-v0` section.
///
/// # Errors
/// Not zlib, too large once decompressed, or not the expected JSON.
pub fn parse_dep_v0(data: &[u8]) -> Result<Vec<CargoPackage>, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_DEP_V0_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|error| format!("not zlib data: {error}"))?;
    if json.len() as u64 > MAX_DEP_V0_JSON {
        return Err(format!("decompresses to more than {MAX_DEP_V0_JSON} bytes"));
    }
    let parsed: DepV0 =
        serde_json::from_slice(&json).map_err(|error| format!("not the expected JSON: {error}"))?;
    Ok(parsed.packages)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn varint(out: &mut Vec<u8>, mut value: usize) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn go_buildinfo_lists_the_main_module_and_dependencies_with_replacements() {
        let modinfo = "path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\ndep\tgolang.org/x/text\tv0.3.0\th1:abc=\ndep\texample.com/old\tv1.0.0\th1:x=\n=>\texample.com/new\tv1.1.0\th1:y=\nbuild\t-compiler=gc\n";
        let mut wrapped = vec![b'0'; 16];
        wrapped.extend_from_slice(modinfo.as_bytes());
        wrapped
            .extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        let mut data = b"\xff Go buildinf:".to_vec();
        data.extend_from_slice(&[8, 2]);
        data.resize(32, 0);
        varint(&mut data, 8);
        data.extend_from_slice(b"go1.21.5");
        varint(&mut data, wrapped.len());
        data.extend_from_slice(&wrapped);
        let info = parse_go_buildinfo(&data).unwrap();
        assert_eq!(info.go_version, "go1.21.5");
        assert_eq!(info.path.as_deref(), Some("example.com/hello"));
        assert_eq!(info.main.unwrap().version, "(devel)");
        let deps: Vec<(&str, &str)> = info
            .deps
            .iter()
            .map(|dep| (dep.path.as_str(), dep.version.as_str()))
            .collect();
        assert_eq!(
            deps,
            [
                ("golang.org/x/text", "v0.3.0"),
                ("example.com/new", "v1.1.0")
            ]
        );
        // The pointer format and garbage give nothing.
        let mut old = data.clone();
        old[15] = 0;
        assert_eq!(parse_go_buildinfo(&old), None);
        assert_eq!(parse_go_buildinfo(&data[..40]), None);
    }

    #[test]
    fn dep_v0_is_decompressed_with_a_bound() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"itoa","version":"1.0.9","source":"crates.io","dependencies":[]}]}"#;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(json).unwrap();
        let packages = parse_dep_v0(&encoder.finish().unwrap()).unwrap();
        assert_eq!(packages.len(), 2);
        assert!(packages[0].root);
        assert_eq!(packages[1].source, "crates.io");
        // A zip bomb stops at the bound.
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(&vec![b' '; (MAX_DEP_V0_JSON + 10) as usize])
            .unwrap();
        let error = parse_dep_v0(&encoder.finish().unwrap()).unwrap_err();
        assert!(error.contains("more than"), "{error}");
        assert!(parse_dep_v0(b"not zlib").is_err());
    }
}

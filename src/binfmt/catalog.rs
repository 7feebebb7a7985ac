//! The QEMU handler table: `binfmt/*.toml`, embedded in the binary and parsed once.
//!
//! Each file holds only what the kernel matches on (offset, magic, mask), the entry and
//! interpreter names, and the machine code of the per-architecture probe. Policy (flags,
//! interpreter directory) lives in code. Adding a file means adding a line to [`FILES`]; the
//! unit test `file_list_matches_the_folder` fails otherwise.

use std::sync::OnceLock;

use serde::Deserialize;

const FILES: &[(&str, &str)] = &[
    ("aarch64.toml", include_str!("../../binfmt/aarch64.toml")),
    ("arm.toml", include_str!("../../binfmt/arm.toml")),
    ("i386.toml", include_str!("../../binfmt/i386.toml")),
    (
        "loongarch64.toml",
        include_str!("../../binfmt/loongarch64.toml"),
    ),
    ("mips64el.toml", include_str!("../../binfmt/mips64el.toml")),
    ("ppc64le.toml", include_str!("../../binfmt/ppc64le.toml")),
    ("riscv64.toml", include_str!("../../binfmt/riscv64.toml")),
    ("s390x.toml", include_str!("../../binfmt/s390x.toml")),
    ("x86_64.toml", include_str!("../../binfmt/x86_64.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: String,
    interpreter: String,
    offset: u32,
    magic: String,
    mask: String,
    probe: String,
    #[serde(default)]
    probe_elf_flags: u32,
}

/// One `binfmt/<cpu>.toml` file: a QEMU user-mode handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// QEMU's CPU name, the file stem: `aarch64`, `arm`, `ppc64le`, ...
    pub cpu: String,
    /// Entry name under `/proc/sys/fs/binfmt_misc`: `qemu-aarch64`.
    pub name: String,
    /// Interpreter basename: `qemu-aarch64` (found as `qemu-aarch64-static`, ...).
    pub interpreter: String,
    /// Where in the file the magic starts.
    pub offset: u32,
    /// Bytes the file must have (after masking).
    pub magic: Vec<u8>,
    /// Which bits of each byte are compared.
    pub mask: Vec<u8>,
    /// Machine code that calls `exit(0)`, wrapped in an ELF by `probe`.
    pub probe: Vec<u8>,
    /// `e_flags` of the probe ELF (ABI bits some loaders insist on).
    pub probe_elf_flags: u32,
}

impl Handler {
    /// Whether a file starting with `header` is handled by this entry, as the kernel
    /// decides: every byte equal under the mask (`fs/binfmt_misc.c`, `check_file`).
    pub fn matches(&self, header: &[u8]) -> bool {
        matches_magic(self.offset, &self.magic, &self.mask, header)
    }
}

/// The kernel's magic test: `((file[offset + i] ^ magic[i]) & mask[i]) == 0` for every `i`.
pub(crate) fn matches_magic(offset: u32, magic: &[u8], mask: &[u8], header: &[u8]) -> bool {
    let start = offset as usize;
    let Some(bytes) = header.get(start..start + magic.len()) else {
        return false;
    };
    bytes
        .iter()
        .zip(magic)
        .zip(mask.iter().chain(std::iter::repeat(&0xff)))
        .all(|((byte, want), mask)| (byte ^ want) & mask == 0)
}

/// Decodes `"7f 45 4c"` (spaces optional) into bytes.
fn decode_hex(field: &str, text: &str) -> Result<Vec<u8>, String> {
    let digits = text.split_whitespace().collect::<String>();
    hex::decode(&digits).map_err(|error| format!("{field}: {error}"))
}

fn parse(file: &str, text: &str) -> Result<Handler, String> {
    let raw: RawHandler = toml::from_str(text).map_err(|error| error.to_string())?;
    let handler = Handler {
        cpu: file.trim_end_matches(".toml").to_owned(),
        name: raw.name,
        interpreter: raw.interpreter,
        offset: raw.offset,
        magic: decode_hex("magic", &raw.magic)?,
        mask: decode_hex("mask", &raw.mask)?,
        probe: decode_hex("probe", &raw.probe)?,
        probe_elf_flags: raw.probe_elf_flags,
    };
    if handler.magic.len() != handler.mask.len() {
        return Err(format!(
            "magic has {} bytes, mask {}",
            handler.magic.len(),
            handler.mask.len()
        ));
    }
    if handler.name.contains('/') || handler.name.contains(':') {
        return Err(format!("name {:?} contains / or :", handler.name));
    }
    Ok(handler)
}

/// Every handler of the table.
pub fn all() -> &'static [Handler] {
    static TABLE: OnceLock<Vec<Handler>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| {
                // The files are compiled in and checked by unit tests: a failure here is a
                // build defect.
                parse(file, text).unwrap_or_else(|error| panic!("binfmt/{file}: {error}"))
            })
            .collect()
    })
}

/// The handler of QEMU CPU `cpu` (`aarch64`).
pub fn by_cpu(cpu: &str) -> Option<&'static Handler> {
    all().iter().find(|handler| handler.cpu == cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Endian, catalog as platforms};

    #[test]
    fn file_list_matches_the_folder() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("binfmt");
        let mut on_disk = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".toml"))
            .collect::<Vec<_>>();
        on_disk.sort();
        let listed = FILES
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect::<Vec<_>>();
        assert_eq!(
            listed, on_disk,
            "binfmt/catalog.rs FILES vs binfmt/ (keep FILES sorted)"
        );
    }

    #[test]
    fn every_file_parses_with_equal_magic_and_mask_lengths() {
        for (file, text) in FILES {
            let handler = parse(file, text).unwrap_or_else(|error| panic!("{file}: {error}"));
            assert_eq!(handler.magic.len(), handler.mask.len(), "{file}");
            assert!(!handler.probe.is_empty(), "{file}: probe");
            // The ELF signature itself is always compared in full. (Other bytes may carry
            // bits outside the mask, as QEMU's i386 entry does; the kernel masks the magic
            // at registration, and so does `matches_magic`.)
            assert_eq!(&handler.magic[..4], b"\x7fELF", "{file}");
            assert_eq!(&handler.mask[..4], [0xff; 4], "{file}");
        }
    }

    #[test]
    fn platforms_agree_with_the_magic_bytes() {
        for info in platforms::all() {
            let handler = by_cpu(&info.binfmt).unwrap_or_else(|| {
                panic!("{}: binfmt/{}.toml missing", info.architecture, info.binfmt)
            });
            let magic = &handler.magic;
            let class = match magic[4] {
                1 => 32,
                2 => 64,
                other => panic!("{}: class byte {other}", handler.cpu),
            };
            let endian = if magic[5] == 2 {
                Endian::Big
            } else {
                Endian::Little
            };
            let machine = match endian {
                Endian::Little => u16::from_le_bytes([magic[18], magic[19]]),
                Endian::Big => u16::from_be_bytes([magic[18], magic[19]]),
            };
            assert_eq!(info.elf.class, class, "{}: class", handler.cpu);
            assert_eq!(info.elf.endian, endian, "{}: endian", handler.cpu);
            // ppc64le masks byte 19 out; compare the bits the mask keeps.
            let mask = match endian {
                Endian::Little => u16::from_le_bytes([handler.mask[18], handler.mask[19]]),
                Endian::Big => u16::from_be_bytes([handler.mask[18], handler.mask[19]]),
            };
            assert_eq!(info.elf.machine & mask, machine, "{}: machine", handler.cpu);
        }
    }

    #[test]
    fn magic_test_follows_the_kernel() {
        let handler = by_cpu("aarch64").unwrap();
        let mut header = handler.magic.clone();
        assert!(handler.matches(&header));
        header[16] = 3; // ET_DYN: e_type's low bit is masked out
        assert!(handler.matches(&header));
        header[18] = 0x3e; // x86_64
        assert!(!handler.matches(&header));
        assert!(!handler.matches(&header[..10]));
    }
}

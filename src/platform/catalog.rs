//! The platform table: `platforms/*.toml`, embedded in the binary and parsed once.
//!
//! Adding a platform means adding a file to `platforms/` and a line to [`FILES`]; the unit
//! test `file_list_matches_the_folder` fails when the two disagree.

use std::sync::OnceLock;

use serde::Deserialize;

/// Every file of `platforms/`, in preference order: where several platforms share an ELF
/// machine (arm/v7 and arm/v6), the first one listed is what [`super::elf_platform`] answers.
const FILES: &[(&str, &str)] = &[
    (
        "linux-amd64.toml",
        include_str!("../../platforms/linux-amd64.toml"),
    ),
    (
        "linux-arm64.toml",
        include_str!("../../platforms/linux-arm64.toml"),
    ),
    (
        "linux-arm-v7.toml",
        include_str!("../../platforms/linux-arm-v7.toml"),
    ),
    (
        "linux-arm-v6.toml",
        include_str!("../../platforms/linux-arm-v6.toml"),
    ),
    (
        "linux-386.toml",
        include_str!("../../platforms/linux-386.toml"),
    ),
    (
        "linux-ppc64le.toml",
        include_str!("../../platforms/linux-ppc64le.toml"),
    ),
    (
        "linux-s390x.toml",
        include_str!("../../platforms/linux-s390x.toml"),
    ),
    (
        "linux-riscv64.toml",
        include_str!("../../platforms/linux-riscv64.toml"),
    ),
    (
        "linux-mips64le.toml",
        include_str!("../../platforms/linux-mips64le.toml"),
    ),
    (
        "linux-loong64.toml",
        include_str!("../../platforms/linux-loong64.toml"),
    ),
];

/// Byte order of an ELF file (`e_ident[EI_DATA]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

/// What an ELF header says about the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElfMachine {
    /// `32` or `64` (`e_ident[EI_CLASS]`).
    pub class: u8,
    /// Byte order (`e_ident[EI_DATA]`).
    pub endian: Endian,
    /// `e_machine`.
    pub machine: u16,
}

/// One `platforms/*.toml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformInfo {
    /// OCI `os`.
    pub os: String,
    /// OCI `architecture`, canonical spelling.
    pub architecture: String,
    /// OCI `variant`, canonical spelling; empty when the platform has none.
    pub variant: String,
    /// Other spellings of `architecture[/variant]` that mean this platform.
    pub aliases: Vec<String>,
    /// What `uname -m` prints when this platform runs (QEMU and the kernel agree).
    pub uname: String,
    /// The ELF header fields of this platform's executables.
    pub elf: ElfMachine,
    /// The `binfmt/<name>.toml` file that emulates this platform.
    pub binfmt: String,
    /// Platforms a host of this platform also runs natively, best first (`linux/386` for
    /// `linux/amd64`): also what serves a pull for this platform when the index lacks it
    /// ([`super::rank`]). Complete, not followed further: `linux/arm64` lists every arm
    /// variant itself. Whether the CPU really runs them is for the probe to tell.
    pub compatible: Vec<String>,
}

impl PlatformInfo {
    /// The platform this file describes.
    pub fn platform(&self) -> super::Platform {
        super::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: (!self.variant.is_empty()).then(|| self.variant.clone()),
            details: None,
        }
    }
}

/// Every platform of the table, in the order of [`FILES`].
pub fn all() -> &'static [PlatformInfo] {
    static TABLE: OnceLock<Vec<PlatformInfo>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, text)| {
                // The files are part of the binary and checked by unit tests: a parse
                // failure here is a build defect, not a runtime condition.
                toml::from_str(text).unwrap_or_else(|error| panic!("platforms/{name}: {error}"))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_list_matches_the_folder() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("platforms");
        let mut on_disk = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".toml"))
            .collect::<Vec<_>>();
        on_disk.sort();
        let mut listed = FILES
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect::<Vec<_>>();
        listed.sort();
        assert_eq!(listed, on_disk, "platform/catalog.rs FILES vs platforms/");
    }

    #[test]
    fn every_file_parses_and_is_named_after_its_platform() {
        for ((name, _), info) in FILES.iter().zip(all()) {
            let expected = format!("{}.toml", info.platform().to_string().replace('/', "-"));
            assert_eq!(*name, expected);
            assert!(!info.binfmt.contains('/'), "{name}: binfmt names a file");
            assert!(matches!(info.elf.class, 32 | 64), "{name}: class");
        }
    }

    #[test]
    fn compatible_lists_parse_and_are_closed() {
        for info in all() {
            let own = info.platform();
            let listed = info
                .compatible
                .iter()
                .map(|name| {
                    super::super::Platform::parse(name)
                        .unwrap_or_else(|error| panic!("{own}: compatible {name}: {error}"))
                })
                .collect::<Vec<_>>();
            for (position, platform) in listed.iter().enumerate() {
                assert_ne!(platform, &own, "{own} lists itself");
                assert_eq!(
                    platform.to_string(),
                    info.compatible[position],
                    "{own}: spelling"
                );
                // What a listed platform runs, this one runs too, later in its list.
                if let Some(listed_info) = platform.info() {
                    for further in &listed_info.compatible {
                        assert!(
                            info.compatible[position + 1..].contains(further),
                            "{own} lists {platform} but not {further} after it"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn aliases_are_unique_across_the_table() {
        let mut seen = std::collections::HashMap::new();
        for info in all() {
            let canonical = info.platform().to_string();
            let own = canonical.trim_start_matches("linux/").to_owned();
            for spelling in std::iter::once(&own).chain(&info.aliases) {
                if let Some(other) = seen.insert(spelling.clone(), canonical.clone()) {
                    panic!("{spelling} means both {other} and {canonical}");
                }
            }
        }
    }
}

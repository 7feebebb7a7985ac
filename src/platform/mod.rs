//! Platforms, spelled the OCI way (`linux/arm64`, `linux/arm/v7`), normalised as containerd
//! does (`aarch64` → `arm64`, `arm64/v8` → `arm64`, `linux/arm` → `linux/arm/v7`,
//! `i386` → `386`, ...), host detection, and the platform of an ELF file.
//!
//! Every spelling comes from the data in `platforms/*.toml` ([`catalog`]): this module holds
//! no table of its own. It does no registration and runs no process (that is `binfmt`).
//!
//! Reference: <https://github.com/opencontainers/image-spec/blob/main/image-index.md>
//! (`platform` object) and containerd's `platforms` package (normalisation rules).

pub mod catalog;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

pub use catalog::{ElfMachine, Endian, PlatformInfo};

/// An OCI platform: `os/architecture[/variant]`, always in canonical spelling.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Platform {
    /// OCI `os` (REQUIRED in an image index): `linux`.
    pub os: String,
    /// OCI `architecture` (REQUIRED): `amd64`, `arm64`, `arm`, `386`, ...
    pub architecture: String,
    /// OCI `variant` (OPTIONAL): `v7` for `arm`; `None` where the default is meant.
    pub variant: Option<String>,
}

/// Why a platform string or ELF file could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The string is empty or has more than three `/`-separated parts.
    #[error("\"{input}\" is not a platform (expected os/arch[/variant], e.g. linux/arm64)")]
    Malformed {
        /// What was given.
        input: String,
    },
    /// The architecture is not in `platforms/`.
    #[error("unknown platform \"{input}\" (known: {known})")]
    Unknown {
        /// What was given.
        input: String,
        /// The canonical names xbuild knows, comma separated.
        known: String,
    },
    /// The operating system is not one xbuild can build for.
    #[error("unsupported operating system \"{os}\" in \"{input}\" (only linux)")]
    UnsupportedOs {
        /// What was given.
        input: String,
        /// The operating system part.
        os: String,
    },
    /// Not an ELF file, or a truncated one.
    #[error("not an ELF file: {reason}")]
    NotElf {
        /// What goblin said.
        reason: String,
    },
    /// An ELF file for a machine not in `platforms/`.
    #[error("no platform for ELF machine {machine:#x} (class {class}, {endian:?} endian)")]
    UnknownElf {
        /// `e_machine`.
        machine: u16,
        /// 32 or 64.
        class: u8,
        /// Byte order.
        endian: Endian,
    },
}

impl Platform {
    /// Parses and normalises a platform string: `linux/arm64`, `arm64`, `aarch64`,
    /// `linux/arm64/v8`, `linux/arm`, `armhf`, `linux` (the host's architecture), ...
    ///
    /// # Errors
    /// [`PlatformError`] when the string is malformed, the OS is not linux or the
    /// architecture is unknown.
    pub fn parse(input: &str) -> Result<Self, PlatformError> {
        let lowered = input.trim().to_ascii_lowercase();
        let parts = lowered.split('/').collect::<Vec<_>>();
        if parts.iter().any(|part| part.is_empty()) || parts.len() > 3 {
            return Err(PlatformError::Malformed {
                input: input.to_owned(),
            });
        }
        let (os, rest) = match parts.as_slice() {
            [only] if is_os(only) => return Self::with_os(input, only, &host()),
            [_] => ("linux", &parts[..]),
            [first, ..] if is_os(first) => (*first, &parts[1..]),
            [first, _, _] => {
                return Err(PlatformError::UnsupportedOs {
                    input: input.to_owned(),
                    os: (*first).to_owned(),
                });
            }
            _ => ("linux", &parts[..]),
        };
        let spelled = rest.join("/");
        if let Some(info) = lookup(&spelled) {
            return Self::with_os(input, os, &info.platform());
        }
        // A variant the table has no file for (`arm/v5`, `amd64/v3`): keep it on the
        // normalised architecture, as containerd does.
        if let [architecture, variant] = rest {
            if let Some(info) = lookup(architecture) {
                let mut platform = info.platform();
                platform.variant = Some((*variant).to_owned());
                return Self::with_os(input, os, &platform);
            }
        }
        Err(PlatformError::Unknown {
            input: input.to_owned(),
            known: catalog::all()
                .iter()
                .map(|info| info.platform().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn with_os(input: &str, os: &str, platform: &Self) -> Result<Self, PlatformError> {
        if os != "linux" {
            return Err(PlatformError::UnsupportedOs {
                input: input.to_owned(),
                os: os.to_owned(),
            });
        }
        Ok(platform.clone())
    }

    /// The `platforms/` entry of this exact platform, if there is one.
    pub fn info(&self) -> Option<&'static PlatformInfo> {
        catalog::all().iter().find(|info| info.platform() == *self)
    }

    /// The `platforms/` entry that describes how to run this platform: the exact one, else
    /// the entry of the same architecture listed first (`linux/arm/v5` → `linux/arm/v7`'s
    /// ELF machine and emulator).
    pub fn run_info(&self) -> Option<&'static PlatformInfo> {
        self.info().or_else(|| {
            catalog::all()
                .iter()
                .find(|info| info.os == self.os && info.architecture == self.architecture)
        })
    }

    /// This platform, then the platforms a host of it also runs natively, best first
    /// (`linux/amd64` → `[linux/amd64, linux/386]`). Picking an image from an index walks this
    /// list ([`best_match`]).
    pub fn with_fallbacks(&self) -> Vec<Self> {
        let mut list = vec![self.clone()];
        if let Some(info) = self.info() {
            list.extend(
                info.compatible
                    .iter()
                    .filter_map(|name| Self::parse(name).ok()),
            );
        }
        list
    }

    /// Whether a host of this platform is expected to run `other` without emulation. The
    /// CPU may still lack the instruction set (an arm64 CPU without AArch32): `binfmt`'s
    /// probe gives the real answer.
    pub fn is_native_for(&self, other: &Self) -> bool {
        self.with_fallbacks().contains(other)
    }

    /// The target is a 32-bit platform on a 64-bit host of the same family: a process
    /// must run with personality `PER_LINUX32` so `uname -m` says `i686`/`armv7l`, as
    /// runc does for 386 on amd64 and arm on arm64.
    pub fn needs_linux32_on(&self, host: &Self) -> bool {
        match (self.run_info(), host.run_info()) {
            (Some(target), Some(host_info)) => {
                target.elf.class == 32 && host_info.elf.class == 64 && host.is_native_for(self)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl TryFrom<String> for Platform {
    type Error = PlatformError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Platform> for String {
    fn from(platform: Platform) -> Self {
        platform.to_string()
    }
}

fn is_os(word: &str) -> bool {
    matches!(
        word,
        "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd"
    )
}

/// The table entry a spelling (`arm64`, `aarch64`, `arm/v7`, `armhf`) names.
fn lookup(spelled: &str) -> Option<&'static PlatformInfo> {
    catalog::all().iter().find(|info| {
        let canonical = if info.variant.is_empty() {
            info.architecture.clone()
        } else {
            format!("{}/{}", info.architecture, info.variant)
        };
        canonical == spelled || info.aliases.iter().any(|alias| alias == spelled)
    })
}

/// The platform of the machine xbuild runs on (from `uname -m`, normalised through the
/// table; `armv7l` → `linux/arm/v7`).
pub fn host() -> Platform {
    static HOST: OnceLock<Platform> = OnceLock::new();
    HOST.get_or_init(|| {
        let machine = nix::sys::utsname::uname()
            .ok()
            .map(|name| name.machine().to_string_lossy().into_owned());
        machine
            .as_deref()
            .and_then(|machine| {
                catalog::all()
                    .iter()
                    .find(|info| info.uname == machine)
                    .map(PlatformInfo::platform)
                    .or_else(|| lookup(machine).map(PlatformInfo::platform))
            })
            .or_else(|| lookup(std::env::consts::ARCH).map(PlatformInfo::platform))
            .unwrap_or_else(|| Platform {
                os: "linux".to_owned(),
                architecture: std::env::consts::ARCH.to_owned(),
                variant: None,
            })
    })
    .clone()
}

/// The platform an ELF executable is built for, from its header (class, byte order,
/// `e_machine`). ARM 32-bit files say nothing reliable about v6 vs v7 in the header: the
/// first matching entry of the table (`linux/arm/v7`) is answered.
///
/// # Errors
/// [`PlatformError::NotElf`] or [`PlatformError::UnknownElf`].
pub fn elf_platform(bytes: &[u8]) -> Result<Platform, PlatformError> {
    let header = goblin::elf::Elf::parse_header(bytes).map_err(|error| PlatformError::NotElf {
        reason: error.to_string(),
    })?;
    let class = match header.e_ident[goblin::elf::header::EI_CLASS] {
        goblin::elf::header::ELFCLASS32 => 32,
        _ => 64,
    };
    let endian = match header.e_ident[goblin::elf::header::EI_DATA] {
        goblin::elf::header::ELFDATA2MSB => Endian::Big,
        _ => Endian::Little,
    };
    let machine = ElfMachine {
        class,
        endian,
        machine: header.e_machine,
    };
    catalog::all()
        .iter()
        .find(|info| info.elf == machine)
        .map(PlatformInfo::platform)
        .ok_or(PlatformError::UnknownElf {
            machine: header.e_machine,
            class,
            endian,
        })
}

/// Picks, among `candidates` (the platforms of an image index), the best one for `target`:
/// the exact platform first, then its fallbacks in order. `None` when none fits.
pub fn best_match(target: &Platform, candidates: &[Platform]) -> Option<usize> {
    target
        .with_fallbacks()
        .iter()
        .find_map(|wanted| candidates.iter().position(|candidate| candidate == wanted))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[rstest]
    #[case("linux/amd64", "linux/amd64")]
    #[case("amd64", "linux/amd64")]
    #[case("x86_64", "linux/amd64")]
    #[case("linux/x86_64", "linux/amd64")]
    #[case("linux/amd64/v1", "linux/amd64")]
    #[case("linux/amd64/v3", "linux/amd64/v3")]
    #[case("aarch64", "linux/arm64")]
    #[case("linux/arm64/v8", "linux/arm64")]
    #[case("arm64/v8", "linux/arm64")]
    #[case("linux/arm", "linux/arm/v7")]
    #[case("armhf", "linux/arm/v7")]
    #[case("linux/arm/v7", "linux/arm/v7")]
    #[case("linux/arm/v6", "linux/arm/v6")]
    #[case("armel", "linux/arm/v6")]
    #[case("linux/arm/v5", "linux/arm/v5")]
    #[case("i386", "linux/386")]
    #[case("i686", "linux/386")]
    #[case("linux/386", "linux/386")]
    #[case("ppc64el", "linux/ppc64le")]
    #[case("LINUX/S390X", "linux/s390x")]
    #[case("riscv64", "linux/riscv64")]
    #[case("mips64el", "linux/mips64le")]
    #[case("loongarch64", "linux/loong64")]
    #[case("linux/loong64", "linux/loong64")]
    fn parses_and_normalises_the_containerd_way(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(platform(input).to_string(), expected);
    }

    #[test]
    fn os_alone_means_the_host_architecture() {
        assert_eq!(platform("linux"), host());
    }

    #[rstest]
    #[case("")]
    #[case("linux//arm64")]
    #[case("linux/arm/v7/x")]
    fn malformed_strings_are_refused(#[case] input: &str) {
        assert!(matches!(
            Platform::parse(input),
            Err(PlatformError::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_architecture_lists_the_known_ones() {
        let error = Platform::parse("linux/amd46").unwrap_err();
        assert!(matches!(error, PlatformError::Unknown { .. }));
        assert!(error.to_string().contains("linux/arm/v7"), "{error}");
    }

    #[test]
    fn other_operating_systems_are_refused() {
        assert!(matches!(
            Platform::parse("windows/amd64"),
            Err(PlatformError::UnsupportedOs { .. })
        ));
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let json = serde_json::to_string(&platform("aarch64")).unwrap();
        assert_eq!(json, "\"linux/arm64\"");
        let back: Platform = serde_json::from_str("\"armhf\"").unwrap();
        assert_eq!(back, platform("linux/arm/v7"));
    }

    #[test]
    fn fallbacks_follow_the_table() {
        let names = |p: &str| {
            platform(p)
                .with_fallbacks()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("linux/amd64"), ["linux/amd64", "linux/386"]);
        assert_eq!(
            names("linux/arm64"),
            ["linux/arm64", "linux/arm/v7", "linux/arm/v6"]
        );
        assert_eq!(names("linux/s390x"), ["linux/s390x"]);
    }

    #[test]
    fn best_match_prefers_exact_then_fallbacks() {
        let index = [
            platform("linux/386"),
            platform("linux/arm/v6"),
            platform("linux/arm/v7"),
        ];
        assert_eq!(best_match(&platform("linux/arm/v7"), &index), Some(2));
        assert_eq!(best_match(&platform("linux/amd64"), &index), Some(0));
        assert_eq!(best_match(&platform("linux/arm64"), &index), Some(2));
        assert_eq!(best_match(&platform("linux/s390x"), &index), None);
    }

    #[test]
    fn linux32_personality_only_for_32_bit_on_its_64_bit_family() {
        assert!(platform("linux/386").needs_linux32_on(&platform("linux/amd64")));
        assert!(platform("linux/arm/v7").needs_linux32_on(&platform("linux/arm64")));
        assert!(!platform("linux/arm/v7").needs_linux32_on(&platform("linux/amd64")));
        assert!(!platform("linux/arm64").needs_linux32_on(&platform("linux/amd64")));
    }

    #[test]
    fn host_is_in_the_table() {
        assert!(host().info().is_some(), "{}", host());
    }

    #[test]
    fn elf_platform_of_our_own_binary_is_the_host() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(elf_platform(&bytes).unwrap(), host());
    }

    #[test]
    fn elf_platform_refuses_non_elf() {
        assert!(matches!(
            elf_platform(b"#!/bin/sh\n"),
            Err(PlatformError::NotElf { .. })
        ));
    }
}

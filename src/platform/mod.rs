//! The one platform type of the program: an OCI platform (`linux/arm64`, `linux/arm/v7`),
//! always in canonical spelling, with containerd's normalisation (`aarch64` → `arm64`,
//! `arm64/v8` → `arm64`, `linux/arm` → `linux/arm/v7`, `i386` → `386`, a bare variant
//! number `arm/6` → `arm/v6`, ...), host detection, the platform of an ELF file, the
//! compatibility ranking ([`rank`]) and the conversion to and from
//! `oci_spec::image::Platform` ([`oci`]).
//!
//! Two doors in, on purpose:
//! - [`Platform::parse`] is for what a user types (`--platform`, `FROM --platform=`, a node's
//!   platforms): linux and the architectures of `platforms/` only, anything else refused
//!   with an error that lists what is known;
//! - [`Platform::from`] an `oci_spec::image::Platform` is for what a registry, a layout or an
//!   image config says: it never fails, and keeps what it does not know (`windows/amd64`
//!   with its `os.version`, `unknown/unknown`, `linux/sparc64`), so an index entry of another
//!   OS is carried and skipped, never an error.
//!
//! Every spelling comes from the data in `platforms/*.toml` ([`catalog`]): this module holds
//! no alias table of its own. It does no registration and runs no process (that is
//! `binfmt`), and knows nothing of registries, stores or Dockerfiles.
//!
//! Reference: <https://github.com/opencontainers/image-spec/blob/main/image-index.md>
//! (`platform` object) and containerd's `platforms` package (normalisation and matching).

pub mod catalog;
pub mod oci;
pub mod rank;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

pub use catalog::{ElfMachine, Endian, PlatformInfo};
pub use rank::best_match;

/// An OCI platform: `os/architecture[/variant]`, always in canonical spelling, plus the OCI
/// fields a registry or an image config may add ([`PlatformDetails`]), carried unchanged.
///
/// Equality, hashing and order cover every field; [`Platform::same_target`] compares only
/// what names the platform (OS, architecture, variant). The serde form is the canonical
/// string (`"linux/arm64"`), read back through [`Platform::parse`]: it is meant for the
/// platforms xbuild builds for, which have no `os.version`.
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
    /// `os.version`, `os.features`, `features`: `None` when there are none (always, for a
    /// platform a user typed). Boxed: they are rare, and a platform travels in many errors.
    pub details: Option<Box<PlatformDetails>>,
}

/// The OCI platform fields that do not name the platform, as a registry or an image config
/// gave them (Windows images set `os.version`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlatformDetails {
    /// OCI `os.version` (OPTIONAL): `10.0.20348.2227`.
    pub os_version: Option<String>,
    /// OCI `os.features` (OPTIONAL): `win32k`.
    pub os_features: Option<Vec<String>>,
    /// OCI `features` (RESERVED by the spec).
    pub features: Option<Vec<String>>,
}

impl PlatformDetails {
    /// `None` when every field is absent, else the boxed details.
    pub fn boxed(self) -> Option<Box<Self>> {
        (self != Self::default()).then(|| Box::new(self))
    }
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
    /// A platform from its three parts, normalised through `platforms/` as an image config
    /// or index entry is ([`Platform::from`] an `oci_spec::image::Platform`): never fails, and
    /// keeps an OS or architecture xbuild does not know.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let (os, architecture, variant) = normalise(os, architecture, variant.unwrap_or(""));
        Self {
            os,
            architecture,
            variant,
            details: None,
        }
    }

    /// Parses and normalises a platform a user typed: `linux/arm64`, `arm64`, `aarch64`,
    /// `linux/arm64/v8`, `linux/arm`, `armhf`, `arm/6`, `linux` (the host's architecture),
    /// ... A variant `platforms/` has no file for is kept on its architecture (`arm/v5`,
    /// `amd64/v3`), as containerd does.
    ///
    /// # Errors
    /// [`PlatformError`] when the string is malformed, the OS is not linux or the
    /// architecture is not in `platforms/`.
    pub fn parse(input: &str) -> Result<Self, PlatformError> {
        let lowered = input.trim().to_ascii_lowercase();
        let parts = lowered.split('/').collect::<Vec<_>>();
        if parts.iter().any(|part| part.is_empty()) || parts.len() > 3 {
            return Err(PlatformError::Malformed {
                input: input.to_owned(),
            });
        }
        let unsupported = |os: &str| PlatformError::UnsupportedOs {
            input: input.to_owned(),
            os: os.to_owned(),
        };
        let (os, architecture, variant) = match parts.as_slice() {
            [only] if is_os(only) => {
                return if *only == host().os {
                    Ok(host())
                } else {
                    Err(unsupported(only))
                };
            }
            [architecture] => ("linux", *architecture, ""),
            [first, second] if is_os(first) => (*first, *second, ""),
            [architecture, variant] => ("linux", *architecture, *variant),
            [os, architecture, variant] if is_os(os) => (*os, *architecture, *variant),
            [first, _, _] => return Err(unsupported(first)),
            _ => {
                return Err(PlatformError::Malformed {
                    input: input.to_owned(),
                });
            }
        };
        let platform = Self::new(os, architecture, Some(variant));
        platform.check_known_as(input)?;
        Ok(platform)
    }

    /// Checks that xbuild builds for this platform: what [`Platform::parse`] accepts (linux,
    /// an architecture of `platforms/`, any variant). For a platform read from an image
    /// that is about to run.
    ///
    /// # Errors
    /// [`PlatformError::UnsupportedOs`] or [`PlatformError::Unknown`].
    pub fn check_known(&self) -> Result<(), PlatformError> {
        self.check_known_as(&self.to_string())
    }

    fn check_known_as(&self, input: &str) -> Result<(), PlatformError> {
        if !catalog::all().iter().any(|info| info.os == self.os) {
            return Err(PlatformError::UnsupportedOs {
                input: input.to_owned(),
                os: self.os.clone(),
            });
        }
        if !catalog::all()
            .iter()
            .any(|info| info.architecture == self.architecture)
        {
            return Err(PlatformError::Unknown {
                input: input.to_owned(),
                known: catalog::all()
                    .iter()
                    .map(|info| info.platform().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(())
    }

    /// Whether `other` names the same platform: OS, architecture and variant equal (the
    /// [`PlatformDetails`] are not compared).
    pub fn same_target(&self, other: &Self) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.variant == other.variant
    }

    /// The `platforms/` entry of this exact platform, if there is one.
    pub fn info(&self) -> Option<&'static PlatformInfo> {
        catalog::all()
            .iter()
            .find(|info| info.platform().same_target(self))
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
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]` (containerd's `Format`): what a user sees and types.
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

/// Words taken as an operating system in the first part of a platform string (Go's `GOOS`
/// values, as containerd's `isKnownOS`, and `macos`): only to tell `windows/amd64` (refused
/// as an OS) from `arm64/v8` (an architecture and variant). Which OS xbuild builds for is
/// the data's (`os` of `platforms/*.toml`).
fn is_os(word: &str) -> bool {
    matches!(
        word,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "macos"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

/// Normalises an OS, architecture and variant (containerd's `Normalize`, spellings from
/// `platforms/`): lower case; `macos` → `darwin`; on an architecture of the table, a variant
/// that is a bare number gets its `v` (`arm/7` → `arm/v7`); `architecture/variant` or
/// `architecture` alone looked up among
/// the canonical names and aliases of the table, a variant the table has no file for kept on
/// the normalised architecture (`x86_64/v3` → `amd64/v3`). What the table does not know is
/// kept as given (lower case).
fn normalise(os: &str, architecture: &str, variant: &str) -> (String, String, Option<String>) {
    let os = match os.trim().to_ascii_lowercase() {
        os if os == "macos" => "darwin".to_owned(),
        os => os,
    };
    let architecture = architecture.trim().to_ascii_lowercase();
    let mut variant = variant.trim().to_ascii_lowercase();
    let family = lookup(&architecture);
    if family.is_some() && !variant.is_empty() && variant.bytes().all(|byte| byte.is_ascii_digit())
    {
        variant = format!("v{variant}");
    }
    let spelled = if variant.is_empty() {
        architecture.clone()
    } else {
        format!("{architecture}/{variant}")
    };
    if let Some(info) = lookup(&spelled) {
        let platform = info.platform();
        return (os, platform.architecture, platform.variant);
    }
    if let (Some(info), false) = (family, variant.is_empty()) {
        return (os, info.architecture.clone(), Some(variant));
    }
    let variant = (!variant.is_empty()).then_some(variant);
    (os, architecture, variant)
}

/// The table entry a spelling (`arm64`, `aarch64`, `arm/v7`, `armhf`, `amd64/v1`) names.
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

/// The platform of the machine xbuild runs on, detected once (from `uname -m`, normalised
/// through the table; `armv7l` → `linux/arm/v7`; the compiled-in architecture when `uname`
/// says nothing the table knows).
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
                    .or_else(|| lookup(machine))
            })
            .or_else(|| lookup(std::env::consts::ARCH))
            .map_or_else(
                || Platform::new("linux", std::env::consts::ARCH, None),
                PlatformInfo::platform,
            )
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
    // Where the three old parsers disagreed (see the commit that joined them).
    #[case("i486", "linux/386")]
    #[case("x86", "linux/386")]
    #[case("linux/arm/6", "linux/arm/v6")]
    #[case("linux/arm/7", "linux/arm/v7")]
    #[case("linux/arm64/8", "linux/arm64")]
    #[case("linux/aarch64/v8", "linux/arm64")]
    #[case("Linux/I386", "linux/386")]
    #[case("linux/armhf", "linux/arm/v7")]
    #[case("linux/aarch64", "linux/arm64")]
    #[case("arm64", "linux/arm64")]
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
    #[case("linux//arm")]
    #[case("linux/arm/v7/x")]
    #[case("linux/")]
    #[case("a/b/c/d")]
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

    #[rstest]
    #[case("windows/amd64")]
    #[case("windows")]
    #[case("darwin/arm64")]
    #[case("macos/arm64")]
    #[case("freebsd/amd64/v2")]
    fn other_operating_systems_are_refused(#[case] input: &str) {
        assert!(matches!(
            Platform::parse(input),
            Err(PlatformError::UnsupportedOs { .. })
        ));
    }

    #[test]
    fn new_keeps_what_the_table_does_not_know() {
        assert_eq!(
            Platform::new("Windows", "AMD64", None).to_string(),
            "windows/amd64"
        );
        assert_eq!(
            Platform::new("linux", "sparc64", None).to_string(),
            "linux/sparc64"
        );
        assert_eq!(
            Platform::new("unknown", "unknown", None).to_string(),
            "unknown/unknown"
        );
        assert_eq!(
            Platform::new("linux", "aarch64", Some("8")).to_string(),
            "linux/arm64"
        );
        assert_eq!(Platform::new("macos", "arm64", None).os, "darwin");
        assert_eq!(Platform::new("linux", "arm64", Some("")).variant, None);
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let json = serde_json::to_string(&platform("aarch64")).unwrap();
        assert_eq!(json, "\"linux/arm64\"");
        let back: Platform = serde_json::from_str("\"armhf\"").unwrap();
        assert_eq!(back, platform("linux/arm/v7"));
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

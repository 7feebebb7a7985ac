//! A small platform matcher for choosing a manifest out of an index, with containerd's
//! normalisation and fallback rules (`platforms.Normalize`, `platforms.Only`):
//! `aarch64`/`arm64/v8` → `arm64`, `x86_64` → `amd64`, `armhf` → `arm/v7`, `linux/arm` →
//! `linux/arm/v7`; `arm/v7` also accepts `v6` then `v5`, `amd64/v3` accepts `v2` then plain
//! `amd64`.
//!
//! Private to `registry/` on purpose: `platform/` (another module) will own platform names
//! for the whole program; the lead joins the two.

use std::fmt;

use oci_spec::image::Platform;

/// An OS/architecture/variant triple in its normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformSpec {
    /// `linux`, `windows`, ...
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, ...
    pub architecture: String,
    /// `v7`, `v6`, ... or empty.
    pub variant: String,
}

/// A platform string that cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?} (expected os/arch[/variant], e.g. linux/arm64)")]
pub struct PlatformError(pub String);

impl PlatformSpec {
    /// Parses `os/arch[/variant]` (or just `arch`, taken as linux), normalised.
    ///
    /// # Errors
    /// An empty part or more than three parts.
    pub fn parse(input: &str) -> Result<Self, PlatformError> {
        let lower = input.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(PlatformError(input.to_owned()));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, ""),
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => return Err(PlatformError(input.to_owned())),
        };
        Ok(Self::normalised(os, arch, variant))
    }

    /// The normalised form of an OS, architecture and variant.
    pub fn normalised(os: &str, architecture: &str, variant: &str) -> Self {
        let os = if os == "macos" { "darwin" } else { os };
        let (architecture, variant) = match (architecture, variant) {
            ("i386" | "i686" | "x86", _) => ("386", ""),
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
            ("x86_64" | "x86-64", variant) => ("amd64", variant),
            ("aarch64" | "arm64", "8" | "v8") => ("arm64", ""),
            ("aarch64", variant) => ("arm64", variant),
            ("armhf", _) => ("arm", "v7"),
            ("armel", _) => ("arm", "v6"),
            ("arm", "") => ("arm", "v7"),
            ("arm", "5" | "6" | "7" | "8") => ("arm", variant),
            (architecture, variant) => (architecture, variant),
        };
        let variant = if architecture == "arm" && !variant.starts_with('v') {
            format!("v{variant}")
        } else {
            variant.to_owned()
        };
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        }
    }

    /// The platform of an index entry, normalised.
    pub fn from_oci(platform: &Platform) -> Self {
        Self::normalised(
            &platform.os().to_string(),
            &platform.architecture().to_string(),
            platform.variant().as_deref().unwrap_or(""),
        )
    }

    /// The platform this process runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "arm" => "arm",
            other => other,
        };
        Self::normalised(std::env::consts::OS, arch, "")
    }

    /// How well an entry of platform `candidate` serves a request for `self`: `Some(0)` for
    /// an exact match, higher for each fallback step, `None` when it cannot run. The
    /// fallbacks are containerd's (`platforms.Only`): `amd64/vN` → lower `amd64` variants →
    /// `386`; `arm/vN` → `arm/v(N-1)` ... `arm/v5`; `arm64` → `arm/v8` ... `arm/v5`.
    pub fn rank(&self, candidate: &Self) -> Option<usize> {
        if self.os != candidate.os {
            return None;
        }
        if self.architecture == candidate.architecture && self.variant == candidate.variant {
            return Some(0);
        }
        let level = |variant: &str| variant.trim_start_matches('v').parse::<usize>().ok();
        match (self.architecture.as_str(), candidate.architecture.as_str()) {
            ("arm", "arm") => {
                let wanted = level(&self.variant)?;
                let offered = level(&candidate.variant)?;
                (offered >= 5 && offered < wanted).then(|| wanted - offered)
            }
            ("amd64", "amd64") => {
                let wanted = level(&self.variant).unwrap_or(1);
                let offered = level(&candidate.variant).unwrap_or(1);
                (offered < wanted).then(|| wanted - offered)
            }
            ("amd64", "386") => Some(level(&self.variant).unwrap_or(1)),
            ("arm64", "arm") => {
                let offered = level(&candidate.variant)?;
                (5..=8).contains(&offered).then(|| 1 + 8 - offered)
            }
            _ => None,
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("linux/amd64", "linux/amd64")]
    #[case("linux/x86_64", "linux/amd64")]
    #[case("linux/aarch64", "linux/arm64")]
    #[case("linux/arm64/v8", "linux/arm64")]
    #[case("linux/arm", "linux/arm/v7")]
    #[case("linux/armhf", "linux/arm/v7")]
    #[case("linux/arm/6", "linux/arm/v6")]
    #[case("arm64", "linux/arm64")]
    #[case("Linux/I386", "linux/386")]
    fn platforms_normalise_like_containerd(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(PlatformSpec::parse(input).unwrap().to_string(), expected);
    }

    #[rstest]
    #[case("")]
    #[case("linux/")]
    #[case("a/b/c/d")]
    fn bad_platforms_are_refused(#[case] input: &str) {
        assert!(PlatformSpec::parse(input).is_err());
    }

    fn rank(wanted: &str, offered: &str) -> Option<usize> {
        PlatformSpec::parse(wanted)
            .unwrap()
            .rank(&PlatformSpec::parse(offered).unwrap())
    }

    #[test]
    fn arm_falls_back_to_older_variants_in_order() {
        assert_eq!(rank("linux/arm/v7", "linux/arm/v7"), Some(0));
        assert_eq!(rank("linux/arm/v7", "linux/arm/v6"), Some(1));
        assert_eq!(rank("linux/arm/v7", "linux/arm/v5"), Some(2));
        assert_eq!(rank("linux/arm/v6", "linux/arm/v7"), None);
        assert_eq!(rank("linux/arm64", "linux/arm64/v8"), Some(0));
        assert_eq!(rank("linux/amd64", "linux/arm64"), None);
        assert_eq!(rank("linux/amd64/v3", "linux/amd64"), Some(2));
        assert_eq!(rank("linux/amd64", "linux/amd64/v2"), None);
        assert_eq!(rank("linux/amd64", "windows/amd64"), None);
        assert_eq!(rank("linux/arm/v7", "linux/arm64"), None);
        assert_eq!(rank("linux/386", "linux/amd64"), None);
    }

    #[test]
    fn wide_platforms_fall_back_to_their_narrow_relatives_last() {
        // containerd: amd64 → 386; arm64 → arm/v8, v7, v6, v5.
        assert_eq!(rank("linux/amd64", "linux/386"), Some(1));
        assert_eq!(rank("linux/amd64/v2", "linux/amd64"), Some(1));
        assert_eq!(rank("linux/amd64/v2", "linux/386"), Some(2));
        assert_eq!(rank("linux/arm64", "linux/arm/v8"), Some(1));
        assert_eq!(rank("linux/arm64", "linux/arm/v7"), Some(2));
        assert_eq!(rank("linux/arm64", "linux/arm/v5"), Some(4));
    }
}

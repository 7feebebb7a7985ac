//! The one compatibility ranking: which platforms serve a request for another, best first.
//! Picking a manifest out of an index (a pull, a `FROM`, `xbuild run`), deciding whether the
//! host runs a platform natively (`binfmt`), and the wrong-architecture check all use it.
//!
//! The ranking of a platform is the platform itself, then:
//! - for a platform of the table, its `compatible` list from `platforms/*.toml`, in order
//!   (`linux/amd64` → `linux/386`; `linux/arm64` → `linux/arm/v8` ... `linux/arm/v5`);
//! - for a numbered variant the table has no file for (`amd64/v3`, `arm/v8`), the lower
//!   numbered variants of its architecture down to the nearest one the table names, then
//!   that one's ranking (`linux/amd64/v3` → `v2` → `linux/amd64` (`amd64/v1` is its alias)
//!   → `linux/386`). Below the table's lowest (`arm/v5`), nothing.
//!
//! This is containerd's `platforms.Only` with the table as its data. Only OS, architecture
//! and variant are compared ([`Platform::same_target`]).

use super::{Platform, lookup};

impl Platform {
    /// This platform, then the platforms that serve a request for it, best first (see the
    /// module doc). Each is OS, architecture and variant only.
    pub fn with_fallbacks(&self) -> Vec<Self> {
        let mut list = vec![self.target()];
        if let Some(info) = self.info() {
            list.extend(
                info.compatible
                    .iter()
                    .filter_map(|name| Self::parse(name).ok()),
            );
        } else {
            list.extend(self.lower_variants());
        }
        list
    }

    /// How well an image of platform `candidate` serves a request for `self`: `Some(0)` for
    /// the same platform, higher for each step down [`Platform::with_fallbacks`], `None`
    /// when it does not serve (another OS, another architecture family, a newer variant).
    pub fn rank(&self, candidate: &Self) -> Option<usize> {
        self.with_fallbacks()
            .iter()
            .position(|wanted| wanted.same_target(candidate))
    }

    /// Whether a host of this platform is expected to run `other` without emulation. The
    /// CPU may still lack the instruction set (an arm64 CPU without AArch32): `binfmt`'s
    /// probe gives the real answer.
    pub fn is_native_for(&self, other: &Self) -> bool {
        self.rank(other).is_some()
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

    /// OS, architecture and variant only.
    fn target(&self) -> Self {
        Self {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            details: None,
        }
    }

    /// For a numbered variant the table has no file for: the lower variants down to the
    /// nearest one the table names, then that one's ranking; nothing when there is none.
    fn lower_variants(&self) -> Vec<Self> {
        // A `u8` bounds the walk: no real variant number comes near it.
        let Some(level) = self
            .variant
            .as_deref()
            .and_then(|variant| variant.strip_prefix('v'))
            .and_then(|number| number.parse::<u8>().ok())
        else {
            return Vec::new();
        };
        let mut between = Vec::new();
        for lower in (1..level).rev() {
            let variant = format!("v{lower}");
            match lookup(&format!("{}/{variant}", self.architecture)) {
                Some(info) if info.os == self.os => {
                    between.extend(info.platform().with_fallbacks());
                    return between;
                }
                _ => between.push(Self {
                    variant: Some(variant),
                    ..self.target()
                }),
            }
        }
        Vec::new()
    }
}

/// Picks, among `candidates` (the platforms of an image index), the best one for `target`
/// (the lowest [`Platform::rank`], the first of equals). `None` when none serves.
pub fn best_match(target: &Platform, candidates: &[Platform]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(position, candidate)| Some((target.rank(candidate)?, position)))
        .min()
        .map(|(_, position)| position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    fn names(text: &str) -> Vec<String> {
        platform(text)
            .with_fallbacks()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// How an index entry spelled `os/arch[/variant]` (any OS) serves `wanted`.
    fn rank(wanted: &str, offered: &str) -> Option<usize> {
        let parts = offered.split('/').collect::<Vec<_>>();
        let offered = Platform::new(parts[0], parts[1], parts.get(2).copied());
        platform(wanted).rank(&offered)
    }

    #[test]
    fn fallbacks_follow_the_table() {
        assert_eq!(names("linux/amd64"), ["linux/amd64", "linux/386"]);
        // Changed when the registry's matcher joined this one: containerd's arm/v8 and
        // arm/v5 steps are now in the table's `compatible` lists.
        assert_eq!(
            names("linux/arm64"),
            [
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(names("linux/s390x"), ["linux/s390x"]);
    }

    #[test]
    fn variants_without_a_file_walk_down_to_the_table() {
        assert_eq!(
            names("linux/amd64/v3"),
            [
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386"
            ]
        );
        assert_eq!(
            names("linux/arm/v8"),
            [
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(names("linux/arm/v5"), ["linux/arm/v5"]);
        assert_eq!(names("linux/riscv64/rva23"), ["linux/riscv64/rva23"]);
        assert_eq!(names("linux/amd64/v255").len(), 256);
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

    #[test]
    fn rank_ignores_what_a_registry_adds() {
        let mut offered = Platform::new("linux", "amd64", None);
        offered.details = crate::platform::PlatformDetails {
            os_version: Some("10.0".to_owned()),
            ..Default::default()
        }
        .boxed();
        assert_eq!(platform("linux/amd64").rank(&offered), Some(0));
    }

    #[test]
    fn linux32_personality_only_for_32_bit_on_its_64_bit_family() {
        assert!(platform("linux/386").needs_linux32_on(&platform("linux/amd64")));
        assert!(platform("linux/arm/v7").needs_linux32_on(&platform("linux/arm64")));
        assert!(!platform("linux/arm/v7").needs_linux32_on(&platform("linux/amd64")));
        assert!(!platform("linux/arm64").needs_linux32_on(&platform("linux/amd64")));
    }
}

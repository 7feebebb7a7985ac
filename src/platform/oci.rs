//! The one conversion between [`Platform`] and the OCI documents: `oci_spec::image::Platform`
//! (an index entry's or a descriptor's `platform`) and the platform fields of an image
//! config (`os`, `architecture`, `variant`, `os.version`, `os.features`).
//!
//! From OCI, spellings are normalised as [`Platform::new`] does (`aarch64` → `arm64`,
//! `arm64/v8` → `arm64`) and nothing is dropped: an OS, architecture or variant the table does
//! not know is kept, and `os.version`, `os.features` and `features` are carried. To OCI,
//! every field is written back as it is, so a canonical platform makes the round trip
//! unchanged, with one exception forced by oci-spec 0.10: its descriptor `Platform` names
//! `os.version` and `os.features` `os_version` and `os_features` in JSON (it neither reads
//! nor writes the spec's keys; youki-dev/oci-spec-rs pull request 163), so those two are not
//! handed to it, rather than written under keys no other tool reads. An image config's
//! fields are right in oci-spec and are carried both ways.

use oci_spec::image::{Arch, ImageConfiguration, Os};

use super::{Platform, PlatformDetails};

impl From<&oci_spec::image::Platform> for Platform {
    fn from(oci: &oci_spec::image::Platform) -> Self {
        let mut platform = Self::new(
            &oci.os().to_string(),
            &oci.architecture().to_string(),
            oci.variant().as_deref(),
        );
        platform.details = PlatformDetails {
            os_version: oci.os_version().clone(),
            os_features: oci.os_features().clone(),
            features: oci.features().clone(),
        }
        .boxed();
        platform
    }
}

impl From<&Platform> for oci_spec::image::Platform {
    /// Every field but `os.version` and `os.features` (see the module doc).
    fn from(platform: &Platform) -> Self {
        let mut oci = Self::default();
        oci.set_os(os(&platform.os));
        oci.set_architecture(architecture(&platform.architecture));
        oci.set_variant(platform.variant.clone());
        oci.set_features(platform.details.as_ref().and_then(|d| d.features.clone()));
        oci
    }
}

impl Platform {
    /// The OCI form, for a descriptor or an index entry.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        self.into()
    }

    /// The platform an image config declares (never fails: what the table does not know is
    /// kept, as from an index entry).
    pub fn of_config(config: &ImageConfiguration) -> Self {
        let mut platform = Self::new(
            &config.os().to_string(),
            &config.architecture().to_string(),
            config.variant().as_deref(),
        );
        platform.details = PlatformDetails {
            os_version: config.os_version().clone(),
            os_features: config.os_features().clone(),
            features: None,
        }
        .boxed();
        platform
    }

    /// Writes this platform into an image config's platform fields (`features`, which a
    /// config does not have, is left out).
    pub fn write_to_config(&self, config: &mut ImageConfiguration) {
        config.set_os(os(&self.os));
        config.set_architecture(architecture(&self.architecture));
        config.set_variant(self.variant.clone());
        let details = self.details.as_deref().cloned().unwrap_or_default();
        config.set_os_version(details.os_version);
        config.set_os_features(details.os_features);
    }
}

/// `oci_spec`'s `Os` for a spelling, `Other` when its own name for it would differ (so the
/// spelling written is the one given).
fn os(spelled: &str) -> Os {
    let known = Os::from(spelled);
    if known.to_string() == spelled {
        known
    } else {
        Os::Other(spelled.to_owned())
    }
}

/// `oci_spec`'s `Arch` for a spelling, `Other` when its own name for it would differ
/// (oci-spec 0.10 reads `armbe` as `arm64be`).
fn architecture(spelled: &str) -> Arch {
    let known = Arch::from(spelled);
    if known.to_string() == spelled {
        known
    } else {
        Arch::Other(spelled.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(json: &str) -> oci_spec::image::Platform {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn canonical_platforms_make_the_round_trip_unchanged() {
        for json in [
            r#"{"architecture":"amd64","os":"linux"}"#,
            r#"{"architecture":"arm","os":"linux","variant":"v7"}"#,
            r#"{"architecture":"amd64","os":"windows"}"#,
            r#"{"architecture":"sparc64","os":"linux","features":["x"]}"#,
            r#"{"architecture":"unknown","os":"unknown"}"#,
            r#"{"architecture":"riscv64","os":"linux","variant":"rva23u64"}"#,
        ] {
            let platform = Platform::from(&oci(json));
            let back = serde_json::to_value(platform.to_oci()).unwrap();
            let given: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(back, given, "{json}");
        }
    }

    /// Pins oci-spec's JSON keys for a descriptor's `os.version`: when this fails, oci-spec
    /// reads and writes the spec's keys, and `From<&Platform>` should hand both fields over.
    #[test]
    fn oci_spec_still_misnames_os_version_in_descriptors() {
        let mut oci = oci(r#"{"architecture":"amd64","os":"windows"}"#);
        oci.set_os_version(Some("10.0.17763.1".to_owned()));
        let json = serde_json::to_value(&oci).unwrap();
        assert_eq!(json["os_version"], "10.0.17763.1");
        assert!(json.get("os.version").is_none());
        let read = self::oci(r#"{"architecture":"amd64","os":"windows","os.version":"10"}"#);
        assert_eq!(read.os_version(), &None);
    }

    #[test]
    fn unknown_values_are_kept_and_aliases_normalised() {
        let mut given = oci(r#"{"architecture":"AMD64","os":"windows","features":["f"]}"#);
        given.set_os_version(Some("10.0.17763.1".to_owned()));
        given.set_os_features(Some(vec!["win32k".to_owned()]));
        let windows = Platform::from(&given);
        assert_eq!(windows.to_string(), "windows/amd64");
        let details = windows.details.as_deref().unwrap();
        assert_eq!(details.os_version.as_deref(), Some("10.0.17763.1"));
        assert_eq!(details.os_features, Some(vec!["win32k".to_owned()]));
        assert_eq!(details.features, Some(vec!["f".to_owned()]));
        let back = windows.to_oci();
        assert_eq!(back.features(), given.features());
        assert_eq!(back.os_version(), &None, "see the module doc");
        let arm64 = Platform::from(&oci(
            r#"{"architecture":"aarch64","os":"linux","variant":"v8"}"#,
        ));
        assert_eq!(arm64, Platform::parse("linux/arm64").unwrap());
        let arm = Platform::from(&oci(r#"{"architecture":"arm","os":"linux"}"#));
        assert_eq!(arm.to_string(), "linux/arm/v7");
        let arm5 = Platform::from(&oci(r#"{"architecture":"arm","os":"linux","variant":"5"}"#));
        assert_eq!(arm5.to_string(), "linux/arm/v5");
        // oci-spec's own `From<&str>` would write "arm64be".
        let armbe = Platform::new("linux", "armbe", None);
        assert_eq!(
            serde_json::to_value(armbe.to_oci()).unwrap()["architecture"],
            "armbe"
        );
    }

    #[test]
    fn same_target_is_what_a_matcher_compares() {
        let from_index = Platform::from(&oci(
            r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#,
        ));
        assert!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .same_target(&from_index)
        );
        assert!(
            !Platform::parse("linux/arm/v6")
                .unwrap()
                .same_target(&Platform::new("linux", "arm", None))
        );
    }

    #[test]
    fn configs_carry_their_platform_both_ways() {
        let given: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.20348.1","os.features":["win32k"],"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let windows = Platform::of_config(&given);
        assert_eq!(
            windows.details.as_ref().unwrap().os_version.as_deref(),
            Some("10.0.20348.1")
        );
        let mut config = ImageConfiguration::default();
        windows.write_to_config(&mut config);
        assert_eq!(Platform::of_config(&config), windows);
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["os.version"], "10.0.20348.1");
        assert_eq!(json["os.features"][0], "win32k");
        Platform::parse("linux/arm/v6")
            .unwrap()
            .write_to_config(&mut config);
        assert_eq!(Platform::of_config(&config).to_string(), "linux/arm/v6");
        assert_eq!(config.os_version(), &None);
    }
}

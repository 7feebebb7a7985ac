//! How large an image document may be. Manifests, indexes and configs are read whole into
//! memory wherever they come from (a registry, an archive, the store), so each kind has a
//! bound; a larger one is refused before it is read, or as soon as more than the bound has
//! arrived when its size was not announced. Layers are never read whole: they stream to
//! disk, bounded by the size their descriptor declares.
//!
//! The limits, and why:
//! - **Manifests and indexes: 4 MiB.** The OCI distribution spec asks registries to accept
//!   manifests of at least 4 MiB, and containerd resolves none larger (`MaxManifestSize`,
//!   `4 * 1048 * 1048` bytes, in its `remotes/docker` resolver). A manifest of 128 layers
//!   is about 32 KiB, so 4 MiB leaves room for large annotations; more is not an image.
//! - **Configs: 20 MiB.** No spec bounds them. An image config grows with its history (one
//!   entry per step) and labels, and xbuild's own cache config (`--cache-to`) holds every
//!   cached step's config, so configs get more room than manifests: the 20 MiB containerd's
//!   archive importer allows any JSON document of an archive (`jsonLimit`).
//!
//! Must not: read anything itself. The readers (`registry::transport`, `ImageLayout::read_blob`,
//! archives) apply these bounds.

/// The largest manifest or index read (4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The largest image config read (20 MiB).
pub const MAX_CONFIG_SIZE: u64 = 20 << 20;

/// The largest document of any kind: what is read whole from the store when the kind is
/// not known (the config limit, the larger one).
pub const MAX_DOCUMENT_SIZE: u64 = MAX_CONFIG_SIZE;

/// A limit as people write it: `4 MiB`, `20 MiB`, `512 KiB`, `100 bytes`.
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_people_write_them() {
        assert_eq!(human(MAX_MANIFEST_SIZE), "4 MiB");
        assert_eq!(human(MAX_CONFIG_SIZE), "20 MiB");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}

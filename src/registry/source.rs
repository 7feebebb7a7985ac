//! Where a pulled blob came from: `<layout>/sources/<hex>` holds `registry/repository` of the
//! last pull that fetched it. A push to another repository of the same registry then asks
//! for a cross-repository mount from there instead of uploading the bytes again (the
//! registry checks the user may read the source; a refused mount falls back to an upload).
//!
//! Best effort by design: a missing or unreadable record only means an upload.

use std::path::PathBuf;

use crate::oci::{Digest, ImageLayout};

fn record_path(layout: &ImageLayout, digest: &Digest) -> PathBuf {
    layout.root().join("sources").join(digest.digest())
}

/// Notes that `digest` was fetched from `repository` on `registry`.
pub(crate) fn record(layout: &ImageLayout, digest: &Digest, registry: &str, repository: &str) {
    let path = record_path(layout, digest);
    let Some(dir) = path.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let temp = dir.join(format!(".{}.{}", digest.digest(), std::process::id()));
    if std::fs::write(&temp, format!("{registry}/{repository}\n")).is_ok() {
        let _ = std::fs::rename(&temp, &path);
    }
}

/// Whether `digest` is known to live in some repository of `registry` (a layer of an
/// imported cache hit that was never downloaded: a push there mounts it).
pub(crate) fn known_on(layout: &ImageLayout, digest: &Digest, registry: &str) -> bool {
    std::fs::read_to_string(record_path(layout, digest)).is_ok_and(|text| {
        text.trim()
            .strip_prefix(registry)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The repository on `registry` that `digest` was pulled from, if that is known and is not
/// `repository` itself (where the blob would already be).
pub(crate) fn mount_source(
    layout: &ImageLayout,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> Option<String> {
    let text = std::fs::read_to_string(record_path(layout, digest)).ok()?;
    let source = text.trim().strip_prefix(registry)?.strip_prefix('/')?;
    (source != repository && !source.is_empty()).then(|| source.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_source_on_the_same_registry_is_offered_for_mounting() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let digest = crate::oci::sha256_digest(b"layer");
        assert_eq!(
            mount_source(&layout, &digest, "127.0.0.1:5000", "b/app"),
            None
        );
        record(&layout, &digest, "127.0.0.1:5000", "library/busybox");
        assert_eq!(
            mount_source(&layout, &digest, "127.0.0.1:5000", "b/app").as_deref(),
            Some("library/busybox")
        );
        // Not from another registry, nor from the target repository itself.
        assert_eq!(
            mount_source(&layout, &digest, "127.0.0.1:5001", "b/app"),
            None
        );
        assert_eq!(
            mount_source(&layout, &digest, "127.0.0.1:5000", "library/busybox"),
            None
        );
    }
}

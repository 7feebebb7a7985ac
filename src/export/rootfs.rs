//! Root filesystem outputs: `-o type=local,dest=DIR` (the image's files unpacked into DIR,
//! or into `DIR/linux_arm64` etc. when several platforms were built or `platform-split=true`,
//! as buildx does) and
//! `-o type=tar,dest=FILE` (the same tree as one tar). Layers are applied in order with
//! whiteouts as deletions; device nodes and owners only as root.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::layer::{TarEntry, TarWriter, TreeKind, diff::write_tree_at};
use crate::oci::image::ResolvedImage;
use crate::platform::Platform;
use crate::store::Store;

use super::ExportError;

/// buildx's folder name for a platform: `linux_arm64`, `linux_arm_v7`.
pub fn platform_folder(platform: &Platform) -> String {
    platform.to_string().replace('/', "_")
}

/// Whether the platforms go in folders of their own: `platform-split=` when given, else
/// when several were built (as BuildKit). `platform-split=false` with several platforms
/// (BuildKit merges their trees, refusing a file two of them have) is not supported yet.
///
/// # Errors
/// [`ExportError::Unsupported`] for `platform-split=false` with several platforms.
pub(crate) fn use_split(
    images: &[(Platform, ResolvedImage)],
    split: Option<bool>,
) -> Result<bool, ExportError> {
    match split {
        None => Ok(images.len() > 1),
        Some(false) if images.len() > 1 => Err(ExportError::Unsupported(
            "platform-split=false with several platforms is not supported yet (each platform \
             gets a folder of its own)"
                .to_owned(),
        )),
        Some(split) => Ok(split),
    }
}

/// Unpacks each image into `dest` (`split` false: one image) or `dest/<platform folder>`.
pub(crate) fn write_local(
    store: &Store,
    images: &[(Platform, ResolvedImage)],
    split: bool,
    dest: &Path,
) -> Result<(), ExportError> {
    for (platform, resolved) in images {
        let target = if !split {
            dest.to_path_buf()
        } else {
            dest.join(platform_folder(platform))
        };
        store
            .unpack_image(resolved, &target)
            .map_err(|source| ExportError::Unpack {
                dest: target.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// Writes each image's root filesystem to `out` as one tar (entries under
/// `<platform folder>/` when `split`), by unpacking into a temporary directory of the store
/// first.
pub(crate) fn write_tar(
    store: &Store,
    images: &[(Platform, ResolvedImage)],
    split: bool,
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let tmp_root = store.layout().tmp_dir();
    let scratch = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&tmp_root)
        .map_err(ExportError::writing(&tmp_root))?;
    let mut tar = TarWriter::new(out, None);
    for (index, (platform, resolved)) in images.iter().enumerate() {
        let unpacked = scratch.path().join(index.to_string());
        store
            .unpack_image(resolved, &unpacked)
            .map_err(|source| ExportError::Unpack {
                dest: unpacked.clone(),
                source: Box::new(source),
            })?;
        let prefix = if !split {
            PathBuf::new()
        } else {
            let folder = PathBuf::from(platform_folder(platform));
            tar.append(
                &TarEntry::new(&folder, crate::layer::EntryKind::Directory, 0o755),
                None,
            )
            .map_err(ExportError::writing(dest))?;
            folder
        };
        write_tree_at(&mut tar, &unpacked, &prefix, TreeKind::RootFs).map_err(|source| {
            ExportError::Tree {
                dest: dest.to_path_buf(),
                source: Box::new(source),
            }
        })?;
        // Free the space before the next platform.
        let _ = std::fs::remove_dir_all(&unpacked);
    }
    tar.finish().map_err(ExportError::writing(dest))?;
    Ok(())
}

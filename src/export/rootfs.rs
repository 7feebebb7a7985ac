//! Root filesystem outputs: `-o type=local,dest=DIR` (the image's files unpacked into DIR,
//! or into `DIR/linux_arm64` etc. when several platforms were built or `platform-split=true`,
//! as buildx does) and
//! `-o type=tar,dest=FILE` (the same tree as one tar). Layers are applied in order with
//! whiteouts as deletions; device nodes and owners only as root. With `platform-split=false`
//! and several platforms, each platform's tree is made whole on its own (its whiteouts
//! applied to its own layers only) in a scratch directory, then the trees are merged as
//! BuildKit merges them: directories are shared, and any other path two platforms have
//! (even an identical file) is refused before the destination is touched.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
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
/// when several were built (as BuildKit). Without folders, several platforms' trees are
/// merged (see [`write_local`]).
pub(crate) fn use_split(images: &[(Platform, ResolvedImage)], split: Option<bool>) -> bool {
    split.unwrap_or(images.len() > 1)
}

/// Unpacks each image into `dest/<platform folder>`, or into `dest` itself when not
/// `split` (several platforms: merged, see the module doc; the scratch trees live in a
/// hidden `.xbuild-export-*` directory of `dest`, on its file system, removed at the end).
pub(crate) fn write_local(
    store: &Store,
    images: &[(Platform, ResolvedImage)],
    split: bool,
    dest: &Path,
) -> Result<(), ExportError> {
    if !split && images.len() > 1 {
        fs::create_dir_all(dest).map_err(ExportError::writing(dest))?;
        let scratch = tempfile::Builder::new()
            .prefix(".xbuild-export-")
            .tempdir_in(dest)
            .map_err(ExportError::writing(dest))?;
        let merged = unpack_merged(store, images, scratch.path())?;
        move_into(&merged, dest).map_err(ExportError::writing(dest))?;
        return scratch.close().map_err(ExportError::writing(dest));
    }
    for (platform, resolved) in images {
        let target = if !split {
            dest.to_path_buf()
        } else {
            dest.join(platform_folder(platform))
        };
        unpack(store, resolved, &target)?;
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
    if !split && images.len() > 1 {
        // Merged before the first byte is written: a conflict leaves `out` empty.
        let merged = unpack_merged(store, images, scratch.path())?;
        let mut tar = TarWriter::new(out, None);
        write_tree_at(&mut tar, &merged, Path::new(""), TreeKind::RootFs).map_err(|source| {
            ExportError::Tree {
                dest: dest.to_path_buf(),
                source: Box::new(source),
            }
        })?;
        tar.finish().map_err(ExportError::writing(dest))?;
        return Ok(());
    }
    let mut tar = TarWriter::new(out, None);
    for (index, (platform, resolved)) in images.iter().enumerate() {
        let unpacked = scratch.path().join(index.to_string());
        unpack(store, resolved, &unpacked)?;
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

/// Unpacks each image into `scratch/<index>`, each tree whole on its own, refuses a path
/// that two trees have unless it is a directory in both ([`ExportError::PlatformConflict`],
/// the first such path in platform order, a directory's own entries in name order before
/// its subdirectories'), and moves the other trees into
/// the first. Returns the first tree, now the merged one.
fn unpack_merged(
    store: &Store,
    images: &[(Platform, ResolvedImage)],
    scratch: &Path,
) -> Result<PathBuf, ExportError> {
    let mut trees = Vec::with_capacity(images.len());
    for (index, (_, resolved)) in images.iter().enumerate() {
        let tree = scratch.join(index.to_string());
        unpack(store, resolved, &tree)?;
        trees.push(tree);
    }
    // Path -> (index of the first platform that has it, whether it is a directory there).
    let mut owners: HashMap<PathBuf, (usize, bool)> = HashMap::new();
    for (index, tree) in trees.iter().enumerate() {
        let mut pending = vec![PathBuf::new()];
        while let Some(relative) = pending.pop() {
            let dir = tree.join(&relative);
            for (name, is_dir) in sorted_entries(&dir).map_err(ExportError::writing(&dir))? {
                let path = relative.join(name);
                match owners.get(&path) {
                    Some(&(_, true)) if is_dir => {}
                    Some(&(first, _)) => {
                        return Err(ExportError::PlatformConflict {
                            path,
                            first: images[first].0.to_string(),
                            second: images[index].0.to_string(),
                        });
                    }
                    None => {
                        owners.insert(path.clone(), (index, is_dir));
                    }
                }
                if is_dir {
                    pending.push(path);
                }
            }
        }
    }
    let (first, rest) = trees.split_first().ok_or(ExportError::NothingBuilt)?;
    for tree in rest {
        move_into(tree, first).map_err(ExportError::writing(first))?;
    }
    Ok(first.clone())
}

/// The names in `dir` with whether each is a directory (not following symbolic links),
/// sorted.
fn sorted_entries(dir: &Path) -> io::Result<Vec<(OsString, bool)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.file_name(), entry.file_type()?.is_dir()));
    }
    entries.sort();
    Ok(entries)
}

/// Moves everything in `from` into `into` by renaming (one file system): a directory both
/// have is merged (keeping `into`'s mode and times), anything else in `into` of the same
/// name is replaced (only a destination's earlier content: the platforms' trees were
/// checked not to share such a path).
fn move_into(from: &Path, into: &Path) -> io::Result<()> {
    for (name, is_dir) in sorted_entries(from)? {
        let source = from.join(&name);
        let target = into.join(&name);
        match fs::symlink_metadata(&target) {
            Ok(existing) if existing.is_dir() && is_dir => {
                move_into(&source, &target)?;
                // Renaming entries into it changed its times: put back the image's.
                let times = fs::FileTimes::new()
                    .set_accessed(existing.accessed()?)
                    .set_modified(existing.modified()?);
                fs::File::open(&target)?.set_times(times)?;
            }
            Ok(existing) => {
                if existing.is_dir() {
                    fs::remove_dir_all(&target)?;
                } else {
                    fs::remove_file(&target)?;
                }
                fs::rename(&source, &target)?;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::rename(&source, &target)?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Unpacks the image `resolved` of `store` into `dest`, a failure naming `dest`.
fn unpack(store: &Store, resolved: &ResolvedImage, dest: &Path) -> Result<(), ExportError> {
    store
        .unpack_image(resolved, dest)
        .map_err(|source| ExportError::Unpack {
            dest: dest.to_path_buf(),
            source: Box::new(source),
        })
}

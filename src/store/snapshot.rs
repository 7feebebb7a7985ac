//! Snapshots: each layer unpacked on its own under `snapshots/sha256/<diff_id hex>/`, in
//! overlay form (whiteouts as 0/0 character devices, opaque directories with
//! `trusted.overlay.opaque=y`), so a stack of them is directly the `lowerdir=` of an overlay
//! mount. A snapshot is unpacked into `tmp/` and renamed into place: it is complete when it
//! exists.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageManifest};

use super::{Store, StoreError, file_error};
use crate::layer::{self, ApplyOptions, DigestingReader, LayerError, WhiteoutMode, apply_layer};
use crate::oci::image::ResolvedImage;
use crate::oci::state::ImageLayer;

/// Where the records of which snapshot each `COPY` of the context made last live:
/// `snapshots/sources/<link key>`, each holding a diff_id.
pub(super) const SNAPSHOT_SOURCES_DIR: &str = "snapshots/sources";

impl Store {
    /// Whether the store has what this layer of a build's state needs: its blob, or for a
    /// layer kept as a snapshot, the snapshot.
    pub fn has_layer(&self, layer: &ImageLayer) -> bool {
        match &layer.blob {
            Some(blob) => self.layout().has_blob(blob.digest()),
            None => self.snapshot(&layer.diff_id).is_some(),
        }
    }

    /// The snapshot directories of `layers` (bottom first), top first: the overlay
    /// `lowerdir=` order. A layer whose snapshot is not there yet is unpacked from its blob.
    ///
    /// # Errors
    /// [`StoreError::MissingSnapshot`] for a layer with neither blob nor snapshot; unpacking
    /// failures.
    pub fn lower_dirs(&self, layers: &[ImageLayer]) -> Result<Vec<PathBuf>, StoreError> {
        let mut dirs = Vec::new();
        for layer in layers.iter().rev() {
            let dir = match (&layer.blob, self.snapshot(&layer.diff_id)) {
                (_, Some(dir)) => dir,
                (Some(blob), None) => self.unpack_snapshot(blob, &layer.diff_id)?,
                (None, None) => {
                    return Err(StoreError::MissingSnapshot {
                        diff_id: layer.diff_id.clone(),
                    });
                }
            };
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Where the snapshot of this diff_id lives (whether or not it exists).
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(diff_id.algorithm().as_ref())
            .join(diff_id.digest())
    }

    /// The snapshot of this diff_id, if it has been unpacked.
    pub fn snapshot(&self, diff_id: &Digest) -> Option<PathBuf> {
        let path = self.snapshot_path(diff_id);
        path.is_dir().then_some(path)
    }

    /// Unpacks one layer blob (already in the store) into its snapshot, checking the blob
    /// digest and the diff_id while streaming. Returns the snapshot directory; does nothing
    /// when it exists.
    ///
    /// # Errors
    /// Missing blob, digest mismatch, an unsafe or malformed layer, write failures.
    pub fn unpack_snapshot(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<PathBuf, StoreError> {
        if let Some(existing) = self.snapshot(diff_id) {
            return Ok(existing);
        }
        let tmp = self.snapshot_tmp_dir()?;
        let blob = self.layout().open_blob(layer.digest())?;
        let mut compressed = DigestingReader::new(blob);
        let tar_digest = {
            let stream = layer::decompressed(&mut compressed).map_err(LayerError::Read)?;
            let mut tar = DigestingReader::new(stream);
            apply_layer(
                &mut tar,
                tmp.path(),
                &ApplyOptions::for_current_user(WhiteoutMode::Overlay),
            )
            .map_err(|source| StoreError::Unpack {
                digest: layer.digest().clone(),
                source,
            })?;
            tar.finish().map_err(LayerError::Read)?.0
        };
        let (blob_digest, blob_size) = compressed.finish().map_err(LayerError::Read)?;
        if &blob_digest != layer.digest() || blob_size != layer.size() {
            return Err(crate::oci::LayoutError::DigestMismatch {
                expected: layer.digest().clone(),
                expected_size: layer.size(),
                actual: blob_digest,
                actual_size: blob_size,
            }
            .into());
        }
        if &tar_digest != diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual: tar_digest,
            }
            .into());
        }
        self.adopt_snapshot(diff_id, tmp.keep())
    }

    /// A new empty directory in the store's `tmp/` to make a snapshot in, then hand to
    /// [`Self::adopt_snapshot`] (removed when dropped before that).
    ///
    /// # Errors
    /// The directory cannot be made.
    pub fn snapshot_tmp_dir(&self) -> Result<tempfile::TempDir, StoreError> {
        let tmp_root = self.layout().tmp_dir();
        fs::create_dir_all(&tmp_root).map_err(file_error("creating", &tmp_root))?;
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&tmp_root)
            .map_err(file_error("creating a temporary directory in", &tmp_root))?;
        // Temporary directories are 0700; a snapshot is a root directory that every user of
        // the container must be able to traverse (the top lower gives the merged root's mode).
        fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(file_error("setting the mode of", tmp.path()))?;
        Ok(tmp)
    }

    /// Moves a directory already in overlay form (a step's upper directory, on the same
    /// filesystem as the store) into place as the snapshot of `diff_id`. If another process
    /// got there first, `dir` is removed and theirs is kept. When the snapshot is already
    /// there before we start (a step that made the same layer as in an earlier build), `dir`
    /// is removed without being synced: a snapshot is synced before its rename into place,
    /// so the one there is already durable, and this copy would be thrown away.
    ///
    /// # Errors
    /// Rename failures other than "already there".
    pub fn adopt_snapshot(&self, diff_id: &Digest, dir: PathBuf) -> Result<PathBuf, StoreError> {
        let target = self.snapshot_path(diff_id);
        if target.is_dir() {
            let _ = fs::remove_dir_all(&dir);
            return Ok(target);
        }
        Self::sync_snapshot_contents(&dir);
        self.adopt_synced_snapshot(diff_id, dir)
    }

    /// Makes the contents of a directory that will become a snapshot durable: the tree's own
    /// files, else (a file this user cannot open) the whole file system. [`Self::adopt_snapshot`]
    /// does it first; a caller that has other work on the same tree (a `RUN` hashing its
    /// layer) runs it beside that work and then calls [`Self::adopt_synced_snapshot`].
    pub fn sync_snapshot_contents(dir: &Path) {
        if sync_tree(dir).is_err() {
            sync_file_system_of(dir);
        }
    }

    /// [`Self::adopt_snapshot`] of a directory whose contents
    /// [`Self::sync_snapshot_contents`] has made durable (and that nothing changed since):
    /// only the rename, and the sync of the directory that holds the new name.
    ///
    /// # Errors
    /// As [`Self::adopt_snapshot`].
    pub fn adopt_synced_snapshot(
        &self,
        diff_id: &Digest,
        dir: PathBuf,
    ) -> Result<PathBuf, StoreError> {
        let target = self.snapshot_path(diff_id);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(file_error("creating", parent))?;
        }
        match fs::rename(&dir, &target) {
            Ok(()) => {
                if let Some(parent) = target.parent() {
                    let _ = fs::File::open(parent).and_then(|handle| handle.sync_all());
                }
                Ok(target)
            }
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&dir);
                Ok(target)
            }
            Err(source) => Err(StoreError::File {
                action: "renaming the snapshot into place",
                path: target,
                source,
            }),
        }
    }

    /// As [`Self::adopt_snapshot`], for a tree whose regular files are hard links to files
    /// of committed snapshots (whose data was synced when those were) except `written`
    /// (paths relative to `dir`): only those files' data and the tree's directories (its
    /// names, the links among them) are synced, so a `COPY` that changed a few files of a
    /// big context does not wait for the writeback of the whole file system (`syncfs`).
    /// With more than [`SYNCFS_ABOVE_FILES`] files written, as [`Self::adopt_snapshot`].
    ///
    /// # Errors
    /// As [`Self::adopt_snapshot`].
    pub fn adopt_linked_snapshot(
        &self,
        diff_id: &Digest,
        dir: PathBuf,
        written: &[PathBuf],
    ) -> Result<PathBuf, StoreError> {
        if written.len() > SYNCFS_ABOVE_FILES || self.snapshot_path(diff_id).is_dir() {
            return self.adopt_snapshot(diff_id, dir);
        }
        let files: Vec<PathBuf> = written.iter().map(|path| dir.join(path)).collect();
        let synced = directories(&dir).and_then(|dirs| sync_files_and_dirs(&files, &dirs));
        if synced.is_err() {
            sync_file_system_of(&dir);
        }
        self.adopt_synced_snapshot(diff_id, dir)
    }

    /// Where the step with this link key ([`Self::remember_snapshot_source`]) last left the
    /// name of its snapshot.
    fn snapshot_source_path(&self, link_key: &str) -> Option<PathBuf> {
        let valid = !link_key.is_empty() && link_key.bytes().all(|byte| byte.is_ascii_hexdigit());
        valid.then(|| self.root().join(SNAPSHOT_SOURCES_DIR).join(link_key))
    }

    /// The snapshot a step with this link key (its cache key without the digest of the
    /// context files it reads) made last, when it is still there: a `COPY` of the context
    /// takes its unchanged files from it ([`crate::layer::unpack_file_list_layer_linking`]).
    /// Only a hint: a missing, damaged or stale one gives `None`.
    pub fn earlier_snapshot(&self, link_key: &str) -> Option<PathBuf> {
        let text = fs::read_to_string(self.snapshot_source_path(link_key)?).ok()?;
        let diff_id: Digest = text.trim().parse().ok()?;
        if diff_id.algorithm().as_ref() != "sha256" {
            return None;
        }
        self.snapshot(&diff_id)
    }

    /// Records `diff_id` as the snapshot the step with this link key made last (temporary
    /// file, fsync, rename). Garbage collection removes the record with its snapshot.
    ///
    /// # Errors
    /// The record cannot be written.
    pub fn remember_snapshot_source(
        &self,
        link_key: &str,
        diff_id: &Digest,
    ) -> Result<(), StoreError> {
        let Some(path) = self.snapshot_source_path(link_key) else {
            return Ok(());
        };
        let dir = self.root().join(SNAPSHOT_SOURCES_DIR);
        fs::create_dir_all(&dir).map_err(file_error("creating", &dir))?;
        let tmp_root = self.layout().tmp_dir();
        fs::create_dir_all(&tmp_root).map_err(file_error("creating", &tmp_root))?;
        let mut tmp = tempfile::Builder::new()
            .prefix("source-")
            .tempfile_in(&tmp_root)
            .map_err(file_error("creating a temporary file in", &tmp_root))?;
        io::Write::write_all(&mut tmp, format!("{diff_id}\n").as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(file_error("writing", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|error| file_error("renaming into place", &path)(error.error))?;
        Ok(())
    }

    /// Removes the records of [`Self::remember_snapshot_source`] whose snapshot is gone (or
    /// that are damaged); returns how many.
    pub(super) fn remove_stale_snapshot_sources(&self) -> Result<u64, StoreError> {
        let dir = self.root().join(SNAPSHOT_SOURCES_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(file_error("listing", &dir)(source)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(file_error("listing", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.earlier_snapshot(&name).is_some() {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            gone.map_err(file_error("removing", &path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The snapshots of every layer of an image, bottom layer first (reverse this for
    /// overlay's `lowerdir=`, which lists the top first), unpacking the missing ones in
    /// parallel.
    ///
    /// # Errors
    /// As [`Self::unpack_snapshot`]; a manifest whose layer count differs from its config's
    /// diff_ids.
    pub fn ensure_snapshots(&self, image: &ResolvedImage) -> Result<Vec<PathBuf>, StoreError> {
        self.ensure_snapshots_for(&image.manifest, image.config.rootfs().diff_ids())
    }

    /// As [`Self::ensure_snapshots`], from a manifest and its config's diff_ids.
    ///
    /// # Errors
    /// As [`Self::ensure_snapshots`].
    pub fn ensure_snapshots_for(
        &self,
        manifest: &ImageManifest,
        diff_ids: &[String],
    ) -> Result<Vec<PathBuf>, StoreError> {
        let layers = manifest.layers();
        if layers.len() != diff_ids.len() {
            return Err(StoreError::LayerCountMismatch {
                manifest: manifest.config().digest().clone(),
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let diff_ids: Vec<Digest> = diff_ids
            .iter()
            .map(|text| {
                text.parse::<Digest>().map_err(|_| StoreError::File {
                    action: "parsing the diff_id",
                    path: PathBuf::from(text),
                    source: std::io::ErrorKind::InvalidData.into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let pairs: Vec<(&Descriptor, &Digest)> = layers.iter().zip(&diff_ids).collect();
        for batch in pairs.chunks(workers) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .filter(|(_, diff_id)| self.snapshot(diff_id).is_none())
                    .map(|(layer, diff_id)| {
                        scope.spawn(move || self.unpack_snapshot(layer, diff_id))
                    })
                    .collect();
                for handle in handles {
                    handle.join().map_err(|_| StoreError::File {
                        action: "unpacking (thread panicked)",
                        path: PathBuf::new(),
                        source: std::io::ErrorKind::Other.into(),
                    })??;
                }
                Ok::<(), StoreError>(())
            })?;
        }
        Ok(diff_ids
            .iter()
            .map(|diff_id| self.snapshot_path(diff_id))
            .collect())
    }

    /// Flattens an image's layers into `target` (a plain directory tree, whiteouts applied
    /// by deletion): `xbuild save` to a directory, tests, `-o type=local`.
    ///
    /// # Errors
    /// Missing blobs, unsafe layers, write failures.
    pub fn unpack_image(&self, image: &ResolvedImage, target: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(target).map_err(file_error("creating", target))?;
        for layer_descriptor in image.manifest.layers() {
            let blob = self.layout().open_blob(layer_descriptor.digest())?;
            let stream = layer::decompressed(blob).map_err(LayerError::Read)?;
            apply_layer(
                stream,
                target,
                &ApplyOptions::for_current_user(WhiteoutMode::Merge),
            )
            .map_err(|source| StoreError::Unpack {
                digest: layer_descriptor.digest().clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Files opened at once by [`sync_tree`].
const SYNC_BATCH: usize = 256;

/// The fallback when a tree's own files cannot be synced one by one (a file this user
/// cannot open): one `syncfs` of the file system holding `dir`, best effort.
fn sync_file_system_of(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = nix::unistd::syncfs(&handle);
    }
}

/// Above this many regular files a tree is synced with one `syncfs` rather than file by
/// file: each file's sync commits the journal and flushes the device's cache (1-2 ms each
/// on the benchmark machine, 21 s for the 10,000 files of a `COPY` of a big context, 100,000
/// files would take minutes), while `syncfs` costs one flush plus the writeback of what else
/// is dirty on that file system, which the kernel's dirty limits bound (0.6 s with 1 GB
/// written elsewhere).
const SYNCFS_ABOVE_FILES: usize = 1_000;

/// Makes a directory tree durable before it is renamed into place. A small tree is synced
/// on its own, without waiting for the rest of the file system: `syncfs` also waits for
/// every other process's dirty data (another build, a large copy): with 1 GB written
/// elsewhere, a small step's commit took 0.6 s. Writeback of a batch of files is started at
/// once (so the disk works on all of them), then each file's data is synced, then each
/// directory (which commits its entries). A tree of more than [`SYNCFS_ABOVE_FILES`] files
/// is synced with one `syncfs` of its file system instead.
fn sync_tree(root: &Path) -> io::Result<()> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        if files.len() > SYNCFS_ABOVE_FILES {
            let handle = fs::File::open(root)?;
            return nix::unistd::syncfs(&handle).map_err(io::Error::from);
        }
    }
    sync_files_and_dirs(&files, &dirs)
}

/// Every directory of a tree, `root` first (parents before children).
fn directories(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(dirs)
}

/// Syncs the data of `files` (writeback of a batch started at once, then each synced), then
/// each of `dirs`, children first.
fn sync_files_and_dirs(files: &[PathBuf], dirs: &[PathBuf]) -> io::Result<()> {
    let open = |path: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    for batch in files.chunks(SYNC_BATCH) {
        let opened = batch
            .iter()
            .map(|path| open(path))
            .collect::<io::Result<Vec<fs::File>>>()?;
        for file in &opened {
            // SAFETY: `file` is an open descriptor for the whole call; the call only starts
            // writeback of its dirty pages and touches no memory of ours.
            let started = unsafe {
                libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
            if started != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for file in &opened {
            file.sync_data()?;
        }
    }
    for dir in dirs.iter().rev() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_directory_is_adopted_once_and_a_second_copy_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let make = |content: &[u8]| {
            let tmp = store.snapshot_tmp_dir().unwrap();
            fs::create_dir_all(tmp.path().join("etc")).unwrap();
            fs::write(tmp.path().join("etc/file"), content).unwrap();
            Store::sync_snapshot_contents(tmp.path());
            tmp.keep()
        };
        assert!(store.snapshot(&diff_id).is_none());
        let first = make(b"first");
        let adopted = store
            .adopt_synced_snapshot(&diff_id, first.clone())
            .unwrap();
        assert_eq!(adopted, store.snapshot_path(&diff_id));
        assert_eq!(store.snapshot(&diff_id), Some(adopted.clone()));
        assert!(!first.exists());
        assert_eq!(fs::read(adopted.join("etc/file")).unwrap(), b"first");
        // Another process's copy of the same layer: the one in place stays, this one goes.
        let second = make(b"second");
        assert_eq!(
            store.adopt_snapshot(&diff_id, second.clone()).unwrap(),
            adopted
        );
        assert!(!second.exists());
        assert_eq!(fs::read(adopted.join("etc/file")).unwrap(), b"first");
        // A linked COPY's copy of it (a rebuild that made the same layer) goes too.
        let third = make(b"third");
        assert_eq!(
            store
                .adopt_linked_snapshot(&diff_id, third.clone(), &[PathBuf::from("etc/file")])
                .unwrap(),
            adopted
        );
        assert!(!third.exists());
        assert_eq!(fs::read(adopted.join("etc/file")).unwrap(), b"first");
    }

    #[test]
    fn sync_tree_syncs_files_and_directories_and_fails_on_what_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("a/b")).unwrap();
        for index in 0..(SYNC_BATCH + 3) {
            fs::write(root.join("a").join(format!("f{index}")), b"data").unwrap();
        }
        std::os::unix::fs::symlink("/nonexistent", root.join("a/b/dangling")).unwrap();
        sync_tree(&root).unwrap();
        assert!(sync_tree(&dir.path().join("missing")).is_err());
        // A big tree: one syncfs.
        for index in 0..SYNCFS_ABOVE_FILES {
            fs::write(root.join("a/b").join(format!("g{index}")), b"data").unwrap();
        }
        sync_tree(&root).unwrap();
    }
}

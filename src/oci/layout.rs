//! An OCI image layout directory: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! Every write is temp file + fsync + rename (+ fsync of the directory), so a reader never
//! sees half a blob and a process killed at any moment leaves the layout readable. Temporary
//! files live in `<root>/tmp/` on the same filesystem. Locking between processes is the
//! store's business (`store/`), not this module's.
//!
//! Spec: <https://github.com/opencontainers/image-spec/blob/main/image-layout.md>.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageIndexBuilder, MediaType};

use super::digest::Digester;

/// The annotation that names an image in `index.json` (`org.opencontainers.image.ref.name`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";

/// Errors reading or writing an image layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file of the layout could not be read or written.
    #[error("{action} {path}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory is not an OCI image layout.
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// `index.json` (or a blob expected to be JSON) does not parse.
    #[error("{path} is not a valid {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's bytes do not match the digest or size it was announced with.
    #[error(
        "blob content does not match: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)"
    )]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// The announced size, where known.
        expected_size: u64,
        /// The digest of what arrived.
        actual: Digest,
        /// The size of what arrived.
        actual_size: u64,
    },
    /// A blob named in a manifest or ref is not in the layout.
    #[error("blob {digest} is missing from {root}")]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// The layout.
        root: PathBuf,
    },
    /// A blob read whole into memory (a document) is larger than any document may be
    /// ([`super::limits::MAX_DOCUMENT_SIZE`]); it was not read.
    #[error("{path} is {size} bytes, over the {} limit for image documents: not read", super::limits::human(*limit))]
    TooLarge {
        /// The blob file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Only sha256 digests are supported.
    #[error("unsupported digest algorithm in {digest}")]
    UnsupportedDigest {
        /// The digest.
        digest: Digest,
    },
}

fn file_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// An OCI image layout rooted at a directory.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    root: PathBuf,
}

impl ImageLayout {
    /// Opens the layout at `root`, creating an empty one if the directory is missing or empty.
    ///
    /// # Errors
    /// The directory exists with other content but no `oci-layout`, or cannot be written.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        let layout = Self { root };
        let marker = layout.root.join(OCI_LAYOUT_FILE);
        if !marker.exists() {
            fs::create_dir_all(&layout.root).map_err(file_error("creating", &layout.root))?;
            fs::create_dir_all(layout.blobs_dir()).map_err(file_error("creating", &layout.root))?;
            if !layout.root.join(INDEX_FILE).exists() {
                layout.write_index(&empty_index())?;
            }
            layout.write_file_atomic(&marker, OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        fs::create_dir_all(layout.blobs_dir()).map_err(file_error("creating", &layout.root))?;
        Ok(layout)
    }

    /// Opens an existing layout.
    ///
    /// # Errors
    /// [`LayoutError::NotALayout`] when `root/oci-layout` is missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        if !root.join(OCI_LAYOUT_FILE).is_file() {
            return Err(LayoutError::NotALayout { path: root });
        }
        Ok(Self { root })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the blob with this digest lives (whether or not it is there).
    ///
    /// # Errors
    /// Digests other than sha256.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf, LayoutError> {
        if digest.algorithm().as_ref() != "sha256" {
            return Err(LayoutError::UnsupportedDigest {
                digest: digest.clone(),
            });
        }
        Ok(self.blobs_dir().join(digest.digest()))
    }

    /// Copies `blob` from another layout (nothing when this one has it), verifying its
    /// digest and size.
    ///
    /// # Errors
    /// The blob is missing there, does not match, or cannot be written here.
    pub fn copy_blob_from(&self, from: &Self, blob: &Descriptor) -> Result<(), LayoutError> {
        if self.has_blob(blob.digest()) {
            return Ok(());
        }
        let mut source = from.open_blob(blob.digest())?;
        let mut writer = self.blob_writer()?;
        io::copy(&mut source, &mut writer).map_err(file_error("copying", &self.root))?;
        writer.commit(Some((blob.digest(), blob.size())))?;
        Ok(())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_ok_and(|path| path.is_file())
    }

    /// Opens a blob for reading.
    ///
    /// # Errors
    /// [`LayoutError::MissingBlob`] when absent.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, LayoutError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                LayoutError::MissingBlob {
                    digest: digest.clone(),
                    root: self.root.clone(),
                }
            } else {
                LayoutError::File {
                    action: "opening",
                    path,
                    source,
                }
            }
        })
    }

    /// Reads a whole blob (manifests, configs, indexes: small ones) and checks its digest.
    /// A blob larger than any document may be ([`super::limits::MAX_DOCUMENT_SIZE`]: an
    /// archive or a registry may have put a huge one under a document's name) is refused
    /// before it is read.
    ///
    /// # Errors
    /// Missing blob, a blob over the limit, read failure, or content that does not match
    /// its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest)?;
        let file = self.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(file_error("inspecting", &path))?
            .len();
        let limit = super::limits::MAX_DOCUMENT_SIZE;
        if size > limit {
            return Err(LayoutError::TooLarge { path, size, limit });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // The bound holds even if the file grows after the size was taken (it never should:
        // blobs are renamed into place whole).
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(file_error("reading", &path))?;
        if bytes.len() as u64 > limit {
            return Err(LayoutError::TooLarge {
                path,
                size: bytes.len() as u64,
                limit,
            });
        }
        let actual = super::sha256_digest(&bytes);
        if &actual != digest {
            return Err(LayoutError::DigestMismatch {
                expected: digest.clone(),
                expected_size: 0,
                actual,
                actual_size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Reads a blob and parses it as JSON.
    ///
    /// # Errors
    /// As [`Self::read_blob`], or the blob is not the expected JSON document.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T, LayoutError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            path: self.blob_path(digest).unwrap_or_default(),
            what,
            source,
        })
    }

    /// Stores bytes as a blob and returns its digest and size. Idempotent.
    ///
    /// # Errors
    /// Write failures.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), LayoutError> {
        let mut writer = self.blob_writer()?;
        writer
            .write_all(bytes)
            .map_err(file_error("writing", &self.tmp_dir()))?;
        writer.commit(None)
    }

    /// Starts writing a blob whose digest is computed as it streams.
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(file_error("creating", &tmp))?;
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp)
            .map_err(file_error("creating a temporary file in", &tmp))?;
        Ok(BlobWriter {
            layout: self.clone(),
            file,
            digester: Digester::default(),
        })
    }

    /// The top-level `index.json`.
    ///
    /// # Errors
    /// It cannot be read or parsed.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.root.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(file_error("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            path,
            what: "image index",
            source,
        })
    }

    /// Replaces `index.json` atomically.
    ///
    /// # Errors
    /// Write failures.
    pub fn write_index(&self, index: &ImageIndex) -> Result<(), LayoutError> {
        let path = self.root.join(INDEX_FILE);
        let bytes = serde_json::to_vec(index).expect("an image index serialises to JSON");
        self.write_file_atomic(&path, &bytes)
    }

    /// The descriptor named `name` (the `org.opencontainers.image.ref.name` annotation).
    ///
    /// # Errors
    /// `index.json` cannot be read.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<Descriptor>, LayoutError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .find(|descriptor| ref_name(descriptor) == Some(name))
            .cloned())
    }

    /// Names `descriptor` as `name`, replacing an earlier descriptor of that name.
    ///
    /// # Errors
    /// `index.json` cannot be read or written.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), LayoutError> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let mut descriptor = descriptor.clone();
        let mut annotations = descriptor.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.to_owned());
        descriptor.set_annotations(Some(annotations));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|existing| ref_name(existing) != Some(name))
            .cloned()
            .collect();
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Removes the name; returns the descriptor it named. Blobs stay until garbage collection.
    ///
    /// # Errors
    /// `index.json` cannot be read or written.
    pub fn remove_ref(&self, name: &str) -> Result<Option<Descriptor>, LayoutError> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let removed = index
            .manifests()
            .iter()
            .find(|existing| ref_name(existing) == Some(name))
            .cloned();
        if removed.is_some() {
            let manifests = index
                .manifests()
                .iter()
                .filter(|existing| ref_name(existing) != Some(name))
                .cloned()
                .collect();
            index.set_manifests(manifests);
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// Holds an exclusive `flock(2)` on the layout directory while `index.json` is read,
    /// changed and replaced, so two processes naming images at once both keep their names.
    /// The directory itself is locked (not `index.json`, which is replaced by rename, nor a
    /// lock file, which would add a file to exported layouts); released on drop.
    pub(super) fn lock_index(&self) -> Result<nix::fcntl::Flock<File>, LayoutError> {
        let dir = File::open(&self.root).map_err(file_error("opening", &self.root))?;
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            LayoutError::File {
                action: "locking",
                path: self.root.clone(),
                source: io::Error::from(errno),
            }
        })
    }

    /// Writes a file in the layout atomically: temp file, fsync, rename, fsync the directory.
    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(file_error("creating", &tmp))?;
        let mut file = tempfile::Builder::new()
            .prefix("file-")
            .tempfile_in(&tmp)
            .map_err(file_error("creating a temporary file in", &tmp))?;
        file.write_all(bytes).map_err(file_error("writing", path))?;
        file.as_file()
            .sync_all()
            .map_err(file_error("syncing", path))?;
        file.persist(path)
            .map_err(|error| error.error)
            .map_err(file_error("renaming into place", path))?;
        sync_parent(path)
    }
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an empty index has every required field")
}

fn sync_parent(path: &Path) -> Result<(), LayoutError> {
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(file_error("syncing", parent))?;
    }
    Ok(())
}

/// A blob being written: bytes go to a temporary file and through a digester; `commit`
/// checks the digest and renames the file into `blobs/sha256/`. Dropped uncommitted, the
/// temporary file is removed.
pub struct BlobWriter {
    layout: ImageLayout,
    file: tempfile::NamedTempFile,
    digester: Digester,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.digester.size()
    }

    /// Finishes the blob. With `expected`, a different digest or size is an error and
    /// nothing is kept.
    ///
    /// # Errors
    /// [`LayoutError::DigestMismatch`], or write failures.
    pub fn commit(self, expected: Option<(&Digest, u64)>) -> Result<(Digest, u64), LayoutError> {
        let (digest, size) = self.digester.finish();
        if let Some((expected_digest, expected_size)) = expected {
            if expected_digest != &digest || expected_size != size {
                return Err(LayoutError::DigestMismatch {
                    expected: expected_digest.clone(),
                    expected_size,
                    actual: digest,
                    actual_size: size,
                });
            }
        }
        let path = self.layout.blob_path(&digest)?;
        if path.is_file() {
            // Content-addressed: an existing blob with this digest has these bytes.
            return Ok((digest, size));
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(file_error("syncing", &path))?;
        self.file
            .persist(&path)
            .map_err(|error| error.error)
            .map_err(file_error("renaming into place", &path))?;
        sync_parent(&path)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.digester.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_over_the_document_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let digest = super::super::sha256_digest(b"named as a manifest");
        let path = layout.blob_path(&digest).unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Sparse: the size is what matters, nothing is read.
        let file = File::create(&path).unwrap();
        file.set_len(super::super::limits::MAX_DOCUMENT_SIZE + 1)
            .unwrap();
        let error = layout.read_blob(&digest).unwrap_err();
        assert!(
            matches!(error, LayoutError::TooLarge { size, .. } if size == super::super::limits::MAX_DOCUMENT_SIZE + 1),
            "{error}"
        );
        assert!(
            error.to_string().contains("over the 20 MiB limit"),
            "{error}"
        );
    }

    #[test]
    fn new_layout_has_marker_and_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path().join("store")).unwrap();
        assert_eq!(
            fs::read_to_string(layout.root().join("oci-layout")).unwrap(),
            OCI_LAYOUT_CONTENT
        );
        assert!(layout.index().unwrap().manifests().is_empty());
        assert!(ImageLayout::open(layout.root()).is_ok());
    }

    #[test]
    fn blob_round_trips_and_is_found_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let (digest, size) = layout.write_blob(b"{}").unwrap();
        assert_eq!(size, 2);
        assert!(layout.has_blob(&digest));
        assert_eq!(layout.read_blob(&digest).unwrap(), b"{}");
        // The temporary directory holds nothing after a commit.
        assert_eq!(fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn mismatched_blob_is_refused_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let expected = crate::oci::sha256_digest(b"expected");
        let mut writer = layout.blob_writer().unwrap();
        writer.write_all(b"tampered").unwrap();
        let error = writer.commit(Some((&expected, 8))).unwrap_err();
        assert!(
            matches!(error, LayoutError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(!layout.has_blob(&expected));
        assert!(!layout.has_blob(&crate::oci::sha256_digest(b"tampered")));
        assert_eq!(fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn refs_are_set_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let (first, size) = layout.write_blob(b"first").unwrap();
        let (second, _) = layout.write_blob(b"second").unwrap();
        let descriptor =
            |digest: &Digest| Descriptor::new(MediaType::ImageManifest, size, digest.clone());
        layout.set_ref("app:1", &descriptor(&first)).unwrap();
        layout.set_ref("app:1", &descriptor(&second)).unwrap();
        layout.set_ref("app:2", &descriptor(&first)).unwrap();
        assert_eq!(layout.index().unwrap().manifests().len(), 2);
        assert_eq!(
            layout.resolve_ref("app:1").unwrap().unwrap().digest(),
            &second
        );
        assert!(layout.remove_ref("app:1").unwrap().is_some());
        assert!(layout.resolve_ref("app:1").unwrap().is_none());
        assert!(layout.resolve_ref("app:2").unwrap().is_some());
    }

    #[test]
    fn concurrent_namers_all_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open_or_create(dir.path()).unwrap();
        let (digest, size) = layout.write_blob(b"manifest").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let layout = layout.clone();
                let digest = digest.clone();
                std::thread::spawn(move || {
                    for round in 0..10 {
                        let descriptor =
                            Descriptor::new(MediaType::ImageManifest, size, digest.clone());
                        layout
                            .set_ref(&format!("app:{thread}-{round}"), &descriptor)
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(layout.index().unwrap().manifests().len(), 80);
    }
}

//! Image archives: `xbuild save` writes an OCI archive (a tar of an OCI image layout, with
//! multi-platform indexes) or a docker-archive (`manifest.json` + config + uncompressed layer
//! tars, one platform per tag, as `docker load` takes); `xbuild load` reads either, as
//! written by us, skopeo (`oci-archive:`, `docker-archive:`) or `docker save`.
//!
//! Archives are streamed: blobs go from the tar straight into the store (verified against
//! their names when they are named by digest), never whole in memory.
//!
//! Referrers (attestations) travel with their image in OCI archives: `save` writes the
//! referrers of every manifest it saves as unnamed `index.json` entries naming their
//! subject, as the store keeps them ([`crate::oci::referrers`]); `load` attaches such
//! entries (and unnamed entries whose manifest has a `subject`, as ORAS writes them) as
//! referrers instead of loading them as images. A docker-archive has no place for them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, MediaType};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::layer::{
    self, Compression, EntryKind, LayerError, TarEntry, TarWriter, read::TarReader,
};
use crate::oci::image;
use crate::oci::{LayoutError, REF_NAME_ANNOTATION, referrers};
use crate::platform::Platform;

/// containerd's (and BuildKit's, Docker's) annotation for the full image name in an OCI
/// archive's `index.json`.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Largest metadata file (JSON) of an archive read into memory.
const MAX_METADATA: u64 = 16 * 1024 * 1024;

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI image layout.
    Oci,
    /// `docker save`'s format: `manifest.json` + config + layer tars.
    Docker,
}

/// Errors reading archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is neither an OCI layout nor a docker-archive.
    #[error("the archive has neither index.json nor manifest.json: not an image archive")]
    UnknownFormat,
    /// A file the archive's metadata names is not in it.
    #[error("the archive names {0} but does not contain it")]
    MissingFile(String),
    /// Metadata does not parse.
    #[error("{file} in the archive is not valid")]
    BadMetadata {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A docker-archive image's layers do not match its config.
    #[error("layer {layer} of {image}: {reason}")]
    BadLayer {
        /// The image.
        image: String,
        /// The layer file.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// A file in the archive has a path we refuse.
    #[error("archive entry {0:?} is not a safe relative path")]
    BadPath(String),
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What `load` put in the store: a name (when the archive had one) and the descriptor.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The name it was stored under, if the archive named it.
    pub name: Option<String>,
    /// The manifest or index.
    pub descriptor: Descriptor,
}

impl Store {
    /// Writes an archive of the image named `name` (for one platform, or every platform
    /// with `platform: None` in OCI format) to `out`.
    ///
    /// # Errors
    /// Unknown name or platform, missing blobs, write failures.
    pub fn save_archive(
        &self,
        name: &str,
        platform: Option<&Platform>,
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<(), StoreError> {
        let top = self.resolve_ref(name)?;
        match format {
            ArchiveFormat::Oci => {
                let top = match platform {
                    Some(platform) => {
                        let resolved = image::resolve_image(self.layout(), &top, Some(platform))?;
                        let mut descriptor = resolved.descriptor.clone();
                        descriptor.set_annotations(None);
                        descriptor
                    }
                    None => top,
                };
                self.save_oci(name, &top, out)
            }
            ArchiveFormat::Docker => {
                let resolved = image::resolve_image(self.layout(), &top, platform)?;
                self.save_docker(name, &resolved, out)
            }
        }
    }

    fn save_oci(&self, name: &str, top: &Descriptor, out: impl Write) -> Result<(), StoreError> {
        let mut blobs = HashSet::new();
        image::reachable_blobs(self.layout(), top, &mut blobs)?;
        let attached = self.referrer_closure(&blobs)?;
        for (_, referrer) in &attached {
            image::reachable_blobs(self.layout(), referrer, &mut blobs)?;
        }
        let mut blobs: Vec<Digest> = blobs.into_iter().collect();
        blobs.sort_by_key(ToString::to_string);
        let mut descriptor = top.clone();
        let mut annotations = HashMap::new();
        let name = super::normalize_ref(name);
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
        annotations.insert(CONTAINERD_NAME_ANNOTATION.to_owned(), name);
        descriptor.set_annotations(Some(annotations));
        let mut entries = vec![descriptor];
        for (subject, referrer) in attached {
            let mut entry = referrer;
            let mut annotations = entry.annotations().clone().unwrap_or_default();
            annotations.insert(
                referrers::SUBJECT_ANNOTATION.to_owned(),
                subject.to_string(),
            );
            entry.set_annotations(Some(annotations));
            entries.push(entry);
        }
        let index = image::build_index(entries);
        let mut tar = TarWriter::new(out, None);
        let write = |error: io::Error| StoreError::Layer(LayerError::Write(error));
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(write)?;
        append_bytes(&mut tar, "index.json", &image::canonical_json(&index)).map_err(write)?;
        for dir in ["blobs", "blobs/sha256"] {
            tar.append(&TarEntry::new(dir, EntryKind::Directory, 0o755), None)
                .map_err(write)?;
        }
        for digest in &blobs {
            if !self.layout().has_blob(digest) {
                return Err(LayoutError::MissingBlob {
                    digest: digest.clone(),
                    root: self.root().to_path_buf(),
                }
                .into());
            }
            let mut file = self.layout().open_blob(digest)?;
            let size = file
                .metadata()
                .map_err(super::file_error(
                    "inspecting",
                    &self.layout().blob_path(digest)?,
                ))?
                .len();
            let entry = TarEntry::new(
                format!("blobs/sha256/{}", digest.digest()),
                EntryKind::File { size },
                0o644,
            );
            tar.append(&entry, Some(&mut file)).map_err(write)?;
        }
        tar.finish().map_err(write)?;
        Ok(())
    }

    fn save_docker(
        &self,
        name: &str,
        resolved: &image::ResolvedImage,
        out: impl Write,
    ) -> Result<(), StoreError> {
        let write = |error: io::Error| StoreError::Layer(LayerError::Write(error));
        let mut tar = TarWriter::new(out, None);
        tar.append(&TarEntry::new("blobs", EntryKind::Directory, 0o755), None)
            .map_err(write)?;
        tar.append(
            &TarEntry::new("blobs/sha256", EntryKind::Directory, 0o755),
            None,
        )
        .map_err(write)?;
        let config_digest = resolved.manifest.config().digest();
        let config_bytes = self.layout().read_blob(config_digest)?;
        let config_path = format!("blobs/sha256/{}", config_digest.digest());
        append_bytes(&mut tar, &config_path, &config_bytes).map_err(write)?;
        let diff_ids = resolved.config.rootfs().diff_ids();
        let mut layer_paths = Vec::new();
        let mut written = HashSet::new();
        for (index, layer_descriptor) in resolved.manifest.layers().iter().enumerate() {
            // docker load wants uncompressed layer tars named by diff_id; decompress through
            // a temporary file, since a tar header needs the size first.
            let diff_id = diff_ids.get(index).cloned().unwrap_or_default();
            let hex = diff_id
                .strip_prefix("sha256:")
                .unwrap_or(&diff_id)
                .to_owned();
            let path = format!("blobs/sha256/{hex}");
            layer_paths.push(path.clone());
            if !written.insert(hex) {
                continue;
            }
            let blob = self.layout().open_blob(layer_descriptor.digest())?;
            let mut stream = layer::decompressed(blob).map_err(LayerError::Read)?;
            let tmp_dir = self.layout().tmp_dir();
            let mut tmp = tempfile::tempfile_in(&tmp_dir)
                .map_err(super::file_error("creating a temporary file in", &tmp_dir))?;
            let size = io::copy(&mut stream, &mut tmp).map_err(LayerError::Read)?;
            io::Seek::seek(&mut tmp, io::SeekFrom::Start(0)).map_err(LayerError::Read)?;
            let entry = TarEntry::new(path, EntryKind::File { size }, 0o644);
            tar.append(&entry, Some(&mut tmp)).map_err(write)?;
        }
        let manifest = vec![DockerArchiveImage {
            config: config_path,
            repo_tags: Some(vec![docker_tag(name)]),
            layers: layer_paths,
        }];
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest.json serialises");
        append_bytes(&mut tar, "manifest.json", &manifest_bytes).map_err(write)?;
        tar.finish().map_err(write)?;
        Ok(())
    }

    /// Reads an archive (OCI or docker, plain or compressed) into the store and names its
    /// images. `tag` names an image the archive leaves unnamed (or overrides a single one).
    ///
    /// # Errors
    /// Unknown format, missing or corrupt blobs, write failures.
    pub fn load_archive(
        &self,
        input: impl Read,
        tag: Option<&str>,
    ) -> Result<Vec<LoadedImage>, StoreError> {
        let stream = layer::decompressed(input).map_err(LayerError::Read)?;
        let mut reader = TarReader::new(stream);
        let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut files: BTreeMap<String, Digest> = BTreeMap::new();
        while let Some(entry) = reader.next_entry().map_err(StoreError::ArchiveTar)? {
            let EntryKind::File { size } = entry.kind else {
                continue;
            };
            let path = normalize_archive_path(&entry.path)?;
            let is_metadata = matches!(
                path.as_str(),
                "index.json" | "oci-layout" | "manifest.json" | "repositories"
            );
            if is_metadata {
                if size > MAX_METADATA {
                    return Err(StoreError::File {
                        action: "reading (too large for archive metadata)",
                        path: PathBuf::from(path),
                        source: io::ErrorKind::InvalidData.into(),
                    });
                }
                let mut bytes = Vec::new();
                reader
                    .content()
                    .read_to_end(&mut bytes)
                    .map_err(LayerError::Read)?;
                metadata.insert(path, bytes);
                continue;
            }
            let expected = path
                .strip_prefix("blobs/sha256/")
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
            let mut writer = self.layout().blob_writer()?;
            io::copy(&mut reader.content(), &mut writer).map_err(LayerError::Read)?;
            let (digest, _) = match &expected {
                Some(digest) => writer.commit(Some((digest, size)))?,
                None => writer.commit(None)?,
            };
            files.insert(path, digest);
        }
        if let Some(index) = metadata.get("index.json") {
            let index: ImageIndex =
                serde_json::from_slice(index).map_err(|source| ArchiveError::BadMetadata {
                    file: "index.json".to_owned(),
                    source,
                })?;
            return self.name_oci_images(&index, tag);
        }
        if let Some(manifest) = metadata.get("manifest.json") {
            let images: Vec<DockerArchiveImage> =
                serde_json::from_slice(manifest).map_err(|source| ArchiveError::BadMetadata {
                    file: "manifest.json".to_owned(),
                    source,
                })?;
            return self.import_docker_images(&images, &files, tag);
        }
        Err(ArchiveError::UnknownFormat.into())
    }

    fn name_oci_images(
        &self,
        index: &ImageIndex,
        tag: Option<&str>,
    ) -> Result<Vec<LoadedImage>, StoreError> {
        let mut loaded = Vec::new();
        let mut images = Vec::new();
        let mut attached = Vec::new();
        for descriptor in index.manifests() {
            match self.archived_subject(descriptor)? {
                Some(subject) => attached.push((subject, descriptor)),
                None => images.push(descriptor),
            }
        }
        let single = images.len() == 1;
        for descriptor in images {
            let mut needed = HashSet::new();
            image::reachable_blobs(self.layout(), descriptor, &mut needed)?;
            for digest in &needed {
                if !self.layout().has_blob(digest) {
                    return Err(ArchiveError::MissingFile(digest.to_string()).into());
                }
            }
            // Fail now, not at first use, if the image cannot be read.
            image::list_images(self.layout(), descriptor)?;
            let annotations = descriptor.annotations().clone().unwrap_or_default();
            let archived_name = annotations
                .get(CONTAINERD_NAME_ANNOTATION)
                .or_else(|| annotations.get(REF_NAME_ANNOTATION))
                .cloned();
            let name = match (tag, archived_name) {
                (Some(tag), _) if single => Some(super::normalize_ref(tag)),
                (_, Some(name)) => Some(super::normalize_ref(&name)),
                (Some(tag), None) => Some(super::normalize_ref(tag)),
                (None, None) => None,
            };
            let mut stored = descriptor.clone();
            stored.set_annotations(None);
            if let Some(name) = &name {
                self.set_ref(name, &stored)?;
            }
            loaded.push(LoadedImage {
                name,
                descriptor: stored,
            });
        }
        for (subject, referrer) in attached {
            let mut needed = HashSet::new();
            image::reachable_blobs(self.layout(), referrer, &mut needed)?;
            for digest in &needed {
                if !self.layout().has_blob(digest) {
                    return Err(ArchiveError::MissingFile(digest.to_string()).into());
                }
            }
            self.add_referrer(&subject, referrer)?;
        }
        Ok(loaded)
    }

    /// The subject of an archive's `index.json` entry when it is a referrer: named by the
    /// annotation xbuild writes, or, for an unnamed entry, by its manifest's `subject`.
    fn archived_subject(&self, entry: &Descriptor) -> Result<Option<Digest>, StoreError> {
        if let Some(subject) = referrers::subject_of(entry) {
            return Ok(Some(subject));
        }
        let annotations = entry.annotations().clone().unwrap_or_default();
        let named = annotations.contains_key(REF_NAME_ANNOTATION)
            || annotations.contains_key(CONTAINERD_NAME_ANNOTATION);
        if named || !image::is_manifest_media_type(entry.media_type()) {
            return Ok(None);
        }
        let manifest: serde_json::Value =
            self.layout().read_json(entry.digest(), "image manifest")?;
        Ok(manifest
            .get("subject")
            .and_then(|subject| serde_json::from_value::<Descriptor>(subject.clone()).ok())
            .map(|subject| subject.digest().clone()))
    }

    fn import_docker_images(
        &self,
        images: &[DockerArchiveImage],
        files: &BTreeMap<String, Digest>,
        tag: Option<&str>,
    ) -> Result<Vec<LoadedImage>, StoreError> {
        let mut loaded = Vec::new();
        for entry in images {
            let find = |path: &str| -> Result<Digest, StoreError> {
                let path = path.trim_start_matches("./");
                files
                    .get(path)
                    .cloned()
                    .ok_or_else(|| ArchiveError::MissingFile(path.to_owned()).into())
            };
            let config_digest = find(&entry.config)?;
            let config: ImageConfiguration = self
                .layout()
                .read_json(&config_digest, "image config")
                .map_err(StoreError::from)?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != entry.layers.len() {
                return Err(ArchiveError::BadLayer {
                    image: entry.config.clone(),
                    layer: String::new(),
                    reason: format!(
                        "{} layers but {} diff_ids in the config",
                        entry.layers.len(),
                        diff_ids.len()
                    ),
                }
                .into());
            }
            let mut layers = Vec::new();
            for (layer_path, diff_id) in entry.layers.iter().zip(diff_ids) {
                let digest = find(layer_path)?;
                let blob = self.layout().open_blob(&digest)?;
                let mut head = [0u8; 4];
                let read = io::Read::read(&mut &blob, &mut head).map_err(LayerError::Read)?;
                let head = &head[..read];
                let descriptor = if head.starts_with(&[0x1f, 0x8b]) {
                    self.described(&digest, MediaType::ImageLayerGzip)?
                } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    self.described(&digest, MediaType::ImageLayerZstd)?
                } else {
                    // An uncompressed tar (what docker save writes): store it gzip-compressed.
                    let blob = self.layout().open_blob(&digest)?;
                    let written = layer::write_tar_layer(self.layout(), blob, Compression::Gzip)?;
                    if written.diff_id.to_string() != *diff_id {
                        return Err(ArchiveError::BadLayer {
                            image: entry.config.clone(),
                            layer: layer_path.clone(),
                            reason: format!(
                                "content is {} but the config says {diff_id}",
                                written.diff_id
                            ),
                        }
                        .into());
                    }
                    written.descriptor
                };
                layers.push(descriptor);
            }
            let config_size = self.layout().read_blob(&config_digest)?.len() as u64;
            let config_descriptor =
                Descriptor::new(MediaType::ImageConfig, config_size, config_digest);
            let manifest = image::build_manifest(config_descriptor, layers, None);
            let descriptor = self.put_manifest(&manifest, Some(&Platform::of_config(&config)))?;
            let mut names: Vec<String> = entry
                .repo_tags
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|name| super::normalize_ref(name))
                .collect();
            if let Some(tag) = tag {
                if images.len() == 1 {
                    names = vec![super::normalize_ref(tag)];
                } else if names.is_empty() {
                    names.push(super::normalize_ref(tag));
                }
            }
            for name in &names {
                self.set_ref(name, &descriptor)?;
            }
            if names.is_empty() {
                loaded.push(LoadedImage {
                    name: None,
                    descriptor: descriptor.clone(),
                });
            }
            loaded.extend(names.into_iter().map(|name| LoadedImage {
                name: Some(name),
                descriptor: descriptor.clone(),
            }));
        }
        Ok(loaded)
    }

    fn described(&self, digest: &Digest, media_type: MediaType) -> Result<Descriptor, StoreError> {
        let path = self.layout().blob_path(digest)?;
        let size = std::fs::metadata(&path)
            .map_err(super::file_error("inspecting", &path))?
            .len();
        Ok(Descriptor::new(media_type, size, digest.clone()))
    }
}

impl From<ArchiveError> for StoreError {
    fn from(error: ArchiveError) -> Self {
        Self::Archive(error)
    }
}

fn append_bytes<W: Write>(tar: &mut TarWriter<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let entry = TarEntry::new(
        path,
        EntryKind::File {
            size: bytes.len() as u64,
        },
        0o644,
    );
    tar.append(&entry, Some(&mut &bytes[..]))
}

fn normalize_archive_path(raw: &[u8]) -> Result<String, ArchiveError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::BadPath(text)),
            part => parts.push(part),
        }
    }
    if text.starts_with('/') || parts.is_empty() {
        return Err(ArchiveError::BadPath(text));
    }
    Ok(parts.join("/"))
}

/// The name `docker load` shows: `docker.io/library/` left out, `:latest` added.
fn docker_tag(name: &str) -> String {
    super::display_ref(&super::normalize_ref(name)).to_owned()
}

//! Image archives written from a [`Built`](super::Built): an OCI archive (a tar of an OCI
//! image layout holding the result: the index for multi-platform builds) and a
//! docker-archive (`manifest.json` + configs + uncompressed layer tars, one entry per image,
//! each with its own tags, as `docker load` takes).
//!
//! Unlike `Store::save_archive`, these need no name in the store: a build exported only to a
//! file leaves no tag behind. An OCI archive carries the referrers (attestations) of what
//! it holds, as `save` does; a docker-archive has no place for them.

use std::collections::HashSet;
use std::io::{self, Seek, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, Digest};
use serde::Serialize;

use crate::layer::{self, EntryKind, TarEntry, TarWriter};
use crate::oci::image::{self, ResolvedImage};
use crate::oci::{REF_NAME_ANNOTATION, referrers};
use crate::store::{CONTAINERD_NAME_ANNOTATION, Store};

use super::ExportError;

/// One entry of a docker-archive `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
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

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.digest())
}

/// Writes an OCI archive of `top` (named `name` in `index.json` when given) to `out`.
pub(crate) fn write_oci(
    store: &Store,
    top: &Descriptor,
    name: Option<&str>,
    with_referrers: bool,
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let names: Vec<(String, String)> = name
        .map(|name| (name.to_owned(), name.to_owned()))
        .into_iter()
        .collect();
    write_oci_named(store, top, &names, with_referrers, dest, out)
}

/// Writes an OCI archive of `top` with one `index.json` entry per name, as containerd's
/// archive exporter writes one for each name (what `ctr images import` and a Docker engine
/// with the containerd image store read back): each `(ref_name, image_name)` gives
/// `org.opencontainers.image.ref.name` and `io.containerd.image.name`. No name: one entry
/// without either.
pub(crate) fn write_oci_named(
    store: &Store,
    top: &Descriptor,
    names: &[(String, String)],
    with_referrers: bool,
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let layout = store.layout();
    let mut blobs = HashSet::new();
    image::reachable_blobs(layout, top, &mut blobs).map_err(ExportError::reading)?;
    // The referrers (attestations) of what is written go with it, as `save` writes them:
    // unnamed entries naming their subject.
    let attached = if with_referrers {
        store
            .referrer_closure(&blobs)
            .map_err(ExportError::reading)?
    } else {
        Vec::new()
    };
    for (_, referrer) in &attached {
        image::reachable_blobs(layout, referrer, &mut blobs).map_err(ExportError::reading)?;
    }
    let mut blobs: Vec<Digest> = blobs.into_iter().collect();
    blobs.sort_by_key(ToString::to_string);
    // The descriptor's own annotations (`--annotation index-descriptor:...`) stay.
    let mut own = top.annotations().clone().unwrap_or_default();
    own.remove(REF_NAME_ANNOTATION);
    let unnamed = [None];
    let named: Vec<Option<&(String, String)>> = names.iter().map(Some).collect();
    let mut entries = Vec::new();
    for name in if names.is_empty() {
        &unnamed[..]
    } else {
        &named[..]
    } {
        let mut descriptor = top.clone();
        let mut annotations = own.clone();
        if let Some((ref_name, image_name)) = name {
            annotations.insert(REF_NAME_ANNOTATION.to_owned(), ref_name.clone());
            annotations.insert(CONTAINERD_NAME_ANNOTATION.to_owned(), image_name.clone());
        }
        descriptor.set_annotations((!annotations.is_empty()).then_some(annotations));
        entries.push(descriptor);
    }
    for (subject, mut referrer) in attached {
        let mut annotations = referrer.annotations().clone().unwrap_or_default();
        annotations.insert(
            referrers::SUBJECT_ANNOTATION.to_owned(),
            subject.to_string(),
        );
        referrer.set_annotations(Some(annotations));
        entries.push(referrer);
    }
    let index = image::build_index(entries);
    let mut tar = TarWriter::new(out, None);
    append_layout(&mut tar, store, &index, &blobs, dest)?;
    tar.finish().map_err(ExportError::writing(dest))?;
    Ok(())
}

/// Appends an OCI image layout (`oci-layout`, `index.json` of `index`, `blobs`) to `tar`.
fn append_layout<W: Write>(
    tar: &mut TarWriter<W>,
    store: &Store,
    index: &oci_spec::image::ImageIndex,
    blobs: &[Digest],
    dest: &Path,
) -> Result<(), ExportError> {
    let layout = store.layout();
    append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(ExportError::writing(dest))?;
    append_bytes(tar, "index.json", &image::canonical_json(&index))
        .map_err(ExportError::writing(dest))?;
    for dir in ["blobs", "blobs/sha256"] {
        tar.append(&TarEntry::new(dir, EntryKind::Directory, 0o755), None)
            .map_err(ExportError::writing(dest))?;
    }
    for digest in blobs {
        let mut file = layout.open_blob(digest).map_err(ExportError::reading)?;
        let size = file.metadata().map_err(ExportError::writing(dest))?.len();
        let entry = TarEntry::new(blob_path(digest), EntryKind::File { size }, 0o644);
        tar.append(&entry, Some(&mut file))
            .map_err(ExportError::writing(dest))?;
    }
    Ok(())
}

/// One image of an OCI-typed docker archive: its `index.json` names (`(ref name, image
/// name)`, as containerd's archive exporter writes them) and its `manifest.json` tags.
pub(crate) struct DockerOciImage {
    /// The image.
    pub image: ResolvedImage,
    /// `org.opencontainers.image.ref.name` and `io.containerd.image.name` of each entry.
    pub names: Vec<(String, String)>,
    /// Its `RepoTags` (`repo:tag`, short form).
    pub tags: Vec<String>,
}

/// Writes BuildKit's docker archive with OCI media types (`type=docker,oci-mediatypes=true`):
/// an OCI image layout of `image` (one `index.json` entry per `(ref name, image name)`, as
/// containerd's archive exporter writes them) and `manifest.json` listing the same config
/// and (compressed) layer blobs with `tags`, which `docker load` reads.
pub(crate) fn write_docker_oci(
    store: &Store,
    image: &ResolvedImage,
    names: &[(String, String)],
    tags: &[String],
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let image = DockerOciImage {
        image: image.clone(),
        names: names.to_vec(),
        tags: tags.to_vec(),
    };
    write_docker_oci_images(store, &[image], dest, out)
}

/// As [`write_docker_oci`] for several images (a `--load` of several platforms into a
/// classic engine, each under its own tags): one layout whose `index.json` has each
/// image's entries, and one `manifest.json` entry per image.
pub(crate) fn write_docker_oci_images(
    store: &Store,
    images: &[DockerOciImage],
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let mut blobs = Vec::new();
    let mut entries: Vec<Descriptor> = Vec::new();
    let mut manifest = Vec::new();
    for DockerOciImage { image, names, tags } in images {
        blobs.push(image.descriptor.digest().clone());
        blobs.push(image.manifest.config().digest().clone());
        blobs.extend(image.manifest.layers().iter().map(|l| l.digest().clone()));
        let top = image.descriptor.clone();
        if names.is_empty() {
            entries.push(top);
        } else {
            entries.extend(names.iter().map(|(ref_name, image_name)| {
                let mut descriptor = top.clone();
                let mut annotations = descriptor.annotations().clone().unwrap_or_default();
                annotations.insert(REF_NAME_ANNOTATION.to_owned(), ref_name.clone());
                annotations.insert(CONTAINERD_NAME_ANNOTATION.to_owned(), image_name.clone());
                descriptor.set_annotations(Some(annotations));
                descriptor
            }));
        }
        manifest.push(DockerArchiveImage {
            config: blob_path(image.manifest.config().digest()),
            repo_tags: tags.clone(),
            layers: image
                .manifest
                .layers()
                .iter()
                .map(|layer| blob_path(layer.digest()))
                .collect(),
        });
    }
    let mut seen = HashSet::new();
    blobs.retain(|digest| seen.insert(digest.clone()));
    blobs.sort_by_key(ToString::to_string);
    let index = image::build_index(entries);
    let mut tar = TarWriter::new(out, None);
    append_layout(&mut tar, store, &index, &blobs, dest)?;
    let manifest = serde_json::to_vec(&manifest).expect("manifest.json serialises");
    append_bytes(&mut tar, "manifest.json", &manifest).map_err(ExportError::writing(dest))?;
    tar.finish().map_err(ExportError::writing(dest))?;
    Ok(())
}

/// Writes a docker-archive holding each image with its tags (`repo:tag`, short form).
pub(crate) fn write_docker(
    store: &Store,
    images: &[(ResolvedImage, Vec<String>)],
    dest: &Path,
    out: impl Write,
) -> Result<(), ExportError> {
    let layout = store.layout();
    let mut tar = TarWriter::new(out, None);
    for dir in ["blobs", "blobs/sha256"] {
        tar.append(&TarEntry::new(dir, EntryKind::Directory, 0o755), None)
            .map_err(ExportError::writing(dest))?;
    }
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    for (resolved, tags) in images {
        let config_digest = resolved.manifest.config().digest();
        let config_path = blob_path(config_digest);
        if written.insert(config_path.clone()) {
            let bytes = layout
                .read_blob(config_digest)
                .map_err(ExportError::reading)?;
            append_bytes(&mut tar, &config_path, &bytes).map_err(ExportError::writing(dest))?;
        }
        let diff_ids = resolved.config.rootfs().diff_ids();
        let mut layer_paths = Vec::new();
        for (index, layer_descriptor) in resolved.manifest.layers().iter().enumerate() {
            // docker load wants uncompressed layer tars; decompress through a temporary file,
            // since a tar header needs the size first.
            let diff_id = diff_ids.get(index).cloned().unwrap_or_default();
            let hex = diff_id
                .strip_prefix("sha256:")
                .unwrap_or(&diff_id)
                .to_owned();
            let path = format!("blobs/sha256/{hex}");
            layer_paths.push(path.clone());
            if !written.insert(path.clone()) {
                continue;
            }
            let blob = layout
                .open_blob(layer_descriptor.digest())
                .map_err(ExportError::reading)?;
            let mut stream = layer::decompressed(blob).map_err(ExportError::writing(dest))?;
            let tmp_dir = layout.tmp_dir();
            let mut tmp = tempfile::tempfile_in(&tmp_dir).map_err(ExportError::writing(dest))?;
            let size = io::copy(&mut stream, &mut tmp).map_err(ExportError::writing(dest))?;
            tmp.seek(io::SeekFrom::Start(0))
                .map_err(ExportError::writing(dest))?;
            let entry = TarEntry::new(path, EntryKind::File { size }, 0o644);
            tar.append(&entry, Some(&mut tmp))
                .map_err(ExportError::writing(dest))?;
        }
        entries.push(DockerArchiveImage {
            config: config_path,
            repo_tags: tags.clone(),
            layers: layer_paths,
        });
    }
    let manifest = serde_json::to_vec(&entries).expect("manifest.json serialises");
    append_bytes(&mut tar, "manifest.json", &manifest).map_err(ExportError::writing(dest))?;
    tar.finish().map_err(ExportError::writing(dest))?;
    Ok(())
}

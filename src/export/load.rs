//! `--load`: the build's images into a Docker engine, as buildx loads them. An engine with
//! the containerd image store (told by `GET /info`, as buildx tells it) gets an OCI archive
//! of the whole index with an `index.json` entry per tag, as buildx sends it (BuildKit's
//! `oci` exporter): every platform under each tag. A classic engine keeps one platform per
//! tag, so it gets a docker-archive: the host's platform under the plain tag, the others as
//! `tag-<arch>`, and a note says so.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    ExportError, ExportReport, Written, archive, containerd_names, engine, resolve_images,
    temp_archive,
};
use crate::executor::Built;
use crate::platform::Platform;
use crate::registry::ImageRef;
use crate::store::{Store, display_ref};

/// The name `docker load` shows: `docker.io/library/` left out.
pub(super) fn docker_tag(reference: &ImageRef) -> String {
    display_ref(&reference.store_name()).to_owned()
}

/// `tag-<arch>[-<variant>]` for the platforms that do not get the plain tag.
fn suffixed_tag(reference: &ImageRef, platform: &Platform) -> String {
    let suffix = match &platform.variant {
        Some(variant) => format!("{}-{variant}", platform.architecture),
        None => platform.architecture.clone(),
    };
    let tag = reference.tag().unwrap_or("latest");
    format!(
        "{}:{tag}-{suffix}",
        display_ref(&reference.repository_name())
    )
}

/// `--load`: the whole index into an engine with the containerd image store, else one
/// docker-archive with an entry per platform.
pub(super) async fn load_into_engine(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    report: &mut ExportReport,
) -> Result<Written, ExportError> {
    let socket = engine::docker_socket().map_err(ExportError::Load)?;
    // `GET /info` is the reachability check too: one request before the archive.
    match engine::image_store(&socket)
        .await
        .map_err(ExportError::Load)?
    {
        engine::ImageStore::Containerd => load_index(store, built, references, socket).await,
        engine::ImageStore::Classic => {
            let tags = load_per_platform(store, built, references, report, &socket).await?;
            Ok(Written::Loaded { socket, tags })
        }
    }
}

/// An engine with the containerd image store: an OCI archive of the result with an
/// `index.json` entry per tag (`io.containerd.image.name` the full name, the
/// `org.opencontainers.image.ref.name` its tag), as BuildKit's `oci` exporter writes what
/// buildx sends. No attestations: `--load` is refused with them before the build.
async fn load_index(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    socket: PathBuf,
) -> Result<Written, ExportError> {
    let names = containerd_names(references);
    let top = built.result().clone();
    send(store, &socket, move |store, path, out| {
        archive::write_oci_named(store, &top, &names, false, path, out)
    })
    .await?;
    Ok(Written::LoadedIndex {
        into: format!(
            "the Docker engine on {} (containerd image store)",
            socket.display()
        ),
        names: references.iter().map(docker_tag).collect(),
        platforms: built.images.iter().map(|i| i.platform.clone()).collect(),
    })
}

/// Writes an archive in the store's `tmp/` with `write`, then loads it into the engine.
async fn send(
    store: &Store,
    socket: &Path,
    write: impl FnOnce(&Store, &Path, &mut dyn Write) -> Result<(), ExportError> + Send + 'static,
) -> Result<(), ExportError> {
    let archive_file = temp_archive(store, "load-", write).await?;
    let messages = engine::load(socket, archive_file.path())
        .await
        .map_err(ExportError::Load);
    // The archive is deleted only once the engine has read it.
    drop(archive_file);
    messages.map(drop)
}

/// A classic engine: one docker-archive, the host's platform (else the first) under the
/// tags, the others under `tag-<arch>`, with a note saying so.
async fn load_per_platform(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    report: &mut ExportReport,
    socket: &Path,
) -> Result<Vec<(String, Platform)>, ExportError> {
    let images = resolve_images(store, built)?;

    let platforms: Vec<Platform> = images.iter().map(|(p, _)| p.clone()).collect();
    let chosen =
        crate::platform::best_match(&crate::platform::host(), &platforms).unwrap_or_default();
    let mut entries = Vec::new();
    let mut loaded = Vec::new();
    for (index, (platform, resolved)) in images.into_iter().enumerate() {
        let tags: Vec<String> = if index == chosen {
            references.iter().map(docker_tag).collect()
        } else {
            references
                .iter()
                .map(|reference| suffixed_tag(reference, &platform))
                .collect()
        };
        if tags.is_empty() {
            loaded.push((String::new(), platform.clone()));
        }
        loaded.extend(tags.iter().map(|tag| (tag.clone(), platform.clone())));
        entries.push((resolved, tags));
    }
    if platforms.len() > 1 && !references.is_empty() {
        report.notes.push(format!(
            "the Docker engine keeps images in its classic store, one platform per tag (an \
             engine with the containerd image store takes the whole index under the tag): {} \
             is loaded as {}, the others as {}",
            platforms[chosen],
            references
                .iter()
                .map(docker_tag)
                .collect::<Vec<_>>()
                .join(", "),
            loaded
                .iter()
                .filter(|(_, platform)| *platform != platforms[chosen])
                .map(|(tag, _)| tag.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    send(store, socket, move |store, path, out| {
        archive::write_docker(store, &entries, path, out)
    })
    .await?;
    Ok(loaded)
}

//! `--load`: the build's images as one docker-archive streamed to a Docker engine, one tag
//! per platform (the host's platform gets the plain tag, the others `tag-<arch>`).

use std::io::Write;
use std::path::PathBuf;

use super::{ExportError, ExportReport, archive, blocking, engine, resolve_images};
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

/// `--load`: one docker-archive with an entry per platform, streamed to the engine.
pub(super) async fn load_into_engine(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    report: &mut ExportReport,
) -> Result<(PathBuf, Vec<(String, Platform)>), ExportError> {
    let socket = engine::docker_socket().map_err(ExportError::Load)?;
    engine::ping(&socket).await.map_err(ExportError::Load)?;
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
            "the Docker engine takes one platform per tag: {} is loaded as {}, the others as \
             {}",
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
    let tmp_dir = store.layout().tmp_dir();
    let archive_file = tempfile::Builder::new()
        .prefix("load-")
        .suffix(".tar")
        .tempfile_in(&tmp_dir)
        .map_err(ExportError::writing(&tmp_dir))?;
    let archive_path = archive_file.path().to_path_buf();
    let (task_store, task_path) = (store.clone(), archive_path.clone());
    let archive_file = blocking(move || {
        let mut out = std::io::BufWriter::new(archive_file.as_file());
        archive::write_docker(&task_store, &entries, &task_path, &mut out)?;
        out.flush().map_err(ExportError::writing(&task_path))?;
        drop(out);
        Ok(archive_file)
    })
    .await?;
    let messages = engine::load(&socket, &archive_path)
        .await
        .map_err(ExportError::Load);
    // The archive is deleted only once the engine has read it.
    drop(archive_file);
    messages?;
    Ok((socket, loaded))
}

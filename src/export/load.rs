//! `--load`: the build's images into a Docker engine, as buildx loads them. An engine with
//! the containerd image store (told by `GET /info`, as buildx tells it) gets an OCI archive
//! of the whole index with an `index.json` entry per tag, as buildx sends it (BuildKit's
//! `oci` exporter): every platform under each tag. A classic engine keeps one platform per
//! tag, so it gets a docker-archive: the host's platform under the plain tag, the others as
//! `tag-<arch>`, and a note says so. With `oci-mediatypes=true` (`-o type=docker` without
//! `dest`) the classic engine gets BuildKit's OCI-typed docker archive instead (an OCI
//! layout of the same images, compressed blobs and OCI media types, plus `manifest.json`
//! with the same tags), as `-o type=docker,oci-mediatypes=true,dest=FILE` writes it; the
//! containerd image store's OCI archive already has OCI media types.

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

/// `<tag>-<arch>[-<variant>]`: the tag of a platform that does not get the plain tag.
fn platform_tag(reference: &ImageRef, platform: &Platform) -> String {
    let suffix = match &platform.variant {
        Some(variant) => format!("{}-{variant}", platform.architecture),
        None => platform.architecture.clone(),
    };
    format!("{}-{suffix}", reference.tag().unwrap_or("latest"))
}

/// `repo:tag-<arch>[-<variant>]` (short form) for the platforms that do not get the plain tag.
fn suffixed_tag(reference: &ImageRef, platform: &Platform) -> String {
    format!(
        "{}:{}",
        display_ref(&reference.repository_name()),
        platform_tag(reference, platform)
    )
}

/// The `index.json` names of a platform under `tag-<arch>`: the ref name (`tag-<arch>`) and
/// the full image name, as [`containerd_names`] gives them for the plain tag.
fn suffixed_name(reference: &ImageRef, platform: &Platform) -> (String, String) {
    let tag = platform_tag(reference, platform);
    let name = format!("{}:{tag}", reference.repository_name());
    (tag, name)
}

/// `--load`: the whole index into an engine with the containerd image store, else one
/// docker-archive with an entry per platform (OCI-typed with `oci_media_types`).
pub(super) async fn load_into_engine(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    oci_media_types: bool,
    report: &mut ExportReport,
) -> Result<Written, ExportError> {
    let socket = engine::docker_socket().map_err(ExportError::Load)?;
    load_into_socket(store, built, references, oci_media_types, report, socket).await
}

/// [`load_into_engine`] into the engine on `socket`.
async fn load_into_socket(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    oci_media_types: bool,
    report: &mut ExportReport,
    socket: PathBuf,
) -> Result<Written, ExportError> {
    // `GET /info` is the reachability check too: one request before the archive.
    match engine::image_store(&socket)
        .await
        .map_err(ExportError::Load)?
    {
        engine::ImageStore::Containerd => load_index(store, built, references, socket).await,
        engine::ImageStore::Classic => {
            let tags =
                load_per_platform(store, built, references, oci_media_types, report, &socket)
                    .await?;
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

/// A classic engine: one docker-archive (OCI-typed with `oci_media_types`), the host's
/// platform (else the first) under the tags, the others under `tag-<arch>`, with a note
/// saying so.
async fn load_per_platform(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    oci_media_types: bool,
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
        let (tags, names): (Vec<String>, Vec<(String, String)>) = if index == chosen {
            (
                references.iter().map(docker_tag).collect(),
                containerd_names(references),
            )
        } else {
            references
                .iter()
                .map(|reference| {
                    let (tag, name) = suffixed_name(reference, &platform);
                    (suffixed_tag(reference, &platform), (tag, name))
                })
                .unzip()
        };
        if tags.is_empty() {
            loaded.push((String::new(), platform.clone()));
        }
        loaded.extend(tags.iter().map(|tag| (tag.clone(), platform.clone())));
        entries.push(archive::DockerOciImage {
            image: resolved,
            names,
            tags,
        });
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
        if oci_media_types {
            archive::write_docker_oci_images(store, &entries, path, out)
        } else {
            let entries: Vec<_> = entries
                .into_iter()
                .map(|entry| (entry.image, entry.tags))
                .collect();
            archive::write_docker(store, &entries, path, out)
        }
    })
    .await?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use oci_spec::image::{ImageConfiguration, MediaType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::executor::BuiltImage;
    use crate::oci::image as oci_image;

    /// A store holding one image per platform (a config and one gzip layer each) and the
    /// index over them.
    fn store_with_images(dir: &Path, platforms: &[&str]) -> (Store, Built) {
        let store = Store::open(dir).unwrap();
        let layout = store.layout();
        let mut images = Vec::new();
        for platform in platforms {
            let platform = Platform::parse(platform).unwrap();
            let mut tar = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, "arch", &b"hello"[..]).unwrap();
            let tar = tar.into_inner().unwrap();
            let diff_id = crate::oci::digest::sha256_digest(&tar);
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(&tar).unwrap();
            let (layer, layer_size) = layout.write_blob(&gzip.finish().unwrap()).unwrap();
            let mut config = oci_image::new_image_config(&platform, None);
            config.rootfs_mut().set_diff_ids(vec![diff_id.to_string()]);
            let config: &ImageConfiguration = &config;
            let config =
                oci_image::write_json_blob(layout, MediaType::ImageConfig, config).unwrap();
            let manifest = oci_image::build_manifest(
                config,
                vec![oci_image::descriptor(
                    MediaType::ImageLayerGzip,
                    layer,
                    layer_size,
                )],
                None,
            );
            let manifest =
                oci_image::write_json_blob(layout, MediaType::ImageManifest, &manifest).unwrap();
            images.push(BuiltImage { platform, manifest });
        }
        let index = oci_image::build_index(images.iter().map(|i| i.manifest.clone()).collect());
        let index = oci_image::write_json_blob(layout, MediaType::ImageIndex, &index).unwrap();
        let built = Built {
            images,
            index,
            explicit_platforms: true,
        };
        (store, built)
    }

    /// An engine on a unix socket in `dir`: answers `/info` (with the containerd image
    /// store's `DriverStatus` when `containerd_store`, else a classic one) and
    /// `/images/load`; gives back the archive it was sent.
    async fn fake_engine(
        dir: &Path,
        containerd_store: bool,
    ) -> (PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let engine = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut raw = Vec::new();
                let head_end = loop {
                    let mut buffer = [0; 4096];
                    let read = stream.read(&mut buffer).await.unwrap();
                    assert!(read > 0, "the request ended early");
                    raw.extend_from_slice(&buffer[..read]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|value| value.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                let mut body = raw[head_end..].to_vec();
                while body.len() < length {
                    let mut buffer = [0; 65536];
                    let read = stream.read(&mut buffer).await.unwrap();
                    assert!(read > 0, "the body ended early");
                    body.extend_from_slice(&buffer[..read]);
                }
                let reply = if head.starts_with("GET /info") && containerd_store {
                    r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#
                } else if head.starts_with("GET /info") {
                    r#"{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#
                } else {
                    "{\"stream\":\"Loaded image: app:1\\n\"}\n"
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
                if head.starts_with("POST /images/load") {
                    return body;
                }
            }
        });
        (socket, engine)
    }

    /// The files of a tar archive, by name.
    fn files(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut files = std::collections::BTreeMap::new();
        let mut archive = tar::Archive::new(archive);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(name, bytes);
        }
        files
    }

    /// What a classic engine is sent for two platforms: with `oci_media_types`, BuildKit's
    /// OCI-typed docker archive (an OCI layout whose manifests have OCI media types and
    /// compressed layers, with `manifest.json` giving the same tags as the docker-typed
    /// load); without, the classic docker-archive (no layout, uncompressed layers).
    #[tokio::test]
    async fn a_classic_engine_is_sent_the_oci_typed_archive_with_oci_media_types() {
        let dir = tempfile::tempdir().unwrap();
        let (store, built) =
            store_with_images(&dir.path().join("store"), &["linux/amd64", "linux/arm64"]);
        let host = crate::platform::host();
        let references = [ImageRef::parse("xbuild-test/unit:1").unwrap()];
        let mut manifests_by_oci = Vec::new();
        for oci in [true, false] {
            let engine_dir = dir.path().join(format!("engine-{oci}"));
            std::fs::create_dir_all(&engine_dir).unwrap();
            let (socket, engine) = fake_engine(&engine_dir, false).await;
            let mut report = ExportReport::default();
            let written = load_into_socket(&store, &built, &references, oci, &mut report, socket)
                .await
                .unwrap();
            let Written::Loaded { tags, .. } = written else {
                panic!("{written:?}");
            };
            let sent = files(&engine.await.unwrap());
            let manifest: serde_json::Value =
                serde_json::from_slice(&sent["manifest.json"]).unwrap();
            let entries = manifest.as_array().unwrap();
            assert_eq!(entries.len(), 2, "{manifest}");
            for (tag, platform) in &tags {
                let entry = entries
                    .iter()
                    .find(|entry| entry["RepoTags"][0] == tag.as_str())
                    .unwrap_or_else(|| panic!("{tag}: {manifest}"));
                let config: serde_json::Value =
                    serde_json::from_slice(&sent[entry["Config"].as_str().unwrap()]).unwrap();
                assert_eq!(config["architecture"], platform.architecture.as_str());
                let layer = &sent[entry["Layers"][0].as_str().unwrap()];
                // gzip's magic with OCI types (the blob as stored), a plain tar without.
                assert_eq!(layer.starts_with(&[0x1f, 0x8b]), oci, "{tag}");
            }
            let plain = tags
                .iter()
                .find(|(tag, _)| tag == "xbuild-test/unit:1")
                .unwrap();
            let platforms: Vec<Platform> =
                built.images.iter().map(|i| i.platform.clone()).collect();
            let chosen = crate::platform::best_match(&host, &platforms).unwrap_or_default();
            assert_eq!(plain.1, platforms[chosen]);
            manifests_by_oci.push((oci, sent.contains_key("index.json")));
            if !oci {
                assert!(!sent.contains_key("oci-layout"), "{:?}", sent.keys());
                continue;
            }
            assert!(sent.contains_key("oci-layout"), "{:?}", sent.keys());
            let index: serde_json::Value = serde_json::from_slice(&sent["index.json"]).unwrap();
            let listed = index["manifests"].as_array().unwrap();
            assert_eq!(listed.len(), 2, "{index}");
            let mut names = Vec::new();
            for descriptor in listed {
                assert_eq!(
                    descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json",
                    "{index}"
                );
                names.push(
                    descriptor["annotations"]["io.containerd.image.name"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                let hex = descriptor["digest"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("sha256:")
                    .unwrap();
                let document: serde_json::Value =
                    serde_json::from_slice(&sent[&format!("blobs/sha256/{hex}")]).unwrap();
                assert_eq!(
                    document["mediaType"],
                    "application/vnd.oci.image.manifest.v1+json"
                );
                assert_eq!(
                    document["config"]["mediaType"],
                    "application/vnd.oci.image.config.v1+json"
                );
                assert_eq!(
                    document["layers"][0]["mediaType"],
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                );
            }
            names.sort();
            let other = if plain.1.architecture == "amd64" {
                "arm64"
            } else {
                "amd64"
            };
            assert_eq!(
                names,
                [
                    "docker.io/xbuild-test/unit:1".to_owned(),
                    format!("docker.io/xbuild-test/unit:1-{other}")
                ]
            );
        }
        assert_eq!(manifests_by_oci, [(true, true), (false, false)]);
    }

    /// With the containerd image store the key changes nothing: the engine gets the OCI
    /// archive of the whole index (OCI media types, every platform under the tag), as a
    /// `--load` sends it.
    #[tokio::test]
    async fn an_engine_with_the_containerd_image_store_gets_the_whole_index() {
        let dir = tempfile::tempdir().unwrap();
        let (store, built) =
            store_with_images(&dir.path().join("store"), &["linux/amd64", "linux/arm64"]);
        let references = [ImageRef::parse("xbuild-test/unit:1").unwrap()];
        let (socket, engine) = fake_engine(dir.path(), true).await;
        let mut report = ExportReport::default();
        let written = load_into_socket(&store, &built, &references, true, &mut report, socket)
            .await
            .unwrap();
        assert!(
            matches!(written, Written::LoadedIndex { ref platforms, .. } if platforms.len() == 2),
            "{written:?}"
        );
        let sent = files(&engine.await.unwrap());
        assert!(!sent.contains_key("manifest.json"), "{:?}", sent.keys());
        let index: serde_json::Value = serde_json::from_slice(&sent["index.json"]).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], built.index.digest().to_string());
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/xbuild-test/unit:1"
        );
    }
}

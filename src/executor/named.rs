//! `--build-context NAME=VALUE`: what a named context is ([`NamedContext`], parsed from the
//! flag's value as buildx reads it) and the step that reads one for a vertex's platform
//! ([`load`], for the planner's [`Op::Context`](crate::plan::Op::Context) vertices): an
//! image (`docker-image://`, from the store or its registry), an OCI image layout on disk
//! (`oci-layout://`, the platform picked from its index), or a local directory read after
//! its own `.dockerignore` and made into one layer, as BuildKit reads a named local context.
//!
//! The key of the vertex is the content: the image's manifest digest, or the digest of the
//! directory after `.dockerignore`. It must not fetch URLs (the pipeline fetches them into
//! a directory first) nor know which instruction reads the context.

use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::image::Descriptor;

use super::error::{ExecutorError, Within as _};
use super::from::{image_state, resolve_image};
use super::materials::Material;
use super::services::Services;
use super::sources::ContextFiles;
use super::state::Done;
use crate::cache::Key;
use crate::layer::{self, FileListEntry};
use crate::oci::ImageLayout;
use crate::oci::ImageState;
use crate::oci::image as oci_image;
use crate::plan::{ContextKind, Vertex};
use crate::progress::{Event, VertexId};

/// The value of one `--build-context NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF[@sha256:...]`: the image, resolved for each platform as `FROM`
    /// resolves it (`docker-image://scratch`: an empty file system).
    Image(String),
    /// `oci-layout://PATH[:TAG][@sha256:...]`: an image in an OCI image layout directory
    /// (by digest, else by tag (`latest` when none is given), else its only image, as
    /// buildx looks it up), for each platform.
    OciLayout {
        /// The layout's directory.
        path: PathBuf,
        /// `:TAG`: the `org.opencontainers.image.ref.name` of an `index.json` entry.
        tag: Option<String>,
        /// `@sha256:...`: an index or manifest in the layout.
        digest: Option<String>,
    },
    /// A local directory, read after its own `.dockerignore` (never the Dockerfile's).
    Dir(PathBuf),
    /// A URL as buildx takes one for a context: a git repository (`https://host/repo.git#ref`,
    /// `git@host:repo`, ...), or an `http(s)://` tarball (unpacked) or other file (a
    /// directory holding it as `context`, as BuildKit names it). The pipeline fetches it
    /// into a directory (only when the build uses it) before the steps run.
    Url(String),
}

impl NamedContext {
    /// Reads a `--build-context` value as buildx does: `docker-image://`, `oci-layout://`,
    /// a URL (fetched by the pipeline), `target:` (refused), else a directory path. The
    /// directory or layout must exist (checked now, before any work).
    ///
    /// # Errors
    /// Why the value cannot be used, as a sentence without the flag.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(reference) = value.strip_prefix("docker-image://") {
            if reference.is_empty() {
                return Err("docker-image:// needs an image reference".to_owned());
            }
            if reference != "scratch" {
                crate::registry::ImageRef::parse(reference)
                    .map_err(|error| format!("docker-image://{reference}: {error}"))?;
            }
            return Ok(Self::Image(reference.to_owned()));
        }
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            // As buildx cuts it: the digest after the first `@`, the tag after the first `:`.
            let (rest, digest) = match rest.split_once('@') {
                Some((rest, digest)) => {
                    if digest.strip_prefix("sha256:").is_none_or(|hex| {
                        hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit())
                    }) {
                        return Err(format!(
                            "oci-layout://{rest}@{digest}: the digest must be sha256:<64 hex digits>"
                        ));
                    }
                    (rest, Some(digest.to_ascii_lowercase()))
                }
                None => (rest, None),
            };
            let (path, tag) = match rest.split_once(':') {
                Some((path, tag)) => (path, Some(tag.to_owned())),
                None => (rest, None),
            };
            let path = PathBuf::from(path);
            ImageLayout::open(&path).map_err(|error| format!("oci-layout://{rest}: {error}"))?;
            return Ok(Self::OciLayout { path, tag, digest });
        }
        if value.starts_with("target:") {
            return Err(
                "target: contexts (another bake target) are not supported: xbuild builds one target"
                    .to_owned(),
            );
        }
        if value.starts_with("input:") {
            return Err("input: contexts are not supported (a frontend's inputs)".to_owned());
        }
        if crate::remote::is_remote_context(value) {
            // A git repository over ssh is fetched through `--ssh default` (pipeline).
            return Ok(Self::Url(value.to_owned()));
        }
        let path = PathBuf::from(value);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(Self::Dir(path)),
            Ok(_) => Err(format!("{value} is not a directory")),
            Err(error) => Err(format!("{value}: {error}")),
        }
    }

    /// What the planner needs to know of it.
    pub fn plan_kind(&self) -> ContextKind {
        match self {
            Self::Image(reference) => ContextKind::Image {
                reference: reference.clone(),
            },
            Self::OciLayout { .. } | Self::Dir(_) | Self::Url(_) => ContextKind::Other,
        }
    }
}

/// The named context `name` for `vertex`'s platform: its state (an image's layers and
/// config, or a directory's files as one layer on an empty config), keyed by its content.
///
/// # Errors
/// The image cannot be resolved or pulled, the layout has no image for the platform, the
/// directory cannot be read.
pub(crate) fn load(
    services: &Services<'_>,
    vertex: &Vertex,
    name: &str,
) -> Result<Done, ExecutorError> {
    let context = services
        .options
        .named_contexts
        .get(name)
        .ok_or_else(|| ExecutorError::Internal(format!("no build context {name}")))?;
    let display = vertex.display_name();
    let mut key = Key::new(&vertex.id, None);
    match context {
        NamedContext::Image(reference) if reference == "scratch" => {
            key.add("scratch", &vertex.platform.to_string());
            Ok(Done::new(
                ImageState::new(oci_image::new_image_config(&vertex.platform, None)),
                key.finish(),
            ))
        }
        NamedContext::Image(reference) => image(services, &display, key, |id| {
            resolve_image(services, reference, vertex, id)
        }),
        NamedContext::OciLayout { path, tag, digest } => image(services, &display, key, |_| {
            oci_layout(services, vertex, path, tag.as_deref(), digest.as_deref())
        }),
        NamedContext::Dir(dir) => directory(services, vertex, name, dir, key),
        NamedContext::Url(url) => Err(ExecutorError::Internal(format!(
            "build context {name}: {url} was not fetched"
        ))),
    }
}

/// An image context's step: `resolve` (given the progress vertex) inside `Started` and
/// `Finished` events, keyed by the manifest it resolved to.
fn image(
    services: &Services<'_>,
    display: &str,
    mut key: Key,
    resolve: impl FnOnce(VertexId) -> Result<(Descriptor, ImageState), ExecutorError>,
) -> Result<Done, ExecutorError> {
    let id = services.counter.next();
    let started = Instant::now();
    services.sink.emit(Event::Started {
        vertex: id,
        name: display.to_owned(),
        emulated: false,
    });
    let (manifest, state) = resolve(id).within(|| display.to_owned())?;
    services.sink.emit(Event::Finished {
        vertex: id,
        duration: started.elapsed(),
    });
    key.add("image", manifest.digest().as_ref());
    Ok(Done::new(state, key.finish()))
}

/// An image of an OCI layout for `vertex`'s platform, its blobs copied into the store and
/// its snapshots unpacked; recorded as a material (`oci-layout://PATH@<manifest digest>`).
fn oci_layout(
    services: &Services<'_>,
    vertex: &Vertex,
    path: &Path,
    tag: Option<&str>,
    digest: Option<&str>,
) -> Result<(Descriptor, ImageState), ExecutorError> {
    let bad = |reason: String| ExecutorError::BaseImage {
        reference: format!("oci-layout://{}", path.display()),
        reason,
    };
    let layout = ImageLayout::open(path)?;
    let chosen = layout_entry(&layout, path, tag, digest)?;
    let image = oci_image::resolve_image(&layout, &chosen, Some(&vertex.platform))
        .map_err(|error| bad(error.to_string()))?;
    let store_layout = services.store.layout();
    let config = image.manifest.config();
    let blobs = std::iter::once(config).chain(image.manifest.layers());
    for blob in blobs {
        store_layout.copy_blob_from(&layout, blob)?;
    }
    let manifest_bytes = layout.read_blob(image.descriptor.digest())?;
    let (manifest_digest, _) = store_layout.write_blob(&manifest_bytes)?;
    let descriptor = oci_image::descriptor(
        oci_spec::image::MediaType::ImageManifest,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    services
        .store
        .ensure_snapshots_for(&image.manifest, image.config.rootfs().diff_ids())?;
    let reference = format!("oci-layout://{}", path.display());
    let state = image_state(services, &reference, &image.manifest, config.digest())?;
    services.materials.record(
        vertex,
        &Material::Image {
            reference,
            platform: vertex.platform.clone(),
            digest: descriptor.digest().to_string(),
        },
    );
    Ok((descriptor, state))
}

/// The descriptor `oci-layout://PATH[:TAG][@sha256:...]` names in `layout` (the directory
/// at `path`): by digest (an `index.json` entry, else any blob of the layout), else by tag,
/// else `latest`, else the only image; as buildx looks it up. The build's side of a build
/// with nodes picks it the same way, to ship what the node reads.
///
/// # Errors
/// [`ExecutorError::BaseImage`] naming the layout and what it lacks; unreadable files.
pub fn layout_entry(
    layout: &ImageLayout,
    path: &Path,
    tag: Option<&str>,
    digest: Option<&str>,
) -> Result<Descriptor, ExecutorError> {
    let bad = |reason: String| ExecutorError::BaseImage {
        reference: format!("oci-layout://{}", path.display()),
        reason,
    };
    let index = layout.index()?;
    let entries = index.manifests();
    let chosen = match (digest, tag) {
        (Some(digest), _) => match entries
            .iter()
            .find(|entry| entry.digest().to_string() == digest)
        {
            Some(entry) => entry.clone(),
            None => {
                // A digest below the index (a platform manifest): described by its blob.
                let parsed = digest
                    .parse()
                    .map_err(|_| bad(format!("bad digest {digest}")))?;
                let bytes = layout.read_blob(&parsed)?;
                let value: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|error| bad(format!("{digest}: {error}")))?;
                let media_type = value
                    .get("mediaType")
                    .and_then(serde_json::Value::as_str)
                    .map_or_else(
                        || {
                            if value.get("manifests").is_some() {
                                oci_spec::image::MediaType::ImageIndex
                            } else {
                                oci_spec::image::MediaType::ImageManifest
                            }
                        },
                        oci_spec::image::MediaType::from,
                    );
                oci_image::descriptor(media_type, parsed, bytes.len() as u64)
            }
        },
        (None, Some(tag)) => layout
            .resolve_ref(tag)?
            .ok_or_else(|| bad(format!("no image tagged {tag} in its index.json")))?,
        (None, None) => match (layout.resolve_ref("latest")?, entries.as_slice()) {
            (Some(latest), _) => latest,
            (None, [only]) => only.clone(),
            (None, []) => return Err(bad("its index.json lists no image".to_owned())),
            (None, _) => {
                return Err(bad(
                    "its index.json lists several images and none is tagged latest: add :TAG or @sha256:... to choose"
                        .to_owned(),
                ));
            }
        },
    };
    Ok(chosen)
}

/// A local directory after its own `.dockerignore`, as one layer (owned by root, as the
/// main context's files are when copied) on an empty config for `vertex`'s platform.
fn directory(
    services: &Services<'_>,
    vertex: &Vertex,
    name: &str,
    dir: &Path,
    mut key: Key,
) -> Result<Done, ExecutorError> {
    let display = vertex.display_name();
    // No Dockerfile goes with a named context: only its own `.dockerignore` applies.
    let files = ContextFiles::load(dir, Path::new(""), services.store.root())?;
    let digest = files.digest()?;
    files.save_stat_cache();
    key.add("directory", &digest);
    services.materials.record(
        vertex,
        &Material::Context {
            name: name.to_owned(),
            digest: digest.clone(),
        },
    );
    let key = key.finish();
    if let Some(state) = services.cache_hit(vertex, &key, &display)? {
        return Ok(Done::new(state, key));
    }
    let id = services.counter.next();
    let started = Instant::now();
    services.sink.emit(Event::Started {
        vertex: id,
        name: display.clone(),
        emulated: false,
    });
    let mut entries = Vec::new();
    for entry in files.entries() {
        let abs = files.dir.join(entry.path());
        let meta = std::fs::symlink_metadata(&abs)?;
        let mut tar_entry = layer::entry_from_metadata(entry.path(), &abs, &meta)?;
        tar_entry.uid = 0;
        tar_entry.gid = 0;
        entries.push(FileListEntry {
            entry: tar_entry,
            source: meta.is_file().then_some(abs),
        });
    }
    let blob = layer::write_file_list_layer(
        services.store.layout(),
        entries,
        services.options.compression,
        services.options.source_date_epoch,
    )
    .within(|| format!("{display}: writing the layer"))?;
    services
        .store
        .unpack_snapshot(&blob.descriptor, &blob.diff_id)
        .within(|| format!("{display}: unpacking the layer's snapshot"))?;
    services.store.put_layer_blob(
        &blob.diff_id,
        &blob.descriptor,
        services.options.compression,
    )?;
    let mut state = ImageState::new(oci_image::new_image_config(&vertex.platform, None));
    state.push_own_layer(blob.descriptor.clone(), blob.diff_id.clone());
    state.push_history(&services.created, format!("context {name}"), false);
    services.cache.record(&key, &state)?;
    services.sink.emit(Event::Finished {
        vertex: id,
        duration: started.elapsed(),
    });
    Ok(Done::new(state, key))
}

//! Outputs of a build: names in the local store (the default), `--push`, `-o type=oci|docker|
//! local|tar[,dest=...]`, `--load` into a Docker engine, `--metadata-file`, `--iidfile`.
//!
//! The build hands over [`Built`]: one image per target platform, already in the store, and
//! the index joining them. Everything here reads from the store; nothing rebuilds.

//!
//! Which flag maps to which [`Output`]: no output flag → [`Output::Store`]; `--push` and
//! `-o type=registry` / `type=image,push=true` → [`Output::Registry`]; `--load` →
//! `Output::Docker { dest: None }`; `-o ...` → [`Output::parse`]. Then [`write`] does them
//! all in order and returns an [`ExportReport`] for the CLI to print; [`write_metadata_file`]
//! and [`write_iidfile`] serve `--metadata-file` and `--iidfile`.

mod archive;
pub mod engine;
pub mod rootfs;
mod spec;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::executor::Built;
use crate::oci::image::{self, ResolvedImage};
use crate::platform::Platform;
use crate::progress::{Event, SharedSink, VertexCounter};
use crate::registry::{ImageRef, PushOptions, RegistryOptions, SinkProgress};
use crate::store::{Store, StoreError, display_ref};

pub use engine::EngineError;
pub use spec::OutputSpecError;

/// One `-o` output (`--push` is `Registry`, `--load` is `Docker` loaded into the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Names in the local store under each tag (the default when no output is given).
    Store,
    /// Push to the registry of each tag (`--push`, `-o type=registry`).
    Registry {
        /// `push-by-digest=true`: push without a tag.
        by_digest: bool,
    },
    /// `-o type=oci,dest=FILE` (an OCI archive with the index).
    Oci {
        /// Where (`-` for stdout).
        dest: PathBuf,
        /// Whether the referrers (attestations) of what it holds go with it. The build
        /// clears it when the only attestation is buildx's default provenance of a push:
        /// that one is for the registry, and an archive whose `index.json` has more than
        /// the image is one `skopeo copy oci-archive:FILE` cannot pick from without a name.
        referrers: bool,
    },
    /// `-o type=docker,dest=FILE` (a docker-archive, loadable by `docker load`).
    Docker {
        /// Where; `None` means load into the engine (`--load`).
        dest: Option<PathBuf>,
    },
    /// `-o type=local,dest=DIR`: the root filesystem, one folder per platform when several.
    Local {
        /// Where.
        dest: PathBuf,
    },
    /// `-o type=tar,dest=FILE`: the root filesystem as a tar (one folder per platform).
    Tar {
        /// Where.
        dest: PathBuf,
    },
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A `-t` name is not a valid image reference.
    #[error("invalid tag")]
    Tag(#[source] crate::registry::reference::ReferenceError),
    /// `--push` (or `push-by-digest`) without a `-t` naming the repository.
    #[error("pushing needs a name: give -t registry/repository[:tag]")]
    PushWithoutName,
    /// A docker-archive file holds one platform per tag; several were built.
    #[error(
        "type=docker writes one platform per tag, but this build made {platforms}: build one \
         --platform, or use type=oci (which keeps the index), or --load (which tags each \
         platform)"
    )]
    DockerMultiPlatform {
        /// The platforms built, comma separated.
        platforms: String,
    },
    /// Reading the build's images from the store failed.
    #[error("reading the built image from the store")]
    Store(#[source] Box<StoreError>),
    /// Naming the result in the store failed.
    #[error("naming {name} in the store")]
    Name {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// A destination could not be written.
    #[error("writing {}", dest.display())]
    Write {
        /// The destination.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Unpacking the root filesystem failed.
    #[error("unpacking the image into {}", dest.display())]
    Unpack {
        /// The directory.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// Reading an unpacked tree into a tar failed.
    #[error("writing the root filesystem to {}", dest.display())]
    Tree {
        /// The destination.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: Box<crate::layer::DiffError>,
    },
    /// The push failed.
    #[error("pushing to {target}")]
    Push {
        /// Where.
        target: String,
        /// The cause.
        #[source]
        source: Box<crate::registry::push::PushError>,
    },
    /// The build handed over no image.
    #[error("the build produced no image")]
    NothingBuilt,
    /// A background export task panicked or was cancelled.
    #[error("the export task did not finish")]
    Task(#[source] tokio::task::JoinError),
    /// `--load` failed.
    #[error("loading into the Docker engine")]
    Load(#[source] EngineError),
}

impl ExportError {
    pub(crate) fn reading(error: impl Into<StoreError>) -> Self {
        Self::Store(Box::new(error.into()))
    }

    pub(crate) fn writing(dest: &Path) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| Self::Write {
            dest: dest.to_path_buf(),
            source,
        }
    }

    /// The exit status this error should give: bad input (2) for bad tags, a push without a
    /// name, a multi-platform docker-archive or an unsupported `DOCKER_HOST`; host not ready
    /// (3) when no Docker engine answers `--load`; failed (1) otherwise.
    pub fn exit_kind(&self) -> crate::ExitKind {
        match self {
            Self::Tag(_)
            | Self::PushWithoutName
            | Self::DockerMultiPlatform { .. }
            | Self::Load(EngineError::UnsupportedHost(_)) => crate::ExitKind::BadInput,
            Self::Load(EngineError::Unreachable { .. }) => crate::ExitKind::HostNotReady,
            _ => crate::ExitKind::Failed,
        }
    }
}

/// One thing an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A name in the local store (full normalised name).
    Named(String),
    /// Pushed under a tag (`registry/repository:tag`) with this digest.
    Pushed {
        /// The reference pushed to.
        reference: String,
        /// The digest of the pushed index or manifest.
        digest: String,
    },
    /// Pushed by digest only (`registry/repository@sha256:...`).
    PushedByDigest(String),
    /// An OCI archive.
    OciArchive(PathBuf),
    /// A docker-archive of one platform.
    DockerArchive {
        /// The file.
        dest: PathBuf,
        /// The platform in it.
        platform: Platform,
    },
    /// Loaded into a Docker engine: each tag and its platform.
    Loaded {
        /// The engine's socket.
        socket: PathBuf,
        /// `(tag, platform)` pairs; the tag is empty for an untagged image.
        tags: Vec<(String, Platform)>,
    },
    /// Root filesystems in a directory (`dest` itself, or one folder per platform).
    Local {
        /// The directory.
        dest: PathBuf,
        /// The platforms written.
        platforms: Vec<Platform>,
    },
    /// Root filesystems as a tar.
    Tar {
        /// The file (`-`: stdout).
        dest: PathBuf,
        /// The platforms written.
        platforms: Vec<Platform>,
    },
}

fn platform_list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(name) => write!(f, "named {}", display_ref(name)),
            Self::Pushed { reference, digest } => write!(f, "pushed {reference} ({digest})"),
            Self::PushedByDigest(reference) => write!(f, "pushed {reference}"),
            Self::OciArchive(dest) => write!(f, "wrote OCI archive {}", dest.display()),
            Self::DockerArchive { dest, platform } => {
                write!(f, "wrote docker archive {} ({platform})", dest.display())
            }
            Self::Loaded { socket, tags } => {
                let list: Vec<String> = tags
                    .iter()
                    .map(|(tag, platform)| {
                        if tag.is_empty() {
                            format!("untagged ({platform})")
                        } else {
                            format!("{tag} ({platform})")
                        }
                    })
                    .collect();
                write!(
                    f,
                    "loaded into the Docker engine on {}: {}",
                    socket.display(),
                    list.join(", ")
                )
            }
            Self::Local { dest, platforms } => write!(
                f,
                "wrote the root filesystem of {} to {}",
                platform_list(platforms),
                dest.display()
            ),
            Self::Tar { dest, platforms } => write!(
                f,
                "wrote the root filesystem of {} as a tar to {}",
                platform_list(platforms),
                dest.display()
            ),
        }
    }
}

/// What [`write`] did, for the CLI to print, and for `--metadata-file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Everything written, in order.
    pub written: Vec<Written>,
    /// Things the user should know (for example, how `--load` tagged several platforms).
    pub notes: Vec<String>,
}

/// Parses each `-t` name as a reference (`busybox` → `docker.io/library/busybox:latest`).
fn parse_tags(tags: &[String]) -> Result<Vec<ImageRef>, ExportError> {
    tags.iter()
        .map(|tag| ImageRef::parse(tag).map_err(ExportError::Tag))
        .collect()
}

/// Reads each platform's manifest and config.
fn resolve_images(
    store: &Store,
    built: &Built,
) -> Result<Vec<(Platform, ResolvedImage)>, ExportError> {
    built
        .images
        .iter()
        .map(|built_image| {
            image::read_image(store.layout(), &built_image.manifest)
                .map(|resolved| (built_image.platform.clone(), resolved))
                .map_err(ExportError::reading)
        })
        .collect()
}

/// Opens a destination file (`-`: stdout) and runs `write_to` on it; the file is written
/// under a temporary name beside it and renamed when complete.
fn with_destination(
    dest: &Path,
    write_to: impl FnOnce(&mut dyn Write) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    if dest == Path::new("-") {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        write_to(&mut lock)?;
        return lock.flush().map_err(ExportError::writing(dest));
    }
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(ExportError::writing(dest))?;
    let tmp = tempfile::Builder::new()
        .prefix(".xbuild-export-")
        .tempfile_in(&parent)
        .map_err(ExportError::writing(dest))?;
    let mut out = std::io::BufWriter::new(tmp);
    write_to(&mut out)?;
    let tmp = out
        .into_inner()
        .map_err(|error| ExportError::writing(dest)(error.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(ExportError::writing(dest))?;
    tmp.persist(dest)
        .map_err(|error| ExportError::writing(dest)(error.error))?;
    Ok(())
}

/// Runs file work off the async runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(ExportError::Task(error)))
}

/// Reports one output as a progress vertex.
struct Step {
    sink: SharedSink,
    vertex: crate::progress::VertexId,
    started: Instant,
}

impl Step {
    fn start(sink: &SharedSink, vertices: &VertexCounter, name: String) -> Self {
        let vertex = vertices.next();
        sink.emit(Event::Started {
            vertex,
            name,
            emulated: false,
        });
        Self {
            sink: Arc::clone(sink),
            vertex,
            started: Instant::now(),
        }
    }

    fn end<T>(self, result: Result<T, ExportError>) -> Result<T, ExportError> {
        let duration = self.started.elapsed();
        match &result {
            Ok(_) => self.sink.emit(Event::Finished {
                vertex: self.vertex,
                duration,
            }),
            Err(error) => self.sink.emit(Event::Failed {
                vertex: self.vertex,
                duration,
                message: error.to_string(),
            }),
        }
        result
    }
}

/// Writes every output of a build, in order. An empty `outputs` means [`Output::Store`].
/// `tags` are the `-t` names; progress goes to `progress` as one vertex per output (numbered
/// by `vertices`, the build's own counter).
///
/// - `Store`: each tag names [`Built::result`] in the store.
/// - `Registry`: each tag is named in the store, then pushed (blobs, manifests by digest,
///   then the index under the tag); `by_digest`: pushed to the first tag's repository under
///   the digest only.
/// - `Oci`: an OCI archive of the result, named after the first tag.
/// - `Docker { dest: Some }`: a docker-archive with every tag; one platform only.
/// - `Docker { dest: None }` (`--load`): a docker-archive streamed into the engine; with
///   several platforms the host's (else the first) gets the tags and the others
///   `tag-<arch>` (a note says so).
/// - `Local`, `Tar`: the root filesystems.
///
/// # Errors
/// [`ExportError`]; outputs before the failing one stay written.
pub async fn write(
    store: &Store,
    registry: Arc<RegistryOptions>,
    built: &Built,
    tags: &[String],
    outputs: &[Output],
    progress: SharedSink,
    vertices: &VertexCounter,
) -> Result<ExportReport, ExportError> {
    let references = parse_tags(tags)?;
    let mut report = ExportReport::default();
    let default_outputs = [Output::Store];
    let outputs = if outputs.is_empty() {
        &default_outputs[..]
    } else {
        outputs
    };
    let result = built.result().clone();
    for output in outputs {
        match output {
            Output::Store => {
                for reference in &references {
                    let name = reference.store_name();
                    store
                        .set_ref(&name, &result)
                        .map_err(|source| ExportError::Name {
                            name: name.clone(),
                            source: Box::new(source),
                        })?;
                    report.written.push(Written::Named(name));
                }
            }
            Output::Registry { by_digest } => {
                let targets: Vec<ImageRef> = if *by_digest {
                    let first = references.first().ok_or(ExportError::PushWithoutName)?;
                    vec![first.with_digest(result.digest().clone())]
                } else {
                    if references.is_empty() {
                        return Err(ExportError::PushWithoutName);
                    }
                    references.clone()
                };
                for target in targets {
                    let name = target.store_name();
                    store
                        .set_ref(&name, &result)
                        .map_err(|source| ExportError::Name {
                            name: name.clone(),
                            source: Box::new(source),
                        })?;
                    let step = Step::start(&progress, vertices, format!("pushing {target}"));
                    let sink =
                        Arc::new(SinkProgress::aggregate(Arc::clone(&progress), step.vertex));
                    let pushed = crate::registry::push::push_reference(
                        Arc::clone(&registry),
                        store.layout(),
                        &name,
                        &target,
                        &PushOptions::default(),
                        sink,
                    )
                    .await
                    .map_err(|source| ExportError::Push {
                        target: target.to_string(),
                        source: Box::new(source),
                    });
                    let pushed = step.end(pushed)?;
                    if !complete_in_store(store, built) {
                        // Layers of cached steps were mounted in the registry, never
                        // downloaded: the store does not name an image it lacks parts of.
                        let _ = store.remove_ref(&name);
                        report.notes.push(format!(
                            "{}: not kept in the local store (layers of cached steps stayed in the registry)",
                            display_ref(&name)
                        ));
                    }
                    report.written.push(if *by_digest {
                        Written::PushedByDigest(format!(
                            "{}@{}",
                            target.repository_name(),
                            pushed.digest
                        ))
                    } else {
                        Written::Pushed {
                            reference: target.to_string(),
                            digest: pushed.digest.to_string(),
                        }
                    });
                }
            }
            Output::Oci { dest, referrers } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting OCI archive {}", dest.display()),
                );
                let name = references.first().map(ImageRef::store_name);
                let (task_store, task_result, task_dest, with_referrers) =
                    (store.clone(), result.clone(), dest.clone(), *referrers);
                let written = blocking(move || {
                    with_destination(&task_dest, |out| {
                        archive::write_oci(
                            &task_store,
                            &task_result,
                            name.as_deref(),
                            with_referrers,
                            &task_dest,
                            out,
                        )
                    })
                })
                .await;
                step.end(written)?;
                report.written.push(Written::OciArchive(dest.clone()));
            }
            Output::Docker { dest: Some(dest) } => {
                let mut images = resolve_images(store, built)?;
                if images.len() > 1 {
                    return Err(ExportError::DockerMultiPlatform {
                        platforms: platform_list(
                            &images.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
                        ),
                    });
                }
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting docker archive {}", dest.display()),
                );
                let Some((platform, resolved)) = images.pop() else {
                    return step.end(Err(ExportError::NothingBuilt));
                };
                let docker_tags: Vec<String> = references.iter().map(docker_tag).collect();
                let (task_store, task_dest) = (store.clone(), dest.clone());
                let written = blocking(move || {
                    with_destination(&task_dest, |out| {
                        archive::write_docker(
                            &task_store,
                            &[(resolved, docker_tags)],
                            &task_dest,
                            out,
                        )
                    })
                })
                .await;
                step.end(written)?;
                report.written.push(Written::DockerArchive {
                    dest: dest.clone(),
                    platform,
                });
            }
            Output::Docker { dest: None } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    "loading into the Docker engine".to_owned(),
                );
                let loaded = load_into_engine(store, built, &references, &mut report).await;
                let (socket, tags) = step.end(loaded)?;
                report.written.push(Written::Loaded { socket, tags });
            }
            Output::Local { dest } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting the root filesystem to {}", dest.display()),
                );
                let images = resolve_images(store, built)?;
                let platforms = images.iter().map(|(p, _)| p.clone()).collect();
                let (task_store, task_dest) = (store.clone(), dest.clone());
                let written =
                    blocking(move || rootfs::write_local(&task_store, &images, &task_dest)).await;
                step.end(written)?;
                report.written.push(Written::Local {
                    dest: dest.clone(),
                    platforms,
                });
            }
            Output::Tar { dest } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting the root filesystem to {}", dest.display()),
                );
                let images = resolve_images(store, built)?;
                let platforms = images.iter().map(|(p, _)| p.clone()).collect();
                let (task_store, task_dest) = (store.clone(), dest.clone());
                let written = blocking(move || {
                    with_destination(&task_dest, |out| {
                        rootfs::write_tar(&task_store, &images, &task_dest, out)
                    })
                })
                .await;
                step.end(written)?;
                report.written.push(Written::Tar {
                    dest: dest.clone(),
                    platforms,
                });
            }
        }
    }
    Ok(report)
}

/// Whether the store holds every manifest, config and layer of the build's images.
fn complete_in_store(store: &Store, built: &Built) -> bool {
    let layout = store.layout();
    built.images.iter().all(|built_image| {
        image::read_image(layout, &built_image.manifest).is_ok_and(|resolved| {
            layout.has_blob(resolved.manifest.config().digest())
                && resolved
                    .manifest
                    .layers()
                    .iter()
                    .all(|layer| layout.has_blob(layer.digest()))
        })
    })
}

/// The name `docker load` shows: `docker.io/library/` left out.
fn docker_tag(reference: &ImageRef) -> String {
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
async fn load_into_engine(
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

/// The `--metadata-file` document: buildx's keys (`containerimage.digest`: the result's
/// digest; `containerimage.descriptor`: its descriptor; `containerimage.config.digest`: the
/// config digest for a single-manifest result; `image.name`: the tags, comma separated, as
/// pushed or named) and xbuild's `xbuild.manifests`: `{"linux/amd64": "sha256:...", ...}`,
/// each platform's manifest digest.
///
/// # Errors
/// The single manifest cannot be read from the store.
pub fn metadata(
    store: &Store,
    built: &Built,
    report: &ExportReport,
) -> Result<serde_json::Value, ExportError> {
    let result = built.result();
    let mut document = serde_json::Map::new();
    document.insert(
        "containerimage.digest".to_owned(),
        result.digest().to_string().into(),
    );
    let mut descriptor = result.clone();
    descriptor.set_annotations(None);
    document.insert(
        "containerimage.descriptor".to_owned(),
        serde_json::to_value(&descriptor).expect("a descriptor serialises"),
    );
    if result == &built.index {
        // An index has no config.
    } else {
        let resolved = image::read_image(store.layout(), result).map_err(ExportError::reading)?;
        document.insert(
            "containerimage.config.digest".to_owned(),
            resolved.manifest.config().digest().to_string().into(),
        );
    }
    let names: Vec<String> = report
        .written
        .iter()
        .filter_map(|written| match written {
            Written::Named(name) => Some(name.clone()),
            Written::Pushed { reference, .. } => Some(reference.clone()),
            // As buildx: the name pushed to, without the digest.
            Written::PushedByDigest(reference) => Some(
                reference
                    .split_once('@')
                    .map_or(reference.as_str(), |(name, _)| name)
                    .to_owned(),
            ),
            _ => None,
        })
        .fold(Vec::new(), |mut names, name| {
            if !names.contains(&name) {
                names.push(name);
            }
            names
        });
    if !names.is_empty() {
        document.insert("image.name".to_owned(), names.join(",").into());
    }
    let manifests: serde_json::Map<String, serde_json::Value> = built
        .images
        .iter()
        .map(|image| {
            (
                image.platform.to_string(),
                image.manifest.digest().to_string().into(),
            )
        })
        .collect();
    document.insert("xbuild.manifests".to_owned(), manifests.into());
    Ok(document.into())
}

/// Writes [`metadata`] to `path` as pretty JSON (`--metadata-file`).
///
/// # Errors
/// As [`metadata`], and write failures.
pub fn write_metadata_file(
    path: &Path,
    store: &Store,
    built: &Built,
    report: &ExportReport,
) -> Result<(), ExportError> {
    let document = metadata(store, built, report)?;
    let mut text = serde_json::to_vec_pretty(&document).expect("JSON serialises");
    text.push(b'\n');
    std::fs::write(path, text).map_err(ExportError::writing(path))
}

/// Writes the result's digest (`sha256:...`, no newline, as buildx) to `path` (`--iidfile`).
///
/// # Errors
/// Write failures.
pub fn write_iidfile(path: &Path, built: &Built) -> Result<(), ExportError> {
    std::fs::write(path, built.result().digest().to_string()).map_err(ExportError::writing(path))
}

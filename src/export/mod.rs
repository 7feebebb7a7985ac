//! Outputs of a build: names in the local store (the default), `--push`, `-o type=oci|docker|
//! local|tar[,dest=...]`, `--load` into a Docker engine, `-o type=containerd`,
//! `--metadata-file`, `--iidfile`.
//!
//! The build hands over [`Built`]: one image per target platform, already in the store, and
//! the index joining them. Everything here reads from the store; nothing rebuilds.
//!
//! Which flag maps to which [`Output`]: no output flag → [`Output::STORE`]; `--push` and
//! `-o type=registry` / `type=image,push=true` → [`Output::Registry`]; `--load` →
//! `Output::Docker { dest: None }`; `-o ...` → [`Output::parse`]. Then [`write()`] does them
//! all in order and returns an [`ExportReport`] for the CLI to print; [`write_metadata_file`]
//! and [`write_iidfile`] serve `--metadata-file` and `--iidfile`.
//!
//! Files: this one parses nothing and writes in order; `spec` parses `-o`, `error` and
//! `report` hold what an export says back, `mediatypes` rewrites a result with Docker's
//! media types (`oci-mediatypes=false`), `archive` writes OCI and docker archives,
//! `load` and [`engine`] serve `--load`, [`containerd`] `type=containerd`, [`rootfs`] the
//! `local` and `tar` outputs.

mod archive;
pub mod containerd;
pub mod engine;
mod error;
mod load;
mod mediatypes;
mod report;
pub mod rootfs;
mod spec;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::executor::Built;
use crate::oci::image::{self, ResolvedImage};
use crate::platform::Platform;
use crate::progress::{Event, SharedSink, VertexCounter};
use crate::registry::{ImageRef, PushOptions, RegistryOptions, SinkProgress};
use crate::store::{Store, display_ref};

use load::{docker_tag, load_into_engine};
use report::platform_list;

pub use engine::EngineError;
pub use error::ExportError;
pub use mediatypes::MediaTypes;
pub use report::{ExportReport, Written, metadata, write_iidfile, write_metadata_file};
pub use spec::{OutputSpec, OutputSpecError, split_fields};

/// One `-o` output (`--push` is `Registry`, `--load` is `Docker` loaded into the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Names in the local store under each tag (the default when no output is given).
    Store {
        /// `oci-mediatypes=`: the media types of what is named.
        media_types: MediaTypes,
    },
    /// Push to the registry of each tag (`--push`, `-o type=registry`).
    Registry {
        /// `push-by-digest=true`: push without a tag.
        by_digest: bool,
        /// `oci-mediatypes=`: the media types of what is pushed.
        media_types: MediaTypes,
        /// `store=` (true by default): the pushed image is also named in the local store
        /// under each tag; `false` pushes only (BuildKit's `store=false`).
        store: bool,
        /// `registry.insecure=true`: the registry is reached over HTTPS without verifying
        /// its certificate, else plain HTTP (as BuildKit pushes then).
        insecure: bool,
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
        /// `oci-mediatypes=`: the media types of what it holds.
        media_types: MediaTypes,
        /// `tar=` (true by default): a tar of the layout at `dest`; `false` writes the
        /// layout itself as the directory `dest` (a new or empty one).
        tar: bool,
    },
    /// `-o type=docker,dest=FILE` (a docker-archive, loadable by `docker load`).
    Docker {
        /// Where; `None` means load into the engine (`--load`).
        dest: Option<PathBuf>,
        /// `oci-mediatypes=true`: BuildKit's OCI-typed docker archive, an OCI image layout
        /// (`oci-layout`, `index.json`, `blobs/`) with the image's OCI manifest, config and
        /// compressed layers, and `manifest.json` beside it listing the same blobs for
        /// `docker load`; written to `dest`, or sent to a classic engine by a load.
        oci_media_types: bool,
    },
    /// `-o type=containerd`: the whole index, every platform, into containerd's image
    /// store under each name ([`containerd`]).
    Containerd {
        /// `namespace=` (`None`: `$CONTAINERD_NAMESPACE`, else `default`).
        namespace: Option<String>,
        /// `unpack=true`: the host's platform is unpacked into containerd's snapshotter.
        unpack: bool,
    },
    /// `-o type=local,dest=DIR`: the root filesystem, one folder per platform when several.
    Local {
        /// Where.
        dest: PathBuf,
        /// `platform-split=`: one folder per platform (`None`: when several were built).
        split: Option<bool>,
    },
    /// `-o type=tar,dest=FILE`: the root filesystem as a tar (one folder per platform).
    Tar {
        /// Where.
        dest: PathBuf,
        /// `platform-split=`: one folder per platform (`None`: when several were built).
        split: Option<bool>,
    },
}

impl Output {
    /// The store output with OCI media types (the default output).
    pub const STORE: Self = Self::Store {
        media_types: MediaTypes::Oci,
    };

    /// A push (`--push`) with OCI media types; `by_digest`: without a tag.
    pub fn push(by_digest: bool) -> Self {
        Self::Registry {
            by_digest,
            media_types: MediaTypes::Oci,
            store: true,
            insecure: false,
        }
    }
}

/// The build's result in `media_types` (written into the store when they are Docker's).
fn typed_result(
    store: &Store,
    result: &oci_spec::image::Descriptor,
    media_types: MediaTypes,
) -> Result<oci_spec::image::Descriptor, ExportError> {
    match media_types {
        MediaTypes::Oci => Ok(result.clone()),
        MediaTypes::Docker => mediatypes::to_docker(store.layout(), result),
    }
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

/// Writes what `write_to` writes as a tar (an OCI layout of our own: directories and
/// regular files) unpacked as the new directory `dest` (`tar=false`): unpacked beside it
/// under a temporary name and renamed when complete. An existing `dest` must be an empty
/// directory: nothing of another layout is mixed in or lost.
fn with_layout_directory(
    dest: &Path,
    write_to: impl FnOnce(&mut dyn Write) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let error = ExportError::writing(dest);
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the directory is not empty (tar=false writes a new layout directory)",
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(&error)?;
    let work = tempfile::Builder::new()
        .prefix(".xbuild-export-")
        .tempdir_in(&parent)
        .map_err(&error)?;
    // The tar goes through a pipe to an unpacking thread: its bytes are written once, into
    // the layout, not first into an archive file beside it.
    let layout = work.path().join("layout");
    let (reader, writer) = nix::unistd::pipe().map_err(|errno| error(errno.into()))?;
    let unpack_into = layout.clone();
    std::thread::scope(|scope| {
        let unpacker = scope.spawn(move || {
            let mut archive =
                tar::Archive::new(std::io::BufReader::new(std::fs::File::from(reader)));
            let unpacked = archive.unpack(&unpack_into);
            // Read to the end, so that a writer never blocks on a full pipe after a failure.
            let _ = std::io::copy(&mut archive.into_inner(), &mut std::io::sink());
            unpacked
        });
        let mut out = std::io::BufWriter::new(std::fs::File::from(writer));
        let written = write_to(&mut out).and_then(|()| out.flush().map_err(&error));
        // Closing the pipe ends the unpacker's input (early, if writing failed).
        drop(out);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the unpacking thread panicked")));
        match (written, unpacked) {
            (Err(writing), _) => Err(writing),
            (Ok(()), Err(unpacking)) => Err(error(unpacking)),
            (Ok(()), Ok(())) => Ok(()),
        }
    })?;
    if dest.is_dir() {
        std::fs::remove_dir(dest).map_err(&error)?;
    }
    std::fs::rename(&layout, dest).map_err(&error)?;
    Ok(())
}

/// `(org.opencontainers.image.ref.name, io.containerd.image.name)` of each name in an OCI
/// archive for containerd or a Docker engine with its image store: the tag and the full
/// name, as containerd's archive exporter writes them.
fn containerd_names(references: &[ImageRef]) -> Vec<(String, String)> {
    references
        .iter()
        .map(|reference| {
            let tag = reference.tag().unwrap_or("latest").to_owned();
            (tag, reference.store_name())
        })
        .collect()
}

/// Writes an archive into the store's `tmp/` with `write`, off the async workers; the file
/// is removed when the returned handle is dropped (once its reader is done with it).
async fn temp_archive(
    store: &Store,
    prefix: &str,
    write: impl FnOnce(&Store, &Path, &mut dyn Write) -> Result<(), ExportError> + Send + 'static,
) -> Result<tempfile::NamedTempFile, ExportError> {
    let tmp_dir = store.layout().tmp_dir();
    let archive_file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tar")
        .tempfile_in(&tmp_dir)
        .map_err(ExportError::writing(&tmp_dir))?;
    let task_store = store.clone();
    blocking(move || {
        let path = archive_file.path().to_path_buf();
        let mut out = std::io::BufWriter::new(archive_file.as_file());
        write(&task_store, &path, &mut out)?;
        out.flush().map_err(ExportError::writing(&path))?;
        drop(out);
        Ok(archive_file)
    })
    .await
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

/// Writes every output of a build, in order. An empty `outputs` means [`Output::STORE`].
/// `tags` are the `-t` names; progress goes to `progress` as one vertex per output (numbered
/// by `vertices`, the build's own counter).
///
/// - `Store`: each tag names [`Built::result`] in the store.
/// - `Registry` with `store: false`: pushed only, nothing named in the store; with
///   `insecure`: its registry reached without verifying the certificate, else over HTTP.
/// - `Store`, `Registry`, `Oci` with [`MediaTypes::Docker`] (`oci-mediatypes=false`): the
///   result rewritten with Docker's media types (new manifests and list in the store, the
///   same configs and layers) is what is named, pushed or written.
/// - `Registry`: each tag is named in the store, then pushed (blobs, manifests by digest,
///   then the index under the tag); `by_digest`: pushed to the first tag's repository under
///   the digest only.
/// - `Oci`: an OCI archive of the result, named after the first tag.
/// - `Docker { dest: Some }`: a docker-archive with every tag; one platform only.
/// - `Docker { dest: None }` (`--load`): into the engine; one with the containerd image
///   store gets an OCI archive of the whole index under each tag; a classic one a
///   docker-archive where, with several platforms, the host's (else the first) gets the
///   tags and the others `tag-<arch>` (a note says so).
/// - `Containerd`: the whole index under each tag, into containerd.
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
    let default_outputs = [Output::STORE];
    let outputs = if outputs.is_empty() {
        &default_outputs[..]
    } else {
        outputs
    };
    let result = built.result().clone();
    for output in outputs {
        match output {
            Output::Store { media_types } => {
                let result = typed_result(store, &result, *media_types)?;
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
            Output::Registry {
                by_digest,
                media_types,
                store: keep,
                insecure,
            } => {
                let result = typed_result(store, &result, *media_types)?;
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
                    if *keep {
                        store
                            .set_ref(&name, &result)
                            .map_err(|source| ExportError::Name {
                                name: name.clone(),
                                source: Box::new(source),
                            })?;
                    }
                    let registry = if *insecure {
                        Arc::new((*registry).clone().with_unverified(target.registry()))
                    } else {
                        Arc::clone(&registry)
                    };
                    let step = Step::start(&progress, vertices, format!("pushing {target}"));
                    let sink =
                        Arc::new(SinkProgress::aggregate(Arc::clone(&progress), step.vertex));
                    // `store=false`: pushed from the store's blobs, named nowhere here.
                    let pushed = crate::registry::push::push_unnamed(
                        registry,
                        store.layout(),
                        &name,
                        &result,
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
                    if *keep && !complete_in_store(store, built) {
                        // Layers of cached steps were mounted in the registry, or a build
                        // node pushed its layers itself: never downloaded, so the store does
                        // not name an image it lacks parts of.
                        let _ = store.remove_ref(&name);
                        report.notes.push(format!(
                            "{}: not kept in the local store (some of its layers are only in the registry: cached steps' layers, or a build node's)",
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
            Output::Oci {
                dest,
                referrers,
                media_types,
                tar,
            } => {
                let result = typed_result(store, &result, *media_types)?;
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting OCI archive {}", dest.display()),
                );
                let name = references.first().map(ImageRef::store_name);
                let (task_store, task_result, task_dest, with_referrers, as_tar) = (
                    store.clone(),
                    result.clone(),
                    dest.clone(),
                    *referrers,
                    *tar,
                );
                let written = blocking(move || {
                    let write = |out: &mut dyn Write| {
                        archive::write_oci(
                            &task_store,
                            &task_result,
                            name.as_deref(),
                            with_referrers,
                            &task_dest,
                            out,
                        )
                    };
                    if as_tar {
                        with_destination(&task_dest, write)
                    } else {
                        with_layout_directory(&task_dest, write)
                    }
                })
                .await;
                step.end(written)?;
                report.written.push(if *tar {
                    Written::OciArchive(dest.clone())
                } else {
                    Written::OciLayout(dest.clone())
                });
            }
            Output::Docker {
                dest: Some(dest),
                oci_media_types,
            } => {
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
                let names = containerd_names(&references);
                let (task_store, task_dest, oci) = (store.clone(), dest.clone(), *oci_media_types);
                let written = blocking(move || {
                    with_destination(&task_dest, |out| {
                        if oci {
                            archive::write_docker_oci(
                                &task_store,
                                &resolved,
                                &names,
                                &docker_tags,
                                &task_dest,
                                out,
                            )
                        } else {
                            archive::write_docker(
                                &task_store,
                                &[(resolved, docker_tags)],
                                &task_dest,
                                out,
                            )
                        }
                    })
                })
                .await;
                step.end(written)?;
                report.written.push(Written::DockerArchive {
                    dest: dest.clone(),
                    platform,
                });
            }
            Output::Docker {
                dest: None,
                oci_media_types,
            } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    "loading into the Docker engine".to_owned(),
                );
                let loaded =
                    load_into_engine(store, built, &references, *oci_media_types, &mut report)
                        .await;
                report.written.push(step.end(loaded)?);
            }
            Output::Containerd { namespace, unpack } => {
                let step = Step::start(&progress, vertices, "loading into containerd".to_owned());
                let loaded = containerd::load_into_containerd(
                    store,
                    built,
                    &references,
                    namespace.as_deref(),
                    *unpack,
                )
                .await;
                report.written.push(step.end(loaded)?);
            }
            Output::Local { dest, split } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting the root filesystem to {}", dest.display()),
                );
                let images = resolve_images(store, built)?;
                let split = rootfs::use_split(&images, *split);
                let platforms = images.iter().map(|(p, _)| p.clone()).collect();
                let (task_store, task_dest) = (store.clone(), dest.clone());
                let written =
                    blocking(move || rootfs::write_local(&task_store, &images, split, &task_dest))
                        .await;
                step.end(written)?;
                report.written.push(Written::Local {
                    dest: dest.clone(),
                    platforms,
                });
            }
            Output::Tar { dest, split } => {
                let step = Step::start(
                    &progress,
                    vertices,
                    format!("exporting the root filesystem to {}", dest.display()),
                );
                let images = resolve_images(store, built)?;
                let split = rootfs::use_split(&images, *split);
                let platforms = images.iter().map(|(p, _)| p.clone()).collect();
                let (task_store, task_dest) = (store.clone(), dest.clone());
                let written = blocking(move || {
                    with_destination(&task_dest, |out| {
                        rootfs::write_tar(&task_store, &images, split, &task_dest, out)
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

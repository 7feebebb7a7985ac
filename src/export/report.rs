//! What an export wrote: [`Written`] and [`ExportReport`] for the CLI to print, and the
//! files buildx writes about a result (`--metadata-file`, `--iidfile`).

use std::fmt;
use std::path::{Path, PathBuf};

use super::ExportError;
use crate::executor::Built;
use crate::oci::image;
use crate::platform::Platform;
use crate::store::{Store, display_ref};

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
    /// An OCI image layout directory (`type=oci,tar=false`).
    OciLayout(PathBuf),
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
    /// The whole index, every platform, loaded under each name: into containerd
    /// (`-o type=containerd`) or a Docker engine with the containerd image store (`--load`).
    LoadedIndex {
        /// Where, as shown: `containerd on SOCKET (namespace NS)`, `the Docker engine on
        /// SOCKET (containerd image store)`.
        into: String,
        /// The names the index is loaded under (none: untagged).
        names: Vec<String>,
        /// The platforms of the index.
        platforms: Vec<Platform>,
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

pub(super) fn platform_list(platforms: &[Platform]) -> String {
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
            Self::OciLayout(dest) => write!(f, "wrote OCI layout {}", dest.display()),
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
            Self::LoadedIndex {
                into,
                names,
                platforms,
            } => {
                let names = if names.is_empty() {
                    "untagged".to_owned()
                } else {
                    names.join(", ")
                };
                write!(
                    f,
                    "loaded into {into}: {names} ({}: every platform under each name)",
                    platform_list(platforms)
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

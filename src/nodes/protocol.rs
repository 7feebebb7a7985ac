//! What goes over the SSH channel between a build and its node.
//!
//! The node runs `xbuild __node-build`; its stdin carries the request, its stdout the reply,
//! its stderr the progress:
//!
//! ```text
//! stdin:  "xbuild-node-request-v4\n" (v5 with stage SBOMs) · u64 BE length · NodeRequest (JSON) · context tar
//!         · one tar per named directory context (NodeRequest::named_dirs, in order)
//!         · one tar per OCI layout context (NodeRequest::named_layouts, in order)
//!         · one tar per local cache directory (NodeRequest::cache_from_dirs, in order)
//! stdout: "xbuild-node-reply-v3\n"   · u64 BE length · NodeReply (JSON)
//!         · one tar per cache export sent back (CacheExportSpec::sent_back, in order)
//!         · [OCI archive]
//! stderr: one progress event per line (the node's --progress=rawjson), then, when the
//!         build failed, the error lines; the exit status is xbuild's (1, 2, 3)
//! ```
//!
//! The context tar holds the context after `.dockerignore` (as [`crate::context::walk`]
//! lists it, applied on this side): paths, modes, numeric owners, mtimes in seconds,
//! symlinks, FIFOs and device nodes, so `COPY` on the node sees what it would see here and
//! gives the same layers. The client's registry credentials for the registries the build
//! uses travel in the request too, as secrets do. Each `--build-context NAME=DIR` the build reads follows as a tar
//! of its own, after its own `.dockerignore`, as the node's build would read it here. The
//! `--ssh` agents are not in the request: each is forwarded by the `ssh` connection itself
//! (`-R SOCKET:AGENT`, a Unix socket on the node that only the login user can open, gone
//! with the connection), and the request names each id's socket there
//! ([`NodeRequest::ssh_agents`]). The Dockerfile travels in the request (it may live outside the
//! context), with the build arguments, flags and secrets (over SSH, never in the tar).
//! The OCI archive holds the node's index over its platform(s), which this side loads into
//! its store and merges into the build's own index. When the request asks for
//! [`ResultKind::Manifests`] (a push whose every output is the registry, and no SBOM to scan
//! here), the node pushes and no archive follows the reply: the reply carries each platform's
//! manifest and config ([`NodeReply::documents`]), all the index and the provenance need,
//! and the layers stay in the registry.
//!
//! An `oci-layout://` context goes as a tar of part of its layout: `oci-layout`,
//! `index.json`, and of the blobs only what the node's platforms read (the indexes from the
//! entry it names down to each platform's manifest, that manifest, its config and layers).
//! A local cache directory of `--cache-from` goes the same way: `index.json` and every
//! index, manifest and config of the cache (small), and only the layers of the records of
//! the node's platforms. A `--cache-to` of a local directory, and a registry `--cache-to`
//! that several nodes would write, is written by the node into a fresh cache directory of
//! its own, which comes back as a tar after the reply: the build's side merges each node's
//! records into the destination, one writer after the other ([`CacheExportSpec::sent_back`]).
//!
//! A build that makes SBOMs of stages (`--attest type=sbom,scan-stage=true`, or the
//! Dockerfile's `BUILDKIT_SBOM_SCAN_STAGE`) asks the node for them
//! ([`NodeRequest::sbom_stages`], in a v5 request, which a v4 node refuses naming both
//! versions): the node scans the stages it built (they exist only there) and sends back
//! the scans, not the trees ([`NodeReply::sbom_stages`]); the build's side scans the
//! context itself and writes the statements. Any other request is still a v4 one, which
//! older nodes serve.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::context::{ContextEntries, EntryKind};
use crate::oci::annotation::{Annotation, AnnotationKind};
use crate::platform::Platform;

/// First line of a request. v2 added caches, annotations, image contexts and
/// [`ResultKind`], which a v1 node would silently ignore: it refuses a v2 request instead,
/// naming both versions. v3 added named directory contexts (tars after the context's),
/// forwarded ssh agents, the inline cache and registry credentials. v4 added OCI layout
/// contexts, local cache directories and cache exports sent back (tars a v3 node would
/// not read).
pub const REQUEST_MAGIC: &[u8] = b"xbuild-node-request-v4\n";
/// First line of a request that asks for the SBOMs of stages
/// ([`NodeRequest::sbom_stages`]), which a v4 node would ignore: it refuses it instead,
/// naming both versions, before any work. A node reads both.
pub const REQUEST_MAGIC_V5: &[u8] = b"xbuild-node-request-v5\n";
/// First line of a reply. v3: the tars of the cache exports sent back follow the reply.
pub const REPLY_MAGIC: &[u8] = b"xbuild-node-reply-v3\n";
/// Largest request or reply document accepted (secrets included).
const MAX_DOCUMENT: u64 = 64 * 1024 * 1024;

/// The build a node is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// The platforms to build there, in the user's order.
    pub platforms: Vec<Platform>,
    /// The whole build has several platforms: the node's step names carry the platform.
    #[serde(default)]
    pub multi_platform: bool,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target_stage: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter` stages.
    #[serde(default)]
    pub no_cache_filter: Vec<String>,
    /// `--pull`.
    pub pull: bool,
    /// `--network=none`.
    pub network_none: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--network=host`.
    #[serde(default)]
    pub network_host: bool,
    /// `--allow network.host`.
    #[serde(default)]
    pub allow_network_host: bool,
    /// `--pids-limit` (`None`: no limit).
    #[serde(default = "default_pids_limit")]
    pub pids_limit: Option<u64>,
    /// `--pids-limit` was given.
    #[serde(default)]
    pub pids_limit_required: bool,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// `compression-level=` when not the algorithm's default.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// `force-compression=true`.
    #[serde(default)]
    pub force_compression: bool,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// `--secret` values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--check-arch`: `warn`, `error` or `off`.
    pub check_arch: String,
    /// With `--push`: the repository (`registry/name`, the first `-t`) the node pushes each
    /// platform manifest to, by digest.
    pub push_to: Option<String>,
    /// The context directory's own metadata (the tar holds only what is beneath it).
    pub context_root: RootMetadata,
    /// `--label`s.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--add-host`s.
    #[serde(default)]
    pub add_hosts: Vec<crate::sandbox::HostEntry>,
    /// `--shm-size`, bytes.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--ulimit`s.
    #[serde(default)]
    pub ulimits: Vec<crate::sandbox::Ulimit>,
    /// `--cache-from` registry references the node imports itself (local cache directories
    /// are shipped: [`Self::cache_from_dirs`]).
    #[serde(default)]
    pub cache_from: Vec<String>,
    /// Those of [`Self::cache_from`] given with `registry.insecure=true`: their registry is
    /// reached over HTTPS without verifying its certificate, else plain HTTP (absent from
    /// an older client: none).
    #[serde(default)]
    pub cache_from_insecure: Vec<String>,
    /// `--cache-to` exports: of a registry, written by the node itself for its platforms;
    /// those [`CacheExportSpec::sent_back`] are written into a directory of the node's and
    /// sent back.
    #[serde(default)]
    pub cache_to: Vec<CacheExportSpec>,
    /// `--cache-to type=inline`: the node writes its images' cache records into their
    /// configs, as a local build does.
    #[serde(default)]
    pub inline_cache: bool,
    /// `--annotation`s: the node applies those of manifests and their descriptors; the
    /// index's are applied where the index is made, on the build's side.
    #[serde(default)]
    pub annotations: Vec<AnnotationSpec>,
    /// What comes back after the reply.
    #[serde(default)]
    pub result: ResultKind,
    /// `--build-context NAME=docker-image://REF`s: the node resolves each image itself.
    #[serde(default)]
    pub named_images: BTreeMap<String, String>,
    /// `--build-context NAME=DIR`s the build reads (URLs fetched here are directories by
    /// now), in the order their tars follow the context's.
    #[serde(default)]
    pub named_dirs: Vec<NamedDir>,
    /// `--ssh` ids and the path of the Unix socket on the node that the `ssh` connection
    /// forwards to this side's agent for that id.
    #[serde(default)]
    pub ssh_agents: BTreeMap<String, String>,
    /// The client's credentials for the registries the build uses, by registry: the node
    /// keeps them in memory for this sub-build only.
    #[serde(default)]
    pub credentials: BTreeMap<String, ForwardedCredentials>,
    /// `--build-context NAME=oci-layout://...`s the build reads, in the order their tars
    /// follow the named directories'.
    #[serde(default)]
    pub named_layouts: Vec<NamedLayout>,
    /// `--cache-from type=local`s, in the order their tars follow the layouts'.
    #[serde(default)]
    pub cache_from_dirs: Vec<CacheDir>,
    /// The build makes SBOMs of stages: which ones (the node scans them and sends the
    /// scans back in [`NodeReply::sbom_stages`]). Sent in a v5 request only
    /// ([`Self::magic`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_stages: Option<crate::executor::StageScan>,
}

impl NodeRequest {
    /// The first line this request is sent with: v5 when it asks for stage SBOMs (so that
    /// an older node refuses it rather than drop them), else v4.
    pub fn magic(&self) -> &'static [u8] {
        if self.sbom_stages.is_some() {
            REQUEST_MAGIC_V5
        } else {
            REQUEST_MAGIC
        }
    }
}

/// The scan of one stage a node built, for an extra SBOM of the image (as
/// [`crate::executor::SbomExtra`] names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSbom {
    /// The stage's name (`stage-N` when it has none).
    pub name: String,
    /// What the node's scan of its files found.
    pub scan: crate::sbom::Scan,
}

/// One `--build-context NAME=oci-layout://PATH[:TAG][@sha256:...]` shipped to a node: a tar
/// of the part of the layout the node's platforms read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedLayout {
    /// The context's name.
    pub name: String,
    /// The layout's path on the build's side (the image's provenance names it).
    pub path: String,
    /// `:TAG`.
    pub tag: Option<String>,
    /// `@sha256:...`.
    pub digest: Option<String>,
}

/// One `--cache-from type=local` shipped to a node: a tar of the part of the directory
/// the node's platforms may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDir {
    /// The name of the cache in the directory's `index.json` (`tag=`).
    pub tag: String,
    /// `digest=`.
    pub digest: Option<String>,
}

/// A user name and its password or token, as they go over the channel (never logged: the
/// `Debug` form hides the secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedCredentials {
    /// The user name (`<token>`: an identity token).
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl std::fmt::Debug for ForwardedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedCredentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One `--build-context NAME=DIR` shipped to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedDir {
    /// The context's name.
    pub name: String,
    /// The directory's own metadata (its tar holds only what is beneath it).
    pub root: RootMetadata,
}

/// What the node sends back after its reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    /// The OCI archive of the node's index (layers included): the build's store gets the
    /// whole result.
    #[default]
    Archive,
    /// Nothing: the reply's [`NodeReply::documents`] hold each platform's manifest and
    /// config; the layers are in the registry the node pushed to.
    Manifests,
}

/// One `--cache-to` of the registry, as it goes over the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheExportSpec {
    /// The cache reference.
    pub reference: String,
    /// `mode=max`.
    pub max: bool,
    /// `ignore-error=true`.
    pub ignore_error: bool,
    /// `image-manifest=true`.
    pub image_manifest: bool,
    /// `compression=`: `gzip`, `zstd` or `none`.
    pub compression: Option<String>,
    /// `compression-level=` when not the algorithm's default.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// `force-compression=true`.
    #[serde(default)]
    pub force_compression: bool,
    /// `oci-mediatypes=false` (absent from an older client: OCI types).
    #[serde(default)]
    pub docker_types: bool,
    /// `registry.insecure=true` (absent from an older client: certificates verified).
    #[serde(default)]
    pub insecure: bool,
    /// The node writes this export into a fresh cache directory of its own and sends it
    /// back after its reply; the build's side writes its records to the destination
    /// (`reference`: a registry reference, or the local directory as the user gave it).
    #[serde(default)]
    pub sent_back: bool,
}

impl CacheExportSpec {
    /// The wire form of an export: a local directory's is always [`Self::sent_back`], a
    /// registry's when `send_back` says so (several writers).
    pub fn of(export: &crate::cache::CacheExport, send_back: bool) -> Self {
        // Every field named: a key added to `CacheExport` must be sent too.
        let crate::cache::CacheExport {
            location,
            mode,
            ignore_error,
            image_manifest,
            compression,
            force_compression,
            docker_types,
        } = export;
        let (reference, insecure, sent_back) = match location {
            crate::cache::CacheLocation::Registry(cache) => {
                (cache.reference.to_string(), cache.insecure, send_back)
            }
            crate::cache::CacheLocation::Local(_) => (location.to_string(), false, true),
        };
        Self {
            reference,
            insecure,
            sent_back,
            max: *mode == crate::cache::CacheMode::Max,
            ignore_error: *ignore_error,
            image_manifest: *image_manifest,
            compression: compression.map(|c| compression_name(c).to_owned()),
            compression_level: compression.and_then(compression_level),
            force_compression: *force_compression,
            docker_types: *docker_types,
        }
    }

    /// The export a node writes for a [`Self::sent_back`] one: the same keys, into the
    /// fresh cache directory `dir` (under the name `latest`).
    pub fn export_into(&self, dir: &Path) -> crate::cache::CacheExport {
        crate::cache::CacheExport {
            location: crate::cache::CacheLocation::local(dir),
            ..self.keys()
        }
    }

    /// Back to a cache export.
    ///
    /// # Errors
    /// A reference that does not parse.
    pub fn export(
        &self,
    ) -> Result<crate::cache::CacheExport, crate::registry::reference::ReferenceError> {
        Ok(crate::cache::CacheExport {
            location: crate::cache::CacheLocation::Registry(crate::cache::RegistryCache {
                reference: crate::registry::ImageRef::parse(&self.reference)?,
                insecure: self.insecure,
            }),
            ..self.keys()
        })
    }

    /// Every key but the location (a local directory of the same name, replaced by the
    /// callers).
    fn keys(&self) -> crate::cache::CacheExport {
        crate::cache::CacheExport {
            location: crate::cache::CacheLocation::local(&self.reference),
            mode: if self.max {
                crate::cache::CacheMode::Max
            } else {
                crate::cache::CacheMode::Min
            },
            ignore_error: self.ignore_error,
            image_manifest: self.image_manifest,
            compression: self
                .compression
                .as_deref()
                .map(|name| compression_at(name, self.compression_level)),
            force_compression: self.force_compression,
            docker_types: self.docker_types,
        }
    }
}

/// The wire name of a layer compression's algorithm (its level goes beside it, see
/// [`compression_level`]).
pub fn compression_name(compression: crate::layer::Compression) -> &'static str {
    match compression.algorithm() {
        crate::layer::Algorithm::Zstd => "zstd",
        crate::layer::Algorithm::Gzip => "gzip",
        crate::layer::Algorithm::None => "none",
    }
}

/// The level sent beside [`compression_name`]: `None` at the algorithm's default.
pub fn compression_level(compression: crate::layer::Compression) -> Option<i32> {
    (!compression.default_level()).then_some(compression.level())
}

/// A layer compression from its wire name (gzip for anything unknown, the default) at
/// its default level.
pub fn compression_of(name: &str) -> crate::layer::Compression {
    match name {
        "zstd" => crate::layer::Compression::Zstd,
        "none" => crate::layer::Compression::None,
        _ => crate::layer::Compression::Gzip,
    }
}

/// A layer compression from its wire name and level. The sender checked the level (the
/// same binary on both sides); one the algorithm does not take gives its default.
pub fn compression_at(name: &str, level: Option<i32>) -> crate::layer::Compression {
    let compression = compression_of(name);
    level
        .and_then(|level| {
            crate::layer::Compression::with_level(compression.algorithm(), level.into()).ok()
        })
        .unwrap_or(compression)
}

/// One `--annotation`, as it goes over the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationSpec {
    /// `index`, `manifest`, `manifest-descriptor`, `index-descriptor`; `None`: not written.
    pub kind: Option<String>,
    /// The platforms it is for (empty: all).
    pub platforms: Vec<Platform>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl AnnotationSpec {
    /// The wire form of an annotation.
    pub fn of(annotation: &Annotation) -> Self {
        Self {
            kind: annotation.kind.map(|kind| kind.name().to_owned()),
            platforms: annotation.platforms.clone(),
            key: annotation.key.clone(),
            value: annotation.value.clone(),
        }
    }

    /// Back to an annotation.
    ///
    /// # Errors
    /// An unknown kind (the message names it).
    pub fn annotation(&self) -> Result<Annotation, String> {
        let kind = match self.kind.as_deref() {
            None => None,
            Some(name) => Some(
                [
                    AnnotationKind::Index,
                    AnnotationKind::Manifest,
                    AnnotationKind::ManifestDescriptor,
                    AnnotationKind::IndexDescriptor,
                ]
                .into_iter()
                .find(|kind| kind.name() == name)
                .ok_or_else(|| format!("unknown annotation type {name:?}"))?,
            ),
        };
        Ok(Annotation {
            kind,
            platforms: self.platforms.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
        })
    }
}

/// A manifest or config the node sends back with a [`ResultKind::Manifests`] reply: its
/// digest and its bytes (JSON, so UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// `sha256:...`; checked against the bytes on arrival.
    pub digest: String,
    /// The document's bytes.
    pub text: String,
}

fn default_pids_limit() -> Option<u64> {
    Some(crate::sandbox::DEFAULT_PIDS_LIMIT)
}

/// Mode, owner and mtime of the context directory itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMetadata {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
}

impl RootMetadata {
    /// Reads a directory's metadata.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn of(dir: &Path) -> io::Result<Self> {
        let metadata = std::fs::metadata(dir)?;
        Ok(Self {
            mode: metadata.mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime: metadata.mtime(),
        })
    }
}

/// What a node answers once its build is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReply {
    /// Each platform's manifest descriptor (with its platform), in the request's order.
    pub manifests: Vec<Descriptor>,
    /// `RUN` steps run.
    pub steps_run: usize,
    /// Steps taken from the node's cache.
    pub cached: usize,
    /// Seconds spent under emulation there, per platform.
    pub emulated: Vec<(Platform, f64)>,
    /// Warnings of the node's build.
    pub warnings: Vec<String>,
    /// Build arguments nothing used.
    pub unused_build_args: Vec<String>,
    /// What the node pushed (`registry/name@sha256:...`).
    pub pushed: Vec<String>,
    /// What each platform's image was built from (images, URLs), for its provenance. Absent
    /// from older nodes' replies, whose platforms then have no materials.
    #[serde(default)]
    pub materials: Vec<(Platform, Vec<crate::executor::Material>)>,
    /// The steps each platform's image needed (the provenance's `mode=max`). Absent from
    /// older nodes' replies, whose platforms then list no steps.
    #[serde(default)]
    pub steps: Vec<(Platform, Vec<crate::attest::provenance::Step>)>,
    /// With [`ResultKind::Manifests`]: each platform's manifest and config.
    #[serde(default)]
    pub documents: Vec<Document>,
    /// When the request asked for [`NodeRequest::sbom_stages`]: each platform's scanned
    /// stages, in the order a local build lists them (`None` from a node that was not
    /// asked, or could not be: the build's side then fails rather than lose them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_stages: Option<Vec<(Platform, Vec<StageSbom>)>>,
}

/// Writes the magic line, the length and the JSON document.
///
/// # Errors
/// Write failures.
pub fn write_document(
    out: &mut impl Write,
    magic: &[u8],
    document: &impl Serialize,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(document).map_err(io::Error::other)?;
    out.write_all(magic)?;
    out.write_all(&(bytes.len() as u64).to_be_bytes())?;
    out.write_all(&bytes)
}

/// Reads what [`write_document`] wrote.
///
/// # Errors
/// A wrong magic line (`InvalidData`, naming what came instead), a truncated stream, a
/// document that does not parse.
pub fn read_document<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
    magic: &[u8],
) -> io::Result<T> {
    read_document_of(input, &[magic]).map(|(_, document)| document)
}

/// Reads what [`write_document`] wrote with any of `magics` (all of one length), and
/// which one it was.
///
/// # Errors
/// As [`read_document`].
pub fn read_document_of<'m, T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
    magics: &[&'m [u8]],
) -> io::Result<(&'m [u8], T)> {
    let length = magics.first().map_or(0, |magic| magic.len());
    let mut seen = vec![0; length];
    input.read_exact(&mut seen)?;
    let Some(magic) = magics.iter().copied().find(|magic| *magic == seen) else {
        let expected: Vec<_> = magics
            .iter()
            .map(|magic| format!("{:?}", String::from_utf8_lossy(magic).trim()))
            .collect();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected {}, got {:?}",
                expected.join(" or "),
                String::from_utf8_lossy(&seen)
            ),
        ));
    };
    let mut length = [0; 8];
    input.read_exact(&mut length)?;
    let length = u64::from_be_bytes(length);
    if length > MAX_DOCUMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a document of {length} bytes is too large"),
        ));
    }
    let mut bytes = Vec::new();
    input.take(length).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map(|document| (magic, document))
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Writes the context entries (from [`crate::context::walk`] on `context_dir`) as a tar.
///
/// # Errors
/// A file that cannot be read, write failures (a closed channel).
pub fn write_context(
    context_dir: &Path,
    entries: &ContextEntries,
    out: impl Write,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let path = entry.path();
        header.set_mode(entry.mode());
        header.set_uid(u64::from(entry.uid()));
        header.set_gid(u64::from(entry.gid()));
        header.set_mtime(u64::try_from(entry.mtime().seconds).unwrap_or(0));
        header.set_size(0);
        match entry.kind() {
            EntryKind::File => {
                let file = std::fs::File::open(context_dir.join(path))?;
                // The size at the time of sending: a file that changes meanwhile would
                // corrupt the stream, so exactly this many bytes are sent.
                let size = file.metadata()?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let mut reader = file.take(size);
                let mut counted = CountingReader {
                    inner: &mut reader,
                    count: 0,
                };
                tar.append_data(&mut header, path, &mut counted)?;
                if counted.count != size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} shrank while it was sent",
                            context_dir.join(path).display()
                        ),
                    ));
                }
            }
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut header, path, io::empty())?;
            }
            // As BuildKit's fsutil sends a socket: an empty regular file.
            EntryKind::Socket => {
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, path, io::empty())?;
            }
            EntryKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = entry.link_target().unwrap_or(Path::new(""));
                tar.append_link(&mut header, path, target)?;
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                header.set_entry_type(match entry.kind() {
                    EntryKind::Fifo => tar::EntryType::Fifo,
                    EntryKind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                let major = nix::sys::stat::major(entry.rdev());
                let minor = nix::sys::stat::minor(entry.rdev());
                header.set_device_major(u32::try_from(major).unwrap_or(0))?;
                header.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
                tar.append_data(&mut header, path, io::empty())?;
            }
        }
    }
    tar.into_inner()?.flush()
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        Ok(read)
    }
}

/// Unpacks a context tar into `dir` (which exists and is empty), keeping modes, numeric
/// owners and mtimes, then gives `dir` the context root's metadata. Paths that would leave
/// `dir` are refused by the tar reader. The whole tar is read, its end blocks included, so
/// another tar may follow on `input`.
///
/// # Errors
/// A bad tar (one that does not end with two zero blocks), write failures.
pub fn read_context(mut input: impl Read, dir: &Path, root: &RootMetadata) -> io::Result<()> {
    let mut archive = tar::Archive::new(&mut input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    archive.unpack(dir)?;
    // The tar reader stops after the first of the two zero blocks that end a tar.
    let mut end = [0; 512];
    input.read_exact(&mut end)?;
    if end.iter().any(|byte| *byte != 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a context tar does not end with two zero blocks",
        ));
    }
    set_root_metadata(dir, root)
}

/// The entries of `root` whose paths (relative to it) `wanted` keeps, with the
/// directories above them: part of an OCI layout or a cache directory, for
/// [`write_context`] (which [`read_tree`] unpacks).
///
/// # Errors
/// A directory that cannot be read.
pub fn tree_entries(root: &Path, wanted: &dyn Fn(&Path) -> bool) -> io::Result<ContextEntries> {
    let mut entries = crate::context::walk(root, &crate::context::Dockerignore::empty())
        .map_err(io::Error::other)?;
    let files: Vec<std::path::PathBuf> = entries
        .iter()
        .filter(|entry| entry.kind() != EntryKind::Dir && wanted(entry.path()))
        .map(|entry| entry.path().to_path_buf())
        .collect();
    entries.retain(|entry| match entry.kind() {
        EntryKind::Dir => files.iter().any(|file| file.starts_with(entry.path())),
        _ => wanted(entry.path()),
    });
    Ok(entries)
}

/// Unpacks a tar of [`write_tree`] into the existing directory `dir` (which keeps its own
/// owner and mode).
///
/// # Errors
/// A malformed tar, write failures.
pub fn read_tree(input: impl Read, dir: &Path) -> io::Result<()> {
    let root = RootMetadata::of(dir)?;
    read_context(input, dir, &root)
}

fn set_root_metadata(dir: &Path, root: &RootMetadata) -> io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(root.mode))?;
    std::os::unix::fs::chown(dir, Some(root.uid), Some(root.gid))?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(root.mtime).unwrap_or(0));
    std::fs::File::open(dir)?.set_times(
        std::fs::FileTimes::new()
            .set_accessed(mtime)
            .set_modified(mtime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Dockerignore, walk};

    /// A cache export's compression, level and force reach the node as they were given
    /// (a level left out is the default, an old peer's request too).
    #[test]
    fn cache_export_compression_and_level_round_trip() {
        for text in [
            "type=registry,ref=r/a:c,compression=zstd,compression-level=19,force-compression=true",
            "type=registry,ref=r/a:c,compression-level=1",
            "type=registry,ref=r/a:c,compression=uncompressed",
            "type=registry,ref=r/a:c,registry.insecure=true",
            "type=registry,ref=r/a:c",
        ] {
            let export = crate::cache::CacheExport::parse(text).unwrap();
            let wire = serde_json::to_string(&CacheExportSpec::of(&export, false)).unwrap();
            let back: CacheExportSpec = serde_json::from_str(&wire).unwrap();
            assert_eq!(back.export().unwrap(), export, "{text}");
        }
        let old: CacheExportSpec = serde_json::from_str(
            r#"{"reference":"r/a:c","max":false,"ignore_error":false,"image_manifest":false,"compression":"zstd"}"#,
        )
        .unwrap();
        assert_eq!(
            old.export().unwrap().compression,
            Some(crate::layer::Compression::Zstd)
        );
        assert!(matches!(
            old.export().unwrap().location,
            crate::cache::CacheLocation::Registry(cache) if !cache.insecure
        ));
    }

    /// A request asking for stage SBOMs goes as v5, which a v4 reader refuses naming
    /// both versions; a node reads both; the scans survive the trip.
    #[test]
    fn stage_sboms_need_a_v5_request_and_come_back_whole() {
        let request: NodeRequest = serde_json::from_str(
            r#"{"dockerfile":[],"platforms":[],"build_args":{},"target_stage":null,
            "no_cache":false,"pull":false,"network_none":false,"allow_insecure":false,
            "compression":"gzip","source_date_epoch":null,"secrets":{},"check_arch":"warn",
            "push_to":null,"context_root":{"mode":493,"uid":0,"gid":0,"mtime":0}}"#,
        )
        .unwrap();
        assert_eq!(request.magic(), REQUEST_MAGIC);
        let asking = NodeRequest {
            sbom_stages: Some(crate::executor::StageScan::Every),
            ..request
        };
        assert_eq!(asking.magic(), REQUEST_MAGIC_V5);
        let mut bytes = Vec::new();
        write_document(&mut bytes, asking.magic(), &asking).unwrap();
        let error = read_document::<NodeRequest>(&mut bytes.as_slice(), REQUEST_MAGIC).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("xbuild-node-request-v4")
                && message.contains("xbuild-node-request-v5"),
            "{message}"
        );
        let (magic, back): (_, NodeRequest) =
            read_document_of(&mut bytes.as_slice(), &[REQUEST_MAGIC, REQUEST_MAGIC_V5]).unwrap();
        assert_eq!((magic, back), (REQUEST_MAGIC_V5, asking));
        let scan = crate::sbom::Scan {
            packages: vec![crate::sbom::Package {
                ecosystem: crate::sbom::Ecosystem::Deb,
                name: "dpkg".to_owned(),
                version: "1.21.22".to_owned(),
                arch: Some("arm64".to_owned()),
                purl: "pkg:deb/debian/dpkg@1.21.22?arch=arm64".to_owned(),
                supplier: None,
                source: None,
                evidence: vec!["/var/lib/dpkg/status".to_owned()],
            }],
            ..Default::default()
        };
        let stages = vec![(
            Platform::parse("linux/arm64").unwrap(),
            vec![StageSbom {
                name: "build".to_owned(),
                scan,
            }],
        )];
        let wire = serde_json::to_string(&stages).unwrap();
        let back: Vec<(Platform, Vec<StageSbom>)> = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, stages);
    }

    #[test]
    fn documents_round_trip_and_a_wrong_magic_is_named() {
        let mut bytes = Vec::new();
        write_document(&mut bytes, REPLY_MAGIC, &vec!["a", "b"]).unwrap();
        bytes.extend_from_slice(b"rest");
        let mut input = bytes.as_slice();
        let back: Vec<String> = read_document(&mut input, REPLY_MAGIC).unwrap();
        assert_eq!(back, ["a", "b"]);
        assert_eq!(input, b"rest");
        let error = read_document::<Vec<String>>(&mut bytes.as_slice(), REQUEST_MAGIC).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn context_tar_round_trip_keeps_what_copy_sees() {
        let source = tempfile::tempdir().unwrap();
        let root = source.path();
        std::fs::create_dir_all(root.join("dir/sub")).unwrap();
        std::fs::write(root.join("dir/sub/file"), "content").unwrap();
        std::fs::write(root.join("skip.log"), "no").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\n").unwrap();
        std::fs::set_permissions(
            root.join("dir/sub/file"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::os::unix::fs::symlink("dir/sub/file", root.join("link")).unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(root.join(&long)).unwrap();
        std::fs::write(root.join(&long).join("f".repeat(100)), "long").unwrap();
        let ignore = Dockerignore::load(root, &root.join("Dockerfile")).unwrap();
        let entries = walk(root, &ignore).unwrap();
        let mut tar = Vec::new();
        write_context(root, &entries, &mut tar).unwrap();
        // A second tar follows (a named context's): each is read to its very end.
        let mut first = entries.clone();
        first.retain(|entry| entry.index() == 0);
        write_context(root, &first, &mut tar).unwrap();
        tar.extend_from_slice(b"rest");
        let target = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let meta = RootMetadata::of(root).unwrap();
        let mut input = tar.as_slice();
        read_context(&mut input, target.path(), &meta).unwrap();
        read_context(&mut input, second.path(), &meta).unwrap();
        assert_eq!(input, b"rest");
        assert_eq!(
            walk(second.path(), &Dockerignore::empty()).unwrap().len(),
            1
        );
        let copied = walk(target.path(), &Dockerignore::empty()).unwrap();
        let shape = |entries: &ContextEntries| -> Vec<_> {
            entries
                .iter()
                .map(|e| {
                    (
                        e.path().to_path_buf(),
                        e.kind(),
                        e.mode(),
                        e.size(),
                        e.link_target().map(Path::to_path_buf),
                        e.mtime().seconds,
                    )
                })
                .collect()
        };
        assert_eq!(shape(&copied), shape(&entries));
        assert!(!target.path().join("skip.log").exists());
        assert_eq!(RootMetadata::of(target.path()).unwrap(), meta);
    }
}

//! A build node's side of a sub-build (`xbuild __node-build`, see
//! [`crate::nodes::protocol`]): the request becomes a [`BuildRequest`] for this same
//! pipeline, without checks (the build that sent it ran them) and without outputs: the
//! node pushes each platform's manifest by digest and sends the OCI archive of its index
//! back itself, on the pipeline's runtime.
//!
//! A sub-build is an ordinary build in the node's own store (its cache, its base images),
//! of the requested platforms only, from the context unpacked into a private directory
//! under the store's `tmp/` (removed afterwards). With `push_to`, each platform manifest is
//! pushed from the node by digest. Then either the OCI archive of the node's index goes back
//! (the build's own store holds the whole result), or, with [`ResultKind::Manifests`], only
//! each platform's manifest and config in the reply (the layers stay in the registry).
//! `--cache-from`/`--cache-to` of a registry are imported and exported here, by the node
//! itself, for its platforms; a local cache directory to read arrives as a tar (the part
//! of it these platforms may use), and a `--cache-to` sent back
//! ([`crate::nodes::protocol::CacheExportSpec::sent_back`]: a local directory, or a registry
//! several nodes write) is written into a fresh directory here and goes back after the
//! reply. The manifests' `--annotation`s are applied here. Named
//! directory contexts and OCI layouts arrive as tars after the context's and are unpacked
//! beside it; the
//! `--ssh` agents are Unix sockets the connection forwards to the client's agents
//! (`/tmp/xbuild-ssh-*.sock`, nothing else is accepted), removed when the build is done.
//! The client's registry credentials are kept in this process's memory
//! ([`crate::registry::forward_credentials`]), before the node's own configuration.
//! A request for stage SBOMs ([`NodeRequest::sbom_stages`]) has the build find the stages
//! they scan; each is scanned here and the scans go back in the reply (the context is
//! scanned on the build's side, where it is).

use std::io::{BufReader, Read, Write};
use std::sync::Arc;

use anyhow::Context as _;

use super::{BuildRequest, build_on, start_runtime};
use crate::error::{ExitKind, Failure, ResultExt};
use crate::executor::{
    BuildOptions, Built, CheckArch, ExtraRoot, Material, NamedContext, SbomExtra, SshSource,
    StageScan,
};
use crate::export::{self, Output};
use oci_spec::image::ImageManifest;

use crate::cache::{CacheLocation, CacheOptions};
use crate::nodes::protocol::{self, Document, NodeReply, NodeRequest, ResultKind, StageSbom};
use crate::progress::{SharedSink, VertexCounter};
use crate::registry::{ImageRef, RegistryOptions};
use crate::store::Store;

/// Runs one sub-build: request and context from `input`, reply and archive to `output`,
/// progress to `sink`.
///
/// # Errors
/// A malformed request (exit 2), whatever the build fails with (its own exit kind).
pub fn serve_build(
    input: impl Read,
    output: &mut impl Write,
    sink: SharedSink,
) -> anyhow::Result<()> {
    let mut input = BufReader::new(input);
    let (magic, request): (_, NodeRequest) = protocol::read_document_of(
        &mut input,
        &[protocol::REQUEST_MAGIC, protocol::REQUEST_MAGIC_V5],
    )
    .context("reading the build request")
    .exit_kind(ExitKind::BadInput)?;
    if magic != request.magic() {
        return Err(Failure::bad_input(format_args!(
            "the build request: stage SBOMs are asked in a v5 request only"
        ))
        .into());
    }
    // The client's credentials, in this process's memory only (it serves this one build).
    crate::registry::forward_credentials(
        request
            .credentials
            .iter()
            .map(|(registry, given)| {
                (
                    registry.clone(),
                    crate::registry::Credentials {
                        username: given.username.clone(),
                        secret: crate::registry::Secret::new(given.secret.clone()),
                    },
                )
            })
            .collect(),
    );
    let store = Store::open_default().context("opening the node's store")?;
    let tmp = store.layout().tmp_dir();
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let work = tempfile::Builder::new()
        .prefix("node-build-")
        .tempdir_in(&tmp)
        .with_context(|| format!("creating a directory in {}", tmp.display()))?;
    let context = work.path().join("context");
    std::fs::create_dir(&context)?;
    protocol::read_context(&mut input, &context, &request.context_root)
        .context("unpacking the build context")?;
    // The named directories follow, in the request's order; each is already filtered by
    // its `.dockerignore` (read again on an already filtered tree, it removes nothing more).
    let mut named_contexts: std::collections::BTreeMap<String, NamedContext> = request
        .named_images
        .iter()
        .map(|(name, reference)| (name.clone(), NamedContext::Image(reference.clone())))
        .collect();
    for (index, named) in request.named_dirs.iter().enumerate() {
        let dir = work.path().join(format!("named-{index}"));
        std::fs::create_dir(&dir)?;
        protocol::read_context(&mut input, &dir, &named.root)
            .with_context(|| format!("unpacking the build context {}", named.name))?;
        named_contexts.insert(named.name.clone(), NamedContext::Dir(dir));
    }
    // The OCI layouts (the part the requested platforms read), then the local caches to
    // read from (the part they may use).
    let mut layout_paths = Vec::new();
    for (index, named) in request.named_layouts.iter().enumerate() {
        let dir = work.path().join(format!("layout-{index}"));
        std::fs::create_dir(&dir)?;
        protocol::read_tree(&mut input, &dir)
            .with_context(|| format!("unpacking the OCI layout of build context {}", named.name))?;
        layout_paths.push((dir.display().to_string(), named.path.clone()));
        named_contexts.insert(
            named.name.clone(),
            NamedContext::OciLayout {
                path: dir,
                tag: named.tag.clone(),
                digest: named.digest.clone(),
            },
        );
    }
    let mut cache_dirs = Vec::new();
    for (index, shipped) in request.cache_from_dirs.iter().enumerate() {
        let dir = work.path().join(format!("cache-from-{index}"));
        std::fs::create_dir(&dir)?;
        protocol::read_tree(&mut input, &dir).context("unpacking a local cache to read")?;
        cache_dirs.push(CacheLocation::Local(crate::cache::LocalCache {
            dir,
            tag: shipped.tag.clone(),
            digest: shipped.digest.clone(),
        }));
    }
    if let Some(socket) = request.ssh_agents.values().find(|socket| {
        socket
            .strip_prefix(FORWARDED_PREFIX)
            .and_then(|rest| rest.strip_suffix(".sock"))
            .is_none_or(|name| name.is_empty() || name.contains('/'))
    }) {
        return Err(Failure::bad_input(format_args!(
            "the build request: the ssh agent socket {socket} is not {FORWARDED_PREFIX}*.sock"
        ))
        .into());
    }
    // The sockets the connection forwards to the client's agents; removed when the build
    // is done (sshd leaves them behind).
    let _sockets = Sockets(
        request
            .ssh_agents
            .values()
            .map(std::path::PathBuf::from)
            .collect(),
    );
    // The context came filtered already; an empty `Dockerfile.dockerignore` beside the
    // Dockerfile keeps a `.dockerignore` inside the context from filtering it again.
    let dockerfile = work.path().join("Dockerfile");
    std::fs::write(&dockerfile, &request.dockerfile)?;
    std::fs::write(work.path().join("Dockerfile.dockerignore"), b"")?;

    let bad_request = |what: String| Failure::bad_input(format_args!("the build request: {what}"));
    let cache_from = request
        .cache_from
        .iter()
        .map(|reference| {
            ImageRef::parse(reference)
                .map(|parsed| {
                    CacheLocation::Registry(crate::cache::RegistryCache {
                        reference: parsed,
                        insecure: request.cache_from_insecure.contains(reference),
                    })
                })
                .map_err(|error| bad_request(error.to_string()))
        })
        .chain(cache_dirs.into_iter().map(Ok))
        .collect::<Result<Vec<_>, _>>()?;
    // The exports sent back are written into fresh directories here.
    let mut sent_back = Vec::new();
    let cache_to = request
        .cache_to
        .iter()
        .map(|export| {
            if export.sent_back {
                let dir = work.path().join(format!("cache-to-{}", sent_back.len()));
                sent_back.push(dir.clone());
                return Ok(export.export_into(&dir));
            }
            export
                .export()
                .map_err(|error| bad_request(error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let annotations = request
        .annotations
        .iter()
        .map(|annotation| annotation.annotation().map_err(bad_request))
        .collect::<Result<Vec<_>, _>>()?;
    let manifests_only = request.result == ResultKind::Manifests;
    if manifests_only && request.push_to.is_none() {
        return Err(bad_request("only manifests asked back, and no push".to_owned()).into());
    }
    let options = BuildOptions {
        context,
        dockerfile,
        targets: request.platforms.clone(),
        explicit_platforms: true,
        multi_platform: request.multi_platform,
        build_args: request.build_args.clone(),
        target_stage: request.target_stage.clone(),
        no_cache: request.no_cache,
        no_cache_filter: request.no_cache_filter.clone(),
        pull: request.pull,
        network_none: request.network_none,
        allow_insecure: request.allow_insecure,
        network_host: request.network_host,
        allow_network_host: request.allow_network_host,
        pids_limit: request.pids_limit,
        pids_limit_required: request.pids_limit_required,
        compression: protocol::compression_at(&request.compression, request.compression_level),
        // A node's result goes back as an archive or a push: its layers' blobs are needed.
        eager_blobs: true,
        force_compression: request.force_compression,
        // One set: the build that sent this refuses several layer compressions with nodes.
        more_compressions: Vec::new(),
        source_date_epoch: request.source_date_epoch,
        secrets: request.secrets.clone(),
        sink: sink.clone(),
        check_arch: match request.check_arch.as_str() {
            "error" => CheckArch::Error,
            "off" => CheckArch::Off,
            _ => CheckArch::Warn,
        },
        // Layers of imported hits stay in the registry when nothing but the push needs them.
        cache: CacheOptions {
            from: cache_from,
            to: cache_to,
            lazy_layers: manifests_only,
            inline: request.inline_cache,
        },
        labels: request.labels.clone(),
        annotations,
        add_hosts: request.add_hosts.clone(),
        shm_size: request.shm_size,
        ulimits: request.ulimits.clone(),
        // The client's agents, through the sockets its connection forwards.
        ssh: request
            .ssh_agents
            .iter()
            .map(|(id, socket)| (id.clone(), SshSource::Socket(socket.into())))
            .collect(),
        named_contexts,
    };
    let runtime = start_runtime().map_err(|error| Failure::new(error.exit_kind(), error))?;
    let build_request = BuildRequest {
        build: options,
        tags: Vec::new(),
        outputs: Vec::new(),
        output_sets: Vec::new(),
        builder: None,
        fallback: Default::default(),
        checks: false,
        // The stages the build's SBOMs scan are found here, and scanned below.
        attestations: crate::attest::options::Attestations {
            node_stages: request.sbom_stages.is_some(),
            scan_stage: request.sbom_stages == Some(StageScan::Every),
            ..Default::default()
        },
        context_url: None,
    };
    let report = build_on(&build_request, &runtime)
        .map_err(|failure| Failure::new(failure.exit_kind(), failure))?
        .report;
    // The stages' scans go back, not their trees; the context is scanned where it is, on
    // the build's side.
    let sbom_stages = match request.sbom_stages {
        None => None,
        Some(_) => Some(stage_sboms(&report.sbom_extras)?),
    };
    let registry = Arc::new(RegistryOptions::from_env(store.root()).showing_notes(sink.clone()));
    let vertices = VertexCounter::after(report.last_vertex);
    let mut pushed = Vec::new();
    if let Some(repository) = &request.push_to {
        for image in &report.built.images {
            // One platform at a time, as its own result: pushed by digest, no tag.
            let single = Built {
                images: vec![image.clone()],
                index: image.manifest.clone(),
                explicit_platforms: false,
            };
            let written = runtime
                .block_on(export::write(
                    &store,
                    registry.clone(),
                    &single,
                    std::slice::from_ref(repository),
                    &[Output::push(true)],
                    sink.clone(),
                    &vertices,
                ))
                .map_err(|error| Failure::new(error.exit_kind(), error))?;
            pushed.extend(written.written.iter().map(ToString::to_string));
        }
    }
    let archive = work.path().join("result.tar");
    let mut documents = Vec::new();
    if manifests_only {
        for image in &report.built.images {
            let manifest = store.layout().read_blob(image.manifest.digest())?;
            let parsed: ImageManifest = serde_json::from_slice(&manifest)
                .with_context(|| format!("reading manifest {}", image.manifest.digest()))?;
            let config = store.layout().read_blob(parsed.config().digest())?;
            for (digest, bytes) in [
                (image.manifest.digest().to_string(), manifest),
                (parsed.config().digest().to_string(), config),
            ] {
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("{digest} is not UTF-8 JSON"))?;
                documents.push(Document { digest, text });
            }
        }
    } else {
        runtime
            .block_on(export::write(
                &store,
                registry,
                &report.built,
                &[],
                &[Output::Oci {
                    dest: archive.clone(),
                    referrers: false,
                    media_types: export::MediaTypes::Oci,
                    tar: true,
                }],
                // A file in the node's tmp/ on the way back is no step of the user's build.
                Arc::new(crate::progress::Discard),
                &vertices,
            ))
            .map_err(|error| Failure::new(error.exit_kind(), error))?;
    }
    let reply = NodeReply {
        manifests: report
            .built
            .images
            .iter()
            .map(|image| image.manifest.clone())
            .collect(),
        steps_run: report.steps_run,
        cached: report.cached,
        emulated: report
            .emulated
            .iter()
            .map(|(platform, time)| (platform.clone(), time.as_secs_f64()))
            .collect(),
        warnings: report.warnings.clone(),
        unused_build_args: report.unused_build_args.clone(),
        pushed,
        // An OCI layout is named by its path on the build's side, not this copy's.
        materials: report
            .materials
            .iter()
            .map(|(platform, materials)| {
                let materials = materials
                    .iter()
                    .map(|material| match material {
                        Material::Image {
                            reference,
                            platform,
                            digest,
                        } => Material::Image {
                            reference: layout_paths
                                .iter()
                                .find_map(|(here, there)| {
                                    (reference.strip_prefix("oci-layout://")? == here)
                                        .then(|| format!("oci-layout://{there}"))
                                })
                                .unwrap_or_else(|| reference.clone()),
                            platform: platform.clone(),
                            digest: digest.clone(),
                        },
                        other => other.clone(),
                    })
                    .collect();
                (platform.clone(), materials)
            })
            .collect(),
        steps: report
            .steps
            .iter()
            .map(|(platform, steps)| (platform.clone(), steps.clone()))
            .collect(),
        documents,
        sbom_stages,
    };
    protocol::write_document(output, protocol::REPLY_MAGIC, &reply)?;
    // Each cache export sent back, whole (an export that failed with ignore-error=true
    // may have left nothing: an empty tar).
    for dir in &sent_back {
        std::fs::create_dir_all(dir)?;
        let entries = protocol::tree_entries(dir, &|_| true)?;
        protocol::write_context(dir, &entries, &mut *output)?;
    }
    if !manifests_only {
        let mut file = std::fs::File::open(&archive)?;
        std::io::copy(&mut file, output)?;
    }
    output.flush()?;
    Ok(())
}

/// Scans each platform's stages (the [`ExtraRoot::Layers`] extras) in the executor's order.
fn stage_sboms(
    extras: &std::collections::BTreeMap<crate::platform::Platform, Vec<SbomExtra>>,
) -> anyhow::Result<Vec<(crate::platform::Platform, Vec<StageSbom>)>> {
    let mut scanned = Vec::new();
    for (platform, extras) in extras {
        let mut stages = Vec::new();
        for extra in extras {
            if let ExtraRoot::Layers(layers) = &extra.root {
                let scan = crate::sbom::scan(&crate::sbom::Root::Layers(layers))
                    .with_context(|| format!("scanning stage {} for its SBOM", extra.name))?;
                stages.push(StageSbom {
                    name: extra.name.clone(),
                    scan,
                });
            }
        }
        scanned.push((platform.clone(), stages));
    }
    Ok(scanned)
}

/// Where the sockets of forwarded ssh agents are (`nodes::dispatch` names them).
const FORWARDED_PREFIX: &str = "/tmp/xbuild-ssh-";

/// Unix sockets removed on drop.
struct Sockets(Vec<std::path::PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for socket in &self.0 {
            let _ = std::fs::remove_file(socket);
        }
    }
}

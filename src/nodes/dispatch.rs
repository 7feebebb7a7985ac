//! This side of a build with nodes: which platform goes where, the check that every node
//! answers before any work, the sub-builds streamed over SSH next to the local build, and
//! the index over all platforms.
//!
//! Each target platform goes to the first node of the builder that lists it; the others
//! are built here, at the same time, by the caller's `local` build (the pipeline's
//! executor). Nodes are probed first
//! ([`super::ssh::probe`]): one that does not answer fails the build before any work (exit
//! 3, naming the node and what ssh said), or, with `--fallback=emulate`, its platforms are
//! built here (a progress note says so). Each node's progress events come back as its
//! `--progress=rawjson` lines and are shown with `[node NAME]` before their names, numbered
//! with the local ones. The node's OCI archive is loaded into the local store as it
//! arrives; the index is then made from every platform's manifest in the user's order,
//! exactly as a local build makes it, so with `SOURCE_DATE_EPOCH` the index digest is the
//! same as a purely local build's. The context goes to each node as a tar after its
//! `.dockerignore`, followed by each `--build-context NAME=DIR` the build reads (after the
//! directory's own `.dockerignore`); each `--ssh` agent (key files loaded into an agent
//! started here, as a local build does) is forwarded by the node's `ssh` connection to a
//! socket there, for that sub-build only; the local user's credentials for the registries
//! the build uses go in the request (the node keeps them in memory).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use oci_spec::image::{Descriptor, ImageManifest};

use super::protocol::{self, NodeReply, NodeRequest, ResultKind, RootMetadata};
use super::ship;
use super::ssh;
use super::{Builder, Node};
use crate::cache::CacheLocation;
use crate::context::{self, Dockerignore};
use crate::error::{ExitKind, Failure};
use crate::executor::{BuildOptions, BuildReport, CheckArch, ExtraRoot, SbomExtra, StageScan};
use crate::executor::{Built, BuiltImage, NamedContext};
use crate::oci::annotation::AnnotationKind;
use crate::platform::Platform;
use crate::progress::{Event, SharedSink, Sink, VertexCounter, VertexId};
use crate::registry::ImageRef;
use crate::store::Store;

/// What to do when a node does not answer (`--fallback`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Fail the build before any work (exit 3).
    #[default]
    Fail,
    /// Build the node's platforms here, under emulation where needed.
    Emulate,
}

/// Where the nodes push, and what comes back from them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Push<'a> {
    /// With `--push`: the repository (the first `-t`) the nodes push their platforms'
    /// manifests to by digest.
    pub repository: Option<&'a str>,
    /// Only each platform's manifest and config come back, not the node's archive (every
    /// output is a push, and nothing here reads the layers).
    pub manifests_only: bool,
    /// The extra SBOMs the nodes' platforms get (stage scans come back from the nodes).
    pub sboms: Sboms,
}

/// The SBOMs a build makes of more than its images, as the nodes' platforms get them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sboms {
    /// The stages to scan (`None`: none): each node scans those it built and sends the
    /// scans back.
    pub stages: Option<StageScan>,
    /// The context is scanned too (here, where it is), listed first as a local build
    /// lists it.
    pub context: bool,
}

/// Builds `options` with `builder`'s nodes: the platforms a node lists go to it (with
/// `dockerfile`, the Dockerfile's bytes), the others to `local`, which runs here at the same
/// time, its progress going to the sink it is given; `push` says where the nodes push
/// (`--push`) and whether their archives come back. `local` calls the function it is given
/// before it writes its `--cache-to`s: it returns once every node is done (a node writes its
/// own registry cache exports before it replies), so one writer at a time extends a cache.
///
/// `uses` says what the build's graph reads: only the `--build-context` directories it reads
/// are shipped (and only the OCI layouts it reads refused); the local user's credentials
/// for the registries of its images, caches and push go with each request. The `--ssh`
/// agents are forwarded to each node by its connection, for that sub-build only. `push.sboms`
/// says which extra SBOMs the nodes' platforms get (the report's `sbom_extras`, as a local
/// build finds them).
///
/// # Errors
/// As `local`; a local cache directory, an OCI layout context, or a `--cache-to` several
/// nodes would write (exit 2, before any work); a key file no agent can load; a node that
/// does not answer (exit 3, unless `fallback` is [`Fallback::Emulate`]); a node's failed
/// build (its exit kind, its error lines).
pub fn run(
    options: &BuildOptions,
    dockerfile: &[u8],
    uses: &GraphUses,
    builder: &Builder,
    fallback: Fallback,
    push: Push<'_>,
    local_build: impl FnOnce(&[Platform], SharedSink, &(dyn Fn() + Sync)) -> anyhow::Result<BuildReport>
    + Send,
) -> anyhow::Result<BuildReport> {
    let mut local: Vec<Platform> = Vec::new();
    let mut remote: Vec<(&Node, Vec<Platform>)> = Vec::new();
    for target in &options.targets {
        match builder.node_for(target) {
            Some(node) => match remote.iter_mut().find(|(n, _)| n.name == node.name) {
                Some((_, platforms)) => platforms.push(target.clone()),
                None => remote.push((node, vec![target.clone()])),
            },
            None => local.push(target.clone()),
        }
    }
    if remote.is_empty() {
        return local_build(&options.targets, options.sink.clone(), &|| {});
    }
    // Every node must answer before any work starts.
    let nodes: Vec<&Node> = remote.iter().map(|(node, _)| *node).collect();
    let probes = ssh::probe_all(&nodes);
    let mut usable = Vec::new();
    for ((node, platforms), probe) in remote.into_iter().zip(probes) {
        let problem = match probe {
            Ok(info) => match platforms.iter().find(|platform| !info.runs(platform)) {
                None => None,
                Some(platform) => Some(format!(
                    "node {} ({}) cannot run {platform}: it runs {} natively and {} by emulation",
                    node.name,
                    node.endpoint,
                    info.native,
                    if info.emulated.is_empty() {
                        "nothing".to_owned()
                    } else {
                        list(&info.emulated)
                    }
                )),
            },
            Err(error) => Some(error.to_string()),
        };
        match problem {
            None => usable.push((node, platforms)),
            Some(problem) if fallback == Fallback::Emulate => {
                options.sink.emit(Event::Note {
                    message: format!(
                        "{problem}; building {} here instead (--fallback=emulate)",
                        list(&platforms)
                    ),
                });
                local.extend(platforms);
            }
            Some(problem) => {
                return Err(Failure::host_not_ready(format_args!(
                    "{problem} (the build needs it for {}; --fallback=emulate builds them here \
                     instead)",
                    list(&platforms)
                ))
                .into());
            }
        }
    }
    if usable.is_empty() {
        return local_build(&local, options.sink.clone(), &|| {});
    }

    let ignore =
        Dockerignore::load(&options.context, &options.dockerfile).map_err(Failure::from)?;
    let main_context = Shipped {
        dir: options.context.clone(),
        entries: context::walk(&options.context, &ignore).map_err(Failure::from)?,
    };
    let context_root = RootMetadata::of(&options.context)
        .with_context(|| format!("reading {}", options.context.display()))?;
    // The named directories the build reads, each after its own `.dockerignore` (never the
    // Dockerfile's), as the executor reads one here.
    let mut named_dirs = Vec::new();
    let mut shipped = vec![main_context];
    for (name, named) in &options.named_contexts {
        let NamedContext::Dir(dir) = named else {
            continue;
        };
        if !uses.contexts.contains(name) {
            continue;
        }
        let ignore = Dockerignore::load(dir, std::path::Path::new("")).map_err(Failure::from)?;
        shipped.push(Shipped {
            dir: dir.clone(),
            entries: context::walk(dir, &ignore).map_err(Failure::from)?,
        });
        named_dirs.push(protocol::NamedDir {
            name: name.clone(),
            root: RootMetadata::of(dir).with_context(|| format!("reading {}", dir.display()))?,
        });
    }
    // Per node: the part of each OCI layout context and local cache directory its
    // platforms read, after the directories every node gets.
    let store = Store::open_default().context("opening the store")?;
    let registry_options = Arc::new(
        crate::registry::RegistryOptions::from_env(store.root())
            .showing_notes(options.sink.clone()),
    );
    let cache_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the cache directories")?;
    let mut named_layouts = Vec::new();
    let mut per_node: Vec<Vec<Shipped>> = Vec::new();
    for (_, platforms) in &usable {
        let mut extra = Vec::new();
        named_layouts.clear();
        for (name, named) in &options.named_contexts {
            let NamedContext::OciLayout { path, tag, digest } = named else {
                continue;
            };
            if !uses.contexts.contains(name) {
                continue;
            }
            let files =
                ship::layout_files(name, path, tag.as_deref(), digest.as_deref(), platforms)?;
            extra.push(Shipped {
                dir: path.clone(),
                entries: protocol::tree_entries(path, &|file| files.contains(file))
                    .with_context(|| format!("reading {}", path.display()))?,
            });
            named_layouts.push(protocol::NamedLayout {
                name: name.clone(),
                path: path.display().to_string(),
                tag: tag.clone(),
                digest: digest.clone(),
            });
        }
        for location in &options.cache.from {
            let CacheLocation::Local(cache) = location else {
                continue;
            };
            let files = ship::cache_files(&cache_runtime, &registry_options, cache, platforms)?;
            extra.push(Shipped {
                dir: cache.dir.clone(),
                entries: if files.is_empty() {
                    context::ContextEntries::default()
                } else {
                    protocol::tree_entries(&cache.dir, &|file| files.contains(file))
                        .with_context(|| format!("reading {}", cache.dir.display()))?
                },
            });
        }
        per_node.push(extra);
    }
    let cache_from_dirs: Vec<protocol::CacheDir> = options
        .cache
        .from
        .iter()
        .filter_map(|location| match location {
            CacheLocation::Local(cache) => Some(protocol::CacheDir {
                tag: cache.tag.clone(),
                digest: cache.digest.clone(),
            }),
            CacheLocation::Registry(_) => None,
        })
        .collect();
    // A registry cache several nodes would write is written here, from what each sends
    // back, one node after the other (a node and this machine write one after the other
    // already: this side waits for the node); a local directory always is.
    let several_writers = usable.len() > 1;
    let sent_back_exports: Vec<&crate::cache::CacheExport> = options
        .cache
        .to
        .iter()
        .filter(|export| protocol::CacheExportSpec::of(export, several_writers).sent_back)
        .collect();
    let credentials = credentials_for(options, uses, push.repository)?;
    // The `--ssh` agents (key files loaded into an agent started here), each forwarded to a
    // socket of its own on every node, under a name no other build picks.
    let agents = crate::executor::Agents::start(&options.ssh)
        .map_err(|error| Failure::new(error.exit_kind(), error))?;
    let nonce = random_hex().context("reading /dev/urandom")?;
    let forwards: Vec<(String, String, std::path::PathBuf)> = options
        .ssh
        .keys()
        .enumerate()
        .filter_map(|(index, id)| {
            let local = agents.socket(id)?.to_path_buf();
            Some((
                id.clone(),
                format!("/tmp/xbuild-ssh-{nonce}-{index}.sock"),
                local,
            ))
        })
        .collect();

    let renumber = Arc::new(Renumber {
        sink: options.sink.clone(),
        counter: VertexCounter::default(),
        ids: Mutex::default(),
    });
    let request_for = |platforms: &[Platform]| NodeRequest {
        dockerfile: dockerfile.to_vec(),
        platforms: platforms.to_vec(),
        multi_platform: options.targets.len() > 1,
        build_args: options.build_args.clone(),
        target_stage: options.target_stage.clone(),
        no_cache: options.no_cache,
        no_cache_filter: options.no_cache_filter.clone(),
        pull: options.pull,
        network_none: options.network_none,
        allow_insecure: options.allow_insecure,
        network_host: options.network_host,
        allow_network_host: options.allow_network_host,
        pids_limit: options.pids_limit,
        pids_limit_required: options.pids_limit_required,
        compression: protocol::compression_name(options.compression).to_owned(),
        compression_level: protocol::compression_level(options.compression),
        force_compression: options.force_compression,
        source_date_epoch: options.source_date_epoch,
        secrets: options.secrets.clone(),
        check_arch: match options.check_arch {
            CheckArch::Warn => "warn",
            CheckArch::Error => "error",
            CheckArch::Off => "off",
        }
        .to_owned(),
        push_to: push.repository.map(ToOwned::to_owned),
        context_root,
        labels: options.labels.clone(),
        add_hosts: options.add_hosts.clone(),
        shm_size: options.shm_size,
        ulimits: options.ulimits.clone(),
        cache_from: options
            .cache
            .from
            .iter()
            .filter_map(|location| match location {
                CacheLocation::Registry(cache) => Some(cache.reference.to_string()),
                CacheLocation::Local(_) => None,
            })
            .collect(),
        cache_from_insecure: options
            .cache
            .from
            .iter()
            .filter_map(|location| match location {
                CacheLocation::Registry(cache) if cache.insecure => {
                    Some(cache.reference.to_string())
                }
                CacheLocation::Registry(_) | CacheLocation::Local(_) => None,
            })
            .collect(),
        cache_to: options
            .cache
            .to
            .iter()
            .map(|export| protocol::CacheExportSpec::of(export, several_writers))
            .collect(),
        inline_cache: options.cache.inline,
        annotations: options
            .annotations
            .iter()
            .map(protocol::AnnotationSpec::of)
            .collect(),
        named_images: options
            .named_contexts
            .iter()
            .filter_map(|(name, context)| match context {
                NamedContext::Image(reference) => Some((name.clone(), reference.clone())),
                _ => None,
            })
            .collect(),
        named_dirs: named_dirs.clone(),
        named_layouts: named_layouts.clone(),
        cache_from_dirs: cache_from_dirs.clone(),
        ssh_agents: forwards
            .iter()
            .map(|(id, remote, _)| (id.clone(), remote.clone()))
            .collect(),
        credentials: credentials.clone(),
        sbom_stages: push.sboms.stages,
        result: if push.manifests_only && push.repository.is_some() {
            ResultKind::Manifests
        } else {
            ResultKind::Archive
        },
    };
    let nodes_done = NodesDone {
        left: Mutex::new(usable.len()),
        done: Condvar::new(),
    };
    // The caches the nodes send back, merged once every node is done (before this
    // machine's own export to the same destinations), and only if every node succeeded.
    let received: Mutex<Vec<(usize, Vec<tempfile::TempDir>)>> = Mutex::default();
    let node_failed = std::sync::atomic::AtomicBool::new(false);
    let merged: Mutex<Option<anyhow::Result<ship::Merged>>> = Mutex::default();
    let merge_once = || {
        let Ok(mut merged) = merged.lock() else {
            return;
        };
        if merged.is_some() || node_failed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut dirs = received
            .lock()
            .map(|mut received| std::mem::take(&mut *received))
            .unwrap_or_default();
        dirs.sort_by_key(|(index, _)| *index);
        let mut sent_back = Vec::new();
        for (index, node_dirs) in dirs {
            let (node, platforms) = &usable[index];
            for (export, dir) in sent_back_exports.iter().zip(node_dirs) {
                sent_back.push(ship::SentBack {
                    export,
                    node: node.name.clone(),
                    platforms: platforms.clone(),
                    dir,
                });
            }
        }
        *merged = Some(ship::merge(&cache_runtime, &registry_options, sent_back));
    };

    let (local_report, remote_results) = std::thread::scope(|scope| {
        let handles: Vec<_> = usable
            .iter()
            .enumerate()
            .map(|(index, (node, platforms))| {
                let request = request_for(platforms);
                let sink: SharedSink = Arc::new(Source {
                    renumber: renumber.clone(),
                    source: index + 1,
                    prefix: Some(format!("[node {}] ", node.name)),
                });
                let (store, forwards) = (&store, &forwards);
                let shipped: Vec<&Shipped> = shipped.iter().chain(&per_node[index]).collect();
                let (nodes_done, received, node_failed) = (&nodes_done, &received, &node_failed);
                scope.spawn(move || {
                    // Done, whatever the outcome (a panic included).
                    let _finished = Finished(nodes_done);
                    let forwards: Vec<(String, std::path::PathBuf)> = forwards
                        .iter()
                        .map(|(_, remote, local)| (remote.clone(), local.clone()))
                        .collect();
                    let result = build_on_node(node, &request, &shipped, &forwards, store, &sink);
                    match result {
                        Ok((reply, dirs)) => {
                            if let Ok(mut received) = received.lock() {
                                received.push((index, dirs));
                            }
                            Ok(reply)
                        }
                        Err(error) => {
                            node_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                            Err(error)
                        }
                    }
                })
            })
            .collect();
        let local_report = if local.is_empty() {
            None
        } else {
            // This machine's events go through the same numbering as the nodes'.
            let sink: SharedSink = Arc::new(Source {
                renumber: renumber.clone(),
                source: 0,
                prefix: None,
            });
            Some(local_build(&local, sink, &|| {
                nodes_done.wait();
                merge_once();
            }))
        };
        let remote_results: Vec<anyhow::Result<NodeReply>> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a node's thread panicked")))
            })
            .collect();
        (local_report, remote_results)
    });
    let local_report = local_report.transpose()?;
    let mut replies = Vec::new();
    for result in remote_results {
        replies.push(result?);
    }
    // Without a local build (or one that never reached its export), the merge is now.
    merge_once();
    let ship::Merged {
        lines: cache_lines,
        warnings: cache_warnings,
    } = merged
        .into_inner()
        .map_err(|_| anyhow!("a node's thread panicked"))?
        .transpose()?
        .unwrap_or_default();
    for line in cache_lines {
        options.sink.emit(Event::Note { message: line });
    }

    // The index, in the user's platform order, over local and remote manifests.
    let mut manifests: HashMap<Platform, Descriptor> = HashMap::new();
    if let Some(report) = &local_report {
        for image in &report.built.images {
            manifests.insert(image.platform.clone(), image.manifest.clone());
        }
    }
    for ((_, platforms), reply) in usable.iter().zip(&replies) {
        if reply.manifests.len() != platforms.len() {
            return Err(anyhow!(
                "a node returned {} manifests for {} platforms",
                reply.manifests.len(),
                platforms.len()
            ));
        }
        for (platform, manifest) in platforms.iter().zip(&reply.manifests) {
            manifests.insert(platform.clone(), manifest.clone());
        }
    }
    let mut images = Vec::new();
    for target in &options.targets {
        let manifest = manifests
            .remove(target)
            .ok_or_else(|| anyhow!("no image was built for {target}"))?;
        images.push(BuiltImage {
            platform: target.clone(),
            manifest,
        });
    }
    // The index's own annotations here, as a local build writes them (the manifests' were
    // written by each side).
    let of_kind = |kind: AnnotationKind| -> HashMap<String, String> {
        options
            .annotations
            .iter()
            .filter(|annotation| annotation.kind == Some(kind))
            .map(|annotation| (annotation.key.clone(), annotation.value.clone()))
            .collect()
    };
    let mut index = store
        .put_index_annotated(
            images.iter().map(|image| image.manifest.clone()).collect(),
            of_kind(AnnotationKind::Index),
        )
        .context("writing the index")?;
    let descriptor_annotations = of_kind(AnnotationKind::IndexDescriptor);
    if !descriptor_annotations.is_empty() {
        let mut all = index.annotations().clone().unwrap_or_default();
        all.extend(descriptor_annotations);
        index.set_annotations(Some(all));
    }
    let mut report = BuildReport {
        built: Built {
            images,
            index,
            explicit_platforms: options.explicit_platforms,
        },
        more_sets: Vec::new(),
        emulated: Vec::new(),
        steps_run: 0,
        cached: 0,
        unused_build_args: Vec::new(),
        warnings: Vec::new(),
        last_vertex: 0,
        materials: BTreeMap::new(),
        context: None,
        steps: BTreeMap::new(),
        sbom_extras: BTreeMap::new(),
    };
    let mut unused: Option<Vec<String>> = None;
    if let Some(local_report) = local_report {
        report.emulated = local_report.emulated;
        report.steps_run = local_report.steps_run;
        report.cached = local_report.cached;
        report.warnings = local_report.warnings;
        report.materials = local_report.materials;
        report.context = local_report.context;
        report.steps = local_report.steps;
        report.sbom_extras = local_report.sbom_extras;
        unused = Some(local_report.unused_build_args);
    }
    for ((node, platforms), reply) in usable.iter().zip(replies) {
        // Each platform's extra SBOMs as a local build lists them: the context (scanned
        // here), then the stages the node scanned.
        let mut scanned = reply.sbom_stages.unwrap_or_default();
        for platform in platforms {
            let mut extras = Vec::new();
            if push.sboms.context {
                extras.push(SbomExtra {
                    name: "context".to_owned(),
                    root: ExtraRoot::Dir(options.context.clone()),
                });
            }
            if let Some(at) = scanned.iter().position(|(of, _)| of == platform) {
                let (_, stages) = scanned.swap_remove(at);
                extras.extend(stages.into_iter().map(|stage| SbomExtra {
                    name: stage.name,
                    root: ExtraRoot::Scanned(Box::new(stage.scan)),
                }));
            }
            if !extras.is_empty() {
                report.sbom_extras.insert(platform.clone(), extras);
            }
        }
        report.steps_run += reply.steps_run;
        report.materials.extend(reply.materials);
        report.steps.extend(reply.steps);
        report.cached += reply.cached;
        report.emulated.extend(
            reply
                .emulated
                .into_iter()
                .map(|(platform, seconds)| (platform, Duration::from_secs_f64(seconds.max(0.0)))),
        );
        report.warnings.extend(
            reply
                .warnings
                .into_iter()
                .map(|warning| format!("[node {}] {warning}", node.name)),
        );
        // An argument is unused only if no side used it.
        unused = Some(match unused {
            None => reply.unused_build_args,
            Some(so_far) => so_far
                .into_iter()
                .filter(|name| reply.unused_build_args.contains(name))
                .collect(),
        });
        for pushed in reply.pushed {
            options.sink.emit(Event::Note {
                message: format!("[node {}] {pushed}", node.name),
            });
        }
    }
    report.warnings.extend(cache_warnings);
    report.unused_build_args = unused.unwrap_or_default();
    report.last_vertex = renumber.counter.last();
    Ok(report)
}

/// What the build's graph reads that concerns its nodes.
#[derive(Debug, Clone, Default)]
pub struct GraphUses {
    /// The `--build-context` names it reads.
    pub contexts: BTreeSet<String>,
    /// The image references it reads (`FROM`, `--from=` images).
    pub images: BTreeSet<String>,
}

/// The local user's credentials (docker config, helpers, `xbuild login`) for every
/// registry the build reads or writes: its images, its named images, its registry caches
/// and its push repository. A registry without credentials is left out.
fn credentials_for(
    options: &BuildOptions,
    uses: &GraphUses,
    push_to: Option<&str>,
) -> anyhow::Result<BTreeMap<String, protocol::ForwardedCredentials>> {
    let cache_refs = options
        .cache
        .from
        .iter()
        .chain(options.cache.to.iter().map(|export| &export.location))
        .filter_map(|location| match location {
            CacheLocation::Registry(cache) => Some(cache.reference.registry().to_owned()),
            CacheLocation::Local(_) => None,
        });
    let named_images = options
        .named_contexts
        .values()
        .filter_map(|context| match context {
            NamedContext::Image(reference) => Some(reference.as_str()),
            _ => None,
        });
    let registries: BTreeSet<String> = uses
        .images
        .iter()
        .map(String::as_str)
        .chain(named_images)
        .chain(push_to)
        .filter(|reference| *reference != "scratch")
        .filter_map(|reference| ImageRef::parse(reference).ok())
        .map(|reference| reference.registry().to_owned())
        .chain(cache_refs)
        .collect();
    let config = crate::registry::DockerConfig::from_env();
    let mut forwarded = BTreeMap::new();
    for registry in registries {
        let found = config.credentials(&registry).with_context(|| {
            format!("reading the credentials for {registry}, to forward them to the build nodes")
        })?;
        if let Some(credentials) = found {
            forwarded.insert(
                registry,
                protocol::ForwardedCredentials {
                    username: credentials.username,
                    secret: credentials.secret.expose().to_owned(),
                },
            );
        }
    }
    Ok(forwarded)
}

/// A directory sent to the nodes: the main context or a named one, and what of it is sent
/// (after its `.dockerignore`).
struct Shipped {
    dir: std::path::PathBuf,
    entries: context::ContextEntries,
}

/// 16 random hex digits.
fn random_hex() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// How many nodes are still building; the local build's cache export waits for none.
struct NodesDone {
    left: Mutex<usize>,
    done: Condvar,
}

impl NodesDone {
    /// Returns once every node is done.
    fn wait(&self) {
        let Ok(mut left) = self.left.lock() else {
            return;
        };
        while *left > 0 {
            left = match self.done.wait(left) {
                Ok(left) => left,
                Err(_) => return,
            };
        }
    }
}

/// Counts its node done when dropped.
struct Finished<'a>(&'a NodesDone);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        if let Ok(mut left) = self.0.left.lock() {
            *left = left.saturating_sub(1);
        }
        self.0.done.notify_all();
    }
}

fn list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one node's sub-build: sends the request and the context, shows its progress, loads
/// its archive into `store`.
fn build_on_node(
    node: &Node,
    request: &NodeRequest,
    shipped: &[&Shipped],
    forwards: &[(String, std::path::PathBuf)],
    store: &Store,
    sink: &SharedSink,
) -> anyhow::Result<(NodeReply, Vec<tempfile::TempDir>)> {
    let subcommand = "__node-build";
    let mut child = ssh::command_forwarding(&node.endpoint, subcommand, forwards)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Failure::host_not_ready(format_args!("cannot run ssh: {error}")))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let traffic = ssh::Traffic::default();
    let (sent, errors, loaded) = std::thread::scope(|scope| {
        let traffic = &traffic;
        let sender = scope.spawn(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, traffic.writing(stdin));
            protocol::write_document(&mut out, request.magic(), request)?;
            // The context, each named directory, each OCI layout and local cache, in the
            // request's order.
            for directory in shipped {
                protocol::write_context(&directory.dir, &directory.entries, &mut out)?;
            }
            out.flush()
            // Dropping the writer closes the node's stdin.
        });
        let progress = scope.spawn(move || {
            let mut other = Vec::new();
            for line in BufReader::new(traffic.reading(stderr)).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => sink.emit(event),
                    Err(_) => other.push(line),
                }
            }
            other
        });
        let loaded = (|| -> anyhow::Result<(NodeReply, Vec<tempfile::TempDir>)> {
            let mut stdout = BufReader::with_capacity(256 * 1024, traffic.reading(stdout));
            let reply: NodeReply = protocol::read_document(&mut stdout, protocol::REPLY_MAGIC)
                .context("reading the node's reply")?;
            if request.sbom_stages.is_some() && reply.sbom_stages.is_none() {
                return Err(Failure::new(
                    ExitKind::Failed,
                    anyhow!(
                        "node {} sent back no SBOMs of the stages it built (asked in a v5 \
                         request); update xbuild on the node",
                        node.name
                    ),
                )
                .into());
            }
            // The caches the node sends back, each into a directory of the store's tmp/.
            let tmp = store.layout().tmp_dir();
            std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let mut dirs = Vec::new();
            for _ in request.cache_to.iter().filter(|export| export.sent_back) {
                let dir = tempfile::Builder::new()
                    .prefix("node-cache-")
                    .tempdir_in(&tmp)
                    .with_context(|| format!("creating a directory in {}", tmp.display()))?;
                protocol::read_tree(&mut stdout, dir.path())
                    .context("reading a cache the node sent back")?;
                dirs.push(dir);
            }
            match request.result {
                ResultKind::Archive => {
                    store
                        .load_archive(&mut stdout, None)
                        .context("loading the node's result into the store")?;
                }
                ResultKind::Manifests => {
                    keep_documents(store, request, &reply)?;
                    // Nothing should follow; whatever does is read, so the node never
                    // blocks on a full pipe.
                    std::io::copy(&mut stdout, &mut std::io::sink())
                        .context("reading the end of the node's output")?;
                }
            }
            Ok((reply, dirs))
        })();
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sending thread panicked")));
        let errors = progress.join().unwrap_or_default();
        (sent, errors, loaded)
    });
    let status = child.wait().context("waiting for ssh")?;
    sink.emit(Event::Note {
        message: format!(
            "ssh: sent {} bytes, received {} bytes",
            traffic.sent(),
            traffic.received()
        ),
    });
    if !status.success() {
        let code = status.code().unwrap_or(ssh::SSH_FAILED);
        let platforms = list(&request.platforms);
        if code == ssh::SSH_FAILED {
            let error = ssh::failure(node, subcommand, code, &errors.join("\n"));
            return Err(Failure::host_not_ready(format_args!(
                "building {platforms} on node {}: {error}",
                node.name
            ))
            .into());
        }
        let kind = match code {
            2 => ExitKind::BadInput,
            3 => ExitKind::HostNotReady,
            _ => ExitKind::Failed,
        };
        let start = errors.len().saturating_sub(30);
        let text = errors[start..]
            .iter()
            .map(|line| line.strip_prefix("error: ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Failure::new(
            kind,
            anyhow!(
                "node {} ({}) failed to build {platforms} (exit status {code}):\n{text}",
                node.name,
                node.endpoint
            ),
        )
        .into());
    }
    if let Err(error) = sent {
        return Err(anyhow!(error).context(format!("sending the build to node {}", node.name)));
    }
    loaded.with_context(|| format!("node {} ({})", node.name, node.endpoint))
}

/// Stores a [`ResultKind::Manifests`] reply's manifests and configs (each checked against
/// its digest) and notes that their layers are in the registry the node pushed to (a push
/// of the index there finds them; nothing downloads them).
fn keep_documents(store: &Store, request: &NodeRequest, reply: &NodeReply) -> anyhow::Result<()> {
    let repository = request
        .push_to
        .as_deref()
        .ok_or_else(|| anyhow!("the node sent no archive, and pushed nowhere"))?;
    let target = ImageRef::parse(repository).context("the push repository")?;
    let layout = store.layout();
    for document in &reply.documents {
        let (digest, _) = layout
            .write_blob(document.text.as_bytes())
            .context("storing a node's manifest")?;
        if digest.to_string() != document.digest {
            return Err(anyhow!(
                "the node sent a document of digest {digest} as {}",
                document.digest
            ));
        }
    }
    for manifest in &reply.manifests {
        let bytes = layout
            .read_blob(manifest.digest())
            .with_context(|| format!("the node sent no manifest {}", manifest.digest()))?;
        let parsed: ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the node's manifest {}", manifest.digest()))?;
        if !layout.has_blob(parsed.config().digest()) {
            return Err(anyhow!(
                "the node sent no config {} for {}",
                parsed.config().digest(),
                manifest.digest()
            ));
        }
        for layer in parsed.layers() {
            crate::registry::record_source(
                layout,
                layer.digest(),
                target.registry(),
                target.repository(),
            );
        }
    }
    Ok(())
}

/// Hands out one series of vertex numbers for the local build and every node, so `#N`
/// never means two things.
struct Renumber {
    sink: SharedSink,
    counter: VertexCounter,
    ids: Mutex<HashMap<(usize, VertexId), VertexId>>,
}

/// The events of one side (0: this machine, 1..: the nodes), renumbered and, for a node,
/// named after it.
struct Source {
    renumber: Arc<Renumber>,
    source: usize,
    prefix: Option<String>,
}

impl Source {
    fn id(&self, vertex: VertexId) -> VertexId {
        let Ok(mut ids) = self.renumber.ids.lock() else {
            return vertex;
        };
        *ids.entry((self.source, vertex))
            .or_insert_with(|| self.renumber.counter.next())
    }

    fn name(&self, name: String) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}{name}"),
            None => name,
        }
    }
}

impl Sink for Source {
    fn emit(&self, event: Event) {
        let event = match event {
            Event::Started {
                vertex,
                name,
                emulated,
            } => Event::Started {
                vertex: self.id(vertex),
                name: self.name(name),
                emulated,
            },
            Event::Cached { vertex, name } => Event::Cached {
                vertex: self.id(vertex),
                name: self.name(name),
            },
            Event::Log {
                vertex,
                stream,
                line,
            } => Event::Log {
                vertex: self.id(vertex),
                stream,
                line,
            },
            Event::Bytes {
                vertex,
                done,
                total,
            } => Event::Bytes {
                vertex: self.id(vertex),
                done,
                total,
            },
            Event::Finished { vertex, duration } => Event::Finished {
                vertex: self.id(vertex),
                duration,
            },
            Event::Failed {
                vertex,
                duration,
                message,
            } => Event::Failed {
                vertex: self.id(vertex),
                duration,
                message,
            },
            Event::Note { message } => Event::Note {
                message: self.name(message),
            },
        };
        self.renumber.sink.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Recorder;

    #[test]
    fn sides_share_one_numbering_and_nodes_are_named() {
        let recorder = Arc::new(Recorder::default());
        let renumber = Arc::new(Renumber {
            sink: recorder.clone(),
            counter: VertexCounter::default(),
            ids: Mutex::default(),
        });
        let local = Source {
            renumber: renumber.clone(),
            source: 0,
            prefix: None,
        };
        let node = Source {
            renumber: renumber.clone(),
            source: 1,
            prefix: Some("[node arm0] ".to_owned()),
        };
        for (sink, name) in [(&local, "here"), (&node, "there")] {
            sink.emit(Event::Started {
                vertex: VertexId(1),
                name: name.to_owned(),
                emulated: false,
            });
        }
        node.emit(Event::Finished {
            vertex: VertexId(1),
            duration: Duration::ZERO,
        });
        assert_eq!(
            recorder.events(),
            [
                Event::Started {
                    vertex: VertexId(1),
                    name: "here".to_owned(),
                    emulated: false
                },
                Event::Started {
                    vertex: VertexId(2),
                    name: "[node arm0] there".to_owned(),
                    emulated: false
                },
                Event::Finished {
                    vertex: VertexId(2),
                    duration: Duration::ZERO
                },
            ]
        );
        assert_eq!(renumber.counter.last(), 2);
    }
}

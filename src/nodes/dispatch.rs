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
//! same as a purely local build's.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use oci_spec::image::Descriptor;

use super::protocol::{self, NodeReply, NodeRequest, RootMetadata};
use super::ssh;
use super::{Builder, Node};
use crate::context::{self, Dockerignore};
use crate::error::{ExitKind, Failure};
use crate::executor::{BuildOptions, BuildReport, CheckArch};
use crate::executor::{Built, BuiltImage};
use crate::layer::Compression;
use crate::platform::Platform;
use crate::progress::{Event, SharedSink, Sink, VertexCounter, VertexId};
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

/// Builds `options` with `builder`'s nodes: the platforms a node lists go to it (with
/// `dockerfile`, the Dockerfile's bytes), the others to `local`, which runs here at the same
/// time, its progress going to the sink it is given; `push_to` is the repository the nodes push their manifests to by digest
/// (`--push`).
///
/// # Errors
/// As `local`; a node that does not answer (exit 3, unless `fallback` is
/// [`Fallback::Emulate`]); a node's failed build (its exit kind, its error lines).
pub fn run(
    options: &BuildOptions,
    dockerfile: &[u8],
    builder: &Builder,
    fallback: Fallback,
    push_to: Option<&str>,
    local_build: impl FnOnce(&[Platform], SharedSink) -> anyhow::Result<BuildReport> + Send,
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
        return local_build(&options.targets, options.sink.clone());
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
        return local_build(&local, options.sink.clone());
    }

    let ignore =
        Dockerignore::load(&options.context, &options.dockerfile).map_err(Failure::from)?;
    let entries = context::walk(&options.context, &ignore).map_err(Failure::from)?;
    let context_root = RootMetadata::of(&options.context)
        .with_context(|| format!("reading {}", options.context.display()))?;
    let store = Store::open_default().context("opening the store")?;

    let renumber = Arc::new(Renumber {
        sink: options.sink.clone(),
        counter: VertexCounter::default(),
        ids: Mutex::default(),
    });
    let request_for = |platforms: &[Platform]| NodeRequest {
        dockerfile: dockerfile.to_vec(),
        platforms: platforms.to_vec(),
        build_args: options.build_args.clone(),
        target_stage: options.target_stage.clone(),
        no_cache: options.no_cache,
        pull: options.pull,
        network_none: options.network_none,
        allow_insecure: options.allow_insecure,
        network_host: options.network_host,
        allow_network_host: options.allow_network_host,
        pids_limit: options.pids_limit,
        pids_limit_required: options.pids_limit_required,
        compression: match options.compression {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
        .to_owned(),
        source_date_epoch: options.source_date_epoch,
        secrets: options.secrets.clone(),
        check_arch: match options.check_arch {
            CheckArch::Warn => "warn",
            CheckArch::Error => "error",
            CheckArch::Off => "off",
        }
        .to_owned(),
        push_to: push_to.map(ToOwned::to_owned),
        context_root,
        labels: options.labels.clone(),
        add_hosts: options.add_hosts.clone(),
        shm_size: options.shm_size,
        ulimits: options.ulimits.clone(),
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
                let (store, entries, context_dir) = (&store, &entries, &options.context);
                scope.spawn(move || {
                    build_on_node(node, &request, context_dir, entries, store, &sink)
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
            Some(local_build(&local, sink))
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
    let index = store
        .put_index(images.iter().map(|image| image.manifest.clone()).collect())
        .context("writing the index")?;
    let mut report = BuildReport {
        built: Built {
            images,
            index,
            explicit_platforms: options.explicit_platforms,
        },
        emulated: Vec::new(),
        steps_run: 0,
        cached: 0,
        unused_build_args: Vec::new(),
        warnings: Vec::new(),
        last_vertex: 0,
        materials: BTreeMap::new(),
        context: None,
        steps: BTreeMap::new(),
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
        unused = Some(local_report.unused_build_args);
    }
    for ((node, _), reply) in usable.iter().zip(replies) {
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
    report.unused_build_args = unused.unwrap_or_default();
    report.last_vertex = renumber.counter.last();
    Ok(report)
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
    context_dir: &std::path::Path,
    entries: &[context::ContextEntry],
    store: &Store,
    sink: &SharedSink,
) -> anyhow::Result<NodeReply> {
    let subcommand = "__node-build";
    let mut child = ssh::command(&node.endpoint, subcommand)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Failure::host_not_ready(format_args!("cannot run ssh: {error}")))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (sent, errors, loaded) = std::thread::scope(|scope| {
        let sender = scope.spawn(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdin);
            protocol::write_document(&mut out, protocol::REQUEST_MAGIC, request)?;
            protocol::write_context(context_dir, entries, &mut out)?;
            out.flush()
            // Dropping the writer closes the node's stdin.
        });
        let progress = scope.spawn(move || {
            let mut other = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => sink.emit(event),
                    Err(_) => other.push(line),
                }
            }
            other
        });
        let loaded = (|| -> anyhow::Result<NodeReply> {
            let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
            let reply: NodeReply = protocol::read_document(&mut stdout, protocol::REPLY_MAGIC)
                .context("reading the node's reply")?;
            store
                .load_archive(&mut stdout, None)
                .context("loading the node's result into the store")?;
            Ok(reply)
        })();
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sending thread panicked")));
        let errors = progress.join().unwrap_or_default();
        (sent, errors, loaded)
    });
    let status = child.wait().context("waiting for ssh")?;
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

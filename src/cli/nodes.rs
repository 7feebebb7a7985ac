//! `xbuild builder create|ls|use|rm`: named builders of native build nodes over SSH (see
//! [`crate::nodes`]), and the hidden commands a node runs (`__node-info`,
//! `__node-build`).

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::output;
use crate::error::{ExitKind, Failure, ResultExt};
use crate::nodes::{self, Builder, Builders, DEFAULT_BUILDER, Node, ssh};
use crate::platform::Platform;

/// `xbuild builder`.
#[derive(Debug, Args)]
pub struct BuilderArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BuilderCommand,
}

/// The `builder` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Make a builder of SSH nodes: `--node linux/arm64=ssh://user@host[:port]`.
    Create(CreateArgs),
    /// List builders and their nodes, probing each node.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Make a builder the one `xbuild build` uses (`default`: this machine only).
    Use(UseArgs),
    /// Remove a builder.
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// `xbuild builder create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The builder's name.
    #[arg(long)]
    pub name: String,
    /// A node: `PLATFORM[,PLATFORM...]=ssh://[USER@]HOST[:PORT][?xbuild=PATH&root=PATH]`,
    /// repeatable; a platform goes to the first node that lists it, the others are built
    /// here.
    #[arg(long = "node", value_name = "PLATFORMS=ENDPOINT", required = true)]
    pub nodes: Vec<String>,
    /// Also make it the current builder.
    #[arg(long = "use")]
    pub use_it: bool,
}

/// `xbuild builder ls`.
#[derive(Debug, Args)]
pub struct LsArgs {}

/// `xbuild builder use`.
#[derive(Debug, Args)]
pub struct UseArgs {
    /// The builder (`default`: this machine only).
    pub name: String,
}

/// `xbuild builder rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The builder.
    pub name: String,
}

impl BuilderArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// Bad names or nodes (exit 2), an unreadable builders file (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let path = nodes::config_path();
        let mut builders = Builders::load(&path)?;
        match self.command {
            BuilderCommand::Create(args) => {
                check_name(&args.name)?;
                if args.name == DEFAULT_BUILDER || builders.get(&args.name).is_some() {
                    return Err(Failure::bad_input(format_args!(
                        "a builder named {:?} exists already (xbuild builder rm {} first)",
                        args.name, args.name
                    ))
                    .into());
                }
                let mut nodes = Vec::new();
                for (index, value) in args.nodes.iter().enumerate() {
                    let node = Node::parse(&format!("{}{index}", args.name), value)
                        .exit_kind(ExitKind::BadInput)?;
                    nodes.push(node);
                }
                builders.builders.push(Builder {
                    name: args.name.clone(),
                    nodes,
                });
                if args.use_it {
                    builders.current = Some(args.name.clone());
                }
                builders.save(&path)?;
                output::stdout(&args.name);
            }
            BuilderCommand::Ls(_) => list(&builders),
            BuilderCommand::Use(args) => {
                if args.name == DEFAULT_BUILDER {
                    builders.current = None;
                } else if builders.get(&args.name).is_some() {
                    builders.current = Some(args.name.clone());
                } else {
                    return Err(Failure::new(
                        ExitKind::BadInput,
                        nodes::ConfigError::Unknown(args.name),
                    )
                    .into());
                }
                builders.save(&path)?;
            }
            BuilderCommand::Rm(args) => {
                let before = builders.builders.len();
                builders
                    .builders
                    .retain(|builder| builder.name != args.name);
                if builders.builders.len() == before {
                    return Err(Failure::new(
                        ExitKind::BadInput,
                        nodes::ConfigError::Unknown(args.name),
                    )
                    .into());
                }
                if builders.current.as_deref() == Some(args.name.as_str()) {
                    builders.current = None;
                }
                builders.save(&path)?;
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Failure::bad_input(format_args!(
            "--name {name:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        ))
        .into())
    }
}

/// One row of `builder ls`.
struct Row {
    name: String,
    endpoint: String,
    status: String,
    builds: String,
    platforms: String,
}

/// `PLATFORMS`: the native platform with `*`, then the emulated ones.
fn platforms_of(info: &ssh::NodeInfo) -> String {
    std::iter::once(format!("{}*", info.native))
        .chain(info.emulated.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `xbuild builder ls`: like `docker buildx ls`; every node is probed at once.
fn list(builders: &Builders) {
    let current = builders.current.as_deref().unwrap_or(DEFAULT_BUILDER);
    let marker = |name: &str| if name == current { " *" } else { "" };
    let here = ssh::NodeInfo::here();
    let mut rows = vec![
        Row {
            name: format!("{DEFAULT_BUILDER}{}", marker(DEFAULT_BUILDER)),
            endpoint: String::new(),
            status: String::new(),
            builds: String::new(),
            platforms: String::new(),
        },
        Row {
            name: format!(" \\_ {DEFAULT_BUILDER}"),
            endpoint: "local".to_owned(),
            status: "running".to_owned(),
            builds: "*".to_owned(),
            platforms: platforms_of(&here),
        },
    ];
    let nodes: Vec<&Node> = builders
        .builders
        .iter()
        .flat_map(|builder| builder.nodes.iter())
        .collect();
    let probes = ssh::probe_all(&nodes);
    let mut probes = probes.into_iter();
    let mut problems = Vec::new();
    for builder in &builders.builders {
        rows.push(Row {
            name: format!("{}{}", builder.name, marker(&builder.name)),
            endpoint: String::new(),
            status: String::new(),
            builds: String::new(),
            platforms: String::new(),
        });
        for node in &builder.nodes {
            let probe = probes
                .next()
                .unwrap_or_else(|| Err(ssh::ProbeError::NoSsh("no probe".into())));
            let (status, platforms) = match probe {
                Ok(info) => {
                    let mut status = "running".to_owned();
                    if info.version != env!("CARGO_PKG_VERSION") {
                        status = format!("running (xbuild {})", info.version);
                    }
                    if let Some(platform) =
                        node.platforms.iter().find(|platform| !info.runs(platform))
                    {
                        problems.push(format!(
                            "{}: cannot run {platform} (no binfmt_misc handler there)",
                            node.name
                        ));
                        status = "error".to_owned();
                    }
                    (status, platforms_of(&info))
                }
                Err(error) => {
                    problems.push(format!("{}: {error}", node.name));
                    ("unreachable".to_owned(), String::new())
                }
            };
            rows.push(Row {
                name: format!(" \\_ {}", node.name),
                endpoint: node.endpoint.to_string(),
                status,
                builds: join(&node.platforms),
                platforms,
            });
        }
    }
    let width = |get: fn(&Row) -> &str, title: &str| {
        rows.iter()
            .map(|row| get(row).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let name_width = width(|row| row.name.as_str(), "NAME/NODE");
    let endpoint_width = width(|row| row.endpoint.as_str(), "ENDPOINT");
    let status_width = width(|row| row.status.as_str(), "STATUS");
    let builds_width = width(|row| row.builds.as_str(), "BUILDS");
    output::stdout(format_args!(
        "{:name_width$}   {:endpoint_width$}   {:status_width$}   {:builds_width$}   PLATFORMS",
        "NAME/NODE", "ENDPOINT", "STATUS", "BUILDS"
    ));
    for row in &rows {
        let line = format!(
            "{:name_width$}   {:endpoint_width$}   {:status_width$}   {:builds_width$}   {}",
            row.name, row.endpoint, row.status, row.builds, row.platforms
        );
        output::stdout(line.trim_end());
    }
    for problem in problems {
        output::warning(problem);
    }
}

/// `xbuild __node-info`: this machine's [`ssh::NodeInfo`] as JSON on stdout.
///
/// # Errors
/// None in practice (JSON of plain values).
pub fn node_info() -> anyhow::Result<()> {
    output::stdout(serde_json::to_string(&ssh::NodeInfo::here())?);
    Ok(())
}

/// `xbuild __node-build`: one sub-build for a builder on another machine (request on
/// stdin, reply on stdout, progress as JSON lines on stderr).
///
/// # Errors
/// As [`crate::pipeline::node::serve_build`].
pub fn node_build() -> anyhow::Result<()> {
    let sink = Arc::new(super::progress::RawJson);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    crate::pipeline::node::serve_build(stdin.lock(), &mut out, sink)
}

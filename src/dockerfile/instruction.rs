//! Tree to typed instructions, grouped in stages. Every instruction and flag BuildKit's stable
//! Dockerfile syntax has is typed here and checked for form; unknown instructions and flags
//! are errors with a "did you mean" hint.
//!
//! Nothing is expanded here: `FROM --platform=$BUILDPLATFORM` keeps its `$`. Expansion with
//! build arguments and the stage's ARG/ENV scope is [`super::resolve`]'s job, through
//! [`Instruction::expand`].

use std::time::Duration;

use serde::Serialize;

use super::error::{DockerfileError, ErrorKind, Span, suggest};
use super::expand::{ExpandError, Expander, Variables};
use super::mount::Mount;
use super::syntax::{Directives, Dockerfile, Heredoc, Json, Node, heredoc_from_word, parse_json};

/// Every instruction name, upper case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command in shell form (run by the stage's `SHELL`) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandLine {
    /// `RUN make all`: the text, given to the shell as one argument.
    Shell(String),
    /// `RUN ["make", "all"]`: the argument vector.
    Exec(Vec<String>),
}

/// A `key=value` pair of `ENV` and `LABEL` (values keep their quotes until expanded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name of an `ARG`, with its default if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDeclaration {
    /// The variable name.
    pub name: String,
    /// `ARG NAME=default`.
    pub default: Option<String>,
}

/// `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Chmod {
    /// `--chmod=0755`.
    Octal(u32),
    /// `--chmod=u+x,g-w` (symbolic, applied to each file's mode).
    Symbolic(String),
    /// Holds variables: checked after expansion.
    Unexpanded(String),
}

/// `FROM [--platform=<platform>] <image> [AS <name>]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// Where it is.
    pub span: Span,
    /// The image or stage name, unexpanded.
    pub image: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// `AS name`, lower case.
    pub name: Option<String>,
}

/// RUN network mode (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The build's default network.
    Default,
    /// No network at all.
    None,
    /// The host's network.
    Host,
}

/// RUN security mode (`--security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Default capabilities.
    Sandbox,
    /// All capabilities (needs `--allow security.insecure`).
    Insecure,
}

/// `RUN [--mount=<spec>]... [--network=default|none|host] [--security=sandbox|insecure] <command>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// Where it is.
    pub span: Span,
    /// The command. In shell form with heredocs, the text names them (`<<EOF bash`).
    pub command: CommandLine,
    /// Heredoc bodies (`RUN <<EOF`): the script, or files given to the command.
    pub heredocs: Vec<Heredoc>,
    /// `--mount`s.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<Network>,
    /// `--security`.
    pub security: Option<Security>,
}

/// `CMD <command>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cmd {
    /// Where it is.
    pub span: Span,
    /// The command.
    pub command: CommandLine,
}

/// `ENTRYPOINT <command>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entrypoint {
    /// Where it is.
    pub span: Span,
    /// The command.
    pub command: CommandLine,
}

/// `SHELL ["executable", "parameters"]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shell {
    /// Where it is.
    pub span: Span,
    /// The shell and its arguments.
    pub shell: Vec<String>,
}

/// `LABEL <key>=<value> ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where it is.
    pub span: Span,
    /// The labels.
    pub labels: Vec<KeyValue>,
}

/// `MAINTAINER <name>` (deprecated; sets the image author)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Maintainer {
    /// Where it is.
    pub span: Span,
    /// The author.
    pub name: String,
}

/// `EXPOSE <port>[/<protocol>] ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expose {
    /// Where it is.
    pub span: Span,
    /// The ports as written (`80`, `53/udp`, `8000-8010`).
    pub ports: Vec<String>,
}

/// `ENV <key>=<value> ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Env {
    /// Where it is.
    pub span: Span,
    /// The variables.
    pub variables: Vec<KeyValue>,
}

/// A source of `COPY`/`ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A path (in the context or the `--from` stage), a URL or a Git address for `ADD`.
    Path(String),
    /// An inline file from a heredoc (`COPY <<EOF /dst`).
    Inline(Heredoc),
}

/// `ADD [--chown=<user>:<group>] [--chmod=<mode>] [--link] [--checksum=<digest>]
/// [--keep-git-dir] [--exclude=<pattern>]... [--unpack[=<bool>]] <src>... <dest>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    /// Where it is.
    pub span: Span,
    /// Sources.
    pub sources: Vec<Source>,
    /// Destination.
    pub destination: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--checksum` (`sha256:<hex>`), for URL and Git sources.
    pub checksum: Option<String>,
    /// `--keep-git-dir`, for Git sources.
    pub keep_git_dir: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--unpack`: `None` means the default (unpack local archives, not URLs).
    pub unpack: Option<bool>,
}

/// `COPY [--from=<stage|image>] [--chown=<user>:<group>] [--chmod=<mode>] [--link]
/// [--parents] [--exclude=<pattern>]... <src>... <dest>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Where it is.
    pub span: Span,
    /// Sources.
    pub sources: Vec<Source>,
    /// Destination.
    pub destination: String,
    /// `--from`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`: keep the source's parent directories.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `VOLUME <path> ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Where it is.
    pub span: Span,
    /// The paths.
    pub paths: Vec<String>,
}

/// `USER <user>[:<group>]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Where it is.
    pub span: Span,
    /// The user (and group).
    pub user: String,
}

/// `WORKDIR <path>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workdir {
    /// Where it is.
    pub span: Span,
    /// The directory.
    pub path: String,
}

/// `ARG <name>[=<default>] ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// Where it is.
    pub span: Span,
    /// The names.
    pub args: Vec<ArgDeclaration>,
}

/// `ONBUILD <instruction>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// Where it is.
    pub span: Span,
    /// The trigger as written (stored in the image config).
    pub expression: String,
    /// The trigger, typed (checked now, run by builds that use this image).
    pub instruction: Box<Instruction>,
}

/// `STOPSIGNAL <signal>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stopsignal {
    /// Where it is.
    pub span: Span,
    /// The signal (`SIGTERM`, `9`).
    pub signal: String,
}

/// A health check: `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD <command>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK CMD ...`.
    Check(HealthCheck),
}

/// `HEALTHCHECK [--interval=<d>] [--timeout=<d>] [--start-period=<d>]
/// [--start-interval=<d>] [--retries=<n>] CMD <command>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// The test command.
    pub command: CommandLine,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// `HEALTHCHECK ...`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// Where it is.
    pub span: Span,
    /// The check.
    pub health: Health,
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Instruction {
    /// `ADD`.
    Add(Add),
    /// `ARG`.
    Arg(Arg),
    /// `CMD`.
    Cmd(Cmd),
    /// `COPY`.
    Copy(Copy),
    /// `ENTRYPOINT`.
    Entrypoint(Entrypoint),
    /// `ENV`.
    Env(Env),
    /// `EXPOSE`.
    Expose(Expose),
    /// `FROM`.
    From(From),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `LABEL`.
    Label(Label),
    /// `MAINTAINER`.
    Maintainer(Maintainer),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `RUN`.
    Run(Run),
    /// `SHELL`.
    Shell(Shell),
    /// `STOPSIGNAL`.
    Stopsignal(Stopsignal),
    /// `USER`.
    User(User),
    /// `VOLUME`.
    Volume(Volume),
    /// `WORKDIR`.
    Workdir(Workdir),
}

/// A stage: `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among the stages, from 0 (what `COPY --from=0` names).
    pub index: usize,
    /// `AS name`, lower case.
    pub name: Option<String>,
    /// The `FROM`.
    pub from: From,
    /// The instructions after `FROM`.
    pub instructions: Vec<Instruction>,
    /// From the `FROM` line to the stage's last line.
    pub span: Span,
}

/// A typed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stages {
    /// The parser directives (the escape character matters for expansion).
    pub directives: Directives,
    /// `ARG`s before the first `FROM`: usable in `FROM` lines, and in stages that re-declare
    /// them.
    pub meta_args: Vec<Arg>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Stages {
    /// The stage called `name` (stage names are case-insensitive), or with that index.
    pub fn find(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .find(|stage| stage.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .and_then(|index| self.stages.get(index))
            })
    }
}

/// Types the tree: instructions grouped in stages.
///
/// # Errors
/// Unknown instructions or flags, bad flag values, missing arguments, no `FROM`, an
/// instruction other than `ARG` before the first `FROM`, bad `ARG` names, duplicate stage
/// names, invalid JSON where exec form was clearly meant.
pub fn stages(dockerfile: &Dockerfile) -> Result<Stages, DockerfileError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &dockerfile.nodes {
        let instruction = Instruction::from_node(node)?;
        match instruction {
            Instruction::From(from) => {
                if let Some(name) = &from.name {
                    if stages.iter().any(|stage| stage.name.as_ref() == Some(name)) {
                        return Err(DockerfileError::new(
                            from.span.start,
                            ErrorKind::DuplicateStage { name: name.clone() },
                        ));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: from.name.clone(),
                    span: from.span,
                    from,
                    instructions: Vec::new(),
                });
            }
            instruction => match stages.last_mut() {
                Some(stage) => {
                    stage.span.end = instruction.span().end;
                    stage.instructions.push(instruction);
                }
                None => match instruction {
                    Instruction::Arg(arg) => meta_args.push(arg),
                    other => {
                        return Err(DockerfileError::new(
                            other.span().start,
                            ErrorKind::InstructionBeforeFrom {
                                instruction: node.name(),
                            },
                        ));
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        let line = dockerfile.nodes.last().map_or(1, |node| node.span.start);
        return Err(DockerfileError::new(line, ErrorKind::MissingFrom));
    }
    Ok(Stages {
        directives: dockerfile.directives.clone(),
        meta_args,
        stages,
    })
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    Text,
    /// `--exclude=x`, repeatable.
    List,
}

/// The flags given to one instruction, checked against what it takes.
struct Flags {
    instruction: String,
    line: usize,
    values: Vec<(&'static str, Vec<Option<String>>)>,
}

impl Flags {
    fn parse(node: &Node, specs: &[(&'static str, FlagKind)]) -> Result<Self, DockerfileError> {
        let instruction = node.name();
        let line = node.span.start;
        let mut values: Vec<(&'static str, Vec<Option<String>>)> =
            specs.iter().map(|(name, _)| (*name, Vec::new())).collect();
        for flag in &node.flags {
            let body = flag.strip_prefix("--").unwrap_or(flag);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let Some(index) = specs
                .iter()
                .position(|(spec, _)| spec.eq_ignore_ascii_case(name))
            else {
                return Err(DockerfileError::new(
                    line,
                    ErrorKind::UnknownFlag {
                        instruction,
                        flag: name.to_owned(),
                        valid: specs.iter().map(|(name, _)| (*name).to_owned()).collect(),
                    },
                ));
            };
            let (spec_name, kind) = specs[index];
            let flag_error = |message: String| {
                DockerfileError::new(
                    line,
                    ErrorKind::FlagValue {
                        instruction: instruction.clone(),
                        flag: spec_name.to_owned(),
                        message,
                    },
                )
            };
            let slot = &mut values[index].1;
            match kind {
                FlagKind::Bool => {
                    if let Some(value) = &value {
                        if !matches!(value.to_lowercase().as_str(), "true" | "false") {
                            return Err(flag_error(format!(
                                "expects true or false, not {value:?}"
                            )));
                        }
                    }
                    if !slot.is_empty() {
                        return Err(flag_error("given twice".to_owned()));
                    }
                }
                FlagKind::Text | FlagKind::List => {
                    if value.is_none() {
                        return Err(flag_error(format!("needs a value (--{spec_name}=...)")));
                    }
                    if kind == FlagKind::Text && !slot.is_empty() {
                        return Err(flag_error("given twice".to_owned()));
                    }
                }
            }
            slot.push(value);
        }
        Ok(Self {
            instruction,
            line,
            values,
        })
    }

    fn slot(&self, name: &str) -> &[Option<String>] {
        self.values
            .iter()
            .find(|(spec, _)| *spec == name)
            .map(|(_, values)| values.as_slice())
            .expect("flag names are listed in the instruction's spec")
    }

    fn text(&self, name: &str) -> Option<String> {
        self.slot(name).first().cloned().flatten()
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.slot(name).iter().flatten().cloned().collect()
    }

    /// `None` when not given; `--flag` alone is `true`.
    fn boolean(&self, name: &str) -> Option<bool> {
        self.slot(name).first().map(|value| {
            value
                .as_deref()
                .is_none_or(|value| value.eq_ignore_ascii_case("true"))
        })
    }

    fn error(&self, flag: &str, message: impl Into<String>) -> DockerfileError {
        DockerfileError::new(
            self.line,
            ErrorKind::FlagValue {
                instruction: self.instruction.clone(),
                flag: flag.to_owned(),
                message: message.into(),
            },
        )
    }
}

fn arguments_error(node: &Node, message: impl Into<String>) -> DockerfileError {
    DockerfileError::new(
        node.span.start,
        ErrorKind::Arguments {
            instruction: node.name(),
            message: message.into(),
        },
    )
}

/// The text after the instruction name and flags, as BuildKit would run it in shell form.
fn shell_text(node: &Node) -> String {
    node.args.first().cloned().unwrap_or_default()
}

/// The command of `RUN`, `CMD`, `ENTRYPOINT`: exec form if JSON, else shell form, except
/// that a `[...]` text which is not a JSON array of strings is an error for `CMD` and
/// `ENTRYPOINT` (BuildKit would run it through the shell and warn; it is never what was
/// meant).
fn command_line(node: &Node, strict_json: bool) -> Result<CommandLine, DockerfileError> {
    if node.is_json {
        return Ok(CommandLine::Exec(node.args.clone()));
    }
    let text = shell_text(node);
    if strict_json {
        check_clearly_json(node, &text)?;
    }
    Ok(CommandLine::Shell(text))
}

fn check_clearly_json(node: &Node, text: &str) -> Result<(), DockerfileError> {
    let trimmed = text.trim();
    if looks_like_json_array(trimmed) {
        if let Json::Invalid(detail) = parse_json(trimmed) {
            return Err(DockerfileError::new(
                node.span.start,
                ErrorKind::InvalidJson {
                    instruction: node.name(),
                    text: trimmed.to_owned(),
                    detail,
                },
            ));
        }
    }
    Ok(())
}

/// Was a JSON array clearly meant? `[...]` whose comma-separated elements are each one
/// quoted string (`'` or `"`; a trailing empty element allowed): `['a', 'b']`, `["a", "b",]`,
/// `["C:\path"]`. Shell tests like `[ -f /x ]` or `[ "$A" = b ]` are not.
fn looks_like_json_array(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return false;
    };
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let last = parts.len() - 1;
    parts.iter().enumerate().all(|(index, part)| {
        if index == last && part.is_empty() && index > 0 {
            return true;
        }
        let Some(quote) = part.chars().next().filter(|ch| *ch == '"' || *ch == '\'') else {
            return false;
        };
        let body = &part[1..];
        let Some(body) = body.strip_suffix(quote) else {
            return false;
        };
        // One string: no unescaped quote of the same kind inside.
        let mut escaped = false;
        body.chars().all(|ch| {
            let ok = escaped || ch != quote;
            escaped = !escaped && ch == '\\';
            ok
        })
    })
}

/// Pairs `key value sep` triples of `ENV`/`LABEL` nodes.
fn key_values(node: &Node) -> Result<Vec<KeyValue>, DockerfileError> {
    if node.args.is_empty() {
        return Err(arguments_error(node, "requires at least one argument"));
    }
    node.args
        .chunks(3)
        .map(|triple| {
            let key = triple[0].clone();
            if key.is_empty() {
                return Err(arguments_error(node, "names can not be blank"));
            }
            Ok(KeyValue {
                key,
                value: triple.get(1).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// Is `name` a valid variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn is_valid_arg_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Parses a Go duration (`1m30s`, `500ms`, `0s`).
fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .filter(|end| *end > 0)?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Checks one expanded `EXPOSE` word the way BuildKit does (moby's `nat.ParsePortSpec`):
/// `[[ip:]host-port:]port[-port][/proto]`, ports 0 to 65535 (a range low to high), protocol
/// `tcp`, `udp` or `sctp` in any case (none means `tcp`).
fn check_port_spec(spec: &str) -> Result<(), String> {
    parse_port_spec(spec).map(|_| ())
}

/// The image config entries (`port/proto`) of one `EXPOSE` word, as BuildKit writes them
/// (moby's `nat.ParsePortSpecs`): the container side only (`8080:80` exposes `80/tcp`), one
/// entry per port of a range, the protocol in lower case, `tcp` when none.
///
/// # Errors
/// A word BuildKit rejects (the message of the parse error).
pub fn exposed_ports(spec: &str) -> Result<Vec<String>, String> {
    let (start, end, proto) = parse_port_spec(spec)?;
    Ok((start..=end)
        .map(|port| format!("{port}/{proto}"))
        .collect())
}

/// Parses one expanded `EXPOSE` word: the container port range and the lower-case protocol.
fn parse_port_spec(spec: &str) -> Result<(u16, u16, String), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [container] => ("", "", *container),
        [host, container] => ("", *host, *container),
        [ip @ .., host, container] => (&spec[..ip.join(":").len()], *host, *container),
        [] => ("", "", ""),
    };
    let (port, proto) = match container.split_once('/') {
        Some((port, proto)) => {
            let proto = proto.split('/').next().unwrap_or_default();
            (port, if proto.is_empty() { "tcp" } else { proto })
        }
        None => (container, "tcp"),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    if port.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host.is_empty() {
        let (host_start, host_end) =
            port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if start != end && end - start != host_end - host_start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host}"
            ));
        }
    }
    let lower = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&lower.as_str()) {
        return Err(format!("invalid proto: {proto} (tcp, udp or sctp)"));
    }
    Ok((start, end, lower))
}

/// A port (`80`) or range (`8000-8010`, low to high), each 0 to 65535 in decimal digits.
fn port_range(text: &str) -> Option<(u16, u16)> {
    let number = |digits: &str| {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok()
    };
    match text.split_once('-') {
        None => number(text).map(|port| (port, port)),
        Some((start, end)) => {
            let (start, end) = (number(start)?, number(end)?);
            (start <= end).then_some((start, end))
        }
    }
}

/// Checks a `--chmod` value: octal up to 07777, or symbolic (`u+x,go-w`, `a=rX`).
fn parse_chmod(value: &str) -> Result<Chmod, String> {
    if value.contains('$') {
        return Ok(Chmod::Unexpanded(value.to_owned()));
    }
    if !value.is_empty() && value.chars().all(|ch| ch.is_ascii_digit()) {
        return u32::from_str_radix(value, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .map(Chmod::Octal)
            .ok_or_else(|| format!("{value:?} is not an octal mode (0000 to 7777)"));
    }
    let symbolic_ok = !value.is_empty() && value.split(',').all(is_symbolic_clause);
    if symbolic_ok {
        Ok(Chmod::Symbolic(value.to_owned()))
    } else {
        Err(format!(
            "{value:?} is not a mode: use octal (0755) or symbolic (u+x,go-w)"
        ))
    }
}

/// One clause of a symbolic mode: `[ugoa]*([+-=][rwxXst]*)+`.
fn is_symbolic_clause(clause: &str) -> bool {
    let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
    let mut seen_operator = false;
    for ch in rest.chars() {
        if matches!(ch, '+' | '-' | '=') {
            seen_operator = true;
        } else if !seen_operator || !"rwxXst".contains(ch) {
            return false;
        }
    }
    seen_operator
}

/// Checks a `--chown` value: `user`, `user:group`, names or numbers.
fn check_chown(value: &str) -> Result<(), String> {
    let mut parts = value.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if user.is_empty() || group.is_some_and(str::is_empty) || parts.next().is_some() {
        return Err(format!("{value:?} is not user, user:group or uid:gid"));
    }
    Ok(())
}

/// Checks a `--checksum` value: `sha256:<64 hex>` (also sha384, sha512).
fn check_checksum(value: &str) -> Result<(), String> {
    if value.contains('$') {
        return Ok(());
    }
    let valid = value.split_once(':').is_some_and(|(algorithm, hex)| {
        let length = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return false,
        };
        hex.len() == length && hex.chars().all(|ch| ch.is_ascii_hexdigit())
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a digest (sha256:<64 hex digits>)"
        ))
    }
}

/// Sources and destination of `COPY`/`ADD`, heredoc sources becoming inline files.
fn sources_and_destination(node: &Node) -> Result<(Vec<Source>, String), DockerfileError> {
    if node.args.len() < 2 {
        return Err(arguments_error(
            node,
            "requires at least two arguments (sources and a destination)",
        ));
    }
    let (destination, sources) = node.args.split_last().expect("two arguments at least");
    let heredoc_in = |word: &str| {
        if node.is_json {
            return Ok(None);
        }
        heredoc_from_word(word).map_err(|kind| DockerfileError::new(node.span.start, kind))
    };
    if heredoc_in(destination)?.is_some() {
        return Err(arguments_error(
            node,
            "cannot accept a heredoc as a destination",
        ));
    }
    let mut result = Vec::with_capacity(sources.len());
    for source in sources {
        match heredoc_in(source)? {
            Some(announced) => {
                let heredoc = node
                    .heredocs
                    .iter()
                    .find(|heredoc| heredoc.name == announced.name)
                    .cloned()
                    .unwrap_or(announced);
                result.push(Source::Inline(heredoc));
            }
            None => result.push(Source::Path(source.clone())),
        }
    }
    Ok((result, destination.clone()))
}

impl Instruction {
    /// Where the instruction is.
    pub fn span(&self) -> Span {
        match self {
            Self::Add(i) => i.span,
            Self::Arg(i) => i.span,
            Self::Cmd(i) => i.span,
            Self::Copy(i) => i.span,
            Self::Entrypoint(i) => i.span,
            Self::Env(i) => i.span,
            Self::Expose(i) => i.span,
            Self::From(i) => i.span,
            Self::Healthcheck(i) => i.span,
            Self::Label(i) => i.span,
            Self::Maintainer(i) => i.span,
            Self::Onbuild(i) => i.span,
            Self::Run(i) => i.span,
            Self::Shell(i) => i.span,
            Self::Stopsignal(i) => i.span,
            Self::User(i) => i.span,
            Self::Volume(i) => i.span,
            Self::Workdir(i) => i.span,
        }
    }

    /// The instruction name, upper case.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Add(_) => "ADD",
            Self::Arg(_) => "ARG",
            Self::Cmd(_) => "CMD",
            Self::Copy(_) => "COPY",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Env(_) => "ENV",
            Self::Expose(_) => "EXPOSE",
            Self::From(_) => "FROM",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Onbuild(_) => "ONBUILD",
            Self::Run(_) => "RUN",
            Self::Shell(_) => "SHELL",
            Self::Stopsignal(_) => "STOPSIGNAL",
            Self::User(_) => "USER",
            Self::Volume(_) => "VOLUME",
            Self::Workdir(_) => "WORKDIR",
        }
    }

    /// Types one node of the tree.
    ///
    /// # Errors
    /// Unknown instruction or flag, bad flag value, wrong arguments.
    pub fn from_node(node: &Node) -> Result<Self, DockerfileError> {
        use FlagKind::{Bool, List, Text};
        let span = node.span;
        let no_flags = |node: &Node| Flags::parse(node, &[]).map(drop);
        let single_text = |node: &Node| -> Result<String, DockerfileError> {
            no_flags(node)?;
            match node.args.first() {
                Some(text) if !text.is_empty() => Ok(text.clone()),
                _ => Err(arguments_error(node, "requires exactly one argument")),
            }
        };
        Ok(match node.instruction.as_str() {
            "from" => {
                let flags = Flags::parse(node, &[("platform", Text)])?;
                let (image, name) = match node.args.as_slice() {
                    [image] => (image.clone(), None),
                    [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                        let name = name.to_lowercase();
                        let valid = name.starts_with(|ch: char| ch.is_ascii_lowercase())
                            && name.chars().all(|ch| {
                                ch.is_ascii_lowercase() || ch.is_ascii_digit() || "-_.".contains(ch)
                            });
                        if !valid {
                            return Err(arguments_error(
                                node,
                                format!(
                                    "invalid stage name {name:?}: a name starts with a letter and holds only letters, digits, -, _ and ."
                                ),
                            ));
                        }
                        (image.clone(), Some(name))
                    }
                    _ => {
                        return Err(arguments_error(
                            node,
                            "requires either one or three arguments: FROM <image> [AS <name>]",
                        ));
                    }
                };
                let platform = flags.text("platform");
                if platform.as_deref() == Some("") {
                    return Err(flags.error("platform", "needs a value"));
                }
                Self::From(From {
                    span,
                    image,
                    platform,
                    name,
                })
            }
            "run" => {
                let flags = Flags::parse(
                    node,
                    &[("mount", List), ("network", Text), ("security", Text)],
                )?;
                let mounts = flags
                    .list("mount")
                    .iter()
                    .map(|spec| {
                        Mount::parse(spec, true).map_err(|message| flags.error("mount", message))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let network = match flags.text("network").as_deref() {
                    None => None,
                    Some("default") => Some(Network::Default),
                    Some("none") => Some(Network::None),
                    Some("host") => Some(Network::Host),
                    Some(other) => {
                        return Err(flags
                            .error("network", format!("{other:?} is not default, none or host")));
                    }
                };
                let security = match flags.text("security").as_deref() {
                    None => None,
                    Some("sandbox") => Some(Security::Sandbox),
                    Some("insecure") => Some(Security::Insecure),
                    Some(other) => {
                        return Err(flags
                            .error("security", format!("{other:?} is not sandbox or insecure")));
                    }
                };
                if node.args.is_empty() {
                    return Err(arguments_error(node, "requires at least one argument"));
                }
                Self::Run(Run {
                    span,
                    command: command_line(node, false)?,
                    heredocs: node.heredocs.clone(),
                    mounts,
                    network,
                    security,
                })
            }
            "cmd" | "entrypoint" => {
                no_flags(node)?;
                // A bare `CMD` is accepted as BuildKit does: an empty command.
                let command = if node.args.is_empty() {
                    CommandLine::Exec(Vec::new())
                } else {
                    command_line(node, true)?
                };
                if node.instruction == "cmd" {
                    Self::Cmd(Cmd { span, command })
                } else {
                    Self::Entrypoint(Entrypoint { span, command })
                }
            }
            "shell" => {
                no_flags(node)?;
                if !node.is_json {
                    check_clearly_json(node, &shell_text(node))?;
                    return Err(arguments_error(
                        node,
                        "requires the arguments to be in JSON form: SHELL [\"executable\", \"parameters\"]",
                    ));
                }
                if node.args.is_empty() {
                    return Err(arguments_error(node, "requires at least one argument"));
                }
                Self::Shell(Shell {
                    span,
                    shell: node.args.clone(),
                })
            }
            "label" => {
                no_flags(node)?;
                Self::Label(Label {
                    span,
                    labels: key_values(node)?,
                })
            }
            "env" => {
                no_flags(node)?;
                Self::Env(Env {
                    span,
                    variables: key_values(node)?,
                })
            }
            "maintainer" => Self::Maintainer(Maintainer {
                span,
                name: single_text(node)?,
            }),
            "expose" => {
                no_flags(node)?;
                if node.args.is_empty() {
                    return Err(arguments_error(node, "requires at least one argument"));
                }
                Self::Expose(Expose {
                    span,
                    ports: node.args.clone(),
                })
            }
            "add" => {
                let flags = Flags::parse(
                    node,
                    &[
                        ("chown", Text),
                        ("chmod", Text),
                        ("link", Bool),
                        ("checksum", Text),
                        ("keep-git-dir", Bool),
                        ("exclude", List),
                        ("unpack", Bool),
                    ],
                )?;
                let (sources, destination) = sources_and_destination(node)?;
                let chown = flags.text("chown");
                if let Some(chown) = &chown {
                    check_chown(chown).map_err(|message| flags.error("chown", message))?;
                }
                let checksum = flags.text("checksum");
                if let Some(checksum) = &checksum {
                    check_checksum(checksum).map_err(|message| flags.error("checksum", message))?;
                }
                Self::Add(Add {
                    span,
                    sources,
                    destination,
                    chown,
                    chmod: flags
                        .text("chmod")
                        .map(|value| parse_chmod(&value))
                        .transpose()
                        .map_err(|message| flags.error("chmod", message))?,
                    link: flags.boolean("link").unwrap_or(false),
                    checksum,
                    keep_git_dir: flags.boolean("keep-git-dir").unwrap_or(false),
                    excludes: flags.list("exclude"),
                    unpack: flags.boolean("unpack"),
                })
            }
            "copy" => {
                let flags = Flags::parse(
                    node,
                    &[
                        ("from", Text),
                        ("chown", Text),
                        ("chmod", Text),
                        ("link", Bool),
                        ("parents", Bool),
                        ("exclude", List),
                    ],
                )?;
                let (sources, destination) = sources_and_destination(node)?;
                let chown = flags.text("chown");
                if let Some(chown) = &chown {
                    check_chown(chown).map_err(|message| flags.error("chown", message))?;
                }
                let from = flags.text("from");
                if from.as_deref() == Some("") {
                    return Err(flags.error("from", "needs a stage name, index or image"));
                }
                Self::Copy(Copy {
                    span,
                    sources,
                    destination,
                    from,
                    chown,
                    chmod: flags
                        .text("chmod")
                        .map(|value| parse_chmod(&value))
                        .transpose()
                        .map_err(|message| flags.error("chmod", message))?,
                    link: flags.boolean("link").unwrap_or(false),
                    parents: flags.boolean("parents").unwrap_or(false),
                    excludes: flags.list("exclude"),
                })
            }
            "volume" => {
                no_flags(node)?;
                if node.args.is_empty() {
                    return Err(arguments_error(node, "requires at least one argument"));
                }
                if node.args.iter().any(|path| path.trim().is_empty()) {
                    return Err(arguments_error(
                        node,
                        "a volume path can not be an empty string",
                    ));
                }
                Self::Volume(Volume {
                    span,
                    paths: node.args.clone(),
                })
            }
            "user" => Self::User(User {
                span,
                user: single_text(node)?,
            }),
            "workdir" => Self::Workdir(Workdir {
                span,
                path: single_text(node)?,
            }),
            "stopsignal" => Self::Stopsignal(Stopsignal {
                span,
                signal: single_text(node)?,
            }),
            "arg" => {
                no_flags(node)?;
                if node.args.is_empty() {
                    return Err(arguments_error(node, "requires at least one argument"));
                }
                let args = node
                    .args
                    .iter()
                    .map(|word| {
                        let (name, default) = match word.split_once('=') {
                            Some((name, default)) => (name, Some(default.to_owned())),
                            None => (word.as_str(), None),
                        };
                        if !name.contains('$') && !is_valid_arg_name(name) {
                            return Err(DockerfileError::new(
                                span.start,
                                ErrorKind::BadArgName {
                                    name: name.to_owned(),
                                },
                            ));
                        }
                        Ok(ArgDeclaration {
                            name: name.to_owned(),
                            default,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Self::Arg(Arg { span, args })
            }
            "onbuild" => {
                no_flags(node)?;
                let Some(sub) = &node.sub else {
                    return Err(arguments_error(
                        node,
                        "requires an instruction to run later",
                    ));
                };
                match sub.instruction.as_str() {
                    "onbuild" => {
                        return Err(arguments_error(
                            node,
                            "chaining ONBUILD via ONBUILD ONBUILD isn't allowed",
                        ));
                    }
                    "from" | "maintainer" => {
                        return Err(arguments_error(
                            node,
                            format!("{} isn't allowed as an ONBUILD trigger", sub.name()),
                        ));
                    }
                    _ => {}
                }
                let mut typed_sub = (**sub).clone();
                typed_sub.heredocs.clone_from(&node.heredocs);
                // As BuildKit stores it: the heredoc bodies follow the line.
                let mut expression = sub.original.clone();
                for heredoc in &node.heredocs {
                    expression.push('\n');
                    expression.push_str(&heredoc.content);
                    expression.push_str(&heredoc.name);
                }
                Self::Onbuild(Onbuild {
                    span,
                    expression,
                    instruction: Box::new(Self::from_node(&typed_sub)?),
                })
            }
            "healthcheck" => {
                let flags = Flags::parse(
                    node,
                    &[
                        ("interval", Text),
                        ("timeout", Text),
                        ("start-period", Text),
                        ("start-interval", Text),
                        ("retries", Text),
                    ],
                )?;
                let Some(kind) = node.args.first() else {
                    return Err(arguments_error(node, "requires NONE or CMD <command>"));
                };
                let health = match kind.to_uppercase().as_str() {
                    "NONE" => {
                        if node.args.len() > 1 {
                            return Err(arguments_error(
                                node,
                                "HEALTHCHECK NONE takes no arguments",
                            ));
                        }
                        if !node.flags.is_empty() {
                            return Err(arguments_error(node, "HEALTHCHECK NONE takes no flags"));
                        }
                        Health::None
                    }
                    "CMD" => {
                        let command = if node.is_json {
                            CommandLine::Exec(node.args[1..].to_vec())
                        } else {
                            let text = node.args.get(1).cloned().unwrap_or_default();
                            check_clearly_json(node, &text)?;
                            CommandLine::Shell(text)
                        };
                        if command == CommandLine::Shell(String::new())
                            || command == CommandLine::Exec(Vec::new())
                        {
                            return Err(arguments_error(
                                node,
                                "missing command after HEALTHCHECK CMD",
                            ));
                        }
                        let duration = |name: &str| -> Result<Option<Duration>, DockerfileError> {
                            let Some(text) = flags.text(name) else {
                                return Ok(None);
                            };
                            let duration = parse_duration(&text).ok_or_else(|| {
                                flags.error(
                                    name,
                                    format!("{text:?} is not a duration (e.g. 30s, 1m30s)"),
                                )
                            })?;
                            if !duration.is_zero() && duration < Duration::from_millis(1) {
                                return Err(flags.error(name, "cannot be less than 1ms"));
                            }
                            Ok(Some(duration))
                        };
                        let retries = flags
                            .text("retries")
                            .map(|text| {
                                text.parse::<u32>().map_err(|_| {
                                    flags.error(
                                        "retries",
                                        format!("{text:?} is not a number of retries (0 or more)"),
                                    )
                                })
                            })
                            .transpose()?;
                        Health::Check(HealthCheck {
                            command,
                            interval: duration("interval")?,
                            timeout: duration("timeout")?,
                            start_period: duration("start-period")?,
                            start_interval: duration("start-interval")?,
                            retries,
                        })
                    }
                    other => {
                        return Err(arguments_error(
                            node,
                            format!("unknown type {other:?} in HEALTHCHECK (use CMD or NONE)"),
                        ));
                    }
                };
                Self::Healthcheck(Healthcheck { span, health })
            }
            _ => {
                let name = node
                    .original
                    .split(|ch: char| ch.is_whitespace())
                    .next()
                    .unwrap_or_default();
                return Err(DockerfileError::new(
                    span.start,
                    ErrorKind::UnknownInstruction {
                        name: name.to_owned(),
                        suggestion: suggest(name, INSTRUCTIONS).map(str::to_owned),
                    },
                ));
            }
        })
    }

    /// The instruction with its arguments expanded the way Docker does for this instruction:
    /// `ADD`, `COPY`, `ENV`, `EXPOSE`, `FROM`, `LABEL`, `STOPSIGNAL`, `USER`, `VOLUME`,
    /// `WORKDIR` and `RUN --mount` values are expanded, and so are the bodies of `COPY`/`ADD`
    /// heredocs whose delimiter is unquoted (variables only); `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`,
    /// `HEALTHCHECK`, `ONBUILD` and `MAINTAINER` are left as written (a shell, or a later
    /// build, does that). `ARG` defaults are expanded by [`super::resolve`], which knows the
    /// scope rules.
    ///
    /// # Errors
    /// Failed expansion (`${X:?}` unset, bad substitution), or a value that is invalid once
    /// expanded (a mount's `uid=`, a `--chmod`).
    pub fn expand(
        &self,
        expander: &Expander,
        vars: &dyn Variables,
    ) -> Result<Self, DockerfileError> {
        let line = self.span().start;
        let name = self.name();
        let error = |error: ExpandError| {
            DockerfileError::new(
                line,
                ErrorKind::Expansion {
                    instruction: name.to_owned(),
                    message: error.to_string(),
                },
            )
        };
        let word = |text: &str| expander.expand(text, vars).map(|e| e.text).map_err(error);
        let words = |texts: &[String]| {
            texts
                .iter()
                .map(|text| word(text))
                .collect::<Result<Vec<_>, _>>()
        };
        let pairs = |pairs: &[KeyValue]| {
            pairs
                .iter()
                .map(|pair| {
                    Ok(KeyValue {
                        key: word(&pair.key)?,
                        value: word(&pair.value)?,
                    })
                })
                .collect::<Result<Vec<_>, DockerfileError>>()
        };
        let body_expander = Expander::heredoc(expander.escape);
        let sources = |sources: &[Source]| {
            sources
                .iter()
                .map(|source| match source {
                    Source::Path(path) => word(path).map(Source::Path),
                    Source::Inline(heredoc) if heredoc.expand => {
                        let content = body_expander
                            .expand(&heredoc.body(), vars)
                            .map_err(error)?
                            .text;
                        Ok(Source::Inline(Heredoc {
                            content,
                            chomp: false,
                            ..heredoc.clone()
                        }))
                    }
                    inline @ Source::Inline(_) => Ok(inline.clone()),
                })
                .collect::<Result<Vec<_>, DockerfileError>>()
        };
        let flag_error = |flag: &str, message: String| {
            DockerfileError::new(
                line,
                ErrorKind::FlagValue {
                    instruction: name.to_owned(),
                    flag: flag.to_owned(),
                    message,
                },
            )
        };
        let chmod = |chmod: &Option<Chmod>| -> Result<Option<Chmod>, DockerfileError> {
            match chmod {
                Some(Chmod::Unexpanded(text)) => {
                    let expanded = word(text)?;
                    parse_chmod(&expanded)
                        .map(Some)
                        .map_err(|message| flag_error("chmod", message))
                }
                other => Ok(other.clone()),
            }
        };
        Ok(match self {
            Self::From(from) => Self::From(From {
                image: word(&from.image)?,
                platform: from.platform.as_deref().map(word).transpose()?,
                ..from.clone()
            }),
            Self::Add(add) => Self::Add(Add {
                sources: sources(&add.sources)?,
                destination: word(&add.destination)?,
                chown: add.chown.as_deref().map(word).transpose()?,
                chmod: chmod(&add.chmod)?,
                checksum: add.checksum.as_deref().map(word).transpose()?,
                excludes: words(&add.excludes)?,
                ..add.clone()
            }),
            Self::Copy(copy) => Self::Copy(Copy {
                sources: sources(&copy.sources)?,
                destination: word(&copy.destination)?,
                from: copy.from.as_deref().map(word).transpose()?,
                chown: copy.chown.as_deref().map(word).transpose()?,
                chmod: chmod(&copy.chmod)?,
                excludes: words(&copy.excludes)?,
                ..copy.clone()
            }),
            Self::Env(env) => Self::Env(Env {
                variables: pairs(&env.variables)?,
                ..env.clone()
            }),
            Self::Label(label) => Self::Label(Label {
                labels: pairs(&label.labels)?,
                ..label.clone()
            }),
            Self::Expose(expose) => {
                let mut ports = Vec::new();
                for port in &expose.ports {
                    ports.extend(expander.expand(port, vars).map_err(error)?.words);
                }
                // Checked once expanded, as BuildKit does (`EXPOSE $PORT`).
                for port in &ports {
                    check_port_spec(port).map_err(|message| {
                        DockerfileError::new(
                            line,
                            ErrorKind::Arguments {
                                instruction: name.to_owned(),
                                message,
                            },
                        )
                    })?;
                }
                Self::Expose(Expose {
                    ports,
                    ..expose.clone()
                })
            }
            Self::Stopsignal(stop) => Self::Stopsignal(Stopsignal {
                signal: word(&stop.signal)?,
                ..stop.clone()
            }),
            Self::User(user) => Self::User(User {
                user: word(&user.user)?,
                ..user.clone()
            }),
            Self::Volume(volume) => Self::Volume(Volume {
                paths: words(&volume.paths)?,
                ..volume.clone()
            }),
            Self::Workdir(workdir) => Self::Workdir(Workdir {
                path: word(&workdir.path)?,
                ..workdir.clone()
            }),
            Self::Run(run) => {
                let mounts = run
                    .mounts
                    .iter()
                    .map(|mount| {
                        if !mount.spec.contains('$') {
                            return Ok(mount.clone());
                        }
                        let spec = word(&mount.spec)?;
                        Mount::parse(&spec, false).map_err(|message| flag_error("mount", message))
                    })
                    .collect::<Result<Vec<_>, DockerfileError>>()?;
                Self::Run(Run {
                    mounts,
                    ..run.clone()
                })
            }
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::dockerfile::syntax::parse;

    fn typed(text: &str) -> Result<Stages, DockerfileError> {
        stages(&parse(text)?)
    }

    fn only(text: &str) -> Instruction {
        let stages = typed(&format!("FROM scratch\n{text}")).unwrap();
        stages.stages[0].instructions[0].clone()
    }

    fn error(text: &str) -> DockerfileError {
        typed(text).unwrap_err()
    }

    #[test]
    fn from_forms() {
        let stages =
            typed("ARG V=1\nFROM --platform=$BUILDPLATFORM golang:$V AS Build\nFROM build\n")
                .unwrap();
        assert_eq!(stages.meta_args.len(), 1);
        let from = &stages.stages[0].from;
        assert_eq!(from.platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!(from.image, "golang:$V");
        assert_eq!(from.name.as_deref(), Some("build"));
        assert_eq!(stages.stages[1].index, 1);
        assert_eq!(stages.find("BUILD").unwrap().index, 0);
        assert_eq!(stages.find("1").unwrap().index, 1);
    }

    #[rstest]
    #[case("FROM a b", "one or three")]
    #[case("FROM a AS 1x", "invalid stage name")]
    #[case("FROM --platform a", "needs a value")]
    #[case("FROM --plat=x a", "does not take the flag --plat")]
    #[case("FROM a AS x\nFROM b AS X", "duplicate stage name")]
    fn from_errors(#[case] text: &str, #[case] message: &str) {
        let error = error(text);
        assert!(error.to_string().contains(message), "{error}");
    }

    #[test]
    fn run_forms_and_flags() {
        let Instruction::Run(run) =
            only("RUN --mount=type=cache,target=/c --network=none --security=insecure make")
        else {
            panic!()
        };
        assert_eq!(run.command, CommandLine::Shell("make".into()));
        assert_eq!(run.mounts.len(), 1);
        assert_eq!(run.network, Some(Network::None));
        assert_eq!(run.security, Some(Security::Insecure));
        let Instruction::Run(run) = only("RUN [\"make\", \"all\"]") else {
            panic!()
        };
        assert_eq!(
            run.command,
            CommandLine::Exec(vec!["make".into(), "all".into()])
        );
        let Instruction::Run(run) = only("RUN <<EOF\necho hi\nEOF") else {
            panic!()
        };
        assert_eq!(run.heredocs[0].content, "echo hi\n");
        // RUN in shell form with brackets is fine: the shell runs it.
        let Instruction::Run(run) = only("RUN [ -f x ] && echo yes") else {
            panic!()
        };
        assert_eq!(
            run.command,
            CommandLine::Shell("[ -f x ] && echo yes".into())
        );
    }

    #[rstest]
    #[case("RUN --network=wifi x", "not default, none or host")]
    #[case("RUN --security=lax x", "not sandbox or insecure")]
    #[case("RUN --mount=type=bind x", "need a target")]
    #[case("RUN --mount x", "needs a value")]
    #[case("RUN --network=none --network=host x", "given twice")]
    #[case("RUN --chmod=755 x", "does not take the flag --chmod")]
    #[case("RUN", "at least one argument")]
    fn run_errors(#[case] text: &str, #[case] message: &str) {
        let error = error(&format!("FROM a\n{text}"));
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(error.line, Some(2));
    }

    #[test]
    fn cmd_entrypoint_shell() {
        assert_eq!(
            only("CMD [\"a\"]"),
            Instruction::Cmd(Cmd {
                span: Span::new(2, 2),
                command: CommandLine::Exec(vec!["a".into()])
            })
        );
        assert!(matches!(
            only("CMD echo hi"),
            Instruction::Cmd(Cmd {
                command: CommandLine::Shell(_),
                ..
            })
        ));
        assert!(
            matches!(only("CMD []"), Instruction::Cmd(Cmd { command: CommandLine::Exec(v), .. }) if v.is_empty())
        );
        assert!(matches!(
            only("ENTRYPOINT [\"/bin/app\"]"),
            Instruction::Entrypoint(_)
        ));
        let Instruction::Shell(shell) = only("SHELL [\"/bin/bash\", \"-c\"]") else {
            panic!()
        };
        assert_eq!(shell.shell, ["/bin/bash", "-c"]);
    }

    #[rstest]
    #[case("CMD ['a', 'b']", "invalid JSON array")]
    #[case("ENTRYPOINT [\"a\", \"b\",]", "invalid JSON array")]
    #[case("HEALTHCHECK CMD ['a']", "invalid JSON array")]
    #[case("SHELL /bin/sh -c", "JSON form")]
    #[case("SHELL ['sh', '-c']", "invalid JSON array")]
    #[case("CMD [\"a\", 1]", "strings only")]
    #[case("CMD --x a", "does not take the flag --x")]
    #[case("CMD [\"C:\\path\", \"x\"]", "invalid JSON array")]
    fn command_errors(#[case] text: &str, #[case] message: &str) {
        let error = error(&format!("FROM a\n{text}"));
        assert!(error.to_string().contains(message), "{error}");
    }

    #[rstest]
    #[case("HEALTHCHECK CMD [ -f /tmp/ready ]")]
    #[case("HEALTHCHECK CMD [ \"$STATUS\" = \"ok\" ]")]
    #[case("CMD [ -n \"$A\" ] && exec app")]
    #[case("ENTRYPOINT [\"a\" \"b\"]")]
    fn shell_tests_with_brackets_are_shell_form(#[case] text: &str) {
        typed(&format!("FROM a\n{text}")).unwrap();
    }

    #[test]
    fn invalid_json_has_a_hint() {
        let error = error("FROM a\nCMD ['a']");
        assert!(
            error
                .to_string()
                .contains("hint: exec form is a JSON array of double-quoted strings"),
            "{error}"
        );
    }

    #[test]
    fn key_value_instructions() {
        let Instruction::Env(env) = only("ENV A=1 B=\"two words\"") else {
            panic!()
        };
        assert_eq!(
            env.variables[1],
            KeyValue {
                key: "B".into(),
                value: "\"two words\"".into()
            }
        );
        let Instruction::Env(env) = only("ENV A one two") else {
            panic!()
        };
        assert_eq!(env.variables[0].value, "one two");
        let Instruction::Label(label) = only("LABEL a=b c=d") else {
            panic!()
        };
        assert_eq!(label.labels.len(), 2);
        assert!(error("FROM a\nENV A").to_string().contains("two arguments"));
        assert!(
            error("FROM a\nENV A=1 B")
                .to_string()
                .contains("can't find =")
        );
        assert!(error("FROM a\nLABEL =x").to_string().contains("blank"));
    }

    #[test]
    fn simple_instructions() {
        assert!(matches!(only("MAINTAINER me"), Instruction::Maintainer(m) if m.name == "me"));
        assert!(
            matches!(only("EXPOSE 80 53/udp"), Instruction::Expose(e) if e.ports == ["80", "53/udp"])
        );
        assert!(
            matches!(only("VOLUME [\"/a\", \"/b\"]"), Instruction::Volume(v) if v.paths.len() == 2)
        );
        assert!(matches!(only("VOLUME /a /b"), Instruction::Volume(v) if v.paths.len() == 2));
        assert!(matches!(only("USER app:app"), Instruction::User(u) if u.user == "app:app"));
        assert!(matches!(only("WORKDIR /src"), Instruction::Workdir(w) if w.path == "/src"));
        assert!(
            matches!(only("STOPSIGNAL SIGKILL"), Instruction::Stopsignal(s) if s.signal == "SIGKILL")
        );
        for text in [
            "USER",
            "WORKDIR",
            "EXPOSE",
            "VOLUME",
            "STOPSIGNAL",
            "MAINTAINER",
            "LABEL",
        ] {
            assert!(
                error(&format!("FROM a\n{text}"))
                    .to_string()
                    .contains("argument"),
                "{text}"
            );
        }
        assert!(
            error("FROM a\nVOLUME [\"\"]")
                .to_string()
                .contains("empty string")
        );
    }

    #[test]
    fn copy_and_add_flags() {
        let Instruction::Copy(copy) = only(
            "COPY --from=build --chown=1000:1000 --chmod=0644 --link --parents --exclude=*.md --exclude=.git a b /dst/",
        ) else {
            panic!()
        };
        assert_eq!(copy.from.as_deref(), Some("build"));
        assert_eq!(copy.chown.as_deref(), Some("1000:1000"));
        assert_eq!(copy.chmod, Some(Chmod::Octal(0o644)));
        assert!(copy.link && copy.parents);
        assert_eq!(copy.excludes, ["*.md", ".git"]);
        assert_eq!(
            copy.sources,
            [Source::Path("a".into()), Source::Path("b".into())]
        );
        assert_eq!(copy.destination, "/dst/");
        let digest = format!("sha256:{}", "a".repeat(64));
        let Instruction::Add(add) = only(&format!(
            "ADD --checksum={digest} --keep-git-dir --unpack=false --chmod=u+x,go-w --link=false https://x/y.tar /y"
        )) else {
            panic!()
        };
        assert_eq!(add.checksum.as_deref(), Some(digest.as_str()));
        assert!(add.keep_git_dir && !add.link);
        assert_eq!(add.unpack, Some(false));
        assert_eq!(add.chmod, Some(Chmod::Symbolic("u+x,go-w".into())));
        let Instruction::Copy(copy) = only("COPY [\"a b\", \"/c d/\"]") else {
            panic!()
        };
        assert_eq!(copy.destination, "/c d/");
    }

    #[test]
    fn onbuild_expression_keeps_heredoc_bodies() {
        let Instruction::Onbuild(onbuild) = only("ONBUILD RUN <<EOF\necho hi\nEOF") else {
            panic!()
        };
        assert_eq!(onbuild.expression, "RUN <<EOF\necho hi\nEOF");
    }

    #[test]
    fn heredoc_sources_are_found_by_name_and_not_a_destination() {
        let Instruction::Copy(copy) =
            only("COPY a <<two <<-one /dst/\nsecond\ntwo\n\tfirst\n\tone")
        else {
            panic!()
        };
        assert_eq!(copy.sources[0], Source::Path("a".into()));
        assert!(matches!(&copy.sources[1], Source::Inline(h) if h.content == "second\n"));
        assert!(matches!(&copy.sources[2], Source::Inline(h) if h.body() == "first\n"));
        let error = error("FROM a\nCOPY a <<EOF\nx\nEOF");
        assert!(
            error.to_string().contains("heredoc as a destination"),
            "{error}"
        );
    }

    #[test]
    fn copy_heredoc_is_an_inline_file() {
        let Instruction::Copy(copy) = only("COPY <<EOF /etc/motd\nhello\nEOF") else {
            panic!()
        };
        assert!(matches!(&copy.sources[0], Source::Inline(h) if h.content == "hello\n"));
    }

    #[rstest]
    #[case("COPY a", "at least two arguments")]
    #[case("COPY --chmod=999 a b", "octal")]
    #[case("COPY --chmod=rwx a b", "not a mode")]
    #[case("COPY --chown=:g a b", "user:group")]
    #[case("COPY --link=maybe a b", "true or false")]
    #[case("COPY --from= a b", "needs a stage")]
    #[case("COPY --checksum=sha256:00 a b", "does not take the flag --checksum")]
    #[case("COPY --unpack a b", "does not take the flag --unpack")]
    #[case("ADD --checksum=md5:00 a b", "not a digest")]
    #[case("ADD --from=x a b", "does not take the flag --from")]
    #[case("ADD --parents a b", "does not take the flag --parents")]
    fn copy_add_errors(#[case] text: &str, #[case] message: &str) {
        let error = error(&format!("FROM a\n{text}"));
        assert!(error.to_string().contains(message), "{error}");
    }

    #[test]
    fn args() {
        let Instruction::Arg(arg) = only("ARG A B=2 C=") else {
            panic!()
        };
        assert_eq!(
            arg.args[0],
            ArgDeclaration {
                name: "A".into(),
                default: None
            }
        );
        assert_eq!(arg.args[1].default.as_deref(), Some("2"));
        assert_eq!(arg.args[2].default.as_deref(), Some(""));
        for bad in ["1A", "A-B", "=x", "a.b"] {
            let error = error(&format!("FROM a\nARG {bad}"));
            assert!(
                matches!(error.kind, ErrorKind::BadArgName { .. }),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn onbuild() {
        let Instruction::Onbuild(onbuild) = only("ONBUILD RUN make") else {
            panic!()
        };
        assert_eq!(onbuild.expression, "RUN make");
        assert!(matches!(*onbuild.instruction, Instruction::Run(_)));
        assert!(
            error("FROM a\nONBUILD ONBUILD RUN x")
                .to_string()
                .contains("isn't allowed")
        );
        assert!(
            error("FROM a\nONBUILD FROM x")
                .to_string()
                .contains("isn't allowed")
        );
        assert!(
            error("FROM a\nONBUILD COPY --bad a b")
                .to_string()
                .contains("--bad")
        );
    }

    #[test]
    fn healthcheck() {
        let Instruction::Healthcheck(check) = only(
            "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0s --start-interval=2s --retries=3 CMD curl -f http://localhost/",
        ) else {
            panic!()
        };
        let Health::Check(check) = check.health else {
            panic!()
        };
        assert_eq!(check.interval, Some(Duration::from_secs(90)));
        assert_eq!(check.timeout, Some(Duration::from_millis(500)));
        assert_eq!(check.start_period, Some(Duration::ZERO));
        assert_eq!(check.retries, Some(3));
        assert_eq!(
            check.command,
            CommandLine::Shell("curl -f http://localhost/".into())
        );
        assert!(matches!(
            only("HEALTHCHECK NONE"),
            Instruction::Healthcheck(Healthcheck {
                health: Health::None,
                ..
            })
        ));
        assert!(matches!(
            only("HEALTHCHECK CMD [\"true\"]"),
            Instruction::Healthcheck(_)
        ));
    }

    #[rstest]
    #[case("HEALTHCHECK", "requires NONE or CMD")]
    #[case("HEALTHCHECK NONE x", "takes no arguments")]
    #[case("HEALTHCHECK --retries=1 NONE", "takes no flags")]
    #[case("HEALTHCHECK CMD", "missing command")]
    #[case("HEALTHCHECK PING x", "unknown type")]
    #[case("HEALTHCHECK --interval=5 CMD x", "not a duration")]
    #[case("HEALTHCHECK --interval=1us CMD x", "less than 1ms")]
    #[case("HEALTHCHECK --retries=-1 CMD x", "number of retries")]
    #[case("HEALTHCHECK --period=1s CMD x", "does not take the flag --period")]
    fn healthcheck_errors(#[case] text: &str, #[case] message: &str) {
        let error = error(&format!("FROM a\n{text}"));
        assert!(error.to_string().contains(message), "{error}");
    }

    #[test]
    fn structure_errors() {
        let error = error("FROM a\nRUNN x");
        assert_eq!(
            error.to_string(),
            "Dockerfile:2: unknown instruction \"RUNN\"\nhint: did you mean \"RUN\"?"
        );
        assert_eq!(error.line, Some(2));
        let error = typed("ARG X\nRUN x").unwrap_err();
        assert!(matches!(
            error.kind,
            ErrorKind::InstructionBeforeFrom { .. }
        ));
        assert_eq!(error.line, Some(2));
        assert_eq!(typed("ARG X\n").unwrap_err().kind, ErrorKind::MissingFrom);
    }

    #[rstest]
    #[case("80")]
    #[case("80/tcp")]
    #[case("53/UDP")]
    #[case("9/sctp")]
    #[case("80/")]
    #[case("0")]
    #[case("65535")]
    #[case("8000-8010/udp")]
    #[case("8080:80")]
    #[case("127.0.0.1:8080:80/tcp")]
    #[case("[::1]:8080:80")]
    #[case("8000-8010:80")]
    fn expose_accepts_what_buildkit_accepts(#[case] spec: &str) {
        assert_eq!(check_port_spec(spec), Ok(()), "{spec}");
    }

    #[rstest]
    #[case("80/xyz", "invalid proto: xyz")]
    #[case("80/http", "invalid proto: http")]
    #[case("70000", "invalid containerPort: 70000")]
    #[case("65536/udp", "invalid containerPort: 65536")]
    #[case("-1", "invalid containerPort: -1")]
    #[case("+80", "invalid containerPort: +80")]
    #[case("http", "invalid containerPort: http")]
    #[case("90-80", "invalid containerPort: 90-80")]
    #[case("80-70000", "invalid containerPort: 80-70000")]
    #[case("80-", "invalid containerPort: 80-")]
    #[case("/tcp", "no port specified")]
    #[case("99999:80", "invalid hostPort: 99999")]
    #[case("8000-8001:80-82", "invalid ranges")]
    #[case("nothost:8080:80", "invalid IP address: nothost")]
    fn expose_rejects_what_buildkit_rejects(#[case] spec: &str, #[case] message: &str) {
        let error = check_port_spec(spec).unwrap_err();
        assert!(error.starts_with(message), "{spec}: {error}");
    }

    #[test]
    fn exposed_ports_are_what_buildkit_writes_in_the_config() {
        let ports = |spec: &str| exposed_ports(spec).unwrap();
        assert_eq!(ports("80"), ["80/tcp"]);
        assert_eq!(ports("53/UDP"), ["53/udp"]);
        assert_eq!(ports("8080:80/tcp"), ["80/tcp"]);
        assert_eq!(
            ports("8000-8002/Sctp"),
            ["8000/sctp", "8001/sctp", "8002/sctp"]
        );
        assert!(exposed_ports("80/xyz").is_err());
    }

    #[test]
    fn expose_is_checked_once_expanded() {
        let expander = Expander::new('\\');
        let vars: Vec<(String, String)> = vec![
            ("P".into(), "70000".into()),
            ("OK".into(), "80 443/tcp".into()),
        ];
        let error = typed("FROM a\nEXPOSE 22 $P\n").unwrap().stages[0].instructions[0]
            .expand(&expander, &vars)
            .unwrap_err();
        assert_eq!(error.line, Some(2));
        assert_eq!(
            error.to_string(),
            "Dockerfile:2: EXPOSE: invalid containerPort: 70000"
        );
        let Instruction::Expose(expose) = only("EXPOSE $OK").expand(&expander, &vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(expose.ports, ["80", "443/tcp"]);
    }

    #[test]
    fn expansion_of_copy_and_mounts() {
        let vars: Vec<(String, String)> = vec![
            ("D".into(), "/app".into()),
            ("U".into(), "1000".into()),
            ("M".into(), "755".into()),
        ];
        let expander = Expander::new('\\');
        let Instruction::Copy(copy) = only("COPY --chown=$U --chmod=$M [\"$D/a b\", \"${D}/\"]")
            .expand(&expander, &vars)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(copy.sources, [Source::Path("/app/a b".into())]);
        assert_eq!(copy.destination, "/app/");
        assert_eq!(copy.chown.as_deref(), Some("1000"));
        assert_eq!(copy.chmod, Some(Chmod::Octal(0o755)));
        let Instruction::Run(run) = only("RUN --mount=type=cache,target=/c,uid=$U echo $D")
            .expand(&expander, &vars)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(run.mounts[0].uid, Some(1000));
        assert_eq!(run.command, CommandLine::Shell("echo $D".into()));
        assert!(
            only("WORKDIR ${X:?must be set}")
                .expand(&expander, &vars)
                .unwrap_err()
                .to_string()
                .contains("X: must be set")
        );
    }
}

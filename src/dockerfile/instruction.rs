//! Tree to typed instructions, grouped in stages. Every instruction and flag BuildKit's stable
//! Dockerfile syntax has is typed here and checked for form; unknown instructions and flags
//! are errors with a "did you mean" hint.
//!
//! Nothing is expanded here: `FROM --platform=$BUILDPLATFORM` keeps its `$`. Expansion with
//! build arguments and the stage's ARG/ENV scope is [`super::resolve`]'s job, through
//! [`Instruction::expand`].
//!
//! The files: this one holds the instruction types and [`stages`]; `parse` types one node
//! ([`Instruction::from_node`]) with `flags` (the `--flag` reader) and `values` (checks of
//! flag and argument values: modes, owners, ports, durations); `expand` is
//! [`Instruction::expand`].

use std::time::Duration;

use serde::Serialize;

use super::error::{DockerfileError, ErrorKind, Span};
use super::mount::Mount;
use super::syntax::{Directives, Dockerfile, Heredoc};

mod expand;
mod flags;
mod parse;
#[cfg(test)]
mod tests;
mod values;

pub use values::{exposed_ports, is_valid_arg_name};

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
    /// Heredoc bodies (`RUN <<EOF`): the script, or files given to the command. A `<<-EOF`
    /// body is given with its lines' leading tabs already removed.
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
    /// `--checksum`: a digest (`sha256:<hex>`) for an HTTP(S) source, a commit (hex, full or
    /// a prefix) for a git source; checked against the source when expanded.
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
    /// `--from`: a stage name or index, or an image, as written (never expanded: BuildKit
    /// refuses variables here).
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
    /// The stage called `name` (stage names are case-insensitive), or with that index. When
    /// two stages have the name (BuildKit warns, `DuplicateStageName`, and builds), the last
    /// one, as BuildKit's `--target` and `COPY --from` find it.
    pub fn find(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .rev()
            .find(|stage| stage.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .and_then(|index| self.stages.get(index))
            })
    }
}

/// An `ONBUILD` trigger as an image config stores it (`RUN make`, heredoc bodies on the
/// lines after it), typed as the instruction it runs in a stage whose `FROM` is at `span`
/// (BuildKit reports a trigger's errors at that line).
///
/// # Errors
/// What `ONBUILD <trigger>` fails to parse with (more than one instruction, `FROM`,
/// `MAINTAINER` or `ONBUILD` as a trigger, bad flags), at `span`.
pub fn trigger(text: &str, span: Span) -> Result<Instruction, DockerfileError> {
    let at_from = |mut error: DockerfileError| {
        error.line = Some(span.start);
        error
    };
    let tree = super::syntax::parse(&format!("ONBUILD {text}\n")).map_err(at_from)?;
    let [node] = tree.nodes.as_slice() else {
        return Err(DockerfileError::new(
            span.start,
            ErrorKind::Arguments {
                instruction: "ONBUILD".to_owned(),
                message: "onbuild trigger should be a single expression".to_owned(),
            },
        ));
    };
    let Instruction::Onbuild(onbuild) = Instruction::from_node(node).map_err(at_from)? else {
        unreachable!("an ONBUILD line parses as ONBUILD");
    };
    let mut instruction = *onbuild.instruction;
    *instruction.span_mut() = span;
    Ok(instruction)
}

/// Types the tree: instructions grouped in stages.
///
/// # Errors
/// Unknown instructions or flags, bad flag values, missing arguments, no `FROM`, an
/// instruction other than `ARG` before the first `FROM`, bad `ARG` names, `SHELL` arguments
/// that are not a JSON array, variables in `COPY --from` or `RUN --mount from=`. Two stages
/// with the same name are not an error (BuildKit warns, and so does `xbuild check`).
pub fn stages(dockerfile: &Dockerfile) -> Result<Stages, DockerfileError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &dockerfile.nodes {
        let instruction = Instruction::from_node(node)?;
        match instruction {
            Instruction::From(from) => {
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

    /// Where the instruction is, to change it (an `ONBUILD` trigger takes its `FROM`'s line).
    pub fn span_mut(&mut self) -> &mut Span {
        match self {
            Self::Add(i) => &mut i.span,
            Self::Arg(i) => &mut i.span,
            Self::Cmd(i) => &mut i.span,
            Self::Copy(i) => &mut i.span,
            Self::Entrypoint(i) => &mut i.span,
            Self::Env(i) => &mut i.span,
            Self::Expose(i) => &mut i.span,
            Self::From(i) => &mut i.span,
            Self::Healthcheck(i) => &mut i.span,
            Self::Label(i) => &mut i.span,
            Self::Maintainer(i) => &mut i.span,
            Self::Onbuild(i) => &mut i.span,
            Self::Run(i) => &mut i.span,
            Self::Shell(i) => &mut i.span,
            Self::Stopsignal(i) => &mut i.span,
            Self::User(i) => &mut i.span,
            Self::Volume(i) => &mut i.span,
            Self::Workdir(i) => &mut i.span,
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
}

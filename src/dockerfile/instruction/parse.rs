//! One node of the tree to a typed [`Instruction`]: flags, argument forms and values checked.

use std::time::Duration;

use super::super::error::{DockerfileError, ErrorKind, suggest};
use super::super::expand::Expander;
use super::super::mount::Mount;
use super::super::syntax::{Json, Node, heredoc_from_word, parse_json};
use super::flags::{FlagKind, Flags};
use super::values::{check_chown, is_valid_arg_name, parse_chmod, parse_duration};
use super::*;

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

/// The command of `RUN`, `CMD`, `ENTRYPOINT`: exec form if the arguments are a JSON array of
/// strings, else shell form. As in BuildKit, a text that looks like a JSON array but does not
/// parse as one (`CMD ['a', 'b']`) is shell form: the shell runs it (`xbuild check`'s
/// `JSONArgsRecommended` points at it).
fn command_line(node: &Node) -> CommandLine {
    if node.is_json {
        return CommandLine::Exec(node.args.clone());
    }
    CommandLine::Shell(shell_text(node))
}

/// `SHELL` only: a `[...]` that was clearly meant as JSON but does not parse is named as such
/// (BuildKit only says the arguments must be JSON).
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
                // A bare `RUN` runs an empty shell script, as in BuildKit (`/bin/sh -c ''`);
                // `RUN []` is an exec with nothing to execute, which BuildKit refuses before
                // the build starts ("invalid exec op with no args").
                if node.is_json && node.args.is_empty() {
                    return Err(arguments_error(
                        node,
                        "exec form needs at least one argument, the program ([] is empty)",
                    ));
                }
                Self::Run(Run {
                    span,
                    command: command_line(node),
                    // `RUN <<-EOF`: the body as the shell reads it, leading tabs removed, as
                    // BuildKit gives it (a command that is only the heredoc runs the body; a
                    // shell reading `<<-EOF` itself strips nothing more).
                    heredocs: node
                        .heredocs
                        .iter()
                        .map(|heredoc| Heredoc {
                            content: heredoc.body(),
                            ..heredoc.clone()
                        })
                        .collect(),
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
                    command_line(node)
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
                // Checked against the sources once they are expanded (Instruction::expand).
                let checksum = flags.text("checksum");
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
                // BuildKit reads `--from` as written: a value that expansion would change
                // (a variable, an escape) is refused, whatever the variables hold.
                if let Some(from) = &from {
                    let as_written = Expander::new('\\')
                        .expand(from, &Vec::<(String, String)>::new())
                        .is_ok_and(|expansion| expansion.text == *from);
                    if !as_written {
                        return Err(flags.error(
                            "from",
                            "variable expansion is not supported for --from, define a new stage \
                             with FROM using ARG from global scope as a workaround",
                        ));
                    }
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
                            CommandLine::Shell(node.args.get(1).cloned().unwrap_or_default())
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
                        // In the case it was written in, as BuildKit's `matchCase`: `RUNN` →
                        // `RUN`, `runn` or `Runn` → `run`.
                        suggestion: suggest(name, INSTRUCTIONS).map(|near| {
                            if name == name.to_uppercase() {
                                near.to_owned()
                            } else {
                                near.to_lowercase()
                            }
                        }),
                    },
                ));
            }
        })
    }
}

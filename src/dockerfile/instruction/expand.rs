//! [`Instruction::expand`]: the arguments Docker expands, expanded with a stage's scope.

use super::super::error::{DockerfileError, ErrorKind};
use super::super::expand::{ExpandError, Expander, Variables};
use super::super::mount::Mount;
use super::super::syntax::Heredoc;
use super::values::{check_checksum, check_port_spec, check_remote_sources, parse_chmod};
use super::*;

impl Instruction {
    /// The instruction with its arguments expanded the way Docker does for this instruction:
    /// `ADD`, `COPY`, `ENV`, `EXPOSE`, `FROM`, `LABEL`, `STOPSIGNAL`, `USER`, `VOLUME`,
    /// `WORKDIR` and `RUN --mount` values are expanded (`COPY --from` and `--mount from=` are
    /// never: BuildKit takes them as written), and so are the bodies of `COPY`/`ADD` heredocs
    /// whose delimiter is unquoted (variables and escapes, not quotes); `RUN`, `CMD`,
    /// `ENTRYPOINT`, `SHELL`, `HEALTHCHECK`, `ONBUILD` and `MAINTAINER` are left as written (a
    /// shell, or a later build, does that). `ARG` defaults are expanded by
    /// [`crate::dockerfile::resolve`], which knows the scope rules.
    ///
    /// # Errors
    /// Failed expansion (`${X:?}` unset, bad substitution), or a value that is invalid once
    /// expanded (a mount's `uid=`, a `--chmod`), and what BuildKit refuses once the sources
    /// are known: `ADD --checksum` on a local source, on several sources, or not in the
    /// source's form; a git or HTTP source for `COPY`.
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
        // BuildKit expands heredoc bodies with `\` as the escape, whatever `# escape=` says.
        let body_expander = Expander::heredoc('\\');
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
        let arguments = |message: String| {
            DockerfileError::new(
                line,
                ErrorKind::Arguments {
                    instruction: name.to_owned(),
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
            Self::Add(add) => {
                let expanded = Add {
                    sources: sources(&add.sources)?,
                    destination: word(&add.destination)?,
                    chown: add.chown.as_deref().map(word).transpose()?,
                    chmod: chmod(&add.chmod)?,
                    checksum: add.checksum.as_deref().map(word).transpose()?,
                    excludes: words(&add.excludes)?,
                    ..add.clone()
                };
                if let Some(checksum) = &expanded.checksum {
                    check_checksum(checksum, &expanded.sources)
                        .map_err(|message| flag_error("checksum", message))?;
                }
                let keep_git_dir = add.keep_git_dir.then_some(true);
                check_remote_sources(name, &expanded.sources, keep_git_dir).map_err(&arguments)?;
                Self::Add(expanded)
            }
            Self::Copy(copy) => {
                let expanded = Copy {
                    sources: sources(&copy.sources)?,
                    destination: word(&copy.destination)?,
                    chown: copy.chown.as_deref().map(word).transpose()?,
                    chmod: chmod(&copy.chmod)?,
                    excludes: words(&copy.excludes)?,
                    ..copy.clone()
                };
                check_remote_sources(name, &expanded.sources, None).map_err(arguments)?;
                Self::Copy(expanded)
            }
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
                        // Each value expanded on its own, as BuildKit does (`type=$T` too).
                        let failed = std::cell::RefCell::new(None);
                        let expand_value = |value: &str| {
                            expander.expand(value, vars).map(|e| e.text).map_err(|e| {
                                let message = e.to_string();
                                *failed.borrow_mut() = Some(error(e));
                                message
                            })
                        };
                        Mount::parse_expanded(&mount.spec, &expand_value).map_err(|message| {
                            failed
                                .borrow_mut()
                                .take()
                                .unwrap_or_else(|| flag_error("mount", message))
                        })
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

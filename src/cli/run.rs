//! `xbuild run [OPTIONS] IMAGE [COMMAND...]` (`docker run` for images in the local store,
//! pulled when missing) and `xbuild debug shell [--before] ID [COMMAND...]` (a shell in a
//! failed build step's state): arguments and the glue to [`crate::container`].
//!
//! The container's exit status becomes ours, as with `docker run` (128 + N when a signal N
//! killed it); errors of xbuild itself keep the usual codes (2 bad input, 3 host not ready,
//! 1 otherwise). The run's upper directory is removed afterwards (`--rm` is accepted and is
//! what always happens), unless `--keep` is given, which prints where it is.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::output;
use super::progress::ProgressMode;
use crate::container::{self as container, Ran, RunError, RunOptions};
use crate::error::{ExitKind, Failure, ResultExt as _};
use crate::executor::failed::FailedStep;
use crate::platform::{self, Platform};
use crate::registry::{ImageRef, RegistryOptions, SinkProgress, pull};
use crate::sandbox::{Network, Stdio, Stream};
use crate::store::{self, Store};

/// `xbuild run [OPTIONS] IMAGE [COMMAND...]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Platform of the image to run (default: the host's); foreign ones run under QEMU.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Remove what the container changed when it exits (always done; accepted for
    /// `docker run` compatibility).
    #[arg(long)]
    pub rm: bool,
    /// Keep what the container changed (its overlay upper directory) and print its path.
    #[arg(long, conflicts_with = "rm")]
    pub keep: bool,
    /// Set an environment variable (`KEY=VALUE`, or `KEY` to pass ours), repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User to run as (`name`, `uid`, `name:group`, `uid:gid`).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint (and its default command); `""` removes it.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Network: `host` (the default: the host's network), `none` (loopback only) or
    /// `default` (a namespace of its own with outbound access, as a build's `RUN`).
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: String,
    /// Keep stdin open: the container reads ours.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Image to run (`name[:tag][@digest]`).
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `xbuild debug shell [--before] ID [COMMAND...]`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Open the state before the failed step instead of the state it left.
    #[arg(long)]
    pub before: bool,
    /// The failed step's id (the build's error message names it).
    #[arg(value_name = "ID")]
    pub id: String,
    /// What to run instead of the stage's shell (`/bin/sh` unless `SHELL` changed it).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

fn open_store() -> anyhow::Result<Store> {
    let root = store::default_root();
    Store::open(&root).with_context(|| format!("opening the store {}", root.display()))
}

/// Forwards a captured line to our stdout or stderr.
fn forward(stream: Stream, line: &[u8]) {
    output::passthrough(stream == Stream::Stderr, line);
}

/// Exits with the container's status: `docker run` semantics, not an xbuild error.
fn finish(ran: Ran, keep: bool) -> anyhow::Result<()> {
    let Ran {
        outcome,
        mut scratch,
    } = ran;
    if keep {
        output::stderr(format_args!(
            "kept the container's changes in {}",
            scratch.keep().display()
        ));
    }
    drop(scratch);
    let code = container::exit_code(outcome);
    if code == 0 {
        return Ok(());
    }
    std::process::exit(code & 0xff)
}

/// Terminal when both ends are terminals, else our streams as they are.
fn interactive_stdio() -> Stdio {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        Stdio::Terminal
    } else {
        Stdio::Inherit
    }
}

impl RunArgs {
    /// The platform to run: `--platform` ([`super::values::platform_arg`]), else the host's.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn wanted_platform(&self) -> anyhow::Result<Platform> {
        match &self.platform {
            Some(text) => super::values::platform_arg(text),
            None => Ok(platform::host()),
        }
    }

    /// Runs the image's command and exits with its status.
    ///
    /// # Errors
    /// Bad arguments (exit 2), a platform the host cannot run or not root (exit 3), an
    /// image that is not in the store and cannot be pulled, sandbox failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let wanted = self.wanted_platform()?;
        let network = match self.network.as_str() {
            "host" => Network::Host,
            "none" => Network::None,
            "default" => Network::Default,
            other => {
                return Err(super::unsupported(format_args!(
                    "--network {other} (use host, none or default)"
                )));
            }
        };
        let reference = ImageRef::parse(&self.image).exit_kind(ExitKind::BadInput)?;
        let store = open_store()?;
        let image = match container::find_local(
            &store,
            &reference,
            &self.image,
            &wanted,
            self.platform.is_some(),
        )
        .exit_kind_of()?
        {
            Some(image) => image,
            None => {
                output::stderr(format_args!(
                    "Unable to find image '{reference}' ({wanted}) locally, pulling"
                ));
                let sink: crate::progress::SharedSink =
                    Arc::from(super::progress::sink(ProgressMode::Auto));
                let options =
                    Arc::new(RegistryOptions::from_env(store.root()).showing_notes(sink.clone()));
                let progress = Arc::new(SinkProgress::per_blob(sink, 1));
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                let pulled = runtime.block_on(pull::resolve(
                    options,
                    store.layout(),
                    &reference,
                    &wanted,
                    progress,
                ))?;
                crate::oci::image::read_image(store.layout(), &pulled.manifest)?
            }
        };
        let actual = container::image_platform(&image).exit_kind_of()?;
        if !actual.same_target(&wanted) {
            output::warning(format_args!(
                "the image's platform ({actual}) does not match the requested platform \
                 ({wanted}); running it as {actual}"
            ));
        }
        let env = self
            .env
            .iter()
            .filter_map(|pair| {
                if pair.contains('=') {
                    Some(pair.clone())
                } else {
                    // `-e KEY`: ours, if we have it (Docker leaves it out otherwise).
                    std::env::var(pair)
                        .ok()
                        .map(|value| format!("{pair}={value}"))
                }
            })
            .collect();
        let stdio = if self.tty {
            Stdio::Terminal
        } else if self.interactive {
            Stdio::Inherit
        } else {
            Stdio::Captured
        };
        let options = RunOptions {
            command: self.command,
            entrypoint: self.entrypoint,
            env,
            user: self.user,
            workdir: self.workdir,
            network,
            stdio,
        };
        let ran = container::run_image(&store, &image, &options, forward)
            .exit_kind_of()
            .with_context(|| format!("running {}", store::display_ref(&reference.store_name())))?;
        finish(ran, self.keep)
    }
}

impl ShellArgs {
    /// Opens the shell and exits with its status.
    ///
    /// # Errors
    /// No such record (exit 2), a platform the host cannot run (exit 3), a missing state or
    /// a sandbox failure (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let record = FailedStep::load(store.root(), &self.id).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                Failure::bad_input(format_args!(
                    "no failed step {:?} (records are in {})",
                    self.id,
                    FailedStep::dir(store.root()).display()
                ))
            } else {
                Failure::new(
                    ExitKind::Failed,
                    anyhow::Error::new(error).context(format!("reading the record {}", self.id)),
                )
            }
        })?;
        let state = if self.before { "before" } else { "after" };
        output::stderr(format_args!(
            "{} ({}): the state {state} the step, changes are discarded on exit",
            record.name, record.outcome
        ));
        let ran = container::debug_shell(
            &store,
            &record,
            self.before,
            self.command,
            interactive_stdio(),
            forward,
        )
        .exit_kind_of()?;
        finish(ran, false)
    }
}

/// Tags a [`RunError`] with its exit kind.
trait RunResultExt<T> {
    fn exit_kind_of(self) -> Result<T, Failure>;
}

impl<T> RunResultExt<T> for Result<T, RunError> {
    fn exit_kind_of(self) -> Result<T, Failure> {
        self.map_err(|error| Failure::new(error.exit_kind(), error))
    }
}

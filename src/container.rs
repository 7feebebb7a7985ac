//! Running an image or a kept build state interactively: `xbuild run` and `xbuild debug
//! shell`. It turns an image config (Entrypoint, Cmd, Env, User, WorkingDir, with Docker's
//! override rules) or a [`FailedStep`] record into a [`StepSpec`] over the right snapshots
//! and a fresh upper directory in the store's `tmp/`, and hands it to the [`sandbox`].
//!
//! Why a module of its own, not part of `sandbox`: the sandbox runs a spec and knows nothing
//! about images or the store (so the build uses it without either); this module is the
//! small layer that knows both, as `build` is for `RUN` steps.
//!
//! Every run gets a fresh upper directory, removed afterwards unless the caller keeps it
//! ([`Scratch::keep`]): the image's snapshots and a failed step's recorded state are overlay
//! lower directories, never written.

use std::path::{Path, PathBuf};

use oci_spec::image::Config;

use crate::executor::failed::FailedStep;
use crate::oci::image::{self as oci_image, ImageError, ResolvedImage};
use crate::platform::{self, Platform};
use crate::registry::ImageRef;
use crate::registry::pull::{self, PullError};
use crate::sandbox::{self, Network, SandboxError, Stdio, StepCommand, StepOutcome, StepSpec};
use crate::store::{Store, StoreError};

/// Errors of [`run_image`] and [`debug_shell`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Neither the image nor the command line gives anything to run.
    #[error("no command specified: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// A platform name that does not parse.
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    /// The store failed (unpacking snapshots, reading blobs).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An image document in the store is missing or corrupt.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Looking the image up failed.
    #[error(transparent)]
    Pull(Box<PullError>),
    /// The sandbox could not run the command.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The recorded state of a failed step is gone.
    #[error("the recorded state {path} is missing (removed by prune?)")]
    MissingState {
        /// The directory.
        path: PathBuf,
    },
    /// Preparing the run's directories failed.
    #[error("cannot prepare the run: {what}")]
    Prepare {
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<PullError> for RunError {
    fn from(error: PullError) -> Self {
        Self::Pull(Box::new(error))
    }
}

impl RunError {
    /// How the CLI should exit: 3 when the host cannot run the platform or we are not root,
    /// 2 when there is nothing to run or the platform is not valid, 1 otherwise.
    pub fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            Self::Sandbox(error) => error.exit_kind(),
            Self::NoCommand | Self::Platform(_) => crate::error::ExitKind::BadInput,
            _ => crate::error::ExitKind::Failed,
        }
    }
}

/// What `xbuild run` may override in the image's config (`docker run`'s options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `COMMAND...`: replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and clears its Cmd (`Some("")`
    /// removes the entrypoint).
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE`, in order; a key the image sets is replaced in place.
    pub env: Vec<String>,
    /// `-u USER`: replaces the image's User.
    pub user: Option<String>,
    /// `-w DIR`: replaces the image's WorkingDir.
    pub workdir: Option<String>,
    /// `--network`.
    pub network: Network,
    /// How the command's streams are connected.
    pub stdio: Stdio,
}

/// The process to start, after Docker's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Entrypoint + (COMMAND or Cmd).
    pub argv: Vec<String>,
    /// Image Env with `-e` applied.
    pub env: Vec<String>,
    /// User, `None` for root.
    pub user: Option<String>,
    /// Working directory (`/` when the image has none).
    pub cwd: String,
}

/// Applies Docker's rules to an image config: COMMAND replaces Cmd; `--entrypoint`
/// replaces Entrypoint and clears Cmd; `-e` replaces or adds variables; `-u` and `-w`
/// replace User and WorkingDir.
///
/// # Errors
/// [`RunError::NoCommand`] when the result is empty.
pub fn process(config: Option<&Config>, options: &RunOptions) -> Result<Process, RunError> {
    let field = |get: fn(&Config) -> Option<Vec<String>>| config.and_then(get).unwrap_or_default();
    let (entrypoint, cmd) = match &options.entrypoint {
        Some(entrypoint) if entrypoint.is_empty() => (Vec::new(), Vec::new()),
        Some(entrypoint) => (vec![entrypoint.clone()], Vec::new()),
        None => (
            field(|config| config.entrypoint().clone()),
            field(|config| config.cmd().clone()),
        ),
    };
    let mut argv = entrypoint;
    if options.command.is_empty() {
        argv.extend(cmd);
    } else {
        argv.extend(options.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(RunError::NoCommand);
    }
    let mut env = field(|config| config.env().clone());
    for pair in &options.env {
        let key = pair.split('=').next().unwrap_or(pair);
        match env
            .iter_mut()
            .find(|existing| existing.split('=').next() == Some(key))
        {
            Some(existing) => existing.clone_from(pair),
            None => env.push(pair.clone()),
        }
    }
    let user = options
        .user
        .clone()
        .or_else(|| config.and_then(|config| config.user().clone()))
        .filter(|user| !user.is_empty());
    let cwd = options
        .workdir
        .clone()
        .or_else(|| config.and_then(|config| config.working_dir().clone()))
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok(Process {
        argv,
        env,
        user,
        cwd,
    })
}

/// The image `reference` (typed by the user as `typed`) names in the store for `platform`,
/// if the store has it complete: first as the build's `FROM` finds it (the normalised name,
/// the registry module's platform matching); then under the name as typed too (layouts
/// written by other tools), where, unless `exact`, a single-platform image is taken whatever
/// its platform, as `docker run` without `--platform` does.
///
/// # Errors
/// An unreadable store or a corrupt document.
pub fn find_local(
    store: &Store,
    reference: &ImageRef,
    typed: &str,
    platform: &Platform,
    exact: bool,
) -> Result<Option<ResolvedImage>, RunError> {
    if let Some(found) = pull::local_image(store.layout(), reference, platform)? {
        return Ok(Some(oci_image::read_image(
            store.layout(),
            &found.manifest,
        )?));
    }
    let mut found = None;
    let store_name = reference.store_name();
    // `busybox` is also looked up as `busybox:latest`, the short form other tools write.
    for name in [
        store_name.as_str(),
        typed,
        crate::store::display_ref(&store_name),
    ] {
        let descriptor = match store.resolve_ref(name) {
            Ok(descriptor) => descriptor,
            Err(StoreError::UnknownRef(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let mut images = oci_image::list_images(store.layout(), &descriptor)?;
        let position = images
            .iter()
            .position(|image| platform.same_target(&image.platform()));
        found = match position {
            Some(position) => Some(images.swap_remove(position)),
            None if !exact && images.len() == 1 => images.pop(),
            None => None,
        };
        if found.is_some() {
            break;
        }
    }
    Ok(found)
}

/// The platform an image's binaries are for (its config's).
///
/// # Errors
/// A config platform xbuild does not run ([`Platform::check_known`]).
pub fn image_platform(image: &ResolvedImage) -> Result<Platform, RunError> {
    let platform = image.platform();
    platform.check_known()?;
    Ok(platform)
}

/// A fresh upper and work directory under the store's `tmp/`, removed when dropped unless
/// [`Scratch::keep`] was called.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    /// Makes one under `tmp` (created when missing).
    ///
    /// # Errors
    /// The directories cannot be created.
    pub fn new(tmp: &Path) -> Result<Self, RunError> {
        let prepare = |what: &str| {
            let what = what.to_owned();
            move |source| RunError::Prepare { what, source }
        };
        std::fs::create_dir_all(tmp).map_err(prepare("creating the store's tmp"))?;
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(tmp)
            .map_err(prepare("creating a scratch directory"))?;
        let path = dir.path().to_path_buf();
        for name in ["upper", "work"] {
            std::fs::create_dir(path.join(name)).map_err(prepare("creating the upper dir"))?;
        }
        Ok(Self {
            dir: Some(dir),
            path,
        })
    }

    /// The upper directory: what the run changed.
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    /// The overlay work directory.
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    /// Keeps the directory after the run; returns the upper directory's path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.upper()
    }
}

/// What a run ended with.
#[derive(Debug)]
pub struct Ran {
    /// How the command ended.
    pub outcome: StepOutcome,
    /// The run's upper directory (removed when this is dropped, unless kept).
    pub scratch: Scratch,
}

/// Runs an image's command (after [`process`]) over its snapshots, as its config's
/// platform (emulated when foreign), with a fresh upper directory.
///
/// # Errors
/// [`RunError`]: no command, snapshots that cannot be unpacked, a platform the host cannot
/// run, a sandbox failure. A command that ran and failed is `Ok` with its outcome.
pub fn run_image(
    store: &Store,
    image: &ResolvedImage,
    options: &RunOptions,
    on_output: impl FnMut(sandbox::Stream, &[u8]),
) -> Result<Ran, RunError> {
    let process = process(image.config.config().as_ref(), options)?;
    let platform = image_platform(image)?;
    // Before unpacking anything: a platform the host cannot run is exit 3 with the fix.
    crate::binfmt::check_runnable(&platform).map_err(SandboxError::from)?;
    let mut lower_dirs = store.ensure_snapshots(image)?;
    lower_dirs.reverse();
    let scratch = Scratch::new(&store.layout().tmp_dir())?;
    let mut spec = StepSpec::new(
        lower_dirs,
        scratch.upper(),
        scratch.work(),
        platform,
        StepCommand::Exec(process.argv),
    );
    spec.scratch_parent = Some(store.layout().tmp_dir());
    spec.env = process.env;
    spec.user = process.user;
    spec.cwd = process.cwd;
    spec.hostname = hostname(&scratch.path);
    spec.network = options.network;
    spec.stdio = options.stdio;
    add_term(&mut spec);
    let outcome = sandbox::run(&spec, on_output)?;
    Ok(Ran { outcome, scratch })
}

/// `TERM=xterm` with a terminal, when the environment has no `TERM` (as `docker run -t`).
fn add_term(spec: &mut StepSpec) {
    if spec.stdio == Stdio::Terminal && !spec.env.iter().any(|pair| pair.starts_with("TERM=")) {
        spec.env.push("TERM=xterm".to_owned());
    }
}

/// Docker names a container's host after its id; ours is the scratch directory's suffix.
fn hostname(scratch: &Path) -> String {
    let name = scratch
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = name.trim_start_matches("run-");
    if id.is_empty() {
        "xbuild".to_owned()
    } else {
        id.to_lowercase()
    }
}

/// Opens `command` (default: the first word of the stage's `SHELL`, else `/bin/sh`) in a
/// failed step's state: its lower directories with
/// the failed upper directory on top (or, `before`, the lower directories only), a fresh
/// upper directory above so the record is never changed, as the step's user, working
/// directory and environment, under emulation when foreign.
///
/// # Errors
/// As [`run_image`]; [`RunError::MissingState`] when a recorded directory is gone.
pub fn debug_shell(
    store: &Store,
    record: &FailedStep,
    before: bool,
    command: Vec<String>,
    stdio: Stdio,
    on_output: impl FnMut(sandbox::Stream, &[u8]),
) -> Result<Ran, RunError> {
    let mut lower_dirs = Vec::with_capacity(record.lower_dirs.len() + 1);
    if !before {
        lower_dirs.push(record.failed_upper.clone());
    }
    lower_dirs.extend(record.lower_dirs.iter().cloned());
    if let Some(missing) = lower_dirs.iter().find(|dir| !dir.is_dir()) {
        return Err(RunError::MissingState {
            path: missing.clone(),
        });
    }
    let argv = if command.is_empty() {
        // The stage's `SHELL` program (`/bin/bash` from `SHELL ["/bin/bash", "-c"]`).
        vec![
            record
                .shell
                .first()
                .filter(|shell| !shell.is_empty())
                .cloned()
                .unwrap_or_else(|| "/bin/sh".to_owned()),
        ]
    } else {
        command
    };
    let scratch = Scratch::new(&store.layout().tmp_dir())?;
    let mut spec = StepSpec::new(
        lower_dirs,
        scratch.upper(),
        scratch.work(),
        record.platform.clone(),
        StepCommand::Exec(argv),
    );
    spec.scratch_parent = Some(store.layout().tmp_dir());
    spec.env = record
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    spec.user = Some(record.user.clone()).filter(|user| !user.is_empty());
    spec.cwd = if record.cwd.is_empty() {
        "/".to_owned()
    } else {
        record.cwd.clone()
    };
    spec.stdio = stdio;
    add_term(&mut spec);
    let outcome = sandbox::run(&spec, on_output)?;
    Ok(Ran { outcome, scratch })
}

/// The exit status `docker run` gives for an outcome: the code, or 128 + the signal.
pub fn exit_code(outcome: StepOutcome) -> i32 {
    match outcome {
        StepOutcome::Exited { code } => code,
        StepOutcome::Signaled { signal } => 128 + signal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn config() -> Config {
        ConfigBuilder::default()
            .entrypoint(vec!["/entry".to_owned(), "-x".to_owned()])
            .cmd(vec!["default".to_owned()])
            .env(vec!["PATH=/bin".to_owned(), "A=1".to_owned()])
            .user("nobody".to_owned())
            .working_dir("/srv".to_owned())
            .build()
            .unwrap()
    }

    #[test]
    fn the_image_config_is_used_as_is() {
        let got = process(Some(&config()), &RunOptions::default()).unwrap();
        assert_eq!(got.argv, ["/entry", "-x", "default"]);
        assert_eq!(got.env, ["PATH=/bin", "A=1"]);
        assert_eq!(got.user.as_deref(), Some("nobody"));
        assert_eq!(got.cwd, "/srv");
    }

    #[test]
    fn command_replaces_cmd_and_entrypoint_clears_it() {
        let options = RunOptions {
            command: vec!["x".into(), "y".into()],
            ..RunOptions::default()
        };
        assert_eq!(
            process(Some(&config()), &options).unwrap().argv,
            ["/entry", "-x", "x", "y"]
        );
        let options = RunOptions {
            entrypoint: Some("/bin/echo".into()),
            ..RunOptions::default()
        };
        assert_eq!(
            process(Some(&config()), &options).unwrap().argv,
            ["/bin/echo"]
        );
        let options = RunOptions {
            entrypoint: Some(String::new()),
            command: vec!["ls".into()],
            ..RunOptions::default()
        };
        assert_eq!(process(Some(&config()), &options).unwrap().argv, ["ls"]);
        let options = RunOptions {
            entrypoint: Some(String::new()),
            ..RunOptions::default()
        };
        assert!(matches!(
            process(Some(&config()), &options),
            Err(RunError::NoCommand)
        ));
        assert!(matches!(
            process(None, &RunOptions::default()),
            Err(RunError::NoCommand)
        ));
    }

    #[test]
    fn env_user_and_workdir_are_overridden() {
        let options = RunOptions {
            command: vec!["sh".into()],
            env: vec!["A=2".into(), "B=3".into()],
            user: Some("1000:1000".into()),
            workdir: Some("/tmp".into()),
            ..RunOptions::default()
        };
        let got = process(Some(&config()), &options).unwrap();
        assert_eq!(got.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(got.user.as_deref(), Some("1000:1000"));
        assert_eq!(got.cwd, "/tmp");
        let got = process(None, &options).unwrap();
        assert_eq!(got.env, ["A=2", "B=3"]);
    }

    #[test]
    fn signals_exit_like_docker() {
        assert_eq!(exit_code(StepOutcome::Exited { code: 7 }), 7);
        assert_eq!(exit_code(StepOutcome::Signaled { signal: 9 }), 137);
    }

    #[test]
    fn scratch_is_removed_unless_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(tmp.path()).unwrap();
        let upper = scratch.upper();
        assert!(upper.is_dir() && scratch.work().is_dir());
        drop(scratch);
        assert!(!upper.exists());
        let mut scratch = Scratch::new(tmp.path()).unwrap();
        let kept = scratch.keep();
        drop(scratch);
        assert!(kept.is_dir());
    }
}

//! `xbuild pull`, `push`, `login`, `logout` and `manifest inspect`: arguments and the glue
//! to [`crate::registry`] (`imagetools` is in [`super::imagetools`]).

use std::io::Read as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output;
use super::progress::ProgressMode;
use crate::error::{ExitKind, Failure, ResultExt as _};
use crate::progress::SharedSink;
use crate::registry::auth::StoredIn;
use crate::registry::{
    Credentials, ImageRef, PlatformChoice, PushOptions, Registry, RegistryOptions, Secret,
    SinkProgress, pull, push, tools,
};
use crate::store::{self, Store};

/// Options shared by the commands that talk to a registry.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryFlags {
    /// Allow plain HTTP to this registry (`host[:port]`), repeatable. Loopback registries
    /// are always allowed.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// The registry options, with notes (credentials sent to a token service on another
    /// host) shown on `notes`.
    pub(crate) fn options(&self, notes: SharedSink) -> Arc<RegistryOptions> {
        let mut options = RegistryOptions::from_env(&store::default_root()).showing_notes(notes);
        options
            .insecure_registries
            .extend(self.insecure_registries.iter().cloned());
        Arc::new(options)
    }
}

/// Where the notes of a command without `--progress` go: `# note` lines on stderr.
pub(crate) fn plain_notes() -> SharedSink {
    Arc::new(super::progress::Plain::default())
}

/// `xbuild pull [--platform P | --all-platforms] REF`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull (`name[:tag][@digest]`).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Platform to pull from a multi-platform image (default: the host's).
    #[arg(long, value_name = "PLATFORM", conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image.
    #[arg(long)]
    pub all_platforms: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryFlags,
}

/// `xbuild push REF`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image in the store to push to its registry (`name[:tag]`).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryFlags,
}

/// `xbuild login [-u USER] [--password-stdin] [REGISTRY]`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (`host[:port]`; default Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
    /// User name.
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Password (insecure: it shows in the process list and shell history; use
    /// `--password-stdin`).
    #[arg(short = 'p', long = "password", conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub flags: RegistryFlags,
}

/// `xbuild logout [REGISTRY]`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (`host[:port]`; default Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
}

/// `xbuild manifest ...`.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ManifestCommand,
}

/// The `manifest` subcommands.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Print an image's manifest or index (each platform's digest, size and platform), as
    /// `docker manifest inspect`.
    Inspect {
        /// Image (`name[:tag][@digest]`).
        #[arg(value_name = "REF")]
        reference: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        registry: RegistryFlags,
    },
}

pub(crate) fn parse_reference(input: &str) -> anyhow::Result<ImageRef> {
    Ok(ImageRef::parse(input).exit_kind(ExitKind::BadInput)?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn open_store() -> anyhow::Result<Store> {
    let root = store::default_root();
    Store::open(&root).with_context(|| format!("opening the store {}", root.display()))
}

impl PullArgs {
    /// What to pull: every platform (`--all-platforms`), the best match for `--platform`
    /// ([`super::values::platform_arg`]), else the host's, preferred.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn choice(&self) -> anyhow::Result<PlatformChoice> {
        Ok(if self.all_platforms {
            PlatformChoice::All
        } else {
            match &self.platform {
                Some(platform) => PlatformChoice::One(super::values::platform_arg(platform)?),
                None => PlatformChoice::Prefer(crate::platform::host()),
            }
        })
    }

    /// Pulls the image into the store and prints its digests.
    ///
    /// # Errors
    /// Bad reference or platform (exit 2), registry or store failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let reference = parse_reference(&self.reference)?;
        let choice = self.choice()?;
        let store = open_store()?;
        let sink: SharedSink = Arc::from(super::progress::sink(self.progress));
        let options = self.registry.options(Arc::clone(&sink));
        let progress = Arc::new(SinkProgress::per_blob(sink, 1));
        let runtime = runtime()?;
        let pulled = runtime.block_on(pull::pull_reference(
            Arc::clone(&options),
            store.layout(),
            &reference,
            &choice,
            progress,
        ))?;
        output::stderr(format_args!(
            "pulled {reference}: {} blobs fetched, {} already in the store",
            pulled.blobs_fetched, pulled.blobs_present
        ));
        // The image's referrers (attestations) come with it; the image is complete without
        // them, so a failure here is a warning.
        let mut subjects = vec![pulled.descriptor.digest().clone()];
        subjects.extend(
            pulled
                .images
                .iter()
                .map(|image| image.manifest.digest().clone()),
        );
        subjects.dedup();
        match runtime.block_on(pull_referrers(options, &store, &reference, &subjects)) {
            Ok(0) => {}
            Ok(count) => output::stderr(format_args!(
                "pulled {count} referrers (attestations) of {reference}"
            )),
            Err(error) => output::warning(format_args!(
                "{reference}: its referrers (attestations) were not pulled: {error:#}"
            )),
        }
        output::stdout(format_args!("{}@{}", reference, pulled.descriptor.digest()));
        for image in &pulled.images {
            let platform = image
                .platform
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), ToString::to_string);
            output::stdout(format_args!("{platform} {}", image.manifest.digest()));
        }
        Ok(())
    }
}

impl PushArgs {
    /// Pushes the store's image to its registry and prints the digest.
    ///
    /// # Errors
    /// Bad reference (exit 2), image not in the store, registry failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let reference = parse_reference(&self.reference)?;
        let store = open_store()?;
        let sink: SharedSink = Arc::from(super::progress::sink(self.progress));
        let options = self.registry.options(Arc::clone(&sink));
        let progress = Arc::new(SinkProgress::per_blob(sink, 1));
        let pushed = runtime()?.block_on(push::push_reference(
            options,
            store.layout(),
            &reference.store_name(),
            &reference,
            &PushOptions::default(),
            progress,
        ))?;
        output::stderr(format_args!(
            "pushed {}: {} blobs uploaded, {} mounted, {} already there",
            reference, pushed.uploaded, pushed.mounted, pushed.existing
        ));
        if pushed.referrers > 0 {
            output::stderr(format_args!(
                "pushed {} referrers (attestations) of {reference}",
                pushed.referrers
            ));
        }
        output::stdout(format_args!("{reference}@{}", pushed.digest));
        Ok(())
    }
}

/// Fetches the referrers of `subjects` and lists them in the store; returns how many.
async fn pull_referrers(
    options: Arc<RegistryOptions>,
    store: &Store,
    reference: &ImageRef,
    subjects: &[crate::oci::Digest],
) -> anyhow::Result<usize> {
    let registry = Registry::connect(reference.registry(), options).await?;
    let fetched = crate::registry::referrers::fetch_referrers(
        &registry,
        store.layout(),
        reference.repository(),
        subjects,
    )
    .await?;
    for (subject, referrer) in &fetched {
        store.add_referrer(subject, referrer)?;
    }
    Ok(fetched.len())
}

/// `https://host:5000/v2/` → `host:5000`, as Docker accepts either.
fn registry_name(input: &str) -> String {
    let bare = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"))
        .unwrap_or(input);
    let host = bare.split('/').next().unwrap_or(bare);
    if host == "index.docker.io" || host == "registry-1.docker.io" {
        "docker.io".to_owned()
    } else {
        host.to_owned()
    }
}

impl LoginArgs {
    /// Checks the credentials against the registry, then stores them.
    ///
    /// # Errors
    /// Missing user or password (exit 2), wrong credentials or unreachable registry (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let registry = registry_name(&self.registry);
        let Some(username) = self.username.filter(|user| !user.is_empty()) else {
            return Err(Failure::bad_input(
                "a user name is needed: -u USER (interactive login is not supported yet)",
            )
            .into());
        };
        let password = if self.password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from standard input")?;
            // As docker: drop the trailing newline of `echo $PASSWORD |`.
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else if let Some(password) = self.password {
            output::warning(
                "using --password on the command line is insecure; use --password-stdin",
            );
            password
        } else {
            return Err(Failure::bad_input(
                "a password is needed: --password-stdin (interactive login is not supported yet)",
            )
            .into());
        };
        if password.is_empty() {
            return Err(Failure::bad_input("the password is empty").into());
        }
        let credentials = Credentials {
            username,
            secret: Secret::new(password),
        };
        let options = self.flags.options(plain_notes());
        let config = options.docker_config.clone();
        runtime()?
            .block_on(async {
                let client =
                    Registry::connect_with(&registry, options, Some(credentials.clone())).await?;
                client.check_login().await
            })
            .with_context(|| format!("logging in to {registry}"))?;
        match config
            .store(&registry, &credentials)
            .with_context(|| format!("storing the credentials for {registry}"))?
        {
            StoredIn::Helper(helper) => {
                output::stderr(format_args!(
                    "credentials stored in docker-credential-{helper}"
                ));
            }
            StoredIn::ConfigFile(path) => output::warning(format_args!(
                "your password is stored unencrypted (only base64-encoded) in {}; configure a credential helper (credsStore) to keep it safe",
                path.display()
            )),
        }
        output::stdout("Login Succeeded");
        Ok(())
    }
}

impl LogoutArgs {
    /// Removes the stored credentials.
    ///
    /// # Errors
    /// The helper or config file fails.
    pub fn run(self) -> anyhow::Result<()> {
        let registry = registry_name(&self.registry);
        let config = crate::registry::DockerConfig::from_env();
        let erased = config
            .erase(&registry)
            .with_context(|| format!("removing the credentials for {registry}"))?;
        if erased {
            output::stdout(format_args!("Removing login credentials for {registry}"));
        } else {
            output::stderr(format_args!("Not logged in to {registry}"));
        }
        Ok(())
    }
}

impl ManifestArgs {
    /// Runs `inspect`.
    ///
    /// # Errors
    /// Bad reference (exit 2), registry failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            ManifestCommand::Inspect {
                reference,
                registry,
            } => {
                let reference = parse_reference(&reference)?;
                let manifest = runtime()?
                    .block_on(tools::inspect(registry.options(plain_notes()), &reference))?;
                let value: serde_json::Value = serde_json::from_slice(&manifest.bytes)
                    .with_context(|| format!("{reference}: the manifest is not JSON"))?;
                output::stdout(
                    serde_json::to_string_pretty(&value).expect("a JSON value serialises"),
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_accept_urls() {
        assert_eq!(
            registry_name("https://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_name("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_name("ghcr.io"), "ghcr.io");
    }
}

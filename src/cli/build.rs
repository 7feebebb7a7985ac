//! `xbuild build` (and `xbuild [OPTIONS] PATH`): the options users know from
//! `docker buildx build`, turned into a [`BuildRequest`] for [`pipeline::build`]; what it
//! did, printed.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::output;
use super::progress::ProgressMode;
use crate::attest::options::{Attestations, ProvenanceOptions};
use crate::attest::provenance::{Mode as ProvenanceMode, SlsaVersion};
use crate::check::Report;
use crate::error::{ExitKind, Failure, ResultExt};
use crate::executor::{BuildOptions, BuildReport, CheckArch};
use crate::export::{self, Output};
use crate::layer::Compression;
use crate::nodes::dispatch::Fallback;
use crate::pipeline::{self, BuildError, BuildRequest};
use crate::platform::Platform;
use crate::store::Store;

/// `--check-arch`: what to do about ELF files added for another architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckArchArg {
    /// Print a warning naming the file and the instruction that added it (the default).
    Warn,
    /// Fail the build.
    Error,
    /// Do not look.
    Off,
}

impl From<CheckArchArg> for CheckArch {
    fn from(value: CheckArchArg) -> Self {
        match value {
            CheckArchArg::Warn => Self::Warn,
            CheckArchArg::Error => Self::Error,
            CheckArchArg::Off => Self::Off,
        }
    }
}

/// `--fallback`: what to do when a build node does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FallbackArg {
    /// Fail the build before any work (exit 3).
    Fail,
    /// Build the node's platforms here, under emulation where needed.
    Emulate,
}

impl From<FallbackArg> for Fallback {
    fn from(value: FallbackArg) -> Self {
        match value {
            FallbackArg::Fail => Self::Fail,
            FallbackArg::Emulate => Self::Emulate,
        }
    }
}

/// `xbuild build`: the options users know from `docker buildx build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or a URL (a git repository `https://host/repo.git#ref:dir`,
    /// `git@host:repo`, `git://...`; an `http(s)://` tarball or lone Dockerfile), or `-` (a
    /// tarball or a lone Dockerfile on stdin).
    #[arg(value_name = "PATH | URL | -")]
    pub context: PathBuf,
    /// Dockerfile (default: PATH/Dockerfile; with a URL context, a path inside it; `-`: read
    /// from stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Target platforms, comma separated or repeated (default: the host's).
    #[arg(long, value_delimiter = ',', value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Name and tag of the result (`name:tag`), repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// An additional build context, repeatable: NAME (a stage or an image name in `FROM`,
    /// `COPY --from`, `RUN --mount from=`) reads VALUE instead: a directory (after its own
    /// `.dockerignore`), `docker-image://REF[@sha256:...]` or
    /// `oci-layout://PATH[:TAG][@sha256:...]`.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache (results are still recorded).
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for the steps of these stages (comma separated or repeated;
    /// results are still recorded, stages that read them see the new results).
    #[arg(long = "no-cache-filter", value_delimiter = ',', value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Always look up base images in their registry.
    #[arg(long)]
    pub pull: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the digest of the result on stdout.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Network for RUN steps: `default` (a namespace of its own with outbound access),
    /// `none`, or `host` (needs `--allow network.host`).
    #[arg(long, default_value = "default")]
    pub network: String,
    /// The most processes and threads a RUN step may have at once (default 4096, applied
    /// where the host has a cgroup pids controller; `-1`: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i32>,
    /// A secret for `RUN --mount=type=secret` (`id=ID,src=FILE` or `id=ID,env=VAR`).
    #[arg(long, value_name = "SPEC")]
    pub secret: Vec<String>,
    /// An ssh agent or keys for `RUN --mount=type=ssh` (`default`, `ID`, or
    /// `ID=SOCKET|KEY[,KEY]`; `default` and a bare ID forward `$SSH_AUTH_SOCK`).
    #[arg(long, value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Extra privileges (`network.host`, `security.insecure`).
    #[arg(long, value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Layer compression: gzip (default), zstd or uncompressed (as `-o ...,compression=`).
    #[arg(long)]
    pub compression: Option<String>,
    /// ELF files added for another architecture (an amd64 binary in an arm64 image): warn,
    /// fail the build (error), or do not look (off).
    #[arg(long, value_enum, default_value_t = CheckArchArg::Warn)]
    pub check_arch: CheckArchArg,
    /// Push the result to the registry of each tag.
    #[arg(long)]
    pub push: bool,
    /// Outputs (`type=oci|docker|local|tar|registry|image|containerd[,KEY=VALUE...]`).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub output: Vec<String>,
    /// Also load the result into a Docker engine.
    #[arg(long)]
    pub load: bool,
    /// Write the digests of the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write the digest of the result to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// The builder whose nodes build their platforms (default: the one `xbuild builder
    /// use` chose; `default` builds everything here).
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
    /// When a node does not answer: fail before any work, or build its platforms here.
    #[arg(long, value_enum, default_value_t = FallbackArg::Fail)]
    pub fallback: FallbackArg,
    /// Export the build cache (`type=registry,ref=REF[,mode=min|max]`,
    /// `type=local,dest=DIR[,mode=min|max]`, `type=inline`: in the image config), repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache (`type=registry,ref=REF`, `type=local,src=DIR`, or `REF`),
    /// repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Attestation to attach to each platform's image as a referrer:
    /// `type=sbom[,generator=builtin]`, `type=provenance[,mode=min|max][,version=v1|v0.2]`
    /// (`disabled=true` turns one off), repeatable.
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,
    /// Shorthand for `--attest type=sbom`: `true`, `false`, or its options.
    #[arg(long, value_name = "VALUE")]
    pub sbom: Option<String>,
    /// Shorthand for `--attest type=provenance`: `true`, `false`, or its options
    /// (`mode=max`). Default: `mode=min` when pushing, none otherwise.
    #[arg(long, value_name = "VALUE")]
    pub provenance: Option<String>,
    /// Set a label in every image's config (`KEY=VALUE`, after the Dockerfile's `LABEL`s),
    /// repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add an annotation (`[TYPE[PLATFORMS]:]KEY=VALUE`; TYPE `manifest` (default), `index`,
    /// `manifest-descriptor` or `index-descriptor`; PLATFORMS `[linux/arm64,...]`),
    /// repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Add a line to each RUN step's /etc/hosts (`HOST:IP` or `HOST=IP`), repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Size of each RUN step's /dev/shm (`BYTES`, with `k`, `m` or `g` as Docker; default
    /// 64m).
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// A resource limit of each RUN step (`TYPE=SOFT[:HARD]`: nofile, nproc, core, ... as
    /// docker's --ulimit), repeatable.
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Instead of building: `check` (the build checks), `outline` (the target's build
    /// arguments, secrets and ssh forwards), `targets` (the stages), or `build` (the
    /// default); `,format=json` for BuildKit's JSON, `,ignorestatus=true` to exit 0.
    #[arg(long = "call", value_name = "METHOD[,format=json]")]
    pub call: Option<String>,
    /// Shorthand for `--call=check`.
    #[arg(long, conflicts_with = "call")]
    pub check: bool,
}

impl BuildArgs {
    /// What `--call` reads: the Dockerfile's arguments, and which flags need a built result.
    fn call_inputs(&self) -> super::call::CallInputs {
        let given = [
            (!self.tags.is_empty(), "-t"),
            (self.push, "--push"),
            (!self.output.is_empty(), "-o"),
            (self.load, "--load"),
            (self.metadata_file.is_some(), "--metadata-file"),
            (self.iidfile.is_some(), "--iidfile"),
            (!self.cache_to.is_empty(), "--cache-to"),
            (!self.attest.is_empty(), "--attest"),
            (self.sbom.is_some(), "--sbom"),
            (self.provenance.is_some(), "--provenance"),
        ];
        super::call::CallInputs {
            context: self.context.clone(),
            file: self.file.clone(),
            build_args: self.build_args.clone(),
            platform: self.platform.clone(),
            target: self.target.clone(),
            result_flags: given
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, flag)| *flag)
                .collect(),
        }
    }

    /// The target platforms: `--platform` ([`super::values::platform_args`]), else the host's.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn targets(&self) -> anyhow::Result<Vec<Platform>> {
        super::values::platform_args(&self.platform)
    }

    /// Runs the build.
    ///
    /// # Errors
    /// Bad arguments or Dockerfile (exit 2), a host that cannot run a platform (exit 3), a
    /// failed step or store failure (exit 1).
    pub fn run(mut self) -> anyhow::Result<()> {
        // `-f -` or a context of `-`: read now, kept until the build is done.
        let _stdin = super::stdin::take(&mut self.context, &mut self.file)?;
        let call = match (&self.call, self.check) {
            (Some(value), _) => super::call::Call::parse(value)?,
            (None, true) => super::call::Call::parse("check")?,
            (None, false) => super::call::Call::parse("build")?,
        };
        if call.method != super::call::Method::Build {
            return super::call::run(&self.call_inputs(), call);
        }
        self.add_output_names();
        let outputs = self.outputs()?;
        let attestations = self.attestations(&outputs)?;
        let targets = self.targets()?;
        self.containerd_preflight(&outputs, &targets)?;
        let (network_none, network_host) = match self.network.as_str() {
            "default" => (false, false),
            "none" => (true, false),
            "host" => (false, true),
            other => {
                return Err(Failure::bad_input(format_args!(
                    "--network={other}: use default, host or none"
                ))
                .into());
            }
        };
        let mut allow_insecure = false;
        let mut allow_network_host = false;
        for entitlement in self.allow.iter().flat_map(|value| value.split(',')) {
            match entitlement.trim() {
                "security.insecure" => allow_insecure = true,
                "network.host" => allow_network_host = true,
                other => return Err(super::unsupported(format_args!("--allow {other}"))),
            }
        }
        if network_host && !allow_network_host {
            return Err(Failure::bad_input("entitlement network.host is not allowed: --network=host needs --allow network.host").into());
        }
        let pids_limit_required = self.pids_limit.is_some_and(|limit| limit != -1);
        let pids_limit = match self.pids_limit {
            None => Some(crate::sandbox::DEFAULT_PIDS_LIMIT),
            Some(-1) => None,
            Some(limit) if limit > 0 => Some(u64::from(limit.unsigned_abs())),
            Some(other) => {
                return Err(Failure::bad_input(format_args!(
                    "--pids-limit={other}: use a positive number, or -1 for no limit"
                ))
                .into());
            }
        };
        let specs = self.output_specs()?;
        let sets = self.layer_sets(&specs, &self.planned_outputs()?)?;
        let (compression, force_compression) = sets.compressions[0];
        let build_args = super::debug::parse_build_args(&self.build_args);
        let annotation_inputs = self.annotation_inputs(&specs)?;
        // `--build-arg BUILDKIT_MULTI_PLATFORM=1` makes one platform an index, as --platform;
        // so does an index annotation: buildx's result is an index then (its default
        // provenance makes one), and `--annotation index:k=v --push` is its documented line.
        let explicit_platforms = !self.platform.is_empty()
            || build_arg_flag(
                &build_args,
                crate::dockerfile::resolve::MULTI_PLATFORM_BUILD_ARG,
            )?
            || annotation_inputs.iter().any(|(_, annotation)| {
                matches!(
                    annotation.kind,
                    Some(
                        crate::oci::annotation::AnnotationKind::Index
                            | crate::oci::annotation::AnnotationKind::IndexDescriptor
                    )
                )
            });
        let source_date_epoch = match build_args.get("SOURCE_DATE_EPOCH") {
            // BuildKit's `context`: the time of a URL context, set when it is fetched
            // (pipeline); a local context has none.
            Some(value) if value == "context" => None,
            Some(value) => Some(value.trim().parse::<i64>().map_err(|_| {
                Failure::bad_input(format_args!("SOURCE_DATE_EPOCH={value} is not a number"))
            })?),
            None => crate::env::source_date_epoch(),
        };
        if source_date_epoch.is_none() {
            if let Some((text, _)) = self
                .output
                .iter()
                .zip(&specs)
                .find(|(_, spec)| spec.rewrite_timestamp)
            {
                // BuildKit's warning; the layers keep their files' times. An epoch from the
                // Dockerfile's own `ARG SOURCE_DATE_EPOCH=` is only known to the build.
                output::warning(format_args!(
                    "-o {text}: rewrite-timestamp is specified, but no source-date-epoch was \
                     found (set SOURCE_DATE_EPOCH, or --build-arg SOURCE_DATE_EPOCH=...): file \
                     times in the layers are kept"
                ));
            }
        }
        for tag in &self.tags {
            crate::registry::ImageRef::parse(tag)
                .map_err(|error| Failure::bad_input(format_args!("-t {tag}: {error}")))?;
        }
        let mode = if self.quiet {
            ProgressMode::Quiet
        } else {
            self.progress
        };
        // A URL context (a git repository, a tarball, a lone Dockerfile) is fetched by the
        // pipeline; `-f` is then a path inside it.
        let context_url = self
            .context
            .to_str()
            .filter(|argument| crate::remote::is_remote_context(argument))
            .map(str::to_owned);
        let dockerfile = match (&self.file, &context_url) {
            (Some(file), _) => file.clone(),
            (None, Some(_)) => PathBuf::new(),
            // `Dockerfile`, else a lower-case `dockerfile`, as BuildKit finds it.
            (None, None) => crate::context::locate_dockerfile(&self.context.join("Dockerfile")),
        };
        let secrets = parse_secrets(&self.secret)?;
        let named_contexts = parse_build_contexts(&self.build_contexts)?;
        let ssh = parse_ssh(&self.ssh)?;
        let labels = parse_labels(&self.labels)?;
        let add_hosts = self
            .add_hosts
            .iter()
            .map(|value| {
                crate::sandbox::HostEntry::parse(value).map_err(|reason| {
                    Failure::bad_input(format_args!("--add-host {value}: {reason}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shm_size = self
            .shm_size
            .as_deref()
            .map(|value| {
                parse_bytes(value).ok_or_else(|| {
                    Failure::bad_input(format_args!(
                        "--shm-size {value}: expected a positive size in bytes (units k, m, g)"
                    ))
                })
            })
            .transpose()?;
        let ulimits = self
            .ulimits
            .iter()
            .map(|value| {
                crate::sandbox::Ulimit::parse(value).map_err(|reason| {
                    Failure::bad_input(format_args!("--ulimit {value}: {reason}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let annotations = parse_annotations(&annotation_inputs, &outputs, &self.tags)?;
        let builders = crate::nodes::Builders::load(&crate::nodes::config_path())?;
        let builder = builders
            .selected(self.builder.as_deref())
            .exit_kind(ExitKind::BadInput)?
            .cloned();
        let cache = self.cache_options(&outputs, &build_args)?;
        let request = BuildRequest {
            build: BuildOptions {
                context: self.context.clone(),
                dockerfile,
                targets,
                explicit_platforms,
                multi_platform: false,
                build_args,
                target_stage: self.target.clone(),
                no_cache: self.no_cache,
                no_cache_filter: self.no_cache_filter.clone(),
                pull: self.pull,
                network_none,
                allow_insecure,
                network_host,
                allow_network_host,
                pids_limit,
                pids_limit_required,
                compression,
                eager_blobs: exports_layer_blobs(&outputs),
                force_compression,
                more_compressions: sets.compressions[1..].to_vec(),
                source_date_epoch,
                secrets,
                sink: Arc::from(super::progress::sink(mode)),
                check_arch: self.check_arch.into(),
                cache,
                labels,
                annotations,
                add_hosts,
                shm_size,
                ulimits,
                ssh,
                named_contexts,
            },
            tags: self.tags.clone(),
            outputs,
            output_sets: sets.output_sets.clone(),
            builder,
            fallback: self.fallback.into(),
            checks: true,
            attestations,
            context_url,
        };
        // `xbuild check`'s findings are printed at the end, after a failure too; with
        // `# check=error=true` they are the reason the build stopped (printed even with -q).
        let print_checks = |checks: Option<&Report>, refused: bool| {
            if let Some(report) = checks.filter(|_| refused || mode != ProgressMode::Quiet) {
                super::check::print_build_warnings(report);
            }
        };
        let result = match pipeline::build(&request) {
            Ok(result) => result,
            Err(failure) => {
                if let Some(report) = &failure.report {
                    print_report_warnings(report);
                }
                let refused = matches!(failure.error, BuildError::ChecksFailed { .. });
                print_checks(failure.checks.as_deref(), refused);
                return Err(Failure::new(failure.exit_kind(), failure).into());
            }
        };
        let report = &result.report;
        print_report_warnings(report);
        // With several sets (outputs of different compressions), buildx's metadata, image
        // id and printed digest are the last image output's: BuildKit merges its
        // exporters' responses in order, a later one's keys replacing an earlier one's.
        let last = request
            .outputs
            .iter()
            .zip(&request.output_sets)
            .rfind(|(output, _)| !matches!(output, Output::Local { .. } | Output::Tar { .. }))
            .map_or(0, |(_, set)| *set);
        let built = report.set(last).unwrap_or(&report.built);
        if let Some(path) = &self.metadata_file {
            let store = Store::open_default().exit_kind(ExitKind::Failed)?;
            export::write_metadata_file(path, &store, built, &result.exported)?;
        }
        let spec_sets: Vec<usize> = self
            .planned_outputs()?
            .iter()
            .zip(&request.output_sets)
            .filter_map(|((_, from), set)| from.map(|_| *set))
            .collect();
        let extra_names = self.name_extra(&specs, &spec_sets, report)?;
        if let Some(path) = &self.iidfile {
            export::write_iidfile(path, built)?;
        }
        let digest = built.result().digest().to_string();
        if self.quiet {
            output::stdout(&digest);
            return Ok(());
        }
        for (platform, time) in &report.emulated {
            output::stderr(format_args!(
                "{platform}: {:.1}s under emulation",
                time.as_secs_f64()
            ));
        }
        output::stderr(format_args!(
            "{} RUN steps run, {} steps cached",
            report.steps_run, report.cached
        ));
        for written in &result.exported.written {
            output::stderr(written);
        }
        for note in &result.exported.notes {
            output::stderr(note);
        }
        for name in &extra_names {
            output::stderr(format_args!("named {name}"));
        }
        print_checks(result.checks.as_ref(), false);
        output::stdout(&digest);
        Ok(())
    }

    /// `-o type=containerd`: a name, `ctr` and containerd answering, checked before any
    /// work (exit 2 or 3, naming the socket).
    fn containerd_preflight(&self, outputs: &[Output], targets: &[Platform]) -> anyhow::Result<()> {
        let built = if targets.is_empty() {
            vec![crate::platform::host()]
        } else {
            targets.to_vec()
        };
        for output in outputs {
            if let Output::Containerd { unpack, .. } = output {
                export::containerd::preflight(self.tags.len(), *unpack, &built)
                    .map_err(|error| Failure::new(error.exit_kind(), error))?;
            }
        }
        Ok(())
    }

    /// `-o type=registry,name=REG/app` names what is pushed, as `-t` does.
    fn add_output_names(&mut self) {
        for spec in &self.output {
            for name in Output::names(spec) {
                if !self.tags.contains(&name) {
                    self.tags.push(name);
                }
            }
        }
    }

    /// `--attest`, `--sbom` and `--provenance`, in that order (a later one of a type replaces
    /// an earlier), with buildx's default: `mode=min` provenance when pushing.
    fn attestations(&self, outputs: &[Output]) -> anyhow::Result<Attestations> {
        let mut attestations = Attestations::default();
        let mut provenance_set = false;
        let shorthand = |kind: &str, value: &str| -> String {
            match value.trim() {
                "true" | "1" | "" => format!("type={kind}"),
                "false" | "0" => format!("type={kind},disabled=true"),
                options => format!("type={kind},{options}"),
            }
        };
        let specs = self
            .attest
            .iter()
            .map(|spec| (format!("--attest {spec}"), spec.clone()))
            .chain(
                self.sbom
                    .iter()
                    .map(|value| (format!("--sbom={value}"), shorthand("sbom", value))),
            )
            .chain(self.provenance.iter().map(|value| {
                (
                    format!("--provenance={value}"),
                    shorthand("provenance", value),
                )
            }));
        for (flag, spec) in specs {
            match parse_attest(&flag, &spec)? {
                AttestSpec::Sbom { on, scan_stage } => {
                    attestations.sbom = on;
                    attestations.scan_stage = on && scan_stage;
                }
                AttestSpec::Provenance(provenance) => {
                    provenance_set = true;
                    attestations.provenance = provenance;
                }
            }
        }
        let pushing = outputs
            .iter()
            .any(|output| matches!(output, Output::Registry { .. }));
        // One stored result for every output: the outputs that name a layout agree.
        let mut layouts = self
            .output
            .iter()
            .zip(self.output_specs()?)
            .filter_map(|(text, spec)| Some((text, spec.attestation_layout?)));
        if let Some((first_text, first)) = layouts.next() {
            if let Some((other_text, _)) = layouts.find(|(_, layout)| *layout != first) {
                return Err(Failure::bad_input(format_args!(
                    "-o {first_text} and -o {other_text} ask for different attestation layouts: \
                     a build stores its attestations one way for all its outputs"
                ))
                .into());
            }
            attestations.layout = first;
        }
        Ok(attestations.with_default(pushing, provenance_set))
    }

    /// `--cache-from` and `--cache-to`; imported layers stay remote when every output pushes.
    fn cache_options(
        &self,
        outputs: &[Output],
        build_args: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<crate::cache::CacheOptions> {
        // Exit 2 for both bad and not-yet-supported specs (the message says which).
        let spec_error = |error: crate::cache::CacheSpecError| -> anyhow::Error {
            Failure::bad_input(error).into()
        };
        let (to, inline) =
            crate::cache::CacheOptions::parse_to(&self.cache_to).map_err(spec_error)?;
        // `--build-arg BUILDKIT_INLINE_CACHE=1` is `--cache-to type=inline`, as in BuildKit.
        let inline = inline
            || build_arg_flag(
                build_args,
                crate::dockerfile::resolve::INLINE_CACHE_BUILD_ARG,
            )?;
        if inline
            && !outputs.is_empty()
            && outputs
                .iter()
                .all(|output| matches!(output, Output::Local { .. } | Output::Tar { .. }))
        {
            return Err(Failure::bad_input(
                "--cache-to type=inline: the inline cache goes into the image config, and no \
                 output writes an image (-o type=local/tar write files)",
            )
            .into());
        }
        Ok(crate::cache::CacheOptions {
            from: self
                .cache_from
                .iter()
                .map(|spec| crate::cache::CacheLocation::parse_from(spec).map_err(spec_error))
                .collect::<anyhow::Result<_>>()?,
            to,
            inline,
            lazy_layers: !outputs.is_empty()
                && outputs
                    .iter()
                    .all(|output| matches!(output, Output::Registry { .. })),
        })
    }

    /// Each `-o`, parsed with every key (exit 2 for a bad or unsupported one).
    fn output_specs(&self) -> anyhow::Result<Vec<export::OutputSpec>> {
        self.output
            .iter()
            .map(|spec| {
                export::OutputSpec::parse_with_push(spec, self.push)
                    .map_err(|error| Failure::new(ExitKind::BadInput, error).into())
            })
            .collect()
    }

    /// The layer compressions (algorithm and level, and whether base layers are forced to
    /// it) of the build's sets of manifests, and the set each output writes. An `-o` that
    /// writes layers (`image`, `registry`, `oci`, `docker` with `oci-mediatypes=true`,
    /// or any with `compression*` keys) and `--push` ask for their
    /// own keys, else `--compression`, else gzip at level 6 (as each BuildKit exporter);
    /// the others (`local`, `tar`, `containerd`, `--load`, the store's names beside it)
    /// write the first set. One set per distinct compression, in the order the outputs
    /// ask for them: the common case of one compression makes one. A `--cache-to` with its
    /// own compression keys gets its layers at those (see
    /// `executor::assemble::export_cache`).
    fn layer_sets(
        &self,
        specs: &[export::OutputSpec],
        planned: &[(Output, Option<usize>)],
    ) -> anyhow::Result<LayerSets> {
        let default = match &self.compression {
            Some(name) => (
                Compression::parse(name).ok_or_else(|| {
                    Failure::bad_input(format_args!(
                        "--compression={name}: use gzip, zstd or uncompressed"
                    ))
                })?,
                false,
            ),
            None => (Compression::default(), false),
        };
        let mut default_used = planned.is_empty();
        let wants: Vec<Option<(Compression, bool)>> = planned
            .iter()
            .map(|(output, from)| {
                let spec = from.and_then(|index| specs.get(index));
                if let Some(compression) = spec.and_then(|spec| spec.compression) {
                    return Some((compression, spec.is_some_and(|spec| spec.force_compression)));
                }
                let writes_layers = match output {
                    Output::Registry { .. } | Output::Oci { .. } => true,
                    Output::Store { .. } => from.is_some(),
                    Output::Docker {
                        oci_media_types, ..
                    } => *oci_media_types,
                    _ => false,
                };
                default_used |= writes_layers;
                writes_layers.then_some(default)
            })
            .collect();
        let mut compressions: Vec<(Compression, bool)> = Vec::new();
        for want in wants.iter().flatten() {
            if !compressions.contains(want) {
                compressions.push(*want);
            }
        }
        if let Some(name) = &self.compression {
            // Outputs that write layers and each name another compression.
            if !default_used && !compressions.is_empty() && !compressions.contains(&default) {
                return Err(Failure::bad_input(format_args!(
                    "--compression={name}: no output takes it (each -o that writes layers names \
                     its own compression=); drop it, or a compression= key"
                ))
                .into());
            }
        }
        if compressions.is_empty() {
            compressions.push(default);
        }
        let output_sets = wants
            .iter()
            .map(|want| {
                want.and_then(|want| compressions.iter().position(|chosen| *chosen == want))
                    .unwrap_or(0)
            })
            .collect();
        Ok(LayerSets {
            compressions,
            output_sets,
        })
    }

    /// `--annotation` values and the `annotation*` keys of each `-o`, with how each was
    /// written (for messages).
    fn annotation_inputs(
        &self,
        specs: &[export::OutputSpec],
    ) -> anyhow::Result<Vec<(String, crate::oci::annotation::Annotation)>> {
        let mut inputs = Vec::new();
        for value in &self.annotations {
            let annotations =
                crate::oci::annotation::Annotation::parse_flag(value).map_err(|error| {
                    Failure::bad_input(format_args!("--annotation {value}: {}", error.reason))
                })?;
            for annotation in annotations {
                inputs.push((format!("--annotation {value}"), annotation));
            }
        }
        for (text, spec) in self.output.iter().zip(specs) {
            for (key, annotation) in &spec.annotations {
                inputs.push((format!("-o {text} ({key})"), annotation.clone()));
            }
        }
        Ok(inputs)
    }

    /// The names `name-canonical=true` (`NAME@DIGEST` for each name) and
    /// `dangling-name-prefix=PREFIX` (`PREFIX@DIGEST` when there is no name) give the result
    /// in the store, as BuildKit's image exporter does, each `-o` its own set's
    /// (`spec_sets`: the set of each spec); returns them for the report.
    fn name_extra(
        &self,
        specs: &[export::OutputSpec],
        spec_sets: &[usize],
        report: &BuildReport,
    ) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            // Each output's own set of manifests (its layer compression).
            let set = spec_sets.get(index).copied().unwrap_or(0);
            let result = report.set(set).unwrap_or(&report.built).result();
            if spec.name_canonical {
                for tag in &self.tags {
                    if let Ok(reference) = crate::registry::ImageRef::parse(tag) {
                        if reference.digest().is_none() {
                            names.push((
                                reference.with_digest(result.digest().clone()),
                                result.clone(),
                            ));
                        }
                    }
                }
            }
            if let (Some(prefix), true) = (&spec.dangling_name_prefix, self.tags.is_empty()) {
                let text = format!("{prefix}@{}", result.digest());
                names.push((
                    crate::registry::ImageRef::parse(&text)
                        .map_err(|error| Failure::bad_input(format_args!("{text}: {error}")))?,
                    result.clone(),
                ));
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let store = Store::open_default().exit_kind(ExitKind::Failed)?;
        let mut written = Vec::new();
        for (reference, result) in names {
            let name = reference.store_name();
            store.set_ref(&name, &result).exit_kind(ExitKind::Failed)?;
            let shown = crate::store::display_ref(&name).to_string();
            if !written.contains(&shown) {
                written.push(shown);
            }
        }
        Ok(written)
    }

    /// The outputs the flags ask for: `-o` specs, `--push`, `--load`; none means the store.
    fn outputs(&self) -> anyhow::Result<Vec<Output>> {
        Ok(self
            .planned_outputs()?
            .into_iter()
            .map(|(output, _)| output)
            .collect())
    }

    /// As [`Self::outputs`], each with where it comes from: `Some(i)` the `i`-th `-o`,
    /// `None` one `--push` or `--load` adds.
    fn planned_outputs(&self) -> anyhow::Result<Vec<(Output, Option<usize>)>> {
        let mut outputs: Vec<(Output, Option<usize>)> = self
            .output_specs()?
            .into_iter()
            .enumerate()
            .map(|(index, spec)| (spec.output, Some(index)))
            .collect();
        if self.push
            && !outputs
                .iter()
                .any(|(output, _)| matches!(output, Output::Registry { .. }))
        {
            outputs.push((Output::push(false), None));
        }
        if self.tags.is_empty()
            && outputs
                .iter()
                .any(|(output, _)| matches!(output, Output::Registry { .. }))
        {
            // Checked before building, not after minutes of work.
            return Err(Failure::bad_input(
                "pushing needs a name: add -t REGISTRY/REPOSITORY[:TAG]",
            )
            .into());
        }
        if self.load
            && !outputs
                .iter()
                .any(|(output, _)| matches!(output, Output::Docker { dest: None, .. }))
        {
            outputs.push((
                Output::Docker {
                    dest: None,
                    oci_media_types: false,
                },
                None,
            ));
        }
        // `--load` alone also names the result in the local store (a push names it there
        // already), so `xbuild run TAG` works after `--load` as after a plain build.
        if self.load && outputs.len() == 1 && !self.tags.is_empty() {
            outputs.insert(0, (Output::STORE, None));
        }
        Ok(outputs)
    }
}

/// The layer compressions of a build's sets of manifests, and the set each output writes.
struct LayerSets {
    /// The build's own (set 0), then one per other compression the outputs ask for.
    compressions: Vec<(Compression, bool)>,
    /// For each output (as `BuildArgs::outputs` lists them), the index of its set.
    output_sets: Vec<usize>,
}

/// One `--attest` spec, parsed.
#[derive(Debug, PartialEq, Eq)]
enum AttestSpec {
    /// `type=sbom`: on or off, and whether it scans the stages too (`scan-stage=true`).
    Sbom {
        /// On or off.
        on: bool,
        /// `scan-stage=`.
        scan_stage: bool,
    },
    /// `type=provenance`: its options, or off.
    Provenance(Option<ProvenanceOptions>),
}

const SBOM_KEYS: &str = "type, generator, scan-stage, disabled";
const PROVENANCE_KEYS: &str = "type, mode, version, disabled";

/// `type=sbom[,generator=builtin][,disabled=BOOL]`,
/// `type=provenance[,mode=min|max][,version=v1|v0.2][,disabled=BOOL]` (`flag` is how the
/// user wrote it, for the messages). Unknown keys and values exit 2.
fn parse_attest(flag: &str, spec: &str) -> anyhow::Result<AttestSpec> {
    let bad = |message: std::fmt::Arguments<'_>| -> anyhow::Error {
        Failure::bad_input(format_args!("{flag}: {message}")).into()
    };
    let mut fields = Vec::new();
    for field in spec
        .split(',')
        .map(str::trim)
        .filter(|field| !field.is_empty())
    {
        let Some((key, value)) = field.split_once('=') else {
            return Err(bad(format_args!("expected KEY=VALUE, got {field:?}")));
        };
        fields.push((key.trim(), value.trim()));
    }
    let boolean = |key: &str, value: &str| -> anyhow::Result<bool> {
        match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(bad(format_args!("{key}={other}: use true or false"))),
        }
    };
    let kind = match fields.iter().find(|(key, _)| *key == "type") {
        Some((_, kind)) => *kind,
        None => {
            return Err(bad(format_args!(
                "no type= (use type=sbom or type=provenance)"
            )));
        }
    };
    match kind {
        "sbom" => {
            let mut on = true;
            let mut scan_stage = false;
            for (key, value) in fields {
                match key {
                    "type" => {}
                    "generator" if value == "builtin" => {}
                    "generator" => {
                        return Err(bad(format_args!(
                            "generator={value} is not supported: xbuild's SBOMs come from its \
                             own scanner (generator=builtin)"
                        )));
                    }
                    "scan-stage" => scan_stage = boolean(key, value)?,
                    "disabled" => on = !boolean(key, value)?,
                    other => {
                        return Err(bad(format_args!(
                            "unknown key {other:?} for type=sbom (known: {SBOM_KEYS})"
                        )));
                    }
                }
            }
            Ok(AttestSpec::Sbom { on, scan_stage })
        }
        "provenance" => {
            let mut options = ProvenanceOptions::default();
            let mut on = true;
            for (key, value) in fields {
                match (key, value) {
                    ("type", _) => {}
                    ("mode", "min") => options.mode = ProvenanceMode::Min,
                    ("mode", "max") => options.mode = ProvenanceMode::Max,
                    ("mode", other) => {
                        return Err(bad(format_args!("mode={other}: use min or max")));
                    }
                    ("version", "v1" | "v1.0") => options.version = SlsaVersion::V1,
                    ("version", "v0.2") => options.version = SlsaVersion::V02,
                    ("version", other) => {
                        return Err(bad(format_args!("version={other}: use v1 or v0.2")));
                    }
                    ("disabled", value) => on = !boolean(key, value)?,
                    (other, _) => {
                        return Err(bad(format_args!(
                            "unknown key {other:?} for type=provenance (known: {PROVENANCE_KEYS})"
                        )));
                    }
                }
            }
            Ok(AttestSpec::Provenance(on.then_some(options)))
        }
        other => Err(bad(format_args!(
            "unknown attestation type {other:?} (known: sbom, provenance)"
        ))),
    }
}

/// Docker's sizes (`--shm-size`): a number of bytes, optionally with `b`, `k`, `m` or `g`
/// (powers of 1024, either case); zero and overflow are `None`.
fn parse_bytes(value: &str) -> Option<u64> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|rest| !rest.is_empty() && rest.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last()? {
        (at, 'k') => (&lower[..at], 1u64 << 10),
        (at, 'm') => (&lower[..at], 1 << 20),
        (at, 'g') => (&lower[..at], 1 << 30),
        (at, 'b') => (&lower[..at], 1),
        _ => (lower, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u64>()
        .ok()?
        .checked_mul(unit)
        .filter(|bytes| *bytes > 0)
}

/// `--build-context NAME=VALUE`s, by the name BuildKit looks them up under (a later one for
/// the same name wins). Directories and layouts must exist; URLs, `target:` and
/// platform-specific names (`NAME::PLATFORM`) are refused.
fn parse_build_contexts(
    values: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, crate::executor::NamedContext>> {
    let mut contexts = std::collections::BTreeMap::new();
    for value in values {
        let bad = |reason: std::fmt::Arguments<'_>| -> anyhow::Error {
            Failure::bad_input(format_args!("--build-context {value}: {reason}")).into()
        };
        let Some((name, source)) = value.split_once('=') else {
            return Err(bad(format_args!("expected NAME=VALUE")));
        };
        if name.contains("::") {
            return Err(bad(format_args!(
                "platform-specific contexts (NAME::PLATFORM) are not supported yet"
            )));
        }
        if name == "scratch" || name == "context" {
            return Err(bad(format_args!(
                "{name} is never looked up as a context (as in BuildKit): use another name"
            )));
        }
        let key = crate::dockerfile::context_name(name).ok_or_else(|| {
            bad(format_args!(
                "invalid context name {name:?}: use a stage name or a lower-case image reference"
            ))
        })?;
        let context = crate::executor::NamedContext::parse(source)
            .map_err(|reason| bad(format_args!("{reason}")))?;
        let context = match context {
            crate::executor::NamedContext::Dir(path) => {
                crate::executor::NamedContext::Dir(std::path::absolute(&path).unwrap_or(path))
            }
            crate::executor::NamedContext::OciLayout { path, tag, digest } => {
                crate::executor::NamedContext::OciLayout {
                    path: std::path::absolute(&path).unwrap_or(path),
                    tag,
                    digest,
                }
            }
            other => other,
        };
        contexts.insert(key, context);
    }
    Ok(contexts)
}

/// `--label KEY=VALUE`s (a later one for the same key wins).
fn parse_labels(values: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for value in values {
        match value.split_once('=') {
            Some((key, label)) if !key.is_empty() => {
                labels.insert(key.to_owned(), label.to_owned());
            }
            _ => {
                return Err(Failure::bad_input(format_args!(
                    "--label {value}: expected KEY=VALUE"
                ))
                .into());
            }
        }
    }
    Ok(labels)
}

/// A boolean built-in build argument (`BUILDKIT_INLINE_CACHE`, `BUILDKIT_MULTI_PLATFORM`):
/// Go's spellings, absent is `false`; another value is refused (exit 2), as BuildKit refuses
/// it, never taken as `false`.
fn build_arg_flag(
    build_args: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> anyhow::Result<bool> {
    let Some(value) = build_args.get(name) else {
        return Ok(false);
    };
    crate::gostd::parse_bool(value.trim()).ok_or_else(|| {
        Failure::bad_input(format_args!(
            "--build-arg {name}={value}: expected true or false (1 or 0)"
        ))
        .into()
    })
}

/// `--annotation [TYPE[PLATFORMS]:]KEY=VALUE`s, each with its kind (`manifest` when none
/// was written). Refused: platforms on `index` and `index-descriptor` annotations (which
/// make the result an index), `index-descriptor` when no output has an index descriptor
/// (the store's names, `-o type=oci`).
fn parse_annotations(
    values: &[(String, crate::oci::annotation::Annotation)],
    outputs: &[Output],
    tags: &[String],
) -> anyhow::Result<Vec<crate::oci::annotation::Annotation>> {
    use crate::oci::annotation::AnnotationKind;
    let mut annotations = Vec::new();
    for (value, annotation) in values {
        let mut annotation = annotation.clone();
        let kind = *annotation.kind.get_or_insert(AnnotationKind::Manifest);
        let index_kind = matches!(
            kind,
            AnnotationKind::Index | AnnotationKind::IndexDescriptor
        );
        if index_kind && !annotation.platforms.is_empty() {
            return Err(Failure::bad_input(format_args!(
                "{value}: {kind} annotations take no platforms"
            ))
            .into());
        }
        if kind == AnnotationKind::IndexDescriptor {
            let store_named = !tags.is_empty()
                && (outputs.is_empty()
                    || outputs.iter().any(|output| {
                        matches!(output, Output::Store { .. } | Output::Registry { .. })
                    }));
            let oci = outputs
                .iter()
                .any(|output| matches!(output, Output::Oci { .. }));
            if !store_named && !oci {
                return Err(Failure::bad_input(format_args!(
                    "{value}: index-descriptor annotations go in an OCI layout's index.json: use -o type=oci, or -t NAME (the store's)"
                ))
                .into());
            }
        }
        annotations.push(annotation);
    }
    Ok(annotations)
}

/// `--ssh default|ID|ID=PATH[,PATH]`, as buildx: no path (or `default`'s) is the agent of
/// `$SSH_AUTH_SOCK`; one path that is a socket is an agent; otherwise the paths are private
/// key files, loaded into an agent started for the build.
fn parse_ssh(
    specs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, crate::executor::SshSource>> {
    use crate::executor::SshSource;
    use std::os::unix::fs::FileTypeExt as _;
    let mut sources = std::collections::BTreeMap::new();
    for spec in specs {
        let (id, paths) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        if id.is_empty() {
            return Err(Failure::bad_input(format_args!(
                "--ssh {spec}: expected default, ID or ID=PATH[,PATH]"
            ))
            .into());
        }
        let paths: Vec<std::path::PathBuf> = paths
            .split(',')
            .filter(|path| !path.is_empty())
            .map(std::path::PathBuf::from)
            .collect();
        let source = if paths.is_empty() {
            let socket = std::env::var_os(crate::env::SSH_AUTH_SOCK)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| {
                    Failure::bad_input(format_args!(
                        "--ssh {spec}: SSH_AUTH_SOCK is not set: start an ssh-agent, or give {id}=PATH to a key or an agent socket"
                    ))
                })?;
            SshSource::Socket(socket.into())
        } else {
            for path in &paths {
                std::fs::metadata(path).map_err(|error| {
                    Failure::bad_input(format_args!(
                        "--ssh {spec}: cannot read {}: {error}",
                        path.display()
                    ))
                })?;
            }
            let is_socket =
                std::fs::metadata(&paths[0]).is_ok_and(|meta| meta.file_type().is_socket());
            match paths.as_slice() {
                [only] if is_socket => SshSource::Socket(only.clone()),
                _ => SshSource::Keys(paths),
            }
        };
        sources.insert(id.to_owned(), source);
    }
    Ok(sources)
}

/// `--secret id=ID,src=FILE`, `id=ID,env=VAR` (also `source=`, `type=file|env`; a bare
/// `id=ID` reads the environment variable `ID`, as buildx).
fn parse_secrets(specs: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut secrets = std::collections::BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", value)) => id = Some(value.to_owned()),
                Some(("src" | "source", value)) => src = Some(value.to_owned()),
                Some(("env", value)) => env = Some(value.to_owned()),
                Some(("type", value)) => kind = Some(value.to_owned()),
                _ => {
                    return Err(Failure::bad_input(format_args!(
                        "--secret {spec}: expected id=ID,src=FILE or id=ID,env=VAR"
                    ))
                    .into());
                }
            }
        }
        let id = id.ok_or_else(|| Failure::bad_input(format_args!("--secret {spec}: no id=")))?;
        let value = match (src, env, kind.as_deref()) {
            (Some(path), None, None | Some("file")) => std::fs::read(&path).map_err(|error| {
                Failure::bad_input(format_args!("--secret {id}: cannot read {path}: {error}"))
            })?,
            (None, env, None | Some("env")) => {
                let name = env.unwrap_or_else(|| id.clone());
                std::env::var(&name)
                    .map_err(|_| {
                        Failure::bad_input(format_args!(
                            "--secret {id}: environment variable {name} is not set"
                        ))
                    })?
                    .into_bytes()
            }
            _ => {
                return Err(Failure::bad_input(format_args!(
                    "--secret {spec}: give either src= or env="
                ))
                .into());
            }
        };
        secrets.insert(id, value);
    }
    Ok(secrets)
}

/// The build's own warnings (the planner's, `--check-arch`), and the build arguments no
/// `ARG` used.
fn print_report_warnings(report: &BuildReport) {
    for warning in &report.warnings {
        output::warning(warning);
    }
    if !report.unused_build_args.is_empty() {
        output::warning(format_args!(
            "build arguments not consumed by any ARG: {}",
            report.unused_build_args.join(", ")
        ));
    }
}

/// Whether one of `outputs` exports the images' layer blobs (none given: the store does):
/// `type=local` and `type=tar` write files only, so the build then makes no blob early.
fn exports_layer_blobs(outputs: &[Output]) -> bool {
    outputs.is_empty()
        || outputs
            .iter()
            .any(|output| !matches!(output, Output::Local { .. } | Output::Tar { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `xbuild build`'s arguments alone.
    #[derive(Debug, clap::Parser)]
    struct Line {
        #[command(flatten)]
        build: BuildArgs,
    }

    /// The compressions of the sets, and each output's set.
    type Sets = (Vec<(Compression, bool)>, Vec<usize>);

    /// The layer sets `xbuild build ARGS .` asks for.
    fn sets_of(args: &[&str]) -> Result<Sets, String> {
        use clap::Parser;
        let line = ["xbuild"].iter().chain(args).chain(&["."]);
        let build = Line::try_parse_from(line).map_err(|e| e.to_string())?.build;
        let specs = build.output_specs().map_err(|e| e.to_string())?;
        let planned = build.planned_outputs().map_err(|e| e.to_string())?;
        let sets = build
            .layer_sets(&specs, &planned)
            .map_err(|e| e.to_string())?;
        Ok((sets.compressions, sets.output_sets))
    }

    #[test]
    fn each_distinct_output_compression_is_a_set() {
        let gzip = (Compression::default(), false);
        let zstd = (Compression::parse("zstd").unwrap(), false);
        assert_eq!(sets_of(&[]), Ok((vec![gzip], vec![])));
        assert_eq!(
            sets_of(&[
                "-o",
                "type=oci,dest=a,compression=zstd",
                "-o",
                "type=oci,dest=b",
                "-o",
                "type=oci,dest=c,compression=zstd",
            ]),
            Ok((vec![zstd, gzip], vec![0, 1, 0]))
        );
        // --push (no compression key: gzip) beside a zstd archive; --load takes the first.
        assert_eq!(
            sets_of(&[
                "-t",
                "reg.example/app:1",
                "-o",
                "type=oci,dest=a,compression=zstd",
                "--push",
                "--load",
            ]),
            Ok((vec![zstd, gzip], vec![0, 1, 0]))
        );
        // A level or force-compression of its own is another set.
        let (sets, outputs) = sets_of(&[
            "-o",
            "type=oci,dest=a,compression=gzip,compression-level=9",
            "-o",
            "type=oci,dest=b,compression=gzip",
            "-o",
            "type=oci,dest=c,compression=gzip,force-compression=true",
        ])
        .unwrap();
        assert_eq!(sets.len(), 3, "{sets:?}");
        assert_eq!(outputs, vec![0, 1, 2]);
        // --compression: the default of the outputs without a key; files only: the image's.
        assert_eq!(
            sets_of(&["--compression", "zstd", "-o", "type=oci,dest=a"]),
            Ok((vec![zstd], vec![0]))
        );
        assert_eq!(
            sets_of(&["--compression", "zstd", "-o", "type=local,dest=d"]),
            Ok((vec![zstd], vec![0]))
        );
        let refused = sets_of(&[
            "--compression",
            "uncompressed",
            "-o",
            "type=oci,dest=a,compression=zstd",
        ])
        .unwrap_err();
        assert!(refused.contains("no output takes it"), "{refused}");
    }

    fn parsed(spec: &str) -> Result<AttestSpec, String> {
        parse_attest("--attest", spec).map_err(|error| error.to_string())
    }

    #[test]
    fn attest_specs_as_buildx_writes_them() {
        let sbom = |on, scan_stage| Ok(AttestSpec::Sbom { on, scan_stage });
        assert_eq!(parsed("type=sbom"), sbom(true, false));
        assert_eq!(
            parsed("type=sbom,generator=builtin,scan-stage=false"),
            sbom(true, false)
        );
        assert_eq!(parsed("type=sbom,scan-stage=true"), sbom(true, true));
        assert_eq!(parsed("type=sbom,disabled=true"), sbom(false, false));
        assert_eq!(
            parsed("type=provenance,mode=max,version=v0.2"),
            Ok(AttestSpec::Provenance(Some(ProvenanceOptions {
                mode: ProvenanceMode::Max,
                version: SlsaVersion::V02,
                by_default: false,
            })))
        );
        assert_eq!(
            parsed("type=provenance,disabled=true"),
            Ok(AttestSpec::Provenance(None))
        );
    }

    #[test]
    fn unknown_types_keys_and_generators_are_refused() {
        let error = parsed("type=foo").unwrap_err();
        assert!(
            error.contains("unknown attestation type \"foo\""),
            "{error}"
        );
        let error = parsed("type=sbom,bogus=1").unwrap_err();
        assert!(
            error.contains("bogus") && error.contains(SBOM_KEYS),
            "{error}"
        );
        let error = parsed("type=provenance,bogus=1").unwrap_err();
        assert!(error.contains(PROVENANCE_KEYS), "{error}");
        let error = parsed("type=sbom,generator=docker/buildkit-syft-scanner").unwrap_err();
        assert!(error.contains("not supported"), "{error}");
        assert!(parsed("type=sbom,scan-stage=maybe").is_err());
        assert!(parsed("type=provenance,mode=full").is_err());
        assert!(parsed("mode=max").is_err());
    }

    #[test]
    fn sizes_read_as_docker_does() {
        assert_eq!(parse_bytes("128m"), Some(128 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("64k"), Some(64 << 10));
        assert_eq!(parse_bytes("64kb"), Some(64 << 10));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("4096b"), Some(4096));
        for bad in ["", "0", "m", "1x", "-1", "1.5m", "99999999999999999999g"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_need_a_key_and_the_last_wins() {
        let labels = parse_labels(&["a=1".to_owned(), "a=2".to_owned(), "b=".to_owned()]).unwrap();
        assert_eq!(labels["a"], "2");
        assert_eq!(labels["b"], "");
        assert!(parse_labels(&["=1".to_owned()]).is_err());
        assert!(parse_labels(&["a".to_owned()]).is_err());
    }
}

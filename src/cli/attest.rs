//! `xbuild debug sbom|provenance|attach|referrers`: the attestation parts before the build
//! flags exist (issue 17, part 1), for tests and for looking inside.
//!
//! - `xbuild debug sbom DIR | --image NAME [--platform P] [--format spdx|statement|json|table]`:
//!   scans a root directory, or a stored image's layers (read as snapshots, not mounted),
//!   and prints the SPDX document, the in-toto statement (`--image` only: its subject is the
//!   image's manifest), the scan as JSON, or a table.
//! - `xbuild debug provenance RECORD.json [--slsa v1|v0.2] [--subject DIGEST]`: prints the
//!   provenance predicate of a build record (JSON of
//!   [`crate::attest::provenance::BuildRecord`]), or the statement about `--subject`.
//! - `xbuild debug attach NAME [--platform P] (--sbom | --provenance RECORD.json)`: makes
//!   the attestation for a stored image's platform manifest and attaches it as a referrer;
//!   prints the referrer's digest.
//! - `xbuild debug referrers NAME [--platform P]`: lists the referrers of the image's
//!   manifests (and of its index).
//!
//! `SOURCE_DATE_EPOCH` clamps the documents' times, as it does a build's.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use oci_spec::image::Descriptor;

use super::output;
use crate::attest::provenance::{BuildRecord, SlsaVersion};
use crate::attest::spdx::{self, DocumentInfo};
use crate::attest::{self, Encoded, Kind, StatementVersion};
use crate::error::{ExitKind, Failure, ResultExt as _};
use crate::platform::Platform;
use crate::sbom::{self, Root, Scan};
use crate::store::{Store, normalize_ref};

/// What `debug sbom` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    /// The SPDX 2.3 JSON document.
    Spdx,
    /// The in-toto statement wrapping it (needs `--image`).
    Statement,
    /// The scan itself, as JSON.
    Json,
    /// One package a line.
    Table,
}

/// `xbuild debug sbom`.
#[derive(Debug, Args)]
pub struct SbomArgs {
    /// A root directory to scan.
    #[arg(
        value_name = "DIR",
        conflicts_with = "image",
        required_unless_present = "image"
    )]
    pub dir: Option<PathBuf>,
    /// Scan this image of the store instead.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// The image's platform (default: its only one, else the host's).
    #[arg(long, value_name = "PLATFORM", conflicts_with = "dir")]
    pub platform: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "spdx")]
    pub format: SbomFormat,
}

/// `xbuild debug provenance`.
#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// The build record (JSON).
    #[arg(value_name = "RECORD")]
    pub record: PathBuf,
    /// The SLSA provenance version.
    #[arg(long, value_parser = ["v1", "v0.2"], default_value = "v1")]
    pub slsa: String,
    /// Print the in-toto statement about this manifest digest instead of the predicate.
    #[arg(long, value_name = "DIGEST")]
    pub subject: Option<String>,
}

/// `xbuild debug attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The stored image.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Its platform (default: its only one, else the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Attach an SBOM of the image's layers.
    #[arg(
        long,
        conflicts_with = "provenance",
        required_unless_present = "provenance"
    )]
    pub sbom: bool,
    /// Attach the provenance of this build record (JSON).
    #[arg(long, value_name = "RECORD")]
    pub provenance: Option<PathBuf>,
    /// The SLSA provenance version (default v1).
    #[arg(long, value_parser = ["v1", "v0.2"], conflicts_with = "sbom")]
    pub slsa: Option<String>,
}

/// `xbuild debug referrers`.
#[derive(Debug, Args)]
pub struct ReferrersArgs {
    /// The stored image.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Only this platform's manifest.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

fn open_store() -> anyhow::Result<Store> {
    let root = crate::store::default_root();
    Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
}

fn platform_arg(text: Option<&str>) -> anyhow::Result<Option<Platform>> {
    text.map(|text| Platform::parse(text).exit_kind(ExitKind::BadInput))
        .transpose()
        .map_err(Into::into)
}

fn slsa_version(text: &str) -> SlsaVersion {
    if text == "v0.2" {
        SlsaVersion::V02
    } else {
        SlsaVersion::V1
    }
}

fn created() -> String {
    attest::clamped_time(attest::unix_now(), crate::env::source_date_epoch())
}

/// A stored image's platform manifest, scanned from its layers.
fn scan_image(
    store: &Store,
    name: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<(Scan, crate::oci::ResolvedImage)> {
    let image = store.image(name, platform).exit_kind(ExitKind::BadInput)?;
    let mut layers = store.ensure_snapshots(&image)?;
    // Snapshots come bottom first; a stack is read top first.
    layers.reverse();
    let scan = sbom::scan(&Root::Layers(&layers))?;
    Ok((scan, image))
}

fn sbom_statement(scan: &Scan, name: &str, image: &crate::oci::ResolvedImage) -> attest::Statement {
    let platform = image.platform().to_string();
    let created = created();
    let info = DocumentInfo {
        name,
        created: &created,
        tool: &spdx::tool_name(),
    };
    let subjects =
        attest::image_subjects(&[normalize_ref(name)], &platform, image.descriptor.digest());
    spdx::statement(scan, &info, subjects, StatementVersion::V01)
}

fn warn_scan(scan: &Scan) {
    for warning in &scan.warnings {
        output::warning(warning);
    }
}

impl SbomArgs {
    /// Runs the scan and prints the result.
    ///
    /// # Errors
    /// Unknown image or platform (exit 2), an unreadable root or store (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let platform = platform_arg(self.platform.as_deref())?;
        let (scan, image, name) = match (&self.dir, &self.image) {
            (Some(dir), _) => {
                if !dir.is_dir() {
                    return Err(Failure::bad_input(format_args!(
                        "{} is not a directory",
                        dir.display()
                    ))
                    .into());
                }
                let scan = sbom::scan(&Root::Dir(dir))?;
                (scan, None, dir.display().to_string())
            }
            (None, Some(name)) => {
                let store = open_store()?;
                let (scan, image) = scan_image(&store, name, platform.as_ref())?;
                (scan, Some(image), name.clone())
            }
            (None, None) => return Err(Failure::bad_input("give a directory or --image").into()),
        };
        warn_scan(&scan);
        match self.format {
            SbomFormat::Table => {
                for package in &scan.packages {
                    output::stdout(format_args!(
                        "{}\t{}\t{}\t{}",
                        package.ecosystem.as_str(),
                        package.name,
                        package.version,
                        package.purl
                    ));
                }
            }
            SbomFormat::Json => output::stdout(serde_json::to_string_pretty(&scan)?),
            SbomFormat::Spdx => {
                let created = created();
                let info = DocumentInfo {
                    name: &name,
                    created: &created,
                    tool: &spdx::tool_name(),
                };
                output::stdout(serde_json::to_string_pretty(&spdx::document(&scan, &info))?);
            }
            SbomFormat::Statement => {
                let Some(image) = image else {
                    return Err(Failure::bad_input(
                        "--format statement needs --image (its subject is the image's manifest)",
                    )
                    .into());
                };
                let statement = sbom_statement(&scan, &name, &image);
                output::stdout(String::from_utf8_lossy(&statement.to_bytes()));
            }
        }
        Ok(())
    }
}

fn read_record(path: &PathBuf) -> anyhow::Result<BuildRecord> {
    let bytes = std::fs::read(path).map_err(|error| {
        Failure::bad_input(format_args!("cannot read {}: {error}", path.display()))
    })?;
    serde_json::from_slice(&bytes).map_err(|error| {
        Failure::bad_input(format_args!(
            "{}:{}: not a build record: {error}",
            path.display(),
            error.line()
        ))
        .into()
    })
}

impl ProvenanceArgs {
    /// Prints the predicate or the statement.
    ///
    /// # Errors
    /// An unreadable record or a bad subject digest (exit 2).
    pub fn run(self) -> anyhow::Result<()> {
        let record = read_record(&self.record)?;
        let slsa = slsa_version(&self.slsa);
        let Some(subject) = &self.subject else {
            let predicate = match slsa {
                SlsaVersion::V1 => attest::provenance::predicate_v1(&record),
                SlsaVersion::V02 => attest::provenance::predicate_v02(&record),
            };
            output::stdout(serde_json::to_string_pretty(&predicate)?);
            return Ok(());
        };
        let digest: crate::oci::Digest = subject
            .parse()
            .map_err(|_| Failure::bad_input(format_args!("{subject:?} is not a digest")))?;
        let subjects = attest::image_subjects(&[], &record.platform, &digest);
        let statement =
            attest::provenance::statement(&record, slsa, subjects, StatementVersion::V01);
        output::stdout(String::from_utf8_lossy(&statement.to_bytes()));
        Ok(())
    }
}

impl AttachArgs {
    /// Makes the attestation and attaches it.
    ///
    /// # Errors
    /// Unknown image or platform, unreadable record (exit 2), store failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let platform = platform_arg(self.platform.as_deref())?;
        let (encoded, image) = if let Some(path) = &self.provenance {
            let record = read_record(path)?;
            let image = store
                .image(&self.name, platform.as_ref())
                .exit_kind(ExitKind::BadInput)?;
            let subjects = attest::image_subjects(
                &[normalize_ref(&self.name)],
                &image.platform().to_string(),
                image.descriptor.digest(),
            );
            let statement = attest::provenance::statement(
                &record,
                slsa_version(self.slsa.as_deref().unwrap_or("v1")),
                subjects,
                StatementVersion::V01,
            );
            (Encoded::new(Kind::Provenance, &statement), image)
        } else {
            let (scan, image) = scan_image(&store, &self.name, platform.as_ref())?;
            warn_scan(&scan);
            let statement = sbom_statement(&scan, &self.name, &image);
            (Encoded::new(Kind::Sbom, &statement), image)
        };
        let subject = subject_descriptor(&image.descriptor);
        let referrer = store.attach_referrer(&subject, &encoded.artifact(&created()))?;
        output::stdout(referrer.digest());
        Ok(())
    }
}

/// A manifest's descriptor as a subject: media type, digest, size.
fn subject_descriptor(descriptor: &Descriptor) -> Descriptor {
    Descriptor::new(
        descriptor.media_type().clone(),
        descriptor.size(),
        descriptor.digest().clone(),
    )
}

impl ReferrersArgs {
    /// Lists the referrers: `SUBJECT REFERRER ARTIFACT-TYPE PREDICATE-TYPE`.
    ///
    /// # Errors
    /// Unknown image or platform (exit 2), an unreadable store (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let platform = platform_arg(self.platform.as_deref())?;
        let mut subjects = Vec::new();
        if let Some(platform) = &platform {
            let image = store
                .image(&self.name, Some(platform))
                .exit_kind(ExitKind::BadInput)?;
            subjects.push(image.descriptor.digest().clone());
        } else {
            let top = store
                .resolve_ref(&self.name)
                .exit_kind(ExitKind::BadInput)?;
            subjects.push(top.digest().clone());
            if crate::oci::image::is_index(store.layout(), &top)? {
                // The platforms the store has (a pull may have brought only some).
                let index = crate::oci::image::read_index(store.layout(), top.digest())?;
                subjects.extend(
                    index
                        .manifests()
                        .iter()
                        .map(|entry| entry.digest().clone())
                        .filter(|digest| store.layout().has_blob(digest)),
                );
            }
        }
        for subject in &subjects {
            for referrer in store.referrers(subject)? {
                let predicate = referrer
                    .annotations()
                    .as_ref()
                    .and_then(|annotations| annotations.get(attest::PREDICATE_TYPE_ANNOTATION))
                    .cloned()
                    .unwrap_or_else(|| "-".to_owned());
                let artifact_type = referrer
                    .artifact_type()
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string);
                output::stdout(format_args!(
                    "{subject} {} {artifact_type} {predicate}",
                    referrer.digest()
                ));
            }
        }
        Ok(())
    }
}

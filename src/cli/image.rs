//! The image commands: `images`, `inspect`, `history`, `tag`, `rmi`, `import`, `save`,
//! `load`, over the local store (`prune` and `du` are in [`super::prune`]).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use oci_spec::image::{History, HistoryBuilder};

use super::output;
use crate::dockerfile::{self, Expander};
use crate::error::{ExitKind, Failure, ResultExt as _};
use crate::executor::config;
use crate::layer::{self, Compression, TreeKind};
use crate::oci::ImageState;
use crate::oci::image;
use crate::platform::{self, Platform};
use crate::store::{ArchiveFormat, Store, display_ref, normalize_ref, split_ref};

pub(crate) fn open_store() -> anyhow::Result<Store> {
    let root = crate::store::default_root();
    Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
}

/// An optional `--platform` ([`super::values::platform_arg`]).
fn optional_platform(platform: Option<&str>) -> anyhow::Result<Option<Platform>> {
    platform.map(super::values::platform_arg).transpose()
}

/// Sizes as Docker prints them (SI units).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + " "
            + UNITS[unit]
    }
}

pub(crate) fn table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[column]));
            }
        }
        output::stdout(line.trim_end());
    }
}

/// `xbuild images`: repository, tag, digest, platforms, size, created.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show full digests.
    #[arg(long)]
    pub no_trunc: bool,
}

impl ImagesArgs {
    /// Lists the named images.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let mut rows = vec![
            [
                "REPOSITORY",
                "TAG",
                "DIGEST",
                "PLATFORMS",
                "SIZE",
                "CREATED",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for (name, descriptor) in store.refs()? {
            let (repository, tag) = split_ref(display_ref(&name));
            let digest = descriptor.digest().to_string();
            let digest = if self.no_trunc {
                digest
            } else {
                digest.chars().take(19).collect()
            };
            let (platforms, size, created) = match image::list_images(store.layout(), &descriptor) {
                Ok(images) => {
                    let platforms: Vec<String> = images
                        .iter()
                        .map(|image| image.platform().to_string())
                        .collect();
                    let size: u64 = images
                        .iter()
                        .map(|image| {
                            image.manifest.config().size()
                                + image
                                    .manifest
                                    .layers()
                                    .iter()
                                    .map(|l| l.size())
                                    .sum::<u64>()
                        })
                        .sum();
                    let created = images
                        .iter()
                        .filter_map(|image| image.config.created().clone())
                        .max()
                        .unwrap_or_default();
                    (platforms.join(","), human_size(size), created)
                }
                Err(error) => (
                    format!("(unreadable: {error})"),
                    String::new(),
                    String::new(),
                ),
            };
            rows.push(vec![
                repository.to_owned(),
                tag.to_owned(),
                digest,
                platforms,
                size,
                created,
            ]);
        }
        table(&rows);
        Ok(())
    }
}

/// `xbuild inspect REF [--platform P]`: the manifest and config as JSON.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image name (`name:tag`).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Platform of a multi-platform image (default: the only one, else the host's).
    #[arg(long)]
    pub platform: Option<String>,
}

impl InspectArgs {
    /// The platform asked for (`--platform`), if any.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn wanted_platform(&self) -> anyhow::Result<Option<Platform>> {
        optional_platform(self.platform.as_deref())
    }

    /// Prints the image.
    ///
    /// # Errors
    /// Unknown image or platform.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let platform = self.wanted_platform()?;
        let name = &self.reference;
        let top = store.resolve_ref(name).exit_kind(ExitKind::BadInput)?;
        let resolved = store
            .image(name, platform.as_ref())
            .exit_kind(ExitKind::BadInput)?;
        let platforms: Vec<String> = image::list_images(store.layout(), &top)?
            .iter()
            .map(|image| image.platform().to_string())
            .collect();
        let document = serde_json::json!({
            "Name": normalize_ref(name),
            "Digest": top.digest().to_string(),
            "MediaType": top.media_type().to_string(),
            "Platforms": platforms,
            "Platform": resolved.platform().to_string(),
            "ManifestDigest": resolved.descriptor.digest().to_string(),
            "Manifest": serde_json::to_value(&resolved.manifest)?,
            "Config": serde_json::to_value(&resolved.config)?,
        });
        output::stdout(serde_json::to_string_pretty(&document)?);
        Ok(())
    }
}

/// `xbuild history REF [--platform P]`: like `docker history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Image name.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Platform of a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Do not shorten the `CREATED BY` column.
    #[arg(long)]
    pub no_trunc: bool,
}

impl HistoryArgs {
    /// The platform asked for (`--platform`), if any.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn wanted_platform(&self) -> anyhow::Result<Option<Platform>> {
        optional_platform(self.platform.as_deref())
    }

    /// Prints one line per history entry, newest first.
    ///
    /// # Errors
    /// Unknown image or platform.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let platform = self.wanted_platform()?;
        let resolved = store
            .image(&self.reference, platform.as_ref())
            .exit_kind(ExitKind::BadInput)?;
        let layers = resolved.manifest.layers();
        let mut next_layer = 0;
        let mut rows = Vec::new();
        let history = resolved.config.history().clone().unwrap_or_default();
        for entry in &history {
            let size = if entry.empty_layer().unwrap_or(false) {
                0
            } else {
                let size = layers.get(next_layer).map_or(0, |layer| layer.size());
                next_layer += 1;
                size
            };
            let mut created_by = entry.created_by().clone().unwrap_or_default();
            if !self.no_trunc && created_by.chars().count() > 45 {
                created_by = created_by.chars().take(44).collect::<String>() + "…";
            }
            rows.push(vec![
                entry.created().clone().unwrap_or_default(),
                created_by,
                human_size(size),
                entry.comment().clone().unwrap_or_default(),
            ]);
        }
        // Layers without history entries (images made by tools that skip history).
        for layer in layers.iter().skip(next_layer) {
            rows.push(vec![
                String::new(),
                String::new(),
                human_size(layer.size()),
                String::new(),
            ]);
        }
        rows.reverse();
        rows.insert(
            0,
            ["CREATED", "CREATED BY", "SIZE", "COMMENT"]
                .map(str::to_owned)
                .to_vec(),
        );
        table(&rows);
        Ok(())
    }
}

/// `xbuild tag SRC DST`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image name.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// New name.
    #[arg(value_name = "DST")]
    pub target: String,
}

impl TagArgs {
    /// Names the image `SRC` names as `DST` too.
    ///
    /// # Errors
    /// Unknown `SRC`.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let descriptor = store
            .resolve_ref(&self.source)
            .exit_kind(ExitKind::BadInput)?;
        store.set_ref(&self.target, &descriptor)?;
        Ok(())
    }
}

/// `xbuild rmi REF...`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names.
    #[arg(value_name = "REF", required = true)]
    pub references: Vec<String>,
}

impl RmiArgs {
    /// Removes names; blobs go at the next `prune`.
    ///
    /// # Errors
    /// A name that is not in the store.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        for reference in &self.references {
            let name = normalize_ref(reference);
            match store.remove_ref(reference)? {
                Some(_) => output::stdout(format!("Untagged: {}", display_ref(&name))),
                None => {
                    return Err(Failure::bad_input(format!("no image named {name}")).into());
                }
            }
        }
        Ok(())
    }
}

/// `xbuild import [--platform P] [--change INSTRUCTION]... ROOTFS.tar|DIR|- REF`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Platform the root filesystem is for (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// USER, VOLUME, WORKDIR, STOPSIGNAL), repeatable.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Commit message recorded in the history.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Layer compression: gzip (default) or zstd.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// A tar (plain, gzip or zstd), a directory, or `-` for a tar on stdin.
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// Name for the image.
    #[arg(value_name = "REF")]
    pub reference: String,
}

impl ImportArgs {
    /// The platform the image is for: `--platform`, else the host's.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn wanted_platform(&self) -> anyhow::Result<Platform> {
        Ok(optional_platform(self.platform.as_deref())?.unwrap_or_else(platform::host))
    }

    /// Makes a one-layer image from a root filesystem.
    ///
    /// # Errors
    /// Bad `--change`, unreadable source, write failures.
    pub fn run(self) -> anyhow::Result<()> {
        let platform = self.wanted_platform()?;
        let compression = Compression::parse(&self.compression).ok_or_else(|| {
            Failure::bad_input(format!(
                "unknown compression {:?}: use gzip or zstd",
                self.compression
            ))
        })?;
        // Every change is read (and refused if bad) before anything is written.
        let mut state = ImageState::new(image::new_image_config(&platform, None));
        for change in &self.changes {
            apply_change(&mut state, change)?;
        }
        let store = open_store()?;
        let source = self.source.as_path();
        let blob = if source == Path::new("-") {
            layer::write_tar_layer(store.layout(), io::stdin().lock(), compression)
                .context("importing the tar from stdin")?
        } else if source.is_dir() {
            layer::write_tree_layer(
                store.layout(),
                source,
                TreeKind::RootFs,
                compression,
                crate::env::source_date_epoch(),
            )
            .with_context(|| format!("importing {}", source.display()))?
        } else {
            let file = fs::File::open(source)
                .with_context(|| format!("opening {}", source.display()))
                .exit_kind(ExitKind::BadInput)?;
            layer::write_tar_layer(store.layout(), file, compression)
                .with_context(|| format!("importing {}", source.display()))?
        };
        let created = image::created_now();
        let mut config = state.config;
        config.set_created(Some(created.clone()));
        config
            .rootfs_mut()
            .diff_ids_mut()
            .push(blob.diff_id.to_string());
        let mut history: HistoryBuilder =
            HistoryBuilder::default()
                .created(created)
                .created_by(format!(
                    "xbuild import {}",
                    if source == Path::new("-") {
                        "-".to_owned()
                    } else {
                        source
                            .file_name()
                            .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
                    }
                ));
        if let Some(message) = &self.message {
            history = history.comment(message.clone());
        }
        let history: History = history.build()?;
        config.set_history(Some(vec![history]));
        let descriptor = store.put_image(&config, vec![blob.descriptor])?;
        store.set_ref(&self.reference, &descriptor)?;
        output::stdout(descriptor.digest());
        Ok(())
    }
}

/// The instructions `--change` takes: those of `docker import -c`, and `LABEL`,
/// `STOPSIGNAL`.
const CHANGES: [&str; 9] = [
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Applies one `--change` instruction to the image, as `docker import -c` does: read as a
/// Dockerfile instruction, expanded with the image's environment, and applied by the same
/// functions a build's config instructions use ([`crate::executor::config`]).
fn apply_change(state: &mut ImageState, change: &str) -> anyhow::Result<()> {
    let change = change.trim();
    let name = change
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !CHANGES.contains(&name.as_str()) {
        return Err(Failure::unsupported(format!("--change {name}")).into());
    }
    let bad = |why: &dyn std::fmt::Display| -> anyhow::Error {
        Failure::bad_input(format!("--change {change:?}: {why}")).into()
    };
    let tree = dockerfile::parse(&format!("FROM scratch\n{change}\n")).map_err(|e| bad(&e.kind))?;
    let stages = dockerfile::stages(&tree).map_err(|e| bad(&e.kind))?;
    let instructions = stages
        .stages
        .first()
        .map(|stage| stage.instructions.as_slice())
        .unwrap_or_default();
    let [instruction] = instructions else {
        return Err(bad(&"give one instruction per --change"));
    };
    let instruction = instruction
        .expand(&Expander::new('\\'), &state.env())
        .map_err(|e| bad(&e.kind))?;
    config::apply(state, &instruction).map_err(|e| bad(&e))?;
    Ok(())
}

/// `xbuild save REF -o FILE [--format oci|docker] [--platform P]`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Image name.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Output file (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// `oci` (an OCI layout in a tar, all platforms) or `docker` (for `docker load`, one
    /// platform).
    #[arg(long, default_value = "oci")]
    pub format: String,
    /// Only this platform.
    #[arg(long)]
    pub platform: Option<String>,
}

impl SaveArgs {
    /// The platform asked for (`--platform`), if any.
    ///
    /// # Errors
    /// A value that is not a platform xbuild builds for (exit 2).
    pub fn wanted_platform(&self) -> anyhow::Result<Option<Platform>> {
        optional_platform(self.platform.as_deref())
    }

    /// Writes the archive (to a temporary file renamed into place).
    ///
    /// # Errors
    /// Unknown image, format or platform; write failures.
    pub fn run(self) -> anyhow::Result<()> {
        let format = match self.format.as_str() {
            "oci" => ArchiveFormat::Oci,
            "docker" => ArchiveFormat::Docker,
            other => {
                return Err(Failure::bad_input(format!(
                    "unknown format {other:?}: use oci or docker"
                ))
                .into());
            }
        };
        let platform = self.wanted_platform()?;
        let store = open_store()?;
        let name = self.reference.clone();
        store.resolve_ref(&name).exit_kind(ExitKind::BadInput)?;
        if self.output == Path::new("-") {
            let stdout = io::stdout().lock();
            store.save_archive(&name, platform.as_ref(), format, io::BufWriter::new(stdout))?;
            return Ok(());
        }
        let directory = match self.output.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".xbuild-save-")
            .tempfile_in(&directory)
            .with_context(|| format!("creating a file in {}", directory.display()))?;
        store
            .save_archive(
                &name,
                platform.as_ref(),
                format,
                io::BufWriter::new(tmp.as_file()),
            )
            .exit_kind(ExitKind::Failed)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.output)
            .with_context(|| format!("writing {}", self.output.display()))?;
        Ok(())
    }
}

/// `xbuild load -i FILE`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read (`-` or absent for stdin): OCI or docker format, plain or compressed.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Name for an image the archive leaves unnamed (or for its only image).
    #[arg(short = 't', long = "tag")]
    pub tag: Option<String>,
}

impl LoadArgs {
    /// Loads the archive into the store.
    ///
    /// # Errors
    /// Unreadable or invalid archive.
    pub fn run(self) -> anyhow::Result<()> {
        let store = open_store()?;
        let input: Box<dyn Read> = match &self.input {
            None => Box::new(io::stdin().lock()),
            Some(path) if path == Path::new("-") => Box::new(io::stdin().lock()),
            Some(path) => Box::new(
                fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))
                    .exit_kind(ExitKind::BadInput)?,
            ),
        };
        let loaded = store
            .load_archive(io::BufReader::new(input), self.tag.as_deref())
            .context("loading the archive")?;
        for image in loaded {
            match image.name {
                Some(name) => output::stdout(format!("Loaded image: {}", display_ref(&name))),
                None => output::stdout(format!(
                    "Loaded image ID: {} (unnamed: use xbuild load -t NAME to keep it)",
                    image.descriptor.digest()
                )),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_234_000), "1.234 MB");
        assert_eq!(human_size(5_000_000_000), "5 GB");
    }

    fn new_image() -> ImageState {
        ImageState::new(oci_spec::image::ImageConfiguration::default())
    }

    #[test]
    fn changes_set_the_config() {
        let mut state = new_image();
        apply_change(&mut state, r#"CMD ["/bin/sh","-c","echo"]"#).unwrap();
        apply_change(&mut state, "ENV A=1 B=\"two words\"").unwrap();
        apply_change(&mut state, "ENV C 3").unwrap();
        apply_change(&mut state, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut state, "WORKDIR /app").unwrap();
        let config = state.cfg();
        assert_eq!(
            config.cmd().as_deref(),
            Some(&["/bin/sh".to_owned(), "-c".to_owned(), "echo".to_owned()][..])
        );
        assert_eq!(
            config.env().as_deref(),
            Some(&["A=1".to_owned(), "B=two words".to_owned(), "C=3".to_owned()][..])
        );
        assert_eq!(
            config.exposed_ports().as_deref(),
            Some(&["53/udp".to_owned(), "80/tcp".to_owned()][..])
        );
        assert!(apply_change(&mut state, "RUN make").is_err());
    }

    #[test]
    fn changes_take_what_a_build_takes() {
        let mut state = new_image();
        apply_change(&mut state, "EXPOSE 8000-8002/tcp 8080:80").unwrap();
        apply_change(&mut state, "ENV DIR=/srv").unwrap();
        apply_change(&mut state, "WORKDIR $DIR/app").unwrap();
        apply_change(&mut state, "entrypoint [\"/bin/app\"]").unwrap();
        let config = state.cfg();
        assert_eq!(
            config.exposed_ports().clone().unwrap(),
            ["80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(config.working_dir().as_deref(), Some("/srv/app"));
        assert_eq!(config.entrypoint().clone().unwrap(), ["/bin/app"]);
        for bad in ["EXPOSE 70000", "ENV", "CMD echo\nRUN x", "HEALTHCHECK NONE"] {
            let error = apply_change(&mut state, bad).unwrap_err();
            assert_eq!(crate::error::exit_kind(&error).code(), 2, "{error:#}");
        }
    }
}

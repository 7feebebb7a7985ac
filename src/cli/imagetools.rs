//! `xbuild imagetools inspect|create`, with buildx's flags: arguments, reading sources
//! (references, digests, descriptor files) and `--format` templates, and printing. The
//! registry work is [`crate::registry::tools`]'s.
//!
//! `--format` takes the forms buildx documents, not a Go template engine:
//! `{{.Name}}`, `{{.Manifest}}` (the default text), `{{.Manifest.Digest}}`,
//! `{{.Manifest.MediaType}}`, `{{.Manifest.Size}}`, `{{json .Manifest}}`,
//! `{{json .Image}}`, `{{json .Name}}`, `{{json .SBOM}}`, `{{json .Provenance}}` and
//! `{{json .}}`, with any text around them. Other
//! actions are refused (exit 2), naming the ones that work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Args, Subcommand};
use oci_spec::image::{Descriptor, ImageConfiguration};
use serde::Serialize;

use super::output;
use super::registry::{RegistryFlags, open_store, parse_reference, runtime};
use crate::error::Failure;
use crate::oci::annotation::Annotation;
use crate::oci::referrers::FoundStatement;
use crate::platform::Platform;
use crate::registry::tools::{self, CreateRequest, Source};
use crate::registry::{ImageRef, RawManifest};

/// `xbuild imagetools ...`.
#[derive(Debug, Args)]
pub struct ImagetoolsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImagetoolsCommand,
}

/// The `imagetools` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagetoolsCommand {
    /// Show an image in a registry: its index and platforms, or its raw manifest.
    Inspect(InspectArgs),
    /// Create an image (an index over source images, or a copy) in a registry.
    Create(CreateArgs),
}

/// `xbuild imagetools inspect [--raw | --format TEMPLATE] REF`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print the manifest or index exactly as the registry serves it.
    #[arg(long, conflicts_with = "format")]
    pub raw: bool,
    /// Format the output: `{{.Name}}`, `{{.Manifest}}` (default), `{{.Manifest.Digest}}`,
    /// `{{.Manifest.MediaType}}`, `{{.Manifest.Size}}`, `{{json .Manifest}}`,
    /// `{{json .Image}}`, `{{json .SBOM}}`, `{{json .Provenance}}`, `{{json .}}`.
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Image (`name[:tag][@digest]`).
    #[arg(value_name = "REF")]
    pub reference: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryFlags,
}

/// `xbuild imagetools create [OPTIONS] [SOURCE...]`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where to push the result (`name:tag`), repeatable.
    #[arg(short = 't', long = "tag", value_name = "DST")]
    pub tags: Vec<String>,
    /// Source images (single- or multi-platform), by reference or digest (`sha256:...`, in
    /// the one repository named), or JSON descriptors.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Read a source from a file: a reference, a digest, or a JSON OCI descriptor (its
    /// platform and annotations replace the registry's). Repeatable.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Add an annotation: `index:KEY=VALUE` or
    /// `manifest-descriptor[PLATFORMS]:KEY=VALUE`. Repeatable.
    #[arg(long = "annotation", value_name = "ANNOTATION")]
    pub annotations: Vec<String>,
    /// Append the sources to the manifests the first tag already has.
    #[arg(long)]
    pub append: bool,
    /// Print the result instead of pushing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep only these platforms of the sources (comma-separated, repeatable).
    #[arg(
        short = 'p',
        long = "platform",
        value_name = "PLATFORM",
        value_delimiter = ','
    )]
    pub platforms: Vec<String>,
    /// With one single-platform source: make an index of it (true) or push that manifest
    /// as it is (false).
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub prefer_index: bool,
    /// Write the result's descriptor and name to this file (JSON), as buildx does.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub registry: RegistryFlags,
}

impl ImagetoolsArgs {
    /// Runs `inspect` or `create`.
    ///
    /// # Errors
    /// Bad references, templates, sources or annotations (exit 2, before any push),
    /// registry failures (exit 1).
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            ImagetoolsCommand::Inspect(args) => args.run(),
            ImagetoolsCommand::Create(args) => args.run(),
        }
    }
}

impl InspectArgs {
    fn run(self) -> anyhow::Result<()> {
        let reference = parse_reference(&self.reference)?;
        let template = self
            .format
            .as_deref()
            .map(Template::parse)
            .transpose()?
            .filter(|template| !template.is_whole_manifest());
        let runtime = runtime()?;
        let options = self.registry.options(super::registry::plain_notes());
        let manifest = runtime.block_on(tools::inspect(Arc::clone(&options), &reference))?;
        if self.raw {
            output::stdout_bytes(&manifest.bytes);
            return Ok(());
        }
        let Some(template) = template else {
            print_text(&reference, &manifest)?;
            return Ok(());
        };
        let configs = if template.needs_image() {
            runtime.block_on(tools::image_configs(
                Arc::clone(&options),
                &reference,
                &manifest,
            ))?
        } else {
            Vec::new()
        };
        let mut input = TemplateInput::new(&self.reference, &manifest, configs)?;
        if template.needs_attestations() {
            let statements =
                runtime.block_on(tools::attestations(options, &reference, &manifest))?;
            (input.sbom, input.provenance) = attestation_values(&statements);
            input.attestations_by_platform = statements.len() != 1;
        }
        output::stdout(template.render(&input)?);
        Ok(())
    }
}

fn print_text(reference: &ImageRef, manifest: &RawManifest) -> anyhow::Result<()> {
    output::stdout(format_args!("Name:      {reference}"));
    output::stdout(format_args!("MediaType: {}", manifest.media_type));
    output::stdout(format_args!("Digest:    {}", manifest.digest));
    if manifest.is_index() {
        output::stdout("");
        output::stdout("Manifests:");
        for entry in tools::index_entries(reference, manifest)? {
            let name = reference.with_digest(entry.descriptor.digest().clone());
            output::stdout(format_args!("  Name:      {name}"));
            output::stdout(format_args!(
                "  MediaType: {}",
                entry.descriptor.media_type()
            ));
            output::stdout(format_args!(
                "  Platform:  {}",
                entry
                    .platform
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
            ));
            if let Some(annotations) = entry.descriptor.annotations().as_ref() {
                if !annotations.is_empty() {
                    output::stdout("  Annotations:");
                    let sorted: BTreeMap<_, _> = annotations.iter().collect();
                    for (key, value) in sorted {
                        output::stdout(format_args!("    {key}: {value}"));
                    }
                }
            }
            output::stdout("");
        }
    }
    Ok(())
}

/// `.Manifest` as buildx gives it to a template: an index with its own digest and size,
/// or a manifest's descriptor.
#[derive(Serialize)]
#[serde(untagged)]
enum ManifestValue {
    Index(IndexValue),
    Manifest(Box<Descriptor>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexValue {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    digest: String,
    size: u64,
    manifests: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// `.Image`: one config, or one per platform.
#[derive(Serialize)]
#[serde(untagged)]
enum ImageValue {
    One(Box<ImageConfiguration>),
    PerPlatform(BTreeMap<String, ImageConfiguration>),
}

/// What a template sees.
#[derive(Serialize)]
struct TemplateInput {
    name: String,
    manifest: ManifestValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<ImageValue>,
    /// `.SBOM` (a method in buildx, not in `{{json .}}`).
    #[serde(skip)]
    sbom: serde_json::Value,
    /// `.Provenance` (likewise).
    #[serde(skip)]
    provenance: serde_json::Value,
    /// Whether `.SBOM` and `.Provenance` are maps by platform (an index of several).
    #[serde(skip)]
    attestations_by_platform: bool,
}

/// buildx's `.SBOM` and `.Provenance` of the statements per platform: for one platform
/// `{"SPDX": predicate, "AdditionalSPDXs": [...]}` and `{"SLSA": predicate}`, for several a
/// map from each platform to that.
fn attestation_values(
    statements: &[(Platform, Vec<FoundStatement>)],
) -> (serde_json::Value, serde_json::Value) {
    use serde_json::{Map, Value};
    let stubs = |statements: &[FoundStatement]| -> (Value, Value) {
        let mut spdx: Vec<Value> = Vec::new();
        let mut slsa = None;
        for FoundStatement { statement, .. } in statements {
            let kind = statement["predicateType"].as_str().unwrap_or_default();
            match crate::attest::Kind::of_predicate(kind) {
                Some(crate::attest::Kind::Sbom) => spdx.push(statement["predicate"].clone()),
                Some(crate::attest::Kind::Provenance) if slsa.is_none() => {
                    slsa = Some(statement["predicate"].clone());
                }
                _ => {}
            }
        }
        let mut sbom = Map::new();
        let mut spdx = spdx.into_iter();
        if let Some(first) = spdx.next() {
            sbom.insert("SPDX".to_owned(), first);
        }
        let additional: Vec<Value> = spdx.collect();
        if !additional.is_empty() {
            sbom.insert("AdditionalSPDXs".to_owned(), Value::Array(additional));
        }
        let mut provenance = Map::new();
        if let Some(slsa) = slsa {
            provenance.insert("SLSA".to_owned(), slsa);
        }
        (Value::Object(sbom), Value::Object(provenance))
    };
    if let [(_, only)] = statements {
        return stubs(only);
    }
    let mut sbom = Map::new();
    let mut provenance = Map::new();
    for (platform, statements) in statements {
        let (one, two) = stubs(statements);
        sbom.insert(platform.to_string(), one);
        provenance.insert(platform.to_string(), two);
    }
    (Value::Object(sbom), Value::Object(provenance))
}

impl TemplateInput {
    fn new(
        name: &str,
        manifest: &RawManifest,
        configs: Vec<(Platform, ImageConfiguration)>,
    ) -> anyhow::Result<Self> {
        let value = if manifest.is_index() {
            let index: oci_spec::image::ImageIndex = serde_json::from_slice(&manifest.bytes)
                .with_context(|| format!("{name}: not a valid index"))?;
            ManifestValue::Index(IndexValue {
                schema_version: index.schema_version(),
                media_type: index.media_type().as_ref().map(ToString::to_string),
                digest: manifest.digest.to_string(),
                size: manifest.bytes.len() as u64,
                manifests: index.manifests().clone(),
                annotations: index
                    .annotations()
                    .as_ref()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            })
        } else {
            ManifestValue::Manifest(Box::new(manifest.descriptor()))
        };
        let image = match configs.len() {
            0 => None,
            1 => configs
                .into_iter()
                .next()
                .map(|(_, config)| ImageValue::One(Box::new(config))),
            _ => Some(ImageValue::PerPlatform(
                configs
                    .into_iter()
                    .map(|(platform, config)| (platform.to_string(), config))
                    .collect(),
            )),
        };
        Ok(Self {
            name: name.to_owned(),
            manifest: value,
            image,
            sbom: serde_json::Value::Null,
            provenance: serde_json::Value::Null,
            attestations_by_platform: false,
        })
    }
}

/// The actions a `--format` template may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Name,
    Manifest,
    ManifestField(&'static str),
    Json(&'static str),
    /// `{{json (index .Image "linux/arm64")}}`: one platform's entry of a value that is a
    /// map by platform (`.Image`, `.SBOM`, `.Provenance` of an index of several).
    JsonIndex(&'static str, String),
}

/// A `--format` template: text and actions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    parts: Vec<Result<String, Action>>,
}

const SUPPORTED: &str = "{{.Name}}, {{.Manifest}}, {{.Manifest.Digest}}, \
    {{.Manifest.MediaType}}, {{.Manifest.Size}}, {{json .Manifest}}, {{json .Image}}, \
    {{json .Name}}, {{json .SBOM}}, {{json .Provenance}}, {{json .}}, \
    {{json (index .Image|.SBOM|.Provenance \"PLATFORM\")}}";

impl Template {
    fn parse(text: &str) -> Result<Self, Failure> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Ok(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                Failure::bad_input(format_args!("--format {text:?}: unclosed {{{{"))
            })?;
            let action = after[..close].trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            let parsed = match words.as_slice() {
                [".Name"] => Action::Name,
                [".Manifest"] => Action::Manifest,
                [".Manifest.Digest"] => Action::ManifestField("digest"),
                [".Manifest.MediaType"] => Action::ManifestField("mediaType"),
                [".Manifest.Size"] => Action::ManifestField("size"),
                ["json", "."] => Action::Json(""),
                ["json", ".Name"] => Action::Json("name"),
                ["json", ".Manifest"] => Action::Json("manifest"),
                ["json", ".Image"] => Action::Json("image"),
                ["json", ".SBOM"] => Action::Json("SBOM"),
                ["json", ".Provenance"] => Action::Json("Provenance"),
                ["json", "(index", field, key] if key.ends_with(')') => {
                    let field = match *field {
                        ".Image" => "image",
                        ".SBOM" => "SBOM",
                        ".Provenance" => "Provenance",
                        _ => {
                            return Err(Failure::bad_input(format_args!(
                                "--format: {{{{{action}}}}}: index takes .Image, .SBOM or .Provenance"
                            )));
                        }
                    };
                    let key = key
                        .trim_end_matches(')')
                        .strip_prefix('"')
                        .and_then(|key| key.strip_suffix('"'))
                        .ok_or_else(|| {
                            Failure::bad_input(format_args!(
                                "--format: {{{{{action}}}}}: the platform goes in double quotes"
                            ))
                        })?;
                    let platform = Platform::parse(key).map_err(Failure::bad_input)?;
                    Action::JsonIndex(field, platform.to_string())
                }
                _ => {
                    return Err(Failure::bad_input(format_args!(
                        "--format: {{{{{action}}}}} is not supported (supported: {SUPPORTED})"
                    )));
                }
            };
            parts.push(Err(parsed));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Ok(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// `{{.Manifest}}` alone is the default text output, as in buildx.
    fn is_whole_manifest(&self) -> bool {
        matches!(self.parts.as_slice(), [Err(Action::Manifest)])
    }

    fn needs_attestations(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Err(Action::Json("SBOM" | "Provenance")
                    | Action::JsonIndex("SBOM" | "Provenance", _))
            )
        })
    }

    fn needs_image(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Err(Action::Json("image" | "") | Action::JsonIndex("image", _))
            )
        })
    }

    fn render(&self, input: &TemplateInput) -> anyhow::Result<String> {
        let value = serde_json::to_value(input).context("rendering the template input")?;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Ok(text) => out.push_str(text),
                Err(Action::Name) => out.push_str(&input.name),
                Err(Action::Manifest) => {
                    return Err(Failure::bad_input(
                        "--format: {{.Manifest}} prints the default text and must be the whole template; use {{json .Manifest}} inside text",
                    )
                    .into());
                }
                Err(Action::ManifestField(field)) => match &value["manifest"][field] {
                    serde_json::Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                },
                Err(Action::Json(field)) => {
                    let selected = match *field {
                        "" => &value,
                        "SBOM" => &input.sbom,
                        "Provenance" => &input.provenance,
                        field => &value[field],
                    };
                    out.push_str(
                        &serde_json::to_string_pretty(selected).expect("a JSON value serialises"),
                    );
                }
                Err(Action::JsonIndex(field, platform)) => {
                    let selected = match *field {
                        "SBOM" => &input.sbom,
                        "Provenance" => &input.provenance,
                        field => &value[field],
                    };
                    // Go's `index` of a map: a platform it lacks gives the zero value (null);
                    // the value of a single image is no map (Go's template fails likewise).
                    let by_platform = matches!(
                        (*field, &input.image),
                        ("image", Some(ImageValue::PerPlatform(_)))
                    ) || (*field != "image" && input.attestations_by_platform);
                    if !by_platform {
                        return Err(Failure::bad_input(format_args!(
                            "--format: index .{}: {} is one platform's, not a map by platform; use {{{{json .{}}}}}",
                            if *field == "image" { "Image" } else { field },
                            input.name,
                            if *field == "image" { "Image" } else { field },
                        ))
                        .into());
                    }
                    let entry = selected.get(platform).unwrap_or(&serde_json::Value::Null);
                    out.push_str(
                        &serde_json::to_string_pretty(entry).expect("a JSON value serialises"),
                    );
                }
            }
        }
        Ok(out)
    }
}

impl CreateArgs {
    fn run(self) -> anyhow::Result<()> {
        if self.sources.is_empty() && self.files.is_empty() && !self.append {
            return Err(Failure::bad_input("no sources specified").into());
        }
        if !self.dry_run && self.tags.is_empty() {
            return Err(Failure::bad_input(
                "can't push with no tags specified, please set --tag or --dry-run",
            )
            .into());
        }
        if self.append && self.tags.is_empty() {
            return Err(Failure::bad_input("--append needs a --tag to append to").into());
        }
        let targets = self
            .tags
            .iter()
            .map(|tag| parse_reference(tag))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut inputs: Vec<String> = Vec::new();
        if self.append {
            inputs.push(self.tags[0].clone());
        }
        for file in &self.files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))
                .map_err(|error| Failure::new(crate::error::ExitKind::BadInput, error))?;
            inputs.push(text.trim().to_owned());
        }
        inputs.extend(self.sources.iter().cloned());
        let sources = resolve_sources(&inputs, &targets)?;
        let mut annotations = Vec::new();
        for text in &self.annotations {
            for annotation in Annotation::parse_flag(text).map_err(Failure::bad_input)? {
                use crate::oci::annotation::AnnotationKind;
                match annotation.kind {
                    Some(AnnotationKind::Index | AnnotationKind::ManifestDescriptor) => {
                        annotations.push(annotation);
                    }
                    other => {
                        return Err(Failure::bad_input(format_args!(
                            "--annotation {text}: {} annotations cannot be set by imagetools create; use index: or manifest-descriptor: (as buildx)",
                            other.map_or("untyped", |kind| kind.name())
                        ))
                        .into());
                    }
                }
            }
        }
        let platforms = self
            .platforms
            .iter()
            .map(|platform| Platform::parse(platform).map_err(Failure::bad_input))
            .collect::<Result<Vec<_>, _>>()?;
        let request = CreateRequest {
            sources,
            annotations,
            platforms,
            prefer_index: self.prefer_index,
        };
        let options = self.registry.options(super::registry::plain_notes());
        let runtime = runtime()?;
        let combined = runtime.block_on(tools::combine(Arc::clone(&options), request))?;
        if self.dry_run {
            output::stdout(String::from_utf8_lossy(&combined.document.bytes));
            return Ok(());
        }
        let store = open_store()?;
        for target in &targets {
            runtime
                .block_on(tools::publish(
                    Arc::clone(&options),
                    store.layout(),
                    &combined,
                    target,
                ))
                .with_context(|| format!("creating {target}"))?;
            output::stdout(format_args!("{target}@{}", combined.document.digest));
        }
        if let Some(path) = &self.metadata_file {
            let mut names: Vec<String> = targets.iter().map(ImageRef::repository_name).collect();
            names.sort();
            names.dedup();
            let metadata = serde_json::json!({
                "containerimage.descriptor": combined.document.descriptor(),
                "image.name": names.join(","),
            });
            let text = serde_json::to_string_pretty(&metadata).expect("JSON serialises");
            std::fs::write(path, text)
                .with_context(|| format!("writing the metadata file {}", path.display()))?;
        }
        Ok(())
    }
}

/// Turns each source text (a reference, a `sha256:` digest, or a JSON descriptor) into a
/// source; digests and descriptors are in the one repository named by the tags and the
/// references, as buildx infers it.
fn resolve_sources(inputs: &[String], targets: &[ImageRef]) -> Result<Vec<Source>, Failure> {
    enum Parsed {
        Reference(ImageRef),
        Digest(String),
        Descriptor(Box<Descriptor>, tools::PlatformExtras),
    }
    let mut parsed = Vec::new();
    for input in inputs {
        let item = if input.starts_with("sha256:") {
            let digest: oci_spec::image::Digest = input.parse().map_err(|error| {
                Failure::bad_input(format_args!("source {input:?}: not a digest: {error}"))
            })?;
            Parsed::Digest(digest.to_string())
        } else if input.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(input).map_err(|error| {
                Failure::bad_input(format_args!("source {input:?}: not JSON: {error}"))
            })?;
            if value.get("schemaVersion").is_some() {
                return Err(Failure::bad_input(format_args!(
                    "source {input:?}: expected an OCI content descriptor, got a manifest or index"
                )));
            }
            let extras = tools::platform_extras(&value);
            let descriptor: Descriptor = serde_json::from_value(value).map_err(|error| {
                Failure::bad_input(format_args!("source {input:?}: not a descriptor: {error}"))
            })?;
            Parsed::Descriptor(Box::new(descriptor), extras)
        } else {
            Parsed::Reference(ImageRef::parse(input).map_err(|error| {
                Failure::bad_input(format_args!(
                    "source {input:?}: valid sources are digests, references and descriptors: {error}"
                ))
            })?)
        };
        parsed.push((input, item));
    }
    let mut repositories: Vec<String> = targets.iter().map(ImageRef::repository_name).collect();
    let mut default = None;
    for (_, item) in &parsed {
        if let Parsed::Reference(reference) = item {
            repositories.push(reference.repository_name());
            default.get_or_insert_with(|| reference.clone());
        }
    }
    repositories.sort();
    repositories.dedup();
    let default = default.or_else(|| targets.first().cloned());
    parsed
        .into_iter()
        .map(|(input, item)| {
            let infer =
                || {
                    default.clone().filter(|_| repositories.len() == 1).ok_or_else(|| {
                    Failure::bad_input(format_args!(
                        "multiple repositories specified, cannot infer repository for {input:?}"
                    ))
                })
                };
            Ok(match item {
                Parsed::Reference(reference) => Source {
                    reference,
                    descriptor: None,
                    platform_extras: tools::PlatformExtras::new(),
                },
                Parsed::Digest(digest) => {
                    let digest = digest.parse().map_err(|_| {
                        Failure::bad_input(format_args!("source {input:?}: not a digest"))
                    })?;
                    Source {
                        reference: infer()?.with_digest(digest),
                        descriptor: None,
                        platform_extras: tools::PlatformExtras::new(),
                    }
                }
                Parsed::Descriptor(descriptor, platform_extras) => Source {
                    reference: infer()?.with_digest(descriptor.digest().clone()),
                    descriptor: Some(*descriptor),
                    platform_extras,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_the_documented_forms_and_refuse_others() {
        let template = Template::parse("digest={{ .Manifest.Digest }} name={{.Name}}").unwrap();
        assert_eq!(template.parts.len(), 4);
        assert!(!template.needs_image());
        assert!(Template::parse("{{json .Image}}").unwrap().needs_image());
        assert!(
            Template::parse("{{ .Manifest }}")
                .unwrap()
                .is_whole_manifest()
        );
        let error = Template::parse("{{range .Manifest.Manifests}}x{{end}}").unwrap_err();
        assert!(
            error.to_string().contains("supported: {{.Name}}"),
            "{error}"
        );
        assert!(Template::parse("{{json .Name").is_err());
    }

    /// buildx's `--format '{{json (index .Image "linux/s390x")}}'`.
    #[test]
    fn templates_index_a_value_by_platform() {
        let template = Template::parse(r#"{{json (index .Image "linux/s390x")}}"#).unwrap();
        assert_eq!(
            template.parts,
            [Err(Action::JsonIndex("image", "linux/s390x".to_owned()))]
        );
        assert!(template.needs_image());
        assert!(!template.needs_attestations());
        let template = Template::parse(r#"{{json (index .SBOM "aarch64")}}"#).unwrap();
        assert_eq!(
            template.parts,
            [Err(Action::JsonIndex("SBOM", "linux/arm64".to_owned()))]
        );
        assert!(template.needs_attestations());
        assert!(Template::parse(r#"{{json (index .Name "linux/arm64")}}"#).is_err());
        assert!(Template::parse(r#"{{json (index .Image linux/arm64)}}"#).is_err());
    }

    #[test]
    fn digests_and_descriptors_take_the_one_repository_named() {
        let targets = [ImageRef::parse("127.0.0.1:5000/app:1").unwrap()];
        let digest = format!("sha256:{}", "a".repeat(64));
        let descriptor = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":7,"platform":{{"os":"linux","architecture":"arm64"}}}}"#,
            "b".repeat(64)
        );
        let sources = resolve_sources(&[digest.clone(), descriptor], &targets).unwrap();
        assert_eq!(
            sources[0].reference.to_string(),
            format!("127.0.0.1:5000/app@{digest}")
        );
        assert!(sources[1].descriptor.is_some());
        let error =
            resolve_sources(&["127.0.0.1:5000/other:1".to_owned(), digest], &targets).unwrap_err();
        assert!(
            error.to_string().contains("cannot infer repository"),
            "{error}"
        );
        assert!(resolve_sources(&[r#"{"schemaVersion":2}"#.to_owned()], &targets).is_err());
    }
}

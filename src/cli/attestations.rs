//! `xbuild attest ls|get REF`: the attestations (SBOM, provenance, any in-toto statement)
//! attached to an image, read from the local store when it has `REF`, else from `REF`'s
//! registry (`--registry`: always from the registry). Both places give the same view:
//! the statements attached to each platform's manifest as OCI referrers (the referrers API
//! or the `sha256-<hex>` tag fallback in a registry), then those BuildKit keeps inside an
//! index as attestation manifests.
//!
//! - `ls` prints one line per statement: platform, kind (`sbom`, `provenance`, else
//!   `other`), predicate type and the digest of the manifest carrying it; `--format json`
//!   prints the same as a JSON array.
//! - `get` prints one statement (or, with `--predicate`, its predicate) as JSON. It needs
//!   the choice to be single: with several platforms, `--platform`; with several
//!   statements, `--type` (a kind, or a predicate type URI).

use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::output;
use super::registry::{RegistryFlags, open_store, parse_reference, runtime};
use crate::attest::Kind;
use crate::error::{ExitKind, Failure, ResultExt as _};
use crate::oci::referrers::FoundStatement;
use crate::platform::Platform;
use crate::registry::tools;

/// `xbuild attest ...`.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AttestCommand,
}

/// The `attest` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// List the attestations of an image: platform, kind, predicate type, manifest.
    Ls(LsArgs),
    /// Print one attestation of an image (the in-toto statement, or its predicate).
    Get(GetArgs),
}

/// What both subcommands take.
#[derive(Debug, Args)]
pub struct Selection {
    /// Image: a name in the local store, else `name[:tag][@digest]` in a registry.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Only this platform's attestations.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Only these: `sbom`, `provenance`, or a predicate type URI.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Read the registry even when the local store has an image of that name.
    #[arg(long)]
    pub registry: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub flags: RegistryFlags,
}

/// `xbuild attest ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub selection: Selection,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `xbuild attest get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub selection: Selection,
    /// Print only the statement's predicate.
    #[arg(long)]
    pub predicate: bool,
}

/// `ls` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
}

/// The kind `ls` shows for a predicate type.
fn kind_of(predicate_type: &str) -> &'static str {
    Kind::of_predicate(predicate_type).map_or("other", Kind::as_str)
}

/// Whether a statement of `predicate_type` is what `--type` asks for.
fn kind_matches(wanted: &str, predicate_type: &str) -> bool {
    match wanted {
        "sbom" | "provenance" => kind_of(predicate_type) == wanted,
        uri => uri == predicate_type,
    }
}

/// One statement found, for `ls` and `get`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    platform: String,
    kind: &'static str,
    predicate_type: String,
    manifest: String,
    #[serde(skip)]
    statement: serde_json::Value,
}

impl Selection {
    /// The statements the selection names, in platform order.
    fn find(&self) -> anyhow::Result<Vec<Listed>> {
        if let Some(kind) = &self.kind {
            if !matches!(kind.as_str(), "sbom" | "provenance") && !kind.contains("://") {
                return Err(Failure::bad_input(format_args!(
                    "--type {kind}: expected sbom, provenance or a predicate type URI"
                ))
                .into());
            }
        }
        let wanted = self
            .platform
            .as_deref()
            .map(|text| Platform::parse(text).exit_kind(ExitKind::BadInput))
            .transpose()?;
        let found = self.read()?;
        if let Some(wanted) = &wanted {
            if !found
                .iter()
                .any(|(platform, _)| wanted.same_target(platform))
            {
                let available: Vec<String> = found.iter().map(|(p, _)| p.to_string()).collect();
                return Err(Failure::bad_input(format_args!(
                    "{}: no {wanted} image (it has {})",
                    self.reference,
                    if available.is_empty() {
                        "none".to_owned()
                    } else {
                        available.join(", ")
                    }
                ))
                .into());
            }
        }
        let mut listed = Vec::new();
        for (platform, statements) in found {
            if wanted.as_ref().is_some_and(|w| !w.same_target(&platform)) {
                continue;
            }
            for FoundStatement {
                manifest,
                statement,
            } in statements
            {
                let predicate_type = statement["predicateType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if self
                    .kind
                    .as_deref()
                    .is_some_and(|kind| !kind_matches(kind, &predicate_type))
                {
                    continue;
                }
                listed.push(Listed {
                    platform: platform.to_string(),
                    kind: kind_of(&predicate_type),
                    predicate_type,
                    manifest: manifest.to_string(),
                    statement,
                });
            }
        }
        Ok(listed)
    }

    /// Every platform's statements, from the store or the registry.
    fn read(&self) -> anyhow::Result<Vec<(Platform, Vec<FoundStatement>)>> {
        if !self.registry {
            let store = open_store()?;
            if store.resolve_ref(&self.reference).is_ok() {
                return Ok(store.attestations(&self.reference)?);
            }
        }
        let reference = parse_reference(&self.reference)?;
        let runtime = runtime()?;
        let options = self.flags.options(super::registry::plain_notes());
        let manifest = runtime.block_on(tools::inspect(Arc::clone(&options), &reference))?;
        Ok(runtime.block_on(tools::attestations(options, &reference, &manifest))?)
    }
}

impl AttestArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// Bad arguments (exit 2), an unknown image, store or registry failures, no single
    /// statement for `get`.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            AttestCommand::Ls(args) => args.run(),
            AttestCommand::Get(args) => args.run(),
        }
    }
}

impl LsArgs {
    fn run(self) -> anyhow::Result<()> {
        let listed = self.selection.find()?;
        match self.format {
            Format::Json => output::stdout(serde_json::to_string_pretty(&listed)?),
            Format::Table => {
                let width = |column: fn(&Listed) -> &str, title: &str| {
                    listed
                        .iter()
                        .map(|row| column(row).len())
                        .chain([title.len()])
                        .max()
                        .unwrap_or(0)
                };
                let platform = width(|row| &row.platform, "PLATFORM");
                let kind = width(|row| row.kind, "TYPE");
                let predicate = width(|row| &row.predicate_type, "PREDICATE TYPE");
                output::stdout(format_args!(
                    "{:platform$}  {:kind$}  {:predicate$}  MANIFEST",
                    "PLATFORM", "TYPE", "PREDICATE TYPE"
                ));
                for row in &listed {
                    output::stdout(format_args!(
                        "{:platform$}  {:kind$}  {:predicate$}  {}",
                        row.platform, row.kind, row.predicate_type, row.manifest
                    ));
                }
            }
        }
        Ok(())
    }
}

impl GetArgs {
    fn run(self) -> anyhow::Result<()> {
        let listed = self.selection.find()?;
        let reference = &self.selection.reference;
        let one = match listed.as_slice() {
            [] => {
                return Err(Failure::bad_input(format_args!(
                    "{reference}: no attestation matches{}",
                    describe(&self.selection)
                ))
                .into());
            }
            [one] => one,
            several => {
                let platforms: std::collections::BTreeSet<&str> =
                    several.iter().map(|row| row.platform.as_str()).collect();
                let hint = if platforms.len() > 1 {
                    format!(
                        "name a platform with --platform ({})",
                        platforms.into_iter().collect::<Vec<_>>().join(", ")
                    )
                } else {
                    "name one with --type (sbom, provenance or a predicate type URI)".to_owned()
                };
                return Err(Failure::bad_input(format_args!(
                    "{reference}: {} attestations match{}: {hint}",
                    several.len(),
                    describe(&self.selection)
                ))
                .into());
            }
        };
        let value = if self.predicate {
            &one.statement["predicate"]
        } else {
            &one.statement
        };
        output::stdout(serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// `" (--platform P, --type T)"` for what the selection narrowed, or nothing.
fn describe(selection: &Selection) -> String {
    let mut parts = Vec::new();
    if let Some(platform) = &selection.platform {
        parts.push(format!("--platform {platform}"));
    }
    if let Some(kind) = &selection.kind {
        parts.push(format!("--type {kind}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_predicate_type() {
        assert_eq!(kind_of("https://spdx.dev/Document"), "sbom");
        assert_eq!(kind_of("https://slsa.dev/provenance/v1"), "provenance");
        assert_eq!(kind_of("https://slsa.dev/provenance/v0.2"), "provenance");
        assert_eq!(kind_of("https://example.com/vuln"), "other");
        assert!(kind_matches(
            "provenance",
            "https://slsa.dev/provenance/v0.2"
        ));
        assert!(!kind_matches("sbom", "https://slsa.dev/provenance/v1"));
        assert!(kind_matches(
            "https://example.com/vuln",
            "https://example.com/vuln"
        ));
        assert!(!kind_matches(
            "https://example.com/vuln",
            "https://spdx.dev/Document"
        ));
    }
}

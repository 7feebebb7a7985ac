//! What of an OCI layout or a local cache directory goes to a node, and the merge of the
//! cache exports nodes send back.
//!
//! A node gets only what its platforms read: of an `oci-layout://` context, `oci-layout`,
//! `index.json`, the indexes from the entry the context names down to each platform's
//! manifest, that manifest, its config and its layers ([`layout_files`]); of a
//! `--cache-from type=local` directory, `index.json` with every index, manifest and config
//! (the records of all platforms, a few kilobytes) and the layers of the records of the
//! node's platforms only ([`cache_files`]). The node picks its image or records from that
//! part exactly as it would from the whole.
//!
//! A `--cache-to` a node sends back (a local directory, or a registry several nodes write)
//! arrives as a cache directory of that node's platforms; [`merge`] writes its records to
//! the destination with the ordinary export ([`crate::cache::export`]), one node after the
//! other, so the destination ends as one writer extending it platform by platform would
//! leave it (a local directory's `index.json`, its `tag`, its unreferenced blobs removed;
//! a registry's one cache index or manifest over every platform). This module must not
//! read or write the node channel (see [`super::dispatch`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use oci_spec::image::{Descriptor, Digest};

use crate::cache::{CacheExport, CacheLocation, LocalCache};
use crate::error::Failure;
use crate::oci::ImageLayout;
use crate::oci::image as oci_image;
use crate::platform::Platform;
use crate::registry::RegistryOptions;

/// The files of the OCI layout at `path` (relative to it) that a build of `platforms`
/// reads through `oci-layout://PATH[:TAG][@sha256:...]`.
///
/// # Errors
/// The layout names no such image, or none for one of `platforms` (bad input, naming the
/// context and the layout, before any work), unreadable files.
pub fn layout_files(
    name: &str,
    path: &Path,
    tag: Option<&str>,
    digest: Option<&str>,
    platforms: &[Platform],
) -> anyhow::Result<BTreeSet<PathBuf>> {
    let refused = |error: &dyn std::fmt::Display| {
        Failure::bad_input(format_args!(
            "--build-context {name}=oci-layout://{}: {error}",
            path.display()
        ))
    };
    let layout = ImageLayout::open(path).map_err(|error| refused(&error))?;
    let chosen = crate::executor::layout_entry(&layout, path, tag, digest)
        .map_err(|error| refused(&crate::error::chain_text(&error)))?;
    let mut files = layout_meta();
    let mut indexes = Vec::new();
    collect_indexes(&layout, &chosen, 0, &mut indexes)?;
    for index in &indexes {
        files.insert(relative(&layout, index.digest())?);
    }
    for platform in platforms {
        let image = oci_image::resolve_image(&layout, &chosen, Some(platform))
            .map_err(|error| refused(&error))?;
        for blob in std::iter::once(&image.descriptor)
            .chain(std::iter::once(image.manifest.config()))
            .chain(image.manifest.layers())
        {
            files.insert(relative(&layout, blob.digest())?);
        }
    }
    Ok(files)
}

/// The files of the local cache `cache` (relative to its directory) a node building
/// `platforms` may use: `index.json`, every index, manifest and config, and the layers of
/// the records of `platforms`. Nothing when there is no cache there yet (as a local build
/// reads it: no error).
///
/// # Errors
/// A cache that cannot be read (as a local build's import would fail).
pub fn cache_files(
    runtime: &tokio::runtime::Runtime,
    options: &Arc<RegistryOptions>,
    cache: &LocalCache,
    platforms: &[Platform],
) -> anyhow::Result<BTreeSet<PathBuf>> {
    let location = CacheLocation::Local(cache.clone());
    let Ok(layout) = ImageLayout::open(&cache.dir) else {
        return Ok(BTreeSet::new());
    };
    let Some(imported) = runtime
        .block_on(crate::cache::import(
            Arc::clone(options),
            &location,
            platforms,
        ))
        .with_context(|| format!("reading --cache-from {location}"))?
    else {
        return Ok(BTreeSet::new());
    };
    let mut files = layout_meta();
    let mut tops: Vec<Descriptor> = layout.index()?.manifests().clone();
    if let Some(digest) = &cache.digest {
        let digest: Digest = digest
            .parse()
            .with_context(|| format!("--cache-from {location}: digest {digest}"))?;
        let bytes = layout.read_blob(&digest)?;
        tops.push(oci_image::descriptor(
            oci_spec::image::MediaType::Other("application/json".to_owned()),
            digest,
            bytes.len() as u64,
        ));
    }
    let mut documents = std::collections::HashSet::new();
    for top in &tops {
        collect_documents(&layout, top.digest(), 0, &mut documents)?;
    }
    for digest in &documents {
        files.insert(relative(&layout, digest)?);
    }
    for record in &imported.records {
        for layer in &record.layers {
            if layout.has_blob(layer.digest()) {
                files.insert(relative(&layout, layer.digest())?);
            }
        }
    }
    Ok(files)
}

/// One `--cache-to` a node sent back: the export as the user gave it, the node, its
/// platforms, and the cache directory it wrote.
pub struct SentBack<'a> {
    /// The export as the user gave it.
    pub export: &'a CacheExport,
    /// The node's name.
    pub node: String,
    /// The node's platforms.
    pub platforms: Vec<Platform>,
    /// The directory the node's cache was unpacked into.
    pub dir: tempfile::TempDir,
}

/// What [`merge`] did.
#[derive(Debug, Default)]
pub struct Merged {
    /// A line for the user per export written.
    pub lines: Vec<String>,
    /// A warning per export that failed with `ignore-error=true`.
    pub warnings: Vec<String>,
}

/// Writes every cache a node sent back to its destination, in order.
///
/// # Errors
/// An export that failed without `ignore-error=true`.
pub fn merge(
    runtime: &tokio::runtime::Runtime,
    options: &Arc<RegistryOptions>,
    sent_back: Vec<SentBack<'_>>,
) -> anyhow::Result<Merged> {
    let mut merged = Merged::default();
    for item in sent_back {
        let outcome = runtime.block_on(async {
            let here = CacheLocation::local(item.dir.path());
            let Some(imported) =
                crate::cache::import(Arc::clone(options), &here, &item.platforms).await?
            else {
                return Ok(None);
            };
            let layout = ImageLayout::open(item.dir.path()).map_err(|source| {
                crate::cache::CacheError::Layout {
                    location: here.to_string(),
                    source,
                }
            })?;
            crate::cache::export(Arc::clone(options), &layout, item.export, imported.records)
                .await
                .map(Some)
        });
        match outcome {
            Ok(Some(line)) => merged.lines.push(format!("[node {}] {line}", item.node)),
            Ok(None) => {}
            Err(error) if item.export.ignore_error => merged.warnings.push(format!(
                "--cache-to {}: the records of node {}: {} (ignored: ignore-error=true)",
                item.export.location,
                item.node,
                crate::error::chain_text(&error)
            )),
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "--cache-to {}: writing the records of node {}",
                    item.export.location, item.node
                )));
            }
        }
    }
    Ok(merged)
}

/// `oci-layout` and `index.json`.
fn layout_meta() -> BTreeSet<PathBuf> {
    ["oci-layout", "index.json"]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// A blob's path relative to its layout.
fn relative(layout: &ImageLayout, digest: &Digest) -> anyhow::Result<PathBuf> {
    let path = layout.blob_path(digest)?;
    Ok(path
        .strip_prefix(layout.root())
        .with_context(|| format!("{} is outside its layout", path.display()))?
        .to_path_buf())
}

/// The indexes from `descriptor` down (itself included when it is one), skipping children
/// the layout lacks, as an image is looked up.
fn collect_indexes(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    depth: usize,
    indexes: &mut Vec<Descriptor>,
) -> anyhow::Result<()> {
    if depth > 8 || !oci_image::is_index(layout, descriptor)? {
        return Ok(());
    }
    indexes.push(descriptor.clone());
    let index: oci_spec::image::ImageIndex = layout.read_json(descriptor.digest(), "an index")?;
    for child in index.manifests() {
        if layout.has_blob(child.digest()) {
            collect_indexes(layout, child, depth + 1, indexes)?;
        }
    }
    Ok(())
}

/// Every index, manifest and config from the blob `digest` down (never a layer), skipping
/// what the layout lacks.
fn collect_documents(
    layout: &ImageLayout,
    digest: &Digest,
    depth: usize,
    found: &mut std::collections::HashSet<Digest>,
) -> anyhow::Result<()> {
    if depth > 8 || !layout.has_blob(digest) || !found.insert(digest.clone()) {
        return Ok(());
    }
    let value: serde_json::Value = layout.read_json(digest, "a cache document")?;
    let children = value
        .get("manifests")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .chain(value.get("config"));
    for child in children {
        let Some(child) = child
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .and_then(|text| text.parse::<Digest>().ok())
        else {
            continue;
        };
        if value.get("config").is_some() {
            // A config: kept, never read.
            if layout.has_blob(&child) {
                found.insert(child);
            }
        } else {
            collect_documents(layout, &child, depth + 1, found)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheMode, Record};
    use oci_spec::image::MediaType;

    /// A node gets every record of a local cache (its configs) but only the layers of its
    /// own platforms' records.
    #[test]
    fn a_node_gets_the_layers_of_its_platforms_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let layout = ImageLayout::open_or_create(&cache_dir).unwrap();
        let arm = Platform::parse("linux/arm64").unwrap();
        let amd = Platform::parse("linux/amd64").unwrap();
        let mut records = Vec::new();
        let mut layers = Vec::new();
        for (key, platform) in [("k-arm", &arm), ("k-amd", &amd)] {
            let (digest, size) = layout.write_blob(key.as_bytes()).unwrap();
            let layer = oci_image::descriptor(MediaType::ImageLayerGzip, digest, size);
            layers.push(relative(&layout, layer.digest()).unwrap());
            records.push(Record {
                key: key.to_owned(),
                platform: platform.clone(),
                layers: vec![layer],
                state: serde_json::json!({}),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = Arc::new(RegistryOptions::from_env(dir.path()));
        let export = CacheExport::new(CacheLocation::local(&cache_dir), CacheMode::Max);
        runtime
            .block_on(crate::cache::export(
                Arc::clone(&options),
                &layout,
                &export,
                records,
            ))
            .unwrap();
        let cache = LocalCache {
            dir: cache_dir.clone(),
            tag: crate::cache::LOCAL_REF_NAME.to_owned(),
            digest: None,
        };
        let files = cache_files(&runtime, &options, &cache, std::slice::from_ref(&arm)).unwrap();
        assert!(files.contains(Path::new("index.json")));
        assert!(files.contains(&layers[0]), "{files:?}");
        assert!(!files.contains(&layers[1]), "{files:?}");
        // The cache index, two manifests and two configs besides.
        assert_eq!(files.len(), 2 + 1 + 5, "{files:?}");
        // Shipped and read back there, the node imports its records from the part.
        let entries =
            crate::nodes::protocol::tree_entries(&cache_dir, &|file| files.contains(file)).unwrap();
        let mut tar = Vec::new();
        crate::nodes::protocol::write_context(&cache_dir, &entries, &mut tar).unwrap();
        let there = dir.path().join("there");
        std::fs::create_dir(&there).unwrap();
        crate::nodes::protocol::read_tree(tar.as_slice(), &there).unwrap();
        let imported = runtime
            .block_on(crate::cache::import(
                options,
                &CacheLocation::local(&there),
                std::slice::from_ref(&arm),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(imported.records.len(), 1);
        assert_eq!(imported.records[0].key, "k-arm");
        // No cache there yet: nothing to ship, no error.
        let none = LocalCache {
            dir: dir.path().join("none"),
            ..cache
        };
        assert!(
            cache_files(
                &runtime,
                &Arc::new(RegistryOptions::from_env(dir.path())),
                &none,
                &[arm]
            )
            .unwrap()
            .is_empty()
        );
    }
}

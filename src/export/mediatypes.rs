//! `oci-mediatypes=false`: the build's result rewritten with Docker's media types, as
//! BuildKit's image exporter writes it then (a manifest list, schema-2 manifests, the
//! Docker config type, `application/vnd.docker.image.rootfs.diff.tar[.gzip|.zstd]` layers).
//!
//! Only the documents change: configs and layers keep their bytes (and digests), so the
//! rewritten manifests and list are new blobs in the store beside the OCI ones. This module
//! owns that rewrite; it must not rebuild, recompress or push anything. What BuildKit
//! refuses with Docker types (attestation manifests in the index, index and descriptor
//! annotations) is refused here too.

use oci_spec::image::{Descriptor, MediaType};
use serde_json::Value;

use crate::oci::ImageLayout;
use crate::oci::image::{self, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
use crate::oci::referrers::REFERENCE_TYPE;

use super::ExportError;

/// Which media types an image output writes (`oci-mediatypes=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaTypes {
    /// OCI's (the default of `image`, `registry` and `oci`).
    #[default]
    Oci,
    /// Docker's (`oci-mediatypes=false`).
    Docker,
}

fn bad(reason: impl Into<String>) -> ExportError {
    ExportError::Unsupported(format!("oci-mediatypes=false: {}", reason.into()))
}

fn read_document(
    layout: &ImageLayout,
    descriptor: &Descriptor,
    what: &'static str,
) -> Result<Value, ExportError> {
    layout
        .read_json(descriptor.digest(), what)
        .map_err(ExportError::reading)
}

/// Writes `document` as a blob of `media_type` and returns `descriptor` pointing at it.
fn write_document(
    layout: &ImageLayout,
    mut descriptor: Descriptor,
    media_type: &str,
    document: &Value,
) -> Result<Descriptor, ExportError> {
    let bytes = image::canonical_json(document);
    let (digest, size) = layout.write_blob(&bytes).map_err(ExportError::reading)?;
    descriptor.set_media_type(MediaType::Other(media_type.to_owned()));
    descriptor.set_digest(digest);
    descriptor.set_size(size);
    Ok(descriptor)
}

/// Whether a JSON object has a non-empty `annotations` map.
fn has_annotations(value: &Value) -> bool {
    value
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|annotations| !annotations.is_empty())
}

/// One image manifest with Docker's types: the manifest, its config and its layers.
fn docker_manifest(layout: &ImageLayout, entry: &Descriptor) -> Result<Descriptor, ExportError> {
    let mut manifest = read_document(layout, entry, "image manifest")?;
    if manifest.get("subject").is_some() || manifest.get("artifactType").is_some() {
        return Err(bad(
            "cannot export an OCI artifact (a manifest with a subject or an artifactType) with \
             Docker media types",
        ));
    }
    manifest["mediaType"] = Value::from(DOCKER_MANIFEST);
    if let Some(config) = manifest.get_mut("config") {
        config["mediaType"] = Value::from(DOCKER_CONFIG);
    }
    if let Some(layers) = manifest.get_mut("layers").and_then(Value::as_array_mut) {
        for layer in layers {
            let converted = layer
                .get("mediaType")
                .and_then(Value::as_str)
                .map(|media_type| image::docker_layer_media_type(media_type).to_owned());
            if let Some(converted) = converted {
                layer["mediaType"] = Value::from(converted);
            }
        }
    }
    write_document(layout, entry.clone(), DOCKER_MANIFEST, &manifest)
}

/// The build's result `top` (an index or one manifest) rewritten with Docker's media types; the
/// new documents are written into `layout`.
///
/// # Errors
/// [`ExportError::Unsupported`] for what Docker's types cannot carry (as BuildKit refuses
/// it): attestation manifests in the index, annotations on the index or on its entries;
/// store failures.
pub(crate) fn to_docker(layout: &ImageLayout, top: &Descriptor) -> Result<Descriptor, ExportError> {
    if image::is_manifest_media_type(top.media_type()) {
        return docker_manifest(layout, top);
    }
    let mut index = read_document(layout, top, "image index")?;
    if has_annotations(&index) {
        return Err(bad(
            "cannot export index annotations with Docker media types (BuildKit refuses them \
             too): drop the index annotations, or use oci-mediatypes=true",
        ));
    }
    let entries = layout
        .read_json::<oci_spec::image::ImageIndex>(top.digest(), "image index")
        .map_err(ExportError::reading)?
        .manifests()
        .clone();
    let mut converted = Vec::with_capacity(entries.len());
    for entry in &entries {
        if let Some(annotations) = entry.annotations() {
            if annotations.contains_key(REFERENCE_TYPE) {
                return Err(bad(
                    "cannot export attestations with Docker media types (BuildKit refuses them \
                     too): drop --attest/--sbom/--provenance, or use oci-mediatypes=true",
                ));
            }
            if !annotations.is_empty() {
                return Err(bad(
                    "cannot export manifest-descriptor annotations with Docker media types \
                     (BuildKit refuses them too)",
                ));
            }
        }
        if !image::is_manifest_media_type(entry.media_type()) {
            return Err(bad(format!(
                "the index lists {} of type {}, not an image manifest",
                entry.digest(),
                entry.media_type()
            )));
        }
        let descriptor = docker_manifest(layout, entry)?;
        converted.push(serde_json::to_value(&descriptor).expect("a descriptor serialises to JSON"));
    }
    index["mediaType"] = Value::from(DOCKER_MANIFEST_LIST);
    index["manifests"] = Value::Array(converted);
    if top.annotations().as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(bad(
            "cannot export index-descriptor annotations with Docker media types (BuildKit \
             refuses them too)",
        ));
    }
    write_document(layout, top.clone(), DOCKER_MANIFEST_LIST, &index)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A layout holding an index of one manifest (a config, a gzip layer); the index.
    fn layout_with_index(dir: &std::path::Path) -> (ImageLayout, Descriptor) {
        let layout = ImageLayout::open_or_create(dir).unwrap();
        let (config, config_size) = layout.write_blob(b"{}").unwrap();
        let (layer, layer_size) = layout.write_blob(b"layer bytes").unwrap();
        let manifest = image::build_manifest(
            image::descriptor(MediaType::ImageConfig, config, config_size),
            vec![image::descriptor(
                MediaType::ImageLayerGzip,
                layer,
                layer_size,
            )],
            Some(HashMap::from([("org.a".to_owned(), "b".to_owned())])),
        );
        let manifest =
            image::write_json_blob(&layout, MediaType::ImageManifest, &manifest).unwrap();
        let index = image::build_index(vec![manifest]);
        let index = image::write_json_blob(&layout, MediaType::ImageIndex, &index).unwrap();
        (layout, index)
    }

    #[test]
    fn an_index_becomes_a_manifest_list_of_schema2_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, index) = layout_with_index(dir.path());
        let list = to_docker(&layout, &index).unwrap();
        assert_eq!(list.media_type().as_ref(), DOCKER_MANIFEST_LIST);
        let document: Value = layout.read_json(list.digest(), "list").unwrap();
        assert_eq!(document["mediaType"], DOCKER_MANIFEST_LIST);
        let entry = &document["manifests"][0];
        assert_eq!(entry["mediaType"], DOCKER_MANIFEST);
        let digest: oci_spec::image::Digest = entry["digest"].as_str().unwrap().parse().unwrap();
        let manifest: Value = layout.read_json(&digest, "manifest").unwrap();
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], image::DOCKER_LAYER_GZIP);
        // Manifest annotations stay (BuildKit writes them into a Docker manifest too), and
        // the config and layer are the same blobs.
        assert_eq!(manifest["annotations"]["org.a"], "b");
        let original: Value = layout.read_json(index.digest(), "index").unwrap();
        let original_manifest: Value = layout
            .read_json(
                &original["manifests"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                "manifest",
            )
            .unwrap();
        assert_eq!(
            manifest["config"]["digest"],
            original_manifest["config"]["digest"]
        );
        assert_eq!(manifest["layers"], {
            let mut layers = original_manifest["layers"].clone();
            layers[0]["mediaType"] = Value::from(image::DOCKER_LAYER_GZIP);
            layers
        });
    }

    #[test]
    fn what_docker_types_cannot_carry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, index) = layout_with_index(dir.path());
        let mut document: Value = layout.read_json(index.digest(), "index").unwrap();
        document["manifests"][0]["annotations"] =
            serde_json::json!({ REFERENCE_TYPE: "attestation-manifest" });
        let (digest, size) = layout
            .write_blob(&image::canonical_json(&document))
            .unwrap();
        let with_attestation = image::descriptor(MediaType::ImageIndex, digest, size);
        let error = to_docker(&layout, &with_attestation).unwrap_err();
        assert!(
            error.to_string().contains("cannot export attestations"),
            "{error}"
        );
        let mut document: Value = layout.read_json(index.digest(), "index").unwrap();
        document["annotations"] = serde_json::json!({ "org.a": "b" });
        let (digest, size) = layout
            .write_blob(&image::canonical_json(&document))
            .unwrap();
        let annotated = image::descriptor(MediaType::ImageIndex, digest, size);
        let error = to_docker(&layout, &annotated).unwrap_err();
        assert!(error.to_string().contains("index annotations"), "{error}");
        assert_eq!(error.exit_kind(), crate::ExitKind::BadInput);
    }

    #[test]
    fn layer_types_convert_as_buildkit_converts_them() {
        assert_eq!(
            image::docker_layer_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            image::docker_layer_media_type("application/vnd.oci.image.layer.v1.tar"),
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(
            image::docker_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            "application/vnd.docker.image.rootfs.diff.tar.zstd"
        );
        assert_eq!(
            image::docker_layer_media_type(image::DOCKER_LAYER_GZIP),
            image::DOCKER_LAYER_GZIP
        );
    }
}

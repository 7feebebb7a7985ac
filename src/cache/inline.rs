//! `--cache-to type=inline`: the cache records of an image's own steps kept in its image
//! config, under BuildKit's key `moby.buildkit.cache.v0`, so that `--cache-from REF` of the
//! pushed image itself reuses them; this module owns that encoding (both ways). It does not
//! fetch or write anything: the image writer and the cache importer call it.
//!
//! As BuildKit, the value is a JSON string holding the base64 of a JSON array of cache
//! records, each with BuildKit's fields (`digest`, `results[].layerIndex`: the top layer of
//! the record's result among the image's layers) and xbuild's own (`xbuild.platform`,
//! `xbuild.state`: the step's resulting state). BuildKit's keys are not xbuild's, so neither
//! builder ever matches the other's records, but each reads the other's images without
//! error. A record is kept only when its layers are the bottom layers of the image (the
//! blobs an importer fetches from the image's own repository). Nothing in it depends on
//! the time of the build (BuildKit's `createdAt` is not written): the image digest stays
//! reproducible.

use base64::Engine as _;
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use super::Record;
use crate::platform::Platform;

/// The image config key of the inline cache (BuildKit's).
pub const CONFIG_KEY: &str = "moby.buildkit.cache.v0";

/// One record as written in the image config.
#[derive(Debug, Serialize, Deserialize)]
struct InlineRecord {
    /// BuildKit's cache key field: the xbuild key as a sha256 digest.
    digest: String,
    /// BuildKit's results: the top layer of the result among the image's layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    results: Vec<InlineResult>,
    /// The platform of the step.
    #[serde(rename = "xbuild.platform", default)]
    platform: Option<Platform>,
    /// The step's resulting state.
    #[serde(rename = "xbuild.state", default)]
    state: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InlineResult {
    #[serde(rename = "layerIndex")]
    layer_index: usize,
}

/// The value of [`CONFIG_KEY`] for an image with `layers` (bottom first): the `records`
/// whose layers are the image's bottom layers, in the order given. `None` when none is.
pub fn encode(records: &[Record], layers: &[Descriptor]) -> Option<serde_json::Value> {
    let inline: Vec<InlineRecord> = records
        .iter()
        .filter(|record| {
            record.layers.len() <= layers.len()
                && record
                    .layers
                    .iter()
                    .zip(layers)
                    .all(|(ours, image)| ours.digest() == image.digest())
        })
        .map(|record| InlineRecord {
            digest: format!("sha256:{}", record.key),
            results: record
                .layers
                .len()
                .checked_sub(1)
                .map(|top| InlineResult { layer_index: top })
                .into_iter()
                .collect(),
            platform: Some(record.platform.clone()),
            state: Some(record.state.clone()),
        })
        .collect();
    if inline.is_empty() {
        return None;
    }
    let json = crate::oci::image::canonical_json(&inline);
    Some(serde_json::Value::String(
        base64::engine::general_purpose::STANDARD.encode(json),
    ))
}

/// The records of an image config (its bytes) whose platform `wanted` takes; `layers` are
/// the image manifest's (a record's layers are the bottom ones). An image without
/// [`CONFIG_KEY`] has none; records BuildKit wrote (no xbuild state) are skipped.
///
/// # Errors
/// The key is there but is not BuildKit's encoding, or names layers the image lacks.
pub fn decode(
    config: &[u8],
    layers: &[Descriptor],
    wanted: &dyn Fn(&Platform) -> bool,
) -> Result<Vec<Record>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(config).map_err(|error| format!("image config: {error}"))?;
    let Some(inline) = value.get(CONFIG_KEY) else {
        return Ok(Vec::new());
    };
    let text = inline
        .as_str()
        .ok_or_else(|| format!("{CONFIG_KEY} is not a string"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| format!("{CONFIG_KEY} is not base64: {error}"))?;
    let inline: Vec<InlineRecord> = serde_json::from_slice(&json)
        .map_err(|error| format!("{CONFIG_KEY} is not a list of cache records: {error}"))?;
    let mut records = Vec::new();
    for record in inline {
        let (Some(platform), Some(state)) = (record.platform, record.state) else {
            continue;
        };
        let Some(key) = record.digest.strip_prefix("sha256:") else {
            continue;
        };
        if !wanted(&platform) {
            continue;
        }
        let count = match record.results.as_slice() {
            [] => 0,
            [result] => result.layer_index + 1,
            _ => continue,
        };
        let own = layers.get(..count).ok_or_else(|| {
            format!(
                "{CONFIG_KEY}: a record names layer {count} of an image with {}",
                layers.len()
            )
        })?;
        records.push(Record {
            key: key.to_owned(),
            platform,
            layers: own.to_vec(),
            state,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use oci_spec::image::MediaType;

    use super::*;

    fn layer(n: u8) -> Descriptor {
        let digest = format!("sha256:{}", format!("{n:02x}").repeat(32));
        crate::oci::image::descriptor(
            MediaType::ImageLayerGzip,
            digest.parse().expect("digest"),
            10,
        )
    }

    fn record(key: &str, layers: Vec<Descriptor>) -> Record {
        Record {
            key: key.to_owned(),
            platform: Platform::parse("linux/arm64").expect("platform"),
            layers,
            state: serde_json::json!({"n": key}),
        }
    }

    #[test]
    fn records_round_trip_through_the_config_key() {
        let image = [layer(1), layer(2), layer(3)];
        let records = [
            record("aa", vec![]),
            record("bb", vec![layer(1), layer(2)]),
            // Not the image's bottom layers: left out.
            record("cc", vec![layer(2)]),
        ];
        let value = encode(&records, &image).expect("some records");
        let text = value.as_str().expect("a string, as BuildKit's []byte");
        let inner: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64"),
        )
        .expect("json");
        assert_eq!(inner[1]["digest"], "sha256:bb");
        assert_eq!(inner[1]["results"][0]["layerIndex"], 1);
        assert!(inner[0].get("results").is_none());
        assert!(inner[0].get("createdAt").is_none());
        let config = serde_json::json!({"architecture": "arm64", CONFIG_KEY: value});
        let bytes = serde_json::to_vec(&config).expect("json");
        let decoded = decode(&bytes, &image, &|_| true).expect("decoded");
        assert_eq!(decoded, records[..2]);
        assert!(
            decode(&bytes, &image, &|p| p.architecture == "amd64")
                .expect("decoded")
                .is_empty()
        );
        // The same records give the same bytes (the image digest depends on them).
        assert_eq!(encode(&records, &image), Some(config[CONFIG_KEY].clone()));
        assert!(encode(&records[2..], &image).is_none());
    }

    #[test]
    fn configs_without_or_with_bad_inline_caches() {
        assert!(
            decode(br#"{"architecture":"amd64"}"#, &[], &|_| true)
                .expect("none")
                .is_empty()
        );
        let error = decode(br#"{"moby.buildkit.cache.v0":"%%"}"#, &[], &|_| true).unwrap_err();
        assert!(error.contains("not base64"), "{error}");
        // A record naming a layer the image lacks.
        let value = encode(
            &[record("bb", vec![layer(1), layer(2)])],
            &[layer(1), layer(2)],
        )
        .expect("encoded");
        let bytes = serde_json::to_vec(&serde_json::json!({ CONFIG_KEY: value })).expect("json");
        let error = decode(&bytes, &[layer(1)], &|_| true).unwrap_err();
        assert!(
            error.contains("names layer 2 of an image with 1"),
            "{error}"
        );
        // BuildKit's own records (no xbuild state) are skipped.
        let buildkit = base64::engine::general_purpose::STANDARD
            .encode(br#"[{"digest":"sha256:00","results":[{"layerIndex":0,"createdAt":"2024-01-01T00:00:00Z"}]}]"#);
        let bytes = serde_json::to_vec(&serde_json::json!({ CONFIG_KEY: buildkit })).expect("json");
        assert!(
            decode(&bytes, &[layer(1)], &|_| true)
                .expect("decoded")
                .is_empty()
        );
    }
}

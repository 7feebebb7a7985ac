//! The image as a build step leaves it: its layers and its config. The executor hands one
//! from step to step, a cache record keeps one (README.md, "Build cache": the `state` of a
//! record is this type as JSON, so its field names are a stored format), the config
//! instructions change one, and `xbuild import` makes one.
//!
//! A layer is either a blob (pulled, imported, or written by `COPY`) or, for a `RUN` step, a
//! snapshot in the store whose blob is written only when something needs it (an image, a
//! push, a cache export): then only its diff_id is known, and the mtime clamp its tar was
//! hashed with, so the blob made later is the same tar.

use oci_spec::image::{Config, Descriptor, Digest, HistoryBuilder, ImageConfiguration};
use serde::{Deserialize, Serialize};

/// One layer of an [`ImageState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLayer {
    /// The compressed blob; `None` for a `RUN` step's layer that so far exists only as its
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Descriptor>,
    /// The digest of the uncompressed tar (the snapshot's name in the store).
    pub diff_id: Digest,
    /// For a layer kept as a snapshot: the mtime clamp its diff_id was computed with (the
    /// blob made later must have the same tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp: Option<i64>,
    /// Made by a step of a build (`RUN`, `COPY`, `ADD`), not pulled or imported: a blob it
    /// already has was written at the compression of the build that made it, which may
    /// not be the one an export now asks for, so an export looks that compression up or
    /// converts the blob, whatever `force-compression` says (which is about base layers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
}

/// Layers and image config: the result of a build step, what the next one starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    /// The layers, bottom first.
    pub layers: Vec<ImageLayer>,
    /// The OCI image config (platform, container config, rootfs diff_ids, history).
    pub config: ImageConfiguration,
    /// Docker config fields the OCI type has no room for (`Healthcheck`, `Shell`, `OnBuild`).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A layer that has no blob yet where one is needed (a manifest lists blobs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layer {diff_id} has no blob yet")]
pub struct NoBlob {
    /// The layer.
    pub diff_id: Digest,
}

impl ImageState {
    /// An image with no layers and this config.
    pub fn new(config: ImageConfiguration) -> Self {
        Self {
            layers: Vec::new(),
            config,
            extra: serde_json::Map::new(),
        }
    }

    /// The container config (`Env`, `Cmd`, ...), empty when the image has none.
    pub fn cfg(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }

    /// Replaces the container config.
    pub fn set_cfg(&mut self, config: Config) {
        self.config.set_config(Some(config));
    }

    /// `Env` as (name, value) pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.cfg()
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => (pair.clone(), String::new()),
            })
            .collect()
    }

    /// The shell of shell-form commands (`SHELL`, default `["/bin/sh", "-c"]`).
    pub fn shell(&self) -> Vec<String> {
        self.extra
            .get("Shell")
            .and_then(|shell| serde_json::from_value(shell.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()])
    }

    /// The working directory, `/` when none is set.
    pub fn workdir(&self) -> String {
        self.cfg()
            .working_dir()
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// Adds a history entry, as BuildKit writes them (comment `buildkit.dockerfile.v0`).
    pub fn push_history(&mut self, created: &str, created_by: String, empty_layer: bool) {
        let mut history = self.config.history().clone().unwrap_or_default();
        let mut builder = HistoryBuilder::default()
            .created(created.to_owned())
            .created_by(created_by)
            .comment("buildkit.dockerfile.v0".to_owned());
        if empty_layer {
            builder = builder.empty_layer(true);
        }
        history.push(builder.build().expect("history fields are all optional"));
        self.config.set_history(Some(history));
    }

    /// Adds a layer that has its blob (pulled or imported).
    pub fn push_layer(&mut self, blob: Descriptor, diff_id: Digest) {
        self.push(ImageLayer {
            blob: Some(blob),
            diff_id,
            clamp: None,
            own: false,
        });
    }

    /// Adds a layer a step of this build made, with the blob it wrote at the build's
    /// compression ([`ImageLayer::own`]).
    pub fn push_own_layer(&mut self, blob: Descriptor, diff_id: Digest) {
        self.push(ImageLayer {
            blob: Some(blob),
            diff_id,
            clamp: None,
            own: true,
        });
    }

    /// Adds a layer kept as its snapshot (no blob yet).
    pub fn push_snapshot_layer(&mut self, diff_id: Digest, clamp: Option<i64>) {
        self.push(ImageLayer {
            blob: None,
            diff_id,
            clamp,
            own: true,
        });
    }

    fn push(&mut self, layer: ImageLayer) {
        let mut rootfs = self.config.rootfs().clone();
        let mut diff_ids = rootfs.diff_ids().clone();
        diff_ids.push(layer.diff_id.to_string());
        rootfs.set_diff_ids(diff_ids);
        self.config.set_rootfs(rootfs);
        self.layers.push(layer);
    }

    /// Layer descriptors for a manifest.
    ///
    /// # Errors
    /// [`NoBlob`]: a layer is kept only as its snapshot so far.
    pub fn blobs(&self) -> Result<Vec<Descriptor>, NoBlob> {
        self.layers
            .iter()
            .map(|layer| {
                layer.blob.clone().ok_or_else(|| NoBlob {
                    diff_id: layer.diff_id.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(hex: char) -> Digest {
        format!("sha256:{}", hex.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn layers_keep_the_rootfs_in_step_and_blobs_need_every_blob() {
        let mut state = ImageState::new(ImageConfiguration::default());
        let blob = oci_spec::image::DescriptorBuilder::default()
            .media_type(oci_spec::image::MediaType::ImageLayerGzip)
            .digest(digest('b'))
            .size(1u64)
            .build()
            .unwrap();
        state.push_layer(blob.clone(), digest('a'));
        assert_eq!(state.blobs(), Ok(vec![blob]));
        state.push_snapshot_layer(digest('c'), Some(7));
        assert_eq!(
            state.config.rootfs().diff_ids(),
            &[digest('a').to_string(), digest('c').to_string()]
        );
        assert_eq!(
            state.blobs(),
            Err(NoBlob {
                diff_id: digest('c')
            })
        );
    }

    #[test]
    fn the_stored_form_keeps_its_field_names() {
        let mut state = ImageState::new(ImageConfiguration::default());
        state.push_snapshot_layer(digest('c'), Some(7));
        state
            .extra
            .insert("Shell".to_owned(), serde_json::json!(["/bin/bash", "-c"]));
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json["layers"],
            serde_json::json!([{"diff_id": digest('c').to_string(), "clamp": 7, "own": true}])
        );
        // A record written before `own` existed reads as a layer that is not the build's.
        let old: ImageLayer =
            serde_json::from_value(serde_json::json!({"diff_id": digest('c').to_string()}))
                .unwrap();
        assert!(!old.own);
        assert_eq!(json["extra"]["Shell"][0], "/bin/bash");
        assert!(json["config"].is_object());
        assert_eq!(state.shell(), ["/bin/bash", "-c"]);
        let back: ImageState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
    }
}

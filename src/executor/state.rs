//! The state of a vertex: layers and image config.

use std::path::PathBuf;

use anyhow::anyhow;
use oci_spec::image::{Config, Descriptor, Digest, HistoryBuilder, ImageConfiguration};
use serde::{Deserialize, Serialize};

use crate::layer::{self};

use crate::store::Store;

/// One layer of a state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Layer {
    /// The compressed blob; `None` for a `RUN` step's layer that so far exists only as its
    /// snapshot (see [`Ctx::ensure_blobs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blob: Option<Descriptor>,
    pub(crate) diff_id: Digest,
    /// For a layer kept as a snapshot: the mtime clamp its diff_id was computed with (the
    /// blob made later must have the same tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) clamp: Option<i64>,
}

impl Layer {
    /// Whether the store has what this layer needs: its blob, or for a layer kept as a
    /// snapshot, the snapshot.
    pub(crate) fn present(&self, store: &Store) -> bool {
        match &self.blob {
            Some(blob) => store.layout().has_blob(blob.digest()),
            None => store.snapshot(&self.diff_id).is_some(),
        }
    }
}

/// The result of a vertex: layers and image config (what a cache record keeps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) layers: Vec<Layer>,
    pub(crate) config: ImageConfiguration,
    /// Docker config fields the OCI type has no room for (`Healthcheck`, `Shell`, `OnBuild`).
    #[serde(default)]
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl State {
    pub(crate) fn cfg(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }

    pub(crate) fn set_cfg(&mut self, config: Config) {
        self.config.set_config(Some(config));
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
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

    pub(crate) fn shell(&self) -> Vec<String> {
        self.extra
            .get("Shell")
            .and_then(|shell| serde_json::from_value(shell.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()])
    }

    pub(crate) fn workdir(&self) -> String {
        self.cfg()
            .working_dir()
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// Snapshot directories, top first (overlay `lowerdir=` order).
    pub(crate) fn lower_dirs(&self, store: &Store) -> anyhow::Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for layer in self.layers.iter().rev() {
            let dir = match (&layer.blob, store.snapshot(&layer.diff_id)) {
                (_, Some(dir)) => dir,
                (Some(blob), None) => store.unpack_snapshot(blob, &layer.diff_id)?,
                (None, None) => return Err(missing_snapshot(&layer.diff_id)),
            };
            dirs.push(dir);
        }
        Ok(dirs)
    }

    pub(crate) fn push_history(&mut self, created: &str, created_by: String, empty_layer: bool) {
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

    pub(crate) fn push_layer(&mut self, blob: &layer::LayerBlob) {
        self.push(Layer {
            blob: Some(blob.descriptor.clone()),
            diff_id: blob.diff_id.clone(),
            clamp: None,
        });
    }

    /// Adds a layer kept as its snapshot (no blob yet).
    pub(crate) fn push_snapshot_layer(&mut self, diff_id: Digest, clamp: Option<i64>) {
        self.push(Layer {
            blob: None,
            diff_id,
            clamp,
        });
    }

    pub(crate) fn push(&mut self, layer: Layer) {
        let mut rootfs = self.config.rootfs().clone();
        let mut diff_ids = rootfs.diff_ids().clone();
        diff_ids.push(layer.diff_id.to_string());
        rootfs.set_diff_ids(diff_ids);
        self.config.set_rootfs(rootfs);
        self.layers.push(layer);
    }

    /// Layer descriptors for a manifest; every layer must have its blob by now.
    pub(crate) fn blobs(&self) -> anyhow::Result<Vec<Descriptor>> {
        self.layers
            .iter()
            .map(|layer| {
                layer
                    .blob
                    .clone()
                    .ok_or_else(|| anyhow!("layer {} has no blob yet", layer.diff_id))
            })
            .collect()
    }
}

/// A finished vertex.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) state: State,
    pub(crate) key: String,
}

/// The error for a layer kept only as its snapshot when that snapshot is gone.
pub(crate) fn missing_snapshot(diff_id: &Digest) -> anyhow::Error {
    anyhow!(
        "the snapshot of layer {diff_id} is missing from the store and the layer has no blob \
         (run `xbuild store check`, then build again)"
    )
}

/// `base` joined with `path` (absolute paths replace it), cleaned, absolute.
pub(crate) fn join_path(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

//! What a vertex leaves: its [`ImageState`] and the cache key it was recorded under (and,
//! from both, the key the steps reading it chain on); every vertex's result once the graph
//! has run; and how paths inside an image are joined.

use std::sync::Arc;

use crate::cache::Key;
use crate::oci::ImageState;

/// A finished vertex.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) state: ImageState,
    /// The key its cache record is under (looked up before the step ran).
    pub(crate) key: String,
    /// What its readers chain on instead of [`Self::key`], when that key says more than the
    /// result does: a `COPY --from` is looked up by the identity of the stage or image it
    /// reads, but what it made is its layer (see [`Self::cut_off`]).
    pub(crate) readers_key: Option<String>,
}

impl Done {
    /// The result `state` of a step recorded (or found) under `key`.
    pub(crate) fn new(state: ImageState, key: String) -> Self {
        Self {
            state,
            key,
            readers_key: None,
        }
    }

    /// The same result, its readers chaining on `readers_key` (the step's key without the
    /// stage or image it read: its own instruction, its parent's content, the epoch) and
    /// its layers instead of its record key: the early cut-off of a `COPY --from`. When a
    /// stage is rebuilt to the same selected files (a comment edited, a rebuild that makes
    /// the same binary, an `ARG` of that stage changed), the `COPY` is a hit by the
    /// content of its sources ([`super::copy`]) and gives the layer it made before, so the
    /// steps after it keep their keys and are found in the cache, as BuildKit's
    /// content-based keys of a copy's sources give. Needed besides that second key: the
    /// `COPY`'s record key names the stage, and a hit on it reads no file, so its readers
    /// cannot chain on the checksum. Sound because a `COPY` changes nothing but its layer
    /// and a history entry: with the same parent, instruction and layer, its result is the
    /// same image state.
    pub(crate) fn cut_off(mut self, readers_key: String) -> Self {
        self.readers_key = Some(readers_key);
        self
    }

    /// What the keys of the steps reading this result chain on: its record key (or
    /// [`Self::readers_key`]) and the diff_ids of its layers. A step run again without the
    /// cache (`--no-cache-filter`) may leave other content under the same record key; its
    /// readers' keys then change with it, so they never take a result made from the old
    /// content. A hit carries its layers, so a later build chains on the same key again.
    pub(crate) fn chain_key(&self) -> String {
        let mut key = Key::default();
        match &self.readers_key {
            Some(readers) => key.add("readers", readers),
            None => key.add("record", &self.key),
        }
        for layer in &self.state.layers {
            key.add("layer", layer.diff_id.as_ref());
        }
        key.finish()
    }
}

/// Every vertex's result once the scheduler is done, by vertex index: `None` for a vertex
/// that failed or was not run.
#[derive(Debug, Default)]
pub(crate) struct Results(pub(crate) Vec<Option<Arc<Done>>>);

impl Results {
    /// The result of vertex `index`, if it finished.
    pub(crate) fn get(&self, index: usize) -> Option<&Arc<Done>> {
        self.0.get(index).and_then(Option::as_ref)
    }
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

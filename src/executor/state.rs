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
}

impl Done {
    /// What the keys of the steps reading this result chain on: its record key and the
    /// diff_ids of its layers. A step run again without the cache (`--no-cache-filter`) may
    /// leave other content under the same record key; its readers' keys then change with
    /// it, so they never take a result made from the old content. A hit carries its
    /// layers, so a later build chains on the same key again.
    pub(crate) fn chain_key(&self) -> String {
        let mut key = Key::default();
        key.add("record", &self.key);
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

//! What a vertex leaves: its [`ImageState`] and the cache key it was recorded under; every
//! vertex's result once the graph has run; and how paths inside an image are joined.

use std::sync::Arc;

use crate::oci::ImageState;

/// A finished vertex.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) state: ImageState,
    pub(crate) key: String,
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

//! What a vertex leaves: its [`ImageState`] and the cache key it was recorded under; and
//! how paths inside an image are joined.

use crate::oci::ImageState;

/// A finished vertex.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) state: ImageState,
    pub(crate) key: String,
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

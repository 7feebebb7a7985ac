//! The cache key of a build step: sha256 over labelled parts, added in a fixed order by the
//! executor (the plan's vertex identity, the parent's key, input stages' keys, the base
//! manifest digest, the context files read, `SOURCE_DATE_EPOCH`, the network mode, secret
//! ids, ...). Each part is its label, a zero byte, its length and its bytes, so no two
//! different sequences of parts give the same stream.

use sha2::{Digest as _, Sha256};

/// An incremental cache key.
#[derive(Clone, Default)]
pub struct Key(Sha256);

impl Key {
    /// The key of a vertex: its plan identity, then its parent's key (none for a `FROM`).
    pub fn new(vertex_id: &str, parent_key: Option<&str>) -> Self {
        let mut key = Self::default();
        key.add("vertex", vertex_id);
        if let Some(parent) = parent_key {
            key.add("parent", parent);
        }
        key
    }

    /// Adds one labelled part.
    pub fn add(&mut self, label: &str, value: &str) {
        self.0.update(label.as_bytes());
        self.0.update([0]);
        self.0.update(value.len().to_le_bytes());
        self.0.update(value.as_bytes());
    }

    /// The key, as lowercase hex (the name of the step's cache record).
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_delimited_and_ordered() {
        let key = |parts: &[(&str, &str)]| {
            let mut key = Key::default();
            for (label, value) in parts {
                key.add(label, value);
            }
            key.finish()
        };
        assert_ne!(key(&[("a", "bc")]), key(&[("a", "b"), ("", "c")]));
        assert_ne!(
            key(&[("a", "1"), ("b", "2")]),
            key(&[("b", "2"), ("a", "1")])
        );
        assert_eq!(
            Key::new("v", Some("p")).finish(),
            key(&[("vertex", "v"), ("parent", "p")])
        );
        assert_eq!(key(&[]).len(), 64);
    }
}

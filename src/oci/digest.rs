//! Content digests (`sha256:<hex>`), computed in one pass over streamed bytes.

use std::io::{self, Write};

use oci_spec::image::{Digest, Sha256Digest};
use sha2::{Digest as _, Sha256};

/// The `sha256:` digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let mut digester = Digester::default();
    digester.update(bytes);
    digester.finish().0
}

/// Computes a sha256 digest and counts bytes while data streams through it.
#[derive(Default, Clone)]
pub struct Digester {
    hasher: Sha256,
    size: u64,
}

impl Digester {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest and the number of bytes fed.
    pub fn finish(self) -> (Digest, u64) {
        let hex = hex::encode(self.hasher.finalize());
        let digest: Sha256Digest = hex
            .parse()
            .expect("a sha256 hex string is a valid sha256 digest");
        (digest.into(), self.size)
    }
}

impl Write for Digester {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            sha256_digest(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn streamed_digest_equals_one_shot_digest() {
        let mut digester = Digester::default();
        digester.update(b"hello ");
        digester.update(b"world");
        let (digest, size) = digester.finish();
        assert_eq!(digest, sha256_digest(b"hello world"));
        assert_eq!(size, 11);
    }
}

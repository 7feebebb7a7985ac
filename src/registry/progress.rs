//! Progress of blob transfers, reported to whoever shows it (the CLI draws bars).

use oci_spec::image::Digest;

/// Receives transfer progress. Implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// A blob of `size` bytes starts (`action`: `pulling`, `pushing`).
    fn start(&self, digest: &Digest, size: u64, action: &str) {
        let _ = (digest, size, action);
    }
    /// `bytes` more bytes of the blob went through.
    fn advance(&self, digest: &Digest, bytes: u64) {
        let _ = (digest, bytes);
    }
    /// The transfer restarts from zero (a retry).
    fn reset(&self, digest: &Digest) {
        let _ = digest;
    }
    /// The blob is done; `outcome` says how (`done`, `exists`, `mounted`).
    fn finish(&self, digest: &Digest, outcome: &str) {
        let _ = (digest, outcome);
    }
}

/// Shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

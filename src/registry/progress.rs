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

/// Reports blob transfers as [`crate::progress`] events: one vertex per blob
/// ([`SinkProgress::per_blob`], for `xbuild pull`/`push`), or every blob folded into one
/// vertex's byte count ([`SinkProgress::aggregate`], for a build's `FROM` or `--push` step).
pub struct SinkProgress {
    sink: crate::progress::SharedSink,
    mode: Mode,
    blobs: std::sync::Mutex<std::collections::HashMap<String, Blob>>,
}

enum Mode {
    PerBlob { next: std::sync::atomic::AtomicU32 },
    Aggregate { vertex: crate::progress::VertexId },
}

struct Blob {
    vertex: crate::progress::VertexId,
    size: u64,
    done: u64,
    started: std::time::Instant,
}

impl SinkProgress {
    /// One vertex per blob, numbered from `first_vertex`.
    pub fn per_blob(sink: crate::progress::SharedSink, first_vertex: u32) -> Self {
        Self {
            sink,
            mode: Mode::PerBlob {
                next: std::sync::atomic::AtomicU32::new(first_vertex),
            },
            blobs: std::sync::Mutex::default(),
        }
    }

    /// All blobs as bytes of one vertex (started and finished by the caller).
    pub fn aggregate(sink: crate::progress::SharedSink, vertex: crate::progress::VertexId) -> Self {
        Self {
            sink,
            mode: Mode::Aggregate { vertex },
            blobs: std::sync::Mutex::default(),
        }
    }

    fn emit_bytes(
        &self,
        blobs: &std::collections::HashMap<String, Blob>,
        vertex: crate::progress::VertexId,
    ) {
        let (done, total) = match self.mode {
            Mode::PerBlob { .. } => blobs
                .values()
                .find(|blob| blob.vertex == vertex)
                .map_or((0, 0), |blob| (blob.done, blob.size)),
            Mode::Aggregate { .. } => blobs.values().fold((0, 0), |(done, total), blob| {
                (done + blob.done, total + blob.size)
            }),
        };
        self.sink.emit(crate::progress::Event::Bytes {
            vertex,
            done,
            total: Some(total),
        });
    }
}

impl Progress for SinkProgress {
    fn start(&self, digest: &Digest, size: u64, action: &str) {
        let vertex = match &self.mode {
            Mode::PerBlob { next } => {
                let vertex = crate::progress::VertexId(
                    next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                );
                let short: String = digest.digest().chars().take(12).collect();
                self.sink.emit(crate::progress::Event::Started {
                    vertex,
                    name: format!("{action} {short}"),
                    emulated: false,
                });
                vertex
            }
            Mode::Aggregate { vertex } => *vertex,
        };
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.insert(
                digest.to_string(),
                Blob {
                    vertex,
                    size,
                    done: 0,
                    started: std::time::Instant::now(),
                },
            );
        }
    }

    fn advance(&self, digest: &Digest, bytes: u64) {
        if let Ok(mut blobs) = self.blobs.lock() {
            let Some(blob) = blobs.get_mut(&digest.to_string()) else {
                return;
            };
            blob.done += bytes;
            let vertex = blob.vertex;
            self.emit_bytes(&blobs, vertex);
        }
    }

    fn reset(&self, digest: &Digest) {
        if let Ok(mut blobs) = self.blobs.lock() {
            if let Some(blob) = blobs.get_mut(&digest.to_string()) {
                blob.done = 0;
            }
        }
    }

    fn finish(&self, digest: &Digest, outcome: &str) {
        let Mode::PerBlob { .. } = self.mode else {
            return;
        };
        let Ok(blobs) = self.blobs.lock() else {
            return;
        };
        if let Some(blob) = blobs.get(&digest.to_string()) {
            if outcome != "done" {
                self.sink.emit(crate::progress::Event::Log {
                    vertex: blob.vertex,
                    stream: crate::progress::Stream::Stdout,
                    line: outcome.to_owned(),
                });
            }
            self.sink.emit(crate::progress::Event::Finished {
                vertex: blob.vertex,
                duration: blob.started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::progress::{Event, Sink, VertexId};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl Sink for Recorder {
        fn emit(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[test]
    fn aggregate_sums_the_bytes_of_every_blob() {
        let recorder = Arc::new(Recorder::default());
        let progress = SinkProgress::aggregate(recorder.clone(), VertexId(7));
        let (a, b) = (
            crate::oci::sha256_digest(b"a"),
            crate::oci::sha256_digest(b"b"),
        );
        progress.start(&a, 10, "pulling");
        progress.start(&b, 30, "pulling");
        progress.advance(&a, 10);
        progress.advance(&b, 5);
        progress.finish(&a, "done");
        let events = recorder.0.lock().unwrap();
        assert_eq!(
            events.last(),
            Some(&Event::Bytes {
                vertex: VertexId(7),
                done: 15,
                total: Some(40)
            })
        );
        assert!(
            events
                .iter()
                .all(|event| matches!(event, Event::Bytes { .. }))
        );
    }

    #[test]
    fn per_blob_gives_each_blob_a_vertex() {
        let recorder = Arc::new(Recorder::default());
        let progress = SinkProgress::per_blob(recorder.clone(), 1);
        let a = crate::oci::sha256_digest(b"a");
        progress.start(&a, 1, "pushing");
        progress.finish(&a, "exists");
        let events = recorder.0.lock().unwrap();
        assert!(
            matches!(&events[0], Event::Started { vertex: VertexId(1), name, .. } if name.starts_with("pushing "))
        );
        assert!(matches!(&events[1], Event::Log { line, .. } if line == "exists"));
        assert!(matches!(
            &events[2],
            Event::Finished {
                vertex: VertexId(1),
                ..
            }
        ));
    }
}

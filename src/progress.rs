//! Progress events: what the build, pull and push report while they work, independent of
//! how it is shown. The renderers (`cli::progress`: terminal bars, `--progress=plain`,
//! `--progress=rawjson`, quiet) are the only ones that print.
//!
//! A *vertex* is one unit of reported work: a build step on one platform, a pull, a push,
//! a layer export. Events name it by a small number that is stable within one run
//! (`#N` in plain output, as BuildKit prints).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identifies a unit of reported work within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VertexId(pub u32);

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output of a step.
    Stdout,
    /// Standard error of a step.
    Stderr,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Work on a vertex started. `name` reads like
    /// `[linux/arm64 build 3/8] RUN make`; `emulated` marks steps run under QEMU.
    Started {
        /// The vertex.
        vertex: VertexId,
        /// What it is, as shown to users.
        name: String,
        /// Whether the step runs under emulation.
        emulated: bool,
    },
    /// The vertex's result came from the cache; nothing ran.
    Cached {
        /// The vertex.
        vertex: VertexId,
        /// What it is.
        name: String,
    },
    /// A line of output.
    Log {
        /// The vertex.
        vertex: VertexId,
        /// Which stream.
        stream: Stream,
        /// The line, without its newline (invalid UTF-8 replaced).
        line: String,
    },
    /// Byte progress of a transfer or export.
    Bytes {
        /// The vertex.
        vertex: VertexId,
        /// Bytes done.
        done: u64,
        /// Bytes in all, where known.
        total: Option<u64>,
    },
    /// The vertex finished.
    Finished {
        /// The vertex.
        vertex: VertexId,
        /// How long it took.
        #[serde(with = "seconds")]
        duration: Duration,
    },
    /// The vertex failed.
    Failed {
        /// The vertex.
        vertex: VertexId,
        /// How long it ran.
        #[serde(with = "seconds")]
        duration: Duration,
        /// Why, in one line.
        message: String,
    },
    /// A note not tied to a vertex (for example, "registered qemu-aarch64").
    Note {
        /// The text.
        message: String,
    },
}

mod seconds {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64((duration.as_secs_f64() * 1000.0).round() / 1000.0)
    }

    /// Reads what `serialize` wrote (a build node's `--progress=rawjson` lines).
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = <f64 as serde::Deserialize>::deserialize(deserializer)?;
        Ok(Duration::try_from_secs_f64(seconds).unwrap_or_default())
    }
}

/// Where events go. Implementations must be cheap and never block for long: they are called
/// from build threads.
pub trait Sink: Send + Sync {
    /// Receives one event.
    fn emit(&self, event: Event);
}

/// A shareable sink.
pub type SharedSink = Arc<dyn Sink>;

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Sink for Discard {
    fn emit(&self, _event: Event) {}
}

/// A sink that keeps every event, for tests.
#[derive(Debug, Default)]
pub struct Recorder {
    events: std::sync::Mutex<Vec<Event>>,
}

impl Recorder {
    /// The events received so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|events| events.clone())
            .unwrap_or_default()
    }
}

impl Sink for Recorder {
    fn emit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}

/// Hands out vertex numbers in order.
#[derive(Debug, Default)]
pub struct VertexCounter(std::sync::atomic::AtomicU32);

impl VertexCounter {
    /// A counter whose next id is `last + 1`, to go on numbering after another phase (the
    /// outputs after the build) without clashing `#N` lines.
    pub fn after(last: u32) -> Self {
        Self(std::sync::atomic::AtomicU32::new(last))
    }

    /// The last id handed out (0 when none).
    pub fn last(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next vertex id, starting at 1.
    pub fn next(&self) -> VertexId {
        VertexId(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_a_tag_and_seconds() {
        let event = Event::Finished {
            vertex: VertexId(3),
            duration: Duration::from_millis(1234),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"finished","vertex":3,"duration":1.234}"#
        );
    }

    #[test]
    fn counter_starts_at_one() {
        let counter = VertexCounter::default();
        assert_eq!(counter.next(), VertexId(1));
        assert_eq!(counter.next(), VertexId(2));
    }
}

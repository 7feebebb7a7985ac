//! Renders [`crate::progress::Event`]s: terminal bars (indicatif), `--progress=plain` lines in
//! BuildKit's style, `--progress=rawjson` (one JSON object a line), or nothing (`-q`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output;
use crate::progress::{Event, Sink, VertexId};

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Bars (one line per running step).
    Tty,
    /// Plain lines, for logs and CI.
    Plain,
    /// One JSON object per event.
    Rawjson,
    /// Nothing.
    Quiet,
}

/// Creates the sink for a mode.
pub fn sink(mode: ProgressMode) -> Box<dyn Sink> {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Tty::new()),
        ProgressMode::Auto | ProgressMode::Plain => Box::new(Plain::default()),
        ProgressMode::Tty => Box::new(Tty::new()),
        ProgressMode::Rawjson => Box::new(RawJson),
        ProgressMode::Quiet => Box::new(crate::progress::Discard),
    }
}

/// `--progress=plain`: `#N [linux/arm64 build 3/8] RUN make`, `#N 0.512 output line`,
/// `#N DONE 1.2s`, `#N CACHED`, `#N ERROR: message`.
#[derive(Debug, Default)]
pub struct Plain {
    started: Mutex<HashMap<VertexId, Instant>>,
}

impl Plain {
    fn elapsed(&self, vertex: VertexId) -> Duration {
        self.started
            .lock()
            .ok()
            .and_then(|started| started.get(&vertex).map(Instant::elapsed))
            .unwrap_or_default()
    }

    /// The line an event prints as, if any.
    pub fn render(&self, event: &Event) -> Option<String> {
        Some(match event {
            Event::Started {
                vertex,
                name,
                emulated,
            } => {
                if let Ok(mut started) = self.started.lock() {
                    started.insert(*vertex, Instant::now());
                }
                let marker = if *emulated { " (emulated)" } else { "" };
                format!("#{} {name}{marker}", vertex.0)
            }
            Event::Cached { vertex, name } => format!("#{} {name}\n#{} CACHED", vertex.0, vertex.0),
            Event::Log { vertex, line, .. } => {
                format!(
                    "#{} {:.3} {line}",
                    vertex.0,
                    self.elapsed(*vertex).as_secs_f64()
                )
            }
            Event::Bytes { .. } => return None,
            Event::Finished { vertex, duration } => {
                format!("#{} DONE {:.1}s", vertex.0, duration.as_secs_f64())
            }
            Event::Failed {
                vertex, message, ..
            } => format!("#{} ERROR: {message}", vertex.0),
            Event::Note { message } => format!("# {message}"),
        })
    }
}

impl Sink for Plain {
    fn emit(&self, event: Event) {
        if let Some(line) = self.render(&event) {
            output::stderr(line);
        }
    }
}

/// `--progress=rawjson`.
#[derive(Debug, Clone, Copy)]
pub struct RawJson;

impl Sink for RawJson {
    fn emit(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            output::stderr(line);
        }
    }
}

/// Terminal bars: one line per running vertex showing its latest output line; finished
/// vertices stay as one line with their duration or `CACHED`.
pub struct Tty {
    multi: MultiProgress,
    bars: Mutex<HashMap<VertexId, (ProgressBar, String)>>,
}

impl Tty {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn running_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Sink for Tty {
    fn emit(&self, event: Event) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            Event::Started {
                vertex,
                name,
                emulated,
            } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::running_style());
                let name = if emulated {
                    format!("{name} (emulated)")
                } else {
                    name
                };
                bar.set_prefix(name.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(vertex, (bar, name));
            }
            Event::Cached { name, .. } => {
                let _ = self.multi.println(format!("  {name} CACHED"));
            }
            Event::Log { vertex, line, .. } => {
                if let Some((bar, _)) = bars.get(&vertex) {
                    bar.set_message(line);
                }
            }
            Event::Bytes {
                vertex,
                done,
                total,
            } => {
                if let Some((bar, _)) = bars.get(&vertex) {
                    let text = match total {
                        Some(total) => format!("{} / {}", human_bytes(done), human_bytes(total)),
                        None => human_bytes(done),
                    };
                    bar.set_message(text);
                }
            }
            Event::Finished { vertex, duration } => {
                if let Some((bar, name)) = bars.remove(&vertex) {
                    bar.finish_and_clear();
                    let _ = self
                        .multi
                        .println(format!("  {name} DONE {:.1}s", duration.as_secs_f64()));
                }
            }
            Event::Failed {
                vertex, message, ..
            } => {
                if let Some((bar, name)) = bars.remove(&vertex) {
                    bar.finish_and_clear();
                    let _ = self.multi.println(format!("  {name} ERROR: {message}"));
                }
            }
            Event::Note { message } => {
                let _ = self.multi.println(format!("  {message}"));
            }
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[expect(clippy::cast_precision_loss, reason = "a display value")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_read_like_buildkit() {
        let plain = Plain::default();
        let started = plain.render(&Event::Started {
            vertex: VertexId(4),
            name: "[linux/arm64 build 3/8] RUN make".into(),
            emulated: true,
        });
        assert_eq!(
            started.as_deref(),
            Some("#4 [linux/arm64 build 3/8] RUN make (emulated)")
        );
        let done = plain.render(&Event::Finished {
            vertex: VertexId(4),
            duration: Duration::from_millis(1250),
        });
        assert_eq!(done.as_deref(), Some("#4 DONE 1.2s"));
        let cached = plain.render(&Event::Cached {
            vertex: VertexId(5),
            name: "[linux/amd64 build 2/8] COPY . .".into(),
        });
        assert_eq!(
            cached.as_deref(),
            Some("#5 [linux/amd64 build 2/8] COPY . .\n#5 CACHED")
        );
        let log = plain
            .render(&Event::Log {
                vertex: VertexId(4),
                stream: crate::progress::Stream::Stdout,
                line: "compiling".into(),
            })
            .unwrap();
        assert!(
            log.starts_with("#4 0.") && log.ends_with(" compiling"),
            "{log}"
        );
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}

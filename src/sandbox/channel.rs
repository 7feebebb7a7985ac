//! The child → parent channel: one JSON message per line on a pipe (file descriptor 3 in
//! the child). Failures in the child travel as data ([`Message::Failed`]), never as panics;
//! the step's own output uses stdout and stderr, not this pipe.
//!
//! Sequence: the step's PID 1 sends [`Message::Placeholders`] once its root is set up, or
//! [`Message::Failed`] and exits; the re-executed child sends [`Message::Exited`] or
//! [`Message::Signaled`] once PID 1 is gone. The write end is close-on-exec in PID 1, so the
//! step itself never sees it.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::error::SetupError;
use super::mounts::Placeholder;

/// The file descriptor of the channel in the child.
pub const CHILD_FD: i32 = 3;

/// The file descriptor on which the child reads its spec (JSON, up to end of file); stdin
/// stays free for the step.
pub const SPEC_FD: i32 = 4;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The root is ready; these mount points had to be created.
    Placeholders(Vec<Placeholder>),
    /// Setting up or starting the step failed.
    Failed {
        /// Which stage: `spec`, `unshare`, `mount`, `pivot_root`, `user`, `exec`, ...
        stage: String,
        /// What failed, for the user.
        detail: String,
    },
    /// The step exited.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// A signal killed the step.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl Message {
    /// Writes the message as one line, in one `write(2)` (pipe writes up to PIPE_BUF are
    /// atomic; ours are short).
    ///
    /// # Errors
    /// The write error.
    pub fn send(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    }

    /// Parses one line.
    pub fn parse(line: &[u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

impl From<SetupError> for Message {
    fn from(error: SetupError) -> Self {
        Self::Failed {
            stage: error.stage,
            detail: error.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let message = Message::Failed {
            stage: "exec".into(),
            detail: "no such file".into(),
        };
        let mut buffer = Vec::new();
        message.send(&mut buffer).unwrap();
        assert_eq!(buffer.last(), Some(&b'\n'));
        assert_eq!(Message::parse(&buffer[..buffer.len() - 1]), Some(message));
    }
}

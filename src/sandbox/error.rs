//! [`SetupError`]: a failure while the child sets up a step, carried to the parent as data
//! (a [`super::channel::Message::Failed`]), never as a panic. A leaf: it imports nothing of
//! the sandbox, so the mount plan, the channel and the child can all use it.

/// A failure in the child, sent to the parent as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// Which stage failed.
    pub stage: String,
    /// What failed.
    pub detail: String,
}

impl SetupError {
    /// A failure with a message.
    pub fn new(stage: &str, detail: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            detail: detail.into(),
        }
    }

    /// A failed system call.
    pub fn errno(stage: &str, detail: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::new(stage, format!("{}: {}", detail.into(), errno.desc()))
    }
}

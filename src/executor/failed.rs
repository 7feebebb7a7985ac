//! What a failed `RUN` leaves behind for `xbuild debug shell`: the state before the step
//! (the parent's snapshots) and the failed state (the step's upper directory), with what the
//! step ran as. Written by the build when a step fails; read by `xbuild debug shell`.
//!
//! Records live at `$XBUILD_ROOT/debug/<id>.json`; the failed upper directory is moved to
//! `$XBUILD_ROOT/debug/<id>.upper/` (snapshots named by the record are kept by garbage
//! collection while the record exists).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::platform::Platform;

/// One failed step, as recorded for `xbuild debug shell`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStep {
    /// Short id the user types (`xbuild debug shell <id>`).
    pub id: String,
    /// `[linux/arm64 build 3/8] RUN make`.
    pub name: String,
    /// The platform the step ran as (emulated when foreign).
    pub platform: Platform,
    /// Read-only snapshot directories of the state before the step, top first (overlay
    /// lowerdir order).
    pub lower_dirs: Vec<PathBuf>,
    /// The failed step's changes (an overlay upper directory), under the debug directory.
    pub failed_upper: PathBuf,
    /// The environment the step saw.
    pub env: BTreeMap<String, String>,
    /// `USER` (name or uid, `user:group`).
    pub user: String,
    /// Working directory.
    pub cwd: String,
    /// The shell argv of the stage (`SHELL`, default `["/bin/sh", "-c"]`).
    pub shell: Vec<String>,
    /// The exit code or signal, as text (`exit code 2`).
    pub outcome: String,
}

impl FailedStep {
    /// The directory that holds records: `<store root>/debug`.
    pub fn dir(store_root: &Path) -> PathBuf {
        store_root.join("debug")
    }

    /// Where the record with this id lives.
    pub fn path(store_root: &Path, id: &str) -> PathBuf {
        Self::dir(store_root).join(format!("{id}.json"))
    }

    /// Writes the record (temp file + rename).
    ///
    /// # Errors
    /// The debug directory cannot be written.
    pub fn save(&self, store_root: &Path) -> io::Result<()> {
        let dir = Self::dir(store_root);
        std::fs::create_dir_all(&dir)?;
        let path = Self::path(store_root, &self.id);
        let temp = dir.join(format!(".{}.tmp", self.id));
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&temp, json)?;
        std::fs::rename(temp, path)
    }

    /// Reads the record with this id.
    ///
    /// # Errors
    /// No such record, or it does not parse.
    pub fn load(store_root: &Path, id: &str) -> io::Result<Self> {
        let bytes = std::fs::read(Self::path(store_root, id))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let record = FailedStep {
            id: "a1b2c3".into(),
            name: "[linux/arm64 build 3/8] RUN make".into(),
            platform: Platform::parse("linux/arm64").unwrap(),
            lower_dirs: vec![PathBuf::from("/s/2"), PathBuf::from("/s/1")],
            failed_upper: dir.path().join("debug/a1b2c3.upper"),
            env: BTreeMap::from([("PATH".into(), "/bin".into())]),
            user: "root".into(),
            cwd: "/src".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            outcome: "exit code 2".into(),
        };
        record.save(dir.path()).unwrap();
        assert_eq!(FailedStep::load(dir.path(), "a1b2c3").unwrap(), record);
    }
}

//! Named builders made of native build nodes reached over SSH (`xbuild builder create|ls|use|
//! rm`), and the sending of a platform's sub-build to its node.
//!
//! A *builder* is a name and a list of *nodes*; a node is an SSH endpoint and the platforms it
//! builds (`--node linux/arm64=ssh://user@host:2222?xbuild=/usr/local/bin/xbuild&root=/srv/xb`).
//! A build whose builder has a node for one of its target platforms sends that platform's
//! sub-build to the node ([`dispatch`]); the other platforms are built here as always. The
//! node runs xbuild itself (hidden subcommand `__node-build`, [`crate::pipeline::node`]: the
//! same pipeline); nothing else needs to be installed there, and no daemon runs anywhere.
//!
//! The builders are kept in `$XDG_CONFIG_HOME/xbuild/builders.json` (default
//! `~/.config/xbuild/builders.json`): per user, like buildx's `~/.docker/buildx`, since they
//! name the user's SSH endpoints, not anything of the store. The system `ssh` client is used
//! ([`ssh`]), with the user's keys, agent, `known_hosts` and `~/.ssh/config`, in batch mode.
//!
//! Modules: [`node`] (endpoints and their parsing), [`ssh`] (the `ssh` command lines and the
//! probe), [`protocol`] (what goes over the channel), [`ship`] (the part of an OCI layout
//! or a cache directory a node gets, and the merge of the caches nodes send back),
//! [`dispatch`] (this side: splitting a build, streaming, merging the index).

pub mod dispatch;
pub mod node;
pub mod protocol;
pub mod ship;
pub mod ssh;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use node::{Endpoint, Node, NodeError};

/// The name that means "no builder: everything on this machine".
pub const DEFAULT_BUILDER: &str = "default";

/// A named set of build nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    /// The builder's name.
    pub name: String,
    /// Its nodes, in the order given; the first node serving a platform builds it.
    pub nodes: Vec<Node>,
}

impl Builder {
    /// The node that builds `platform`, if any.
    pub fn node_for(&self, platform: &crate::platform::Platform) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|node| node.platforms.contains(platform))
    }
}

/// The file of builders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builders {
    /// The builder `xbuild build` uses when no `--builder` is given (`None`: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every builder made with `xbuild builder create`.
    #[serde(default)]
    pub builders: Vec<Builder>,
}

/// Errors reading or writing the builders file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read or written.
    #[error("cannot {action} {}", path.display())]
    File {
        /// Read or write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON of builders.
    #[error("{} is not a valid builders file", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// No builder has this name.
    #[error("no builder named {0:?} (see xbuild builder ls)")]
    Unknown(String),
}

/// Where the builders are kept: `$XDG_CONFIG_HOME/xbuild/builders.json`, else
/// `$HOME/.config/xbuild/builders.json`.
pub fn config_path() -> PathBuf {
    let base = std::env::var_os(crate::env::XDG_CONFIG_HOME)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os(crate::env::HOME)
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".config")
        });
    base.join("xbuild").join("builders.json")
}

impl Builders {
    /// Reads the builders file (none yet: no builders).
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::File {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the builders file (temporary file + rename).
    ///
    /// # Errors
    /// [`ConfigError::File`].
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let failed = |source| ConfigError::File {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(failed)?;
        let mut text = serde_json::to_vec_pretty(self).expect("builders serialise");
        text.push(b'\n');
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        std::fs::write(tmp.path(), &text).map_err(failed)?;
        tmp.persist(path).map_err(|error| failed(error.error))?;
        Ok(())
    }

    /// The builder named `name`.
    pub fn get(&self, name: &str) -> Option<&Builder> {
        self.builders.iter().find(|builder| builder.name == name)
    }

    /// The builder a build uses: `requested` (`--builder`), else the current one; `None`
    /// means `default` (everything here).
    ///
    /// # Errors
    /// [`ConfigError::Unknown`] for a name that is not a builder.
    pub fn selected(&self, requested: Option<&str>) -> Result<Option<&Builder>, ConfigError> {
        match requested.or(self.current.as_deref()) {
            None | Some(DEFAULT_BUILDER) => Ok(None),
            Some(name) => self
                .get(name)
                .map(Some)
                .ok_or_else(|| ConfigError::Unknown(name.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    #[test]
    fn builders_round_trip_and_select() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x").join("builders.json");
        assert_eq!(Builders::load(&path).unwrap(), Builders::default());
        let node = Node::parse("arm0", "linux/arm64=ssh://root@10.0.0.2:2222").unwrap();
        let builders = Builders {
            current: Some("arm".to_owned()),
            builders: vec![Builder {
                name: "arm".to_owned(),
                nodes: vec![node],
            }],
        };
        builders.save(&path).unwrap();
        let loaded = Builders::load(&path).unwrap();
        assert_eq!(loaded, builders);
        let selected = loaded.selected(None).unwrap().unwrap();
        assert_eq!(selected.name, "arm");
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert_eq!(selected.node_for(&arm64).unwrap().name, "arm0");
        assert!(
            selected
                .node_for(&Platform::parse("linux/amd64").unwrap())
                .is_none()
        );
        assert!(loaded.selected(Some("default")).unwrap().is_none());
        assert!(matches!(
            loaded.selected(Some("nope")),
            Err(ConfigError::Unknown(_))
        ));
    }
}

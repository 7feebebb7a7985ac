//! The local store at `$XBUILD_ROOT`: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) plus `snapshots/` (unpacked layers by diff_id), `cache/` (cache key →
//! result records) and `tmp/`.
//!
//! Owns no network. Every write goes through [`crate::oci::ImageLayout`]'s atomic writes.

use std::path::PathBuf;

use crate::env;
use crate::oci::{ImageLayout, LayoutError};

/// The store directory: `$XBUILD_ROOT`, else `/var/lib/xbuild` for root, else
/// `$XDG_DATA_HOME/xbuild` (default `~/.local/share/xbuild`).
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os(env::XBUILD_ROOT).filter(|root| !root.is_empty()) {
        return PathBuf::from(root);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/xbuild");
    }
    if let Some(data) = std::env::var_os(env::XDG_DATA_HOME).filter(|data| !data.is_empty()) {
        return PathBuf::from(data).join("xbuild");
    }
    let home = std::env::var_os(env::HOME).map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("share").join("xbuild")
}

/// The local store.
#[derive(Debug, Clone)]
pub struct Store {
    layout: ImageLayout,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// # Errors
    /// The directory cannot be created or is not a store.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        Ok(Self {
            layout: ImageLayout::open_or_create(root)?,
        })
    }

    /// Opens the store at [`default_root`].
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_default() -> Result<Self, LayoutError> {
        Self::open(default_root())
    }

    /// The OCI image layout that holds blobs and named images.
    pub fn layout(&self) -> &ImageLayout {
        &self.layout
    }
}

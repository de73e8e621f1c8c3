//! Where a node keeps its files: `--data-dir`, else `$CAPSULE_HOME`, else the
//! XDG data directory (`~/.local/share/capsule`).

use std::path::{Path, PathBuf};

/// The key file's name inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";
/// The store's name inside the data dir.
pub const STORE_FILE: &str = "capsule.redb";

/// A node's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The default: the XDG data dir's `capsule` folder (clap already handled
    /// `--data-dir` and `$CAPSULE_HOME`).
    pub fn default_root() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("capsule"))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key file.
    pub fn identity(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// The store file.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    /// The blob folder, beside the store file (see [`crate::store::blobs`]).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
}

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

/// Writes a file only its owner can read (mode 0600) at `path`: with
/// `replace`, in place of any old one; without, refusing to replace one
/// (`AlreadyExists`). The bytes go under a temporary name, synced, then
/// into place and the folder synced, so a crash leaves the old file or the
/// new one, never half of one.
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    if replace {
        std::fs::rename(&tmp, path)?;
    } else {
        // hard_link refuses to replace an existing file, unlike rename.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked?;
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

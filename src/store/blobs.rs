//! Blobs: the bytes of attachments (pictures), content-addressed, as files
//! under `<data>/blobs/`, each named by the lowercase hex of its blake3
//! hash in a folder of the hash's first two digits (`blobs/ab/abcd…`), so
//! no folder holds more than a 256th of them.
//!
//! A blob is written to a temporary file in `blobs/tmp/`, hashed as it is
//! written, fsynced, renamed to its final name, and the folder fsynced: a
//! crash at any moment leaves either the whole blob under its name or
//! nothing there (leftover temporary files are removed when the store
//! opens: [`Blobs::remove_leftovers`]). Bytes from a peer are checked against the hash and size they
//! were announced with before they get a name; more than announced is
//! refused as soon as it arrives.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A blob's name: the blake3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a blob was not kept.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes are not the ones announced.
    #[error("the blob's bytes hash to {got}, not to the announced {expected}")]
    WrongHash {
        /// What was announced.
        expected: BlobId,
        /// What arrived.
        got: BlobId,
    },
    /// More or fewer bytes than announced.
    #[error("the blob {id} was announced as {announced} bytes, and {got} arrived")]
    WrongSize {
        /// The blob.
        id: BlobId,
        /// Its announced size.
        announced: u64,
        /// What arrived (at most one byte more than announced is read).
        got: u64,
    },
    /// The file system failed.
    #[error("cannot write the blob under {dir}: {source}")]
    Io {
        /// The blob folder.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What [`Blobs::verify_all`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlobCheck {
    /// Blobs whose bytes hash to their name.
    pub sound: u64,
    /// Blobs whose bytes do not.
    pub corrupt: Vec<BlobId>,
}

/// The blob folder of one data directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The folder `dir` (`<data>/blobs`), made (mode 0700) if missing. Any
    /// process may open it (`capsule post` keeps its pictures there while
    /// the node runs); only the store's owner sweeps it
    /// ([`Blobs::remove_leftovers`]).
    pub fn open(dir: &Path) -> Result<Blobs, BlobError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("tmp"))
            .map_err(|source| BlobError::Io {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(Blobs {
            dir: dir.to_path_buf(),
        })
    }

    /// Removes the temporary files a crash left behind. Only for the process
    /// that holds the store (the store file's lock says no other writes
    /// here meanwhile): another's temporary files are blobs on their way.
    pub fn remove_leftovers(&self) -> Result<(), BlobError> {
        let io = |source| BlobError::Io {
            dir: self.dir.clone(),
            source,
        };
        for leftover in std::fs::read_dir(self.dir.join("tmp")).map_err(io)? {
            let _ = std::fs::remove_file(leftover.map_err(io)?.path());
        }
        Ok(())
    }

    /// Where blob `id` lives.
    pub fn path(&self, id: &BlobId) -> PathBuf {
        let name = id.to_string();
        self.dir.join(&name[..2]).join(name)
    }

    /// Whether blob `id` is held.
    pub fn has(&self, id: &BlobId) -> bool {
        self.path(id).is_file()
    }

    /// Keeps `bytes`; returns their id. Durable when it returns.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobId, BlobError> {
        let id = BlobId::of(bytes);
        self.receive(id, bytes.len() as u64, bytes)?;
        Ok(id)
    }

    /// Keeps the blob announced as `id` of `size` bytes, read from `from`:
    /// hashed as it is written, refused (and nothing left behind) when it
    /// is longer or shorter than announced or hashes to anything else.
    /// Durable when it returns.
    pub fn receive(&self, id: BlobId, size: u64, from: impl Read) -> Result<(), BlobError> {
        let io = |source| BlobError::Io {
            dir: self.dir.clone(),
            source,
        };
        if self.has(&id) {
            return Ok(());
        }
        let mut nonce = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{id}.{}", hex::encode(nonce)));
        let written = (|| -> Result<(), BlobError> {
            let mut file = File::create(&tmp).map_err(io)?;
            let mut hasher = blake3::Hasher::new();
            // One byte more than announced is enough to refuse.
            let mut limited = from.take(size.saturating_add(1));
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0u64;
            loop {
                let n = limited.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                if got > size {
                    return Err(BlobError::WrongSize {
                        id,
                        announced: size,
                        got,
                    });
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io)?;
            }
            if got != size {
                return Err(BlobError::WrongSize {
                    id,
                    announced: size,
                    got,
                });
            }
            let hashed = BlobId(*hasher.finalize().as_bytes());
            if hashed != id {
                return Err(BlobError::WrongHash {
                    expected: id,
                    got: hashed,
                });
            }
            file.sync_all().map_err(io)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let path = self.path(&id);
        let folder = path.parent().expect("a blob has a folder");
        std::fs::create_dir_all(folder).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        File::open(folder).and_then(|f| f.sync_all()).map_err(io)?;
        Ok(())
    }

    /// The bytes of blob `id`, if held.
    pub fn read(&self, id: &BlobId) -> Option<Vec<u8>> {
        std::fs::read(self.path(id)).ok()
    }

    /// Removes blob `id` (nothing if it is not held).
    pub fn remove(&self, id: &BlobId) -> Result<(), BlobError> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BlobError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    /// Every blob held, by its name.
    pub fn list(&self) -> Vec<BlobId> {
        let mut out = Vec::new();
        let Ok(folders) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for folder in folders.filter_map(Result::ok) {
            let Ok(files) = std::fs::read_dir(folder.path()) else {
                continue;
            };
            for file in files.filter_map(Result::ok) {
                let mut id = [0u8; 32];
                let name = file.file_name();
                if hex::decode_to_slice(name.to_string_lossy().as_bytes(), &mut id).is_ok() {
                    out.push(BlobId(id));
                }
            }
        }
        out.sort();
        out
    }

    /// Hashes every blob held against its name.
    pub fn verify_all(&self) -> BlobCheck {
        let mut check = BlobCheck::default();
        for id in self.list() {
            match self.read(&id) {
                Some(bytes) if BlobId::of(&bytes) == id => check.sound += 1,
                _ => check.corrupt.push(id),
            }
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_kept_by_its_hash_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&dir.path().join("blobs")).unwrap();
        let bytes = b"a picture, say".repeat(10_000);
        let id = blobs.put(&bytes).unwrap();
        assert_eq!(id, BlobId::of(&bytes));
        assert!(blobs.has(&id));
        assert_eq!(blobs.read(&id).unwrap(), bytes);
        let name = id.to_string();
        assert!(blobs.path(&id).ends_with(format!("{}/{name}", &name[..2])));
        assert_eq!(blobs.put(&bytes).unwrap(), id, "kept once");
        assert_eq!(blobs.list(), vec![id]);
        blobs.remove(&id).unwrap();
        assert!(!blobs.has(&id));
    }

    #[test]
    fn wrong_hashes_and_sizes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&dir.path().join("blobs")).unwrap();
        let bytes = vec![7u8; 100_000];
        let id = BlobId::of(&bytes);
        let other = BlobId::of(b"something else");
        let n = bytes.len() as u64;
        assert!(matches!(
            blobs.receive(other, n, &bytes[..]),
            Err(BlobError::WrongHash { .. })
        ));
        assert!(matches!(
            blobs.receive(id, n - 1, &bytes[..]),
            Err(BlobError::WrongSize { got, .. }) if got == n
        ));
        assert!(matches!(
            blobs.receive(id, n + 1, &bytes[..]),
            Err(BlobError::WrongSize { got, .. }) if got == n
        ));
        // An endless sender is cut one byte past the announced size.
        let endless = std::io::repeat(1);
        assert!(matches!(
            blobs.receive(id, n, endless),
            Err(BlobError::WrongSize { got, .. }) if got == n + 1
        ));
        assert!(blobs.list().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0,
            "no temporary file is left"
        );
        blobs.receive(id, n, &bytes[..]).unwrap();
        assert_eq!(
            blobs.verify_all(),
            BlobCheck {
                sound: 1,
                corrupt: vec![]
            }
        );
    }

    #[test]
    fn a_crash_leaves_no_blob_under_its_name_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = Blobs::open(&root).unwrap();
        // A write cut short by a crash: only a temporary file.
        std::fs::write(root.join("tmp/half-written"), b"half").unwrap();
        let blobs_again = Blobs::open(&root).unwrap();
        assert_eq!(
            std::fs::read_dir(root.join("tmp")).unwrap().count(),
            1,
            "open alone sweeps nothing"
        );
        blobs_again.remove_leftovers().unwrap();
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(blobs_again.list().is_empty());
        let id = blobs.put(b"whole").unwrap();
        std::fs::write(blobs.path(&id), b"wholf").unwrap();
        assert_eq!(
            blobs.verify_all(),
            BlobCheck {
                sound: 0,
                corrupt: vec![id]
            }
        );
    }
}

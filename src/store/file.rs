//! The open database file, which the writer closes and opens again after a
//! failed write. redb stops at the first I/O error (a full disk, above
//! all) and refuses every later operation until the database is closed and
//! reopened, which also repairs it; readers meanwhile hear that the store
//! is recovering.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::{CACHE_SIZE, StoreError};

/// How long a reopen waits for readers still holding the failed database:
/// reads take milliseconds, so this is only ever reached by a stuck one.
pub const READERS_GRACE: Duration = Duration::from_secs(5);

/// The database, shared by the writer and every reader.
pub struct File {
    /// None while the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
    /// Where it is; None for an in-memory store (which has no I/O to fail).
    path: Option<PathBuf>,
}

impl File {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path) -> Result<File, StoreError> {
        let db = create(path)?;
        // Everything the node knows, mirrored logs and peers included: for
        // the owner's account only, like the key beside it.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::Database(redb::Error::Io(e)))?;
        }
        Ok(File {
            db: RwLock::new(Some(Arc::new(db))),
            path: Some(path.to_path_buf()),
        })
    }

    /// A database in memory.
    pub fn in_memory() -> Result<File, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_SIZE)
            .create_with_backend(redb::backends::InMemoryBackend::new())?;
        Ok(File {
            db: RwLock::new(Some(Arc::new(db))),
            path: None,
        })
    }

    /// The database, for one transaction.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Recovering)
    }

    /// Closes the database and opens it again (the writer calls this after
    /// a failed commit). On failure the store stays closed, and the next
    /// write tries again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut old) = slot.take() {
            // redb locks the file per open database: the old one must be
            // gone before the new one opens.
            let started = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if started.elapsed() < READERS_GRACE => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        }
        *slot = Some(Arc::new(create(path)?));
        Ok(())
    }

    /// Whether this is the file at a path (not in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// What an integrity check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every page's checksum holds.
    Sound,
    /// A page failed but redb repaired the file back to its last whole
    /// commit (a commit that skipped the disk may be gone; peers send it
    /// again).
    Repaired,
}

/// Checks every page of the store file at `path` against its checksum,
/// with the file to itself. A file redb cannot read, or whose checksums
/// fail beyond repair, is [`StoreError::Damaged`]; so is one whose reading
/// panics inside the database library.
pub fn check(path: &Path) -> Result<Integrity, StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let checked = crate::store::catch_panic(|| -> Result<Integrity, StoreError> {
        let mut db = match create(path) {
            Err(StoreError::Locked(p)) => return Err(StoreError::Locked(p)),
            Err(e) => return Err(damaged(e.to_string())),
            Ok(db) => db,
        };
        match db.check_integrity() {
            Ok(true) => Ok(Integrity::Sound),
            Ok(false) => Ok(Integrity::Repaired),
            Err(e) => Err(damaged(e.to_string())),
        }
    });
    checked.unwrap_or_else(|panic| {
        Err(damaged(format!(
            "the database could not make sense of a page: {panic}"
        )))
    })
}

fn create(path: &Path) -> Result<Database, StoreError> {
    match Database::builder().set_cache_size(CACHE_SIZE).create(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            Err(StoreError::Locked(path.to_path_buf()))
        }
        Err(e) => Err(StoreError::from(e).on_disk(path)),
    }
}

//! What can go wrong in the store, in words that say what to do.

use std::path::PathBuf;

use super::tables::SCHEMA_VERSION;
use crate::log::verify::BadEntry;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the store open.
    #[error(
        "the store {0} is in use by another capsule process (is `capsule up` running?); stop it, or choose another --data-dir"
    )]
    Locked(PathBuf),
    /// The store was written by a newer Capsule.
    #[error(
        "the store {path} has layout version {found}, newer than this capsule's {SCHEMA_VERSION}; upgrade capsule"
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// An entry was refused.
    #[error("refused {0}")]
    Rejected(BadEntry),
    /// The author's own log is forked; the node will not extend it.
    #[error(
        "your log is forked at seq {0}: two different entries were signed for it (was this identity used on two nodes, or a data dir restored from an old backup?). The node refuses to post until this is resolved"
    )]
    OwnLogForked(u64),
    /// This node may not sign the owner's next entry (see
    /// [`super::signer`]).
    #[error("{}", .0.refusal().unwrap_or_default())]
    NotSigning(super::signer::Signing),
    /// The record to post is too large.
    #[error("the post is {0} bytes encoded, over the limit of {max} bytes", max = crate::log::entry::MAX_PAYLOAD)]
    TooLarge(usize),
    /// A blob could not be kept.
    #[error(transparent)]
    Blob(#[from] super::blobs::BlobError),
    /// The store thread is gone (it panicked or the store was closed).
    #[error("the store's writer thread stopped")]
    Closed,
    /// A redb error: the disk or the file failed.
    #[error("store failure: {0}")]
    Database(#[from] redb::Error),
    /// The writer thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    Thread(std::io::Error),
    /// A write transaction failed; nothing of it, nor of the requests
    /// served with it, was written.
    #[error("nothing was written: {0}")]
    NotWritten(std::sync::Arc<StoreError>),
    /// The disk is full.
    #[error(
        "the disk holding {0} is full; free some space: the node writes again as soon as there is room, and nothing acknowledged before is lost"
    )]
    DiskFull(PathBuf),
    /// A write failed and the store is being opened again.
    #[error("the store is recovering from a failed write; try again in a moment")]
    Recovering,
    /// The store file fails its integrity check, or the database cannot
    /// read it.
    #[error(
        "the store {path} is damaged ({detail}). Move it aside (mv {path} {path}.damaged) and restore your log from a copy: an export (`capsule import FILE`), or a follower's mirror (on their node: `capsule export YOURKEY -o FILE`)"
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// An invariant of the stored data is broken.
    #[error("the store is damaged: {0}; run `capsule verify --store`")]
    Corrupt(String),
}

impl StoreError {
    /// This error, in words about the file at `path` where they help: a
    /// full disk says so.
    pub fn on_disk(self, path: &std::path::Path) -> StoreError {
        let full = |e: &std::io::Error| {
            e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
        };
        match &self {
            StoreError::Database(redb::Error::Io(e)) if full(e) => {
                StoreError::DiskFull(path.to_path_buf())
            }
            _ => self,
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

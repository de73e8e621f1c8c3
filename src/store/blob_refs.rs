//! Which entries reference which blobs, inside one write transaction.
//!
//! `blob_refs-1` has a row per (blob, entry) that names it; `blobs-1` a
//! row per blob with its announced size and media type (what the gateway
//! serves it as, and what a mirror fetches it against), whether one of the
//! owner's entries names it (never evicted), and whether it was evicted to
//! keep within the media budget (never fetched again). A blob whose last
//! referencing entry is deleted loses its row, and its file is removed
//! after the commit ([`BlobIndex::orphans`]).

use redb::{ReadableTable, Table, WriteTransaction};

use super::StoreError;
use super::blobs::BlobId;
use super::tables::{BLOB_REFS, BLOBS, BlobRefKey, BlobRow, log_key};
use crate::identity::AuthorKey;
use crate::log::record::{BlobRef, Record};

/// The blob tables of one write transaction.
pub(super) struct BlobIndex<'t> {
    refs: Table<'t, &'static BlobRefKey, ()>,
    rows: Table<'t, &'static [u8; 32], &'static [u8]>,
    /// Blobs that lost their last reference in this transaction.
    orphaned: Vec<BlobId>,
}

/// The blobs `payload` names: none for a record that names none or does
/// not decode (told from its first bytes when it can be).
fn named(payload: &[u8]) -> Vec<BlobRef> {
    if !Record::may_name_blobs(payload) {
        return Vec::new();
    }
    match Record::decode(payload) {
        Ok(record) => record.blobs().into_iter().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

fn ref_key(blob: &[u8; 32], author: &AuthorKey, seq: u64) -> BlobRefKey {
    let mut key = [0u8; 72];
    key[..32].copy_from_slice(blob);
    key[32..].copy_from_slice(&log_key(author, seq));
    key
}

impl<'t> BlobIndex<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(BlobIndex {
            refs: txn.open_table(BLOB_REFS)?,
            rows: txn.open_table(BLOBS)?,
            orphaned: Vec::new(),
        })
    }

    /// Notes the blobs `payload` (entry `seq` of `author`) names; `own`
    /// when the author is one of this node's identities.
    pub(super) fn add(
        &mut self,
        author: &AuthorKey,
        seq: u64,
        payload: &[u8],
        own: bool,
    ) -> Result<(), StoreError> {
        for blob in &named(payload) {
            self.refs.insert(&ref_key(&blob.hash, author, seq), ())?;
            let row = self
                .rows
                .get(&blob.hash)?
                .and_then(|v| BlobRow::decode(v.value()));
            let row = match row {
                Some(row) if row.own || !own => continue,
                Some(row) => BlobRow { own: true, ..row },
                None => BlobRow {
                    size: blob.size,
                    media_type: blob.media_type.clone(),
                    own,
                    evicted_us: 0,
                },
            };
            self.rows.insert(&blob.hash, &row.encode()[..])?;
        }
        Ok(())
    }

    /// Forgets that deleted entry `seq` of `author`, whose payload was
    /// `payload`, names its blobs; a blob left with no reference is an
    /// orphan.
    pub(super) fn remove(
        &mut self,
        author: &AuthorKey,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        for blob in &named(payload) {
            self.refs.remove(&ref_key(&blob.hash, author, seq))?;
            if !self.referenced(&blob.hash)? {
                self.rows.remove(&blob.hash)?;
                self.orphaned.push(BlobId(blob.hash));
            }
        }
        Ok(())
    }

    fn referenced(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let from = ref_key(hash, &AuthorKey([0; 32]), 0);
        let to = ref_key(hash, &AuthorKey([0xff; 32]), u64::MAX);
        Ok(self
            .refs
            .range::<&BlobRefKey>(&from..=&to)?
            .next()
            .is_some())
    }

    /// Marks blob `hash` evicted (its file is removed after the commit):
    /// false when it is the owner's, unknown, or already evicted.
    pub(super) fn evict(&mut self, hash: &[u8; 32], now_us: u64) -> Result<bool, StoreError> {
        let Some(row) = self
            .rows
            .get(hash)?
            .and_then(|v| BlobRow::decode(v.value()))
        else {
            return Ok(false);
        };
        if row.own || row.evicted_us != 0 {
            return Ok(false);
        }
        let row = BlobRow {
            evicted_us: now_us.max(1),
            ..row
        };
        self.rows.insert(hash, &row.encode()[..])?;
        self.orphaned.push(BlobId(*hash));
        Ok(true)
    }

    /// The blobs whose files are to go once the transaction commits: those
    /// that lost their last reference (and gained none back later in the
    /// transaction) and those evicted.
    pub(super) fn orphans(&mut self) -> Result<Vec<BlobId>, StoreError> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.orphaned) {
            let evicted = self
                .rows
                .get(&id.0)?
                .and_then(|v| BlobRow::decode(v.value()))
                .is_some_and(|r| r.evicted_us != 0);
            if evicted || !self.referenced(&id.0)? {
                out.push(id);
            }
        }
        Ok(out)
    }
}

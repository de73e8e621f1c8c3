//! The store's read queries. Each opens its own read transaction, from
//! any non-async thread: redb gives it a consistent snapshot, and it never
//! waits for the writer.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::tables::*;
use super::{ForkProof, Head, Scanned, Store, StoreError, decode_stored};
use crate::identity::AuthorKey;
use crate::log::entry::{ENTRY_LEN, Entry, EntryId};

impl Store {
    /// The head of `author`'s log.
    pub fn head(&self, author: &AuthorKey) -> Result<Option<Head>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        Ok(heads
            .get(&author.0)?
            .map(|v| HeadRow::decode(v.value()).head))
    }

    /// Every author held, with their heads, in key order.
    pub fn heads(&self) -> Result<Vec<(AuthorKey, Head)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        let mut out = Vec::with_capacity(heads.len()? as usize);
        for row in heads.iter()? {
            let (k, v) = row?;
            out.push((AuthorKey(*k.value()), HeadRow::decode(v.value()).head));
        }
        Ok(out)
    }

    /// Entry `seq` of `author`'s log.
    pub fn entry(&self, author: &AuthorKey, seq: u64) -> Result<Option<Entry>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        entries
            .get(&log_key(author, seq))?
            .map(|v| decode_stored(v.value()))
            .transpose()
    }

    /// The seq of the owner's entry that post request `request` published,
    /// if this store remembers it.
    pub fn published_by(&self, request: &[u8; 16]) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let requests = txn.open_table(POST_REQUESTS)?;
        Ok(requests.get(request)?.map(|v| v.value()))
    }

    /// The entry with id `id`.
    pub fn entry_by_id(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let ids = txn.open_table(ENTRY_IDS)?;
        let Some(key) = ids.get(&id.0)?.map(|v| *v.value()) else {
            return Ok(None);
        };
        let entries = txn.open_table(ENTRIES)?;
        entries
            .get(&key)?
            .map(|v| decode_stored(v.value()))
            .transpose()
    }

    /// Calls `f` for every entry of `author` from `from` on, in seq order,
    /// with its payload when the store holds it and it was not deleted.
    /// Stops early when `f` returns false. Reads one consistent snapshot.
    pub fn scan(
        &self,
        author: &AuthorKey,
        from: u64,
        mut f: impl FnMut(Scanned) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db()?.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let payloads = txn.open_table(PAYLOADS)?;
        let tombstones = txn.open_table(TOMBSTONES)?;
        let (start, end) = (log_key(author, from), log_key(author, u64::MAX));
        for row in entries.range::<&LogKey>(&start..=&end)? {
            let (key, value) = row?;
            let entry = decode_stored(value.value())?;
            let deleted_by = tombstones.get(key.value())?.map(|v| v.value());
            let payload = match deleted_by {
                Some(_) => None,
                None => payloads
                    .get(&entry.payload_hash())?
                    .map(|row| split_payload_row(row.value()).1.to_vec()),
            };
            if !f(Scanned {
                entry,
                payload,
                deleted_by,
            }) {
                break;
            }
        }
        Ok(())
    }

    /// The seq of the newest profile record of `author` this store took in.
    pub fn profile_seq(&self, author: &AuthorKey) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let profiles = txn.open_table(PROFILES)?;
        Ok(profiles.get(&author.0)?.map(|v| v.value()))
    }

    /// Appends to `out` the 217 bytes of each of up to `limit` entries of
    /// `author` from seq `from` on, as stored (no payloads read); returns how
    /// many.
    pub fn raw_entries(
        &self,
        author: &AuthorKey,
        from: u64,
        limit: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let (start, end) = (log_key(author, from), log_key(author, u64::MAX));
        let mut n = 0;
        for row in entries.range::<&LogKey>(&start..=&end)? {
            if n == limit {
                break;
            }
            out.extend_from_slice(row?.1.value());
            n += 1;
        }
        Ok(n)
    }

    /// Up to `limit` replies this store holds to entry `seq` of `author`, as
    /// (author, seq), ordered by replier then seq.
    pub fn replies(
        &self,
        author: &AuthorKey,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(AuthorKey, u64)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let replies = txn.open_table(REPLIES)?;
        let target = log_key(author, seq);
        let (mut start, mut end) = ([0u8; 80], [0xffu8; 80]);
        start[..40].copy_from_slice(&target);
        end[..40].copy_from_slice(&target);
        let mut out = Vec::new();
        for row in replies.range::<&ReplyKey>(&start..=&end)?.take(limit) {
            let (key, _) = row?;
            let key = key.value();
            let author = AuthorKey(key[40..72].try_into().expect("32 bytes"));
            out.push((
                author,
                u64::from_be_bytes(key[72..].try_into().expect("8 bytes")),
            ));
        }
        Ok(out)
    }

    /// The certificate path of entry `seq` of `author` to the log's head:
    /// head first, the entry last, O(log n) entries (see
    /// [`crate::log::certificate`]). None if the store does not hold it.
    pub fn certificate(
        &self,
        author: &AuthorKey,
        seq: u64,
    ) -> Result<Option<Vec<Entry>>, StoreError> {
        let Some(head) = self.head(author)? else {
            return Ok(None);
        };
        if seq == 0 || seq > head.seq {
            return Ok(None);
        }
        let txn = self.db()?.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut failure = None;
        let path = crate::log::certificate::certificate_path(seq, head.seq, |n| {
            match entries.get(&log_key(author, n)) {
                Ok(Some(v)) => decode_stored(v.value()).map_err(|e| failure = Some(e)).ok(),
                Ok(None) => None,
                Err(e) => {
                    failure = Some(e.into());
                    None
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(path)
    }

    /// Whether entry `seq` of `author` was deleted, and by which entry.
    pub fn deleted_by(&self, author: &AuthorKey, seq: u64) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let tombstones = txn.open_table(TOMBSTONES)?;
        Ok(tombstones.get(&log_key(author, seq))?.map(|v| v.value()))
    }

    /// The payload with blake3 hash `hash`, if held.
    pub fn payload(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let payloads = txn.open_table(PAYLOADS)?;
        Ok(payloads
            .get(hash)?
            .map(|row| split_payload_row(row.value()).1.to_vec()))
    }

    /// What the store knows of blob `hash`: None while no entry names it.
    pub fn blob_row(&self, hash: &[u8; 32]) -> Result<Option<BlobRow>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let rows = txn.open_table(BLOBS)?;
        Ok(rows.get(hash)?.and_then(|v| BlobRow::decode(v.value())))
    }

    /// Every blob some entry names, with what the store knows of it.
    pub fn blob_rows(&self) -> Result<Vec<([u8; 32], BlobRow)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let rows = txn.open_table(BLOBS)?;
        let mut out = Vec::new();
        for row in rows.iter()? {
            let (k, v) = row?;
            if let Some(row) = BlobRow::decode(v.value()) {
                out.push((*k.value(), row));
            }
        }
        Ok(out)
    }

    /// Bytes of the payloads held: redb's count of the table's stored
    /// bytes, less each row's key (32) and reference count (4).
    pub fn payload_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let payloads = txn.open_table(PAYLOADS)?;
        let stored = payloads.stats()?.stored_bytes();
        Ok(stored.saturating_sub(payloads.len()? * 36))
    }

    /// The authors of the entries that name blob `hash`.
    pub fn blob_namers(&self, hash: &[u8; 32]) -> Result<Vec<AuthorKey>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let refs = txn.open_table(BLOB_REFS)?;
        let (mut from, mut to) = ([0u8; 72], [0xffu8; 72]);
        from[..32].copy_from_slice(hash);
        to[..32].copy_from_slice(hash);
        let mut out: Vec<AuthorKey> = Vec::new();
        for row in refs.range::<&BlobRefKey>(&from..=&to)? {
            let (key, _) = row?;
            let author = AuthorKey(key.value()[32..64].try_into().expect("32 bytes"));
            if out.last() != Some(&author) {
                out.push(author);
            }
        }
        Ok(out)
    }

    /// Whether this store may sign `author`'s next entry.
    pub fn signing(&self, author: &AuthorKey) -> Result<super::signer::Signing, StoreError> {
        use super::signer::{MARKS_KEY, SignerRow, standing};
        let txn = self.db()?.begin_read()?;
        let marks_kept = txn
            .open_table(META)?
            .get(MARKS_KEY)?
            .is_none_or(|v| v.value() != [0]);
        let row = txn
            .open_table(SIGNERS)?
            .get(&author.0)?
            .map(|v| SignerRow::decode(v.value()));
        let holds_log = txn.open_table(HEADS)?.get(&author.0)?.is_some();
        Ok(standing(row, marks_kept, holds_log))
    }

    /// The authors the owner blocks or mutes, in key order.
    pub fn blocks(&self) -> Result<Vec<(AuthorKey, super::blocks::BlockRow)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for row in blocks.iter()? {
            let (k, v) = row?;
            out.push((
                AuthorKey(*k.value()),
                super::blocks::BlockRow::decode(v.value()),
            ));
        }
        Ok(out)
    }

    /// The authors the owner blocks.
    pub fn blocked(&self) -> Result<std::collections::HashSet<AuthorKey>, StoreError> {
        Ok(self
            .blocks()?
            .into_iter()
            .filter(|(_, r)| r.kind == super::blocks::Block::Blocked)
            .map(|(a, _)| a)
            .collect())
    }

    /// Whether the owner blocks `author`.
    pub fn is_blocked(&self, author: &AuthorKey) -> Result<bool, StoreError> {
        let txn = self.db()?.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        Ok(blocks.get(&author.0)?.is_some_and(|v| {
            super::blocks::BlockRow::decode(v.value()).kind == super::blocks::Block::Blocked
        }))
    }

    /// Every fork proof held.
    pub fn forks(&self) -> Result<Vec<ForkProof>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let forks = txn.open_table(FORKS)?;
        let mut out = Vec::new();
        for row in forks.iter()? {
            let (_, v) = row?;
            out.push(decode_proof(v.value())?);
        }
        Ok(out)
    }

    /// The proof that `author` forked their log, if the store holds one.
    pub fn fork_of(&self, author: &AuthorKey) -> Result<Option<ForkProof>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let forks = txn.open_table(FORKS)?;
        let Some(v) = forks.get(&author.0)? else {
            return Ok(None);
        };
        Ok(Some(decode_proof(v.value())?))
    }

    /// The newest change counter (0 when nothing was ever stored).
    pub fn change_counter(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let changes = txn.open_table(CHANGES)?;
        Ok(changes.last()?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// The authors whose heads changed after change counter `since`, with
    /// their heads now, oldest change first, and the counter to ask from next
    /// time. One read, however many entries were appended meanwhile.
    pub fn changed_since(&self, since: u64) -> Result<(Vec<(AuthorKey, Head)>, u64), StoreError> {
        let txn = self.db()?.begin_read()?;
        let changes = txn.open_table(CHANGES)?;
        let heads = txn.open_table(HEADS)?;
        let mut out = Vec::new();
        let mut last = since;
        for row in changes.range(since.saturating_add(1)..)? {
            let (counter, author) = row?;
            last = counter.value();
            let author = AuthorKey(*author.value());
            let head = heads
                .get(&author.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("{author} changed but has no head")))?;
            out.push((author, HeadRow::decode(head.value()).head));
        }
        let now = changes.last()?.map_or(since, |(k, _)| k.value());
        Ok((out, last.max(now)))
    }
}

/// A `forks-1` row: the two entries, 217 bytes each.
fn decode_proof(row: &[u8; 2 * ENTRY_LEN]) -> Result<ForkProof, StoreError> {
    let (first, second) = row.split_at(ENTRY_LEN);
    Ok(ForkProof {
        first: decode_stored(first.try_into().expect("217 bytes"))?,
        second: decode_stored(second.try_into().expect("217 bytes"))?,
    })
}

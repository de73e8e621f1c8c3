//! The store: every log this node holds, in one redb file.
//!
//! - [`tables`]: every table definition (versioned names).
//! - [`actor`]: the writer thread, which owns all writes and groups concurrent
//!   requests into one transaction each.
//! - [`compose`]: what the owner publishes (posts, replies, deletions,
//!   profile, follows), checked, then signed by the writer.
//!
//! Reads open their own read transactions from any (non-async) thread: redb
//! gives them a consistent snapshot and they never wait for the writer.
//! Async code reaches the store through `spawn_blocking`, never directly.

pub mod actor;
pub mod compose;
pub mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use crate::identity::{AuthorKey, Identity};
use crate::log::entry::{ENTRY_LEN, Entry, EntryId};
use crate::log::verify::{BadEntry, VerifiedEntry};
pub use actor::{AddressUpdate, InterestChange};
use tables::*;

pub use actor::{AppendReport, ImportMsg};

/// Memory redb may use to cache pages. Its default (1 GiB) would let the
/// cache of a large store take most of a small VPS; 64 MiB holds the hot
/// pages (heads, recent entries, the upper levels of every B-tree).
pub const CACHE_SIZE: usize = 64 * 1024 * 1024;

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
    /// The record to post is too large.
    #[error("the post is {0} bytes encoded, over the limit of {max} bytes", max = crate::log::entry::MAX_PAYLOAD)]
    TooLarge(usize),
    /// The store thread is gone (it panicked or the store was closed).
    #[error("the store's writer thread stopped")]
    Closed,
    /// A redb error: the disk or the file failed.
    #[error("store failure: {0}")]
    Database(#[from] redb::Error),
    /// An invariant of the stored data is broken.
    #[error("the store is damaged: {0}; run `capsule verify --store`")]
    Corrupt(String),
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

/// Where a log stands: its newest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the newest entry.
    pub seq: u64,
    /// Its id.
    pub id: EntryId,
}

/// A log's head as [`Store::head_entries`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEntry {
    /// The head entry.
    pub entry: Entry,
    /// Its id.
    pub id: EntryId,
    /// The change counter of the author's latest change.
    pub change: u64,
}

/// One entry as [`Store::scan`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The entry.
    pub entry: Entry,
    /// Its payload, when held and not deleted.
    pub payload: Option<Vec<u8>>,
    /// The seq of the Delete record that deleted it, if any.
    pub deleted_by: Option<u64>,
}

/// Proof that an author signed two different entries for one seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkProof {
    /// The entry the store held first.
    pub first: Entry,
    /// The conflicting entry.
    pub second: Entry,
}

/// A handle on the open store. Dropping it stops the writer thread after it
/// has finished every request already sent, and closes the file.
pub struct Store {
    db: Arc<Database>,
    id: [u8; 16],
    writer: Option<mpsc::Sender<actor::Request>>,
    thread: Option<JoinHandle<()>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    commits: tokio::sync::watch::Receiver<u64>,
}

impl Store {
    /// Opens (or creates) the store file at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = match Database::builder().set_cache_size(CACHE_SIZE).create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(path.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        };
        Self::start(db, path)
    }

    /// A store held in memory only (redb's in-memory backend): the same
    /// tables and writer, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_SIZE)
            .create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::start(db, Path::new(":memory:"))
    }

    fn start(db: Database, path: &Path) -> Result<Store, StoreError> {
        actor::prepare(&db, path)?;
        let id = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let v = meta.get(STORE_ID_KEY)?;
            v.and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                .ok_or_else(|| StoreError::Corrupt("the store id is missing".into()))?
        };
        let db = Arc::new(db);
        let (writer, requests) = mpsc::channel();
        let thread_db = Arc::clone(&db);
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (committed, commits) = tokio::sync::watch::channel(0);
        let thread_generation = actor::Generation {
            counter: Arc::clone(&generation),
            committed,
        };
        let thread = std::thread::Builder::new()
            .name("capsule-store".into())
            .spawn(move || actor::run(&thread_db, requests, &thread_generation))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the store thread: {e}")))?;
        Ok(Store {
            db,
            id,
            writer: Some(writer),
            thread: Some(thread),
            generation,
            commits,
        })
    }

    /// Wakes at every commit of this store's writer (the value is the
    /// generation, see [`Store::generation`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.clone()
    }

    /// A number that grows with every commit of this process's writer:
    /// anything derived from the store at generation G is still current
    /// while the generation is G. In memory only; starts at 0.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> actor::Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(make(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Appends verified entries (of any authors) after checking their links
    /// against the store. Valid entries are committed, durably, before this
    /// returns; the report says what happened to each.
    pub fn append(&self, entries: Vec<VerifiedEntry>) -> Result<AppendReport, StoreError> {
        self.request(|reply| actor::Request::Append {
            entries,
            durable: true,
            reply,
        })
    }

    /// Appends entries mirrored from a peer, like [`Store::append`], but
    /// without waiting for the disk: after a crash they are fetched again. A
    /// later durable commit (any post, [`Store::flush`]) makes them durable;
    /// a crash before that rolls the store back to a consistent earlier state.
    pub fn append_mirrored(&self, entries: Vec<VerifiedEntry>) -> Result<AppendReport, StoreError> {
        self.request(|reply| actor::Request::Append {
            entries,
            durable: false,
            reply,
        })
    }

    /// Makes every earlier commit durable. Before this node tells a peer its
    /// change counter, so a counter it hands out can never be rolled back.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.request(|reply| actor::Request::Flush { reply })
    }

    /// This store's random identity, made when the file was created.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Adds `author` to the mirror set; false if it was there already.
    pub fn mirror(&self, author: AuthorKey) -> Result<bool, StoreError> {
        self.interest(author, InterestChange::Mirror)
    }

    /// Removes `author` from the mirror set (its entries stay; a followed
    /// author is no longer followed); false if it was not there.
    pub fn unmirror(&self, author: AuthorKey) -> Result<bool, StoreError> {
        self.interest(author, InterestChange::Unmirror)
    }

    /// Changes the mirror set; whether `author`'s place in it changed.
    pub fn interest(&self, author: AuthorKey, change: InterestChange) -> Result<bool, StoreError> {
        self.request(|reply| actor::Request::Mirror {
            author,
            change,
            reply,
        })
    }

    /// The authors the owner follows, in key order.
    pub fn followed(&self) -> Result<Vec<AuthorKey>, StoreError> {
        let txn = self.db.begin_read()?;
        let interest = txn.open_table(INTEREST)?;
        let mut out = Vec::new();
        for row in interest.iter()? {
            let (k, v) = row?;
            if MirrorReason::from_byte(v.value()) == MirrorReason::Follow {
                out.push(AuthorKey(*k.value()));
            }
        }
        Ok(out)
    }

    /// Changes what the node knows of a peer's address (durably).
    pub fn update_address(&self, peer: AuthorKey, update: AddressUpdate) -> Result<(), StoreError> {
        self.request(|reply| actor::Request::Address {
            peer: peer.0,
            update,
            reply,
        })
    }

    /// What the node knows of `peer`'s address, if anything.
    pub fn address(&self, peer: &AuthorKey) -> Result<Option<AddressRow>, StoreError> {
        let txn = self.db.begin_read()?;
        let addresses = txn.open_table(ADDRESSES)?;
        Ok(addresses
            .get(&peer.0)?
            .and_then(|v| AddressRow::decode(v.value())))
    }

    /// Every peer address the node knows, in key order.
    pub fn addresses(&self) -> Result<Vec<(AuthorKey, AddressRow)>, StoreError> {
        let txn = self.db.begin_read()?;
        let addresses = txn.open_table(ADDRESSES)?;
        let mut out = Vec::new();
        for row in addresses.iter()? {
            let (k, v) = row?;
            if let Some(row) = AddressRow::decode(v.value()) {
                out.push((AuthorKey(*k.value()), row));
            }
        }
        Ok(out)
    }

    /// The mirror set, in key order.
    pub fn mirrors(&self) -> Result<Vec<AuthorKey>, StoreError> {
        let txn = self.db.begin_read()?;
        let interest = txn.open_table(INTEREST)?;
        let mut out = Vec::new();
        for row in interest.iter()? {
            out.push(AuthorKey(*row?.0.value()));
        }
        Ok(out)
    }

    /// What this node remembers of a peer.
    pub fn peer(&self, peer: &[u8; 32]) -> Result<Option<PeerRow>, StoreError> {
        let txn = self.db.begin_read()?;
        let peers = txn.open_table(PEERS)?;
        Ok(peers.get(peer)?.and_then(|v| PeerRow::decode(v.value())))
    }

    /// Remembers what a sync session with `peer` established (durably).
    pub fn set_peer(&self, peer: [u8; 32], row: PeerRow) -> Result<(), StoreError> {
        self.request(|reply| actor::Request::SetPeer { peer, row, reply })
    }

    /// The heads of `authors` (those held), each with its head entry and the
    /// change counter of its latest change, and the store's change counter,
    /// all from one snapshot.
    pub fn head_entries(&self, authors: &[AuthorKey]) -> Result<(Vec<HeadEntry>, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        let entries = txn.open_table(ENTRIES)?;
        let changes = txn.open_table(CHANGES)?;
        let mut out = Vec::with_capacity(authors.len());
        for author in authors {
            let Some(row) = heads.get(&author.0)? else {
                continue;
            };
            let row = HeadRow::decode(row.value());
            let entry = entries
                .get(&log_key(author, row.head.seq))?
                .ok_or_else(|| StoreError::Corrupt(format!("head entry of {author} is missing")))?;
            out.push(HeadEntry {
                id: row.head.id,
                entry: decode_stored(entry.value())?,
                change: row.change,
            });
        }
        let counter = changes.last()?.map_or(0, |(k, _)| k.value());
        Ok((out, counter))
    }

    /// Signs `payload` as the next entry of `identity`'s log and commits it.
    /// Returns only once the entry is durable. The writer thread picks the seq,
    /// so concurrent posts can never fork the log.
    pub fn publish(
        &self,
        identity: &Arc<Identity>,
        payload: Vec<u8>,
        timestamp_us: u64,
    ) -> Result<Entry, StoreError> {
        if payload.len() as u64 > crate::log::entry::MAX_PAYLOAD {
            return Err(StoreError::TooLarge(payload.len()));
        }
        let identity = Arc::clone(identity);
        self.request(|reply| actor::Request::Publish {
            identity,
            payload,
            timestamp_us,
            reply,
        })
    }

    /// Imports a stream of verified batches in one transaction: either every
    /// entry is stored, or (if a batch is refused, or the sender stops without
    /// [`ImportMsg::Commit`]) nothing is.
    pub fn import(&self, batches: mpsc::Receiver<ImportMsg>) -> Result<AppendReport, StoreError> {
        self.request(|reply| actor::Request::Import { batches, reply })
    }

    /// The head of `author`'s log.
    pub fn head(&self, author: &AuthorKey) -> Result<Option<Head>, StoreError> {
        let txn = self.db.begin_read()?;
        let heads = txn.open_table(HEADS)?;
        Ok(heads
            .get(&author.0)?
            .map(|v| HeadRow::decode(v.value()).head))
    }

    /// Every author held, with their heads, in key order.
    pub fn heads(&self) -> Result<Vec<(AuthorKey, Head)>, StoreError> {
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        entries
            .get(&log_key(author, seq))?
            .map(|v| decode_stored(v.value()))
            .transpose()
    }

    /// The entry with id `id`.
    pub fn entry_by_id(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
        let tombstones = txn.open_table(TOMBSTONES)?;
        Ok(tombstones.get(&log_key(author, seq))?.map(|v| v.value()))
    }

    /// The payload with blake3 hash `hash`, if held.
    pub fn payload(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let payloads = txn.open_table(PAYLOADS)?;
        Ok(payloads
            .get(hash)?
            .map(|row| split_payload_row(row.value()).1.to_vec()))
    }

    /// Every fork proof held.
    pub fn forks(&self) -> Result<Vec<ForkProof>, StoreError> {
        let txn = self.db.begin_read()?;
        let forks = txn.open_table(FORKS)?;
        let mut out = Vec::new();
        for row in forks.iter()? {
            let (_, v) = row?;
            let v = v.value();
            out.push(ForkProof {
                first: decode_stored(v[..ENTRY_LEN].try_into().expect("217 bytes"))?,
                second: decode_stored(v[ENTRY_LEN..].try_into().expect("217 bytes"))?,
            });
        }
        Ok(out)
    }

    /// The proof that `author` forked their log, if the store holds one.
    pub fn fork_of(&self, author: &AuthorKey) -> Result<Option<ForkProof>, StoreError> {
        let txn = self.db.begin_read()?;
        let forks = txn.open_table(FORKS)?;
        let Some(v) = forks.get(&author.0)? else {
            return Ok(None);
        };
        let v = v.value();
        Ok(Some(ForkProof {
            first: decode_stored(v[..ENTRY_LEN].try_into().expect("217 bytes"))?,
            second: decode_stored(v[ENTRY_LEN..].try_into().expect("217 bytes"))?,
        }))
    }

    /// The newest change counter (0 when nothing was ever stored).
    pub fn change_counter(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let changes = txn.open_table(CHANGES)?;
        Ok(changes.last()?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// The authors whose heads changed after change counter `since`, with
    /// their heads now, oldest change first, and the counter to ask from next
    /// time. One read, however many entries were appended meanwhile.
    pub fn changed_since(&self, since: u64) -> Result<(Vec<(AuthorKey, Head)>, u64), StoreError> {
        let txn = self.db.begin_read()?;
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

    /// Finishes every request sent, stops the writer and closes the file.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            thread.join().map_err(|_| StoreError::Closed)?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn decode_stored(bytes: &[u8; ENTRY_LEN]) -> Result<Entry, StoreError> {
    Entry::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored entry does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_a_newer_capsule_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        Store::open(&path).unwrap().close().unwrap();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes()[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).err().expect("refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 2, .. }));
        assert!(err.to_string().contains("upgrade capsule"));
    }

    /// A new store in a temporary directory, and two identities.
    fn two_authors() -> (tempfile::TempDir, Store, Arc<Identity>, Arc<Identity>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let alice = Arc::new(Identity::from_seed([1; 32]));
        let bob = Arc::new(Identity::from_seed([2; 32]));
        (dir, store, alice, bob)
    }

    fn post(text: &str) -> Vec<u8> {
        crate::log::record::Record::post(text).encode().unwrap()
    }

    #[test]
    fn the_changelog_keeps_one_row_per_author() {
        let (_dir, store, alice, bob) = two_authors();
        assert_eq!(store.changed_since(0).unwrap(), (vec![], 0));
        for i in 0..5 {
            store.publish(&alice, post(&format!("a{i}")), 1).unwrap();
        }
        let mark = store.change_counter().unwrap();
        store.publish(&bob, post("b"), 1).unwrap();
        store.publish(&alice, post("a5"), 1).unwrap();
        let (changed, now) = store.changed_since(mark).unwrap();
        let authors: Vec<_> = changed.iter().map(|(a, h)| (*a, h.seq)).collect();
        assert_eq!(authors, vec![(bob.author(), 1), (alice.author(), 6)]);
        assert_eq!(now, store.change_counter().unwrap());
        assert_eq!(store.changed_since(now).unwrap(), (vec![], now));
        // Everything since the start: both authors once each.
        assert_eq!(store.changed_since(0).unwrap().0.len(), 2);
        let txn = store.db.begin_read().unwrap();
        assert_eq!(txn.open_table(CHANGES).unwrap().len().unwrap(), 2);
    }

    #[test]
    fn a_deletion_keeps_another_authors_identical_payload() {
        let (_dir, store, alice, bob) = two_authors();
        let a = store.publish(&alice, post("hello"), 1).unwrap();
        let b = store.publish(&bob, post("hello"), 1).unwrap();
        assert_eq!(a.payload_hash(), b.payload_hash());
        let delete = crate::log::record::Record::Delete { seq: 1 }
            .encode()
            .unwrap();
        store.publish(&alice, delete.clone(), 2).unwrap();
        assert_eq!(store.deleted_by(&alice.author(), 1).unwrap(), Some(2));
        assert_eq!(
            store.payload(&b.payload_hash()).unwrap(),
            Some(post("hello"))
        );
        store.publish(&bob, delete, 2).unwrap();
        assert_eq!(store.payload(&b.payload_hash()).unwrap(), None);
    }

    #[test]
    fn concurrent_posts_share_commits_and_never_fork() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let identity = Arc::new(Identity::from_seed([4; 32]));
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (store, identity) = (&store, &identity);
                scope.spawn(move || {
                    for i in 0..25 {
                        store
                            .publish(identity, format!("{t}-{i}").into_bytes(), 1)
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.head(&identity.author()).unwrap().unwrap().seq, 200);
        assert!(store.forks().unwrap().is_empty());
        let summary = crate::archive::audit::verify_store(&store).unwrap();
        assert_eq!(summary.entries, 200);
    }
}

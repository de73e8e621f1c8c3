//! The store: every log this node holds, in one redb file.
//!
//! - [`tables`]: every table definition (versioned names).
//! - [`writer`]: the writer thread, which owns all writes and groups concurrent
//!   requests into one transaction each; `request`: what it is asked.
//! - `apply`: what one write transaction does to the tables: entries,
//!   forks, tombstones, indexes, the owner's next entry.
//! - `file`: the database, which the writer reopens after a failed write.
//! - `error`: [`StoreError`], what can go wrong, in words that say what to do.
//! - `read`: the read queries (heads, entries, scans, replies, certificates,
//!   forks, the changelog), each on its own read transaction.
//! - [`signer`]: whether this node may sign its owner's next entry (the
//!   log began or was restored here, is being restored, or is signed
//!   elsewhere).
//! - [`blocks`]: the authors the owner blocks or mutes.
//! - [`blobs`]: attachments' bytes, content-addressed files beside the
//!   database, written whole or not at all.
//! - [`holders`]: which peers hold the own and followed logs, as of the
//!   last session each finished.
//! - `changes`: what a request asks of the mirror set and the address book.
//! - [`fediverse`]: followers, deliveries, replies and notes of other
//!   ActivityPub servers, in tables of their own beside the logs.
//! - [`compose`]: what the owner publishes (posts, replies, deletions,
//!   profile, follows), checked, then signed by the writer.
//!
//! Reads open their own read transactions from any (non-async) thread: redb
//! gives them a consistent snapshot and they never wait for the writer.
//! Async code reaches the store through `spawn_blocking`, never directly.

mod apply;
mod blob_refs;
pub mod blobs;
pub mod blocks;
mod changes;
pub mod compose;
mod error;
pub mod fediverse;
mod file;
pub mod holders;
mod read;
mod request;
pub mod signer;
pub mod tables;
pub mod writer;

pub use error::StoreError;
pub use file::{Integrity, check as check_integrity};

/// Runs `f`, turning a panic inside it (the database library meeting a page
/// it cannot make sense of) into the panic's message, reported by the
/// caller in its own words: the default report is kept quiet meanwhile.
/// For a command's own thread, before the node starts its others.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database library failed".to_string())
    })
}

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use crate::identity::{AuthorKey, Identity};
use crate::log::entry::{ENTRY_LEN, Entry, EntryId};
use crate::log::verify::VerifiedEntry;
use tables::*;
pub use writer::{AddressUpdate, InterestChange};

pub use apply::AppendReport;
pub use writer::ImportMsg;

/// Memory redb may use to cache pages. Its default (1 GiB) would let the
/// cache of a large store take most of a small VPS; 64 MiB holds the hot
/// pages (heads, recent entries, the upper levels of every B-tree).
pub const CACHE_SIZE: usize = 64 * 1024 * 1024;

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

/// How old an unreferenced blob must be to be swept: `capsule post` keeps
/// its pictures before the entry that names them exists (and may open the
/// store itself in between).
pub const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the blob files no row of `blobs-1` accounts for (a blob whose
/// last reference went while a crash stopped its removal, a fetch that
/// finished after its entry was deleted, a post never sent) once older
/// than [`SWEEP_AFTER`], and those evicted.
fn sweep_unreferenced(db: &Database, blobs: &blobs::Blobs) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    let rows = match txn.open_table(BLOBS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    for id in blobs.list() {
        let keep = rows
            .get(&id.0)?
            .and_then(|v| BlobRow::decode(v.value()))
            .is_some_and(|r| r.evicted_us == 0);
        let old = std::fs::metadata(blobs.path(&id))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() >= SWEEP_AFTER);
        if !keep && old {
            blobs.remove(&id)?;
        }
    }
    Ok(())
}

/// A handle on the open store. Dropping it stops the writer thread after it
/// has finished every request already sent, and closes the file.
pub struct Store {
    file: Arc<file::File>,
    blobs: blobs::Blobs,
    /// The blob folder of a store held in memory, removed with it.
    _scratch: Option<tempfile::TempDir>,
    id: [u8; 16],
    writer: Option<mpsc::Sender<writer::Request>>,
    thread: Option<JoinHandle<()>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    commits: tokio::sync::watch::Receiver<u64>,
}

impl Store {
    /// Opens (or creates) the store file at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::start(file::File::open(path)?, path)
    }

    /// A store held in memory only (redb's in-memory backend): the same
    /// tables and writer, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::start(file::File::in_memory()?, Path::new(":memory:"))
    }

    /// The database, for one transaction. The fediverse keeps its tables
    /// in the same file, in transactions of its own.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.file.get()
    }

    fn start(file: file::File, path: &Path) -> Result<Store, StoreError> {
        let db = file.get()?;
        writer::prepare(&db, path)?;
        let (blobs, scratch) = match path.parent().filter(|_| file.path().is_some()) {
            Some(dir) => (blobs::Blobs::open(&dir.join("blobs"))?, None),
            None => {
                let scratch = tempfile::tempdir().map_err(StoreError::Thread)?;
                (
                    blobs::Blobs::open(&scratch.path().join("blobs"))?,
                    Some(scratch),
                )
            }
        };
        blobs.remove_leftovers()?;
        sweep_unreferenced(&db, &blobs)?;
        let id = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let v = meta.get(STORE_ID_KEY)?;
            v.and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                .ok_or_else(|| StoreError::Corrupt("the store id is missing".into()))?
        };
        drop(db);
        let file = Arc::new(file);
        let (writer, requests) = mpsc::channel();
        let thread_file = Arc::clone(&file);
        let thread_blobs = blobs.clone();
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (committed, commits) = tokio::sync::watch::channel(0);
        let thread_generation = writer::Generation {
            counter: Arc::clone(&generation),
            committed,
        };
        let thread = std::thread::Builder::new()
            .name("capsule-store".into())
            .spawn(move || writer::run(&thread_file, &thread_blobs, requests, &thread_generation))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            file,
            blobs,
            _scratch: scratch,
            id,
            writer: Some(writer),
            thread: Some(thread),
            generation,
            commits,
        })
    }

    /// Moves the generation on without a commit: a blob arrived, and pages
    /// kept at the old generation may say it is not held.
    pub fn bump_generation(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> writer::Request,
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
        self.request(|reply| writer::Request::Append {
            entries,
            durable: true,
            reply,
        })
        .inspect(said_if_signed_elsewhere)
    }

    /// Appends entries mirrored from a peer, like [`Store::append`], but
    /// without waiting for the disk: after a crash they are fetched again. A
    /// later durable commit (any post, [`Store::flush`]) makes them durable;
    /// a crash before that rolls the store back to a consistent earlier state.
    pub fn append_mirrored(&self, entries: Vec<VerifiedEntry>) -> Result<AppendReport, StoreError> {
        self.request(|reply| writer::Request::Append {
            entries,
            durable: false,
            reply,
        })
        .inspect(said_if_signed_elsewhere)
    }

    /// Keeps fork proofs handed over by a peer, each checked first with
    /// [`crate::log::verify::verify_fork_proof`]; the report's `forks` are
    /// the ones newly kept (durably).
    pub fn keep_proofs(&self, proofs: Vec<ForkProof>) -> Result<AppendReport, StoreError> {
        for p in &proofs {
            crate::log::verify::verify_fork_proof(&p.first, &p.second)
                .map_err(StoreError::Rejected)?;
        }
        self.request(|reply| writer::Request::Proofs { proofs, reply })
    }

    /// Changes whether this store may sign `author`'s next entry; where it
    /// stands after (durably).
    pub fn change_signer(
        &self,
        author: AuthorKey,
        change: signer::SignerChange,
    ) -> Result<signer::Signing, StoreError> {
        self.request(|reply| writer::Request::Signer {
            author,
            change,
            reply,
        })
    }

    /// Blocks, mutes, or lifts either for `author`; whether anything
    /// changed (durably).
    pub fn change_block(
        &self,
        author: AuthorKey,
        change: blocks::BlockChange,
    ) -> Result<bool, StoreError> {
        self.request(|reply| writer::Request::Block {
            author,
            change,
            reply,
        })
    }

    /// Makes every earlier commit durable. Before this node tells a peer its
    /// change counter, so a counter it hands out can never be rolled back.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.request(|reply| writer::Request::Flush { reply })
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
        self.request(|reply| writer::Request::Mirror {
            author,
            change,
            reply,
        })
    }

    /// The authors the owner follows, in key order.
    pub fn followed(&self) -> Result<Vec<AuthorKey>, StoreError> {
        let txn = self.db()?.begin_read()?;
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
        self.request(|reply| writer::Request::Address {
            peer: peer.0,
            update,
            reply,
        })
    }

    /// What the node knows of `peer`'s address, if anything.
    pub fn address(&self, peer: &AuthorKey) -> Result<Option<AddressRow>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let addresses = txn.open_table(ADDRESSES)?;
        Ok(addresses
            .get(&peer.0)?
            .and_then(|v| AddressRow::decode(v.value())))
    }

    /// Every peer address the node knows, in key order.
    pub fn addresses(&self) -> Result<Vec<(AuthorKey, AddressRow)>, StoreError> {
        let txn = self.db()?.begin_read()?;
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
        let txn = self.db()?.begin_read()?;
        let interest = txn.open_table(INTEREST)?;
        let mut out = Vec::new();
        for row in interest.iter()? {
            out.push(AuthorKey(*row?.0.value()));
        }
        Ok(out)
    }

    /// The authors this node asks peers for: the mirror set without the
    /// authors the owner blocks.
    pub fn wanted(&self) -> Result<Vec<AuthorKey>, StoreError> {
        let blocked = self.blocked()?;
        let mut out = self.mirrors()?;
        out.retain(|a| !blocked.contains(a));
        Ok(out)
    }

    /// What this node remembers of a peer.
    pub fn peer(&self, peer: &[u8; 32]) -> Result<Option<PeerRow>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let peers = txn.open_table(PEERS)?;
        Ok(peers.get(peer)?.and_then(|v| PeerRow::decode(v.value())))
    }

    /// Remembers what a sync session with `peer` over the `shared` authors
    /// (sorted) established (durably): the checkpoint, and that the peer
    /// now holds those of the node's own and followed logs up to its heads.
    pub fn set_peer(
        &self,
        peer: [u8; 32],
        row: PeerRow,
        shared: Vec<AuthorKey>,
    ) -> Result<(), StoreError> {
        let seen_us = crate::clock::now_us();
        self.request(|reply| writer::Request::SetPeer {
            peer,
            row,
            shared,
            seen_us,
            reply,
        })
    }

    /// The heads of `authors` (those held), each with its head entry and the
    /// change counter of its latest change, and the store's change counter,
    /// all from one snapshot.
    pub fn head_entries(&self, authors: &[AuthorKey]) -> Result<(Vec<HeadEntry>, u64), StoreError> {
        let txn = self.db()?.begin_read()?;
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
        self.publish_request(identity, payload, Vec::new(), timestamp_us, None)
    }

    /// [`Store::publish`], keeping `blobs` (the bytes the payload names)
    /// first, and remembering that request `request` published the entry
    /// (see [`Store::published_by`]).
    pub fn publish_request(
        &self,
        identity: &Arc<Identity>,
        payload: Vec<u8>,
        blobs: Vec<Vec<u8>>,
        timestamp_us: u64,
        request: Option<[u8; 16]>,
    ) -> Result<Entry, StoreError> {
        if payload.len() as u64 > crate::log::entry::MAX_PAYLOAD {
            return Err(StoreError::TooLarge(payload.len()));
        }
        let identity = Arc::clone(identity);
        self.request(|reply| writer::Request::Publish {
            identity,
            payload,
            blobs,
            timestamp_us,
            request,
            reply,
        })
    }

    /// The blob folder.
    pub fn blobs(&self) -> &blobs::Blobs {
        &self.blobs
    }

    /// Evicts mirrored blobs (never the owner's): their rows say so, so
    /// they are not fetched again, and their files go after the commit.
    /// How many were evicted.
    pub fn evict(&self, hashes: Vec<[u8; 32]>) -> Result<u64, StoreError> {
        let now_us = crate::clock::now_us();
        self.request(|reply| writer::Request::Evict {
            hashes,
            now_us,
            reply,
        })
    }

    /// Imports a stream of verified batches in one transaction: either every
    /// entry is stored, or (if a batch is refused, or the sender stops without
    /// [`ImportMsg::Commit`]) nothing is.
    pub fn import(&self, batches: mpsc::Receiver<ImportMsg>) -> Result<AppendReport, StoreError> {
        self.request(|reply| writer::Request::Import { batches, reply })
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

/// The node's log says so when a peer brought an entry of the owner's that
/// this node did not sign: it has stopped signing.
fn said_if_signed_elsewhere(report: &AppendReport) {
    if let Some((author, seq)) = report.signed_elsewhere {
        tracing::error!(
            %author,
            seq,
            "{}",
            signer::Signing::Elsewhere { seq, since_us: 0 }
                .refusal()
                .unwrap_or_default()
        );
    }
}

fn decode_stored(bytes: &[u8; ENTRY_LEN]) -> Result<Entry, StoreError> {
    Entry::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored entry does not decode: {e}")))
}

#[cfg(test)]
mod tests;

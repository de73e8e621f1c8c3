//! The writer thread: the only place the store is written.
//!
//! Requests arrive over a channel. The thread takes every request already
//! waiting (up to [`MAX_GROUP`]) and serves them in one write transaction, so
//! concurrent writers share one commit (one fsync) instead of queueing for
//! one each. Every reply is sent only after that commit is durable.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use super::StoreError;
use super::apply::{AppendReport, Tables};
use super::blobs::Blobs;
pub use super::changes::{AddressUpdate, InterestChange};
use super::file::File;
use super::signer::Signing;
use super::tables::*;
use crate::log::entry::Entry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most requests served by one transaction: bounds the latency a request can
/// add to the others of its group.
pub const MAX_GROUP: usize = 256;

/// Longest a commit may stay off the disk. Mirrored entries are committed
/// without waiting for the disk (a crash loses them, and peers send them
/// again); but a long transfer would then lose all it had verified, so the
/// first commit this long after one that skipped the disk waits for it, and
/// a writer left idle with such commits makes them durable at this age.
pub const DURABLE_WITHIN: Duration = Duration::from_secs(2);

use super::request::Reply;
pub use super::request::{ImportMsg, Request};

/// Creates every table and checks the layout version.
pub fn prepare(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
        match found {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()[..])?;
                meta.insert(super::signer::MARKS_KEY, &[1][..])?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(&v[..])
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("the schema version is not 4 bytes".into()))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
            }
        }
        if meta.get(super::signer::MARKS_KEY)?.is_none() {
            // Made before marks were kept: a log it holds began in it.
            meta.insert(super::signer::MARKS_KEY, &[0][..])?;
        }
        if meta.get(STORE_ID_KEY)?.is_none() {
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            meta.insert(STORE_ID_KEY, &id[..])?;
        }
        drop(meta);
        drop(Tables::open(&txn)?);
        drop(txn.open_table(INTEREST)?);
        drop(txn.open_table(PEERS)?);
        drop(txn.open_table(REPLIES)?);
        drop(txn.open_table(PROFILES)?);
        drop(txn.open_table(ADDRESSES)?);
        drop(txn.open_table(POST_REQUESTS)?);
        drop(txn.open_table(HOLDERS)?);
        super::fediverse::create(&txn)?;
    }
    txn.commit()?;
    Ok(())
}

/// The writer's commit count, as an atomic for quick reads and a watch for
/// those who wait on it.
pub struct Generation {
    /// The count.
    pub counter: Arc<AtomicU64>,
    /// Told the new count after each commit.
    pub committed: tokio::sync::watch::Sender<u64>,
}

impl Generation {
    fn bump(&self) {
        let now = self.counter.fetch_add(1, Ordering::Release) + 1;
        self.committed.send_replace(now);
    }
}

/// The writer loop: runs until every sender is gone. A failed commit (a
/// full disk, say) fails its group's requests; the database is then closed
/// and opened again before the next group, and the loop goes on: writing
/// resumes as soon as the disk has room.
pub fn run(file: &File, blobs: &Blobs, requests: Receiver<Request>, generation: &Generation) {
    // Since when commits have skipped the disk, if any have since the last
    // durable one.
    let mut pending: Option<Instant> = None;
    let mut failed = false;
    loop {
        let first = match pending {
            None => match requests.recv() {
                Ok(first) => first,
                Err(_) => break,
            },
            Some(since) => {
                match requests.recv_timeout(DURABLE_WITHIN.saturating_sub(since.elapsed())) {
                    Ok(first) => first,
                    Err(RecvTimeoutError::Timeout) => Request::Flush {
                        reply: oneshot::channel().0,
                    },
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut group = Vec::new();
        let mut import = None;
        match first {
            Request::Import { batches, reply } => import = Some((batches, reply)),
            other => group.push(other),
        }
        while import.is_none() && group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(Request::Import { batches, reply }) => import = Some((batches, reply)),
                Ok(other) => group.push(other),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let on_disk = |e: StoreError| match file.path() {
            Some(path) => e.on_disk(path),
            None => e,
        };
        let db = if failed {
            // Uncommitted non-durable work died with the failed database;
            // what a crash would lose, and peers send it again.
            pending = None;
            file.reopen().and_then(|()| file.get())
        } else {
            file.get()
        };
        let db = match db {
            Ok(db) => {
                if failed {
                    tracing::info!("the store was opened again after a failed write");
                }
                failed = false;
                db
            }
            Err(e) => {
                let cause = Arc::new(on_disk(e));
                for request in group {
                    fail(request, &cause);
                }
                if let Some((_, reply)) = import {
                    let _ = reply.send(Err(StoreError::NotWritten(Arc::clone(&cause))));
                }
                failed = true;
                continue;
            }
        };
        if !group.is_empty() {
            let due = pending.is_some_and(|since| since.elapsed() >= DURABLE_WITHIN);
            let context = (blobs, generation);
            match serve_group(&db, group, pending.is_some(), due, context, &on_disk) {
                Ok(true) => pending = pending.or_else(|| Some(Instant::now())),
                Ok(false) => pending = None,
                Err(cause) => {
                    tracing::warn!(error = %cause, "a write failed; the store reopens before the next one");
                    failed = true;
                }
            }
        }
        if let Some((batches, reply)) = import {
            let result = serve_import(&db, blobs, batches).map_err(on_disk);
            failed |= result.is_err();
            generation.bump();
            let _ = reply.send(result);
            // An import commits durably, and so carries earlier commits.
            pending = None;
        }
    }
}

enum Answer {
    Report(Reply<AppendReport>, AppendReport),
    Entry(Reply<Entry>, Result<Entry, StoreError>),
    Changed(Reply<bool>, bool),
    Signing(Reply<Signing>, Signing),
    Done(Reply<()>),
    Count(Reply<u64>, u64),
}

/// Fails `request` because of `cause`: nothing of it was written.
fn fail(request: Request, cause: &Arc<StoreError>) {
    let err = || StoreError::NotWritten(Arc::clone(cause));
    match request {
        Request::Append { reply, .. }
        | Request::Import { reply, .. }
        | Request::Proofs { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Publish { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Evict { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Mirror { reply, .. } | Request::Block { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Signer { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Address { reply, .. }
        | Request::SetPeer { reply, .. }
        | Request::Flush { reply } => {
            let _ = reply.send(Err(err()));
        }
    }
}

/// Serves a group in one transaction, durably if any request asks for it or
/// `due` (earlier commits skipped the disk long enough); returns whether a
/// non-durable commit is still pending after it, or, when the commit failed (every request of
/// the group is then answered with it), the cause in the words of
/// `classify`.
fn serve_group(
    db: &Database,
    group: Vec<Request>,
    pending: bool,
    due: bool,
    (blobs, generation): (&Blobs, &Generation),
    classify: &dyn Fn(StoreError) -> StoreError,
) -> Result<bool, Arc<StoreError>> {
    let mut answers = Vec::with_capacity(group.len());
    // A durable commit is needed if any request asks for one; the group's
    // commit then also makes every earlier non-durable commit durable.
    let durable = due
        || group
            .iter()
            .any(|r| !matches!(r, Request::Append { durable: false, .. }));
    if group.iter().all(|r| matches!(r, Request::Flush { .. })) && !pending {
        for r in group {
            if let Request::Flush { reply } = r {
                let _ = reply.send(Ok(()));
            }
        }
        return Ok(false);
    }
    let mut requests = group.into_iter();
    let mut orphans = Vec::new();
    let result = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut tables = Tables::open(&txn)?;
            for request in requests.by_ref() {
                match request {
                    Request::Append { entries, reply, .. } => {
                        let report = tables.append_all(&entries)?;
                        answers.push(Answer::Report(reply, report));
                    }
                    Request::Mirror {
                        author,
                        change,
                        reply,
                    } => {
                        let mut interest = txn.open_table(INTEREST)?;
                        let now = interest
                            .get(&author.0)?
                            .map(|v| MirrorReason::from_byte(v.value()));
                        let next = change.apply(now);
                        match next {
                            Some(r) => interest.insert(&author.0, r as u8)?,
                            None => interest.remove(&author.0)?,
                        };
                        answers.push(Answer::Changed(reply, next != now));
                    }
                    Request::Address {
                        peer,
                        update,
                        reply,
                    } => {
                        let mut addresses = txn.open_table(ADDRESSES)?;
                        let row = addresses
                            .get(&peer)?
                            .and_then(|v| AddressRow::decode(v.value()));
                        match update.apply(row) {
                            Some(row) => addresses.insert(&peer, &row.encode()[..])?,
                            None => addresses.remove(&peer)?,
                        };
                        answers.push(Answer::Done(reply));
                    }
                    Request::SetPeer {
                        peer,
                        row,
                        shared,
                        seen_us,
                        reply,
                    } => {
                        txn.open_table(PEERS)?.insert(&peer, &row.encode()[..])?;
                        super::holders::note(&txn, &tables, peer, &shared, seen_us)?;
                        answers.push(Answer::Done(reply));
                    }
                    Request::Flush { reply } => answers.push(Answer::Done(reply)),
                    Request::Evict {
                        hashes,
                        now_us,
                        reply,
                    } => {
                        let mut evicted = 0;
                        for hash in &hashes {
                            evicted += u64::from(tables.blobs.evict(hash, now_us)?);
                        }
                        answers.push(Answer::Count(reply, evicted));
                    }
                    Request::Proofs { proofs, reply } => {
                        let mut report = AppendReport::default();
                        for p in &proofs {
                            if tables.keep_proof(&p.first, &p.second)? {
                                report.forks.push((p.first.author(), p.first.seq()));
                            }
                        }
                        answers.push(Answer::Report(reply, report));
                    }
                    Request::Signer {
                        author,
                        change,
                        reply,
                    } => {
                        let standing = tables.change_signer(author, change)?;
                        answers.push(Answer::Signing(reply, standing));
                    }
                    Request::Block {
                        author,
                        change,
                        reply,
                    } => {
                        let changed = tables.change_block(author, change)?;
                        answers.push(Answer::Changed(reply, changed));
                    }
                    Request::Publish {
                        identity,
                        payload,
                        blobs: bytes,
                        timestamp_us,
                        request,
                        reply,
                    } => {
                        // A request already served (sent again while the
                        // first was in flight) gets the entry it published.
                        let earlier = match request {
                            Some(id) => txn.open_table(POST_REQUESTS)?.get(&id)?.map(|v| v.value()),
                            None => None,
                        };
                        if let Some(seq) = earlier
                            && let Some(entry) = tables.stored(&identity.author(), seq)?
                        {
                            answers.push(Answer::Entry(reply, Ok(entry)));
                            continue;
                        }
                        let kept = bytes.iter().try_for_each(|b| blobs.put(b).map(drop));
                        let entry = match kept {
                            Ok(()) => tables.publish(&identity, payload, timestamp_us),
                            Err(e) => Err(e.into()),
                        };
                        if let (Ok(entry), Some(id)) = (&entry, request) {
                            super::apply::remember_request(&txn, id, entry.seq())?;
                        }
                        answers.push(Answer::Entry(reply, entry));
                    }
                    Request::Import { .. } => unreachable!("imports are served alone"),
                }
            }
            orphans = tables.finish()?;
        }
        txn.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            // Only now that no committed entry names them.
            for id in &orphans {
                if let Err(e) = blobs.remove(id) {
                    tracing::warn!(blob = %id, error = %e, "an unreferenced blob stays until the next start");
                }
            }
            // Before any reply: whoever hears of this commit sees a new
            // generation (readers' caches key on it).
            generation.bump();
            for answer in answers {
                match answer {
                    Answer::Report(reply, report) => {
                        let _ = reply.send(Ok(report));
                    }
                    Answer::Entry(reply, entry) => {
                        let _ = reply.send(entry);
                    }
                    Answer::Changed(reply, changed) => {
                        let _ = reply.send(Ok(changed));
                    }
                    Answer::Signing(reply, standing) => {
                        let _ = reply.send(Ok(standing));
                    }
                    Answer::Done(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                    Answer::Count(reply, n) => {
                        let _ = reply.send(Ok(n));
                    }
                }
            }
            Ok(!durable)
        }
        Err(e) => {
            // Nothing of the group was committed: every request fails alike,
            // those served and those not reached.
            let cause = Arc::new(classify(e));
            for request in requests {
                fail(request, &cause);
            }
            for answer in answers {
                let err = || StoreError::NotWritten(Arc::clone(&cause));
                match answer {
                    Answer::Report(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                    Answer::Entry(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                    Answer::Changed(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                    Answer::Signing(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                    Answer::Done(reply) => {
                        let _ = reply.send(Err(err()));
                    }
                    Answer::Count(reply, _) => {
                        let _ = reply.send(Err(err()));
                    }
                }
            }
            Err(cause)
        }
    }
}

fn serve_import(
    db: &Database,
    blobs: &Blobs,
    batches: Receiver<ImportMsg>,
) -> Result<AppendReport, StoreError> {
    let txn = db.begin_write()?;
    let mut report = AppendReport::default();
    let mut orphans = Vec::new();
    let committed = {
        let mut tables = Tables::open(&txn)?;
        let committed = loop {
            match batches.recv() {
                Ok(ImportMsg::Batch(entries)) => {
                    let part = tables.append_all(&entries)?;
                    report.accepted += part.accepted;
                    report.duplicates += part.duplicates;
                    report.forks.extend(part.forks);
                    report.refused_forked += part.refused_forked;
                    report.refused_blocked += part.refused_blocked;
                    report.signed_elsewhere = report.signed_elsewhere.or(part.signed_elsewhere);
                    if part.rejected.is_some() {
                        report.rejected = part.rejected;
                        break false;
                    }
                }
                Ok(ImportMsg::Commit) => break true,
                // The reader stopped (bad archive, or interrupted): keep nothing.
                Err(_) => break false,
            }
        };
        if committed {
            orphans = tables.finish()?;
        }
        committed
    };
    if committed {
        txn.commit()?;
        for id in &orphans {
            let _ = blobs.remove(id);
        }
    } else {
        txn.abort()?;
        report.accepted = 0;
    }
    Ok(report)
}

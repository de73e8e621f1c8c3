//! Whole-log verification: of an archive file, offline, or of every log in a
//! store. Both feed [`StreamVerifier`] from a reader thread, so parsing and
//! reading hide behind the signature checks that run on every core.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use crate::archive::{ArchiveError, ArchiveReader};
use crate::identity::AuthorKey;
use crate::log::verify::Unverified;
use crate::log::verify::{BadEntry, STREAM_CHUNK, StreamVerifier, Summary, VerifiedEntry};
use crate::store::{Scanned, Store, StoreError};
use std::path::Path;

use indicatif::ProgressBar;

/// Why an archive (or store) failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The archive's framing is broken.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An entry is invalid.
    #[error(transparent)]
    Entry(#[from] BadEntry),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Entries of the owner's own log have lost their payloads, which only
    /// a deletion may remove: the owner's node is the one copy that must
    /// hold them all.
    #[error(
        "{count} of your own entries have lost their payloads (seq {}{}); only a deletion may remove one. Restore them from a copy: import an export of your log, or a follower's mirror of it",
        .first.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        if *.count > .first.len() as u64 { ", …" } else { "" }
    )]
    MissingPayloads {
        /// How many.
        count: u64,
        /// The first few seqs.
        first: Vec<u64>,
    },
}

/// Seqs named when own payloads are missing.
const MISSING_NAMED: usize = 10;

impl From<std::io::Error> for VerifyError {
    fn from(e: std::io::Error) -> Self {
        VerifyError::Archive(ArchiveError::Io(e))
    }
}

/// Where verified entries go (to be stored), for callers that keep them.
pub type Sink<'a> = &'a mut dyn FnMut(Vec<VerifiedEntry>) -> Result<(), VerifyError>;

type Chunk = Vec<Unverified>;

/// Verifies a whole archive, handing each verified batch to `sink` in order
/// when there is one (without one, entries are only checked and counted).
///
/// A reader thread parses frames while the verifier checks signatures on every
/// core, so parsing and hashing hide behind the signature checks. `progress`,
/// if given, advances with the bytes parsed. The first bad entry in file order
/// is the one reported, even when the framing breaks later.
pub fn verify_archive<R: Read + Send + 'static>(
    input: R,
    progress: Option<&ProgressBar>,
    mut sink: Option<Sink<'_>>,
) -> Result<Summary, VerifyError> {
    let mut reader = ArchiveReader::new(input)?;
    let read = Arc::new(AtomicU64::new(0));
    let parsed = Arc::clone(&read);
    let (chunks, incoming) = mpsc::sync_channel::<Result<Chunk, ArchiveError>>(2);
    let parser = std::thread::spawn(move || {
        loop {
            let mut chunk = Vec::with_capacity(STREAM_CHUNK);
            let mut outcome = Ok(true);
            while chunk.len() < STREAM_CHUNK {
                match reader.next_entry() {
                    Ok(Some(item)) => chunk.push(item),
                    Ok(None) => {
                        outcome = Ok(false);
                        break;
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            parsed.store(reader.offset(), Ordering::Relaxed);
            let more = matches!(outcome, Ok(true));
            if !chunk.is_empty() && chunks.send(Ok(chunk)).is_err() {
                return;
            }
            if let Err(e) = outcome {
                let _ = chunks.send(Err(e));
                return;
            }
            if !more {
                return;
            }
        }
    });
    let mut verifier = match sink {
        Some(_) => StreamVerifier::new(),
        None => StreamVerifier::checking_only(),
    };
    let mut failure = None;
    for message in incoming.iter() {
        match message {
            Ok(chunk) => {
                if let Some(bar) = progress {
                    bar.set_position(read.load(Ordering::Relaxed));
                }
                let batch = verifier.push_chunk(chunk)?;
                if let Some(sink) = sink.as_mut()
                    && !batch.is_empty()
                {
                    sink(batch)?;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(incoming);
    let _ = parser.join();
    // Entries before the broken framing are verified first, so a bad entry
    // earlier in the file is the one named.
    let (summary, last) = verifier.finish()?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(sink) = sink.as_mut()
        && !last.is_empty()
    {
        sink(last)?;
    }
    Ok(summary)
}

/// Verifies the archive file at `path`, with a progress bar on a terminal,
/// handing the verified entries to `sink` if one is given.
pub fn verify_file(path: &Path, sink: Option<Sink<'_>>) -> Result<Summary, VerifyError> {
    let file = File::open(path)?;
    let bar = crate::progress::bytes(file.metadata()?.len(), "verifying");
    let result = verify_archive(file, Some(&bar), sink);
    bar.finish_and_clear();
    result
}

/// Verifies every log in `store` from seq 1 to its head, with a progress bar
/// on a terminal. Fork proofs the store holds are not checked here: the
/// caller reports them (see [`Store::forks`]).
pub fn verify_store(store: &Store) -> Result<Summary, VerifyError> {
    verify_store_of(store, None)
}

/// [`verify_store`], and, for the log of `owner` (the node's own), that every
/// entry not deleted still has its payload.
pub fn verify_store_of(store: &Store, owner: Option<AuthorKey>) -> Result<Summary, VerifyError> {
    let (mut missing, mut first) = (0u64, Vec::new());
    let heads = store.heads()?;
    let total = heads.iter().map(|(_, h)| h.seq).sum();
    let bar = crate::progress::bar(total, "verifying");
    let (chunks, incoming) = mpsc::sync_channel::<Result<Chunk, StoreError>>(2);
    let result: Result<Summary, VerifyError> = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut chunk = Vec::with_capacity(STREAM_CHUNK);
            let chunks = chunks;
            for (author, head) in &heads {
                let mut last = None;
                let own = owner == Some(*author);
                let (missing, first) = (&mut missing, &mut first);
                let scanned = store.scan(
                    author,
                    1,
                    |Scanned {
                         entry,
                         payload,
                         deleted_by,
                     }| {
                        last = Some(entry.id());
                        if own && payload.is_none() && deleted_by.is_none() {
                            *missing += 1;
                            if first.len() < MISSING_NAMED {
                                first.push(entry.seq());
                            }
                        }
                        chunk.push((entry, payload));
                        if chunk.len() == STREAM_CHUNK {
                            let full =
                                std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
                            return chunks.send(Ok(full)).is_ok();
                        }
                        true
                    },
                );
                let broken = match scanned {
                    Err(e) => Some(e),
                    Ok(()) if last != Some(head.id) => Some(StoreError::Corrupt(format!(
                        "the head of {author} (seq {}) is not its newest entry",
                        head.seq
                    ))),
                    Ok(()) => None,
                };
                if let Some(e) = broken {
                    let _ = chunks.send(Err(e));
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = chunks.send(Ok(chunk));
            }
        });
        let mut verifier = StreamVerifier::checking_only();
        let mut done = 0;
        for message in incoming.iter() {
            let chunk = message?;
            done += chunk.len() as u64;
            verifier.push_chunk(chunk)?;
            bar.set_position(done);
        }
        Ok(verifier.finish()?.0)
    });
    bar.finish_and_clear();
    let summary = result?;
    if missing > 0 {
        return Err(VerifyError::MissingPayloads {
            count: missing,
            first,
        });
    }
    Ok(summary)
}

/// What [`audit_blobs`] found of a store's blobs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobAudit {
    /// Blobs held whose bytes hash to their name.
    pub sound: u64,
    /// Blobs held whose bytes do not: damaged on disk.
    pub corrupt: Vec<crate::store::blobs::BlobId>,
    /// Blobs the owner's own entries name that are not held: lost, since
    /// the owner's node is where they come from.
    pub missing_own: Vec<crate::store::blobs::BlobId>,
    /// Blobs other authors' entries name that are not held yet (a mirror
    /// fetches them from peers).
    pub not_fetched: u64,
    /// Blobs of other authors evicted to keep within the media budget.
    pub evicted: u64,
}

impl BlobAudit {
    /// Whether nothing is damaged or lost.
    pub fn healthy(&self) -> bool {
        self.corrupt.is_empty() && self.missing_own.is_empty()
    }
}

/// Hashes every blob the store holds against its name, and tells the
/// blobs its entries name but it lacks: the owner's apart from others'.
pub fn audit_blobs(store: &Store) -> Result<BlobAudit, StoreError> {
    use crate::store::blobs::BlobId;
    let check = store.blobs().verify_all();
    let mut audit = BlobAudit {
        sound: check.sound,
        corrupt: check.corrupt,
        ..BlobAudit::default()
    };
    for (hash, row) in store.blob_rows()? {
        let id = BlobId(hash);
        if row.evicted_us != 0 {
            audit.evicted += 1;
        } else if !store.blobs().has(&id) {
            if row.own {
                audit.missing_own.push(id);
            } else {
                audit.not_fetched += 1;
            }
        }
    }
    Ok(audit)
}

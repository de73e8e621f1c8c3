//! Verification of entries: signatures, payloads and links.
//!
//! Signatures follow the ZIP-215 rules (cofactored equation, canonical `s`,
//! any point encoding), as implemented by `ed25519-consensus`, so a single
//! check and a batch check reach the same verdict on every entry, whatever
//! else shares the batch: every node of the mesh agrees on which entries are
//! valid.
//!
//! Work is split the way the costs fall: signature checks and hashing run in
//! parallel batches ([`verify_batch`]), the cheap link checks run in order
//! ([`ChainChecker`]). [`StreamVerifier`] joins the two for whole logs.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc;

use ed25519_consensus::{Signature, VerificationKey, VerificationKeyBytes, batch};
use rayon::prelude::*;

use crate::identity::AuthorKey;
use crate::log::entry::{Entry, EntryId};
use crate::log::lipmaa::lipmaa;

/// Entries per signature batch. `ed25519-consensus` coalesces the terms of
/// one key, so a batch of one author's consecutive entries costs little more
/// than one multiscalar multiplication; past a few hundred the gain flattens
/// while the work a bad entry wastes grows.
pub const SIGNATURE_BATCH: usize = 256;

/// An entry with its payload when present, not yet verified.
pub type Unverified = (Entry, Option<Vec<u8>>);

type Verdicts = Vec<Result<EntryId, Invalid>>;

/// Entries a [`StreamVerifier`] gathers before it verifies them in parallel:
/// enough batches to keep every core busy, small enough to bound memory.
pub const STREAM_CHUNK: usize = 16 * SIGNATURE_BATCH;

/// Why an entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The signature does not verify under the author's key (ZIP-215).
    #[error("bad signature")]
    BadSignature,
    /// The payload does not hash to the payload hash, or has the wrong length.
    #[error("payload mismatch: the payload does not match the hash the entry signs")]
    PayloadMismatch,
    /// The backlink is not the id of the previous entry.
    #[error("broken backlink: it is not the id of entry {0}")]
    BrokenBacklink(u64),
    /// The skiplink is not the id of entry lipmaa(seq).
    #[error("wrong skiplink: it is not the id of entry {0}")]
    WrongSkiplink(u64),
    /// Two valid entries with the same author and seq.
    #[error("fork: entries {first} and {second} are both signed for this seq")]
    Fork {
        /// The entry seen first.
        first: EntryId,
        /// The conflicting entry.
        second: EntryId,
    },
    /// The same entry appears twice.
    #[error("duplicate entry")]
    Duplicate,
    /// Entries of a log are missing before this one.
    #[error("missing entries: expected seq {expected} next")]
    Gap {
        /// The seq that should have come next.
        expected: u64,
    },
    /// The author's log is forked at the given seq, so the node refuses
    /// every further entry of it. The fork proof is kept.
    #[error(
        "the author's log is forked at seq {0}; this node keeps the proof and refuses the author's further entries"
    )]
    AuthorForked(u64),
    /// Two entries offered as a fork proof are of different authors or
    /// seqs.
    #[error("a fork proof's two entries are of different authors or seqs")]
    NotAProof,
    /// An author's entries are not contiguous in the stream.
    #[error("the author's entries are not together: the author appeared earlier")]
    AuthorRepeated,
}

/// An invalid entry, named by author and seq.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {seq} of author {author}: {reason}")]
pub struct BadEntry {
    /// The entry's author.
    pub author: AuthorKey,
    /// The entry's seq.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: Invalid,
}

impl BadEntry {
    fn of(entry: &Entry, reason: Invalid) -> Self {
        BadEntry {
            author: entry.author(),
            seq: entry.seq(),
            reason,
        }
    }
}

/// An entry whose signature and payload (when present) have been verified.
///
/// Only this module makes them, so a function that takes a `VerifiedEntry`
/// cannot be handed an unchecked one. Links are checked where the previous
/// entries are known: by [`ChainChecker`] or the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    entry: Entry,
    id: EntryId,
    payload: Option<Vec<u8>>,
}

impl VerifiedEntry {
    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The entry's id, computed once.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The payload, if it came with the entry.
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
}

/// Checks one entry's signature under the ZIP-215 rules.
pub fn signature_valid(entry: &Entry) -> bool {
    let Ok(key) = VerificationKey::try_from(entry.author().0) else {
        return false;
    };
    key.verify(&Signature::from(entry.signature()), &entry.signed_message())
        .is_ok()
}

/// Whether `payload` is the one the entry signs.
pub fn payload_matches(entry: &Entry, payload: &[u8]) -> bool {
    payload.len() as u64 == entry.payload_len()
        && blake3::hash(payload).as_bytes() == &entry.payload_hash()
}

/// Verifies one entry and its payload.
pub fn verify_one(entry: Entry, payload: Option<Vec<u8>>) -> Result<VerifiedEntry, BadEntry> {
    if !signature_valid(&entry) {
        return Err(BadEntry::of(&entry, Invalid::BadSignature));
    }
    if let Some(p) = &payload
        && !payload_matches(&entry, p)
    {
        return Err(BadEntry::of(&entry, Invalid::PayloadMismatch));
    }
    Ok(VerifiedEntry {
        id: entry.id(),
        entry,
        payload,
    })
}

/// The random source of one batch verification: ChaCha12 seeded from the OS.
///
/// The batch equation takes a random 128-bit coefficient per signature; they
/// only make a forged batch fail with overwhelming probability and never
/// change the verdict on valid entries. Drawing each from the OS would cost a
/// system call per signature.
pub fn batch_rng() -> rand_chacha::ChaCha12Rng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha12Rng::from_rng(rand_core::OsRng).expect("the OS random source is available")
}

/// Checks the signatures of `entries` as one batch. The verdict is the same as
/// checking each alone (ZIP-215); on failure the singles find the bad ones.
/// Returns one flag per entry.
pub fn signatures_valid(entries: &[Entry]) -> Vec<bool> {
    signatures_valid_iter(entries.iter(), entries.len())
}

fn signatures_valid_iter<'a>(
    entries: impl Iterator<Item = &'a Entry> + Clone,
    len: usize,
) -> Vec<bool> {
    let mut verifier = batch::Verifier::new();
    for e in entries.clone() {
        let message = e.signed_message();
        let key = VerificationKeyBytes::from(e.author().0);
        verifier.queue((key, Signature::from(e.signature()), &message[..]));
    }
    // A key that is not a curve point fails the batch, and the singles then
    // name it.
    if verifier.verify(batch_rng()).is_ok() {
        vec![true; len]
    } else {
        entries.map(signature_valid).collect()
    }
}

/// Verifies signatures and payloads of many entries in parallel batches,
/// keeping their order. On failure, names the first bad entry in that order.
pub fn verify_batch(items: Vec<Unverified>) -> Result<Vec<VerifiedEntry>, (usize, BadEntry)> {
    let verdicts = verify_each(&items);
    items
        .into_iter()
        .zip(verdicts.into_iter().flatten())
        .enumerate()
        .map(|(i, ((entry, payload), verdict))| match verdict {
            Ok(id) => Ok(VerifiedEntry { entry, id, payload }),
            Err(reason) => Err((i, BadEntry::of(&entry, reason))),
        })
        .collect()
}

/// The id of each item, or why it is invalid, in order and grouped by
/// signature batch; the batches run in parallel. Only ids travel back, so no
/// entry or payload is copied.
fn verify_each(items: &[Unverified]) -> Vec<Verdicts> {
    items
        .par_chunks(SIGNATURE_BATCH)
        .map(|batch| {
            let valid = signatures_valid_iter(batch.iter().map(|(e, _)| e), batch.len());
            batch
                .iter()
                .zip(valid)
                .map(|((entry, payload), ok)| {
                    if !ok {
                        return Err(Invalid::BadSignature);
                    }
                    match payload {
                        Some(p) if !payload_matches(entry, p) => Err(Invalid::PayloadMismatch),
                        _ => Ok(entry.id()),
                    }
                })
                .collect()
        })
        .collect()
}

/// Checks that `first` and `second` prove a fork: both validly signed, by
/// one author, for one seq, with different ids. Only then is a fork proof
/// believed, whoever hands it over.
pub fn verify_fork_proof(first: &Entry, second: &Entry) -> Result<(), BadEntry> {
    for e in [first, second] {
        if !signature_valid(e) {
            return Err(BadEntry::of(e, Invalid::BadSignature));
        }
    }
    if first.author() != second.author() || first.seq() != second.seq() {
        return Err(BadEntry::of(second, Invalid::NotAProof));
    }
    if first.id() == second.id() {
        return Err(BadEntry::of(second, Invalid::Duplicate));
    }
    Ok(())
}

/// Checks an entry's links against the ids of entries seq-1 and lipmaa(seq).
pub fn check_links(entry: &Entry, previous: EntryId, skip_target: EntryId) -> Result<(), Invalid> {
    if entry.seq() == 1 {
        // Entry::decode already demands zero links for the first entry.
        return Ok(());
    }
    if entry.backlink() != previous {
        return Err(Invalid::BrokenBacklink(entry.seq() - 1));
    }
    if entry.skiplink() != skip_target {
        return Err(Invalid::WrongSkiplink(lipmaa(entry.seq())));
    }
    Ok(())
}

/// Checks the links of one author's entries, given in seq order from 1, and
/// recognises forks and repeats against what it has seen.
#[derive(Debug)]
pub struct ChainChecker {
    author: AuthorKey,
    ids: Vec<EntryId>,
    forked: Option<u64>,
}

impl ChainChecker {
    /// A checker for `author`'s log, starting from nothing.
    pub fn new(author: AuthorKey) -> Self {
        ChainChecker {
            author,
            ids: Vec::new(),
            forked: None,
        }
    }

    /// The author whose log this checks.
    pub fn author(&self) -> AuthorKey {
        self.author
    }

    /// How many entries have been accepted.
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Whether nothing has been accepted yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Accepts the next entry of the log if its links are right.
    pub fn push(&mut self, entry: &Entry, id: EntryId) -> Result<(), Invalid> {
        debug_assert_eq!(entry.author(), self.author);
        let seq = entry.seq();
        if let Some(at) = self.forked {
            return Err(Invalid::AuthorForked(at));
        }
        let next = self.len() + 1;
        if seq < next {
            let first = self.ids[(seq - 1) as usize];
            return Err(if first == id {
                Invalid::Duplicate
            } else {
                Invalid::Fork { first, second: id }
            });
        }
        if seq > next {
            return Err(Invalid::Gap { expected: next });
        }
        if seq > 1 {
            let previous = self.ids[(seq - 2) as usize];
            let skip = self.ids[(lipmaa(seq) - 1) as usize];
            check_links(entry, previous, skip)?;
        }
        self.ids.push(id);
        Ok(())
    }

    /// Takes the [`Invalid::Fork`] entry just refused as the log's fork
    /// proof: the log ends there, and any later entry of it is refused.
    pub fn end_with_fork(&mut self, seq: u64) {
        self.forked = Some(seq);
    }
}

/// What a [`StreamVerifier`] verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries verified.
    pub entries: u64,
    /// Distinct authors.
    pub authors: u64,
    /// Entries whose payload was present (and matched).
    pub payloads: u64,
    /// Authors whose logs are forked: after an author's entries, a second
    /// validly signed entry for one of its seqs, kept as the proof.
    pub forked: u64,
}

/// Chunks a [`StreamVerifier`] keeps in flight on the thread pool: with more
/// than one, the workers start on the next chunk while the last batches of the
/// previous one finish and its links are checked, so no core waits at a
/// barrier (measured: 195-197 % CPU of 200 % with 2 to 8 in flight).
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Verifies a stream of whole logs, each author's entries together and in seq
/// order from 1: signatures and payloads in parallel chunks on the rayon pool,
/// links in order on the caller's thread, overlapped with the next chunks.
/// The first bad entry in stream order is the one reported. Memory is bounded
/// by ([`CHUNKS_IN_FLIGHT`] + 1) × [`STREAM_CHUNK`] entries and the ids of the
/// current author's log.
#[derive(Debug)]
pub struct StreamVerifier {
    pending: Vec<Unverified>,
    in_flight: VecDeque<mpsc::Receiver<(Vec<Unverified>, Vec<Verdicts>)>>,
    chain: Option<ChainChecker>,
    finished: HashSet<AuthorKey>,
    summary: Summary,
    /// Whether verified entries are handed back (to store them) or only
    /// counted (to report on them).
    keep: bool,
}

impl Default for StreamVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamVerifier {
    /// A verifier that hands back every verified entry, for storing.
    pub fn new() -> Self {
        StreamVerifier {
            pending: Vec::with_capacity(STREAM_CHUNK),
            in_flight: VecDeque::new(),
            chain: None,
            finished: HashSet::new(),
            summary: Summary::default(),
            keep: true,
        }
    }

    /// A verifier that only checks and counts: its pushes return nothing.
    pub fn checking_only() -> Self {
        StreamVerifier {
            keep: false,
            ..Self::new()
        }
    }

    /// Adds an entry. Once a chunk is full it goes to the pool; returns the
    /// entries of an earlier chunk once they are fully verified, in order.
    pub fn push(
        &mut self,
        entry: Entry,
        payload: Option<Vec<u8>>,
    ) -> Result<Vec<VerifiedEntry>, BadEntry> {
        self.pending.push((entry, payload));
        if self.pending.len() < STREAM_CHUNK {
            return Ok(Vec::new());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(STREAM_CHUNK));
        self.push_chunk(chunk)
    }

    /// Adds a chunk of entries at once (best at about [`STREAM_CHUNK`]): it
    /// goes to the pool as it is, without moving its entries.
    pub fn push_chunk(&mut self, chunk: Vec<Unverified>) -> Result<Vec<VerifiedEntry>, BadEntry> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let pending = std::mem::replace(&mut self.pending, Vec::with_capacity(STREAM_CHUNK));
            out.extend(self.launch(pending)?);
        }
        out.extend(self.launch(chunk)?);
        Ok(out)
    }

    fn launch(&mut self, items: Vec<Unverified>) -> Result<Vec<VerifiedEntry>, BadEntry> {
        let (done, verdicts) = mpsc::channel();
        rayon::spawn(move || {
            let verdicts = verify_each(&items);
            let _ = done.send((items, verdicts));
        });
        self.in_flight.push_back(verdicts);
        if self.in_flight.len() > CHUNKS_IN_FLIGHT {
            self.collect_one()
        } else {
            Ok(Vec::new())
        }
    }

    fn collect_one(&mut self) -> Result<Vec<VerifiedEntry>, BadEntry> {
        let Some(job) = self.in_flight.pop_front() else {
            return Ok(Vec::new());
        };
        let (items, verdicts) = job.recv().expect("verification jobs do not panic");
        let mut good = Vec::with_capacity(if self.keep { items.len() } else { 0 });
        // In stream order, so a broken link early in the chunk is reported
        // before a bad signature later in it.
        for ((entry, payload), verdict) in items.into_iter().zip(verdicts.into_iter().flatten()) {
            let id = verdict.map_err(|reason| BadEntry::of(&entry, reason))?;
            self.check_chain(&entry, id, payload.is_some())?;
            if self.keep {
                good.push(VerifiedEntry { entry, id, payload });
            }
        }
        Ok(good)
    }

    /// Verifies everything pushed so far and returns what was not yet
    /// returned.
    pub fn flush(&mut self) -> Result<Vec<VerifiedEntry>, BadEntry> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            out.extend(self.launch(pending)?);
        }
        while !self.in_flight.is_empty() {
            out.extend(self.collect_one()?);
        }
        Ok(out)
    }

    fn check_chain(
        &mut self,
        entry: &Entry,
        id: EntryId,
        has_payload: bool,
    ) -> Result<(), BadEntry> {
        let author = entry.author();
        if self.chain.as_ref().map(|c| c.author()) != Some(author) {
            if self.finished.contains(&author) {
                return Err(BadEntry::of(entry, Invalid::AuthorRepeated));
            }
            if let Some(done) = self.chain.take() {
                self.finished.insert(done.author());
            }
            self.chain = Some(ChainChecker::new(author));
            self.summary.authors += 1;
        }
        let chain = self.chain.as_mut().expect("set above");
        match chain.push(entry, id) {
            Ok(()) => {}
            // A second signed entry for a seq already seen: the author forked
            // the log, and this entry is the proof (as an export writes it,
            // after the log). It is verified and kept like any entry.
            Err(Invalid::Fork { .. }) => {
                chain.end_with_fork(entry.seq());
                self.summary.forked += 1;
            }
            Err(reason) => return Err(BadEntry::of(entry, reason)),
        }
        self.summary.entries += 1;
        self.summary.payloads += u64::from(has_payload);
        Ok(())
    }

    /// Verifies what is pending and says what was verified in all.
    pub fn finish(mut self) -> Result<(Summary, Vec<VerifiedEntry>), BadEntry> {
        let last = self.flush()?;
        Ok((self.summary, last))
    }
}

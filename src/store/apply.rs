//! Index upkeep inside one write transaction: appending verified entries
//! (duplicates, forks and their proofs, tombstones, the reply and profile
//! indexes, the changelog) and signing the owner's next entry.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::blob_refs::BlobIndex;
use super::blobs::BlobId;
use super::blocks::{self, Block, BlockChange, BlockRow};
use super::signer::{
    self, BEGAN_HERE, MARKS_KEY, SIGNED_ELSEWHERE, SignerChange, SignerRow, Signing,
};
use super::tables::*;
use super::{Head, StoreError, decode_stored};
use crate::identity::{AuthorKey, Identity};
use crate::log::builder::{Tip, next_draft};
use crate::log::entry::{ENTRY_LEN, Entry, EntryId};
use crate::log::lipmaa::lipmaa;
use crate::log::record::Record;
use crate::log::verify::{BadEntry, Invalid, VerifiedEntry, check_links, verify_one};

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendReport {
    /// Entries newly stored.
    pub accepted: u64,
    /// Entries the store already held.
    pub duplicates: u64,
    /// Forks found: (author, seq); the proof is stored.
    pub forks: Vec<(AuthorKey, u64)>,
    /// Entries refused because their author's log is forked.
    pub refused_forked: u64,
    /// Entries refused because the owner blocks their author.
    pub refused_blocked: u64,
    /// An identity of this node whose entry `seq` arrived signed elsewhere:
    /// the node stopped signing for it in this transaction.
    pub signed_elsewhere: Option<(AuthorKey, u64)>,
    /// The first entry refused for another reason; later entries of the same
    /// request that depend on it are refused too.
    pub rejected: Option<BadEntry>,
}

enum Outcome {
    Accepted,
    Duplicate,
    Fork,
    Blocked,
    Refused(Invalid),
}

/// The tables of one write transaction.
pub(super) struct Tables<'t> {
    entries: Table<'t, &'static LogKey, &'static [u8; ENTRY_LEN]>,
    ids: Table<'t, &'static [u8; 32], &'static LogKey>,
    payloads: Table<'t, &'static [u8; 32], &'static [u8]>,
    tombstones: Table<'t, &'static LogKey, u64>,
    heads: Table<'t, &'static [u8; 32], &'static [u8; HEAD_ROW_LEN]>,
    forks: Table<'t, &'static [u8; 32], &'static [u8; 2 * ENTRY_LEN]>,
    changes: Table<'t, u64, &'static [u8; 32]>,
    replies: Table<'t, &'static ReplyKey, ()>,
    profiles: Table<'t, &'static [u8; 32], u64>,
    signers: Table<'t, &'static [u8; 32], &'static [u8]>,
    blocks: Table<'t, &'static [u8; 32], &'static [u8]>,
    /// Which entries name which blobs.
    pub(super) blobs: BlobIndex<'t>,
    /// Whether the store has kept `signers-1` since it was made.
    marks_kept: bool,
    /// Heads moved by this transaction, written once each by [`Tables::finish`].
    moved: BTreeMap<AuthorKey, Head>,
    /// Ids of the entries this transaction inserted: the skiplink targets of
    /// the next ones, without reading and hashing them back.
    inserted: HashMap<(AuthorKey, u64), EntryId>,
    /// Fork state of each author this transaction looked up.
    forked: HashMap<AuthorKey, Option<u64>>,
    /// `signers-1` rows this transaction looked up.
    signer_rows: HashMap<AuthorKey, Option<SignerRow>>,
    /// Whether each author this transaction looked up is blocked.
    blocked: HashMap<AuthorKey, bool>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let marks_kept = txn
            .open_table(META)?
            .get(MARKS_KEY)?
            .is_none_or(|v| v.value() != [0]);
        Ok(Tables {
            entries: txn.open_table(ENTRIES)?,
            ids: txn.open_table(ENTRY_IDS)?,
            payloads: txn.open_table(PAYLOADS)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            heads: txn.open_table(HEADS)?,
            forks: txn.open_table(FORKS)?,
            changes: txn.open_table(CHANGES)?,
            replies: txn.open_table(REPLIES)?,
            profiles: txn.open_table(PROFILES)?,
            signers: txn.open_table(SIGNERS)?,
            blocks: txn.open_table(BLOCKS)?,
            blobs: BlobIndex::open(txn)?,
            marks_kept,
            moved: BTreeMap::new(),
            inserted: HashMap::new(),
            forked: HashMap::new(),
            signer_rows: HashMap::new(),
            blocked: HashMap::new(),
        })
    }

    /// The seq of `author`'s head, this transaction's appends included.
    pub(super) fn head_seq(&self, author: &AuthorKey) -> Result<u64, StoreError> {
        if let Some(head) = self.moved.get(author) {
            return Ok(head.seq);
        }
        Ok(self
            .heads
            .get(&author.0)?
            .map_or(0, |v| HeadRow::decode(v.value()).head.seq))
    }

    /// The identities whose logs this store signs (`signers-1`).
    pub(super) fn own_keys(&self) -> Result<Vec<AuthorKey>, StoreError> {
        let mut out = Vec::new();
        for row in self.signers.iter()? {
            out.push(AuthorKey(*row?.0.value()));
        }
        Ok(out)
    }

    /// Writes the heads this transaction moved, and one changelog row for
    /// each of their authors in place of the author's previous one. The
    /// blobs whose files are to be removed once the transaction commits.
    pub(super) fn finish(mut self) -> Result<Vec<BlobId>, StoreError> {
        let mut next = self.changes.last()?.map_or(0, |(k, _)| k.value());
        for (author, head) in std::mem::take(&mut self.moved) {
            let previous = self
                .heads
                .get(&author.0)?
                .map(|v| HeadRow::decode(v.value()).change);
            if let Some(change) = previous {
                self.changes.remove(change)?;
            }
            next += 1;
            self.changes.insert(next, &author.0)?;
            self.heads
                .insert(&author.0, &HeadRow { head, change: next }.encode())?;
        }
        self.blobs.orphans()
    }

    pub(super) fn append_all(
        &mut self,
        entries: &[VerifiedEntry],
    ) -> Result<AppendReport, StoreError> {
        let mut report = AppendReport::default();
        for v in entries {
            let (author, seq) = (v.entry().author(), v.entry().seq());
            match self.apply(v)? {
                Outcome::Accepted => {
                    report.accepted += 1;
                    self.not_signed_here(author, seq, &mut report)?;
                }
                Outcome::Duplicate => report.duplicates += 1,
                Outcome::Fork => {
                    report.forks.push((author, seq));
                    self.not_signed_here(author, seq, &mut report)?;
                }
                Outcome::Blocked => report.refused_blocked += 1,
                Outcome::Refused(Invalid::AuthorForked(_)) => report.refused_forked += 1,
                Outcome::Refused(reason) => {
                    report.rejected = Some(BadEntry {
                        author: v.entry().author(),
                        seq: v.entry().seq(),
                        reason,
                    });
                    break;
                }
            }
        }
        Ok(report)
    }

    pub(super) fn head(&self, author: &AuthorKey) -> Result<Option<Head>, StoreError> {
        if let Some(head) = self.moved.get(author) {
            return Ok(Some(*head));
        }
        Ok(self
            .heads
            .get(&author.0)?
            .map(|v| HeadRow::decode(v.value()).head))
    }

    pub(super) fn fork_seq(&mut self, author: &AuthorKey) -> Result<Option<u64>, StoreError> {
        if let Some(known) = self.forked.get(author) {
            return Ok(*known);
        }
        let seq = match self.forks.get(&author.0)? {
            None => None,
            Some(proof) => {
                let first: &[u8; ENTRY_LEN] =
                    proof.value()[..ENTRY_LEN].try_into().expect("217 bytes");
                Some(decode_stored(first)?.seq())
            }
        };
        self.forked.insert(*author, seq);
        Ok(seq)
    }

    pub(super) fn stored_id(
        &self,
        author: &AuthorKey,
        seq: u64,
    ) -> Result<Option<(EntryId, [u8; ENTRY_LEN])>, StoreError> {
        Ok(self.entries.get(&log_key(author, seq))?.map(|v| {
            let bytes = *v.value();
            (EntryId(*blake3::hash(&bytes).as_bytes()), bytes)
        }))
    }

    /// The stored entry `seq` of `author`, if any.
    pub(super) fn stored(&self, author: &AuthorKey, seq: u64) -> Result<Option<Entry>, StoreError> {
        self.entries
            .get(&log_key(author, seq))?
            .map(|v| super::decode_stored(v.value()))
            .transpose()
    }

    pub(super) fn publish(
        &mut self,
        identity: &Identity,
        payload: Vec<u8>,
        timestamp_us: u64,
    ) -> Result<Entry, StoreError> {
        let author = identity.author();
        if let Some(at) = self.fork_seq(&author)? {
            return Err(StoreError::OwnLogForked(at));
        }
        let head = self.head(&author)?;
        match self.signing(&author)? {
            Signing::Ready => {}
            refused => return Err(StoreError::NotSigning(refused)),
        }
        if self.signer_row(&author)?.is_none() {
            // A store older than the marks, holding the log: it began here.
            self.set_signer(
                author,
                SignerRow::now(BEGAN_HERE, head.map_or(0, |h| h.seq)),
            )?;
        }
        let tip = match head {
            None => None,
            Some(head) => {
                let stored = self
                    .entries
                    .get(&log_key(&author, head.seq))?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("head entry {} is missing", head.seq))
                    })?;
                Some(Tip {
                    seq: head.seq,
                    id: head.id,
                    timestamp_us: decode_stored(stored.value())?.timestamp_us(),
                })
            }
        };
        let draft = next_draft(tip, timestamp_us, |seq| {
            Ok::<_, StoreError>(
                self.stored_id(&author, seq)?
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {seq} is missing")))?
                    .0,
            )
        })?;
        let entry = Entry::sign(identity.signing_key(), draft, &payload);
        let verified = verify_one(entry, Some(payload)).map_err(StoreError::Rejected)?;
        match self.apply(&verified)? {
            Outcome::Accepted => Ok(entry),
            Outcome::Refused(reason) => Err(StoreError::Rejected(BadEntry {
                author,
                seq: entry.seq(),
                reason,
            })),
            Outcome::Duplicate | Outcome::Fork | Outcome::Blocked => Err(StoreError::Corrupt(
                "a freshly signed entry collided with a stored one".into(),
            )),
        }
    }

    fn apply(&mut self, v: &VerifiedEntry) -> Result<Outcome, StoreError> {
        let entry = v.entry();
        let author = entry.author();
        let seq = entry.seq();
        if self.is_blocked(&author)? {
            return Ok(Outcome::Blocked);
        }
        if let Some(at) = self.fork_seq(&author)? {
            return Ok(Outcome::Refused(Invalid::AuthorForked(at)));
        }
        let head = self.head(&author)?;
        let next = head.map_or(1, |h| h.seq + 1);
        if seq < next {
            let (stored_id, stored) = self.stored_id(&author, seq)?.ok_or_else(|| {
                StoreError::Corrupt(format!("entry {seq} of {author} is missing below its head"))
            })?;
            if stored_id == v.id() {
                // A copy that brings a payload we lack fills it in.
                if let Some(payload) = v.payload() {
                    let deleted = self.tombstones.get(&log_key(&author, seq))?.is_some();
                    if !deleted && self.payloads.get(&entry.payload_hash())?.is_none() {
                        // This entry was stored without its payload, so it was not
                        // counted yet.
                        self.payloads
                            .insert(&entry.payload_hash(), &payload_row(1, payload)[..])?;
                        let own = self.signer_row(&author)?.is_some();
                        self.blobs.add(&author, seq, payload, own)?;
                    }
                }
                return Ok(Outcome::Duplicate);
            }
            let mut proof = [0u8; 2 * ENTRY_LEN];
            proof[..ENTRY_LEN].copy_from_slice(&stored);
            proof[ENTRY_LEN..].copy_from_slice(entry.as_bytes());
            self.forks.insert(&author.0, &proof)?;
            self.forked.insert(author, Some(seq));
            return Ok(Outcome::Fork);
        }
        if seq > next {
            return Ok(Outcome::Refused(Invalid::Gap { expected: next }));
        }
        if let Some(head) = head {
            let skip_seq = lipmaa(seq);
            let skip_target = if skip_seq == head.seq {
                head.id
            } else if let Some(id) = self.inserted.get(&(author, skip_seq)) {
                *id
            } else {
                self.stored_id(&author, skip_seq)?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("entry {skip_seq} of {author} is missing"))
                    })?
                    .0
            };
            if let Err(reason) = check_links(entry, head.id, skip_target) {
                return Ok(Outcome::Refused(reason));
            }
        }
        self.insert(v)?;
        Ok(Outcome::Accepted)
    }

    pub(super) fn insert(&mut self, v: &VerifiedEntry) -> Result<(), StoreError> {
        let entry = v.entry();
        let author = entry.author();
        let seq = entry.seq();
        let key = log_key(&author, seq);
        self.entries.insert(&key, entry.as_bytes())?;
        self.ids.insert(&v.id().0, &key)?;
        self.moved.insert(author, Head { seq, id: v.id() });
        self.inserted.insert((author, seq), v.id());
        let hash = entry.payload_hash();
        let counted = self.payloads.get(&hash)?.map(|row| {
            let (refs, bytes) = split_payload_row(row.value());
            payload_row(refs.saturating_add(1), bytes)
        });
        match (counted, v.payload()) {
            (Some(row), _) => {
                self.payloads.insert(&hash, &row[..])?;
            }
            (None, Some(payload)) => {
                self.payloads.insert(&hash, &payload_row(1, payload)[..])?;
            }
            // Neither held nor brought: counted when a copy brings it.
            (None, None) => {}
        }
        if let Some(payload) = v.payload()
            && let Some(target) = Record::reply_target(payload)
        {
            let mut reply = [0u8; 80];
            reply[..40].copy_from_slice(&log_key(&AuthorKey(target.author), target.seq));
            reply[40..].copy_from_slice(&key);
            self.replies.insert(&reply, ())?;
        }
        if let Some(payload) = v.payload()
            && Record::may_name_blobs(payload)
        {
            let own = self.signer_row(&author)?.is_some();
            self.blobs.add(&author, seq, payload, own)?;
        }
        if let Some(payload) = v.payload()
            && Record::may_be_profile(payload)
            && self
                .profiles
                .get(&author.0)?
                .is_none_or(|s| s.value() < seq)
        {
            self.profiles.insert(&author.0, seq)?;
        }
        if let Some(payload) = v.payload()
            && Record::may_be_delete(payload)
            && let Ok(Record::Delete { seq: target }) = Record::decode(payload)
            && target >= 1
            && target < seq
        {
            self.tombstone(&author, target, seq)?;
        }
        Ok(())
    }

    /// Keeps a fork proof a peer handed over (verified by the caller): the
    /// entry this store holds at that seq, if any, goes first. Whether it
    /// was new: an author already proven forked, or blocked, keeps what it
    /// has.
    pub(super) fn keep_proof(&mut self, a: &Entry, b: &Entry) -> Result<bool, StoreError> {
        let author = a.author();
        if self.is_blocked(&author)? || self.fork_seq(&author)?.is_some() {
            return Ok(false);
        }
        let (first, second) = match self.stored_id(&author, a.seq())? {
            Some((id, _)) if id == b.id() => (b, a),
            _ => (a, b),
        };
        let mut proof = [0u8; 2 * ENTRY_LEN];
        proof[..ENTRY_LEN].copy_from_slice(first.as_bytes());
        proof[ENTRY_LEN..].copy_from_slice(second.as_bytes());
        self.forks.insert(&author.0, &proof)?;
        self.forked.insert(author, Some(a.seq()));
        Ok(true)
    }

    fn signer_row(&mut self, author: &AuthorKey) -> Result<Option<SignerRow>, StoreError> {
        if let Some(row) = self.signer_rows.get(author) {
            return Ok(*row);
        }
        let row = self
            .signers
            .get(&author.0)?
            .map(|v| SignerRow::decode(v.value()));
        self.signer_rows.insert(*author, row);
        Ok(row)
    }

    fn set_signer(&mut self, author: AuthorKey, row: SignerRow) -> Result<(), StoreError> {
        self.signers.insert(&author.0, &row.encode()[..])?;
        self.signer_rows.insert(author, Some(row));
        Ok(())
    }

    /// Whether this store may sign `author`'s next entry.
    pub(super) fn signing(&mut self, author: &AuthorKey) -> Result<Signing, StoreError> {
        let holds_log = self.head(author)?.is_some();
        Ok(signer::standing(
            self.signer_row(author)?,
            self.marks_kept,
            holds_log,
        ))
    }

    /// Applies the owner's `change` to `author`'s mark; where it stands after.
    pub(super) fn change_signer(
        &mut self,
        author: AuthorKey,
        change: SignerChange,
    ) -> Result<Signing, StoreError> {
        let head = self.head(&author)?.map(|h| h.seq);
        let row = self.signer_row(&author)?;
        let legacy_log = !self.marks_kept && head.is_some();
        if let Some(row) = signer::change(change, row, head, legacy_log) {
            self.set_signer(author, row)?;
        }
        self.signing(&author)
    }

    /// An entry of `author` at `seq` came from outside: if this node signs
    /// for `author`, someone else holds the key too, and signing stops.
    fn not_signed_here(
        &mut self,
        author: AuthorKey,
        seq: u64,
        report: &mut AppendReport,
    ) -> Result<(), StoreError> {
        if self
            .signer_row(&author)?
            .is_some_and(|r| r.state == BEGAN_HERE)
        {
            self.set_signer(author, SignerRow::now(SIGNED_ELSEWHERE, seq))?;
            report.signed_elsewhere = Some((author, seq));
        }
        Ok(())
    }

    fn is_blocked(&mut self, author: &AuthorKey) -> Result<bool, StoreError> {
        if let Some(blocked) = self.blocked.get(author) {
            return Ok(*blocked);
        }
        let blocked = self
            .blocks
            .get(&author.0)?
            .is_some_and(|v| BlockRow::decode(v.value()).kind == Block::Blocked);
        self.blocked.insert(*author, blocked);
        Ok(blocked)
    }

    /// Applies the owner's block or mute `change` for `author`; whether
    /// anything changed.
    pub(super) fn change_block(
        &mut self,
        author: AuthorKey,
        change: BlockChange,
    ) -> Result<bool, StoreError> {
        let now = self
            .blocks
            .get(&author.0)?
            .map(|v| BlockRow::decode(v.value()));
        let next = blocks::after(change, now, crate::clock::now_us());
        match next {
            Some(row) => self.blocks.insert(&author.0, &row.encode()[..])?,
            None => self.blocks.remove(&author.0)?,
        };
        self.blocked.remove(&author);
        Ok(next != now)
    }

    /// Drops the payload of entry `target` (unless another live entry holds
    /// the same bytes) and remembers that entry `by` deleted it.
    pub(super) fn tombstone(
        &mut self,
        author: &AuthorKey,
        target: u64,
        by: u64,
    ) -> Result<(), StoreError> {
        let key = log_key(author, target);
        if self.tombstones.get(&key)?.is_some() {
            return Ok(());
        }
        self.tombstones.insert(&key, by)?;
        let hash = match self.entries.get(&key)? {
            Some(v) => decode_stored(v.value())?.payload_hash(),
            None => return Ok(()),
        };
        let counted = self.payloads.get(&hash)?.map(|row| {
            let (refs, bytes) = split_payload_row(row.value());
            (refs, bytes.to_vec())
        });
        if let Some((_, payload)) = &counted {
            self.blobs.remove(author, target, payload)?;
        }
        match counted {
            Some((refs, _)) if refs <= 1 => {
                self.payloads.remove(&hash)?;
            }
            Some((refs, bytes)) => {
                self.payloads
                    .insert(&hash, &payload_row(refs - 1, &bytes)[..])?;
            }
            None => {}
        }
        Ok(())
    }
}

/// Remembers that request `id` published the owner's entry `seq`, and
/// forgets requests more than [`MAX_POST_REQUESTS`] posts old.
pub(super) fn remember_request(
    txn: &redb::WriteTransaction,
    id: [u8; 16],
    seq: u64,
) -> Result<(), StoreError> {
    let mut requests = txn.open_table(POST_REQUESTS)?;
    requests.insert(&id, seq)?;
    if requests.len()? > MAX_POST_REQUESTS {
        let oldest = seq.saturating_sub(MAX_POST_REQUESTS);
        requests.retain(|_, seq| seq > oldest)?;
    }
    Ok(())
}

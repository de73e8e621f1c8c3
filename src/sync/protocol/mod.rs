//! One sync session as a pure state machine: messages in, actions out. No
//! I/O and no clock: the driver ([`super::session`]) reads the store, moves
//! bytes and keeps time.
//!
//! The flow (schema/sync.md has it message by message):
//! 1. Interest. The initiator sends a digest of the authors it wants. Equal
//!    to the responder's: the shared interest is that set. Otherwise the
//!    initiator's sorted list settles it (sent at once when short), and the
//!    responder answers with a bitmap of the authors it wants too.
//! 2. Heads. With a changelog cursor honoured on both sides, each side sends
//!    the heads changed since the other's cursor: one round trip. Otherwise
//!    the heads are reconciled range by range ([`super::range`]); an
//!    initiator with a large interest sends its first ranges with its hello,
//!    betting the interest is shared.
//! 3. Entries. Whoever learns that the other side is ahead on an author asks
//!    for the suffix it lacks (the side behind always learns the other's
//!    head, so it alone asks: no entry is sent twice). Same seq with a
//!    different id, or a suffix that does not chain onto the local head, is a
//!    fork: the side asks for the other's entry at that seq, and its store
//!    keeps the proof.
//! 4. Done. A side that wants nothing more says so; the session ends when
//!    both have.
//!
//! Every message is checked against what the session expects: an entry that
//! was not asked for, an author outside the interest, or a want beyond what
//! this side holds ends the session with a [`Violation`].

mod messages;

use std::collections::{HashMap, HashSet, VecDeque};

use super::range::{self, Item, ItemRef, RangeError, Reconciler};
use super::wire::{
    Cursor, MAX_MESSAGE, MAX_PROOFS, Message, OLDEST_VERSION, PROOF_LEN, PROOFS_FORMAT,
    PROTOCOL_VERSION, Shared, Wanted,
};
use crate::identity::AuthorKey;
use crate::log::entry::{Entry, EntryId};
use crate::log::verify::Unverified;

/// Wanted lists up to this many authors go out with the hello (32 KB), so a
/// typical follower settles the interest without an extra round trip; longer
/// ones first try the digest.
pub const INLINE_INTEREST: usize = 1024;

/// Most authors one interest may name: bounds what a peer's list can make a
/// node hold (3.2 MB).
pub const MAX_INTEREST: usize = 100_000;

/// Authors per interest chunk, to stay under [`MAX_MESSAGE`].
pub const INTEREST_CHUNK: usize = (MAX_MESSAGE - 64) / 33;

/// Heads per heads chunk, to stay under [`MAX_MESSAGE`].
pub const HEADS_CHUNK: usize = (MAX_MESSAGE - 64) / 24;

/// How often a peer may ask for entries of one author in a session: its
/// suffix, then the entry proving a fork. More is a peer making this node
/// serve the same log again and again.
pub const MAX_WANTS_PER_AUTHOR: u8 = 2;

/// Ranges messages one session may receive: reconciliation of 100,000
/// authors needs fewer than 10; more is a peer keeping this node busy.
pub const MAX_RANGES_MESSAGES: u32 = 64;

/// Wants per want message, to stay under [`MAX_MESSAGE`].
pub const WANTS_CHUNK: usize = (MAX_MESSAGE - 64) / 32;

/// The digest of a wanted set (sorted, without repeats): the first 16 bytes
/// of blake3 over a domain string and the keys.
pub fn interest_digest(wanted: &[AuthorKey]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"capsule-interest-v1");
    for a in wanted {
        h.update(&a.0);
    }
    h.finalize().as_bytes()[..16].try_into().expect("prefix")
}

/// A log head as a session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// The head's seq.
    pub seq: u64,
    /// The head's id.
    pub id: EntryId,
    /// The change counter of the author's latest change.
    pub change: u64,
}

/// What a session knows of its own store, read once at its start.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store's id.
    pub store: [u8; 16],
    /// Its change counter.
    pub counter: u64,
    /// The authors this node wants, sorted, without repeats.
    pub wanted: Vec<AuthorKey>,
    /// The heads of the wanted authors it holds.
    pub heads: HashMap<AuthorKey, HeadInfo>,
    /// The fork proofs it holds for wanted authors: (the entry held first,
    /// the conflicting one).
    pub proofs: Vec<(Entry, Entry)>,
}

/// What the store did with one or more [`Action::Store`] batches, as the
/// session needs to hear it. The driver makes it from the store's report;
/// the session knows no store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// How many batches this answers (a driver may merge queued batches
    /// into one commit).
    pub batches: u32,
    /// Entries newly stored.
    pub accepted: u64,
    /// Authors of the batches, when any entry was newly stored.
    pub updated: Vec<AuthorKey>,
    /// Forks found: (author, seq).
    pub forks: Vec<(AuthorKey, u64)>,
    /// Entries refused because their author's log is forked.
    pub refused_forked: u64,
    /// The first entry refused for another reason.
    pub rejected: Option<Rejected>,
}

impl Stored {
    /// `batches` stored with nothing new in them.
    pub fn nothing(batches: u32) -> Stored {
        Stored {
            batches,
            accepted: 0,
            updated: Vec::new(),
            forks: Vec::new(),
            refused_forked: 0,
            rejected: None,
        }
    }
}

/// An entry the store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Its author.
    pub author: AuthorKey,
    /// Set when its backlink does not chain onto the entry held at this
    /// seq: the author signed another entry for it.
    pub broken_backlink: Option<u64>,
}

/// What a finished session remembers of its peer: cursors into each
/// other's changelogs, for the interest they shared. The store keeps it as
/// a `peers-1` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The peer's store id when the cursor was taken.
    pub their_store: [u8; 16],
    /// The peer's change counter up to which we hold every head it had.
    pub their_counter: u64,
    /// The digest of the shared interest at the time.
    pub interest: [u8; 16],
    /// Our change counter up to which the peer holds every head we had.
    pub our_counter: u64,
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialled the peer.
    Initiator,
    /// Accepted the connection.
    Responder,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send(Message),
    /// Send entries `from..=to` of `author`, with payloads, as
    /// [`Message::Entries`] no larger than [`MAX_MESSAGE`].
    Serve {
        /// The author.
        author: AuthorKey,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// Verify these entries and store them, then call
    /// [`Session::on_stored`] with what the store did.
    Store(Vec<Unverified>),
    /// Check these fork proofs (both entries valid, one author and seq,
    /// different ids) and keep them; a proof that does not hold ends the
    /// session.
    KeepProofs(Vec<(Entry, Entry)>),
    /// Send [`Message::Done`]: first make the store durable, then read the
    /// heads changed since the snapshot and offer the counter now if
    /// [`Session::peer_holds`] all of them.
    Done,
    /// The session is over: both sides are done.
    Finished,
}

/// A peer broke the protocol; the session ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A message came that this point of the session does not allow.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// The peer speaks another version.
    #[error("the peer speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u16),
    /// A malformed reconciliation step.
    #[error("bad ranges: {0}")]
    Ranges(#[from] RangeError),
    /// An author index outside the shared interest.
    #[error("author index {0} is outside the shared interest")]
    UnknownAuthor(u32),
    /// An interest list that is too long, unsorted or repeats itself.
    #[error("bad interest list: {0}")]
    BadInterest(&'static str),
    /// An entry this node did not ask for.
    #[error("entry {seq} of {author} was not asked for")]
    Unrequested {
        /// The author.
        author: AuthorKey,
        /// The seq.
        seq: u64,
    },
    /// A want this node cannot or will not serve.
    #[error("a want for entries {from}..={to} of author index {author} is beyond what was offered")]
    BadWant {
        /// Author index.
        author: u32,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// Too many heads.
    #[error("more heads than authors in the shared interest")]
    TooManyHeads,
    /// A proofs message that breaks its rules.
    #[error("bad fork proofs: {0}")]
    BadProofs(&'static str),
}

/// What a session did, for the person watching and for the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries asked of the peer.
    pub entries_expected: u64,
    /// Entries received and handed to the store.
    pub entries_received: u64,
    /// Entries the store newly accepted.
    pub entries_stored: u64,
    /// Authors whose logs grew.
    pub authors_updated: u64,
    /// Forks found (proofs stored).
    pub forks: Vec<(AuthorKey, u64)>,
    /// Entries refused by the store (besides forks).
    pub refused: u64,
    /// Round trips the initiator waited for.
    pub round_trips: u64,
    /// Whether the heads were settled by changelog cursors.
    pub by_cursor: bool,
    /// Authors in the shared interest.
    pub shared_authors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Initiator: before start. Responder: waiting for the hello.
    Start,
    /// Initiator: waiting for the welcome.
    AwaitWelcome,
    /// Responder: waiting for the initiator's interest list.
    AwaitInterest,
    /// Interest settled.
    Running,
}

/// One side of a session.
pub struct Session {
    role: Role,
    snap: Snapshot,
    digest: [u8; 16],
    remembered: Option<Checkpoint>,
    phase: Phase,
    universe: Vec<AuthorKey>,
    index: HashMap<AuthorKey, u32>,
    reconciler: Option<Reconciler>,
    their_store: Option<Cursor>,
    /// Initiator: sent ranges over its whole interest with the hello.
    /// Responder: the initiator did so and the interest turned out different,
    /// so that message is to be dropped.
    optimistic: bool,
    /// Responder: the initiator sends its list, and it is not needed.
    discard_list: bool,
    list_in: Vec<AuthorKey>,
    /// Responder: the initiator's cursor, until the interest is settled.
    pending_cursor: Option<Cursor>,
    by_cursor: bool,
    heads_in: usize,
    decided: HashSet<u32>,
    /// The peer's head seq of each author where it differs from ours.
    learned: HashMap<u32, u64>,
    expect: HashMap<u32, VecDeque<(u64, u64)>>,
    wants_in: HashMap<u32, u8>,
    wants_out: Vec<Wanted>,
    ranges_in: u32,
    evidence: HashSet<u32>,
    updated: HashSet<u32>,
    pending_stores: usize,
    reconciled: bool,
    /// This side's last ranges message asked nothing of the peer (no
    /// fingerprint, no list awaiting a reply): it knows every differing head.
    settled: bool,
    done_sent: bool,
    done_received: bool,
    /// The version the peer speaks (the responder learns it from the hello;
    /// the initiator knows the responder speaks 2 once its proofs come).
    peer_version: u16,
    proofs_sent: bool,
    proofs_received: bool,
    awaiting: bool,
    their_end: Option<u64>,
    stats: Stats,
}

impl Session {
    /// Counts forks the driver kept from the peer's proofs.
    pub fn note_forks(&mut self, forks: &[(AuthorKey, u64)]) {
        self.stats.forks.extend_from_slice(forks);
    }

    /// A session over `snap`, with what this node remembers of the peer.
    pub fn new(role: Role, snap: Snapshot, remembered: Option<Checkpoint>) -> Session {
        let digest = interest_digest(&snap.wanted);
        Session {
            role,
            snap,
            digest,
            remembered,
            phase: Phase::Start,
            universe: Vec::new(),
            index: HashMap::new(),
            reconciler: None,
            their_store: None,
            optimistic: false,
            discard_list: false,
            list_in: Vec::new(),
            pending_cursor: None,
            by_cursor: false,
            heads_in: 0,
            peer_version: 0,
            proofs_sent: false,
            proofs_received: false,
            decided: HashSet::new(),
            learned: HashMap::new(),
            expect: HashMap::new(),
            wants_in: HashMap::new(),
            wants_out: Vec::new(),
            ranges_in: 0,
            evidence: HashSet::new(),
            updated: HashSet::new(),
            pending_stores: 0,
            reconciled: false,
            settled: false,
            done_sent: false,
            done_received: false,
            awaiting: false,
            their_end: None,
            stats: Stats::default(),
        }
    }

    /// What the session did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The shared interest, sorted by key, taken at the session's end
    /// (the session answers nothing about authors after it).
    pub fn take_shared(&mut self) -> Vec<AuthorKey> {
        self.index.clear();
        std::mem::take(&mut self.universe)
    }

    /// What to remember of the peer after the session finished: cursors
    /// into each other's changelogs as of the session's snapshots.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let theirs = self.their_store?;
        // The peer's counter at its done, when it vouched that we hold every
        // change it made since its hello; else the one of its hello.
        let their_counter = self
            .their_end
            .filter(|end| *end >= theirs.counter)
            .unwrap_or(theirs.counter);
        (self.done_sent && self.done_received).then_some(Checkpoint {
            their_store: theirs.store,
            their_counter,
            interest: self.digest,
            our_counter: self.snap.counter,
        })
    }

    fn my_cursor(&self) -> Cursor {
        Cursor {
            store: self.snap.store,
            counter: self.snap.counter,
        }
    }

    /// The remembered cursor into the peer's changelog, if it is for the
    /// interest this node has now.
    fn remembered_cursor(&self) -> Option<Cursor> {
        self.remembered
            .filter(|r| r.interest == self.digest)
            .map(|r| Cursor {
                store: r.their_store,
                counter: r.their_counter,
            })
    }

    /// The initiator's first messages.
    pub fn start(&mut self) -> Vec<Action> {
        assert_eq!(self.role, Role::Initiator, "only the initiator starts");
        let cursor = self.remembered_cursor();
        let list = cursor.is_none() && self.snap.wanted.len() <= INLINE_INTEREST;
        self.optimistic = cursor.is_none() && !list;
        let mut out = vec![Action::Send(Message::Hello {
            version: PROTOCOL_VERSION,
            interest: self.digest,
            interest_len: self.snap.wanted.len() as u32,
            store: self.my_cursor(),
            cursor,
            optimistic: self.optimistic,
        })];
        if list {
            self.send_list(&mut out);
        }
        if self.optimistic {
            self.settle(self.snap.wanted.clone());
            let initial = self.reconciler().initial();
            out.push(Action::Send(Message::Ranges(range::to_wire(
                &initial.ranges,
            ))));
        }
        self.phase = Phase::AwaitWelcome;
        self.awaiting = true;
        out
    }

    fn send_list(&self, out: &mut Vec<Action>) {
        let chunks: Vec<_> = self.snap.wanted.chunks(INTEREST_CHUNK).collect();
        if chunks.is_empty() {
            out.push(Action::Send(Message::Interest {
                authors: vec![],
                last: true,
            }));
        }
        for (i, chunk) in chunks.iter().enumerate() {
            out.push(Action::Send(Message::Interest {
                authors: chunk.iter().map(|a| a.0).collect(),
                last: i + 1 == chunks.len(),
            }));
        }
    }

    /// Fixes the shared interest and the items to reconcile.
    fn settle(&mut self, universe: Vec<AuthorKey>) {
        self.index = universe
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, i as u32))
            .collect();
        let items = universe
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                self.snap.heads.get(a).map(|h| Item {
                    author: i as u32,
                    seq: h.seq,
                    id: h.id.0,
                })
            })
            .collect();
        self.reconciler = Some(Reconciler::new(items, universe.len() as u32));
        self.stats.shared_authors = universe.len() as u64;
        self.universe = universe;
    }

    fn reconciler(&self) -> &Reconciler {
        self.reconciler.as_ref().expect("settled")
    }

    fn author(&self, index: u32) -> Result<AuthorKey, Violation> {
        self.universe
            .get(index as usize)
            .copied()
            .ok_or(Violation::UnknownAuthor(index))
    }

    /// Takes what the store did with [`Action::Store`] batches.
    pub fn on_stored(&mut self, stored: &Stored) -> Vec<Action> {
        let mut out = Vec::new();
        self.pending_stores = self.pending_stores.saturating_sub(stored.batches as usize);
        self.note_updated(stored.updated.iter().copied());
        self.stats.entries_stored += stored.accepted;
        self.stats.forks.extend(stored.forks.iter().copied());
        self.stats.refused += stored.refused_forked;
        if let Some(bad) = &stored.rejected {
            self.stats.refused += 1;
            // A suffix that does not chain onto our head: the author signed
            // another entry for a seq we hold. Ask for it, for the proof.
            if let Some(seq) = bad.broken_backlink
                && let Some(&index) = self.index.get(&bad.author)
                && self.evidence.insert(index)
                && seq >= 1
            {
                self.want(index, seq, seq);
            }
        }
        self.progress(&mut out);
        out
    }

    /// Records entries of `author` newly stored (for the stats).
    fn note_updated(&mut self, authors: impl IntoIterator<Item = AuthorKey>) {
        for a in authors {
            if let Some(&i) = self.index.get(&a)
                && self.updated.insert(i)
            {
                self.stats.authors_updated += 1;
            }
        }
    }

    fn progress(&mut self, out: &mut Vec<Action>) {
        let wants = std::mem::take(&mut self.wants_out);
        for chunk in wants.chunks(WANTS_CHUNK) {
            out.push(Action::Send(Message::Want(chunk.to_vec())));
        }
        if !self.done_sent
            && self.phase == Phase::Running
            && self.reconciled
            && self.expect.is_empty()
            && self.pending_stores == 0
        {
            self.done_sent = true;
            out.push(Action::Done);
        }
        if self.done_sent && self.done_received {
            out.push(Action::Finished);
        }
        if self.role == Role::Initiator
            && out
                .iter()
                .any(|a| matches!(a, Action::Send(_) | Action::Serve { .. } | Action::Done))
        {
            self.awaiting = true;
        }
    }

    /// Whether the peer holds entry `seq` of `author` as far as this
    /// session knows: the author is outside the shared interest (not the
    /// peer's concern), or the peer's head is at least `seq`.
    pub fn peer_holds(&self, author: &AuthorKey, seq: u64) -> bool {
        let Some(&index) = self.index.get(author) else {
            return true;
        };
        let theirs = match self.learned.get(&index) {
            Some(seq) => *seq,
            // Not learned: the peer's head equals our snapshot's.
            None => self.snap.heads.get(author).map_or(0, |h| h.seq),
        };
        seq <= theirs
    }

    /// The change counter of the snapshot the session started from.
    pub fn snapshot_counter(&self) -> u64 {
        self.snap.counter
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this side knows every head where the two sides differ.
    pub fn heads_settled(&self) -> bool {
        self.reconciled || self.settled
    }

    /// Whether both sides are done.
    pub fn finished(&self) -> bool {
        self.done_sent && self.done_received
    }
}

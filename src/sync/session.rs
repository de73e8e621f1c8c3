//! Runs a [`Session`] against a real store: takes the snapshot, serves
//! wanted entries, verifies and stores received ones.
//!
//! Both drivers carry out a session's actions through [`apply`], each with
//! its own [`Effects`]: [`run_lockstep`] drives two sessions in one thread,
//! delivering every message of one side before the other answers (the
//! reference for the protocol's round trips and bytes, used by tests and
//! `capsule bench sync`); the QUIC driver ([`super::network`]) runs the
//! same steps over a connection.

use crate::log::entry::Entry;
use std::collections::{HashSet, VecDeque};

use super::protocol::{
    Action, Checkpoint, HeadInfo, Rejected, Role, Session, Snapshot, Stats, Stored, Violation,
};
use super::transport::LinkError;
use super::wire::{self, MAX_MESSAGE, Message, WireError};
use crate::identity::AuthorKey;
use crate::log::verify::{BadEntry, Invalid, Unverified, verify_batch};
use crate::store::tables::PeerRow;
use crate::store::{AppendReport, Store, StoreError};

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol.
    #[error("the peer broke the protocol: {0}")]
    Violation(#[from] Violation),
    /// The peer sent bytes that are not a message.
    #[error("the peer sent a bad message: {0}")]
    Wire(#[from] WireError),
    /// The peer sent an entry that does not verify.
    #[error("the peer sent an invalid entry: {0}")]
    BadEntry(BadEntry),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer stopped answering.
    #[error("the peer stopped answering for {0} s")]
    Timeout(u64),
    /// The connection failed or the peer closed it early.
    #[error("connection: {0}")]
    Transport(#[from] LinkError),
}

impl From<PeerRow> for Checkpoint {
    fn from(row: PeerRow) -> Checkpoint {
        Checkpoint {
            their_store: row.their_store,
            their_counter: row.their_counter,
            interest: row.interest,
            our_counter: row.our_counter,
        }
    }
}

impl From<Checkpoint> for PeerRow {
    fn from(c: Checkpoint) -> PeerRow {
        PeerRow {
            their_store: c.their_store,
            their_counter: c.their_counter,
            interest: c.interest,
            our_counter: c.our_counter,
        }
    }
}

/// What the session hears of the store's `report` on `batches` batches
/// whose entries were by `authors`.
pub fn stored(report: &AppendReport, authors: Vec<AuthorKey>, batches: u32) -> Stored {
    Stored {
        batches,
        accepted: report.accepted,
        updated: if report.accepted > 0 {
            authors
        } else {
            Vec::new()
        },
        forks: report.forks.clone(),
        refused_forked: report.refused_forked,
        rejected: report.rejected.as_ref().map(|bad| Rejected {
            author: bad.author,
            broken_backlink: match bad.reason {
                Invalid::BrokenBacklink(seq) => Some(seq),
                _ => None,
            },
        }),
    }
}

/// What a driver does with a session's actions.
pub trait Effects {
    /// Sends a control message, ahead of entries being served.
    fn send(&mut self, message: Message) -> Result<(), SessionError>;
    /// Serves entries of these (author, from, to) ranges, after what was
    /// served before.
    fn serve(&mut self, ranges: Vec<(AuthorKey, u64, u64)>) -> Result<(), SessionError>;
    /// Verifies and stores a batch: what was stored, when it was done at
    /// once; None when the answer comes later (then the driver calls
    /// [`Session::on_stored`] itself and applies what follows).
    fn store(&mut self, batch: Vec<Unverified>) -> Result<Option<Stored>, SessionError>;
    /// The done message for `session` (see [`done_message`]), when it can
    /// be made at once; None when the driver sends it after the step.
    fn done(&mut self, session: &Session) -> Result<Option<Message>, SessionError>;
    /// Checks and keeps fork proofs the peer handed over (see
    /// [`keep_proofs`]): the forks newly kept, when done at once; None when
    /// the driver keeps them after the step.
    fn keep_proofs(
        &mut self,
        proofs: Vec<(Entry, Entry)>,
    ) -> Result<Option<Vec<(AuthorKey, u64)>>, SessionError>;
}

/// Checks each proof (a proof that does not hold is the peer's fault and
/// ends the session) and keeps those of authors not yet known to be
/// forked; the forks newly kept.
pub fn keep_proofs(
    store: &Store,
    proofs: Vec<(Entry, Entry)>,
) -> Result<Vec<(AuthorKey, u64)>, SessionError> {
    let proofs = proofs
        .into_iter()
        .map(|(first, second)| crate::store::ForkProof { first, second })
        .collect();
    match store.keep_proofs(proofs) {
        Ok(report) => Ok(report.forks),
        Err(StoreError::Rejected(bad)) => Err(SessionError::BadEntry(bad)),
        Err(e) => Err(e.into()),
    }
}

/// Carries out `actions` of `session`, and the actions that stores done at
/// once lead to. The serves of one step share messages. Returns whether
/// the session finished.
pub fn apply(
    session: &mut Session,
    actions: Vec<Action>,
    effects: &mut impl Effects,
) -> Result<bool, SessionError> {
    let mut queue: VecDeque<Action> = actions.into();
    let mut finished = false;
    while !queue.is_empty() {
        let step: Vec<Action> = queue.drain(..).collect();
        let mut serves: Option<Vec<_>> = Some(
            step.iter()
                .filter_map(|a| match a {
                    Action::Serve { author, from, to } => Some((*author, *from, *to)),
                    _ => None,
                })
                .collect(),
        );
        for action in step {
            match action {
                Action::Send(m) => effects.send(m)?,
                Action::Serve { .. } => {
                    if let Some(ranges) = serves.take() {
                        effects.serve(ranges)?;
                    }
                }
                Action::Store(batch) => {
                    if let Some(done) = effects.store(batch)? {
                        queue.extend(session.on_stored(&done));
                    }
                }
                Action::Done => {
                    if let Some(m) = effects.done(session)? {
                        effects.send(m)?;
                    }
                }
                Action::KeepProofs(proofs) => {
                    if let Some(kept) = effects.keep_proofs(proofs)? {
                        session.note_forks(&kept);
                    }
                }
                Action::Finished => finished = true,
            }
        }
    }
    Ok(finished)
}

/// Reads what a session needs of the store: the wanted authors (the mirror
/// set and `own`) and their heads. First makes every commit durable, so the
/// change counter handed to the peer can never be rolled back by a crash.
pub fn snapshot(store: &Store, own: Option<AuthorKey>) -> Result<Snapshot, StoreError> {
    store.flush()?;
    let mut wanted = store.wanted()?;
    wanted.extend(own);
    wanted.sort();
    wanted.dedup();
    let (heads, counter) = store.head_entries(&wanted)?;
    let proofs = store
        .forks()?
        .into_iter()
        .filter(|p| wanted.binary_search(&p.first.author()).is_ok())
        .map(|p| (p.first, p.second))
        .collect();
    Ok(Snapshot {
        proofs,
        store: store.id(),
        counter,
        wanted,
        heads: heads
            .into_iter()
            .map(|h| {
                let info = HeadInfo {
                    seq: h.entry.seq(),
                    id: h.id,
                    change: h.change,
                };
                (h.entry.author(), info)
            })
            .collect(),
    })
}

/// Sends entries `from..=to` of each (author, from, to) (with payloads held)
/// packed into entries messages of at most [`MAX_MESSAGE`] bytes. Returns
/// the bytes of entries and payloads sent.
pub fn serve(
    store: &Store,
    ranges: &[(AuthorKey, u64, u64)],
    send: &mut dyn FnMut(Message) -> Result<(), SessionError>,
) -> Result<u64, SessionError> {
    // Room for the enum tag and the body's length varint.
    const BUDGET: usize = MAX_MESSAGE - 16;
    let mut body = Vec::with_capacity(BUDGET.min(64 * 1024));
    let mut sent = 0u64;
    let mut failed = None;
    for (author, from, to) in ranges {
        let to = *to;
        store.scan(author, *from, |s| {
            if s.entry.seq() > to {
                return false;
            }
            let payload = s.payload.as_deref();
            let len = wire::entry_frame_len(&s.entry, payload.is_some());
            if body.len() + len > BUDGET
                && let Err(e) = send(Message::Entries(std::mem::take(&mut body)))
            {
                failed = Some(e);
                return false;
            }
            wire::push_entry(&mut body, &s.entry, payload);
            sent += len as u64 - 2;
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    if !body.is_empty() {
        send(Message::Entries(body))?;
    }
    Ok(sent)
}

/// Verifies received entries (batched signatures, payload hashes) and hands
/// them to the store, which checks the links, records forks, and commits
/// without waiting for the disk (see [`Store::append_mirrored`]). An entry
/// that does not verify fails the session: nothing of that message is
/// stored.
pub fn ingest(store: &Store, entries: Vec<Unverified>) -> Result<AppendReport, SessionError> {
    let verified = verify_batch(entries).map_err(|(_, bad)| SessionError::BadEntry(bad))?;
    Ok(store.append_mirrored(verified)?)
}

/// The authors of a batch of entries.
pub fn authors_of(entries: &[Unverified]) -> Vec<AuthorKey> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .map(|(e, _)| e.author())
        .filter(|a| seen.insert(*a))
        .collect()
}

/// The done message for `session`: makes the store durable, then offers
/// the counter now if the peer holds every change made since the snapshot.
pub fn done_message(store: &Store, session: &Session) -> Result<Message, SessionError> {
    store.flush()?;
    let (changed, now) = store.changed_since(session.snapshot_counter())?;
    Ok(done_for(session, &changed, now))
}

/// The done message for `session`, given the heads `changed` since its
/// snapshot and the change counter `now`.
pub fn done_for(
    session: &Session,
    changed: &[(AuthorKey, crate::store::Head)],
    now: u64,
) -> Message {
    let vouched = changed
        .iter()
        .all(|(author, head)| session.peer_holds(author, head.seq));
    Message::Done {
        counter: vouched.then_some(now),
    }
}

/// Bytes that crossed between the two sides of a lockstep run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Every frame byte, initiator → responder.
    pub to_responder: u64,
    /// Every frame byte, responder → initiator.
    pub to_initiator: u64,
    /// Of those, bytes of entries and payloads themselves (both ways).
    pub entry_bytes: u64,
    messages: Vec<(bool, Message)>,
}

impl Traffic {
    /// Everything sent except the entries and payloads themselves.
    pub fn overhead(&self) -> u64 {
        self.to_responder + self.to_initiator - self.entry_bytes
    }
}

/// What a lockstep run measured.
#[derive(Debug, Clone, Default)]
pub struct Lockstep {
    /// The initiator's stats (its round trips are the session's).
    pub initiator: Stats,
    /// The responder's stats.
    pub responder: Stats,
    /// Bytes each way.
    pub traffic: Traffic,
    /// Every message in the order it was sent: true when it went to the
    /// responder.
    pub transcript: Vec<(bool, Message)>,
    /// Round trips until the initiator knew every head where the two sides
    /// differ (the responder knows them at the latest with the initiator's
    /// next message): the measure negentropy reports.
    pub reconcile_round_trips: u64,
}

struct Side<'a> {
    store: &'a Store,
    session: Session,
    peer: [u8; 32],
}

/// Runs one session between two stores in this thread: the initiator's
/// messages are all delivered, then the responder's, and so on; each such
/// exchange is one round trip. `*_node` are the node keys the sides
/// remember each other by. On success both sides store their checkpoints,
/// as a networked session does.
pub fn run_lockstep(
    initiator: (&Store, Option<AuthorKey>, [u8; 32]),
    responder: (&Store, Option<AuthorKey>, [u8; 32]),
) -> Result<Lockstep, SessionError> {
    let (i_store, i_own, i_node) = initiator;
    let (r_store, r_own, r_node) = responder;
    let mut a = Side {
        store: i_store,
        session: Session::new(
            Role::Initiator,
            snapshot(i_store, i_own)?,
            i_store.peer(&r_node)?.map(Checkpoint::from),
        ),
        peer: r_node,
    };
    let mut b = Side {
        store: r_store,
        session: Session::new(
            Role::Responder,
            snapshot(r_store, r_own)?,
            r_store.peer(&i_node)?.map(Checkpoint::from),
        ),
        peer: i_node,
    };
    let mut result = Lockstep::default();
    let mut to_b = Vec::new();
    let mut to_a = Vec::new();
    let actions = a.session.start();
    execute(&mut a, actions, &mut to_b, &mut result.traffic)?;
    let mut round_trips = 0;
    // No honest session needs more turns than messages it can send; this
    // bounds a bug's loop.
    for _ in 0..100_000 {
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        let asked = !to_b.is_empty();
        for m in std::mem::take(&mut to_b) {
            let actions = b.session.on_message(m)?;
            execute(&mut b, actions, &mut to_a, &mut result.traffic)?;
        }
        if asked && !to_a.is_empty() {
            round_trips += 1;
        }
        for m in std::mem::take(&mut to_a) {
            let actions = a.session.on_message(m)?;
            execute(&mut a, actions, &mut to_b, &mut result.traffic)?;
        }
        if result.reconcile_round_trips == 0 && a.session.heads_settled() {
            result.reconcile_round_trips = round_trips;
        }
    }
    if !(a.session.finished() && b.session.finished()) {
        return Err(LinkError::Stalled.into());
    }
    for side in [&mut a, &mut b] {
        if let Some(checkpoint) = side.session.checkpoint() {
            let shared = side.session.take_shared();
            side.store.set_peer(side.peer, checkpoint.into(), shared)?;
        }
    }
    result.initiator = a.session.stats().clone();
    result.initiator.round_trips = round_trips;
    result.responder = b.session.stats().clone();
    result.transcript = std::mem::take(&mut result.traffic.messages);
    Ok(result)
}

/// The lockstep side of [`Effects`]: everything at once, on this thread.
struct Inline<'a> {
    store: &'a Store,
    to_responder: bool,
    out: &'a mut Vec<Message>,
    traffic: &'a mut Traffic,
}

impl Inline<'_> {
    fn count(&mut self, m: &Message) {
        self.traffic.messages.push((self.to_responder, m.clone()));
        let len = wire::encode(m).len() as u64;
        if self.to_responder {
            self.traffic.to_responder += len;
        } else {
            self.traffic.to_initiator += len;
        }
    }
}

impl Effects for Inline<'_> {
    fn send(&mut self, message: Message) -> Result<(), SessionError> {
        self.count(&message);
        self.out.push(message);
        Ok(())
    }

    fn serve(&mut self, ranges: Vec<(AuthorKey, u64, u64)>) -> Result<(), SessionError> {
        let mut sent = Vec::new();
        let bytes = serve(self.store, &ranges, &mut |m| {
            sent.push(m);
            Ok(())
        })?;
        self.traffic.entry_bytes += bytes;
        for m in sent {
            self.send(m)?;
        }
        Ok(())
    }

    fn store(&mut self, batch: Vec<Unverified>) -> Result<Option<Stored>, SessionError> {
        let authors = authors_of(&batch);
        let report = ingest(self.store, batch)?;
        Ok(Some(stored(&report, authors, 1)))
    }

    fn done(&mut self, session: &Session) -> Result<Option<Message>, SessionError> {
        done_message(self.store, session).map(Some)
    }

    fn keep_proofs(
        &mut self,
        proofs: Vec<(Entry, Entry)>,
    ) -> Result<Option<Vec<(AuthorKey, u64)>>, SessionError> {
        keep_proofs(self.store, proofs).map(Some)
    }
}

fn execute(
    side: &mut Side<'_>,
    actions: Vec<Action>,
    out: &mut Vec<Message>,
    traffic: &mut Traffic,
) -> Result<(), SessionError> {
    let mut effects = Inline {
        store: side.store,
        to_responder: side.session.role() == Role::Initiator,
        out,
        traffic,
    };
    apply(&mut side.session, actions, &mut effects)?;
    Ok(())
}

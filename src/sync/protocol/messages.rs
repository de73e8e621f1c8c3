//! How a session answers each message of the peer, phase by phase:
//! hello and interest, heads (by cursor or by reconciliation), wants and
//! entries, done. schema/sync.md describes the flow.

use super::*;
use crate::log::entry::ENTRY_LEN;

/// The two entries of one proof of a [`Message::Proofs`], if it is
/// [`PROOF_LEN`] bytes of two entries that decode.
fn decode_proof(p: &[u8]) -> Option<(Entry, Entry)> {
    if p.len() != PROOF_LEN {
        return None;
    }
    let (a, b) = p.split_at(ENTRY_LEN);
    Some((Entry::decode(a).ok()?, Entry::decode(b).ok()?))
}

impl Session {
    /// Handles one message from the peer.
    pub fn on_message(&mut self, message: Message) -> Result<Vec<Action>, Violation> {
        if self.role == Role::Initiator && std::mem::take(&mut self.awaiting) {
            self.stats.round_trips += 1;
        }
        let mut out = Vec::new();
        match message {
            Message::Hello {
                version,
                interest,
                interest_len,
                store,
                cursor,
                optimistic,
            } => {
                if self.role != Role::Responder || self.phase != Phase::Start {
                    return Err(Violation::Unexpected("hello"));
                }
                if !(OLDEST_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    return Err(Violation::Version(version));
                }
                self.peer_version = version;
                self.their_store = Some(store);
                let list_coming = cursor.is_none() && interest_len as usize <= INLINE_INTEREST;
                if interest == self.digest {
                    self.discard_list = list_coming;
                    self.settle(self.snap.wanted.clone());
                    // An optimistic first step is answered when it arrives.
                    self.welcome(Shared::Same, cursor, !optimistic, &mut out);
                } else {
                    self.optimistic = optimistic;
                    self.phase = Phase::AwaitInterest;
                    self.pending_cursor = cursor;
                    if !list_coming {
                        out.push(Action::Send(Message::Welcome {
                            shared: Shared::SendList,
                            store: self.my_cursor(),
                            cursor_ok: false,
                            cursor: None,
                        }));
                    }
                }
            }
            Message::Interest { authors, last } => {
                if self.role != Role::Responder
                    || !(self.phase == Phase::AwaitInterest || self.discard_list)
                {
                    return Err(Violation::Unexpected("interest"));
                }
                if self.list_in.len() + authors.len() > MAX_INTEREST {
                    return Err(Violation::BadInterest("too many authors"));
                }
                for a in authors {
                    let a = AuthorKey(a);
                    if self.list_in.last().is_some_and(|l| *l >= a) {
                        return Err(Violation::BadInterest("not sorted"));
                    }
                    self.list_in.push(a);
                }
                if last {
                    let list = std::mem::take(&mut self.list_in);
                    if std::mem::take(&mut self.discard_list) {
                        return Ok(out);
                    }
                    let mine: HashSet<&AuthorKey> = self.snap.wanted.iter().collect();
                    let mut bitmap = vec![0u8; list.len().div_ceil(8)];
                    let mut universe = Vec::new();
                    for (i, a) in list.iter().enumerate() {
                        if mine.contains(a) {
                            bitmap[i / 8] |= 1 << (i % 8);
                            universe.push(*a);
                        }
                    }
                    self.settle(universe);
                    let cursor = self.pending_cursor.take();
                    self.welcome(Shared::Bitmap(bitmap), cursor, true, &mut out);
                }
            }
            Message::Welcome {
                shared,
                store,
                cursor_ok,
                cursor,
            } => {
                if self.role != Role::Initiator || self.phase != Phase::AwaitWelcome {
                    return Err(Violation::Unexpected("welcome"));
                }
                self.their_store = Some(store);
                match shared {
                    Shared::Same => {
                        if !self.optimistic {
                            self.settle(self.snap.wanted.clone());
                        }
                    }
                    Shared::Bitmap(bits) => {
                        if bits.len() != self.snap.wanted.len().div_ceil(8) {
                            return Err(Violation::BadInterest("bitmap of the wrong length"));
                        }
                        let universe = self
                            .snap
                            .wanted
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
                            .map(|(_, a)| *a)
                            .collect();
                        self.settle(universe);
                    }
                    Shared::SendList => {
                        self.send_list(&mut out);
                        self.awaiting = true;
                        return Ok(out);
                    }
                }
                self.phase = Phase::Running;
                // The responder welcomed a version-2 hello: it reads proofs.
                self.send_proofs(&mut out);
                if cursor_ok {
                    self.by_cursor = true;
                    self.stats.by_cursor = true;
                    // The responder's cursor into our changelog, if it is ours.
                    let since = cursor
                        .filter(|c| c.store == self.snap.store && c.counter <= self.snap.counter)
                        .map(|c| c.counter);
                    self.send_heads(since, &mut out);
                }
            }
            Message::Ranges(ranges) => {
                if self.phase != Phase::Running || self.by_cursor || self.reconciled {
                    if self.role == Role::Responder
                        && self.phase == Phase::AwaitInterest
                        && self.optimistic
                    {
                        // The optimistic step over an interest that is not shared.
                        self.optimistic = false;
                        return Ok(out);
                    }
                    return Err(Violation::Unexpected("ranges"));
                }
                self.ranges_in += 1;
                if self.ranges_in > MAX_RANGES_MESSAGES {
                    return Err(Violation::Unexpected("ranges beyond the limit"));
                }
                let ranges = range::from_wire(ranges)?;
                if ranges.is_empty() {
                    self.reconciled = true;
                } else {
                    let answer = self.reconciler().answer(&ranges)?;
                    for item in answer.learned {
                        self.learn(item, false)?;
                    }
                    for item in answer.pushed {
                        self.learn(item, true)?;
                    }
                    let mut pushes = Vec::new();
                    for (author, from, to) in answer.push {
                        // Each log at most once unasked per session.
                        let key = self.author(author)?;
                        if let std::collections::hash_map::Entry::Vacant(first) =
                            self.wants_in.entry(author)
                        {
                            first.insert(1);
                            pushes.push(Action::Serve {
                                author: key,
                                from,
                                to,
                            });
                        }
                    }
                    if answer.ranges.is_empty() {
                        self.reconciled = true;
                    }
                    self.settled = answer.ranges.iter().all(|(_, mode)| {
                        matches!(
                            mode,
                            range::Mode::Skip
                                | range::Mode::Diff(_)
                                | range::Mode::Forked { reply: false, .. }
                        )
                    });
                    out.push(Action::Send(Message::Ranges(range::to_wire(
                        &answer.ranges,
                    ))));
                    // After the ranges, so the peer knows why they come.
                    out.extend(pushes);
                }
            }
            Message::Heads { items, last } => {
                if self.phase != Phase::Running || !self.by_cursor || self.reconciled {
                    return Err(Violation::Unexpected("heads"));
                }
                self.heads_in += items.len();
                if self.heads_in > self.universe.len() {
                    return Err(Violation::TooManyHeads);
                }
                for item in items {
                    self.author(item.author)?;
                    self.learn(item, false)?;
                }
                self.reconciled = last;
            }
            Message::Want(wants) => {
                if self.phase != Phase::Running {
                    return Err(Violation::Unexpected("want"));
                }
                for Wanted { author, from, to } in wants {
                    let key = self.author(author)?;
                    let held = self.snap.heads.get(&key).map_or(0, |h| h.seq);
                    let asked = self.wants_in.entry(author).or_insert(0);
                    *asked += 1;
                    if from == 0 || from > to || to > held || *asked > MAX_WANTS_PER_AUTHOR {
                        return Err(Violation::BadWant { author, from, to });
                    }
                    out.push(Action::Serve {
                        author: key,
                        from,
                        to,
                    });
                }
            }
            Message::Entries(body) => {
                if self.phase != Phase::Running {
                    return Err(Violation::Unexpected("entries"));
                }
                let entries = crate::sync::wire::decode_entries(&body)
                    .map_err(|_| Violation::Unexpected("malformed entries"))?;
                for (entry, _) in &entries {
                    let author = entry.author();
                    let seq = entry.seq();
                    let unrequested = Violation::Unrequested { author, seq };
                    let index = *self.index.get(&author).ok_or(unrequested.clone())?;
                    let queue = self.expect.get_mut(&index).ok_or(unrequested.clone())?;
                    let (next, to) = queue.front_mut().ok_or(unrequested.clone())?;
                    if seq != *next {
                        return Err(unrequested);
                    }
                    *next += 1;
                    if *next > *to {
                        queue.pop_front();
                        if queue.is_empty() {
                            self.expect.remove(&index);
                        }
                    }
                }
                self.stats.entries_received += entries.len() as u64;
                if !entries.is_empty() {
                    self.pending_stores += 1;
                    out.push(Action::Store(entries));
                }
            }
            Message::Proofs { format, proofs } => {
                // Once the interest is settled, from a peer that speaks 2
                // (a responder that welcomed a version-2 hello does).
                let speaks_2 = self.role == Role::Initiator || self.peer_version >= 2;
                if self.phase != Phase::Running || !speaks_2 || self.proofs_received {
                    return Err(Violation::Unexpected("proofs"));
                }
                self.proofs_received = true;
                if format != PROOFS_FORMAT {
                    return Err(Violation::BadProofs("unknown format"));
                }
                if proofs.len() > MAX_PROOFS.min(self.universe.len()) {
                    return Err(Violation::BadProofs("more proofs than shared authors"));
                }
                let mut kept = Vec::with_capacity(proofs.len());
                let mut seen = HashSet::new();
                for p in &proofs {
                    let Some((a, b)) = decode_proof(p) else {
                        return Err(Violation::BadProofs("a proof is not two entries"));
                    };
                    if !self.index.contains_key(&a.author()) {
                        return Err(Violation::BadProofs(
                            "a proof of an author outside the shared interest",
                        ));
                    }
                    if !seen.insert(a.author()) {
                        return Err(Violation::BadProofs("two proofs of one author"));
                    }
                    kept.push((a, b));
                }
                if !kept.is_empty() {
                    out.push(Action::KeepProofs(kept));
                }
            }
            Message::Done { counter } => {
                if self.phase != Phase::Running || self.done_received {
                    return Err(Violation::Unexpected("done"));
                }
                self.done_received = true;
                self.their_end = counter;
            }
        }
        self.progress(&mut out);
        Ok(out)
    }

    /// Sends the fork proofs this node holds for authors of the shared
    /// interest, if any (once per session).
    pub(super) fn send_proofs(&mut self, out: &mut Vec<Action>) {
        if std::mem::replace(&mut self.proofs_sent, true) {
            return;
        }
        let proofs: Vec<Vec<u8>> = self
            .snap
            .proofs
            .iter()
            .filter(|(a, _)| self.index.contains_key(&a.author()))
            .take(MAX_PROOFS)
            .map(|(a, b)| [a.as_bytes().as_slice(), b.as_bytes().as_slice()].concat())
            .collect();
        if proofs.is_empty() {
            return;
        }
        out.push(Action::Send(Message::Proofs {
            format: PROOFS_FORMAT,
            proofs,
        }));
    }

    /// Sends the welcome, and then either the heads changed since the
    /// initiator's cursor or (unless the initiator already sent one) the
    /// first reconciliation step.
    pub(super) fn welcome(
        &mut self,
        shared: Shared,
        cursor: Option<Cursor>,
        start_ranges: bool,
        out: &mut Vec<Action>,
    ) {
        let since = cursor
            .filter(|c| c.store == self.snap.store && c.counter <= self.snap.counter)
            .map(|c| c.counter);
        let mine = self.remembered_cursor();
        // The cursor path needs both cursors to be for this interest: ours is
        // (remembered_cursor checks), the peer's counter must be ours.
        let cursor_ok = since.is_some() && mine.is_some();
        self.phase = Phase::Running;
        out.push(Action::Send(Message::Welcome {
            shared,
            store: self.my_cursor(),
            cursor_ok,
            cursor: if cursor_ok { mine } else { None },
        }));
        if self.peer_version >= 2 {
            self.send_proofs(out);
        }
        if cursor_ok {
            self.by_cursor = true;
            self.stats.by_cursor = true;
            self.send_heads(since, out);
        } else if start_ranges {
            let initial = self.reconciler().initial();
            out.push(Action::Send(Message::Ranges(range::to_wire(
                &initial.ranges,
            ))));
        }
    }

    /// Sends the heads changed since `since` (all heads when None).
    pub(super) fn send_heads(&self, since: Option<u64>, out: &mut Vec<Action>) {
        let items: Vec<ItemRef> = self
            .reconciler()
            .items()
            .iter()
            .filter(|item| {
                let head = &self.snap.heads[&self.universe[item.author as usize]];
                since.is_none_or(|c| head.change > c)
            })
            .map(Item::reference)
            .collect();
        let mut chunks = items.chunks(HEADS_CHUNK).peekable();
        if chunks.peek().is_none() {
            out.push(Action::Send(Message::Heads {
                items: vec![],
                last: true,
            }));
        }
        while let Some(chunk) = chunks.next() {
            out.push(Action::Send(Message::Heads {
                items: chunk.to_vec(),
                last: chunks.peek().is_none(),
            }));
        }
    }

    /// Acts on the peer's head of one author: asks for what this side lacks,
    /// or, when the peer `pushes` it unasked, only expects it.
    pub(super) fn learn(&mut self, theirs: ItemRef, pushes: bool) -> Result<(), Violation> {
        let key = self.author(theirs.author)?;
        if !self.decided.insert(theirs.author) {
            return Ok(());
        }
        self.learned.insert(theirs.author, theirs.seq);
        let mine = self.snap.heads.get(&key);
        let held = mine.map_or(0, |h| h.seq);
        if theirs.seq > held {
            if pushes {
                self.expect(theirs.author, held + 1, theirs.seq);
            } else {
                self.want(theirs.author, held + 1, theirs.seq);
            }
        } else if let Some(h) = mine
            && theirs.seq == h.seq
            && theirs.id[..] != h.id.0[..range::ID_PREFIX]
        {
            // Two entries signed for one seq: fetch theirs for the proof.
            self.evidence.insert(theirs.author);
            self.want(theirs.author, h.seq, h.seq);
        }
        Ok(())
    }

    pub(super) fn expect(&mut self, author: u32, from: u64, to: u64) {
        self.expect.entry(author).or_default().push_back((from, to));
        self.stats.entries_expected += to - from + 1;
    }

    /// Asks for entries; the wants of one step go out in one message.
    pub(super) fn want(&mut self, author: u32, from: u64, to: u64) {
        self.expect(author, from, to);
        self.wants_out.push(Wanted { author, from, to });
    }
}

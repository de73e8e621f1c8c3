//! Range-based set reconciliation of log heads (Aljoscha Meyer's RBSR, as in
//! negentropy).
//!
//! Because each log is dense (1..n), what a node holds of a log is told by its
//! head. Two nodes therefore reconcile the set of their heads: one item per
//! author of the shared interest, (author, seq, id), ordered by the author's
//! index in the shared interest (its position among the sorted keys).
//!
//! Ordered by author, an item keeps its place when its log grows: a log that
//! moved on changes one range, not two. (Ordered by the head's timestamp, as
//! negentropy orders events, the new head would cluster at the newest end but
//! the old one would vanish from wherever it was: measured on 10,000 logs,
//! one new entry cost 2,028 bytes that way and 1,131 this way, and with 1,000
//! logs one entry ahead, scattered old heads made every range differ either
//! way; compact lists are what keeps that case small.)
//!
//! A message is a list of ranges covering every author index, each with an
//! exclusive upper bound and a mode: skip (nothing to do), the fingerprint of
//! the sender's items in the range, a list of them, or the differences found
//! in a list. A receiver answers a mismatching fingerprint by splitting its
//! items into [`SPLIT`] ranges, or by listing them when there are at most
//! [`ITEM_THRESHOLD`]. A list tells only (author, seq) of each item, as
//! varints (an author as its distance from the previous one), with the
//! fingerprint of the full items; its receiver answers with its items whose
//! (author, seq) the list lacks (encoded the same way), or, when every
//! (author, seq) agrees but the fingerprints do not (two entries signed for
//! one seq: a fork), with all of its items in full, ids included.
//!
//! After the last exchange, for every author where the two differ, either
//! the side behind has "learned" the head of the side ahead (and asks for
//! what it lacks), or the side ahead answered the list of the side behind
//! (and so knows its head, and sends what it lacks unasked: "pushed"). Both
//! never happen for one author, so nothing is sent twice.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Bytes of a range fingerprint: 128 bits, as negentropy, so that no two
/// different ranges share one by chance in the lifetime of the mesh.
pub const FINGERPRINT_LEN: usize = 16;

/// How many ranges a mismatching range splits into. 16 (negentropy's
/// choice) reaches one difference among 10,000 authors in two splits while a
/// split costs only 16 fingerprints (~19 bytes each).
pub const SPLIT: usize = 16;

/// At most this many items are listed instead of split. A listed item costs
/// 2–4 bytes, a split ~300; listing up to 48 costs less than a split and
/// saves its round trip.
pub const ITEM_THRESHOLD: usize = 48;

/// Bytes of an id prefix in a full item: with both sides holding the same
/// author and seq, the prefix only has to tell two entries of one seq apart
/// (a fork); 64 bits make forging a look-alike cost 2^64 signatures.
pub const ID_PREFIX: usize = 8;

/// Upper bound of the last range: above every author index (no interest
/// holds 2^32 − 1 authors).
pub const END: u32 = u32::MAX;

/// A head as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// The author's index in the shared interest.
    pub author: u32,
    /// The head's seq.
    pub seq: u64,
    /// The head's id.
    pub id: [u8; 32],
}

impl Item {
    /// The full form, sent in differences and changed heads.
    pub fn reference(&self) -> ItemRef {
        ItemRef {
            author: self.author,
            seq: self.seq,
            id: self.id[..ID_PREFIX].try_into().expect("prefix"),
        }
    }
}

/// A head in full: author index, seq, id prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemRef {
    /// The author's index in the shared interest.
    pub author: u32,
    /// The head's seq.
    pub seq: u64,
    /// The first [`ID_PREFIX`] bytes of the head's id (zero when learned from
    /// a list, which does not carry ids).
    pub id: [u8; ID_PREFIX],
}

/// A listed item: how many author indices it skips after the previous one
/// (the first: after the range's lower bound), and its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// Author indices skipped.
    pub gap: u32,
    /// The head's seq.
    pub seq: u64,
}

/// What the sender says about one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Nothing to do here.
    Skip,
    /// The fingerprint of the sender's items in the range.
    Fingerprint([u8; FINGERPRINT_LEN]),
    /// The sender's items in the range, and the fingerprint of them in full;
    /// answer with a [`Mode::Diff`].
    List {
        /// Fingerprint of the listed items.
        fingerprint: [u8; FINGERPRINT_LEN],
        /// The items, in order.
        items: Vec<Listed>,
    },
    /// The answer to a list: the sender's items whose (author, seq) the list
    /// lacks, encoded as a list is.
    Diff(Vec<Listed>),
    /// The answer to a list whose (author, seq) all agree but whose
    /// fingerprint does not (a fork): the sender's items in full. With
    /// `reply`, the receiver answers with its own items that differ, in full,
    /// so both sides learn of the fork.
    Forked {
        /// Whether to answer with one's own differing items.
        reply: bool,
        /// The items.
        items: Vec<ItemRef>,
    },
}

/// One range on the wire: its upper bound as the distance from the previous
/// range's (the first from 0), and its mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRange {
    /// Upper bound minus the previous range's.
    pub delta: u32,
    /// The mode.
    pub mode: Mode,
}

/// Why a ranges message is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Bounds must increase and the last must be [`END`].
    #[error("the ranges do not cover the order in increasing bounds")]
    BadBounds,
    /// An item names an author outside the shared interest or its range.
    #[error("an item names author index {0}, outside the shared interest or its range")]
    UnknownAuthor(u32),
}

/// Gap-encodes (author, seq) pairs in increasing author order, starting
/// from `lower`.
fn gaps(lower: u32, items: impl Iterator<Item = (u32, u64)>) -> Vec<Listed> {
    let mut next = lower;
    items
        .map(|(author, seq)| {
            let listed = Listed {
                gap: author - next,
                seq,
            };
            next = author + 1;
            listed
        })
        .collect()
}

/// Encodes ranges (upper bound, mode) for the wire.
pub fn to_wire(ranges: &[(u32, Mode)]) -> Vec<WireRange> {
    let mut previous = 0;
    ranges
        .iter()
        .map(|(bound, mode)| {
            let r = WireRange {
                delta: bound - previous,
                mode: mode.clone(),
            };
            previous = *bound;
            r
        })
        .collect()
}

/// Decodes wire ranges, checking that bounds increase and end at [`END`]
/// (an empty message is the end of reconciliation).
pub fn from_wire(ranges: Vec<WireRange>) -> Result<Vec<(u32, Mode)>, RangeError> {
    let mut previous = 0u32;
    let mut out = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.into_iter().enumerate() {
        let bound = previous.checked_add(r.delta).ok_or(RangeError::BadBounds)?;
        if i > 0 && bound <= previous || bound == 0 {
            return Err(RangeError::BadBounds);
        }
        previous = bound;
        out.push((bound, r.mode));
    }
    if !out.is_empty() && previous != END {
        return Err(RangeError::BadBounds);
    }
    Ok(out)
}

/// The fingerprint of a set of items: blake3 of (the sum of their ids as
/// 256-bit little-endian numbers, mod 2^256) ‖ count. The sum makes it
/// independent of order and cheap to combine.
pub fn fingerprint(items: &[Item]) -> [u8; FINGERPRINT_LEN] {
    let mut sum = [0u64; 4];
    for item in items {
        let mut carry = false;
        for (limb, chunk) in sum.iter_mut().zip(item.id.chunks_exact(8)) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let (a, c1) = limb.overflowing_add(word);
            let (b, c2) = a.overflowing_add(carry as u64);
            *limb = b;
            carry = c1 || c2;
        }
    }
    let mut hasher = blake3::Hasher::new();
    for limb in sum {
        hasher.update(&limb.to_le_bytes());
    }
    hasher.update(&(items.len() as u64).to_le_bytes());
    hasher.finalize().as_bytes()[..FINGERPRINT_LEN]
        .try_into()
        .expect("prefix")
}

/// What answering one ranges message produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The ranges to send back; empty when every range matched (the end).
    pub ranges: Vec<(u32, Mode)>,
    /// The other side's items that differ from this side's; the side behind
    /// asks for what it lacks.
    pub learned: Vec<ItemRef>,
    /// The other side's items from a [`Mode::Diff`]: the other side knows
    /// this side's heads from its list, and sends what this side lacks
    /// without being asked.
    pub pushed: Vec<ItemRef>,
    /// Entries to send without being asked, (author, from, to): where this
    /// side is ahead of a list it answered with a [`Mode::Diff`].
    pub push: Vec<(u32, u64, u64)>,
}

/// One side's items, sorted by author, and the reconciliation steps over
/// them.
#[derive(Debug, Clone)]
pub struct Reconciler {
    items: Vec<Item>,
    authors: u32,
}

impl Reconciler {
    /// Reconciles `items` (at most one per author) over a shared interest of
    /// `authors` authors.
    pub fn new(mut items: Vec<Item>, authors: u32) -> Reconciler {
        items.sort_unstable_by_key(|i| i.author);
        Reconciler { items, authors }
    }

    /// The items, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The first message: the whole order, split or listed.
    pub fn initial(&self) -> Answer {
        let mut answer = Answer::default();
        self.describe(0, self.items.len(), 0, END, &mut answer);
        answer
    }

    /// Describes items[lo..hi] (the range `lower..upper`) as a list when
    /// small, else as [`SPLIT`] fingerprinted sub-ranges of equal counts.
    fn describe(&self, lo: usize, hi: usize, lower: u32, upper: u32, answer: &mut Answer) {
        let n = hi - lo;
        let part = &self.items[lo..hi];
        if n <= ITEM_THRESHOLD {
            let items = gaps(lower, part.iter().map(|i| (i.author, i.seq)));
            answer.ranges.push((
                upper,
                Mode::List {
                    fingerprint: fingerprint(part),
                    items,
                },
            ));
            return;
        }
        for k in 0..SPLIT {
            let (a, b) = (lo + k * n / SPLIT, lo + (k + 1) * n / SPLIT);
            let bound = if k + 1 == SPLIT {
                upper
            } else {
                self.items[b].author
            };
            answer
                .ranges
                .push((bound, Mode::Fingerprint(fingerprint(&self.items[a..b]))));
        }
    }

    /// Decodes a gap-encoded list of the range `lower..upper`, checking that
    /// every author lies in it (and in the interest) and appears once.
    fn ungap(
        &self,
        lower: u32,
        upper: u32,
        items: &[Listed],
    ) -> Result<Vec<(u32, u64)>, RangeError> {
        let mut out = Vec::with_capacity(items.len());
        let mut next = lower;
        for l in items {
            let author = next
                .checked_add(l.gap)
                .ok_or(RangeError::UnknownAuthor(next))?;
            if author >= upper.min(self.authors) {
                return Err(RangeError::UnknownAuthor(author));
            }
            out.push((author, l.seq));
            next = author + 1;
        }
        Ok(out)
    }

    /// Answers a ranges message (see the module's description).
    pub fn answer(&self, ranges: &[(u32, Mode)]) -> Result<Answer, RangeError> {
        let mut answer = Answer::default();
        let (mut lower, mut lo) = (0u32, 0usize);
        for (upper, mode) in ranges {
            let upper = *upper;
            let hi = lo + self.items[lo..].partition_point(|i| i.author < upper);
            let mine = &self.items[lo..hi];
            match mode {
                Mode::Skip => answer.ranges.push((upper, Mode::Skip)),
                Mode::Fingerprint(fp) => {
                    if fingerprint(mine) == *fp {
                        answer.ranges.push((upper, Mode::Skip));
                    } else {
                        self.describe(lo, hi, lower, upper, &mut answer);
                    }
                }
                Mode::List {
                    fingerprint: fp,
                    items,
                } => {
                    let listed = self.ungap(lower, upper, items)?;
                    let theirs: HashMap<u32, u64> = listed.iter().copied().collect();
                    let ours: HashMap<u32, u64> = mine.iter().map(|i| (i.author, i.seq)).collect();
                    // In list order, so a session's messages are deterministic.
                    for &(author, seq) in &listed {
                        if ours.get(&author) != Some(&seq) {
                            answer.learned.push(ItemRef {
                                author,
                                seq,
                                id: [0; ID_PREFIX],
                            });
                        }
                    }
                    let differ: Vec<&Item> = mine
                        .iter()
                        .filter(|i| theirs.get(&i.author) != Some(&i.seq))
                        .collect();
                    for i in &differ {
                        let held = theirs.get(&i.author).copied().unwrap_or(0);
                        if i.seq > held {
                            answer.push.push((i.author, held + 1, i.seq));
                        }
                    }
                    let reply = if !differ.is_empty() {
                        Mode::Diff(gaps(lower, differ.iter().map(|i| (i.author, i.seq))))
                    } else if fingerprint(mine) != *fp {
                        // Same seqs, different entries: tell every id.
                        Mode::Forked {
                            reply: true,
                            items: mine.iter().map(Item::reference).collect(),
                        }
                    } else {
                        Mode::Skip
                    };
                    answer.ranges.push((upper, reply));
                }
                Mode::Diff(items) => {
                    let ours: HashMap<u32, u64> = mine.iter().map(|i| (i.author, i.seq)).collect();
                    for (author, seq) in self.ungap(lower, upper, items)? {
                        if ours.get(&author) != Some(&seq) {
                            answer.pushed.push(ItemRef {
                                author,
                                seq,
                                id: [0; ID_PREFIX],
                            });
                        }
                    }
                    answer.ranges.push((upper, Mode::Skip));
                }
                Mode::Forked { reply, items } => {
                    let ours: HashMap<u32, ItemRef> =
                        mine.iter().map(|i| (i.author, i.reference())).collect();
                    let mut differ = Vec::new();
                    for r in items {
                        if r.author < lower || r.author >= upper.min(self.authors) {
                            return Err(RangeError::UnknownAuthor(r.author));
                        }
                        if ours.get(&r.author) != Some(r) {
                            answer.learned.push(*r);
                            differ.extend(ours.get(&r.author).copied());
                        }
                    }
                    if *reply && !differ.is_empty() {
                        answer.ranges.push((
                            upper,
                            Mode::Forked {
                                reply: false,
                                items: differ,
                            },
                        ));
                    } else {
                        answer.ranges.push((upper, Mode::Skip));
                    }
                }
            }
            lower = upper;
            lo = hi;
        }
        // Merge runs of skips; a message of skips alone says "done".
        let mut merged: Vec<(u32, Mode)> = Vec::with_capacity(answer.ranges.len());
        for (bound, mode) in answer.ranges.drain(..) {
            if mode == Mode::Skip
                && let Some((last_bound, Mode::Skip)) = merged.last_mut()
            {
                *last_bound = bound;
                continue;
            }
            merged.push((bound, mode));
        }
        if merged.iter().all(|(_, m)| *m == Mode::Skip) {
            merged.clear();
        }
        answer.ranges = merged;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(author: u32, seq: u64) -> Item {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&seq.to_le_bytes());
        id[8..12].copy_from_slice(&author.to_le_bytes());
        Item {
            author,
            seq,
            id: *blake3::hash(&id).as_bytes(),
        }
    }

    /// Runs reconciliation to the end; returns what each side learned and the
    /// number of messages.
    fn reconcile(a: &Reconciler, b: &Reconciler) -> (Vec<ItemRef>, Vec<ItemRef>, usize) {
        let (mut learned_a, mut learned_b) = (vec![], vec![]);
        let mut message = a.initial().ranges;
        let mut messages = 1;
        let mut turn_b = true;
        while !message.is_empty() {
            let decoded = from_wire(to_wire(&message)).unwrap();
            let (side, learned) = if turn_b {
                (b, &mut learned_b)
            } else {
                (a, &mut learned_a)
            };
            let answer = side.answer(&decoded).unwrap();
            learned.extend(answer.learned);
            learned.extend(answer.pushed);
            message = answer.ranges;
            messages += 1;
            turn_b = !turn_b;
        }
        (learned_a, learned_b, messages)
    }

    fn seqs(mut learned: Vec<ItemRef>) -> Vec<(u32, u64)> {
        learned.sort_by_key(|r| r.author);
        learned.iter().map(|r| (r.author, r.seq)).collect()
    }

    #[test]
    fn each_side_learns_the_others_different_items() {
        let n = 5000;
        let common: Vec<Item> = (0..n).map(|i| item(i, 3)).collect();
        let mut a = common.clone();
        let mut b = common;
        // Author 7 moved on at b; author 5000 is held only by a.
        b[7] = item(7, 4);
        a.push(item(5000, 1));
        let (ra, rb) = (Reconciler::new(a, n + 1), Reconciler::new(b, n + 1));
        let (learned_a, learned_b, messages) = reconcile(&ra, &rb);
        assert!(seqs(learned_a).contains(&(7, 4)));
        let lb = seqs(learned_b);
        assert!(lb.contains(&(7, 3)) && lb.contains(&(5000, 1)), "{lb:?}");
        assert!(messages <= 6, "{messages} messages");
    }

    #[test]
    fn a_fork_at_equal_seqs_is_told_in_full() {
        let a: Vec<Item> = (0..100).map(|i| item(i, 2)).collect();
        let mut b = a.clone();
        b[40].id = [7; 32];
        let (learned_a, learned_b, _) =
            reconcile(&Reconciler::new(a, 100), &Reconciler::new(b, 100));
        // Both sides learn the other's id for the forked seq.
        assert!(
            learned_a.iter().any(|r| r.author == 40 && r.id == [7; 8]),
            "{learned_a:?}"
        );
        assert!(
            learned_b
                .iter()
                .any(|r| r.author == 40 && r.seq == 2 && r.id != [7; 8]),
            "{learned_b:?}"
        );
    }

    #[test]
    fn equal_sets_finish_in_one_exchange() {
        let items: Vec<Item> = (0..1000).map(|i| item(i, 1)).collect();
        let a = Reconciler::new(items.clone(), 1000);
        let b = Reconciler::new(items, 1000);
        let (la, lb, messages) = reconcile(&a, &b);
        assert!(la.is_empty() && lb.is_empty());
        assert_eq!(messages, 2);
    }

    #[test]
    fn malformed_bounds_are_refused() {
        let r = |delta| WireRange {
            delta,
            mode: Mode::Skip,
        };
        assert_eq!(from_wire(vec![r(5), r(0)]), Err(RangeError::BadBounds));
        assert_eq!(from_wire(vec![r(5)]), Err(RangeError::BadBounds));
        assert_eq!(from_wire(vec![r(0)]), Err(RangeError::BadBounds));
        assert_eq!(from_wire(vec![r(END), r(1)]), Err(RangeError::BadBounds));
        assert!(from_wire(vec![r(5), r(END - 5)]).is_ok());
        assert_eq!(from_wire(vec![]), Ok(vec![]));
    }

    #[test]
    fn lists_naming_authors_outside_their_range_are_refused() {
        let r = Reconciler::new((0..10).map(|i| item(i, 1)).collect(), 10);
        let list = |gap| Mode::List {
            fingerprint: [0; 16],
            items: vec![Listed { gap, seq: 1 }],
        };
        assert!(r.answer(&[(5, list(5)), (END, Mode::Skip)]).is_err());
        assert!(r.answer(&[(END, list(10))]).is_err());
        assert!(r.answer(&[(END, list(u32::MAX))]).is_err());
        assert!(r.answer(&[(5, list(4)), (END, Mode::Skip)]).is_ok());
    }
}

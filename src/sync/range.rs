//! Range-based set reconciliation of log heads (Aljoscha Meyer's RBSR, as in
//! negentropy).
//!
//! Because each log is dense (1..n), what a node holds of a log is told by its
//! head. Two nodes therefore reconcile the set of their heads, one item per
//! author of the shared interest: (timestamp of the head entry, author, seq,
//! id), ordered by timestamp then author. Logs that changed recently cluster
//! at the newest end of that order, where a mismatch costs least.
//!
//! A message is a list of ranges covering the whole order, each with an
//! exclusive upper bound and a mode: skip (nothing to do), the fingerprint of
//! the sender's items in the range, or the items themselves. A receiver
//! answers a mismatching fingerprint by splitting its items into [`SPLIT`]
//! ranges, or by listing them when there are at most [`ITEM_THRESHOLD`]; it
//! answers a list (when asked) with its own items the list lacks. Every item
//! the other side holds and this side does not is "learned": after the last
//! exchange, each side has learned the other's head of every author where
//! the two differ.
//!
//! Authors travel as their index in the shared, sorted interest (both sides
//! hold the same list, so an index tells them apart in 1–3 bytes) and ids as
//! an [`ID_PREFIX`]-byte prefix: items are "sent as compactly as they can be
//! told apart".

use serde::{Deserialize, Serialize};

/// Bytes of a range fingerprint: 128 bits, as negentropy, so that no two
/// different ranges share one by chance in the lifetime of the mesh.
pub const FINGERPRINT_LEN: usize = 16;

/// How many ranges a mismatching range splits into. 16 (negentropy's
/// choice) reaches a difference among 10,000 authors in three levels while a
/// level costs only 16 fingerprints.
pub const SPLIT: usize = 16;

/// At most this many items are listed instead of split. A listed item costs
/// ~12 bytes and a split range ~26 per sub-range, so listing up to 48 items
/// costs about what one more split level would, and saves its round trip.
pub const ITEM_THRESHOLD: usize = 48;

/// Bytes of an id prefix in a listed item: with both sides holding the same
/// author and seq, the prefix only has to tell two entries of one seq apart
/// (a fork); 64 bits make forging a look-alike cost 2^64 signatures.
pub const ID_PREFIX: usize = 8;

/// A head as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// The head entry's timestamp.
    pub ts: u64,
    /// The author's index in the shared interest.
    pub author: u32,
    /// The head's seq.
    pub seq: u64,
    /// The head's id.
    pub id: [u8; 32],
}

impl Item {
    fn key(&self) -> Bound {
        Bound {
            ts: self.ts,
            author: self.author,
        }
    }

    /// The compact form sent in lists.
    pub fn reference(&self) -> ItemRef {
        ItemRef {
            author: self.author,
            seq: self.seq,
            id: self.id[..ID_PREFIX].try_into().expect("prefix"),
        }
    }
}

/// A position in the order; as an upper bound it is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bound {
    /// Timestamp.
    pub ts: u64,
    /// Author index.
    pub author: u32,
}

impl Bound {
    /// Below every item.
    pub const MIN: Bound = Bound { ts: 0, author: 0 };
    /// Above every item (no interest holds 2^32 authors).
    pub const MAX: Bound = Bound {
        ts: u64::MAX,
        author: u32::MAX,
    };
}

/// A listed item: author index, seq, id prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemRef {
    /// The author's index in the shared interest.
    pub author: u32,
    /// The head's seq.
    pub seq: u64,
    /// The first [`ID_PREFIX`] bytes of the head's id.
    pub id: [u8; ID_PREFIX],
}

/// What the sender says about one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Nothing to do here.
    Skip,
    /// The fingerprint of the sender's items in the range.
    Fingerprint([u8; FINGERPRINT_LEN]),
    /// The sender's items in the range.
    Items {
        /// Whether the receiver should answer with its items the list lacks.
        reply: bool,
        /// The items, in order.
        items: Vec<ItemRef>,
    },
}

/// One range on the wire: its upper bound, as the timestamp's distance from
/// the previous range's upper bound (varints stay short) and the author index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRange {
    /// Timestamp of the upper bound minus that of the previous range's.
    pub ts_delta: u64,
    /// Author index of the upper bound.
    pub author: u32,
    /// The mode.
    pub mode: Mode,
}

/// Why a ranges message is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Bounds must increase and the last must be the end of the order.
    #[error("the ranges do not cover the order in increasing bounds")]
    BadBounds,
    /// An item names an author outside the shared interest.
    #[error("an item names author index {0}, outside the shared interest")]
    UnknownAuthor(u32),
    /// A list names one item twice.
    #[error("a list names one item twice")]
    RepeatedItem,
}

/// Encodes absolute ranges for the wire.
pub fn to_wire(ranges: &[(Bound, Mode)]) -> Vec<WireRange> {
    let mut previous = 0;
    ranges
        .iter()
        .map(|(bound, mode)| {
            let r = WireRange {
                ts_delta: bound.ts - previous,
                author: bound.author,
                mode: mode.clone(),
            };
            previous = bound.ts;
            r
        })
        .collect()
}

/// Decodes wire ranges, checking that bounds increase and end at
/// [`Bound::MAX`] (an empty message is the end of reconciliation).
pub fn from_wire(ranges: Vec<WireRange>) -> Result<Vec<(Bound, Mode)>, RangeError> {
    let mut previous = 0u64;
    let mut lower: Option<Bound> = None;
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let ts = previous
            .checked_add(r.ts_delta)
            .ok_or(RangeError::BadBounds)?;
        let bound = Bound {
            ts,
            author: r.author,
        };
        if lower.is_some_and(|l| bound <= l) {
            return Err(RangeError::BadBounds);
        }
        lower = Some(bound);
        previous = ts;
        out.push((bound, r.mode));
    }
    if lower.is_some_and(|l| l != Bound::MAX) {
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
    pub ranges: Vec<(Bound, Mode)>,
    /// The other side's items this side does not hold.
    pub learned: Vec<ItemRef>,
}

/// One side's items, sorted, and the reconciliation steps over them.
#[derive(Debug, Clone)]
pub struct Reconciler {
    items: Vec<Item>,
    authors: u32,
}

impl Reconciler {
    /// Reconciles `items` (one per author) over a shared interest of
    /// `authors` authors.
    pub fn new(mut items: Vec<Item>, authors: u32) -> Reconciler {
        items.sort_unstable_by_key(Item::key);
        Reconciler { items, authors }
    }

    /// The items, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The first message: the whole order, split or listed.
    pub fn initial(&self) -> Answer {
        let mut answer = Answer::default();
        self.describe(0, self.items.len(), Bound::MAX, &mut answer);
        answer
    }

    /// Describes items[lo..hi] (the range below `upper`) as a list when
    /// small, else as [`SPLIT`] fingerprinted sub-ranges.
    fn describe(&self, lo: usize, hi: usize, upper: Bound, answer: &mut Answer) {
        let n = hi - lo;
        if n <= ITEM_THRESHOLD {
            let part = &self.items[lo..hi];
            answer.ranges.push((
                upper,
                Mode::Items {
                    reply: true,
                    items: part.iter().map(Item::reference).collect(),
                },
            ));
            return;
        }
        for k in 0..SPLIT {
            let (a, b) = (lo + k * n / SPLIT, lo + (k + 1) * n / SPLIT);
            let bound = if k + 1 == SPLIT {
                upper
            } else {
                self.items[b].key()
            };
            answer
                .ranges
                .push((bound, Mode::Fingerprint(fingerprint(&self.items[a..b]))));
        }
    }

    /// Answers a ranges message (see the module's description).
    pub fn answer(&self, ranges: &[(Bound, Mode)]) -> Result<Answer, RangeError> {
        let mut answer = Answer::default();
        let mut lo = 0;
        for (upper, mode) in ranges {
            let hi = lo + self.items[lo..].partition_point(|i| i.key() < *upper);
            let mine = &self.items[lo..hi];
            match mode {
                Mode::Skip => answer.ranges.push((*upper, Mode::Skip)),
                Mode::Fingerprint(fp) => {
                    if fingerprint(mine) == *fp {
                        answer.ranges.push((*upper, Mode::Skip));
                    } else {
                        self.describe(lo, hi, *upper, &mut answer);
                    }
                }
                Mode::Items { reply, items } => {
                    if let Some(r) = items.iter().find(|r| r.author >= self.authors) {
                        return Err(RangeError::UnknownAuthor(r.author));
                    }
                    let theirs: std::collections::HashSet<ItemRef> =
                        items.iter().copied().collect();
                    if theirs.len() != items.len() {
                        return Err(RangeError::RepeatedItem);
                    }
                    let ours: std::collections::HashSet<ItemRef> =
                        mine.iter().map(Item::reference).collect();
                    answer
                        .learned
                        .extend(items.iter().filter(|r| !ours.contains(r)).copied());
                    let missing: Vec<&Item> = mine
                        .iter()
                        .filter(|i| !theirs.contains(&i.reference()))
                        .collect();
                    if *reply && !missing.is_empty() {
                        answer.ranges.push((
                            *upper,
                            Mode::Items {
                                reply: false,
                                items: missing.iter().map(|i| i.reference()).collect(),
                            },
                        ));
                    } else {
                        answer.ranges.push((*upper, Mode::Skip));
                    }
                }
            }
            lo = hi;
        }
        // Merge runs of skips; a message of skips alone says "done".
        let mut merged: Vec<(Bound, Mode)> = Vec::with_capacity(answer.ranges.len());
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

    fn item(ts: u64, author: u32, seq: u64) -> Item {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&seq.to_le_bytes());
        id[8..12].copy_from_slice(&author.to_le_bytes());
        Item {
            ts,
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
            let wire = to_wire(&message);
            let decoded = from_wire(wire).unwrap();
            let (side, learned) = if turn_b {
                (b, &mut learned_b)
            } else {
                (a, &mut learned_a)
            };
            let answer = side.answer(&decoded).unwrap();
            learned.extend(answer.learned);
            message = answer.ranges;
            messages += 1;
            turn_b = !turn_b;
        }
        (learned_a, learned_b, messages)
    }

    #[test]
    fn each_side_learns_exactly_the_others_different_items() {
        let n = 5000;
        let common: Vec<Item> = (0..n).map(|i| item(i as u64 * 10, i, 3)).collect();
        let mut a = common.clone();
        let mut b = common;
        // Author 7 moved on at b (its new head sorts at the end); author 900
        // is held only by a.
        b[7] = item(1_000_000, 7, 4);
        a.push(item(500_000, 5000, 1));
        let (ra, rb) = (Reconciler::new(a, n + 1), Reconciler::new(b, n + 1));
        let (learned_a, learned_b, messages) = reconcile(&ra, &rb);
        let mut la: Vec<_> = learned_a.iter().map(|r| (r.author, r.seq)).collect();
        let mut lb: Vec<_> = learned_b.iter().map(|r| (r.author, r.seq)).collect();
        la.sort();
        lb.sort();
        assert_eq!(la, vec![(7, 4)]);
        assert_eq!(lb, vec![(7, 3), (5000, 1)]);
        assert!(messages <= 6, "{messages} messages");
    }

    #[test]
    fn equal_sets_finish_in_one_exchange() {
        let items: Vec<Item> = (0..1000).map(|i| item(i as u64, i, 1)).collect();
        let a = Reconciler::new(items.clone(), 1000);
        let b = Reconciler::new(items, 1000);
        let (la, lb, messages) = reconcile(&a, &b);
        assert!(la.is_empty() && lb.is_empty());
        assert_eq!(messages, 2);
    }

    #[test]
    fn malformed_bounds_are_refused() {
        let r = |ts_delta, author| WireRange {
            ts_delta,
            author,
            mode: Mode::Skip,
        };
        assert_eq!(
            from_wire(vec![r(5, 1), r(0, 1)]),
            Err(RangeError::BadBounds)
        );
        assert_eq!(from_wire(vec![r(5, 1)]), Err(RangeError::BadBounds));
        assert_eq!(
            from_wire(vec![r(u64::MAX, 0), r(1, 0)]),
            Err(RangeError::BadBounds)
        );
        assert!(from_wire(vec![r(5, 1), r(u64::MAX - 5, u32::MAX)]).is_ok());
        assert_eq!(from_wire(vec![]), Ok(vec![]));
    }
}

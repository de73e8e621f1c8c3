//! Whether this node may sign its owner's next entry: a node never signs a
//! seq it cannot know to be new.
//!
//! The store remembers, per identity, that the identity's log began in it
//! (`signers-1`, written by `capsule init` with a fresh key, by a finished
//! `capsule restore`, or when the owner declares a log new). A key without
//! that mark — copied in by hand, or beside an emptied or replaced store —
//! is *restoring*: its log may be longer elsewhere, so the node refuses to
//! sign until it has fetched it. A mark turns into *signed elsewhere* when a
//! peer brings an entry of the owner's that this node did not sign (a copy
//! of the data directory posting on another machine): signing stops, rather
//! than forking the log.

use crate::clock::now_us;

/// Key in `meta-1` saying whether the store has kept `signers-1` since it
/// was made (1) or is older than that table (0).
pub const MARKS_KEY: &str = "signer-marks";

/// Where an identity stands in this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The log began here or was restored: the node signs at head + 1.
    Ready,
    /// The key is here without its log's mark: the node learns the log from
    /// peers (or an export) before it signs.
    Restoring,
    /// A peer brought the owner's entry `seq`, which this node did not sign:
    /// the key is in use elsewhere, and this node stopped signing at
    /// `since_us`.
    Elsewhere {
        /// The first such entry's seq.
        seq: u64,
        /// When it was noticed, µs since the epoch.
        since_us: u64,
    },
}

impl Signing {
    /// Why the node refuses to sign, and what to do, in the owner's words.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Signing::Ready => None,
            Signing::Restoring => Some(
                "this node cannot know that your next entry is new: your key is here, but this store does not hold the log it signed (a key copied in by hand, or an emptied or replaced store), so posting now could sign a seq your followers already hold. Fetch your log first: `capsule restore --from KEY@HOST:PORT` (a follower's node; repeat --from for more), or `capsule restore --archive FILE` (an export). If this log really is new, `capsule restore --new-log`".to_string(),
            ),
            Signing::Elsewhere { seq, .. } => Some(format!(
                "your key signed entry {seq} somewhere else: a copy of this data directory (or of identity.key) is posting from another machine. This node stopped signing so that your log does not fork. Stop the other copy, then run `capsule restore --from KEY@HOST:PORT` here to fetch what it signed, and post again"
            )),
        }
    }

    /// A short word for status lines and JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Signing::Ready => "ready",
            Signing::Restoring => "restoring",
            Signing::Elsewhere { .. } => "signed-elsewhere",
        }
    }
}

/// A `signers-1` value, version 1: 0x01 ‖ state (1 = the log began or was
/// restored here, 2 = signed elsewhere) ‖ seq (u64 BE: the head when marked,
/// or the first entry signed elsewhere) ‖ when (u64 BE, µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerRow {
    /// 1 or 2, as above.
    pub state: u8,
    /// The seq the state names.
    pub seq: u64,
    /// When it was written.
    pub at_us: u64,
}

/// State byte: the log began (or was restored) here.
pub const BEGAN_HERE: u8 = 1;
/// State byte: a peer brought an entry this node did not sign.
pub const SIGNED_ELSEWHERE: u8 = 2;

impl SignerRow {
    /// Length of a version-1 row.
    pub const LEN: usize = 18;

    /// A row of `state` at `seq`, written now.
    pub fn now(state: u8, seq: u64) -> SignerRow {
        SignerRow {
            state,
            seq,
            at_us: now_us(),
        }
    }

    /// The stored value.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1;
        b[1] = self.state;
        b[2..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..].copy_from_slice(&self.at_us.to_be_bytes());
        b
    }

    /// Parses a stored value. A row this build cannot read (another
    /// version, a state it does not know) reads as signed elsewhere: a
    /// newer capsule's caution is kept, never dropped.
    pub fn decode(b: &[u8]) -> SignerRow {
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .map_or(0, |s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
        };
        let state = match (b.len(), b.first(), b.get(1)) {
            (Self::LEN, Some(1), Some(&s)) if s == BEGAN_HERE || s == SIGNED_ELSEWHERE => s,
            _ => SIGNED_ELSEWHERE,
        };
        SignerRow {
            state,
            seq: u64_at(2),
            at_us: u64_at(10),
        }
    }

    /// What the row means.
    pub fn signing(&self) -> Signing {
        if self.state == BEGAN_HERE {
            Signing::Ready
        } else {
            Signing::Elsewhere {
                seq: self.seq,
                since_us: self.at_us,
            }
        }
    }
}

/// What the owner tells the store about an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerChange {
    /// A fresh key made with this store (`capsule init`), or a node started
    /// on a store older than the marks that holds its log: marked only if
    /// the store holds no mark yet, and no entry of it unless it is such an
    /// older store.
    Begin,
    /// The log is whole here (a finished restore, or the owner declaring it
    /// new): signing resumes at the head.
    Restored,
}

/// The mark a change writes over `row`, given the head seq the store
/// holds for the author and whether the store predates marks and holds the
/// log (it began there); None when nothing is to change.
pub fn change(
    change: SignerChange,
    row: Option<SignerRow>,
    head: Option<u64>,
    legacy_log: bool,
) -> Option<SignerRow> {
    match change {
        SignerChange::Begin if row.is_none() && (head.is_none() || legacy_log) => {
            Some(SignerRow::now(BEGAN_HERE, head.unwrap_or(0)))
        }
        SignerChange::Begin => None,
        SignerChange::Restored => Some(SignerRow::now(BEGAN_HERE, head.unwrap_or(0))),
    }
}

/// Where `author` stands, from its row, the store's marks flag and whether
/// the store holds its log.
pub fn standing(row: Option<SignerRow>, marks_kept: bool, holds_log: bool) -> Signing {
    match row {
        Some(row) => row.signing(),
        // A store from before marks were kept that already holds the
        // owner's log is where that log began.
        None if !marks_kept && holds_log => Signing::Ready,
        None => Signing::Restoring,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_unknown_rows_stay_cautious() {
        let row = SignerRow {
            state: BEGAN_HERE,
            seq: 7,
            at_us: 99,
        };
        assert_eq!(SignerRow::decode(&row.encode()), row);
        assert_eq!(row.signing(), Signing::Ready);
        let mut newer = row.encode();
        newer[0] = 2;
        assert!(matches!(
            SignerRow::decode(&newer).signing(),
            Signing::Elsewhere { .. }
        ));
        assert!(matches!(
            SignerRow::decode(b"x").signing(),
            Signing::Elsewhere { .. }
        ));
    }

    #[test]
    fn a_key_without_its_mark_is_restoring() {
        assert_eq!(standing(None, true, false), Signing::Restoring);
        assert_eq!(standing(None, true, true), Signing::Restoring);
        assert_eq!(standing(None, false, false), Signing::Restoring);
        assert_eq!(standing(None, false, true), Signing::Ready);
        // init marks a fresh key once, never over a log or a mark.
        assert!(change(SignerChange::Begin, None, None, false).is_some());
        assert!(change(SignerChange::Begin, None, Some(3), false).is_none());
        assert!(change(SignerChange::Begin, None, Some(3), true).is_some());
        let restored = change(SignerChange::Restored, None, Some(3), false).unwrap();
        assert_eq!((restored.state, restored.seq), (BEGAN_HERE, 3));
    }
}

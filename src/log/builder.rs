//! Drafting the next entry of a log ([`next_draft`], which the store uses
//! for the node's own posts too), and signing successive entries of one log
//! in memory, keeping the ids that later skiplinks need: for benchmarks,
//! tests and tools that make logs without a store.

use crate::identity::Identity;
use crate::log::entry::{Draft, Entry, EntryId};
use crate::log::lipmaa::lipmaa;

/// The head of a log, as the next entry links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Its seq.
    pub seq: u64,
    /// Its id.
    pub id: EntryId,
    /// Its timestamp.
    pub timestamp_us: u64,
}

/// What the entry after `tip` (None: the first) says: seq + 1, a backlink to
/// the tip, a skiplink to the entry at `lipmaa(seq)` (its id from
/// `id_at`), and `timestamp_us`, but never earlier than the tip's: a log
/// does not go back in time even if the clock does, since peers order logs
/// by their heads' timestamps.
pub fn next_draft<E>(
    tip: Option<Tip>,
    timestamp_us: u64,
    id_at: impl FnOnce(u64) -> Result<EntryId, E>,
) -> Result<Draft, E> {
    Ok(match tip {
        None => Draft {
            seq: 1,
            timestamp_us,
            backlink: EntryId::ZERO,
            skiplink: EntryId::ZERO,
        },
        Some(tip) => {
            let seq = tip.seq + 1;
            Draft {
                seq,
                timestamp_us: timestamp_us.max(tip.timestamp_us),
                backlink: tip.id,
                skiplink: id_at(lipmaa(seq))?,
            }
        }
    })
}

/// Signs the entries of one log in order.
pub struct LogBuilder<'a> {
    identity: &'a Identity,
    ids: Vec<EntryId>,
    tip: Option<Tip>,
}

impl<'a> LogBuilder<'a> {
    /// A builder for a new, empty log of `identity`.
    pub fn new(identity: &'a Identity) -> Self {
        LogBuilder {
            identity,
            ids: Vec::new(),
            tip: None,
        }
    }

    /// Signs the next entry of the log.
    pub fn next(&mut self, timestamp_us: u64, payload: &[u8]) -> Entry {
        let ids = &self.ids;
        let draft = next_draft(self.tip, timestamp_us, |seq| {
            Ok::<_, std::convert::Infallible>(ids[(seq - 1) as usize])
        })
        .unwrap_or_else(|never| match never {});
        let entry = Entry::sign(self.identity.signing_key(), draft, payload);
        self.ids.push(entry.id());
        self.tip = Some(Tip {
            seq: entry.seq(),
            id: entry.id(),
            timestamp_us: entry.timestamp_us(),
        });
        entry
    }
}

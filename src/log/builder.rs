//! Signing successive entries of one log in memory, keeping the ids that
//! later skiplinks need. The store signs the node's own posts itself (see
//! [`crate::store::Store::publish`]); this serves benchmarks, tests and tools
//! that make logs without a store.

use crate::identity::Identity;
use crate::log::entry::{Draft, Entry, EntryId};
use crate::log::lipmaa::lipmaa;

/// Signs the entries of one log in order.
pub struct LogBuilder<'a> {
    identity: &'a Identity,
    ids: Vec<EntryId>,
}

impl<'a> LogBuilder<'a> {
    /// A builder for a new, empty log of `identity`.
    pub fn new(identity: &'a Identity) -> Self {
        LogBuilder {
            identity,
            ids: Vec::new(),
        }
    }

    /// Signs the next entry of the log.
    pub fn next(&mut self, timestamp_us: u64, payload: &[u8]) -> Entry {
        let seq = self.ids.len() as u64 + 1;
        let (backlink, skiplink) = if seq == 1 {
            (EntryId::ZERO, EntryId::ZERO)
        } else {
            (
                self.ids[(seq - 2) as usize],
                self.ids[(lipmaa(seq) - 1) as usize],
            )
        };
        let entry = Entry::sign(
            self.identity.signing_key(),
            Draft {
                seq,
                timestamp_us,
                backlink,
                skiplink,
            },
            payload,
        );
        self.ids.push(entry.id());
        entry
    }
}

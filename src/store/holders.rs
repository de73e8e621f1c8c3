//! Who holds a log (`holders-1`): for the owner's own log above all, and
//! for the logs the owner follows, which peers hold a copy and up to which
//! seq, as of the last sync session with each.
//!
//! A session that ends with both sides done has brought each side up to
//! date on every author of the shared interest, so at its end the peer
//! holds each shared log at least up to this node's head: that head is
//! what is kept, with the time. A peer that drops a log is still counted
//! until a session with it no longer shares the author; its row then ages
//! (`seen_us` stays), which `capsule status` shows.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::apply::Tables;
use super::tables::{HOLDERS, INTEREST, MirrorReason};
use super::{Store, StoreError};
use crate::identity::AuthorKey;

/// A `holders-1` value, version 1: 0x01 ‖ seq (u64 BE) ‖ seen (u64 BE, µs
/// since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderRow {
    /// Up to which seq the peer held the log.
    pub seq: u64,
    /// When that was established (the session's end).
    pub seen_us: u64,
}

impl HolderRow {
    /// Length of a version-1 row.
    pub const LEN: usize = 17;

    /// The stored value.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1;
        b[1..9].copy_from_slice(&self.seq.to_be_bytes());
        b[9..].copy_from_slice(&self.seen_us.to_be_bytes());
        b
    }

    /// Parses a stored value; None for a row of another version.
    pub fn decode(b: &[u8]) -> Option<HolderRow> {
        if b.len() != Self::LEN || b[0] != 1 {
            return None;
        }
        Some(HolderRow {
            seq: u64::from_be_bytes(b[1..9].try_into().ok()?),
            seen_us: u64::from_be_bytes(b[9..].try_into().ok()?),
        })
    }
}

/// The key of a row: author ‖ peer.
fn key(author: &AuthorKey, peer: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&author.0);
    k[32..].copy_from_slice(peer);
    k
}

/// At the end of a completed session with `peer` over the `shared` authors
/// (sorted): keeps, for each of this node's own logs and the logs it
/// follows among them, that the peer holds it up to this node's head.
pub(super) fn note(
    txn: &WriteTransaction,
    tables: &Tables<'_>,
    peer: [u8; 32],
    shared: &[AuthorKey],
    seen_us: u64,
) -> Result<(), StoreError> {
    if shared.is_empty() {
        return Ok(());
    }
    // Every finished session lands here (live ones after each notice):
    // look up the shorter of the shared authors and the mirror set.
    let mut cared = tables.own_keys()?;
    let interest = txn.open_table(INTEREST)?;
    let followed = |reason: u8| MirrorReason::from_byte(reason) == MirrorReason::Follow;
    if (shared.len() as u64) < interest.len()? {
        for author in shared {
            if interest
                .get(&author.0)?
                .is_some_and(|r| followed(r.value()))
            {
                cared.push(*author);
            }
        }
    } else {
        for row in interest.iter()? {
            let (author, reason) = row?;
            if followed(reason.value()) {
                cared.push(AuthorKey(*author.value()));
            }
        }
    }
    drop(interest);
    let mut holders = txn.open_table(HOLDERS)?;
    for author in cared {
        if author.0 == peer || shared.binary_search(&author).is_err() {
            continue;
        }
        let seq = tables.head_seq(&author)?;
        if seq > 0 {
            let row = HolderRow { seq, seen_us };
            holders.insert(&key(&author, &peer), &row.encode()[..])?;
        }
    }
    Ok(())
}

/// Who holds a log, as `capsule status` and the pages tell it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldBy {
    /// Peers known to hold a copy, with up to which seq and when.
    pub peers: Vec<(AuthorKey, HolderRow)>,
    /// Of those, how many hold it up to the head this node holds.
    pub up_to_date: usize,
}

impl HeldBy {
    /// "your log is held by N peers, M of them up to date" (`own`: the
    /// owner's log; else "this log").
    pub fn describe(&self, own: bool) -> String {
        let (n, m) = (self.peers.len(), self.up_to_date);
        match n {
            0 if own => "your log is held by no peer yet: if this machine is lost, so is your log (the nodes that follow you keep a copy)".to_string(),
            0 => "this log is held by no other peer this node knows of".to_string(),
            _ => format!(
                "{} is held by {n} {}, {m} of them up to date",
                if own { "your log" } else { "this log" },
                if n == 1 { "peer" } else { "peers" }
            ),
        }
    }
}

impl Store {
    /// The peers known to hold `author`'s log (its own node aside), against
    /// this node's head of it.
    pub fn held_by(&self, author: &AuthorKey) -> Result<HeldBy, StoreError> {
        let head = self.head(author)?.map_or(0, |h| h.seq);
        let txn = self.db()?.begin_read()?;
        let holders = txn.open_table(HOLDERS)?;
        let mut peers = Vec::new();
        let (from, to) = (key(author, &[0; 32]), key(author, &[0xff; 32]));
        for row in holders.range::<&[u8; 64]>(&from..=&to)? {
            let (k, v) = row?;
            if let Some(row) = HolderRow::decode(v.value()) {
                let peer: [u8; 32] = k.value()[32..].try_into().expect("32 bytes");
                peers.push((AuthorKey(peer), row));
            }
        }
        let up_to_date = peers.iter().filter(|(_, r)| r.seq >= head).count();
        Ok(HeldBy { peers, up_to_date })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_other_versions_are_skipped() {
        let row = HolderRow {
            seq: 42,
            seen_us: 1_764_000_000_000_000,
        };
        assert_eq!(HolderRow::decode(&row.encode()), Some(row));
        let mut newer = row.encode();
        newer[0] = 2;
        assert_eq!(HolderRow::decode(&newer), None);
        assert_eq!(HolderRow::decode(&row.encode()[..16]), None);
    }
}

//! Authors the owner blocks or mutes (`blocks-1`).
//!
//! A blocked author's log is neither mirrored, nor served (API, pages,
//! sync), nor taken from peers; their replies are hidden on the owner's
//! pages. Entries already held stay in the store, unserved, so an unblock
//! brings them back. A muted author is only left out of the owner's home
//! timeline.

/// What the owner chose for an author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Not mirrored, served, taken or shown.
    Blocked,
    /// Left out of the owner's home timeline.
    Muted,
}

/// A `blocks-1` value, version 1: 0x01 ‖ kind (1 = blocked, 2 = muted) ‖
/// since (u64 BE, µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRow {
    /// Blocked or muted.
    pub kind: Block,
    /// Since when.
    pub since_us: u64,
}

impl BlockRow {
    /// Length of a version-1 row.
    pub const LEN: usize = 10;

    /// The stored value.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1;
        b[1] = match self.kind {
            Block::Blocked => 1,
            Block::Muted => 2,
        };
        b[2..].copy_from_slice(&self.since_us.to_be_bytes());
        b
    }

    /// Parses a stored value. A row this build cannot read (a newer
    /// capsule's) reads as blocked: the owner's choice to keep someone out
    /// is never loosened by a downgrade.
    pub fn decode(b: &[u8]) -> BlockRow {
        let since_us = b
            .get(2..10)
            .map_or(0, |s| u64::from_be_bytes(s.try_into().expect("8 bytes")));
        let kind = match (b.len(), b.first(), b.get(1)) {
            (Self::LEN, Some(1), Some(2)) => Block::Muted,
            _ => Block::Blocked,
        };
        BlockRow { kind, since_us }
    }
}

/// A change of the owner's choice for an author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockChange {
    /// Block (over a mute).
    Block,
    /// Mute (a block stays a block until unblocked).
    Mute,
    /// Lift a block.
    Unblock,
    /// Lift a mute.
    Unmute,
}

/// The row after `change` over `now`: None removes it.
pub fn after(change: BlockChange, now: Option<BlockRow>, now_us: u64) -> Option<BlockRow> {
    let row = |kind| BlockRow {
        kind,
        since_us: now_us,
    };
    match (change, now.map(|r| r.kind)) {
        (BlockChange::Block, Some(Block::Blocked)) => now,
        (BlockChange::Block, _) => Some(row(Block::Blocked)),
        (BlockChange::Mute, None) => Some(row(Block::Muted)),
        (BlockChange::Mute, Some(_)) => now,
        (BlockChange::Unblock, Some(Block::Blocked)) => None,
        (BlockChange::Unmute, Some(Block::Muted)) => None,
        (BlockChange::Unblock | BlockChange::Unmute, _) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_unknown_rows_block() {
        for kind in [Block::Blocked, Block::Muted] {
            let row = BlockRow { kind, since_us: 5 };
            assert_eq!(BlockRow::decode(&row.encode()), row);
        }
        assert_eq!(BlockRow::decode(&[2, 2, 0]).kind, Block::Blocked);
    }

    #[test]
    fn a_mute_does_not_loosen_a_block() {
        let blocked = after(BlockChange::Block, None, 1);
        assert_eq!(after(BlockChange::Mute, blocked, 2), blocked);
        assert_eq!(after(BlockChange::Unmute, blocked, 2), blocked);
        assert_eq!(after(BlockChange::Unblock, blocked, 2), None);
        let muted = after(BlockChange::Mute, None, 1);
        assert_eq!(
            after(BlockChange::Block, muted, 2).unwrap().kind,
            Block::Blocked
        );
    }
}

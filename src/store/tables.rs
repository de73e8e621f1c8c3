//! Every table of the store, in one place. Names carry a version: a change of
//! layout writes new tables beside the old ones, never rewrites them in place.
//! schema/store.md documents keys and values byte by byte.

use redb::TableDefinition;

use crate::identity::AuthorKey;
use crate::log::entry::ENTRY_LEN;

/// The store layout this build writes, kept in `meta-1` under [`SCHEMA_KEY`].
pub const SCHEMA_VERSION: u32 = 1;
/// Key of the schema version in `meta-1`.
pub const SCHEMA_KEY: &str = "schema";

/// A log position: author (32 bytes) then seq (u64 big-endian), so keys sort
/// by author, then seq.
pub type LogKey = [u8; 40];

/// (author, seq) → the entry's 217 bytes.
pub const ENTRIES: TableDefinition<&LogKey, &[u8; ENTRY_LEN]> = TableDefinition::new("entries-1");
/// entry id → (author, seq).
pub const ENTRY_IDS: TableDefinition<&[u8; 32], &LogKey> = TableDefinition::new("entry_ids-1");
/// payload hash → payload bytes. Shared by every entry with that payload.
pub const PAYLOADS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("payloads-1");
/// payload hash → how many stored, undeleted entries hold that payload. A
/// payload leaves the store when the last entry holding it is deleted, so one
/// person's tombstone never removes another's identical post.
pub const PAYLOAD_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("payload_refs-1");
/// (author, seq) of a deleted entry → seq of the Delete record that deleted it.
pub const TOMBSTONES: TableDefinition<&LogKey, u64> = TableDefinition::new("tombstones-1");
/// author → head: seq (u64 BE) then id (32 bytes).
pub const HEADS: TableDefinition<&[u8; 32], &[u8; 40]> = TableDefinition::new("heads-1");
/// author → fork proof: the stored entry then the conflicting one (2 × 217 bytes).
pub const FORKS: TableDefinition<&[u8; 32], &[u8; 2 * ENTRY_LEN]> = TableDefinition::new("forks-1");
/// local change counter → author whose head changed (the changelog that lets
/// a returning peer ask "what changed since C").
pub const CHANGES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("changes-1");
/// Store-wide facts, such as the schema version.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// The key of `(author, seq)`.
pub fn log_key(author: &AuthorKey, seq: u64) -> LogKey {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&author.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Splits a [`LogKey`].
pub fn split_log_key(key: &LogKey) -> (AuthorKey, u64) {
    let author = AuthorKey(key[..32].try_into().expect("32 bytes"));
    let seq = u64::from_be_bytes(key[32..].try_into().expect("8 bytes"));
    (author, seq)
}

//! Every table of the store, in one place. Names carry a version: a change of
//! layout writes new tables beside the old ones, never rewrites them in place.
//! schema/store.md documents keys and values byte by byte.

use redb::TableDefinition;

use super::Head;
use crate::identity::AuthorKey;
use crate::log::entry::{ENTRY_LEN, EntryId};

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
/// payload hash → references (u32 BE) ‖ payload bytes. One row serves every
/// entry with that payload; the count says how many undeleted entries name
/// it, so a payload leaves the store with the last of them and one person's
/// tombstone never removes another's identical post. (The count lives in the
/// row rather than a table of its own: one random-keyed B-tree less to touch
/// on every append.)
pub const PAYLOADS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("payloads-1");
/// (author, seq) of a deleted entry → seq of the Delete record that deleted it.
pub const TOMBSTONES: TableDefinition<&LogKey, u64> = TableDefinition::new("tombstones-1");
/// (target author, target seq) ‖ (replier author, replier seq) → nothing:
/// the replies an entry has received, found by a range over the target's
/// 40-byte prefix. Written when a post naming `reply_to` is stored.
pub const REPLIES: TableDefinition<&ReplyKey, ()> = TableDefinition::new("replies-1");

/// request id (16 random bytes a `capsule post` sends) → seq of the owner's
/// entry it published: a post retried after an answer was lost (the node
/// committed, then the connection or the node died) is answered with that
/// entry rather than published twice. Written in the transaction that
/// publishes; the newest [`MAX_POST_REQUESTS`] are kept.
pub const POST_REQUESTS: TableDefinition<&[u8; 16], u64> = TableDefinition::new("post_requests-1");
/// Post request ids remembered: a retry comes minutes after its failure,
/// not a thousand posts later.
pub const MAX_POST_REQUESTS: u64 = 1024;

/// author → seq of the newest Profile record the store took in for them
/// (u64): the profile header is one lookup, not a search of the log.
pub const PROFILES: TableDefinition<&[u8; 32], u64> = TableDefinition::new("profiles-1");

/// A `blob_refs-1` key: the blob's hash, then the naming entry's log key.
pub type BlobRefKey = [u8; 72];

/// A `blobs-1` value, version 1: 0x01 ‖ announced size (u64 BE) ‖ flags
/// (u8: 1 = an entry of the owner names it, 2 = evicted) ‖ eviction time
/// (u64 BE, µs since the epoch; 0 = held or wanted) ‖ media type (the rest,
/// UTF-8, at most 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// The size the referencing record announces.
    pub size: u64,
    /// The media type the referencing record gives.
    pub media_type: String,
    /// Whether one of the owner's entries names it: never evicted.
    pub own: bool,
    /// When it was evicted to keep within the media budget; 0 if not.
    pub evicted_us: u64,
}

impl BlobRow {
    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        let media = &self.media_type.as_bytes()[..self.media_type.len().min(255)];
        let mut b = Vec::with_capacity(18 + media.len());
        b.push(1);
        b.extend_from_slice(&self.size.to_be_bytes());
        b.push(u8::from(self.own) | if self.evicted_us != 0 { 2 } else { 0 });
        b.extend_from_slice(&self.evicted_us.to_be_bytes());
        b.extend_from_slice(media);
        b
    }

    /// Parses a stored value; None for another version or a damaged row.
    pub fn decode(b: &[u8]) -> Option<BlobRow> {
        if b.len() < 18 || b[0] != 1 {
            return None;
        }
        Some(BlobRow {
            size: u64::from_be_bytes(b[1..9].try_into().ok()?),
            own: b[9] & 1 != 0,
            evicted_us: u64::from_be_bytes(b[10..18].try_into().ok()?),
            media_type: String::from_utf8(b[18..].to_vec()).ok()?,
        })
    }
}

/// A `replies-1` key: the target's log key then the reply's.
pub type ReplyKey = [u8; 80];

/// author → head: seq (u64 BE) ‖ id (32 bytes) ‖ change counter (u64 BE) of
/// the author's row in `changes-1`.
pub const HEADS: TableDefinition<&[u8; 32], &[u8; HEAD_ROW_LEN]> = TableDefinition::new("heads-1");
/// author → fork proof: the stored entry then the conflicting one (2 × 217 bytes).
pub const FORKS: TableDefinition<&[u8; 32], &[u8; 2 * ENTRY_LEN]> = TableDefinition::new("forks-1");
/// local change counter → author whose head changed then: the changelog that
/// lets a returning peer ask "which heads changed since C". Each author has
/// one row, its latest change (the older one is removed), and a transaction
/// writes it once per author however many entries it appends: the table
/// stays as small as the set of authors.
pub const CHANGES: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("changes-1");
/// author → why this node mirrors it (one byte, see [`MirrorReason`]): the
/// authors a sync session asks peers for, besides the node's own.
pub const INTEREST: TableDefinition<&[u8; 32], u8> = TableDefinition::new("interest-1");
/// peer node key → what this node remembers of the peer, a versioned row (see
/// [`PeerRow`]).
pub const PEERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("peers-1");
/// peer node key → how to reach it and how dialling it went, a versioned
/// row (see [`AddressRow`]).
pub const ADDRESSES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("addresses-1");
/// identity → whether this store may sign its next entry: a versioned row
/// (see [`super::signer::SignerRow`]) written when the identity's log began
/// here or was restored, and changed when a peer brings an entry of it this
/// node did not sign. An identity without a row is restoring.
pub const SIGNERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("signers-1");
/// author → the owner's block or mute of them, a versioned row (see
/// [`super::blocks::BlockRow`]).
pub const BLOCKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blocks-1");
/// author ‖ peer node key → up to which seq the peer held the author's log
/// when a session with it last ended, and when: a versioned row (see
/// [`super::holders::HolderRow`]), kept for the node's own logs and the
/// logs it follows.
pub const HOLDERS: TableDefinition<&[u8; 64], &[u8]> = TableDefinition::new("holders-1");
/// blob hash ‖ author ‖ seq → nothing: entry (author, seq) names the blob.
/// A range over the hash's 32-byte prefix finds every entry naming it.
pub const BLOB_REFS: TableDefinition<&BlobRefKey, ()> = TableDefinition::new("blob_refs-1");
/// blob hash → what the store knows of the blob, a versioned row (see
/// [`BlobRow`]); there is a row while an undeleted entry names the blob.
pub const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs-1");
/// Store-wide facts, such as the schema version.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// Key of the store's random 16-byte identity in `meta-1`. A changelog cursor
/// names it, so a cursor into a replaced store is recognised as foreign.
pub const STORE_ID_KEY: &str = "store-id";

/// Why an author is in `interest-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MirrorReason {
    /// `capsule mirror KEY` asked for it.
    Mirror = 1,
    /// The owner follows the author (a Follow record in their log).
    Follow = 2,
}

impl MirrorReason {
    /// The reason a stored byte names; unknown bytes (a newer capsule's)
    /// count as a plain mirror.
    pub fn from_byte(b: u8) -> MirrorReason {
        match b {
            2 => MirrorReason::Follow,
            _ => MirrorReason::Mirror,
        }
    }
}

/// Where a peer address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AddressSource {
    /// `capsule up --peer`.
    Bootstrap = 1,
    /// `capsule follow`.
    Follow = 2,
    /// Another peer told us.
    Exchange = 3,
}

/// An `addresses-1` value, version 1: how to reach a peer node and how
/// dialling it went. Layout: 0x01 ‖ source (u8) ‖ failures in a row (u32
/// BE) ‖ last attempt, last success, next attempt (3 × u64 BE, µs since
/// the epoch, 0 = never) ‖ address length (u8) ‖ the address `HOST:PORT` ‖
/// web origin length (u8, 0 = none) ‖ the origin `https://HOST[:PORT]` of
/// its gateway, for pulling over HTTPS when QUIC does not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRow {
    /// Where the address came from.
    pub source: u8,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// When it was last dialled.
    pub last_attempt_us: u64,
    /// When a session with it last succeeded.
    pub last_success_us: u64,
    /// When to dial it next.
    pub next_attempt_us: u64,
    /// `HOST:PORT`, at most 255 bytes.
    pub host_port: String,
    /// The peer's gateway, `https://HOST[:PORT]`, if known (at most 255
    /// bytes).
    pub web: Option<String>,
}

impl AddressRow {
    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        let host = &self.host_port.as_bytes()[..self.host_port.len().min(255)];
        let mut b = Vec::with_capacity(31 + host.len());
        b.push(1);
        b.push(self.source);
        b.extend_from_slice(&self.failures.to_be_bytes());
        b.extend_from_slice(&self.last_attempt_us.to_be_bytes());
        b.extend_from_slice(&self.last_success_us.to_be_bytes());
        b.extend_from_slice(&self.next_attempt_us.to_be_bytes());
        b.push(host.len() as u8);
        b.extend_from_slice(host);
        let web = self.web.as_deref().unwrap_or("").as_bytes();
        let web = &web[..web.len().min(255)];
        b.push(web.len() as u8);
        b.extend_from_slice(web);
        b
    }

    /// Parses a stored value; None for another version or a damaged row.
    pub fn decode(b: &[u8]) -> Option<AddressRow> {
        if b.len() < 32 || b[0] != 1 {
            return None;
        }
        let host_end = 31 + usize::from(b[30]);
        let web_len = usize::from(*b.get(host_end)?);
        if b.len() != host_end + 1 + web_len {
            return None;
        }
        let web = String::from_utf8(b[host_end + 1..].to_vec()).ok()?;
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(AddressRow {
            source: b[1],
            failures: u32::from_be_bytes(b[2..6].try_into().ok()?),
            last_attempt_us: u64_at(6),
            last_success_us: u64_at(14),
            next_attempt_us: u64_at(22),
            host_port: String::from_utf8(b[31..host_end].to_vec()).ok()?,
            web: (!web.is_empty()).then_some(web),
        })
    }
}

/// A `peers-1` value, version 1: what a successful sync session with the
/// peer established, so the next one can start from a changelog cursor.
/// Layout: 0x01 ‖ the peer's store id (16) ‖ the peer's change counter we
/// hold everything up to (u64 BE) ‖ the interest digest both sides shared
/// (16) ‖ our change counter the peer holds everything up to (u64 BE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRow {
    /// The peer's store id when the cursor was taken.
    pub their_store: [u8; 16],
    /// The peer's change counter up to which we hold every head it had.
    pub their_counter: u64,
    /// The digest of the shared interest at the time.
    pub interest: [u8; 16],
    /// Our change counter up to which the peer holds every head we had.
    pub our_counter: u64,
}

impl PeerRow {
    /// Length of an encoded version-1 row.
    pub const LEN: usize = 1 + 16 + 8 + 16 + 8;

    /// The stored value.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1;
        b[1..17].copy_from_slice(&self.their_store);
        b[17..25].copy_from_slice(&self.their_counter.to_be_bytes());
        b[25..41].copy_from_slice(&self.interest);
        b[41..49].copy_from_slice(&self.our_counter.to_be_bytes());
        b
    }

    /// Parses a stored value; None for an unknown version or length (a
    /// newer capsule's row): the peer is then treated as new.
    pub fn decode(b: &[u8]) -> Option<PeerRow> {
        if b.len() != Self::LEN || b[0] != 1 {
            return None;
        }
        Some(PeerRow {
            their_store: b[1..17].try_into().ok()?,
            their_counter: u64::from_be_bytes(b[17..25].try_into().ok()?),
            interest: b[25..41].try_into().ok()?,
            our_counter: u64::from_be_bytes(b[41..49].try_into().ok()?),
        })
    }
}

/// Size of a `heads-1` value.
pub const HEAD_ROW_LEN: usize = 48;

/// A `heads-1` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRow {
    /// The head.
    pub head: Head,
    /// The key of the author's row in `changes-1`.
    pub change: u64,
}

impl HeadRow {
    /// Parses a stored value.
    pub fn decode(b: &[u8; HEAD_ROW_LEN]) -> HeadRow {
        HeadRow {
            head: Head {
                seq: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                id: EntryId(b[8..40].try_into().expect("32 bytes")),
            },
            change: u64::from_be_bytes(b[40..].try_into().expect("8 bytes")),
        }
    }

    /// The stored value.
    pub fn encode(&self) -> [u8; HEAD_ROW_LEN] {
        let mut b = [0u8; HEAD_ROW_LEN];
        b[..8].copy_from_slice(&self.head.seq.to_be_bytes());
        b[8..40].copy_from_slice(&self.head.id.0);
        b[40..].copy_from_slice(&self.change.to_be_bytes());
        b
    }
}

/// A `payloads-1` value: the reference count, then the payload.
pub fn payload_row(refs: u32, payload: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(4 + payload.len());
    row.extend_from_slice(&refs.to_be_bytes());
    row.extend_from_slice(payload);
    row
}

/// Splits a `payloads-1` value into its reference count and payload. A value
/// shorter than the count reads as unreferenced and empty.
pub fn split_payload_row(row: &[u8]) -> (u32, &[u8]) {
    match row.split_first_chunk::<4>() {
        Some((refs, payload)) => (u32::from_be_bytes(*refs), payload),
        None => (0, &[]),
    }
}

/// The key of `(author, seq)`.
pub fn log_key(author: &AuthorKey, seq: u64) -> LogKey {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&author.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

//! The log entry, format v1: 217 hand-encoded bytes, frozen once released.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version = 1 |
//! | 1 | 32 | author public key |
//! | 33 | 8 | seq, u64 big-endian, first entry is 1 |
//! | 41 | 8 | timestamp, u64 BE, microseconds since the Unix epoch |
//! | 49 | 32 | backlink: id of entry seq-1 (zero for seq 1) |
//! | 81 | 32 | skiplink: id of entry lipmaa(seq) (zero for seq 1) |
//! | 113 | 8 | payload length, u64 BE, at most [`MAX_PAYLOAD`] |
//! | 121 | 32 | blake3 hash of the payload |
//! | 153 | 64 | ed25519 signature over [`SIGNATURE_DOMAIN`] ‖ bytes\[0..153\] |
//!
//! The entry id is blake3 of all 217 bytes. schema/entry.md documents the
//! format with a worked example.

use std::fmt;
use std::str::FromStr;

use ed25519_consensus::SigningKey;

use crate::identity::AuthorKey;

/// Size of an encoded entry.
pub const ENTRY_LEN: usize = 217;
/// Size of the signed part of an entry.
pub const SIGNED_LEN: usize = 153;
/// The only entry format this build reads and writes.
pub const FORMAT_V1: u8 = 1;
/// Domain separation prefix of the signed message, so that a Capsule
/// signature can never be replayed as a signature of anything else.
pub const SIGNATURE_DOMAIN: &[u8; 16] = b"capsule-entry-v1";
/// Largest payload an entry may announce: a post is short text; media goes
/// in blobs. Bounds what a peer can make us hold per entry.
pub const MAX_PAYLOAD: u64 = 64 * 1024;

const AUTHOR: usize = 1;
const SEQ: usize = 33;
const TIMESTAMP: usize = 41;
const BACKLINK: usize = 49;
const SKIPLINK: usize = 81;
const PAYLOAD_LEN: usize = 113;
const PAYLOAD_HASH: usize = 121;
const SIGNATURE: usize = 153;

/// The id of an entry: blake3 of its 217 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId(pub [u8; 32]);

impl EntryId {
    /// The all-zero id that stands for "no entry" in links of the first entry.
    pub const ZERO: EntryId = EntryId([0; 32]);
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({self})")
    }
}

/// Why a string is not an entry id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an entry id: expected 64 hex digits, as `capsule log` prints")]
pub struct ParseIdError(String);

impl FromStr for EntryId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(EntryId(out))
    }
}

/// Why bytes are not a well-formed v1 entry. Says nothing of the signature
/// or links: those are checked by [`crate::log::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not exactly 217 bytes.
    #[error("an entry is {ENTRY_LEN} bytes, got {0}")]
    Length(usize),
    /// A format version this build does not know.
    #[error(
        "unknown entry format version {0} (this capsule reads version {FORMAT_V1}; upgrade it)"
    )]
    UnknownVersion(u8),
    /// Sequence number 0.
    #[error("sequence numbers start at 1, got 0")]
    ZeroSeq,
    /// The payload length is above [`MAX_PAYLOAD`].
    #[error("payload length {0} is over the limit of {MAX_PAYLOAD} bytes")]
    PayloadTooLarge(u64),
    /// The first entry of a log has a non-zero link.
    #[error("the first entry of a log must have zero links")]
    FirstEntryLinks,
}

/// One signed log entry, always 217 well-formed bytes (see the module docs).
///
/// Holding an `Entry` says the bytes parse; it does not say the signature is
/// valid. [`crate::log::verify`] turns entries into verified ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    bytes: [u8; ENTRY_LEN],
}

/// The fields of an entry to be signed.
#[derive(Debug, Clone, Copy)]
pub struct Draft {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Microseconds since the Unix epoch, by the author's clock.
    pub timestamp_us: u64,
    /// Id of entry seq-1, or zero for seq 1.
    pub backlink: EntryId,
    /// Id of entry lipmaa(seq), or zero for seq 1.
    pub skiplink: EntryId,
}

impl Entry {
    /// Signs a new entry for `payload`.
    ///
    /// # Panics
    /// If the payload is larger than [`MAX_PAYLOAD`] or seq is 0: callers check
    /// user input before signing, so this is a programming error.
    pub fn sign(key: &SigningKey, draft: Draft, payload: &[u8]) -> Entry {
        assert!(
            payload.len() as u64 <= MAX_PAYLOAD,
            "payload over MAX_PAYLOAD"
        );
        assert!(draft.seq >= 1, "seq starts at 1");
        let mut bytes = [0u8; ENTRY_LEN];
        bytes[0] = FORMAT_V1;
        bytes[AUTHOR..SEQ].copy_from_slice(&key.verification_key().to_bytes());
        bytes[SEQ..TIMESTAMP].copy_from_slice(&draft.seq.to_be_bytes());
        bytes[TIMESTAMP..BACKLINK].copy_from_slice(&draft.timestamp_us.to_be_bytes());
        bytes[BACKLINK..SKIPLINK].copy_from_slice(&draft.backlink.0);
        bytes[SKIPLINK..PAYLOAD_LEN].copy_from_slice(&draft.skiplink.0);
        bytes[PAYLOAD_LEN..PAYLOAD_HASH].copy_from_slice(&(payload.len() as u64).to_be_bytes());
        bytes[PAYLOAD_HASH..SIGNATURE].copy_from_slice(blake3::hash(payload).as_bytes());
        let signature = key.sign(&signed_message(&bytes));
        bytes[SIGNATURE..].copy_from_slice(&signature.to_bytes());
        Entry { bytes }
    }

    /// Parses 217 bytes, checking that they are a well-formed v1 entry.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let bytes: [u8; ENTRY_LEN] = bytes
            .try_into()
            .map_err(|_| DecodeError::Length(bytes.len()))?;
        if bytes[0] != FORMAT_V1 {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let entry = Entry { bytes };
        if entry.seq() == 0 {
            return Err(DecodeError::ZeroSeq);
        }
        if entry.payload_len() > MAX_PAYLOAD {
            return Err(DecodeError::PayloadTooLarge(entry.payload_len()));
        }
        if entry.seq() == 1
            && (entry.backlink() != EntryId::ZERO || entry.skiplink() != EntryId::ZERO)
        {
            return Err(DecodeError::FirstEntryLinks);
        }
        Ok(entry)
    }

    /// The 217 bytes.
    pub fn as_bytes(&self) -> &[u8; ENTRY_LEN] {
        &self.bytes
    }

    /// The author's public key.
    pub fn author(&self) -> AuthorKey {
        AuthorKey(self.array(AUTHOR))
    }

    /// Position in the author's log, from 1.
    pub fn seq(&self) -> u64 {
        self.u64_at(SEQ)
    }

    /// Microseconds since the Unix epoch, by the author's clock.
    pub fn timestamp_us(&self) -> u64 {
        self.u64_at(TIMESTAMP)
    }

    /// Id of the previous entry (zero for seq 1).
    pub fn backlink(&self) -> EntryId {
        EntryId(self.array(BACKLINK))
    }

    /// Id of entry lipmaa(seq) (zero for seq 1).
    pub fn skiplink(&self) -> EntryId {
        EntryId(self.array(SKIPLINK))
    }

    /// Length of the payload in bytes.
    pub fn payload_len(&self) -> u64 {
        self.u64_at(PAYLOAD_LEN)
    }

    /// blake3 hash of the payload.
    pub fn payload_hash(&self) -> [u8; 32] {
        self.array(PAYLOAD_HASH)
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> [u8; 64] {
        self.bytes[SIGNATURE..].try_into().expect("64 bytes")
    }

    /// The message the signature covers: the domain prefix and bytes 0..153.
    pub fn signed_message(&self) -> [u8; SIGNATURE_DOMAIN.len() + SIGNED_LEN] {
        signed_message(&self.bytes)
    }

    /// The entry id: blake3 of the 217 bytes.
    pub fn id(&self) -> EntryId {
        EntryId(*blake3::hash(&self.bytes).as_bytes())
    }

    fn array(&self, at: usize) -> [u8; 32] {
        self.bytes[at..at + 32].try_into().expect("32 bytes")
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }
}

fn signed_message(bytes: &[u8; ENTRY_LEN]) -> [u8; SIGNATURE_DOMAIN.len() + SIGNED_LEN] {
    let mut msg = [0u8; SIGNATURE_DOMAIN.len() + SIGNED_LEN];
    msg[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
    msg[SIGNATURE_DOMAIN.len()..].copy_from_slice(&bytes[..SIGNED_LEN]);
    msg
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("author", &self.author())
            .field("seq", &self.seq())
            .field("id", &self.id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let key = SigningKey::from([3u8; 32]);
        Entry::sign(
            &key,
            Draft {
                seq: 1,
                timestamp_us: 5,
                backlink: EntryId::ZERO,
                skiplink: EntryId::ZERO,
            },
            b"hi",
        )
    }

    #[test]
    fn decode_checks_form() {
        let e = sample();
        assert_eq!(Entry::decode(e.as_bytes()).unwrap(), e);
        assert_eq!(
            Entry::decode(&e.as_bytes()[..216]),
            Err(DecodeError::Length(216))
        );
        let mut b = *e.as_bytes();
        b[0] = 2;
        assert_eq!(Entry::decode(&b), Err(DecodeError::UnknownVersion(2)));
        let mut b = *e.as_bytes();
        b[SEQ + 7] = 0;
        assert_eq!(Entry::decode(&b), Err(DecodeError::ZeroSeq));
        let mut b = *e.as_bytes();
        b[PAYLOAD_LEN + 5] = 1;
        assert!(matches!(
            Entry::decode(&b),
            Err(DecodeError::PayloadTooLarge(_))
        ));
        let mut b = *e.as_bytes();
        b[BACKLINK] = 1;
        assert_eq!(Entry::decode(&b), Err(DecodeError::FirstEntryLinks));
    }

    #[test]
    fn id_text_round_trip() {
        let id = sample().id();
        assert_eq!(id.to_string().parse::<EntryId>().unwrap(), id);
        assert!("zz".parse::<EntryId>().is_err());
    }
}

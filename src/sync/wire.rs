//! The messages of `capsule/1` and their framing.
//!
//! Every message travels as a u32 big-endian length, then the postcard
//! encoding of [`Message`]. A length over [`MAX_MESSAGE`] is refused before
//! anything is allocated, and a message must decode exactly (no trailing
//! bytes). The protocol's version is the ALPN `capsule/1`, repeated in
//! [`Message::Hello`]; a later version adds variants at the end of the enum
//! and announces itself by a new ALPN, so a peer never misreads a message.
//! schema/sync.md documents every message and the session flow.

use serde::{Deserialize, Serialize};

use super::range::WireRange;
use crate::log::entry::{Entry, MAX_PAYLOAD};
pub use crate::log::frame::entry_frame_len;
use crate::log::frame::{self, HEADER_LEN, entry_frame};
use crate::log::verify::Unverified;

/// Largest message, length prefix excluded: bounds what one frame can make
/// a node allocate, and is large enough for ~4,000 entries without payloads.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// The protocol version carried by [`Message::Hello`]. Version 2 adds
/// [`Message::Proofs`]; a responder answers a version-1 hello as before,
/// without it.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest version a responder still serves.
pub const OLDEST_VERSION: u16 = 1;

/// The layout of the proofs in [`Message::Proofs`]: 1 = the two entries of
/// a fork proof, 217 bytes each, one after the other.
pub const PROOFS_FORMAT: u8 = 1;

/// Bytes of one fork proof in [`Message::Proofs`].
pub const PROOF_LEN: usize = 2 * crate::log::entry::ENTRY_LEN;

/// Most fork proofs one [`Message::Proofs`] carries (868 KB, under
/// [`MAX_MESSAGE`]); more forked authors than that in one interest wait for
/// the next session.
pub const MAX_PROOFS: usize = 2_000;

/// A changelog cursor: "I hold every head your store `store` had at change
/// counter `counter`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The store the counter belongs to.
    pub store: [u8; 16],
    /// The counter.
    pub counter: u64,
}

/// Entries `from..=to` of the author with index `author`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    /// Author index in the shared interest.
    pub author: u32,
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
}

/// How the responder establishes the shared interest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shared {
    /// Both sides want the same authors (the digests match).
    Same,
    /// One bit per author of the initiator's list (in its order, least
    /// significant bit first): set where the responder wants it too.
    Bitmap(Vec<u8>),
    /// The digests differ and the list was not sent: send it.
    SendList,
}

/// Every message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Initiator → responder, first.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u16,
        /// Digest of the authors the initiator wants (see
        /// [`super::protocol::interest_digest`]).
        interest: [u8; 16],
        /// How many they are.
        interest_len: u32,
        /// The initiator's store and its change counter now.
        store: Cursor,
        /// The initiator's cursor into the responder's changelog, if it has
        /// one for the same interest.
        cursor: Option<Cursor>,
        /// Whether the next message is a [`Message::Ranges`] computed over
        /// the initiator's whole interest, in the hope it is shared.
        optimistic: bool,
    },
    /// Initiator → responder: its wanted authors, sorted, in chunks.
    Interest {
        /// The authors.
        authors: Vec<[u8; 32]>,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// Responder → initiator: the shared interest and the cursors.
    Welcome {
        /// How the interest is shared.
        shared: Shared,
        /// The responder's store and its change counter now.
        store: Cursor,
        /// Whether the initiator's cursor is honoured: then the responder
        /// sends the heads changed since it, and no reconciliation happens.
        cursor_ok: bool,
        /// The responder's cursor into the initiator's changelog.
        cursor: Option<Cursor>,
    },
    /// A reconciliation step; empty means every range matched.
    Ranges(Vec<WireRange>),
    /// Heads changed since a cursor (or all heads, when the cursor was not
    /// honoured), as listed items.
    Heads {
        /// The heads.
        items: Vec<super::range::ItemRef>,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// Ask for entries of some authors.
    Want(Vec<Wanted>),
    /// Entries answering wants, in order, as archive frames (see
    /// schema/archive.md): 0x01 ‖ entry ‖ flag ‖ payload when flagged.
    Entries(Vec<u8>),
    /// The sender wants nothing more.
    Done {
        /// The sender's change counter now, when every change since its
        /// hello is one the receiver holds too (entries it sent); the
        /// receiver's next cursor starts there. Sent only after a durable
        /// commit, so a crash cannot roll it back.
        counter: Option<u64>,
    },
    /// The fork proofs the sender holds for authors of the shared interest
    /// (version 2): so a fork found anywhere reaches every node that
    /// shares the author, not only those that meet both branches.
    Proofs {
        /// [`PROOFS_FORMAT`].
        format: u8,
        /// Each [`PROOF_LEN`] bytes: the entry the sender held first, then
        /// the conflicting one.
        proofs: Vec<Vec<u8>>,
    },
}

/// Why a frame or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix is over [`MAX_MESSAGE`].
    #[error("a message claims {0} bytes, over the limit of {MAX_MESSAGE}")]
    TooLarge(u64),
    /// The bytes are not a message.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// An entries message is malformed.
    #[error("malformed entries: {0}")]
    BadEntries(String),
}

/// The frame of `message`: length prefix and encoding.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut frame = postcard::to_extend(message, vec![0u8; 4]).expect("messages always encode");
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Checks a length prefix.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::TooLarge(len as u64));
    }
    Ok(len)
}

/// Decodes a message body (the bytes after the length prefix).
pub fn decode(body: &[u8]) -> Result<Message, WireError> {
    match postcard::take_from_bytes::<Message>(body) {
        Ok((m, [])) => Ok(m),
        Ok(_) => Err(WireError::Undecodable("trailing bytes".into())),
        Err(e) => Err(WireError::Undecodable(e.to_string())),
    }
}

/// Appends the frame of one entry to an entries body.
pub fn push_entry(body: &mut Vec<u8>, entry: &Entry, payload: Option<&[u8]>) {
    for part in entry_frame(entry, payload) {
        body.extend_from_slice(part);
    }
}

/// Splits an entries body into entries and payloads (nothing is verified).
pub fn decode_entries(body: &[u8]) -> Result<Vec<Unverified>, WireError> {
    let bad = |s: &str| WireError::BadEntries(s.into());
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
            return Err(bad("a frame is cut short"));
        };
        let (entry, with_payload) =
            frame::decode_header(header).map_err(|e| WireError::BadEntries(e.to_string()))?;
        rest = &rest[HEADER_LEN..];
        let payload = if with_payload {
            let len = entry.payload_len();
            if len > MAX_PAYLOAD || len as usize > rest.len() {
                return Err(bad("a payload is cut short"));
            }
            let (p, tail) = rest.split_at(len as usize);
            rest = tail;
            Some(p.to_vec())
        } else {
            None
        };
        out.push((entry, payload));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_length_then_the_message() {
        let frame = encode(&Message::Done { counter: Some(7) });
        let len = check_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(
            decode(&frame[4..]).unwrap(),
            Message::Done { counter: Some(7) }
        );
    }

    #[test]
    fn oversized_and_trailing_bytes_are_refused() {
        assert!(matches!(
            check_len(u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(_))
        ));
        let mut frame = encode(&Message::Done { counter: Some(7) });
        frame.push(0);
        assert!(decode(&frame[4..]).is_err());
    }
}

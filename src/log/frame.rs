//! The entry frame: one entry and, optionally, its payload, as archives and
//! sync's entries messages both carry them (schema/archive.md,
//! schema/sync.md):
//!
//! ```text
//! 0x01 | entry (217 bytes) | 0x00                      no payload
//! 0x01 | entry (217 bytes) | 0x01 | payload_len bytes  with the payload
//! ```

use super::entry::{DecodeError, ENTRY_LEN, Entry};

/// Tag of an entry frame.
pub const FRAME_ENTRY: u8 = 1;
/// Flag: the entry's payload is not included.
pub const FRAME_NO_PAYLOAD: u8 = 0;
/// Flag: the entry's payload follows.
pub const FRAME_PAYLOAD: u8 = 1;
/// Tag, entry and flag: what comes before the payload.
pub const HEADER_LEN: usize = 1 + ENTRY_LEN + 1;

/// Why a frame header does not decode.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The tag is not [`FRAME_ENTRY`].
    #[error("a frame of kind {0} where an entry frame was expected")]
    NotAnEntry(u8),
    /// The entry does not decode.
    #[error(transparent)]
    Entry(#[from] DecodeError),
    /// The payload flag is neither 0 nor 1.
    #[error("unknown payload flag {0}")]
    PayloadFlag(u8),
}

impl FrameError {
    /// Where in the header the fault lies (0 the tag, 1 the entry, then
    /// the flag).
    pub fn offset(&self) -> usize {
        match self {
            FrameError::NotAnEntry(_) => 0,
            FrameError::Entry(_) => 1,
            FrameError::PayloadFlag(_) => 1 + ENTRY_LEN,
        }
    }
}

/// The pieces of one entry frame, in order: tag, entry, flag, payload (empty
/// when not included).
pub fn entry_frame<'a>(entry: &'a Entry, payload: Option<&'a [u8]>) -> [&'a [u8]; 4] {
    match payload {
        Some(p) => [&[FRAME_ENTRY], entry.as_bytes(), &[FRAME_PAYLOAD], p],
        None => [&[FRAME_ENTRY], entry.as_bytes(), &[FRAME_NO_PAYLOAD], &[]],
    }
}

/// Size of one entry's frame.
pub fn entry_frame_len(entry: &Entry, with_payload: bool) -> usize {
    HEADER_LEN
        + if with_payload {
            entry.payload_len() as usize
        } else {
            0
        }
}

/// Decodes a frame header: the entry, and whether its payload
/// (`entry.payload_len()` bytes, at most `MAX_PAYLOAD`) follows.
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(Entry, bool), FrameError> {
    if header[0] != FRAME_ENTRY {
        return Err(FrameError::NotAnEntry(header[0]));
    }
    let entry = Entry::decode(&header[1..1 + ENTRY_LEN])?;
    match header[1 + ENTRY_LEN] {
        FRAME_NO_PAYLOAD => Ok((entry, false)),
        FRAME_PAYLOAD => Ok((entry, true)),
        flag => Err(FrameError::PayloadFlag(flag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::log::builder::LogBuilder;

    #[test]
    fn a_header_decodes_to_what_was_framed() {
        let identity = Identity::from_seed([3; 32]);
        let entry = LogBuilder::new(&identity).next(1, b"hi");
        for payload in [None, Some(&b"hi"[..])] {
            let bytes: Vec<u8> = entry_frame(&entry, payload).concat();
            assert_eq!(bytes.len(), entry_frame_len(&entry, payload.is_some()));
            let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
            let (decoded, with_payload) = decode_header(&header).unwrap();
            assert_eq!(decoded, entry);
            assert_eq!(with_payload, payload.is_some());
        }
        let mut bad = [0u8; HEADER_LEN];
        bad[..HEADER_LEN].copy_from_slice(&entry_frame(&entry, None).concat());
        bad[HEADER_LEN - 1] = 7;
        assert!(matches!(
            decode_header(&bad),
            Err(FrameError::PayloadFlag(7))
        ));
        bad[0] = 9;
        assert!(matches!(
            decode_header(&bad),
            Err(FrameError::NotAnEntry(9))
        ));
    }
}

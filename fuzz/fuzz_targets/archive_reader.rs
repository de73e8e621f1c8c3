//! The archive reader on arbitrary bytes (after a valid header half the
//! time): never panics, and never reads a frame larger than an entry and its
//! bounded payload. Fast, so it explores the framing deeply; archive_verify
//! runs the whole verification pipeline.
#![no_main]

use std::io::Cursor;

use capsule::archive::ArchiveReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = with_header_sometimes(data);
    if let Ok(mut reader) = ArchiveReader::new(Cursor::new(input)) {
        while let Ok(Some((entry, payload))) = reader.next_entry() {
            if let Some(p) = payload {
                assert_eq!(p.len() as u64, entry.payload_len());
            }
        }
    }
});

fn with_header_sometimes(data: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(data.len() + 16);
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.extend_from_slice(b"capsule-archive\x01");
        input.extend_from_slice(&data[1..]);
    } else {
        input.extend_from_slice(data);
    }
    input
}

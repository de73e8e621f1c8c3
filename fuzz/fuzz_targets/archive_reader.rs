//! The archive reader and the verifier behind `capsule verify` / `import` on
//! arbitrary bytes (after a valid header half the time): never panics, and
//! never reads a frame larger than an entry and its bounded payload.
#![no_main]

use std::io::Cursor;

use capsule::archive::ArchiveReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.extend_from_slice(b"capsule-archive\x01");
        input.extend_from_slice(&data[1..]);
    } else {
        input.extend_from_slice(data);
    }
    if let Ok(mut reader) = ArchiveReader::new(Cursor::new(input.clone())) {
        while let Ok(Some(_)) = reader.next_entry() {}
    }
    let _ = capsule::audit::verify_archive(Cursor::new(input), None, None);
});

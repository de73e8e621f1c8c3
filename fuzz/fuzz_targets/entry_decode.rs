//! Entry::decode on arbitrary bytes: never panics; what decodes re-encodes to
//! the same bytes and verifies without panicking.
#![no_main]

use capsule::log::entry::{Entry, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(&entry.as_bytes()[..], data);
        assert!(entry.seq() >= 1);
        assert!(entry.payload_len() <= MAX_PAYLOAD);
        let _ = capsule::log::verify::signature_valid(&entry);
        let _ = capsule::log::verify::signatures_valid(&[entry, entry]);
    }
});

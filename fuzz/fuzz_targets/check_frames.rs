//! The check ("dial me back") decoders on arbitrary bytes: never panic,
//! and what a request or answer decodes to encodes back to itself.
#![no_main]

use capsule::mesh::check::{decode_answer, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let again = postcard::to_allocvec(&request).unwrap();
        assert_eq!(decode_request(&again).unwrap(), request);
    }
    if let Ok(answer) = decode_answer(data) {
        let again = postcard::to_allocvec(&answer).unwrap();
        assert_eq!(decode_answer(&again).unwrap(), answer);
    }
});

//! The sync message decoder on arbitrary bytes: never panics; what decodes
//! encodes back to the same bytes' message; entries bodies and ranges go
//! through their own checks without panicking.
#![no_main]

use capsule::sync::range;
use capsule::sync::wire::{self, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode(data) {
        let frame = wire::encode(&message);
        assert_eq!(wire::decode(&frame[4..]).unwrap(), message);
        match message {
            Message::Entries(body) => {
                let _ = wire::decode_entries(&body);
            }
            Message::Ranges(ranges) => {
                let _ = range::from_wire(ranges);
            }
            _ => {}
        }
    }
    let _ = wire::decode_entries(data);
});

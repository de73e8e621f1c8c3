//! The peer-exchange decoders on arbitrary bytes: never panic, never
//! return more than their limits, and what a question or answer decodes to
//! encodes back to the same bytes' meaning.
#![no_main]

use capsule::mesh::exchange::{MAX_ASKED, MAX_TOLD, decode_answer, decode_question};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = decode_question(data) {
        assert!(keys.len() <= MAX_ASKED);
        let again = postcard::to_allocvec(&keys).unwrap();
        assert_eq!(decode_question(&again).unwrap(), keys);
    }
    if let Ok(told) = decode_answer(data) {
        assert!(told.len() <= MAX_TOLD);
        for peer in told {
            let text = peer.to_string();
            assert_eq!(
                text.parse::<capsule::mesh::address::PeerAddr>().unwrap(),
                peer
            );
        }
    }
});

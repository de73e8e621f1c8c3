//! The `Signature` header parser on arbitrary text: never panics, and what
//! it reads writes back to a header that reads the same.
#![no_main]

use capsule::fediverse::signature::{Signature, digest_matches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Signature::parse(text) {
        assert_eq!(Signature::parse(&s.to_header()), Ok(s));
    }
    let _ = digest_matches(text, data);
});

//! picture::prepare on arbitrary bytes (an upload from anyone who holds the
//! owner's session, or a file given to `capsule post --attach`): never
//! panics, stays within its pixel budget, and what it accepts is a picture
//! of one of the served types whose size it reports truly.
#![no_main]

use capsule::picture::{MAX_AREA, MEDIA_TYPES, prepare, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prepared) = prepare(data) {
        let full = &prepared.full;
        assert!(MEDIA_TYPES.contains(&full.media_type));
        assert!(u64::from(full.width) * u64::from(full.height) <= MAX_AREA);
        assert!(sniff(&full.bytes).is_ok());
        let decoded = image::load_from_memory(&full.bytes).expect("our output decodes");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (full.width, full.height)
        );
    }
});

//! Record::decode on arbitrary bytes: never panics, and what decodes
//! encodes back to a record that decodes to the same value.
#![no_main]

use capsule::log::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let again = record.encode().expect("a decoded record re-encodes");
        assert_eq!(Record::decode(&again).unwrap(), record);
        let _ = record.summary();
    }
});

//! Record::decode on arbitrary bytes: never panics, and what decodes
//! encodes back to a record that decodes to the same value. The store's
//! shortcuts (reply target, profile, delete and blob tests on the first
//! bytes) agree with the full decode.
#![no_main]

use capsule::log::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let target = Record::reply_target(data);
    let decoded = Record::decode(data);
    match &decoded {
        Ok(Record::Post { reply_to, .. } | Record::PostWithPictures { reply_to, .. }) => {
            assert_eq!(target, *reply_to)
        }
        _ => assert_eq!(target, None),
    }
    if let Ok(Record::Profile { .. }) = decoded {
        assert!(Record::may_be_profile(data));
    }
    if let Ok(Record::Delete { .. }) = decoded {
        assert!(Record::may_be_delete(data));
    }
    if let Ok(record) = &decoded
        && !record.blobs().is_empty()
    {
        assert!(Record::may_name_blobs(data));
    }
    if let Ok(record) = decoded {
        let again = record.encode().expect("a decoded record re-encodes");
        assert_eq!(Record::decode(&again).unwrap(), record);
        let _ = record.summary();
    }
});

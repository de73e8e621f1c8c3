//! The whole pipeline behind `capsule verify FILE` and `capsule import` on
//! arbitrary bytes after a valid header: never panics, and a verified archive
//! is one whose every entry the reader also yields.
#![no_main]

use std::io::Cursor;

use capsule::archive::ArchiveReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // Verification runs on rayon's global pool, whose threads live as
        // long as the process. Started here, with every worker run once,
        // their allocations are not charged to the first input as a leak.
        rayon::broadcast(|_| ());
    },
    |data: &[u8]| {
        let mut input = b"capsule-archive\x01".to_vec();
        input.extend_from_slice(data);
        if let Ok(summary) =
            capsule::archive::audit::verify_archive(Cursor::new(input.clone()), None, None)
        {
            let mut reader =
                ArchiveReader::new(Cursor::new(input)).expect("verified, so it has a header");
            let mut count = 0;
            while let Some(_) = reader.next_entry().expect("verified, so it reads") {
                count += 1;
            }
            assert_eq!(count, summary.entries);
        }
    }
);

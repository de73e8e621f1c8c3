//! The answer of a domain's /.well-known/capsule, as read off the network:
//! any bytes give a node's key and address or an error, never a panic, and
//! a sync address always names the author's own key.
#![no_main]

use capsule::mesh::well_known::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(found) = parse(data)
        && let Some(sync) = found.sync
    {
        assert_eq!(sync.key, found.author);
    }
});

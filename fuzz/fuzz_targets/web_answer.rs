//! Another node's HTTP answer, as read off the network by the HTTPS client
//! (follow by domain, the pull fallback): any bytes give an answer or an
//! error, never a panic, and a body never disagrees with its declared
//! length.
#![no_main]

use capsule::mesh::web_client::parse_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = parse_answer(data) {
        assert!(!answer.head.contains("transfer-encoding: chunked"));
        if let Some(length) = answer
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            assert_eq!(answer.body.len(), length);
        }
    }
});

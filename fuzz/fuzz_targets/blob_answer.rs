//! The asker's reading of a peer's answer to a blob request, on arbitrary
//! bytes: never panics, never returns bytes other than the announced size,
//! and never reads more than one byte past it.
#![no_main]

use capsule::mesh::fetch::read_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first two bytes choose the announced size; the rest is the answer.
    let Some((size, data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let announced = u64::from(u16::from_be_bytes(*size));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let answer = runtime.block_on(read_answer(data, announced));
    if let Ok(Some(bytes)) = answer {
        assert_eq!(bytes.len() as u64, announced);
        assert_eq!(&data[9..9 + bytes.len()], &bytes[..]);
    }
});

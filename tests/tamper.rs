//! Verification rejects every kind of tampering.

use std::io::Cursor;

use capsule::archive::ArchiveWriter;
use capsule::archive::audit::{VerifyError, verify_archive};
use capsule::log::builder::LogBuilder;
use capsule::log::entry::{Draft, Entry, EntryId};
use capsule::log::lipmaa::lipmaa;
use capsule::log::verify::Unverified;
use capsule::log::verify::{Invalid, StreamVerifier};
use proptest::prelude::*;

use crate::common::{make_log, test_identity};

type Items = Vec<Unverified>;

/// Runs the stream verifier over items given as raw bytes (so tampered
/// entries that no longer decode count as rejected too).
fn verdict(items: &[([u8; 217], Option<Vec<u8>>)]) -> Result<(), String> {
    let mut v = StreamVerifier::new();
    for (bytes, payload) in items {
        let entry = Entry::decode(bytes).map_err(|e| e.to_string())?;
        v.push(entry, payload.clone()).map_err(|e| e.to_string())?;
    }
    v.finish().map(|_| ()).map_err(|e| e.to_string())
}

fn raw(items: &Items) -> Vec<([u8; 217], Option<Vec<u8>>)> {
    items
        .iter()
        .map(|(e, p)| (*e.as_bytes(), p.clone()))
        .collect()
}

#[test]
fn every_bit_of_an_entry_is_protected() {
    let log = make_log(&test_identity(1), 14);
    let clean = raw(&log);
    assert_eq!(verdict(&clean), Ok(()));
    // Entry 13 is a skiplink target's neighbour and has a distinct skiplink.
    for target in [0usize, 4, 12, 13] {
        for byte in 0..217 {
            for bit in 0..8 {
                let mut items = clean.clone();
                items[target].0[byte] ^= 1 << bit;
                assert!(
                    verdict(&items).is_err(),
                    "flipping bit {bit} of byte {byte} of entry {} went unnoticed",
                    target + 1
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn any_flip_in_entry_or_payload_is_rejected(
        target in 0usize..10,
        pos in 0usize..1000,
        mask in 1u8..=255,
    ) {
        let log = make_log(&test_identity(2), 10);
        let mut items = raw(&log);
        let payload_len = items[target].1.as_ref().unwrap().len();
        if pos < 217 {
            items[target].0[pos] ^= mask;
        } else {
            let p = items[target].1.as_mut().unwrap();
            p[(pos - 217) % payload_len] ^= mask;
        }
        prop_assert!(verdict(&items).is_err());
    }
}

#[test]
fn each_reason_is_named() {
    let id = test_identity(3);
    let log = make_log(&id, 6);
    let check = |items: Items| -> Invalid {
        let mut v = StreamVerifier::new();
        for (e, p) in items {
            if let Err(bad) = v.push(e, p) {
                return bad.reason;
            }
        }
        v.finish().unwrap_err().reason
    };
    // Payload swapped.
    let mut items = log.clone();
    items[2].1 = items[1].1.clone();
    assert_eq!(check(items), Invalid::PayloadMismatch);
    // Signature of another entry.
    let mut items = log.clone();
    let mut bytes = *items[3].0.as_bytes();
    bytes[153..].copy_from_slice(&items[2].0.as_bytes()[153..]);
    items[3].0 = Entry::decode(&bytes).unwrap();
    assert_eq!(check(items), Invalid::BadSignature);
    // Properly signed by the author, but linked wrongly.
    let sign = |seq: u64, back: EntryId, skip: EntryId| {
        Entry::sign(
            id.signing_key(),
            Draft {
                seq,
                timestamp_us: seq,
                backlink: back,
                skiplink: skip,
            },
            b"",
        )
    };
    let ids: Vec<EntryId> = log.iter().map(|(e, _)| e.id()).collect();
    let mut items = log[..4].to_vec();
    items.push((sign(5, ids[2], ids[(lipmaa(5) - 1) as usize]), None));
    assert_eq!(check(items), Invalid::BrokenBacklink(4));
    let mut items = log[..4].to_vec();
    items.push((sign(5, ids[3], ids[2]), None));
    assert_eq!(check(items), Invalid::WrongSkiplink(lipmaa(5)));
    // A gap, a repeat, a fork.
    let mut items = log.clone();
    items.remove(2);
    assert_eq!(check(items), Invalid::Gap { expected: 3 });
    let mut items = log.clone();
    items.insert(3, log[2].clone());
    assert_eq!(check(items), Invalid::Duplicate);
    // A second signed entry for a seq is the log's fork proof: it verifies
    // (an export writes it after the log), and nothing of the author may
    // follow it.
    let forked = sign(3, ids[1], ids[(lipmaa(3) - 1) as usize]);
    let mut items = log.clone();
    items.push((forked, None));
    let mut v = StreamVerifier::new();
    for (e, p) in items {
        v.push(e, p).unwrap();
    }
    let (summary, _) = v.finish().unwrap();
    assert_eq!((summary.forked, summary.entries), (1, log.len() as u64 + 1));
    let mut items = log[..4].to_vec();
    items.push((forked, None));
    items.push(log[4].clone());
    assert_eq!(check(items), Invalid::AuthorForked(3));
    // An author whose entries are split in two runs.
    let other = make_log(&test_identity(4), 2);
    let items: Items = log[..2]
        .iter()
        .chain(&other)
        .chain(&log[2..])
        .cloned()
        .collect();
    assert_eq!(check(items), Invalid::AuthorRepeated);
}

#[test]
fn the_first_bad_entry_is_reported_across_chunks() {
    // 5,000 entries span two verification chunks; break one early and one late.
    let id = test_identity(5);
    let mut builder = LogBuilder::new(&id);
    let mut items: Items = (1..=5000u64)
        .map(|s| (builder.next(s, b"ab"), Some(b"ab".to_vec())))
        .collect();
    items[4500].1 = Some(b"xy".to_vec());
    items[100].1 = Some(b"yz".to_vec());
    let mut w = ArchiveWriter::new(Vec::new()).unwrap();
    for (e, p) in &items {
        w.write_entry(e, p.as_deref()).unwrap();
    }
    let bytes = w.finish().unwrap();
    let err = verify_archive(Cursor::new(bytes), None, None).unwrap_err();
    match err {
        VerifyError::Entry(bad) => {
            assert_eq!(bad.seq, 101);
            assert_eq!(bad.reason, Invalid::PayloadMismatch);
        }
        other => panic!("unexpected {other}"),
    }
}

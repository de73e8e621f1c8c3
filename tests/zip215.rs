//! ZIP-215 edge cases: single and batch verification reach the same verdict
//! on every entry, whatever else shares the batch, and that verdict is the
//! cofactored equation [8](sB − R − kA) = 0 computed here independently.
//!
//! Cases: the 14 × 14 small-order (A, R) encodings with s = 0, canonical and
//! not (valid for any message under ZIP-215); mixed-order keys and nonces
//! (a torsion component added to an honest A or R); a non-canonical s; and
//! honest and broken signatures around them.

use capsule::log::entry::Entry;
use capsule::log::verify::{signature_valid, signatures_valid, verify_batch};
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sha2::{Digest, Sha512};

use crate::common::{make_log, test_identity};

const DOMAIN: &[u8] = b"capsule-entry-v1";

/// The order of the prime subgroup, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// An entry header (seq 1, no payload) by `author`, with signature bytes
/// `sig`; `seq` varies the message.
fn entry_with(author: [u8; 32], seq_tag: u64, sig: [u8; 64]) -> Entry {
    let mut b = [0u8; 217];
    b[0] = 1;
    b[1..33].copy_from_slice(&author);
    b[33..41].copy_from_slice(&1u64.to_be_bytes());
    b[41..49].copy_from_slice(&seq_tag.to_be_bytes());
    b[121..153].copy_from_slice(blake3::hash(b"").as_bytes());
    b[153..].copy_from_slice(&sig);
    Entry::decode(&b).unwrap()
}

fn message(author: [u8; 32], seq_tag: u64) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&entry_with(author, seq_tag, [0; 64]).as_bytes()[..153]);
    m
}

fn challenge(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let digest: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(msg)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&digest)
}

/// The ZIP-215 rule, from its definition.
fn reference(entry: &Entry) -> bool {
    let a_bytes = entry.author().0;
    let sig = entry.signature();
    let r_bytes: [u8; 32] = sig[..32].try_into().unwrap();
    let s_bytes: [u8; 32] = sig[32..].try_into().unwrap();
    let (Some(a), Some(r)) = (
        CompressedEdwardsY(a_bytes).decompress(),
        CompressedEdwardsY(r_bytes).decompress(),
    ) else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let k = challenge(&r_bytes, &a_bytes, &entry.signed_message());
    (EdwardsPoint::mul_base(&s) - r - a * k)
        .mul_by_cofactor()
        .is_identity()
}

fn scalar(tag: &str) -> Scalar {
    let mut wide = [0u8; 64];
    blake3::Hasher::new()
        .update(tag.as_bytes())
        .finalize_xof()
        .fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Every 32-byte encoding (canonical or not) of a small-order point.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut candidates = Vec::new();
    for t in EIGHT_TORSION {
        let c = t.compress().to_bytes();
        candidates.push(c);
        let mut flipped = c;
        flipped[31] ^= 0x80;
        candidates.push(flipped);
    }
    // y = p and y = p + 1: non-canonical spellings of y = 0 and y = 1.
    for low in [0xedu8, 0xee] {
        let mut y = [0xffu8; 32];
        y[0] = low;
        y[31] = 0x7f;
        candidates.push(y);
        y[31] = 0xff;
        candidates.push(y);
    }
    candidates.sort();
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|c| {
            CompressedEdwardsY(*c)
                .decompress()
                .is_some_and(|p| p.is_small_order())
        })
        .collect()
}

/// Signs `msg_tag` as `a` would, but declaring `a_enc` as the key and `r_point`
/// (from nonce `r`, perhaps with torsion added) as the nonce.
fn schnorr(a: Scalar, a_enc: [u8; 32], r: Scalar, r_point: EdwardsPoint, tag: u64) -> Entry {
    let r_enc = r_point.compress().to_bytes();
    let k = challenge(&r_enc, &a_enc, &message(a_enc, tag));
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_enc);
    sig[32..].copy_from_slice(s.as_bytes());
    entry_with(a_enc, tag, sig)
}

fn edge_cases() -> Vec<Entry> {
    let mut cases = Vec::new();
    let small = small_order_encodings();
    assert_eq!(small.len(), 14, "ZIP-215 lists 14 small-order encodings");
    for (i, a) in small.iter().enumerate() {
        for (j, r) in small.iter().enumerate() {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(r);
            cases.push(entry_with(*a, (i * 100 + j) as u64, sig));
        }
    }
    let a = scalar("honest key");
    let big_a = ED25519_BASEPOINT_POINT * a;
    for (i, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
        // Mixed-order key: an honest key plus torsion.
        let a_enc = (big_a + t).compress().to_bytes();
        let r = scalar(&format!("nonce a{i}"));
        cases.push(schnorr(
            a,
            a_enc,
            r,
            ED25519_BASEPOINT_POINT * r,
            1000 + i as u64,
        ));
        // Mixed-order nonce.
        let r = scalar(&format!("nonce r{i}"));
        cases.push(schnorr(
            a,
            big_a.compress().to_bytes(),
            r,
            ED25519_BASEPOINT_POINT * r + t,
            2000 + i as u64,
        ));
    }
    // A valid signature, then the same with s + L (non-canonical s).
    let r = scalar("nonce s");
    let honest = schnorr(
        a,
        big_a.compress().to_bytes(),
        r,
        ED25519_BASEPOINT_POINT * r,
        3000,
    );
    cases.push(honest);
    let mut sig = honest.signature();
    let mut carry = 0u16;
    for (byte, l) in sig[32..].iter_mut().zip(L) {
        let sum = *byte as u16 + l as u16 + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    cases.push(entry_with(honest.author().0, 3000, sig));
    // A broken signature.
    let mut sig = honest.signature();
    sig[40] ^= 4;
    cases.push(entry_with(honest.author().0, 3000, sig));
    cases
}

fn assert_agreement(batch: &[Entry]) {
    let batched = signatures_valid(batch);
    for (entry, verdict) in batch.iter().zip(batched) {
        let single = signature_valid(entry);
        assert_eq!(verdict, single, "batch and single disagree on {entry:?}");
        assert_eq!(
            single,
            reference(entry),
            "verdict differs from ZIP-215 on {entry:?}"
        );
    }
}

#[test]
fn the_edge_cases_are_what_zip215_says() {
    let cases = edge_cases();
    let valid = cases.iter().filter(|e| reference(e)).count();
    // Every small-order pair with s = 0, every mixed-order case and the honest
    // signature are valid; the non-canonical s and the broken one are not.
    assert_eq!(valid, cases.len() - 2);
    for e in &cases {
        assert_eq!(signature_valid(e), reference(e), "{e:?}");
    }
}

#[test]
fn single_and_batch_agree_whatever_shares_the_batch() {
    let cases = edge_cases();
    let honest: Vec<Entry> = make_log(&test_identity(9), 40)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    // Each case alone, and among honest entries of another author.
    for case in &cases {
        assert_agreement(&[*case]);
        let mut batch = honest[..20].to_vec();
        batch.push(*case);
        batch.extend_from_slice(&honest[20..]);
        assert_agreement(&batch);
    }
    // All together, and in shuffled mixtures.
    let mut all: Vec<Entry> = cases.iter().chain(&honest).copied().collect();
    assert_agreement(&all);
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..20 {
        for i in (1..all.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            all.swap(i, (state % (i as u64 + 1)) as usize);
        }
        assert_agreement(&all[..64]);
        assert_agreement(&all[64..]);
    }
    // The parallel batch verifier agrees too.
    let items = all.iter().map(|e| (*e, None)).collect::<Vec<_>>();
    match verify_batch(items) {
        Ok(_) => panic!("the batch holds invalid entries"),
        Err((i, _)) => assert!(!reference(&all[i]) && all[..i].iter().all(reference)),
    }
}

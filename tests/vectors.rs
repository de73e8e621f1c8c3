//! The shared worked example (made with independent crypto libraries) must be
//! reproduced byte for byte.

use capsule::identity::Identity;
use capsule::log::entry::{Draft, Entry, EntryId};
use capsule::log::lipmaa::lipmaa;
use capsule::log::verify::{ChainChecker, verify_one};

#[test]
fn entry_v1_vectors_reproduce_byte_for_byte() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("vectors/entry-v1.json")).unwrap();
    let seed: [u8; 32] = hex::decode(doc["secret_seed_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let identity = Identity::from_seed(seed);
    assert_eq!(
        hex::encode(identity.author().0),
        doc["author_hex"].as_str().unwrap()
    );
    assert_eq!(
        doc["signature_domain"].as_str().unwrap().as_bytes(),
        b"capsule-entry-v1"
    );
    let mut ids: Vec<EntryId> = Vec::new();
    let mut chain = ChainChecker::new(identity.author());
    for v in doc["entries"].as_array().unwrap() {
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(lipmaa(seq), v["lipmaa"].as_u64().unwrap());
        let payload = hex::decode(v["payload_hex"].as_str().unwrap()).unwrap();
        let link = |n: u64| {
            if n == 0 {
                EntryId::ZERO
            } else {
                ids[(n - 1) as usize]
            }
        };
        let draft = Draft {
            seq,
            timestamp_us: v["timestamp_us"].as_u64().unwrap(),
            backlink: link(seq - 1),
            skiplink: link(lipmaa(seq)),
        };
        let entry = Entry::sign(identity.signing_key(), draft, &payload);
        assert_eq!(
            hex::encode(entry.as_bytes()),
            v["entry_hex"].as_str().unwrap(),
            "entry {seq}"
        );
        assert_eq!(
            entry.id().to_string(),
            v["id_hex"].as_str().unwrap(),
            "id {seq}"
        );
        // And the given bytes decode and verify on their own.
        let given = hex::decode(v["entry_hex"].as_str().unwrap()).unwrap();
        let decoded = Entry::decode(&given).unwrap();
        let verified = verify_one(decoded, Some(payload)).unwrap();
        chain.push(verified.entry(), verified.id()).unwrap();
        ids.push(entry.id());
    }
}

//! Forks: two valid entries for one (author, seq) are kept as proof, and the
//! author's further entries are refused.

use std::sync::Arc;

use capsule::log::entry::{Draft, Entry};
use capsule::log::lipmaa::lipmaa;
use capsule::log::verify::{verify_batch, verify_one};
use capsule::store::{Store, StoreError};

use crate::common::{capsule_ok, make_log, test_identity};

fn forked_entry(store: &Store, seq: u64) -> Entry {
    let id = test_identity(1);
    let author = id.author();
    let back = store.entry(&author, seq - 1).unwrap().unwrap().id();
    let skip = store.entry(&author, lipmaa(seq)).unwrap().unwrap().id();
    Entry::sign(
        id.signing_key(),
        Draft {
            seq,
            timestamp_us: 42,
            backlink: back,
            skiplink: skip,
        },
        b"the other story",
    )
}

#[test]
fn a_fork_is_stored_as_proof_and_the_author_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let id = test_identity(1);
    let log = make_log(&id, 6);
    let report = store
        .append(verify_batch(log[..5].to_vec()).unwrap())
        .unwrap();
    assert_eq!(report.accepted, 5);
    // The same entries again are duplicates, not forks.
    let again = store
        .append(verify_batch(log[..5].to_vec()).unwrap())
        .unwrap();
    assert_eq!(
        (again.accepted, again.duplicates, again.forks.len()),
        (0, 5, 0)
    );

    let other = forked_entry(&store, 3);
    let report = store
        .append(vec![verify_one(other, None).unwrap()])
        .unwrap();
    assert_eq!(report.forks, vec![(id.author(), 3)]);
    let proofs = store.forks().unwrap();
    assert_eq!(proofs.len(), 1);
    assert_eq!(proofs[0].first, log[2].0);
    assert_eq!(proofs[0].second, other);

    // Entry 6 is valid, but the author is forked: refused, with the reason.
    let report = store
        .append(verify_batch(log[5..].to_vec()).unwrap())
        .unwrap();
    assert_eq!((report.accepted, report.refused_forked), (0, 1));
    assert_eq!(store.head(&id.author()).unwrap().unwrap().seq, 5);

    // Our own log forked: posting is refused with an explanation.
    let err = store
        .publish(&Arc::new(test_identity(1)), b"x".to_vec(), 1)
        .unwrap_err();
    assert!(matches!(err, StoreError::OwnLogForked(3)), "{err}");
    assert!(err.to_string().contains("forked"));
}

#[test]
fn verify_store_and_export_show_the_fork() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    // Someone else's log, imported, then a conflicting entry arrives.
    {
        let store = Store::open(&data.join("capsule.redb")).unwrap();
        store
            .append(verify_batch(make_log(&test_identity(1), 4)).unwrap())
            .unwrap();
        let other = forked_entry(&store, 2);
        store
            .append(vec![verify_one(other, None).unwrap()])
            .unwrap();
    }
    // A store holding someone's fork proof is healthy: the fork is listed,
    // apart from damage, and the exit code is 0.
    let text = capsule_ok(&data, &["verify", "--store"]);
    let author = test_identity(1).author().to_string();
    assert!(text.contains("healthy, 1 author forked"), "{text}");
    assert!(text.contains(&format!("{author} at seq 2")), "{text}");

    // The export carries the proof, so an offline verifier sees it too.
    let archive = dir.path().join("forked.capsule");
    capsule_ok(&data, &["export", "--all", "-o", archive.to_str().unwrap()]);
    let text = capsule_ok(&data, &["verify", archive.to_str().unwrap()]);
    assert!(text.contains("healthy, 1 author forked"), "{text}");
    let log = capsule_ok(&data, &["log", &author]);
    assert!(log.contains("FORK at seq 2"), "{log}");

    // Imported into a fresh node, the archive is accepted whole and the
    // proof kept: the backup of a store with a fork is a working backup.
    let fresh = dir.path().join("fresh");
    capsule_ok(&fresh, &["init"]);
    let text = capsule_ok(&fresh, &["import", archive.to_str().unwrap()]);
    assert!(text.contains("fork found"), "{text}");
    let text = capsule_ok(&fresh, &["verify", "--store"]);
    assert!(text.contains("healthy, 1 author forked"), "{text}");
    let log = capsule_ok(&fresh, &["log", &author]);
    assert!(log.contains("FORK at seq 2"), "{log}");
}

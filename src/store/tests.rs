//! The store's unit tests: signing marks, blocks, the changelog, shared
//! payloads, concurrent posts.

use super::*;
use redb::ReadableTableMetadata;
use signer::{SignerChange, Signing};

#[test]
fn a_key_signs_only_where_its_log_began_or_was_restored() {
    let (_dir, store, alice, _bob) = two_authors();
    store.publish(&alice, post("one"), 1).unwrap();
    // The same key beside another store: restoring, nothing signed.
    let other = Store::open_in_memory().unwrap();
    let err = other.publish(&alice, post("again"), 2).unwrap_err();
    assert!(matches!(err, StoreError::NotSigning(Signing::Restoring)));
    assert!(err.to_string().contains("capsule restore"));
    assert_eq!(other.head(&alice.author()).unwrap(), None);
    // init's mark is never written over a log the store holds.
    let first = store.entry(&alice.author(), 1).unwrap().unwrap();
    other
        .append(vec![
            crate::log::verify::verify_one(first, Some(post("one"))).unwrap(),
        ])
        .unwrap();
    assert_eq!(
        other
            .change_signer(alice.author(), SignerChange::Begin)
            .unwrap(),
        Signing::Restoring
    );
    // Restored: signs at head + 1.
    assert_eq!(
        other
            .change_signer(alice.author(), SignerChange::Restored)
            .unwrap(),
        Signing::Ready
    );
    let second = other.publish(&alice, post("two"), 2).unwrap();
    assert_eq!(second.seq(), 2);
    // The first store meets that entry: the key signs elsewhere, and it
    // stops signing rather than fork.
    let report = store
        .append(vec![
            crate::log::verify::verify_one(second, Some(post("two"))).unwrap(),
        ])
        .unwrap();
    assert_eq!(report.signed_elsewhere, Some((alice.author(), 2)));
    let err = store.publish(&alice, post("three"), 3).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotSigning(Signing::Elsewhere { seq: 2, .. })
    ));
    assert_eq!(store.head(&alice.author()).unwrap().unwrap().seq, 2);
}

#[test]
fn a_store_from_a_newer_capsule_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    Store::open(&path).unwrap().close().unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 2, .. }));
    assert!(err.to_string().contains("upgrade capsule"));
}

/// A new store in a temporary directory, and two identities.
fn two_authors() -> (tempfile::TempDir, Store, Arc<Identity>, Arc<Identity>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let alice = Arc::new(Identity::from_seed([1; 32]));
    let bob = Arc::new(Identity::from_seed([2; 32]));
    for id in [&alice, &bob] {
        store
            .change_signer(id.author(), SignerChange::Begin)
            .unwrap();
    }
    (dir, store, alice, bob)
}

fn post(text: &str) -> Vec<u8> {
    crate::log::record::Record::post(text).encode().unwrap()
}

#[test]
fn the_changelog_keeps_one_row_per_author() {
    let (_dir, store, alice, bob) = two_authors();
    assert_eq!(store.changed_since(0).unwrap(), (vec![], 0));
    for i in 0..5 {
        store.publish(&alice, post(&format!("a{i}")), 1).unwrap();
    }
    let mark = store.change_counter().unwrap();
    store.publish(&bob, post("b"), 1).unwrap();
    store.publish(&alice, post("a5"), 1).unwrap();
    let (changed, now) = store.changed_since(mark).unwrap();
    let authors: Vec<_> = changed.iter().map(|(a, h)| (*a, h.seq)).collect();
    assert_eq!(authors, vec![(bob.author(), 1), (alice.author(), 6)]);
    assert_eq!(now, store.change_counter().unwrap());
    assert_eq!(store.changed_since(now).unwrap(), (vec![], now));
    // Everything since the start: both authors once each.
    assert_eq!(store.changed_since(0).unwrap().0.len(), 2);
    let txn = store.db().unwrap().begin_read().unwrap();
    assert_eq!(txn.open_table(CHANGES).unwrap().len().unwrap(), 2);
}

#[test]
fn a_blocked_authors_entries_are_refused_and_change_nothing() {
    let (_dir, store, alice, bob) = two_authors();
    let entry = store.publish(&bob, post("hi"), 1).unwrap();
    let other = Store::open_in_memory().unwrap();
    other
        .change_signer(alice.author(), SignerChange::Begin)
        .unwrap();
    assert!(
        other
            .change_block(bob.author(), blocks::BlockChange::Block)
            .unwrap()
    );
    let counter = other.change_counter().unwrap();
    let report = other
        .append(vec![
            crate::log::verify::verify_one(entry, Some(post("hi"))).unwrap(),
        ])
        .unwrap();
    assert_eq!((report.accepted, report.refused_blocked), (0, 1));
    assert_eq!(other.head(&bob.author()).unwrap(), None);
    assert_eq!(other.change_counter().unwrap(), counter);
    assert!(other.wanted().unwrap().is_empty());
    // A mute hides nothing from the store.
    other
        .change_block(bob.author(), blocks::BlockChange::Unblock)
        .unwrap();
    other
        .change_block(bob.author(), blocks::BlockChange::Mute)
        .unwrap();
    let report = other
        .append(vec![
            crate::log::verify::verify_one(entry, Some(post("hi"))).unwrap(),
        ])
        .unwrap();
    assert_eq!(report.accepted, 1);
}

#[test]
fn a_deletion_keeps_another_authors_identical_payload() {
    let (_dir, store, alice, bob) = two_authors();
    let a = store.publish(&alice, post("hello"), 1).unwrap();
    let b = store.publish(&bob, post("hello"), 1).unwrap();
    assert_eq!(a.payload_hash(), b.payload_hash());
    let delete = crate::log::record::Record::Delete { seq: 1 }
        .encode()
        .unwrap();
    store.publish(&alice, delete.clone(), 2).unwrap();
    assert_eq!(store.deleted_by(&alice.author(), 1).unwrap(), Some(2));
    assert_eq!(
        store.payload(&b.payload_hash()).unwrap(),
        Some(post("hello"))
    );
    store.publish(&bob, delete, 2).unwrap();
    assert_eq!(store.payload(&b.payload_hash()).unwrap(), None);
}

#[test]
fn concurrent_posts_share_commits_and_never_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let identity = Arc::new(Identity::from_seed([4; 32]));
    store
        .change_signer(identity.author(), SignerChange::Begin)
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (store, identity) = (&store, &identity);
            scope.spawn(move || {
                for i in 0..25 {
                    store
                        .publish(identity, format!("{t}-{i}").into_bytes(), 1)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.head(&identity.author()).unwrap().unwrap().seq, 200);
    assert!(store.forks().unwrap().is_empty());
    let summary = crate::archive::audit::verify_store(&store).unwrap();
    assert_eq!(summary.entries, 200);
}

fn with_picture(store: &Store, who: &Arc<Identity>, bytes: &[u8]) -> (Entry, BlobId) {
    use crate::picture::{Encoded, Prepared};
    let attachment = compose::Attachment {
        prepared: Prepared {
            full: Encoded {
                bytes: bytes.to_vec(),
                media_type: "image/png",
                width: 1,
                height: 1,
            },
            thumbnail: None,
        },
        alt: "a dot".into(),
    };
    let entry = compose::post(store, who, "look".into(), None, vec![attachment], None).unwrap();
    (entry, BlobId::of(bytes))
}

use blobs::BlobId;

#[test]
fn a_blob_goes_with_the_last_post_that_names_it() {
    let (_dir, store, alice, bob) = two_authors();
    let (first, id) = with_picture(&store, &alice, b"picture bytes");
    assert!(store.blobs().has(&id), "kept before the entry was signed");
    let (_, same) = with_picture(&store, &bob, b"picture bytes");
    assert_eq!(same, id);
    compose::delete(&store, &alice, first.seq()).unwrap();
    assert!(store.blobs().has(&id), "bob's post still names it");
    let (second, _) = with_picture(&store, &alice, b"picture bytes");
    compose::delete(&store, &bob, 1).unwrap();
    assert!(store.blobs().has(&id), "alice's second post names it");
    compose::delete(&store, &alice, second.seq()).unwrap();
    assert!(!store.blobs().has(&id), "removed with its last reference");
    // The owner's blobs are never evicted.
    let (_, own) = with_picture(&store, &alice, b"mine");
    assert_eq!(store.evict(vec![own.0]).unwrap(), 0);
    assert!(store.blobs().has(&own));
}

#[test]
fn an_unreferenced_blob_is_swept_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let alice = Arc::new(Identity::from_seed([1; 32]));
    store
        .change_signer(alice.author(), SignerChange::Begin)
        .unwrap();
    let (_, kept) = with_picture(&store, &alice, b"posted");
    // A blob put by `capsule post` whose post never came (the command was
    // killed between the two).
    let stray = store.blobs().put(b"never posted").unwrap();
    let young = store.blobs().put(b"being posted").unwrap();
    let long_ago = std::time::SystemTime::now() - SWEEP_AFTER * 2;
    std::fs::File::options()
        .write(true)
        .open(store.blobs().path(&stray))
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert!(store.blobs().has(&kept));
    assert!(!store.blobs().has(&stray));
    assert!(
        store.blobs().has(&young),
        "a post on its way keeps its pictures"
    );
}

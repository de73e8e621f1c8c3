//! What checked activities do to a store, activity by activity.

use super::*;
use crate::store::fediverse::Reader;
use std::sync::Arc;

/// A federation on an in-memory store whose owner has one post.
pub(crate) fn federation() -> (Federation, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::store::Store::open_in_memory().unwrap());
    let identity = Arc::new(crate::identity::Identity::generate());
    store
        .change_signer(identity.author(), crate::store::signer::SignerChange::Begin)
        .unwrap();
    crate::store::compose::post(&store, &identity, "hello".into(), None, Vec::new(), None).unwrap();
    let fed = Federation::new(
        store,
        dir.path(),
        "http://127.0.0.1:8080".into(),
        "alice".into(),
        identity.author(),
        true,
    )
    .unwrap();
    (fed, dir)
}

fn fred() -> RemoteActor {
    RemoteActor {
        key_id: "http://127.0.0.1:9/users/fred#main-key".into(),
        public_pem: String::new(),
        inbox: "http://127.0.0.1:9/users/fred/inbox".into(),
        shared_inbox: None,
        username: "fred".into(),
        name: "Fred".into(),
        url: "http://127.0.0.1:9/users/fred".into(),
        fetched_us: 0,
    }
}

#[test]
fn a_reply_is_kept_once_sanitized_and_deleted_by_its_author_only() {
    let (fed, _dir) = federation();
    let fred_id = "http://127.0.0.1:9/users/fred";
    let create = json!({
        "id": "http://127.0.0.1:9/users/fred/notes/5#create",
        "type": "Create",
        "actor": fred_id,
        "object": {
            "id": "http://127.0.0.1:9/users/fred/notes/5",
            "type": "Note",
            "attributedTo": fred_id,
            "content": "<p>nice <script>alert(1)</script></p>",
            "inReplyTo": fed.note_id(1),
        },
    });
    apply(&fed, &create, fred_id, &fred(), 1).unwrap();
    apply(&fed, &create, fred_id, &fred(), 2).unwrap();
    let replies = fed.tables.reader().replies(1).unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].1.content, "<p>nice </p>");
    let delete = |actor: &str, id: &str| {
        json!({"id": id, "type": "Delete", "actor": actor,
               "object": {"id": "http://127.0.0.1:9/users/fred/notes/5", "type": "Tombstone"}})
    };
    let mallory = "http://127.0.0.1:9/users/mallory";
    apply(&fed, &delete(mallory, "d1"), mallory, &fred(), 3).unwrap();
    assert_eq!(Reader::new(fed.tables.store()).replies(1).unwrap().len(), 1);
    apply(&fed, &delete(fred_id, "d2"), fred_id, &fred(), 4).unwrap();
    assert!(fed.tables.reader().replies(1).unwrap().is_empty());
}

#[test]
fn reactions_count_once_and_undo_only_by_their_actor() {
    let (fed, _dir) = federation();
    let fred_id = "http://127.0.0.1:9/users/fred";
    let like = json!({"id": "l1", "type": "Like", "actor": fred_id, "object": fed.note_id(1)});
    apply(&fed, &like, fred_id, &fred(), 1).unwrap();
    let again = json!({"id": "l1", "type": "Like", "actor": fred_id, "object": fed.note_id(1)});
    apply(&fed, &again, fred_id, &fred(), 2).unwrap();
    assert_eq!(fed.tables.reader().counts(1).unwrap(), (1, 0));
    let undo =
        |actor: &str, id: &str| json!({"id": id, "type": "Undo", "actor": actor, "object": "l1"});
    let mallory = "http://127.0.0.1:9/users/mallory";
    apply(&fed, &undo(mallory, "u1"), mallory, &fred(), 3).unwrap();
    assert_eq!(fed.tables.reader().counts(1).unwrap(), (1, 0));
    apply(&fed, &undo(fred_id, "u2"), fred_id, &fred(), 4).unwrap();
    assert_eq!(fed.tables.reader().counts(1).unwrap(), (0, 0));
}

#[test]
fn a_follow_is_kept_accepted_and_undone() {
    let (fed, _dir) = federation();
    let fred_id = "http://127.0.0.1:9/users/fred";
    let follow = json!({"id": "f1", "type": "Follow", "actor": fred_id, "object": fed.actor_id()});
    apply(&fed, &follow, fred_id, &fred(), 1).unwrap();
    assert_eq!(fed.tables.reader().follower_count().unwrap(), 1);
    assert_eq!(
        fed.tables.reader().queued().unwrap(),
        1,
        "the Accept is queued"
    );
    // A Follow of someone else is not a follow of the owner.
    let elsewhere =
        json!({"id": "f2", "type": "Follow", "actor": fred_id, "object": "http://x.example/a"});
    apply(&fed, &elsewhere, fred_id, &fred(), 2).unwrap();
    assert_eq!(fed.tables.reader().queued().unwrap(), 1);
    let undo = json!({"id": "u1", "type": "Undo", "actor": fred_id, "object": follow});
    apply(&fed, &undo, fred_id, &fred(), 3).unwrap();
    assert_eq!(fed.tables.reader().follower_count().unwrap(), 0);
}

#[test]
fn notes_of_strangers_and_forged_authors_are_not_kept() {
    let (fed, _dir) = federation();
    let fred_id = "http://127.0.0.1:9/users/fred";
    let note = |id: &str, by: &str, reply: bool| {
        json!({"id": format!("{id}#c"), "type": "Create", "actor": fred_id, "object": {
            "id": id, "type": "Note", "attributedTo": by, "content": "x",
            "inReplyTo": if reply { Value::String(fed.note_id(1)) } else { Value::Null },
        }})
    };
    // Not a reply, no mention, not followed: dropped.
    apply(
        &fed,
        &note("http://127.0.0.1:9/n/1", fred_id, false),
        fred_id,
        &fred(),
        1,
    )
    .unwrap();
    // Attributed to someone else, or on another host: dropped.
    apply(
        &fed,
        &note(
            "http://127.0.0.1:9/n/2",
            "http://127.0.0.1:9/users/bob",
            true,
        ),
        fred_id,
        &fred(),
        2,
    )
    .unwrap();
    apply(
        &fed,
        &note("http://elsewhere.example/n/3", fred_id, true),
        fred_id,
        &fred(),
        3,
    )
    .unwrap();
    assert!(fed.tables.reader().replies(1).unwrap().is_empty());
    assert!(
        fed.tables
            .reader()
            .home(0, u64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    // A mention is kept for the home.
    let mention = json!({"id": "m#c", "type": "Create", "actor": fred_id, "object": {
        "id": "http://127.0.0.1:9/n/4", "type": "Note", "attributedTo": fred_id, "content": "hi",
        "tag": [{"type": "Mention", "href": fed.actor_id()}],
    }});
    apply(&fed, &mention, fred_id, &fred(), 4).unwrap();
    assert_eq!(fed.tables.reader().home(0, u64::MAX, 10).unwrap().len(), 1);
}

#[test]
fn updates_change_only_the_senders_own_notes() {
    let (fed, _dir) = federation();
    let fred_id = "http://127.0.0.1:9/users/fred";
    let object = |content: &str| {
        json!({"id": "http://127.0.0.1:9/n/1", "type": "Note",
        "attributedTo": fred_id, "content": content, "inReplyTo": fed.note_id(1)})
    };
    let create = json!({"id": "c", "type": "Create", "actor": fred_id, "object": object("first")});
    apply(&fed, &create, fred_id, &fred(), 1).unwrap();
    let mallory = "http://127.0.0.1:9/users/mallory";
    let forged =
        json!({"id": "u1", "type": "Update", "actor": mallory, "object": object("forged")});
    apply(&fed, &forged, mallory, &fred(), 2).unwrap();
    let update =
        json!({"id": "u2", "type": "Update", "actor": fred_id, "object": object("<b>second</b>")});
    apply(&fed, &update, fred_id, &fred(), 3).unwrap();
    let replies = fed.tables.reader().replies(1).unwrap();
    assert_eq!(replies[0].1.content, "<b>second</b>");
}

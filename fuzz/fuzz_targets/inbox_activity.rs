//! Activities as another server could send them, taken in by a node's
//! store: never a panic, and nothing kept ever carries script, an event
//! handler or a javascript: link to a page.
#![no_main]

use std::sync::{Arc, OnceLock};

use capsule::fediverse::{Federation, actors, effects};
use libfuzzer_sys::fuzz_target;

fn federation() -> &'static Federation {
    static FED: OnceLock<(Federation, tempfile::TempDir)> = OnceLock::new();
    &FED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(capsule::store::Store::open_in_memory().unwrap());
        let owner = capsule::identity::Identity::generate().author();
        let fed = Federation::new(
            store,
            dir.path(),
            "https://alice.example".into(),
            "alice".into(),
            owner,
            false,
        )
        .unwrap();
        // Someone followed, so their notes are kept for the home.
        let followed = capsule::store::fediverse::Following {
            handle: "x@m.example".into(),
            inbox: "https://m.example/users/x/inbox".into(),
            follow_id: "https://alice.example/f".into(),
            accepted: true,
            since_us: 0,
        };
        fed.tables
            .write(|txn| {
                txn.open_table(capsule::store::fediverse::FOLLOWING)?
                    .insert(
                        "https://m.example/users/x",
                        capsule::store::fediverse::encode(&followed).as_slice(),
                    )?;
                Ok(())
            })
            .unwrap();
        (fed, dir)
    })
    .0
}

fuzz_target!(|data: &[u8]| {
    let Ok(activity) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let fed = federation();
    let actor_id = activity
        .get("actor")
        .and_then(actors::id_of)
        .unwrap_or("https://m.example/users/x")
        .to_string();
    let actor =
        actors::parse(&actor_id, &activity, 0).unwrap_or(capsule::store::fediverse::RemoteActor {
            key_id: format!("{actor_id}#main-key"),
            public_pem: String::new(),
            inbox: format!("{actor_id}/inbox"),
            shared_inbox: None,
            username: "x".into(),
            name: "x".into(),
            url: actor_id.clone(),
            fetched_us: 0,
        });
    effects::apply(fed, &activity, &actor_id, &actor, 1).unwrap();
    let reader = fed.tables.reader();
    for (_, note, _) in reader.home(0, u64::MAX, 50).unwrap() {
        let lower = note.content.to_ascii_lowercase();
        for bad in [
            "<script",
            "javascript:",
            " onerror",
            " onclick",
            "<style",
            "<iframe",
        ] {
            assert!(!lower.contains(bad), "{bad} kept: {}", note.content);
        }
    }
});

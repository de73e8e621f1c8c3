//! Hostile input to the inbox: each refused with its status, and nothing
//! of it stored. A second node ("mallory") hosts a real actor and key; the
//! test signs requests with that key, and breaks them one way at a time.

use std::path::Path;
use std::sync::Arc;

use capsule::fediverse::key::ActorKey;
use capsule::fediverse::signature::{self, Signature};
use serde_json::{Value, json};

use crate::common::{Up, init, raw_request};
use crate::fediverse::{alice, author_of};

/// How a request is signed (or not), one fault at a time.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Unsigned,
    BrokenSignature,
    DigestNotSigned,
    DigestMismatch,
    DayOld,
}

/// Mallory: a node whose actor and key are real.
struct Mallory {
    _node: Up,
    key: ActorKey,
    actor: String,
}

fn mallory(dir: &Path) -> Mallory {
    let node = alice(dir);
    let actor = format!("http://{}/@{}", node.web, author_of(dir));
    let key = ActorKey::load_or_create(dir).unwrap();
    Mallory {
        _node: node,
        key,
        actor,
    }
}

/// POSTs `activity` to `web`'s inbox signed by `key` as `key_id`, with
/// `fault`: the status.
fn deliver(web: &str, key: &ActorKey, key_id: &str, activity: &Value, fault: Fault) -> u16 {
    let body = activity.to_string();
    let when = match fault {
        Fault::DayOld => std::time::SystemTime::now() - std::time::Duration::from_secs(86_400),
        _ => std::time::SystemTime::now(),
    };
    let date = httpdate::fmt_http_date(when);
    let digest = match fault {
        Fault::DigestMismatch => signature::digest(b"another body"),
        _ => signature::digest(body.as_bytes()),
    };
    let names: &[&str] = match fault {
        Fault::DigestNotSigned => &["(request-target)", "host", "date"],
        _ => &signature::OUTGOING,
    };
    let message = signature::signing_string(names, "POST", "/inbox", |n| match n {
        "host" => Some(web.to_string()),
        "date" => Some(date.clone()),
        "digest" => Some(digest.clone()),
        _ => None,
    })
    .unwrap();
    let mut signed = key.sign(message.as_bytes());
    if fault == Fault::BrokenSignature {
        signed[10] ^= 1;
    }
    let header = Signature {
        key_id: key_id.to_string(),
        algorithm: Some("rsa-sha256".into()),
        headers: names.iter().map(|n| n.to_string()).collect(),
        signature: signed,
        created: None,
        expires: None,
    }
    .to_header();
    let signature_line = match fault {
        Fault::Unsigned => String::new(),
        _ => format!("Signature: {header}\r\n"),
    };
    let answer = raw_request(
        web,
        &format!(
            "POST /inbox HTTP/1.1\r\nHost: {web}\r\nDate: {date}\r\nDigest: {digest}\r\n\
             {signature_line}Content-Type: application/activity+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn follow(from: &str, to: &str, n: u64) -> Value {
    json!({"id": format!("{from}#follows/{n}"), "type": "Follow", "actor": from, "object": to})
}

fn followers(dir: &Path) -> usize {
    let status: Value =
        serde_json::from_str(&crate::common::capsule_ok(dir, &["status", "--json"])).unwrap();
    status["fediverse"]["followers"].as_array().unwrap().len()
}

#[test]
fn forged_stale_and_flooding_activities_are_refused_and_nothing_is_kept() {
    let (a, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = alice(a.path());
    let target = format!("http://{}/@{}", node.web, author_of(a.path()));
    let mallory = mallory(m.path());
    let key_id = format!("{}#main-key", mallory.actor);
    let mut n = 0;
    let mut send = |fault| {
        n += 1;
        deliver(
            &node.web,
            &mallory.key,
            &key_id,
            &follow(&mallory.actor, &target, n),
            fault,
        )
    };
    for (fault, what) in [
        (Fault::Unsigned, "unsigned"),
        (Fault::BrokenSignature, "a broken signature"),
        (
            Fault::DigestNotSigned,
            "a signature that leaves out the digest",
        ),
        (Fault::DigestMismatch, "a digest of another body"),
        (Fault::DayOld, "a day-old date"),
    ] {
        assert_eq!(send(fault), 401, "{what}");
    }
    // The key is mallory's; the activity claims to be someone else's.
    let someone = format!("http://{}/users/someone", node.web);
    let claimed = follow(&someone, &target, 99);
    assert_eq!(
        deliver(&node.web, &mallory.key, &key_id, &claimed, Fault::None),
        401
    );
    assert_eq!(followers(a.path()), 0, "nothing refused was kept");

    // A body over the limit is refused before it is read whole.
    let huge = json!({"type": "Create", "actor": mallory.actor, "padding": "x".repeat(300 * 1024)});
    assert_eq!(
        deliver(&node.web, &mallory.key, &key_id, &huge, Fault::None),
        413
    );

    // A flood of Follows: the first are taken (one follower, however many),
    // the rest refused as too many.
    let statuses: Vec<u16> = (0..10_000u64)
        .map(|i| {
            deliver(
                &node.web,
                &mallory.key,
                &key_id,
                &follow(&mallory.actor, &target, 1000 + i),
                Fault::None,
            )
        })
        .collect();
    let taken = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(taken + refused, 10_000, "only 202 and 429");
    assert!(taken <= 150, "{taken} of 10,000 taken");
    assert_eq!(followers(a.path()), 1);
    assert!(node.stop().success());
}

/// Without the test flag, a key on a loopback or cloud-metadata address is
/// never fetched: the inbox refuses the activity without a request. (An
/// in-process gateway, so the flag can be off without a real domain.)
#[test]
fn keys_on_private_addresses_are_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(capsule::store::Store::open_in_memory().unwrap());
    let owner = capsule::identity::Identity::generate().author();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let web = listener.local_addr().unwrap().to_string();
    let fed = capsule::fediverse::Federation::new(
        store,
        dir.path(),
        "https://alice.example".into(),
        "alice".into(),
        owner,
        false,
    )
    .unwrap();
    let app = capsule::fediverse::routes::router(Arc::new(fed.clone()));
    runtime.spawn(async move { axum::serve(listener, app).await });
    let key = ActorKey::load_or_create(dir.path()).unwrap();
    for key_id in [
        format!("https://{web}/users/x#main-key"),
        "https://169.254.169.254/latest/meta-data#main-key".to_string(),
        "http://93.184.216.34/users/x#main-key".to_string(),
    ] {
        let actor = key_id.split('#').next().unwrap().to_string();
        let activity = follow(&actor, &fed.actor_id(), 1);
        assert_eq!(
            deliver(&web, &key, &key_id, &activity, Fault::None),
            401,
            "{key_id}"
        );
    }
    assert_eq!(fed.tables.reader().follower_count().unwrap(), 0);
}

/// An actor that replaces its key is believed after one fetch of its
/// actor: a signature under the new key fails against the cached old
/// one, the key is fetched again, once, and the activity is taken.
#[test]
fn a_replaced_key_is_fetched_again_once() {
    let (a, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = alice(a.path());
    let target = format!("http://{}/@{}", node.web, author_of(a.path()));
    init(m.path());
    let port = crate::common::free_port();
    let mut mallory = crate::fediverse::up_at(m.path(), port);
    let actor = format!("http://127.0.0.1:{port}/@{}", author_of(m.path()));
    let key_id = format!("{actor}#main-key");
    let old = ActorKey::load_or_create(m.path()).unwrap();
    assert_eq!(
        deliver(
            &node.web,
            &old,
            &key_id,
            &follow(&actor, &target, 1),
            Fault::None
        ),
        202
    );
    assert_eq!(followers(a.path()), 1);
    // A new key, served at the same actor.
    let _ = mallory.child.kill();
    let _ = mallory.child.wait();
    std::fs::remove_file(m.path().join(capsule::fediverse::key::FILE)).unwrap();
    let _mallory = crate::fediverse::up_at(m.path(), port);
    let new = ActorKey::load_or_create(m.path()).unwrap();
    assert_ne!(old.public_pem(), new.public_pem());
    let undo = json!({"id": format!("{actor}#undo/1"), "type": "Undo", "actor": actor,
                      "object": follow(&actor, &target, 1)});
    assert_eq!(deliver(&node.web, &new, &key_id, &undo, Fault::None), 202);
    assert_eq!(followers(a.path()), 0);
    // The old key no longer speaks for the actor.
    let again = follow(&actor, &target, 2);
    assert_eq!(deliver(&node.web, &old, &key_id, &again, Fault::None), 401);
    assert!(node.stop().success());
}

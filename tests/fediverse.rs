//! The node on the fediverse, against an independent ActivityPub server:
//! the Fedify library (tests/fedify/peer.mjs, run by Node on 127.0.0.1),
//! which checks HTTP signatures for real. It finds the owner by WebFinger,
//! follows, receives the Accept, a post with its picture and the post's
//! deletion, and answers; the owner follows its actor back and reads its
//! note at home.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Proc, Up, capsule_ok, init, login, raw_request, write_png};

/// The Fedify peer, running.
pub struct Peer {
    _proc: Proc,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Peer {
    /// Starts it, or None (SKIPPED) outside CI when Node or its packages
    /// are not installed.
    pub fn start() -> Option<Peer> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fedify");
        let installed = root.join("node_modules/@fedify/fedify").exists();
        if !crate::common::tools_present(&["node"], "Node.js") {
            return None;
        }
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "tests/fedify has no node_modules; .ci/install runs npm ci there"
            );
            eprintln!("SKIPPED: npm ci --prefix tests/fedify has not been run");
            return None;
        }
        let mut proc = Proc::spawn(Command::new("node").arg(root.join("peer.mjs")));
        let line = proc.wait_line(30, |l| l.starts_with("ready "));
        let host = line.trim_start_matches("ready http://").trim().to_string();
        Some(Peer { _proc: proc, host })
    }

    /// POSTs `input` to `/control/NAME`: the JSON answer.
    pub fn control(&self, name: &str, input: &Value) -> Value {
        let body = input.to_string();
        let answer = raw_request(
            &self.host,
            &format!(
                "POST /control/{name} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.host,
                body.len()
            ),
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{name}: {answer}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"))
    }

    /// Waits up to `secs` for an activity its inbox accepted that
    /// satisfies `f`.
    pub fn wait_event(&self, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.control("events", &json!({}));
            if let Some(e) = events.as_array().unwrap().iter().find(|e| f(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such activity within {secs} s: {events:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fred's actor id.
    pub fn fred(&self) -> String {
        format!("http://{}/users/fred", self.host)
    }
}

/// Waits up to `secs` for `check` to hold.
pub fn eventually(secs: u64, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The owner's author key as `capsule status` prints it.
pub fn author_of(dir: &Path) -> String {
    let status: Value = serde_json::from_str(&capsule_ok(dir, &["status", "--json"])).unwrap();
    status["author"].as_str().unwrap().to_string()
}

/// A node federating on loopback, as `alice`.
pub fn alice(dir: &Path) -> Up {
    init(dir);
    Up::start_with(dir, &["--insecure-federation", "--handle", "alice"])
}

#[test]
fn a_fedify_server_finds_follows_reads_answers_and_sees_a_deletion() {
    let Some(peer) = Peer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = alice(dir.path());
    let author = author_of(dir.path());
    let actor = format!("http://{}/@{author}", node.web);

    // Found by WebFinger; the actor names its key, owned by itself.
    let found = peer.control(
        "webfinger",
        &json!({"resource": format!("acct:alice@{}", node.web), "host": node.web}),
    );
    assert_eq!(found["status"], 200);
    assert_eq!(found["subject"], format!("acct:alice@{}", node.web));
    assert_eq!(found["type"], "application/activity+json");
    assert_eq!(found["actor"]["id"], actor);
    assert_eq!(found["actor"]["type"], "Person");
    assert_eq!(found["actor"]["preferredUsername"], "alice");
    assert_eq!(found["actor"]["keyOwner"], actor);
    assert_eq!(
        found["actor"]["inbox"],
        format!("http://{}/inbox", node.web)
    );
    // Another account is not here.
    let (status, _) = node.text("/.well-known/webfinger?resource=acct:bob@127.0.0.1");
    assert_eq!(status, 404);

    // Followed: the signed Accept verifies at Fedify, and the follower shows.
    peer.control("follow", &json!({"actor": actor}));
    peer.wait_event(20, |e| {
        e["type"] == "Accept" && e["actor"] == actor.as_str()
    });
    let status = capsule_ok(dir.path(), &["status"]);
    assert!(
        status.contains(&format!("follower {}", peer.fred())),
        "{status}"
    );

    // A post with a picture arrives as Create{Note} with an Image.
    let picture = dir.path().join("square.png");
    write_png(&picture, 64, 48);
    let posted = capsule_ok(
        dir.path(),
        &[
            "post",
            "hello fediverse",
            "--attach",
            picture.to_str().unwrap(),
            "--alt",
            "a square",
        ],
    );
    let seq: u64 = posted.split_whitespace().nth(2).unwrap().parse().unwrap();
    let note_id = format!("{actor}/{seq}");
    let (_, page) = node.text(&format!("/@{author}"));
    assert!(
        page.contains("@alice@") && page.contains("1 follower"),
        "{page}"
    );
    let create = peer.wait_event(20, |e| {
        e["type"] == "Create" && e["object"]["id"] == note_id.as_str()
    });
    let note = &create["object"];
    assert!(
        note["content"]
            .as_str()
            .unwrap()
            .contains("hello fediverse"),
        "{note}"
    );
    assert_eq!(note["attributedTo"], actor);
    let image = &note["attachment"];
    assert_eq!(image["type"], "Image");
    assert_eq!(image["mediaType"], "image/png");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(image["name"], "a square");
    // Fedify reads the same note back from its URL, and the collections.
    let fetched = peer.control("fetch", &json!({"url": note_id}));
    assert_eq!(fetched["id"], note_id);
    let outbox = peer.control(
        "fetch",
        &json!({"url": format!("http://{}/outbox", node.web)}),
    );
    assert_eq!(
        (outbox["type"].as_str(), outbox["totalItems"].as_u64()),
        (Some("OrderedCollection"), Some(1)),
        "{outbox}"
    );
    let followers = peer.control(
        "fetch",
        &json!({"url": format!("http://{}/followers", node.web)}),
    );
    assert_eq!(followers["totalItems"], 1, "{followers}");
    let (status, nodeinfo) = node.text("/nodeinfo/2.0");
    assert_eq!(status, 200);
    let nodeinfo: Value = serde_json::from_str(&nodeinfo).unwrap();
    assert_eq!(nodeinfo["protocols"], json!(["activitypub"]));
    assert_eq!(nodeinfo["usage"]["localPosts"], 1);

    // A like and a boost are counted on the post's page.
    peer.control(
        "react",
        &json!({"to": actor, "object": note_id, "kind": "like"}),
    );
    peer.control(
        "react",
        &json!({"to": actor, "object": note_id, "kind": "announce"}),
    );
    eventually(20, "the reactions are counted", || {
        node.text(&format!("/@{author}/{seq}"))
            .1
            .contains("1 like · 1 boost")
    });

    // A new profile reaches the follower as Update{Person}.
    capsule_ok(
        dir.path(),
        &[
            "profile",
            "--name",
            "Alice Capsule",
            "--bio",
            "on my own site",
            "--avatar",
            picture.to_str().unwrap(),
        ],
    );
    let update = peer.wait_event(20, |e| e["type"] == "Update");
    assert_eq!(update["object"]["name"], "Alice Capsule", "{update}");
    let icon = update["object"]["icon"]["url"].as_str().unwrap_or_default();
    assert!(
        icon.starts_with(&format!("http://{}/api/v1/blobs/", node.web)),
        "{update}"
    );
    let path = icon.splitn(4, '/').nth(3).unwrap();
    assert_eq!(node.get(&format!("/{path}")).0, 200, "the icon is served");

    // Its answer, with a script, an event handler and a javascript: link,
    // shows on the post's page with none of them.
    peer.control(
        "note",
        &json!({
            "to": actor,
            "inReplyTo": note_id,
            "content": "<p>lovely square <script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">click</a></p>",
        }),
    );
    eventually(20, "the reply shows", || {
        node.text(&format!("/@{author}/{seq}"))
            .1
            .contains("lovely square")
    });
    let (_, page) = node.text(&format!("/@{author}/{seq}"));
    assert!(page.contains("Fred Fedify"), "{page}");
    for bad in ["<script", "alert(", "onerror", "javascript:"] {
        assert!(!page.contains(bad), "{bad} reached the page: {page}");
    }

    // Deleted: Fedify receives the Delete, and the note answers 410.
    capsule_ok(dir.path(), &["delete", &seq.to_string()]);
    peer.wait_event(20, |e| {
        e["type"] == "Delete" && e["object"]["id"] == note_id.as_str()
    });
    let (status, _, _) = crate::common::get_with(
        &node.web,
        &format!("/@{author}/{seq}"),
        "Accept: application/activity+json\r\n",
    );
    assert_eq!(status, 410);
    assert!(node.stop().success());
}

#[test]
fn the_owner_follows_a_fedify_actor_and_reads_its_notes_at_home() {
    let Some(peer) = Peer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    crate::common::set_passphrase(dir.path(), "a passphrase for home");
    let node = Up::start_with(dir.path(), &["--insecure-federation", "--handle", "alice"]);
    let author = author_of(dir.path());
    let actor = format!("http://{}/@{author}", node.web);
    let handle = format!("@fred@{}", peer.host);

    let said = capsule_ok(dir.path(), &["follow", &handle]);
    assert!(said.contains(&peer.fred()), "{said}");
    peer.wait_event(20, |e| {
        e["type"] == "Follow" && e["actor"] == actor.as_str()
    });
    eventually(20, "Fred accepts", || {
        capsule_ok(dir.path(), &["status"]).contains("(accepted)")
    });

    peer.control(
        "note",
        &json!({"to": actor, "content": "<p>a note from fred</p>"}),
    );
    let session = login(&node.web, "a passphrase for home");
    let home = || {
        raw_request(
            &node.web,
            &format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nCookie: capsule_session={session}\r\nConnection: close\r\n\r\n",
                node.web
            ),
        )
    };
    eventually(20, "Fred's note shows at home", || {
        home().contains("a note from fred")
    });
    let page = home();
    assert!(
        page.contains("Fred Fedify") && page.contains("fediverse"),
        "{page}"
    );
    // Nobody but the owner sees the home.
    let (_, public) = node.text("/");
    assert!(!public.contains("a note from fred"));

    let said = capsule_ok(dir.path(), &["unfollow", &handle]);
    assert!(said.contains("no longer following"), "{said}");
    peer.wait_event(20, |e| {
        e["type"] == "Undo" && e["object"]["type"] == "Follow"
    });
    assert!(node.stop().success());
}

/// `capsule up` for `dir` on a fixed web port (the fediverse ids name
/// it, so a restart must keep it), federating on loopback.
pub fn up_at(dir: &Path, port: u16) -> Proc {
    let mut proc = Proc::spawn(
        Command::new(crate::common::capsule_bin())
            .arg("--data-dir")
            .arg(dir)
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--sync-listen",
                "127.0.0.1:0",
                "--insecure-federation",
                "--handle",
                "alice",
            ])
            .stderr(std::process::Stdio::null()),
    );
    proc.wait_line(30, |l| l.starts_with("Capsule is up"));
    proc
}

/// A post acknowledged just before the node is killed (-9) reaches the
/// follower after the restart, and once: the queue is the log's cursor.
#[test]
fn a_post_reaches_the_follower_once_across_a_kill() {
    let Some(peer) = Peer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let port = crate::common::free_port();
    let web = format!("127.0.0.1:{port}");
    let mut node = up_at(dir.path(), port);
    let actor = format!("http://{web}/@{}", author_of(dir.path()));
    peer.control("follow", &json!({"actor": actor}));
    peer.wait_event(20, |e| e["type"] == "Accept");
    let creates = |text: &str| {
        let events = peer.control("events", &json!({}));
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "Create"
                    && e["object"]["content"].as_str().unwrap_or("").contains(text)
            })
            .count()
    };
    let mut before_delivery = 0;
    for round in 0..5 {
        let text = format!("round {round} before the kill");
        capsule_ok(dir.path(), &["post", &text]);
        let _ = node.child.kill();
        let _ = node.child.wait();
        if creates(&text) == 0 {
            before_delivery += 1;
        }
        node = up_at(dir.path(), port);
        eventually(30, "the post is delivered after the restart", || {
            creates(&text) >= 1
        });
    }
    // Every post once, and no more after everything has settled.
    std::thread::sleep(Duration::from_secs(2));
    for round in 0..5 {
        assert_eq!(
            creates(&format!("round {round} before the kill")),
            1,
            "round {round}"
        );
    }
    eprintln!("{before_delivery} of 5 kills landed before the delivery");
    assert!(
        before_delivery >= 1,
        "no kill landed between the post and its delivery"
    );
    let _ = node.terminate();
}

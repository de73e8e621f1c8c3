//! One identity, one log that never forks: a lost data directory comes back
//! with `capsule restore`, a key without its log refuses to sign, a copy
//! running elsewhere is noticed, and blocked authors stay out.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{capsule, capsule_ok, free_port, init, make_log, test_identity};
use crate::mesh::Node;

/// Runs `args` and expects a refusal whose words contain `says`.
fn refused(dir: &Path, args: &[&str], says: &str) -> String {
    let out = capsule(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} was not refused");
    assert!(err.contains(says), "{args:?}: {err}");
    err
}

fn forks_seen(dir: &Path) -> u64 {
    let out = capsule_ok(dir, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["forks"].as_u64().unwrap()
}

fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&capsule_ok(dir, &["status", "--json"])).unwrap()
}

/// A posts, B follows; A's data directory is lost. A key copied in by hand,
/// an emptied store and a store without its key all refuse to sign, naming
/// `capsule restore`; `capsule up` on the hand-copied key asks its peers
/// first, and `capsule restore` from B brings the log back: the next post
/// is head + 1, it reaches B, and B holds no fork proof.
#[test]
fn a_lost_data_directory_comes_back_without_forking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let a_key = init(&dir("a"));
    for text in ["one", "two", "three"] {
        capsule_ok(&dir("a"), &["post", text]);
    }
    let backup = dir("backup.key");
    capsule_ok(
        &dir("a"),
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    init(&dir("b"));
    let mut a = Node::start(&dir("a"), free_port(), &[]);
    let b = Node::start(&dir("b"), free_port(), &[]);
    capsule_ok(&dir("b"), &["follow", &a.sync]);
    b.wait_for(&a_key, 3, "B mirrors A");
    // A knows its log is safe with B.
    let started = Instant::now();
    while status(&dir("a"))["held_by"]["up_to_date"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A never learnt that B holds its log: {}",
            status(&dir("a"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = capsule_ok(&dir("a"), &["status"]);
    assert!(
        text.contains("your log is held by 1 peer, 1 of them up to date"),
        "{text}"
    );
    assert!(a.proc.terminate().success());

    // The store without its key: nothing starts, nothing is made anew.
    let keyless = dir("keyless");
    copy_dir(&dir("a"), &keyless);
    std::fs::remove_file(keyless.join("identity.key")).unwrap();
    for args in [&["init"][..], &["post", "x"], &["up"]] {
        refused(&keyless, args, "holds a store but no identity.key");
    }
    assert!(
        !keyless.join("identity.key").exists(),
        "no new identity was made"
    );

    // The store emptied (lost, replaced): init makes a store, which does
    // not hold the log, so the key does not sign.
    let emptied = dir("emptied");
    copy_dir(&dir("a"), &emptied);
    std::fs::remove_file(emptied.join("capsule.redb")).unwrap();
    let said = capsule_ok(&emptied, &["init"]);
    assert!(said.contains("will not post yet"), "{said}");
    refused(&emptied, &["post", "x"], "capsule restore");
    assert_eq!(status(&emptied)["signing"], "restoring");

    // The key copied by hand into a fresh directory: the same refusal; then
    // `capsule up` with B as a peer asks B for the log before anything else.
    let hand = dir("hand");
    std::fs::create_dir_all(&hand).unwrap();
    std::fs::copy(&backup, hand.join("identity.key")).unwrap();
    refused(&hand, &["post", "x"], "run `capsule init` first");
    capsule_ok(&hand, &["init"]);
    refused(&hand, &["post", "x"], "capsule restore");
    let mut h = Node::start(&dir("hand"), free_port(), &[&b.sync]);
    let posted = capsule_ok(&hand, &["post", "back through up"]);
    assert!(posted.contains("published entry 4 "), "{posted}");
    b.wait_for(&a_key, 4, "B gets the post made after up restored the log");
    assert!(h.proc.terminate().success());

    // `capsule restore` into an empty directory from the follower.
    let restored = dir("restored");
    let said = capsule_ok(
        &restored,
        &["restore", backup.to_str().unwrap(), "--from", &b.sync],
    );
    assert!(said.contains("your log is back: 4 entries"), "{said}");
    assert!(said.contains("your next post is seq 5"), "{said}");
    let posted = capsule_ok(&restored, &["post", "after the restore"]);
    assert!(posted.contains("published entry 5 "), "{posted}");
    let r = Node::start(&restored, free_port(), &[&b.sync]);
    b.wait_for(&a_key, 5, "B gets the restored node's post");
    assert_eq!(forks_seen(&dir("b")), 0, "B holds no fork proof");
    assert_eq!(r.head_of(&a_key), 5);
    drop((b, r));
    let verify = capsule_ok(&dir("b"), &["verify", "--store"]);
    assert!(!verify.contains("forked"), "{verify}");
}

/// Two copies of one data directory running at once: the copy stops
/// signing as soon as it meets the other's newer head through a peer, says
/// so in `capsule status` and on its home page, and refuses to post.
#[test]
fn a_copy_running_elsewhere_stops_signing_when_it_meets_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let a_key = init(&dir("a"));
    capsule_ok(&dir("a"), &["post", "before the copy"]);
    copy_dir(&dir("a"), &dir("copy"));
    init(&dir("b"));
    let a = Node::start(&dir("a"), free_port(), &[]);
    let b = Node::start(&dir("b"), free_port(), &[&a.sync]);
    capsule_ok(&dir("b"), &["follow", &a.sync]);
    b.wait_for(&a_key, 1, "B mirrors A");
    let copy = Node::start(&dir("copy"), free_port(), &[&b.sync]);
    capsule_ok(&dir("a"), &["post", "made on the first machine"]);
    b.wait_for(&a_key, 2, "B gets A's new post");
    let started = Instant::now();
    while status(&dir("copy"))["signing"] != "signed-elsewhere" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the copy never noticed: {}",
            status(&dir("copy"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = capsule_ok(&dir("copy"), &["status"]);
    assert!(text.contains("signing: STOPPED"), "{text}");
    assert!(text.contains("signed entry 2 somewhere else"), "{text}");
    refused(&dir("copy"), &["post", "from the copy"], "somewhere else");
    let page = copy.get("/");
    assert!(page.contains("This node has stopped signing"), "{page}");
    assert_eq!(
        copy.head_of(&a_key),
        2,
        "the copy took the entry, and signed nothing"
    );
    assert_eq!(forks_seen(&dir("b")), 0);
    drop((a, b, copy));
}

/// A blocked author's entries are neither served (API, pages, sync) nor
/// taken from peers: a peer pushing them in a session, and an archive
/// holding them, leave the store unchanged.
#[test]
fn a_blocked_author_is_neither_served_nor_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let x = test_identity(7);
    let x_key = x.author().to_string();
    let log = make_log(&x, 6);
    let archive = |n: usize, name: &str| {
        let mut w = capsule::archive::ArchiveWriter::new(Vec::new()).unwrap();
        for (e, p) in &log[..n] {
            w.write_entry(e, p.as_deref()).unwrap();
        }
        let path = dir(name);
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        path
    };
    let (first, all) = (archive(3, "first.capsule"), archive(6, "all.capsule"));
    init(&dir("n"));
    let said = capsule_ok(&dir("n"), &["import", first.to_str().unwrap()]);
    assert!(said.contains("now mirroring 1 imported authors"), "{said}");
    // A peer that holds all of X's log and serves it.
    init(&dir("p"));
    capsule_ok(&dir("p"), &["import", all.to_str().unwrap()]);
    let mut peer = crate::common::Proc::spawn(
        std::process::Command::new(crate::common::capsule_bin())
            .arg("--data-dir")
            .arg(dir("p"))
            .args(["serve-sync", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::null()),
    );
    let line = peer.wait_line(20, |l| l.contains(" as "));
    let (addr, node) = line.trim().rsplit_once(" as ").unwrap();
    let peer_addr = format!("{node}@{}", addr.rsplit(' ').next().unwrap());

    let said = capsule_ok(&dir("n"), &["block", &x_key]);
    assert!(said.contains("blocked"), "{said}");
    let text = capsule_ok(&dir("n"), &["status"]);
    assert!(text.contains("blocked 1:"), "{text}");
    let held = |d: &Path| {
        let s = status(d);
        s["entries_held"].as_u64().unwrap()
    };
    // Sync: the session leaves X out; nothing of X is stored.
    let said = capsule_ok(&dir("n"), &["sync", &peer_addr, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["entries_stored"], 0, "{said}");
    assert_eq!(held(&dir("n")), 3);
    // Import: X's entries are left out.
    let said = capsule_ok(&dir("n"), &["import", all.to_str().unwrap()]);
    assert!(
        said.contains("entries of authors you block were left out"),
        "{said}"
    );
    assert_eq!(held(&dir("n")), 3);

    // Served nowhere: API, pages.
    let n = Node::start(&dir("n"), free_port(), &[]);
    for path in [
        format!("/api/v1/authors/{x_key}/entries"),
        format!("/api/v1/authors/{x_key}/entries.bin"),
        format!("/api/v1/entries/{}", log[0].0.id()),
        format!("/@{x_key}"),
        format!("/@{x_key}/1"),
    ] {
        let answer = n.get(&path);
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    assert_eq!(n.head_of(&x_key), 0, "/api/v1/authors leaves X out");
    drop(n);

    // Unblocked, the same peer's entries come in.
    capsule_ok(&dir("n"), &["unblock", &x_key]);
    capsule_ok(&dir("n"), &["sync", &peer_addr]);
    assert_eq!(held(&dir("n")), 6);
    assert!(peer.terminate().success());
}

/// Copies the files of a data directory (a copy made by hand).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

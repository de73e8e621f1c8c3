//! Sync as a person runs it: `capsule serve-sync` on one node, `capsule
//! mirror` and `capsule sync` on another, each a real process.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::common::{capsule, capsule_bin, capsule_ok, init};

#[test]
fn a_node_mirrors_another_over_the_command_line() {
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let alice = init(alice_dir.path());
    init(bob_dir.path());
    capsule_ok(alice_dir.path(), &["post", "hello from alice"]);
    capsule_ok(alice_dir.path(), &["post", "second post"]);

    let mut server = Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(alice_dir.path())
        .args(["serve-sync", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit_once(" as ")
        .unwrap()
        .0
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let peer = format!("{alice}@127.0.0.1:{port}");

    // Without mirroring alice, bob's node asks for nothing.
    let nothing = capsule_ok(bob_dir.path(), &["sync", &peer]);
    assert!(nothing.contains("received 0 entries"), "{nothing}");

    let mirrored = capsule_ok(bob_dir.path(), &["mirror", &alice]);
    assert!(mirrored.contains("now mirroring"), "{mirrored}");
    let report = capsule_ok(bob_dir.path(), &["sync", &peer]);
    assert!(
        report.contains("received 2 entries (2 new) for 1 authors"),
        "{report}"
    );
    let log = capsule_ok(bob_dir.path(), &["log", &alice]);
    assert!(
        log.contains("hello from alice") && log.contains("second post"),
        "{log}"
    );

    // A wrong key is refused with a clear message, and a bad address too.
    let other = init(tempfile::tempdir().unwrap().path());
    let refused = capsule(
        bob_dir.path(),
        &["sync", &format!("{other}@127.0.0.1:{port}")],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not the expected"), "{err}");
    let bad = capsule(bob_dir.path(), &["sync", "nokey@127.0.0.1:1"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a malformed peer is a usage error"
    );

    // While it holds the store, the owner's commands go through it.
    let posted = capsule_ok(alice_dir.path(), &["post", "posted while serving"]);
    assert!(posted.contains("published entry 3"), "{posted}");
    let report = capsule_ok(bob_dir.path(), &["sync", &peer]);
    assert!(report.contains("received 1 entries (1 new)"), "{report}");

    // SIGTERM stops the listener cleanly.
    Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}");
    capsule_ok(alice_dir.path(), &["verify", "--store"]);
    capsule_ok(bob_dir.path(), &["verify", "--store"]);
}

//! The command line as a person uses it: clear errors that change nothing.

use std::os::unix::fs::PermissionsExt;

use capsule::store::Store;

use crate::common::{capsule, capsule_ok, init};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn init_creates_a_private_key_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = init(&data);
    assert_eq!(key.len(), 52);
    let mode = std::fs::metadata(data.join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = capsule_ok(&data, &["init"]);
    assert!(
        second.contains("already exists") && second.contains(&key),
        "{second}"
    );
}

#[test]
fn post_log_reply_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    capsule_ok(&data, &["post", "first post"]);
    capsule_ok(&data, &["post", "to be deleted"]);
    let rows: Vec<serde_json::Value> = capsule_ok(&data, &["log", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["record"]["text"], "first post");
    let id = rows[0]["id"].as_str().unwrap();
    capsule_ok(&data, &["post", "a reply", "--reply-to", id]);
    capsule_ok(&data, &["delete", "2"]);
    let rows: Vec<serde_json::Value> = capsule_ok(&data, &["log", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1]["deleted_by"], 4);
    assert!(rows[1]["record"].is_null(), "the deleted text is gone");
    assert_eq!(rows[2]["record"]["reply_to"]["id"], id);
    assert_eq!(rows[3]["record"]["type"], "delete");
    // Deleting twice, or a deletion, or nothing, is refused with a reason.
    assert!(stderr(&capsule(&data, &["delete", "2"])).contains("already deleted"));
    assert!(stderr(&capsule(&data, &["delete", "4"])).contains("itself a deletion"));
    assert!(stderr(&capsule(&data, &["delete", "9"])).contains("no entry 9"));
    let text = capsule_ok(&data, &["log"]);
    assert!(
        text.contains("(deleted by entry 4)") && !text.contains("to be deleted"),
        "{text}"
    );
    assert!(capsule_ok(&data, &["verify", "--store"]).contains("verified 4 entries of 1 authors"));
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // Before init.
    let out = capsule(&data, &["post", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `capsule init` first"),
        "{}",
        stderr(&out)
    );
    capsule_ok(&data, &["init"]);
    // Too long.
    let long = "x".repeat(70_000);
    let out = capsule(&data, &["post", &long]);
    assert!(stderr(&out).contains("too long"), "{}", stderr(&out));
    assert!(stderr(&capsule(&data, &["post", "  "])).contains("empty"));
    // A reply to an unknown entry; a malformed id.
    let out = capsule(&data, &["post", "x", "--reply-to", &"ab".repeat(32)]);
    assert!(stderr(&out).contains("holds no entry"));
    let out = capsule(&data, &["post", "x", "--reply-to", "nothex"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an entry id"));
    // A bad author key.
    let out = capsule(&data, &["log", "alice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an author key"));
    assert!(capsule_ok(&data, &["log"]).contains("no entries"));

    // A damaged or foreign key file.
    let key = data.join("identity.key");
    let good = std::fs::read(&key).unwrap();
    let mut bad = good.clone();
    bad[30] ^= 1;
    std::fs::write(&key, &bad).unwrap();
    let out = capsule(&data, &["post", "hi"]);
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
    std::fs::write(&key, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    assert!(stderr(&capsule(&data, &["post", "hi"])).contains("not a Capsule key file"));
    let mut newer = good.clone();
    newer[16] = 9;
    std::fs::write(&key, &newer).unwrap();
    assert!(stderr(&capsule(&data, &["post", "hi"])).contains("version 9 key file"));
    std::fs::write(&key, &good).unwrap();
    assert!(
        capsule_ok(&data, &["log"]).contains("no entries"),
        "nothing was posted"
    );
}

#[test]
fn an_identity_backup_restores_the_same_author() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let key = init(&data);
    let backup = dir.path().join("backup.key");
    let out = capsule_ok(
        &data,
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    assert!(out.contains(&key), "{out}");
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwrites.
    let again = capsule(
        &data,
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    assert!(stderr(&again).contains("already exists"));
    // The key file copied in by hand: init keeps it, and says the node
    // does not post until `capsule restore` has brought its log back.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&backup, restored.join("identity.key")).unwrap();
    std::fs::set_permissions(
        restored.join("identity.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = capsule_ok(&restored, &["init"]);
    assert!(
        out.contains("already exists") && out.contains(&key) && out.contains("capsule restore"),
        "{out}"
    );
}

#[test]
fn a_store_held_by_another_process_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    let held = Store::open(&data.join("capsule.redb")).unwrap();
    let out = capsule(&data, &["post", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another capsule process"),
        "{}",
        stderr(&out)
    );
    drop(held);
    capsule_ok(&data, &["post", "hi"]);
}

#[test]
fn help_teaches() {
    let dir = tempfile::tempdir().unwrap();
    let out = capsule_ok(dir.path(), &["--help"]);
    for word in [
        "init",
        "post",
        "delete",
        "log",
        "export",
        "import",
        "verify",
        "bench",
        "CAPSULE_HOME",
        "Exit codes",
    ] {
        assert!(out.contains(word), "--help lacks {word}");
    }
}

#[test]
fn bench_verify_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = capsule_ok(dir.path(), &["bench", "verify", "--entries", "3000"]);
    assert!(out.contains("verify / raw:"), "{out}");
}

/// Clear words, no silent surprises: the store is created for the owner
/// alone (0600, like the key); an identity.key that is a directory is
/// called what it is, once, without a chmod hint; an archive of version 0
/// is called damaged, not newer.
#[test]
fn the_data_dir_is_private_and_odd_files_are_named_plainly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let mode = std::fs::metadata(dir.path().join("capsule.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let odd = tempfile::tempdir().unwrap();
    std::fs::create_dir(odd.path().join("identity.key")).unwrap();
    let out = crate::common::capsule(odd.path(), &["init"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a Capsule key file"), "{err}");
    assert!(!err.contains("chmod"), "{err}");
    assert_eq!(err.matches("is not a Capsule key file").count(), 1, "{err}");

    let archive = dir.path().join("zero.capsule");
    std::fs::write(&archive, b"capsule-archive\x00").unwrap();
    let out = crate::common::capsule(dir.path(), &["verify", archive.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("never written by any capsule"), "{text}");
    assert!(!text.contains("newer"), "{text}");
}

//! Import verifies everything before anything is written.

use std::path::Path;

use capsule::log::verify::verify_batch;
use capsule::store::Store;
use proptest::prelude::*;

use crate::common::{capsule, capsule_ok, make_log, test_identity};

/// A node with one imported log, and an archive of a second log (70 entries).
fn setup(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let source = root.join("source");
    let target = root.join("target");
    capsule_ok(&source, &["init"]);
    capsule_ok(&target, &["init"]);
    {
        let store = Store::open(&source.join("capsule.redb")).unwrap();
        store
            .append(verify_batch(make_log(&test_identity(7), 70)).unwrap())
            .unwrap();
        let store = Store::open(&target.join("capsule.redb")).unwrap();
        store
            .append(verify_batch(make_log(&test_identity(8), 3)).unwrap())
            .unwrap();
    }
    let archive = root.join("log.capsule");
    let author = test_identity(7).author().to_string();
    capsule_ok(
        &source,
        &["export", &author, "-o", archive.to_str().unwrap()],
    );
    (target, archive)
}

/// What the store holds, for before/after comparisons.
fn snapshot(data: &Path) -> (Vec<String>, u64) {
    let store = Store::open(&data.join("capsule.redb")).unwrap();
    let heads = store
        .heads()
        .unwrap()
        .iter()
        .map(|(a, h)| format!("{a}:{}:{}", h.seq, h.id))
        .collect();
    (heads, store.change_counter().unwrap())
}

#[test]
fn a_good_archive_imports_and_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (target, archive) = setup(dir.path());
    let out = capsule_ok(&target, &["import", archive.to_str().unwrap()]);
    assert!(out.contains("imported 70 new entries"), "{out}");
    let out = capsule_ok(&target, &["import", archive.to_str().unwrap()]);
    assert!(
        out.contains("imported 0 new entries (70 already held)"),
        "{out}"
    );
    let out = capsule_ok(&target, &["verify", "--store"]);
    assert!(out.contains("verified 73 entries of 2 authors"), "{out}");
    let log = capsule_ok(&target, &["log", &test_identity(7).author().to_string()]);
    assert!(log.contains("post 70"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Flip any byte of the archive, or cut it anywhere: import fails, says
    /// so, and the store is exactly as before.
    #[test]
    fn a_tampered_archive_changes_nothing(pos in any::<prop::sample::Index>(), mask in 1u8..=255, cut in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (target, archive) = setup(dir.path());
        let mut bytes = std::fs::read(&archive).unwrap();
        let at = pos.index(bytes.len());
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] ^= mask;
        }
        std::fs::write(&archive, &bytes).unwrap();
        let before = snapshot(&target);
        let out = capsule(&target, &["import", archive.to_str().unwrap()]);
        prop_assert!(!out.status.success(), "import of a damaged archive succeeded (byte {at})");
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        prop_assert!(said.contains("nothing was imported") || said.contains("not a Capsule archive") || said.contains("archive version"), "{said}");
        prop_assert_eq!(snapshot(&target), before);
    }
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (target, archive) = setup(dir.path());
    let mut bytes = std::fs::read(&archive).unwrap();
    // Truncated.
    std::fs::write(&archive, &bytes[..bytes.len() - 10]).unwrap();
    let out = capsule(&target, &["verify", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated"));
    // A version from the future.
    bytes[15] = 2;
    std::fs::write(&archive, &bytes).unwrap();
    let out = capsule(&target, &["verify", archive.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("archive version 2 is newer"));
    // Not an archive at all.
    std::fs::write(&archive, b"hello").unwrap();
    let out = capsule(&target, &["import", archive.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not a Capsule archive"));
    // Missing.
    let out = capsule(&target, &["verify", "/nonexistent/file"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file"));
}

#[test]
fn an_archive_that_forks_a_held_log_leaves_the_proof() {
    use capsule::log::builder::LogBuilder;
    use capsule::log::record::Record;
    let dir = tempfile::tempdir().unwrap();
    let (target, _) = setup(dir.path());
    // The store holds author 8's entries 1..3; this archive is another
    // history of the same key that differs from entry 2 on.
    let id = test_identity(8);
    let mut builder = LogBuilder::new(&id);
    let mut w = capsule::archive::ArchiveWriter::new(Vec::new()).unwrap();
    for seq in 1..=5u64 {
        let text = if seq == 1 {
            "post 1".to_string()
        } else {
            format!("rewritten {seq}")
        };
        let payload = Record::post(text).encode().unwrap();
        let entry = builder.next(1_764_000_000_000_000 + seq, &payload);
        w.write_entry(&entry, Some(&payload)).unwrap();
    }
    let archive = dir.path().join("other-history.capsule");
    std::fs::write(&archive, w.finish().unwrap()).unwrap();
    let out = capsule_ok(&target, &["import", archive.to_str().unwrap()]);
    assert!(
        out.contains("imported 0 new entries (1 already held)"),
        "{out}"
    );
    assert!(out.contains("signed two entries for seq 2"), "{out}");
    assert!(
        out.contains("3 entries of forked logs were refused"),
        "{out}"
    );
    // The store keeps the proof and stays healthy: the fork is reported
    // apart from damage.
    let out = capsule_ok(&target, &["verify", "--store"]);
    assert!(out.contains("healthy, 1 author forked"), "{out}");
}

//! `capsule doctor` with real processes: a healthy node and its follower
//! report every check ok; then each fault makes exactly its own check fail
//! or warn, with a line that says what to do.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{capsule, capsule_ok, free_port, init};
use crate::identity::copy_dir;
use crate::mesh::Node;

/// The report, and whether the command exited 0.
fn doctor(dir: &Path) -> (serde_json::Value, bool) {
    let out = capsule(dir, &["doctor", "--json"]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (report, out.status.success())
}

/// `check` → `state` of every line.
fn states(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The one check that is not ok, and what it says.
fn only_fault(report: &serde_json::Value) -> (String, String, String) {
    let faults: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] != "ok")
        .collect();
    assert_eq!(faults.len(), 1, "{report:#}");
    let c = faults[0];
    (
        c["check"].as_str().unwrap().to_string(),
        c["state"].as_str().unwrap().to_string(),
        c["said"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_healthy_node_is_all_ok_and_each_fault_fails_its_own_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let a_key = init(&dir("a"));
    capsule_ok(&dir("a"), &["post", "hello"]);
    let backup = dir("key.bak");
    capsule_ok(
        &dir("a"),
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    init(&dir("b"));
    let mut a = Node::start(&dir("a"), free_port(), &[]);
    let b = Node::start(&dir("b"), free_port(), &[]);
    capsule_ok(&dir("b"), &["follow", &a.sync]);
    b.wait_for(&a_key, 1, "B mirrors A");
    // Healthy: through the running node, every line ok.
    let started = Instant::now();
    let report = loop {
        let (report, ok) = doctor(&dir("a"));
        if report["warnings"] == 0 && report["failing"] == 0 {
            assert!(ok);
            break report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not all ok: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<String> = states(&report).into_iter().map(|(c, _)| c).collect();
    assert_eq!(names, ["backup", "store", "disk", "holders"], "{report:#}");
    let text = capsule_ok(&dir("a"), &["doctor"]);
    assert!(
        text.contains("your log is held by 1 peer, 1 of them up to date"),
        "{text}"
    );
    assert!(a.proc.terminate().success());
    drop(b);

    // Never backed up: only the backup line warns, and says what to do.
    copy_dir(&dir("a"), &dir("no-backup"));
    std::fs::remove_file(dir("no-backup").join("identity.backed-up")).unwrap();
    let (report, ok) = doctor(&dir("no-backup"));
    assert!(ok, "a warning is not a failure");
    let (check, state, said) = only_fault(&report);
    assert_eq!((check.as_str(), state.as_str()), ("backup", "warning"));
    assert!(said.contains("capsule export --identity"), "{said}");

    // A damaged page: only the store fails, and the command exits 1.
    copy_dir(&dir("a"), &dir("damaged"));
    let store = dir("damaged").join("capsule.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    for page in (4096..bytes.len()).step_by(4096) {
        let end = (page + 164).min(bytes.len());
        bytes[page + 100..end].fill(0xff);
    }
    std::fs::write(&store, bytes).unwrap();
    let (report, ok) = doctor(&dir("damaged"));
    assert!(!ok, "a failing check exits 1");
    let (check, state, said) = only_fault(&report);
    assert_eq!((check.as_str(), state.as_str()), ("store", "failing"));
    assert!(
        said.contains("is damaged") && said.contains("Move it aside"),
        "{said}"
    );

    // A data directory on a nearly full disk: only the disk fails.
    if !crate::common::is_root("mounting a tmpfs") {
        return;
    }
    let mount = dir("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = crate::common::Unmount(mount.clone());
    copy_dir(&dir("a"), &mount.join("data"));
    let filler = vec![0x5a; 15 << 20];
    let _ = std::fs::write(mount.join("filler"), &filler);
    let (report, ok) = doctor(&mount.join("data"));
    assert!(!ok);
    let (check, state, said) = only_fault(&report);
    assert_eq!((check.as_str(), state.as_str()), ("disk", "failing"));
    assert!(said.contains("free some space"), "{said}");
}

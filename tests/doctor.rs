//! `capsule doctor` with real processes: a healthy node and its follower
//! report every check ok; then each fault makes exactly its own check fail
//! or warn, with a line that says what to do.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use std::process::Stdio;

use crate::common::{FAKETIME_LIB, Proc, capsule, capsule_bin, capsule_ok, free_port, init};
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

/// The line of check `name`.
pub(crate) fn line(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} line: {report:#}"))
}

/// The one check that is not ok, and what it says.
pub(crate) fn only_fault(report: &serde_json::Value) -> (String, String, String) {
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

/// Waits until the node in `dir` knows a peer holds its log up to date.
fn wait_held(dir: &Path) {
    let started = Instant::now();
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&capsule_ok(dir, &["status", "--json"])).unwrap();
        if status["held_by"]["up_to_date"] == 1 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `capsule up` on loopback telling peers `public_sync`, with its clock
/// moved by `clock` (libfaketime's FAKETIME, e.g. `+10m`) if given;
/// returns the process and where it listens for sync
/// (`KEY@127.0.0.1:PORT`).
fn up(dir: &Path, public_sync: Option<&str>, clock: Option<&str>) -> (Proc, String) {
    let port = free_port();
    let mut command = Command::new(capsule_bin());
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(["--sync-listen", &format!("127.0.0.1:{port}")])
        .args(["--sync-interval", "0.2"])
        .stderr(Stdio::null());
    if let Some(public) = public_sync {
        command.args(["--public-sync", public]);
    }
    if let Some(offset) = clock {
        // The library itself, so that the process is the node (the
        // faketime wrapper would stand between).
        command
            .env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let mut proc = Proc::spawn(&mut command);
    let dial = proc.wait_line(20, |l| l.starts_with("sync: peers dial "));
    let key = dial["sync: peers dial ".len()..]
        .split('@')
        .next()
        .unwrap()
        .to_string();
    (proc, format!("{key}@127.0.0.1:{port}"))
}

/// A node and a follower that dials it; the node was backed up.
fn pair(
    tmp: &Path,
    public_sync: Option<&str>,
    follower_clock: Option<&str>,
) -> (Proc, Proc, std::path::PathBuf) {
    let (a_dir, b_dir) = (tmp.join("a"), tmp.join("b"));
    init(&a_dir);
    capsule_ok(&a_dir, &["post", "hello"]);
    let backup = tmp.join("key.bak");
    capsule_ok(
        &a_dir,
        &["export", "--identity", "-o", backup.to_str().unwrap()],
    );
    init(&b_dir);
    let (a, a_sync) = up(&a_dir, public_sync, None);
    let (b, _) = up(&b_dir, None, follower_clock);
    capsule_ok(&b_dir, &["follow", &a_sync]);
    wait_held(&a_dir);
    (a, b, a_dir)
}

/// The sync port nobody reaches: the node tells peers an address where
/// nothing listens. Only the sync port fails, saying to open it.
#[test]
fn a_sync_port_nobody_reaches_fails_its_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let (mut a, mut b, a_dir) = pair(tmp.path(), Some(&dead), None);
    let (report, ok) = doctor(&a_dir);
    assert!(!ok);
    let (check, state, said) = only_fault(&report);
    assert_eq!(
        (check.as_str(), state.as_str()),
        ("sync port", "failing"),
        "{report:#}"
    );
    assert!(
        said.contains(&dead) && said.contains("open UDP port"),
        "{said}"
    );
    assert!(b.terminate().success() && a.terminate().success());
}

/// An address that is not the asker's own is not dialled: the peer
/// refuses, and says why.
#[test]
fn a_check_of_an_address_not_the_askers_own_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = format!("127.0.0.2:{}", free_port());
    let (mut a, mut b, a_dir) = pair(tmp.path(), Some(&elsewhere), None);
    let (report, _) = doctor(&a_dir);
    let (check, state, said) = only_fault(&report);
    assert_eq!(
        (check.as_str(), state.as_str()),
        ("sync port", "warning"),
        "{report:#}"
    );
    assert!(said.contains("is not your address"), "{said}");
    // Asked again at once: refused as too soon, whatever the address.
    let (report, _) = doctor(&a_dir);
    let said = only_fault(&report).2;
    assert!(said.contains("asked too often"), "{said}");
    assert!(b.terminate().success() && a.terminate().success());
}

/// A peer whose clock is 10 minutes ahead (a real node under faketime):
/// only the clock fails.
#[test]
fn a_peer_ten_minutes_off_fails_the_clock_check() {
    if !crate::common::faketime_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, mut b, a_dir) = pair(tmp.path(), None, Some("+10m"));
    let (report, ok) = doctor(&a_dir);
    assert!(!ok);
    let (check, state, said) = only_fault(&report);
    assert_eq!(
        (check.as_str(), state.as_str()),
        ("clock", "failing"),
        "{report:#}"
    );
    assert!(
        said.contains("behind the median of 1 peers") && said.contains("timedatectl"),
        "{said}"
    );
    assert!(b.terminate().success() && a.terminate().success());
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
    // Healthy: through the running node, every line ok, B dialling A's
    // sync address back from outside and comparing clocks.
    wait_held(&dir("a"));
    let (report, ok) = doctor(&dir("a"));
    assert!(
        ok && report["warnings"] == 0 && report["failing"] == 0,
        "not all ok: {report:#}"
    );
    let names: Vec<String> = states(&report).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        names,
        ["backup", "store", "disk", "holders", "sync port", "clock"],
        "{report:#}"
    );
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
    let _unmount = crate::common::Unmount::tmpfs(&mount, "16m");
    copy_dir(&dir("a"), &mount.join("data"));
    let filler = vec![0x5a; 15 << 20];
    let _ = std::fs::write(mount.join("filler"), &filler);
    let (report, ok) = doctor(&mount.join("data"));
    assert!(!ok);
    let (check, state, said) = only_fault(&report);
    assert_eq!((check.as_str(), state.as_str()), ("disk", "failing"));
    assert!(said.contains("free some space"), "{said}");
}

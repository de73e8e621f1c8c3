//! Damaged store files: zeroed and random pages, truncations and byte flips
//! at offsets across the file. `capsule verify --store` never panics and
//! gives a verdict for each; `capsule up` refuses a damaged store, saying
//! what to do, and serves only one that verifies.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capsule, capsule_bin, capsule_ok};

/// Damaged copies of each kind.
const FLIPS: usize = 40;
const PAGES: usize = 20;
const TRUNCATIONS: usize = 20;
/// Every how many cases `up` is started too (each costs a start).
const UP_EVERY: usize = 4;

#[test]
fn damaged_stores_get_a_verdict_and_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    capsule_ok(&base, &["init"]);
    for i in 0..40 {
        capsule_ok(
            &base,
            &["post", &format!("post {i}: {}", "text ".repeat(i))],
        );
    }
    let original = std::fs::read(base.join("capsule.redb")).unwrap();
    let len = original.len();
    let pages = len / 4096;
    let mut state = 0x853c49e6748fea9bu64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..FLIPS {
        // Spread over the whole file, header included.
        let at = (i * len / FLIPS + random() as usize % (len / FLIPS)).min(len - 1);
        let mut file = original.clone();
        file[at] ^= 1 << (random() % 8);
        cases.push((format!("bit flipped at byte {at}"), file));
    }
    for i in 0..PAGES {
        let page = i * pages / PAGES;
        let mut file = original.clone();
        file[page * 4096..(page + 1) * 4096].fill(0);
        cases.push((format!("page {page} zeroed"), file));
        let mut file = original.clone();
        for b in &mut file[page * 4096..(page + 1) * 4096] {
            *b = random() as u8;
        }
        cases.push((format!("page {page} random"), file));
    }
    for i in 0..TRUNCATIONS {
        let at = i * len / TRUNCATIONS + random() as usize % 4096;
        cases.push((
            format!("truncated to {at} bytes"),
            original[..at.min(len - 1)].to_vec(),
        ));
    }
    assert!(cases.len() >= 100);

    let (mut sound, mut refused, mut up_refused, mut up_served) = (0, 0, 0, 0);
    for (i, (case, file)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("case-{i}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::copy(base.join("identity.key"), data.join("identity.key")).unwrap();
        std::fs::write(data.join("capsule.redb"), file).unwrap();
        let saved = data.join("capsule.redb.case");
        std::fs::write(&saved, file).unwrap();

        let out = capsule(&data, &["verify", "--store"]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "{case}: verify panicked: {stderr}"
        );
        let verified = match out.status.code() {
            Some(0) => {
                assert!(stdout.contains("verified"), "{case}: {stdout}");
                sound += 1;
                true
            }
            Some(3) => {
                assert!(stdout.contains("verification failed"), "{case}: {stdout}");
                refused += 1;
                false
            }
            other => panic!("{case}: verify exited {other:?}: {stdout}{stderr}"),
        };
        if i % UP_EVERY != 0 {
            continue;
        }
        // `up` on the damaged file as it was, before verify looked at it.
        std::fs::copy(&saved, data.join("capsule.redb")).unwrap();
        let mut up = Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let exited = loop {
            if let Some(status) = up.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(3) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match exited {
            Some(status) => {
                let out = up.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(status.code(), Some(1), "{case}: up: {stderr}");
                assert!(
                    stderr.contains("is damaged") && stderr.contains("restore your log"),
                    "{case}: up: {stderr}"
                );
                up_refused += 1;
            }
            None => {
                let _ = up.kill();
                let _ = up.wait();
                assert!(
                    verified,
                    "{case}: up served a store that fails verification"
                );
                up_served += 1;
            }
        }
    }
    eprintln!(
        "{} damaged stores: {sound} verified (the damage was in unused space, or redb \
         repaired it to its last commit), {refused} refused with a verdict, no panic; up \
         refused {up_refused} and served {up_served} (each of which verifies)",
        cases.len()
    );
}

/// The owner's node is the one copy of its log that must hold every
/// payload: one lost (not deleted) fails verification, naming the entry; a
/// deleted post's missing text does not.
#[test]
fn an_own_post_that_lost_its_payload_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    for i in 1..=3 {
        capsule_ok(&data, &["post", &format!("post {i}")]);
    }
    capsule_ok(&data, &["delete", "1"]);
    assert!(capsule_ok(&data, &["verify", "--store"]).contains("verified"));

    // Take away one payload behind the node's back.
    {
        use redb::ReadableTable;
        let db = redb::Database::open(data.join("capsule.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut payloads = txn.open_table(capsule::store::tables::PAYLOADS).unwrap();
            let keys: Vec<[u8; 32]> = payloads
                .iter()
                .unwrap()
                .map(|row| *row.unwrap().0.value())
                .collect();
            payloads.remove(&keys[0]).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = capsule(&data, &["verify", "--store"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("1 of your own entries have lost their payloads (seq "),
        "{stdout}"
    );
}

//! Kill -9 while posting: every post whose `capsule post` returned success is
//! there afterwards, and the store opens and verifies.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capsule, capsule_bin, capsule_ok};

/// Kill rounds: each starts a post and kills it at a random moment.
const ROUNDS: usize = 50;

#[test]
fn sigkill_while_posting_loses_no_acknowledged_post() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    // Calibrate: how long does one post take here?
    let start = Instant::now();
    capsule_ok(&data, &["post", "calibration"]);
    let one = start.elapsed();
    let mut acknowledged = BTreeSet::from(["calibration".to_string()]);
    let mut killed = 0;
    let mut state = 0x2545f4914f6cdd1du64 ^ std::process::id() as u64;
    for round in 0..ROUNDS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Anywhere from before start-up to after the commit.
        let delay = Duration::from_micros(state % (one.as_micros() as u64 * 3 / 2 + 1));
        let text = format!("post {round}");
        let mut child = Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["post", &text])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            acknowledged.insert(text);
        } else {
            killed += 1;
        }
    }
    assert!(
        killed > 0,
        "no post was ever killed: the test proves nothing"
    );
    let out = capsule(&data, &["verify", "--store"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let texts: BTreeSet<String> = capsule_ok(&data, &["log", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["record"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let lost: Vec<_> = acknowledged.difference(&texts).collect();
    assert!(lost.is_empty(), "acknowledged posts lost: {lost:?}");
    eprintln!(
        "{} acknowledged, {killed} killed, {} stored",
        acknowledged.len(),
        texts.len()
    );
}

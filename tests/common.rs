//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capsule::identity::Identity;
use capsule::log::builder::LogBuilder;
use capsule::log::record::Record;
use capsule::log::verify::Unverified;

/// The built `capsule` binary.
pub fn capsule_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_capsule"))
}

/// Runs `capsule ARGS` with `--data-dir dir`.
pub fn capsule(dir: &Path, args: &[&str]) -> Output {
    Command::new(capsule_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CAPSULE_HOME")
        .output()
        .expect("capsule runs")
}

/// Runs `capsule ARGS` and demands success; returns stdout.
pub fn capsule_ok(dir: &Path, args: &[&str]) -> String {
    let out = capsule(dir, args);
    assert!(
        out.status.success(),
        "capsule {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `capsule init` in `dir` and returns the author key it printed.
pub fn init(dir: &Path) -> String {
    capsule_ok(dir, &["init"])
        .lines()
        .find_map(|l| l.strip_prefix("Your author key: ").map(str::to_string))
        .expect("init prints the author key")
}

/// A fixed identity for tests.
pub fn test_identity(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

/// A log of `n` posts by `identity`, with payloads.
pub fn make_log(identity: &Identity, n: u64) -> Vec<Unverified> {
    let mut builder = LogBuilder::new(identity);
    (1..=n)
        .map(|seq| {
            let payload = Record::post(format!("post {seq}")).encode().unwrap();
            (
                builder.next(1_764_000_000_000_000 + seq, &payload),
                Some(payload),
            )
        })
        .collect()
}

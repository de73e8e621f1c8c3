//! Kill -9 while posting: every post whose `capsule post` returned success is
//! there afterwards, and the store opens and verifies. Kill -9 while
//! mirroring: what was stored more than a moment before is kept.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capsule, capsule_bin, capsule_ok};

/// The next value of a xorshift generator: kill moments that differ from
/// run to run (the seed takes the process id) without a dependency.
fn next_random(state: &mut u64) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
}

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
        next_random(&mut state);
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

/// Entries in the log a mirror is killed while fetching.
const TRANSFER: u64 = 100_000;
/// Kill rounds while mirroring.
const MIRROR_ROUNDS: usize = 12;

/// A node serving a log of [`TRANSFER`] entries for sync: (process, the
/// author, `KEY@HOST:PORT`).
fn serve_a_long_log(dir: &std::path::Path) -> (crate::common::Proc, String, String) {
    let id = crate::common::test_identity(9);
    let mut writer = capsule::archive::ArchiveWriter::new(Vec::new()).unwrap();
    for (entry, payload) in crate::common::make_log(&id, TRANSFER) {
        writer.write_entry(&entry, payload.as_deref()).unwrap();
    }
    let archive = dir.join("long.capsule");
    std::fs::write(&archive, writer.finish().unwrap()).unwrap();
    let origin = dir.join("origin");
    capsule_ok(&origin, &["init"]);
    capsule_ok(&origin, &["import", archive.to_str().unwrap()]);
    capsule_ok(&origin, &["mirror", &id.author().to_string()]);
    let mut server = crate::common::Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&origin)
            .args(["serve-sync", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    );
    let line = server.wait_line(20, |l| l.contains(" as "));
    let (addr, node) = line.trim().rsplit_once(" as ").unwrap();
    let addr = addr.rsplit(' ').next().unwrap();
    (server, id.author().to_string(), format!("{node}@{addr}"))
}

/// How many of `author`'s entries the node in `data` holds.
fn held(data: &std::path::Path, author: &str) -> u64 {
    let out = capsule_ok(data, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["mirrored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["author"] == author)
        .map_or(0, |m| m["seq"].as_u64().unwrap())
}

/// How long the throttled origin runs, then stays stopped, in turn.
const RUNS_FOR: Duration = Duration::from_millis(10);
const STOPS_FOR: Duration = Duration::from_millis(90);

/// A round in which the mirror stores nothing within this long proves
/// nothing about durability (the throttle is too tight for this machine).
const FIRST_BATCH_WITHIN: Duration = Duration::from_secs(20);

/// How much older than [`DURABLE_WITHIN`] a stored batch must be at the
/// kill to be owed: the writer's timer and the log line's way to the test.
const KEPT_MARGIN: Duration = Duration::from_millis(500);

/// Stops and resumes `pid` so that it runs [`RUNS_FOR`] in every
/// [`RUNS_FOR`] + [`STOPS_FOR`]: a slow link, for the origin of a
/// transfer, until `done` is set (so that a transfer lasts longer than
/// [`DURABLE_WITHIN`], and the kill tests what was made durable meanwhile).
fn throttle(pid: u32, done: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let signal = |sig| {
            // SAFETY: kill(2) with a child's pid and a valid signal.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        };
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(RUNS_FOR);
            signal(libc::SIGSTOP);
            std::thread::sleep(STOPS_FOR);
            signal(libc::SIGCONT);
        }
        signal(libc::SIGCONT);
    });
}

/// A mirror killed with -9 while it fetches a long log keeps what it had
/// stored more than [`DURABLE_WITHIN`] before the kill (its commits skip
/// the disk, but not for longer than that), its store verifies, and a sync
/// after the restart completes the log within 10 s. The origin runs a
/// tenth of the time, so that a transfer takes long enough to be cut, and
/// each kill comes once a stored batch is old enough to be owed: whatever
/// congestion controller paces the origin, every cut round tests the
/// bound.
#[test]
fn a_mirror_killed_mid_transfer_keeps_what_it_verified() {
    use capsule::store::writer::DURABLE_WITHIN;
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (server, author, peer) = serve_a_long_log(dir.path());
    let mut state = 0x9e3779b97f4a7c15u64 ^ std::process::id() as u64;
    let (mut cut, mut kept_total, mut worst_restart) = (0, 0, Duration::ZERO);
    let mut bound_tested = 0;
    for round in 0..MIRROR_ROUNDS {
        let mirror = dir.path().join(format!("mirror-{round}"));
        capsule_ok(&mirror, &["init"]);
        capsule_ok(&mirror, &["mirror", &author]);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut sync = Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&mirror)
            .args(["--log-level", "capsule=debug", "sync", &peer])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        throttle(server.child.id(), std::sync::Arc::clone(&done));
        // Every batch the mirror stores, with when we heard of it.
        let (send, stored) = std::sync::mpsc::channel();
        let err = std::io::BufReader::new(sync.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if let Some(n) = line.split("stored=").nth(1) {
                    let n: u64 = n.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = send.send((Instant::now(), n));
                }
            }
        });
        // The kill comes at a random moment once the first batch is
        // stored: 0 to 2 s after that batch became old enough to be kept.
        let started = Instant::now();
        let mut heard = Vec::new();
        if let Ok(first) = stored.recv_timeout(FIRST_BATCH_WITHIN) {
            heard.push(first);
        }
        next_random(&mut state);
        std::thread::sleep(DURABLE_WITHIN + KEPT_MARGIN + Duration::from_millis(state % 2_000));
        let _ = sync.kill(); // SIGKILL
        let killed = Instant::now();
        let finished = sync.wait().unwrap().success();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(150));
        heard.extend(stored.try_iter());
        let settled = killed - DURABLE_WITHIN - KEPT_MARGIN;
        let must_keep: u64 = heard
            .iter()
            .filter(|(at, _)| *at <= settled)
            .map(|(_, n)| n)
            .sum();
        let kept = held(&mirror, &author);

        assert!(
            kept >= must_keep,
            "round {round}: killed after {:?}, the mirror kept {kept} entries of the {must_keep} \
             it had stored {DURABLE_WITHIN:?} before",
            killed - started
        );
        capsule_ok(&mirror, &["verify", "--store"]);
        eprintln!(
            "round {round}: killed after {:?}, finished {finished}, kept {kept}, must keep {must_keep}, stored at {:?}",
            killed - started,
            heard
                .iter()
                .map(|(at, n)| (at.duration_since(started).as_millis(), *n))
                .collect::<Vec<_>>()
        );
        if !finished && kept < TRANSFER {
            cut += 1;
            bound_tested += usize::from(must_keep > 0);
            kept_total += kept;
        }
        let restart = Instant::now();
        let out = capsule_ok(&mirror, &["sync", &peer]);
        let took = restart.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "round {round}: the sync after the restart took {took:?}: {out}"
        );
        worst_restart = worst_restart.max(took);
        assert_eq!(held(&mirror, &author), TRANSFER, "round {round}: {out}");
    }
    assert!(cut > 0, "no transfer was ever cut: the test proves nothing");
    assert!(
        bound_tested > 0,
        "no transfer was cut {DURABLE_WITHIN:?} after a batch was stored: the durability bound went untested"
    );
    eprintln!(
        "{MIRROR_ROUNDS} mirrors killed mid-transfer of {TRANSFER} entries: {cut} cut, keeping \
         {} entries on average, {bound_tested} of them after a batch old enough to be kept; every one verified and completed after its restart (slowest \
         {worst_restart:.1?})",
        kept_total / cut.max(1)
    );
}

/// Retry rounds: each kills a `capsule post` at a random moment, then runs
/// the same command again.
const RETRY_ROUNDS: usize = 30;

/// A `capsule post` killed before it heard the node's answer (the node may
/// have published it) is safe to run again: the retry carries the same
/// request id, and every post is in the log exactly once.
#[test]
fn a_post_retried_after_its_answer_was_lost_is_published_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    let mut node = crate::common::Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::null()),
    );
    node.wait_line(20, |l| l.starts_with("Capsule is up"));
    let start = Instant::now();
    capsule_ok(&data, &["post", "calibration"]);
    let one = start.elapsed();
    let mut state = 0xd1b54a32d192ed03u64 ^ std::process::id() as u64;
    let (mut killed, mut answered_again) = (0, 0);
    for round in 0..RETRY_ROUNDS {
        next_random(&mut state);
        let delay = Duration::from_micros(state % (one.as_micros() as u64 * 3 / 2 + 1));
        let text = format!("post {round}");
        let mut child = Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["post", &text])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        // Told it was published (the kill came after): the user would not
        // run it again.
        if out.status.success() || String::from_utf8_lossy(&out.stdout).contains("published entry")
        {
            continue;
        }
        killed += 1;
        let again = capsule_ok(&data, &["post", &text]);
        if again.contains("already published as entry") {
            answered_again += 1;
        }
    }
    assert!(
        killed > 0,
        "no post was ever killed: the test proves nothing"
    );
    let log = capsule_ok(&data, &["log", "--json"]);
    let mut texts: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["record"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let all = texts.len();
    texts.sort();
    texts.dedup();
    assert_eq!(all, texts.len(), "a post was published twice: {log}");
    assert_eq!(all, RETRY_ROUNDS + 1, "a post is missing: {log}");
    eprintln!(
        "{killed} posts killed before their answer and run again: {answered_again} had been \
         published already and were not published twice"
    );
    assert!(node.terminate().success());
}

/// Kill -9 while posting pictures (the command prepares and keeps them,
/// then the store signs the post): every acknowledged post has its
/// pictures afterwards, no blob is held under a name its bytes do not
/// hash to, and the store verifies.
#[test]
fn sigkill_while_posting_pictures_loses_no_acknowledged_picture() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    capsule_ok(&data, &["init"]);
    let pictures: Vec<std::path::PathBuf> = (0..ROUNDS as u64 + 1)
        .map(|i| {
            let file = dir.path().join(format!("{i}.jpg"));
            std::fs::write(&file, crate::pictures_mirrors::noise_jpeg(900, 700, i)).unwrap();
            file
        })
        .collect();
    let post = |text: &str, file: &std::path::Path| {
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(&data)
            .args([
                "post",
                text,
                "--attach",
                file.to_str().unwrap(),
                "--alt",
                text,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    assert!(
        post("calibration", &pictures[ROUNDS])
            .wait()
            .unwrap()
            .success()
    );
    let one = start.elapsed();
    let mut acknowledged = BTreeSet::from(["calibration".to_string()]);
    let (mut killed, mut state) = (0, 0x51afd6c8e3a7b9d1u64 ^ std::process::id() as u64);
    for (round, file) in pictures[..ROUNDS].iter().enumerate() {
        next_random(&mut state);
        let delay = Duration::from_micros(state % (one.as_micros() as u64 * 3 / 2 + 1));
        let text = format!("picture {round}");
        let mut child = post(&text, file);
        std::thread::sleep(delay);
        let _ = child.kill();
        if child.wait().unwrap().success() {
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
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let posts: Vec<serde_json::Value> = capsule_ok(&data, &["log", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for text in &acknowledged {
        let post = posts
            .iter()
            .find(|p| p["record"]["text"] == text.as_str())
            .unwrap_or_else(|| panic!("acknowledged post {text:?} lost"));
        let hash = post["record"]["attachments"][0]["hash"].as_str().unwrap();
        let blob = data.join("blobs").join(&hash[..2]).join(hash);
        let bytes = std::fs::read(&blob).unwrap_or_else(|_| panic!("{text:?} lost its picture"));
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash);
    }
    eprintln!(
        "{} acknowledged, {killed} killed, {} stored; {report}",
        acknowledged.len(),
        posts.len()
    );
}

/// Kill -9 of a mirror while it fetches pictures, in [`ROUNDS`] fresh
/// mirrors of a throttled origin (so that the fetches last long enough to
/// be cut): what a mirror holds under a blob's name is always the whole
/// blob, its store verifies after the kill, and once left to run it holds
/// them all.
#[test]
fn sigkill_while_mirroring_pictures_leaves_only_whole_pictures() {
    use crate::common::{Proc, Up};
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    let author = crate::common::init(&origin);
    for post in 0..5u64 {
        let mut args = vec!["post".to_string(), format!("set {post}")];
        for i in 0..4u64 {
            let file = dir.path().join(format!("{post}-{i}.jpg"));
            std::fs::write(
                &file,
                crate::pictures_mirrors::noise_jpeg(900, 700, post * 4 + i),
            )
            .unwrap();
            args.extend(["--attach".into(), file.to_str().unwrap().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        capsule_ok(&origin, &args);
    }
    let all = crate::pictures_mirrors::own_blobs(&origin);
    let up = Up::start(&origin);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    throttle(up.child.id(), std::sync::Arc::clone(&done));
    let start_mirror = |mirror: &std::path::Path| {
        Proc::spawn(
            Command::new(capsule_bin())
                .arg("--data-dir")
                .arg(mirror)
                .args([
                    "up",
                    "--listen",
                    "127.0.0.1:0",
                    "--sync-listen",
                    "127.0.0.1:0",
                ])
                .args(["--peer", &up.sync, "--sync-interval", "0.2"])
                .stderr(Stdio::null()),
        )
    };
    let mut state = 0x2f8e4d1c6b5a3927u64 ^ std::process::id() as u64;
    let (mut held_at_kill, mut mirror) = (Vec::new(), dir.path().to_path_buf());
    for round in 0..ROUNDS {
        mirror = dir.path().join(format!("mirror-{round}"));
        capsule_ok(&mirror, &["init"]);
        capsule_ok(&mirror, &["mirror", &author]);
        let mut node = start_mirror(&mirror);
        node.wait_line(20, |l| l.starts_with("Capsule is up"));
        next_random(&mut state);
        std::thread::sleep(Duration::from_millis(state % 1500));
        let _ = node.child.kill();
        let _ = node.child.wait();
        let out = capsule(&mirror, &["verify", "--store"]);
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{report}");
        let sound = report
            .split("blobs: ")
            .nth(1)
            .and_then(|s| s.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        held_at_kill.push(sound);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let cut = held_at_kill.iter().filter(|&&n| n > 0 && n < all).count();
    assert!(cut > 0, "no kill came mid-fetch: {held_at_kill:?}");
    // Left to run, the last mirror fetches the rest.
    let mut node = start_mirror(&mirror);
    node.wait_line(20, |l| l.starts_with("Capsule is up"));
    crate::pictures::eventually(60, "the mirror holds every picture", || {
        crate::pictures_mirrors::mirrored_blobs(&mirror) == all
    });
    node.terminate();
    let report = capsule_ok(&mirror, &["verify", "--store"]);
    assert!(report.contains(&format!("blobs: {all} sound")), "{report}");
    eprintln!("blobs held after each kill (of {all}): {held_at_kill:?}; {cut} kills mid-fetch");
}

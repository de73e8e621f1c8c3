//! `capsule bench`: measurements of this machine, each beside the bound it
//! should approach, measured in the same run (shared machines are noisy, so
//! only ratios within one run mean much).

pub mod http;

use std::time::Instant;

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::archive::audit;
use crate::identity::Identity;
use crate::log::builder::LogBuilder;
use crate::log::entry::Entry;
use crate::log::record::Record;
use crate::log::verify::Unverified;
use crate::log::verify::{SIGNATURE_BATCH, batch_rng, verify_batch};
use crate::store::Store;
use crate::sync::network::MERGE_LIMIT;

/// Entries per store append while building: big enough that one commit
/// serves many entries.
const BUILD_BATCH: usize = 4096;

/// Rounds of the verify and raw measurements, alternated; the best of each
/// is reported.
const ROUNDS: usize = 5;

/// Entries of the log kept in memory for the raw rate: per-entry cost is
/// flat past a few batches, and a million entries would hold 217 MB.
const RAW_SAMPLE: usize = 1 << 18;

/// Figures of `capsule bench verify`, in entries per second.
#[derive(Debug, Clone, Copy)]
pub struct VerifyFigures {
    /// Entries measured.
    pub entries: u64,
    /// Signing, verifying and storing a log.
    pub build: f64,
    /// Exporting it to an archive.
    pub export: f64,
    /// Verifying the archive (`capsule verify FILE`).
    pub verify: f64,
    /// Raw batch signature verification of the same log (its first
    /// `RAW_SAMPLE` entries) on every core: the bound for `verify`.
    pub raw: f64,
}

fn rate(n: u64, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

/// Builds a log of `n` entries in a temporary directory, exports and verifies
/// it, and measures the raw batch-verification rate of the same entries.
pub fn measure_verify(n: u64) -> Result<VerifyFigures> {
    anyhow::ensure!(n > 0, "--entries must be at least 1");
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let store = Store::open(&dir.path().join("bench.redb"))?;
    let identity = Identity::generate();
    let mut builder = LogBuilder::new(&identity);
    let bar = crate::progress::bar(n, "building");
    let mut all = Vec::with_capacity(RAW_SAMPLE.min(n as usize));
    let start = Instant::now();
    let mut made = 0u64;
    while made < n {
        let count = BUILD_BATCH.min((n - made) as usize);
        let batch: Vec<Unverified> = (0..count)
            .map(|i| {
                let seq = made + i as u64 + 1;
                let payload = Record::post(format!("post number {seq} of the benchmark log"))
                    .encode()
                    .expect("short post");
                (
                    builder.next(1_764_000_000_000_000 + seq, &payload),
                    Some(payload),
                )
            })
            .collect();
        let room = RAW_SAMPLE.saturating_sub(all.len());
        all.extend(batch.iter().take(room).map(|(e, _)| *e));
        let verified = verify_batch(batch).map_err(|(_, bad)| bad)?;
        let report = store.append(verified)?;
        anyhow::ensure!(
            report.rejected.is_none(),
            "the store refused {:?}",
            report.rejected
        );
        made += count as u64;
        bar.set_position(made);
    }
    let build = rate(n, start);
    bar.finish_and_clear();

    let file = dir.path().join("bench.capsule");
    let start = Instant::now();
    crate::archive::export(&store, &[identity.author()], &file)?;
    let export = rate(n, start);

    // The machine is shared: alternate the measurement and its bound, and keep
    // the best of each, so that a burst of noise does not decide the ratio.
    let (mut verify, mut raw) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let summary = audit::verify_file(&file, None)?;
        verify = verify.max(rate(n, start));
        anyhow::ensure!(
            summary.entries == n,
            "verified {} of {n} entries",
            summary.entries
        );
        raw = raw.max(raw_batch_rate(&all)?);
    }
    store.close()?;
    Ok(VerifyFigures {
        entries: n,
        build,
        export,
        verify,
        raw,
    })
}

/// The bound for verification: `ed25519-consensus` batch verification of
/// `entries` alone (no decoding, hashing, links or I/O), in batches of
/// [`SIGNATURE_BATCH`] on every core. Entries per second.
pub fn raw_batch_rate(entries: &[Entry]) -> Result<f64> {
    let start = Instant::now();
    let valid = entries
        .par_chunks(SIGNATURE_BATCH)
        .map(|chunk| {
            let mut verifier = ed25519_consensus::batch::Verifier::new();
            for e in chunk {
                let message = e.signed_message();
                verifier.queue((
                    ed25519_consensus::VerificationKeyBytes::from(e.author().0),
                    ed25519_consensus::Signature::from(e.signature()),
                    &message[..],
                ));
            }
            verifier.verify(batch_rng()).is_ok()
        })
        .reduce(|| true, |a, b| a && b);
    let rate = rate(entries.len() as u64, start);
    anyhow::ensure!(valid, "raw verification failed");
    Ok(rate)
}

/// `capsule bench verify --entries N`.
pub fn verify(n: u64) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!("capsule bench verify: {n} entries, one author, {threads} verification threads");
    let f = measure_verify(n)?;
    println!("build (sign, verify, store):   {:>10.0} entries/s", f.build);
    println!(
        "export:                        {:>10.0} entries/s",
        f.export
    );
    println!(
        "verify export:                 {:>10.0} entries/s",
        f.verify
    );
    println!(
        "raw batch signatures (best of {ROUNDS}): {:>8.0} entries/s  (ed25519-consensus, ZIP-215, batches of {SIGNATURE_BATCH}, {threads} threads)",
        f.raw
    );
    println!("verify / raw:                  {:>10.3}", f.verify / f.raw);
    Ok(())
}

/// Figures of the full-sync part of `capsule bench sync`.
#[derive(Debug, Clone, Copy)]
pub struct SyncFigures {
    /// Entries synced.
    pub entries: u64,
    /// Over QUIC on loopback, entries per second.
    pub sync: f64,
    /// Decode, verify and store the same entries in process, entries per
    /// second: the bound.
    pub bound: f64,
    /// Raw batch signature verification on every core, entries per second.
    pub raw: f64,
    /// Round trips of the session.
    pub round_trips: u64,
    /// Frame bytes initiator → responder.
    pub bytes_up: u64,
    /// Frame bytes responder → initiator.
    pub bytes_down: u64,
    /// Bytes besides entries and payloads, both ways.
    pub overhead: u64,
    /// Peak resident memory of the serving node's process, bytes.
    pub peak_rss_serving: u64,
    /// Peak resident memory of the syncing node's process, bytes.
    pub peak_rss_syncing: u64,
}

/// Fills `store` with `authors` logs of `per_author` posts each, signed in
/// parallel, and mirrors every author. Returns the authors.
pub fn fill(
    store: &Store,
    authors: u64,
    per_author: u64,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<crate::identity::AuthorKey>> {
    let identities: Vec<Identity> = (0..authors).map(|_| Identity::generate()).collect();
    for identity in &identities {
        store.mirror(identity.author())?;
    }
    // Sign a slice of every log at a time, so memory stays bounded.
    let mut builders: Vec<LogBuilder> = identities.iter().map(LogBuilder::new).collect();
    let step = (BUILD_BATCH as u64 / authors.max(1)).max(1);
    let mut made = 0;
    while made < per_author {
        let count = step.min(per_author - made);
        let batch: Vec<Unverified> = builders
            .par_iter_mut()
            .flat_map_iter(|b| {
                (0..count)
                    .map(|i| {
                        let seq = made + i + 1;
                        let payload =
                            Record::post(format!("post {seq}: a benchmark post of typical length"))
                                .encode()
                                .expect("short post");
                        (b.next(1_764_000_000_000_000 + seq, &payload), Some(payload))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let n = batch.len() as u64;
        let verified = verify_batch(batch).map_err(|(_, bad)| bad)?;
        let report = store.append_mirrored(verified)?;
        anyhow::ensure!(
            report.rejected.is_none(),
            "the store refused {:?}",
            report.rejected
        );
        made += count;
        bar.inc(n);
    }
    store.flush()?;
    Ok(identities.iter().map(Identity::author).collect())
}

/// The in-process bound: read every entry of `authors` from `from`, encode
/// it as on the wire, decode, verify and store it in `to`, pipelined like a
/// session (decode, then signature batches on every core, then the store
/// thread). Entries per second.
pub fn in_process_bound(
    from: &Store,
    to: &Store,
    authors: &[crate::identity::AuthorKey],
) -> Result<f64> {
    use crate::sync::wire;
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (verified_tx, verified_rx) =
        std::sync::mpsc::sync_channel::<Vec<crate::log::verify::VerifiedEntry>>(8);
    let start = Instant::now();
    let total = std::thread::scope(|scope| -> Result<u64> {
        let reader = scope.spawn(move || -> Result<()> {
            for author in authors {
                crate::sync::session::serve(from, &[(*author, 1, u64::MAX)], &mut |m| {
                    if let wire::Message::Entries(body) = m {
                        let _ = raw_tx.send(body);
                    }
                    Ok(())
                })?;
            }
            Ok(())
        });
        let verifier = scope.spawn(move || -> Result<()> {
            for body in raw_rx {
                let entries = wire::decode_entries(&body)?;
                let verified = verify_batch(entries).map_err(|(_, bad)| bad)?;
                if verified_tx.send(verified).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut total = 0;
        while let Ok(mut batch) = verified_rx.recv() {
            // Batches that queued up while the store was busy share a commit,
            // as in a session.
            while batch.len() < MERGE_LIMIT {
                match verified_rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            total += to.append_mirrored(batch)?.accepted;
        }
        reader.join().expect("reader")?;
        verifier.join().expect("verifier")?;
        Ok(total)
    })?;
    to.flush()?;
    Ok(rate(total, start))
}

/// A node's data directory for the benchmark: a new identity and a store.
fn bench_node(root: &std::path::Path) -> Result<(crate::data_dir::DataDir, Identity)> {
    let dir = crate::data_dir::DataDir::new(root);
    std::fs::create_dir_all(dir.root())?;
    let identity = Identity::generate();
    identity.save_new(&dir.identity())?;
    Ok((dir, identity))
}

/// A memory figure of process `pid` from /proc (`VmHWM`, `VmRSS`…), in
/// bytes, if it runs.
pub(crate) fn memory_of(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of process `pid` so far (its VmHWM), if it runs.
fn peak_rss_of(pid: u32) -> Option<u64> {
    memory_of(pid, "VmHWM")
}

/// Full sync of `authors` × `per_author` entries over QUIC on 127.0.0.1
/// between two nodes, each its own `capsule` process (`serve-sync` and
/// `sync`) with its own data directory, as on two machines.
pub fn measure_sync(authors: u64, per_author: u64) -> Result<SyncFigures> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    anyhow::ensure!(
        authors > 0 && per_author > 0,
        "--authors and --entries-per-author must be at least 1"
    );
    let n = authors * per_author;
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (source_dir, source_id) = bench_node(&tmp.path().join("source"))?;
    let (target_dir, _) = bench_node(&tmp.path().join("target"))?;
    let exe = std::env::current_exe().context("cannot find the capsule binary")?;

    let source = Store::open(&source_dir.store())?;
    let bar = crate::progress::bar(n, "building");
    let keys = fill(&source, authors, per_author, &bar)?;
    bar.finish_and_clear();
    let mut sample = Vec::with_capacity(RAW_SAMPLE.min(n as usize));
    for key in keys.iter() {
        source.scan(key, 1, |s| {
            sample.push(s.entry);
            sample.len() < RAW_SAMPLE
        })?;
        if sample.len() >= RAW_SAMPLE {
            break;
        }
    }
    let raw = raw_batch_rate(&sample)?;
    drop(sample);
    let bound_path = tmp.path().join("bound.redb");
    let bound_store = Store::open(&bound_path)?;
    let bound = in_process_bound(&source, &bound_store, &keys)?;
    bound_store.close()?;
    std::fs::remove_file(&bound_path).ok();
    source.close()?;
    let target = Store::open(&target_dir.store())?;
    for key in &keys {
        target.mirror(*key)?;
    }
    target.close()?;

    let mut server = Command::new(&exe)
        .arg("--data-dir")
        .arg(source_dir.root())
        .args(["serve-sync", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the serving node")?;
    let mut first = String::new();
    // Kept open while the node runs: it may print more.
    let mut server_out = std::io::BufReader::new(server.stdout.take().expect("piped"));
    server_out
        .read_line(&mut first)
        .context("the serving node said nothing")?;
    let port = first
        .split_whitespace()
        .find_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .with_context(|| format!("no port in {first:?}"))?;
    let client = Command::new(&exe)
        .arg("--data-dir")
        .arg(target_dir.root())
        .args(["sync", "--json"])
        .arg(format!("{}@127.0.0.1:{port}", source_id.author()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the syncing node")?;
    let (server_pid, client_pid) = (server.id(), client.id());
    let watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let watch = std::sync::Arc::clone(&watch);
        std::thread::spawn(move || {
            let (mut s, mut c) = (0, 0);
            while watch.load(std::sync::atomic::Ordering::Relaxed) {
                s = peak_rss_of(server_pid).unwrap_or(0).max(s);
                c = peak_rss_of(client_pid).unwrap_or(0).max(c);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (s, c)
        })
    };
    let output = client.wait_with_output()?;
    watch.store(false, std::sync::atomic::Ordering::Relaxed);
    let (server_rss, client_rss) = sampler.join().expect("sampler");
    let _ = server.kill();
    let _ = server.wait();
    drop(server_out);
    anyhow::ensure!(output.status.success(), "the sync failed");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the syncing node printed no report")?;
    let field = |k: &str| report[k].as_u64().unwrap_or(0);
    anyhow::ensure!(
        field("entries_stored") == n,
        "the sync stored {} of {n} entries",
        field("entries_stored")
    );
    let seconds = report["seconds"].as_f64().unwrap_or(f64::INFINITY);
    Ok(SyncFigures {
        entries: n,
        sync: n as f64 / seconds.max(1e-9),
        bound,
        raw,
        round_trips: field("round_trips"),
        bytes_up: field("bytes_sent"),
        bytes_down: field("bytes_received"),
        overhead: field("overhead"),
        peak_rss_serving: server_rss,
        peak_rss_syncing: client_rss,
    })
}

/// What reconciliation cost in one scenario.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileFigures {
    /// Round trips until the initiator knew every differing head.
    pub reconcile_round_trips: u64,
    /// Round trips of the whole session (entries and done included).
    pub round_trips: u64,
    /// Bytes besides entries and payloads, both ways.
    pub overhead: u64,
    /// Entries that crossed.
    pub entries: u64,
}

/// Two in-memory stores holding the same `authors` one-entry logs, the
/// responder `ahead` of them one entry further (the newest timestamps);
/// returns the first contact and, after `ahead` more new entries, the
/// returning peer's session.
pub fn measure_reconcile(authors: u64, ahead: u64) -> Result<(ReconcileFigures, ReconcileFigures)> {
    use crate::sync::session::run_lockstep;
    anyhow::ensure!(ahead <= authors, "--diff must not exceed --diff-authors");
    let a = Store::open_in_memory()?;
    let b = Store::open_in_memory()?;
    let identities: Vec<Identity> = (0..authors).map(|_| Identity::generate()).collect();
    let mut builders: Vec<LogBuilder> = identities.iter().map(LogBuilder::new).collect();
    let post = |seq: u64| {
        Record::post(format!("post {seq}"))
            .encode()
            .expect("short post")
    };
    let sign = |builders: &mut [LogBuilder], seq: u64, ts: u64| -> Vec<Unverified> {
        builders
            .par_iter_mut()
            .enumerate()
            .map(|(i, b)| (b.next(ts + i as u64, &post(seq)), Some(post(seq))))
            .collect()
    };
    let base = 1_764_000_000_000_000;
    let first = sign(&mut builders, 1, base);
    for s in [&a, &b] {
        for id in &identities {
            s.mirror(id.author())?;
        }
        s.append_mirrored(verify_batch(first.clone()).map_err(|(_, bad)| bad)?)?;
    }
    let figures = |run: crate::sync::session::Lockstep| ReconcileFigures {
        reconcile_round_trips: run.reconcile_round_trips,
        round_trips: run.initiator.round_trips,
        overhead: run.traffic.overhead(),
        entries: run.initiator.entries_received + run.responder.entries_received,
    };
    let advance = |builders: &mut [LogBuilder], seq: u64, ts: u64| -> Result<()> {
        let next = sign(&mut builders[..ahead as usize], seq, ts);
        b.append_mirrored(verify_batch(next).map_err(|(_, bad)| bad)?)?;
        Ok(())
    };
    advance(&mut builders, 2, base + 1_000_000_000)?;
    let (node_a, node_b) = ([1u8; 32], [2u8; 32]);
    let first_contact = figures(run_lockstep((&a, None, node_a), (&b, None, node_b))?);
    advance(&mut builders, 3, base + 2_000_000_000)?;
    let returning = figures(run_lockstep((&a, None, node_a), (&b, None, node_b))?);
    Ok((first_contact, returning))
}

/// `capsule bench sync`.
pub fn sync(authors: u64, per_author: u64, diff_authors: u64, diff: u64) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!(
        "capsule bench sync: {authors} authors x {per_author} entries over QUIC on 127.0.0.1 between two capsule processes, {threads} verification threads"
    );
    let f = measure_sync(authors, per_author)?;
    println!("sync over QUIC:                {:>10.0} entries/s", f.sync);
    println!(
        "in-process bound:              {:>10.0} entries/s  (decode, verify on {threads} threads, store; no network)",
        f.bound
    );
    println!(
        "raw batch verify:              {:>10.0} entries/s  (ed25519-consensus, {threads} threads)",
        f.raw
    );
    println!("sync / in-process bound:       {:>10.3}", f.sync / f.bound);
    println!("sync / raw verify:             {:>10.3}", f.sync / f.raw);
    println!("round trips:                   {:>10}", f.round_trips);
    println!(
        "bytes:                         {:>10} up, {} down, {} besides entries and payloads",
        f.bytes_up, f.bytes_down, f.overhead
    );
    println!(
        "peak memory:                   {:>10.1} MB serving node, {:.1} MB syncing node (separate processes)",
        f.peak_rss_serving as f64 / 1e6,
        f.peak_rss_syncing as f64 / 1e6
    );
    println!();
    println!(
        "reconciliation: {diff_authors} authors held by both, {diff} of them one entry ahead on one side (lockstep: the same messages as over QUIC)"
    );
    let (first, returning) = measure_reconcile(diff_authors, diff)?;
    for (what, r) in [("first contact", first), ("returning peer", returning)] {
        println!(
            "{what:<16} heads settled in {} round trip(s), session {} round trips, {} bytes besides the {} entries",
            r.reconcile_round_trips, r.round_trips, r.overhead, r.entries
        );
    }
    Ok(())
}

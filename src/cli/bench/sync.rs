//! `capsule bench sync`: a full sync between two `capsule` processes over
//! QUIC beside the in-process bound and the raw signature rate, the same
//! sync through a relay that makes a real link (delay, loss), and the cost
//! of reconciliation in round trips and bytes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::relay::{Link, Relay};
use super::{RAW_SAMPLE, bench_node, fill, peak_rss_of, rate, raw_batch_rate};
use crate::identity::Identity;
use crate::log::builder::LogBuilder;
use crate::log::record::Record;
use crate::log::verify::{Unverified, verify_batch};
use crate::store::Store;
use crate::sync::network::MERGE_LIMIT;
use crate::sync::transport::Congestion;

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

/// One sync over QUIC: the rate and what crossed.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Entries per second, as the syncing node measured its session.
    pub rate: f64,
    /// Round trips of the session.
    pub round_trips: u64,
    /// Frame bytes initiator → responder.
    pub bytes_up: u64,
    /// Frame bytes responder → initiator.
    pub bytes_down: u64,
    /// Bytes besides entries and payloads, both ways.
    pub overhead: u64,
    /// Peak resident memory of the syncing node's process, bytes.
    pub peak_rss: u64,
    /// Datagrams the relay carried and dropped (0, 0 without one).
    pub datagrams: (u64, u64),
}

/// A node serving `authors` × `per_author` entries from its own `capsule
/// serve-sync` process, and what a sync from it needs.
struct Source {
    tmp: tempfile::TempDir,
    exe: std::path::PathBuf,
    key: crate::identity::AuthorKey,
    keys: Vec<crate::identity::AuthorKey>,
    port: u16,
    server: std::process::Child,
    congestion: Congestion,
    /// Kept open while the node runs: it may print more.
    _out: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Source {
    /// A fresh node that mirrors every author, then one `capsule sync` from
    /// it into that node, directly or through a relay making `link`.
    fn sync_into_new_node(&self, n: u64, link: Option<Link>, name: &str) -> Result<Run> {
        use std::process::{Command, Stdio};
        let (target_dir, _) = bench_node(&self.tmp.path().join(name))?;
        let target = Store::open(&target_dir.store())?;
        for key in &self.keys {
            target.mirror(*key)?;
        }
        target.close()?;
        let upstream: std::net::SocketAddr = ([127, 0, 0, 1], self.port).into();
        let relay = link.map(|l| Relay::start(upstream, l)).transpose()?;
        let dial = relay.as_ref().map_or(upstream, |r| r.addr);
        let client = Command::new(&self.exe)
            .arg("--data-dir")
            .arg(target_dir.root())
            .args(["sync", "--json"])
            .arg(format!("{}@{dial}", self.key))
            .env(
                crate::sync::transport::CONGESTION_ENV,
                self.congestion.name(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the syncing node")?;
        let client_pid = client.id();
        let watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let watch = std::sync::Arc::clone(&watch);
            std::thread::spawn(move || {
                let mut peak = 0;
                while watch.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak_rss_of(client_pid).unwrap_or(0).max(peak);
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        let output = client.wait_with_output()?;
        watch.store(false, std::sync::atomic::Ordering::Relaxed);
        let peak_rss = sampler.join().expect("sampler");
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
        let datagrams = relay.as_ref().map_or((0, 0), |r| {
            use std::sync::atomic::Ordering::Relaxed;
            (
                r.counts.carried.load(Relaxed),
                r.counts.dropped.load(Relaxed),
            )
        });
        Ok(Run {
            rate: n as f64 / seconds.max(1e-9),
            round_trips: field("round_trips"),
            bytes_up: field("bytes_sent"),
            bytes_down: field("bytes_received"),
            overhead: field("overhead"),
            peak_rss,
            datagrams,
        })
    }
}

/// Starts `capsule serve-sync` on 127.0.0.1 for the store in `dir`.
fn serve(
    exe: &std::path::Path,
    dir: &crate::data_dir::DataDir,
    congestion: Congestion,
) -> Result<(
    std::process::Child,
    u16,
    std::io::BufReader<std::process::ChildStdout>,
)> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut server = Command::new(exe)
        .arg("--data-dir")
        .arg(dir.root())
        .args(["serve-sync", "--listen", "127.0.0.1:0"])
        .env(crate::sync::transport::CONGESTION_ENV, congestion.name())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the serving node")?;
    let mut first = String::new();
    let mut out = std::io::BufReader::new(server.stdout.take().expect("piped"));
    out.read_line(&mut first)
        .context("the serving node said nothing")?;
    let port = first
        .split_whitespace()
        .find_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .with_context(|| format!("no port in {first:?}"))?;
    Ok((server, port, out))
}

/// What `capsule bench sync` measures of a full sync: over loopback, then
/// through each of `links`, in that order.
pub struct SyncFigures {
    /// Entries synced in each run.
    pub entries: u64,
    /// Decode, verify and store the same entries in process, entries per
    /// second: the bound.
    pub bound: f64,
    /// Raw batch signature verification on every core, entries per second.
    pub raw: f64,
    /// Peak resident memory of the serving node's process, bytes.
    pub peak_rss_serving: u64,
    /// Over QUIC on loopback.
    pub direct: Run,
    /// Through the relay, one per link asked for.
    pub linked: Vec<Run>,
}

/// Full sync of `authors` × `per_author` entries over QUIC on 127.0.0.1
/// between two nodes, each its own `capsule` process (`serve-sync` and
/// `sync`) with its own data directory, as on two machines; then the same
/// sync into a fresh node through a relay making each of `links`.
pub fn measure_sync(
    authors: u64,
    per_author: u64,
    links: &[Link],
    congestion: Congestion,
) -> Result<SyncFigures> {
    anyhow::ensure!(
        authors > 0 && per_author > 0,
        "--authors and --entries-per-author must be at least 1"
    );
    let n = authors * per_author;
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (source_dir, source_id) = bench_node(&tmp.path().join("source"))?;
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

    let (server, port, out) = serve(&exe, &source_dir, congestion)?;
    let server_pid = server.id();
    let source = Source {
        tmp,
        exe,
        key: source_id.author(),
        keys,
        port,
        server,
        congestion,
        _out: out,
    };
    let direct = source.sync_into_new_node(n, None, "direct")?;
    let mut linked = Vec::new();
    for (i, link) in links.iter().enumerate() {
        linked.push(source.sync_into_new_node(n, Some(*link), &format!("linked-{i}"))?);
    }
    let peak_rss_serving = peak_rss_of(server_pid).unwrap_or(0);
    Ok(SyncFigures {
        entries: n,
        bound,
        raw,
        peak_rss_serving,
        direct,
        linked,
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

/// A link to measure sync over: `--rtt-ms`, `--loss`, `--seed`.
#[derive(Debug, Clone, Copy)]
pub struct LinkArgs {
    /// Round-trip time the relay adds, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Share of datagrams dropped each way.
    pub loss: f64,
    /// Seed of the drops.
    pub seed: u64,
}

/// `capsule bench sync`.
pub fn sync(
    authors: u64,
    per_author: u64,
    diff_authors: u64,
    diff: u64,
    link: LinkArgs,
    congestion: Congestion,
) -> Result<()> {
    let threads = rayon::current_num_threads();
    anyhow::ensure!(
        link.rtt_ms.is_some() || link.loss == 0.0,
        "--loss needs --rtt-ms: the loss is measured against a loss-free run at the same round-trip time"
    );
    let links: Vec<Link> = match link.rtt_ms {
        None => Vec::new(),
        Some(rtt) => {
            anyhow::ensure!(
                rtt.is_finite() && (0.0..=10_000.0).contains(&rtt),
                "--rtt-ms must be between 0 and 10000, not {rtt}"
            );
            let one_way = Duration::from_secs_f64(rtt / 2e3);
            let mut links = vec![Link {
                one_way,
                loss: 0.0,
                seed: link.seed,
            }];
            if link.loss > 0.0 {
                links.push(Link {
                    one_way,
                    loss: link.loss,
                    seed: link.seed,
                });
            }
            links
        }
    };
    println!(
        "capsule bench sync: {authors} authors x {per_author} entries over QUIC on 127.0.0.1 between two capsule processes, {threads} verification threads, {} congestion control",
        congestion.name()
    );
    let f = measure_sync(authors, per_author, &links, congestion)?;
    println!(
        "sync over QUIC:                {:>10.0} entries/s",
        f.direct.rate
    );
    println!(
        "in-process bound:              {:>10.0} entries/s  (decode, verify on {threads} threads, store; no network)",
        f.bound
    );
    println!(
        "raw batch verify:              {:>10.0} entries/s  (ed25519-consensus, {threads} threads)",
        f.raw
    );
    println!(
        "sync / in-process bound:       {:>10.3}",
        f.direct.rate / f.bound
    );
    println!(
        "sync / raw verify:             {:>10.3}",
        f.direct.rate / f.raw
    );
    println!(
        "round trips:                   {:>10}",
        f.direct.round_trips
    );
    println!(
        "bytes:                         {:>10} up, {} down, {} besides entries and payloads",
        f.direct.bytes_up, f.direct.bytes_down, f.direct.overhead
    );
    println!(
        "peak memory:                   {:>10.1} MB serving node, {:.1} MB syncing node (separate processes)",
        f.peak_rss_serving as f64 / 1e6,
        f.direct.peak_rss as f64 / 1e6
    );
    if let Some(rtt) = link.rtt_ms {
        println!();
        println!(
            "through a relay adding {rtt} ms round trip ({:.1} ms each way), the same sync into a fresh node:",
            rtt / 2.0
        );
        for (l, run) in links.iter().zip(&f.linked) {
            let (carried, dropped) = run.datagrams;
            println!(
                "{:<31}{:>10.0} entries/s  ({} round trips, {carried} datagrams carried, {dropped} dropped, seed {})",
                format!("{:.2} % loss:", l.loss * 100.0),
                run.rate,
                run.round_trips,
                l.seed
            );
        }
        if let [clean, lossy] = &f.linked[..] {
            println!(
                "lossy / loss-free:             {:>10.3}  (same round-trip time)",
                lossy.rate / clean.rate
            );
        }
    }
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

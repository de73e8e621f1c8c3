//! The media case of `capsule bench sync`: posts with a picture each,
//! mirrored between two `capsule up` processes over QUIC on 127.0.0.1. The
//! blob transfer rate is reported beside the two bounds a mirror's blob
//! path has on this machine, measured in the same run: blake3 hashing on
//! one core (each blob is hashed as it arrives) and writing files the way
//! the blob store does (a temporary file, fsync, rename). Then the time
//! from a post with a picture acknowledged by one node to its picture
//! being served by the other.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand_core::RngCore;

use crate::data_dir::DataDir;
use crate::node::admin;
use crate::picture::{Encoded, Prepared};
use crate::store::Store;
use crate::store::blobs::{BlobId, Blobs};
use crate::store::compose::{self, Attachment};

/// What the media case measured.
#[derive(Debug, Clone)]
pub struct MediaFigures {
    /// Posts, one picture each.
    pub posts: u64,
    /// Bytes of pictures moved.
    pub bytes: u64,
    /// Blob bytes per second from the mirror's start (process, handshake,
    /// the entries' session) to its last blob.
    pub transfer: f64,
    /// Blob bytes per second from the first blob seen held to the last:
    /// blobs only.
    pub streaming: f64,
    /// blake3 on one core, bytes per second.
    pub hashing: f64,
    /// Files written as the blob store writes them, bytes per second.
    pub disk: f64,
    /// Post acknowledged on one node → picture served by the other.
    pub latencies: Vec<Duration>,
    /// Size of the pictures of the latency samples.
    pub latency_size: usize,
}

/// `size` random bytes (incompressible, as a JPEG's are) with `n` in front,
/// so that each is a different blob.
fn blob(size: usize, n: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes
}

fn picture(bytes: Vec<u8>) -> Attachment {
    Attachment {
        prepared: Prepared {
            full: Encoded {
                bytes,
                media_type: "image/jpeg",
                width: 640,
                height: 480,
            },
            thumbnail: None,
        },
        alt: String::new(),
    }
}

/// A running `capsule up`: its gateway and sync addresses.
struct Node {
    child: Child,
    web: String,
    sync: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(exe: &Path, dir: &DataDir, flags: &[&str]) -> Result<Node> {
    let mut child = Command::new(exe)
        .arg("--data-dir")
        .arg(dir.root())
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("BENCH_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .context("cannot start a node")?;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let (mut web, mut sync) = (String::new(), String::new());
    let mut line = String::new();
    while web.is_empty() || sync.is_empty() {
        line.clear();
        anyhow::ensure!(
            out.read_line(&mut line)? > 0,
            "a node stopped while starting"
        );
        if let Some(rest) = line.strip_prefix("Capsule is up: http://") {
            web = rest.split('/').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix("sync: peers dial ") {
            sync = rest.trim().to_string();
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok(Node { child, web, sync })
}

/// Blob files under `dir`'s blob folder.
fn blobs_held(dir: &DataDir) -> u64 {
    Blobs::open(&dir.blobs()).map_or(0, |b| b.list().len() as u64)
}

/// Whether the gateway at `web` serves blob `id` (its first byte asked).
fn served(web: &str, id: &BlobId) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(web) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "GET /api/v1/blobs/{id} HTTP/1.1\r\nHost: {web}\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).is_ok() && &head[9..12] == b"206"
}

/// One-core blake3 and blob-store-like file writes of `posts` × `size`
/// bytes, in bytes per second.
fn bounds(root: &Path, posts: u64, size: usize) -> Result<(f64, f64)> {
    let sample = blob(size, 0);
    let start = Instant::now();
    let mut last = [0u8; 32];
    for n in 0..posts {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&n.to_be_bytes());
        for chunk in sample.chunks(64 * 1024) {
            hasher.update(chunk);
        }
        last = *hasher.finalize().as_bytes();
    }
    let hashing = (posts * size as u64) as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box(last);
    let dir = root.join("disk-bound");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let start = Instant::now();
    for n in 0..posts {
        let tmp = dir.join("tmp").join(n.to_string());
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&sample)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(n.to_string()))?;
        std::fs::File::open(&dir)?.sync_all()?;
    }
    let disk = (posts * size as u64) as f64 / start.elapsed().as_secs_f64();
    Ok((hashing, disk))
}

/// Runs the media case: `posts` posts of a `size`-byte picture mirrored
/// from one node to another, then `samples` posts of `latency_size` bytes,
/// each timed from its acknowledgement to the mirror serving it.
pub fn measure_media(
    posts: u64,
    size: usize,
    samples: usize,
    latency_size: usize,
) -> Result<MediaFigures> {
    anyhow::ensure!(
        posts > 0 && size >= 8,
        "the media case needs posts and bytes"
    );
    let exe = std::env::current_exe().context("cannot find the capsule binary")?;
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (hashing, disk) = bounds(tmp.path(), posts, size)?;

    let (origin_dir, identity) = super::bench_node(&tmp.path().join("origin"))?;
    let identity = std::sync::Arc::new(identity);
    {
        let store = Store::open(&origin_dir.store())?;
        store.change_signer(identity.author(), crate::store::signer::SignerChange::Begin)?;
        let bar = crate::progress::bar(posts, "posting pictures");
        for n in 0..posts {
            let text = format!("picture {n}");
            compose::post(
                &store,
                &identity,
                text,
                None,
                vec![picture(blob(size, n))],
                None,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        store.close()?;
    }
    let (mirror_dir, _) = super::bench_node(&tmp.path().join("mirror"))?;
    {
        let store = Store::open(&mirror_dir.store())?;
        store.mirror(identity.author())?;
        store.close()?;
    }
    let origin = up(&exe, &origin_dir, &[])?;
    let started = Instant::now();
    let mirror = up(
        &exe,
        &mirror_dir,
        &["--peer", &origin.sync, "--sync-interval", "1"],
    )?;
    let deadline = started + Duration::from_secs(600);
    let mut first = None;
    loop {
        let held = blobs_held(&mirror_dir);
        if held > 0 && first.is_none() {
            first = Some((Instant::now(), held));
        }
        if held >= posts {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the mirror did not fetch every picture in 10 minutes"
        );
        // Seldom: counting the files takes a core from the nodes.
        std::thread::sleep(Duration::from_millis(50));
    }
    let transfer = (posts * size as u64) as f64 / started.elapsed().as_secs_f64();
    let (first_at, first_held) = first.expect("a blob was held before the last");
    let streaming =
        ((posts - first_held) * size as u64) as f64 / first_at.elapsed().as_secs_f64().max(1e-3);

    let socket = origin_dir.root().join(admin::SOCKET_FILE);
    let folder = Blobs::open(&origin_dir.blobs())?;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples as u64 {
        let bytes = blob(latency_size, u64::MAX - n);
        let id = folder.put(&bytes)?;
        let (pictures, _) =
            compose::pictures(vec![picture(bytes)]).map_err(|e| anyhow::anyhow!("{e}"))?;
        let request = admin::Request::Post {
            text: format!("timed picture {n}"),
            reply_to: None,
            request: None,
            pictures,
        };
        let answer = admin::call(&socket, &request).context("the origin's socket is gone")??;
        anyhow::ensure!(
            matches!(answer, admin::Answer::Published { .. }),
            "{answer:?}"
        );
        let acknowledged = Instant::now();
        while !served(&mirror.web, &id) {
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(60),
                "the mirror never served a timed picture"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(acknowledged.elapsed());
    }
    latencies.sort();
    drop((mirror, origin));
    Ok(MediaFigures {
        posts,
        bytes: posts * size as u64,
        transfer,
        streaming,
        hashing,
        disk,
        latencies,
        latency_size,
    })
}

/// Prints the media case's figures.
pub fn report(f: &MediaFigures) {
    let mb = |b: f64| b / 1e6;
    let bound = f.hashing.min(f.disk);
    println!(
        "pictures: {} posts of {} KB each ({:.0} MB) mirrored between two capsule processes",
        f.posts,
        f.bytes / f.posts / 1000,
        f.bytes as f64 / 1e6
    );
    println!(
        "blob transfer:                 {:>10.1} MB/s  (from the mirror's start to its last blob: process, handshake and entries included)",
        mb(f.transfer)
    );
    println!(
        "blob transfer, blobs only:     {:>10.1} MB/s  (from the first blob held to the last)",
        mb(f.streaming)
    );
    println!(
        "blake3, one core:              {:>10.1} MB/s",
        mb(f.hashing)
    );
    println!("disk writes (tmp, fsync, rename): {:>7.1} MB/s", mb(f.disk));
    println!(
        "transfer / slower bound:       {:>10.3}  (blobs only: {:.3})",
        f.transfer / bound,
        f.streaming / bound
    );
    if let (Some(first), Some(last)) = (f.latencies.first(), f.latencies.last()) {
        let median = f.latencies[f.latencies.len() / 2];
        println!(
            "post with a {} KB picture → served by the mirror: median {:.1} ms, fastest {:.1} ms, slowest {:.1} ms ({} posts)",
            f.latency_size / 1000,
            median.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            f.latencies.len()
        );
    }
}

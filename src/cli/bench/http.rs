//! `capsule bench http`: the gateway under load beside nginx, in one run.
//!
//! A node (`capsule up`, its own process) holds a log of posts; wrk drives 64
//! connections at its home page and at `entries.bin`, then at nginx serving
//! static files of exactly the same sizes from the same machine. The figure
//! that matters is the ratio. Also measured: time from starting the process
//! to its first answered request, and its resident memory when idle.
//!
//! Anonymous pages are served from the gateway's cache (see
//! [`crate::gateway::cache`]), so the home page is also measured with the
//! cache bypassed: the cost of rendering it from the store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::bench_node;
use crate::log::builder::LogBuilder;
use crate::log::record::Record;
use crate::log::verify::verify_batch;
use crate::store::Store;

/// Connections wrk keeps open.
pub const CONNECTIONS: u32 = 64;

/// Starts measured for the start-up time; the median is reported.
const STARTS: usize = 5;

/// Figures of one wrk run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests per second.
    pub rate: f64,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// What `capsule bench http` measured.
#[derive(Debug, Clone)]
pub struct HttpFigures {
    /// Home page: capsule, then nginx serving a file of its size.
    pub home: (Load, Load),
    /// Home page rendered at every request (the cache bypassed, as for a
    /// logged-in owner).
    pub home_rendered: Load,
    /// entries.bin: capsule, then nginx.
    pub entries: (Load, Load),
    /// Sizes of the home page and the entries.bin response, bytes.
    pub sizes: (usize, usize),
    /// Median time from spawning `capsule up` to its first 200, ms.
    pub start_ms: f64,
    /// Resident memory of the idle node after start and one request, bytes.
    pub idle_rss: u64,
}

/// A child process stopped on drop: SIGTERM first, so nginx's master takes
/// its workers with it and the node closes its store, then SIGKILL if it is
/// still there after 5 s.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `path` from `addr`: status and body (the gateway sends a length).
fn get(addr: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// Starts `capsule up` on `port` and waits for its first 200 on `/`;
/// returns the process and the time that took.
fn start_node(exe: &Path, data: &Path, port: u16) -> Result<(Guard, Duration)> {
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("--data-dir")
        .arg(data)
        .args(["--log-level", "warn", "up"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--sync-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start capsule up")?;
    let guard = Guard(child);
    let addr = format!("127.0.0.1:{port}");
    loop {
        if let Ok((200, _)) = get(&addr, "/") {
            return Ok((guard, started.elapsed()));
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "capsule up did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Runs wrk against `url` for `seconds`, with extra wrk arguments.
fn wrk(url: &str, seconds: u64, extra: &[&str]) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", &CONNECTIONS.to_string()])
        .args(extra)
        .args(["-d", &format!("{seconds}s"), "--latency", url])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("{url} answered errors under load:\n{text}");
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no rate in wrk's output:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .with_context(|| format!("no p99 in wrk's output:\n{text}"))?
        .trim();
    Ok(Load {
        rate,
        p99_ms: millis(p99)?,
    })
}

/// wrk's durations: `812.00us`, `3.41ms`, `1.20s`.
fn millis(text: &str) -> Result<f64> {
    let (number, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1e3)
    } else {
        bail!("unreadable duration {text}")
    };
    Ok(number.parse::<f64>()? * scale)
}

/// nginx serving `root` on `port`, configured like a small static site:
/// worker per core, keep-alive, no access log.
fn start_nginx(dir: &Path, root: &Path, port: u16) -> Result<Guard> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {pid};\nerror_log {err} error;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 100000;\n\
             client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
             fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("nginx.err").display(),
            tmp = dir.display(),
            root = root.display(),
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nginx (apt-get install nginx-light)")?;
    let guard = Guard(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start; see {}",
            dir.join("nginx.err").display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(guard)
}

/// Measures with a log of `posts` posts, each load for `seconds`.
pub fn measure(posts: u64, seconds: u64) -> Result<HttpFigures> {
    ensure!(
        posts > 0 && seconds > 0,
        "--posts and --seconds must be at least 1"
    );
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (dir, identity) = bench_node(&tmp.path().join("node"))?;
    let store = Store::open(&dir.store())?;
    let mut builder = LogBuilder::new(&identity);
    let batch = (1..=posts)
        .map(|seq| {
            let payload = Record::post(format!(
                "Post {seq}: a benchmark post of a typical length, a sentence or two about the day."
            ))
            .encode()
            .expect("short post");
            (
                builder.next(1_764_000_000_000_000 + seq, &payload),
                Some(payload),
            )
        })
        .collect();
    let verified = verify_batch(batch).map_err(|(_, bad)| bad)?;
    store.append(verified)?;
    store.close()?;
    let exe = std::env::current_exe().context("cannot find the capsule binary")?;

    let mut starts = Vec::new();
    for _ in 0..STARTS {
        let port = free_port()?;
        let (node, took) = start_node(&exe, dir.root(), port)?;
        starts.push(took.as_secs_f64() * 1e3);
        drop(node);
    }
    starts.sort_by(f64::total_cmp);
    let start_ms = starts[STARTS / 2];

    let port = free_port()?;
    let (node, _) = start_node(&exe, dir.root(), port)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = super::memory_of(node.0.id(), "VmRSS").unwrap_or(0);
    let addr = format!("127.0.0.1:{port}");
    let author = identity.author();
    let entries_path = format!("/api/v1/authors/{author}/entries.bin?from=1");
    let (status, home) = get(&addr, "/")?;
    ensure!(status == 200, "home page: {status}");
    let (status, entries) = get(&addr, &entries_path)?;
    ensure!(status == 200, "entries.bin: {status}");

    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("home.html"), vec![b'x'; home.len()])?;
    std::fs::write(site.join("entries.bin"), vec![b'x'; entries.len()])?;
    let nginx_dir = tmp.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let nginx_port = free_port()?;
    let _nginx = start_nginx(&nginx_dir, &site, nginx_port)?;
    let nginx = format!("http://127.0.0.1:{nginx_port}");
    let ours = format!("http://{addr}");

    let home_ours = wrk(&format!("{ours}/"), seconds, &[])?;
    let home_nginx = wrk(&format!("{nginx}/home.html"), seconds, &[])?;
    // A session cookie (here an unknown one, so the page is the public one)
    // makes the gateway render instead of answering from its cache.
    let home_rendered = wrk(
        &format!("{ours}/"),
        seconds,
        &["-H", "Cookie: capsule_session=bench"],
    )?;
    let entries_ours = wrk(&format!("{ours}{entries_path}"), seconds, &[])?;
    let entries_nginx = wrk(&format!("{nginx}/entries.bin"), seconds, &[])?;
    drop(node);
    Ok(HttpFigures {
        home: (home_ours, home_nginx),
        home_rendered,
        entries: (entries_ours, entries_nginx),
        sizes: (home.len(), entries.len()),
        start_ms,
        idle_rss,
    })
}

/// `capsule bench http`: measures and prints.
pub fn run(posts: u64, seconds: u64) -> Result<()> {
    let f = measure(posts, seconds)?;
    println!(
        "HTTP under load: wrk, {CONNECTIONS} connections, {seconds} s each, a log of {posts} posts"
    );
    for (name, size, (ours, nginx)) in [
        ("home page", f.sizes.0, f.home),
        ("entries.bin", f.sizes.1, f.entries),
    ] {
        println!(
            "  {name:<12} {size:>7} B  capsule {:>9.0} req/s p99 {:>6.2} ms | nginx {:>9.0} req/s p99 {:>6.2} ms | capsule/nginx {:.2}",
            ours.rate,
            ours.p99_ms,
            nginx.rate,
            nginx.p99_ms,
            ours.rate / nginx.rate
        );
    }
    println!(
        "  home page rendered at every request (cache bypassed): {:.0} req/s p99 {:.2} ms, {:.2} of nginx",
        f.home_rendered.rate,
        f.home_rendered.p99_ms,
        f.home_rendered.rate / f.home.1.rate
    );
    println!(
        "start to first answered request: {:.1} ms (median of {STARTS})",
        f.start_ms
    );
    println!(
        "idle resident memory after start: {:.1} MB",
        f.idle_rss as f64 / 1e6
    );
    Ok(())
}

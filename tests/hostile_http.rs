//! Hostile clients against a running `capsule up`: thousands of connections
//! that send nothing, drip a request head, or stall a body; and hundreds of
//! wrong passphrases at once. The node keeps answering a normal visitor,
//! closes every hostile connection within its timeout, checks no more
//! passphrases than its limit allows, and stays small.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capsule::gateway::auth::{CONCURRENT_CHECKS, MAX_FAILURES, MAX_WAITING};
use capsule::gateway::connections::{BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{Proc, capsule_bin, init, set_passphrase};

const IDLE: usize = 10_000;
const SLOW_HEADERS: usize = 1_000;
const STALLED_BODIES: usize = 500;
const WRONG_LOGINS: usize = 300;
/// What the node may hold resident under all of it.
const MEMORY_LIMIT_KB: u64 = 64 * 1024;
/// How late past its timeout a connection may be closed: the node looks at
/// idle connections every quarter of the idle timeout, and this machine is
/// shared.
const SLACK: Duration = Duration::from_secs(4);

/// A node with a passphrase and metrics; (process, web address, metrics
/// address).
fn start(dir: &Path) -> (Proc, String, String) {
    init(dir);
    set_passphrase(dir, "the right passphrase");
    let mut node = Proc::spawn(
        Command::new(capsule_bin())
            .arg("--data-dir")
            .arg(dir)
            .args(["up", "--listen", "127.0.0.1:0", "--sync-listen"])
            .args(["127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    );
    let address =
        |line: String, prefix: &str| line[prefix.len()..].split('/').next().unwrap().to_string();
    let metrics = address(
        node.wait_line(20, |l| l.starts_with("metrics: http://")),
        "metrics: http://",
    );
    let web = address(
        node.wait_line(20, |l| l.starts_with("Capsule is up: http://")),
        "Capsule is up: http://",
    );
    (node, web, metrics)
}

/// A field of /proc/PID/status, in kB.
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The whole answer to `request` on a fresh connection from `from`.
async fn exchange(web: SocketAddr, from: Option<Ipv4Addr>, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(web, from).await;
    stream.write_all(request).await.unwrap();
    read_all(&mut stream).await
}

async fn connect(web: SocketAddr, from: Option<Ipv4Addr>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
    }
    socket.connect(web).await.unwrap()
}

/// Reads until the node closes (a reset counts as closed).
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer
}

fn status(answer: &[u8]) -> u16 {
    std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `GET /` as a visitor: (status, how long it took).
async fn visit(web: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let request = format!("GET / HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(web, None, request.as_bytes()),
    )
    .await
    .expect("a visitor is answered within 5 s");
    (status(&answer), started.elapsed())
}

/// The Prometheus text of the node's metrics.
async fn metrics(at: &str) -> String {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n");
    let answer = exchange(at.parse().unwrap(), None, request.as_bytes()).await;
    String::from_utf8(answer).unwrap()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A login request with a valid form token, all but its last byte, and
/// that byte.
async fn wrong_login(web: SocketAddr) -> (Vec<u8>, u8) {
    let request = format!("GET /login HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n");
    let page = String::from_utf8(exchange(web, None, request.as_bytes()).await).unwrap();
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let body = format!("passphrase=a+wrong+passphrase&csrf={token}");
    let mut request = format!(
        "POST /login HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Cookie: capsule_login={token}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let last = request.pop().unwrap();
    (request, last)
}

/// Sends `WRONG_LOGINS` wrong passphrases at once, each from `from(i)`: all
/// but the last byte on every connection, then every last byte together.
/// The statuses, with how long after its last byte each came.
async fn burst(web: SocketAddr, from: impl Fn(usize) -> Option<Ipv4Addr>) -> Vec<(u16, Duration)> {
    let (head, last) = wrong_login(web).await;
    let mut held = Vec::new();
    for i in 0..WRONG_LOGINS {
        let mut stream = connect(web, from(i)).await;
        stream.write_all(&head).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answers = tokio::task::JoinSet::new();
    for (i, mut stream) in held.into_iter().enumerate() {
        answers.spawn(async move {
            stream.write_all(&[last]).await.unwrap();
            let sent = Instant::now();
            let status = status(&read_all(&mut stream).await);
            (i, (status, sent.elapsed()))
        });
    }
    let mut statuses = vec![(0, Duration::ZERO); WRONG_LOGINS];
    while let Some(done) = answers.join_next().await {
        let (i, status) = done.unwrap();
        statuses[i] = status;
    }
    statuses
}

#[test]
fn hostile_clients_neither_hold_the_gateway_nor_grow_the_node() {
    let need = (IDLE + SLOW_HEADERS + STALLED_BODIES + 200) as u64;
    let limit = capsule::node::raise_open_file_limit().unwrap();
    if limit < need {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test holds {need} connections; the open-file hard limit is {limit}"
        );
        eprintln!("SKIPPED: the open-file hard limit is {limit}, below the {need} this test holds");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, web, metrics_at) = start(dir.path());
    let pid = node.child.id();
    let web: SocketAddr = web.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle_rss = memory_kb(pid, "VmRSS:");

    runtime.block_on(async {
        // Every hostile connection reports how long after it was opened
        // the node closed it, and what it answered.
        let (opened, mut all_open) = tokio::sync::mpsc::channel::<()>(1024);
        let mut hostile = tokio::task::JoinSet::new();
        let started = Instant::now();
        // Connections are opened a few dozen at a time, within the node's
        // accept queue (the kernel may cap it at 128), so each is accepted
        // as soon as it is open.
        let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        for i in 0..IDLE + SLOW_HEADERS + STALLED_BODIES {
            let (opened, connecting) = (opened.clone(), std::sync::Arc::clone(&connecting));
            hostile.spawn(async move {
                let slot = connecting.acquire().await.unwrap();
                let mut stream = connect(web, None).await;
                let kind = if i < IDLE {
                    "idle"
                } else if i < IDLE + SLOW_HEADERS {
                    stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: capsule\r\nX-Slow: ")
                        .await
                        .unwrap();
                    "slow header"
                } else {
                    stream
                        .write_all(
                            b"POST /login HTTP/1.1\r\nHost: capsule\r\n\
                              Content-Type: application/x-www-form-urlencoded\r\n\
                              Content-Length: 1000\r\n\r\npassphrase=",
                        )
                        .await
                        .unwrap();
                    "stalled body"
                };
                let since = Instant::now();
                drop(slot);
                opened.send(()).await.unwrap();
                drop(opened);
                let closed = async move {
                    if kind == "slow header" {
                        // One more byte of header a second, until the node
                        // hangs up.
                        let (mut read, mut write) = stream.into_split();
                        let drip = tokio::spawn(async move {
                            while write.write_all(b"x").await.is_ok() {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        });
                        let mut answer = Vec::new();
                        let _ = read.read_to_end(&mut answer).await;
                        drip.abort();
                        answer
                    } else {
                        read_all(&mut stream).await
                    }
                };
                // Bounded, so that a connection the node forgot fails the
                // test rather than hanging it.
                let answer = tokio::time::timeout(BODY_READ_TIMEOUT * 3, closed)
                    .await
                    .unwrap_or_else(|_| panic!("a {kind} connection was never closed"));
                (kind, since.elapsed(), status(&answer))
            });
        }
        drop(opened);
        let mut count = 0;
        while all_open.recv().await.is_some() {
            count += 1;
        }
        let opening = started.elapsed();
        assert_eq!(count, IDLE + SLOW_HEADERS + STALLED_BODIES);

        // With all of them held, a visitor is answered.
        let (code, took) = visit(web).await;
        assert_eq!(code, 200);
        let held_rss = memory_kb(pid, "VmRSS:");

        let mut latest = std::collections::HashMap::<&str, Duration>::new();
        while let Some(done) = hostile.join_next().await {
            let (kind, after, code) = done.unwrap();
            let timeout = match kind {
                "idle" => IDLE_TIMEOUT,
                "slow header" => HEADER_READ_TIMEOUT,
                _ => {
                    assert_eq!(code, 408, "a stalled body is told it came too late");
                    BODY_READ_TIMEOUT
                }
            };
            assert!(
                after <= timeout + SLACK,
                "a {kind} connection was held {after:?} (its timeout is {timeout:?})"
            );
            let worst = latest.entry(kind).or_default();
            *worst = (*worst).max(after);
        }
        let after_rss = memory_kb(pid, "VmRSS:");
        let (code, _) = visit(web).await;
        assert_eq!(code, 200);
        eprintln!(
            "{count} hostile connections opened in {opening:.1?}; GET / answered in {took:.1?} \
             while all were held; closed at most {:.1?} (idle), {:.1?} (slow header), {:.1?} \
             (stalled body) after opening; node RSS {idle_rss} kB idle, {held_rss} kB holding \
             them, {after_rss} kB after, peak {} kB",
            latest["idle"],
            latest["slow header"],
            latest["stalled body"],
            memory_kb(pid, "VmHWM:"),
        );

        // Wrong passphrases from one address, all at once: only the limit's
        // worth are checked, the rest are told to come back.
        let statuses = burst(web, |_| None).await;
        let checked = statuses.iter().filter(|(s, _)| *s == 401).count();
        let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
        assert_eq!(checked, MAX_FAILURES as usize, "{statuses:?}");
        assert_eq!(checked + refused, WRONG_LOGINS, "{statuses:?}");
        let text = metrics(&metrics_at).await;
        assert_eq!(
            counter(&text, "capsule_login_failures_total"),
            MAX_FAILURES as u64
        );
        let one_address_rss = memory_kb(pid, "VmRSS:");

        // From as many addresses: only the checks running and those waiting
        // for one are held (a few more get in as the first ones finish);
        // the rest are refused at once.
        let statuses = burst(web, |i| {
            Some(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
        })
        .await;
        let checked = statuses.iter().filter(|(s, _)| *s == 401).count();
        let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
        assert_eq!(checked + refused, WRONG_LOGINS, "{statuses:?}");
        let held = CONCURRENT_CHECKS + MAX_WAITING;
        assert!(
            (held..=2 * held).contains(&checked),
            "{checked} checked; {held} may be held at once"
        );
        let slowest_refusal = statuses
            .iter()
            .filter(|(s, _)| *s == 429)
            .map(|(_, t)| *t)
            .max()
            .unwrap();
        assert!(
            slowest_refusal < Duration::from_secs(2),
            "a refusal took {slowest_refusal:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let peak = memory_kb(pid, "VmHWM:");
        let last_rss = memory_kb(pid, "VmRSS:");
        eprintln!(
            "{WRONG_LOGINS} wrong logins at once from one address: {} checked, {} refused \
             (429), RSS {one_address_rss} kB; from {WRONG_LOGINS} addresses: {checked} checked, \
             {refused} refused (slowest refusal {slowest_refusal:.1?}); RSS {last_rss} kB after, \
             peak {peak} kB",
            MAX_FAILURES,
            WRONG_LOGINS - MAX_FAILURES as usize,
        );
        assert!(
            peak < MEMORY_LIMIT_KB,
            "the node peaked at {peak} kB resident"
        );
        assert!(last_rss < MEMORY_LIMIT_KB);
    });
    let mut node = node;
    assert!(node.terminate().success());
}

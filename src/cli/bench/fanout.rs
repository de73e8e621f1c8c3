//! `capsule bench fanout`: one post delivered to many fediverse followers,
//! each delivery signed (RSA-2048, draft-cavage) and POSTed over HTTP to a
//! sink server on 127.0.0.1 that checks every signature under the node's
//! public key. Followers are spread the way a popular account's are: some
//! on servers with a shared inbox (one delivery per server), the rest on
//! personal inboxes. Reported beside the bound, measured in the same run:
//! RSA signatures per second on every core. Posting latency is timed
//! before the fan-out and while the queue drains, and given as a ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use rayon::prelude::*;

use crate::fediverse::key::{self, ActorKey};
use crate::fediverse::{Federation, delivery, signature};
use crate::identity::Identity;
use crate::store::Store;
use crate::store::compose;
use crate::store::fediverse::{FOLLOWERS, Follower, encode};

/// What the fan-out measured.
#[derive(Debug, Clone)]
pub struct FanoutFigures {
    /// Followers of the node.
    pub followers: u64,
    /// Deliveries of the one post (one per distinct inbox).
    pub deliveries: u64,
    /// From the post's acknowledgement to its last delivery answered.
    pub last: Duration,
    /// Signed deliveries per second of the post.
    pub rate: f64,
    /// RSA-2048 signatures per second on every core: the bound.
    pub signing: f64,
    /// Median posting latency with no queue.
    pub post_idle: Duration,
    /// Median posting latency while the queue drains.
    pub post_draining: Duration,
    /// Signatures the sink refused.
    pub refused: u64,
}

/// The sink's counters.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    refused: AtomicU64,
}

/// Checks a delivery as a receiving server would: digest, then the
/// signature under the node's key.
fn check(public: &[u8], target: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let Some(sig) = text("signature").and_then(|s| signature::Signature::parse(s).ok()) else {
        return false;
    };
    if !text("digest").is_some_and(|d| signature::digest_matches(d, body)) {
        return false;
    }
    sig.signing_string("POST", target, text)
        .is_ok_and(|m| signature::verify_rsa(public, m.as_bytes(), &sig.signature))
}

/// RSA signatures per second on every core, over `n` messages.
fn signing_rate(key: &ActorKey, n: usize) -> f64 {
    let started = Instant::now();
    (0..n).into_par_iter().for_each(|i| {
        std::hint::black_box(key.sign(format!("message {i}").as_bytes()));
    });
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Runs the fan-out: `followers` followers, the first `shared_share` of
/// them on `servers` servers with shared inboxes, the rest on personal
/// inboxes; `samples` posts timed idle and while draining.
pub fn measure(
    followers: u64,
    servers: u64,
    on_servers: u64,
    samples: usize,
) -> Result<FanoutFigures> {
    ensure!(
        servers > 0 || on_servers == 0,
        "--servers must be at least 1 with --on-servers"
    );
    ensure!(
        on_servers <= followers,
        "--on-servers is at most --followers"
    );
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let store = Arc::new(Store::open(&dir.path().join("capsule.redb"))?);
    let identity = Arc::new(Identity::generate());
    store.change_signer(identity.author(), crate::store::signer::SignerChange::Begin)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sink = Arc::new(Sink::default());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let at = listener.local_addr()?;
    let fed = Federation::new(
        Arc::clone(&store),
        dir.path(),
        "http://127.0.0.1:1".into(),
        "bench".into(),
        identity.author(),
        true,
    )?;
    let public = key::pkcs1_from_pem(fed.key.public_pem()).context("the key reads back")?;
    let counted = Arc::clone(&sink);
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (sink, public) = (Arc::clone(&counted), public.clone());
            async move {
                if check(&public, uri.path(), &headers, &body) {
                    sink.received.fetch_add(1, Ordering::Relaxed);
                    StatusCode::ACCEPTED
                } else {
                    sink.refused.fetch_add(1, Ordering::Relaxed);
                    StatusCode::UNAUTHORIZED
                }
            }
        },
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    println!("signing: measuring RSA-2048 on every core");
    let signing = signing_rate(&fed.key, 2_000);
    // Posting with nobody to deliver to.
    let post = |text: String| -> Result<Duration> {
        let started = Instant::now();
        compose::post(&store, &identity, text, None, Vec::new(), None)?;
        Ok(started.elapsed())
    };
    let idle = (0..samples)
        .map(|i| post(format!("idle post {i}")))
        .collect::<Result<Vec<_>>>()?;
    delivery::catch_up(&fed)?;
    fed.tables.write(|txn| {
        let mut table = txn.open_table(FOLLOWERS)?;
        for i in 0..followers {
            let shared =
                (i < on_servers).then(|| format!("http://{at}/shared/{}", i % servers.max(1)));
            let row = Follower {
                inbox: format!("http://{at}/users/{i}/inbox"),
                shared_inbox: shared,
                since_us: 0,
            };
            table.insert(
                format!("http://{at}/users/{i}").as_str(),
                encode(&row).as_slice(),
            )?;
        }
        Ok(())
    })?;
    let deliveries = servers.min(on_servers) + (followers - on_servers);
    println!("fan-out: one post to {followers} followers, {deliveries} inboxes");
    let started = Instant::now();
    compose::post(
        &store,
        &identity,
        "the fan-out post".into(),
        None,
        Vec::new(),
        None,
    )?;
    let drain_fed = fed.clone();
    let drain = runtime.spawn(async move {
        loop {
            let _ = delivery::round(&drain_fed).await;
            let f = drain_fed.clone();
            let left = tokio::task::spawn_blocking(move || f.tables.reader().queued())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Posting while the queue drains (these posts go out too, after it).
    let mut draining = Vec::new();
    while sink.received.load(Ordering::Relaxed) < deliveries / 2 && draining.len() < samples {
        draining.push(post(format!("a post while draining {}", draining.len()))?);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if last.is_none() && sink.received.load(Ordering::Relaxed) >= deliveries {
            last = Some(started.elapsed());
        }
        if drain.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let last = last.context("the post was not delivered to every inbox within 10 minutes")?;
    Ok(FanoutFigures {
        followers,
        deliveries,
        last,
        rate: deliveries as f64 / last.as_secs_f64(),
        signing,
        post_idle: median(idle),
        post_draining: median(draining),
        refused: sink.refused.load(Ordering::Relaxed),
    })
}

/// Prints the figures.
pub fn report(f: &FanoutFigures) {
    println!(
        "fan-out: {} signed deliveries for {} followers, the last {:.0} ms after the post",
        f.deliveries,
        f.followers,
        f.last.as_secs_f64() * 1e3
    );
    println!(
        "  {:.0} signed deliveries/s: {:.2} of the signing bound ({:.0} RSA-2048 signatures/s on every core; the queue signs at a low priority, on what the cores have spare)",
        f.rate,
        f.rate / f.signing,
        f.signing
    );
    println!(
        "  posting: median {:.2} ms idle, {:.2} ms while the queue drains ({:.2}×)",
        f.post_idle.as_secs_f64() * 1e3,
        f.post_draining.as_secs_f64() * 1e3,
        f.post_draining.as_secs_f64() / f.post_idle.as_secs_f64().max(1e-9)
    );
    if f.refused > 0 {
        println!("  the sink refused {} signatures", f.refused);
    }
}

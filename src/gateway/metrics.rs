//! What a running node counts, served as Prometheus text on a loopback-only
//! listener (`capsule up --metrics-listen 127.0.0.1:9184`).

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::store::Store;

/// The node's counters. Relaxed atomics: each is a tally, none orders
/// anything else.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// HTTP responses by class: 2xx, 3xx, 4xx, 5xx.
    pub responses: [AtomicU64; 4],
    /// Sum of response times, µs.
    pub response_us: AtomicU64,
    /// Sync sessions served that ended well.
    pub sync_ok: AtomicU64,
    /// Sync sessions served that failed.
    pub sync_failed: AtomicU64,
    /// Wrong passphrases at /login.
    pub login_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            responses: Default::default(),
            response_us: AtomicU64::new(0),
            sync_ok: AtomicU64::new(0),
            sync_failed: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn response(&self, status: u16, micros: u64) {
        let class = usize::from(status / 100).clamp(2, 5) - 2;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.response_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters and of the store's
    /// size.
    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "capsule_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
            &[("", self.started.elapsed().as_secs())],
        );
        metric(
            "capsule_http_responses_total",
            "counter",
            "HTTP responses sent, by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses[0])),
                ("{class=\"3xx\"}", get(&self.responses[1])),
                ("{class=\"4xx\"}", get(&self.responses[2])),
                ("{class=\"5xx\"}", get(&self.responses[3])),
            ],
        );
        metric(
            "capsule_http_response_microseconds_total",
            "counter",
            "Total time spent answering HTTP requests, in microseconds.",
            &[("", get(&self.response_us))],
        );
        metric(
            "capsule_sync_sessions_total",
            "counter",
            "Sync sessions served to peers, by outcome.",
            &[
                ("{outcome=\"ok\"}", get(&self.sync_ok)),
                ("{outcome=\"failed\"}", get(&self.sync_failed)),
            ],
        );
        metric(
            "capsule_login_failures_total",
            "counter",
            "Wrong passphrases given at /login.",
            &[("", get(&self.login_failures))],
        );
        let authors = store.heads().map(|h| h.len() as u64).unwrap_or(0);
        let entries = store
            .heads()
            .map(|h| h.iter().map(|(_, head)| head.seq).sum())
            .unwrap_or(0);
        metric(
            "capsule_store_authors",
            "gauge",
            "Logs this node holds.",
            &[("", authors)],
        );
        metric(
            "capsule_store_entries",
            "gauge",
            "Entries this node holds (sum of the heads' seqs).",
            &[("", entries)],
        );
        metric(
            "capsule_store_changes",
            "counter",
            "The store's change counter.",
            &[("", store.change_counter().unwrap_or(0))],
        );
        out
    }
}

/// Why `/metrics` could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Only the machine itself may read the counters.
    #[error("--metrics-listen must be a loopback address (127.0.0.1 or [::1]), not {0}")]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Binds `listen` for `/metrics`; it must be a loopback address: the
/// counters are for the machine's own monitoring, not the world.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    if !listen.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(listen));
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError::Listen {
            addr: listen,
            source,
        })
}

/// Serves `/metrics` on `listener` (from [`bind`]) until `until`.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    until: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || async move {
            let text = tokio::task::spawn_blocking(move || metrics.render(&store))
                .await
                .unwrap_or_default();
            let mut response: Response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }),
    );
    tokio::spawn(async move {
        let _ = super::connections::serve(listener, app, until).await;
    });
}

//! HTTP connections: how many a node holds at once and how long each may
//! take, on plain HTTP and HTTPS alike.
//!
//! A client that opens connections and sends nothing, sends a request head
//! a byte at a time, announces a body and stalls, or stops reading its
//! answer would otherwise hold a socket, a task and buffers for ever. Each
//! connection here lives under four rules:
//!
//! - at most [`MAX_CONNECTIONS`] are served at once; one beyond it is closed
//!   as soon as it is accepted, so the kernel's queue keeps moving;
//! - a request head must arrive whole within [`HEADER_READ_TIMEOUT`], and a
//!   request body within [`BODY_READ_TIMEOUT`] of its head (one announcing
//!   more than [`MAX_REQUEST_BODY`] is answered 413 without being read;
//!   the owner's uploads have [`MAX_UPLOAD_BODY`] and
//!   [`UPLOAD_READ_TIMEOUT`]);
//! - a connection on which no request is being handled and no byte has
//!   moved either way for [`IDLE_TIMEOUT`] is closed: a fresh connection
//!   that sends nothing, a kept-alive one between requests, or one whose
//!   client stopped reading its answer;
//! - until its first byte arrives a plain connection costs only its socket
//!   and a small task, and until its first request head has arrived whole
//!   (at most [`MAX_HEAD`], its request line at most [`MAX_REQUEST_LINE`])
//!   only a buffer the size of what it sent; the HTTP machinery and its
//!   buffers come after.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::serve::Listener;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::auth::Client;
use streams::{Rewind, Watched};

mod streams;

/// Connections served at once. A quiet connection costs a few kilobytes
/// (socket, task, and once it speaks hyper's 8 KiB read buffer), so 16,384
/// of them fit in the memory of the smallest VPS; the open-file limit is
/// raised at start so they fit in the descriptor table too.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Time to send one whole request head. A browser sends its head in one
/// packet; ten seconds is room for a slow mobile link and none for a
/// client that drips a header a byte at a time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a whole request body, from its head. The largest body the
/// node takes is a form of [`MAX_REQUEST_BODY`], seconds even at dial-up
/// speed.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection may sit with no request being handled and no byte
/// moving: long enough for a browser to reuse it for a page's assets and
/// the next click, short enough that held-open sockets drain.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body the node reads: a post form with its text.
pub const MAX_REQUEST_BODY: usize = super::MAX_FORM;
/// The largest body of the owner's uploads (a post with pictures, the
/// profile), taken only on `POST /post` and `POST /profile` with a session
/// cookie; the form checks the session before it reads a byte of it.
pub const MAX_UPLOAD_BODY: usize = super::upload::MAX_UPLOAD;
/// Time to send an upload's body: 65 MiB in 15 minutes is 600 kbit/s.
pub const UPLOAD_READ_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest request line read (method, path and query, version): the
/// longest address the API makes is a few hundred bytes; browsers and
/// proxies commonly stop at 8 KiB. Longer is answered 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The longest request head read, headers included; longer is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// What a head is first read into; a browser's fits, and it doubles when not.
const HEAD_BUFFER: usize = 1024;
/// Connections open at a peak after which, once three quarters of them have
/// closed, the freed memory is given back to the system.
const TRIM_AFTER: usize = 256;
/// How often a connection looks at whether it has gone idle: it closes
/// between [`IDLE_TIMEOUT`] and [`IDLE_TIMEOUT`] plus this.
const IDLE_CHECK: Duration = Duration::from_millis(IDLE_TIMEOUT.as_millis() as u64 / 4);

/// A stream whose first byte can be awaited cheaply, before the HTTP
/// machinery is built for it.
pub trait FirstByte {
    /// Resolves when the stream has something to read (or failed).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl FirstByte for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        // Readiness alone can be spurious; a peeked byte (or the end of the
        // stream) is not.
        self.peek(&mut [0u8; 1]).await.map(|_| ())
    }
}

impl FirstByte for tokio_rustls::server::TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        // The handshake may already hold the first request in its buffers;
        // waiting on the socket would miss it. A TLS connection was timed by
        // its handshake and goes straight to HTTP.
        std::future::ready(Ok(()))
    }
}

/// Serves `app` on `listener` under the rules above until `shutdown`
/// resolves; then stops accepting, lets requests in flight finish, and
/// returns once every connection has closed.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: Listener<Addr = std::net::SocketAddr>,
    L::Io: FirstByte + Send + Unpin + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(Open::default());
    // Every connection holds a receiver; the sender's `closed()` resolves
    // when all have gone.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused: u64 = 0;
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(io);
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    limit = MAX_CONNECTIONS,
                    "HTTP connection limit reached; closing new connections"
                );
            }
            continue;
        };
        let (app, stopping, open) = (app.clone(), stopping.clone(), Arc::clone(&open));
        open.opened();
        tokio::spawn(async move {
            connection(io, Client(addr), app, stopping).await;
            drop(slot);
            open.closed();
        });
    }
    let _ = stop.send(true);
    drop(stopping);
    stop.closed().await;
    Ok(())
}

/// Connections open now, and the most open since memory was last given
/// back.
#[derive(Default)]
struct Open {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Open {
    fn opened(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// After a burst, the memory its connections held goes back to the
    /// system (freed, it would stay with the process).
    fn closed(&self) {
        let now = self.now.fetch_sub(1, Ordering::Relaxed) - 1;
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER
            && now <= peak / 4
            && self
                .peak
                .compare_exchange(peak, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tokio::task::spawn_blocking(crate::allocator::release_free_memory);
        }
    }
}

/// One connection, from accept to close.
async fn connection<Io>(
    mut io: Io,
    client: Client,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) where
    Io: FirstByte + AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let head = async {
        match tokio::time::timeout(IDLE_TIMEOUT, io.readable()).await {
            Ok(Ok(())) => {}
            _ => return Head::Closed,
        }
        tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut io))
            .await
            .unwrap_or(Head::Closed)
    };
    let head = tokio::select! {
        head = head => head,
        _ = stopping.wait_for(|s| *s) => return,
    };
    let read = match head {
        Head::Complete(read) => read,
        Head::Closed => return,
        Head::TooLarge { status, api } => {
            let _ = tokio::time::timeout(IDLE_TIMEOUT, refuse_head(&mut io, status, api)).await;
            return;
        }
    };
    // Boxed so that a connection still sending its head is small.
    let io = Rewind {
        read,
        at: 0,
        inner: io,
    };
    Box::pin(http(io, client, app, stopping)).await;
}

/// What came of reading a connection's first request head.
enum Head {
    /// All of it (and whatever followed it in the same reads).
    Complete(Vec<u8>),
    /// The client left or ran out of time.
    Closed,
    /// Its request line or head was longer than the node reads.
    TooLarge { status: StatusCode, api: bool },
}

/// Reads until the first request head has ended, into a buffer that grows
/// only as the head does: a client dripping its head a byte at a time holds
/// a few hundred bytes here, not the HTTP machinery's buffers.
async fn read_head<Io: AsyncRead + Unpin>(io: &mut Io) -> Head {
    use tokio::io::AsyncReadExt;
    let mut read = Vec::with_capacity(HEAD_BUFFER);
    loop {
        if read.len() == read.capacity() {
            read.reserve(read.len());
        }
        let from = read.len().saturating_sub(3);
        match io.read_buf(&mut read).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
        let line = read.iter().position(|&b| b == b'\n').unwrap_or(read.len());
        let api = read
            .split(|&b| b == b' ')
            .nth(1)
            .is_some_and(|target| target.starts_with(b"/api/"));
        if line > MAX_REQUEST_LINE {
            return Head::TooLarge {
                status: StatusCode::URI_TOO_LONG,
                api,
            };
        }
        let end = read[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| from + at + 4)
            .or_else(|| {
                read[from..]
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|at| from + at + 2)
            });
        match end {
            Some(end) if end <= MAX_HEAD => return Head::Complete(read),
            None if read.len() <= MAX_HEAD => {}
            _ => {
                return Head::TooLarge {
                    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    api,
                };
            }
        }
    }
}

/// Answers a head too large to read, in JSON under the API, and closes.
async fn refuse_head<Io: AsyncWrite + Unpin>(
    io: &mut Io,
    status: StatusCode,
    api: bool,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let reason = if status == StatusCode::URI_TOO_LONG {
        "the request line is longer than 8 KiB"
    } else {
        "the request head is longer than 64 KiB"
    };
    let (kind, body) = if api {
        (
            "application/json",
            serde_json::json!({ "error": reason }).to_string(),
        )
    } else {
        ("text/plain; charset=utf-8", format!("{reason}\n"))
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(answer.as_bytes()).await?;
    io.shutdown().await
}

/// What a connection's watchdog reads: bytes moved and requests in hand.
#[derive(Default)]
struct Activity {
    moved: AtomicU64,
    handling: AtomicUsize,
}

/// HTTP/1 on a connection that has spoken.
async fn http<Io>(io: Io, client: Client, app: Router, mut stopping: watch::Receiver<bool>)
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Arc::new(Activity::default());
    let watched = Watched {
        inner: io,
        activity: Arc::clone(&activity),
    };
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (app, activity) = (app.clone(), Arc::clone(&activity));
            async move { Ok::<_, Infallible>(handle(app, client, &activity, request).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(watched), service);
    let mut conn = std::pin::pin!(conn);
    let mut idle_check =
        tokio::time::interval_at(tokio::time::Instant::now() + IDLE_CHECK, IDLE_CHECK);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut quiet) = (0u64, Duration::ZERO);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(client = %client.0, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = idle_check.tick() => {
                let moved = activity.moved.load(Ordering::Relaxed);
                if moved != seen || activity.handling.load(Ordering::Relaxed) > 0 {
                    (seen, quiet) = (moved, Duration::ZERO);
                } else {
                    quiet += IDLE_CHECK;
                    if quiet >= IDLE_TIMEOUT {
                        tracing::debug!(client = %client.0, "closing an idle HTTP connection");
                        return;
                    }
                }
            }
            _ = stopping.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request: refused at once if it announces too large a body, else
/// handed to the gateway with a deadline on its body.
async fn handle(
    app: Router,
    client: Client,
    activity: &Activity,
    request: Request<Incoming>,
) -> Response<Body> {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let upload = request.method() == axum::http::Method::POST
        && matches!(request.uri().path(), "/post" | "/profile")
        && request.headers().get_all(header::COOKIE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.contains(super::auth::SESSION_COOKIE))
        });
    let (most, within) = if upload {
        (MAX_UPLOAD_BODY, UPLOAD_READ_TIMEOUT)
    } else {
        (MAX_REQUEST_BODY, BODY_READ_TIMEOUT)
    };
    if announced.is_some_and(|n| n > most as u64) {
        return closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            if upload {
                "request body too large: a post takes at most 4 pictures of 16 MiB\n"
            } else {
                "request body too large: this node takes at most 256 KiB\n"
            },
        );
    }
    activity.handling.fetch_add(1, Ordering::Relaxed);
    let _handled = Handled(activity);
    let late = Arc::new(AtomicBool::new(false));
    let mut request = request.map(|body| {
        if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(Deadline {
                inner: body,
                sleep: Box::pin(tokio::time::sleep(within)),
                late: Arc::clone(&late),
            })
        }
    });
    request.extensions_mut().insert(ConnectInfo(client));
    let response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
    if late.load(Ordering::Relaxed) {
        return closing(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time\n",
        );
    }
    response
}

/// Marks the end of a request's handling, however it ends.
struct Handled<'a>(&'a Activity);

impl Drop for Handled<'_> {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A plain-text answer after which the connection closes (its body, if
/// any, was not read).
fn closing(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once [`BODY_READ_TIMEOUT`] has passed.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    late: Arc<AtomicBool>,
}

impl hyper::body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.late.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err("request body timed out".into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

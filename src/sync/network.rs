//! Sessions over QUIC: [`sync_once`] dials a peer and runs one session,
//! [`run`] answers one on a connection a peer opened
//! (`crate::mesh::listener` accepts them).
//!
//! One session is one bidirectional stream. Around the pure [`Session`] run:
//! a reader task (frames in, refused past [`super::wire::MAX_MESSAGE`] before allocating),
//! a writer task, a thread that serves wanted entries from the store, and a
//! two-stage pipeline that verifies received entries (signature batches on
//! every core) while the store thread commits the previous batch. Control
//! messages never wait behind entries, and the session thread never blocks
//! on the network, so two nodes serving each other at once cannot deadlock.
//! Every queue is bounded, so a peer can make this node hold only a few
//! MiB, whatever it sends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::protocol::{Action, Role, Session, Stats};
use super::session::{SessionError, authors_of, serve as serve_entries, snapshot};
use super::transport;
use super::wire::{self, Message, WireError};
use crate::identity::{AuthorKey, Identity};
use crate::log::verify::{Unverified, VerifiedEntry, verify_batch};
use crate::store::{AppendReport, Store};

/// While a session waits for its peer, the peer must send something within
/// this long; otherwise the session ends with [`SessionError::Timeout`]. Long
/// enough for a peer verifying a full 1 MiB batch on a slow core.
pub const SESSION_IDLE: Duration = Duration::from_secs(30);

/// Messages read but not yet handled: bounds a session's inbound memory at
/// this many times [`wire::MAX_MESSAGE`].
pub const MESSAGES_IN_FLIGHT: usize = 8;

/// Entry batches (one message each) verified or being stored ahead of the
/// session: enough to keep the verifier and the store thread busy at once.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Verified batches that queued up while the store thread was busy are
/// merged into one append (one commit) up to this many entries.
pub const MERGE_LIMIT: usize = 32_768;

/// Settings of a session.
#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// See [`SESSION_IDLE`].
    pub idle: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig { idle: SESSION_IDLE }
    }
}

/// What a session did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The peer's node key.
    pub peer: Option<AuthorKey>,
    /// The session's own account.
    pub stats: Stats,
    /// Frame bytes sent.
    pub bytes_sent: u64,
    /// Frame bytes received.
    pub bytes_received: u64,
    /// Of those, bytes of entries and payloads sent.
    pub entry_bytes_sent: u64,
    /// Of those, bytes of entries and payloads received.
    pub entry_bytes_received: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Bytes sent and received besides entries and payloads.
    pub fn overhead(&self) -> u64 {
        self.bytes_sent + self.bytes_received - self.entry_bytes_sent - self.entry_bytes_received
    }
}

enum Inbound {
    Message(Message),
    Failed(SessionError),
}

enum Done {
    /// The report on `usize` merged batches.
    Stored(AppendReport, Vec<AuthorKey>, usize),
    Failed(SessionError),
}

/// Runs one session on an established connection.
pub async fn run(
    connection: quinn::Connection,
    role: Role,
    store: Arc<Store>,
    own: Option<AuthorKey>,
    peer: AuthorKey,
    config: SyncConfig,
    progress: Option<ProgressBar>,
) -> Result<Report, SessionError> {
    let transport = |e: &dyn std::fmt::Display| SessionError::Transport(e.to_string());
    let (send, recv) = match role {
        Role::Initiator => connection.open_bi().await,
        Role::Responder => tokio::time::timeout(config.idle, connection.accept_bi())
            .await
            .map_err(|_| SessionError::Timeout(config.idle.as_secs()))?,
    }
    .map_err(|e| transport(&e))?;
    let streams = Streams {
        send,
        recv,
        live: false,
    };
    run_on(
        connection, streams, role, store, own, peer, config, progress,
    )
    .await
}

/// The stream pair of one session, and whether the connection is live
/// (it carries session after session, see [`crate::mesh::live`]) or is closed
/// when the session ends.
pub struct Streams {
    /// Our side.
    pub send: quinn::SendStream,
    /// The peer's side.
    pub recv: quinn::RecvStream,
    /// Whether the connection outlives the session.
    pub live: bool,
}

/// Runs one session on `streams` of `connection`.
#[allow(clippy::too_many_arguments)]
pub async fn run_on(
    connection: quinn::Connection,
    streams: Streams,
    role: Role,
    store: Arc<Store>,
    own: Option<AuthorKey>,
    peer: AuthorKey,
    config: SyncConfig,
    progress: Option<ProgressBar>,
) -> Result<Report, SessionError> {
    let started = Instant::now();
    let transport = |e: &dyn std::fmt::Display| SessionError::Transport(e.to_string());
    let Streams {
        mut send,
        mut recv,
        live,
    } = streams;
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));

    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(MESSAGES_IN_FLIGHT);
    let reader_received = Arc::clone(&received);
    let mut reader = tokio::spawn(async move {
        let fail = |e: SessionError| Inbound::Failed(e);
        loop {
            let body = match transport::read_frame(&mut recv, wire::MAX_MESSAGE).await {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    let e = match e {
                        transport::FrameError::TooLarge { len, .. } => {
                            WireError::TooLarge(len).into()
                        }
                        transport::FrameError::Read(e) => SessionError::Transport(e.to_string()),
                    };
                    let _ = inbound_tx.send(fail(e)).await;
                    break;
                }
            };
            let len = body.len();
            reader_received.fetch_add(4 + len as u64, Ordering::Relaxed);
            let item = match wire::decode(&body) {
                Ok(m) => Inbound::Message(m),
                Err(e) => fail(e.into()),
            };
            let failed = matches!(item, Inbound::Failed(_));
            if inbound_tx.send(item).await.is_err() || failed {
                break;
            }
        }
        // Tell the peer to stop sending if we stopped reading early.
        let _ = recv.stop(0u32.into());
    });

    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (entries_tx, mut entries_rx) = mpsc::channel::<Vec<u8>>(2);
    let writer_sent = Arc::clone(&sent);
    let writer = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                biased;
                Some(f) = control_rx.recv() => f,
                Some(f) = entries_rx.recv() => f,
                else => break,
            };
            if send.write_all(&frame).await.is_err() {
                return;
            }
            writer_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        let _ = send.finish();
        // Wait until the peer has every byte (or gave up) before the
        // connection may close.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    });

    let handle = tokio::runtime::Handle::current();
    let drive_store = Arc::clone(&store);
    let drive_progress = progress.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        drive(Drive {
            role,
            store: drive_store,
            own,
            peer,
            config,
            inbound: inbound_rx,
            control: control_tx,
            entries: entries_tx,
            handle,
            progress: drive_progress,
        })
    })
    .await
    .map_err(|e| transport(&e))?;
    if let Err(e) = &outcome {
        let reason = e.to_string();
        connection.close(
            transport::close::FAILED.into(),
            &reason.as_bytes()[..reason.len().min(200)],
        );
    }
    let _ = writer.await;
    // The responder ends its side after it has stored its checkpoint (it
    // closes the connection, or on a live one finishes its stream): so a
    // peer that starts again at once finds the cursor already remembered.
    match (role, live) {
        (Role::Initiator, false) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
            connection.close(transport::close::DONE.into(), b"done");
        }
        (Role::Responder, false) => connection.close(transport::close::DONE.into(), b"done"),
        (Role::Initiator, true) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut reader).await;
        }
        (Role::Responder, true) => {}
    }
    reader.abort();
    let (stats, entry_bytes_sent, entry_bytes_received) = outcome?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(Report {
        peer: Some(peer),
        stats,
        bytes_sent: sent.load(Ordering::Relaxed),
        bytes_received: received.load(Ordering::Relaxed),
        entry_bytes_sent,
        entry_bytes_received,
        elapsed: started.elapsed(),
    })
}

struct Drive {
    role: Role,
    store: Arc<Store>,
    own: Option<AuthorKey>,
    peer: AuthorKey,
    config: SyncConfig,
    inbound: mpsc::Receiver<Inbound>,
    control: mpsc::UnboundedSender<Vec<u8>>,
    entries: mpsc::Sender<Vec<u8>>,
    handle: tokio::runtime::Handle,
    progress: Option<ProgressBar>,
}

/// The session thread: returns the stats and the entry bytes sent and
/// received.
fn drive(mut d: Drive) -> Result<(Stats, u64, u64), SessionError> {
    let snap = snapshot(&d.store, d.own)?;
    let remembered = d.store.peer(&d.peer.0)?;
    let mut session = Session::new(d.role, snap, remembered);
    let closed = || SessionError::Transport("the connection closed".into());

    // Serving: a thread of its own, so the session keeps reading while the
    // network drains what it serves.
    let (serve_tx, serve_rx) = std_mpsc::channel::<Vec<(AuthorKey, u64, u64)>>();
    let served = Arc::new(Mutex::new(Ok(0u64)));
    // When the serving thread last handed a message to the network: while
    // it makes progress the peer is reading, so the session is not idle.
    let epoch = Instant::now();
    let last_served = Arc::new(AtomicU64::new(0));
    let server = {
        let (store, entries, served) =
            (Arc::clone(&d.store), d.entries.clone(), Arc::clone(&served));
        let last_served = Arc::clone(&last_served);
        std::thread::spawn(move || {
            for ranges in serve_rx {
                let result = serve_entries(&store, &ranges, &mut |m| {
                    let sent = entries
                        .blocking_send(wire::encode(&m))
                        .map_err(|_| SessionError::Transport("the connection closed".into()));
                    last_served.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    sent
                });
                let mut total = served.lock().expect("not poisoned");
                match (result, &mut *total) {
                    (Ok(bytes), Ok(sum)) => *sum += bytes,
                    (Err(e), Ok(_)) => *total = Err(e.to_string()),
                    _ => {}
                }
            }
        })
    };
    drop(d.entries);

    // Receiving: verify, then store, each on its own thread.
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<Done>();
    let (verify_tx, verify_rx) = std_mpsc::sync_channel::<Vec<Unverified>>(BATCHES_IN_FLIGHT);
    let (append_tx, append_rx) =
        std_mpsc::sync_channel::<(Vec<VerifiedEntry>, Vec<AuthorKey>)>(BATCHES_IN_FLIGHT);
    let verifier = {
        let results = results_tx.clone();
        std::thread::spawn(move || {
            for batch in verify_rx {
                let authors = authors_of(&batch);
                match verify_batch(batch) {
                    Ok(v) => {
                        if append_tx.send((v, authors)).is_err() {
                            break;
                        }
                    }
                    Err((_, bad)) => {
                        let _ = results.send(Done::Failed(SessionError::BadEntry(bad)));
                        break;
                    }
                }
            }
        })
    };
    let appender = {
        let store = Arc::clone(&d.store);
        std::thread::spawn(move || {
            while let Ok((mut batch, mut authors)) = append_rx.recv() {
                let mut merged = 1;
                while batch.len() < MERGE_LIMIT {
                    match append_rx.try_recv() {
                        Ok((more, more_authors)) => {
                            batch.extend(more);
                            authors.extend(more_authors);
                            merged += 1;
                        }
                        Err(_) => break,
                    }
                }
                let done = match store.append_mirrored(batch) {
                    Ok(report) => Done::Stored(report, authors, merged),
                    Err(e) => Done::Failed(e.into()),
                };
                if results_tx.send(done).is_err() {
                    break;
                }
            }
        })
    };

    let mut received_bytes = 0u64;
    let mut actions = match d.role {
        Role::Initiator => session.start(),
        Role::Responder => Vec::new(),
    };
    let result = loop {
        let mut finished = false;
        let mut failure = None;
        // The serves of one step share messages.
        let mut serves: Option<Vec<_>> = Some(
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Serve { author, from, to } => Some((*author, *from, *to)),
                    _ => None,
                })
                .collect(),
        );
        for action in actions.drain(..) {
            match action {
                Action::Send(m) => {
                    if d.control.send(wire::encode(&m)).is_err() {
                        failure = Some(closed());
                        break;
                    }
                }
                Action::Serve { .. } => {
                    if let Some(ranges) = serves.take() {
                        let _ = serve_tx.send(ranges);
                    }
                }
                Action::Store(batch) => {
                    received_bytes += batch
                        .iter()
                        .map(|(e, p)| (wire::entry_frame_len(e, p.is_some()) - 2) as u64)
                        .sum::<u64>();
                    if verify_tx.send(batch).is_err() {
                        failure = Some(closed());
                        break;
                    }
                }
                Action::Done => {
                    let sent = super::session::done_message(&d.store, &session)
                        .map(|m| d.control.send(wire::encode(&m)));
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            failure = Some(closed());
                            break;
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Action::Finished => finished = true,
            }
        }
        if let Some(e) = failure {
            break Err(e);
        }
        if finished {
            break Ok(());
        }
        if let Some(bar) = &d.progress {
            let s = session.stats();
            bar.set_length(s.entries_expected.max(1));
            bar.set_position(s.entries_stored);
        }
        let idle = d.config.idle;
        let next = d.handle.block_on(async {
            tokio::time::timeout(idle, async {
                tokio::select! {
                    biased;
                    Some(done) = results_rx.recv() => Some(Err(done)),
                    m = d.inbound.recv() => m.map(Ok),
                }
            })
            .await
        });
        actions = match next {
            Err(_) => {
                let since_served =
                    epoch.elapsed().as_millis() as u64 - last_served.load(Ordering::Relaxed);
                if since_served < idle.as_millis() as u64 {
                    // Quiet peer, but it is reading what we serve.
                    Vec::new()
                } else {
                    break Err(SessionError::Timeout(idle.as_secs()));
                }
            }
            Ok(None) => {
                break Err(SessionError::Transport(
                    "the peer closed the session".into(),
                ));
            }
            Ok(Some(Ok(Inbound::Message(m)))) => match session.on_message(m) {
                Ok(a) => a,
                Err(v) => break Err(v.into()),
            },
            Ok(Some(Ok(Inbound::Failed(e)))) => break Err(e),
            Ok(Some(Err(Done::Stored(report, authors, merged)))) => {
                if report.accepted > 0 {
                    session.note_updated(authors);
                }
                let mut next = session.on_stored(&report);
                for _ in 1..merged {
                    next.extend(session.on_stored(&AppendReport::default()));
                }
                next
            }
            Ok(Some(Err(Done::Failed(e)))) => break Err(e),
        };
    };
    drop(verify_tx);
    drop(serve_tx);
    drop(d.control);
    let _ = verifier.join();
    let _ = appender.join();
    // Leftover results (a session that failed mid-batch) are dropped with
    // the channel.
    drop(results_rx);
    // On failure the serving thread may be blocked on a peer that stopped
    // reading: it ends when the connection closes, so it is not waited for.
    result?;
    let _ = server.join();
    let sent_bytes = std::mem::replace(&mut *served.lock().expect("not poisoned"), Ok(0))
        .map_err(SessionError::Transport)?;
    if let Some(row) = session.checkpoint() {
        d.store.set_peer(d.peer.0, row)?;
    }
    Ok((session.stats().clone(), sent_bytes, received_bytes))
}

/// Dials `addr`, checks that the peer is `peer`, and runs one session.
pub async fn sync_once(
    store: Arc<Store>,
    identity: &Identity,
    peer: AuthorKey,
    addr: SocketAddr,
    config: SyncConfig,
    progress: Option<ProgressBar>,
) -> Result<Report, SessionError> {
    let endpoint = transport::dialler(addr).map_err(|e| SessionError::Transport(e.to_string()))?;
    let connection = transport::connect(&endpoint, identity, peer, addr)
        .await
        .map_err(|e| SessionError::Transport(e.to_string()))?;
    let report = run(
        connection,
        Role::Initiator,
        store,
        Some(identity.author()),
        peer,
        config,
        progress,
    )
    .await;
    endpoint.wait_idle().await;
    report
}

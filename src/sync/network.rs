//! Sessions over QUIC: [`sync_once`] dials a peer and runs one session,
//! [`run`] answers one on a connection a peer opened
//! (`crate::mesh::listener` accepts them).
//!
//! One session is one bidirectional stream. Around the pure [`Session`] run:
//! a reader task (frames in, refused past [`super::wire::MAX_MESSAGE`] before allocating),
//! a writer task, and the tasks of `pipeline.rs`: one serves wanted entries
//! from the store, one verifies received entries (signature batches on
//! every core) while another commits the previous batch. Control
//! messages never wait behind entries, and the session thread never blocks
//! on the network, so two nodes serving each other at once cannot deadlock.
//! Every queue is bounded, so a peer can make this node hold only a few
//! MiB, whatever it sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::pipeline::{Done, blocking, closed, serving, storing, verifying};
use super::protocol::{Checkpoint, Role, Session, Stats, Stored};
use super::session::{Effects, SessionError, apply, done_for, snapshot, stored};
use super::transport::{self, LinkError};
use super::wire::{self, Message, WireError};
use crate::identity::{AuthorKey, Identity};
use crate::log::verify::Unverified;
use crate::store::Store;

/// While a session waits for its peer, the peer must send something within
/// this long; otherwise the session ends with [`SessionError::Timeout`]. Long
/// enough for a peer verifying a full 1 MiB batch on a slow core.
pub const SESSION_IDLE: Duration = Duration::from_secs(30);

/// Messages read but not yet handled: bounds a session's inbound memory at
/// this many times [`wire::MAX_MESSAGE`].
pub const MESSAGES_IN_FLIGHT: usize = 8;

/// Entry batches (one message each) queued at each stage of the pipeline
/// (waiting for verification, verified and waiting for the store): enough
/// to keep the verifier and the store busy at once, and to let batches that
/// queue up behind a commit merge into the next one.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Batches read from the peer and not yet stored: queued and in work at
/// both stages. Bounds what a session holds at this many times
/// [`wire::MAX_MESSAGE`].
pub const MAX_UNSTORED: usize = 4 * BATCHES_IN_FLIGHT;

/// Verified batches that queued up while the store thread was busy are
/// merged into one append (one commit) up to this many entries.
pub const MERGE_LIMIT: usize = 32_768;

/// How long a session's end waits for the peer: for its last bytes to be
/// acknowledged, for it to close the connection, or to finish its stream.
/// The session's work is done by then, so a peer that never answers costs
/// only this, once.
pub const END_GRACE: Duration = Duration::from_secs(5);

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
    let (send, recv) = match role {
        Role::Initiator => connection.open_bi().await,
        Role::Responder => tokio::time::timeout(config.idle, connection.accept_bi())
            .await
            .map_err(|_| SessionError::Timeout(config.idle.as_secs()))?,
    }
    .map_err(|e| SessionError::from(LinkError::from(e)))?;
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
                        transport::FrameError::Read(e) => LinkError::from(e).into(),
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
        let _ = tokio::time::timeout(END_GRACE, send.stopped()).await;
    });

    let outcome = drive(Drive {
        role,
        store: Arc::clone(&store),
        own,
        peer,
        config,
        inbound: inbound_rx,
        control: control_tx,
        entries: entries_tx,
        progress: progress.clone(),
    })
    .await;
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
            let _ = tokio::time::timeout(END_GRACE, connection.closed()).await;
            connection.close(transport::close::DONE.into(), b"done");
        }
        (Role::Responder, false) => connection.close(transport::close::DONE.into(), b"done"),
        (Role::Initiator, true) => {
            let _ = tokio::time::timeout(END_GRACE, &mut reader).await;
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
    progress: Option<ProgressBar>,
}

/// The QUIC side of [`Effects`]: control messages to the writer at once,
/// serves to the serving task, batches into the verify-and-store pipeline,
/// the done message after the step (it needs the store).
struct Quic {
    control: mpsc::UnboundedSender<Vec<u8>>,
    serves: mpsc::UnboundedSender<Vec<(AuthorKey, u64, u64)>>,
    batches: mpsc::UnboundedSender<Vec<Unverified>>,
    /// Batches handed to the pipeline and not yet answered.
    in_flight: usize,
    received_bytes: u64,
    done_pending: bool,
    /// Fork proofs the peer handed over, kept after the step.
    proofs_pending: Vec<(crate::log::entry::Entry, crate::log::entry::Entry)>,
}

impl Effects for Quic {
    fn send(&mut self, message: Message) -> Result<(), SessionError> {
        self.control
            .send(wire::encode(&message))
            .map_err(|_| closed())
    }

    fn serve(&mut self, ranges: Vec<(AuthorKey, u64, u64)>) -> Result<(), SessionError> {
        self.serves.send(ranges).map_err(|_| closed())
    }

    fn store(&mut self, batch: Vec<Unverified>) -> Result<Option<Stored>, SessionError> {
        self.received_bytes += batch
            .iter()
            .map(|(e, p)| (wire::entry_frame_len(e, p.is_some()) - 2) as u64)
            .sum::<u64>();
        self.in_flight += 1;
        self.batches.send(batch).map_err(|_| closed())?;
        Ok(None)
    }

    fn done(&mut self, _: &Session) -> Result<Option<Message>, SessionError> {
        self.done_pending = true;
        Ok(None)
    }

    fn keep_proofs(
        &mut self,
        proofs: Vec<(crate::log::entry::Entry, crate::log::entry::Entry)>,
    ) -> Result<Option<Vec<(AuthorKey, u64)>>, SessionError> {
        self.proofs_pending.extend(proofs);
        Ok(None)
    }
}

/// The session itself, on the connection's tasks: returns the stats and
/// the entry bytes sent and received. It holds no thread of its own: store
/// work and verification run on the shared blocking pool and rayon.
async fn drive(d: Drive) -> Result<(Stats, u64, u64), SessionError> {
    let (own, peer_key) = (d.own, d.peer.0);
    let (snap, remembered) = blocking(&d.store, move |s| {
        Ok((snapshot(s, own)?, s.peer(&peer_key)?))
    })
    .await?;
    let mut session = Session::new(d.role, snap, remembered.map(Checkpoint::from));

    // When the serving task last handed a message to the network: while it
    // makes progress the peer is reading, so the session is not idle.
    let epoch = Instant::now();
    let last_served = Arc::new(AtomicU64::new(0));
    let (serves_tx, serves_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(serving(
        Arc::clone(&d.store),
        serves_rx,
        d.entries,
        Arc::clone(&last_served),
        epoch,
    ));
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<Done>();
    let (batches_tx, batches_rx) = mpsc::unbounded_channel();
    let (verified_tx, verified_rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let verifier = tokio::spawn(verifying(batches_rx, verified_tx, results_tx.clone()));
    let appender = tokio::spawn(storing(Arc::clone(&d.store), verified_rx, results_tx));

    let mut effects = Quic {
        control: d.control,
        serves: serves_tx,
        batches: batches_tx,
        in_flight: 0,
        received_bytes: 0,
        done_pending: false,
        proofs_pending: Vec::new(),
    };
    let mut inbound = d.inbound;
    let mut actions = match d.role {
        Role::Initiator => session.start(),
        Role::Responder => Vec::new(),
    };
    let idle = d.config.idle;
    let result = loop {
        let finished = match apply(&mut session, std::mem::take(&mut actions), &mut effects) {
            Ok(finished) => finished,
            Err(e) => break Err(e),
        };
        let proofs = std::mem::take(&mut effects.proofs_pending);
        if !proofs.is_empty() {
            match blocking(&d.store, move |s| super::session::keep_proofs(s, proofs)).await {
                Ok(kept) => {
                    for (author, seq) in &kept {
                        tracing::warn!(%author, seq, "a peer proved this author's log forked; the proof is kept");
                    }
                    session.note_forks(&kept);
                }
                Err(e) => break Err(e),
            }
        }
        if std::mem::take(&mut effects.done_pending) {
            let counter = session.snapshot_counter();
            let changed = blocking(&d.store, move |s| {
                s.flush()?;
                Ok(s.changed_since(counter)?)
            })
            .await;
            let sent =
                changed.and_then(|(changed, now)| effects.send(done_for(&session, &changed, now)));
            if let Err(e) = sent {
                break Err(e);
            }
        }
        if finished {
            break Ok(());
        }
        if let Some(bar) = &d.progress {
            let s = session.stats();
            bar.set_length(s.entries_expected.max(1));
            bar.set_position(s.entries_stored);
        }
        // Read the peer only while the pipeline has room: so a fast peer
        // makes this node hold at most MAX_UNSTORED batches.
        let room = effects.in_flight < MAX_UNSTORED;
        let next = tokio::time::timeout(idle, async {
            tokio::select! {
                biased;
                Some(done) = results_rx.recv() => Some(Err(done)),
                m = inbound.recv(), if room => m.map(Ok),
                // The pipeline's tasks are gone (they failed, and said so
                // first) and the peer may not be read: nothing is coming.
                else => None,
            }
        })
        .await;
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
                break Err(LinkError::PeerClosed.into());
            }
            Ok(Some(Ok(Inbound::Message(m)))) => match session.on_message(m) {
                Ok(a) => a,
                Err(v) => break Err(v.into()),
            },
            Ok(Some(Ok(Inbound::Failed(e)))) => break Err(e),
            Ok(Some(Err(Done::Stored(report, authors, merged)))) => {
                effects.in_flight = effects.in_flight.saturating_sub(merged);
                session.on_stored(&stored(&report, authors, merged as u32))
            }
            Ok(Some(Err(Done::Failed(e)))) => break Err(e),
        };
    };
    let received_bytes = effects.received_bytes;
    // Closing the queues ends the pipeline's tasks; leftover results (a
    // session that failed mid-batch) are dropped with the channel.
    drop(effects);
    drop(results_rx);
    let _ = verifier.await;
    let _ = appender.await;
    if let Err(e) = result {
        // The serving task may be blocked on a peer that stopped reading:
        // it ends when the connection closes, so it is not waited for.
        server.abort();
        return Err(e);
    }
    let sent_bytes = server
        .await
        .map_err(|e| SessionError::from(LinkError::from(e)))??;
    if let Some(checkpoint) = session.checkpoint() {
        let peer = d.peer.0;
        let shared = session.take_shared();
        blocking(&d.store, move |s| {
            Ok(s.set_peer(peer, checkpoint.into(), shared)?)
        })
        .await?;
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
    let endpoint = transport::dialler(addr).map_err(|e| SessionError::from(LinkError::from(e)))?;
    let connection = transport::connect(&endpoint, identity, peer, addr)
        .await
        .map_err(|e| SessionError::from(LinkError::from(e)))?;
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

//! Live connections (ALPN `capsule-live/1`): a node keeps one QUIC
//! connection open to each peer it follows through. The dialled side opens
//! a unidirectional *notice* stream and writes its change counter whenever
//! it grows; the dialler runs a sync session (the `capsule/1` messages of
//! schema/sync.md, on a new bidirectional stream of the same connection) at
//! once and again after every notice. A new post so reaches a connected
//! follower in one notice and one session — no handshake, no polling.
//!
//! Notice stream: one version byte (1), then the counter as u64 BE, again
//! each time it grows. Counters only grow; a smaller one is a violation.
//! Only the change counter (heads moved) is told, not every commit, so a
//! session's own bookkeeping never wakes the peer into another session.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use rand_core::OsRng;

use super::backoff::jitter;
use super::check::{self, STREAM_CHECK};
use super::exchange::{self, STREAM_PEERS};
use super::fetch;
use super::peers::LivePeers;
use crate::identity::{AuthorKey, Identity};
use crate::store::Store;
use crate::sync::network::{self, Report, Streams, SyncConfig};
use crate::sync::protocol::Role;
use crate::sync::session::SessionError;
use crate::sync::transport::{self, ALPN_LIVE, LinkError};

/// How long a closed live connection waits for the peer to acknowledge
/// the close before the endpoint is dropped: long enough for one round trip
/// on a slow link, short enough not to hold up a node that stops.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Version byte at the start of the notice stream.
pub const NOTICE_VERSION: u8 = 1;

/// First byte of a bidirectional stream on a live connection: a sync
/// session follows.
pub const STREAM_SESSION: u8 = 1;

fn transport_error(e: impl Into<LinkError>) -> SessionError {
    SessionError::Transport(e.into())
}

/// The dialled side of a live connection: notices of its change counter,
/// and a responder session for each stream the peer opens, until the
/// connection closes.
pub async fn serve(
    connection: quinn::Connection,
    store: Arc<Store>,
    own: Option<AuthorKey>,
    peer: AuthorKey,
    config: SyncConfig,
    on_session: Arc<dyn Fn(Result<Report, SessionError>) + Send + Sync>,
    peers: Arc<LivePeers>,
) {
    let notices = {
        let (connection, store) = (connection.clone(), Arc::clone(&store));
        tokio::spawn(async move {
            let result = notify(&connection, &store).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "live notices ended");
            }
        })
    };
    let answering = Arc::new(tokio::sync::Semaphore::new(fetch::MAX_ANSWERING));
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            break;
        }
        match kind[0] {
            STREAM_SESSION => {}
            fetch::STREAM_BLOB => {
                answer_blob(&store, &answering, peer, send, recv);
                continue;
            }
            STREAM_PEERS => {
                if let Err(e) = exchange::answer_peers(&store, own, &mut send, &mut recv).await {
                    tracing::debug!(%peer, error = %e, "peer exchange failed");
                    break;
                }
                continue;
            }
            STREAM_CHECK => {
                // Dialling back takes seconds: sessions go on meanwhile.
                let (connection, peers) = (connection.clone(), Arc::clone(&peers));
                tokio::spawn(async move {
                    answer_check(&connection, &peers, peer, send, recv).await;
                });
                continue;
            }
            other => {
                tracing::debug!(%peer, kind = other, "unknown live stream kind");
                connection.close(transport::close::FAILED.into(), b"unknown stream kind");
                break;
            }
        }
        let streams = Streams {
            send,
            recv,
            live: true,
        };
        let result = network::run_on(
            connection.clone(),
            streams,
            Role::Responder,
            Arc::clone(&store),
            own,
            peer,
            config,
            None,
        )
        .await;
        let failed = result.is_err();
        on_session(result);
        if failed {
            break;
        }
    }
    notices.abort();
}

/// Answers one check stream (its kind byte read).
async fn answer_check(
    connection: &quinn::Connection,
    peers: &LivePeers,
    peer: AuthorKey,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let answered = check::answer(
        connection,
        &peers.identity,
        peer,
        &peers.limiter,
        peers.web_root.clone(),
        &mut send,
        &mut recv,
    )
    .await;
    if let Err(e) = answered {
        tracing::debug!(%peer, error = %e, "check not answered");
    }
}

/// Answers one blob stream (its kind byte read) on its own task, at most
/// [`fetch::MAX_ANSWERING`] at once per connection; past them the stream
/// is refused.
fn answer_blob(
    store: &Arc<Store>,
    answering: &Arc<tokio::sync::Semaphore>,
    peer: AuthorKey,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Ok(turn) = Arc::clone(answering).try_acquire_owned() else {
        let _ = send.reset(transport::close::REFUSED.into());
        return;
    };
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let _turn = turn;
        if let Err(e) = fetch::answer(&store, send, recv).await {
            tracing::debug!(%peer, error = %e, "blob not sent");
        }
    });
}

/// The dialler's side: a peer we dialled may ask us to dial it back, or
/// for a blob; any other stream it opens ends the connection.
async fn answer_checks(
    connection: quinn::Connection,
    peers: Arc<LivePeers>,
    peer: AuthorKey,
    store: Arc<Store>,
) {
    let answering = Arc::new(tokio::sync::Semaphore::new(fetch::MAX_ANSWERING));
    while let Ok((send, mut recv)) = connection.accept_bi().await {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            return;
        }
        if kind[0] == fetch::STREAM_BLOB {
            answer_blob(&store, &answering, peer, send, recv);
            continue;
        }
        if kind[0] != STREAM_CHECK {
            connection.close(transport::close::FAILED.into(), b"unknown stream kind");
            return;
        }
        let (connection, peers) = (connection.clone(), Arc::clone(&peers));
        tokio::spawn(async move {
            answer_check(&connection, &peers, peer, send, recv).await;
        });
    }
}

/// Writes the counter on a new notice stream, then again each time it grows.
async fn notify(connection: &quinn::Connection, store: &Arc<Store>) -> Result<(), SessionError> {
    let mut notices = connection.open_uni().await.map_err(transport_error)?;
    notices
        .write_all(&[NOTICE_VERSION])
        .await
        .map_err(transport_error)?;
    let mut commits = store.subscribe();
    let mut told = None;
    loop {
        let reader = Arc::clone(store);
        let counter = tokio::task::spawn_blocking(move || reader.change_counter())
            .await
            .map_err(transport_error)??;
        if told != Some(counter) {
            notices
                .write_all(&counter.to_be_bytes())
                .await
                .map_err(transport_error)?;
            told = Some(counter);
        }
        commits
            .changed()
            .await
            .map_err(|_| SessionError::Store(crate::store::StoreError::Closed))?;
    }
}

/// What of our own store a peer must hear about: the change counter (our
/// heads moved: our posts, or entries from other peers to pass on) and the
/// mirror set (we want other logs now).
async fn local_state(store: &Arc<Store>) -> Result<(u64, [u8; 32]), SessionError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        for author in store.wanted()? {
            hasher.update(&author.0);
        }
        Ok((store.change_counter()?, *hasher.finalize().as_bytes()))
    })
    .await
    .map_err(transport_error)?
}

/// The dialler's side: connects to `peer` at `addr` and runs a session at
/// once, then again after each notice of the peer, each change of our own
/// heads or mirror set, and at the latest after `resync` (jittered), until
/// the connection ends or `stop` turns true. `on_session` hears each
/// session; returns whether any succeeded.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    store: Arc<Store>,
    identity: &Identity,
    peer: AuthorKey,
    addr: std::net::SocketAddr,
    config: SyncConfig,
    resync: Duration,
    mut stop: watch::Receiver<bool>,
    on_session: &(dyn Fn(&Result<Report, SessionError>) + Send + Sync),
    peers: Option<&Arc<LivePeers>>,
) -> Result<bool, SessionError> {
    let endpoint = transport::dialler(addr).map_err(transport_error)?;
    let connection = transport::connect_for(&endpoint, identity, peer, addr, ALPN_LIVE)
        .await
        .map_err(transport_error)?;
    let checks = peers.map(|peers| {
        peers.insert(peer, connection.clone(), false);
        tokio::spawn(answer_checks(
            connection.clone(),
            Arc::clone(peers),
            peer,
            Arc::clone(&store),
        ))
    });
    let (wake, mut woken) = watch::channel(0u64);
    let listener = {
        let connection = connection.clone();
        tokio::spawn(async move {
            let result = listen(&connection, &wake).await;
            if let Err(e) = &result {
                tracing::debug!(%peer, error = %e, "live notices from the peer ended");
            }
            result
        })
    };
    let mut any = false;
    // Peer exchange after the first session, and again at every resync.
    let mut ask = true;
    let mut local = store.subscribe();
    let outcome = 'sessions: loop {
        woken.mark_unchanged();
        let (mut send, recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) => break Err(transport_error(e)),
        };
        if let Err(e) = send.write_all(&[STREAM_SESSION]).await {
            break Err(transport_error(e));
        }
        let streams = Streams {
            send,
            recv,
            live: true,
        };
        let result = network::run_on(
            connection.clone(),
            streams,
            Role::Initiator,
            Arc::clone(&store),
            Some(identity.author()),
            peer,
            config,
            None,
        )
        .await;
        on_session(&result);
        match result {
            Ok(_) => any = true,
            Err(e) => break Err(e),
        }
        if std::mem::take(&mut ask) {
            // Ask the peer where the logs we follow come from, so the mesh
            // grows past this peer.
            match exchange::ask_peers(&connection, &store, identity.author()).await {
                Ok(n) if n > 0 => tracing::info!(%peer, learned = n, "peer exchange"),
                Ok(_) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "peer exchange failed"),
            }
        }
        let seen = match local_state(&store).await {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        local.mark_unchanged();
        let resync_at = tokio::time::Instant::now() + jitter(resync, &mut OsRng);
        loop {
            enum Wake {
                Notice,
                Local,
                Resync,
                End,
            }
            let wake = tokio::select! {
                changed = woken.changed() => match changed {
                    Ok(()) => Wake::Notice,
                    // The notice stream ended: so did the connection.
                    Err(_) => Wake::End,
                },
                changed = local.changed() => match changed {
                    Ok(()) => Wake::Local,
                    Err(_) => Wake::End,
                },
                _ = tokio::time::sleep_until(resync_at) => Wake::Resync,
                _ = stop.wait_for(|s| *s) => Wake::End,
            };
            match wake {
                Wake::Notice => break,
                Wake::Resync => {
                    ask = true;
                    break;
                }
                Wake::End => break 'sessions Ok(any),
                Wake::Local => match local_state(&store).await {
                    Ok(now) if now != seen => break,
                    Ok(_) => {}
                    Err(e) => break 'sessions Err(e),
                },
            }
        }
    };
    listener.abort();
    if let Some(checks) = checks {
        checks.abort();
    }
    if let Some(peers) = peers {
        peers.remove(&peer, connection.stable_id(), false);
    }
    connection.close(transport::close::DONE.into(), b"done");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    outcome.map(|_| any)
}

/// Reads the notice stream, waking the session loop at each counter.
async fn listen(
    connection: &quinn::Connection,
    wake: &watch::Sender<u64>,
) -> Result<(), SessionError> {
    let mut notices = connection.accept_uni().await.map_err(transport_error)?;
    let mut version = [0u8; 1];
    notices
        .read_exact(&mut version)
        .await
        .map_err(transport_error)?;
    if version[0] != NOTICE_VERSION {
        return Err(LinkError::NoticeVersion(version[0]).into());
    }
    let mut last = 0;
    loop {
        let mut counter = [0u8; 8];
        notices
            .read_exact(&mut counter)
            .await
            .map_err(transport_error)?;
        let counter = u64::from_be_bytes(counter);
        if counter < last {
            return Err(LinkError::Live("the peer's change counter went back").into());
        }
        last = counter;
        wake.send_replace(counter);
    }
}

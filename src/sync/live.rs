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

use super::network::{self, Report, Streams, SyncConfig};
use super::protocol::Role;
use super::session::SessionError;
use super::transport::{self, ALPN_LIVE};
use crate::identity::{AuthorKey, Identity};
use crate::store::Store;

/// Version byte at the start of the notice stream.
pub const NOTICE_VERSION: u8 = 1;

/// First byte of a bidirectional stream on a live connection: a sync
/// session follows.
pub const STREAM_SESSION: u8 = 1;

/// First byte of a bidirectional stream on a live connection: a peer
/// exchange follows.
pub const STREAM_PEERS: u8 = 2;

/// Authors one peer-exchange question may name.
pub const MAX_ASKED: usize = 256;

/// Addresses one peer-exchange answer may carry.
pub const MAX_TOLD: usize = 32;

/// Addresses a node keeps; beyond it, exchanged ones are not learned.
pub const MAX_ADDRESSES: usize = 1024;

/// Largest peer-exchange frame: 256 keys, or 32 addresses of ≤ 52 + 1 +
/// 255 bytes, with their length prefixes.
pub const MAX_EXCHANGE_FRAME: usize = 16 * 1024;

fn transport_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::Transport(e.to_string())
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
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            break;
        }
        match kind[0] {
            STREAM_SESSION => {}
            STREAM_PEERS => {
                if let Err(e) = answer_peers(&store, own, &mut send, &mut recv).await {
                    tracing::debug!(%peer, error = %e, "peer exchange failed");
                    break;
                }
                continue;
            }
            other => {
                tracing::debug!(%peer, kind = other, "unknown live stream kind");
                connection.close(3u32.into(), b"unknown stream kind");
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
        commits.changed().await.map_err(transport_error)?;
    }
}

/// What of our own store a peer must hear about: the change counter (our
/// heads moved: our posts, or entries from other peers to pass on) and the
/// mirror set (we want other logs now).
async fn local_state(store: &Arc<Store>) -> Result<(u64, [u8; 32]), SessionError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        for author in store.mirrors()? {
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
) -> Result<bool, SessionError> {
    let endpoint = transport::dialler(addr).map_err(transport_error)?;
    let connection = transport::connect_for(&endpoint, identity, peer, addr, ALPN_LIVE)
        .await
        .map_err(transport_error)?;
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
            match ask_peers(&connection, &store, identity.author()).await {
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
        let resync_at = tokio::time::Instant::now() + crate::mesh::jitter(resync);
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
    connection.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
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
        return Err(SessionError::Transport(format!(
            "the peer speaks live notices version {}, this node {NOTICE_VERSION}",
            version[0]
        )));
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
            return Err(SessionError::Transport(
                "the peer's change counter went back".into(),
            ));
        }
        last = counter;
        wake.send_replace(counter);
    }
}

async fn write_frame(send: &mut quinn::SendStream, body: &[u8]) -> Result<(), SessionError> {
    send.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .map_err(transport_error)?;
    send.write_all(body).await.map_err(transport_error)
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, SessionError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(transport_error)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_EXCHANGE_FRAME {
        return Err(SessionError::Transport(format!(
            "a peer-exchange frame of {len} bytes (limit {MAX_EXCHANGE_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(transport_error)?;
    Ok(body)
}

/// Decodes a peer-exchange question: postcard `Vec<[u8; 32]>`, at most
/// [`MAX_ASKED`] keys, nothing after.
pub fn decode_question(body: &[u8]) -> Result<Vec<[u8; 32]>, String> {
    let (keys, rest): (Vec<[u8; 32]>, _) =
        postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() || keys.len() > MAX_ASKED {
        return Err("a malformed peer-exchange question".into());
    }
    Ok(keys)
}

/// Decodes a peer-exchange answer: postcard `Vec<String>` of
/// `KEY@HOST:PORT`, at most [`MAX_TOLD`], nothing after; unparsable
/// addresses are dropped.
pub fn decode_answer(body: &[u8]) -> Result<Vec<super::transport::PeerAddr>, String> {
    let (told, rest): (Vec<String>, _) =
        postcard::take_from_bytes(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() || told.len() > MAX_TOLD {
        return Err("a malformed peer-exchange answer".into());
    }
    Ok(told.iter().filter_map(|t| t.parse().ok()).collect())
}

/// Answers "where do these authors' logs come from": the address of each
/// one's own node if this node dials it successfully, then other peers
/// that answered, at most [`MAX_TOLD`] in all.
async fn answer_peers(
    store: &Arc<Store>,
    own: Option<AuthorKey>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), SessionError> {
    let asked = decode_question(&read_frame(recv).await?).map_err(SessionError::Transport)?;
    let reader = Arc::clone(store);
    let told = tokio::task::spawn_blocking(move || -> Result<Vec<String>, SessionError> {
        let book = reader.addresses()?;
        let good =
            |row: &crate::store::tables::AddressRow| row.failures == 0 && row.last_success_us > 0;
        let mut told: Vec<String> = Vec::new();
        for key in &asked {
            if let Some((k, row)) = book.iter().find(|(k, _)| k.0 == *key)
                && good(row)
            {
                told.push(format!("{k}@{}", row.host_port));
            }
        }
        for (k, row) in &book {
            let text = format!("{k}@{}", row.host_port);
            if told.len() >= MAX_TOLD {
                break;
            }
            if good(row) && Some(*k) != own && !told.contains(&text) {
                told.push(text);
            }
        }
        told.truncate(MAX_TOLD);
        Ok(told)
    })
    .await
    .map_err(transport_error)??;
    let body = postcard::to_allocvec(&told).map_err(transport_error)?;
    write_frame(send, &body).await?;
    send.finish().map_err(transport_error)?;
    Ok(())
}

/// Asks the peer where the followed authors' logs come from and learns
/// the addresses it tells; how many were new.
async fn ask_peers(
    connection: &quinn::Connection,
    store: &Arc<Store>,
    us: AuthorKey,
) -> Result<usize, SessionError> {
    let reader = Arc::clone(store);
    let asked: Vec<[u8; 32]> = tokio::task::spawn_blocking(move || -> Result<_, SessionError> {
        Ok(reader
            .followed()?
            .into_iter()
            .take(MAX_ASKED)
            .map(|a| a.0)
            .collect())
    })
    .await
    .map_err(transport_error)??;
    if asked.is_empty() {
        return Ok(0);
    }
    let (mut send, mut recv) = connection.open_bi().await.map_err(transport_error)?;
    send.write_all(&[STREAM_PEERS])
        .await
        .map_err(transport_error)?;
    let body = postcard::to_allocvec(&asked).map_err(transport_error)?;
    write_frame(&mut send, &body).await?;
    send.finish().map_err(transport_error)?;
    let told = decode_answer(&read_frame(&mut recv).await?).map_err(SessionError::Transport)?;
    let writer = Arc::clone(store);
    tokio::task::spawn_blocking(move || -> Result<usize, SessionError> {
        let book = writer.addresses()?;
        let mut learned = 0;
        for peer in told {
            if peer.key == us || book.iter().any(|(k, _)| *k == peer.key) {
                continue;
            }
            if book.len() + learned >= MAX_ADDRESSES {
                break;
            }
            writer.update_address(
                peer.key,
                crate::store::AddressUpdate::Learn {
                    host_port: peer.host_port,
                    web: None,
                    source: crate::store::tables::AddressSource::Exchange,
                },
            )?;
            learned += 1;
        }
        Ok(learned)
    })
    .await
    .map_err(transport_error)?
}

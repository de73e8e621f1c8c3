//! The sync listener: accepts QUIC connections from peers and hands each
//! to its protocol by ALPN: a `capsule/1` connection is one sync session
//! ([`crate::sync::network`]), a `capsule-live/1` one a live connection
//! ([`super::live`]). Connections are bounded in all and per peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::identity::AuthorKey;
use crate::store::Store;
use crate::sync::network::{self, Report, SyncConfig};
use crate::sync::protocol::Role;
use crate::sync::session::SessionError;
use crate::sync::transport::{self, LinkError};

/// Sessions a listener runs at once: bounds the memory all peers together
/// can make it hold (each session stays under ~16 MiB).
pub const MAX_SESSIONS: usize = 32;

/// Sessions one peer may hold open at once with a listener.
pub const MAX_SESSIONS_PER_PEER: usize = 2;

/// Live connections (src/sync/live.rs) a node serves at once; one per peer.
pub const MAX_LIVE: usize = 256;

/// Answers every peer that dials `endpoint`, each in its own session, until
/// the endpoint closes. `on_session` hears how each ended.
pub async fn serve(
    endpoint: quinn::Endpoint,
    store: Arc<Store>,
    own: Option<AuthorKey>,
    config: SyncConfig,
    on_session: Arc<dyn Fn(Result<Report, SessionError>) + Send + Sync>,
    peers: Arc<super::peers::LivePeers>,
) {
    let sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    let per_peer: Arc<Mutex<HashMap<AuthorKey, usize>>> = Arc::default();
    let live = Arc::new(tokio::sync::Semaphore::new(MAX_LIVE));
    while let Some(incoming) = endpoint.accept().await {
        let (live, live_peers) = (Arc::clone(&live), Arc::clone(&peers));
        let Ok(permit) = Arc::clone(&sessions).try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let (store, per_peer, on_session) = (
            Arc::clone(&store),
            Arc::clone(&per_peer),
            Arc::clone(&on_session),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => return on_session(Err(LinkError::from(e).into())),
            };
            let Some(peer) = transport::peer_key(&connection) else {
                connection.close(transport::close::NO_KEY.into(), b"no node key");
                return;
            };
            if transport::protocol(&connection).as_deref() == Some(transport::ALPN_LIVE) {
                // A live connection lasts: it takes a live slot, not a
                // session slot, and one per peer.
                drop(_permit);
                let Ok(_slot) = live.try_acquire_owned() else {
                    connection.close(
                        transport::close::REFUSED.into(),
                        b"too many live connections",
                    );
                    return;
                };
                // A peer dials again when it lost its connection (it
                // restarted, or its network changed) before we noticed:
                // the new connection replaces the stale one. Only the
                // holder of the peer's key can present it.
                let stale = live_peers.insert(peer, connection.clone(), true);
                if let Some(stale) = stale {
                    stale.close(
                        transport::close::DONE.into(),
                        b"replaced by a new connection",
                    );
                }
                let on_live = Arc::clone(&on_session);
                let id = connection.stable_id();
                super::live::serve(
                    connection,
                    store,
                    own,
                    peer,
                    config,
                    Arc::new(move |r| on_live(r)),
                    Arc::clone(&live_peers),
                )
                .await;
                live_peers.remove(&peer, id, true);
                return;
            }
            {
                let mut counts = per_peer.lock().expect("not poisoned");
                let n = counts.entry(peer).or_insert(0);
                if *n >= MAX_SESSIONS_PER_PEER {
                    connection.close(transport::close::REFUSED.into(), b"too many sessions");
                    return;
                }
                *n += 1;
            }
            let result =
                network::run(connection, Role::Responder, store, own, peer, config, None).await;
            {
                let mut counts = per_peer.lock().expect("not poisoned");
                if let Some(n) = counts.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&peer);
                    }
                }
            }
            on_session(result);
        });
    }
}

//! The dial scheduler: a running node dials the peers it knows (bootstrap peers given
//! with `capsule up --peer`, the nodes of the authors it follows) on a
//! jittered interval, and backs off from peers that do not answer. Each
//! dial is one sync session (src/sync/): both sides bring each other up to
//! date on the logs they both want, so a follower's node mirrors and serves
//! the logs it follows, and a node that knows only one mirror of an author
//! still gets the author's log when the author's own node is down.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::OsRng;

use super::backoff::{backoff, jitter};
use tokio::sync::watch;

use super::address::PeerAddr;
use super::live;
use crate::clock::now_us;
use crate::identity::{AuthorKey, Identity};
use crate::store::tables::AddressRow;
use crate::store::{AddressUpdate, Store};
use crate::sync::network::{Report, SyncConfig};
use crate::sync::session::SessionError;
use crate::sync::transport::LinkError;

/// How often each peer is dialled, before jitter, by default.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// The scheduler wakes at a tenth of the interval, but never more often
/// than this (short test intervals) ...
pub const MIN_TICK: Duration = Duration::from_millis(20);

/// ... nor less often than this, so a peer that becomes due is dialled
/// within seconds.
pub const MAX_TICK: Duration = Duration::from_secs(5);

/// How long sessions in flight may go on once the node stops.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Peers dialled at once, each holding a live connection: a node that
/// follows many authors through a few well-connected peers needs few, and
/// each costs a QUIC connection and its timers; 32 is far above what one
/// person's follows need and small next to a peer's [`MAX_LIVE`] slots.
///
/// [`MAX_LIVE`]: crate::mesh::listener::MAX_LIVE
pub const MAX_DIALS: usize = 32;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The interval between sessions with one peer (±25 % jitter).
    pub interval: Duration,
    /// Settings of each session.
    pub session: SyncConfig,
    /// An extra root (PEM) to trust when pulling over HTTPS: for a private
    /// or test CA.
    pub web_root: Option<std::path::PathBuf>,
    /// Where the live connections it dials are kept, for checks.
    pub peers: Option<Arc<super::peers::LivePeers>>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            interval: SYNC_INTERVAL,
            session: SyncConfig::default(),
            web_root: None,
            peers: None,
        }
    }
}

/// How one dial went, for the log and the metrics.
pub type Outcome = Result<Report, SessionError>;

/// Hears how each dial went.
pub type OnSession = Arc<dyn Fn(&PeerAddr, &Outcome) + Send + Sync>;

/// Dials due peers until `stop` turns true. `on_session` hears each
/// outcome.
pub async fn run(
    store: Arc<Store>,
    identity: Arc<Identity>,
    config: MeshConfig,
    mut stop: watch::Receiver<bool>,
    on_session: OnSession,
) {
    let busy: Arc<Mutex<HashSet<AuthorKey>>> = Arc::default();
    // Peers dialled since this node started. The first dial of each is at
    // once, whatever next attempt the book saved before a restart: a node
    // that was down has the most to catch up on.
    let mut dialled: HashSet<AuthorKey> = HashSet::new();
    let mut dials = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_DIALS));
    // Wake often enough to notice a due peer within a tenth of the interval.
    let tick = (config.interval / 10).clamp(MIN_TICK, MAX_TICK);
    loop {
        let due = {
            let store = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || store.addresses()).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "the address book read did not finish");
                    Ok(Vec::new())
                }
            }
        };
        match due {
            Ok(rows) => {
                let now = now_us();
                for (peer, row) in rows {
                    if peer == identity.author()
                        || (row.next_attempt_us > now && dialled.contains(&peer))
                    {
                        continue;
                    }
                    if !busy.lock().expect("busy lock").insert(peer) {
                        continue;
                    }
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        busy.lock().expect("busy lock").remove(&peer);
                        break;
                    };
                    dialled.insert(peer);
                    let config = config.clone();
                    let (store, identity, busy, on_session, stop) = (
                        Arc::clone(&store),
                        Arc::clone(&identity),
                        Arc::clone(&busy),
                        Arc::clone(&on_session),
                        stop.clone(),
                    );
                    dials.spawn(async move {
                        let _slot = slot;
                        dial(&store, &identity, peer, &row, &config, stop, &*on_session).await;
                        busy.lock().expect("busy lock").remove(&peer);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the peer addresses"),
        }
        while dials.try_join_next().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Let sessions in flight finish for a moment, then cut them: a cut
    // session leaves the store consistent, and the next one resumes.
    let finish = async { while dials.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, finish).await.is_err() {
        dials.abort_all();
        while dials.join_next().await.is_some() {}
    }
}

/// A live connection with `peer` (see [`crate::mesh::live`]): a session
/// at once and after each of its notices, until it ends; then the outcome
/// is written to the address book.
async fn dial(
    store: &Arc<Store>,
    identity: &Identity,
    peer: AuthorKey,
    row: &AddressRow,
    config: &MeshConfig,
    stop: watch::Receiver<bool>,
    on_session: &(dyn Fn(&PeerAddr, &Outcome) + Send + Sync),
) {
    let address = PeerAddr {
        key: peer,
        host_port: row.host_port.clone(),
    };
    let at_us = now_us();
    let first = std::sync::atomic::AtomicBool::new(false);
    let heard = |outcome: &Outcome| {
        on_session(&address, outcome);
        // The first success is written at once, so `capsule status` is
        // right while the connection lasts.
        if outcome.is_ok() && !first.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let store = Arc::clone(store);
            let update = AddressUpdate::Attempt {
                ok: true,
                at_us: now_us(),
                next_us: now_us().saturating_add(config.interval.as_micros() as u64),
            };
            tokio::task::spawn_blocking(move || store.update_address(peer, update));
        }
    };
    let outcome = match address.resolve().await {
        Ok(addr) => {
            live::follow(
                Arc::clone(store),
                identity,
                peer,
                addr,
                config.session,
                config.interval,
                stop,
                &heard,
                config.peers.as_ref(),
            )
            .await
        }
        Err(e) => Err(LinkError::from(e).into()),
    };
    let mut ok = matches!(outcome, Ok(true));
    if let Err(e) = outcome {
        on_session(&address, &Err(e));
        if let Some(web) = row.web.clone() {
            ok = pull_over_https(store, &address, web, config.web_root.clone()).await;
        }
    }
    let failures = if ok {
        0
    } else {
        row.failures.saturating_add(1)
    };
    let wait = jitter(backoff(config.interval, failures), &mut OsRng);
    let next_us = now_us().saturating_add(wait.as_micros() as u64);
    let store = Arc::clone(store);
    let update = AddressUpdate::Attempt { ok, at_us, next_us };
    let written = tokio::task::spawn_blocking(move || store.update_address(peer, update)).await;
    if let Ok(Err(e)) = written {
        tracing::warn!(%address, error = %e, "cannot record the dial");
    }
}

/// The fallback when QUIC does not get through: pull the peer's logs from
/// its gateway. Whether it worked.
async fn pull_over_https(
    store: &Arc<Store>,
    address: &PeerAddr,
    web: String,
    root: Option<std::path::PathBuf>,
) -> bool {
    let store = Arc::clone(store);
    let from = web.clone();
    let pulled = tokio::task::spawn_blocking(move || {
        crate::mesh::pull::pull(&store, &from, root.as_deref())
    })
    .await;
    match pulled {
        Ok(Ok(p)) => {
            tracing::info!(%address, %web, entries = p.entries, authors = p.authors, "pulled over HTTPS");
            true
        }
        Ok(Err(e)) => {
            tracing::info!(%address, %web, error = %format!("{e:#}"), "pull over HTTPS failed");
            false
        }
        Err(e) => {
            tracing::warn!(%address, error = %e, "pull over HTTPS failed");
            false
        }
    }
}

//! The node's live connections, both ways (those it dialled and those it
//! serves), and what answering a peer's check needs: the node's identity
//! to dial back with, the root to trust for HTTPS, and the rate limit.
//! `capsule doctor` asks its checks over these connections, since a node
//! dialled by its followers may know no address of theirs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::check::Limiter;
use crate::identity::{AuthorKey, Identity};

/// Live connections by peer, one map each way.
pub struct LivePeers {
    /// The node's identity, for dialling a peer back.
    pub identity: Arc<Identity>,
    /// An extra root to trust when fetching a peer's HTTPS origin.
    pub web_root: Option<PathBuf>,
    /// Who asked for checks lately.
    pub limiter: Limiter,
    served: Mutex<HashMap<AuthorKey, quinn::Connection>>,
    dialled: Mutex<HashMap<AuthorKey, quinn::Connection>>,
    /// Counts the connections kept so far: whoever waits for a peer to ask
    /// (the blob fetcher) wakes when one arrives.
    arrivals: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for LivePeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePeers")
            .field("served", &self.map(true).len())
            .field("dialled", &self.map(false).len())
            .finish_non_exhaustive()
    }
}

impl LivePeers {
    /// No connections yet.
    pub fn new(identity: Arc<Identity>, web_root: Option<PathBuf>) -> LivePeers {
        LivePeers {
            identity,
            web_root,
            limiter: Limiter::default(),
            served: Mutex::default(),
            dialled: Mutex::default(),
            arrivals: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Wakes at every connection kept after this call.
    pub fn arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    fn map(
        &self,
        served: bool,
    ) -> std::sync::MutexGuard<'_, HashMap<AuthorKey, quinn::Connection>> {
        if served { &self.served } else { &self.dialled }
            .lock()
            .expect("not poisoned")
    }

    /// Keeps `connection` to `peer` (`served`: the peer dialled us); returns
    /// the one it replaces.
    pub fn insert(
        &self,
        peer: AuthorKey,
        connection: quinn::Connection,
        served: bool,
    ) -> Option<quinn::Connection> {
        let replaced = self.map(served).insert(peer, connection);
        self.arrivals.send_modify(|n| *n += 1);
        replaced
    }

    /// Forgets `peer`'s connection `id`, unless a newer one replaced it.
    pub fn remove(&self, peer: &AuthorKey, id: usize, served: bool) {
        let mut map = self.map(served);
        if map.get(peer).map(quinn::Connection::stable_id) == Some(id) {
            map.remove(peer);
        }
    }

    /// One live connection per peer, either way.
    pub fn list(&self) -> Vec<(AuthorKey, quinn::Connection)> {
        let mut out: HashMap<AuthorKey, quinn::Connection> = self.map(false).clone();
        for (peer, c) in self.map(true).iter() {
            out.entry(*peer).or_insert_with(|| c.clone());
        }
        out.into_iter().collect()
    }
}

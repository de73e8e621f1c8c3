//! Sync between real nodes over QUIC on 127.0.0.1: real stores in temporary
//! directories, real TLS with node keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capsule::identity::{AuthorKey, Identity};
use capsule::store::Store;
use capsule::sync::network::{self, Report, SyncConfig};
use capsule::sync::session::SessionError;
use capsule::sync::transport;

use crate::sync_protocol::{log, put};

/// A node: identity, store, and (when listening) its address.
pub struct Node {
    pub identity: Identity,
    pub store: Arc<Store>,
    pub _dir: tempfile::TempDir,
}

impl Node {
    pub fn new(seed: u8) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("capsule.redb")).unwrap());
        Node {
            identity: Identity::from_seed([seed; 32]),
            store,
            _dir: dir,
        }
    }

    pub fn key(&self) -> AuthorKey {
        self.identity.author()
    }

    /// Starts answering sync sessions on an ephemeral loopback port.
    pub fn listen(&self) -> (quinn::Endpoint, SocketAddr) {
        let endpoint = transport::listen(&self.identity, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        tokio::spawn(capsule::mesh::listener::serve(
            endpoint.clone(),
            Arc::clone(&self.store),
            Some(self.key()),
            SyncConfig::default(),
            Arc::new(|_| {}),
            Arc::new(capsule::mesh::peers::LivePeers::new(
                Arc::new(
                    Identity::from_file_bytes(&self.identity.to_file_bytes(), "node".as_ref())
                        .unwrap(),
                ),
                None,
            )),
        ));
        (endpoint, addr)
    }

    pub async fn sync_with(
        &self,
        peer: &Node,
        addr: SocketAddr,
        config: SyncConfig,
    ) -> Result<Report, SessionError> {
        tokio::time::timeout(
            Duration::from_secs(120),
            network::sync_once(
                Arc::clone(&self.store),
                &self.identity,
                peer.key(),
                addr,
                config,
                None,
            ),
        )
        .await
        .expect("the session ends in time")
    }

    pub fn seq(&self, author: &AuthorKey) -> u64 {
        self.store.head(author).unwrap().map_or(0, |h| h.seq)
    }

    pub fn mirror(&self, author: AuthorKey) {
        blocking(|| self.store.mirror(author).unwrap());
    }
}

/// Store calls wait for the store thread: never on an async worker as is.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_pulls_100_authors_of_1000_entries() {
    let source = Node::new(1);
    let bar = indicatif::ProgressBar::hidden();
    let authors = blocking(|| capsule::cli::bench::fill(&source.store, 100, 1000, &bar).unwrap());
    let fresh = Node::new(2);
    for a in &authors {
        fresh.mirror(*a);
    }
    let (_endpoint, addr) = source.listen();
    let report = fresh
        .sync_with(&source, addr, SyncConfig::default())
        .await
        .unwrap();
    assert_eq!(report.stats.entries_stored, 100_000);
    assert_eq!(report.stats.authors_updated, 100);
    for a in &authors {
        assert_eq!(fresh.seq(a), 1000);
    }
    let summary = blocking(|| capsule::archive::audit::verify_store(&fresh.store).unwrap());
    assert_eq!(summary.entries, 100_000);

    // One new post later, the returning node fetches just it, by cursor.
    let writer = Identity::from_seed([1; 32]);
    assert_eq!(writer.author(), source.key());
    fresh.mirror(source.key());
    source.mirror(source.key());
    let first = fresh
        .sync_with(&source, addr, SyncConfig::default())
        .await
        .unwrap();
    assert!(
        !first.stats.by_cursor,
        "the interest changed: reconcile again"
    );
    let post = capsule::log::record::Record::post("one more")
        .encode()
        .unwrap();
    blocking(|| {
        // The source's own log begins in its store, as `capsule init` marks it.
        source
            .store
            .change_signer(writer.author(), capsule::store::signer::SignerChange::Begin)
            .unwrap();
        source
            .store
            .publish(&Arc::new(writer), post, 1_800_000_000_000_000)
            .unwrap()
    });
    let again = fresh
        .sync_with(&source, addr, SyncConfig::default())
        .await
        .unwrap();
    assert!(again.stats.by_cursor);
    assert_eq!(again.stats.entries_stored, 1);
    assert_eq!(fresh.seq(&source.key()), 1);
    // The two nodes want different authors (each wants itself), so the
    // responder sees the initiator's list again (102 keys) before the
    // cursors settle the heads; nothing else is sent.
    assert!(again.bytes_sent < 102 * 33 + 200, "{again:?}");
    assert!(again.bytes_received < 600, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_in_one_session() {
    let a = Node::new(1);
    let b = Node::new(2);
    let x = Identity::from_seed([10; 32]);
    let y = Identity::from_seed([11; 32]);
    let xs = log(&x, 300, 0);
    let ys = log(&y, 200, 0);
    blocking(|| {
        put(&a.store, &xs);
        put(&a.store, &ys[..50]);
        put(&b.store, &xs[..100]);
        put(&b.store, &ys);
    });
    for n in [&a, &b] {
        n.mirror(x.author());
        n.mirror(y.author());
    }
    let (_endpoint, addr) = b.listen();
    let report = a.sync_with(&b, addr, SyncConfig::default()).await.unwrap();
    assert_eq!(report.stats.entries_received, 150);
    assert!(report.entry_bytes_sent > 0);
    for n in [&a, &b] {
        assert_eq!(n.seq(&x.author()), 300);
        assert_eq!(n.seq(&y.author()), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_another_key_is_refused() {
    let a = Node::new(1);
    let b = Node::new(2);
    let impostor_of = Node::new(3);
    let (_endpoint, addr) = b.listen();
    let err = a
        .sync_with(&impostor_of, addr, SyncConfig::default())
        .await
        .expect_err("the key does not match");
    let text = err.to_string();
    assert!(text.contains("not the expected"), "{text}");
    assert!(text.contains(&impostor_of.key().to_string()), "{text}");
}

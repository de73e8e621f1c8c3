//! A running node: the store, the sync listener and the web gateway, wired
//! together until SIGINT or SIGTERM, then shut down in order (requests in
//! flight finish, sessions close, the store closes cleanly).

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use super::config::NodeConfig;
use crate::gateway::metrics::Metrics;
use crate::gateway::{self, connections, https};
use crate::identity::Identity;
use crate::store::AddressUpdate;
use crate::store::Store;
use crate::store::tables::AddressSource;
use crate::sync::transport;

/// Why the node stopped, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr} ({hint}): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What to do about it.
        hint: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The sync listener could not start.
    #[error(
        "cannot start the sync listener on {addr} (is another node running? choose another with --sync-listen): {source}"
    )]
    Sync {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: transport::TransportError,
    },
    /// HTTPS could not be set up.
    #[error(transparent)]
    Https(#[from] https::HttpsError),
    /// `/metrics` could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::gateway::metrics::MetricsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The admin socket could not be made.
    #[error("cannot make the admin socket {path}: {source}")]
    Admin {
        /// Where.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The fediverse account could not be set up.
    #[error("cannot set up the fediverse account: {0}")]
    Fediverse(String),
    /// The web gateway failed while serving.
    #[error("the web gateway failed: {0}")]
    Gateway(std::io::Error),
    /// A task of the node ended abnormally.
    #[error("a task of the node failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The sockets a node serves on, bound before it runs: so a test can bind
/// port 0 and learn where, and a bad address fails before anything starts.
pub struct Listeners {
    /// Plain HTTP (the gateway, or the redirect to HTTPS).
    pub web: tokio::net::TcpListener,
    /// HTTPS, with a domain.
    pub https: Option<tokio::net::TcpListener>,
    /// The sync listener.
    pub sync: quinn::Endpoint,
    /// `/metrics`, if asked for.
    pub metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds every address `config` names, as `identity` for sync.
    pub async fn bind(config: &NodeConfig, identity: &Identity) -> Result<Listeners, NodeError> {
        let sync =
            transport::listen(identity, config.sync_listen).map_err(|source| NodeError::Sync {
                addr: config.sync_listen,
                source,
            })?;
        let web = bind(
            config.listen,
            "is another node running? choose another with --listen",
        )
        .await?;
        let https = match &config.https {
            Some(h) => Some(bind(h.listen, "choose another with --https-listen").await?),
            None => None,
        };
        let metrics = match config.metrics_listen {
            Some(listen) => Some(crate::gateway::metrics::bind(listen).await?),
            None => None,
        };
        Ok(Listeners {
            web,
            https,
            sync,
            metrics,
        })
    }
}

/// Runs the node on `listeners` until `shutdown` resolves (the command line
/// passes [`shutdown_signal`]), then stops in order: requests in flight
/// finish, sessions close, the store closes cleanly. Prints where it
/// serves.
pub async fn run(
    identity: Identity,
    store: Store,
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let Listeners {
        web: listener,
        https: https_listener,
        sync: endpoint,
        metrics: metrics_listener,
    } = listeners;
    let admin_socket = config.admin_socket.clone();
    let store = Arc::new(store);
    let identity = Arc::new(identity);
    let owner = identity.author();
    let renewals = Arc::new(https::Renewals::default());
    let live_peers = Arc::new(crate::mesh::peers::LivePeers::new(
        Arc::clone(&identity),
        config.mesh.web_root.clone(),
    ));
    let admin_listener =
        crate::node::admin::bind(&admin_socket).map_err(|source| NodeError::Admin {
            path: admin_socket.clone(),
            source,
        })?;
    let sync_addr = endpoint.local_addr().map_err(|source| NodeError::Listen {
        addr: config.sync_listen,
        hint: "the sync listener",
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let counted = Arc::clone(&metrics);
    let sync = tokio::spawn(crate::mesh::listener::serve(
        endpoint.clone(),
        Arc::clone(&store),
        Some(owner),
        config.mesh.session,
        Arc::new(move |r| match r {
            Ok(_) => {
                counted.sync_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counted.sync_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "sync session failed");
            }
        }),
        Arc::clone(&live_peers),
    ));
    let web = listener.local_addr().map_err(NodeError::Gateway)?;
    let advertised = match (&config.public_sync, &config.https) {
        (Some(given), _) => given.clone(),
        (None, Some(h)) => format!("{}:{}", h.acme.domain, sync_addr.port()),
        (None, None) => sync_addr.to_string(),
    };
    let public_sync = format!("{owner}@{advertised}");
    let (web_origin, http_origin) = match (&config.https, &https_listener) {
        (Some(h), Some(tcp)) => (
            Some(https::origin(
                &h.acme.domain,
                tcp.local_addr().map_err(NodeError::Gateway)?.port(),
            )),
            Some(match web.port() {
                80 => format!("http://{}", h.acme.domain),
                port => format!("http://{}:{port}", h.acme.domain),
            }),
        ),
        _ => (None, None),
    };
    let facts = crate::node::doctor::Facts {
        root: config.root.clone(),
        owner,
        domain: config.https.as_ref().map(|h| {
            (
                h.acme.domain.clone(),
                h.acme.cache.clone(),
                Some(Arc::clone(&renewals)),
            )
        }),
        // The store was checked before the node started (a damaged one
        // is refused).
        integrity: Ok(true),
        reach: Some(crate::node::doctor::Reach {
            peers: Arc::clone(&live_peers),
            sync: advertised,
            web: web_origin.clone(),
            http: http_origin,
        }),
    };
    let federation = super::federation::start(
        &config,
        &store,
        owner,
        web_origin.clone().filter(|_| config.https.is_some()),
        web,
    )
    .await?;
    let admin = tokio::spawn(crate::node::admin::serve(
        admin_listener,
        Arc::clone(&store),
        Arc::clone(&identity),
        Arc::new(facts),
        federation.clone(),
    ));
    let state = gateway::State {
        store: Arc::clone(&store),
        owner,
        sync: Some(public_sync.clone()),
        identity: Arc::clone(&identity),
        owner_auth: Arc::new(gateway::auth::Owner::new(
            config.passphrase.clone(),
            config.https.is_some(),
        )),
        metrics: Arc::clone(&metrics),
        cache: Arc::default(),
        origin: config
            .https
            .as_ref()
            .filter(|h| h.listen.port() != 0)
            .map(|h| gateway::https::origin(&h.acme.domain, h.listen.port())),
        fediverse: federation
            .as_ref()
            .map(|f| format!("@{}@{}", f.handle, f.host)),
        remote_follow: federation.clone().map(super::federation::remote_follow),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().map_err(NodeError::Gateway)?;
        crate::gateway::metrics::serve(listener, metrics, Arc::clone(&store), until_stopped());
        println!("metrics: http://{addr}/metrics");
    }
    for peer in &config.peers {
        let (store, peer) = (Arc::clone(&store), peer.clone());
        tokio::task::spawn_blocking(move || {
            store.update_address(
                peer.key,
                AddressUpdate::Learn {
                    host_port: peer.host_port,
                    web: None,
                    source: AddressSource::Bootstrap,
                },
            )
        })
        .await??;
    }
    let fetcher = tokio::spawn(crate::mesh::fetch::run(crate::mesh::fetch::Fetcher {
        store: Arc::clone(&store),
        peers: Arc::clone(&live_peers),
        web_root: config.mesh.web_root.clone(),
        budget: crate::mesh::budget::Account::new(config.media_budget),
        timeout: crate::mesh::fetch::FETCH_TIMEOUT,
    }));
    let mesh = tokio::spawn(crate::mesh::scheduler::run(
        Arc::clone(&store),
        Arc::clone(&identity),
        crate::mesh::scheduler::MeshConfig {
            peers: Some(Arc::clone(&live_peers)),
            ..config.mesh
        },
        stop.subscribe(),
        Arc::new(|peer, outcome| match outcome {
            Ok(report) => tracing::info!(
                %peer,
                received = report.stats.entries_stored,
                "synced"
            ),
            Err(e) => tracing::info!(%peer, error = %e, "sync failed"),
        }),
    ));
    let app = gateway::router(state);
    let (app, deliveries) = match &federation {
        Some(fed) => {
            let (app, deliveries) = super::federation::serve(app, fed);
            (app, Some(deliveries))
        }
        None => (app, None),
    };
    let mut servers = tokio::task::JoinSet::new();
    match (&config.https, https_listener) {
        (None, _) | (Some(_), None) => {
            println!("Capsule is up: http://{web}/ (author {owner})");
            servers.spawn(connections::serve(listener, app, until_stopped()));
        }
        (Some(h), Some(tcp)) => {
            let acme = &h.acme;
            let (default, challenge) = https::start(acme, Arc::clone(&renewals))?;
            let port = tcp.local_addr().map_err(NodeError::Gateway)?.port();
            let tls =
                https::TlsListener::new(tcp, default, challenge).map_err(NodeError::Gateway)?;
            let origin = https::origin(&acme.domain, port);
            println!("Capsule is up: {origin}/ (author {owner})");
            println!("http://{web}/ redirects there");
            servers.spawn(connections::serve(tls, app, until_stopped()));
            servers.spawn(connections::serve(
                listener,
                https::redirect(origin),
                until_stopped(),
            ));
        }
    }
    println!("sync: listening on UDP {sync_addr}");
    println!("sync: peers dial {public_sync}");
    println!("Ctrl-C stops it.");
    tokio::select! {
        _ = shutdown => {}
        Some(done) = servers.join_next() => {
            done?.map_err(NodeError::Gateway)?;
        }
    }
    let _ = stop.send(true);
    while let Some(done) = servers.join_next().await {
        done?.map_err(NodeError::Gateway)?;
    }
    let _ = mesh.await;
    fetcher.abort();
    let _ = fetcher.await;
    if let Some(deliveries) = deliveries {
        deliveries.abort();
        let _ = deliveries.await;
    }
    drop(federation);
    tracing::info!("stopping");
    admin.abort();
    let _ = admin.await;
    let _ = std::fs::remove_file(&admin_socket);
    endpoint.close(transport::close::DONE.into(), b"shutting down");
    let _ = sync.await;
    endpoint.wait_idle().await;
    // Sessions are gone: the store is ours alone again.
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.close()).await??,
        Err(_) => tracing::warn!("a session still held the store; it closes on exit"),
    }
    Ok(())
}

/// Connections the kernel may hold for a listener before the node accepts
/// them (capped by `net.core.somaxconn`). The usual 128 drops connections
/// in any burst of visitors; a dropped one waits a second or more for the
/// client to try again.
const ACCEPT_BACKLOG: u32 = 4096;

/// A TCP listener on `addr`, or an error saying what to do.
async fn bind(addr: SocketAddr, hint: &'static str) -> Result<tokio::net::TcpListener, NodeError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    listen().map_err(|source| NodeError::Listen { addr, hint, source })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

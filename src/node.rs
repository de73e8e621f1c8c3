//! A running node: the store, the sync listener and the web gateway, wired
//! together until SIGINT or SIGTERM, then shut down in order (requests in
//! flight finish, sessions close, the store closes cleanly).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::gateway;
use crate::identity::Identity;
use crate::store::Store;
use crate::sync::network::{self, SyncConfig};
use crate::sync::transport;

/// Where a node listens.
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    /// The web gateway (HTTP).
    pub listen: SocketAddr,
    /// The sync listener (QUIC, UDP).
    pub sync_listen: SocketAddr,
}

/// Where the node's local admin socket goes (see [`crate::admin`]).
pub type AdminSocket = std::path::PathBuf;

/// Runs the node until SIGINT or SIGTERM. Prints where it listens.
pub async fn run(
    identity: Identity,
    store: Store,
    config: NodeConfig,
    admin_socket: AdminSocket,
) -> Result<()> {
    let store = Arc::new(store);
    let identity = Arc::new(identity);
    let owner = identity.author();
    let admin = tokio::spawn(crate::admin::serve(
        admin_socket.clone(),
        Arc::clone(&store),
        Arc::clone(&identity),
    ));
    let endpoint = transport::listen(&identity, config.sync_listen).with_context(|| {
        format!(
            "cannot start the sync listener on {} (is another node running? choose another with --sync-listen)",
            config.sync_listen
        )
    })?;
    let sync_addr = endpoint.local_addr()?;
    let sync = tokio::spawn(network::serve(
        endpoint.clone(),
        Arc::clone(&store),
        Some(owner),
        SyncConfig::default(),
        Arc::new(|r| {
            if let Err(e) = r {
                eprintln!("sync session failed: {e}");
            }
        }),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another node running? choose another with --listen)",
                config.listen
            )
        })?;
    let web = listener.local_addr()?;
    let state = gateway::State {
        store: Arc::clone(&store),
        owner,
        sync: Some(format!("{owner}@{sync_addr}")),
    };
    println!("Capsule is up: http://{web}/ (author {owner})");
    println!("sync: peers dial {owner}@{sync_addr}");
    println!("Ctrl-C stops it.");
    axum::serve(listener, gateway::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the web gateway failed")?;
    eprintln!("stopping");
    admin.abort();
    let _ = admin.await;
    let _ = std::fs::remove_file(&admin_socket);
    endpoint.close(0u32.into(), b"shutting down");
    let _ = sync.await;
    endpoint.wait_idle().await;
    // Sessions are gone: the store is ours alone again.
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.close()).await??,
        Err(_) => eprintln!("a session still held the store; it closes on exit"),
    }
    Ok(())
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

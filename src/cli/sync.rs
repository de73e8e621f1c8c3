//! Syncing by hand: `sync` (one session with a peer) and `serve-sync`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use super::{load_identity, open_store, runtime};
use crate::data_dir::DataDir;
use crate::mesh::address::PeerAddr;
use crate::sync::network::{self, SyncConfig};
use crate::sync::transport;

pub(super) fn sync(
    dir: &DataDir,
    peer: PeerAddr,
    config: SyncConfig,
    as_json: bool,
) -> Result<ExitCode> {
    let identity = load_identity(dir)?;
    let store = Arc::new(open_store(dir)?);
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let addr = peer.resolve().await?;
        let bar = crate::progress::bar(1, "syncing");
        let report = network::sync_once(
            Arc::clone(&store),
            &identity,
            peer.key,
            addr,
            config,
            Some(bar),
        )
        .await
        .with_context(|| format!("sync with {peer} failed"))?;
        anyhow::Ok(report)
    })?;
    drop(runtime);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    let s = &report.stats;
    if as_json {
        let forks: Vec<_> = s
            .forks
            .iter()
            .map(|(a, seq)| json!({"author": a.to_string(), "seq": seq}))
            .collect();
        println!(
            "{}",
            json!({
                "peer": peer.to_string(),
                "seconds": report.elapsed.as_secs_f64(),
                "shared_authors": s.shared_authors,
                "by_cursor": s.by_cursor,
                "entries_received": s.entries_received,
                "entries_stored": s.entries_stored,
                "authors_updated": s.authors_updated,
                "entry_bytes_sent": report.entry_bytes_sent,
                "bytes_sent": report.bytes_sent,
                "bytes_received": report.bytes_received,
                "overhead": report.overhead(),
                "round_trips": s.round_trips,
                "forks": forks,
                "refused": s.refused,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "synced with {} in {:.2} s",
        peer,
        report.elapsed.as_secs_f64()
    );
    println!(
        "  shared authors: {} (heads settled {})",
        s.shared_authors,
        if s.by_cursor {
            "from the changelog cursors"
        } else {
            "by reconciliation"
        }
    );
    println!(
        "  received {} entries ({} new) for {} authors; sent {} bytes of entries",
        s.entries_received, s.entries_stored, s.authors_updated, report.entry_bytes_sent
    );
    println!(
        "  bytes: {} sent, {} received, {} of them besides entries and payloads",
        report.bytes_sent,
        report.bytes_received,
        report.overhead()
    );
    println!("  round trips: {}", s.round_trips);
    for (author, seq) in &s.forks {
        println!("  fork: {author} signed two entries for seq {seq}; the proof is kept");
    }
    if s.refused > 0 {
        println!(
            "  {} entries were refused (see `capsule verify --store`)",
            s.refused
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn serve_sync(
    dir: &DataDir,
    listen: std::net::SocketAddr,
    config: SyncConfig,
) -> Result<ExitCode> {
    let identity = Arc::new(load_identity(dir)?);
    let store = Arc::new(super::open_checked_store(dir)?);
    let runtime = runtime()?;
    let socket = super::admin_socket(dir);
    runtime.block_on(async {
        // The owner's commands (post, status, log…) reach the store through
        // this process while it holds it, as with `capsule up`.
        let facts = crate::node::doctor::Facts {
            root: dir.root().to_path_buf(),
            owner: identity.author(),
            domain: None,
            integrity: Ok(true),
            reach: None,
        };
        let admin_listener = crate::node::admin::bind(&socket)
            .with_context(|| format!("cannot make the admin socket {}", socket.display()))?;
        let admin = tokio::spawn(crate::node::admin::serve(
            admin_listener,
            Arc::clone(&store),
            Arc::clone(&identity),
            Arc::new(facts),
            None,
        ));
        let endpoint = transport::listen(&identity, listen)?;
        let local = endpoint.local_addr().context("the listening address")?;
        println!("listening for sync on {local} as {}", identity.author());
        println!("peers dial {}@HOST:{}", identity.author(), local.port());
        let on_session = Arc::new(|r: Result<network::Report, _>| match r {
            Ok(r) => eprintln!(
                "session with {}: received {} entries, sent {} bytes of entries, {:.2} s",
                r.peer.map(|p| p.to_string()).unwrap_or_default(),
                r.stats.entries_received,
                r.entry_bytes_sent,
                r.elapsed.as_secs_f64()
            ),
            Err(e) => eprintln!("session failed: {e}"),
        });
        let server = tokio::spawn(crate::mesh::listener::serve(
            endpoint.clone(),
            Arc::clone(&store),
            Some(identity.author()),
            config,
            on_session,
            Arc::new(crate::mesh::peers::LivePeers::new(
                Arc::clone(&identity),
                None,
            )),
        ));
        crate::node::shutdown_signal().await;
        eprintln!("stopping");
        endpoint.close(transport::close::DONE.into(), b"shutting down");
        let _ = server.await;
        endpoint.wait_idle().await;
        admin.abort();
        let _ = admin.await;
        let _ = std::fs::remove_file(&socket);
        anyhow::Ok(())
    })?;
    drop(runtime);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    Ok(ExitCode::SUCCESS)
}

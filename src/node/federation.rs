//! The node's fediverse account, when it has one: with `--domain`, under
//! `https://DOMAIN`; without, only with `--insecure-federation` (tests on
//! one machine), under the plain-http listen address.

use std::net::SocketAddr;
use std::sync::Arc;

use super::config::NodeConfig;
use super::run::NodeError;
use crate::fediverse::{Federation, delivery, effects, routes};
use crate::identity::AuthorKey;
use crate::store::Store;

/// Sets the account up, or says why there is none. `https` is the HTTPS
/// origin with `--domain`; `web` the plain-http listen address.
pub async fn start(
    config: &NodeConfig,
    store: &Arc<Store>,
    owner: AuthorKey,
    https: Option<String>,
    web: SocketAddr,
) -> Result<Option<Arc<Federation>>, NodeError> {
    let origin = match https {
        Some(origin) => origin,
        None if config.insecure_federation => format!("http://{web}"),
        None => {
            tracing::info!("no fediverse account without --domain");
            return Ok(None);
        }
    };
    if config.insecure_federation {
        tracing::warn!(
            "--insecure-federation: talking to plain http:// and loopback servers; never use this on a real server"
        );
    }
    let (store, root, handle, insecure) = (
        Arc::clone(store),
        config.root.clone(),
        config.handle.clone(),
        config.insecure_federation,
    );
    let fed = tokio::task::spawn_blocking(move || {
        let fed = Federation::new(store, &root, origin, handle, owner, insecure)?;
        effects::forget_seen(&fed, crate::clock::now_us())?;
        anyhow::Ok(fed)
    })
    .await
    .map_err(|e| NodeError::Fediverse(e.to_string()))?
    .map_err(|e| NodeError::Fediverse(format!("{e:#}")))?;
    println!(
        "fediverse: @{}@{} (people on Mastodon search for this to follow you)",
        fed.handle, fed.host
    );
    Ok(Some(Arc::new(fed)))
}

/// The gateway's routes with the fediverse's beside them, and content
/// negotiation in front; the delivery queue started.
pub fn serve(
    app: axum::Router,
    fed: &Arc<Federation>,
) -> (axum::Router, tokio::task::JoinHandle<()>) {
    let mut fediverse = routes::router(Arc::clone(fed));
    if fed.origin.starts_with("https://") {
        // The gateway's own routes carry HSTS already; these join them.
        fediverse = fediverse.layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static(crate::gateway::HSTS),
                );
                response
            },
        ));
    }
    let app = app
        .merge(fediverse)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(fed),
            routes::negotiate,
        ));
    (app, tokio::spawn(delivery::run(Arc::clone(fed))))
}

/// The follow form's way to the fediverse.
pub fn remote_follow(fed: Arc<Federation>) -> crate::gateway::RemoteFollow {
    Arc::new(move |handle: String, follow: bool| {
        let fed = Arc::clone(&fed);
        Box::pin(async move {
            let done = if follow {
                crate::fediverse::follow::follow(&fed, &handle).await
            } else {
                crate::fediverse::follow::unfollow(&fed, &handle).await
            };
            done.map_err(|e| e.to_string())
        })
    })
}

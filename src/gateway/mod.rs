//! The web gateway: the microblog's pages, its Atom feed and the read-only
//! log API, served by axum.
//!
//! - [`pages`]: the page handlers: a log, the owner's home, a post's thread.
//! - [`timeline`]: what the pages show, read from the store.
//! - [`views`]: the HTML templates (no JavaScript needed).
//! - [`feed`]: the Atom feed at `/feed.atom`.
//! - [`api`]: `/api/v1/`, JSON and raw entries.
//! - [`blobs`]: `/api/v1/blobs/{hash}`, pictures by their hash, with
//!   ranges and a year of caching.
//! - [`assets`]: web/ embedded in the binary under content-hashed URLs.
//! - [`cache`]: anonymous answers kept in memory until the store's next
//!   commit.
//! - [`auth`]: who is looking: the owner's sessions and login limits.
//! - [`fediverse`]: what the pages show of the fediverse (the account,
//!   remote replies and reactions, followed accounts' notes).
//! - [`forms`]: the owner's forms (login, post, delete, follow), CSRF-checked.
//! - [`upload`]: the forms that carry pictures (a post, the profile).
//! - [`passphrase`]: the owner's argon2id passphrase file.
//! - [`https`]: HTTPS with an ACME certificate, and the redirect to it.
//! - [`metrics`]: the node's Prometheus counters and `/metrics`.
//!
//! Handlers never touch redb on an async thread: store reads run through
//! [`State::read`] on the blocking pool.

pub mod api;
pub mod assets;
pub mod auth;
pub mod blobs;
pub mod cache;
pub mod connections;
pub mod fediverse;
pub mod feed;
pub mod forms;
pub mod https;
pub mod metrics;
pub mod pages;
pub mod passphrase;
pub mod timeline;
pub mod upload;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::identity::{AuthorKey, Identity};
use crate::store::{Store, StoreError};

/// What every handler shares.
#[derive(Clone)]
pub struct State {
    /// The store.
    pub store: Arc<Store>,
    /// The owner's author key.
    pub owner: AuthorKey,
    /// Where peers reach this node's sync listener, `KEY@HOST:PORT`, if it
    /// listens.
    pub sync: Option<String>,
    /// The owner's key, for what they publish from the browser.
    pub identity: Arc<Identity>,
    /// The owner's web sessions.
    pub owner_auth: Arc<auth::Owner>,
    /// The node's counters.
    pub metrics: Arc<crate::gateway::metrics::Metrics>,
    /// Anonymous responses kept until the store changes.
    pub cache: Arc<cache::Cache>,
    /// `https://DOMAIN[:PORT]` with --domain: the feed's links are
    /// absolute under it.
    pub origin: Option<String>,
    /// `@HANDLE@HOST`, when the node has a fediverse account.
    pub fediverse: Option<String>,
    /// Follows (true) or unfollows (false) `@user@host` on the fediverse,
    /// when the node has an account: what the follow form calls.
    pub remote_follow: Option<RemoteFollow>,
}

/// See [`State::remote_follow`]: the account's id, or why not.
pub type RemoteFollow = Arc<
    dyn Fn(
            String,
            bool,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

impl State {
    /// Refuses an author the owner blocks (403).
    pub async fn served(&self, author: AuthorKey) -> Result<(), Error> {
        if self.read(move |s| s.is_blocked(&author)).await? {
            return Err(Error::Blocked(author));
        }
        Ok(())
    }

    /// Runs a store read on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Error> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(Internal::Task)?
            .map_err(|e| Error::Internal(Internal::Store(e)))
    }
}

/// Why a request failed; API errors are JSON `{"error": "..."}`.
#[derive(Debug)]
pub enum Error {
    /// A parameter is malformed or out of range (400).
    BadRequest(String),
    /// Nothing here (404).
    NotFound(String),
    /// The owner blocks this author: the node does not serve them (403).
    Blocked(AuthorKey),
    /// The node failed (500).
    Internal(Internal),
}

/// How the node failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that read the store did not finish.
    #[error("a store read failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A file (a blob) could not be read.
    #[error("a file read failed: {0}")]
    Io(std::io::Error),
}

impl From<Internal> for Error {
    fn from(e: Internal) -> Error {
        Error::Internal(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Error::Blocked(a) => (
                StatusCode::FORBIDDEN,
                format!("this node does not serve the log of {a}: its owner blocks that author"),
            ),
            Error::Internal(e) => {
                tracing::warn!(error = %e, "a request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        };
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

/// Content-Security-Policy of every page: nothing but this site's own
/// styles and images, no scripts, no framing. `connect-src 'self'` lets
/// tools that read the site from inside a page (an audit fetching
/// `/robots.txt`) reach it; with no script allowed, the page itself
/// connects nowhere.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form body accepted: a post's text is at most 64 KiB.
pub const MAX_FORM: usize = 256 * 1024;

/// How long browsers keep to HTTPS once they saw it (a year).
pub const HSTS: &str = "max-age=31536000";

/// A seq, `from` or `limit` as the API describes them (schema/openapi.yaml:
/// an int64): ASCII digits only, no sign, at most 2^63 − 1. One rule for
/// paths and queries alike.
pub fn whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64)
}

/// The gateway's routes.
pub fn router(state: State) -> Router {
    let https = state.owner_auth.secure();
    let router =
        Router::new()
            .route("/", get(pages::timeline))
            .route("/{author}", get(pages::author_page))
            .route("/{author}/{seq}", get(pages::permalink))
            .route("/feed.atom", get(feed::feed))
            .route("/robots.txt", get(robots))
            .route("/login", get(forms::login_page).post(forms::login))
            .route("/logout", post(forms::logout))
            .route(
                "/post",
                post(upload::post).layer(axum::extract::DefaultBodyLimit::max(upload::MAX_UPLOAD)),
            )
            .route(
                "/profile",
                post(upload::profile)
                    .layer(axum::extract::DefaultBodyLimit::max(upload::MAX_UPLOAD)),
            )
            .route("/delete", post(forms::delete))
            .route("/follow", post(forms::follow))
            .route("/unfollow", post(forms::unfollow))
            .route("/block", post(forms::block))
            .route("/.well-known/capsule", get(api::well_known))
            .route(
                "/assets/{hash}/{name}",
                get(|Path((hash, name)): Path<(String, String)>| async move {
                    assets::serve(&hash, &name)
                }),
            )
            .nest("/api/v1", api::router())
            .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
            .layer(axum::middleware::from_fn(forms::same_origin))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                cache::layer,
            ))
            .layer(axum::middleware::map_response(secure_headers))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state.metrics),
                track,
            ))
            .with_state(state);
    if https {
        router.layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS),
                );
                response
            },
        ))
    } else {
        router
    }
}

/// Counts every response and logs it at debug level.
async fn track(
    axum::extract::State(metrics): axum::extract::State<Arc<crate::gateway::metrics::Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let micros = started.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    metrics.response(status, micros);
    tracing::debug!(%method, %path, status, micros, "request");
    response
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Parses an author key from a path segment written `@KEY`.
pub fn author_segment(segment: &str) -> Result<AuthorKey, Error> {
    let key = segment
        .strip_prefix('@')
        .ok_or_else(|| Error::NotFound(format!("no page {segment}")))?;
    key.parse()
        .map_err(|e| Error::NotFound(format!("no author {key}: {e}")))
}

/// `/robots.txt`: everything public may be indexed; the login form and the
/// owner's actions are not pages.
async fn robots() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        "User-agent: *\nDisallow: /login\nAllow: /\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_digits_up_to_int64() {
        assert_eq!(whole_number("1"), Some(1));
        assert_eq!(whole_number("9223372036854775807"), Some(i64::MAX as u64));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "9223372036854775808",
            "1e3",
        ] {
            assert_eq!(whole_number(bad), None, "{bad:?}");
        }
    }
}

//! The URLs other servers ask: WebFinger, NodeInfo, the inbox, the
//! outbox and the follower collections; and, on the pages' own URLs, the
//! actor and its notes for a request that asks for ActivityPub JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::Federation;
use super::client::ACTIVITY_JSON;
use super::documents::{self, NoteAnswer};
use super::inbox;

/// The fediverse's routes, to merge beside the gateway's.
pub fn router(fed: Arc<Federation>) -> Router {
    Router::new()
        .route("/.well-known/webfinger", get(webfinger))
        .route("/.well-known/nodeinfo", get(nodeinfo_links))
        .route("/nodeinfo/2.0", get(nodeinfo))
        .route(
            "/inbox",
            post(receive).layer(axum::extract::DefaultBodyLimit::max(inbox::MAX_BODY)),
        )
        .route("/outbox", get(outbox))
        .route("/followers", get(followers))
        .route("/following", get(following))
        .with_state(fed)
}

/// Whether a request asks for ActivityPub JSON.
pub fn wants_activity(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim().to_ascii_lowercase();
            t.starts_with(ACTIVITY_JSON)
                || (t.starts_with("application/ld+json")
                    && t.contains("https://www.w3.org/ns/activitystreams"))
        })
}

fn json(status: StatusCode, media: &'static str, doc: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::VARY, HeaderValue::from_static("Accept")),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        doc.to_string(),
    )
        .into_response()
}

fn activity(doc: &Value) -> Response {
    json(StatusCode::OK, ACTIVITY_JSON, doc)
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "a fediverse request failed");
    (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response()
}

async fn blocking<T: Send + 'static>(
    fed: &Arc<Federation>,
    f: impl FnOnce(&Federation) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let fed = Arc::clone(fed);
    match tokio::task::spawn_blocking(move || f(&fed)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(e)),
        Err(e) => Err(failed(e)),
    }
}

/// Content negotiation on the owner's page and posts: an ActivityPub
/// request gets the actor or the note; anything else goes on to the page.
pub async fn negotiate(
    State(fed): State<Arc<Federation>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let owner = format!("/@{}", fed.owner);
    let rest = path.strip_prefix(&owner);
    let ours = matches!(rest, Some("") | Some("/")) || rest.is_some_and(|r| r.starts_with('/'));
    if request.method() != Method::GET || !ours {
        return next.run(request).await;
    }
    if !wants_activity(request.headers()) {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("Accept"));
        return response;
    }
    let rest = rest.unwrap_or_default().trim_start_matches('/').to_string();
    if rest.is_empty() {
        return match blocking(&fed, |f| documents::person(f, f.tables.store())).await {
            Ok(doc) => activity(&doc),
            Err(r) => r,
        };
    }
    let Some(seq) = crate::gateway::whole_number(&rest) else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    match blocking(&fed, move |f| documents::note(f, f.tables.store(), seq)).await {
        Ok(NoteAnswer::Note(doc)) => activity(&doc),
        Ok(NoteAnswer::Gone(doc)) => json(StatusCode::GONE, ACTIVITY_JSON, &doc),
        Ok(NoteAnswer::NotFound) => (StatusCode::NOT_FOUND, "no such post").into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct Resource {
    resource: Option<String>,
}

async fn webfinger(State(fed): State<Arc<Federation>>, Query(q): Query<Resource>) -> Response {
    let Some(resource) = q.resource else {
        return (
            StatusCode::BAD_REQUEST,
            "?resource=acct:NAME@HOST is required",
        )
            .into_response();
    };
    match documents::webfinger(&fed, &resource) {
        Some(doc) => json(StatusCode::OK, "application/jrd+json", &doc),
        None => (StatusCode::NOT_FOUND, "no such account here").into_response(),
    }
}

async fn nodeinfo_links(State(fed): State<Arc<Federation>>) -> Response {
    json(
        StatusCode::OK,
        "application/json",
        &documents::nodeinfo_links(&fed),
    )
}

async fn nodeinfo(State(fed): State<Arc<Federation>>) -> Response {
    let counted = blocking(&fed, |f| {
        let doc = documents::outbox(f, f.tables.store(), None)?;
        Ok(doc["totalItems"].as_u64().unwrap_or(0))
    })
    .await;
    match counted {
        Ok(posts) => json(
            StatusCode::OK,
            "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/2.0#\"",
            &documents::nodeinfo(posts),
        ),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct Paging {
    before: Option<String>,
    page: Option<String>,
}

async fn outbox(State(fed): State<Arc<Federation>>, Query(p): Query<Paging>) -> Response {
    let before = match p.before.as_deref().map(crate::gateway::whole_number) {
        Some(None) => return (StatusCode::BAD_REQUEST, "before is a seq").into_response(),
        Some(Some(b)) => Some(b),
        None => None,
    };
    match blocking(&fed, move |f| {
        documents::outbox(f, f.tables.store(), before)
    })
    .await
    {
        Ok(doc) => activity(&doc),
        Err(r) => r,
    }
}

async fn collection_of(fed: Arc<Federation>, name: &'static str, page: Option<String>) -> Response {
    let page = match page.as_deref().map(crate::gateway::whole_number) {
        Some(None) => return (StatusCode::BAD_REQUEST, "page is a number").into_response(),
        Some(Some(n)) => Some(n),
        None => None,
    };
    let ids = blocking(&fed, move |f| {
        Ok(if name == "followers" {
            f.tables
                .reader()
                .followers()?
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        } else {
            f.tables
                .reader()
                .following()?
                .into_iter()
                .filter(|(_, row)| row.accepted)
                .map(|(id, _)| id)
                .collect()
        })
    })
    .await;
    match ids {
        Ok(ids) => activity(&documents::collection(&fed, name, &ids, page)),
        Err(r) => r,
    }
}

async fn followers(State(fed): State<Arc<Federation>>, Query(p): Query<Paging>) -> Response {
    collection_of(fed, "followers", p.page).await
}

async fn following(State(fed): State<Arc<Federation>>, Query(p): Query<Paging>) -> Response {
    collection_of(fed, "following", p.page).await
}

async fn receive(
    State(fed): State<Arc<Federation>>,
    request_headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let checked = match inbox::verify(&fed, &target, &request_headers, &body).await {
        Ok(Some(checked)) => checked,
        Ok(None) => return StatusCode::ACCEPTED.into_response(),
        Err(refusal) => {
            tracing::info!(why = %refusal.why, status = refusal.status.as_u16(), "inbox refused an activity");
            return (refusal.status, refusal.why).into_response();
        }
    };
    let (activity, actor_id, actor) = checked;
    tracing::trace!(%activity, "inbox activity");
    let kind = activity
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let applied = blocking(&fed, move |f| {
        super::effects::apply(f, &activity, &actor_id, &actor, crate::clock::now_us())
    })
    .await;
    match applied {
        Ok(()) => {
            tracing::debug!(%kind, "inbox took an activity");
            fed.wake.notify_one();
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

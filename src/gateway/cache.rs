//! Responses to anonymous GETs, kept in memory until the store changes.
//!
//! Every page and API answer is a function of the store (and of who asks:
//! the owner's pages carry their forms, so requests with a session cookie
//! pass by). The store's writer bumps a generation at every commit, before
//! it answers anyone; a response is kept with the generation read before it
//! was made, and served again only while the generation is unchanged. So a
//! reader never sees a page older than a commit they know of.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State as Extract};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::State;
use super::auth::SESSION_COOKIE;

/// Responses kept at most.
pub const MAX_ENTRIES: usize = 512;
/// Bytes of bodies kept at most.
pub const MAX_BYTES: usize = 32 << 20;
/// Largest body kept (a full `entries.bin` page is 2.17 MB).
pub const MAX_BODY: usize = 4 << 20;

struct Kept {
    generation: u64,
    headers: HeaderMap,
    body: Bytes,
}

/// The kept responses, by path and query.
#[derive(Default)]
pub struct Cache {
    kept: Mutex<(HashMap<String, Kept>, usize)>,
}

impl Cache {
    fn get(&self, key: &str, generation: u64) -> Option<Response> {
        let kept = self.kept.lock().expect("cache lock");
        let hit = kept.0.get(key).filter(|k| k.generation == generation)?;
        let mut response = Response::new(Body::from(hit.body.clone()));
        *response.headers_mut() = hit.headers.clone();
        Some(response)
    }

    fn put(&self, key: String, kept: Kept) {
        let mut guard = self.kept.lock().expect("cache lock");
        let (map, bytes) = &mut *guard;
        if let Some(old) = map.remove(&key) {
            *bytes -= old.body.len();
        }
        if map.len() >= MAX_ENTRIES || *bytes + kept.body.len() > MAX_BYTES {
            // Simple and bounded: start over. A full cache of anonymous
            // pages is refilled by the next requests.
            map.clear();
            *bytes = 0;
        }
        *bytes += kept.body.len();
        map.insert(key, kept);
    }
}

fn has_session(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(SESSION_COOKIE))
}

/// The middleware: answers from the cache, or keeps what the handlers made.
pub async fn layer(Extract(state): Extract<State>, request: Request, next: Next) -> Response {
    // Blobs are files read as they are sent, and answer Range and
    // If-None-Match themselves: never kept here.
    if request.method() != Method::GET
        || has_session(request.headers())
        || request.uri().path().starts_with("/api/v1/blobs/")
    {
        return next.run(request).await;
    }
    let key = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let generation = state.store.generation();
    if let Some(hit) = state.cache.get(&key, generation) {
        return hit;
    }
    let response = next.run(request).await;
    let size = response.body().size_hint().exact();
    if response.status() != StatusCode::OK
        || response.headers().contains_key(header::SET_COOKIE)
        || size.is_none_or(|s| s > MAX_BODY as u64)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => {
            state.cache.put(
                key,
                Kept {
                    generation,
                    headers: parts.headers.clone(),
                    body: body.clone(),
                },
            );
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "a response body failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

//! The read-only log API under `/api/v1/`: what this node holds, as JSON,
//! and entries as raw bytes for clients that verify them themselves.
//! Every bad parameter is a 400 with a JSON body naming it.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Error, State};
use crate::identity::AuthorKey;
use crate::log::entry::EntryId;
use crate::log::present::entry_json;
use crate::log::record::Record;

/// Most entries one JSON page holds (~1 KB each).
pub const MAX_JSON_ENTRIES: u64 = 1_000;

/// Most entries one `entries.bin` response holds (217 bytes each: 2.2 MB).
pub const MAX_RAW_ENTRIES: u64 = 10_000;

/// The API's routes, relative to `/api/v1`.
pub fn router() -> Router<State> {
    Router::new()
        .route("/node", get(node))
        .route("/authors", get(authors))
        .route("/authors/{author}/entries", get(entries))
        .route("/authors/{author}/entries.bin", get(entries_bin))
        .route("/authors/{author}/certificate/{seq}", get(certificate))
        .route("/entries/{id}", get(entry))
        .route("/payloads/{hash}", get(payload))
        .route("/blobs/{hash}", get(super::blobs::blob))
        .route("/openapi.yaml", get(openapi))
        // Errors are JSON everywhere under /api/v1, as the description
        // promises: an unknown path and a method a path does not take too.
        .fallback(unknown)
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::map_response(json_errors))
}

/// The longest error text an extractor writes (a rejection names the bad
/// parameter and why).
const MAX_ERROR_TEXT: usize = 4096;

/// Turns an error the framework answered in plain text (a path segment
/// that is not UTF-8, say) into the API's JSON error with the same words.
async fn json_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !response.status().is_client_error() && !response.status().is_server_error() || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let text = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(json!({ "error": text }).to_string()),
    )
}

async fn unknown(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no API route /api/v1{}", uri.path()))
}

async fn not_allowed(method: axum::http::Method) -> axum::response::Response {
    let mut response = (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": format!("the API answers GET, not {method}") })),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static("GET, HEAD"),
    );
    response
}

/// schema/openapi.yaml, built into the binary.
pub const OPENAPI: &str = include_str!("../../schema/openapi.yaml");

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    response
}

/// 64 lowercase hex digits, as the API writes hashes and ids.
pub(super) fn hex32(what: &str, s: &str) -> Result<[u8; 32], Error> {
    let bad = || Error::BadRequest(format!("{what} must be 64 lowercase hex digits"));
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)
}

fn node_info(state: &State) -> Value {
    json!({
        "author": state.owner.to_string(),
        "sync": state.sync,
        "protocol": "capsule/1",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `/.well-known/capsule`: who this node is and where it syncs.
pub async fn well_known(Extract(state): Extract<State>) -> Json<Value> {
    Json(node_info(&state))
}

async fn node(Extract(state): Extract<State>) -> Json<Value> {
    Json(node_info(&state))
}

async fn authors(Extract(state): Extract<State>) -> Result<Json<Value>, Error> {
    let (heads, blocked) = state.read(|s| Ok((s.heads()?, s.blocked()?))).await?;
    let list: Vec<Value> = heads
        .iter()
        .filter(|(a, _)| !blocked.contains(a))
        .map(|(a, h)| json!({ "author": a.to_string(), "seq": h.seq, "id": h.id.to_string() }))
        .collect();
    Ok(Json(json!({ "authors": list })))
}

fn parse_author(s: &str) -> Result<AuthorKey, Error> {
    if !s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return Err(Error::BadRequest(
            "author must be 52 lowercase base32 characters (a-z, 2-7)".into(),
        ));
    }
    s.parse()
        .map_err(|e| Error::BadRequest(format!("author: {e}")))
}

/// `from` (default 1, at least 1) and `limit` (default and at most `max`,
/// at least 1) of a range query.
fn range_of(query: &HashMap<String, String>, max: u64) -> Result<(u64, u64), Error> {
    let number = |name: &str, default: u64| -> Result<u64, Error> {
        match query.get(name) {
            None => Ok(default),
            Some(v) => super::whole_number(v).ok_or_else(|| {
                Error::BadRequest(format!(
                    "{name} must be a whole number up to 9223372036854775807, not {v:?}"
                ))
            }),
        }
    };
    let from = number("from", 1)?;
    let limit = number("limit", max)?;
    if from == 0 {
        return Err(Error::BadRequest("from starts at 1".into()));
    }
    if limit == 0 || limit > max {
        return Err(Error::BadRequest(format!("limit must be 1 to {max}")));
    }
    Ok((from, limit))
}

async fn entries(
    Extract(state): Extract<State>,
    Path(author): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let author = parse_author(&author)?;
    state.served(author).await?;
    let (from, limit) = range_of(&query, MAX_JSON_ENTRIES)?;
    let (rows, head) = state
        .read(move |s| {
            let head = s.head(&author)?.map(|h| h.seq);
            let mut rows = Vec::new();
            s.scan(&author, from, |row| {
                rows.push(entry_json(
                    &row.entry,
                    row.payload.as_deref().map(Record::decode).as_ref(),
                    row.deleted_by,
                ));
                (rows.len() as u64) < limit
            })?;
            Ok((rows, head))
        })
        .await?;
    let head =
        head.ok_or_else(|| Error::NotFound(format!("this node holds no log of {author}")))?;
    let next = (from.saturating_add(limit) <= head).then(|| from + limit);
    Ok(Json(json!({ "head": head, "entries": rows, "next": next })))
}

async fn entries_bin(
    Extract(state): Extract<State>,
    Path(author): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let author = parse_author(&author)?;
    state.served(author).await?;
    let (from, limit) = range_of(&query, MAX_RAW_ENTRIES)?;
    let bytes = state
        .read(move |s| {
            if s.head(&author)?.is_none() {
                return Ok(None);
            }
            let mut out = Vec::new();
            s.raw_entries(&author, from, limit, &mut out)?;
            Ok(Some(out))
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("this node holds no log of {author}")))?;
    Ok(octets(bytes))
}

/// Raw bytes as `application/octet-stream`.
fn octets(bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

async fn entry(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = EntryId(hex32("id", &id)?);
    let row = state
        .read(move |s| {
            let Some(entry) = s.entry_by_id(&id)? else {
                return Ok(None);
            };
            if s.is_blocked(&entry.author())? {
                return Ok(Some(Err(entry.author())));
            }
            let deleted_by = s.deleted_by(&entry.author(), entry.seq())?;
            let payload = match deleted_by {
                Some(_) => None,
                None => s.payload(&entry.payload_hash())?,
            };
            Ok(Some(Ok((entry, payload, deleted_by))))
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("no entry {id} here")))?
        .map_err(Error::Blocked)?;
    let (entry, payload, deleted_by) = row;
    Ok(Json(entry_json(
        &entry,
        payload.as_deref().map(Record::decode).as_ref(),
        deleted_by,
    )))
}

async fn payload(
    Extract(state): Extract<State>,
    Path(hash): Path<String>,
) -> Result<Response, Error> {
    let hash = hex32("hash", &hash)?;
    let bytes = state
        .read(move |s| s.payload(&hash))
        .await?
        .ok_or_else(|| Error::NotFound("no such payload here".into()))?;
    Ok(octets(bytes))
}

async fn certificate(
    Extract(state): Extract<State>,
    Path((author, seq)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let author = parse_author(&author)?;
    let seq = super::whole_number(&seq).ok_or_else(|| {
        Error::BadRequest(format!(
            "seq must be a whole number up to 9223372036854775807, not {seq:?}"
        ))
    })?;
    state.served(author).await?;
    let path = state
        .read(move |s| s.certificate(&author, seq))
        .await?
        .ok_or_else(|| Error::NotFound(format!("this node holds no entry {seq} of {author}")))?;
    let entries: Vec<Value> = path
        .iter()
        .map(|e| json!({ "seq": e.seq(), "id": e.id().to_string(), "entry": hex::encode(e.as_bytes()) }))
        .collect();
    Ok(Json(
        json!({ "author": author.to_string(), "seq": seq, "path": entries }),
    ))
}

//! `GET /api/v1/blobs/{hash}`: a blob (a picture) this node holds, by its
//! blake3 hash. The bytes never change for a name, so the answer is cached
//! for a year (`immutable`) and its ETag is the hash; Range requests get a
//! part (206), for players and resumed downloads. Only the four picture
//! types are served inline, as the record that names the blob says, with
//! `nosniff`: a blob is never taken for a page.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Error, State};
use crate::picture::MEDIA_TYPES;
use crate::store::blobs::BlobId;

/// Served blobs are marked as recently served at most this often (the
/// media budget evicts the least recently served first).
pub const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Bytes read from the file per chunk of the body.
const CHUNK: usize = 64 * 1024;

/// A Range header this blob cannot satisfy (past its end, or malformed).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Which bytes a Range header asks for, of a blob of `size` bytes: None
/// for the whole (no header, or one this server answers whole: several
/// ranges, another unit), Err for a range past the end.
pub fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = (start.trim(), end.trim());
    let parse = |s: &str| s.parse::<u64>().map_err(|_| Unsatisfiable);
    let (first, last) = if start.is_empty() {
        // The last N bytes.
        let n = parse(end)?;
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first = parse(start)?;
        let last = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            parse(end)?.min(size.saturating_sub(1))
        };
        (first, last)
    };
    if first >= size || first > last {
        return Err(Unsatisfiable);
    }
    Ok(Some((first, last)))
}

/// The handler.
pub async fn blob(
    Extract(state): Extract<State>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let hash = super::api::hex32("hash", &hash)?;
    let row = state
        .read(move |s| s.blob_row(&hash))
        .await?
        .ok_or_else(|| Error::NotFound("no entry this node holds names that blob".into()))?;
    if row.evicted_us != 0 {
        return Err(Error::NotFound(
            "this node no longer keeps that blob (its media budget is spent); the author's node has it".into(),
        ));
    }
    let id = BlobId(hash);
    let path = state.store.blobs().path(&id);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return Err(Error::NotFound(
            "this node has not fetched that blob yet".into(),
        ));
    };
    let meta = file.metadata().await.ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    // Marked as served only when last marked long ago: most requests open
    // and stat the file once, and nothing more.
    let stale = meta
        .and_then(|m| m.modified().ok())
        .is_some_and(|t| t.elapsed().unwrap_or_default() > TOUCH_EVERY);
    let etag = format!("\"{id}\"");
    let mut response_headers = HeaderMap::new();
    let inline = MEDIA_TYPES.contains(&row.media_type.as_str());
    let content_type = if inline {
        HeaderValue::from_str(&row.media_type).expect("a known media type")
    } else {
        HeaderValue::from_static("application/octet-stream")
    };
    response_headers.insert(header::CONTENT_TYPE, content_type);
    if !inline {
        response_headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response_headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if !row.own && stale {
        touch(path.clone());
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let (status, first, len) = match range(&headers, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((first, last))) => {
            response_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")).expect("digits"),
            );
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        Err(Unsatisfiable) => {
            response_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits"),
            );
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response());
        }
    };
    if first > 0 {
        file.seek(SeekFrom::Start(first))
            .await
            .map_err(|e| Error::Internal(super::Internal::Io(e)))?;
    }
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = futures_util::stream::unfold(
        (file.take(len), vec![0u8; CHUNK]),
        |(mut file, mut buf)| async move {
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                    Some((Ok::<_, std::io::Error>(chunk), (file, buf)))
                }
                Err(e) => Some((Err(e), (file, buf))),
            }
        },
    );
    Ok((status, response_headers, Body::from_stream(body)).into_response())
}

/// Marks the file at `path` as served now: its modification time is what
/// the media budget evicts by, least recently served first.
fn touch(path: std::path::PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(value: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        range(&h, size)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(ask("bytes=0-3", 10), Ok(Some((0, 3))));
        assert_eq!(ask("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(ask("bytes=-4", 10), Ok(Some((6, 9))));
        assert_eq!(ask("bytes=-40", 10), Ok(Some((0, 9))));
        assert_eq!(ask("bytes=8-100", 10), Ok(Some((8, 9))));
        assert_eq!(ask("bytes=10-", 10), Err(Unsatisfiable));
        assert_eq!(ask("bytes=5-2", 10), Err(Unsatisfiable));
        assert_eq!(ask("bytes=x-2", 10), Err(Unsatisfiable));
        assert_eq!(ask("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(ask("items=0-1", 10), Ok(None));
    }
}

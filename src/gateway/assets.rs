//! Web assets, embedded in the binary from web/ and served under URLs that
//! carry a hash of their content, so browsers may cache them for a year and
//! a new build is never served stale.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Web;

/// The URL of an asset: `/assets/HASH/NAME`, HASH the first 16 hex digits of
/// the blake3 of its content.
pub fn url(name: &str) -> String {
    let hash = Web::get(name)
        .map(|f| hex::encode(&blake3::hash(&f.data).as_bytes()[..8]))
        .unwrap_or_else(|| "missing".into());
    format!("/assets/{hash}/{name}")
}

/// Serves `/assets/{hash}/{name}`; a hash that is not the content's is a 404,
/// so an old page never gets a new file under a year-long cache.
pub fn serve(hash: &str, name: &str) -> Response {
    let Some(file) = Web::get(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if hex::encode(&blake3::hash(&file.data).as_bytes()[..8]) != hash {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mime = match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

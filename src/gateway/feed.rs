//! `/feed.atom`: the owner's newest posts as an Atom feed.

use axum::extract::State as Extract;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::timeline::posts;
use super::views::short;
use super::{Error, State};
use crate::log::present::rfc3339;

/// Entries in the Atom feed.
pub const FEED_SIZE: u64 = 50;

pub(super) fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `/feed.atom`: the owner's newest posts as Atom 1.0.
pub async fn feed(Extract(state): Extract<State>) -> Result<Response, Error> {
    let owner = state.owner;
    let (posts, _) = state
        .read(move |s| posts(s, &owner, None, FEED_SIZE))
        .await?;
    let base = state.origin.as_deref().unwrap_or("");
    let name = posts
        .first()
        .and_then(|p| p.by.name.clone())
        .unwrap_or_else(|| short(&owner));
    let updated = posts.first().map_or(0, |p| p.timestamp_us);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    out.push_str(&format!("  <id>urn:capsule:{owner}</id>\n"));
    out.push_str(&format!("  <title>Capsule of {}</title>\n", xml(&name)));
    out.push_str(&format!("  <updated>{}</updated>\n", rfc3339(updated)));
    out.push_str(&format!(
        "  <author><name>{}</name><uri>{base}/@{owner}</uri></author>\n",
        xml(&name)
    ));
    out.push_str(&format!("  <link rel=\"alternate\" href=\"{base}/\"/>\n"));
    out.push_str(&format!(
        "  <link rel=\"self\" href=\"{base}/feed.atom\"/>\n"
    ));
    for post in &posts {
        let Some(text) = &post.text else { continue };
        let title: String = match text.trim() {
            "" if !post.pictures.is_empty() => format!("{} picture(s)", post.pictures.len()),
            text => text.chars().take(80).collect(),
        };
        out.push_str("  <entry>\n");
        out.push_str(&format!("    <id>urn:capsule:{owner}:{}</id>\n", post.seq));
        out.push_str(&format!("    <title>{}</title>\n", xml(&title)));
        out.push_str(&format!(
            "    <updated>{}</updated>\n",
            rfc3339(post.timestamp_us)
        ));
        out.push_str(&format!(
            "    <link rel=\"alternate\" href=\"{base}/@{owner}/{}\"/>\n",
            post.seq
        ));
        for shown in &post.pictures {
            let blob = &shown.picture.blob;
            out.push_str(&format!(
                "    <link rel=\"enclosure\" type=\"{}\" length=\"{}\" title=\"{}\" href=\"{base}/api/v1/blobs/{}\"/>\n",
                xml(&blob.media_type),
                blob.size,
                xml(&shown.picture.alt),
                hex::encode(blob.hash)
            ));
        }
        out.push_str(&format!(
            "    <content type=\"text\">{}</content>\n",
            xml(text)
        ));
        out.push_str("  </entry>\n");
    }
    out.push_str("</feed>\n");
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/atom+xml; charset=utf-8"),
    );
    Ok(response)
}

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
    let updated = posts.first().map_or(0, |p| p.timestamp_us);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    out.push_str(&format!("  <id>urn:capsule:{owner}</id>\n"));
    out.push_str(&format!("  <title>Capsule of {}</title>\n", short(&owner)));
    out.push_str(&format!("  <updated>{}</updated>\n", rfc3339(updated)));
    out.push_str(&format!("  <author><name>{owner}</name></author>\n"));
    out.push_str("  <link rel=\"alternate\" href=\"/\"/>\n");
    out.push_str("  <link rel=\"self\" href=\"/feed.atom\"/>\n");
    for post in &posts {
        let Some(text) = &post.text else { continue };
        let title: String = text.chars().take(80).collect();
        out.push_str("  <entry>\n");
        out.push_str(&format!("    <id>urn:capsule:{owner}:{}</id>\n", post.seq));
        out.push_str(&format!("    <title>{}</title>\n", xml(&title)));
        out.push_str(&format!(
            "    <updated>{}</updated>\n",
            rfc3339(post.timestamp_us)
        ));
        out.push_str(&format!(
            "    <link rel=\"alternate\" href=\"/@{owner}/{}\"/>\n",
            post.seq
        ));
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

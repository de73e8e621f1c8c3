//! The microblog's pages, rendered on the server from compile-time templates
//! (maud: HTML-escaped by construction), and the Atom feed.

use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::{Error, State, assets, author_segment};
use crate::identity::AuthorKey;
use crate::log::record::Record;
use crate::present::{format_time, rfc3339};
use crate::store::{Scanned, Store, StoreError};

/// Entries per timeline page: a screenful of posts, a small read.
pub const PAGE_SIZE: u64 = 20;

/// Entries in the Atom feed.
pub const FEED_SIZE: u64 = 50;

/// One post as the pages show it.
#[derive(Debug, Clone)]
pub struct Post {
    /// The author.
    pub author: AuthorKey,
    /// Its seq.
    pub seq: u64,
    /// When, µs since the epoch.
    pub timestamp_us: u64,
    /// The text; None when deleted or not held.
    pub text: Option<String>,
    /// Why there is no text.
    pub missing: &'static str,
    /// The entry it answers.
    pub reply_to: Option<(AuthorKey, u64)>,
}

/// Up to `limit` entries of `author` below seq `before` (newest first),
/// keeping posts only; and the `before` of the next older page.
pub fn posts(
    store: &Store,
    author: &AuthorKey,
    before: Option<u64>,
    limit: u64,
) -> Result<(Vec<Post>, Option<u64>), StoreError> {
    let Some(head) = store.head(author)? else {
        return Ok((Vec::new(), None));
    };
    let end = before.map_or(head.seq, |b| b.saturating_sub(1).min(head.seq));
    if end == 0 {
        return Ok((Vec::new(), None));
    }
    let start = end.saturating_sub(limit - 1).max(1);
    let mut out = Vec::new();
    store.scan(author, start, |s| {
        if s.entry.seq() > end {
            return false;
        }
        if let Some(post) = as_post(&s) {
            out.push(post);
        }
        true
    })?;
    out.reverse();
    Ok((out, (start > 1).then_some(start)))
}

/// A scanned entry as a post; None for records that are not posts.
pub fn as_post(s: &Scanned) -> Option<Post> {
    let mut post = Post {
        author: s.entry.author(),
        seq: s.entry.seq(),
        timestamp_us: s.entry.timestamp_us(),
        text: None,
        missing: "",
        reply_to: None,
    };
    match (s.deleted_by, s.payload.as_deref().map(Record::decode)) {
        (Some(_), _) => post.missing = "deleted by its author",
        (None, None) => post.missing = "text not held by this node",
        (None, Some(Ok(Record::Post { text, reply_to, .. }))) => {
            post.text = Some(text);
            post.reply_to = reply_to.map(|r| (AuthorKey(r.author), r.seq));
        }
        (None, Some(Ok(_))) => return None,
        (None, Some(Err(_))) => post.missing = "a record this version cannot show",
    }
    Some(post)
}

/// The `?before=SEQ` of a timeline page.
#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<u64>,
}

fn layout(title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href=(assets::url("style.css"));
                link rel="alternate" type="application/atom+xml" href="/feed.atom";
            }
            body { main { (body) } }
        }
    };
    page.into_response()
}

fn short(author: &AuthorKey) -> String {
    author.to_string()[..8].to_string()
}

fn post_html(post: &Post) -> Markup {
    let link = format!("/@{}/{}", post.author, post.seq);
    html! {
        article {
            @if let Some(text) = &post.text {
                p { (text) }
            } @else {
                p.deleted { "(" (post.missing) ")" }
            }
            footer {
                a href=(link) { time { (format_time(post.timestamp_us)) " UTC" } }
                @if let Some((to, seq)) = post.reply_to {
                    " · in reply to "
                    a href=(format!("/@{to}/{seq}")) { (short(&to)) " #" (seq) }
                }
            }
        }
    }
}

fn log_page(
    state: &State,
    author: AuthorKey,
    posts: &[Post],
    next: Option<u64>,
    base: &str,
) -> Response {
    let owner = author == state.owner;
    let body = html! {
        header.profile {
            h1 { @if owner { "Home" } @else { (short(&author)) } }
            div.key { (author.to_string()) }
            @if !owner {
                span.badge { "verified copy: every entry checked against its author's signature" }
            }
        }
        @if posts.is_empty() {
            p.muted { "No posts here yet." }
        }
        @for post in posts { (post_html(post)) }
        nav.pages {
            @if let Some(before) = next {
                a href=(format!("{base}?before={before}")) { "Older posts →" }
            }
        }
    };
    layout(
        if owner {
            "Capsule"
        } else {
            "Capsule: a mirrored log"
        },
        body,
    )
}

/// `/`: the owner's timeline.
pub async fn timeline(
    Extract(state): Extract<State>,
    Query(page): Query<Page>,
) -> Result<Response, Error> {
    let owner = state.owner;
    let (posts, next) = state
        .read(move |s| posts(s, &owner, page.before, PAGE_SIZE))
        .await?;
    Ok(log_page(&state, owner, &posts, next, "/"))
}

/// `/@KEY`: an author's log as this node holds it.
pub async fn author_page(
    Extract(state): Extract<State>,
    Path(segment): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, Error> {
    let author = author_segment(&segment)?;
    let (posts, next, held) = state
        .read(move |s| {
            let held = s.head(&author)?.is_some();
            let (p, n) = posts(s, &author, page.before, PAGE_SIZE)?;
            Ok((p, n, held))
        })
        .await?;
    if !held {
        return Err(Error::NotFound(format!(
            "this node holds no log of {author}"
        )));
    }
    Ok(log_page(
        &state,
        author,
        &posts,
        next,
        &format!("/@{author}"),
    ))
}

/// `/@KEY/SEQ`: one post.
pub async fn permalink(
    Extract(state): Extract<State>,
    Path((segment, seq)): Path<(String, String)>,
) -> Result<Response, Error> {
    let author = author_segment(&segment)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| Error::NotFound(format!("no entry {seq}")))?;
    let found = state
        .read(move |s| {
            let mut found = None;
            s.scan(&author, seq, |row| {
                if row.entry.seq() == seq {
                    found = Some(row);
                }
                false
            })?;
            Ok(found)
        })
        .await?;
    let row = found.ok_or_else(|| Error::NotFound(format!("no entry {seq} of {author}")))?;
    let id = row.entry.id();
    let post = as_post(&row);
    let body = html! {
        header.profile {
            h1 { a href=(if author == state.owner { "/".to_string() } else { format!("/@{author}") }) { (short(&author)) } " #" (seq) }
            div.key { "entry " (id.to_string()) }
        }
        @match &post {
            Some(p) => (post_html(p)),
            None => p.muted { "This entry is not a post (a profile, follow or deletion record)." },
        }
    };
    Ok(layout("Capsule: a post", body))
}

fn xml(text: &str) -> String {
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

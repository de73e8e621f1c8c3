//! The microblog's pages, rendered on the server from compile-time templates
//! (maud: HTML-escaped by construction), and the Atom feed.

use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::owner::Viewer;
use super::{Error, State, assets, author_segment};
use crate::identity::AuthorKey;
use crate::log::present::{Missing, format_time, rfc3339};
use crate::log::record::Record;
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
    let record = s.payload.as_deref().map(Record::decode);
    if let Some(missing) = Missing::of(s.deleted_by, record.as_ref()) {
        post.missing = missing.describe();
        return Some(post);
    }
    match record {
        Some(Ok(Record::Post { text, reply_to, .. })) => {
            post.text = Some(text);
            post.reply_to = reply_to.map(|r| (AuthorKey(r.author), r.seq));
        }
        _ => return None,
    }
    Some(post)
}

/// The `?before=SEQ` of a log's page, or `?until=µs` of the owner's
/// merged home timeline.
#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<u64>,
    until: Option<u64>,
}

/// Authors merged into the owner's home timeline at most (the owner and
/// the followed, in key order).
pub const MAX_TIMELINE_AUTHORS: usize = 500;

/// Entries of one author read for one page of the home timeline at most.
pub const MAX_TIMELINE_SCAN: u64 = 200;

/// The newest `limit` posts of `authors` stamped before `until_us`, newest
/// first, and the `until` of the next page.
pub fn merged(
    store: &Store,
    authors: &[AuthorKey],
    until_us: Option<u64>,
    limit: u64,
) -> Result<(Vec<Post>, Option<u64>), StoreError> {
    const WINDOW: u64 = 32;
    let mut all = Vec::new();
    for author in authors.iter().take(MAX_TIMELINE_AUTHORS) {
        let (mut before, mut read, mut found) = (None, 0, 0);
        loop {
            let (page, next) = posts(store, author, before, WINDOW)?;
            read += WINDOW;
            for post in page {
                if until_us.is_none_or(|u| post.timestamp_us < u) {
                    all.push(post);
                    found += 1;
                }
            }
            if found >= limit || read >= MAX_TIMELINE_SCAN {
                break;
            }
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
    }
    all.sort_by(|a, b| {
        (b.timestamp_us, b.author.0, b.seq).cmp(&(a.timestamp_us, a.author.0, a.seq))
    });
    all.truncate(limit as usize);
    let next = (all.len() as u64 == limit)
        .then(|| all.last().map(|p| p.timestamp_us))
        .flatten();
    Ok((all, next))
}

/// Ancestors shown above a post on its page.
pub const THREAD_DEPTH: usize = 16;

/// Replies shown below a post on its page.
pub const MAX_REPLIES: usize = 100;

/// The author's newest profile (name, bio), if the store holds it.
pub fn profile(store: &Store, author: &AuthorKey) -> Result<Option<(String, String)>, StoreError> {
    let Some(seq) = store.profile_seq(author)? else {
        return Ok(None);
    };
    Ok(match scanned(store, author, seq)?.and_then(|s| s.payload) {
        Some(payload) => match Record::decode(&payload) {
            Ok(Record::Profile { name, bio, .. }) => Some((name, bio)),
            _ => None,
        },
        None => None,
    })
}

/// Entry `seq` of `author` with its payload, if held.
pub fn scanned(store: &Store, author: &AuthorKey, seq: u64) -> Result<Option<Scanned>, StoreError> {
    let mut found = None;
    store.scan(author, seq, |row| {
        if row.entry.seq() == seq {
            found = Some(row);
        }
        false
    })?;
    Ok(found)
}

/// A page in the site's frame: the header bar with log-in state, then `body`.
fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href=(assets::url("style.css"));
                link rel="alternate" type="application/atom+xml" href="/feed.atom";
            }
            body {
                nav.bar {
                    a.home href="/" { "Capsule" }
                    @if let Some(v) = viewer {
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button.link type="submit" { "Log out" }
                        }
                    } @else {
                        a href="/login" { "Log in" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A short page saying one thing (form refusals and the like).
pub fn message_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            header.profile { h1 { (title) } }
            p.message { (message) }
            p { a href="/" { "← Home" } }
        },
    )
}

/// The login form; `csrf` is also set as the login cookie.
pub fn login_page(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Capsule: log in",
        None,
        html! {
            header.profile { h1 { "Log in" } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.compose method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="passphrase" { "Passphrase" }
                input #passphrase type="password" name="passphrase" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
            p.muted { "The passphrase is set on the server with " code { "capsule passwd" } "." }
        },
    )
}

fn compose_form(viewer: &Viewer, reply_to: Option<&str>) -> Markup {
    html! {
        form.compose method="post" action="/post" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            @if let Some(id) = reply_to {
                input type="hidden" name="reply_to" value=(id);
            }
            label for="text" { @if reply_to.is_some() { "Reply" } @else { "New post" } }
            textarea #text name="text" rows="3" maxlength="60000" required {}
            button type="submit" { @if reply_to.is_some() { "Reply" } @else { "Post" } }
        }
    }
}

fn short(author: &AuthorKey) -> String {
    author.to_string()[..8].to_string()
}

fn post_html(post: &Post, viewer: Option<&Viewer>, owner: &AuthorKey) -> Markup {
    let link = format!("/@{}/{}", post.author, post.seq);
    html! {
        article {
            @if post.author != *owner {
                div.by { a href=(format!("/@{}", post.author)) { (short(&post.author)) } }
            }
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
                @if let (Some(v), true) = (viewer, post.author == *owner && post.text.is_some()) {
                    form.inline method="post" action="/delete" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="seq" value=(post.seq);
                        " · " button.link.danger type="submit" { "Delete" }
                    }
                }
            }
        }
    }
}

/// What a mirrored log's page says of its origin.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Entries held.
    pub entries: u64,
    /// The origin node's address row, if this node dials it.
    pub address: Option<crate::store::tables::AddressRow>,
}

fn fork_html(proof: &crate::store::ForkProof) -> Markup {
    html! {
        p.error role="alert" {
            "This log is forked: its author signed two different entries for seq "
            (proof.first.seq()) " ("
            code { (proof.first.id().to_string()[..16]) } " and "
            code { (proof.second.id().to_string()[..16]) }
            "). This node keeps both as proof and takes no further entries of this log."
        }
    }
}

fn origin_html(origin: &Origin) -> Markup {
    let copy = format!("verified copy of {} entries", origin.entries);
    html! {
        p.origin {
            @match &origin.address {
                None => { "Origin not dialled by this node (the log came from peers); " (copy) "." }
                Some(row) if row.failures == 0 && row.last_success_us > 0 => {
                    "Origin reachable, last synced " (format_time(row.last_success_us)) " UTC; " (copy) "."
                }
                Some(row) if row.last_success_us > 0 => {
                    "Origin unreachable since " (format_time(row.last_success_us)) " UTC ("
                    (row.failures) " failed attempts); " (copy) "."
                }
                Some(_) => { "Origin not reached yet; " (copy) "." }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn log_page(
    state: &State,
    viewer: Option<&Viewer>,
    author: AuthorKey,
    profile: Option<(String, String)>,
    origin: Option<Origin>,
    fork: Option<crate::store::ForkProof>,
    followed: bool,
    posts: &[Post],
    next: Option<u64>,
    base: &str,
) -> Markup {
    let owner = author == state.owner;
    let body = html! {
        header.profile {
            h1 { @match &profile { Some((name, _)) if !name.is_empty() => (name), _ => (short(&author)) } }
            @if let Some((_, bio)) = &profile { @if !bio.is_empty() { p.bio { (bio) } } }
            div.key { (author.to_string()) }
            @if !owner {
                span.badge { "verified copy: every entry checked against its author's signature" }
            }
            @if let Some(origin) = &origin { (origin_html(origin)) }
            @if let Some(proof) = &fork { (fork_html(proof)) }
            @if let (false, Some(v)) = (owner, viewer) {
                @if followed {
                    form.inline method="post" action="/unfollow" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="author" value=(author.to_string());
                        button.link type="submit" { "Unfollow" }
                    }
                } @else {
                    form.inline method="post" action="/follow" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="target" value=(author.to_string());
                        button.link type="submit" { "Follow" }
                    }
                }
            }
        }
        @if let (true, Some(v)) = (owner, viewer) { (compose_form(v, None)) }
        @if posts.is_empty() {
            p.muted { "No posts here yet." }
        }
        @for post in posts { (post_html(post, viewer, &state.owner)) }
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
        viewer,
        body,
    )
}

/// `/`: the owner's timeline.
pub async fn timeline(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Markup, Error> {
    author_log(state, headers, None, page).await
}

/// `/@KEY`: an author's log as this node holds it.
pub async fn author_page(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(segment): Path<String>,
    Query(page): Query<Page>,
) -> Result<Markup, Error> {
    let author = author_segment(&segment)?;
    author_log(state, headers, Some(author), page).await
}

async fn author_log(
    state: State,
    headers: HeaderMap,
    author: Option<AuthorKey>,
    page: Page,
) -> Result<Markup, Error> {
    let viewer = state.owner_auth.viewer(&headers);
    if let (None, Some(viewer)) = (author, &viewer) {
        return home(&state, viewer, page.until).await;
    }
    let key = author.unwrap_or(state.owner);
    let mirrored = key != state.owner;
    let (posts, next, profile, held, origin, fork, followed) = state
        .read(move |s| {
            let head = s.head(&key)?;
            let (p, n) = posts(s, &key, page.before, PAGE_SIZE)?;
            let origin = match (mirrored, head) {
                (true, Some(h)) => Some(Origin {
                    entries: h.seq,
                    address: s.address(&key)?,
                }),
                _ => None,
            };
            Ok((
                p,
                n,
                profile(s, &key)?,
                head.is_some(),
                origin,
                s.fork_of(&key)?,
                s.followed()?.contains(&key),
            ))
        })
        .await?;
    if author.is_some() && !held {
        return Err(Error::NotFound(format!("this node holds no log of {key}")));
    }
    let base = match author {
        Some(a) => format!("/@{a}"),
        None => "/".to_string(),
    };
    Ok(log_page(
        &state,
        viewer.as_ref(),
        key,
        profile,
        origin,
        fork,
        followed,
        &posts,
        next,
        &base,
    ))
}

/// `/` for the logged-in owner: their posts and those of the authors they
/// follow, merged, newest first, with the compose form.
async fn home(state: &State, viewer: &Viewer, until: Option<u64>) -> Result<Markup, Error> {
    let owner = state.owner;
    let (posts, next, profile, following) = state
        .read(move |s| {
            let mut authors = s.followed()?;
            let following = authors.len();
            authors.insert(0, owner);
            let (p, n) = merged(s, &authors, until, PAGE_SIZE)?;
            Ok((p, n, profile(s, &owner)?, following))
        })
        .await?;
    let body = html! {
        header.profile {
            h1 { @match &profile { Some((name, _)) if !name.is_empty() => (name), _ => "Home" } }
            @if let Some((_, bio)) = &profile { @if !bio.is_empty() { p.bio { (bio) } } }
            p.muted {
                "Your posts and those of the " (following)
                @if following == 1 { " author" } @else { " authors" }
                " you follow. "
                a href=(format!("/@{owner}")) { "Only your posts" }
            }
        }
        (compose_form(viewer, None))
        form.follow method="post" action="/follow" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="target" { "Follow" }
            input #target type="text" name="target" placeholder="alice.example, KEY@HOST:PORT or KEY" required;
            button type="submit" { "Follow" }
        }
        @if posts.is_empty() {
            p.muted { "No posts here yet." }
        }
        @for post in &posts { (post_html(post, Some(viewer), &owner)) }
        nav.pages {
            @if let Some(until) = next {
                a href=(format!("/?until={until}")) { "Older posts →" }
            }
        }
    };
    Ok(layout("Capsule: home", Some(viewer), body))
}

/// What a post's page shows.
struct Thread {
    ancestors: Vec<Post>,
    row: Scanned,
    replies: Vec<Post>,
}

fn thread(store: &Store, author: AuthorKey, seq: u64) -> Result<Option<Thread>, StoreError> {
    let Some(row) = scanned(store, &author, seq)? else {
        return Ok(None);
    };
    let mut ancestors = Vec::new();
    let mut up = as_post(&row).and_then(|p| p.reply_to);
    while let Some((a, s)) = up {
        if ancestors.len() == THREAD_DEPTH {
            break;
        }
        match scanned(store, &a, s)?.as_ref().and_then(as_post) {
            Some(parent) => {
                up = parent.reply_to;
                ancestors.push(parent);
            }
            None => break,
        }
    }
    ancestors.reverse();
    let mut replies = Vec::new();
    for (a, s) in store.replies(&author, seq, MAX_REPLIES)? {
        if let Some(post) = scanned(store, &a, s)?.as_ref().and_then(as_post) {
            replies.push(post);
        }
    }
    replies.sort_by_key(|p| p.timestamp_us);
    Ok(Some(Thread {
        ancestors,
        row,
        replies,
    }))
}

/// `/@KEY/SEQ`: one post, the posts it answers above it, its replies below.
pub async fn permalink(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path((segment, seq)): Path<(String, String)>,
) -> Result<Markup, Error> {
    let viewer = state.owner_auth.viewer(&headers);
    let viewer = viewer.as_ref();
    let author = author_segment(&segment)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| Error::NotFound(format!("no entry {seq}")))?;
    let found = state.read(move |s| thread(s, author, seq)).await?;
    let t = found.ok_or_else(|| Error::NotFound(format!("no entry {seq} of {author}")))?;
    let id = t.row.entry.id();
    let post = as_post(&t.row);
    let owner = state.owner;
    let body = html! {
        header.profile {
            h1 { a href=(if author == owner { "/".to_string() } else { format!("/@{author}") }) { (short(&author)) } " #" (seq) }
            div.key { "entry " (id.to_string()) }
        }
        @if !t.ancestors.is_empty() {
            section.thread.above { @for p in &t.ancestors { (post_html(p, viewer, &owner)) } }
        }
        div.focus {
            @match &post {
                Some(p) => (post_html(p, viewer, &owner)),
                None => p.muted { "This entry is not a post (a profile, follow or deletion record)." },
            }
        }
        @if post.as_ref().is_some_and(|p| p.text.is_some()) {
            @if let Some(v) = viewer { (compose_form(v, Some(&id.to_string()))) }
        }
        @if !t.replies.is_empty() {
            section.thread.replies {
                h2 { (t.replies.len()) @if t.replies.len() == 1 { " reply" } @else { " replies" } }
                @for p in &t.replies { (post_html(p, viewer, &owner)) }
            }
        }
    };
    Ok(layout("Capsule: a post", viewer, body))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::log::builder::LogBuilder;
    use crate::log::verify::verify_batch;

    /// Two logs with interleaved clocks read back merged, newest first,
    /// and paging by `until` visits every post once.
    #[test]
    fn merged_timeline_interleaves_and_pages() {
        let store = Store::open_in_memory().unwrap();
        let mut authors = Vec::new();
        for (n, offset) in [(1u8, 0u64), (2, 5)] {
            let identity = Identity::from_seed([n; 32]);
            let mut builder = LogBuilder::new(&identity);
            let batch = (1..=45u64)
                .map(|seq| {
                    let payload = Record::post(format!("{n}:{seq}")).encode().unwrap();
                    (
                        builder.next(1_000_000 + seq * 10 + offset, &payload),
                        Some(payload),
                    )
                })
                .collect();
            store.append(verify_batch(batch).unwrap()).unwrap();
            authors.push(identity.author());
        }
        let (mut seen, mut until) = (Vec::new(), None);
        loop {
            let (page, next) = merged(&store, &authors, until, PAGE_SIZE).unwrap();
            assert!(
                page.windows(2)
                    .all(|w| w[0].timestamp_us > w[1].timestamp_us)
            );
            seen.extend(page.iter().map(|p| p.text.clone().unwrap()));
            match next {
                Some(n) => until = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 90);
        assert_eq!(&seen[..3], &["2:45", "1:45", "2:44"]);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 90, "no post twice");
    }
}

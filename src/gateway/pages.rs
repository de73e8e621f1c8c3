//! The microblog's pages: a log, the owner's home, a post with its thread.
//! Handlers read through [`super::timeline`] on the blocking pool and
//! render with [`super::views`].

use axum::extract::{Path, Query, State as Extract};
use axum::http::HeaderMap;
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Viewer;
use super::timeline::{merged, posts, profile, thread};
use super::views::{Origin, compose_form, layout, log_page, post_html, short};
use super::{Error, State, author_segment};
use crate::identity::AuthorKey;

/// Entries per timeline page: a screenful of posts, a small read.
pub const PAGE_SIZE: u64 = 20;

/// The `?before=SEQ` of a log's page, or `?until=µs` of the owner's
/// merged home timeline.
#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<u64>,
    until: Option<u64>,
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

pub(super) async fn author_log(
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
    if mirrored && state.read(move |s| s.is_blocked(&key)).await? {
        return match &viewer {
            Some(v) => Ok(blocked_page(v, key)),
            None => Err(Error::Blocked(key)),
        };
    }
    let (posts, next, profile, held, origin, fork, (followed, muted, stopped), followers) = state
        .read(move |s| {
            let head = s.head(&key)?;
            let (p, n) = posts(s, &key, page.before, PAGE_SIZE)?;
            let origin = match (mirrored, head) {
                (true, Some(h)) => Some(Origin {
                    entries: h.seq,
                    address: s.address(&key)?,
                    held: s.held_by(&key)?,
                }),
                _ => None,
            };
            Ok((
                p,
                n,
                (profile(s, &key)?, super::timeline::byline(s, &key)?),
                head.is_some(),
                origin,
                s.fork_of(&key)?,
                (
                    s.followed()?.contains(&key),
                    s.blocks()?.iter().any(|(a, _)| *a == key),
                    if mirrored {
                        None
                    } else {
                        super::views::signing_stopped(s, &key)?
                    },
                ),
                crate::store::fediverse::Reader::new(s).follower_count()?,
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
        (followed, muted),
        stopped,
        &posts,
        next,
        &base,
        followers,
    ))
}

/// The page of an author the owner blocks, for the owner: nothing of
/// theirs, and the button that lifts the block (everyone else gets 403).
fn blocked_page(viewer: &Viewer, author: AuthorKey) -> Markup {
    let body = html! {
        header.profile {
            h1 { (short(&author)) }
            div.key { (author.to_string()) }
        }
        p.muted { "This node does not show or serve this author's log: its owner blocks them." }
        (super::views::block_buttons(viewer, &author, true, false))
    };
    layout(
        "Capsule: blocked",
        "An author this node's owner blocks.",
        Some(viewer),
        body,
    )
}

/// `/` for the logged-in owner: their posts and those of the authors they
/// follow, merged, newest first, with the compose form.
pub(super) async fn home(
    state: &State,
    viewer: &Viewer,
    until: Option<u64>,
) -> Result<Markup, Error> {
    let owner = state.owner;
    let (
        posts,
        next,
        (profile, by),
        following,
        (stopped, held),
        (remote, followers, remote_follows),
    ) = state
        .read(move |s| {
            let stopped = super::views::signing_stopped(s, &owner)?;
            let held = s.held_by(&owner)?;
            let mut authors = s.followed()?;
            let following = authors.len();
            // Blocked and muted authors are left out of the home timeline.
            let hidden: std::collections::HashSet<AuthorKey> =
                s.blocks()?.into_iter().map(|(a, _)| a).collect();
            authors.retain(|a| !hidden.contains(a));
            authors.insert(0, owner);
            let (p, n) = merged(s, &authors, until, PAGE_SIZE)?;
            let by = super::timeline::byline(s, &owner)?;
            // Notes of followed fediverse accounts between this page's
            // oldest post (none when it is the last page) and its start.
            let fediverse = crate::store::fediverse::Reader::new(s);
            let from = match n {
                Some(_) => p.last().map_or(0, |post| post.timestamp_us),
                None => 0,
            };
            let remote = fediverse.home(from, until.unwrap_or(u64::MAX), PAGE_SIZE as usize)?;
            Ok((
                p,
                n,
                (profile(s, &owner)?, by),
                following,
                (stopped, held),
                (
                    remote,
                    fediverse.follower_count()?,
                    fediverse
                        .following()?
                        .into_iter()
                        .map(|(_, f)| f)
                        .collect::<Vec<_>>(),
                ),
            ))
        })
        .await?;
    // One timeline, newest first: the logs' posts and the remote notes.
    let mut shown: Vec<(
        u64,
        Result<&super::timeline::Post, &super::fediverse::Remote>,
    )> = posts
        .iter()
        .map(|p| (p.timestamp_us, Ok(p)))
        .chain(remote.iter().map(|r| (r.1.published_us, Err(r))))
        .collect();
    shown.sort_by_key(|item| std::cmp::Reverse(item.0));
    let body = html! {
        header.profile {
            (super::views::profile_heading(&profile, "Home", &owner, &by))
            p.muted {
                "Your posts and those of the " (following)
                @if following == 1 { " author" } @else { " authors" }
                " you follow. "
                a href=(format!("/@{owner}")) { "Only your posts" }
            }
            @if let Some(account) = &state.fediverse {
                (super::fediverse::account_html(account, followers))
            }
        }
        @if let Some(why) = &stopped { (super::views::stopped_html(why)) }
        (super::views::held_by_html(&held, true))
        (compose_form(viewer, None))
        (super::views::profile_form(viewer, profile.as_ref()))
        form.follow method="post" action="/follow" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="target" { "Follow" }
            input #target type="text" name="target" placeholder="alice.example, @bob@mastodon.example, KEY@HOST:PORT or KEY" required;
            button type="submit" { "Follow" }
        }
        (super::fediverse::following_html(&remote_follows, &viewer.csrf))
        @if shown.is_empty() {
            p.muted { "No posts here yet." }
        }
        @for (_, item) in &shown {
            @match item {
                Ok(post) => (post_html(post, Some(viewer), &owner)),
                Err(remote) => (super::fediverse::remote_html(remote)),
            }
        }
        nav.pages {
            @if let Some(until) = next {
                a href=(format!("/?until={until}")) { "Older posts →" }
            }
        }
    };
    Ok(layout(
        "Capsule: home",
        "Your posts and those of the authors you follow.",
        Some(viewer),
        body,
    ))
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
    state.served(author).await?;
    let seq =
        super::whole_number(&seq).ok_or_else(|| Error::NotFound(format!("no entry {seq}")))?;
    let owner = state.owner;
    let (found, (remote, (likes, boosts))) = state
        .read(move |s| {
            let fediverse = crate::store::fediverse::Reader::new(s);
            let remote = if author == owner {
                (fediverse.replies(seq)?, fediverse.counts(seq)?)
            } else {
                (Vec::new(), (0, 0))
            };
            Ok((thread(s, author, seq)?, remote))
        })
        .await?;
    let t = found.ok_or_else(|| Error::NotFound(format!("no entry {seq} of {author}")))?;
    let id = t.row.entry.id();
    let post = t.post.clone();
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
        (super::fediverse::reactions_html(likes, boosts))
        (super::fediverse::replies_html(&remote))
    };
    let description = match post.as_ref().and_then(|p| p.text.as_deref()) {
        Some(text) if !text.trim().is_empty() => super::views::summary(text),
        _ => format!("Entry {seq} of {}, a signed Capsule log.", short(&author)),
    };
    Ok(layout("Capsule: a post", &description, viewer, body))
}

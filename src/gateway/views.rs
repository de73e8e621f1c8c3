//! The pages' templates (maud: HTML-escaped by construction). They take
//! what to show and who is looking, and read nothing themselves.

use maud::{DOCTYPE, Markup, html};

use super::auth::Viewer;
use super::timeline::Post;
use super::{State, assets};
use crate::identity::AuthorKey;
use crate::log::present::format_time;

/// A page in the site's frame: the header bar with log-in state, then `body`.
pub(super) fn layout(
    title: &str,
    description: &str,
    viewer: Option<&Viewer>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                meta name="description" content=(description);
                link rel="icon" type="image/svg+xml" href=(assets::url("icon.svg"));
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

/// Longest meta description: what search engines show.
const DESCRIPTION_CHARS: usize = 155;

/// `text` cut to a meta description, on a word where it can be.
pub(super) fn summary(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= DESCRIPTION_CHARS {
        return text;
    }
    let cut: String = text.chars().take(DESCRIPTION_CHARS - 1).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

/// A short page saying one thing (form refusals and the like).
pub fn message_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        message,
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
        "The owner of this Capsule node logs in here to post.",
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

pub(super) fn compose_form(viewer: &Viewer, reply_to: Option<&str>) -> Markup {
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

pub(super) fn short(author: &AuthorKey) -> String {
    author.to_string()[..8].to_string()
}

pub(super) fn post_html(post: &Post, viewer: Option<&Viewer>, owner: &AuthorKey) -> Markup {
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
    /// The peers known to hold it too (kept for the logs the owner
    /// follows).
    pub held: crate::store::holders::HeldBy,
}

pub(super) fn fork_html(proof: &crate::store::ForkProof) -> Markup {
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

pub(super) fn origin_html(origin: &Origin) -> Markup {
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

/// Who else holds a log: for the owner's own log, whether losing this
/// machine would lose it.
pub(super) fn held_by_html(held: &crate::store::holders::HeldBy, own: bool) -> Markup {
    let mut said = held.describe(own);
    if let Some(first) = said.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    html! { p.held { (said) "." } }
}

/// The owner's node has stopped signing: why, and what to do.
pub(super) fn stopped_html(why: &str) -> Markup {
    html! {
        p.fork { strong { "This node has stopped signing new posts. " } (why) "." }
    }
}

/// Why the owner's node refuses to sign, if it does.
pub(super) fn signing_stopped(
    store: &crate::store::Store,
    owner: &AuthorKey,
) -> Result<Option<String>, crate::store::StoreError> {
    if let Some(proof) = store.fork_of(owner)? {
        return Ok(Some(
            crate::store::StoreError::OwnLogForked(proof.first.seq()).to_string(),
        ));
    }
    Ok(store.signing(owner)?.refusal())
}

/// The owner's block and mute buttons for `author`.
pub(super) fn block_buttons(v: &Viewer, author: &AuthorKey, blocked: bool, muted: bool) -> Markup {
    let button = |action: &str, label: &str| {
        html! {
            form.inline method="post" action="/block" {
                input type="hidden" name="csrf" value=(v.csrf);
                input type="hidden" name="author" value=(author.to_string());
                input type="hidden" name="action" value=(action);
                button.link type="submit" { (label) }
            }
        }
    };
    html! {
        @if blocked { (button("unblock", "Unblock")) }
        @else {
            (button("block", "Block"))
            @if muted { (button("unmute", "Unmute")) } @else { (button("mute", "Mute")) }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log_page(
    state: &State,
    viewer: Option<&Viewer>,
    author: AuthorKey,
    profile: Option<(String, String)>,
    origin: Option<Origin>,
    fork: Option<crate::store::ForkProof>,
    (followed, muted): (bool, bool),
    stopped: Option<String>,
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
            @if let Some(origin) = &origin {
                (origin_html(origin))
                @if !origin.held.peers.is_empty() { (held_by_html(&origin.held, false)) }
            }
            @if let Some(proof) = &fork { (fork_html(proof)) }
            @if let Some(why) = &stopped { (stopped_html(why)) }
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
                (block_buttons(v, &author, false, muted))
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
    let name = match &profile {
        Some((name, _)) if !name.is_empty() => name.clone(),
        _ => short(&author),
    };
    let description = match &profile {
        Some((_, bio)) if !bio.is_empty() => summary(bio),
        _ if owner => format!("Posts by {name}, signed and verifiable, on their own Capsule node."),
        _ => format!("A verified copy of the posts of {name}, mirrored by this Capsule node."),
    };
    layout(
        if owner {
            "Capsule"
        } else {
            "Capsule: a mirrored log"
        },
        &description,
        viewer,
        body,
    )
}

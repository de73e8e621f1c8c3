//! What the pages show of the fediverse: the owner's account and its
//! followers, replies and reactions from other servers under a post, and
//! the notes of followed accounts on the owner's home. Remote HTML was
//! sanitized when it was taken in (only Mastodon's tags, safe links);
//! remote pictures are shown as links, never fetched.

use maud::{Markup, PreEscaped, html};

use crate::store::fediverse::{RemoteActor, RemoteNote};

/// A remote note with its id and author, as read from the store.
pub type Remote = (String, RemoteNote, Option<RemoteActor>);

/// The owner's fediverse account and how many follow it there.
pub fn account_html(account: &str, followers: u64) -> Markup {
    html! {
        p.muted.fediverse {
            "On the fediverse: " strong { (account) } " · "
            (followers) @if followers == 1 { " follower" } @else { " followers" }
        }
    }
}

/// Whom the owner follows on the fediverse, each with an Unfollow button.
pub fn following_html(following: &[crate::store::fediverse::Following], csrf: &str) -> Markup {
    html! {
        @if !following.is_empty() {
            section.fediverse-following {
                h2 { "Following on the fediverse" }
                @for f in following {
                    form.inline method="post" action="/unfollow" {
                        "@" (f.handle)
                        @if !f.accepted { " " span.muted { "(asked)" } }
                        " "
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="author" value=(format!("@{}", f.handle));
                        button.link type="submit" { "Unfollow" }
                    }
                }
            }
        }
    }
}

/// Likes and boosts a post got from other servers.
pub fn reactions_html(likes: u64, boosts: u64) -> Markup {
    html! {
        @if likes + boosts > 0 {
            p.muted.reactions {
                (likes) @if likes == 1 { " like" } @else { " likes" }
                " · " (boosts) @if boosts == 1 { " boost" } @else { " boosts" }
                " from the fediverse"
            }
        }
    }
}

/// Who wrote a remote note: their name, linking to their profile.
fn byline(note: &RemoteNote, actor: &Option<RemoteActor>) -> Markup {
    let host = url::Url::parse(&note.actor)
        .map(|u| u.authority().to_string())
        .unwrap_or_default();
    let (name, user, link) = match actor {
        Some(a) => (
            if a.name.is_empty() {
                a.username.clone()
            } else {
                a.name.clone()
            },
            a.username.clone(),
            a.url.clone(),
        ),
        None => (note.actor.clone(), String::new(), note.actor.clone()),
    };
    html! {
        a.author href=(safe_url(&link)) rel="nofollow noopener ugc" { (name) }
        @if !user.is_empty() { " " span.muted { "@" (user) "@" (host) } }
        " " span.badge { "fediverse" }
    }
}

/// A URL fit for an `href`: http(s) only, else `#`.
fn safe_url(url: &str) -> &str {
    if url.starts_with("https://") || url.starts_with("http://") {
        url
    } else {
        "#"
    }
}

/// One remote note.
pub fn remote_html((id, note, actor): &Remote) -> Markup {
    html! {
        article.post.remote {
            div.byline { (byline(note, actor)) }
            div.text { (PreEscaped(&note.content)) }
            @for (url, media, alt) in &note.attachments {
                p.attachment {
                    a href=(safe_url(url)) rel="nofollow noopener ugc" {
                        @if media.starts_with("image/") { "Picture" } @else { "Attachment" }
                        @if !alt.is_empty() { ": " (alt) }
                    }
                }
            }
            p.meta {
                a href=(safe_url(if note.url.is_empty() { id } else { &note.url })) rel="nofollow noopener ugc" {
                    time { (crate::log::present::format_time(note.published_us)) }
                    " · original"
                }
            }
        }
    }
}

/// Remote replies to a post, threaded: each under the reply it answers.
pub fn replies_html(replies: &[Remote]) -> Markup {
    let ids: std::collections::HashSet<&str> = replies.iter().map(|r| r.0.as_str()).collect();
    let top: Vec<&Remote> = replies
        .iter()
        .filter(|r| r.1.in_reply_to.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    html! {
        @if !replies.is_empty() {
            section.thread.replies.fediverse {
                h2 { (replies.len()) @if replies.len() == 1 { " reply" } @else { " replies" } " from the fediverse" }
                @for r in top { (thread(r, replies, 0)) }
            }
        }
    }
}

/// Threads deeper than this are shown flat.
const DEPTH: usize = 8;

fn thread(reply: &Remote, all: &[Remote], depth: usize) -> Markup {
    let children: Vec<&Remote> = all
        .iter()
        .filter(|r| r.1.in_reply_to.as_deref() == Some(reply.0.as_str()))
        .collect();
    html! {
        (remote_html(reply))
        @if !children.is_empty() && depth < DEPTH {
            div.nested { @for c in children { (thread(c, all, depth + 1)) } }
        }
    }
}

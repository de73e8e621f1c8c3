//! The pages' templates (maud: HTML-escaped by construction). They take
//! what to show and who is looking, and read nothing themselves.

use maud::{DOCTYPE, Markup, html};

use super::auth::Viewer;
use super::timeline::{Byline, Post, Profile};
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

/// The picture types the forms take.
const ACCEPT: &str = "image/jpeg,image/png,image/webp,image/gif";

pub(super) fn compose_form(viewer: &Viewer, reply_to: Option<&str>) -> Markup {
    html! {
        form.compose method="post" action="/post" enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            @if let Some(id) = reply_to {
                input type="hidden" name="reply_to" value=(id);
            }
            label for="text" { @if reply_to.is_some() { "Reply" } @else { "New post" } }
            textarea #text name="text" rows="3" maxlength="60000" {}
            details.pictures {
                summary { "Add pictures (up to 4)" }
                @for i in 1..=crate::store::compose::MAX_PICTURES {
                    fieldset {
                        legend { "Picture " (i) }
                        label for=(format!("picture{i}")) { "File (JPEG, PNG, WebP or GIF, up to 16 MiB)" }
                        input id=(format!("picture{i}")) type="file" name=(format!("picture{i}")) accept=(ACCEPT);
                        label for=(format!("alt{i}")) { "What it shows (alt text)" }
                        textarea id=(format!("alt{i}")) name=(format!("alt{i}")) rows="2" maxlength=(crate::store::compose::MAX_ALT) {}
                    }
                }
                p.muted { "Location and camera data are removed before a picture is signed." }
            }
            button type="submit" { @if reply_to.is_some() { "Reply" } @else { "Post" } }
        }
    }
}

/// The owner's profile form: name, bio, picture.
pub(super) fn profile_form(viewer: &Viewer, profile: Option<&Profile>) -> Markup {
    let (name, bio) = profile.map_or(("", ""), |p| (p.name.as_str(), p.bio.as_str()));
    html! {
        details.profile-form {
            summary { "Edit your profile" }
            form.compose method="post" action="/profile" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="name" { "Name" }
                input #name type="text" name="name" value=(name) maxlength=(crate::store::compose::MAX_NAME);
                label for="bio" { "About you" }
                textarea #bio name="bio" rows="2" maxlength=(crate::store::compose::MAX_BIO) { (bio) }
                label for="avatar" { "Picture (its centre square is kept)" }
                input #avatar type="file" name="avatar" accept=(ACCEPT);
                button type="submit" { "Save profile" }
            }
        }
    }
}

/// The URL of blob `hash` on this node.
pub(super) fn blob_url(hash: &[u8; 32]) -> String {
    format!("/api/v1/blobs/{}", hex::encode(hash))
}

/// A profile's heading: picture, name (or `fallback`), bio.
pub(super) fn profile_heading(
    profile: &Option<Profile>,
    fallback: &str,
    author: &AuthorKey,
    by: &Byline,
) -> Markup {
    html! {
        div.heading {
            (avatar_html(by, author, 64))
            h1 { @match profile { Some(p) if !p.name.is_empty() => (p.name), _ => (fallback) } }
        }
        @if let Some(p) = profile { @if !p.bio.is_empty() { p.bio { (linked(&p.bio)) } } }
    }
}

/// The author's picture at `side` CSS pixels, or nothing.
fn avatar_html(by: &Byline, author: &AuthorKey, side: u32) -> Markup {
    html! {
        @if let Some(hash) = &by.avatar {
            img.avatar src=(blob_url(hash)) alt=(format!("{}'s picture", by.name.clone().unwrap_or_else(|| short(author)))) width=(side) height=(side);
        }
    }
}

/// `text` with its web addresses made links. Links in posts are the
/// authors', not this node's: `nofollow ugc` says so to search engines,
/// `noopener` keeps the opened page from reaching back.
pub(super) fn linked(text: &str) -> Markup {
    html! {
        @for (part, is_link) in split_links(text) {
            @if is_link {
                a href=(part) rel="nofollow noopener ugc" { (part) }
            } @else {
                (part)
            }
        }
    }
}

/// `text` cut into runs, each a web address (`http://` or `https://` up
/// to a space, without trailing punctuation) or not.
pub fn split_links(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        let tail = &rest[start..];
        let mut end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        end = tail[..end]
            .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\''])
            .len();
        let scheme_len = if tail.starts_with("https://") { 8 } else { 7 };
        if end <= scheme_len {
            out.push((&rest[..start + scheme_len], false));
            rest = &rest[start + scheme_len..];
            continue;
        }
        if start > 0 {
            out.push((&rest[..start], false));
        }
        out.push((&tail[..end], true));
        rest = &tail[end..];
    }
    if !rest.is_empty() {
        out.push((rest, false));
    }
    out
}

/// The CSS size of `pixels` image pixels: pictures are laid out at two
/// image pixels per CSS pixel, so they are sharp on the screens most people
/// read on (phones, at two or three device pixels per CSS pixel) and a
/// 1,200-pixel thumbnail fills the 600-pixel column exactly. The attributes
/// keep each picture's proportions, so the page does not move as it loads.
pub(super) fn css_pixels(pixels: u32) -> u32 {
    pixels.div_ceil(2).max(1)
}

/// A post's pictures: each the thumbnail (or the picture) at its size,
/// lazily loaded, linking to the whole picture; one not held here says so.
fn pictures_html(post: &Post) -> Markup {
    html! {
        @if !post.pictures.is_empty() {
            div.pictures {
                @for shown in &post.pictures {
                    @let p = &shown.picture;
                    @if shown.held {
                        @let (src, w, h) = match (&p.thumbnail, shown.thumbnail_held) {
                            (Some(t), true) => (blob_url(&t.blob.hash), t.width, t.height),
                            _ => (blob_url(&p.blob.hash), p.width, p.height),
                        };
                        a href=(blob_url(&p.blob.hash)) {
                            img src=(src) alt=(p.alt) width=(css_pixels(w)) height=(css_pixels(h)) loading="lazy" decoding="async";
                        }
                    } @else {
                        p.not-held {
                            "Picture not held here"
                            @if !p.alt.is_empty() { ": " (p.alt) }
                            @if let Some(origin) = &post.by.origin {
                                " (" a href=(format!("{origin}{}", blob_url(&p.blob.hash))) rel="nofollow noopener" { "see it at its origin" } ")"
                            }
                        }
                    }
                }
            }
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
            div.by {
                (avatar_html(&post.by, &post.author, 32))
                a href=(if post.author == *owner { "/".to_string() } else { format!("/@{}", post.author) }) {
                    (post.by.name.clone().unwrap_or_else(|| short(&post.author)))
                }
            }
            @if let Some(text) = &post.text {
                @if !text.is_empty() { p { (linked(text)) } }
                (pictures_html(post))
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
    (profile, by): (Option<Profile>, Byline),
    origin: Option<Origin>,
    fork: Option<crate::store::ForkProof>,
    (followed, muted): (bool, bool),
    stopped: Option<String>,
    posts: &[Post],
    next: Option<u64>,
    base: &str,
    followers: u64,
) -> Markup {
    let owner = author == state.owner;
    let body = html! {
        header.profile {
            (profile_heading(&profile, &short(&author), &author, &by))
            div.key { (author.to_string()) }
            @if let (true, Some(account)) = (owner, &state.fediverse) {
                (super::fediverse::account_html(account, followers))
            }
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
        Some(p) if !p.name.is_empty() => p.name.clone(),
        _ => short(&author),
    };
    let description = match &profile {
        Some(p) if !p.bio.is_empty() => summary(&p.bio),
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

#[cfg(test)]
mod tests {
    use super::split_links;

    #[test]
    fn web_addresses_become_links_and_nothing_else_does() {
        assert_eq!(
            split_links("see https://example.org/a?b=1, then http://x.y."),
            vec![
                ("see ", false),
                ("https://example.org/a?b=1", true),
                (", then ", false),
                ("http://x.y", true),
                (".", false)
            ]
        );
        assert_eq!(split_links("no links here"), vec![("no links here", false)]);
        assert_eq!(
            split_links("bare https:// alone"),
            vec![("bare https://", false), (" alone", false)]
        );
        assert_eq!(
            split_links("(https://a.b/c)"),
            vec![("(", false), ("https://a.b/c", true), (")", false)]
        );
    }
}

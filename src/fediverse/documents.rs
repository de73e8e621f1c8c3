//! The JSON documents other servers read: WebFinger, NodeInfo, the actor
//! (`Person`), a post as a `Note`, the activities that carry them, and the
//! paged collections. Built from the store on each request; nothing here is
//! kept.

use serde_json::{Value, json};

use super::Federation;
use crate::gateway::timeline::{self, Post};
use crate::log::present::rfc3339;
use crate::store::{Store, StoreError};

/// The JSON-LD contexts of every document: ActivityStreams, the security
/// vocabulary (for `publicKey`), and the one Mastodon extension used.
pub fn context() -> Value {
    json!([
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {"manuallyApprovesFollowers": "as:manuallyApprovesFollowers", "sensitive": "as:sensitive"}
    ])
}

/// Everyone, in `to`.
pub const PUBLIC: &str = "https://www.w3.org/ns/activitystreams#Public";

/// Posts on one page of the outbox.
pub const PAGE: u64 = 20;

/// The WebFinger answer (JRD) for `resource`, if it names the owner:
/// `acct:HANDLE@HOST` or the actor's URL.
pub fn webfinger(fed: &Federation, resource: &str) -> Option<Value> {
    let account = fed.account();
    let actor = fed.actor_id();
    let named = resource.eq_ignore_ascii_case(&account) || resource == actor;
    named.then(|| {
        json!({
            "subject": account,
            "aliases": [actor],
            "links": [
                {"rel": "self", "type": super::client::ACTIVITY_JSON, "href": actor},
                {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": actor}
            ]
        })
    })
}

/// `/.well-known/nodeinfo`: where the NodeInfo 2.0 document is.
pub fn nodeinfo_links(fed: &Federation) -> Value {
    json!({"links": [{
        "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
        "href": fed.url("nodeinfo/2.0")
    }]})
}

/// The NodeInfo 2.0 document.
pub fn nodeinfo(posts: u64) -> Value {
    json!({
        "version": "2.0",
        "software": {"name": "capsule", "version": env!("CARGO_PKG_VERSION")},
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": ["atom1.0"]},
        "openRegistrations": false,
        "usage": {"users": {"total": 1, "activeMonth": 1, "activeHalfyear": 1}, "localPosts": posts},
        "metadata": {}
    })
}

/// The owner as a `Person`.
pub fn person(fed: &Federation, store: &Store) -> Result<Value, StoreError> {
    let profile = timeline::profile(store, &fed.owner)?.unwrap_or_default();
    let published = store.entry(&fed.owner, 1)?.map_or(0, |e| e.timestamp_us());
    let actor = fed.actor_id();
    let mut doc = json!({
        "@context": context(),
        "id": actor,
        "type": "Person",
        "preferredUsername": fed.handle,
        "name": if profile.name.is_empty() { fed.handle.clone() } else { profile.name.clone() },
        "summary": content_html(&profile.bio),
        "url": actor,
        "published": rfc3339(published),
        "manuallyApprovesFollowers": false,
        "discoverable": true,
        "inbox": fed.url("inbox"),
        "outbox": fed.url("outbox"),
        "followers": fed.url("followers"),
        "following": fed.url("following"),
        "endpoints": {"sharedInbox": fed.url("inbox")},
        "publicKey": {
            "id": fed.key_id(),
            "owner": actor,
            "publicKeyPem": fed.key.public_pem(),
        },
        "attachment": [{
            "type": "PropertyValue",
            "name": "Capsule",
            "value": format!("{}", fed.owner),
        }],
    });
    if let Some(avatar) = &profile.avatar {
        doc["icon"] = json!({
            "type": "Image",
            "mediaType": avatar.media_type,
            "url": blob_url(fed, &avatar.hash),
        });
    }
    Ok(doc)
}

/// What a post's URL answers an ActivityPub request with.
#[derive(Debug)]
pub enum NoteAnswer {
    /// The note.
    Note(Value),
    /// The post was deleted (410 Gone, with a Tombstone).
    Gone(Value),
    /// No such post of the owner.
    NotFound,
}

/// The owner's post `seq` as a note.
pub fn note(fed: &Federation, store: &Store, seq: u64) -> Result<NoteAnswer, StoreError> {
    let Some(row) = timeline::scanned(store, &fed.owner, seq)? else {
        return Ok(NoteAnswer::NotFound);
    };
    if row.deleted_by.is_some() {
        return Ok(NoteAnswer::Gone(tombstone(fed, seq)));
    }
    Ok(match timeline::as_post(&row) {
        Some(post) if post.text.is_some() => {
            let mut doc = note_of(fed, &post);
            doc["@context"] = context();
            NoteAnswer::Note(doc)
        }
        _ => NoteAnswer::NotFound,
    })
}

/// A deleted note's tombstone.
pub fn tombstone(fed: &Federation, seq: u64) -> Value {
    json!({"@context": context(), "id": fed.note_id(seq), "type": "Tombstone"})
}

/// A post (of the owner) as a `Note`, without `@context`.
pub fn note_of(fed: &Federation, post: &Post) -> Value {
    let id = fed.note_id(post.seq);
    let in_reply_to = post
        .reply_to
        .filter(|(author, _)| *author == fed.owner)
        .map(|(_, seq)| fed.note_id(seq));
    let attachments: Vec<Value> = post
        .pictures
        .iter()
        .map(|shown| {
            let p = &shown.picture;
            json!({
                "type": if p.blob.media_type.starts_with("image/") { "Image" } else { "Document" },
                "mediaType": p.blob.media_type,
                "url": blob_url(fed, &p.blob.hash),
                "width": p.width,
                "height": p.height,
                "name": p.alt,
            })
        })
        .collect();
    json!({
        "id": id,
        "type": "Note",
        "url": id,
        "attributedTo": fed.actor_id(),
        "content": content_html(post.text.as_deref().unwrap_or_default()),
        "published": rfc3339(post.timestamp_us),
        "to": [PUBLIC],
        "cc": [fed.url("followers")],
        "inReplyTo": in_reply_to,
        "sensitive": false,
        "attachment": attachments,
        "tag": [],
    })
}

/// `Create{Note}` for a new post.
pub fn create(fed: &Federation, post: &Post) -> Value {
    let note = note_of(fed, post);
    json!({
        "@context": context(),
        "id": format!("{}#create", fed.note_id(post.seq)),
        "type": "Create",
        "actor": fed.actor_id(),
        "published": note["published"],
        "to": [PUBLIC],
        "cc": [fed.url("followers")],
        "object": note,
    })
}

/// `Delete{Tombstone}` for a deleted post.
pub fn delete(fed: &Federation, seq: u64) -> Value {
    json!({
        "@context": context(),
        "id": format!("{}#delete", fed.note_id(seq)),
        "type": "Delete",
        "actor": fed.actor_id(),
        "to": [PUBLIC],
        "cc": [fed.url("followers")],
        "object": {"id": fed.note_id(seq), "type": "Tombstone"},
    })
}

/// `Update{Person}` after the profile entry `seq`.
pub fn update_person(fed: &Federation, person: Value, seq: u64) -> Value {
    json!({
        "@context": context(),
        "id": format!("{}#updates/{seq}", fed.actor_id()),
        "type": "Update",
        "actor": fed.actor_id(),
        "to": [PUBLIC],
        "cc": [fed.url("followers")],
        "object": person,
    })
}

/// The outbox: the collection, or with `before` (a seq, or 0 for the
/// newest) one page of `Create` activities, newest first.
pub fn outbox(fed: &Federation, store: &Store, page: Option<u64>) -> Result<Value, StoreError> {
    let id = fed.url("outbox");
    let Some(before) = page else {
        let mut total = 0u64;
        store.scan(&fed.owner, 1, |s| {
            if timeline::as_post(&s).is_some_and(|p| p.text.is_some()) {
                total += 1;
            }
            true
        })?;
        return Ok(json!({
            "@context": context(),
            "id": id,
            "type": "OrderedCollection",
            "totalItems": total,
            "first": format!("{id}?before=0"),
        }));
    };
    let (posts, next) = timeline::posts(store, &fed.owner, (before > 0).then_some(before), PAGE)?;
    let items: Vec<Value> = posts
        .iter()
        .filter(|p| p.text.is_some())
        .map(|p| {
            let mut c = create(fed, p);
            c.as_object_mut().map(|o| o.remove("@context"));
            c
        })
        .collect();
    let mut doc = json!({
        "@context": context(),
        "id": format!("{id}?before={before}"),
        "type": "OrderedCollectionPage",
        "partOf": id,
        "orderedItems": items,
    });
    if let Some(next) = next {
        doc["next"] = json!(format!("{id}?before={next}"));
    }
    Ok(doc)
}

/// A collection of actor ids (followers, following), paged by
/// [`PAGE`] × 5 when `page` (from 1) is given.
pub fn collection(fed: &Federation, name: &str, ids: &[String], page: Option<u64>) -> Value {
    let id = fed.url(name);
    let per = (PAGE * 5) as usize;
    match page {
        None => json!({
            "@context": context(),
            "id": id,
            "type": "OrderedCollection",
            "totalItems": ids.len(),
            "first": format!("{id}?page=1"),
        }),
        Some(n) => {
            let n = n.max(1);
            let start = ((n - 1) as usize).saturating_mul(per);
            let items: Vec<&String> = ids.iter().skip(start).take(per).collect();
            let mut doc = json!({
                "@context": context(),
                "id": format!("{id}?page={n}"),
                "type": "OrderedCollectionPage",
                "partOf": id,
                "totalItems": ids.len(),
                "orderedItems": items,
            });
            if start + per < ids.len() {
                doc["next"] = json!(format!("{id}?page={}", n + 1));
            }
            doc
        }
    }
}

/// A blob's absolute URL.
pub fn blob_url(fed: &Federation, hash: &[u8; 32]) -> String {
    format!("{}/api/v1/blobs/{}", fed.origin, hex::encode(hash))
}

/// A post's text as the HTML Mastodon keeps: paragraphs at blank lines,
/// `<br>` at line breaks, web addresses as links, everything else escaped.
pub fn content_html(text: &str) -> String {
    let mut out = String::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        out.push_str("<p>");
        for (i, line) in paragraph.lines().enumerate() {
            if i > 0 {
                out.push_str("<br>");
            }
            for (part, link) in crate::gateway::views::split_links(line) {
                let escaped = escape(part);
                if link {
                    out.push_str(&format!(
                        "<a href=\"{escaped}\" rel=\"nofollow noopener ugc\">{escaped}</a>"
                    ));
                } else {
                    out.push_str(&escaped);
                }
            }
        }
        out.push_str("</p>");
    }
    out
}

/// `text` with the five HTML specials escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_paragraphs_breaks_and_links() {
        assert_eq!(
            content_html("hi <b>\nsee https://a.example/x.\n\nbye"),
            "<p>hi &lt;b&gt;<br>see <a href=\"https://a.example/x\" rel=\"nofollow noopener ugc\">https://a.example/x</a>.</p><p>bye</p>"
        );
        assert_eq!(content_html(""), "");
    }
}

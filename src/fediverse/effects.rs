//! What a checked activity changes, in one write transaction, each
//! activity once (by its id), each kind bounded: at most
//! [`MAX_NOTES_PER_ACTOR`] notes kept of one remote actor, at most
//! [`MAX_REPLIES_PER_POST`] remote replies to one post, at most
//! [`MAX_HOME`] notes on the owner's home.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde_json::{Value, json};

use super::Federation;
use super::actors::{self, id_of};
use super::sanitize;
use crate::store::StoreError;
use crate::store::fediverse::{
    ACTOR_NOTES, ACTORS, COUNTS, FOLLOWERS, FOLLOWING, Follower, Following, HOME, NOTES, REACTIONS,
    REPLIES, Reaction, RemoteActor, RemoteNote, SEEN, count_key, decode, encode,
};

/// Notes of one remote actor kept at most.
pub const MAX_NOTES_PER_ACTOR: u64 = 500;
/// Remote replies kept per post at most.
pub const MAX_REPLIES_PER_POST: usize = 500;
/// Notes of followed people kept for the home at most (the oldest go).
pub const MAX_HOME: u64 = 5_000;
/// Attachments kept per note.
pub const MAX_ATTACHMENTS: usize = 4;
/// Activity ids remembered, to take each once: a week of them.
pub const SEEN_FOR_US: u64 = 7 * 24 * 3600 * 1_000_000;

fn seen_key(id: &str) -> [u8; 16] {
    let hash = blake3::hash(id.as_bytes());
    hash.as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

/// Applies `activity` from `actor_id` (checked, with its cached actor).
pub fn apply(
    fed: &Federation,
    activity: &Value,
    actor_id: &str,
    actor: &RemoteActor,
    now_us: u64,
) -> Result<(), StoreError> {
    let kind = activity
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = activity.get("object").cloned().unwrap_or(Value::Null);
    fed.tables.write(|txn| {
        if let Some(id) = activity.get("id").and_then(Value::as_str) {
            let mut seen = txn.open_table(SEEN)?;
            if seen.insert(&seen_key(id), now_us)?.is_some() {
                return Ok(());
            }
        }
        match kind {
            "Follow" if id_of(&object) == Some(&fed.actor_id()) => {
                followed(fed, txn, activity, actor_id, actor, now_us)
            }
            "Undo" => undo(txn, &object, actor_id),
            "Accept" | "Reject" => answered(txn, &object, actor_id, kind == "Accept"),
            "Create" => created(fed, txn, &object, actor_id, now_us),
            "Update" => updated(txn, &object, actor_id, now_us),
            "Delete" => deleted(txn, &object, actor_id),
            "Like" => reacted(fed, txn, activity, &object, actor_id, 1),
            "Announce" => reacted(fed, txn, activity, &object, actor_id, 2),
            _ => Ok(()),
        }
    })
}

fn followed(
    fed: &Federation,
    txn: &WriteTransaction,
    activity: &Value,
    actor_id: &str,
    actor: &RemoteActor,
    now_us: u64,
) -> Result<(), StoreError> {
    let mut followers = txn.open_table(FOLLOWERS)?;
    let since_us = followers
        .get(actor_id)?
        .and_then(|v| decode::<Follower>(v.value()))
        .map_or(now_us, |f| f.since_us);
    let row = Follower {
        inbox: actor.inbox.clone(),
        shared_inbox: actor.shared_inbox.clone(),
        since_us,
    };
    followers.insert(actor_id, encode(&row).as_slice())?;
    let follow_id = activity
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let accept = json!({
        "@context": super::documents::context(),
        "id": format!("{}#accepts/{}", fed.actor_id(), &blake3::hash(follow_id.as_bytes()).to_hex()[..32]),
        "type": "Accept",
        "actor": fed.actor_id(),
        "object": activity,
    });
    super::delivery::enqueue(txn, &actor.inbox, accept.to_string().as_bytes(), now_us)
}

fn undo(txn: &WriteTransaction, object: &Value, actor_id: &str) -> Result<(), StoreError> {
    let Some(id) = id_of(object) else {
        return Ok(());
    };
    let mut reactions = txn.open_table(REACTIONS)?;
    let reaction = reactions
        .get(id)?
        .and_then(|v| decode::<Reaction>(v.value()));
    if let Some(r) = reaction.filter(|r| r.actor == actor_id) {
        reactions.remove(id)?;
        return count(txn, r.seq, r.kind, false);
    }
    if object.get("type").and_then(Value::as_str) == Some("Follow") || object.get("type").is_none()
    {
        txn.open_table(FOLLOWERS)?.remove(actor_id)?;
    }
    Ok(())
}

fn answered(
    txn: &WriteTransaction,
    object: &Value,
    actor_id: &str,
    accepted: bool,
) -> Result<(), StoreError> {
    let mut following = txn.open_table(FOLLOWING)?;
    let Some(mut row) = following
        .get(actor_id)?
        .and_then(|v| decode::<Following>(v.value()))
    else {
        return Ok(());
    };
    if id_of(object) != Some(row.follow_id.as_str()) {
        return Ok(());
    }
    if accepted {
        row.accepted = true;
        following.insert(actor_id, encode(&row).as_slice())?;
    } else {
        following.remove(actor_id)?;
    }
    Ok(())
}

/// The host of a URL, for same-origin checks.
fn host(url: &str) -> Option<String> {
    url::Url::parse(url).ok().and_then(|u| {
        u.host_str()
            .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
    })
}

/// Whether `object`'s id is on the actor's server and the object is
/// attributed to the actor.
fn own_object(object: &Value, actor_id: &str) -> bool {
    let attributed = object.get("attributedTo").and_then(|a| match a {
        Value::Array(list) => list.first().and_then(id_of),
        other => id_of(other),
    });
    attributed == Some(actor_id)
        && id_of(object).and_then(host).is_some()
        && id_of(object).and_then(host) == host(actor_id)
}

/// A note's fields as kept, if it is a note.
fn read_note(object: &Value, actor_id: &str, now_us: u64) -> Option<RemoteNote> {
    if !matches!(
        object.get("type").and_then(Value::as_str),
        Some("Note" | "Article" | "Page" | "Question")
    ) {
        return None;
    }
    let content = object
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let url = match object.get("url") {
        Some(Value::String(u)) => u.clone(),
        Some(other) => other
            .as_array()
            .and_then(|l| l.first())
            .and_then(|l| l.get("href").and_then(Value::as_str).or(l.as_str()))
            .unwrap_or_else(|| id_of(object).unwrap_or_default())
            .to_string(),
        None => id_of(object).unwrap_or_default().to_string(),
    };
    let attachments = object
        .get("attachment")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let url = match a.get("url")? {
                        Value::String(u) => u.clone(),
                        other => other.get("href")?.as_str()?.to_string(),
                    };
                    let safe = url.starts_with("https://") || url.starts_with("http://");
                    (safe && url.len() <= actors::MAX_URL).then(|| {
                        (
                            url,
                            sanitize::text(
                                a.get("mediaType")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default(),
                                100,
                            ),
                            sanitize::text(
                                a.get("name").and_then(Value::as_str).unwrap_or_default(),
                                1500,
                            ),
                        )
                    })
                })
                .take(MAX_ATTACHMENTS)
                .collect()
        })
        .unwrap_or_default();
    Some(RemoteNote {
        actor: actor_id.to_string(),
        url: if url.starts_with("https://") || url.starts_with("http://") {
            url
        } else {
            String::new()
        },
        content: sanitize::html(content),
        published_us: object
            .get("published")
            .and_then(Value::as_str)
            .and_then(crate::log::present::parse_rfc3339)
            .unwrap_or(now_us),
        reply_to_seq: None,
        in_reply_to: object.get("inReplyTo").and_then(id_of).map(str::to_string),
        home: false,
        attachments,
    })
}

fn created(
    fed: &Federation,
    txn: &WriteTransaction,
    object: &Value,
    actor_id: &str,
    now_us: u64,
) -> Result<(), StoreError> {
    let (Some(id), true) = (id_of(object), own_object(object, actor_id)) else {
        return Ok(());
    };
    let Some(mut note) = read_note(object, actor_id, now_us) else {
        return Ok(());
    };
    let mut notes = txn.open_table(NOTES)?;
    if notes.get(id)?.is_some() {
        return Ok(());
    }
    note.reply_to_seq = match &note.in_reply_to {
        Some(parent) => match fed.own_seq(parent) {
            Some(seq) => Some(seq),
            None => notes
                .get(parent.as_str())?
                .and_then(|v| decode::<RemoteNote>(v.value()))
                .and_then(|p| p.reply_to_seq),
        },
        None => None,
    };
    let me = fed.actor_id();
    let mentions = object
        .get("tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("type").and_then(Value::as_str) == Some("Mention")
                    && t.get("href").and_then(Value::as_str) == Some(me.as_str())
            })
        });
    note.home = txn
        .open_table(FOLLOWING)?
        .get(actor_id)?
        .and_then(|v| decode::<Following>(v.value()))
        .is_some_and(|f| f.accepted)
        || mentions;
    if note.reply_to_seq.is_none() && !note.home {
        return Ok(());
    }
    let mut per_actor = txn.open_table(ACTOR_NOTES)?;
    let kept = per_actor.get(actor_id)?.map_or(0, |v| v.value());
    if kept >= MAX_NOTES_PER_ACTOR {
        return Ok(());
    }
    let published = note.published_us.to_be_bytes();
    if let Some(seq) = note.reply_to_seq {
        let mut replies = txn.open_table(REPLIES)?;
        let (from, to) = (seq.to_be_bytes(), (seq + 1).to_be_bytes());
        if replies.range(from.as_slice()..to.as_slice())?.count() >= MAX_REPLIES_PER_POST {
            return Ok(());
        }
        let key = [&from[..], &published[..], id.as_bytes()].concat();
        replies.insert(key.as_slice(), ())?;
    }
    if note.home {
        let mut home = txn.open_table(HOME)?;
        let key = [&published[..], id.as_bytes()].concat();
        home.insert(key.as_slice(), ())?;
        if home.len()? > MAX_HOME {
            let oldest = home.first()?.map(|(k, _)| k.value().to_vec());
            if let Some(k) = oldest {
                home.remove(k.as_slice())?;
            }
        }
    }
    notes.insert(id, encode(&note).as_slice())?;
    per_actor.insert(actor_id, kept + 1)?;
    Ok(())
}

fn updated(
    txn: &WriteTransaction,
    object: &Value,
    actor_id: &str,
    now_us: u64,
) -> Result<(), StoreError> {
    let Some(id) = id_of(object) else {
        return Ok(());
    };
    if id == actor_id {
        if let Ok(actor) = actors::parse(actor_id, object, now_us) {
            txn.open_table(ACTORS)?
                .insert(actor_id, encode(&actor).as_slice())?;
        }
        return Ok(());
    }
    let mut notes = txn.open_table(NOTES)?;
    let Some(old) = notes.get(id)?.and_then(|v| decode::<RemoteNote>(v.value())) else {
        return Ok(());
    };
    if old.actor != actor_id || !own_object(object, actor_id) {
        return Ok(());
    }
    if let Some(new) = read_note(object, actor_id, now_us) {
        let kept = RemoteNote {
            content: new.content,
            attachments: new.attachments,
            ..old
        };
        notes.insert(id, encode(&kept).as_slice())?;
    }
    Ok(())
}

fn deleted(txn: &WriteTransaction, object: &Value, actor_id: &str) -> Result<(), StoreError> {
    let Some(id) = id_of(object) else {
        return Ok(());
    };
    if id == actor_id {
        txn.open_table(FOLLOWERS)?.remove(actor_id)?;
        return Ok(());
    }
    let mut notes = txn.open_table(NOTES)?;
    let Some(note) = notes.get(id)?.and_then(|v| decode::<RemoteNote>(v.value())) else {
        return Ok(());
    };
    if note.actor != actor_id {
        return Ok(());
    }
    notes.remove(id)?;
    let published = note.published_us.to_be_bytes();
    if let Some(seq) = note.reply_to_seq {
        let key = [&seq.to_be_bytes()[..], &published[..], id.as_bytes()].concat();
        txn.open_table(REPLIES)?.remove(key.as_slice())?;
    }
    let key = [&published[..], id.as_bytes()].concat();
    txn.open_table(HOME)?.remove(key.as_slice())?;
    let mut per_actor = txn.open_table(ACTOR_NOTES)?;
    let kept = per_actor.get(actor_id)?.map_or(0, |v| v.value());
    per_actor.insert(actor_id, kept.saturating_sub(1))?;
    Ok(())
}

fn reacted(
    fed: &Federation,
    txn: &WriteTransaction,
    activity: &Value,
    object: &Value,
    actor_id: &str,
    kind: u8,
) -> Result<(), StoreError> {
    let (Some(id), Some(seq)) = (
        activity.get("id").and_then(Value::as_str),
        id_of(object).and_then(|o| fed.own_seq(o)),
    ) else {
        return Ok(());
    };
    let row = Reaction {
        kind,
        seq,
        actor: actor_id.to_string(),
    };
    if txn
        .open_table(REACTIONS)?
        .insert(id, encode(&row).as_slice())?
        .is_none()
    {
        count(txn, seq, kind, true)?;
    }
    Ok(())
}

/// One more (or one fewer) reaction of `kind` to the owner's post `seq`.
fn count(txn: &WriteTransaction, seq: u64, kind: u8, more: bool) -> Result<(), StoreError> {
    let mut counts = txn.open_table(COUNTS)?;
    let key = count_key(seq, kind);
    let n = counts.get(&key)?.map_or(0, |v| v.value());
    let n = if more { n + 1 } else { n.saturating_sub(1) };
    counts.insert(&key, n)?;
    Ok(())
}

/// Forgets activity ids older than a week (run at start).
pub fn forget_seen(fed: &Federation, now_us: u64) -> Result<u64, StoreError> {
    fed.tables.write(|txn| {
        let mut seen = txn.open_table(SEEN)?;
        let cutoff = now_us.saturating_sub(SEEN_FOR_US);
        let before = seen.len()?;
        seen.retain(|_, at| at >= cutoff)?;
        Ok(before - seen.len()?)
    })
}

#[cfg(test)]
#[path = "effects_tests.rs"]
pub(crate) mod apply_tests;

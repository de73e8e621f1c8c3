//! Following someone on another server: `@user@host` looked up by
//! WebFinger, a signed Follow queued for their inbox; their Accept (see
//! [`super::effects`]) makes their public notes show on the owner's home.

use serde_json::{Value, json};

use super::Federation;
use super::actors;
use crate::store::fediverse::{FOLLOWING, Following, decode, encode};

/// Why a fediverse account could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Not `@user@host`.
    #[error("{0:?} is not a fediverse account: write it as @user@host")]
    Handle(String),
    /// WebFinger did not name an actor.
    #[error("{handle}: {why}")]
    Lookup {
        /// The account.
        handle: String,
        /// What went wrong.
        why: String,
    },
    /// The owner does not follow them.
    #[error("you do not follow {0}")]
    NotFollowed(String),
    /// The actor could not be fetched.
    #[error(transparent)]
    Actor(#[from] actors::ActorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// `@user@host` (or `user@host`, or `acct:user@host`) split.
pub fn parse_handle(handle: &str) -> Option<(String, String)> {
    let h = handle.trim();
    let h = h.strip_prefix("acct:").unwrap_or(h);
    let h = h.strip_prefix('@').unwrap_or(h);
    let (user, host) = h.split_once('@')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:[]".contains(&b))
    };
    (ok(user) && ok(host)).then(|| (user.to_string(), host.to_ascii_lowercase()))
}

/// Looks `@user@host` up by WebFinger: the actor's id.
pub async fn webfinger(fed: &Federation, handle: &str) -> Result<String, FollowError> {
    let (user, host) = parse_handle(handle).ok_or_else(|| FollowError::Handle(handle.into()))?;
    let scheme = if fed.client.insecure() {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{host}/.well-known/webfinger?resource=acct:{user}@{host}");
    let lookup = |why: String| FollowError::Lookup {
        handle: handle.to_string(),
        why,
    };
    let reply = fed
        .client
        .get_accepting(&url, "application/jrd+json")
        .await
        .map_err(|e| lookup(e.to_string()))?;
    if !reply.ok() {
        return Err(lookup(format!("WebFinger answered {}", reply.status)));
    }
    let jrd: Value = serde_json::from_slice(&reply.body).map_err(|e| lookup(e.to_string()))?;
    jrd.get("links")
        .and_then(Value::as_array)
        .and_then(|links| {
            links.iter().find(|l| {
                l.get("rel").and_then(Value::as_str) == Some("self")
                    && l.get("type").and_then(Value::as_str).is_some_and(|t| {
                        t == super::client::ACTIVITY_JSON || t.starts_with("application/ld+json")
                    })
            })
        })
        .and_then(|l| l.get("href").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| lookup("WebFinger names no ActivityPub actor".into()))
}

/// Follows `handle`: looks it up, keeps it as asked, queues the Follow.
/// Returns the actor's id.
pub async fn follow(fed: &Federation, handle: &str) -> Result<String, FollowError> {
    let id = webfinger(fed, handle).await?;
    let (id, actor) = actors::get(fed, &id, true).await?;
    let mut nonce = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let follow_id = format!("{}#follows/{}", fed.actor_id(), hex::encode(nonce));
    let activity = json!({
        "@context": super::documents::context(),
        "id": follow_id,
        "type": "Follow",
        "actor": fed.actor_id(),
        "object": id,
    });
    let row = Following {
        handle: parse_handle(handle)
            .map(|(u, h)| format!("{u}@{h}"))
            .unwrap_or_default(),
        inbox: actor.inbox.clone(),
        follow_id,
        accepted: false,
        since_us: crate::clock::now_us(),
    };
    let (tables, key) = (fed.tables.clone(), id.clone());
    tokio::task::spawn_blocking(move || {
        tables.write(|txn| {
            txn.open_table(FOLLOWING)?
                .insert(key.as_str(), encode(&row).as_slice())?;
            super::delivery::enqueue(
                txn,
                &row.inbox,
                activity.to_string().as_bytes(),
                row.since_us,
            )
        })
    })
    .await
    .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))??;
    fed.wake.notify_one();
    Ok(id)
}

/// Stops following `handle`: queues `Undo{Follow}` and forgets the row.
pub async fn unfollow(fed: &Federation, handle: &str) -> Result<String, FollowError> {
    let (user, host) = parse_handle(handle).ok_or_else(|| FollowError::Handle(handle.into()))?;
    let wanted = format!("{user}@{host}");
    let tables = fed.tables.clone();
    let me = fed.actor_id();
    let found = tokio::task::spawn_blocking(move || {
        tables.write(|txn| {
            let mut following = txn.open_table(FOLLOWING)?;
            let mut hit = None;
            for row in redb::ReadableTable::iter(&following)? {
                let (k, v) = row?;
                if let Some(f) = decode::<Following>(v.value())
                    && f.handle.eq_ignore_ascii_case(&wanted)
                {
                    hit = Some((k.value().to_string(), f));
                    break;
                }
            }
            let Some((id, row)) = hit else {
                return Ok(None);
            };
            following.remove(id.as_str())?;
            let undo = json!({
                "@context": super::documents::context(),
                "id": format!("{}/undo", row.follow_id),
                "type": "Undo",
                "actor": me,
                "object": {"id": row.follow_id, "type": "Follow", "actor": me, "object": id},
            });
            super::delivery::enqueue(
                txn,
                &row.inbox,
                undo.to_string().as_bytes(),
                crate::clock::now_us(),
            )?;
            Ok(Some(id))
        })
    })
    .await
    .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))??;
    fed.wake.notify_one();
    found.ok_or_else(|| FollowError::NotFollowed(handle.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_read_in_every_usual_spelling() {
        let want = Some(("bob".to_string(), "m.example".to_string()));
        assert_eq!(parse_handle("@bob@m.example"), want);
        assert_eq!(parse_handle("bob@M.example"), want);
        assert_eq!(parse_handle("acct:bob@m.example"), want);
        assert_eq!(
            parse_handle("@bob@127.0.0.1:8080").map(|h| h.1),
            Some("127.0.0.1:8080".into())
        );
        assert_eq!(parse_handle("bob"), None);
        assert_eq!(parse_handle("@bob@m.example/x"), None);
        assert_eq!(parse_handle("@@m.example"), None);
    }
}

//! Remote actors: fetched with a signed GET, checked (the document is the
//! actor it claims, its key is its own), and cached in the store.

use serde_json::Value;

use super::Federation;
use super::client::FetchError;
use super::sanitize;
use crate::store::fediverse::RemoteActor;

/// Longest display name kept, in characters.
pub const MAX_NAME: usize = 100;
/// Longest URL kept from a remote document.
pub const MAX_URL: usize = 2048;

/// Why a remote actor could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The request failed or was refused.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The server answered, but not with the actor.
    #[error("{url} answered {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is not an actor this node can use.
    #[error("{url}: {why}")]
    Bad {
        /// What was asked.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The id part of a value that is an id or an object with one.
pub fn id_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// `url` without its `#fragment`.
pub fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(u, _)| u)
}

/// A string field, bounded.
fn field<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    doc.get(name)
        .and_then(Value::as_str)
        .filter(|s| s.len() <= MAX_URL)
}

/// Reads an actor document fetched from (or claiming to be) `id`.
pub fn parse(id: &str, doc: &Value, now_us: u64) -> Result<RemoteActor, String> {
    if field(doc, "id") != Some(id) {
        return Err(format!("the document's id is not {id}"));
    }
    let key = doc.get("publicKey").ok_or("no publicKey")?;
    let key = match key {
        Value::Array(keys) => keys.first().ok_or("an empty publicKey")?,
        k => k,
    };
    if field(key, "owner") != Some(id) {
        return Err("its publicKey's owner is not the actor".into());
    }
    let pem = key
        .get("publicKeyPem")
        .and_then(Value::as_str)
        .filter(|p| p.len() <= 16 * 1024)
        .ok_or("no publicKeyPem")?;
    let inbox = field(doc, "inbox").ok_or("no inbox")?;
    Ok(RemoteActor {
        key_id: field(key, "id")
            .ok_or("a publicKey without an id")?
            .to_string(),
        public_pem: pem.to_string(),
        inbox: inbox.to_string(),
        shared_inbox: doc
            .get("endpoints")
            .and_then(|e| field(e, "sharedInbox"))
            .map(str::to_string),
        username: sanitize::text(
            field(doc, "preferredUsername").unwrap_or_default(),
            MAX_NAME,
        ),
        name: sanitize::text(field(doc, "name").unwrap_or_default(), MAX_NAME),
        url: match doc.get("url") {
            Some(Value::String(u)) if u.len() <= MAX_URL => u.clone(),
            _ => id.to_string(),
        },
        fetched_us: now_us,
    })
}

/// The actor `id` (or the owner of the key `id`), with its id: from the
/// cache unless `fresh`, else fetched, checked and cached.
pub async fn get(
    fed: &Federation,
    id: &str,
    fresh: bool,
) -> Result<(String, RemoteActor), ActorError> {
    let id = without_fragment(id).to_string();
    if !fresh {
        let (tables, key) = (fed.tables.clone(), id.clone());
        if let Some(actor) = tokio::task::spawn_blocking(move || tables.reader().actor(&key))
            .await
            .map_err(|e| ActorError::Bad {
                url: id.clone(),
                why: e.to_string(),
            })??
        {
            return Ok((id, actor));
        }
    }
    let reply = fed.client.get(&id).await?;
    if !reply.ok() {
        return Err(ActorError::Status {
            url: id,
            status: reply.status,
        });
    }
    let doc: Value = serde_json::from_slice(&reply.body).map_err(|e| ActorError::Bad {
        url: id.clone(),
        why: e.to_string(),
    })?;
    // A key document (`keyId` naming a key, not the actor) names its owner.
    let doc = match (
        doc.get("owner").and_then(Value::as_str),
        doc.get("publicKeyPem"),
    ) {
        (Some(owner), Some(_)) if doc.get("inbox").is_none() && owner != id => {
            return Box::pin(get(fed, owner, fresh)).await;
        }
        _ => doc,
    };
    let actor = parse(&id, &doc, crate::clock::now_us()).map_err(|why| ActorError::Bad {
        url: id.clone(),
        why,
    })?;
    let (tables, key, kept) = (fed.tables.clone(), id.clone(), actor.clone());
    tokio::task::spawn_blocking(move || tables.keep_actor(&key, &kept))
        .await
        .map_err(|e| ActorError::Bad {
            url: id.clone(),
            why: e.to_string(),
        })??;
    Ok((id, actor))
}

//! What other servers send: an activity POSTed to the inbox is taken in
//! only when everything about it checks out, and then within bounds.
//!
//! Refused with 401, nothing stored: no `Signature`, one that does not
//! parse or verify, one that leaves out `(request-target)`, `host`, `date`
//! or `digest`; a `Digest` that is not the body's SHA-256; a `Date`
//! outside [`PAST`]..[`FUTURE`] of now (Mastodon's window); a key whose
//! actor cannot be fetched (refused addresses included); an activity whose
//! actor is not the key's owner. A body over [`MAX_BODY`] is refused (413)
//! before it is read whole; an actor sending more than [`Limits`] allow is
//! refused (429). The key is fetched once and cached; when a signature
//! does not verify under the cached key, it is fetched again, once.
//!
//! Then, each activity once (by id): Follow, Undo, Accept, Reject, Create
//! (a note answering or mentioning the owner, or from someone the owner
//! follows), Like, Announce, Update and Delete of the sender's own objects.
//! Anything else is acknowledged and dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::Federation;
use super::actors::{self, id_of};
use super::signature::{self, Signature};
use crate::store::fediverse::RemoteActor;

/// Largest activity read.
pub const MAX_BODY: usize = 256 * 1024;
/// How old a request's `Date` may be: Mastodon's five minutes, plus an
/// hour for clocks that are off.
pub const PAST: Duration = Duration::from_secs(65 * 60);
/// How far ahead a `Date` may be.
pub const FUTURE: Duration = Duration::from_secs(60 * 60);
/// Activities one actor may send at once, and per second after that.
pub const BURST: f64 = 100.0;
/// See [`BURST`].
pub const PER_SECOND: f64 = 1.0;
/// Actors whose rates are tracked at once; past this the oldest are
/// forgotten.
pub const TRACKED: usize = 10_000;

/// Why an activity was refused: the status, and words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong.
    pub why: String,
}

fn unauthorized(why: impl std::fmt::Display) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        why: why.to_string(),
    }
}

/// Per-actor token buckets.
#[derive(Default)]
pub struct Limits {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limits {
    /// Takes one token of `actor`'s; false when they have none left.
    pub fn take(&self, actor: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= TRACKED && !buckets.contains_key(actor) {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                buckets.remove(&k);
            }
        }
        let (tokens, at) = buckets.entry(actor.to_string()).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * PER_SECOND).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a `Date` header is within the window around `now`.
pub fn fresh(date: &str, now: SystemTime) -> bool {
    let Ok(when) = httpdate::parse_http_date(date) else {
        return false;
    };
    match when.duration_since(now) {
        Ok(ahead) => ahead <= FUTURE,
        Err(behind) => behind.duration() <= PAST,
    }
}

/// Checks a POST to the inbox and returns the activity and its actor.
pub async fn verify(
    fed: &Federation,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<(Value, String, RemoteActor)>, Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature =
        Signature::parse(text("signature").ok_or_else(|| unauthorized("no Signature header"))?)
            .map_err(unauthorized)?;
    signature
        .covers(&signature::OUTGOING)
        .map_err(unauthorized)?;
    let digest = text("digest").ok_or_else(|| unauthorized("no Digest header"))?;
    if !signature::digest_matches(digest, body) {
        return Err(unauthorized("the Digest is not the body's"));
    }
    if !fresh(text("date").unwrap_or_default(), SystemTime::now()) {
        return Err(unauthorized("the Date is outside the accepted window"));
    }
    let activity: Value = serde_json::from_slice(body).map_err(|e| Refusal {
        status: StatusCode::BAD_REQUEST,
        why: format!("the body is not JSON: {e}"),
    })?;
    let actor_id = activity
        .get("actor")
        .and_then(id_of)
        .ok_or_else(|| Refusal {
            status: StatusCode::BAD_REQUEST,
            why: "the activity names no actor".into(),
        })?
        .to_string();
    let message = signature
        .signing_string("POST", target, |n| text(n))
        .map_err(unauthorized)?;
    // An account deleted on its server cannot be fetched any more; its
    // Delete is broadcast widely. Acknowledge it without a fetch.
    let deletes_itself = activity.get("type").and_then(Value::as_str) == Some("Delete")
        && activity.get("object").and_then(id_of) == Some(&actor_id);
    if deletes_itself {
        let (tables, id) = (fed.tables.clone(), actor_id.clone());
        let known = tokio::task::spawn_blocking(move || tables.reader().actor(&id))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        if known.is_none() {
            return Ok(None);
        }
    }
    let mut fresh_fetch = false;
    loop {
        let (owner, actor) = actors::get(fed, &signature.key_id, fresh_fetch)
            .await
            .map_err(|e| unauthorized(format!("the key {}: {e}", signature.key_id)))?;
        if owner != actor_id {
            return Err(unauthorized(format!(
                "the key belongs to {owner}, the activity's actor is {actor_id}"
            )));
        }
        let verified = super::key::pkcs1_from_pem(&actor.public_pem).is_some_and(|key| {
            signature::verify_rsa(&key, message.as_bytes(), &signature.signature)
        });
        if verified {
            if !fed.limits.take(&actor_id) {
                return Err(Refusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    why: "too many activities from this actor".into(),
                });
            }
            return Ok(Some((activity, actor_id, actor)));
        }
        if fresh_fetch {
            return Err(unauthorized("the signature does not verify"));
        }
        fresh_fetch = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_window_is_mastodons() {
        let now = SystemTime::now();
        let at = |d: SystemTime| httpdate::fmt_http_date(d);
        assert!(fresh(&at(now), now));
        assert!(fresh(&at(now - Duration::from_secs(3600)), now));
        assert!(!fresh(&at(now - Duration::from_secs(86_400)), now));
        assert!(fresh(&at(now + Duration::from_secs(1800)), now));
        assert!(!fresh(&at(now + Duration::from_secs(7200)), now));
        assert!(!fresh("yesterday", now));
    }

    #[test]
    fn a_flood_is_cut_to_the_burst() {
        let limits = Limits::default();
        let taken = (0..10_000)
            .filter(|_| limits.take("https://x.example/a"))
            .count();
        assert!(
            taken >= BURST as usize && taken <= BURST as usize + 5,
            "{taken}"
        );
        assert!(limits.take("https://y.example/b"));
    }
}

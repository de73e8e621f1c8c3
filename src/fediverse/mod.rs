//! ActivityPub: the owner's node as an account people on Mastodon and
//! other fediverse servers can find, follow, read and answer, and that
//! follows them back. The signed log stays the source of truth; this is one
//! more way out and in, built on the same store (its tables are
//! [`crate::store::fediverse`]).
//!
//! - [`key`]: the actor's RSA key, beside the node's ed25519 identity.
//! - [`signature`]: HTTP Signatures (draft-cavage) and the Digest header.
//! - [`actors`]: remote actors, fetched, checked and cached.
//! - [`client`]: signed requests out, never to a private address.
//! - [`documents`]: WebFinger, NodeInfo, the actor, notes, collections.
//! - [`routes`]: the URLs other servers ask, content negotiation on the
//!   pages' own URLs included.
//! - [`inbox`]: what comes in: checked, bounded, then kept.
//! - [`effects`]: what a checked activity changes, once, within bounds.
//! - [`sanitize`]: remote HTML made safe to show.
//! - [`delivery`]: the durable queue of activities going out.
//! - [`follow`]: following someone on another server.
//!
//! Ids: the actor is the owner's page, `ORIGIN/@AUTHOR`; a note is a
//! post's page, `ORIGIN/@AUTHOR/SEQ`; inbox, outbox, followers and following are
//! `ORIGIN/inbox` and so on (one person, so the shared inbox is the inbox).

pub mod actors;
pub mod client;
pub mod delivery;
pub mod documents;
pub mod effects;
pub mod follow;
pub mod inbox;
pub mod key;
pub mod routes;
pub mod sanitize;
pub mod signature;

use std::sync::Arc;

use crate::identity::AuthorKey;
use crate::store::fediverse::Tables;

/// The handle when none is set: the name people see is `@HANDLE@DOMAIN`,
/// and on a one-person site the domain already says who it is, so the
/// default is the domain's first label (`alice` for `alice.example`),
/// made a valid user name.
pub fn default_handle(domain: &str) -> String {
    let label = domain.split('.').next().unwrap_or_default();
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(MAX_HANDLE)
        .collect();
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
        "me".to_string()
    } else {
        name
    }
}

/// Longest handle (Mastodon's limit for user names).
pub const MAX_HANDLE: usize = 30;

/// Whether `name` is a handle Mastodon accepts: letters, digits and
/// underscores, at most [`MAX_HANDLE`].
pub fn valid_handle(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HANDLE
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What the node federates as.
#[derive(Clone)]
pub struct Federation {
    /// The store's fediverse tables.
    pub tables: Tables,
    /// The actor's key.
    pub key: Arc<key::ActorKey>,
    /// Signed requests out.
    pub client: Arc<client::Client>,
    /// `https://DOMAIN[:PORT]`, or `http://HOST:PORT` for tests.
    pub origin: String,
    /// The host people write after the `@` (the domain, with a port if
    /// it is not the default).
    pub host: String,
    /// The user name before the `@`.
    pub handle: String,
    /// The owner.
    pub owner: AuthorKey,
    /// What came in lately, per actor: floods are refused.
    pub limits: Arc<inbox::Limits>,
    /// Wakes the delivery queue.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Federation {
    /// Sets up federation for the owner's node: opens the tables, loads
    /// (or makes) the actor key in `data`.
    pub fn new(
        store: Arc<crate::store::Store>,
        data: &std::path::Path,
        origin: String,
        handle: String,
        owner: AuthorKey,
        insecure: bool,
    ) -> anyhow::Result<Federation> {
        let key = Arc::new(key::ActorKey::load_or_create(data)?);
        let tables = Tables::new(store);
        let host = url::Url::parse(&origin)
            .ok()
            .filter(|u| u.host_str().is_some())
            .map(|u| u.authority().to_string())
            .ok_or_else(|| anyhow::anyhow!("{origin} is not an origin"))?;
        let actor = format!("{origin}/@{owner}");
        Ok(Federation {
            tables,
            client: Arc::new(client::Client::new(
                Arc::clone(&key),
                format!("{actor}#main-key"),
                insecure,
            )),
            key,
            origin,
            host,
            handle,
            owner,
            limits: Arc::default(),
            wake: Arc::default(),
        })
    }

    /// The actor's id: the owner's page.
    pub fn actor_id(&self) -> String {
        format!("{}/@{}", self.origin, self.owner)
    }

    /// The actor key's id.
    pub fn key_id(&self) -> String {
        format!("{}#main-key", self.actor_id())
    }

    /// A post's id: its page.
    pub fn note_id(&self, seq: u64) -> String {
        format!("{}/@{}/{seq}", self.origin, self.owner)
    }

    /// The owner's post a note id names, if it is one.
    pub fn own_seq(&self, id: &str) -> Option<u64> {
        let rest = id.strip_prefix(&self.actor_id())?.strip_prefix('/')?;
        crate::gateway::whole_number(rest)
    }

    /// `ORIGIN/NAME`: inbox, outbox, followers, following.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.origin)
    }

    /// `acct:HANDLE@HOST`.
    pub fn account(&self) -> String {
        format!("acct:{}@{}", self.handle, self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_handle_is_the_domains_first_label() {
        assert_eq!(default_handle("alice.example"), "alice");
        assert_eq!(default_handle("Bob-Smith.example.org"), "bob_smith");
        assert_eq!(default_handle("127.0.0.1"), "me");
        assert_eq!(default_handle(""), "me");
        assert!(valid_handle(&default_handle(&"x".repeat(80))));
        assert!(!valid_handle("a b"));
        assert!(!valid_handle("a@b"));
    }
}

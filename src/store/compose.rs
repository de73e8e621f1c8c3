//! What the owner publishes — posts, replies, deletions — checked against
//! the store and signed by the store thread. The command line (directly, or
//! through a running node's admin socket) and the node share these, so a
//! post is checked the same way whichever path it takes.

use std::sync::Arc;

use crate::clock::now_us;
use crate::identity::{AuthorKey, Identity};
use crate::log::entry::{Entry, EntryId, MAX_PAYLOAD};
use crate::log::record::{EntryRef, Record};
use crate::store::tables::AddressSource;
use crate::store::{AddressUpdate, InterestChange, Store, StoreError};

/// Why the owner's request was not published.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refused<T>(message: impl Into<String>) -> Result<T, ComposeError> {
    Err(ComposeError::Refused(message.into()))
}

/// Signs and stores `record` as the owner's next entry (durable on return).
pub fn publish(
    store: &Store,
    identity: &Arc<Identity>,
    record: &Record,
) -> Result<Entry, ComposeError> {
    publish_request(store, identity, record, None)
}

/// [`publish`], remembering the request id that asked for it.
fn publish_request(
    store: &Store,
    identity: &Arc<Identity>,
    record: &Record,
    request: Option<[u8; 16]>,
) -> Result<Entry, ComposeError> {
    let payload = record.encode().map_err(|_| {
        ComposeError::Refused(format!(
            "the post is too long: at most {MAX_PAYLOAD} bytes once encoded"
        ))
    })?;
    Ok(store.publish_request(identity, payload, now_us(), request)?)
}

/// Publishes a post, or a reply to the entry with id `reply_to`. With a
/// `request` id, the post is published once however often it is asked for
/// with that id: [`Store::published_by`] says by which entry.
pub fn post(
    store: &Store,
    identity: &Arc<Identity>,
    text: String,
    reply_to: Option<EntryId>,
    request: Option<[u8; 16]>,
) -> Result<Entry, ComposeError> {
    if text.trim().is_empty() {
        return refused("nothing to post: the text is empty");
    }
    let reply_to = match reply_to {
        None => None,
        Some(id) => {
            let Some(entry) = store.entry_by_id(&id)? else {
                return refused(format!(
                    "this node holds no entry {id}; sync or import the log it belongs to first"
                ));
            };
            Some(EntryRef {
                author: entry.author().0,
                seq: entry.seq(),
                id: id.0,
            })
        }
    };
    let record = Record::Post {
        text,
        reply_to,
        attachments: Vec::new(),
    };
    publish_request(store, identity, &record, request)
}

/// Publishes a tombstone for the owner's entry `seq`.
pub fn delete(store: &Store, identity: &Arc<Identity>, seq: u64) -> Result<Entry, ComposeError> {
    let author = identity.author();
    let Some(entry) = store.entry(&author, seq)? else {
        return refused(format!("your log has no entry {seq}; see `capsule log`"));
    };
    if let Some(by) = store.deleted_by(&author, seq)? {
        return refused(format!("entry {seq} was already deleted by entry {by}"));
    }
    if let Some(payload) = store.payload(&entry.payload_hash())?
        && let Ok(Record::Delete { .. }) = Record::decode(&payload)
    {
        return refused(format!(
            "entry {seq} is itself a deletion; there is nothing to delete"
        ));
    }
    publish(store, identity, &Record::Delete { seq })
}

/// Longest display name, in characters.
pub const MAX_NAME: usize = 100;

/// Longest bio, in characters.
pub const MAX_BIO: usize = 1000;

/// Publishes the owner's profile (the newest one is shown).
pub fn profile(
    store: &Store,
    identity: &Arc<Identity>,
    name: String,
    bio: String,
) -> Result<Entry, ComposeError> {
    let (name, bio) = (name.trim().to_string(), bio.trim().to_string());
    if name.chars().count() > MAX_NAME {
        return refused(format!("the name is over {MAX_NAME} characters"));
    }
    if bio.chars().count() > MAX_BIO {
        return refused(format!("the bio is over {MAX_BIO} characters"));
    }
    if name.is_empty() && bio.is_empty() {
        return refused("give a --name, a --bio or both");
    }
    let record = Record::Profile {
        name,
        bio,
        avatar: None,
        endpoints: Vec::new(),
    };
    publish(store, identity, &record)
}

/// Blocks, mutes, unblocks or unmutes `author` (`change` names which);
/// whether anything changed. Nothing is published: blocks are the owner's
/// own business, kept in this node's store.
pub fn block(
    store: &Store,
    identity: &Arc<Identity>,
    author: AuthorKey,
    change: &str,
) -> Result<bool, ComposeError> {
    use crate::store::blocks::BlockChange;
    let change = match change {
        "block" => BlockChange::Block,
        "mute" => BlockChange::Mute,
        "unblock" => BlockChange::Unblock,
        "unmute" => BlockChange::Unmute,
        other => return refused(format!("{other:?} is not block, mute, unblock or unmute")),
    };
    if author == identity.author() {
        return refused("that is your own key");
    }
    Ok(store.change_block(author, change)?)
}

/// Follows `author`: a Follow record in the owner's log, and the author's
/// log mirrored from now on. `address`, if known, is where the author's
/// node listens (`HOST:PORT`): the mesh dials it; `web`, its gateway's
/// origin, for pulling over HTTPS when QUIC does not get through.
pub fn follow(
    store: &Store,
    identity: &Arc<Identity>,
    author: AuthorKey,
    address: Option<String>,
    web: Option<String>,
) -> Result<Option<Entry>, ComposeError> {
    if author == identity.author() {
        return refused("that is your own key; your node always holds your log");
    }
    if let Some(host_port) = address {
        store.update_address(
            author,
            AddressUpdate::Learn {
                host_port,
                web,
                source: AddressSource::Follow,
            },
        )?;
    }
    if store.followed()?.contains(&author) {
        return Ok(None);
    }
    let entry = publish(store, identity, &Record::Follow { author: author.0 })?;
    store.interest(author, InterestChange::Follow)?;
    Ok(Some(entry))
}

/// Stops following `author` (an Unfollow record); the mirror stays until
/// `capsule unmirror`.
pub fn unfollow(
    store: &Store,
    identity: &Arc<Identity>,
    author: AuthorKey,
) -> Result<Entry, ComposeError> {
    if !store.followed()?.contains(&author) {
        return refused(format!("you do not follow {author}"));
    }
    let entry = publish(store, identity, &Record::Unfollow { author: author.0 })?;
    store.interest(author, InterestChange::Unfollow)?;
    Ok(entry)
}

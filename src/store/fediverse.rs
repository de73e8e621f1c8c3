//! What the node keeps of the fediverse, in tables of its own in the
//! store's file (`ap_*-1`, schema/store.md): followers, whom the owner
//! follows, remote actors and their keys, the delivery queue, replies,
//! reactions and the home timeline's remote notes. None of it is signed or
//! mirrored: the signed log stays the source of truth, and this is one way
//! out and in.
//!
//! Each row is a version byte (1) and the postcard encoding of its struct;
//! a row of another version reads as absent. Writes take a redb write
//! transaction of their own (redb runs them one at a time, beside the
//! store's writer); reads a read transaction.

use std::sync::Arc;

use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Store, StoreError};

/// Follower actor id → [`Follower`].
pub const FOLLOWERS: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_followers-1");
/// Followed actor id → [`Following`].
pub const FOLLOWING: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_following-1");
/// Remote actor id → [`RemoteActor`]: keys and names, fetched and cached.
pub const ACTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_actors-1");
/// Counters and cursors by name ([`OUTBOX_CURSOR`], [`NEXT_DELIVERY`]).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("ap_meta-1");
/// Due time (µs, BE) ‖ delivery number (BE) → [`Delivery`].
pub const DELIVERIES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("ap_deliveries-1");
/// Inbox host → [`HostState`].
pub const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_hosts-1");
/// First 16 bytes of blake3(activity id) → when it was taken in (µs).
pub const SEEN: TableDefinition<&[u8; 16], u64> = TableDefinition::new("ap_seen-1");
/// Remote note id → [`RemoteNote`].
pub const NOTES: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_notes-1");
/// Own seq (BE) ‖ published (µs, BE) ‖ note id → nothing: a post's
/// remote replies in order.
pub const REPLIES: TableDefinition<&[u8], ()> = TableDefinition::new("ap_replies-1");
/// Published (µs, BE) ‖ note id → nothing: followed actors' notes for the
/// owner's home.
pub const HOME: TableDefinition<&[u8], ()> = TableDefinition::new("ap_home-1");
/// Like or Announce activity id → [`Reaction`].
pub const REACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("ap_reactions-1");
/// Own seq (BE) ‖ kind (1 like, 2 announce) → how many.
pub const COUNTS: TableDefinition<&[u8; 9], u64> = TableDefinition::new("ap_counts-1");
/// Remote actor id → how many of its notes are kept.
pub const ACTOR_NOTES: TableDefinition<&str, u64> = TableDefinition::new("ap_actor_notes-1");

/// The own log's seq up to which activities have been queued.
pub const OUTBOX_CURSOR: &str = "outbox-cursor";
/// The number of the next delivery.
pub const NEXT_DELIVERY: &str = "next-delivery";

/// Someone on another server who follows the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follower {
    /// Their personal inbox.
    pub inbox: String,
    /// Their server's shared inbox, if it has one.
    pub shared_inbox: Option<String>,
    /// When they followed (µs since the epoch).
    pub since_us: u64,
}

impl Follower {
    /// Where a public activity for them goes.
    pub fn delivery_inbox(&self) -> &str {
        self.shared_inbox.as_deref().unwrap_or(&self.inbox)
    }
}

/// Someone on another server the owner follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Following {
    /// `@user@host` as the owner typed it.
    pub handle: String,
    /// Their inbox.
    pub inbox: String,
    /// The id of the Follow this node sent.
    pub follow_id: String,
    /// Whether they accepted.
    pub accepted: bool,
    /// When the Follow was sent (µs).
    pub since_us: u64,
}

/// A remote actor as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteActor {
    /// The key's id (`…#main-key`).
    pub key_id: String,
    /// The key, SPKI PEM.
    pub public_pem: String,
    /// Their inbox.
    pub inbox: String,
    /// Their server's shared inbox.
    pub shared_inbox: Option<String>,
    /// `preferredUsername`.
    pub username: String,
    /// Display name (plain text).
    pub name: String,
    /// Their profile page.
    pub url: String,
    /// When it was fetched (µs).
    pub fetched_us: u64,
}

/// One activity on its way to one inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The inbox URL.
    pub inbox: String,
    /// The activity, JSON, as signed for every inbox.
    pub body: Vec<u8>,
    /// When it was first queued (µs).
    pub queued_us: u64,
    /// Attempts so far.
    pub attempts: u32,
}

/// How deliveries to one host are going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// What the last attempt did.
    pub state: HostHealth,
    /// Since when it is in that state (µs).
    pub since_us: u64,
    /// The last failure, if the state is not Ok.
    pub error: String,
    /// Activities delivered in all.
    pub delivered: u64,
}

/// A host's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostHealth {
    /// The last delivery got through.
    Ok,
    /// The last delivery failed and is being retried.
    Retrying,
    /// A delivery was given up.
    GaveUp,
}

/// A note from another server: a reply to one of the owner's posts, a
/// mention, or a post of someone the owner follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteNote {
    /// Its author's actor id.
    pub actor: String,
    /// Where people read it.
    pub url: String,
    /// Its content, sanitized HTML.
    pub content: String,
    /// When it was published (µs).
    pub published_us: u64,
    /// The owner's post it answers (seq), if any.
    pub reply_to_seq: Option<u64>,
    /// The remote note it answers, if any (threads a reply to a reply).
    pub in_reply_to: Option<String>,
    /// Whether it shows on the owner's home (from someone followed).
    pub home: bool,
    /// Pictures and files: URL, media type, alt text.
    pub attachments: Vec<(String, String, String)>,
}

/// A Like or an Announce of one of the owner's posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// 1 like, 2 announce.
    pub kind: u8,
    /// The owner's post.
    pub seq: u64,
    /// Who.
    pub actor: String,
}

/// Creates every table (the store's writer does, when the store opens).
pub fn create(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(FOLLOWERS)?;
    txn.open_table(FOLLOWING)?;
    txn.open_table(ACTORS)?;
    txn.open_table(META)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(HOSTS)?;
    txn.open_table(SEEN)?;
    txn.open_table(NOTES)?;
    txn.open_table(REPLIES)?;
    txn.open_table(HOME)?;
    txn.open_table(REACTIONS)?;
    txn.open_table(COUNTS)?;
    txn.open_table(ACTOR_NOTES)?;
    Ok(())
}

/// A row's bytes: version 1, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![1]).expect("postcard writes into a Vec")
}

/// A row read back; None for another version or bytes that do not decode.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((1, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// The fediverse's tables in a store.
#[derive(Clone)]
pub struct Tables {
    store: Arc<Store>,
}

impl Tables {
    /// The tables of `store` (made when the store opened).
    pub fn new(store: Arc<Store>) -> Tables {
        Tables { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs `f` in one durable write transaction. Pages that show what it
    /// wrote are no longer current afterwards.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.store.db()?.begin_write()?;
        let value = f(&txn)?;
        txn.commit()?;
        self.store.bump_generation();
        Ok(value)
    }

    /// [`Tables::write`] without waiting for the disk: the transaction
    /// is made durable by the next durable commit of the file (any post's,
    /// any queueing's). A crash may forget it; use it only for what may be
    /// done again (marking deliveries done: a forgotten mark sends one
    /// again, and receivers drop a repeated activity by its id).
    pub fn write_lazily<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let value = f(&txn)?;
        txn.commit()?;
        self.store.bump_generation();
        Ok(value)
    }

    /// Keeps an actor fetched just now.
    pub fn keep_actor(&self, id: &str, actor: &RemoteActor) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(ACTORS)?
                .insert(id, encode(actor).as_slice())?;
            Ok(())
        })
    }

    /// Reads of the tables.
    pub fn reader(&self) -> Reader<'_> {
        Reader { store: &self.store }
    }
}

/// Reads of the fediverse's tables, each in a read transaction of its own.
pub struct Reader<'a> {
    store: &'a Store,
}

impl<'a> Reader<'a> {
    /// Reads of `store`'s tables.
    pub fn new(store: &'a Store) -> Reader<'a> {
        Reader { store }
    }

    /// Runs `f` in a read transaction.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.store.db()?.begin_read()?;
        f(&txn)
    }

    /// Every follower.
    pub fn followers(&self) -> Result<Vec<(String, Follower)>, StoreError> {
        self.read(|txn| rows(&txn.open_table(FOLLOWERS)?))
    }

    /// How many followers there are.
    pub fn follower_count(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(txn.open_table(FOLLOWERS)?.len()?))
    }

    /// Everyone the owner follows (or asked to).
    pub fn following(&self) -> Result<Vec<(String, Following)>, StoreError> {
        self.read(|txn| rows(&txn.open_table(FOLLOWING)?))
    }

    /// A cached actor.
    pub fn actor(&self, id: &str) -> Result<Option<RemoteActor>, StoreError> {
        self.read(|txn| {
            Ok(txn
                .open_table(ACTORS)?
                .get(id)?
                .and_then(|v| decode(v.value())))
        })
    }

    /// Per-host delivery states.
    pub fn hosts(&self) -> Result<Vec<(String, HostState)>, StoreError> {
        self.read(|txn| rows(&txn.open_table(HOSTS)?))
    }

    /// Deliveries waiting.
    pub fn queued(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(txn.open_table(DELIVERIES)?.len()?))
    }

    /// Likes and announces of the owner's post `seq`.
    pub fn counts(&self, seq: u64) -> Result<(u64, u64), StoreError> {
        self.read(|txn| {
            let counts = txn.open_table(COUNTS)?;
            let get = |kind: u8| -> Result<u64, StoreError> {
                Ok(counts
                    .get(&count_key(seq, kind))?
                    .map(|v| v.value())
                    .unwrap_or(0))
            };
            Ok((get(1)?, get(2)?))
        })
    }

    /// The remote replies to the owner's post `seq`, oldest first, with
    /// their authors as cached.
    pub fn replies(
        &self,
        seq: u64,
    ) -> Result<Vec<(String, RemoteNote, Option<RemoteActor>)>, StoreError> {
        self.read(|txn| {
            let (from, to) = (seq.to_be_bytes(), (seq + 1).to_be_bytes());
            let index = txn.open_table(REPLIES)?;
            let ids = index.range(from.as_slice()..to.as_slice())?;
            notes_named(txn, ids, 16)
        })
    }

    /// The newest `limit` notes for the home published in
    /// `from_us..until_us`, newest first.
    pub fn home(
        &self,
        from_us: u64,
        until_us: u64,
        limit: usize,
    ) -> Result<Vec<(String, RemoteNote, Option<RemoteActor>)>, StoreError> {
        self.read(|txn| {
            let (from, until) = (from_us.to_be_bytes(), until_us.to_be_bytes());
            let index = txn.open_table(HOME)?;
            let ids = index
                .range(from.as_slice()..until.as_slice())?
                .rev()
                .take(limit);
            notes_named(txn, ids, 8)
        })
    }
}

/// The notes an index's keys name (the note id after `prefix` bytes),
/// with their authors as cached; notes no longer kept are skipped.
fn notes_named<'a>(
    txn: &ReadTransaction,
    keys: impl Iterator<
        Item = Result<
            (
                redb::AccessGuard<'a, &'static [u8]>,
                redb::AccessGuard<'a, ()>,
            ),
            redb::StorageError,
        >,
    >,
    prefix: usize,
) -> Result<Vec<(String, RemoteNote, Option<RemoteActor>)>, StoreError> {
    let notes = txn.open_table(NOTES)?;
    let actors = txn.open_table(ACTORS)?;
    let mut out = Vec::new();
    for row in keys {
        let key = row?.0;
        let id = String::from_utf8_lossy(&key.value()[prefix..]).into_owned();
        let Some(note) = notes
            .get(id.as_str())?
            .and_then(|v| decode::<RemoteNote>(v.value()))
        else {
            continue;
        };
        let actor = actors
            .get(note.actor.as_str())?
            .and_then(|v| decode(v.value()));
        out.push((id, note, actor));
    }
    Ok(out)
}

/// A `ap_counts-1` key.
pub fn count_key(seq: u64, kind: u8) -> [u8; 9] {
    let mut key = [0; 9];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8] = kind;
    key
}

/// Every row of a string-keyed table that decodes.
fn rows<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        if let Some(value) = decode(v.value()) {
            out.push((k.value().to_string(), value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_and_other_versions_read_as_absent() {
        let f = Follower {
            inbox: "https://m.example/users/bob/inbox".into(),
            shared_inbox: Some("https://m.example/inbox".into()),
            since_us: 7,
        };
        let bytes = encode(&f);
        assert_eq!(bytes[0], 1);
        assert_eq!(decode::<Follower>(&bytes), Some(f));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode::<Follower>(&other), None);
        assert_eq!(decode::<Follower>(&[]), None);
    }
}

//! What the owner publishes — posts, replies, deletions — checked against
//! the store and signed by the store thread. The command line (directly, or
//! through a running node's admin socket) and the node share these, so a
//! post is checked the same way whichever path it takes.

use std::sync::Arc;

use crate::clock::now_us;
use crate::identity::{AuthorKey, Identity};
use crate::log::entry::{Entry, EntryId, MAX_PAYLOAD};
use crate::log::record::{BlobRef, EntryRef, Picture, Record, Thumbnail};
use crate::picture::{Encoded, Prepared};
use crate::store::blobs::BlobId;
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
    publish_request(store, identity, record, Vec::new(), None)
}

/// [`publish`], remembering the request id that asked for it.
fn publish_request(
    store: &Store,
    identity: &Arc<Identity>,
    record: &Record,
    blobs: Vec<Vec<u8>>,
    request: Option<[u8; 16]>,
) -> Result<Entry, ComposeError> {
    let payload = record.encode().map_err(|_| {
        ComposeError::Refused(format!(
            "the post is too long: at most {MAX_PAYLOAD} bytes once encoded"
        ))
    })?;
    Ok(store.publish_request(identity, payload, blobs, now_us(), request)?)
}

/// Pictures attached to one post at most.
pub const MAX_PICTURES: usize = 4;

/// Longest alt text, in characters.
pub const MAX_ALT: usize = 1500;

/// A picture to attach: prepared (see [`crate::picture::prepare`]), and
/// what it shows.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The picture and its thumbnail.
    pub prepared: Prepared,
    /// Its alt text.
    pub alt: String,
}

/// The reference to a prepared picture's bytes.
pub fn blob_ref(encoded: &Encoded) -> BlobRef {
    BlobRef {
        hash: *blake3::hash(&encoded.bytes).as_bytes(),
        size: encoded.bytes.len() as u64,
        media_type: encoded.media_type.to_string(),
    }
}

/// A blob kept in the store's folder (put there by `capsule post`, which
/// prepared it), read back and checked against its reference.
fn held(store: &Store, blob: &BlobRef, width: u32, height: u32) -> Result<Encoded, ComposeError> {
    let id = crate::store::blobs::BlobId(blob.hash);
    let Some(media_type) = crate::picture::MEDIA_TYPES
        .into_iter()
        .find(|t| *t == blob.media_type)
    else {
        return refused(format!("{:?} is not a picture type", blob.media_type));
    };
    match store.blobs().read(&id) {
        Some(bytes) if bytes.len() as u64 == blob.size && BlobId::of(&bytes) == id => Ok(Encoded {
            bytes,
            media_type,
            width,
            height,
        }),
        _ => refused(format!(
            "the picture {id} is not in the node's blob folder as announced; run the command again"
        )),
    }
}

/// A picture `capsule post` prepared and kept in the store's blob folder,
/// as an attachment.
pub fn held_picture(store: &Store, picture: &Picture) -> Result<Attachment, ComposeError> {
    let full = held(store, &picture.blob, picture.width, picture.height)?;
    let thumbnail = match &picture.thumbnail {
        Some(t) => Some(held(store, &t.blob, t.width, t.height)?),
        None => None,
    };
    Ok(Attachment {
        prepared: Prepared { full, thumbnail },
        alt: picture.alt.clone(),
    })
}

/// A profile picture `capsule profile` prepared and kept in the blob
/// folder.
pub fn held_avatar(store: &Store, avatar: &BlobRef) -> Result<Encoded, ComposeError> {
    held(
        store,
        avatar,
        crate::picture::AVATAR_SIDE,
        crate::picture::AVATAR_SIDE,
    )
}

/// The pictures of a post as the record names them, and the bytes to keep.
pub fn pictures(
    attachments: Vec<Attachment>,
) -> Result<(Vec<Picture>, Vec<Vec<u8>>), ComposeError> {
    if attachments.len() > MAX_PICTURES {
        return refused(format!(
            "{} pictures: a post takes at most {MAX_PICTURES}",
            attachments.len()
        ));
    }
    let (mut pictures, mut blobs) = (Vec::new(), Vec::new());
    for (i, Attachment { prepared, alt }) in attachments.into_iter().enumerate() {
        let alt = alt.trim().to_string();
        if alt.chars().count() > MAX_ALT {
            return refused(format!(
                "the alt text of picture {} is over {MAX_ALT} characters",
                i + 1
            ));
        }
        let thumbnail = prepared.thumbnail.map(|t| {
            let thumb = Thumbnail {
                blob: blob_ref(&t),
                width: t.width,
                height: t.height,
            };
            blobs.push(t.bytes);
            thumb
        });
        pictures.push(Picture {
            blob: blob_ref(&prepared.full),
            width: prepared.full.width,
            height: prepared.full.height,
            alt,
            thumbnail,
        });
        blobs.push(prepared.full.bytes);
    }
    Ok((pictures, blobs))
}

/// Publishes a post, or a reply to the entry with id `reply_to`, with up
/// to [`MAX_PICTURES`] pictures (kept, durably, before the entry is
/// signed). With a `request` id, the post is published once however often
/// it is asked for with that id: [`Store::published_by`] says by which
/// entry.
pub fn post(
    store: &Store,
    identity: &Arc<Identity>,
    text: String,
    reply_to: Option<EntryId>,
    attachments: Vec<Attachment>,
    request: Option<[u8; 16]>,
) -> Result<Entry, ComposeError> {
    if text.trim().is_empty() && attachments.is_empty() {
        return refused("nothing to post: the text is empty");
    }
    let (pictures, blobs) = pictures(attachments)?;
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
    let record = if pictures.is_empty() {
        Record::Post {
            text,
            reply_to,
            attachments: Vec::new(),
        }
    } else {
        Record::PostWithPictures {
            text,
            reply_to,
            pictures,
        }
    };
    publish_request(store, identity, &record, blobs, request)
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

/// Publishes the owner's profile (the newest one is shown). `avatar`, a
/// prepared profile picture ([`crate::picture::prepare_avatar`]), replaces
/// the current one; without it the current picture is kept.
pub fn profile(
    store: &Store,
    identity: &Arc<Identity>,
    name: String,
    bio: String,
    avatar: Option<Encoded>,
) -> Result<Entry, ComposeError> {
    let (name, bio) = (name.trim().to_string(), bio.trim().to_string());
    if name.chars().count() > MAX_NAME {
        return refused(format!("the name is over {MAX_NAME} characters"));
    }
    if bio.chars().count() > MAX_BIO {
        return refused(format!("the bio is over {MAX_BIO} characters"));
    }
    if name.is_empty() && bio.is_empty() && avatar.is_none() {
        return refused("give a --name, a --bio, an --avatar or more");
    }
    let mut blobs = Vec::new();
    let avatar = match avatar {
        Some(encoded) => {
            let blob = blob_ref(&encoded);
            blobs.push(encoded.bytes);
            Some(blob)
        }
        None => current_avatar(store, &identity.author())?,
    };
    let record = Record::Profile {
        name,
        bio,
        avatar,
        endpoints: Vec::new(),
    };
    publish_request(store, identity, &record, blobs, None)
}

/// The picture of `author`'s newest profile, if any.
fn current_avatar(store: &Store, author: &AuthorKey) -> Result<Option<BlobRef>, ComposeError> {
    let Some(seq) = store.profile_seq(author)? else {
        return Ok(None);
    };
    let Some(entry) = store.entry(author, seq)? else {
        return Ok(None);
    };
    Ok(match store.payload(&entry.payload_hash())? {
        Some(payload) => match Record::decode(&payload) {
            Ok(Record::Profile { avatar, .. }) => avatar,
            _ => None,
        },
        None => None,
    })
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

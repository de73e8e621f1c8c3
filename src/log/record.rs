//! Records: what an entry's payload says.
//!
//! A payload is one version byte ([`RECORD_V1`]) followed by a postcard-encoded
//! [`Record`]. New kinds of record are added as new enum variants at the end;
//! a node that cannot decode a record still stores and forwards its entry and
//! shows it as an unsupported record. schema/record.md documents every byte.

use serde::{Deserialize, Serialize};

use crate::identity::AuthorKey;
use crate::log::entry::{EntryId, MAX_PAYLOAD};

/// The record encoding version this build writes.
pub const RECORD_V1: u8 = 1;

/// A reference to an entry of any log, precise enough to locate and verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    /// The author of the referenced entry.
    pub author: [u8; 32],
    /// Its sequence number.
    pub seq: u64,
    /// Its id.
    pub id: [u8; 32],
}

/// A reference to a blob (an attachment), content-addressed by blake3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// blake3 hash of the blob's bytes.
    pub hash: [u8; 32],
    /// Its size in bytes (at most 16 MiB).
    pub size: u64,
    /// Its media type, such as `image/jpeg`.
    pub media_type: String,
}

/// A picture attached to a post: the blob, what it shows, and its size, so
/// a page can lay it out before the bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Picture {
    /// The picture's bytes.
    pub blob: BlobRef,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// What it shows, for those who cannot see it (at most 1,500 characters).
    pub alt: String,
    /// A smaller copy for the pages, when the picture is large.
    pub thumbnail: Option<Thumbnail>,
}

/// The smaller copy of a [`Picture`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// Its bytes.
    pub blob: BlobRef,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One record of a person's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A post, possibly a reply, possibly with attachments.
    Post {
        /// The text.
        text: String,
        /// The post this one replies to.
        reply_to: Option<EntryRef>,
        /// Attached blobs.
        attachments: Vec<BlobRef>,
    },
    /// The author's profile; the newest one wins.
    Profile {
        /// Display name.
        name: String,
        /// A short biography.
        bio: String,
        /// A picture.
        avatar: Option<BlobRef>,
        /// Where the author's node can be reached (for example `https://alice.example`).
        endpoints: Vec<String>,
    },
    /// The author follows another author.
    Follow {
        /// Who.
        author: [u8; 32],
    },
    /// The author no longer follows another author.
    Unfollow {
        /// Who.
        author: [u8; 32],
    },
    /// A tombstone: every node drops the payload of the author's entry `seq`.
    Delete {
        /// The entry whose payload is dropped; always below this entry's seq.
        seq: u64,
    },
    /// A post with pictures, possibly a reply. Its first fields are laid
    /// out as [`Record::Post`]'s, so the same first-byte tests find its
    /// reply target.
    PostWithPictures {
        /// The text (may be empty when there are pictures).
        text: String,
        /// The post this one replies to.
        reply_to: Option<EntryRef>,
        /// The pictures, in the order shown.
        pictures: Vec<Picture>,
    },
}

/// Why a payload is not a record this build understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// A record encoding version this build does not know.
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    /// The bytes do not decode (perhaps a record kind from a newer capsule).
    #[error("undecodable record: {0}")]
    Malformed(String),
    /// Bytes follow the record.
    #[error("{0} bytes follow the record")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the record's one encoding (a varint
    /// padded with continuation bytes).
    #[error("the record is not in its canonical encoding")]
    NonCanonical,
    /// The encoding is over [`MAX_PAYLOAD`].
    #[error("record is {0} bytes encoded, over the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
}

impl Record {
    /// Encodes the record as a payload. Fails only if it exceeds [`MAX_PAYLOAD`].
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = vec![RECORD_V1];
        out = postcard::to_extend(self, out).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if out.len() as u64 > MAX_PAYLOAD {
            return Err(RecordError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Whether `payload` can be a [`Record::Delete`], from its first two
    /// bytes (version, then postcard's variant index), without decoding it:
    /// the store asks this of every entry it takes in.
    pub fn may_be_delete(payload: &[u8]) -> bool {
        const DELETE_VARIANT: u8 = 4;
        payload.len() >= 2 && payload[0] == RECORD_V1 && payload[1] == DELETE_VARIANT
    }

    /// The entry a post replies to, if `payload` is a reply. Posts that reply
    /// to nothing are told from their first bytes (version, variant, text
    /// length, text, then the `reply_to` tag) without decoding the text: the
    /// store asks this of every entry it takes in.
    pub fn reply_target(payload: &[u8]) -> Option<EntryRef> {
        const POST_VARIANTS: [u8; 2] = [0, 5];
        if payload.len() < 2 || payload[0] != RECORD_V1 || !POST_VARIANTS.contains(&payload[1]) {
            return None;
        }
        let (len, rest) = postcard::take_from_bytes::<u64>(&payload[2..]).ok()?;
        let tag = *rest.get(usize::try_from(len).ok()?)?;
        if tag == 0 {
            return None;
        }
        match Record::decode(payload) {
            Ok(Record::Post { reply_to, .. } | Record::PostWithPictures { reply_to, .. }) => {
                reply_to
            }
            _ => None,
        }
    }

    /// Whether `payload` can be a [`Record::Profile`], from its first two
    /// bytes, without decoding it.
    pub fn may_be_profile(payload: &[u8]) -> bool {
        const PROFILE_VARIANT: u8 = 1;
        payload.len() >= 2 && payload[0] == RECORD_V1 && payload[1] == PROFILE_VARIANT
    }

    /// Decodes a payload. Total: any bytes give a record or an error.
    pub fn decode(payload: &[u8]) -> Result<Record, RecordError> {
        let (&version, body) = payload.split_first().ok_or(RecordError::Empty)?;
        if version != RECORD_V1 {
            return Err(RecordError::UnknownVersion(version));
        }
        let (record, rest) =
            postcard::take_from_bytes(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RecordError::TrailingBytes(rest.len()));
        }
        // One record, one encoding: postcard also reads varints padded with
        // 0x80 bytes, which would let one record hide behind bytes that the
        // store's first-byte tests (`may_be_delete` and the like) do not
        // recognise.
        let mut again = Vec::with_capacity(payload.len());
        again.push(RECORD_V1);
        let again = postcard::to_extend(&record, again)
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        if again != payload {
            return Err(RecordError::NonCanonical);
        }
        Ok(record)
    }

    /// A plain post.
    pub fn post(text: impl Into<String>) -> Record {
        Record::Post {
            text: text.into(),
            reply_to: None,
            attachments: Vec::new(),
        }
    }

    /// Every blob the record names: attachments, pictures and their
    /// thumbnails, a profile picture.
    pub fn blobs(&self) -> Vec<&BlobRef> {
        match self {
            Record::Post { attachments, .. } => attachments.iter().collect(),
            Record::PostWithPictures { pictures, .. } => pictures
                .iter()
                .flat_map(|p| std::iter::once(&p.blob).chain(p.thumbnail.as_ref().map(|t| &t.blob)))
                .collect(),
            Record::Profile { avatar, .. } => avatar.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `payload` may name blobs, from its first bytes: the store
    /// asks this of every entry it takes in. A post without attachments
    /// (nearly every [`Record::Post`]) is told without decoding its text:
    /// text length, text, the `reply_to` tag (and its entry reference),
    /// then an attachment count of zero.
    pub fn may_name_blobs(payload: &[u8]) -> bool {
        if payload.len() < 2 || payload[0] != RECORD_V1 {
            return false;
        }
        match payload[1] {
            1 | 5 => true,
            0 => {
                let Ok((len, rest)) = postcard::take_from_bytes::<u64>(&payload[2..]) else {
                    return true;
                };
                let Some(after_text) = usize::try_from(len).ok().and_then(|l| rest.get(l..)) else {
                    return true;
                };
                let after_reply = match after_text.first() {
                    Some(0) => &after_text[1..],
                    // author (32), seq (varint), id (32).
                    Some(1) => match after_text
                        .get(33..)
                        .and_then(|r| postcard::take_from_bytes::<u64>(r).ok())
                    {
                        Some((_, rest)) => rest.get(32..).unwrap_or_default(),
                        None => return true,
                    },
                    _ => return true,
                };
                after_reply.first() != Some(&0)
            }
            _ => false,
        }
    }

    /// One line that says what the record is, for `capsule log`.
    pub fn summary(&self) -> String {
        match self {
            Record::Post { text, reply_to, .. } => match reply_to {
                Some(r) => format!("reply to {}: {text}", EntryId(r.id)),
                None => text.clone(),
            },
            Record::PostWithPictures {
                text,
                reply_to,
                pictures,
            } => {
                let n = pictures.len();
                let what = format!("[{n} picture{}] {text}", if n == 1 { "" } else { "s" });
                match reply_to {
                    Some(r) => format!("reply to {}: {what}", EntryId(r.id)),
                    None => what,
                }
            }
            Record::Profile { name, .. } => format!("profile: {name}"),
            Record::Follow { author } => format!("follow {}", AuthorKey(*author)),
            Record::Unfollow { author } => format!("unfollow {}", AuthorKey(*author)),
            Record::Delete { seq } => format!("delete entry {seq}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_bytes_are_stable() {
        // Bytes are forever: this is what a plain post encodes to.
        let payload = Record::post("hi").encode().unwrap();
        assert_eq!(payload, [1, 0, 2, b'h', b'i', 0, 0]);
    }

    #[test]
    fn only_deletes_may_be_deletes() {
        let records = [
            Record::post("x"),
            Record::Follow { author: [4; 32] },
            Record::Unfollow { author: [4; 32] },
            Record::Delete { seq: 300 },
        ];
        for r in records {
            let is_delete = matches!(r, Record::Delete { .. });
            assert_eq!(
                Record::may_be_delete(&r.encode().unwrap()),
                is_delete,
                "{r:?}"
            );
        }
    }

    #[test]
    fn decode_is_strict() {
        assert_eq!(Record::decode(&[]), Err(RecordError::Empty));
        assert_eq!(Record::decode(&[2, 0]), Err(RecordError::UnknownVersion(2)));
        assert!(matches!(
            Record::decode(&[1, 0, 2, b'h', b'i', 0, 0, 9]),
            Err(RecordError::TrailingBytes(1))
        ));
        assert!(matches!(
            Record::decode(&[1, 77]),
            Err(RecordError::Malformed(_))
        ));
        // Delete { seq: 237 } with its variant index padded (0x84 0x00 is a
        // 4): postcard reads it, the canonical rule refuses it. Found by the
        // record_decode fuzz target.
        assert_eq!(
            Record::decode(&[1, 0x84, 0x00, 0xed, 0x01]),
            Err(RecordError::NonCanonical)
        );
        assert_eq!(
            Record::decode(&[1, 0x04, 0xed, 0x01]),
            Ok(Record::Delete { seq: 237 })
        );
    }

    /// The record enum as capsules before pictures knew it (indices 0 to 4).
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum RecordBeforePictures {
        Post {
            text: String,
            reply_to: Option<EntryRef>,
            attachments: Vec<BlobRef>,
        },
        Profile {
            name: String,
            bio: String,
            avatar: Option<BlobRef>,
            endpoints: Vec<String>,
        },
        Follow {
            author: [u8; 32],
        },
        Unfollow {
            author: [u8; 32],
        },
        Delete {
            seq: u64,
        },
    }

    #[test]
    fn an_older_node_cannot_decode_a_post_with_pictures_and_says_so() {
        let picture = Picture {
            blob: BlobRef {
                hash: [1; 32],
                size: 10,
                media_type: "image/png".into(),
            },
            width: 2,
            height: 3,
            alt: "dots".into(),
            thumbnail: None,
        };
        let new = Record::PostWithPictures {
            text: "look".into(),
            reply_to: None,
            pictures: vec![picture],
        }
        .encode()
        .unwrap();
        let old: Result<RecordBeforePictures, _> = postcard::from_bytes(&new[1..]);
        assert!(old.is_err(), "{old:?}");
        // What an older node does with an undecodable record: shows it as
        // unsupported (the presenter's wording), never fails.
        let as_old = Some(old.map_err(|_| ()));
        assert_eq!(
            crate::log::present::Missing::of(None, as_old.as_ref()),
            Some(crate::log::present::Missing::Unsupported)
        );
        // And every record an older node wrote still decodes here the same.
        let before = Record::Post {
            text: "hi".into(),
            reply_to: None,
            attachments: Vec::new(),
        };
        assert!(
            postcard::from_bytes::<RecordBeforePictures>(&before.encode().unwrap()[1..]).is_ok()
        );
        assert_eq!(Record::decode(&[1, 0, 2, b'h', b'i', 0, 0]), Ok(before));
    }

    #[test]
    fn a_post_without_attachments_names_no_blob_by_its_first_bytes() {
        let reply = Some(EntryRef {
            author: [3; 32],
            seq: 9,
            id: [4; 32],
        });
        let blob = BlobRef {
            hash: [5; 32],
            size: 10,
            media_type: "image/png".into(),
        };
        for (reply_to, attachments) in [
            (None, vec![]),
            (reply, vec![]),
            (None, vec![blob.clone()]),
            (reply, vec![blob.clone()]),
        ] {
            let named = !attachments.is_empty();
            let post = Record::Post {
                text: "x".repeat(200),
                reply_to,
                attachments,
            };
            assert_eq!(Record::may_name_blobs(&post.encode().unwrap()), named);
        }
    }

    #[test]
    fn too_large_is_refused() {
        let big = Record::post("x".repeat(MAX_PAYLOAD as usize));
        assert!(matches!(big.encode(), Err(RecordError::TooLarge(_))));
    }
}

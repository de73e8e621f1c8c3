//! Every encoder/decoder pair round-trips, and every decoder is total.

use std::io::Cursor;

use capsule::archive::{ArchiveReader, ArchiveWriter};
use capsule::identity::{AuthorKey, Identity};
use capsule::log::entry::{Draft, Entry, EntryId, MAX_PAYLOAD};
use capsule::log::record::{BlobRef, EntryRef, Picture, Record, Thumbnail};
use proptest::prelude::*;
use std::path::Path;

use crate::common::make_log;

fn blob() -> impl Strategy<Value = BlobRef> {
    (any::<[u8; 32]>(), any::<u64>(), ".{0,20}").prop_map(|(hash, size, media_type)| BlobRef {
        hash,
        size,
        media_type,
    })
}

fn picture() -> impl Strategy<Value = Picture> {
    (
        blob(),
        any::<u32>(),
        any::<u32>(),
        ".{0,60}",
        proptest::option::of((blob(), any::<u32>(), any::<u32>())),
    )
        .prop_map(|(blob, width, height, alt, thumb)| Picture {
            blob,
            width,
            height,
            alt,
            thumbnail: thumb.map(|(blob, width, height)| Thumbnail {
                blob,
                width,
                height,
            }),
        })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            ".{0,200}",
            proptest::option::of((any::<[u8; 32]>(), any::<u64>(), any::<[u8; 32]>())),
            proptest::collection::vec(blob(), 0..3)
        )
            .prop_map(|(text, r, attachments)| Record::Post {
                text,
                reply_to: r.map(|(author, seq, id)| EntryRef { author, seq, id }),
                attachments,
            }),
        (
            ".{0,40}",
            ".{0,100}",
            proptest::option::of(blob()),
            proptest::collection::vec(".{0,30}", 0..3)
        )
            .prop_map(|(name, bio, avatar, endpoints)| Record::Profile {
                name,
                bio,
                avatar,
                endpoints
            }),
        any::<[u8; 32]>().prop_map(|author| Record::Follow { author }),
        any::<[u8; 32]>().prop_map(|author| Record::Unfollow { author }),
        any::<u64>().prop_map(|seq| Record::Delete { seq }),
        (
            ".{0,100}",
            proptest::option::of((any::<[u8; 32]>(), any::<u64>(), any::<[u8; 32]>())),
            proptest::collection::vec(picture(), 0..5)
        )
            .prop_map(|(text, r, pictures)| Record::PostWithPictures {
                text,
                reply_to: r.map(|(author, seq, id)| EntryRef { author, seq, id }),
                pictures,
            }),
    ]
}

proptest! {
    #[test]
    fn entry_round_trips(
        seed in any::<[u8; 32]>(),
        seq in 2..u64::MAX,
        timestamp_us in any::<u64>(),
        backlink in any::<[u8; 32]>(),
        skiplink in any::<[u8; 32]>(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let id = Identity::from_seed(seed);
        let draft = Draft { seq, timestamp_us, backlink: EntryId(backlink), skiplink: EntryId(skiplink) };
        let entry = Entry::sign(id.signing_key(), draft, &payload);
        let decoded = Entry::decode(entry.as_bytes()).unwrap();
        prop_assert_eq!(decoded, entry);
        prop_assert_eq!(decoded.author(), id.author());
        prop_assert_eq!(decoded.seq(), seq);
        prop_assert_eq!(decoded.timestamp_us(), timestamp_us);
        prop_assert_eq!(decoded.backlink(), EntryId(backlink));
        prop_assert_eq!(decoded.skiplink(), EntryId(skiplink));
        prop_assert_eq!(decoded.payload_len(), payload.len() as u64);
        prop_assert!(capsule::log::verify::signature_valid(&decoded));
    }

    #[test]
    fn entry_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(entry) = Entry::decode(&bytes) {
            prop_assert_eq!(&entry.as_bytes()[..], &bytes[..]);
            prop_assert!(entry.seq() >= 1 && entry.payload_len() <= MAX_PAYLOAD);
        }
    }

    #[test]
    fn record_round_trips(r in record()) {
        let bytes = r.encode().unwrap();
        prop_assert_eq!(Record::decode(&bytes).unwrap(), r);
    }

    /// The store's shortcut agrees with a full decode on every record, and
    /// on arbitrary bytes: a reply target only where a post with one decodes.
    #[test]
    fn reply_target_agrees_with_decode(r in record(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = r.encode().unwrap();
        let expected = match &r {
            Record::Post { reply_to, .. } | Record::PostWithPictures { reply_to, .. } => *reply_to,
            _ => None,
        };
        if !r.blobs().is_empty() {
            prop_assert!(Record::may_name_blobs(&bytes));
        }
        if let Record::Post { attachments, .. } = &r {
            prop_assert_eq!(Record::may_name_blobs(&bytes), !attachments.is_empty());
        }
        prop_assert_eq!(Record::reply_target(&bytes), expected);
        let in_junk = match Record::decode(&junk) {
            Ok(Record::Post { reply_to, .. } | Record::PostWithPictures { reply_to, .. }) => reply_to,
            _ => None,
        };
        prop_assert_eq!(Record::reply_target(&junk), in_junk);
    }

    #[test]
    fn record_decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        // Whatever decodes is the one encoding of its record.
        if let Ok(record) = Record::decode(&bytes) {
            prop_assert_eq!(record.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn author_key_text_round_trips(key in any::<[u8; 32]>()) {
        let text = AuthorKey(key).to_string();
        prop_assert_eq!(text.len(), 52);
        prop_assert_eq!(text.parse::<AuthorKey>().unwrap(), AuthorKey(key));
    }

    #[test]
    fn key_file_round_trips(seed in any::<[u8; 32]>()) {
        let id = Identity::from_seed(seed);
        let back = Identity::from_file_bytes(&id.to_file_bytes(), Path::new("k")).unwrap();
        prop_assert_eq!(back.author(), id.author());
    }

    #[test]
    fn archive_round_trips(
        lens in proptest::collection::vec(1u64..12, 1..4),
        drop_payload in any::<u64>(),
    ) {
        let mut items = Vec::new();
        for (i, n) in lens.iter().enumerate() {
            for (j, (e, p)) in make_log(&crate::common::test_identity(i as u8 + 1), *n).into_iter().enumerate() {
                let keep = (drop_payload >> (j % 64)) & 1 == 0;
                items.push((e, if keep { p } else { None }));
            }
        }
        let mut w = ArchiveWriter::new(Vec::new()).unwrap();
        for (e, p) in &items {
            w.write_entry(e, p.as_deref()).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut r = ArchiveReader::new(Cursor::new(bytes)).unwrap();
        let mut back = Vec::new();
        while let Some(item) = r.next_entry().unwrap() {
            back.push(item);
        }
        prop_assert_eq!(back, items);
    }

    #[test]
    fn archive_reader_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..2000), header in any::<bool>()) {
        let mut input = Vec::new();
        if header {
            input.extend_from_slice(b"capsule-archive\x01");
        }
        input.extend_from_slice(&bytes);
        if let Ok(mut r) = ArchiveReader::new(Cursor::new(input)) {
            for _ in 0..100 {
                match r.next_entry() {
                    // What it yields is a decoded entry with a payload of
                    // exactly the length the entry signs, or none.
                    Ok(Some((entry, payload))) => {
                        prop_assert_eq!(Entry::decode(entry.as_bytes()).unwrap(), entry);
                        if let Some(p) = payload {
                            prop_assert_eq!(p.len() as u64, entry.payload_len());
                        }
                    }
                    _ => break,
                }
            }
        }
    }
}

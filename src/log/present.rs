//! How entries and records are shown to people and programs: times as
//! text, entries and records as JSON. The command line and the web gateway
//! share these, so `capsule log --json` and the API agree field for field.

use serde_json::json;

use crate::identity::AuthorKey;
use crate::log::entry::{Entry, EntryId};
use crate::log::record::{BlobRef, EntryRef, Record, RecordError};

/// A timestamp (µs since the Unix epoch) as `YYYY-MM-DD hh:mm:ss` (UTC).
pub fn format_time(us: u64) -> String {
    let (y, m, d, h, min, s) = civil(us);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}")
}

/// A timestamp as RFC 3339 (UTC), as Atom wants it.
pub fn rfc3339(us: u64) -> String {
    let (y, m, d, h, min, s) = civil(us);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// `2026-12-07T10:00:00Z` (fractions and offsets too) as µs since the
/// epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = &frac[..digits];
        micros = format!("{:0<6}", &f[..f.len().min(6)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = match &o[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

fn civil(us: u64) -> (i64, i64, i64, u64, u64, u64) {
    let secs = us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// An entry as JSON, with its record when the payload is held.
pub fn entry_json(
    entry: &Entry,
    record: Option<&Result<Record, RecordError>>,
    deleted_by: Option<u64>,
) -> serde_json::Value {
    let record = match record {
        Some(Ok(r)) => record_json(r),
        _ => serde_json::Value::Null,
    };
    json!({
        "author": entry.author().to_string(),
        "seq": entry.seq(),
        "id": entry.id().to_string(),
        "timestamp_us": entry.timestamp_us(),
        "backlink": entry.backlink().to_string(),
        "skiplink": entry.skiplink().to_string(),
        "payload_len": entry.payload_len(),
        "payload_hash": hex::encode(entry.payload_hash()),
        "record": record,
        "deleted_by": deleted_by,
    })
}

/// A record as JSON.
pub fn record_json(record: &Record) -> serde_json::Value {
    match record {
        Record::Post {
            text,
            reply_to,
            attachments,
        } => json!({
            "type": "post",
            "text": text,
            "reply_to": reply_to.as_ref().map(reply_json),
            "attachments": attachments.iter().map(blob_json).collect::<Vec<_>>(),
        }),
        Record::PostWithPictures {
            text,
            reply_to,
            pictures,
        } => json!({
            "type": "post",
            "text": text,
            "reply_to": reply_to.as_ref().map(reply_json),
            "attachments": pictures.iter().map(|p| {
                let mut b = blob_json(&p.blob);
                b["width"] = p.width.into();
                b["height"] = p.height.into();
                b["alt"] = p.alt.clone().into();
                b["thumbnail"] = p.thumbnail.as_ref().map_or(serde_json::Value::Null, |t| {
                    let mut j = blob_json(&t.blob);
                    j["width"] = t.width.into();
                    j["height"] = t.height.into();
                    j
                });
                b
            }).collect::<Vec<_>>(),
        }),
        Record::Profile {
            name,
            bio,
            avatar,
            endpoints,
        } => json!({
            "type": "profile", "name": name, "bio": bio,
            "avatar": avatar.as_ref().map(|b| hex::encode(b.hash)),
            "endpoints": endpoints,
        }),
        Record::Follow { author } => {
            json!({"type": "follow", "author": AuthorKey(*author).to_string()})
        }
        Record::Unfollow { author } => {
            json!({"type": "unfollow", "author": AuthorKey(*author).to_string()})
        }
        Record::Delete { seq } => json!({"type": "delete", "seq": seq}),
    }
}

/// The entry a post replies to, as JSON.
fn reply_json(r: &EntryRef) -> serde_json::Value {
    json!({"author": AuthorKey(r.author).to_string(), "seq": r.seq, "id": EntryId(r.id).to_string()})
}

/// A blob reference as JSON: its hash, size and media type.
fn blob_json(blob: &BlobRef) -> serde_json::Value {
    json!({"hash": hex::encode(blob.hash), "size": blob.size, "media_type": blob.media_type})
}

/// Why an entry shows no text, in one wording for the command line and
/// the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Tombstoned by the author's entry of this seq.
    Deleted(u64),
    /// This node does not hold the payload.
    NotHeld,
    /// The payload is a record this version cannot read.
    Unsupported,
}

impl Missing {
    /// Why `record` (the decoded payload, if held) of an entry deleted by
    /// `deleted_by` shows no text; None when it can be shown.
    pub fn of<T, E>(deleted_by: Option<u64>, record: Option<&Result<T, E>>) -> Option<Missing> {
        match (deleted_by, record) {
            (Some(by), _) => Some(Missing::Deleted(by)),
            (None, None) => Some(Missing::NotHeld),
            (None, Some(Err(_))) => Some(Missing::Unsupported),
            (None, Some(Ok(_))) => None,
        }
    }

    /// The words for it.
    pub fn describe(self) -> &'static str {
        match self {
            Missing::Deleted(_) => "deleted by its author",
            Missing::NotHeld => "text not held by this node",
            Missing::Unsupported => "a record this version cannot show",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_the_feed_writes_them() {
        for us in [0u64, 1_765_000_000_123_456, 951_782_400_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(us)), Some(us - us % 1_000_000));
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

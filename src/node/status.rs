//! What a node knows, for `capsule status` and `capsule peers`: the logs it
//! follows and mirrors with their heads and freshness, and the peers it
//! dials with how the last attempts went. Read from the store directly, or
//! from a running node through its admin socket.

use serde_json::{Value, json};

use crate::identity::AuthorKey;
use crate::log::present::rfc3339;
use crate::store::tables::{AddressRow, AddressSource};
use crate::store::{Store, StoreError};

fn source_name(source: u8) -> &'static str {
    match source {
        s if s == AddressSource::Bootstrap as u8 => "bootstrap",
        s if s == AddressSource::Follow as u8 => "follow",
        s if s == AddressSource::Exchange as u8 => "exchange",
        _ => "unknown",
    }
}

fn time(us: u64) -> Value {
    if us == 0 {
        Value::Null
    } else {
        Value::String(rfc3339(us))
    }
}

/// One peer as JSON.
pub fn peer_json(key: &AuthorKey, row: &AddressRow, cursor: bool) -> Value {
    json!({
        "peer": format!("{key}@{}", row.host_port),
        "source": source_name(row.source),
        "last_attempt": time(row.last_attempt_us),
        "last_success": time(row.last_success_us),
        "failures_in_a_row": row.failures,
        "next_attempt": time(row.next_attempt_us),
        "changelog_cursor": cursor,
    })
}

/// The peers the node dials.
pub fn peers(store: &Store) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for (key, row) in store.addresses()? {
        let cursor = store.peer(&key.0)?.is_some();
        out.push(peer_json(&key, &row, cursor));
    }
    Ok(Value::Array(out))
}

fn logs(store: &Store, authors: &[AuthorKey]) -> Result<Value, StoreError> {
    let (heads, _) = store.head_entries(authors)?;
    let mut out = Vec::new();
    for author in authors {
        let head = heads.iter().find(|h| h.entry.author() == *author);
        out.push(json!({
            "author": author.to_string(),
            "seq": head.map_or(0, |h| h.entry.seq()),
            "newest_entry": head.map_or(Value::Null, |h| time(h.entry.timestamp_us())),
        }));
    }
    Ok(Value::Array(out))
}

/// What the node's data takes on disk, own and mirrored: entries (217
/// bytes each), payloads, blobs; and the database file.
fn disk(
    store: &Store,
    owner: &AuthorKey,
    heads: &[(AuthorKey, crate::store::Head)],
) -> Result<Value, StoreError> {
    let entries_all: u64 = heads.iter().map(|(_, h)| h.seq).sum();
    let entries_own = heads
        .iter()
        .find(|(a, _)| a == owner)
        .map_or(0, |(_, h)| h.seq);
    let mut payloads_own = 0u64;
    store.scan(owner, 1, |s| {
        if s.payload.is_some() {
            payloads_own += s.entry.payload_len();
        }
        true
    })?;
    let payloads_all = store.payload_bytes()?;
    let blobs = crate::mesh::budget::usage(store)?;
    let entry = crate::log::entry::ENTRY_LEN as u64;
    Ok(json!({
        "entries": {"own": entries_own * entry, "mirrored": (entries_all - entries_own) * entry},
        "payloads": {"own": payloads_own, "mirrored": payloads_all.saturating_sub(payloads_own)},
        "blobs": {
            "own": blobs.own.1, "own_count": blobs.own.0,
            "mirrored": blobs.mirrored.1, "mirrored_count": blobs.mirrored.0,
            "evicted_count": blobs.evicted,
        },
    }))
}

/// Bytes in words: `12.3 MB`.
fn size(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

/// Everything `capsule status` shows.
pub fn status(store: &Store, owner: AuthorKey) -> Result<Value, StoreError> {
    let followed = store.followed()?;
    let mirrored: Vec<AuthorKey> = store
        .mirrors()?
        .into_iter()
        .filter(|a| !followed.contains(a))
        .collect();
    let heads = store.heads()?;
    let signing = store.signing(&owner)?;
    let (mut blocked, mut muted) = (Vec::new(), Vec::new());
    for (author, row) in store.blocks()? {
        let item = json!({"author": author.to_string(), "since": time(row.since_us)});
        match row.kind {
            crate::store::blocks::Block::Blocked => blocked.push(item),
            crate::store::blocks::Block::Muted => muted.push(item),
        }
    }
    let forked_here = store.fork_of(&owner)?.map(|p| p.first.seq());
    let held = store.held_by(&owner)?;
    Ok(json!({
        "author": owner.to_string(),
        "signing": signing.word(),
        "signing_refused": forked_here
            .map(|seq| crate::store::StoreError::OwnLogForked(seq).to_string())
            .or_else(|| signing.refusal()),
        "blocked": blocked,
        "muted": muted,
        "own_seq": heads.iter().find(|(a, _)| *a == owner).map_or(0, |(_, h)| h.seq),
        "logs_held": heads.len(),
        "entries_held": heads.iter().map(|(_, h)| h.seq).sum::<u64>(),
        "forks": store.forks()?.len(),
        "held_by": {
            "peers": held.peers.len(),
            "up_to_date": held.up_to_date,
            "said": held.describe(true),
            "holders": held.peers.iter().map(|(peer, row)| json!({
                "peer": peer.to_string(),
                "seq": row.seq,
                "seen": time(row.seen_us),
            })).collect::<Vec<_>>(),
        },
        "followed": logs(store, &followed)?,
        "mirrored": logs(store, &mirrored)?,
        "peers": peers(store)?,
        "disk": disk(store, &owner, &heads)?,
        "fediverse": fediverse(store)?,
    }))
}

/// Followers and follows on other servers, and how deliveries to each
/// host are going.
pub fn fediverse(store: &Store) -> Result<Value, StoreError> {
    use crate::store::fediverse::{HostHealth, Reader};
    let tables = Reader::new(store);
    Ok(json!({
        "followers": tables.followers()?.into_iter().map(|(actor, f)| json!({
            "actor": actor,
            "inbox": f.delivery_inbox(),
            "since": time(f.since_us),
        })).collect::<Vec<_>>(),
        "following": tables.following()?.into_iter().map(|(actor, f)| json!({
            "handle": f.handle,
            "actor": actor,
            "accepted": f.accepted,
        })).collect::<Vec<_>>(),
        "queued": tables.queued()?,
        "hosts": tables.hosts()?.into_iter().map(|(host, h)| json!({
            "host": host,
            "state": match h.state {
                HostHealth::Ok => "ok",
                HostHealth::Retrying => "retrying",
                HostHealth::GaveUp => "gave up",
            },
            "since": time(h.since_us),
            "error": h.error,
            "delivered": h.delivered,
        })).collect::<Vec<_>>(),
    }))
}

/// `status` as text for a terminal.
pub fn render(status: &Value, peers_only: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let text = |v: &Value| v.as_str().unwrap_or("never").to_string();
    if !peers_only {
        let _ = writeln!(out, "author {}", text(&status["author"]));
        let _ = writeln!(
            out,
            "your log: {} entries; holding {} logs, {} entries; {} forks seen",
            status["own_seq"], status["logs_held"], status["entries_held"], status["forks"]
        );
        let d = &status["disk"];
        let _ = writeln!(
            out,
            "disk: yours {} in entries, {} in payloads, {} in {} pictures; mirrored {} in entries, {} in payloads, {} in {} pictures ({} evicted)",
            size(&d["entries"]["own"]),
            size(&d["payloads"]["own"]),
            size(&d["blobs"]["own"]),
            d["blobs"]["own_count"],
            size(&d["entries"]["mirrored"]),
            size(&d["payloads"]["mirrored"]),
            size(&d["blobs"]["mirrored"]),
            d["blobs"]["mirrored_count"],
            d["blobs"]["evicted_count"],
        );
        let _ = writeln!(out, "{}", text(&status["held_by"]["said"]));
        for h in status["held_by"]["holders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let _ = writeln!(
                out,
                "  {}  up to seq {}  seen {}",
                text(&h["peer"]),
                h["seq"],
                text(&h["seen"])
            );
        }
        match status["signing_refused"].as_str() {
            None => {
                let _ = writeln!(
                    out,
                    "signing: ready (your next post is seq {})",
                    status["own_seq"].as_u64().unwrap_or(0) + 1
                );
            }
            Some(why) => {
                let _ = writeln!(
                    out,
                    "signing: STOPPED ({}): {why}",
                    text(&status["signing"])
                );
            }
        }
        for (title, key) in [("blocked", "blocked"), ("muted", "muted")] {
            let list = status[key].as_array().cloned().unwrap_or_default();
            if !list.is_empty() {
                let _ = writeln!(out, "{title} {}:", list.len());
                for a in list {
                    let _ = writeln!(out, "  {}  since {}", text(&a["author"]), text(&a["since"]));
                }
            }
        }
        for (title, key) in [("following", "followed"), ("mirroring", "mirrored")] {
            let list = status[key].as_array().cloned().unwrap_or_default();
            let _ = writeln!(out, "{title} {}:", list.len());
            for log in list {
                let _ = writeln!(
                    out,
                    "  {}  seq {:>6}  newest {}",
                    text(&log["author"]),
                    log["seq"],
                    text(&log["newest_entry"])
                );
            }
        }
    }
    if !peers_only {
        let f = &status["fediverse"];
        let list = |k: &str| f[k].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "fediverse: {} followers, following {}, {} deliveries queued",
            list("followers").len(),
            list("following").len(),
            f["queued"]
        );
        for a in list("followers") {
            let _ = writeln!(
                out,
                "  follower {}  since {}",
                text(&a["actor"]),
                text(&a["since"])
            );
        }
        for a in list("following") {
            let state = if a["accepted"].as_bool() == Some(true) {
                "accepted"
            } else {
                "asked"
            };
            let _ = writeln!(out, "  following @{}  ({state})", text(&a["handle"]));
        }
        for h in list("hosts") {
            let error = h["error"].as_str().filter(|e| !e.is_empty());
            let _ = writeln!(
                out,
                "  deliveries to {}: {} since {}, {} delivered{}",
                text(&h["host"]),
                text(&h["state"]),
                text(&h["since"]),
                h["delivered"],
                error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    }
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "peers {}:", peers.len());
    for p in peers {
        let state = match p["failures_in_a_row"].as_u64().unwrap_or(0) {
            0 if p["last_success"].is_null() => "not dialled yet".to_string(),
            0 => format!("ok at {}", text(&p["last_success"])),
            n => format!(
                "{n} failures in a row (last success {})",
                text(&p["last_success"])
            ),
        };
        let _ = writeln!(
            out,
            "  {}  ({})  {state}; next {}",
            text(&p["peer"]),
            text(&p["source"]),
            text(&p["next_attempt"])
        );
    }
    out
}

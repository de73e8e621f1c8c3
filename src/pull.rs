//! Pulling logs over HTTPS, for when a peer's QUIC endpoint cannot be
//! reached (UDP blocked on the way): the peer's read-only API gives its
//! heads, `entries.bin` the entries, `/payloads/HASH` their payloads, and
//! every entry is verified exactly as one that came over QUIC (signature,
//! payload hash, links) before the store takes it.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::identity::AuthorKey;
use crate::log::entry::{ENTRY_LEN, Entry};
use crate::log::verify::{Unverified, verify_batch};
use crate::store::Store;
use crate::web_client::get;

/// Entries asked for per `entries.bin` request.
pub const PULL_BATCH: u64 = 1000;

/// Entries one pull takes at most; the next pull goes on from there.
pub const MAX_PULL: u64 = 10_000;

/// Largest `/api/v1/authors` answer read.
pub const MAX_AUTHORS_ANSWER: u64 = 8 << 20;

/// What one pull did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Authors with new entries.
    pub authors: u64,
    /// Entries stored.
    pub entries: u64,
}

/// Pulls, from the gateway at `origin`, the entries of the logs this node
/// mirrors that the peer holds further than we do.
pub fn pull(store: &Store, origin: &str, extra_root: Option<&Path>) -> Result<Pulled> {
    let (status, body) = get(origin, "/api/v1/authors", extra_root, MAX_AUTHORS_ANSWER)?;
    ensure!(status == 200, "{origin}/api/v1/authors answered {status}");
    let json: serde_json::Value = serde_json::from_slice(&body).context("not JSON")?;
    let theirs: Vec<(AuthorKey, u64)> = json["authors"]
        .as_array()
        .context("no authors list")?
        .iter()
        .filter_map(|a| Some((a["author"].as_str()?.parse().ok()?, a["seq"].as_u64()?)))
        .collect();
    let mirrors = store.mirrors()?;
    let mut pulled = Pulled::default();
    for (author, their_seq) in theirs {
        if !mirrors.contains(&author) || pulled.entries >= MAX_PULL {
            continue;
        }
        let ours = store.head(&author)?.map_or(0, |h| h.seq);
        if their_seq <= ours || store.fork_of(&author)?.is_some() {
            continue;
        }
        let stored = pull_log(
            store,
            origin,
            extra_root,
            author,
            ours + 1,
            their_seq,
            MAX_PULL - pulled.entries,
        )?;
        if stored > 0 {
            pulled.authors += 1;
            pulled.entries += stored;
        }
    }
    store.flush()?;
    Ok(pulled)
}

#[allow(clippy::too_many_arguments)]
fn pull_log(
    store: &Store,
    origin: &str,
    extra_root: Option<&Path>,
    author: AuthorKey,
    mut from: u64,
    to: u64,
    budget: u64,
) -> Result<u64> {
    let mut stored = 0;
    while from <= to && stored < budget {
        let limit = PULL_BATCH.min(to - from + 1).min(budget - stored);
        let path = format!("/api/v1/authors/{author}/entries.bin?from={from}&limit={limit}");
        let (status, body) = get(origin, &path, extra_root, limit * ENTRY_LEN as u64)?;
        ensure!(status == 200, "{path} answered {status}");
        ensure!(
            body.len() % ENTRY_LEN == 0 && !body.is_empty(),
            "{path}: {} bytes are not whole entries",
            body.len()
        );
        let mut batch: Vec<Unverified> = Vec::new();
        for (i, bytes) in body.chunks(ENTRY_LEN).enumerate() {
            let entry = Entry::decode(bytes).context("an undecodable entry")?;
            ensure!(
                entry.author() == author && entry.seq() == from + i as u64,
                "{path} sent an entry it was not asked for"
            );
            let hash = hex::encode(entry.payload_hash());
            let payload = match get(
                origin,
                &format!("/api/v1/payloads/{hash}"),
                extra_root,
                entry.payload_len(),
            )? {
                (200, bytes) => Some(bytes),
                // Deleted, or not held by the peer: the entry alone still
                // verifies and links the log.
                (404, _) => None,
                (status, _) => bail!("payload {hash} answered {status}"),
            };
            batch.push((entry, payload));
        }
        let n = batch.len() as u64;
        let verified = verify_batch(batch).map_err(|(_, bad)| anyhow::anyhow!("{bad}"))?;
        let report = store.append_mirrored(verified)?;
        if let Some(rejected) = report.rejected {
            bail!("the store refused an entry from {origin}: {rejected:?}");
        }
        stored += report.accepted;
        from += n;
    }
    Ok(stored)
}

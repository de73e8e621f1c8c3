//! Pulling logs over HTTPS, for when a peer's QUIC endpoint cannot be
//! reached (UDP blocked on the way): the peer's read-only API gives its
//! heads, `entries.bin` the entries, `/payloads/HASH` their payloads, and
//! every entry is verified exactly as one that came over QUIC (signature,
//! payload hash, links) before the store takes it.

use std::path::Path;

use super::web_client::{WebError, get};
use crate::identity::AuthorKey;
use crate::log::entry::{DecodeError, ENTRY_LEN, Entry};
use crate::log::verify::{BadEntry, Unverified, verify_batch};
use crate::store::{Store, StoreError};

/// Why a pull stopped. What was stored before stays.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The request failed.
    #[error(transparent)]
    Web(#[from] WebError),
    /// The peer answered with another status than asked for.
    #[error("{path} answered {status}")]
    Status {
        /// What was asked.
        path: String,
        /// The status.
        status: u16,
    },
    /// The peer's answer is not what its API promises.
    #[error("{path}: {reason}")]
    Answer {
        /// What was asked.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry does not decode.
    #[error("an undecodable entry: {0}")]
    Entry(#[from] DecodeError),
    /// An entry does not verify.
    #[error("the peer sent an invalid entry: {0}")]
    BadEntry(BadEntry),
    /// The store refused an entry or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
pub fn pull(store: &Store, origin: &str, extra_root: Option<&Path>) -> Result<Pulled, PullError> {
    let path = "/api/v1/authors";
    let answer = get(origin, path, extra_root, MAX_AUTHORS_ANSWER)?;
    if answer.status != 200 {
        return Err(PullError::Status {
            path: format!("{origin}{path}"),
            status: answer.status,
        });
    }
    let bad = |reason: &str| PullError::Answer {
        path: format!("{origin}{path}"),
        reason: reason.to_string(),
    };
    let json: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|_| bad("not JSON"))?;
    let theirs: Vec<(AuthorKey, u64)> = json["authors"]
        .as_array()
        .ok_or_else(|| bad("no authors list"))?
        .iter()
        .filter_map(|a| Some((a["author"].as_str()?.parse().ok()?, a["seq"].as_u64()?)))
        .collect();
    let mirrors = store.wanted()?;
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
) -> Result<u64, PullError> {
    let mut stored = 0;
    while from <= to && stored < budget {
        let limit = PULL_BATCH.min(to - from + 1).min(budget - stored);
        let path = format!("/api/v1/authors/{author}/entries.bin?from={from}&limit={limit}");
        let answer = get(origin, &path, extra_root, limit * ENTRY_LEN as u64)?;
        if answer.status != 200 {
            return Err(PullError::Status {
                path,
                status: answer.status,
            });
        }
        let body = answer.body;
        if body.len() % ENTRY_LEN != 0 || body.is_empty() {
            return Err(PullError::Answer {
                reason: format!("{} bytes are not whole entries", body.len()),
                path,
            });
        }
        let mut batch: Vec<Unverified> = Vec::new();
        for (i, bytes) in body.chunks(ENTRY_LEN).enumerate() {
            let entry = Entry::decode(bytes)?;
            if entry.author() != author || entry.seq() != from + i as u64 {
                return Err(PullError::Answer {
                    path,
                    reason: "an entry it was not asked for".into(),
                });
            }
            let hash = hex::encode(entry.payload_hash());
            let payload_path = format!("/api/v1/payloads/{hash}");
            let payload = match get(origin, &payload_path, extra_root, entry.payload_len())? {
                answer if answer.status == 200 => Some(answer.body),
                // Deleted, or not held by the peer: the entry alone still
                // verifies and links the log.
                answer if answer.status == 404 => None,
                answer => {
                    return Err(PullError::Status {
                        path: payload_path,
                        status: answer.status,
                    });
                }
            };
            batch.push((entry, payload));
        }
        let n = batch.len() as u64;
        let verified = verify_batch(batch).map_err(|(_, bad)| PullError::BadEntry(bad))?;
        let report = store.append_mirrored(verified)?;
        if let Some(rejected) = report.rejected {
            return Err(PullError::BadEntry(rejected));
        }
        stored += report.accepted;
        from += n;
    }
    Ok(stored)
}

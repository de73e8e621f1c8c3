//! Fetching the blobs (pictures) of the entries a node holds: over its live
//! QUIC connections first, over a peer's HTTPS gateway when none has it.
//!
//! A stream of kind [`STREAM_BLOB`] on a live connection, opened by either
//! side, asks for one blob: the kind byte, the version byte
//! ([`BLOB_VERSION`]), the blob's 32-byte blake3 hash; the asker finishes
//! its side. The peer answers one status byte: [`HELD`], then the size (u64
//! BE) and that many bytes; or [`NOT_HELD`]; and finishes. schema/sync.md
//! documents the bytes.
//!
//! The asker knows the size the record announces and refuses an answer
//! announcing another, or running past it, or hashing to anything else;
//! nothing reaches a blob's final name before it is verified
//! ([`crate::store::blobs::Blobs::receive`]). A fetch is bounded in time
//! ([`FETCH_TIMEOUT`]), fetches in number ([`MAX_FETCHES`]) and in bytes
//! held at once ([`MAX_IN_FLIGHT`]); a blob no peer gives is tried again
//! later, less often each time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::peers::LivePeers;
use crate::identity::AuthorKey;
use crate::picture::MAX_FILE;
use crate::store::Store;
use crate::store::blobs::BlobId;

/// First byte of a bidirectional stream on a live connection: a blob
/// request follows.
pub const STREAM_BLOB: u8 = 4;

/// The version byte after [`STREAM_BLOB`].
pub const BLOB_VERSION: u8 = 1;

/// Answer status: the blob follows.
pub const HELD: u8 = 1;

/// Answer status: the peer does not hold it.
pub const NOT_HELD: u8 = 0;

/// Blobs fetched at once: enough to keep a link busy past the round trip
/// each costs (measured on loopback: 8 moves 200 KB pictures at about half
/// the disk's rate).
pub const MAX_FETCHES: usize = 8;

/// Bytes of blobs held in memory by fetches at once (four at the size
/// limit).
pub const MAX_IN_FLIGHT: u64 = 4 * MAX_FILE as u64;

/// Longest one peer may take to send one blob: 16 MiB at 2.2 Mbit/s.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// First wait before a blob no peer gave is asked for again; doubled per
/// failure, at most [`MAX_RETRY`]. A blob nobody could be asked for (no
/// live connection, no gateway known) is asked for again as soon as a peer
/// connects.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// Longest wait between tries of one blob.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// How often the wanted blobs are looked at with no commit or new peer to
/// wake on.
pub const RESCAN: Duration = Duration::from_secs(30);

/// Blob streams one peer may have open with us at once: as many as it
/// fetches at once; past them a stream is reset.
pub const MAX_ANSWERING: usize = MAX_FETCHES;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The stream failed.
    #[error("the stream failed: {0}")]
    Stream(String),
    /// The answer is not what the protocol says.
    #[error("{0}")]
    Protocol(String),
    /// The peer took longer than [`FETCH_TIMEOUT`].
    #[error("the peer took too long")]
    Timeout,
    /// The bytes are not the blob.
    #[error(transparent)]
    Blob(#[from] crate::store::blobs::BlobError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Reads an answer to a blob request from `answer`: the blob's bytes,
/// exactly `announced` of them, or None when the peer does not hold it.
/// Reads at most one byte past `announced`, so an endless sender costs
/// nothing more.
pub async fn read_answer(
    mut answer: impl AsyncRead + Unpin,
    announced: u64,
) -> Result<Option<Vec<u8>>, FetchError> {
    let stream = |e: std::io::Error| FetchError::Stream(e.to_string());
    let mut status = [0u8; 1];
    answer.read_exact(&mut status).await.map_err(stream)?;
    match status[0] {
        NOT_HELD => return Ok(None),
        HELD => {}
        other => return Err(FetchError::Protocol(format!("unknown status {other}"))),
    }
    let mut size = [0u8; 8];
    answer.read_exact(&mut size).await.map_err(stream)?;
    let size = u64::from_be_bytes(size);
    if size != announced || size > MAX_FILE as u64 {
        return Err(FetchError::Protocol(format!(
            "the peer offers {size} bytes where the record announces {announced}"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut answer)
        .take(size + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(stream)?;
    if bytes.len() as u64 != size {
        return Err(FetchError::Protocol(format!(
            "the peer sent {} bytes of {size}",
            bytes.len()
        )));
    }
    Ok(Some(bytes))
}

/// Asks `connection`'s peer for blob `id` of `announced` bytes; the bytes,
/// unverified, or None when it does not hold it.
pub async fn ask(
    connection: &quinn::Connection,
    id: BlobId,
    announced: u64,
    within: Duration,
) -> Result<Option<Vec<u8>>, FetchError> {
    let asked = async {
        let stream = |e: &dyn std::fmt::Display| FetchError::Stream(e.to_string());
        let (mut send, recv) = connection.open_bi().await.map_err(|e| stream(&e))?;
        let mut request = vec![STREAM_BLOB, BLOB_VERSION];
        request.extend_from_slice(&id.0);
        send.write_all(&request).await.map_err(|e| stream(&e))?;
        send.finish().map_err(|e| stream(&e))?;
        read_answer(recv, announced).await
    };
    tokio::time::timeout(within, asked)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// Answers one blob stream (its kind byte read): the blob if this node
/// holds it, named by an entry it holds and not evicted.
pub async fn answer(
    store: &Arc<Store>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), FetchError> {
    let stream = |e: &dyn std::fmt::Display| FetchError::Stream(e.to_string());
    let mut request = [0u8; 33];
    tokio::time::timeout(FETCH_TIMEOUT, recv.read_exact(&mut request))
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(|e| stream(&e))?;
    if request[0] != BLOB_VERSION {
        return Err(FetchError::Protocol(format!(
            "blob request version {}",
            request[0]
        )));
    }
    let hash: [u8; 32] = request[1..].try_into().expect("32 bytes");
    let held = {
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || crate::gateway::timeline::holds(&store, &hash))
            .await
            .map_err(|e| stream(&e))?
            .unwrap_or(false)
    };
    let file = match held {
        true => tokio::fs::File::open(store.blobs().path(&BlobId(hash)))
            .await
            .ok(),
        false => None,
    };
    let sent = async {
        let Some(mut file) = file else {
            send.write_all(&[NOT_HELD]).await.map_err(|e| stream(&e))?;
            return send.finish().map_err(|e| stream(&e));
        };
        let size = file.metadata().await.map_err(|e| stream(&e))?.len();
        let mut head = vec![HELD];
        head.extend_from_slice(&size.to_be_bytes());
        send.write_all(&head).await.map_err(|e| stream(&e))?;
        tokio::io::copy(&mut file, &mut send)
            .await
            .map_err(|e| stream(&e))?;
        send.finish().map_err(|e| stream(&e))
    };
    tokio::time::timeout(FETCH_TIMEOUT, sent)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// A blob some held entry names that this node lacks.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    id: BlobId,
    size: u64,
    /// Whether one of the owner's entries names it (outside the budget).
    own: bool,
}

/// The blobs to fetch: named, not evicted, not held, within the size limit
/// (and, for other authors', within the media budget).
fn wanted(store: &Store, budget: u64) -> Result<Vec<Wanted>, crate::store::StoreError> {
    Ok(store
        .blob_rows()?
        .into_iter()
        .filter(|(hash, row)| {
            row.evicted_us == 0
                && row.size <= MAX_FILE as u64
                && (row.own || row.size <= budget)
                && !store.blobs().has(&BlobId(*hash))
        })
        .map(|(hash, row)| Wanted {
            id: BlobId(hash),
            size: row.size,
            own: row.own,
        })
        .collect())
}

/// What the fetcher needs.
pub struct Fetcher {
    /// The store.
    pub store: Arc<Store>,
    /// The live connections to ask.
    pub peers: Arc<LivePeers>,
    /// An extra root to trust when fetching from a peer's HTTPS gateway.
    pub web_root: Option<std::path::PathBuf>,
    /// The media budget: bytes of other authors' blobs kept at most (see
    /// [`super::budget`]).
    pub budget: super::budget::Account,
    /// Longest one peer may take to send one blob ([`FETCH_TIMEOUT`]).
    pub timeout: Duration,
}

impl Fetcher {
    /// Fetches blob `id` of `size` bytes now, from whoever has it (see
    /// [`run`] for the order); whether it is kept.
    pub async fn fetch_now(&self, id: BlobId, size: u64) -> bool {
        let own = self
            .store
            .blob_row(&id.0)
            .ok()
            .flatten()
            .is_some_and(|r| r.own);
        fetch(self, Wanted { id, size, own }).await == Fetched::Kept
    }
}

/// Fetches wanted blobs until the task is dropped: at every commit (new
/// entries may name new blobs) and every [`RESCAN`].
pub async fn run(fetcher: Fetcher) {
    let fetcher = Arc::new(fetcher);
    let mut commits = fetcher.store.subscribe();
    let mut arrivals = fetcher.peers.arrivals();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES));
    let bytes = Arc::new(tokio::sync::Semaphore::new((MAX_IN_FLIGHT >> 10) as usize));
    let retry: Arc<std::sync::Mutex<HashMap<BlobId, (Instant, u32)>>> = Arc::default();
    let busy: Arc<std::sync::Mutex<std::collections::HashSet<BlobId>>> = Arc::default();
    super::budget::keep_within(&fetcher.store, fetcher.budget.budget).await;
    // Dropped with this task: a stopping node aborts every fetch.
    let mut fetches = tokio::task::JoinSet::new();
    loop {
        while fetches.try_join_next().is_some() {}
        let (store, budget) = (Arc::clone(&fetcher.store), fetcher.budget.budget);
        let wants = tokio::task::spawn_blocking(move || wanted(&store, budget))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for want in wants {
            let due = retry
                .lock()
                .expect("not poisoned")
                .get(&want.id)
                .is_none_or(|(at, _)| *at <= Instant::now());
            if !due || !busy.lock().expect("not poisoned").insert(want.id) {
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let kib = (want.size >> 10).max(1) as u32;
            let Ok(held) = Arc::clone(&bytes).acquire_many_owned(kib).await else {
                return;
            };
            let (fetcher, retry, busy) =
                (Arc::clone(&fetcher), Arc::clone(&retry), Arc::clone(&busy));
            fetches.spawn(async move {
                let got = fetch(&fetcher, want).await;
                drop((slot, held));
                let mut retry = retry.lock().expect("not poisoned");
                if got != Fetched::Refused {
                    retry.remove(&want.id);
                } else {
                    let failures = retry.get(&want.id).map_or(0, |(_, n)| *n) + 1;
                    let wait = FIRST_RETRY
                        .saturating_mul(1 << failures.min(8))
                        .min(MAX_RETRY);
                    retry.insert(want.id, (Instant::now() + wait, failures));
                }
                busy.lock().expect("not poisoned").remove(&want.id);
            });
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            changed = arrivals.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RESCAN) => {}
        }
    }
}

/// How one fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    /// Kept.
    Kept,
    /// Nobody could be asked: no live connection, no gateway known.
    NobodyAsked,
    /// Those asked did not hold it, failed, or lied.
    Refused,
}

/// Fetches one blob from whoever has it.
async fn fetch(fetcher: &Fetcher, want: Wanted) -> Fetched {
    let store = &fetcher.store;
    let mut connections = fetcher.peers.list();
    // The author's own node first: a blob's author holds it for sure.
    let namers = {
        let store = Arc::clone(store);
        let id = want.id;
        tokio::task::spawn_blocking(move || store.blob_namers(&id.0))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    connections.sort_by_key(|(peer, _)| !namers.contains(peer));
    let mut asked = !connections.is_empty();
    for (peer, connection) in connections {
        match ask(&connection, want.id, want.size, fetcher.timeout).await {
            Ok(Some(bytes)) => match keep(fetcher, want, bytes).await {
                Ok(()) => {
                    tracing::debug!(%peer, blob = %want.id, size = want.size, "blob fetched over QUIC");
                    return Fetched::Kept;
                }
                Err(e) => {
                    tracing::info!(%peer, blob = %want.id, error = %e, "a peer sent a bad blob")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(%peer, blob = %want.id, error = %e, "blob fetch failed"),
        }
    }
    match fetch_over_https(fetcher, want, &namers, &mut asked).await {
        true => Fetched::Kept,
        false if asked => Fetched::Refused,
        false => Fetched::NobodyAsked,
    }
}

/// Tries the HTTPS gateways of the authors naming the blob, then of every
/// peer whose gateway is known; `asked` turns true if there is one.
async fn fetch_over_https(
    fetcher: &Fetcher,
    want: Wanted,
    namers: &[AuthorKey],
    asked: &mut bool,
) -> bool {
    let store = Arc::clone(&fetcher.store);
    let mut origins: Vec<(bool, String)> = match store.addresses() {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(peer, row)| row.web.map(|w| (!namers.contains(&peer), w)))
            .collect(),
        Err(_) => return false,
    };
    origins.sort();
    *asked |= !origins.is_empty();
    for (_, origin) in origins {
        let (path, root) = (
            format!("/api/v1/blobs/{}", want.id),
            fetcher.web_root.clone(),
        );
        let size = want.size;
        let answer = tokio::task::spawn_blocking(move || {
            super::web_client::get(&origin, &path, root.as_deref(), size)
        })
        .await;
        let Ok(Ok(answer)) = answer else { continue };
        if answer.status != 200 {
            continue;
        }
        if keep(fetcher, want, answer.body).await.is_ok() {
            return true;
        }
    }
    false
}

/// Verifies and keeps fetched bytes. Another author's blob first reserves
/// its room within the media budget (evicting the least recently served if
/// it does not fit), so the budget holds at every moment.
async fn keep(fetcher: &Fetcher, want: Wanted, bytes: Vec<u8>) -> Result<(), FetchError> {
    let store = Arc::clone(&fetcher.store);
    let account = &fetcher.budget;
    let kept = tokio::task::block_in_place(|| {
        if !want.own {
            account.reserve(&store, want.size)?;
        }
        let kept = store.blobs().receive(want.id, want.size, &bytes[..]);
        match (&kept, want.own) {
            (_, true) => {}
            (Ok(()), false) => account.written(want.size),
            (Err(_), false) => account.release(want.size),
        }
        Ok::<(), FetchError>(kept?)
    });
    kept?;
    // Pages that said "not held here" are stale now.
    store.bump_generation();
    Ok(())
}

//! The tasks that move a session's entries beside its protocol loop
//! (src/sync/network.rs): one serves the ranges the peer wants, one
//! verifies received batches (signatures on every core), one stores
//! verified batches, merging those that queued up meanwhile into one
//! commit. Each runs its store and signature work on the shared blocking
//! pool, so a session holds no thread while it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::network::MERGE_LIMIT;
use super::session::{SessionError, authors_of, serve as serve_entries};
use super::transport::LinkError;
use super::wire;
use crate::identity::AuthorKey;
use crate::log::verify::{Unverified, VerifiedEntry, verify_batch};
use crate::store::{AppendReport, Store};

/// What the storing task tells the session loop.
pub(super) enum Done {
    /// The report on `usize` merged batches.
    Stored(AppendReport, Vec<AuthorKey>, usize),
    Failed(SessionError),
}

/// Runs `work` on the store on the runtime's shared blocking pool: redb
/// never runs on an async thread, and a session holds no thread while it
/// waits.
pub(super) async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, SessionError> + Send + 'static,
) -> Result<T, SessionError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| SessionError::from(LinkError::from(e)))?
}

/// The session's queues are gone: the session ended.
pub(super) fn closed() -> SessionError {
    LinkError::Closed.into()
}

/// Serves the ranges it is handed, in order, each on the blocking pool;
/// the bytes of entries sent.
pub(super) async fn serving(
    store: Arc<Store>,
    mut ranges: mpsc::UnboundedReceiver<Vec<(AuthorKey, u64, u64)>>,
    entries: mpsc::Sender<Vec<u8>>,
    last_served: Arc<AtomicU64>,
    epoch: Instant,
) -> Result<u64, SessionError> {
    let mut total = 0;
    while let Some(ranges) = ranges.recv().await {
        let (entries, last_served) = (entries.clone(), Arc::clone(&last_served));
        total += blocking(&store, move |store| {
            serve_entries(store, &ranges, &mut |m| {
                let sent = entries
                    .blocking_send(wire::encode(&m))
                    .map_err(|_| closed());
                last_served.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                sent
            })
        })
        .await?;
    }
    Ok(total)
}

/// Verifies batches (signatures on every core, through rayon) while the
/// previous one is being stored.
pub(super) async fn verifying(
    mut batches: mpsc::UnboundedReceiver<Vec<Unverified>>,
    verified: mpsc::Sender<(Vec<VerifiedEntry>, Vec<AuthorKey>)>,
    results: mpsc::UnboundedSender<Done>,
) {
    while let Some(batch) = batches.recv().await {
        let authors = authors_of(&batch);
        match tokio::task::spawn_blocking(move || verify_batch(batch)).await {
            Ok(Ok(v)) => {
                if verified.send((v, authors)).await.is_err() {
                    break;
                }
            }
            Ok(Err((_, bad))) => {
                let _ = results.send(Done::Failed(SessionError::BadEntry(bad)));
                break;
            }
            Err(e) => {
                let _ = results.send(Done::Failed(LinkError::from(e).into()));
                break;
            }
        }
    }
}

/// Stores verified batches, merging those that queued up meanwhile into
/// one commit (up to [`MERGE_LIMIT`] entries).
pub(super) async fn storing(
    store: Arc<Store>,
    mut verified: mpsc::Receiver<(Vec<VerifiedEntry>, Vec<AuthorKey>)>,
    results: mpsc::UnboundedSender<Done>,
) {
    while let Some((mut batch, mut authors)) = verified.recv().await {
        let mut merged = 1;
        while batch.len() < MERGE_LIMIT {
            match verified.try_recv() {
                Ok((more, more_authors)) => {
                    batch.extend(more);
                    authors.extend(more_authors);
                    merged += 1;
                }
                Err(_) => break,
            }
        }
        let done = match blocking(&store, move |s| Ok(s.append_mirrored(batch)?)).await {
            Ok(report) => {
                tracing::debug!(stored = report.accepted, "stored a batch of entries");
                Done::Stored(report, authors, merged)
            }
            Err(e) => Done::Failed(e),
        };
        if results.send(done).is_err() {
            break;
        }
    }
}

//! The media budget: how much of the disk other people's pictures may
//! take. The worst complaint of people who run small servers is remote
//! media filling their disk; a node keeps the blobs of the logs it mirrors
//! within `--media-budget` (config `media_budget`, [`DEFAULT_BUDGET`]),
//! evicting the least recently served first. Entries and payloads stay (a
//! post keeps its text and says "picture not held here", with a link to
//! its origin); the owner's own blobs are never evicted, nor counted.

use std::sync::Arc;

use crate::store::Store;
use crate::store::blobs::BlobId;

/// The default budget, 2 GiB: a tenth of the 20–25 GB disk of the smallest
/// VPS plans, thousands of pictures at phone sizes, and room left for the
/// logs themselves.
pub const DEFAULT_BUDGET: u64 = 2 << 30;

/// What other authors' blobs use: bytes held, and how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The owner's blobs: count and bytes.
    pub own: (u64, u64),
    /// Other authors' blobs held: count and bytes.
    pub mirrored: (u64, u64),
    /// Other authors' blobs evicted.
    pub evicted: u64,
}

/// A mirrored blob held: when it was last served (its file's modification
/// time), its size, its hash.
type Held = (std::time::SystemTime, u64, [u8; 32]);

/// Blobs held per owner and mirrored, and the mirrored ones, least
/// recently served first.
fn survey(store: &Store) -> Result<(Usage, Vec<Held>), crate::store::StoreError> {
    let mut usage = Usage::default();
    let mut mirrored = Vec::new();
    for (hash, row) in store.blob_rows()? {
        if row.evicted_us != 0 {
            usage.evicted += 1;
            continue;
        }
        let Ok(meta) = std::fs::metadata(store.blobs().path(&BlobId(hash))) else {
            continue;
        };
        if row.own {
            usage.own.0 += 1;
            usage.own.1 += meta.len();
        } else {
            usage.mirrored.0 += 1;
            usage.mirrored.1 += meta.len();
            let served = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            mirrored.push((served, meta.len(), hash));
        }
    }
    mirrored.sort();
    Ok((usage, mirrored))
}

/// What the blobs use now.
pub fn usage(store: &Store) -> Result<Usage, crate::store::StoreError> {
    Ok(survey(store)?.0)
}

/// Evicts the least recently served blobs of other authors until they
/// take at most `budget` bytes; how many were evicted.
pub fn evict_over(store: &Store, budget: u64) -> Result<u64, crate::store::StoreError> {
    let (usage, mirrored) = survey(store)?;
    let mut over = usage.mirrored.1.saturating_sub(budget);
    if over == 0 {
        return Ok(0);
    }
    let mut evict = Vec::new();
    for (_, size, hash) in mirrored {
        if over == 0 {
            break;
        }
        evict.push(hash);
        over = over.saturating_sub(size);
    }
    let n = store.evict(evict)?;
    tracing::info!(
        evicted = n,
        budget,
        "other authors' pictures evicted to keep within the media budget"
    );
    Ok(n)
}

/// [`evict_over`] on the blocking pool.
pub async fn keep_within(store: &Arc<Store>, budget: u64) {
    let store = Arc::clone(store);
    let done = tokio::task::spawn_blocking(move || evict_over(&store, budget)).await;
    if let Ok(Err(e)) = done {
        tracing::warn!(error = %e, "the media budget could not be enforced");
    }
}

/// The budget as fetches spend it: the bytes other authors' blobs take,
/// kept in memory between surveys of the disk, so that a fetch reserves
/// its room in a lock held for an addition rather than a walk of every
/// blob. A survey runs at the first fetch, and whenever a reservation would
/// pass the budget (it then evicts, and the count is exact again).
/// Reservations of blobs still being written are counted apart, so a
/// survey (which sees only whole files) never forgets them.
#[derive(Debug)]
pub struct Account {
    /// Bytes of other authors' blobs kept at most.
    pub budget: u64,
    /// (bytes held when known, bytes reserved for blobs being written).
    spent: std::sync::Mutex<(Option<u64>, u64)>,
    /// Told when a reservation ends.
    ended: std::sync::Condvar,
}

impl Account {
    /// An account of `budget` bytes, its use not surveyed yet.
    pub fn new(budget: u64) -> Account {
        Account {
            budget,
            spent: std::sync::Mutex::new((None, 0)),
            ended: std::sync::Condvar::new(),
        }
    }

    /// Reserves `size` bytes for a blob of another author about to be
    /// written, evicting the least recently served first if they do not
    /// fit. Blocking (it may survey the disk). Each reservation ends with
    /// [`Account::written`] or [`Account::release`].
    pub fn reserve(&self, store: &Store, size: u64) -> Result<(), crate::store::StoreError> {
        let mut spent = self.spent.lock().expect("not poisoned");
        // Blobs being written take their room first: wait for them (each
        // write ends, well or not, within moments).
        while spent.1 > 0 && spent.1 + size > self.budget {
            spent = self.ended.wait(spent).expect("not poisoned");
        }
        let (held, pending) = &mut *spent;
        if held.is_none_or(|h| h + *pending + size > self.budget) {
            evict_over(store, self.budget.saturating_sub(*pending + size))?;
            *held = Some(usage(store)?.mirrored.1);
        }
        *pending += size;
        Ok(())
    }

    /// The reserved blob of `size` bytes is written.
    pub fn written(&self, size: u64) {
        let mut spent = self.spent.lock().expect("not poisoned");
        spent.1 = spent.1.saturating_sub(size);
        spent.0 = spent.0.map(|h| h + size);
        self.ended.notify_all();
    }

    /// Gives back a reservation whose blob was not written.
    pub fn release(&self, size: u64) {
        let mut spent = self.spent.lock().expect("not poisoned");
        spent.1 = spent.1.saturating_sub(size);
        self.ended.notify_all();
    }
}

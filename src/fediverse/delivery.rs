//! Activities going out, through a durable queue in the store.
//!
//! The owner's log is the outbox: the queue's cursor (`outbox-cursor` in
//! `ap_meta-1`) is the seq up to which the owner's entries have been turned
//! into activities, and the transaction that queues them moves it. So a
//! post is queued exactly once, even when the node dies between the post's
//! commit and the queueing: the next start picks up from the cursor.
//! A post becomes `Create{Note}`, a deletion `Delete`, a profile
//! `Update{Person}`, each queued once per distinct inbox (a follower's
//! server's shared inbox when it has one).
//!
//! A delivery stays queued until it is answered 2xx, or given up: at once
//! on a status that says the request will never succeed (400, 403, 404,
//! 405, 410, 413, 422), or [`GIVE_UP_AFTER`] after it was queued. Failures
//! retry after [`FIRST_RETRY`], doubling to [`MAX_RETRY`], never sooner
//! than a `Retry-After` asks. Deliveries run [`CONCURRENCY`] at a time on
//! their own task: posting never waits for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redb::{ReadableTable, WriteTransaction};

use super::Federation;
use super::documents;
use crate::gateway::timeline;
use crate::log::record::Record;
use crate::store::StoreError;
use crate::store::fediverse::{
    DELIVERIES, Delivery, HOSTS, HostHealth, HostState, META, NEXT_DELIVERY, OUTBOX_CURSOR, decode,
    encode,
};

/// First wait after a failed delivery.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// How long a delivery is tried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Deliveries in flight at once.
pub const CONCURRENCY: usize = 64;
/// Due deliveries taken from the queue at a time.
pub const BATCH: usize = 1024;
/// The owner's entries turned into activities per transaction.
pub const CATCH_UP: u64 = 64;

/// A delivery's key: due time, then its number.
fn key(due_us: u64, n: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&due_us.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Queues `body` for `inbox`, due now, in the caller's transaction.
pub fn enqueue(
    txn: &WriteTransaction,
    inbox: &str,
    body: &[u8],
    now_us: u64,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let n = meta.get(NEXT_DELIVERY)?.map_or(0, |v| v.value());
    meta.insert(NEXT_DELIVERY, n + 1)?;
    let row = Delivery {
        inbox: inbox.to_string(),
        body: body.to_vec(),
        queued_us: now_us,
        attempts: 0,
    };
    txn.open_table(DELIVERIES)?
        .insert(&key(now_us, n), encode(&row).as_slice())?;
    Ok(())
}

/// Turns the owner's entries past the cursor into queued activities.
/// A node with no cursor yet starts at its head: federation begins with
/// the next post. Returns how many activities were queued.
pub fn catch_up(fed: &Federation) -> Result<usize, StoreError> {
    let store = fed.tables.store();
    let head = store.head(&fed.owner)?.map_or(0, |h| h.seq);
    let cursor = fed
        .tables
        .reader()
        .read(|txn| Ok(txn.open_table(META)?.get(OUTBOX_CURSOR)?.map(|v| v.value())))?;
    let Some(mut cursor) = cursor else {
        fed.tables.write(|txn| {
            txn.open_table(META)?.insert(OUTBOX_CURSOR, head)?;
            Ok(())
        })?;
        return Ok(0);
    };
    let mut queued = 0;
    while cursor < head {
        let end = (cursor + CATCH_UP).min(head);
        let mut activities = Vec::new();
        store.scan(&fed.owner, cursor + 1, |row| {
            let seq = row.entry.seq();
            if seq > end {
                return false;
            }
            let record = row.payload.as_deref().map(Record::decode);
            match record {
                Some(Ok(Record::Post { .. } | Record::PostWithPictures { .. }))
                    if row.deleted_by.is_none() =>
                {
                    if let Some(post) = timeline::as_post(&row) {
                        activities.push((seq, Some(documents::create(fed, &post))));
                    }
                }
                Some(Ok(Record::Delete { seq: target })) => {
                    activities.push((seq, Some(documents::delete(fed, target))));
                }
                // The person as it is now (built below, outside the scan).
                Some(Ok(Record::Profile { .. })) => activities.push((seq, None)),
                _ => {}
            }
            true
        })?;
        let mut built = Vec::with_capacity(activities.len());
        for (seq, activity) in activities {
            built.push(match activity {
                Some(a) => a,
                None => documents::update_person(fed, documents::person(fed, store)?, seq),
            });
        }
        let activities = built;
        let inboxes: std::collections::BTreeSet<String> = fed
            .tables
            .reader()
            .followers()?
            .into_iter()
            .map(|(_, f)| f.delivery_inbox().to_string())
            .collect();
        let now = crate::clock::now_us();
        let from = cursor;
        fed.tables.write(|txn| {
            let current = txn.open_table(META)?.get(OUTBOX_CURSOR)?.map(|v| v.value());
            if current != Some(from) {
                return Ok(());
            }
            for activity in &activities {
                let body = activity.to_string();
                for inbox in &inboxes {
                    enqueue(txn, inbox, body.as_bytes(), now)?;
                }
            }
            txn.open_table(META)?.insert(OUTBOX_CURSOR, end)?;
            Ok(())
        })?;
        queued += activities.len() * inboxes.len();
        cursor = end;
    }
    Ok(queued)
}

/// A queued delivery with its key.
type Queued = ([u8; 16], Delivery);

/// Due deliveries (at most [`BATCH`]), and when the next one is due.
fn due(fed: &Federation, now_us: u64) -> Result<(Vec<Queued>, Option<u64>), StoreError> {
    fed.tables.reader().read(|txn| {
        let table = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        let split = key(now_us + 1, 0);
        for row in table.range::<&[u8; 16]>(..&split)?.take(BATCH) {
            let (k, v) = row?;
            if let Some(d) = decode::<Delivery>(v.value()) {
                out.push((*k.value(), d));
            }
        }
        let next = table
            .range::<&[u8; 16]>(&split..)?
            .next()
            .transpose()?
            .map(|(k, _)| u64::from_be_bytes(k.value()[..8].try_into().expect("8 bytes")));
        Ok((out, next))
    })
}

/// What became of one attempt.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Retry {
        after: Option<Duration>,
        why: String,
    },
    GiveUp(String),
}

fn host_of(inbox: &str) -> String {
    url::Url::parse(inbox)
        .ok()
        .filter(|u| u.host_str().is_some())
        .map_or_else(|| inbox.to_string(), |u| u.authority().to_string())
}

/// Writes the outcomes of a batch: delivered rows go, failed ones move to
/// their next due time or are given up.
fn settle(fed: &Federation, done: Vec<([u8; 16], Delivery, Outcome)>) -> Result<(), StoreError> {
    let now = crate::clock::now_us();
    fed.tables.write_lazily(|txn| {
        let mut queue = txn.open_table(DELIVERIES)?;
        let mut hosts = txn.open_table(HOSTS)?;
        for (k, mut delivery, outcome) in done {
            queue.remove(&k)?;
            let host = host_of(&delivery.inbox);
            let mut state = hosts
                .get(host.as_str())?
                .and_then(|v| decode::<HostState>(v.value()))
                .unwrap_or(HostState {
                    state: HostHealth::Ok,
                    since_us: now,
                    error: String::new(),
                    delivered: 0,
                });
            let (health, error) = match outcome {
                Outcome::Delivered => {
                    state.delivered += 1;
                    (HostHealth::Ok, String::new())
                }
                Outcome::Retry { after, why } => {
                    let age = Duration::from_micros(now.saturating_sub(delivery.queued_us));
                    if age >= GIVE_UP_AFTER {
                        (HostHealth::GaveUp, why)
                    } else {
                        let backoff = FIRST_RETRY
                            .saturating_mul(1 << delivery.attempts.min(16))
                            .min(MAX_RETRY);
                        let wait = after.map_or(backoff, |a| a.max(backoff)).min(MAX_RETRY);
                        delivery.attempts += 1;
                        let n = u64::from_be_bytes(k[8..].try_into().expect("8 bytes"));
                        queue.insert(
                            &key(now + wait.as_micros() as u64, n),
                            encode(&delivery).as_slice(),
                        )?;
                        (HostHealth::Retrying, why)
                    }
                }
                Outcome::GiveUp(why) => (HostHealth::GaveUp, why),
            };
            if health != state.state {
                state.since_us = now;
            }
            state.state = health;
            state.error = error;
            hosts.insert(host.as_str(), encode(&state).as_slice())?;
        }
        Ok(())
    })
}

async fn attempt(fed: &Federation, delivery: &Delivery) -> Outcome {
    match fed
        .client
        .post(&delivery.inbox, Bytes::from(delivery.body.clone()))
        .await
    {
        Ok(reply) if reply.ok() => Outcome::Delivered,
        Ok(reply) if matches!(reply.status, 400 | 403 | 404 | 405 | 410 | 413 | 422) => {
            Outcome::GiveUp(format!("answered {}", reply.status))
        }
        Ok(reply) => Outcome::Retry {
            after: reply.retry_after(),
            why: format!("answered {}", reply.status),
        },
        Err(super::client::FetchError::Refused { url, why }) => {
            Outcome::GiveUp(format!("{url}: {why}"))
        }
        Err(e) => Outcome::Retry {
            after: None,
            why: e.to_string(),
        },
    }
}

/// Delivers one round: catches up with the log, then sends every due
/// delivery. Returns the next due time, if any.
pub async fn round(fed: &Federation) -> Result<Option<u64>, StoreError> {
    let f = fed.clone();
    tokio::task::spawn_blocking(move || catch_up(&f))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??;
    loop {
        let f = fed.clone();
        let (batch, next) = tokio::task::spawn_blocking(move || due(&f, crate::clock::now_us()))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        if batch.is_empty() {
            return Ok(next);
        }
        let done: Vec<_> = futures_util::stream::iter(batch)
            .map(|(k, d)| async move {
                let outcome = attempt(fed, &d).await;
                if !matches!(outcome, Outcome::Delivered) {
                    tracing::info!(inbox = %d.inbox, ?outcome, "delivery failed");
                }
                (k, d, outcome)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let f = fed.clone();
        tokio::task::spawn_blocking(move || settle(&f, done))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))??;
    }
}

/// Runs the queue until the task is dropped: a round at start, then one
/// whenever the store commits, something is queued, or a retry is due.
pub async fn run(fed: Arc<Federation>) {
    let mut commits = fed.tables.store().subscribe();
    loop {
        let next = match round(&fed).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "the delivery queue failed; trying again in a minute");
                Some(crate::clock::now_us() + 60_000_000)
            }
        };
        let wait = next.map_or(Duration::from_secs(3600), |due| {
            Duration::from_micros(due.saturating_sub(crate::clock::now_us()))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = fed.wake.notified() => {}
            changed = commits.changed() => {
                if changed.is_err() {
                    // The store is closing: wake on time and on queueing only.
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fediverse::Reader;

    #[test]
    fn failures_back_off_honour_retry_after_and_give_up_on_gone() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let at = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/ok",
                axum::routing::post(|| async { axum::http::StatusCode::ACCEPTED }),
            )
            .route(
                "/busy",
                axum::routing::post(|| async {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "7200")],
                    )
                }),
            )
            .route(
                "/gone",
                axum::routing::post(|| async { axum::http::StatusCode::GONE }),
            );
        runtime.spawn(async move { axum::serve(listener, app).await });
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (fed, _dir) = crate::fediverse::effects::apply_tests::federation();
        let now = crate::clock::now_us();
        fed.tables
            .write(|txn| {
                for path in ["ok", "busy", "gone"] {
                    enqueue(txn, &format!("http://{at}/{path}"), b"{}", now)?;
                }
                enqueue(txn, &format!("http://{dead}/inbox"), b"{}", now)
            })
            .unwrap();
        runtime.block_on(round(&fed)).unwrap();
        let hosts: std::collections::HashMap<String, HostState> = Reader::new(fed.tables.store())
            .hosts()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(hosts[&at.to_string()].delivered, 1);
        assert_eq!(hosts[&dead.to_string()].state, HostHealth::Retrying);
        // Left: the busy one, not before its Retry-After, and the dead one
        // after the first backoff. The gone one was given up.
        let left: Vec<(u64, Delivery)> = fed
            .tables
            .reader()
            .read(|txn| {
                let table = txn.open_table(DELIVERIES)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    let due = u64::from_be_bytes(k.value()[..8].try_into().unwrap());
                    out.push((due, decode::<Delivery>(v.value()).unwrap()));
                }
                Ok(out)
            })
            .unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        for (due, d) in &left {
            assert_eq!(d.attempts, 1);
            let wait = Duration::from_micros(due - now);
            if d.inbox.ends_with("/busy") {
                assert!(wait >= Duration::from_secs(7200), "{wait:?}");
            } else {
                assert!(wait >= FIRST_RETRY && wait < FIRST_RETRY * 3, "{wait:?}");
            }
        }
    }
}

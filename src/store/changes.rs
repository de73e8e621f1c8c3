//! What a request asks of the mirror set (`interest-1`) and the address
//! book (`addresses-1`): each change and the row it leaves.

use super::tables::{AddressRow, AddressSource, MirrorReason};

/// A change to the mirror set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterestChange {
    /// Mirror the author (a followed author stays followed).
    Mirror,
    /// Stop mirroring (and following) the author.
    Unmirror,
    /// Follow (and so mirror) the author.
    Follow,
    /// Stop following; the mirror stays.
    Unfollow,
}

impl InterestChange {
    /// Why the author is mirrored after this change, given why it is now;
    /// None: not mirrored.
    pub(super) fn apply(self, now: Option<MirrorReason>) -> Option<MirrorReason> {
        match (self, now) {
            (InterestChange::Mirror, None) => Some(MirrorReason::Mirror),
            (InterestChange::Mirror, Some(r)) => Some(r),
            (InterestChange::Unmirror, _) => None,
            (InterestChange::Follow, _) => Some(MirrorReason::Follow),
            (InterestChange::Unfollow, Some(_)) => Some(MirrorReason::Mirror),
            (InterestChange::Unfollow, None) => None,
        }
    }
}

/// A change to a peer's address row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressUpdate {
    /// Learn (or replace) the address; a known peer keeps its history.
    Learn {
        /// `HOST:PORT`.
        host_port: String,
        /// Its gateway's origin, if known (a known one is kept otherwise).
        web: Option<String>,
        /// Where it came from.
        source: AddressSource,
    },
    /// A dial happened at `at_us`; `next_us` is when to dial again.
    Attempt {
        /// Whether the session succeeded.
        ok: bool,
        /// When.
        at_us: u64,
        /// When to try next.
        next_us: u64,
    },
    /// Forget the peer.
    Forget,
}

impl AddressUpdate {
    /// The row after this update; None to delete it (or leave it absent).
    pub(super) fn apply(self, row: Option<AddressRow>) -> Option<AddressRow> {
        match (self, row) {
            (
                AddressUpdate::Learn {
                    host_port,
                    web,
                    source,
                },
                Some(mut row),
            ) => {
                if row.host_port != host_port {
                    row.host_port = host_port;
                    row.failures = 0;
                    row.next_attempt_us = 0;
                }
                if web.is_some() {
                    row.web = web;
                }
                row.source = row.source.min(source as u8);
                Some(row)
            }
            (
                AddressUpdate::Learn {
                    host_port,
                    web,
                    source,
                },
                None,
            ) => Some(AddressRow {
                source: source as u8,
                failures: 0,
                last_attempt_us: 0,
                last_success_us: 0,
                next_attempt_us: 0,
                host_port,
                web,
            }),
            (AddressUpdate::Attempt { ok, at_us, next_us }, Some(mut row)) => {
                row.last_attempt_us = at_us;
                row.next_attempt_us = next_us;
                if ok {
                    row.last_success_us = at_us;
                    row.failures = 0;
                } else {
                    row.failures = row.failures.saturating_add(1);
                }
                Some(row)
            }
            (AddressUpdate::Attempt { .. }, None) | (AddressUpdate::Forget, _) => None,
        }
    }
}

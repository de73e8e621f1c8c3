//! The mesh: how a node finds peers and keeps its followed logs fresh.
//!
//! - [`address`]: `KEY@HOST:PORT`, a peer's node key and sync address.
//! - [`scheduler`]: dials known peers on a jittered interval, backs off
//!   from those that fail, falls back to HTTPS.
//! - [`backoff`]: when to try a peer again (jitter, doubling per failure).
//! - [`live`]: live connections: change notices and a session after each.
//! - [`exchange`]: peer exchange, "where do these authors' logs come from".
//! - [`check`]: "dial me back": a peer tries our addresses and tells its
//!   clock, for `capsule doctor`.
//! - [`peers`]: the live connections, both ways, that checks are asked on.
//! - [`listener`]: accepts peers' connections and hands each to its
//!   protocol (a session, or a live connection).
//! - [`well_known`]: follow by domain, `/.well-known/capsule`.
//! - [`pull`]: the HTTPS pull fallback from a peer's gateway.
//! - [`web_client`]: the small bounded HTTPS client both use.
//! - [`fetch`]: fetching the blobs (pictures) of held entries from peers.
//! - [`budget`]: how much of the disk other people's pictures may take.

pub mod address;
pub mod backoff;
pub mod budget;
pub mod check;
pub mod exchange;
pub mod fetch;
pub mod listener;
pub mod live;
pub mod peers;
pub mod pull;
pub mod scheduler;
pub mod web_client;
pub mod well_known;

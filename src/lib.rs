//! Capsule: a self-hosted, peer-to-peer microblog on signed, hash-chained logs.
//!
//! Every person's records form an append-only log of fixed-size, ed25519-signed
//! entries chained by blake3 hashes. This crate is organised as follows:
//!
//! - [`identity`]: the node's key pair, its textual form and its key file.
//! - [`log`]: the entry format (v1, 217 bytes), records, lipmaa skiplinks,
//!   certificate paths and verification (ZIP-215 signatures, links, payloads).
//! - [`store`]: the redb store, owned by one thread that batches writes.
//! - [`archive`]: the self-contained export format, its reader and writer.
//! - [`audit`]: verification of whole archives and stores, on every core.
//! - [`data_dir`]: where a node keeps its files.
//! - [`present`]: times and JSON of entries and records, shared by the CLI
//!   and the gateway.
//! - [`progress`]: progress bars for long work, shown only on a terminal.
//! - [`bench`]: the measurements behind `capsule bench`.
//! - [`sync`]: replication of logs between nodes over QUIC.
//! - [`gateway`]: the web gateway: pages, Atom feed, read-only log API.
//! - [`node`]: a running node: store, sync listener and gateway together.
//! - [`compose`]: what the owner publishes (posts, replies, deletions),
//!   checked and signed.
//! - [`admin`]: the local admin socket through which commands reach a
//!   running node.
//! - [`cli`]: the `capsule` command line.
#![deny(missing_docs)]

pub mod admin;
pub mod archive;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod compose;
pub mod config;
pub mod data_dir;
pub mod gateway;
pub mod identity;
pub mod log;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod passphrase;
pub mod present;
pub mod progress;
pub mod pull;
pub mod status;
pub mod store;
pub mod sync;
pub mod web_client;
pub mod well_known;

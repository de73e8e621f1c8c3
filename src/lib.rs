//! Capsule: a self-hosted, peer-to-peer microblog on signed, hash-chained logs.
//!
//! Every person's records form an append-only log of fixed-size, ed25519-signed
//! entries chained by blake3 hashes. Layers, from the top (each imports only
//! those below it; ARCHITECTURE.md draws them and follows one post through):
//!
//! - [`cli`]: the `capsule` command line, one file per group of commands,
//!   with the measurements behind `capsule bench`.
//! - [`node`]: a running node: configuration, the admin socket, status.
//! - [`fediverse`]: ActivityPub: the owner as an account Mastodon users
//!   follow and answer, and who follows them back; above the gateway,
//!   whose pages it reads.
//! - [`gateway`]: the web: pages, Atom feed, log API, owner login, HTTPS.
//! - [`mesh`]: whom a node dials and keeps live, peer exchange, follow by
//!   domain, the HTTPS pull fallback.
//! - [`sync`]: one reconciliation session between two stores, over QUIC.
//! - [`archive`]: the export format and verification of archives and stores.
//! - [`store`]: the redb store, owned by one writer thread; the owner's
//!   checked writes.
//! - [`log`]: entries, records, frames, skiplinks, certificates, verification.
//! - [`picture`]: what an attached image becomes before it is signed
//!   (recognised, bounded, turned upright, scaled, stripped of metadata).
//! - [`identity`], [`data_dir`], [`clock`], [`progress`], [`allocator`]: the
//!   node's key, its files, the wall clock, progress bars, and the memory
//!   allocator's tuning.
#![deny(missing_docs)]

pub mod allocator;
pub mod archive;
pub mod cli;
pub mod clock;
pub mod data_dir;
pub mod fediverse;
pub mod gateway;
pub mod identity;
pub mod log;
pub mod mesh;
pub mod node;
pub mod picture;
pub mod progress;
pub mod store;
pub mod sync;

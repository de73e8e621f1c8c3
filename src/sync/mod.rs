//! Replication: two nodes bring each other's copies of the logs they both
//! want up to date, over QUIC (`capsule/1`).
//!
//! - [`range`]: range-based set reconciliation of log heads (pure).
//! - [`protocol`]: one session as a state machine, messages in, actions out
//!   (pure).
//! - [`wire`]: the messages and their framing.
//! - [`session`]: drives a session against a store: snapshots, serving,
//!   verifying and storing received entries.
//! - [`transport`]: QUIC endpoints with mutual authentication by node key.
//! - [`network`]: sessions over QUIC connections: dial once, or listen.

pub mod live;
pub mod network;
pub mod protocol;
pub mod range;
pub mod session;
pub mod transport;
pub mod wire;

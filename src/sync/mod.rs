//! Replication: one session brings two stores' copies of the logs they
//! both want up to date, over QUIC (`capsule/1`).
//!
//! - [`range`]: range-based set reconciliation of log heads (pure).
//! - [`protocol`]: one session as a state machine, messages in, actions out
//!   (pure).
//! - [`wire`]: the messages and their framing.
//! - [`session`]: a session against a store: snapshots, serving, verifying
//!   and storing received entries; two sessions in lockstep in memory.
//! - [`transport`]: QUIC endpoints with mutual authentication by node key,
//!   length-prefixed frames, close codes.
//! - [`network`]: a session over a QUIC connection: dial once, or answer.
//! - `pipeline`: its tasks that serve, verify and store entries.

pub mod network;
mod pipeline;
pub mod protocol;
pub mod range;
pub mod session;
pub mod transport;
pub mod wire;

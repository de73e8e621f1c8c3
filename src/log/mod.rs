//! The log: what one person publishes, as a chain of signed entries.
//!
//! - [`builder`]: signs successive entries of a log in memory.
//! - [`entry`]: the 217-byte entry format v1 (frozen) and its encoder/decoder.
//! - [`frame`]: one entry and its payload as archives and sync carry them.
//! - [`present`]: entries and records as people and programs see them
//!   (times as text, JSON).
//! - [`record`]: the payload of an entry, a versioned postcard enum.
//! - [`lipmaa`]: the skiplink target of each sequence number.
//! - [`certificate`]: O(log n) paths linking an entry to its log's head.
//! - [`verify`]: signature (ZIP-215), link and payload checks, single and batched.

pub mod builder;
pub mod certificate;
pub mod entry;
pub mod frame;
pub mod lipmaa;
pub mod present;
pub mod record;
pub mod verify;

pub use entry::{Entry, EntryId};

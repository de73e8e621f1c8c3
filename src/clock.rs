//! The wall clock, read in one place: the modules that need the time
//! (timestamps of the owner's entries, the dial scheduler, sessions of the
//! web gateway) ask here, and the pure layers (log/, sync/) take it as an
//! argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in µs since the Unix epoch (0 for a clock set before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

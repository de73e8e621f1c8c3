//! When to try a peer again: a jittered interval, doubled per failure in a
//! row up to an hour. Pure: the caller passes the randomness.

use std::time::Duration;

use rand_core::RngCore;

/// The longest wait before dialling a peer that keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `d` scaled by a random factor in [0.75, 1.25) drawn from `rng`: peers
/// that started together drift apart instead of dialling in lockstep.
pub fn jitter(d: Duration, rng: &mut impl RngCore) -> Duration {
    let r = (rng.next_u32() as f64) / (u32::MAX as f64 + 1.0);
    d.mul_f64(0.75 + 0.5 * r)
}

/// The wait before the next dial of a peer that has failed `failures` times
/// in a row: the interval, doubled per failure, at most [`MAX_BACKOFF`].
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let i = Duration::from_secs(60);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), 2 * i);
        assert_eq!(backoff(i, 5), 32 * i);
        assert_eq!(backoff(i, 6), MAX_BACKOFF);
        assert_eq!(backoff(i, u32::MAX), MAX_BACKOFF);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..1000 {
            let j = jitter(i, &mut rng);
            assert!(j >= i.mul_f64(0.75) && j < i.mul_f64(1.25), "{j:?}");
        }
    }
}

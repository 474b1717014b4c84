//! Exponential backoff with jitter, so a thousand sites that lost the control plane at the
//! same moment do not all come back at the same moment.
//!
//! The randomness comes in as an argument: the agent passes the thread's generator, the
//! simulator (`atoll-sim`) a seeded one, so both run this same rule.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            attempt: 0,
        }
    }

    /// The backoff the agent's sync and reporter loops use: 1 s doubling up to 60 s.
    pub fn agent() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// The next wait: a random time between half and all of `first * 2^attempt`, capped at
    /// `max`.
    pub fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rng.gen_range(millis / 2..=millis))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How long to wait when the control plane answered 503 with `Retry-After`: that long and up
/// to as long again, so that the sites it turned away at the same moment do not come back at
/// the same moment.
pub fn after_busy(retry_after: Duration, rng: &mut impl Rng) -> Duration {
    let millis = u64::try_from(retry_after.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rng.gen_range(millis..=millis.saturating_mul(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_answer_is_honoured_with_jitter() {
        for _ in 0..100 {
            let wait = after_busy(Duration::from_secs(2), &mut rand::thread_rng());
            assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4));
        }
    }

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let rng = &mut rand::thread_rng();
        let mut b = Backoff::agent();
        let waits: Vec<Duration> = (0..10).map(|_| b.next(rng)).collect();
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_secs(1));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)));
        assert!(waits[9] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next(rng) <= Duration::from_secs(1));
    }
}

//! Whether this replica holds a lease, from the answers to its attempts to take or renew it.
//!
//! The decision that shaped it: the replica judges its hold by its own monotonic clock, from
//! the moment it *sent* the last successful attempt plus the ttl. The store's expiry is the
//! sender's wall clock at that moment plus the same ttl, so the replica stops believing it
//! holds the lease no later than any other replica can take it over (clocks agreeing), and it
//! stops at once, without waiting for an answer: a renewal that fails or hangs keeps the hold
//! only until that deadline. Fencing in the store covers what clocks cannot.
//!
//! Times are offsets on one monotonic clock the caller chooses (time since it started).

use std::time::Duration;

/// What this replica knows of its hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    #[default]
    NotHeld,
    /// Held with `fence` until `until`, unless renewed.
    Held { fence: u64, until: Duration },
}

/// The store's answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Taken or renewed, with this fence.
    Acquired(u64),
    /// Another replica holds it.
    Refused,
    /// The store did not answer (an error, a timeout).
    Failed,
}

/// What changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing anyone needs to hear of (a renewal, a refusal while not holding).
    None,
    /// The lease is this replica's now, with this fence.
    Took(u64),
    /// Not this replica's any more.
    Lost(Why),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The store says another replica holds it (or a newer fence).
    TakenOver,
    /// No renewal succeeded within the ttl.
    Expired,
}

impl Hold {
    /// The fence held at `now`, if any: the one question a loop asks before each step.
    pub fn fence_at(self, now: Duration) -> Option<u64> {
        match self {
            Hold::Held { fence, until } if now < until => Some(fence),
            _ => None,
        }
    }

    /// The hold after the answer to an attempt sent at `sent` and answered at `now`.
    pub fn answered(
        self,
        answer: Answer,
        sent: Duration,
        now: Duration,
        ttl: Duration,
    ) -> (Hold, Change) {
        let before = self.fence_at(now);
        match answer {
            Answer::Acquired(fence) => {
                let hold = Hold::Held {
                    fence,
                    until: sent + ttl,
                };
                if hold.fence_at(now).is_none() {
                    // Answered after it would already have expired: not held, and the next
                    // attempt renews it if no one took it.
                    return (
                        Hold::NotHeld,
                        before.map_or(Change::None, |_| Change::Lost(Why::Expired)),
                    );
                }
                let change = if before == Some(fence) {
                    Change::None
                } else {
                    Change::Took(fence)
                };
                (hold, change)
            }
            Answer::Refused => (
                Hold::NotHeld,
                if before.is_some() || matches!(self, Hold::Held { .. }) {
                    Change::Lost(Why::TakenOver)
                } else {
                    Change::None
                },
            ),
            Answer::Failed => self.passed(now),
        }
    }

    /// The hold as time passes: one not renewed by its deadline is lost.
    pub fn passed(self, now: Duration) -> (Hold, Change) {
        match self {
            Hold::Held { until, .. } if now >= until => (Hold::NotHeld, Change::Lost(Why::Expired)),
            hold => (hold, Change::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(5);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_take_a_renewal_and_a_takeover() {
        let (hold, change) = Hold::NotHeld.answered(Answer::Acquired(3), s(0), s(0), TTL);
        assert_eq!(change, Change::Took(3));
        assert_eq!(hold.fence_at(s(4)), Some(3));
        assert_eq!(
            hold.fence_at(s(5)),
            None,
            "not renewed: stops at the deadline"
        );
        let (hold, change) = hold.answered(Answer::Acquired(3), s(1), s(2), TTL);
        assert_eq!(change, Change::None, "a renewal is no news");
        assert_eq!(hold.fence_at(s(5)), Some(3));
        let (hold, change) = hold.answered(Answer::Refused, s(2), s(2), TTL);
        assert_eq!(
            (hold, change),
            (Hold::NotHeld, Change::Lost(Why::TakenOver))
        );
        let (_, change) = hold.answered(Answer::Refused, s(3), s(3), TTL);
        assert_eq!(change, Change::None, "still not held: said once");
    }

    #[test]
    fn failed_renewals_keep_the_hold_only_until_its_deadline() {
        let (hold, _) = Hold::NotHeld.answered(Answer::Acquired(1), s(0), s(0), TTL);
        let (hold, change) = hold.answered(Answer::Failed, s(1), s(4), TTL);
        assert_eq!((hold.fence_at(s(4)), change), (Some(1), Change::None));
        let (hold, change) = hold.answered(Answer::Failed, s(4), s(5), TTL);
        assert_eq!((hold, change), (Hold::NotHeld, Change::Lost(Why::Expired)));
    }

    #[test]
    fn an_answer_that_comes_after_its_deadline_is_no_hold() {
        let (hold, change) = Hold::NotHeld.answered(Answer::Acquired(1), s(0), s(6), TTL);
        assert_eq!((hold, change), (Hold::NotHeld, Change::None));
    }

    #[test]
    fn a_new_fence_is_a_new_take() {
        let (hold, _) = Hold::NotHeld.answered(Answer::Acquired(1), s(0), s(0), TTL);
        let (hold, change) = hold.answered(Answer::Acquired(2), s(1), s(1), TTL);
        assert_eq!((hold.fence_at(s(1)), change), (Some(2), Change::Took(2)));
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            (1u64..4).prop_map(Answer::Acquired),
            Just(Answer::Refused),
            Just(Answer::Failed),
        ]
    }

    proptest! {
        /// Whatever the answers and delays: the hold never outlives the ttl from the last
        /// successful attempt's sending, a refusal ends it, and the log says every change of
        /// the fence held, and nothing else.
        #[test]
        fn the_hold_never_outlives_its_last_success(
            steps in proptest::collection::vec((answer(), 0u64..3000, 0u64..7000), 1..40),
        ) {
            let ttl = Duration::from_millis(5000);
            let mut hold = Hold::NotHeld;
            let mut now = Duration::ZERO;
            let mut last_success: Option<Duration> = None;
            for (answer, gap, latency) in steps {
                let sent = now + Duration::from_millis(gap);
                now = sent + Duration::from_millis(latency);
                let before = hold.fence_at(now);
                let (next, change) = hold.answered(answer, sent, now, ttl);
                if let Answer::Acquired(_) = answer {
                    last_success = Some(sent);
                }
                let after = next.fence_at(now);
                if after.is_some() {
                    prop_assert!(now < last_success.unwrap() + ttl);
                    prop_assert!(matches!(answer, Answer::Acquired(_) | Answer::Failed));
                }
                if answer == Answer::Refused {
                    prop_assert_eq!(after, None);
                }
                match change {
                    Change::Took(f) => prop_assert!(after == Some(f) && before != Some(f)),
                    Change::Lost(_) => prop_assert!(after.is_none()),
                    Change::None => prop_assert!(after.is_none() || after == before),
                }
                if after.is_some() && after != before {
                    prop_assert!(matches!(change, Change::Took(_)));
                }
                hold = next;
            }
        }
    }
}

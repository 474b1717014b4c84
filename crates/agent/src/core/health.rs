//! Health checks' bookkeeping: when a replica's next probe is due, and what a run of probe
//! results means.
//!
//! One success makes a replica healthy; `failures` failures in a row make it unhealthy;
//! failures within the start period count only once the replica has passed a check, so a slow
//! start is not a failure. The verdict goes into the replica's status, where the control plane
//! reads it (rollouts gate on it); the agent does not restart a replica for failing its check.

use std::time::Duration;

use atoll_api::agent::ReplicaHealth;
use atoll_api::manifest::Health;

/// The probe history of one container (a new container starts a new history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    pub container_id: String,
    /// When the container started.
    pub started_ms: u64,
    pub last_probe_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub passed_once: bool,
    pub verdict: ReplicaHealth,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Tracker {
    pub fn new(container_id: &str, started_ms: u64) -> Tracker {
        Tracker {
            container_id: container_id.to_owned(),
            started_ms,
            last_probe_ms: None,
            consecutive_failures: 0,
            passed_once: false,
            verdict: ReplicaHealth::Starting,
        }
    }

    /// When the next probe should run.
    pub fn next_probe_ms(&self, health: &Health) -> u64 {
        match self.last_probe_ms {
            None => self.started_ms,
            Some(last) => last.saturating_add(ms(health.interval.0).max(100)),
        }
    }

    /// Takes one probe's result; returns true when the verdict changed.
    pub fn record(&mut self, health: &Health, result: Result<(), String>, now_ms: u64) -> bool {
        self.last_probe_ms = Some(now_ms);
        let before = self.verdict.clone();
        match result {
            Ok(()) => {
                self.consecutive_failures = 0;
                self.passed_once = true;
                self.verdict = ReplicaHealth::Healthy;
            }
            Err(reason) => {
                let starting = !self.passed_once
                    && now_ms < self.started_ms.saturating_add(ms(health.start_period.0));
                if !starting {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    if self.consecutive_failures >= health.failures.max(1) {
                        self.verdict = ReplicaHealth::Unhealthy { reason };
                    }
                }
            }
        }
        self.verdict != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_spec::application::HealthCheck;
    use atoll_spec::units::Span;

    fn health(failures: u32, start_period_s: u64) -> Health {
        Health {
            check: HealthCheck::Tcp { port: 80 },
            interval: Span::from_secs(5),
            timeout: Span::from_secs(1),
            failures,
            start_period: Span::from_secs(start_period_s),
        }
    }

    #[test]
    fn one_success_is_healthy_and_the_threshold_makes_unhealthy() {
        let h = health(3, 0);
        let mut t = Tracker::new("c", 1_000);
        assert_eq!(t.next_probe_ms(&h), 1_000, "the first probe runs at once");
        assert!(t.record(&h, Ok(()), 1_000));
        assert_eq!(t.verdict, ReplicaHealth::Healthy);
        assert_eq!(t.next_probe_ms(&h), 6_000);
        assert!(!t.record(&h, Err("refused".into()), 6_000));
        assert!(!t.record(&h, Err("refused".into()), 11_000));
        assert!(t.record(&h, Err("refused".into()), 16_000));
        assert_eq!(
            t.verdict,
            ReplicaHealth::Unhealthy {
                reason: "refused".into()
            }
        );
        assert!(t.record(&h, Ok(()), 21_000), "one success heals");
        assert_eq!(t.consecutive_failures, 0);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_pass() {
        let h = health(1, 30);
        let mut t = Tracker::new("c", 0);
        for now in [0, 5_000, 10_000, 25_000] {
            assert!(!t.record(&h, Err("not yet".into()), now));
            assert_eq!(t.verdict, ReplicaHealth::Starting);
        }
        assert!(
            t.record(&h, Err("still not".into()), 31_000),
            "past the start period a failure counts"
        );
        let mut t = Tracker::new("c", 0);
        t.record(&h, Ok(()), 1_000);
        assert!(
            t.record(&h, Err("down".into()), 6_000),
            "after a pass, failures count even in the start period"
        );
    }
}

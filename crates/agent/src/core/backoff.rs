//! When to try again: the restart delays of crashing containers, and the [`Memory`] of past
//! restarts, failed creations and failed pulls that the shell keeps between reconcile passes.
//!
//! A container that cannot be created (the runtime refuses its spec, a bind that cannot be
//! made) waits as a crashing one does, with the same delays: a failure that repeats at once
//! repeats for ever, and retrying it every pass only floods the reports.
//!
//! Containers are created without a runtime restart policy: the agent restarts them itself, so
//! that one place decides, the delays grow the same way on Docker and Podman, and the status can
//! tell a crash loop from a container that is merely starting. The plan reads the memory; only the
//! shell writes it, because only the shell knows when it actually started something or when a
//! pull actually failed. Time is milliseconds since the Unix epoch, passed in as `now_ms`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A replica that has run this long without exiting is healthy again: the shell then forgets
/// its restarts ([`Memory::forget`]), so its next crash is restarted at once.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The longest wait between two restarts of a crashing container.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// A replica restarted more often than this without becoming stable is reported failed (it is
/// still restarted, at [`MAX_RESTART_DELAY`]: nobody is on site to do it by hand).
pub const FAILED_AFTER_RESTARTS: u32 = 5;

/// How long to wait before restart number `restarts_so_far + 1`: the first restart at once,
/// then 1 s, 2 s, 4 s, ... up to [`MAX_RESTART_DELAY`].
pub fn restart_delay(restarts_so_far: u32) -> Duration {
    let Some(exponent) = restarts_so_far.checked_sub(1) else {
        return Duration::ZERO;
    };
    // 2^6 s is already past the cap; stopping there keeps the shift from overflowing.
    let secs = 1u64 << exponent.min(6);
    Duration::from_secs(secs).min(MAX_RESTART_DELAY)
}

/// Whether a container that started at `started_at_ms` has now run for [`STABLE_AFTER`].
pub fn is_stable(started_at_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(started_at_ms) >= millis(STABLE_AFTER)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the shell remembers between passes. Keyed by container name (which does not change when
/// a replica's spec does) and by image. Serializable so the shell may persist it, though losing
/// it only means one early restart or pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub restarts: BTreeMap<String, RestartInfo>,
    /// No pull of the image before this time (after a failed pull).
    pub pull_not_before_ms: BTreeMap<String, u64>,
    /// Containers whose creation failed since one was last created, by container name.
    #[serde(default)]
    pub create_failures: BTreeMap<String, CreateFailure>,
}

/// The failed creations of one container since it was last created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFailure {
    pub count: u32,
    /// No creation before this time.
    pub not_before_ms: u64,
    /// What the last try said.
    pub error: String,
}

/// The restarts of one container since it last was stable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartInfo {
    pub count: u32,
    /// No restart before this time.
    pub not_before_ms: u64,
}

impl Memory {
    /// Records that the shell (re)started the stopped container `name` at `now_ms` (after a
    /// `Start` action): one more restart, and the next one waits [`restart_delay`] from now.
    pub fn record_restart(&mut self, name: &str, now_ms: u64) {
        let info = self.restarts.entry(name.to_owned()).or_default();
        info.count = info.count.saturating_add(1);
        info.not_before_ms = now_ms.saturating_add(millis(restart_delay(info.count)));
    }

    /// Forgets the restarts of `name`: when it became stable, or was created, replaced or
    /// removed (a new container deserves a fresh start).
    pub fn forget(&mut self, name: &str) {
        self.restarts.remove(name);
    }

    /// Records that creating `name` failed at `now_ms` with `error`: the next try waits as the
    /// next restart of a crashing container would, 1 s doubling to [`MAX_RESTART_DELAY`].
    pub fn record_failed_create(&mut self, name: &str, now_ms: u64, error: String) {
        let failure = self.create_failures.entry(name.to_owned()).or_default();
        failure.count = failure.count.saturating_add(1);
        failure.not_before_ms = now_ms.saturating_add(millis(restart_delay(failure.count)));
        failure.error = error;
    }

    /// Forgets the failed creations of `name`: it was created, or is no longer wanted.
    pub fn created(&mut self, name: &str) {
        self.create_failures.remove(name);
    }

    /// The earliest time a new try at creating `name` may go ahead (0: at once).
    pub fn create_not_before_ms(&self, name: &str) -> u64 {
        self.create_failures
            .get(name)
            .map_or(0, |f| f.not_before_ms)
    }

    /// How many times `name` was restarted since it last was stable.
    pub fn restart_count(&self, name: &str) -> u32 {
        self.restarts.get(name).map_or(0, |r| r.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate() {
        assert_eq!(restart_delay(0), Duration::ZERO);
    }

    #[test]
    fn restart_delays_double_from_one_second() {
        let secs: Vec<u64> = (1..=7).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60]);
    }

    #[test]
    fn restart_delay_is_capped_at_a_minute_without_overflow() {
        for n in [7, 8, 31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(restart_delay(n), MAX_RESTART_DELAY, "n = {n}");
        }
    }

    #[test]
    fn restart_delay_never_shrinks() {
        let delays: Vec<Duration> = (0..100).map(restart_delay).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn stable_after_a_minute() {
        assert_eq!(STABLE_AFTER, Duration::from_secs(60));
        assert!(!is_stable(1_000, 1_000));
        assert!(!is_stable(1_000, 60_999));
        assert!(is_stable(1_000, 61_000));
        assert!(is_stable(0, u64::MAX));
    }

    #[test]
    fn a_start_time_in_the_future_is_not_stable() {
        assert!(!is_stable(10_000, 5_000));
    }

    #[test]
    fn record_restart_counts_and_sets_the_next_delay() {
        let mut m = Memory::default();
        m.record_restart("c", 10_000);
        assert_eq!(
            m.restarts["c"],
            RestartInfo {
                count: 1,
                not_before_ms: 11_000
            }
        );
        m.record_restart("c", 11_000);
        assert_eq!(
            m.restarts["c"],
            RestartInfo {
                count: 2,
                not_before_ms: 13_000
            }
        );
        m.record_restart("c", 13_000);
        assert_eq!(m.restarts["c"].not_before_ms, 17_000);
        assert_eq!(m.restart_count("c"), 3);
    }

    #[test]
    fn record_restart_saturates() {
        let mut m = Memory::default();
        m.restarts.insert(
            "c".into(),
            RestartInfo {
                count: u32::MAX,
                not_before_ms: 0,
            },
        );
        m.record_restart("c", u64::MAX - 1);
        assert_eq!(
            m.restarts["c"],
            RestartInfo {
                count: u32::MAX,
                not_before_ms: u64::MAX
            }
        );
    }

    #[test]
    fn forget_resets_the_count() {
        let mut m = Memory::default();
        m.record_restart("c", 0);
        m.record_restart("d", 0);
        m.forget("c");
        assert_eq!(m.restart_count("c"), 0);
        assert_eq!(m.restart_count("d"), 1);
    }

    #[test]
    fn a_create_that_keeps_failing_waits_longer_each_time_up_to_a_minute() {
        let mut m = Memory::default();
        assert_eq!(m.create_not_before_ms("c"), 0, "a first try goes at once");
        let mut now = 10_000;
        let mut waits = Vec::new();
        for n in 0..9 {
            m.record_failed_create("c", now, format!("refused {n}"));
            waits.push((m.create_not_before_ms("c") - now) / 1_000);
            now = m.create_not_before_ms("c");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(m.create_failures["c"].count, 9);
        assert_eq!(m.create_failures["c"].error, "refused 8");
        m.created("c");
        assert_eq!(m.create_not_before_ms("c"), 0);
    }

    #[test]
    fn failed_creates_saturate() {
        let mut m = Memory::default();
        m.create_failures.insert(
            "c".into(),
            CreateFailure {
                count: u32::MAX,
                not_before_ms: 0,
                error: String::new(),
            },
        );
        m.record_failed_create("c", u64::MAX - 1, "e".into());
        assert_eq!(m.create_failures["c"].count, u32::MAX);
        assert_eq!(m.create_not_before_ms("c"), u64::MAX);
    }

    #[test]
    fn memory_round_trips_through_json() {
        let mut m = Memory::default();
        m.record_restart("c", 5);
        m.pull_not_before_ms.insert("nginx:1".into(), 99);
        m.record_failed_create("d", 5, "refused".into());
        let text = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Memory>(&text).ok(), Some(m));
    }
}

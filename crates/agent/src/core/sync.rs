//! The rules of following the manifest: which revision may replace the applied one, and how
//! long the sync loop pauses after each long-poll. The shell's `sync` and `manifest` modules
//! do the IO around them; the simulator (`atoll-sim`) runs these same rules for many sites.

use std::time::Duration;

use rand::Rng;

use super::retry::Backoff;

/// The least pause after the control plane refused the request itself (a 4xx): such an answer
/// will not change within a second, and retrying faster only adds load.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(10);

/// A manifest may replace the applied one only if its revision is newer: an equal or older one
/// is a replay or a stale answer, and applying it would take the site back in time.
pub fn check_revision(revision: u64, applied: u64) -> Result<(), String> {
    if revision <= applied {
        return Err(format!(
            "the manifest's revision {revision} is not newer than the applied revision {applied} (replayed or stale)"
        ));
    }
    Ok(())
}

/// How one long-poll ended, as far as the sync loop's pacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Nothing newer within the wait (304).
    NotModified,
    /// A newer manifest, verified, kept and handed over.
    Accepted,
    /// A manifest this agent refused (signature, site or revision).
    Refused,
    /// A newer manifest, verified, that this host could not keep on disk (a full or failing
    /// disk), so it is not applied. The next poll gets the same answer at once, and the disk
    /// is not freed by asking faster: the pause grows as after a failure.
    NotKept,
    /// No answer: connection failed, timed out, or the control plane failed (5xx, 429).
    Unreachable,
    /// The control plane is busy (503): try again after `Retry-After`, with jitter.
    Busy(Duration),
    /// The control plane refused the request (4xx other than 429).
    Rejected,
}

/// The pause before the next long-poll, if any, updating the backoff. An answer resets the
/// backoff and the next poll goes at once; a refused manifest pauses briefly so a bad answer
/// does not spin; failures back off with jitter, so sites that lost the control plane together
/// spread out when it returns.
pub fn pause_after(polled: Polled, backoff: &mut Backoff, rng: &mut impl Rng) -> Option<Duration> {
    match polled {
        Polled::NotModified | Polled::Accepted => {
            backoff.reset();
            None
        }
        Polled::Refused => {
            backoff.reset();
            Some(backoff.next(rng))
        }
        Polled::Unreachable | Polled::NotKept => Some(backoff.next(rng)),
        // An answer, even a busy one, says the control plane is there: the backoff starts over.
        Polled::Busy(retry_after) => {
            backoff.reset();
            Some(super::retry::after_busy(retry_after, rng))
        }
        Polled::Rejected => Some(backoff.next(rng).max(REFUSED_PAUSE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_control_plane_is_waited_out_as_it_asked_and_the_backoff_starts_over() {
        let rng = &mut rand::thread_rng();
        let mut backoff = Backoff::agent();
        for _ in 0..5 {
            pause_after(Polled::Unreachable, &mut backoff, rng);
        }
        let pause = pause_after(Polled::Busy(Duration::from_secs(3)), &mut backoff, rng).unwrap();
        assert!(pause >= Duration::from_secs(3) && pause <= Duration::from_secs(6));
        let next = pause_after(Polled::Unreachable, &mut backoff, rng).unwrap();
        assert!(next <= Duration::from_secs(1), "{next:?}");
    }

    #[test]
    fn a_manifest_that_cannot_be_kept_is_asked_for_again_later_and_later() {
        let rng = &mut rand::thread_rng();
        let mut b = Backoff::agent();
        let pauses: Vec<Duration> = (0..8)
            .map(|_| pause_after(Polled::NotKept, &mut b, rng).unwrap())
            .collect();
        let total: Duration = pauses[..4].iter().sum();
        assert!(total >= Duration::from_millis(7_500), "{pauses:?}");
        assert!(pauses[7] >= Duration::from_secs(30), "{pauses:?}");
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(60)));
        assert_eq!(pause_after(Polled::Accepted, &mut b, rng), None);
        assert!(pause_after(Polled::NotKept, &mut b, rng).unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn only_a_newer_revision_replaces_the_applied_one() {
        assert!(check_revision(3, 2).is_ok());
        assert!(check_revision(1, 0).is_ok());
        assert!(check_revision(2, 2).unwrap_err().contains("not newer"));
        assert!(check_revision(1, 2).unwrap_err().contains("replayed"));
    }

    #[test]
    fn answers_poll_again_at_once_and_failures_back_off() {
        let rng = &mut rand::thread_rng();
        let mut b = Backoff::agent();
        for _ in 0..5 {
            assert!(pause_after(Polled::Unreachable, &mut b, rng).is_some());
        }
        assert!(pause_after(Polled::Unreachable, &mut b, rng).unwrap() >= Duration::from_secs(16));
        assert_eq!(pause_after(Polled::NotModified, &mut b, rng), None);
        assert!(pause_after(Polled::Unreachable, &mut b, rng).unwrap() <= Duration::from_secs(1));
        assert_eq!(pause_after(Polled::Accepted, &mut b, rng), None);
        assert!(pause_after(Polled::Refused, &mut b, rng).unwrap() <= Duration::from_secs(1));
        assert!(pause_after(Polled::Rejected, &mut b, rng).unwrap() >= REFUSED_PAUSE);
    }
}

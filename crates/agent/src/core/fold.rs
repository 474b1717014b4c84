//! Folding repeated events: the same event (same kind, same words) happening again within
//! [`FOLD_WINDOW`] of the last time it was sent is held and counted, and the repeats go up as
//! one event with their count when the window ends.
//!
//! A failure that repeats (a container the runtime refuses to create, a manifest that cannot
//! be kept) says nothing new the second time; sending every repeat fills the outbox, the
//! control plane's store and `atoll get events` with copies that hide everything else. The first
//! occurrence still goes at once, so a new problem is seen without delay; after that at most one
//! event per window.
//!
//! The decision that shaped it: nothing held may be lost when the agent is killed. A first
//! attempt kept the held repeats only in memory and lost them to a kill inside the window. So
//! the held repeats are a value the shell persists after every change ([`Folder::held`], the
//! outbox's `folded.json`), and they leave all together ([`Folder::take`]: every held event,
//! whichever window ended), so that handing them over is one atomic rename of that file into
//! the outbox. After a restart the persisted repeats are queued at once and the folder starts
//! empty: a repeat is then sent at once again, one event more, never one fewer.
//!
//! Time is milliseconds since the Unix epoch, passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_api::agent::AgentEvent;

/// How long after an event was sent its repeats are folded into one.
pub const FOLD_WINDOW: Duration = Duration::from_secs(30);

/// Distinct events followed at once: past this, a new kind of event is sent without being
/// followed, so a flood of distinct messages cannot grow the agent's memory or its fold file.
pub const MAX_FOLLOWED: usize = 1_000;

/// The events sent within the last window, and the repeats held since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    followed: BTreeMap<(String, String), Followed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Followed {
    /// When it was last sent.
    sent_ms: u64,
    /// Repeats since, not sent yet.
    held: u32,
    /// When the newest of them happened.
    last_at: String,
}

fn window_ms() -> u64 {
    u64::try_from(FOLD_WINDOW.as_millis()).unwrap_or(u64::MAX)
}

impl Folder {
    /// An event that happened now: `Some` to send at once, or `None` when it is held as a
    /// repeat (then [`Folder::held`] changed, and the shell persists it before going on).
    pub fn add(&mut self, event: AgentEvent, now_ms: u64) -> Option<AgentEvent> {
        let key = (event.kind.clone(), event.message.clone());
        let window = window_ms();
        let times = event.count.unwrap_or(1);
        match self.followed.get_mut(&key) {
            // Held until taken, even past its window: the shell takes what is due first, and
            // an occurrence must not leave beside repeats that wait in the fold file.
            Some(f) if f.held > 0 || now_ms < f.sent_ms.saturating_add(window) => {
                f.held = f.held.saturating_add(times);
                f.last_at = event.at;
                None
            }
            Some(f) => {
                f.sent_ms = now_ms;
                Some(event)
            }
            None => {
                if self.followed.len() < MAX_FOLLOWED {
                    self.followed.insert(
                        key,
                        Followed {
                            sent_ms: now_ms,
                            held: 0,
                            last_at: event.at.clone(),
                        },
                    );
                }
                Some(event)
            }
        }
    }

    /// Whether the window of a held repeat has ended, so [`Folder::take`] should be called.
    pub fn due(&self, now_ms: u64) -> bool {
        self.next_due_ms().is_some_and(|at| at <= now_ms)
    }

    /// When [`Folder::due`] next turns true, if anything is held.
    pub fn next_due_ms(&self) -> Option<u64> {
        let window = window_ms();
        self.followed
            .values()
            .filter(|f| f.held > 0)
            .map(|f| f.sent_ms.saturating_add(window))
            .min()
    }

    /// Every held repeat, one event each with its count (none for a single repeat), dated
    /// when the last of them happened: exactly what the shell keeps on disk.
    pub fn held(&self) -> Vec<AgentEvent> {
        self.followed
            .iter()
            .filter(|(_, f)| f.held > 0)
            .map(|((kind, message), f)| AgentEvent {
                at: f.last_at.clone(),
                kind: kind.clone(),
                message: message.clone(),
                count: (f.held > 1).then_some(f.held),
            })
            .collect()
    }

    /// Takes every held repeat (as [`Folder::held`] gives them) to be sent now: each starts a
    /// new window, and events quiet for a whole window are forgotten, so their next occurrence
    /// goes at once.
    pub fn take(&mut self, now_ms: u64) -> Vec<AgentEvent> {
        let taken = self.held();
        let window = window_ms();
        self.followed.retain(|_, f| {
            if f.held > 0 {
                f.held = 0;
                f.sent_ms = now_ms;
                true
            } else {
                now_ms < f.sent_ms.saturating_add(window)
            }
        });
        taken
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const W: u64 = 30_000;

    fn event(message: &str, at: u64) -> AgentEvent {
        AgentEvent {
            at: format!("t{at}"),
            kind: "container".into(),
            message: message.into(),
            count: None,
        }
    }

    #[test]
    fn the_first_occurrence_goes_at_once() {
        let mut f = Folder::default();
        assert_eq!(
            f.add(event("cannot create web", 0), 0),
            Some(event("cannot create web", 0))
        );
        assert_eq!(f.next_due_ms(), None, "nothing held");
        assert!(f.held().is_empty());
    }

    #[test]
    fn repeats_within_the_window_fold_into_one_event_with_their_count() {
        let mut f = Folder::default();
        f.add(event("cannot create web", 0), 0);
        for t in [1_000, 3_000, 7_000, 15_000] {
            assert_eq!(f.add(event("cannot create web", t), t), None);
        }
        assert_eq!(f.next_due_ms(), Some(W));
        assert!(!f.due(W - 1));
        assert!(f.due(W));
        let folded = AgentEvent {
            count: Some(4),
            ..event("cannot create web", 15_000)
        };
        assert_eq!(
            f.held(),
            std::slice::from_ref(&folded),
            "what is kept on disk"
        );
        assert_eq!(f.take(W), [folded]);
        assert_eq!(f.take(W), [], "said once");
        assert!(f.held().is_empty());
    }

    #[test]
    fn a_single_repeat_has_no_count() {
        let mut f = Folder::default();
        f.add(event("e", 0), 0);
        f.add(event("e", 10), 10);
        assert_eq!(f.take(W), [event("e", 10)]);
    }

    #[test]
    fn other_events_are_not_held_by_a_repeating_one() {
        let mut f = Folder::default();
        f.add(event("cannot create web", 0), 0);
        assert_eq!(
            f.add(event("created web", 5), 5),
            Some(event("created web", 5))
        );
        let mut other = event("cannot create web", 6);
        other.kind = "secret".into();
        assert!(f.add(other, 6).is_some(), "same words, another kind");
    }

    #[test]
    fn an_event_quiet_for_a_window_goes_at_once_again() {
        let mut f = Folder::default();
        f.add(event("e", 0), 0);
        assert_eq!(f.take(W), []);
        assert_eq!(f.add(event("e", W + 1), W + 1), Some(event("e", W + 1)));
    }

    #[test]
    fn repeats_not_taken_in_time_stay_held_with_the_next_one() {
        let mut f = Folder::default();
        f.add(event("e", 0), 0);
        f.add(event("e", 1), 1);
        assert_eq!(f.add(event("e", W + 5), W + 5), None);
        assert_eq!(f.take(W + 5)[0].count, Some(2));
        assert_eq!(f.next_due_ms(), None);
    }

    #[test]
    fn every_held_repeat_leaves_together() {
        let mut f = Folder::default();
        f.add(event("a", 0), 0);
        f.add(event("b", 10_000), 10_000);
        f.add(event("a", 1), 1);
        f.add(event("b", 10_001), 10_001);
        assert_eq!(f.next_due_ms(), Some(W), "a's window ends first");
        let taken = f.take(W);
        assert_eq!(taken.len(), 2, "b goes with a, so the fold file goes whole");
        assert_eq!(f.add(event("b", W + 1), W + 1), None, "a new window");
    }

    #[test]
    fn a_repeat_that_goes_on_is_sent_about_once_a_window() {
        let mut f = Folder::default();
        let mut sent = 0;
        for t in (0..10 * W).step_by(500) {
            if f.due(t) {
                sent += f.take(t).len();
            }
            if f.add(event("e", t), t).is_some() {
                sent += 1;
            }
        }
        assert!(sent <= 11, "{sent} events for 600 repeats");
    }

    #[test]
    fn followed_events_are_bounded() {
        let mut f = Folder::default();
        for n in 0..MAX_FOLLOWED + 10 {
            assert!(f.add(event(&n.to_string(), 0), 0).is_some());
        }
        assert_eq!(f.followed.len(), MAX_FOLLOWED);
        let beyond = (MAX_FOLLOWED + 5).to_string();
        assert!(
            f.add(event(&beyond, 1), 1).is_some(),
            "not followed, so not held"
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// One of three events happens after a pause.
        Happens(u8, u64),
        /// The shell takes what is due, as the reporter does.
        Flush(u64),
        /// The agent is killed: what was held is on disk and queued at the next start, and the
        /// folder starts empty.
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3u8, 0..20_000u64).prop_map(|(w, p)| Step::Happens(w, p)),
            2 => (0..40_000u64).prop_map(Step::Flush),
            1 => Just(Step::Restart),
        ]
    }

    proptest! {
        /// However occurrences, flushes and restarts interleave, folding loses nothing and
        /// counts nothing twice: the counts sent add up to the occurrences.
        #[test]
        fn every_occurrence_is_counted_exactly_once(steps in prop::collection::vec(step(), 0..300)) {
            let mut f = Folder::default();
            let mut now = 0;
            let mut happened = [0u64; 3];
            let mut sent = [0u64; 3];
            let mut count = |events: Vec<AgentEvent>| -> Result<(), TestCaseError> {
                for e in events {
                    let i: usize = e.message.parse().unwrap_or(0);
                    prop_assert!(e.count.is_none_or(|c| c > 1), "a count is at least 2");
                    sent[i] += u64::from(e.count.unwrap_or(1));
                }
                Ok(())
            };
            for s in steps {
                match s {
                    Step::Happens(which, pause) => {
                        now += pause;
                        happened[usize::from(which)] += 1;
                        count(f.add(event(&which.to_string(), now), now).into_iter().collect())?;
                    }
                    Step::Flush(pause) => {
                        now += pause;
                        if f.due(now) {
                            count(f.take(now))?;
                        }
                    }
                    Step::Restart => {
                        count(f.held())?;
                        f = Folder::default();
                    }
                }
            }
            count(f.take(u64::MAX))?;
            prop_assert_eq!(happened, sent);
        }
    }
}

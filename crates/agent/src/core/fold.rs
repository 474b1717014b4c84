//! Folding repeated events: the same event (same kind, same words) happening again within
//! [`FOLD_WINDOW`] of the last time it was sent is counted, not sent, and the repeats go up as
//! one event with their count when the window ends.
//!
//! A failure that repeats (a container the runtime refuses to create, a manifest that cannot
//! be kept) says nothing new the second time; sending every repeat fills the outbox, the
//! control plane's store and `atoll get events` with copies that hide everything else. The first
//! occurrence still goes at once, so a new problem is seen without delay; after that at most one
//! event per window and kind of event. The shell's outbox runs every event through this, and
//! asks [`Folder::due`] for the folded repeats when their window has passed.
//!
//! Time is milliseconds since the Unix epoch, passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_api::agent::AgentEvent;

/// How long after an event was sent its repeats are folded into one.
pub const FOLD_WINDOW: Duration = Duration::from_secs(30);

/// Distinct events followed at once: past this, a new kind of event is sent without being
/// followed, so a flood of distinct messages cannot grow the agent's memory.
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
    /// An event that happened now: the event to send (with the count of the repeats it
    /// stands for, when there were some), or `None` when it is held as a repeat.
    pub fn add(&mut self, event: AgentEvent, now_ms: u64) -> Option<AgentEvent> {
        let key = (event.kind.clone(), event.message.clone());
        let window = window_ms();
        match self.followed.get_mut(&key) {
            Some(f) if now_ms < f.sent_ms.saturating_add(window) => {
                f.held = f.held.saturating_add(event.count.unwrap_or(1));
                f.last_at = event.at;
                None
            }
            Some(f) => {
                // The window ended before anyone asked for its repeats: they go with this one.
                let count = f.held.saturating_add(event.count.unwrap_or(1));
                f.sent_ms = now_ms;
                f.held = 0;
                f.last_at.clone_from(&event.at);
                Some(AgentEvent {
                    count: (count > 1).then_some(count),
                    ..event
                })
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

    /// The repeats whose window has ended, one event each with its count, dated when the last
    /// of them happened. Each starts a new window; an event not repeated in its window is
    /// forgotten, so its next occurrence goes at once.
    pub fn due(&mut self, now_ms: u64) -> Vec<AgentEvent> {
        let window = window_ms();
        let mut out = Vec::new();
        self.followed.retain(|(kind, message), f| {
            if now_ms < f.sent_ms.saturating_add(window) {
                return true;
            }
            if f.held == 0 {
                return false;
            }
            out.push(AgentEvent {
                at: f.last_at.clone(),
                kind: kind.clone(),
                message: message.clone(),
                count: (f.held > 1).then_some(f.held),
            });
            f.sent_ms = now_ms;
            f.held = 0;
            true
        });
        out
    }

    /// When [`Folder::due`] next has repeats to send.
    pub fn next_due_ms(&self) -> Option<u64> {
        let window = window_ms();
        self.followed
            .values()
            .filter(|f| f.held > 0)
            .map(|f| f.sent_ms.saturating_add(window))
            .min()
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
    }

    #[test]
    fn repeats_within_the_window_fold_into_one_event_with_their_count() {
        let mut f = Folder::default();
        f.add(event("cannot create web", 0), 0);
        for t in [1_000, 3_000, 7_000, 15_000] {
            assert_eq!(f.add(event("cannot create web", t), t), None);
        }
        assert_eq!(f.next_due_ms(), Some(W));
        assert_eq!(f.due(W - 1), []);
        let folded = f.due(W);
        assert_eq!(
            folded,
            [AgentEvent {
                count: Some(4),
                ..event("cannot create web", 15_000)
            }]
        );
        assert_eq!(f.due(W), [], "said once");
    }

    #[test]
    fn a_single_repeat_has_no_count() {
        let mut f = Folder::default();
        f.add(event("e", 0), 0);
        f.add(event("e", 10), 10);
        assert_eq!(f.due(W), [event("e", 10)]);
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
        assert_eq!(f.due(W), []);
        assert_eq!(f.add(event("e", W + 1), W + 1), Some(event("e", W + 1)));
    }

    #[test]
    fn repeats_not_collected_in_time_go_with_the_next_one() {
        let mut f = Folder::default();
        f.add(event("e", 0), 0);
        f.add(event("e", 1), 1);
        f.add(event("e", 2), 2);
        let next = f.add(event("e", W + 5), W + 5).unwrap();
        assert_eq!(next.count, Some(3));
        assert_eq!(f.next_due_ms(), None);
    }

    #[test]
    fn a_repeat_that_goes_on_is_sent_once_a_window() {
        let mut f = Folder::default();
        let mut sent = 0;
        for t in (0..10 * W).step_by(500) {
            sent += f.due(t).len();
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

    proptest! {
        /// However events interleave, folding loses none: every occurrence is in exactly one
        /// event sent, counted.
        #[test]
        fn every_occurrence_is_counted_exactly_once(
            steps in prop::collection::vec((0..3u8, 0..20_000u64, any::<bool>()), 0..200)
        ) {
            let mut f = Folder::default();
            let mut now = 0;
            let mut happened = [0u64; 3];
            let mut sent = [0u64; 3];
            let count = |e: &AgentEvent, sent: &mut [u64; 3]| -> Result<(), TestCaseError> {
                let i: usize = e.message.parse().unwrap_or(0);
                sent[i] += u64::from(e.count.unwrap_or(1));
                prop_assert!(e.count.is_none_or(|c| c > 1));
                Ok(())
            };
            for (which, pause, look) in steps {
                now += pause;
                if look {
                    for e in f.due(now) {
                        count(&e, &mut sent)?;
                    }
                }
                happened[usize::from(which)] += 1;
                if let Some(e) = f.add(event(&which.to_string(), now), now) {
                    count(&e, &mut sent)?;
                }
            }
            for e in f.due(u64::MAX) {
                count(&e, &mut sent)?;
            }
            prop_assert_eq!(happened, sent);
        }
    }
}

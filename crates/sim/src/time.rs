//! Virtual time and the agenda of events. Time is whole microseconds since the start of a run;
//! events at the same instant run in the order they were scheduled, so a run is a function of
//! its seed alone.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Microseconds since the start of the run.
pub type Time = u64;

pub const MILLISECOND: Time = 1_000;
pub const SECOND: Time = 1_000_000;

pub fn from_duration(d: Duration) -> Time {
    u64::try_from(d.as_micros()).unwrap_or(Time::MAX)
}

/// For printing: seconds with a fraction.
pub fn seconds(t: Time) -> f64 {
    t as f64 / SECOND as f64
}

struct Entry<E> {
    at: Time,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed, so the heap yields the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Events waiting for their time, earliest first, ties in scheduling order.
pub struct Agenda<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: Time,
}

impl<E> std::fmt::Debug for Agenda<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agenda")
            .field("now", &self.now)
            .field("waiting", &self.heap.len())
            .finish()
    }
}

impl<E> Default for Agenda<E> {
    fn default() -> Self {
        Agenda {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
        }
    }
}

impl<E> Agenda<E> {
    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` at `at`, or now if `at` has passed.
    pub fn at(&mut self, at: Time, event: E) {
        self.seq += 1;
        self.heap.push(Entry {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
    }

    pub fn after(&mut self, delay: Time, event: E) {
        self.at(self.now.saturating_add(delay), event);
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let entry = self.heap.pop()?;
        self.now = entry.at;
        Some((entry.at, entry.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_in_time_order_and_ties_in_scheduling_order() {
        let mut agenda = Agenda::default();
        agenda.at(5, 'b');
        agenda.at(3, 'a');
        agenda.at(5, 'c');
        assert_eq!(agenda.pop(), Some((3, 'a')));
        agenda.after(2, 'd');
        assert_eq!(agenda.pop(), Some((5, 'b')));
        assert_eq!(agenda.pop(), Some((5, 'c')));
        assert_eq!(agenda.pop(), Some((5, 'd')));
        agenda.at(1, 'e');
        assert_eq!(agenda.pop(), Some((5, 'e')), "the past is now");
        assert_eq!(agenda.pop(), None);
    }
}

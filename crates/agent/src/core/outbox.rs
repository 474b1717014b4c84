//! The outbox's bookkeeping, apart from the files that hold the batches: which sequence number
//! a new batch gets, which batches are dropped when the outbox is full, what an
//! acknowledgement lets go, and what is sent next. The shell's `outbox` mirrors each decision
//! on disk; the simulator (`atoll-sim`) runs this same type for many sites.
//!
//! Sequence numbers only grow and are never reused: the control plane takes a number it has
//! seen for a resend and ignores it. Past `capacity` batches the oldest are dropped and
//! counted, so a loss is visible in every later status instead of silent.

use std::collections::VecDeque;
use std::time::Duration;

/// Batches sent per report request.
pub const BATCH_LIMIT: usize = 100;

/// How long a batch written while the reporter had nothing to send is held for the ones that
/// follow it, so that a change costs the control plane one report from each host rather than
/// one for each step of its reconcile (the event of the manifest's acceptance, then the status
/// once its containers run), and the reports of a fleet-wide change do not compete with its
/// delivery. Status reaches the control plane this much later.
pub const GATHER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    next_seq: u64,
    dropped: u64,
    capacity: usize,
    /// Sequence numbers of the queued batches, oldest first.
    queued: VecDeque<u64>,
}

/// What queuing one batch decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The new batch's sequence number.
    pub seq: u64,
    /// The oldest batches dropped to make room for it, oldest first (already counted).
    pub dropped: Vec<u64>,
}

impl Queue {
    /// The queue as found after a start: `queued` in any order, the persisted next number and
    /// drop count (0 when never written). The next number is past every queued batch, so a lost
    /// counter file cannot make a number be used twice.
    pub fn restore(mut queued: Vec<u64>, next_seq: u64, dropped: u64, capacity: usize) -> Queue {
        queued.sort_unstable();
        let next_seq = next_seq.max(queued.last().map_or(1, |s| s + 1)).max(1);
        Queue {
            next_seq,
            dropped,
            capacity: capacity.max(1),
            queued: queued.into(),
        }
    }

    /// Queues a new batch: drops the oldest past capacity first, so the new batch's status can
    /// count every drop, its own included. The caller persists [`Queue::next_seq`] before it
    /// writes the batch.
    pub fn push(&mut self) -> Pushed {
        let mut dropped = Vec::new();
        while self.queued.len() >= self.capacity {
            let Some(oldest) = self.queued.pop_front() else {
                break;
            };
            dropped.push(oldest);
            self.dropped += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queued.push_back(seq);
        Pushed { seq, dropped }
    }

    /// The control plane has stored every batch up to and including `acked`: returns the
    /// batches that may now be forgotten, oldest first.
    pub fn acknowledge(&mut self, acked: u64) -> Vec<u64> {
        let mut forgotten = Vec::new();
        while let Some(&oldest) = self.queued.front() {
            if oldest > acked {
                break;
            }
            forgotten.push(oldest);
            self.queued.pop_front();
        }
        forgotten
    }

    /// A batch that can no longer be sent (its file is damaged): dropped and counted.
    pub fn lose(&mut self, seq: u64) {
        let before = self.queued.len();
        self.queued.retain(|s| *s != seq);
        if self.queued.len() < before {
            self.dropped += 1;
        }
    }

    /// The batches to send next, oldest first.
    pub fn pending(&self, limit: usize) -> impl Iterator<Item = u64> + '_ {
        self.queued.iter().copied().take(limit)
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_grow_and_pass_every_queued_batch_after_a_start() {
        let mut q = Queue::restore(Vec::new(), 0, 0, 10);
        assert_eq!(q.push().seq, 1);
        assert_eq!(q.push().seq, 2);
        let q = Queue::restore(vec![7, 5], 3, 0, 10);
        assert_eq!(q.next_seq(), 8, "past the newest queued batch");
        assert_eq!(q.pending(10).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(Queue::restore(Vec::new(), 9, 0, 10).next_seq(), 9);
    }

    #[test]
    fn an_acknowledgement_lets_go_only_up_to_itself() {
        let mut q = Queue::restore(Vec::new(), 1, 0, 10);
        for _ in 0..5 {
            q.push();
        }
        assert_eq!(q.acknowledge(3), [1, 2, 3]);
        assert_eq!(q.acknowledge(3), Vec::<u64>::new());
        assert_eq!(q.pending(1).collect::<Vec<_>>(), [4]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.acknowledge(9), [4, 5]);
        assert!(q.is_empty());
        assert_eq!(
            q.push().seq,
            6,
            "numbers are not reused after the queue empties"
        );
    }

    #[test]
    fn past_capacity_the_oldest_are_dropped_and_counted() {
        let mut q = Queue::restore(Vec::new(), 1, 0, 3);
        for _ in 0..3 {
            assert!(q.push().dropped.is_empty());
        }
        assert_eq!(
            q.push(),
            Pushed {
                seq: 4,
                dropped: vec![1]
            }
        );
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pending(10).collect::<Vec<_>>(), [2, 3, 4]);
        let mut shrunk = Queue::restore(vec![1, 2, 3, 4], 5, 1, 2);
        assert_eq!(shrunk.push().dropped, [1, 2, 3]);
        assert_eq!(shrunk.dropped(), 4);
        q.lose(3);
        q.lose(3);
        assert_eq!(q.dropped(), 2, "a lost batch counts once");
    }
}

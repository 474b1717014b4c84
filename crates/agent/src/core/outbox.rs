//! The outbox's bookkeeping, apart from the files that hold the batches: which sequence number
//! a new batch gets, which batches are dropped when the outbox is full, what an
//! acknowledgement lets go, and what is sent next. The shell's `outbox` mirrors each decision
//! on disk; the simulator (`atoll-sim`) runs this same type for many sites.
//!
//! Sequence numbers only grow and are never reused: the control plane takes a number it has
//! seen for a resend and ignores it. Past `capacity` batches the oldest are dropped and
//! counted, so a loss is visible in every later status instead of silent.
//!
//! A lost counter (its file deleted or garbage) would number new batches under what the
//! control plane has stored, which would take them for resends: so the queue learns the
//! control plane's acknowledged sequence first ([`Queue::unconfirmed`]: the reporter's first
//! request carries no batch) and renumbers the batches still waiting above it rather than let
//! them be forgotten. An acknowledgement at or above the next number says the same of any
//! counter, lost or not.

use std::collections::VecDeque;
use std::time::Duration;

/// Batches sent per report request: the control plane's bound.
pub const BATCH_LIMIT: usize = atoll_api::agent::MAX_BATCHES_PER_REPORT;

/// How long a batch written while the reporter had nothing to send is held for the ones that
/// follow it, so that a change costs the control plane one report from each host rather than
/// one for each step of its reconcile (the event of the manifest's acceptance, then the status
/// once its containers run), and the reports of a fleet-wide change do not compete with its
/// delivery. Status reaches the control plane this much later.
pub const GATHER: Duration = Duration::from_secs(1);

/// The highest sequence number a control plane stores (its column is a signed 64-bit
/// integer): an acknowledgement above it is no store's, and is not acted on.
pub const MAX_SEQ: u64 = i64::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    next_seq: u64,
    dropped: u64,
    capacity: usize,
    /// Sequence numbers of the queued batches, oldest first.
    queued: VecDeque<u64>,
    /// The counter was lost: numbers from this one on were given without knowing what the
    /// control plane has stored. Cleared by the first acknowledgement.
    unconfirmed_from: Option<u64>,
}

/// What an acknowledgement decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// Batches the control plane has stored, to forget, oldest first.
    pub forgotten: Vec<u64>,
    /// Batches whose numbers the control plane had already stored for others (the counter was
    /// lost), `(old, new)` oldest first: each new number is above every number given before and
    /// above the acknowledgement, in the same order, so they are stored when sent again.
    pub renumbered: Vec<(u64, u64)>,
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
            unconfirmed_from: None,
        }
    }

    /// The counter was lost: the numbers from `from` on were given, or will be, without knowing
    /// what the control plane has stored. Until an acknowledgement says, nothing is to be sent
    /// ([`Queue::unconfirmed`]). The numbers below `from` were given before it was noted, so
    /// the next number is at least `from` even when the counter was lost again since and the
    /// files those numbers had are gone: numbering from the files alone would give a stored
    /// number again, and its batch would be taken for a resend. A `from` no store could hold
    /// says nothing, as a garbage one: every number may be one the control plane holds.
    pub fn lost_counter(&mut self, from: u64) {
        let from = if from > MAX_SEQ { 1 } else { from.max(1) };
        self.next_seq = self.next_seq.max(from);
        self.unconfirmed_from = Some(from);
    }

    /// Whether the control plane's acknowledged sequence must be learned before any batch is
    /// sent: a request with no batch asks for it.
    pub fn unconfirmed(&self) -> bool {
        self.unconfirmed_from.is_some()
    }

    /// See [`Queue::lost_counter`].
    pub fn unconfirmed_from(&self) -> Option<u64> {
        self.unconfirmed_from
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

    /// The control plane has stored every batch up to and including `acked` (its highest
    /// stored sequence): the batches that may now be forgotten, and those to renumber. A number
    /// the control plane holds that this queue never gave (`acked` at or above the next one)
    /// means the counter went back: no waiting batch was stored, and all are renumbered. After
    /// a lost counter, the batches numbered since are renumbered if the control plane holds
    /// their numbers already; the ones before (their files kept their numbers) are forgotten
    /// as usual.
    pub fn acknowledge(&mut self, acked: u64) -> Acknowledged {
        if acked > MAX_SEQ {
            return Acknowledged::default();
        }
        let unconfirmed = self.unconfirmed_from.take();
        let renumber_from = if acked >= self.next_seq {
            Some(0)
        } else {
            unconfirmed.filter(|from| acked >= *from)
        };
        let mut out = Acknowledged::default();
        while let Some(&oldest) = self.queued.front() {
            if oldest > acked || renumber_from.is_some_and(|from| oldest >= from) {
                break;
            }
            out.forgotten.push(oldest);
            self.queued.pop_front();
        }
        if renumber_from.is_some() {
            let base = self.next_seq.max(acked + 1);
            for (seq, new) in self.queued.iter_mut().zip(base..) {
                out.renumbered.push((*seq, new));
                *seq = new;
            }
            self.next_seq = base + self.queued.len() as u64;
        }
        out
    }

    /// A batch that was never queued (it could not be made to fit the control plane's bounds):
    /// counted as dropped.
    pub fn count_unqueued(&mut self) {
        self.dropped += 1;
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
        assert_eq!(q.acknowledge(3).forgotten, [1, 2, 3]);
        assert_eq!(q.acknowledge(3), Acknowledged::default());
        assert_eq!(q.pending(1).collect::<Vec<_>>(), [4]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.acknowledge(5).forgotten, [4, 5]);
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

    fn queued(q: &Queue) -> Vec<u64> {
        q.pending(usize::MAX).collect()
    }

    /// Issue 12, item 8: with its counter lost, an agent numbered new batches from 1 under the
    /// control plane's stored 93, which took them for resends, acknowledged 93, and the agent
    /// forgot them: their events vanished.
    #[test]
    fn batches_numbered_after_a_lost_counter_are_renumbered_above_the_acknowledgement_not_forgotten()
     {
        let mut q = Queue::restore(Vec::new(), 0, 0, 100);
        q.lost_counter(q.next_seq());
        assert!(q.unconfirmed());
        for _ in 0..17 {
            q.push();
        }
        let acked = q.acknowledge(93);
        assert!(acked.forgotten.is_empty(), "{acked:?}");
        assert_eq!(acked.renumbered.first(), Some(&(1, 94)));
        assert_eq!(acked.renumbered.last(), Some(&(17, 110)));
        assert_eq!(queued(&q), (94..=110).collect::<Vec<_>>());
        assert!(!q.unconfirmed());
        assert_eq!(q.push().seq, 111);
        // Sent again, stored, acknowledged: forgotten as usual.
        assert_eq!(q.acknowledge(111).forgotten.len(), 18);
        assert!(q.is_empty());
    }

    #[test]
    fn more_batches_than_the_acknowledgement_after_a_lost_counter_are_all_kept() {
        // Offline a long while after the loss: more batches than the control plane's cursor.
        let mut q = Queue::restore(Vec::new(), 0, 0, 1000);
        q.lost_counter(1);
        for _ in 0..150 {
            q.push();
        }
        let acked = q.acknowledge(93);
        assert!(acked.forgotten.is_empty());
        assert_eq!(acked.renumbered.len(), 150);
        assert_eq!(
            queued(&q),
            (151..=300).collect::<Vec<_>>(),
            "above every number given"
        );
    }

    #[test]
    fn batches_kept_with_their_numbers_are_forgotten_as_usual_after_a_lost_counter() {
        // The files of 95 to 98 kept their numbers; 95 and 96 were stored, their ack lost.
        let mut q = Queue::restore(vec![95, 96, 97, 98], 0, 0, 100);
        q.lost_counter(q.next_seq());
        assert_eq!(q.push().seq, 99);
        let acked = q.acknowledge(96);
        assert_eq!(acked.forgotten, [95, 96]);
        assert!(acked.renumbered.is_empty());
        assert_eq!(queued(&q), [97, 98, 99]);
        // And when the control plane also holds the numbers given since, only those move.
        let mut q = Queue::restore(vec![95, 96], 0, 0, 100);
        q.lost_counter(q.next_seq());
        q.push();
        q.push();
        let acked = q.acknowledge(98);
        assert_eq!(acked.forgotten, [95, 96]);
        assert_eq!(acked.renumbered, [(97, 99), (98, 100)]);
    }

    #[test]
    fn a_lost_counter_with_nothing_waiting_continues_above_the_acknowledgement() {
        let mut q = Queue::restore(Vec::new(), 0, 0, 10);
        q.lost_counter(1);
        assert_eq!(q.acknowledge(93), Acknowledged::default());
        assert_eq!(q.push().seq, 94);
        // A new host: the control plane has nothing, the numbers stand.
        let mut q = Queue::restore(Vec::new(), 0, 0, 10);
        q.lost_counter(1);
        q.push();
        assert_eq!(q.acknowledge(0), Acknowledged::default());
        assert!(!q.unconfirmed());
        assert_eq!(queued(&q), [1]);
    }

    #[test]
    fn an_acknowledgement_at_or_above_the_next_number_renumbers_even_a_trusted_counter() {
        // A counter file restored from an old copy: numeric, and behind.
        let mut q = Queue::restore(vec![4, 5], 6, 0, 10);
        assert!(!q.unconfirmed());
        let acked = q.acknowledge(40);
        assert_eq!(acked.renumbered, [(4, 41), (5, 42)]);
        assert_eq!(q.next_seq(), 43);
        // An acknowledgement no store can make changes nothing.
        let mut q = Queue::restore(vec![4, 5], 6, 0, 10);
        assert_eq!(q.acknowledge(u64::MAX), Acknowledged::default());
        assert_eq!(queued(&q), [4, 5]);
    }

    proptest::proptest! {
        /// Whatever the control plane's cursor, the counter's state and the batches waiting:
        /// every batch is forgotten (only at or below the cursor, and never one numbered after
        /// a lost counter) or kept, in order, above the cursor, and numbers are never reused.
        #[test]
        fn no_batch_is_forgotten_that_the_control_plane_did_not_store(
            kept in proptest::collection::btree_set(1u64..60, 0..8),
            counter in proptest::option::of(0u64..80),
            fresh in 0usize..40,
            cursor in 0u64..200,
        ) {
            let mut q = Queue::restore(kept.into_iter().collect(), counter.unwrap_or(0), 0, 1000);
            if counter.is_none() {
                q.lost_counter(q.next_seq());
            }
            let first_fresh = q.next_seq();
            for _ in 0..fresh {
                q.push();
            }
            let before = queued(&q);
            let acked = q.acknowledge(cursor);
            let after = queued(&q);
            proptest::prop_assert_eq!(after.len() + acked.forgotten.len(), before.len());
            proptest::prop_assert_eq!(&acked.forgotten[..], &before[..acked.forgotten.len()]);
            for f in &acked.forgotten {
                proptest::prop_assert!(*f <= cursor);
                proptest::prop_assert!(counter.is_some() || *f < first_fresh);
            }
            for (old, new) in &acked.renumbered {
                proptest::prop_assert!(*new > *old && *new >= first_fresh + fresh as u64);
            }
            proptest::prop_assert!(after.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(after.iter().all(|s| *s > cursor));
            proptest::prop_assert!(q.next_seq() > after.last().copied().unwrap_or(0));
            proptest::prop_assert!(!q.unconfirmed());
        }
    }

    /// One host's outbox on disk, the agent processes that use it one after another, and the
    /// control plane, for the tests below. The disk is written in `shell::outbox`'s order (a
    /// push writes the drop count and removes the batches it drops, if any, then writes the
    /// counter, then the batch's file; an acknowledgement removes the forgotten
    /// files, writes the counter if it renumbered, renames newest first, then removes the
    /// `renumber-from` marker), and an agent may be SIGKILLed between any two writes. A request
    /// an agent sent is not lost with it: the control plane may store it after the next agent
    /// has asked for its cursor.
    #[derive(Debug, Default)]
    struct World {
        /// Batch files: sequence number → the batch's identity.
        files: std::collections::BTreeMap<u64, u32>,
        counter: Option<u64>,
        marker: Option<u64>,
        /// The drop count's file.
        dropped: u64,
        /// The outbox's capacity (none when 0).
        capacity: usize,
        /// The identities of the batches whose file was written.
        written: Vec<u32>,
        identities: u32,
        cursor: u64,
        /// What the control plane stored, by identity, in order.
        stored: Vec<u32>,
        /// Requests received and not yet stored, a dead agent's too: (request, batches).
        inbox: Vec<(usize, Vec<(u64, u32)>)>,
        answers: std::collections::BTreeMap<usize, u64>,
        requests: usize,
        /// The live agent's queue and the request it waits on.
        agent: Option<(Queue, Option<usize>)>,
    }

    #[derive(Debug, Clone, Copy)]
    enum Write {
        Dropped(u64),
        Counter(u64),
        File(u64, u32),
        Remove(u64),
        Rename(u64, u64),
        RemoveMarker,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Queue a batch; `Some(n)`: killed after its first `n` writes.
        Push(Option<usize>),
        /// Send what is pending (a probe while unconfirmed).
        Send,
        /// The control plane stores one of the requests it holds (chosen modulo their number).
        Store(usize),
        /// The agent takes the answer to its request; `Some(n)`: killed after `n` writes.
        Answer(Option<usize>),
        /// SIGKILL and start again, the counter file deleted or garbage when `true`.
        Restart(bool),
    }

    impl World {
        /// A running agent whose every batch up to `seq` is stored and forgotten.
        fn stored_up_to(seq: u64) -> World {
            let mut w = World {
                counter: Some(seq + 1),
                cursor: seq,
                ..World::default()
            };
            w.start();
            w
        }

        /// `shell::outbox::Outbox::open`.
        fn start(&mut self) {
            let queued = self.files.keys().copied().collect();
            let capacity = if self.capacity == 0 {
                usize::MAX
            } else {
                self.capacity
            };
            let mut q = Queue::restore(queued, self.counter.unwrap_or(0), self.dropped, capacity);
            if let Some(from) = self.marker {
                q.lost_counter(from);
            } else if self.counter.is_none() {
                self.marker = Some(q.next_seq());
                q.lost_counter(q.next_seq());
            }
            self.agent = Some((q, None));
        }

        /// Applies `writes` in order, or only the first `kill_after` of them: then the agent
        /// was killed, and `false`.
        fn write(&mut self, writes: &[Write], kill_after: Option<usize>) -> bool {
            for (n, w) in writes.iter().enumerate() {
                if kill_after.is_some_and(|k| n >= k) {
                    return false;
                }
                match *w {
                    Write::Dropped(count) => self.dropped = count,
                    Write::Counter(next) => self.counter = Some(next),
                    Write::File(seq, id) => {
                        self.files.insert(seq, id);
                        self.written.push(id);
                    }
                    Write::Remove(seq) => {
                        self.files.remove(&seq);
                    }
                    Write::Rename(old, new) => {
                        if let Some(id) = self.files.remove(&old) {
                            self.files.insert(new, id);
                        }
                    }
                    Write::RemoveMarker => self.marker = None,
                }
            }
            true
        }

        fn step(&mut self, step: &Step) {
            if let Step::Restart(lose_counter) = *step {
                if lose_counter {
                    self.counter = None;
                }
                self.start();
                return;
            }
            if self.agent.is_none() {
                self.start();
            }
            let Some((mut q, mut waiting)) = self.agent.take() else {
                return;
            };
            let alive = match *step {
                Step::Push(kill_after) => {
                    let pushed = q.push();
                    self.identities += 1;
                    let mut writes = Vec::new();
                    if !pushed.dropped.is_empty() {
                        writes.push(Write::Dropped(q.dropped()));
                    }
                    writes.extend(pushed.dropped.iter().map(|s| Write::Remove(*s)));
                    writes.push(Write::Counter(q.next_seq()));
                    writes.push(Write::File(pushed.seq, self.identities));
                    self.write(&writes, kill_after)
                }
                Step::Send => {
                    if waiting.is_none() {
                        let batches = if q.unconfirmed() {
                            Vec::new()
                        } else {
                            q.pending(BATCH_LIMIT)
                                .map(|s| (s, self.files[&s]))
                                .collect()
                        };
                        self.requests += 1;
                        waiting = Some(self.requests);
                        self.inbox.push((self.requests, batches));
                    }
                    true
                }
                Step::Store(pick) => {
                    if !self.inbox.is_empty() {
                        let (request, batches) = self.inbox.remove(pick % self.inbox.len());
                        for (seq, id) in batches {
                            if seq > self.cursor {
                                self.cursor = seq;
                                self.stored.push(id);
                            }
                        }
                        self.answers.insert(request, self.cursor);
                    }
                    true
                }
                Step::Answer(kill_after) => {
                    match waiting.and_then(|r| self.answers.get(&r).copied()) {
                        None => true,
                        Some(acked) => {
                            waiting = None;
                            let decided = q.acknowledge(acked);
                            let mut writes: Vec<Write> = decided
                                .forgotten
                                .iter()
                                .map(|s| Write::Remove(*s))
                                .collect();
                            if !decided.renumbered.is_empty() {
                                writes.push(Write::Counter(q.next_seq()));
                            }
                            writes.extend(
                                decided
                                    .renumbered
                                    .iter()
                                    .rev()
                                    .map(|(o, n)| Write::Rename(*o, *n)),
                            );
                            if !q.unconfirmed() {
                                writes.push(Write::RemoveMarker);
                            }
                            self.write(&writes, kill_after)
                        }
                    }
                }
                Step::Restart(_) => true,
            };
            if alive {
                self.agent = Some((q, waiting));
            }
        }

        /// No more faults: everything held is stored and every answer taken, until the outbox
        /// is empty.
        fn settle(&mut self) {
            for _ in 0..1000 {
                while !self.inbox.is_empty() {
                    self.step(&Step::Store(0));
                }
                self.step(&Step::Answer(None));
                let settled = self
                    .agent
                    .as_ref()
                    .is_some_and(|(q, w)| q.is_empty() && !q.unconfirmed() && w.is_none());
                if settled && self.files.is_empty() {
                    return;
                }
                self.step(&Step::Send);
            }
            panic!("the outbox does not drain: {self:#?}");
        }

        /// No batch is stored twice, and every batch whose file was written is stored or
        /// counted as dropped.
        fn check(&self) -> Result<(), String> {
            let mut stored = self.stored.clone();
            stored.sort_unstable();
            if stored.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("a batch stored twice: {self:#?}"));
            }
            let lost = self
                .written
                .iter()
                .filter(|id| stored.binary_search(id).is_err())
                .count() as u64;
            if lost > self.dropped {
                return Err(format!(
                    "{lost} batches written and never stored, {} counted as dropped: {self:#?}",
                    self.dropped
                ));
            }
            Ok(())
        }
    }

    /// The e2e test's failing runs, step by step: the first agent after a lost counter was
    /// killed while it queued the worker's restart (the counter written, the batch's file not:
    /// the restart never reached disk), with an earlier batch stored but its acknowledgement
    /// not taken; the next agent, with a garbage counter, numbered from that file again and gave
    /// the never-written number a second time. That costs only the batch that was never
    /// written: the acknowledgement lets the stored file go and what follows is stored.
    #[test]
    fn a_kill_between_the_counter_and_the_batch_file_loses_only_that_batch() {
        let mut w = World::stored_up_to(5);
        w.step(&Step::Push(None)); // 6: stored, its acknowledgement lost with the agent
        w.step(&Step::Send);
        w.step(&Step::Store(0));
        w.step(&Step::Push(Some(1))); // 7: the restart, killed after the counter
        assert!(w.agent.is_none());
        assert_eq!(w.files.keys().copied().collect::<Vec<_>>(), [6]);
        w.step(&Step::Restart(true));
        assert_eq!(w.agent.as_ref().map(|(q, _)| q.next_seq()), Some(7));
        w.step(&Step::Push(None)); // 7 again, and 8: the next restart
        w.step(&Step::Send); // the probe
        w.step(&Step::Push(None));
        w.settle();
        w.check().unwrap();
        assert_eq!(
            w.stored.len(),
            3,
            "6, and both batches numbered again: {w:#?}"
        );
        assert_eq!(
            w.written.len(),
            3,
            "the batch killed before its file is not counted"
        );
    }

    /// A full outbox's push removed the oldest batch's file, then counted it: killed in
    /// between, the batch was gone and no status ever said so.
    #[test]
    fn a_batch_dropped_from_a_full_outbox_is_counted_before_its_file_goes() {
        let mut w = World {
            capacity: 1,
            ..World::stored_up_to(5)
        };
        w.start(); // again, with that capacity
        w.step(&Step::Push(None)); // 6
        w.step(&Step::Push(None)); // 7, dropping 6
        w.step(&Step::Push(Some(1))); // 8, dropping 7: killed after one write
        assert_eq!(w.dropped, 2, "{w:#?}");
        assert!(w.files.contains_key(&7), "counted, and sent after all");
        w.settle();
        w.check().unwrap();
    }

    /// The counter lost twice: the first loss's marker said numbers from 2 on were unconfirmed;
    /// batch 1 was stored, its file forgotten (the agent killed before the marker went), and the
    /// counter lost again. The next agent numbered from its empty folder, gave 1 a second time,
    /// and the acknowledgement of the first 1 let the new batch go unsent and uncounted.
    #[test]
    fn a_counter_lost_again_after_its_batches_were_forgotten_does_not_reuse_a_stored_number() {
        let mut w = World::default();
        for step in [
            Step::Push(None),
            Step::Send,
            Step::Store(0),
            Step::Answer(None),
            Step::Send,
            Step::Restart(true),
            Step::Store(0),
            Step::Send,
            Step::Store(0),
            Step::Answer(Some(1)),
            Step::Push(None),
            Step::Restart(false),
        ] {
            w.step(&step);
        }
        w.settle();
        w.check().unwrap();
        assert_eq!(w.stored.len(), 2, "{w:#?}");
    }

    #[test]
    fn a_lost_counter_noted_from_a_number_no_store_holds_is_taken_as_garbage() {
        let mut q = Queue::restore(vec![3], 4, 0, 10);
        q.lost_counter(u64::MAX);
        assert_eq!(q.unconfirmed_from(), Some(1));
        assert_eq!(q.next_seq(), 4);
        q.lost_counter(9);
        assert_eq!(q.next_seq(), 9, "the numbers below the note were given");
    }

    /// A request a killed agent sent, stored only after the next agent asked for the cursor: the
    /// probe's answer is behind, and must not make the next agent's numbers collide.
    #[test]
    fn a_request_stored_after_the_next_agents_probe_does_not_take_its_numbers() {
        let mut w = World::stored_up_to(5);
        w.step(&Step::Push(None)); // 6
        w.step(&Step::Push(None)); // 7
        w.step(&Step::Send); // [6, 7], in flight when the agent is killed
        w.step(&Step::Restart(true));
        w.step(&Step::Send); // the probe, answered first
        w.step(&Step::Store(1));
        w.step(&Step::Push(None)); // 8
        w.step(&Step::Answer(None));
        w.step(&Step::Store(0)); // the dead agent's [6, 7]
        w.settle();
        w.check().unwrap();
        assert_eq!(w.stored.len(), 3);
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let kill = proptest::option::weighted(0.2, 0usize..4);
        prop_oneof![
            3 => kill.clone().prop_map(Step::Push),
            3 => Just(Step::Send),
            3 => (0usize..3).prop_map(Step::Store),
            3 => kill.prop_map(Step::Answer),
            1 => proptest::bool::ANY.prop_map(Step::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Whatever the kills between any two writes, the counters lost or garbage at each
        /// start, and the order in which the control plane stores what dead and live agents
        /// sent, and a full outbox: every batch that reached disk is stored once or counted as
        /// dropped.
        #[test]
        fn no_batch_that_reached_disk_is_lost_or_stored_twice_whatever_the_kills(
            steps in proptest::collection::vec(steps(), 0..60),
            capacity in proptest::option::of(1usize..4),
        ) {
            let mut w = World { capacity: capacity.unwrap_or(0), ..World::default() };
            for step in &steps {
                w.step(step);
            }
            w.settle();
            if let Err(e) = w.check() {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }
}

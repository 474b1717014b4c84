//! Reports waiting to reach the control plane, kept on disk so that nothing is lost while the
//! site is offline or the agent restarts.
//!
//! Each batch gets the next sequence number and its own file; `core::outbox::Queue` decides
//! the numbers, the drops and what an acknowledgement lets go, and this module keeps the files
//! in step. The control plane acknowledges the highest sequence it has stored; batches up to
//! it are deleted. A resent batch (its ack was lost) is ignored by the control plane, so a
//! report is delivered exactly once. The next sequence number is persisted before the batch
//! that uses it: a number is never reused, even after a crash, because the control plane would
//! take a reused number for a resend.
//!
//! The outbox is bounded: past `capacity` batches the oldest are dropped and counted, and the
//! count travels in every status so the loss is visible.
//!
//! A counter file that is missing or garbage does not stop the agent: it starts from what the
//! outbox holds, notes in `renumber-from` the first number given without knowing the control
//! plane's cursor, and learns that cursor before sending (`core::outbox::Queue::unconfirmed`).
//! A batch's number is its file's name, so renumbering one is a rename: atomic, and done
//! newest first into numbers above every one given, so a crash halfway keeps each batch once
//! and in order.

use std::path::{Path, PathBuf};

use atoll_api::agent::{AgentEvent, HostStatus, Report};

use super::AgentError;
use super::files::write_atomic;
use crate::core::bounds;
use crate::core::outbox::Queue;

const NEXT_SEQ: &str = "next-seq";
const DROPPED: &str = "dropped";
/// Present while numbers given after a lost counter are not known to be above what the
/// control plane has stored: the first such number.
const RENUMBER_FROM: &str = "renumber-from";

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// Which batches are on disk and what the next one is numbered: `core::outbox` decides,
    /// this module keeps the files in step.
    queue: Queue,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Local(format!("{}: {e}", path.display()))
}

/// A counter file's number: `None` when it is missing or cannot be read (said as a warning
/// unless it is missing), which must not keep the agent from starting.
fn read_number(path: &Path) -> Option<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let number = text.trim().parse().ok();
            if number.is_none() {
                tracing::warn!(file = %path.display(), "the counter file is not a number; carrying on from what the outbox holds");
            }
            number
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the counter file; carrying on from what the outbox holds");
            None
        }
    }
}

impl Outbox {
    pub fn open(dir: &Path, capacity: usize) -> Result<Outbox, AgentError> {
        let existed = dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let queued: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        let next_seq = read_number(&dir.join(NEXT_SEQ));
        let dropped = read_number(&dir.join(DROPPED)).unwrap_or(0);
        let mut queue = Queue::restore(queued, next_seq.unwrap_or(0), dropped, capacity);
        let marker = dir.join(RENUMBER_FROM);
        let unconfirmed_from = if marker.exists() {
            // Garbage here: every number may be one the control plane holds.
            Some(read_number(&marker).unwrap_or(1))
        } else if next_seq.is_none() {
            if existed {
                tracing::warn!(
                    folder = %dir.display(),
                    next = queue.next_seq(),
                    "the report counter is lost; numbering goes on from what the outbox holds, and the control plane's acknowledged sequence is learned before sending"
                );
            }
            let from = queue.next_seq();
            // Unwritten, a restart before the first acknowledgement trusts the counter written
            // since; an acknowledgement at or above it still renumbers.
            if let Err(e) = write_atomic(&marker, from.to_string().as_bytes(), 0o600) {
                tracing::warn!(file = %marker.display(), error = %e, "cannot note where the numbers given after a lost counter begin");
            }
            Some(from)
        } else {
            None
        };
        if let Some(from) = unconfirmed_from {
            queue.lost_counter(from);
        }
        Ok(Outbox {
            dir: dir.to_owned(),
            queue,
        })
    }

    /// Whether the control plane's acknowledged sequence must be learned, by a report with no
    /// batch, before any batch is sent (the counter was lost).
    pub fn unconfirmed(&self) -> bool {
        self.queue.unconfirmed()
    }

    /// Queues events and a status, as one batch or several (`core::bounds::split`: each within
    /// the control plane's bounds, the status in the last); returns the last sequence number, or
    /// `None` when nothing was queued.
    pub fn push(
        &mut self,
        at: String,
        events: Vec<AgentEvent>,
        status: Option<HostStatus>,
    ) -> Result<Option<u64>, AgentError> {
        let (parts, status_dropped) = bounds::split(&at, events, status);
        if status_dropped {
            tracing::error!(
                "a status too large for the control plane's bounds, even with its text cut, is not reported; counted as a dropped report"
            );
            self.queue.count_unqueued();
            self.write_dropped()?;
        }
        let mut last = None;
        for part in parts {
            last = Some(self.push_one(at.clone(), part.events, part.status)?);
        }
        Ok(last)
    }

    fn push_one(
        &mut self,
        at: String,
        events: Vec<AgentEvent>,
        status: Option<HostStatus>,
    ) -> Result<u64, AgentError> {
        let pushed = self.queue.push();
        // Counted before their files go: a kill in between leaves a batch counted as dropped
        // and sent after all, never one gone without a count.
        if !pushed.dropped.is_empty() {
            self.write_dropped()?;
        }
        for oldest in &pushed.dropped {
            let path = self.path(*oldest);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        self.write_next_seq()?;
        let status = status.map(|mut s| {
            s.dropped_reports = self.queue.dropped();
            s
        });
        let report = Report {
            seq: pushed.seq,
            at,
            events,
            status,
        };
        let path = self.path(pushed.seq);
        write_atomic(
            &path,
            serde_json::to_string(&report)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        )
        .map_err(io(&path))?;
        Ok(pushed.seq)
    }

    fn write_dropped(&self) -> Result<(), AgentError> {
        let counter = self.dir.join(DROPPED);
        write_atomic(&counter, self.queue.dropped().to_string().as_bytes(), 0o600)
            .map_err(io(&counter))
    }

    /// The queued batches the next report request carries, oldest first: up to `limit`, and
    /// no more than fit the control plane's bound on a request's body
    /// (`core::bounds::fitting`). A batch that cannot be read (a damaged file) is dropped and
    /// counted rather than blocking every later one; one past the bounds (an older agent wrote
    /// it) is cut to them (`core::bounds::fit_batch`).
    pub fn pending(&mut self, limit: usize) -> Vec<Report> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for seq in self.queue.pending(limit) {
            match std::fs::read(self.path(seq))
                .ok()
                .and_then(|b| serde_json::from_slice::<Report>(&b).ok())
            {
                // The file's name is the number: a renumbered batch was only renamed.
                Some(report) => out.push(bounds::fit_batch(Report { seq, ..report })),
                None => damaged.push(seq),
            }
        }
        let sizes: Vec<usize> = out.iter().map(bounds::json_len).collect();
        out.truncate(bounds::fitting(&sizes));
        for seq in damaged {
            let _ = std::fs::remove_file(self.path(seq));
            self.queue.lose(seq);
        }
        out
    }

    /// Takes the control plane's acknowledgement `acked`, its highest stored sequence: forgets
    /// every batch it has stored, and renumbers above it the batches whose numbers it holds for
    /// others (the counter was lost), to be sent again. Returns how many were renumbered.
    pub fn acknowledge(&mut self, acked: u64) -> Result<usize, AgentError> {
        let decided = self.queue.acknowledge(acked);
        let mut result = Ok(decided.renumbered.len());
        for oldest in decided.forgotten {
            let path = self.path(oldest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A file left behind is sent again after a restart, and the control plane,
                // having stored it, ignores it.
                Err(e) => result = result.and(Err(io(&path)(e))),
            }
        }
        if !decided.renumbered.is_empty() {
            tracing::warn!(
                acked,
                renumbered = decided.renumbered.len(),
                "the control plane has stored sequence numbers this agent gave again (its counter was lost): the reports waiting are renumbered above them and sent"
            );
            // The new numbers are given before any file takes one.
            self.write_next_seq()?;
        }
        // Newest first, each above every number given: a crash halfway leaves every batch
        // once, in order, and the next start renumbers the rest.
        for (old, new) in decided.renumbered.into_iter().rev() {
            let (from, to) = (self.path(old), self.path(new));
            if let Err(e) = std::fs::rename(&from, &to)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&from)(e));
            }
        }
        let marker = self.dir.join(RENUMBER_FROM);
        if !self.queue.unconfirmed() {
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => result = result.and(Err(io(&marker)(e))),
            }
        }
        result
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Persists the next sequence number, before any batch takes it.
    fn write_next_seq(&self) -> Result<(), AgentError> {
        let counter = self.dir.join(NEXT_SEQ);
        write_atomic(
            &counter,
            self.queue.next_seq().to_string().as_bytes(),
            0o600,
        )
        .map_err(io(&counter))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Vec<AgentEvent> {
        vec![AgentEvent {
            at: "t".into(),
            kind: "test".into(),
            message: n.to_string(),
        }]
    }

    #[test]
    fn batches_survive_a_restart_and_sequence_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        // What the reporter asks first of a new outbox: nothing stored yet.
        outbox.acknowledge(0).unwrap();
        assert_eq!(outbox.push("t".into(), event(1), None).unwrap(), Some(1));
        assert_eq!(outbox.push("t".into(), event(2), None).unwrap(), Some(2));
        outbox.acknowledge(2).unwrap();
        assert!(outbox.is_empty());
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(
            outbox.push("t".into(), event(3), None).unwrap(),
            Some(3),
            "after all were acknowledged and a restart"
        );
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        let pending = outbox.pending(10);
        assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(pending[0].events[0].message, "3");
    }

    #[test]
    fn acknowledging_forgets_only_up_to_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        // What the reporter asks first of a new outbox: nothing stored yet.
        outbox.acknowledge(0).unwrap();
        for n in 1..=5 {
            outbox.push("t".into(), event(n), None).unwrap();
        }
        outbox.acknowledge(3).unwrap();
        assert_eq!(
            outbox.pending(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(outbox.pending(1).len(), 1);
    }

    #[test]
    fn past_capacity_the_oldest_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 3).unwrap();
        for n in 1..=5 {
            outbox.push("t".into(), event(n), None).unwrap();
        }
        assert_eq!(
            outbox.pending(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(outbox.dropped(), 2);
        outbox
            .push("t".into(), Vec::new(), Some(HostStatus::default()))
            .unwrap();
        let newest = outbox.pending(10).pop().unwrap();
        assert_eq!(newest.status.unwrap().dropped_reports, 3);
        assert_eq!(Outbox::open(dir.path(), 3).unwrap().dropped(), 3);
    }

    /// Issue 12, item 8: a garbage counter stopped the agent from starting, and a missing one
    /// numbered new batches under what the control plane had stored, which then forgot them.
    #[test]
    fn a_lost_counter_neither_stops_the_start_nor_loses_the_batches_numbered_after_it() {
        for lost in ["missing", "garbage"] {
            let dir = tempfile::tempdir().unwrap();
            let mut outbox = Outbox::open(dir.path(), 10).unwrap();
            assert!(outbox.unconfirmed(), "a new outbox learns the cursor first");
            assert_eq!(outbox.acknowledge(0).unwrap(), 0);
            for n in 1..=3 {
                outbox.push("t".into(), event(n), None).unwrap();
            }
            outbox.acknowledge(3).unwrap();
            let counter = dir.path().join(NEXT_SEQ);
            if lost == "missing" {
                std::fs::remove_file(&counter).unwrap();
            } else {
                std::fs::write(&counter, "\u{0}garbage").unwrap();
            }
            let mut outbox = Outbox::open(dir.path(), 10).unwrap();
            assert!(outbox.unconfirmed(), "{lost}");
            outbox.push("t".into(), event(4), None).unwrap();
            outbox.push("t".into(), event(5), None).unwrap();
            assert_eq!(outbox.acknowledge(3).unwrap(), 2, "{lost}");
            assert!(!outbox.unconfirmed());
            let pending = outbox.pending(10);
            assert_eq!(
                pending
                    .iter()
                    .map(|r| (r.seq, r.events[0].message.as_str()))
                    .collect::<Vec<_>>(),
                [(4, "4"), (5, "5")],
                "{lost}"
            );
            // Settled: a restart trusts the counter again and goes on above.
            let mut outbox = Outbox::open(dir.path(), 10).unwrap();
            assert!(!outbox.unconfirmed(), "{lost}");
            assert_eq!(outbox.push("t".into(), event(6), None).unwrap(), Some(6));
        }
    }

    #[test]
    fn a_damaged_batch_is_dropped_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push("t".into(), event(1), None).unwrap();
        outbox.push("t".into(), event(2), None).unwrap();
        std::fs::write(dir.path().join(format!("{:020}.json", 1)), "garbage").unwrap();
        assert_eq!(
            outbox.pending(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(outbox.dropped(), 1);
    }
}

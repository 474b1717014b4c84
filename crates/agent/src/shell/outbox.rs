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
//!
//! A batch that cannot be written (a full or failing disk) is kept in memory and sent all the
//! same: a report is small, and the one saying the disk is full matters most exactly when the
//! disk is full. Such a batch does not survive a restart; it is renumbered with the rest.
//!
//! Events go through `core::fold` on the way in: a repeat within its window is held, not
//! queued, and the held repeats are kept in `folded.json` (rewritten after each one), which
//! becomes a batch by one rename when their window ends, or at the next start after a kill.
//! So a repeat is on disk once it is counted, and is sent exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_api::agent::{AgentEvent, HostStatus, Report};

use super::AgentError;
use super::clock::{now_ms, now_rfc3339};
use super::files::{describe, write_atomic};
use crate::core::bounds;
use crate::core::fold::Folder;
use crate::core::outbox::Queue;

const NEXT_SEQ: &str = "next-seq";
const DROPPED: &str = "dropped";
/// Present while numbers given after a lost counter are not known to be above what the
/// control plane has stored: the first such number.
const RENUMBER_FROM: &str = "renumber-from";
/// The held repeats of folded events, in the shape of a batch (its number given when it is
/// queued).
const FOLDED: &str = "folded.json";

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// Which batches are on disk and what the next one is numbered: `core::outbox` decides,
    /// this module keeps the files in step.
    queue: Queue,
    /// Queued batches that could not be written, by sequence number.
    unkept: BTreeMap<u64, Report>,
    /// Whether the last write failed: said once when it starts and once when it ends.
    failing: bool,
    folder: Folder,
    /// Whether `folded.json` holds exactly what the folder holds (absent when nothing is held).
    folded_kept: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Local(format!("{}: {e}", path.display()))
}

/// A write that failed, for the log line that says reports are kept in memory.
fn failed(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {}", path.display(), describe(&e))
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
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            queue,
            unkept: BTreeMap::new(),
            failing: false,
            folder: Folder::default(),
            folded_kept: false,
        };
        // Repeats held when the agent stopped go now; the folder starts empty.
        if outbox.folded_path().exists() {
            outbox.folded_kept = true;
            outbox.queue_folded(Vec::new());
        }
        outbox.folded_kept = true;
        Ok(outbox)
    }

    /// Whether the control plane's acknowledged sequence must be learned, by a report with no
    /// batch, before any batch is sent (the counter was lost).
    pub fn unconfirmed(&self) -> bool {
        self.queue.unconfirmed()
    }

    /// Queues events and a status, on disk if it can, in memory if not: repeats of a recent
    /// event are held (`core::fold`), the rest split into batches within the control plane's
    /// bounds (`core::bounds::split`: the status in the last). Returns the last sequence
    /// number, or `None` when nothing was queued (the events were repeats, held).
    pub fn push(
        &mut self,
        at: String,
        events: Vec<AgentEvent>,
        status: Option<HostStatus>,
    ) -> Option<u64> {
        let now = now_ms();
        if self.folder.due(now) {
            let due = self.folder.take(now);
            self.queue_folded(due);
        }
        let mut held = false;
        let mut events_now = Vec::new();
        for e in events {
            match self.folder.add(e, now) {
                Some(e) => events_now.push(e),
                None => held = true,
            }
        }
        if held {
            self.keep_folded();
        }
        if events_now.is_empty() && status.is_none() {
            return None;
        }
        let (parts, status_dropped) = bounds::split(&at, events_now, status);
        if status_dropped {
            tracing::error!(
                "a status too large for the control plane's bounds, even with its text cut, is not reported; counted as a dropped report"
            );
            self.queue.count_unqueued();
            let counter = self.dir.join(DROPPED);
            let written =
                write_atomic(&counter, self.queue.dropped().to_string().as_bytes(), 0o600)
                    .map_err(failed(&counter));
            self.note_write(written);
        }
        let mut last = None;
        for part in parts {
            last = Some(self.push_one(at.clone(), part.events, part.status));
        }
        last
    }

    /// Queues one batch within the bounds: on disk if it can, in memory if not.
    fn push_one(&mut self, at: String, events: Vec<AgentEvent>, status: Option<HostStatus>) -> u64 {
        let (seq, numbered) = self.number();
        let status = status.map(|mut s| {
            s.dropped_reports = self.queue.dropped();
            s
        });
        let report = Report {
            seq,
            at,
            events,
            status,
        };
        let path = self.path(seq);
        let written = numbered.and_then(|()| {
            write_atomic(
                &path,
                serde_json::to_string(&report)
                    .unwrap_or_default()
                    .as_bytes(),
                0o600,
            )
            .map_err(failed(&path))
        });
        self.settle(written, report);
        seq
    }

    /// Queues the held repeats of folded events when their window has ended; returns the
    /// batch's number.
    pub fn flush_folded(&mut self) -> Option<u64> {
        let now = now_ms();
        if !self.folder.due(now) {
            return None;
        }
        let due = self.folder.take(now);
        self.queue_folded(due)
    }

    /// How long until held repeats are due to be queued.
    pub fn folded_due_in(&self) -> Option<Duration> {
        self.folder
            .next_due_ms()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// Queues `taken`, the held repeats just taken from the folder (or, at start, those left
    /// in `folded.json`): by renaming `folded.json` when it holds them, so they are queued
    /// exactly once however the agent stops; written anew (or kept in memory) when not.
    fn queue_folded(&mut self, taken: Vec<AgentEvent>) -> Option<u64> {
        let folded = self.folded_path();
        let on_disk = std::mem::replace(&mut self.folded_kept, true);
        if taken.is_empty() && !on_disk {
            return None;
        }
        let (seq, numbered) = self.number();
        let path = self.path(seq);
        let report = Report {
            seq,
            at: now_rfc3339(),
            events: taken,
            status: None,
        };
        let written = numbered.and_then(|()| {
            if on_disk {
                std::fs::rename(&folded, &path).map_err(failed(&folded))
            } else {
                // A fold file left from before the disk failed holds only part of the counts.
                let _ = std::fs::remove_file(&folded);
                write_atomic(
                    &path,
                    serde_json::to_string(&report)
                        .unwrap_or_default()
                        .as_bytes(),
                    0o600,
                )
                .map_err(failed(&path))
            }
        });
        if on_disk && written.is_err() && report.events.is_empty() {
            // At start, a fold file that cannot be queued is not known in memory either.
            self.queue.lose(seq);
            return None;
        }
        self.settle(written, report);
        Some(seq)
    }

    /// Keeps what the folder holds in `folded.json`, before the repeat just held is taken
    /// for counted.
    fn keep_folded(&mut self) {
        let report = Report {
            seq: 0,
            at: now_rfc3339(),
            events: self.folder.held(),
            status: None,
        };
        let path = self.folded_path();
        let written = write_atomic(
            &path,
            serde_json::to_string(&report)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        );
        self.folded_kept = written.is_ok();
        self.note_write(written.map_err(failed(&path)));
    }

    /// The next sequence number, its counter persisted (or why it could not be), and the
    /// oldest batches dropped to make room.
    fn number(&mut self) -> (u64, Result<(), String>) {
        let pushed = self.queue.push();
        // Counted before their files go: a kill in between leaves a batch counted as dropped
        // and sent after all, never one gone without a count.
        let mut written = Ok(());
        if !pushed.dropped.is_empty() {
            let counter = self.dir.join(DROPPED);
            written = write_atomic(&counter, self.queue.dropped().to_string().as_bytes(), 0o600)
                .map_err(failed(&counter));
        }
        for oldest in &pushed.dropped {
            if self.unkept.remove(oldest).is_none() {
                let _ = std::fs::remove_file(self.path(*oldest));
            }
        }
        let next = self.write_next_seq().map_err(|e| e.to_string());
        (pushed.seq, written.and(next))
    }

    /// After a batch was queued: kept in memory when it could not be written.
    fn settle(&mut self, written: Result<(), String>, report: Report) {
        if written.is_err() {
            self.unkept.insert(report.seq, report);
        }
        self.note_write(written);
    }

    /// Says once that writes fail, and once that they work again.
    fn note_write(&mut self, written: Result<(), String>) {
        match written {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("reports are kept on disk again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        error = %e,
                        "cannot keep reports on disk; keeping them in memory until they are sent (free space in the data folder)"
                    );
                }
            }
        }
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
            if let Some(report) = self.unkept.get(&seq) {
                out.push(Report {
                    seq,
                    ..report.clone()
                });
                continue;
            }
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
            if self.unkept.remove(&oldest).is_some() {
                continue;
            }
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
            if let Some(report) = self.unkept.remove(&old) {
                self.unkept.insert(new, Report { seq: new, ..report });
                continue;
            }
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

    fn folded_path(&self) -> PathBuf {
        self.dir.join(FOLDED)
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
            count: None,
        }]
    }

    /// Writes of the counter and of the fold file fail from now on, as on a full disk (a
    /// folder where the temporary file goes; root ignores file modes).
    fn break_folder(dir: &Path) {
        for name in [".next-seq.tmp", ".folded.json.tmp"] {
            std::fs::create_dir(dir.join(name)).unwrap();
        }
    }

    fn mend_folder(dir: &Path) {
        for name in [".next-seq.tmp", ".folded.json.tmp"] {
            std::fs::remove_dir(dir.join(name)).unwrap();
        }
    }

    fn counted(reports: &[Report], message: &str) -> u32 {
        reports
            .iter()
            .flat_map(|r| &r.events)
            .filter(|e| e.message == message)
            .map(|e| e.count.unwrap_or(1))
            .sum()
    }

    /// Issue 12, item 11: on a full disk the report saying so could not be queued at all.
    #[test]
    fn reports_that_cannot_be_kept_on_disk_are_sent_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut outbox = Outbox::open(&path, 10).unwrap();
        outbox.acknowledge(0).unwrap();
        assert_eq!(outbox.push("t".into(), event(1), None), Some(1));
        break_folder(&path);
        let status = HostStatus {
            applied_revision: 4,
            ..HostStatus::default()
        };
        assert_eq!(
            outbox.push("t".into(), event(2), Some(status.clone())),
            Some(2)
        );
        let pending = outbox.pending(10);
        assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(pending[1].events[0].message, "2");
        assert_eq!(
            pending[1].status.as_ref().map(|s| s.applied_revision),
            Some(4)
        );
        outbox.acknowledge(2).unwrap();
        assert!(outbox.is_empty());
        mend_folder(&path);
        assert_eq!(
            outbox.push("t".into(), event(3), None),
            Some(3),
            "numbers go on"
        );
        assert_eq!(Outbox::open(&path, 10).unwrap().pending(10)[0].seq, 3);
    }

    /// Issue 12, items 8 and 11: a batch held in memory is renumbered with those on disk.
    #[test]
    fn reports_held_in_memory_are_renumbered_with_the_rest_after_a_lost_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut outbox = Outbox::open(&path, 10).unwrap();
        assert!(outbox.unconfirmed());
        outbox.push("t".into(), event(1), None);
        break_folder(&path);
        outbox.push("t".into(), event(2), None);
        mend_folder(&path);
        // The control plane already holds 1 and 2 from before the counter was lost.
        assert_eq!(outbox.acknowledge(2).unwrap(), 2);
        let pending = outbox.pending(10);
        assert_eq!(
            pending
                .iter()
                .map(|r| (r.seq, r.events[0].message.as_str()))
                .collect::<Vec<_>>(),
            [(3, "1"), (4, "2")]
        );
    }

    #[test]
    fn repeated_events_are_held_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(outbox.push("t".into(), event(7), None), Some(1));
        assert_eq!(outbox.push("t".into(), event(7), None), None);
        assert_eq!(outbox.push("t".into(), event(7), None), None);
        assert_eq!(outbox.len(), 1);
        assert!(
            outbox
                .folded_due_in()
                .is_some_and(|d| d <= crate::core::fold::FOLD_WINDOW)
        );
        assert_eq!(outbox.flush_folded(), None, "not before its window ends");
        let with_status = outbox.push("t".into(), event(7), Some(HostStatus::default()));
        assert_eq!(with_status, Some(2), "a status goes, without the repeat");
        assert!(outbox.pending(10)[1].events.is_empty());
        // The window ends: the three repeats go as one event, by renaming the fold file.
        let due = outbox.folder.take(u64::MAX);
        let seq = outbox.queue_folded(due).unwrap();
        assert!(!dir.path().join(FOLDED).exists());
        let pending = outbox.pending(10);
        assert_eq!(pending.last().map(|r| r.seq), Some(seq));
        assert_eq!(pending.last().unwrap().events[0].count, Some(3));
        assert_eq!(counted(&pending, "7"), 4);
    }

    /// Issue 12, item 14: a first attempt at folding kept the held repeats in memory only, and
    /// an agent killed inside the window lost them.
    #[test]
    fn held_repeats_survive_a_kill_and_are_sent_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        for _ in 0..5 {
            outbox.push("t".into(), event(7), None);
        }
        // Killed: nothing of the outbox in memory survives.
        drop(outbox);
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert!(!dir.path().join(FOLDED).exists(), "queued at start");
        assert_eq!(counted(&outbox.pending(10), "7"), 5);
        outbox.push("t".into(), event(7), None);
        drop(outbox);
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(counted(&outbox.pending(10), "7"), 6, "none twice");
        assert_eq!(outbox.len(), 3);
    }

    #[test]
    fn a_kill_between_numbering_the_held_repeats_and_queuing_them_sends_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push("t".into(), event(7), None);
        outbox.push("t".into(), event(7), None);
        outbox.push("t".into(), event(7), None);
        // Killed right after the counter was written for them, before the rename.
        let _ = outbox.number();
        drop(outbox);
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        let pending = outbox.pending(10);
        assert_eq!(pending.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(counted(&pending, "7"), 3);
    }

    #[test]
    fn held_repeats_that_cannot_be_kept_on_disk_are_sent_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut outbox = Outbox::open(&path, 10).unwrap();
        outbox.push("t".into(), event(7), None);
        outbox.push("t".into(), event(7), None);
        break_folder(&path);
        outbox.push("t".into(), event(7), None);
        let due = outbox.folder.take(u64::MAX);
        outbox.queue_folded(due).unwrap();
        assert_eq!(counted(&outbox.pending(10), "7"), 3);
    }

    #[test]
    fn batches_survive_a_restart_and_sequence_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        // What the reporter asks first of a new outbox: nothing stored yet.
        outbox.acknowledge(0).unwrap();
        assert_eq!(outbox.push("t".into(), event(1), None), Some(1));
        assert_eq!(outbox.push("t".into(), event(2), None), Some(2));
        outbox.acknowledge(2).unwrap();
        assert!(outbox.is_empty());
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(
            outbox.push("t".into(), event(3), None),
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
            outbox.push("t".into(), event(4), None);
            outbox.push("t".into(), event(5), None);
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
            assert_eq!(outbox.push("t".into(), event(6), None), Some(6));
        }
    }

    #[test]
    fn a_damaged_batch_is_dropped_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push("t".into(), event(1), None);
        outbox.push("t".into(), event(2), None);
        std::fs::write(dir.path().join(format!("{:020}.json", 1)), "garbage").unwrap();
        assert_eq!(
            outbox.pending(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(outbox.dropped(), 1);
    }
}

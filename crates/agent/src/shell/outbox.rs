//! Reports waiting to reach the control plane, kept on disk so that nothing is lost while the
//! site is offline or the agent restarts.
//!
//! Each batch gets the next sequence number and its own file. The control plane acknowledges
//! the highest sequence it has stored; batches up to it are deleted. A resent batch (its ack was
//! lost) is ignored by the control plane, so a report is delivered exactly once. The next
//! sequence number is persisted before the batch that uses it: a number is never reused, even
//! after a crash, because the control plane would take a reused number for a resend.
//!
//! The outbox is bounded: past `capacity` batches the oldest are dropped and counted, and the
//! count travels in every status so the loss is visible.

use std::path::{Path, PathBuf};

use atoll_api::agent::{AgentEvent, HostStatus, Report};

use super::AgentError;
use super::files::write_atomic;

const NEXT_SEQ: &str = "next-seq";
const DROPPED: &str = "dropped";

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next_seq: u64,
    dropped: u64,
    capacity: usize,
    /// Sequence numbers of the batches on disk, oldest first.
    queued: Vec<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Local(format!("{}: {e}", path.display()))
}

fn read_number(path: &Path) -> Result<u64, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| AgentError::Local(format!("{}: not a number", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(path)(e)),
    }
}

impl Outbox {
    pub fn open(dir: &Path, capacity: usize) -> Result<Outbox, AgentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut queued: Vec<u64> = std::fs::read_dir(dir)
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
        queued.sort_unstable();
        let next_seq = read_number(&dir.join(NEXT_SEQ))?
            .max(queued.last().map_or(1, |s| s + 1))
            .max(1);
        let dropped = read_number(&dir.join(DROPPED))?;
        Ok(Outbox {
            dir: dir.to_owned(),
            next_seq,
            dropped,
            capacity: capacity.max(1),
            queued,
        })
    }

    /// Queues a batch; returns its sequence number.
    pub fn push(
        &mut self,
        at: String,
        events: Vec<AgentEvent>,
        status: Option<HostStatus>,
    ) -> Result<u64, AgentError> {
        // Make room first, so the batch's status counts every drop, its own included.
        while self.queued.len() >= self.capacity {
            let oldest = self.queued.remove(0);
            let path = self.path(oldest);
            std::fs::remove_file(&path).map_err(io(&path))?;
            self.dropped += 1;
            let counter = self.dir.join(DROPPED);
            write_atomic(&counter, self.dropped.to_string().as_bytes(), 0o600)
                .map_err(io(&counter))?;
        }
        let seq = self.next_seq;
        let counter = self.dir.join(NEXT_SEQ);
        write_atomic(&counter, (seq + 1).to_string().as_bytes(), 0o600).map_err(io(&counter))?;
        self.next_seq = seq + 1;
        let status = status.map(|mut s| {
            s.dropped_reports = self.dropped;
            s
        });
        let report = Report {
            seq,
            at,
            events,
            status,
        };
        let path = self.path(seq);
        write_atomic(
            &path,
            serde_json::to_string(&report)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        )
        .map_err(io(&path))?;
        self.queued.push(seq);
        Ok(seq)
    }

    /// Up to `limit` queued batches, oldest first. A batch that cannot be read (a damaged file)
    /// is dropped and counted rather than blocking every later one.
    pub fn pending(&mut self, limit: usize) -> Vec<Report> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for &seq in self.queued.iter().take(limit) {
            match std::fs::read(self.path(seq))
                .ok()
                .and_then(|b| serde_json::from_slice::<Report>(&b).ok())
            {
                Some(report) => out.push(report),
                None => damaged.push(seq),
            }
        }
        for seq in damaged {
            let _ = std::fs::remove_file(self.path(seq));
            self.queued.retain(|s| *s != seq);
            self.dropped += 1;
        }
        out
    }

    /// Forgets every batch up to and including `seq`, which the control plane has stored.
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), AgentError> {
        while let Some(&oldest) = self.queued.first() {
            if oldest > seq {
                break;
            }
            let path = self.path(oldest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.queued.remove(0);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
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
        assert_eq!(outbox.push("t".into(), event(1), None).unwrap(), 1);
        assert_eq!(outbox.push("t".into(), event(2), None).unwrap(), 2);
        outbox.acknowledge(2).unwrap();
        assert!(outbox.is_empty());
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(
            outbox.push("t".into(), event(3), None).unwrap(),
            3,
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

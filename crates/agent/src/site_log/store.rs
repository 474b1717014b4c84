//! The Raft log and the state machine of one host, in its site-log folder.
//!
//! Two files and no database: a site's log is a few commands a minute, which two files hold
//! well, and a database crate (redb was suggested; its size was not measured) would spend a
//! binary-size budget that the rest of the site cluster needs.
//!
//! - `log`: append-only, one framed record (`record`) per operation, in the order Raft asked
//!   for them: a vote, entries appended, a truncation, a purge, the committed index. Each is
//!   fsynced before it is acknowledged (the committed index is not: losing it costs only a
//!   re-apply). Replaying the records rebuilds the log in memory. A purge rewrites the file
//!   with only what is left (temporary file, fsync, rename), so it does not grow for ever.
//! - `snapshot.json`: the last snapshot, the state machine struct serialized with its log id
//!   and membership, written whole (temporary file, fsync, rename).
//!
//! The state machine itself lives in memory: at start it is the snapshot's, and Raft applies
//! the committed entries after it again, which `SiteState::apply` makes safe (it is a function
//! of the log). File IO runs on the calling task: a site's log writes are few and small.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Write as _};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt as _};
use openraft::entry::RaftEntry as _;
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{EntryPayload, LogState, RaftLogReader, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use super::record;
use super::state::{Outcome, SiteState};
use super::types::{Entry, SiteRaft};

const LOG: &str = "log";
const SNAPSHOT: &str = "snapshot.json";

/// One operation of the log file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Vote(VoteOf<SiteRaft>),
    Append(Vec<Entry>),
    /// Every entry after this log id (all of them for none) removed.
    TruncateAfter(Option<LogIdOf<SiteRaft>>),
    /// Every entry up to this log id removed.
    Purge(LogIdOf<SiteRaft>),
    Committed(Option<LogIdOf<SiteRaft>>),
}

#[derive(Default)]
struct Log {
    vote: Option<VoteOf<SiteRaft>>,
    committed: Option<LogIdOf<SiteRaft>>,
    purged: Option<LogIdOf<SiteRaft>>,
    entries: BTreeMap<u64, Entry>,
}

impl Log {
    fn replay(&mut self, op: Op) {
        match op {
            Op::Vote(v) => self.vote = Some(v),
            Op::Append(entries) => {
                for e in entries {
                    self.entries.insert(e.index(), e);
                }
            }
            Op::TruncateAfter(last) => {
                let from = last.map_or(0, |l| l.index() + 1);
                self.entries.split_off(&from);
            }
            Op::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index() + 1));
                self.purged = Some(upto);
            }
            Op::Committed(c) => self.committed = c,
        }
    }

    /// The operations that rebuild this log from nothing.
    fn as_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        if let Some(v) = &self.vote {
            ops.push(Op::Vote(v.clone()));
        }
        if let Some(p) = &self.purged {
            ops.push(Op::Purge(p.clone()));
        }
        ops.push(Op::Committed(self.committed.clone()));
        ops.push(Op::Append(self.entries.values().cloned().collect()));
        ops
    }
}

struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    log: Log,
}

impl LogFile {
    fn write(&mut self, op: &Op, sync: bool) -> io::Result<()> {
        let body = serde_json::to_vec(op).map_err(io::Error::other)?;
        self.file.write_all(&record::frame(&body))?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Writes the log anew with only what it holds now, and switches to that file.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        for op in self.log.as_ops() {
            let body = serde_json::to_vec(&op).map_err(io::Error::other)?;
            bytes.extend_from_slice(&record::frame(&body));
        }
        crate::shell::files::write_atomic(&self.path, &bytes, 0o600)?;
        self.file = append_to(&self.path)?;
        Ok(())
    }
}

fn append_to(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The log storage Raft writes through; clones share one file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<tokio::sync::Mutex<LogFile>>,
}

impl LogStore {
    /// Opens (or creates) the log in `folder`, dropping a torn last write.
    pub fn open(folder: &Path) -> io::Result<LogStore> {
        let path = folder.join(LOG);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let read = record::read(&bytes).map_err(|e| invalid(&path, e))?;
        let mut log = Log::default();
        for body in &read.records {
            let op: Op = serde_json::from_slice(body).map_err(|e| invalid(&path, e))?;
            log.replay(op);
        }
        if read.good_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped = bytes.len() - read.good_len,
                "site log: dropped a torn last write"
            );
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(read.good_len as u64)?;
            file.sync_all()?;
        }
        let file = append_to(&path)?;
        Ok(LogStore {
            inner: Arc::new(tokio::sync::Mutex::new(LogFile { path, file, log })),
        })
    }
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

impl RaftLogReader<SiteRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(inner
            .log
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<SiteRaft>>, io::Error> {
        Ok(self.inner.lock().await.log.vote.clone())
    }
}

impl RaftLogStorage<SiteRaft> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<SiteRaft>, io::Error> {
        let inner = self.inner.lock().await;
        let last = inner.log.entries.values().next_back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: inner.log.purged.clone(),
            last_log_id: last.or_else(|| inner.log.purged.clone()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<SiteRaft>) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        let op = Op::Vote(vote.clone());
        inner.write(&op, true)?;
        inner.log.replay(op);
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<SiteRaft>>,
    ) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        let op = Op::Committed(committed);
        inner.write(&op, false)?;
        inner.log.replay(op);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<SiteRaft>>, io::Error> {
        Ok(self.inner.lock().await.log.committed.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<SiteRaft>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let op = Op::Append(entries.into_iter().collect());
        let written = inner.write(&op, true);
        match written {
            Ok(()) => {
                inner.log.replay(op);
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<SiteRaft>>,
    ) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        let op = Op::TruncateAfter(last_log_id);
        inner.write(&op, true)?;
        inner.log.replay(op);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<SiteRaft>) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        inner.log.replay(Op::Purge(log_id));
        inner.rewrite()
    }
}

/// The applied state as the rest of the agent reads it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub state: SiteState,
    pub last: Option<LogIdOf<SiteRaft>>,
    pub membership: StoredMembershipOf<SiteRaft>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<SiteRaft>,
    state: SiteState,
}

/// The last snapshot's metadata and data, as Raft sends it to a follower.
type Kept = Option<(SnapshotMetaOf<SiteRaft>, Vec<u8>)>;

/// The state machine Raft applies to; clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    folder: PathBuf,
    applied: Arc<Mutex<Applied>>,
    snapshot: Arc<Mutex<Kept>>,
}

impl StateMachine {
    /// Opens the state machine of `folder`: the last snapshot's, or the empty state.
    pub fn open(folder: &Path) -> io::Result<StateMachine> {
        let path = folder.join(SNAPSHOT);
        let (applied, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredSnapshot =
                    serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e))?;
                let data = serde_json::to_vec(&stored.state).map_err(io::Error::other)?;
                let applied = Applied {
                    state: stored.state,
                    last: stored.meta.last_log_id.clone(),
                    membership: stored.meta.last_membership.clone(),
                };
                (applied, Some((stored.meta, data)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(e),
        };
        Ok(StateMachine {
            folder: folder.to_owned(),
            applied: Arc::new(Mutex::new(applied)),
            snapshot: Arc::new(Mutex::new(snapshot)),
        })
    }

    /// A handle on the applied state, shared with Raft's copy.
    pub fn applied(&self) -> Arc<Mutex<Applied>> {
        self.applied.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        // A panic while the lock is held leaves a state that was being replaced whole or one
        // command's change; either is a state some log gave, so it is used as it is.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&self, meta: SnapshotMetaOf<SiteRaft>, state: SiteState) -> io::Result<Vec<u8>> {
        let data = serde_json::to_vec(&state).map_err(io::Error::other)?;
        let stored = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            state,
        })
        .map_err(io::Error::other)?;
        crate::shell::files::write_atomic(&self.folder.join(SNAPSHOT), &stored, 0o600)?;
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta, data.clone()));
        Ok(data)
    }
}

impl RaftSnapshotBuilder<SiteRaft> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<SiteRaft, Vec<u8>>, io::Error> {
        let applied = self.lock().clone();
        let meta = SnapshotMetaOf::<SiteRaft> {
            last_log_id: applied.last,
            last_membership: applied.membership,
        };
        let data = self.keep(meta.clone(), applied.state)?;
        Ok(SnapshotOf::<SiteRaft, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<SiteRaft> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<SiteRaft>>, StoredMembershipOf<SiteRaft>), io::Error> {
        let applied = self.lock();
        Ok((applied.last.clone(), applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<SiteRaft>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = {
                let mut applied = self.lock();
                let log_id = entry.log_id();
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome::Applied,
                    EntryPayload::Normal(command) => applied.state.apply(command),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(log_id.clone()), m.clone());
                        Outcome::Applied
                    }
                };
                applied.last = Some(log_id);
                outcome
            };
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<SiteRaft>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let state: SiteState = serde_json::from_slice(&snapshot)
            .map_err(|e| invalid(Path::new("installed snapshot"), e))?;
        self.keep(meta.clone(), state.clone())?;
        *self.lock() = Applied {
            state,
            last: meta.last_log_id.clone(),
            membership: meta.last_membership.clone(),
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<SiteRaft, Vec<u8>>>, io::Error> {
        let kept = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(kept.map(|(meta, snapshot)| SnapshotOf::<SiteRaft, Vec<u8>> { meta, snapshot }))
    }
}

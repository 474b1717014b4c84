//! The site log: the state the hosts of one site agree on (the accepted signed manifest, the
//! placement of every replica, which hosts are up and what they offer, the sealed secrets),
//! replicated between them with Raft so a site decides on its own, offline, and a host that
//! dies loses nothing the others hold.
//!
//! The decision that shaped it: consensus is openraft's (no home-made Raft), and openraft stays
//! behind this module's own small API, so the rest of the agent never names an openraft type
//! and the pinned pre-release can be upgraded, or replaced, here alone. What is ours:
//!
//! - `state`: the replicated state, a plain serde struct, and its pure `apply`;
//! - `store`: the log and the state machine persisted in one folder (an append-only file with
//!   a checksum per record, fsynced, and the last snapshot written whole), no database;
//! - `network`: the [`Transport`] trait a host-to-host link implements, with opaque messages;
//!   `local`: an in-process transport (channels) whose links can be cut, for tests.
//!
//! Choices where the issue is silent:
//! - A node id is the host's name. Raft forbids giving a removed node's id to a node with an
//!   empty log, so the membership work must take a decommissioned host out of the log's
//!   membership before a host of the same name can join with an empty folder.
//! - The host-to-host messages are openraft's own types in serde form, kept here and not in
//!   `atoll_api` (which would then depend on openraft): both ends are agents of one site.
//! - Only what is decided is logged: liveness (heartbeats) stays in the leader's memory, the
//!   log holds the changes of its judgement (`HostUp`, `HostDown`).
//! - A proposal waits at most [`Timers::propose_within`] for its commit: a leader cut off from
//!   its majority cannot commit, and says so as [`ProposeError::NotCommitted`] instead of
//!   waiting for ever. The entry may still commit later if the leader regains its majority.
//! - The commands are this agent version's (unknown fields are ignored, unknown commands are
//!   not): an older agent cannot decode a message carrying a newer command, so it falls
//!   behind rather than apply something else. Mixed versions within a site are a matter for
//!   the upgrade work.

mod local;
mod network;
mod record;
mod state;
mod store;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};

pub use self::local::{LocalLink, LocalNet};
pub use self::network::{LinkDown, Message, Reply, Transport};
use self::network::{Network, Request, Response};
pub use self::state::{
    Capacity, Command, HostRecord, Outcome, Refusal, SealedSecret, SignedManifest, SiteState,
};
use self::store::{Applied, LogStore, StateMachine};
use self::types::SiteRaft;

/// The site log's timers.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// How often the leader sends to each follower when there is nothing else to send.
    pub heartbeat: Duration,
    /// A follower that hears nothing for a time drawn between these two stands for election.
    pub election_min: Duration,
    pub election_max: Duration,
    /// How long a proposal waits for its commit.
    pub propose_within: Duration,
    /// A snapshot is taken after this many entries since the last one, and the log before it
    /// dropped.
    pub snapshot_every: u64,
}

impl Default for Timers {
    /// An idle site sends two heartbeats a second to each follower, and elects a new leader
    /// within about five seconds of the old one's death (the issue asks ten): openraft lets a
    /// follower stand only once the leader's lease (`election_max`) and then an election
    /// timeout have passed since it last heard it, 4 to 5 s here.
    fn default() -> Timers {
        Timers {
            heartbeat: Duration::from_millis(500),
            election_min: Duration::from_millis(1500),
            election_max: Duration::from_millis(2500),
            propose_within: Duration::from_secs(10),
            snapshot_every: 1000,
        }
    }
}

/// A host of the site as a member of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The host's name.
    pub host: String,
    /// Its address on the site's network.
    pub addr: String,
}

/// This host's place in the site log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Receives the log and does not vote.
    NonVoter,
    Stopped,
}

/// What this host knows of the site log now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    pub term: u64,
    pub leader: Option<String>,
    /// The index of the last entry applied here.
    pub applied: Option<u64>,
    pub voters: BTreeSet<String>,
    /// Every host of the log's membership, voters and non-voters; empty until the log is formed.
    pub members: BTreeSet<String>,
}

/// Why the site log could not be opened or started.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("site log in {folder}: {source}")]
    Storage {
        folder: String,
        source: std::io::Error,
    },
    #[error("site log timers: {0}")]
    Timers(String),
    #[error("site log: {0}")]
    Raft(String),
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this host is not the site's leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("not committed within {0:?}: the leader may have lost its majority")]
    NotCommitted(Duration),
    #[error("site log stopped: {0}")]
    Stopped(String),
    /// A change of who belongs to the log that Raft refused now (one is already under way).
    #[error("membership change refused: {0}")]
    Refused(String),
}

/// Why the site log could not be formed.
#[derive(Debug, thiserror::Error)]
#[error("site log not initialized: {0}")]
pub struct InitializeError(String);

/// A wait that did not see its condition.
#[derive(Debug, thiserror::Error)]
#[error("site log: {what} not seen within {within:?} (last status {last:?})")]
pub struct WaitTimedOut {
    pub what: String,
    pub within: Duration,
    pub last: Status,
}

/// Wakes on every change of a site log's status; see [`SiteLog::changes`].
pub struct Changes(
    openraft::type_config::alias::WatchReceiverOf<SiteRaft, openraft::RaftMetrics<SiteRaft>>,
);

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    /// Waits for the next change; `false` once the site log has stopped.
    pub async fn next(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// One host's running site log; clones share it. Openraft's tasks run until
/// [`SiteLog::stop`], whatever handles are dropped.
#[derive(Clone)]
pub struct SiteLog {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    raft: Raft<SiteRaft, StateMachine>,
    applied: Arc<Mutex<Applied>>,
    propose_within: Duration,
}

impl std::fmt::Debug for SiteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteLog")
            .field("host", &self.inner.host)
            .finish_non_exhaustive()
    }
}

impl SiteLog {
    /// Opens this host's site log from `folder` (created if missing) and starts it: a host
    /// with a log rejoins its site with what it holds; a new one waits to be made a member.
    pub async fn open<T: Transport>(
        me: &str,
        folder: &Path,
        transport: T,
        timers: Timers,
    ) -> Result<SiteLog, OpenError> {
        let storage = |source| OpenError::Storage {
            folder: folder.display().to_string(),
            source,
        };
        std::fs::create_dir_all(folder).map_err(storage)?;
        let log = LogStore::open(folder).map_err(storage)?;
        let machine = StateMachine::open(folder).map_err(storage)?;
        let applied = machine.applied();
        let config = openraft::Config {
            cluster_name: "site".to_owned(),
            heartbeat_interval: millis(timers.heartbeat),
            election_timeout_min: millis(timers.election_min),
            election_timeout_max: millis(timers.election_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timers.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            // A site is a few hosts proposing a few entries a minute: openraft's defaults are
            // sized for servers taking thousands a second, and its queues and batches, sized
            // so, cost an agent its memory.
            max_payload_entries: 64,
            max_append_entries: Some(64),
            api_channel_size: Some(64),
            api_batch_capacity: 64,
            notification_channel_size: Some(256),
            state_machine_channel_size: Some(64),
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Timers(e.to_string()))?;
        let network = Network {
            transport: Arc::new(transport),
        };
        let raft = Raft::new(me.to_owned(), Arc::new(config), network, log, machine)
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        Ok(SiteLog {
            inner: Arc::new(Inner {
                host: me.to_owned(),
                raft,
                applied,
                propose_within: timers.propose_within,
            }),
        })
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Forms the site log with these voters; called once, on one host whose log is empty.
    pub async fn initialize(&self, voters: &[Member]) -> Result<(), InitializeError> {
        let members: BTreeMap<String, BasicNode> = voters
            .iter()
            .map(|m| (m.host.clone(), BasicNode::new(&m.addr)))
            .collect();
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| InitializeError(e.to_string()))
    }

    /// Adds `host` to the log as a non-voter that receives it; on the leader.
    pub async fn add_member(&self, host: &str, addr: &str) -> Result<(), ProposeError> {
        let add = self
            .inner
            .raft
            .add_learner(host.to_owned(), BasicNode::new(addr), false);
        self.management(add).await
    }

    /// Makes exactly `voters` the voters (a voter left out stays a non-voter); on the leader.
    pub async fn set_voters(&self, voters: BTreeSet<String>) -> Result<(), ProposeError> {
        let change = self
            .inner
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true);
        self.management(change).await
    }

    /// Takes `hosts`, none of them a voter, out of the log; on the leader.
    pub async fn remove_members(&self, hosts: BTreeSet<String>) -> Result<(), ProposeError> {
        let change = self
            .inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(hosts), false);
        self.management(change).await
    }

    async fn management<T>(
        &self,
        change: impl Future<Output = Result<T, RaftError<SiteRaft, ClientWriteError<SiteRaft>>>>,
    ) -> Result<(), ProposeError> {
        let within = self.inner.propose_within;
        match tokio::time::timeout(within, change).await {
            Err(_) => Err(ProposeError::NotCommitted(within)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ProposeError::Refused(e.to_string()))
            }
            Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Proposes a command; on the leader, waits for it to be committed and applied here.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let within = self.inner.propose_within;
        let write = self.inner.raft.client_write(command);
        match tokio::time::timeout(within, write).await {
            Err(_) => Err(ProposeError::NotCommitted(within)),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// The site's state as applied on this host (a follower's may be behind the leader's).
    pub fn state(&self) -> SiteState {
        self.lock_applied().state.clone()
    }

    /// Reads the site's state as applied on this host, without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&SiteState) -> T) -> T {
        f(&self.lock_applied().state)
    }

    fn lock_applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.inner.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This host's role, the term, the leader it knows and how far it has applied.
    pub fn status(&self) -> Status {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let voters: BTreeSet<String> = m.membership_config.voter_ids().collect();
        let members: BTreeSet<String> = m
            .membership_config
            .nodes()
            .map(|(id, _)| id.clone())
            .collect();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::NonVoter,
            ServerState::Shutdown => Role::Stopped,
        };
        Status {
            role,
            term: m.current_term,
            leader: m.current_leader.clone(),
            applied: m.last_applied.as_ref().map(|l| l.index()),
            voters,
            members,
        }
    }

    /// A receiver woken whenever this host's status changes (an entry applied, a new term, a
    /// new leader).
    pub fn changes(&self) -> Changes {
        Changes(self.inner.raft.metrics())
    }

    /// Waits until `condition` holds for this host's status, at most `within`.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        condition: impl Fn(&Status) -> bool,
    ) -> Result<Status, WaitTimedOut> {
        let mut changes = self.inner.raft.metrics();
        let waited = tokio::time::timeout(within, async {
            loop {
                let status = self.status();
                if condition(&status) {
                    return status;
                }
                if changes.changed().await.is_err() {
                    return self.status();
                }
            }
        })
        .await;
        match waited {
            Ok(status) if condition(&status) => Ok(status),
            _ => Err(WaitTimedOut {
                what: what.to_owned(),
                within,
                last: self.status(),
            }),
        }
    }

    /// Takes a message another host's site log sent this one, and answers it.
    pub async fn receive(&self, message: Message) -> Reply {
        let raft = &self.inner.raft;
        let answer = match message.0 {
            Request::Append(rpc) => raft
                .append_entries(rpc)
                .await
                .map(Response::Append)
                .map_err(|e| e.to_string()),
            Request::Vote(rpc) => raft
                .vote(rpc)
                .await
                .map(Response::Vote)
                .map_err(|e| e.to_string()),
            Request::PreVote(rpc) => raft
                .pre_vote(rpc)
                .await
                .map(Response::Vote)
                .map_err(|e| e.to_string()),
            Request::Snapshot { vote, meta, data } => raft
                .install_full_snapshot(
                    vote,
                    openraft::Snapshot {
                        meta,
                        snapshot: data,
                    },
                )
                .await
                .map(Response::Snapshot)
                .map_err(|e| e.to_string()),
        };
        Reply(answer.unwrap_or_else(Response::Failed))
    }

    /// Stops this host's site log; what it wrote stays in its folder.
    pub async fn stop(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(host = %self.inner.host, "site log: stopping: {e}");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

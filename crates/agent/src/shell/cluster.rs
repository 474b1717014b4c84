//! The site cluster on one host: it opens the site log once the site has two or more hosts,
//! forms it when `core::cluster::forms` says this host is the one, hands the placement the log
//! holds to the reconciler, and, while this host leads, judges which hosts are up, chooses the
//! voters and places the site's replicas (`core::cluster`), proposing what changed.
//!
//! The decision that shaped it: one loop, woken by anything it reads (the manifest, this host's
//! inventory and containers, a peer's state or loss, the site log's status) and by a tick for
//! the liveness deadlines, and each turn reads everything afresh and proposes only what differs
//! from the log, like the reconciler: a turn missed, a proposal lost with a leader, or a leader
//! replaced mid-way is made good by the next turn of whoever leads. A host that does not lead,
//! or leads a minority (its proposals do not commit), changes nothing: it runs what the log it
//! applied places on it. Liveness stays in the leader's memory; the log holds only changes of
//! its judgement (`HostUp`, `HostDown`) and the placement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_api::Manifest;
use atoll_api::agent::{AgentEvent, ClusterRole, HostCluster, Inventory, SignedManifest};
use atoll_api::site::{HostState, RunningReplica};
use tokio::sync::{Notify, watch};

use super::clock::{now_ms, now_rfc3339};
use super::outbox::Outbox;
use super::replace;
use super::session::Session;
use super::site::{Peers, Transport};
use crate::core::cluster::{Liveness, Placement, schedule, voters};
use crate::core::desired::ReplicaKey;
use crate::core::members::Members;
use crate::core::placement;
use crate::site_log::{self, Capacity, Command, Member, Role, SiteLog, Status, Timers};

/// How often a leader looks at its liveness deadlines when nothing else wakes it.
const TICK: Duration = Duration::from_millis(500);
/// How long the founder hears every other host say its log is empty before it forms one.
const FORM_AFTER: Duration = Duration::from_secs(2);

pub struct Cluster {
    pub session: Arc<Session>,
    /// The site log's folder.
    pub folder: PathBuf,
    pub manifests: watch::Receiver<Option<Arc<Manifest>>>,
    pub inventory: watch::Receiver<Inventory>,
    /// The replicas this host has containers for, from the reconciler.
    pub running: watch::Receiver<BTreeSet<ReplicaKey>>,
    /// The signed manifest this host accepted last: the leader puts it in the log.
    pub accepted: watch::Receiver<Option<SignedManifest>>,
    /// The signed manifest the log holds, for the sync loop to take when it is newer.
    pub from_site: watch::Sender<Option<SignedManifest>>,
    pub peers: Arc<Peers>,
    /// This host's account of itself, which the site channel sends its peers.
    pub own: watch::Sender<HostState>,
    /// The placement the reconciler follows: `None` while the site is one host or its log has
    /// placed nothing yet (the host then decides alone).
    pub placement: watch::Sender<Option<Arc<Placement>>>,
    /// This host's place in the site cluster, for its reports; `None` for a site of one host.
    pub status: watch::Sender<Option<HostCluster>>,
    /// How long a host may stay silent before the leader takes it for down, unless the site
    /// sets it (`cluster.failure_timeout`).
    pub failure_timeout: Duration,
    pub timers: Timers,
    pub outbox: Arc<Mutex<Outbox>>,
    pub report_ready: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

/// What a leader remembers while it leads.
struct Leading {
    term: u64,
    liveness: Liveness,
    /// The hosts it took for down, to say when that changes.
    down: BTreeSet<String>,
}

impl Cluster {
    pub async fn run(mut self) {
        let identity = self.session.identity();
        let (site, me) = (identity.site.clone(), identity.host.clone());
        let mut log: Option<SiteLog> = None;
        let mut changes = None;
        let mut leading: Option<Leading> = None;
        // The revision of the log's manifest last handed to the sync loop.
        let mut held_seen = None;
        // Since when, as founder, this host has heard every other host say its log is empty.
        let mut quiet = None;
        loop {
            let manifest = self.manifests.borrow().clone();
            let listed = manifest.as_ref().map_or(&[][..], |m| &m.content.site_hosts);
            let members = Members::new(&site, &me, listed);
            let clustered = members.clustered();
            if clustered && log.is_none() {
                let transport = Transport(self.peers.clone());
                match SiteLog::open(&me, &self.folder, transport, self.timers).await {
                    Ok(opened) => {
                        tracing::info!(folder = %self.folder.display(), "site log open");
                        self.peers.serve(opened.clone());
                        changes = Some(opened.changes());
                        log = Some(opened);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot open the site log; trying again"),
                }
            }
            let status = log.as_ref().filter(|_| clustered).map(SiteLog::status);
            let formed = status.as_ref().is_some_and(|s| !s.members.is_empty());
            let running = self.running.borrow().clone();
            let own = HostState {
                inventory: self.inventory.borrow().clone(),
                running: running.iter().map(running_replica).collect(),
                log_formed: formed,
            };
            self.own.send_if_modified(|o| replace(o, own));
            let placed = log
                .as_ref()
                .filter(|_| clustered)
                .and_then(|l| l.read(placement_of))
                .map(Arc::new);
            self.placement
                .send_if_modified(|p| replace(p, placed.clone()));
            // The log's manifest, read once per revision, for the sync loop to take if newer.
            if let Some(l) = log.as_ref().filter(|_| clustered) {
                let fresh = l.read(|s| {
                    let m = s
                        .manifest
                        .as_ref()
                        .filter(|m| Some(m.revision) != held_seen)?;
                    Some((
                        m.revision,
                        serde_json::from_slice::<SignedManifest>(&m.signed).ok(),
                    ))
                });
                if let Some((revision, signed)) = fresh {
                    held_seen = Some(revision);
                    if signed.is_some() {
                        self.from_site.send_replace(signed);
                    }
                }
            }
            let reported = status.as_ref().and_then(reported);
            self.status.send_if_modified(|s| replace(s, reported));
            match (&log, &status) {
                (Some(log), Some(_)) if !formed => self.form(log, &members, &mut quiet).await,
                // Leading once openraft says who leads: until then a new leader's proposals are
                // refused as from no leader, and each turn would only fail.
                (Some(log), Some(status))
                    if status.role == Role::Leader
                        && status.leader.as_deref() == Some(members.me.as_str()) =>
                {
                    let turn = Turn {
                        log,
                        status,
                        members: &members,
                        manifest: manifest.as_deref(),
                        placed: placed.as_deref(),
                        running: &running,
                    };
                    self.lead(turn, &mut leading).await;
                }
                _ => {
                    if let Some(was) = leading.take() {
                        self.say(format!(
                            "this host no longer leads the site (it led term {})",
                            was.term
                        ));
                    }
                }
            }
            let ticking = leading.is_some() || (clustered && !formed);
            tokio::select! {
                _ = self.shutdown.changed() => break,
                changed = self.manifests.changed() => if changed.is_err() { break },
                changed = self.inventory.changed() => if changed.is_err() { break },
                changed = self.running.changed() => if changed.is_err() { break },
                changed = self.accepted.changed() => if changed.is_err() { break },
                () = self.peers.changed() => {}
                more = next_change(&mut changes) => if !more { changes = None },
                () = tokio::time::sleep(TICK), if ticking => {}
            }
        }
        if let Some(log) = log {
            log.stop().await;
        }
    }

    /// Forms the site log with this host as its one voter, when it is the founder and every
    /// other host has said, for [`FORM_AFTER`], that its own log is not formed: the founder
    /// the control plane names changes when hosts that enrolled in the same second join, and a
    /// new founder must not form a second log beside the old founder's.
    async fn form(&self, log: &SiteLog, members: &Members, quiet_since: &mut Option<Instant>) {
        let states = self.peers.states();
        let connected = self.peers.connected();
        let others_unformed = members
            .hosts
            .keys()
            .filter(|h| **h != members.me)
            .all(|h| connected.contains(h) && states.get(h).is_some_and(|s| !s.log_formed));
        if !members.founds() || !others_unformed {
            *quiet_since = None;
            return;
        }
        let since = *quiet_since.get_or_insert_with(Instant::now);
        if since.elapsed() < FORM_AFTER {
            return;
        }
        let me = Member {
            host: members.me.clone(),
            addr: address(members, &members.me),
        };
        match log.initialize(&[me]).await {
            Ok(()) => self.say("this host formed the site's log".to_owned()),
            Err(e) => tracing::warn!(error = %e, "cannot form the site log"),
        }
    }

    /// One turn of the leader's work: liveness, membership, host records, placement.
    async fn lead(&self, turn: Turn<'_>, leading: &mut Option<Leading>) {
        let Turn {
            log,
            status,
            members,
            manifest,
            placed,
            running,
        } = turn;
        let now = now_ms();
        if leading.as_ref().is_none_or(|l| l.term != status.term) {
            self.say(format!("this host leads the site (term {})", status.term));
            *leading = Some(Leading {
                term: status.term,
                liveness: Liveness::new(now),
                down: BTreeSet::new(),
            });
        }
        let Some(lead) = leading.as_mut() else {
            return;
        };
        for (host, at) in self.peers.heard_ms() {
            lead.liveness.heard(&host, at);
        }
        // The site's own setting, else this agent's.
        let timeout_ms = manifest
            .and_then(|m| m.content.cluster)
            .and_then(|c| c.failure_timeout_ms)
            .unwrap_or_else(|| u64::try_from(self.failure_timeout.as_millis()).unwrap_or(u64::MAX));
        let me = members.me.as_str();
        let listed: BTreeSet<String> = members.hosts.keys().cloned().collect();
        let up: BTreeSet<String> = listed
            .iter()
            .filter(|h| *h == me || !lead.liveness.down(h, now, timeout_ms))
            .cloned()
            .collect();
        for host in listed.iter().filter(|h| !up.contains(*h)) {
            if lead.down.insert(host.clone()) {
                self.say(format!(
                    "host {host} is down: not heard from for {} s",
                    Duration::from_millis(timeout_ms).as_secs_f64()
                ));
            }
        }
        lead.down.retain(|h| {
            let back = up.contains(h);
            if back {
                self.say(format!("host {h} is up again"));
            }
            !back && listed.contains(h)
        });

        // Membership: every host up receives the log; the voters follow the site's size.
        for host in up.iter().filter(|h| !status.members.contains(*h)) {
            if let Err(e) = log.add_member(host, &address(members, host)).await {
                tracing::warn!(%host, error = %e, "cannot add a host to the site log");
                return;
            }
        }
        let in_log: BTreeSet<String> = status.members.intersection(&listed).cloned().collect();
        let chosen = voters(&in_log, &up, &status.voters);
        if !chosen.is_empty() && chosen != status.voters {
            match log.set_voters(chosen.clone()).await {
                Ok(()) => self.say(format!(
                    "the site's voters are now {}",
                    chosen.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                Err(e) => tracing::warn!(error = %e, "cannot change the site's voters"),
            }
            return;
        }
        let gone: BTreeSet<String> = status
            .members
            .difference(&listed)
            .filter(|h| !status.voters.contains(*h))
            .cloned()
            .collect();
        if !gone.is_empty()
            && let Err(e) = log.remove_members(gone).await
        {
            tracing::warn!(error = %e, "cannot take hosts that left the site out of its log");
        }

        // The manifest this host accepted, for the hosts that cannot reach the control plane.
        let offered = self.accepted.borrow().clone();
        let held = log.read(|s| s.manifest.as_ref().map_or(0, |m| m.revision));
        if let (Some(m), Some(signed)) = (manifest, offered)
            && m.revision > held
        {
            let record = site_log::SignedManifest {
                revision: m.revision,
                signed: serde_json::to_vec(&signed).unwrap_or_default(),
            };
            if let Err(e) = log.propose(Command::AcceptManifest(record)).await {
                tracing::warn!(error = %e, "cannot put the manifest in the site log");
                return;
            }
        }

        // What each host up is and runs; a host up that has not said yet is waited for.
        let Some(manifest) = manifest else {
            return;
        };
        let states = self.peers.states();
        let own = self.inventory.borrow().clone();
        let mut hosts = Vec::new();
        let mut runs = BTreeMap::new();
        for host in &up {
            let (inventory, replicas) = if host == me {
                (own.clone(), running.clone())
            } else {
                match states.get(host) {
                    Some(s) => (s.inventory.clone(), s.running.iter().map(key).collect()),
                    None => return,
                }
            };
            hosts.push(placement::host(manifest, host, &inventory));
            runs.insert(host.clone(), replicas);
        }
        let records = log.read(|s| s.hosts.clone());
        for host in &listed {
            let capacity = hosts.iter().find(|h| h.name == *host).map(|h| Capacity {
                millicpus: u64::from(h.inventory.cpus) * 1000,
                memory_bytes: h.inventory.memory_bytes,
            });
            let record = records.get(host);
            let command = match capacity {
                Some(capacity) if record.is_none_or(|r| !r.up || r.capacity != capacity) => {
                    Command::HostUp {
                        host: host.clone(),
                        capacity,
                    }
                }
                None if !up.contains(host) && record.is_some_and(|r| r.up) => {
                    Command::HostDown { host: host.clone() }
                }
                _ => continue,
            };
            if let Err(e) = log.propose(command).await {
                tracing::warn!(error = %e, "cannot record a host's state in the site log");
                return;
            }
        }
        let before = placed.cloned().unwrap_or_default();
        if manifest.revision < before.revision {
            // This leader's manifest is older than the one the log was placed for: wait for it.
            return;
        }
        let next = schedule(manifest, &hosts, &before, &runs);
        if next.placement == before {
            return;
        }
        let value = match serde_json::to_value(&next.placement) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the placement");
                return;
            }
        };
        match log
            .propose(Command::SetPlacement { placement: value })
            .await
        {
            Ok(_) => {
                for mv in &next.moves {
                    self.say(format!(
                        "replica {} moved from host {} to host {}: {}",
                        mv.key, mv.from, mv.to, mv.reason
                    ));
                }
                tracing::info!(
                    revision = next.placement.revision,
                    moved = next.moves.len(),
                    "placed the site's replicas"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot commit the site's placement"),
        }
    }

    /// Logs and reports an event of the site cluster.
    fn say(&self, message: String) {
        tracing::info!("{message}");
        let event = AgentEvent {
            at: now_rfc3339(),
            kind: "cluster".to_owned(),
            message,
            count: None,
        };
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.push(now_rfc3339(), vec![event], None).is_some() {
            self.report_ready.notify_one();
        }
    }
}

/// What one leader's turn reads.
struct Turn<'a> {
    log: &'a SiteLog,
    status: &'a Status,
    members: &'a Members,
    manifest: Option<&'a Manifest>,
    placed: Option<&'a Placement>,
    running: &'a BTreeSet<ReplicaKey>,
}

async fn next_change(changes: &mut Option<site_log::Changes>) -> bool {
    match changes {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// The site log's status as the host reports it.
fn reported(status: &Status) -> Option<HostCluster> {
    let role = match status.role {
        Role::Leader => ClusterRole::Leader,
        Role::Follower => ClusterRole::Voter,
        Role::NonVoter => ClusterRole::NonVoter,
        Role::Candidate => ClusterRole::Candidate,
        Role::Stopped => return None,
    };
    Some(HostCluster {
        role,
        term: status.term,
        leader: status.leader.clone(),
        voters: status.voters.iter().cloned().collect(),
    })
}

/// The placement the site log holds, if it holds one this agent can read.
fn placement_of(state: &site_log::SiteState) -> Option<Placement> {
    if state.placement.is_null() {
        return None;
    }
    serde_json::from_value(state.placement.clone())
        .inspect_err(|e| tracing::warn!(error = %e, "the site log's placement cannot be read"))
        .ok()
}

/// A member's site address as the manifest lists it (empty when it reported none: the channel
/// routes by host, and the address is only for the log's records).
fn address(members: &Members, host: &str) -> String {
    members
        .hosts
        .get(host)
        .cloned()
        .flatten()
        .unwrap_or_default()
}

fn running_replica(k: &ReplicaKey) -> RunningReplica {
    RunningReplica {
        deployment: k.deployment.clone(),
        service: k.service.clone(),
        replica: k.index,
    }
}

fn key(r: &RunningReplica) -> ReplicaKey {
    ReplicaKey {
        deployment: r.deployment.clone(),
        service: r.service.clone(),
        index: r.replica,
    }
}

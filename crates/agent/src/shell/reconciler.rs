//! The reconcile loop: the manifest and the runtime's containers in, the core's plan executed,
//! status and events out to the outbox.
//!
//! It runs whether or not the control plane can be reached: it needs only the kept manifest
//! and the local container runtime. A pass runs when the manifest changes, when the runtime
//! reports something about one of this site's containers (a crash restarts within a second),
//! when the core asked to look again (a restart backoff ending), and every `interval` anyway,
//! which catches anything an event missed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::Manifest;
use atoll_api::agent::{AgentEvent, HostCluster, HostStatus, Inventory};
use atoll_runtime::{Container, Driver, State};
use tokio::sync::{Notify, watch};

use super::clock::{now_ms, now_rfc3339};
use super::conditions::Conditions;
use super::outbox::Outbox;
use super::prober::{HealthBook, Target};
use crate::core::cluster::Placement;
use crate::core::desired::ReplicaKey;
use crate::core::secrets::OpenedSecrets;
use crate::core::{self, Action, Memory, Replica};
use base64::Engine as _;

/// A kill signal gets this long before the runtime kills a container outright.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After a failed pull, the next try waits this long.
const PULL_RETRY: Duration = Duration::from_secs(30);
/// Passes that acted run again at once to confirm; this bounds that chain.
const MAX_CHAINED_PASSES: usize = 5;

pub struct Reconciler {
    pub driver: Arc<dyn Driver>,
    pub site: String,
    /// This host's id in its site: placement gives replicas to hosts by it.
    pub host: String,
    /// What this host is now; a change places the manifest's replicas again.
    pub inventory: watch::Receiver<Inventory>,
    /// Where the host's `/dev` is found (`/` but in tests): device nodes are mapped from it.
    pub host_root: PathBuf,
    pub files_dir: PathBuf,
    /// Where secret values are written (tmpfs) for containers to mount.
    pub secrets_dir: PathBuf,
    /// This host's key, which opens the secrets sealed to it.
    pub sealing: Arc<atoll_seal::Identity>,
    pub manifests: watch::Receiver<Option<Arc<Manifest>>>,
    /// The site cluster's placement, when the site has one: this host runs what it places here.
    pub placement: watch::Receiver<Option<Arc<Placement>>>,
    /// The replicas this host has containers for, as last listed, for the site's leader.
    pub running: watch::Sender<BTreeSet<ReplicaKey>>,
    /// This host's place in its site cluster, reported with its status (`None` alone).
    pub cluster: watch::Receiver<Option<HostCluster>>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub report_ready: Arc<Notify>,
    /// Why the newest manifest offered was refused, shared with the sync loop.
    pub refused: Arc<Mutex<Option<String>>>,
    /// The host's conditions, carried in every status.
    pub conditions: Conditions,
    pub interval: Duration,
    /// Running containers with a health check, for the prober.
    pub probe_targets: watch::Sender<Vec<Target>>,
    /// The prober's verdicts, and its signal that one changed.
    pub health: HealthBook,
    pub health_changed: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// What the loop remembers between passes.
#[derive(Default)]
struct Pass {
    memory: Memory,
    pull_errors: BTreeMap<String, String>,
    last_status: Option<HostStatus>,
    runtime_error: Option<String>,
    /// The secrets opened from the manifest of this revision.
    opened: Option<(u64, OpenedSecrets)>,
    /// The manifest revision whose waiting-for-secrets events were said.
    held_said: Option<u64>,
    /// The deployments not placed on this host, and why, as last said.
    unplaced_said: BTreeMap<String, String>,
}

impl Reconciler {
    pub async fn run(mut self) {
        let mut pass = Pass::default();
        let mut events = None;
        loop {
            if events.is_none() {
                events = self
                    .driver
                    .events(core::desired::LABEL_SITE, &self.site)
                    .await
                    .ok();
            }
            let mut requeue = None;
            for _ in 0..MAX_CHAINED_PASSES {
                let (acted, again) = self.pass(&mut pass).await;
                requeue = again;
                if !acted {
                    break;
                }
            }
            let wait = requeue
                .map_or(self.interval, Duration::from_millis)
                .min(self.interval);
            tokio::select! {
                _ = self.shutdown.changed() => return,
                changed = self.manifests.changed() => if changed.is_err() { return },
                changed = self.placement.changed() => if changed.is_err() { return },
                changed = self.cluster.changed() => if changed.is_err() { return },
                changed = self.inventory.changed() => if changed.is_err() { return },
                () = self.health_changed.notified() => {}
                () = self.conditions.changed() => {}
                event = recv(&mut events) => if event.is_none() {
                    // The runtime's event stream ended (daemon restart): subscribe again next
                    // round, after the periodic pass has had its say.
                    events = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look at the world. Returns whether anything was done, and when the core wants to
    /// look again.
    async fn pass(&mut self, pass: &mut Pass) -> (bool, Option<u64>) {
        // No manifest accepted yet (a new or reinstalled agent) means "not known yet", not
        // "run nothing": planning now would remove the site's running containers, only to
        // create them again when the manifest arrives.
        let Some(manifest) = self.manifests.borrow().clone() else {
            // Without a manifest there is no state to report, but a condition (a kept
            // manifest found damaged) is: the host says it runs no revision it knows of.
            let conditions = self.conditions.list();
            if !conditions.is_empty() {
                let status = HostStatus {
                    conditions,
                    ..HostStatus::default()
                };
                self.queue(pass, Vec::new(), Some(status));
            }
            return (false, None);
        };
        let inventory = self.inventory.borrow().clone();
        let me = core::placement::host(&manifest, &self.host, &inventory);
        let placed = self.placement.borrow().clone();
        let (mut desired, unplaced) = core::placement::for_host(
            &self.site,
            &manifest,
            &self.files_dir,
            &me,
            placed.as_deref(),
            &self.host_root,
        );
        self.say_unplaced(unplaced, pass);
        let opened = self.open_secrets(&manifest, pass);
        core::secrets::attach(
            &self.site,
            &manifest,
            &self.secrets_dir,
            &opened,
            &mut desired,
        );
        let applied_revision = manifest.revision;
        // After a reboot tmpfs is empty while the containers remain: put their secrets back
        // before anything starts them, or the runtime would mount an empty folder instead.
        for file in desired
            .iter()
            .filter(|r| r.missing_secrets.is_empty())
            .flat_map(|r| &r.secret_files)
            .filter(|f| !f.host_path.exists())
        {
            if let Err(e) = write_secret(&file.host_path, &file.content) {
                tracing::warn!(path = %file.host_path.display(), error = %e, "cannot write a secret file");
            }
        }
        // Likewise the rendered files, for an agent reinstalled in an emptied data folder: the
        // containers it adopts mount them from where it keeps them again. (One reinstalled in
        // another folder finds them mounted from elsewhere; the plan recreates those.)
        for file in desired
            .iter()
            .flat_map(|r| &r.files)
            .filter(|f| !f.host_path.exists())
        {
            if let Err(e) =
                super::files::write_atomic(&file.host_path, file.content.as_bytes(), file.mode)
            {
                tracing::warn!(path = %file.host_path.display(), error = %e, "cannot write a file");
            }
        }
        let observed = match self
            .driver
            .list(core::desired::LABEL_SITE, &self.site)
            .await
        {
            Ok(list) => {
                pass.runtime_error = None;
                list
            }
            Err(e) => {
                // Said once per outage, not at every retry.
                let message = e.to_string();
                if pass.runtime_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "cannot list containers; retrying");
                    self.queue(pass, vec![event("runtime", message.clone())], None);
                    pass.runtime_error = Some(message);
                }
                return (false, Some(2_000));
            }
        };
        let running: BTreeSet<ReplicaKey> = observed.iter().filter_map(ReplicaKey::of).collect();
        self.running
            .send_if_modified(|r| super::replace(r, running));
        let mut images = BTreeSet::new();
        for image in desired
            .iter()
            .map(|r| r.spec.image.as_str())
            .collect::<BTreeSet<_>>()
        {
            if self.driver.image_present(image).await.unwrap_or(false) {
                images.insert(image.to_owned());
            }
        }
        forget_stable(&mut pass.memory, &observed);
        // Failed creations of replicas no longer wanted are of no use.
        pass.memory
            .create_failures
            .retain(|name, _| desired.iter().any(|r| r.spec.name == *name));
        let mut plan = core::plan(&desired, &observed, &images, &pass.memory, now_ms());
        self.hold_without_secrets(&mut plan, &desired, applied_revision, pass);
        if plan.actions.is_empty() {
            // Nothing to change: time to pull what an upcoming wave will need and, at a site of
            // several hosts, what may move here when another host dies.
            let mut ahead = manifest.content.prefetch.clone();
            if placed.is_some() {
                ahead.extend(core::placement::standby_images(&manifest, &me));
                ahead.sort();
                ahead.dedup();
            }
            self.prefetch(&ahead, pass).await;
            // Settled: this is the state worth reporting.
            let fresh = probe_targets(&manifest, &desired, &observed);
            self.probe_targets
                .send_if_modified(|targets| super::replace(targets, fresh));
            let mut replicas = core::status(
                &desired,
                &observed,
                &images,
                &pass.memory,
                &pass.pull_errors,
            );
            let book = self
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for r in replicas
                .iter_mut()
                .filter(|r| r.state == atoll_api::agent::ReplicaState::Running)
            {
                r.health = r.container_id.as_ref().and_then(|id| book.get(id).cloned());
            }
            let signalled = self.refresh_secrets(&desired, &observed).await;
            self.queue(pass, signalled, None);
            collect_secret_garbage(&self.secrets_dir, &self.site, &desired);
            let status = HostStatus {
                applied_revision,
                secrets: desired
                    .iter()
                    .filter(|r| r.missing_secrets.is_empty())
                    .flat_map(|r| r.secret_versions.clone())
                    .collect(),
                replicas,
                refused: self
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                dropped_reports: 0,
                conditions: self.conditions.list(),
                cluster: self.cluster.borrow().clone(),
                free: Some(core::placement::free(&manifest, &inventory, &desired)),
            };
            self.queue(pass, Vec::new(), Some(status));
            collect_garbage(&self.files_dir, &desired);
            return (false, plan.requeue_after_ms);
        }
        let mut happened = Vec::new();
        for action in &plan.actions {
            happened.push(self.execute(action, &observed, pass).await);
        }
        self.queue(pass, happened, None);
        (true, plan.requeue_after_ms)
    }

    async fn execute(
        &self,
        action: &Action,
        observed: &[Container],
        pass: &mut Pass,
    ) -> AgentEvent {
        let now = now_ms();
        match action {
            Action::Pull { image } => match self.driver.pull(image).await {
                Ok(()) => {
                    pass.pull_errors.remove(image);
                    event("pull", format!("pulled {image}"))
                }
                Err(e) => {
                    let retry = u64::try_from(PULL_RETRY.as_millis()).unwrap_or(u64::MAX);
                    pass.memory
                        .pull_not_before_ms
                        .insert(image.clone(), now.saturating_add(retry));
                    pass.pull_errors.insert(image.clone(), e.to_string());
                    tracing::warn!(%image, error = %e, "pull failed; what runs keeps running");
                    event("pull", format!("pull of {image} failed: {e}"))
                }
            },
            Action::Create { replica } => {
                pass.memory.forget(&replica.spec.name);
                match self.create(replica, pass, now).await {
                    Ok(id) => event(
                        "container",
                        format!("created {} ({})", replica.spec.name, short(&id)),
                    ),
                    Err(e) => event(
                        "container",
                        format!("cannot create {}: {e}", replica.spec.name),
                    ),
                }
            }
            Action::Start { id, name } => {
                pass.memory.record_restart(name, now);
                match (self.driver.start(id).await, exit_code(observed, id)) {
                    (Ok(()), Some(code)) => event(
                        "container",
                        format!("restarted {name}, which had exited with code {code}"),
                    ),
                    (Ok(()), None) => event("container", format!("started {name}")),
                    (Err(e), _) => event("container", format!("cannot start {name}: {e}")),
                }
            }
            Action::Replace { old_id, replica } => {
                pass.memory.forget(&replica.spec.name);
                let name = &replica.spec.name;
                if let Err(e) = self.remove(old_id).await {
                    return event("container", format!("cannot remove the old {name}: {e}"));
                }
                match self.create(replica, pass, now).await {
                    Ok(id) => event(
                        "container",
                        format!(
                            "replaced {name} with {} ({})",
                            replica.spec.image,
                            short(&id)
                        ),
                    ),
                    Err(e) => event("container", format!("cannot create {name}: {e}")),
                }
            }
            Action::Recreate { old_id, replica } => {
                let name = &replica.spec.name;
                pass.memory.record_restart(name, now);
                let exited = exit_code(observed, old_id)
                    .map(|code| format!(" had exited with code {code} and"))
                    .unwrap_or_default();
                if let Err(e) = self.remove(old_id).await {
                    return event("container", format!("cannot remove the old {name}: {e}"));
                }
                match self.create(replica, pass, now).await {
                    Ok(id) => event(
                        "container",
                        format!(
                            "recreated {name} ({}): it{exited} mounted files from where this \
                             agent no longer keeps them",
                            short(&id)
                        ),
                    ),
                    Err(e) => event("container", format!("cannot create {name}: {e}")),
                }
            }
            Action::Remove { id, name } => {
                pass.memory.forget(name);
                pass.memory.created(name);
                match self.remove(id).await {
                    Ok(()) => event("container", format!("removed {name}")),
                    Err(e) => event("container", format!("cannot remove {name}: {e}")),
                }
            }
        }
    }

    /// Pulls the images a rollout announced, one at a time, skipping present ones and those
    /// whose last pull failed recently.
    async fn prefetch(&self, images: &[String], pass: &mut Pass) {
        for image in images {
            let now = now_ms();
            let waiting = pass
                .memory
                .pull_not_before_ms
                .get(image)
                .is_some_and(|t| *t > now);
            if waiting || self.driver.image_present(image).await.unwrap_or(true) {
                continue;
            }
            let happened = self
                .execute(
                    &Action::Pull {
                        image: image.clone(),
                    },
                    &[],
                    pass,
                )
                .await;
            self.queue(pass, vec![happened], None);
        }
    }

    /// Stops a container gracefully, then removes it.
    async fn remove(&self, id: &str) -> Result<(), atoll_runtime::Error> {
        self.driver.stop(id, STOP_GRACE).await?;
        self.driver.remove(id).await
    }

    /// Writes the replica's files and secrets, then creates and starts its container. A
    /// failure before the container exists is remembered, so the next try waits (a start
    /// that fails leaves a container, which restarts with the restart backoff).
    async fn create(&self, replica: &Replica, pass: &mut Pass, now: u64) -> Result<String, String> {
        let name = &replica.spec.name;
        let created = self.create_container(replica).await;
        match &created {
            Ok(_) => pass.memory.created(name),
            Err(e) => pass.memory.record_failed_create(name, now, e.clone()),
        }
        let id = created?;
        self.driver.start(&id).await.map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The files, the secrets and the container of `replica`, not started.
    async fn create_container(&self, replica: &Replica) -> Result<String, String> {
        for file in &replica.files {
            super::files::write_atomic(&file.host_path, file.content.as_bytes(), file.mode)
                .map_err(|e| format!("{}: {e}", file.host_path.display()))?;
        }
        for file in &replica.secret_files {
            write_secret(&file.host_path, &file.content)
                .map_err(|e| format!("{}: {e}", file.host_path.display()))?;
        }
        self.driver
            .create(&replica.spec)
            .await
            .map_err(|e| e.to_string())
    }

    /// The secrets of the manifest, opened with this host's key (once per revision). A secret
    /// that does not open is said as an event, without any value; its services wait.
    fn open_secrets(&self, manifest: &Manifest, pass: &mut Pass) -> OpenedSecrets {
        if let Some((revision, opened)) = &pass.opened
            && *revision == manifest.revision
        {
            return opened.clone();
        }
        let mut opened = OpenedSecrets::new();
        let mut problems = Vec::new();
        if !manifest.sealed.is_empty()
            && let Err(e) = prepare_secrets_dir(&self.secrets_dir)
        {
            problems.push(event("secret", e));
        } else {
            for sealed in &manifest.sealed {
                match open_one(&self.sealing, &self.site, sealed) {
                    Ok(values) => {
                        opened.insert(
                            sealed.name.clone(),
                            core::secrets::Opened {
                                version: sealed.version,
                                values,
                            },
                        );
                    }
                    Err(e) => problems.push(event(
                        "secret",
                        format!(
                            "secret {} version {} cannot be opened here: {e}",
                            sealed.name, sealed.version
                        ),
                    )),
                }
            }
        }
        for p in &problems {
            tracing::warn!(message = %p.message, "secret");
        }
        self.queue(pass, problems, None);
        pass.opened = Some((manifest.revision, opened.clone()));
        opened
    }

    /// Leaves alone the replicas whose secrets this host does not have: creating them would
    /// start them without; what runs keeps running. Said once per manifest revision.
    fn hold_without_secrets(
        &self,
        plan: &mut core::Plan,
        desired: &[Replica],
        revision: u64,
        pass: &mut Pass,
    ) {
        let held: BTreeMap<&str, &Replica> = desired
            .iter()
            .filter(|r| !r.missing_secrets.is_empty())
            .map(|r| (r.spec.name.as_str(), r))
            .collect();
        if held.is_empty() {
            return;
        }
        plan.actions.retain(|a| match a {
            Action::Create { replica }
            | Action::Replace { replica, .. }
            | Action::Recreate { replica, .. } => !held.contains_key(replica.spec.name.as_str()),
            _ => true,
        });
        if pass.held_said != Some(revision) {
            pass.held_said = Some(revision);
            let said = held
                .values()
                .map(|r| {
                    event(
                        "secret",
                        format!(
                            "{} waits for secret {}, not available on this host",
                            r.spec.name,
                            r.missing_secrets.join(", ")
                        ),
                    )
                })
                .collect();
            self.queue(pass, said, None);
        }
    }

    /// For services that take a signal when a secret changes: rewrites the changed secret
    /// files in place (the mounts see them) and signals the running containers.
    async fn refresh_secrets(
        &self,
        desired: &[Replica],
        observed: &[Container],
    ) -> Vec<AgentEvent> {
        let mut happened = Vec::new();
        for r in desired.iter().filter(|r| r.missing_secrets.is_empty()) {
            let Some(signal) = &r.on_secret_change else {
                continue;
            };
            let Some(running) = observed
                .iter()
                .find(|c| c.name == r.spec.name && c.state == State::Running)
            else {
                continue;
            };
            let mut changed = false;
            for file in &r.secret_files {
                match write_secret(&file.host_path, &file.content) {
                    Ok(wrote) => changed |= wrote,
                    Err(e) => happened.push(event(
                        "secret",
                        format!(
                            "cannot write a secret of {}: {}: {e}",
                            r.spec.name,
                            file.host_path.display()
                        ),
                    )),
                }
            }
            if changed {
                let versions: Vec<String> = r
                    .secret_versions
                    .iter()
                    .map(|(n, v)| format!("{n} version {v}"))
                    .collect();
                happened.push(match self.driver.signal(&running.id, signal).await {
                    Ok(()) => event(
                        "secret",
                        format!(
                            "sent {signal} to {}: its secrets now at {}",
                            r.spec.name,
                            versions.join(", ")
                        ),
                    ),
                    Err(e) => event("secret", format!("cannot signal {}: {e}", r.spec.name)),
                });
            }
        }
        happened
    }

    /// Queues events, and the status if it differs from the last one queued.
    /// One event for each deployment newly kept off this host, with the reason.
    fn say_unplaced(&self, unplaced: BTreeMap<String, String>, pass: &mut Pass) {
        if unplaced == pass.unplaced_said {
            return;
        }
        let events = unplaced
            .iter()
            .filter(|(d, why)| pass.unplaced_said.get(*d) != Some(*why))
            .map(|(d, why)| {
                tracing::warn!(deployment = %d, %why, "not run on this host");
                AgentEvent {
                    at: now_rfc3339(),
                    kind: "placement".into(),
                    message: format!("deployment {d} is not run on this host: {why}"),
                    count: None,
                }
            })
            .collect();
        pass.unplaced_said = unplaced;
        self.queue(pass, events, None);
    }

    fn queue(&self, pass: &mut Pass, events: Vec<AgentEvent>, status: Option<HostStatus>) {
        let status = status.filter(|s| pass.last_status.as_ref() != Some(s));
        if status.is_none() && events.is_empty() {
            return;
        }
        if let Some(s) = &status {
            pass.last_status = Some(s.clone());
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.push(now_rfc3339(), events, status).is_some() {
            self.report_ready.notify_one();
        }
    }
}

/// The running containers whose service has a health check.
fn probe_targets(manifest: &Manifest, desired: &[Replica], observed: &[Container]) -> Vec<Target> {
    desired
        .iter()
        .filter_map(|r| {
            let service = manifest.service(&r.key.deployment, &r.key.service)?;
            let health = service.health.clone()?;
            let c = observed
                .iter()
                .find(|c| c.name == r.spec.name && c.state == State::Running)?;
            let started_ms = c
                .started_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .map_or(0, super::clock::millis_since_epoch);
            Some(Target {
                container_id: c.id.clone(),
                started_ms,
                health,
            })
        })
        .collect()
}

/// The exit code of container `id` in `observed`, if it exited.
fn exit_code(observed: &[Container], id: &str) -> Option<i64> {
    observed
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| match c.state {
            State::Exited { code } => Some(code),
            _ => None,
        })
}

async fn recv(
    events: &mut Option<tokio::sync::mpsc::Receiver<atoll_runtime::Event>>,
) -> Option<atoll_runtime::Event> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A replica that has run long enough starts over with a clean restart record.
fn forget_stable(memory: &mut Memory, observed: &[Container]) {
    let now = now_ms();
    for c in observed {
        let started = c
            .started_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        if c.state == State::Running
            && started.is_some_and(|t| core::is_stable(super::clock::millis_since_epoch(t), now))
        {
            memory.forget(&c.name);
        }
    }
}

/// Opens one sealed secret: its values by key.
fn open_one(
    sealing: &atoll_seal::Identity,
    site: &str,
    sealed: &atoll_api::SealedSecret,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let plain = atoll_seal::open(
        sealing,
        &sealed.sealed,
        &atoll_seal::secret_aad(site, &sealed.name, sealed.version),
    )
    .map_err(|e| e.to_string())?;
    let encoded: BTreeMap<String, String> =
        serde_json::from_slice(&plain).map_err(|_| "its contents are malformed".to_owned())?;
    encoded
        .into_iter()
        .map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(|bytes| (k, bytes))
                .map_err(|_| "its contents are malformed".to_owned())
        })
        .collect()
}

/// Linux's tmpfs magic number (`statfs.f_type`).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Makes the secrets folder (mode 0700) and checks it is on tmpfs: a secret value never
/// touches a disk.
fn prepare_secrets_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("secrets folder {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("secrets folder {}: {e}", dir.display()))?;
    let fs =
        rustix::fs::statfs(dir).map_err(|e| format!("secrets folder {}: {e}", dir.display()))?;
    #[allow(clippy::unnecessary_cast)]
    if fs.f_type as i64 != TMPFS_MAGIC {
        return Err(format!(
            "secrets folder {} is not on tmpfs: secrets are not written to disk; give --secrets-dir on a tmpfs",
            dir.display()
        ));
    }
    Ok(())
}

/// Writes a secret file (mode 0400) if its content differs; returns whether it did. An
/// existing file is rewritten in place, so a bind mount of it shows the new value.
fn write_secret(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))?;
    } else {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(path)?;
        f.write_all(content)?;
    }
    Ok(true)
}

/// Removes the secrets of containers no longer desired (an application that left the site).
fn collect_secret_garbage(secrets_dir: &Path, site: &str, desired: &[Replica]) {
    let keep: BTreeSet<PathBuf> = desired
        .iter()
        .map(|r| core::secrets::replica_dir(secrets_dir, site, r))
        .collect();
    let prefix = format!("atoll_{site}_");
    let Ok(entries) = std::fs::read_dir(secrets_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        if ours && !keep.contains(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes file folders no desired replica uses (old spec hashes, removed services).
fn collect_garbage(files_dir: &Path, desired: &[Replica]) {
    let keep: BTreeSet<PathBuf> = desired
        .iter()
        .flat_map(|r| {
            r.files
                .iter()
                .filter_map(|f| f.host_path.parent().map(Path::to_path_buf))
        })
        .collect();
    let Ok(containers) = std::fs::read_dir(files_dir) else {
        return;
    };
    for container in containers.flatten() {
        let Ok(hashes) = std::fs::read_dir(container.path()) else {
            continue;
        };
        for hash in hashes.flatten() {
            if !keep.contains(&hash.path()) {
                let _ = std::fs::remove_dir_all(hash.path());
            }
        }
        let _ = std::fs::remove_dir(container.path());
    }
}

fn event(kind: &str, message: String) -> AgentEvent {
    AgentEvent {
        at: now_rfc3339(),
        kind: kind.to_owned(),
        message,
        count: None,
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

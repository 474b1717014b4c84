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
use atoll_api::agent::{AgentEvent, HostStatus};
use atoll_runtime::{Container, Driver, State};
use tokio::sync::{Notify, watch};

use super::clock::{now_ms, now_rfc3339};
use super::outbox::Outbox;
use super::prober::{HealthBook, Target};
use crate::core::{self, Action, Memory, Replica};

/// A kill signal gets this long before the runtime kills a container outright.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After a failed pull, the next try waits this long.
const PULL_RETRY: Duration = Duration::from_secs(30);
/// Passes that acted run again at once to confirm; this bounds that chain.
const MAX_CHAINED_PASSES: usize = 5;

pub struct Reconciler {
    pub driver: Arc<dyn Driver>,
    pub site: String,
    pub files_dir: PathBuf,
    pub manifests: watch::Receiver<Option<Arc<Manifest>>>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub report_ready: Arc<Notify>,
    /// Why the newest manifest offered was refused, shared with the sync loop.
    pub refused: Arc<Mutex<Option<String>>>,
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
                () = self.health_changed.notified() => {}
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
            return (false, None);
        };
        let desired = core::desired(&self.site, &manifest, &self.files_dir);
        let applied_revision = manifest.revision;
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
        let plan = core::plan(&desired, &observed, &images, &pass.memory, now_ms());
        if plan.actions.is_empty() {
            // Nothing to change: time to pull what an upcoming wave will need.
            self.prefetch(&manifest.content.prefetch, pass).await;
            // Settled: this is the state worth reporting.
            self.probe_targets.send_if_modified(|targets| {
                let fresh = probe_targets(&manifest, &desired, &observed);
                let changed = *targets != fresh;
                *targets = fresh;
                changed
            });
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
            let status = HostStatus {
                applied_revision,
                replicas,
                refused: self
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                dropped_reports: 0,
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
                match self.create(replica).await {
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
                let exited = observed
                    .iter()
                    .find(|c| c.id == *id)
                    .and_then(|c| match c.state {
                        State::Exited { code } => Some(code),
                        _ => None,
                    });
                match (self.driver.start(id).await, exited) {
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
                match self.create(replica).await {
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
            Action::Remove { id, name } => {
                pass.memory.forget(name);
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

    /// Writes the replica's files, then creates and starts its container.
    async fn create(&self, replica: &Replica) -> Result<String, String> {
        for file in &replica.files {
            super::files::write_atomic(&file.host_path, file.content.as_bytes(), file.mode)
                .map_err(|e| format!("{}: {e}", file.host_path.display()))?;
        }
        let id = self
            .driver
            .create(&replica.spec)
            .await
            .map_err(|e| e.to_string())?;
        self.driver.start(&id).await.map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Queues events, and the status if it differs from the last one queued.
    fn queue(&self, pass: &mut Pass, events: Vec<AgentEvent>, status: Option<HostStatus>) {
        let status = status.filter(|s| pass.last_status.as_ref() != Some(s));
        if status.is_none() && events.is_empty() {
            return;
        }
        if let Some(s) = &status {
            pass.last_status = Some(s.clone());
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        match outbox.push(now_rfc3339(), events, status) {
            Ok(_) => self.report_ready.notify_one(),
            Err(e) => tracing::error!(error = %e, "cannot queue a report"),
        }
    }
}

/// The running containers whose service has a health check.
fn probe_targets(manifest: &Manifest, desired: &[Replica], observed: &[Container]) -> Vec<Target> {
    desired
        .iter()
        .filter_map(|r| {
            let service = manifest
                .content
                .applications
                .iter()
                .filter(|a| a.deployment == r.key.deployment)
                .flat_map(|a| &a.services)
                .find(|s| s.name == r.key.service)?;
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
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

//! The agent's IO: enrollment and identity, the manifest long-poll, the reconcile loop over the
//! container runtime, and the outbox of reports. Everything it decides, it asks `core`.
//!
//! Start-up order matters for offline autonomy: the kept manifest is loaded and the reconciler
//! starts before the control plane is contacted, so a host that reboots with no network brings
//! its containers back (adopting those still running, untouched) on its own. A kept manifest
//! found damaged does not stop the agent: it is reported, and nothing is touched until the
//! control plane sends a fresh one.

mod client;
pub mod clock;
mod cluster;
mod conditions;
mod detach;
pub(crate) mod files;
pub mod identity;
pub mod inventory;
pub mod manifest;
pub mod outbox;
mod prober;
mod reconciler;
mod reporter;
mod session;
mod site;
mod sync;
mod watcher;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::agent::{ConditionKind, JoinToken, RuntimeInventory};
use atoll_runtime::Driver;
use sha2::Digest as _;
use tokio::sync::{Notify, watch};

use self::conditions::Conditions;
use self::identity::Identity;
use self::manifest::{Kept, Loaded};
use self::outbox::Outbox;
use self::session::Session;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A problem on this host: the data folder, a key, the configuration.
    #[error("{0}")]
    Local(String),
    /// The control plane could not be reached, or failed; try again later.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The control plane is shedding load and asked to be asked again after this long.
    #[error("the control plane is busy; asked to retry in {} s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    /// The control plane said no.
    #[error("refused by the control plane ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The control plane's answer made no sense.
    #[error("{0}")]
    Protocol(String),
    /// The control plane detached this host from its site (the site was deleted): its
    /// identity will never be accepted again.
    #[error("this host was detached from its site: {0}")]
    Detached(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Needed only to enroll; afterwards the identity remembers it.
    pub control_url: Option<String>,
    pub token: Option<String>,
    /// How often the reconciler looks even when nothing was signalled.
    pub interval: Duration,
    /// How long each manifest long-poll is held by the control plane.
    pub poll_wait: Duration,
    /// Reports kept on disk while offline before the oldest are dropped.
    pub outbox_capacity: usize,
    /// Where secret values are written for containers to mount: must be on tmpfs. Without
    /// it, `$RUNTIME_DIRECTORY/secrets` (systemd's `RuntimeDirectory=`) or a folder of its own
    /// under /dev/shm.
    pub secrets_dir: Option<PathBuf>,
    /// Where the host's `/dev`, `/sys` and `/etc` are read (`ATOLL_HOST_ROOT`): `/`, or the
    /// host's root mounted into the agent's container, or a test's made-up host.
    pub host_root: PathBuf,
    /// How long a device gone from `/dev` is still reported (missing) before it is dropped.
    pub device_grace: Duration,
    /// Where the agent listens for the other hosts of its site (`--listen-site`), once the
    /// site has two or more; reported to the control plane, which lists it for them when it
    /// names one address (not `0.0.0.0`).
    pub listen_site: std::net::SocketAddr,
    /// Other hosts' site addresses to dial besides those the manifest lists (`--peer`).
    pub peers: Vec<String>,
    /// How long the site's leader waits on a silent host before it takes it for down and
    /// places its replicas elsewhere (`--site-failure-timeout`).
    pub site_failure_timeout: Duration,
}

impl Config {
    /// The site address reported to the control plane: `listen_site` unless it names every
    /// address of the host, which peers cannot dial.
    pub fn site_address(&self) -> Option<String> {
        (!self.listen_site.ip().is_unspecified()).then(|| self.listen_site.to_string())
    }

    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            control_url: None,
            token: None,
            interval: Duration::from_secs(10),
            poll_wait: Duration::from_secs(30),
            outbox_capacity: 10_000,
            secrets_dir: None,
            host_root: PathBuf::from("/"),
            device_grace: Duration::from_secs(60),
            listen_site: std::net::SocketAddr::from((
                [0, 0, 0, 0],
                atoll_api::site::DEFAULT_SITE_PORT,
            )),
            peers: Vec::new(),
            site_failure_timeout: Duration::from_secs(10),
        }
    }
}

/// Runs the agent until `shutdown` turns true, or until the control plane says this host was
/// detached from its site: then what atoll kept here is removed, and the answer is
/// [`AgentError::Detached`].
pub async fn run(
    config: Config,
    driver: Arc<dyn Driver>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| AgentError::Local(format!("{}: {e}", dir.display())))?;
    let identity = match Identity::load(dir)? {
        Some(identity) => {
            if config.token.is_some() {
                tracing::info!(site = %identity.site, host = %identity.host, "already enrolled; the join token is not needed");
            }
            identity
        }
        None => {
            let (Some(url), Some(token)) = (&config.control_url, &config.token) else {
                return Err(AgentError::Local(format!(
                    "{} holds no identity: to enroll, give --control URL and --token (from `atoll token create --site NAME`)",
                    dir.display()
                )));
            };
            let token = JoinToken::parse(token).map_err(AgentError::Local)?;
            let inventory = atoll_api::agent::Inventory {
                site_address: config.site_address(),
                ..collect_inventory(&config.host_root, dir, driver.as_ref()).await?
            };
            let identity = loop {
                match Identity::enroll(dir, url, &token, inventory.clone()).await {
                    Err(AgentError::Busy { retry_after }) => {
                        let pause =
                            crate::core::retry::after_busy(retry_after, &mut rand::thread_rng());
                        tracing::info!(?pause, "the control plane is busy; enrolling later");
                        tokio::select! {
                            _ = shutdown.changed() => return Ok(()),
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    other => break other?,
                }
            };
            tracing::info!(site = %identity.site, host = %identity.host, "enrolled");
            identity
        }
    };
    let site = identity.site.clone();
    let host = identity.host.clone();
    let sealing = identity.sealing.clone();
    let secrets_dir = config
        .secrets_dir
        .clone()
        .unwrap_or_else(|| default_secrets_dir(dir));
    let kept = Kept::new(dir);
    let conditions = Conditions::default();
    let mut outbox = Outbox::open(&dir.join("outbox"), config.outbox_capacity)?;
    let mut kept_signed = None;
    let manifest = match kept.load(&identity.signing_key, &site) {
        Loaded::Kept(m, signed) => {
            tracing::info!(revision = m.revision, "carrying on with the kept manifest");
            kept_signed = Some(signed);
            Some(m)
        }
        // Set aside at an earlier start, and no fresh manifest kept since: still damaged.
        Loaded::None if kept.aside().exists() => {
            conditions.raise(
                ConditionKind::KeptManifestDamaged,
                format!(
                    "the kept manifest was found damaged at an earlier start (kept as {}) and no fresh manifest was kept since; what runs is left untouched until the control plane sends one",
                    kept.aside().display()
                ),
            );
            None
        }
        Loaded::None => None,
        // Without a manifest the reconciler does nothing and the sync loop asks for the
        // site's current one (have=0), which replaces the damaged file once verified.
        Loaded::Damaged(why) => {
            let why = match kept.set_aside() {
                Ok(aside) => format!("{why} (the damaged file is kept as {})", aside.display()),
                Err(e) => format!("{why} (it cannot be moved aside: {e})"),
            };
            tracing::error!(%why, "the kept manifest is damaged");
            outbox.push(
                clock::now_rfc3339(),
                vec![atoll_api::agent::AgentEvent {
                    at: clock::now_rfc3339(),
                    kind: "manifest".to_owned(),
                    message: why.clone(),
                    count: None,
                }],
                None,
            );
            conditions.raise(ConditionKind::KeptManifestDamaged, why);
            None
        }
    };
    let (manifests, manifest_rx) = watch::channel(manifest.map(Arc::new));
    let site_manifests = manifest_rx.clone();
    let outbox = Arc::new(Mutex::new(outbox));
    let report_ready = Arc::new(Notify::new());
    let refused = Arc::new(Mutex::new(None));
    let session = Arc::new(Session::new(identity)?);
    let mut detached = session.detached();
    // The tasks stop when the agent is told to, or when the host is detached.
    let (stop, stopping) = watch::channel(false);
    let leaving = (driver.clone(), site.clone(), secrets_dir.clone());
    let (probe_targets, targets) = watch::channel(Vec::new());
    let health = prober::HealthBook::default();
    let health_changed = Arc::new(Notify::new());

    // The host's inventory, kept current; placement at the edge reads it too.
    let (watcher, inventory) = watcher::Watcher::start(
        config.host_root.clone(),
        dir.to_owned(),
        driver.clone(),
        config.device_grace,
        config.site_address(),
        stopping.clone(),
    )
    .await;

    // The site cluster's shared parts: what the channels carry, and what the cluster hands the
    // reconciler and takes from it.
    let peers = Arc::new(site::Peers::default());
    let (own_state, own_state_rx) = watch::channel(atoll_api::site::HostState::default());
    let (placement, placement_rx) = watch::channel(None);
    let (cluster_status, cluster_status_rx) = watch::channel(None);
    let (running, running_rx) = watch::channel(std::collections::BTreeSet::new());
    let (cluster_outbox, cluster_report_ready) = (outbox.clone(), report_ready.clone());
    // The signed manifest this host accepted last, which its site's leader puts in the log, and
    // the one the log holds, which this host takes when it is newer than its own.
    let (accepted, accepted_rx) = watch::channel(kept_signed);
    let (from_site, from_site_rx) = watch::channel(None);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watcher.run());
    let inventory_rx = inventory.clone();
    let cluster_inventory = inventory.clone();
    tasks.spawn(
        watcher::Sender {
            session: session.clone(),
            inventory,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        prober::Prober {
            driver: driver.clone(),
            targets,
            book: health.clone(),
            changed: health_changed.clone(),
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        reconciler::Reconciler {
            driver,
            site,
            host,
            inventory: inventory_rx,
            host_root: config.host_root.clone(),
            files_dir: dir.join("files"),
            secrets_dir,
            sealing,
            manifests: manifest_rx,
            placement: placement_rx,
            running,
            cluster: cluster_status_rx,
            outbox: outbox.clone(),
            report_ready: report_ready.clone(),
            refused: refused.clone(),
            conditions: conditions.clone(),
            interval: config.interval,
            probe_targets,
            health,
            health_changed,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        sync::Sync {
            session: session.clone(),
            kept,
            manifests,
            accepted,
            from_site: from_site_rx,
            refused,
            conditions,
            outbox: outbox.clone(),
            report_ready: report_ready.clone(),
            wait: config.poll_wait,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        reporter::Reporter {
            session: session.clone(),
            outbox,
            report_ready,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        cluster::Cluster {
            session: session.clone(),
            folder: dir.join("site-log"),
            manifests: site_manifests.clone(),
            inventory: cluster_inventory,
            running: running_rx,
            accepted: accepted_rx,
            from_site,
            peers: peers.clone(),
            own: own_state,
            placement,
            status: cluster_status,
            failure_timeout: config.site_failure_timeout,
            timers: crate::site_log::Timers::default(),
            outbox: cluster_outbox,
            report_ready: cluster_report_ready,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(
        site::SiteChannel {
            session: session.clone(),
            registry: peers,
            own: own_state_rx,
            listen: config.listen_site,
            peers: config.peers.clone(),
            manifests: site_manifests,
            shutdown: stopping.clone(),
        }
        .run(),
    );
    tasks.spawn(renew(session, stopping));
    let reason = tokio::select! {
        _ = shutdown.changed() => None,
        reason = detached.wait_for(Option::is_some) => reason.ok().and_then(|r| r.clone()),
    };
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    let Some(reason) = reason else {
        return Ok(());
    };
    tracing::warn!(%reason, "this host was detached from its site; removing what atoll runs and keeps here");
    let (driver, site, secrets_dir) = leaving;
    let problems = detach::leave(driver.as_ref(), &site, dir, &secrets_dir).await;
    for problem in &problems {
        tracing::error!(%problem, "could not remove");
    }
    Err(AgentError::Detached(reason))
}

/// Sets `slot` to `value`, saying whether that changed it: the body of a watch channel's
/// `send_if_modified` that wakes receivers only on a change.
pub(crate) fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// Checks the certificate's age hourly (and at start) and renews it well before it expires.
async fn renew(session: Arc<Session>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match session.renew_if_due().await {
            Ok(true) => tracing::info!("renewed the host certificate"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "certificate renewal failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// `$RUNTIME_DIRECTORY/secrets` when systemd made a runtime folder (tmpfs under /run), else a
/// folder under /dev/shm named after the data folder, so two agents on one machine never share.
fn default_secrets_dir(data_dir: &std::path::Path) -> PathBuf {
    if let Some(runtime) = std::env::var_os("RUNTIME_DIRECTORY").filter(|v| !v.is_empty()) {
        return PathBuf::from(runtime).join("secrets");
    }
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = sha2::Sha256::digest(canonical.to_string_lossy().as_bytes());
    PathBuf::from(format!(
        "/dev/shm/atoll-agent-{}",
        &hex::encode(digest)[..12]
    ))
}

/// This host's inventory now, with its runtime's name and version.
async fn collect_inventory(
    host_root: &std::path::Path,
    dir: &std::path::Path,
    driver: &dyn Driver,
) -> Result<atoll_api::agent::Inventory, AgentError> {
    let runtime = driver
        .info()
        .await
        .map_err(|e| AgentError::Local(e.to_string()))?;
    Ok(inventory::collect(
        host_root,
        dir,
        RuntimeInventory {
            name: runtime.name,
            version: runtime.version,
        },
    ))
}

//! The live inventory: the host's devices followed as they are plugged in and out, its other
//! facts re-read every minute, and the inventory sent to the control plane whenever it differs
//! from the one the control plane last acknowledged.
//!
//! sysfs raises no events, but `/dev` does: the watcher holds an inotify watch on `<root>/dev`
//! (and `<root>/dev/dri`) through tokio's `AsyncFd`, so it costs nothing while nothing changes.
//! A change is followed by a scan once the moment has settled ([`DEBOUNCE`]: one plug makes
//! several nodes, and udev renames and chmods them just after), so a plug or an unplug is
//! reported within a second or two. A device gone is kept, missing, for the grace
//! (`--device-grace`, `core::devices`), with one timer set for the next to leave. Every
//! [`FACTS_EVERY`] the facts (memory, disk size, the runtime's version) are read again and the
//! devices scanned once more, which also catches an event missed. Where inotify cannot be set
//! up, the devices are scanned every [`FALLBACK_SCAN_EVERY`] instead, and the agent says so.
//!
//! The inventory is published on a `watch` channel (what placement at the edge reads); the
//! sender sends it whole (`PUT /v1/sites/{site}/hosts/{host}/inventory`) once after start and
//! after each change, and again with the agents' backoff until the control plane has taken it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::host::{Inventory, RuntimeInventory};
use atoll_runtime::Driver;
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::AgentError;
use super::clock;
use super::inventory;
use super::session::Session;
use crate::core::devices::DeviceBook;
use crate::core::retry::{self, Backoff};

/// How long after a change in `/dev` the devices are scanned.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// How often the facts are read again (and the devices scanned, in case an event was missed).
pub const FACTS_EVERY: Duration = Duration::from_secs(60);
/// How often the devices are scanned when `/dev` cannot be watched.
pub const FALLBACK_SCAN_EVERY: Duration = Duration::from_secs(10);

pub struct Watcher {
    root: PathBuf,
    data_dir: PathBuf,
    driver: Arc<dyn Driver>,
    grace: Duration,
    book: DeviceBook,
    facts: Inventory,
    /// `--listen-site`, reported with the facts.
    site_address: Option<String>,
    published: watch::Sender<Inventory>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("root", &self.root)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Reads the host once, and returns the watcher to run and the inventory it keeps
    /// current.
    pub async fn start(
        root: PathBuf,
        data_dir: PathBuf,
        driver: Arc<dyn Driver>,
        grace: Duration,
        site_address: Option<String>,
        shutdown: watch::Receiver<bool>,
    ) -> (Watcher, watch::Receiver<Inventory>) {
        let facts = inventory::facts(&root, &data_dir, runtime(driver.as_ref()).await);
        let mut book = DeviceBook::default();
        book.observe(inventory::devices(&root), clock::now(), grace);
        let (published, current) = watch::channel(Inventory {
            devices: book.devices(),
            site_address: site_address.clone(),
            ..facts.clone()
        });
        let watcher = Watcher {
            root,
            data_dir,
            driver,
            grace,
            book,
            facts,
            site_address,
            published,
            shutdown,
        };
        (watcher, current)
    }

    pub async fn run(mut self) {
        let mut dev = match DevWatch::new(&self.root) {
            Ok(dev) => Some(dev),
            Err(e) => {
                tracing::warn!(dev = %self.root.join("dev").display(), error = %e, every = ?FALLBACK_SCAN_EVERY, "cannot watch for devices plugged in or out; scanning for them periodically instead");
                None
            }
        };
        let mut facts_due = tokio::time::Instant::now() + FACTS_EVERY;
        loop {
            let expiry = self
                .book
                .next_expiry(self.grace)
                .map(|at| at.duration_since(clock::now()).unwrap_or_default());
            let leaving = async {
                match expiry {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            let changed = async {
                match dev.as_mut() {
                    Some(dev) => dev.changed().await,
                    None => {
                        tokio::time::sleep(FALLBACK_SCAN_EVERY).await;
                        Ok(())
                    }
                }
            };
            tokio::select! {
                _ = self.shutdown.changed() => return,
                result = changed => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, every = ?FALLBACK_SCAN_EVERY, "the watch on /dev failed; scanning for devices periodically instead");
                        dev = None;
                    }
                    tokio::select! {
                        _ = self.shutdown.changed() => return,
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    if let Some(dev) = dev.as_mut() {
                        dev.settle();
                    }
                    self.scan();
                }
                () = tokio::time::sleep_until(facts_due) => {
                    facts_due = tokio::time::Instant::now() + FACTS_EVERY;
                    self.facts = inventory::facts(&self.root, &self.data_dir, runtime(self.driver.as_ref()).await);
                    self.scan();
                }
                () = leaving => {
                    self.book.expire(clock::now(), self.grace);
                }
            }
            let current = Inventory {
                devices: self.book.devices(),
                site_address: self.site_address.clone(),
                ..self.facts.clone()
            };
            self.published
                .send_if_modified(|published| super::replace(published, current));
        }
    }

    fn scan(&mut self) {
        self.book
            .observe(inventory::devices(&self.root), clock::now(), self.grace);
    }
}

/// The runtime's name and version; empty when the runtime does not answer (the next reading
/// fills them).
async fn runtime(driver: &dyn Driver) -> RuntimeInventory {
    match driver.info().await {
        Ok(info) => RuntimeInventory {
            name: info.name,
            version: info.version,
        },
        Err(e) => {
            tracing::debug!(error = %e, "the container runtime did not say its version");
            RuntimeInventory::default()
        }
    }
}

/// An inotify watch on `<root>/dev` and, when it exists, `<root>/dev/dri`.
struct DevWatch {
    fd: AsyncFd<OwnedFd>,
    dri: PathBuf,
}

const WATCHED: inotify::WatchFlags = inotify::WatchFlags::CREATE
    .union(inotify::WatchFlags::DELETE)
    .union(inotify::WatchFlags::MOVED_FROM)
    .union(inotify::WatchFlags::MOVED_TO);

impl DevWatch {
    fn new(root: &Path) -> std::io::Result<DevWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, root.join("dev"), WATCHED)?;
        // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may close or swap its
        // descriptor while registered (tokio #8587); an `OwnedFd` the `AsyncFd` owns can do
        // neither, which is what `register` asks its caller to promise, and the workspace
        // forbids the `unsafe` that calling it would take.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        let watch = DevWatch {
            fd,
            dri: root.join("dev/dri"),
        };
        watch.watch_dri();
        Ok(watch)
    }

    /// `dev/dri` appears when a GPU's driver loads, and may be made anew: watching it again
    /// is harmless (the same folder keeps its watch).
    fn watch_dri(&self) {
        if self.dri.is_dir() {
            let _ = inotify::add_watch(self.fd.get_ref(), &self.dri, WATCHED);
        }
    }

    /// Waits until something changed in a watched folder.
    async fn changed(&mut self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf).map_err(Into::into)) {
                Ok(read) => {
                    read?;
                    self.watch_dri();
                    return Ok(());
                }
                Err(_would_block) => {}
            }
        }
    }

    /// Reads the events that came while the change settled: the scan that follows sees them.
    fn settle(&mut self) {
        let mut buf = [0u8; 4096];
        while rustix::io::read(self.fd.get_ref(), &mut buf).is_ok_and(|n| n > 0) {}
        self.watch_dri();
    }
}

/// Sends the inventory whenever it differs from the one the control plane last took.
pub struct Sender {
    pub session: Arc<Session>,
    pub inventory: watch::Receiver<Inventory>,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    pub async fn run(mut self) {
        let mut acked: Option<Inventory> = None;
        let mut backoff = Backoff::agent();
        let mut last_error = String::new();
        loop {
            let current = self.inventory.borrow_and_update().clone();
            if acked.as_ref() == Some(&current) {
                tokio::select! {
                    _ = self.shutdown.changed() => return,
                    changed = self.inventory.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let pause = match self.session.put_inventory(&current).await {
                Ok(stored) => {
                    backoff.reset();
                    last_error.clear();
                    acked = Some(stored);
                    continue;
                }
                // The session noted it; the agent is stopping.
                Err(AgentError::Detached(_)) => return,
                Err(AgentError::Busy { retry_after }) => {
                    retry::after_busy(retry_after, &mut rand::thread_rng())
                }
                Err(e) => {
                    let error = e.to_string();
                    if error != last_error {
                        tracing::warn!(%error, "the inventory was not taken; will retry");
                        last_error = error;
                    }
                    backoff.next(&mut rand::thread_rng())
                }
            };
            // A newer inventory does not cut the wait short: it is sent when the wait ends.
            tokio::select! {
                _ = self.shutdown.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

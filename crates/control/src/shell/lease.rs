//! Keeps a lease in the store for this process: takes or renews it every `every`, and says at
//! any moment whether this process holds it and with which fence.
//!
//! The decision that shaped it: whether the lease is held is answered from the clock at the
//! moment of asking (`core::lease`), not from the last thing the renewal task noticed, so a
//! replica whose renewals stall stops at its deadline even while its task waits on the store;
//! and what it commits under the lease carries the fence, which the store checks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_store::Store;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::clock;
use crate::core::lease::{Answer, Change, Hold, Why};

/// A lease this process keeps trying to hold; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lease {
    name: Arc<str>,
    holder: Arc<str>,
    hold: Arc<Mutex<Hold>>,
    start: Instant,
    taken: Arc<Notify>,
}

/// How a lease is kept.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a take or renewal lasts.
    pub ttl: Duration,
    /// How often it is renewed (or taken, when free).
    pub every: Duration,
}

impl Lease {
    /// Starts keeping lease `name` for `holder` (unique to this process): the task renews it
    /// until `shutdown`, then releases it, so another replica takes it over at once. The task's
    /// handle is returned with it.
    pub fn keep(
        store: Arc<dyn Store>,
        name: &str,
        holder: &str,
        timing: Timing,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Lease, JoinHandle<()>) {
        let lease = Lease {
            name: name.into(),
            holder: holder.into(),
            hold: Arc::new(Mutex::new(Hold::NotHeld)),
            start: Instant::now(),
            taken: Arc::new(Notify::new()),
        };
        let keeper = lease.clone();
        let task = tokio::spawn(async move {
            loop {
                keeper.attempt(store.as_ref(), timing.ttl).await;
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(timing.every) => {}
                }
            }
            if keeper.fence().is_some() {
                match store.release_lease(&keeper.name, &keeper.holder).await {
                    Ok(_) => {
                        tracing::info!(lease = %keeper.name, holder = %keeper.holder, "lease released")
                    }
                    Err(e) => {
                        tracing::warn!(lease = %keeper.name, error = %e, "could not release the lease; it expires on its own")
                    }
                }
            }
        });
        (lease, task)
    }

    /// The fence this process holds the lease with now; `None` when it does not hold it.
    pub fn fence(&self) -> Option<u64> {
        self.lock().fence_at(self.start.elapsed())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until this process takes the lease (again).
    pub async fn taken(&self) {
        self.taken.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hold> {
        self.hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn attempt(&self, store: &dyn Store, ttl: Duration) {
        let sent = self.start.elapsed();
        let asked = store.acquire_lease(&self.name, &self.holder, ttl, clock::now_ms());
        let answer = match tokio::time::timeout(ttl, asked).await {
            Ok(Ok(Some(fence))) => Answer::Acquired(fence),
            Ok(Ok(None)) => Answer::Refused,
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.name, error = %e, "could not renew the lease");
                Answer::Failed
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "the store did not answer a lease renewal within its ttl");
                Answer::Failed
            }
        };
        let change = {
            let mut hold = self.lock();
            let (next, change) = hold.answered(answer, sent, self.start.elapsed(), ttl);
            *hold = next;
            change
        };
        match change {
            Change::None => {}
            Change::Took(fence) => {
                tracing::info!(lease = %self.name, holder = %self.holder, fence, "took the lease");
                self.taken.notify_waiters();
            }
            Change::Lost(why) => {
                let why = match why {
                    Why::TakenOver => "another replica holds it",
                    Why::Expired => "not renewed within its ttl",
                };
                tracing::warn!(lease = %self.name, holder = %self.holder, why, "lost the lease");
            }
        }
    }
}

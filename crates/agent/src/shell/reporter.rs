//! Delivering the outbox: batches go up oldest first; the control plane's acknowledgement says
//! what may be forgotten. While the control plane is away, batches wait on disk. After a lost
//! counter, the first request carries no batch: its answer, the control plane's acknowledged
//! sequence, says whether the waiting batches need new numbers before they go.
//! The reporter also queues an event's folded repeats when their window ends.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use super::AgentError;
use super::outbox::Outbox;
use super::session::Session;
use crate::core::outbox::{BATCH_LIMIT, GATHER, MAX_SEQ};
use crate::core::retry::{self, Backoff};

pub struct Reporter {
    pub session: Arc<Session>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub report_ready: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    pub async fn run(mut self) {
        let mut backoff = Backoff::agent();
        loop {
            let (probe, pending, folded_due) = {
                let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
                outbox.flush_folded();
                let folded_due = outbox.folded_due_in();
                if outbox.unconfirmed() {
                    (true, Vec::new(), folded_due)
                } else {
                    (false, outbox.pending(BATCH_LIMIT), folded_due)
                }
            };
            if pending.is_empty() && !probe {
                // Folded repeats are queued when their window ends, whether or not anything
                // else happens by then.
                let folded = async {
                    match folded_due {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = self.shutdown.changed() => return,
                    _ = self.report_ready.notified() => {}
                    () = folded => continue,
                }
                // What follows a batch within the moment goes with it: the status after a
                // manifest's reconcile with the event of its acceptance.
                tokio::select! {
                    _ = self.shutdown.changed() => return,
                    _ = tokio::time::sleep(GATHER) => continue,
                }
            }
            let highest = pending.last().map_or(0, |b| b.seq);
            match self.session.report(pending).await {
                Ok(acked) => {
                    backoff.reset();
                    let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = outbox.acknowledge(acked) {
                        tracing::error!(error = %e, "cannot forget acknowledged reports");
                    }
                    if acked > MAX_SEQ {
                        tracing::warn!(
                            acked,
                            "the control plane acknowledged a sequence no store keeps; nothing is forgotten"
                        );
                    } else if acked < highest {
                        tracing::warn!(
                            acked,
                            highest,
                            "the control plane stored fewer reports than were sent"
                        );
                    }
                }
                Err(AgentError::Busy { retry_after }) => {
                    // Asked to wait: a new batch does not cut this short.
                    tokio::select! {
                        _ = self.shutdown.changed() => return,
                        _ = tokio::time::sleep(retry::after_busy(retry_after, &mut rand::thread_rng())) => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reports not delivered; will retry");
                    let pause = backoff.next(&mut rand::thread_rng());
                    // A new batch or the sync loop reaching the control plane again cuts the
                    // wait short.
                    tokio::select! {
                        _ = self.shutdown.changed() => return,
                        _ = self.report_ready.notified() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

//! Following the site's manifest: a long-poll that the control plane answers as soon as a newer
//! revision exists. Every accepted manifest is verified and kept on disk before the reconciler
//! sees it; a refused one is logged and said in the next report, and what runs keeps running.
//! One that cannot be kept (a full disk) is not applied either: it is reported, raised as the
//! host's `manifest_not_kept` condition until a manifest is kept again, and asked for again
//! with a growing backoff. Keeping one clears a damaged kept manifest's condition too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::Manifest;
use atoll_api::agent::{AgentEvent, ConditionKind, SignedManifest};
use tokio::sync::{Notify, watch};

use super::AgentError;
use super::clock::now_rfc3339;
use super::conditions::Conditions;
use super::manifest::{Kept, verify};
use super::outbox::Outbox;
use super::session::Session;
use crate::core::retry::Backoff;
use crate::core::sync::{Polled, pause_after};

pub struct Sync {
    pub session: Arc<Session>,
    pub kept: Kept,
    pub manifests: watch::Sender<Option<Arc<Manifest>>>,
    /// The signed manifest accepted last, for the site's leader to put in the site's log.
    pub accepted: watch::Sender<Option<SignedManifest>>,
    /// The signed manifest the site's log holds: taken, verified like one polled, when it is
    /// newer, so a host that cannot reach the control plane but reaches its site still follows.
    pub from_site: watch::Receiver<Option<SignedManifest>>,
    pub refused: Arc<Mutex<Option<String>>>,
    pub conditions: Conditions,
    pub outbox: Arc<Mutex<Outbox>>,
    pub report_ready: Arc<Notify>,
    pub wait: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sync").finish_non_exhaustive()
    }
}

impl Sync {
    pub async fn run(mut self) {
        let mut backoff = Backoff::agent();
        let mut offline = false;
        loop {
            // The hash too, so that a control plane that gave this revision's number to other
            // content (it lost commits) finds out.
            let held = self
                .manifests
                .borrow()
                .as_ref()
                .map(|m| (m.revision, m.hash.clone()));
            let have = held.as_ref().map_or(0, |(revision, _)| *revision);
            let hash = held.as_ref().map(|(_, hash)| hash.as_str());
            let result = tokio::select! {
                _ = self.shutdown.changed() => return,
                r = self.session.poll_manifest(have, hash, self.wait) => r,
                changed = self.from_site.changed() => {
                    if changed.is_ok() {
                        self.take_from_site(have);
                    }
                    continue;
                }
            };
            let polled = match result {
                Ok(answer) => {
                    if offline {
                        // Back in touch: reports waiting out a backoff can go now.
                        tracing::info!("control plane reachable again");
                        self.report_ready.notify_one();
                        offline = false;
                    }
                    match answer {
                        None => Polled::NotModified,
                        Some(signed) => self.accept(signed, have),
                    }
                }
                Err(AgentError::Busy { retry_after }) => Polled::Busy(retry_after),
                Err(AgentError::Unreachable(e)) => {
                    if !offline {
                        tracing::warn!(error = %e, "control plane unreachable; carrying on with the kept manifest");
                        offline = true;
                    }
                    Polled::Unreachable
                }
                Err(e) => {
                    tracing::error!(error = %e, "the control plane refused this host's manifest request");
                    Polled::Rejected
                }
            };
            let pause = pause_after(polled, &mut backoff, &mut rand::thread_rng());
            if let Some(pause) = pause {
                let until = tokio::time::Instant::now() + pause;
                loop {
                    tokio::select! {
                        _ = self.shutdown.changed() => return,
                        _ = tokio::time::sleep_until(until) => break,
                        changed = self.from_site.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep_until(until).await;
                                break;
                            }
                            let have = self.manifests.borrow().as_ref().map_or(0, |m| m.revision);
                            self.take_from_site(have);
                        }
                    }
                }
            }
        }
    }

    /// Takes the manifest the site's log holds when it is newer than the one applied.
    fn take_from_site(&mut self, have: u64) {
        let Some(signed) = self.from_site.borrow_and_update().clone() else {
            return;
        };
        let newer = revision_of(&signed).is_some_and(|r| r > have);
        if newer {
            tracing::info!("taking the manifest the site's log holds");
            self.accept(signed, have);
        }
    }

    /// Takes a manifest the control plane sent: accepted, refused or not kept.
    fn accept(&self, signed: SignedManifest, have: u64) -> Polled {
        let session = &self.session;
        match verify(
            &signed,
            &session.identity().signing_key,
            &session.identity().site,
            have,
        ) {
            Ok(manifest) => {
                if let Err(e) = self.kept.save(&signed) {
                    tracing::error!(error = %e, revision = manifest.revision, "not applying the manifest; what runs keeps running");
                    self.record("manifest", e.clone());
                    self.conditions.raise(ConditionKind::ManifestNotKept, e);
                    return Polled::NotKept;
                }
                self.conditions.clear(ConditionKind::ManifestNotKept);
                self.conditions.clear(ConditionKind::KeptManifestDamaged);
                tracing::info!(revision = manifest.revision, "applying manifest");
                *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.record(
                    "manifest",
                    format!("accepted manifest revision {}", manifest.revision),
                );
                self.manifests.send_replace(Some(Arc::new(manifest)));
                self.accepted.send_replace(Some(signed));
                Polled::Accepted
            }
            Err(reason) => {
                tracing::warn!(%reason, "refused a manifest; what runs keeps running");
                *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                self.record("refused", reason);
                Polled::Refused
            }
        }
    }

    fn record(&self, kind: &str, message: String) {
        let event = AgentEvent {
            at: now_rfc3339(),
            kind: kind.to_owned(),
            message,
            count: None,
        };
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.push(now_rfc3339(), vec![event], None).is_some() {
            self.report_ready.notify_one();
        }
    }
}

/// The revision a signed manifest says it is, read before its signature is checked, to tell
/// whether it is worth checking at all.
fn revision_of(signed: &SignedManifest) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Revision {
        revision: u64,
    }
    serde_json::from_str::<Revision>(&signed.payload)
        .ok()
        .map(|r| r.revision)
}

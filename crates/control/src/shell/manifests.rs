//! `GET /v1/sites/{name}/manifest`: for an agent, the signed manifest by long-poll; for a
//! user, the manifest as stored.
//!
//! The fleet knows every site's revision and hash and keeps the manifests committed since the
//! process started, so a poll waits on the fleet, not the store, and reads the store only for
//! a manifest older than the process.

use std::sync::Arc;
use std::time::Duration;

use atoll_api::Manifest;
use atoll_store::StoreError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::agents::Agents;
use super::fleet::Published;
use super::http::{ApiError, AppState, Peer, checked_name, malformed_query, user};
use super::service::{ControlPlane, Error};
use super::tls::AgentIdentity;
use crate::core::revision::{self, Answer, Held};

/// The longest a manifest long-poll is held.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a long-poll found.
#[derive(Debug)]
pub enum Poll {
    /// The body of the answer: the manifest signed, as JSON.
    Newer(Bytes),
    NotModified,
}

impl Agents {
    /// Answers at once if the site's manifest is newer than what the agent holds, else when it
    /// becomes newer, else after `wait` with "not modified". The fleet knows every site's
    /// current revision and hash, so a poll reads the store only when there is something newer
    /// to send. An agent holding a revision this control plane does not know (its store lost
    /// commits) has the site's manifest committed again above it, once per poll, and is sent
    /// that.
    pub async fn poll_manifest(
        &self,
        identity: &AgentIdentity,
        held: Held<'_>,
        wait: Duration,
    ) -> Result<Poll, Error> {
        let _hold = self.fleet.polling(&identity.host, &identity.site);
        let mut changes = self.fleet.watch(&identity.site);
        let mut hosts = self.fleet.hosts().watch();
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut overtaken = false;
        loop {
            // A host detached while it waits is answered so at once.
            hosts.borrow_and_update();
            self.admit(identity).await?;
            // Mark the current value seen before reading the store, so a commit landing between
            // the read and the wait still wakes this poll.
            let current = changes.borrow_and_update().clone();
            match revision::answer(current.stored(), held) {
                Answer::Send => {
                    // The manifest a commit just published is in memory; the store is read
                    // only for one committed before this process started.
                    let (revision, published) = match self.fleet.manifest(&identity.site) {
                        Some((revision, published)) if revision >= current.revision => {
                            (revision, published)
                        }
                        _ => self
                            .store
                            .manifest(&identity.site)
                            .await?
                            .map_or((0, Published::Unsealed(Arc::from(""))), |row| {
                                (row.revision, self.control.signer().publish(row.body))
                            }),
                    };
                    if revision::answers(revision, held.revision) {
                        return match published {
                            Published::Signed(answer) => Ok(Poll::Newer(answer)),
                            Published::Unsealed(body) => {
                                self.seal_and_sign(&identity.site, &body).await
                            }
                        };
                    }
                }
                // The commit publishes the new head, which the next turn sends.
                Answer::Overtake { .. } if !overtaken => {
                    overtaken = true;
                    self.control
                        .overtake(&identity.site, &identity.host, held)
                        .await?;
                    continue;
                }
                Answer::Overtake { .. } | Answer::Wait => {}
            }
            let woken = async {
                tokio::select! {
                    changed = changes.changed() => changed,
                    changed = hosts.changed() => changed,
                }
            };
            match tokio::time::timeout_at(deadline, woken).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(Poll::NotModified),
            }
        }
    }

    /// Answers with a manifest whose secrets are sealed now to the site's hosts, signed.
    async fn seal_and_sign(&self, site: &str, body: &str) -> Result<Poll, Error> {
        let mut manifest: Manifest = serde_json::from_str(body)
            .map_err(|e| StoreError::Corrupt(format!("manifest of site {site}: {e}")))?;
        self.seal_secrets(&mut manifest).await?;
        Ok(Poll::Newer(self.control.signer().sign(&manifest)))
    }

    /// Attaches the manifest's secrets, sealed to the keys of the site's hosts enrolled now.
    async fn seal_secrets(&self, manifest: &mut Manifest) -> Result<(), Error> {
        let uses_secrets = manifest
            .content
            .applications
            .iter()
            .flat_map(|a| &a.services)
            .any(|s| !s.secrets.is_empty());
        if !uses_secrets {
            return Ok(());
        }
        let recipients: Vec<String> = self
            .store
            .site_hosts(&manifest.site)
            .await?
            .into_iter()
            .filter_map(|h| h.recipient)
            .collect();
        if recipients.is_empty() {
            tracing::warn!(site = %manifest.site, "no host of this site has a sealing key: its secrets are not sent");
            return Ok(());
        }
        manifest.sealed = self.control.seal_for(manifest, &recipients).await?;
        Ok(())
    }
}

impl ControlPlane {
    /// The manifest of `site` as stored.
    pub async fn manifest(&self, site: &str) -> Result<Manifest, Error> {
        self.site_exists(site).await?;
        let row = self
            .store
            .manifest(site)
            .await?
            .ok_or_else(|| Error::NotFound(format!("site {site} has no manifest yet")))?;
        serde_json::from_str(&row.body)
            .map_err(|e| StoreError::Corrupt(format!("manifest of site {site}: {e}")).into())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    /// The revision the agent has; answer when there is a newer one.
    #[serde(default)]
    have: Option<u64>,
    /// Seconds to hold the request when there is nothing newer (at most 60).
    #[serde(default)]
    wait: Option<u64>,
    /// The content hash of the revision the agent has, so that a revision number this control
    /// plane gave to other content (after losing commits) is found. Older agents do not send
    /// it.
    #[serde(default)]
    hash: Option<String>,
}

fn identity(peer: &Option<Extension<Peer>>) -> Option<AgentIdentity> {
    peer.as_ref().and_then(|Extension(p)| p.0.clone())
}

/// Longer than any content hash (`sha256:` and 64 hex digits).
const MAX_HASH_LEN: usize = 128;

/// `GET /v1/sites/{name}/manifest`: for an agent, the signed manifest by long-poll; for a user
/// with a token, the manifest as stored.
pub async fn manifest(
    State(s): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<ManifestQuery>, QueryRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        checked_name(&name)?;
        let Query(query) = query.map_err(malformed_query)?;
        match identity(&peer) {
            Some(id) => {
                s.agents.authorize(&id, &name, None).await?;
                let wait = Duration::from_secs(query.wait.unwrap_or(30));
                if query.hash.as_ref().is_some_and(|h| h.len() > MAX_HASH_LEN) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!("the query parameter `hash` is longer than {MAX_HASH_LEN} characters: send the `hash` of the manifest held"),
                    ));
                }
                let held = Held {
                    revision: query.have.unwrap_or(0),
                    hash: query.hash.as_deref(),
                };
                match s.agents.poll_manifest(&id, held, wait).await? {
                    Poll::Newer(signed) => {
                        Ok(([(header::CONTENT_TYPE, "application/json")], signed).into_response())
                    }
                    Poll::NotModified => Ok(StatusCode::NOT_MODIFIED.into_response()),
                }
            }
            None => {
                if let Err(response) = user(&s, &headers).await {
                    return Ok(response);
                }
                Ok(Json(s.control.manifest(&name).await?).into_response())
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

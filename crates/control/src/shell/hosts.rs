//! `GET /v1/hosts`, `GET /v1/hosts/{name}` and `POST /v1/hosts/{name}/approve-key`: the
//! hosts as `core::views::hosts` shows them, and the writes of a host's record that renewals
//! and approvals share (a compare-and-set on its certificate, followed by the host book).

use atoll_api::List;
use atoll_api::agent::HostView;
use atoll_store::{HostRow, HostState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::agents::Agents;
use super::clock::now_rfc3339;
use super::hostbook::canonical_serial;
use super::http::{Actor, ApiError, ApiResult, AppState, checked_name};
use super::service::Error;
use super::tls::AgentIdentity;
use crate::core::views;

impl Agents {
    pub async fn hosts(&self) -> Result<Vec<HostView>, Error> {
        let mut statuses = self.statuses().await?;
        Ok(self
            .store
            .all_hosts()
            .await?
            .into_iter()
            .map(|h| {
                let connected = self.fleet.host_connected(&h.id);
                let status = statuses.remove(&h.id);
                views::hosts::host(h, status, connected)
            })
            .collect())
    }

    /// Stores `host` in place of its record with certificate `replacing`, and follows the
    /// change. Refused when the host was detached meanwhile, or renewed by another request.
    pub(super) async fn replace_host(
        &self,
        identity: &AgentIdentity,
        host: HostRow,
        replacing: &str,
    ) -> Result<(), Error> {
        if !self.store.put_host(host, replacing).await? {
            let now = self.store.host(&identity.host).await?;
            return Err(match now {
                Some(h) if h.state == HostState::Detached => detached(identity),
                _ => Error::Conflict(vec![atoll_spec::Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("host {}", identity.host),
                    message: "the host's record changed meanwhile (another renewal or approval); nothing was changed".into(),
                    hint: Some("try again".into()),
                }]),
            });
        }
        self.fleet.hosts().follow(self.store.as_ref()).await?;
        Ok(())
    }

    /// Makes the sealing key a host sent at renewal the one its secrets are sealed to, and
    /// commits its site's manifest again so that the host receives them sealed to it.
    pub async fn approve_key(&self, host_id: &str, actor: &str) -> Result<HostView, Error> {
        let mut host = self
            .store
            .host(host_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("host {host_id} does not exist")))?;
        let identity = AgentIdentity {
            site: host.site.clone(),
            host: host.id.clone(),
            serial: canonical_serial(&host.cert_serial),
        };
        if host.state == HostState::Detached {
            return Err(detached(&identity));
        }
        let Some(pending) = host.pending_recipient.take() else {
            return Err(Error::Conflict(vec![atoll_spec::Diagnostic {
                file: String::new(),
                line: 0,
                column: 0,
                path: format!("host {host_id}"),
                message: "no new sealing key of this host waits for approval".into(),
                hint: None,
            }]));
        };
        host.recipient = Some(pending);
        let replacing = host.cert_serial.clone();
        self.replace_host(&identity, host, &replacing).await?;
        self.store
            .append_audit(
                &now_rfc3339(),
                actor,
                "approve-key",
                &format!(
                    "approved the new sealing key of host {host_id} of site {}",
                    identity.site
                ),
            )
            .await?;
        self.control
            .recommit(&identity.site, actor, "its host's sealing key changed")
            .await?;
        self.hosts()
            .await?
            .into_iter()
            .find(|h| h.id == host_id)
            .ok_or_else(|| Error::NotFound(format!("host {host_id} does not exist")))
    }
}

/// The refusal of a host detached from its site.
pub(super) fn detached(identity: &AgentIdentity) -> Error {
    Error::Detached(format!(
        "host {} was detached from site {}: the site was deleted, and this host's identity is never accepted again; enroll it anew with a join token of its new site",
        identity.host, identity.site
    ))
}

pub async fn list(State(s): State<AppState>) -> ApiResult<List<HostView>> {
    Ok(Json(List {
        items: s.agents.hosts().await?,
    }))
}

/// `GET /v1/hosts/{name}`: one host, detached or not.
pub async fn get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<HostView> {
    checked_name(&name)?;
    s.agents
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.id == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("host {name} does not exist"),
            )
        })
}

/// `POST /v1/hosts/{name}/approve-key`: the new sealing key the host sent at renewal becomes
/// the one its secrets are sealed to.
pub async fn approve_key(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> ApiResult<HostView> {
    checked_name(&name)?;
    Ok(Json(s.agents.approve_key(&name, &actor.0).await?))
}

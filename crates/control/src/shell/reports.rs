//! `POST /v1/sites/{name}/reports` and `PUT /v1/sites/{name}/hosts/{host}/inventory`: what
//! agents report, checked against the protocol's bounds (`core::events`, `core::inventory`)
//! and stored; and the hosts' newest statuses read back for the views and the rollout
//! controller.

use std::collections::BTreeMap;

use atoll_api::agent::{HostStatus, Inventory, MAX_REPORT_BYTES, ReportAck, ReportRequest};
use atoll_api::host::{InventoryReport, MAX_INVENTORY_BYTES};
use atoll_spec::{Kind, Resource};
use atoll_store::{EventRetention, InventoryChange, ReportBatch, Store, StoreError};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use bytes::Bytes;

use super::agents::Agents;
use super::clock::now;
use super::hosts::detached;
use super::http::{ApiError, ApiResult, AppState, body_error, checked_name, malformed_json};
use super::service::Error;
use super::tls::AgentIdentity;
use crate::core::state::decode_row;
use crate::core::{events, inventory};

/// Every host's newest reported status, decoded, as (host, site, status). A status this
/// version cannot read is left out rather than failing the view.
pub(super) async fn reported(
    store: &dyn Store,
) -> Result<Vec<(String, String, HostStatus)>, StoreError> {
    Ok(store
        .host_statuses()
        .await?
        .into_iter()
        .filter_map(|row| Some((row.host, row.site, serde_json::from_str(&row.status).ok()?)))
        .collect())
}

/// The newest status of every host that reported, by host; see [`reported`].
pub(super) async fn statuses(
    store: &dyn Store,
) -> Result<BTreeMap<String, HostStatus>, StoreError> {
    Ok(reported(store)
        .await?
        .into_iter()
        .map(|(host, _, status)| (host, status))
        .collect())
}

impl Agents {
    /// Stores a report's new batches, refusing it whole if it passes the protocol's bounds
    /// (`core::events::check`), and prunes the site's events past the retention.
    pub async fn report(
        &self,
        identity: &AgentIdentity,
        report: ReportRequest,
    ) -> Result<u64, Error> {
        let problems = events::check(&report);
        if !problems.is_empty() {
            tracing::warn!(site = %identity.site, host = %identity.host, problems = problems.len(), "a report over the protocol's bounds is refused");
            return Err(Error::Invalid(problems));
        }
        let rows = report
            .batches
            .into_iter()
            .map(|b| ReportBatch {
                seq: b.seq,
                events: b
                    .events
                    .into_iter()
                    .map(|e| (e.at, e.kind, folded(e.message, e.count)))
                    .collect(),
                status: b
                    .status
                    .map(|s| serde_json::to_string(&s).unwrap_or_default()),
            })
            .collect();
        let now = now();
        let retention = self.event_retention(now);
        let recorded = self
            .store
            .record_report(
                &identity.host,
                &identity.site,
                &humantime::format_rfc3339_seconds(now).to_string(),
                rows,
                &retention,
            )
            .await?;
        if recorded.pruned > 0 {
            tracing::info!(
                site = %identity.site,
                pruned = recorded.pruned,
                kept = self.retention.keep,
                kept_for = %humantime::format_duration(self.retention.kept_for),
                "events past the retention were pruned"
            );
        }
        self.reported.notify_one();
        Ok(recorded.acked)
    }

    /// The events retention of a transaction at `now`.
    fn event_retention(&self, now: std::time::SystemTime) -> EventRetention {
        EventRetention {
            keep: self.retention.keep,
            received_after: humantime::format_rfc3339_seconds(self.retention.received_after(now))
                .to_string(),
        }
    }

    /// Stores the inventory a host sent, with an event of the site for each change since the
    /// stored one (`core::inventory::changes`), and has the site recompiled when its hosts
    /// matter to it. The answer is the inventory stored, which the agent takes as acknowledged.
    pub async fn put_inventory(
        &self,
        identity: &AgentIdentity,
        report: InventoryReport,
    ) -> Result<InventoryReport, Error> {
        let problems = inventory::check(&report.inventory);
        if !problems.is_empty() {
            tracing::warn!(site = %identity.site, host = %identity.host, problems = problems.len(), "an inventory over the protocol's bounds is refused");
            return Err(Error::Invalid(problems));
        }
        let stored = self
            .store
            .host(&identity.host)
            .await?
            .ok_or_else(|| detached(identity))?;
        let old = serde_json::from_str::<Inventory>(&stored.inventory).ok();
        let new = report.inventory;
        let classes: Vec<atoll_api::DeviceClass> = self
            .store
            .resources(Kind::DeviceClass.as_str())
            .await?
            .iter()
            .filter_map(|row| match decode_row(row) {
                Ok(Resource::DeviceClass(c)) => Some((&c).into()),
                _ => None,
            })
            .collect();
        let messages = inventory::changes(&identity.host, old.as_ref(), &new, &classes);
        let now = now();
        let change = InventoryChange {
            host: identity.host.clone(),
            hostname: new.hostname.clone(),
            inventory: serde_json::to_string(&new).map_err(|e| {
                StoreError::Backend(format!("the inventory of host {}: {e}", identity.host))
            })?,
            now: humantime::format_rfc3339_seconds(now).to_string(),
            events: messages
                .iter()
                .map(|m| (inventory::EVENT_KIND.to_owned(), m.clone()))
                .collect(),
            retention: self.event_retention(now),
        };
        if !self.store.put_inventory(change).await? {
            return Err(detached(identity));
        }
        for message in &messages {
            tracing::info!(site = %identity.site, host = %identity.host, "{message}");
        }
        // A new site address changes the members the manifest of a site of two or more hosts
        // lists.
        let membership = old.as_ref().map(|o| &o.site_address) != Some(&new.site_address)
            && self.fleet.hosts().attached_in(&identity.site) >= 2;
        if old.as_ref() != Some(&new)
            && let Err(e) = self.control.hosts_changed(&identity.site, membership).await
        {
            tracing::warn!(site = %identity.site, error = %e, "the site's manifest does not follow its host's new inventory");
        }
        Ok(InventoryReport { inventory: new })
    }
}

/// An event's text as stored: a folded event says how many times it happened, since the store
/// keeps events as text (the count stays typed on the wire, for what reads reports).
fn folded(message: String, count: Option<u32>) -> String {
    match count {
        Some(n) if n > 1 => format!("{message} ({n} times)"),
        _ => message,
    }
}

pub async fn report(
    State(s): State<AppState>,
    Extension(id): Extension<AgentIdentity>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<ReportAck> {
    checked_name(&name)?;
    s.agents.authorize(&id, &name, None).await?;
    let body = body.map_err(body_error)?;
    if body.len() > MAX_REPORT_BYTES {
        tracing::warn!(site = %id.site, host = %id.host, bytes = body.len(), "a report over the size bound is refused");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the report is {} bytes, over the limit of {MAX_REPORT_BYTES} bytes (1 MiB); send fewer batches per report",
                body.len()
            ),
        ));
    }
    let req: ReportRequest = serde_json::from_slice(&body).map_err(malformed_json)?;
    Ok(Json(ReportAck {
        acked: s.agents.report(&id, req).await?,
    }))
}

/// `PUT /v1/sites/{name}/hosts/{host}/inventory`: the host's whole inventory, from the host
/// itself.
pub async fn put_inventory(
    State(s): State<AppState>,
    Extension(id): Extension<AgentIdentity>,
    Path((name, host)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<InventoryReport> {
    checked_name(&name)?;
    checked_name(&host)?;
    s.agents.authorize(&id, &name, Some(&host)).await?;
    let body = body.map_err(body_error)?;
    if body.len() > MAX_INVENTORY_BYTES {
        tracing::warn!(site = %id.site, host = %id.host, bytes = body.len(), "an inventory over the size bound is refused");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the inventory is {} bytes, over the limit of {MAX_INVENTORY_BYTES} bytes (256 KiB)",
                body.len()
            ),
        ));
    }
    let report: InventoryReport = serde_json::from_slice(&body).map_err(malformed_json)?;
    Ok(Json(s.agents.put_inventory(&id, report).await?))
}

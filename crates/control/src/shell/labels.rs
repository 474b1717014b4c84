//! `PATCH /v1/hosts/{name}/labels` and `PATCH /v1/sites/{name}/labels`: operators' labels, as
//! `atoll label` changes them.
//!
//! A site's labels belong to its Site resource, so a change commits as the apply of that Site
//! (`core::labels::plan_site_labels`, under the write lock, retried on a lost race like any
//! apply). A host's labels are a column of its record, changed by a compare-and-set on the
//! labels read (`Store::set_host_labels`), read again and retried when another change came
//! first; then audited, and the host's site recompiled when what it compiles reads its hosts
//! (`ControlPlane::hosts_changed`). The audit line follows the change rather than sharing its
//! transaction, as the other host writes' do.

use atoll_api::labels::{LabelChange, Labels};
use atoll_spec::Diagnostic;
use atoll_store::{HostState, StoreError};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use bytes::Bytes;

use super::clock::now_rfc3339;
use super::http::{Actor, ApiResult, AppState, body_error, checked_name, malformed_json};
use super::service::{ControlPlane, Error};
use crate::core::labels::{Owner, apply_change, plan_site_labels, show};

/// How many times a host label change reads again after another change came first.
const ATTEMPTS: usize = 5;

impl ControlPlane {
    /// Changes the labels of site `name`, as an apply of the Site with its new labels.
    pub async fn label_site(
        &self,
        name: &str,
        change: &LabelChange,
        actor: &str,
    ) -> Result<Labels, Error> {
        let _guard = self.writes.lock().await;
        self.commit_planned("label", actor, |state, versions, req| {
            Ok(plan_site_labels(state, versions, name, change, req)?)
        })
        .await
    }

    /// Changes the labels of host `name`, audits the change and recompiles the host's site
    /// when that matters.
    pub async fn label_host(
        &self,
        name: &str,
        change: &LabelChange,
        actor: &str,
    ) -> Result<Labels, Error> {
        for _ in 0..ATTEMPTS {
            let host = self
                .store
                .host(name)
                .await?
                .ok_or_else(|| Error::NotFound(format!("host {name} does not exist")))?;
            if host.state == HostState::Detached {
                return Err(Error::Conflict(vec![Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("host {name}"),
                    message: format!(
                        "host {name} was detached when its site {} was deleted: its labels no longer change",
                        host.site
                    ),
                    hint: Some("enroll the machine again to label it".into()),
                }]));
            }
            let result =
                apply_change(Owner::Host, name, &host.labels, change).map_err(Error::Invalid)?;
            if result.labels == host.labels {
                return Ok(result);
            }
            if !self
                .store
                .set_host_labels(name, &host.labels, &result.labels)
                .await?
            {
                continue;
            }
            self.store
                .append_audit(
                    &now_rfc3339(),
                    actor,
                    "label",
                    &format!(
                        "host {name} of site {} labels {} → {}",
                        host.site,
                        show(&host.labels),
                        show(&result.labels)
                    ),
                )
                .await?;
            self.hosts_changed(&host.site, false).await?;
            return Ok(result);
        }
        Err(Error::Store(StoreError::Backend(format!(
            "the labels of host {name} kept changing during this change; try again"
        ))))
    }
}

fn label_change(body: Result<Bytes, BytesRejection>) -> Result<LabelChange, super::http::ApiError> {
    let body = body.map_err(body_error)?;
    serde_json::from_slice(&body).map_err(malformed_json)
}

pub async fn host(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Labels> {
    checked_name(&name)?;
    let change = label_change(body)?;
    Ok(Json(s.control.label_host(&name, &change, &actor.0).await?))
}

pub async fn site(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Labels> {
    checked_name(&name)?;
    let change = label_change(body)?;
    Ok(Json(s.control.label_site(&name, &change, &actor.0).await?))
}

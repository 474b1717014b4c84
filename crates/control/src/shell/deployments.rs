//! `GET /v1/deployments` and `GET /v1/deployments/{name}`: the shell reads the state, the
//! hosts and their reports, and `core::views::deployments` builds the views.

use atoll_api::{DeploymentView, List};
use atoll_spec::Kind;
use axum::Json;
use axum::extract::{Path, State};

use super::http::{ApiResult, AppState, checked_name, one};
use super::reports::statuses;
use super::service::{ControlPlane, Error, corrupt};
use crate::core::views::{self, Observed};

impl ControlPlane {
    pub async fn deployments(&self, only: Option<&str>) -> Result<Vec<DeploymentView>, Error> {
        let (state, versions) = self.load(&[]).await?;
        let rows = self.rows(Kind::Deployment, only).await?;
        let hosts = self.store.hosts().await?;
        let statuses = statuses(self.store.as_ref()).await?;
        let observed = Observed::new(&hosts, &statuses);
        rows.iter()
            .map(|row| {
                views::deployments::deployment(row, &state, &versions, &observed).map_err(corrupt)
            })
            .collect()
    }
}

pub async fn list(State(s): State<AppState>) -> ApiResult<List<DeploymentView>> {
    Ok(Json(List {
        items: s.control.deployments(None).await?,
    }))
}

pub async fn get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<DeploymentView> {
    checked_name(&name)?;
    one(s.control.deployments(Some(&name)).await?)
}

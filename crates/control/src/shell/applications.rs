//! `GET /v1/applications`, `GET /v1/applications/{name}` and
//! `GET /v1/applications/{name}/status`: the shell reads the state, the versions, the hosts,
//! their reports and presence, and `core::views::applications` builds the views.

use atoll_api::agent::AppStatus;
use atoll_api::{ApplicationView, List, VersionInfo};
use atoll_spec::Kind;
use axum::Json;
use axum::extract::{Path, State};

use super::http::{ApiResult, AppState, checked_name, one};
use super::reports::statuses;
use super::service::{ControlPlane, Error, corrupt};
use crate::core::views::{self, Observed};

impl ControlPlane {
    pub async fn applications(&self, only: Option<&str>) -> Result<Vec<ApplicationView>, Error> {
        let (state, _) = self.load(&[]).await?;
        let mut out = Vec::new();
        for row in self.rows(Kind::Application, only).await? {
            let versions = self
                .store
                .app_versions(&row.name)
                .await?
                .into_iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    applied_at: v.applied_at,
                })
                .collect();
            out.push(views::applications::application(&row, &state, versions).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// Sites × services of application `app`, from the hosts' newest reports.
    pub async fn app_status(&self, app: &str) -> Result<AppStatus, Error> {
        let (state, versions) = self.load(&[]).await?;
        let hosts = self.store.hosts().await?;
        let statuses = statuses(self.store.as_ref()).await?;
        let connectivity = self.fleet.connectivity();
        views::applications::status(
            app,
            &state,
            &versions,
            &Observed::new(&hosts, &statuses),
            |site| connectivity.connected(site),
        )
        .ok_or_else(|| Error::NotFound(format!("application {app} does not exist")))
    }
}

pub async fn list(State(s): State<AppState>) -> ApiResult<List<ApplicationView>> {
    Ok(Json(List {
        items: s.control.applications(None).await?,
    }))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ApplicationView> {
    checked_name(&name)?;
    one(s.control.applications(Some(&name)).await?)
}

pub async fn status(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<AppStatus> {
    checked_name(&name)?;
    Ok(Json(s.control.app_status(&name).await?))
}

//! `GET /v1/sites`, `GET /v1/sites/{name}` and `GET /v1/sites/{name}/events`: the shell reads
//! the state, the hosts, their reports and presence, and `core::views::sites` builds the views.

use std::collections::BTreeMap;

use atoll_api::agent::EventView;
use atoll_api::{List, SiteView};
use atoll_spec::Kind;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::http::{ApiResult, AppState, checked_name, malformed_query, one};
use super::reports::statuses;
use super::service::{ControlPlane, Error, corrupt};
use crate::core::views::{self, Observed};

impl ControlPlane {
    pub async fn sites(&self, only: Option<&str>) -> Result<Vec<SiteView>, Error> {
        let (state, versions) = self.load(&[]).await?;
        let rows = self.rows(Kind::Site, only).await?;
        let hosts = self.store.hosts().await?;
        let statuses = statuses(self.store.as_ref()).await?;
        let connectivity = self.fleet.connectivity();
        let pruned: BTreeMap<String, u64> = self
            .store
            .event_counts()
            .await?
            .into_iter()
            .map(|c| (c.site, c.pruned))
            .collect();
        let observed = Observed::new(&hosts, &statuses);
        rows.iter()
            .map(|row| {
                views::sites::site(
                    row,
                    &state,
                    &versions,
                    &observed,
                    connectivity.connected(&row.name),
                    pruned.get(&row.name).copied().unwrap_or(0),
                )
                .map_err(corrupt)
            })
            .collect()
    }

    /// The newest `limit` events of `site`.
    pub async fn events(&self, site: &str, limit: u32) -> Result<Vec<EventView>, Error> {
        self.site_exists(site).await?;
        Ok(self
            .store
            .events(site, limit)
            .await?
            .into_iter()
            .map(views::sites::event)
            .collect())
    }

    /// Refuses with "not found" unless site `site` is stored.
    pub(super) async fn site_exists(&self, site: &str) -> Result<(), Error> {
        if self
            .store
            .resource(Kind::Site.as_str(), site)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("site {site} does not exist")));
        }
        Ok(())
    }
}

pub async fn list(State(s): State<AppState>) -> ApiResult<List<SiteView>> {
    Ok(Json(List {
        items: s.control.sites(None).await?,
    }))
}

pub async fn get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<SiteView> {
    checked_name(&name)?;
    one(s.control.sites(Some(&name)).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    limit: Option<u32>,
}

pub async fn events(
    State(s): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<List<EventView>> {
    checked_name(&name)?;
    let Query(query) = query.map_err(malformed_query)?;
    Ok(Json(List {
        items: s
            .control
            .events(&name, query.limit.unwrap_or(100).min(10_000))
            .await?,
    }))
}

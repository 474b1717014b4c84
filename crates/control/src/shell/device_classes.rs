//! `GET /v1/deviceclasses` and `GET /v1/deviceclasses/{name}`: device classes as stored, since
//! nothing is derived from them yet.

use atoll_api::{List, ResourceView};
use atoll_spec::Kind;
use axum::Json;
use axum::extract::{Path, State};

use super::http::{ApiResult, AppState, checked_name, one};
use super::service::{ControlPlane, Error, corrupt};
use crate::core::views;

impl ControlPlane {
    pub async fn device_classes(&self, only: Option<&str>) -> Result<Vec<ResourceView>, Error> {
        self.rows(Kind::DeviceClass, only)
            .await?
            .iter()
            .map(|row| views::resource(row).map_err(corrupt))
            .collect()
    }
}

pub async fn list(State(s): State<AppState>) -> ApiResult<List<ResourceView>> {
    Ok(Json(List {
        items: s.control.device_classes(None).await?,
    }))
}

pub async fn get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<ResourceView> {
    checked_name(&name)?;
    one(s.control.device_classes(Some(&name)).await?)
}

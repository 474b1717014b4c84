//! The secret endpoints. Values go in through `PUT` and never come out.

use atoll_api::List;
use atoll_api::secret::{SecretDeleted, SecretView, SetSecretRequest};
use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;

use super::http::{Actor, ApiError, ApiResult, AppState, body_error, checked_name};
use super::secrets::request_change;
use crate::core::secrets::Change;

pub async fn list(State(s): State<AppState>) -> ApiResult<List<SecretView>> {
    Ok(Json(List {
        items: s.control.secret_views(None).await?,
    }))
}

pub async fn one(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<SecretView> {
    checked_name(&name)?;
    Ok(Json(s.control.secret_view(&name).await?))
}

pub async fn set_key(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((name, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<SecretView> {
    let body = body.map_err(body_error)?;
    // The body holds a value: a parse error must not quote it back.
    let req: SetSecretRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "not a secret request (line {}, column {}): expected {{\"value\": BASE64, \"site\": NAME}} or {{\"generate\": {{\"length\": N, \"alphabet\": A}}}}",
                e.line(),
                e.column()
            ),
        )
    })?;
    if let Some(site) = &req.site {
        checked_name(site)?;
    }
    let change = request_change(&name, &key, req)?;
    Ok(Json(
        s.control
            .change_secret(&name, &key, change, &actor.0)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsetQuery {
    site: Option<String>,
}

pub async fn unset_key(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((name, key)): Path<(String, String)>,
    query: Result<Query<UnsetQuery>, QueryRejection>,
) -> ApiResult<SecretView> {
    checked_name(&name)?;
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))?;
    let change = match query.site {
        Some(site) => {
            checked_name(&site)?;
            Change::UnsetSite(site)
        }
        None => Change::Remove,
    };
    Ok(Json(
        s.control
            .change_secret(&name, &key, change, &actor.0)
            .await?,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> ApiResult<SecretDeleted> {
    checked_name(&name)?;
    s.control.delete_secret(&name, &actor.0).await?;
    Ok(Json(SecretDeleted { name }))
}

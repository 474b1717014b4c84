//! HTTP handlers of the agent protocol (and of the user views built from what agents report).
//!
//! Agent routes require a client certificate issued by this control plane, and the site (and
//! host) in the path must be the certificate's: one site's agent can never read another site's
//! manifest or speak for it.

use std::time::Duration;

use atoll_api::agent::{
    CreateTokenRequest, CreateTokenResponse, EnrollRequest, EnrollResponse, MAX_REPORT_BYTES,
    RenewRequest, RenewResponse, ReportAck, ReportRequest,
};
use atoll_api::host::{InventoryReport, MAX_INVENTORY_BYTES};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::agents::Poll;
use super::http::{
    Actor, ApiError, ApiResult, AppState, Peer, body_error, checked_name, malformed_json,
    malformed_query, user,
};
use super::tls::AgentIdentity;
use crate::core::revision::Held;

fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
    serde_json::from_slice(&body).map_err(malformed_json)
}

/// Lets a request through only on a connection with a verified client certificate, and hands
/// the handler that certificate's identity.
pub async fn require_agent(mut req: Request, next: Next) -> Response {
    let identity = req.extensions().get::<Peer>().and_then(|p| p.0.clone());
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route is for agents: present the client certificate issued at enrollment",
        )
        .into_response()
    }
}

fn identity(peer: &Option<Extension<Peer>>) -> Option<AgentIdentity> {
    peer.as_ref().and_then(|Extension(p)| p.0.clone())
}

pub async fn enroll(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<EnrollResponse> {
    let req: EnrollRequest = json(body)?;
    Ok(Json(s.agents.enroll(&req).await?))
}

pub async fn create_token(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<CreateTokenResponse> {
    let req: CreateTokenRequest = json(body)?;
    checked_name(&req.site)?;
    Ok(Json(s.agents.create_token(&req, &actor.0).await?))
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

pub async fn renew(
    State(s): State<AppState>,
    Extension(id): Extension<AgentIdentity>,
    Path((name, host)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<RenewResponse> {
    checked_name(&name)?;
    checked_name(&host)?;
    s.agents.authorize(&id, &name, Some(&host)).await?;
    let req: RenewRequest = json(body)?;
    Ok(Json(s.agents.renew(&id, &req).await?))
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

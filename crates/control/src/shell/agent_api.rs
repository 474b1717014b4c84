//! HTTP handlers of enrollment, join tokens and renewal, and the check that the agent routes'
//! requests carry a client certificate.
//!
//! Agent routes require a client certificate issued by this control plane, and the site (and
//! host) in the path must be the certificate's: one site's agent can never read another site's
//! manifest or speak for it.

use atoll_api::agent::{
    CreateTokenRequest, CreateTokenResponse, EnrollRequest, EnrollResponse, RenewRequest,
    RenewResponse,
};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::http::{
    Actor, ApiError, ApiResult, AppState, Peer, body_error, checked_name, malformed_json,
};
use super::tls::AgentIdentity;

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

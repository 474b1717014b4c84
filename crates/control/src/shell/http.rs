//! The user API under `/v1`: routes, authentication, and one JSON shape for every error.
//!
//! Handlers take their inputs as `Result`s of extraction and map every rejection themselves,
//! so a malformed request gets a JSON error naming what to fix, never axum's plain text.

use std::sync::Arc;

use atoll_api::{ApplyRequest, ErrorBody, ErrorInfo, HOST_DETACHED, List, MAX_BODY_BYTES};
use atoll_spec::{Diagnostic, Kind, Source, names::check_name};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, patch, post, put};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::agent_api;
use super::agents::Agents;
use super::applications;
use super::auth;
use super::deployments;
use super::device_classes;
use super::hosts;
use super::labels;
use super::manifests;
use super::openapi;
use super::reports;
use super::rollout_api;
use super::secret_api;
use super::service::{ControlPlane, Error};
use super::sites;
use super::tls::AgentIdentity;

/// Who made a request: the name of the token it carried.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code.into(),
                message: self.message,
                diagnostics: self.diagnostics,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.code == HOST_DETACHED {
            // A detached host's connection is closed, not kept for its next request.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid(diagnostics) => {
                let n = diagnostics.len();
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid",
                    message: format!(
                        "{n} problem{} found; nothing was changed",
                        if n == 1 { "" } else { "s" }
                    ),
                    diagnostics,
                }
            }
            Error::Conflict(diagnostics) => ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: "the request conflicts with what is stored; nothing was changed".into(),
                diagnostics,
            },
            Error::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            Error::Unauthorized(message) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            Error::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            Error::Detached(message) => {
                ApiError::new(StatusCode::FORBIDDEN, HOST_DETACHED, message)
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the control plane failed: {e}"),
                )
            }
        }
    }
}

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// What handlers share, behind one reference count: axum clones the state for every request
/// and layer, and cloning each service's handles each time showed in profiles.
#[derive(Clone)]
pub(super) struct AppState(Arc<Services>);

pub(super) struct Services {
    pub(super) control: ControlPlane,
    pub(super) agents: Agents,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The agent identity of the connection a request came on: the verified client certificate's,
/// or None when the client presented none. Set per connection by the accept loop.
#[derive(Debug, Clone, Default)]
pub struct Peer(pub Option<AgentIdentity>);

/// Requests that may be worked on at once. Past this, a request is refused at once with 503 and
/// `Retry-After` (agents wait that long, with jitter) rather than queued: under a storm (every
/// site enrolling, or reconnecting after an outage) the control plane keeps answering quickly
/// instead of collapsing under a queue it cannot serve in time. Waiting long-polls do not count:
/// holding one costs nothing but its connection. Reports waiting for their group commit do,
/// and cost little, so the bound is well above the few thousand a fleet-wide change sets off
/// at once at ten thousand sites (256 turned a fifth of them away, each to come back later).
pub const MAX_IN_FLIGHT: usize = 2048;
/// What a refused request is told to wait, in seconds.
const RETRY_AFTER_SECONDS: &str = "2";

/// The user API, with authentication, limits and error mapping applied.
pub fn router(control: ControlPlane, agents: Agents) -> Router {
    router_with_limit(control, agents, MAX_IN_FLIGHT)
}

/// [`router`] with another bound on the requests worked on at once.
pub fn router_with_limit(control: ControlPlane, agents: Agents, in_flight: usize) -> Router {
    let state = AppState(Arc::new(Services { control, agents }));
    let in_flight = Arc::new(Semaphore::new(in_flight));
    let agent = Router::new()
        .route("/v1/sites/{name}/reports", post(reports::report))
        .route(
            "/v1/sites/{name}/hosts/{host}/certificate",
            post(agent_api::renew),
        )
        .route(
            "/v1/sites/{name}/hosts/{host}/inventory",
            put(reports::put_inventory),
        )
        .route_layer(middleware::from_fn(agent_api::require_agent))
        .route("/v1/enroll", post(agent_api::enroll));
    let user = Router::new()
        .route("/v1/apply", post(apply))
        .route("/v1/sites", get(sites::list))
        .route(
            "/v1/sites/{name}",
            get(sites::get).merge(delete_route(Kind::Site)),
        )
        .route("/v1/sites/{name}/events", get(sites::events))
        .route("/v1/sites/{name}/labels", patch(labels::site))
        .route("/v1/tokens", post(agent_api::create_token))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{name}", get(hosts::get))
        .route("/v1/hosts/{name}/labels", patch(labels::host))
        .route("/v1/hosts/{name}/approve-key", post(hosts::approve_key))
        .route("/v1/applications/{name}/status", get(applications::status))
        .route("/v1/applications", get(applications::list))
        .route(
            "/v1/applications/{name}",
            get(applications::get).merge(delete_route(Kind::Application)),
        )
        .route("/v1/deployments", get(deployments::list))
        .route(
            "/v1/deployments/{name}",
            get(deployments::get).merge(delete_route(Kind::Deployment)),
        )
        .route("/v1/deployments/{name}/rollout", get(rollout_api::current))
        .route("/v1/deployments/{name}/rollouts", get(rollout_api::history))
        .route(
            "/v1/deployments/{name}/rollout/{action}",
            post(rollout_api::control),
        )
        .route("/v1/deviceclasses", get(device_classes::list))
        .route(
            "/v1/deviceclasses/{name}",
            get(device_classes::get).merge(delete_route(Kind::DeviceClass)),
        )
        .route("/v1/secrets", get(secret_api::list))
        .route(
            "/v1/secrets/{name}",
            get(secret_api::one).delete(secret_api::delete),
        )
        .route(
            "/v1/secrets/{name}/keys/{key}",
            put(secret_api::set_key).delete(secret_api::unset_key),
        )
        .route("/v1/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Agents and users both read manifests: the handler looks at who is asking.
    let either = Router::new().route("/v1/sites/{name}/manifest", get(manifests::manifest));
    Router::new()
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(
            user.merge(agent)
                .route_layer(middleware::from_fn_with_state(in_flight, limit)),
        )
        .merge(either)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(read_body_first))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the control plane hit a bug; see its log",
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// How much of an oversized body is read and thrown away so that the connection stays usable;
/// past this the connection is closed instead.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the whole request body (up to the API's limit) before any handler or check runs.
///
/// A request refused before its body is read (401, 404, 405, 413) would otherwise leave unread
/// bytes on the connection, and HTTP/1.1 would have to close it without warning, failing the
/// client's next request on that kept-alive connection.
async fn read_body_first(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let mut buffer = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return with_close(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "the request body could not be read",
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            return with_close(too_large());
        }
        if seen <= MAX_BODY_BYTES {
            buffer.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return too_large().into_response();
    }
    next.run(Request::from_parts(
        parts,
        axum::body::Body::from(buffer.freeze()),
    ))
    .await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the request body is over {} MiB", MAX_BODY_BYTES >> 20),
    )
}

fn with_close(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Lets a request through if fewer than the limit are being worked on, else answers 503.
async fn limit(State(in_flight): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the control plane is busy; retry after the time in Retry-After",
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        return response;
    };
    next.run(req).await
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match user(&state, req.headers()).await {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(response) => response,
    }
}

/// The user a request's bearer token belongs to.
pub(super) async fn user(state: &AppState, headers: &HeaderMap) -> Result<Actor, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = auth::bearer(header) else {
        return Err(unauthorized(
            "missing or malformed bearer token: send `Authorization: Bearer atoll_...`",
        ));
    };
    match state
        .control
        .store()
        .token_by_hash(&auth::hash(token))
        .await
    {
        Ok(Some(row)) => Ok(Actor(row.name)),
        Ok(None) => Err(unauthorized("unknown token")),
        Err(e) => Err(ApiError::from(Error::Store(e)).into_response()),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no API route {method} {}; see /v1/openapi.json", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see /v1/openapi.json",
            uri.path()
        ),
    )
}

/// A JSON body that does not parse, said with where.
pub(super) fn malformed_json(e: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed",
        format!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    )
}

/// A query string that does not parse.
pub(super) fn malformed_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text())
}

pub(super) fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("cannot read the request body: {rejection}"),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    query: Result<Query<ApplyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<atoll_api::ApplyResponse> {
    let Query(query) = query.map_err(malformed_query)?;
    let body = body.map_err(body_error)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let request = match media.as_str() {
        "application/json" => {
            serde_json::from_slice::<ApplyRequest>(&body).map_err(malformed_json)?
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            let text = String::from_utf8(body.to_vec()).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "the YAML body is not UTF-8",
                )
            })?;
            ApplyRequest {
                sources: vec![Source {
                    name: "request".into(),
                    text,
                }],
                dry_run: false,
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send application/json (an ApplyRequest) or application/yaml (resources)",
            ));
        }
    };
    if request.sources.is_empty() || request.sources.iter().all(|s| s.text.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "nothing to apply: no documents were sent",
        ));
    }
    let dry_run = request.dry_run || query.dry_run;
    Ok(Json(
        state
            .control
            .apply(&request.sources, dry_run, &actor.0)
            .await?,
    ))
}

pub(super) fn checked_name(name: &str) -> Result<(), ApiError> {
    check_name(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))
}

pub(super) fn one<T>(mut items: Vec<T>) -> ApiResult<T> {
    items
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"))
}

/// `DELETE` of one resource of `kind`, named in the path.
fn delete_route(kind: Kind) -> MethodRouter<AppState> {
    axum::routing::delete(
        move |State(s): State<AppState>,
              Extension(actor): Extension<Actor>,
              Path(name): Path<String>| async move {
            checked_name(&name)?;
            Ok::<_, ApiError>(Json(s.control.delete(kind, &name, &actor.0).await?))
        },
    )
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(
    State(s): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<List<atoll_api::AuditEntry>> {
    let Query(query) = query.map_err(malformed_query)?;
    let rows = s
        .control
        .store()
        .audit(query.limit.unwrap_or(100).min(1000))
        .await
        .map_err(Error::Store)?;
    let items = rows
        .into_iter()
        .map(|r| atoll_api::AuditEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            detail: r.detail,
        })
        .collect();
    Ok(Json(List { items }))
}

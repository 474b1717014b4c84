//! One HTTP exchange with the control plane, its failures sorted into what to do next: retry
//! later (unreachable), stop and say why (refused), or distrust the answer (protocol).

use atoll_api::ErrorBody;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AgentError;

/// Sends a request; `Ok(None)` is "304 Not Modified".
pub async fn send<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&B>,
) -> Result<Option<T>, AgentError> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| AgentError::Unreachable(chain(&e)))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| AgentError::Unreachable(chain(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            AgentError::Protocol(format!("{url}: an answer this agent cannot read: {e}"))
        });
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map_or_else(|_| format!("HTTP {status}"), |b| b.error.message);
    if status.is_server_error()
        || status == StatusCode::SERVICE_UNAVAILABLE
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(AgentError::Unreachable(format!(
            "{url}: {status}: {message}"
        )))
    } else {
        Err(AgentError::Refused {
            status: status.as_u16(),
            message,
        })
    }
}

/// The innermost cause of an error, which is the one that says what happened.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

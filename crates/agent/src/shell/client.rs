//! One HTTP exchange with the control plane, its failures sorted into what to do next: retry
//! later (unreachable), stop and say why (refused), or distrust the answer (protocol).

use std::time::Duration;

use atoll_api::{ErrorBody, HOST_DETACHED};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AgentError;

/// Sends a request that must be answered within `timeout`; `Ok(None)` is "304 Not Modified".
pub async fn send<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<Option<T>, AgentError> {
    let mut request = http.request(method, url).timeout(timeout);
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
    if let Some(retry_after) = busy_for(status, response.headers()) {
        return Err(AgentError::Busy { retry_after });
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
    let (code, message) = serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
        |_| (String::new(), format!("HTTP {status}")),
        |b| (b.error.code, b.error.message),
    );
    if status == StatusCode::FORBIDDEN && code == HOST_DETACHED {
        return Err(AgentError::Detached(message));
    }
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

/// How long a "busy" answer (503 or 429 with `Retry-After` in seconds) asks to wait; at most
/// an hour, whatever it says.
fn busy_for(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.clamp(1, 3600)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn busy_answers_say_how_long_to_wait() {
        let mut headers = HeaderMap::new();
        assert_eq!(busy_for(StatusCode::SERVICE_UNAVAILABLE, &headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            busy_for(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Some(Duration::from_secs(2))
        );
        assert_eq!(busy_for(StatusCode::INTERNAL_SERVER_ERROR, &headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(
            busy_for(StatusCode::TOO_MANY_REQUESTS, &headers),
            Some(Duration::from_secs(3600))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(busy_for(StatusCode::SERVICE_UNAVAILABLE, &headers), None);
    }
}

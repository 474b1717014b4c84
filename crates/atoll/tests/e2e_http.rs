//! The HTTP API's edges, spoken to directly: authentication, malformed and oversized bodies,
//! unknown routes, the OpenAPI document, and a loop of garbage requests that must never get a
//! 5xx answer nor bring the control plane down.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::ControlPlane;

/// The status and the parsed JSON body of a response (`Value::Null` if it is not JSON).
async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

#[track_caller]
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
fn garbage_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A "billion laughs" YAML: nine levels of nine aliases each.
fn yaml_bomb() -> String {
    let mut text = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let items = [prev.as_str(); 9].join(",");
        text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    text.push_str("kind: Site\nname: bomb\nlabels: *a9\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_refuses_bad_requests_with_json_errors_and_never_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path());
    let http = cp.http();
    let token = cp.token();
    let url = |path: &str| format!("{}{path}", cp.url);

    // No token.
    let (status, body) = answer(http.get(url("/v1/sites")).send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // A well-formed but unknown token.
    let (status, body) = answer(
        http.get(url("/v1/sites"))
            .bearer_auth("atoll_x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // The real token works.
    let (status, body) = answer(
        http.get(url("/v1/sites"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"], Value::Array(vec![]), "{body}");

    // JSON that is not JSON.
    let (status, body) = answer(
        http.post(url("/v1/apply"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed");

    // YAML that is not YAML: refused as invalid, with a diagnostic that has a line.
    let (status, body) = answer(
        http.post(url("/v1/apply"))
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body("kind: [")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid");
    let diagnostics = body["error"]["diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("no diagnostics: {body}"));
    assert!(!diagnostics.is_empty(), "{body}");
    assert!(
        diagnostics
            .iter()
            .any(|d| d["line"].as_u64().is_some_and(|l| l >= 1)),
        "no diagnostic with a line: {body}"
    );

    // 5 MiB: over the 4 MiB limit.
    let big = vec![b' '; 5 * 1024 * 1024];
    let (status, body) = answer(
        http.post(url("/v1/apply"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // An unknown route.
    let (status, body) = answer(
        http.get(url("/v1/nope"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_route");

    // The OpenAPI document needs no token and documents apply.
    let (status, openapi) = answer(http.get(url("/v1/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{openapi}");
    let paths: Vec<String> = openapi["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths: {openapi}"))
        .keys()
        .cloned()
        .collect();
    assert!(paths.iter().any(|p| p == "/v1/apply"), "{paths:?}");
    assert!(paths.len() >= 5, "{paths:?}");

    // Garbage, everywhere. Resources to find (and delete) make the handlers do real work.
    // Requests share keep-alive connections, as agents and proxies do: every one must be
    // answered (see `a_request_whose_body_is_not_read_does_not_break_its_connection`).
    cp.apply_examples();
    let mut urls = Vec::new();
    for path in &paths {
        if path.contains("{name}") {
            for name in ["store-0042", "pos", "x", "%2e%2e", "UPPER", "a%00b", "%ff"] {
                urls.push(path.replace("{name}", name));
            }
        } else {
            urls.push(path.clone());
        }
    }
    urls.push("/v1/audit?limit=abc".into());
    urls.push("/v1/audit?limit=99999999999".into());
    urls.push("/v1/apply?dry_run=maybe".into());
    urls.push("/v1/apply?dry_run=true&extra=1".into());
    let mut nested = "[".repeat(20_000);
    nested.push_str(&"]".repeat(20_000));
    let bodies: Vec<(&'static str, Vec<u8>)> = vec![
        ("random bytes", garbage_bytes(4096, 0x9e37_79b9_7f4a_7c15)),
        ("deep nesting", nested.into_bytes()),
        ("yaml bomb", yaml_bomb().into_bytes()),
        ("empty", Vec::new()),
    ];
    let mut requests = Vec::new();
    for path in &urls {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            // Only methods with a body look at its type.
            let content_types: &[Option<&'static str>] =
                if matches!(method, Method::GET | Method::DELETE) {
                    &[None]
                } else {
                    &[None, Some("application/json"), Some("application/yaml")]
                };
            for auth in [false, true] {
                for (what, body) in &bodies {
                    for &content_type in content_types {
                        requests.push((
                            method.clone(),
                            path.clone(),
                            auth,
                            *what,
                            body.clone(),
                            content_type,
                        ));
                    }
                }
            }
        }
    }
    let total = requests.len();
    assert!(total > 2000, "only {total} garbage requests");
    // A few workers, each sending its share in order.
    let workers = 4;
    let mut shares: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        shares[i % workers].push(r);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let client = http.clone();
        let (base, token) = (cp.url.clone(), token.clone());
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for (method, path, auth, what, body, content_type) in share {
                let request = |client: &reqwest::Client| {
                    let mut request = client
                        .request(method.clone(), format!("{base}{path}"))
                        .body(body.clone());
                    if auth {
                        request = request.bearer_auth(&token);
                    }
                    if let Some(ct) = content_type {
                        request = request.header("content-type", ct);
                    }
                    request
                };
                let label = format!("{method} {path} ({what}, {content_type:?}, token {auth})");
                match request(&client).send().await {
                    Err(e) => failures.push(format!("{label}: no answer: {e:?}")),
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        if status.is_server_error() {
                            failures.push(format!("{label}: {status}: {text}"));
                        }
                    }
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.expect("garbage worker"));
    }
    assert!(
        failures.is_empty(),
        "{} of {total} garbage requests failed:\n{}\n--- server stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        cp.stderr()
    );

    // Still serving.
    let response = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok\n");
    let (status, _) = answer(
        http.get(url("/v1/sites"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A client that keeps connections alive (as an agent, a proxy or any SDK does) must not lose its
/// next request because the previous one was refused before its body was read: the server must
/// either read the body, or say `Connection: close` on the refusal so the client does not reuse
/// the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_is_not_read_does_not_break_its_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path());
    let token = cp.token();
    let cases = [
        (
            "POST",
            "/v1/apply",
            "atoll_wrong",
            64 << 10,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/v1/nope",
            token.as_str(),
            64 << 10,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/apply",
            token.as_str(),
            64 << 10,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "POST",
            "/v1/apply",
            token.as_str(),
            5 << 20,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, bearer, size, want) in cases {
        let http = cp.http();
        let body = vec![b'x'; size];
        let (mut unanswered, mut lost) = (Vec::new(), 0);
        let mut close_header = false;
        for _ in 0..20 {
            let sent = http
                .request(method.parse().unwrap(), format!("{}{path}", cp.url))
                .bearer_auth(bearer)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => {
                    assert_eq!(response.status(), want, "{method} {path}");
                    close_header |= response
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let _ = response.bytes().await;
                }
                Err(e) => unanswered.push(format!("{e:?}")),
            }
            if http
                .get(format!("{}/healthz", cp.url))
                .send()
                .await
                .is_err()
            {
                lost += 1;
            }
        }
        if lost > 0 || !unanswered.is_empty() {
            unanswered.dedup();
            failures.push(format!(
                "`{method} {path}` with a {size}-byte body ({want}; `Connection: close` sent: \
                 {close_header}): the next request on the same connection failed {lost} times of \
                 20; the request itself got no answer {} times {unanswered:?}",
                unanswered.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

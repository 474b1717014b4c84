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
    let mut text = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
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
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", garbage_bytes(4096, 0x9e37_79b9_7f4a_7c15)),
        ("deep nesting", nested.into_bytes()),
        ("yaml bomb", yaml_bomb().into_bytes()),
        ("empty", Vec::new()),
    ];
    let content_types = [None, Some("application/json"), Some("application/yaml")];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut sent = 0usize;
    for path in &urls {
        for method in &methods {
            for auth in [false, true] {
                for (what, body) in &bodies {
                    for content_type in content_types {
                        let mut request = http
                            .request(method.clone(), url(path))
                            .body(body.clone());
                        if auth {
                            request = request.bearer_auth(&token);
                        }
                        if let Some(ct) = content_type {
                            request = request.header("content-type", ct);
                        }
                        let response = request.send().await.unwrap_or_else(|e| {
                            panic!(
                                "{method} {path} ({what}, {content_type:?}, token {auth}): no answer: {e:?}\n--- server stderr:\n{}",
                                cp.stderr()
                            )
                        });
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        assert!(
                            !status.is_server_error(),
                            "{method} {path} ({what}, {content_type:?}, token {auth}): {status}: {text}"
                        );
                        sent += 1;
                    }
                }
            }
        }
    }
    assert!(sent > 1000, "only {sent} garbage requests");

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

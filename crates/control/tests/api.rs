//! The user API in process: authentication, error shapes, limits, and that no request, however
//! malformed, gets a 5xx or takes the server down.

use std::sync::Arc;

use atoll_control::shell::agents::Agents;
use atoll_control::shell::fleet::Fleet;
use atoll_control::shell::service::ControlPlane;
use atoll_control::shell::signing::ManifestSigner;
use atoll_control::shell::tls::Pki;
use atoll_control::shell::vault::Vault;
use atoll_control::shell::{auth, http, openapi};
use atoll_store::{SqliteStore, Store, TokenRow, Write};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

struct Api {
    router: Router,
    token: String,
    _dir: tempfile::TempDir,
}

/// One CA and signing key for every test: making them is the slow part of a case, and once
/// loaded they live in memory (their folder is gone at once).
fn keys() -> (Arc<Pki>, Arc<ManifestSigner>) {
    static KEYS: std::sync::OnceLock<(Arc<Pki>, Arc<ManifestSigner>)> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        (
            Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap()),
            Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap()),
        )
    })
    .clone()
}

async fn api() -> Api {
    api_with_limit(http::MAX_IN_FLIGHT).await
}

async fn api_with_limit(in_flight: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
    let token = auth::generate();
    let row = TokenRow {
        id: "t".into(),
        name: "tester".into(),
        hash: auth::hash(&token),
        role: "admin".into(),
        created_at: "now".into(),
    };
    store.commit(0, vec![Write::PutToken(row)]).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let fleet = Arc::new(Fleet::default());
    let (pki, signer) = keys();
    let control = ControlPlane::new(
        store.clone(),
        fleet.clone(),
        Arc::new(Vault::from_key([5; 32])),
        signer,
    );
    let agents = Agents::new(store, control.clone(), fleet, pki);
    Api {
        router: http::router_with_limit(control, agents, in_flight),
        token,
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
        auth: bool,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if auth {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The secret the examples read, generated per site.
    async fn example_secret(&self) {
        let (status, body) = self
            .call(
                "PUT",
                "/v1/secrets/pos-db-password/keys/password",
                Some("application/json"),
                r#"{"generate": {"length": 24}}"#,
                true,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn yaml(&self, text: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/v1/apply",
            Some("application/yaml"),
            text.to_owned(),
            true,
        )
        .await
    }
}

const EXAMPLES: &str = concat!(
    include_str!("../../../examples/pos.yaml"),
    "\n---\n",
    include_str!("../../../examples/sites.yaml")
);

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let api = api().await;
    let (status, body) = api
        .call("GET", "/v1/sites", None, Body::empty(), false)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let response = api
        .router
        .clone()
        .oneshot(
            Request::get("/v1/sites")
                .header("authorization", "Bearer atoll_wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.call("GET", "/v1/sites", None, Body::empty(), true)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_message() {
    let api = api().await;
    let (status, body) = api
        .call(
            "POST",
            "/v1/apply",
            Some("application/json"),
            "{not json",
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1")
    );

    let (status, body) = api.yaml("kind: [\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid");
    assert!(body["error"]["diagnostics"][0]["line"].as_u64().unwrap() >= 1);

    let (status, body) = api
        .call("POST", "/v1/apply", Some("text/plain"), "kind: Site", true)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let (status, _) = api.yaml("").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bodies_over_4_mib_are_413() {
    let api = api().await;
    let big = "#".repeat(4 * 1024 * 1024 + 1);
    let (status, body) = api.yaml(&big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let api = api().await;
    let (status, body) = api.call("GET", "/v1/nope", None, Body::empty(), true).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    let (status, body) = api
        .call("PUT", "/v1/sites", None, Body::empty(), true)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn apply_get_delete_round() {
    let api = api().await;
    api.example_secret().await;
    let (status, body) = api.yaml(EXAMPLES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["manifests"].as_array().unwrap().len(),
        4,
        "pos.yaml and sites.yaml: four sites"
    );
    let (_, again) = api.yaml(EXAMPLES).await;
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "unchanged")
    );

    let (status, site) = api
        .call("GET", "/v1/sites/store-0042", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(site["applications"][0]["application"], "pos");
    assert_eq!(site["resource"]["labels"]["store_id"], "0042");
    let (_, manifest) = api
        .call(
            "GET",
            "/v1/sites/store-0042/manifest",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(
        manifest["content"]["applications"][0]["services"][0]["env"]["STORE_ID"],
        "0042"
    );
    let (status, _) = api
        .call("GET", "/v1/sites/Not_A_Name", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = api
        .call("DELETE", "/v1/applications/pos", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = api
        .call(
            "DELETE",
            "/v1/deployments/pos-prod",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(
            "DELETE",
            "/v1/deployments/pos-prod",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = api
        .call("GET", "/v1/audit?limit=1", None, Body::empty(), true)
        .await;
    assert_eq!(audit["items"][0]["action"], "delete");
    assert_eq!(audit["items"][0]["actor"], "tester");
}

#[tokio::test]
async fn dry_runs_store_nothing() {
    let api = api().await;
    api.example_secret().await;
    let (status, body) = api
        .call(
            "POST",
            "/v1/apply?dry_run=true",
            Some("application/yaml"),
            EXAMPLES,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dry_run"], true);
    let (_, sites) = api
        .call("GET", "/v1/sites", None, Body::empty(), true)
        .await;
    assert!(sites["items"].as_array().unwrap().is_empty());
}

/// Every documented operation is served with the documented method.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let api = api().await;
    let (status, doc) = api
        .call("GET", "/v1/openapi.json", None, Body::empty(), false)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        openapi::ROUTES.len()
    );
    for route in openapi::ROUTES {
        assert!(
            paths[route.path][route.method].is_object(),
            "{} {} undocumented",
            route.method,
            route.path
        );
        let path = route
            .path
            .replace("{name}", "store-0042")
            .replace("{host}", "h1")
            .replace("{action}", "pause");
        let (status, body) = api
            .call(
                &route.method.to_uppercase(),
                &path,
                Some("application/yaml"),
                "kind: Site\nname: x\n",
                true,
            )
            .await;
        assert!(
            body["error"]["code"] != "no_route" && status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {} is documented but not served: {status} {body}",
            route.method,
            route.path
        );
    }
}

fn garbage() -> impl Strategy<Value = (usize, usize, String, Vec<u8>, Option<&'static str>, bool)> {
    let paths = openapi::ROUTES.len() + 3;
    (
        0..5usize,
        0..paths,
        prop_oneof![
            Just("store-0042".to_owned()),
            "[a-zA-Z0-9_.%-]{0,12}",
            Just("%00".to_owned())
        ],
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            "\\PC{0,200}".prop_map(String::into_bytes),
            Just(b"[".repeat(100_000)),
            Just(b"a: &a [*a, *a]\n".to_vec()),
            Just(
                br#"{"sources":[{"name":"x","text":"kind: Site\nname: s\n"}],"dry_run":"maybe"}"#
                    .to_vec()
            ),
        ],
        prop_oneof![
            Just(None),
            Just(Some("application/json")),
            Just(Some("application/yaml")),
            Just(Some("text/html"))
        ],
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn garbage_never_gets_a_5xx((method, path, name, body, ct, auth) in garbage()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let api = api().await;
            let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][method];
            let path = match openapi::ROUTES.get(path) {
                Some(r) => r.path.replace("{name}", &name).replace("{host}", &name).replace("{action}", &name),
                None => ["/v1/", "/v1/sites/x/y/z", "/../etc/passwd"][path - openapi::ROUTES.len()].to_owned(),
            };
            let Ok(uri) = path.parse::<axum::http::Uri>() else { return Ok(()) };
            let (status, _) = api.call(method, &uri.to_string(), ct, body, auth).await;
            prop_assert!(!status.is_server_error(), "{method} {path} -> {status}");
            let (status, _) = api.call("GET", "/healthz", None, Body::empty(), false).await;
            prop_assert_eq!(status, StatusCode::OK);
            Ok(())
        })?;
    }
}

/// Past the bound on requests worked on at once, requests are refused with 503 and a time to
/// come back, not queued; health checks and the API document are always answered.
#[tokio::test]
async fn a_busy_control_plane_answers_503_with_retry_after() {
    let api = api_with_limit(0).await;
    for (method, path, body, auth) in [
        ("GET", "/v1/sites", "", true),
        ("POST", "/v1/enroll", "{}", false),
        ("POST", "/v1/sites/s/reports", "{}", false),
    ] {
        let mut req = Request::builder().method(method).uri(path);
        if auth {
            req = req.header("authorization", format!("Bearer {}", api.token));
        }
        let response = api
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(response.headers()["retry-after"], "2", "{path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "busy", "{path}");
    }
    assert_eq!(
        api.call("GET", "/healthz", None, "", false).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/v1/openapi.json", None, "", false).await.0,
        StatusCode::OK
    );
}

/// Issue 12, item 3: a 133-byte template made a 100 MB manifest per site.
#[tokio::test]
async fn an_apply_whose_template_amplifies_is_refused_and_changes_nothing() {
    let api = api().await;
    let started = std::time::Instant::now();
    let (status, body) = api
        .yaml(
            r#"
kind: Site
name: store-7
---
kind: Application
name: amp
version: "1.0"
services:
  - name: api
    image: amp/api:1.0
    env:
      BIG: "{{ 'x' * 100000000 }}"
---
kind: Deployment
name: amp-prod
application: amp
placement:
  sites: "!has(nothing)"
"#,
        )
        .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(status.is_client_error(), "{status}: {body}");
    let text = body.to_string();
    for needle in [
        "store-7",
        "amp@1.0",
        "services[0].env.BIG",
        "65536 bytes",
        "--template-value-limit",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let (_, sites) = api
        .call("GET", "/v1/sites", None, Body::empty(), true)
        .await;
    assert!(sites["items"].as_array().unwrap().is_empty(), "{sites}");
}

/// The OpenAPI document says `integer`, which in JSON Schema takes `5.0`: so does the server,
/// where it once answered 400 "expected u32" to a schema-valid body. A fraction is still refused.
#[tokio::test]
async fn a_whole_float_is_taken_where_the_document_says_integer() {
    let api = api().await;
    let (status, body) = api
        .call(
            "PUT",
            "/v1/secrets/whole/keys/k",
            Some("application/json"),
            r#"{"generate": {"length": 16.0}}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"][0]["generate"]["length"], 16, "{body}");
    let (status, _) = api
        .call(
            "PUT",
            "/v1/secrets/whole/keys/k",
            Some("application/json"),
            r#"{"generate": {"length": 16.5}}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api.example_secret().await;
    let (status, body) = api.yaml(EXAMPLES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/v1/tokens",
            Some("application/json"),
            r#"{"site": "store-0042", "ttl_seconds": 3600.0, "uses": 2.0}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["uses"], 2, "{body}");
}

/// A value is base64 exactly as the document's pattern says: one with spaces around it was
/// trimmed and taken.
#[tokio::test]
async fn a_secret_value_is_not_trimmed() {
    let api = api().await;
    for value in [" YQ==", "YQ==\n", "YQ== "] {
        let (status, body) = api
            .call(
                "PUT",
                "/v1/secrets/untrimmed/keys/k",
                Some("application/json"),
                serde_json::json!({ "value": value }).to_string(),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}: {body}");
        assert!(
            !body.to_string().contains("YQ"),
            "the value came back: {body}"
        );
    }
    let (status, body) = api
        .call(
            "PUT",
            "/v1/secrets/untrimmed/keys/k",
            Some("application/json"),
            r#"{"value": "YQ=="}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Removing a key the secret does not have, or a site value the key does not have, is a 404
/// (it was a 400, as if the request were malformed).
#[tokio::test]
async fn a_missing_secret_key_is_a_404() {
    let api = api().await;
    let (status, body) = api
        .call(
            "PUT",
            "/v1/secrets/has-one/keys/there",
            Some("application/json"),
            r#"{"value": "YQ=="}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for path in [
        "/v1/secrets/has-one/keys/missing",
        "/v1/secrets/has-one/keys/there?site=store-0042",
        "/v1/secrets/no-such/keys/there",
    ] {
        let (status, body) = api.call("DELETE", path, None, Body::empty(), true).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}

/// A YAML stream of `null` or empty documents holds nothing to apply: it was answered 200 with
/// no results, though the document says a body of resources.
#[tokio::test]
async fn an_apply_of_no_resource_is_refused() {
    let api = api().await;
    for text in ["null\n", "---\n---\n", "~\n---\nnull\n"] {
        let (status, body) = api.yaml(text).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text:?}: {body}");
        assert!(
            body["error"]["diagnostics"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nothing to apply")),
            "{text:?}: {body}"
        );
    }
}

/// A deployment that has had no rollout answers `current: null`, which the document now allows
/// (it said an object).
#[tokio::test]
async fn a_rollout_history_without_a_rollout_has_a_null_current() {
    let api = api().await;
    api.example_secret().await;
    let (status, body) = api.yaml(EXAMPLES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, history) = api
        .call(
            "GET",
            "/v1/deployments/pos-prod/rollouts",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["current"], Value::Null, "{history}");
    let (_, doc) = api
        .call("GET", "/v1/openapi.json", None, Body::empty(), false)
        .await;
    let current = &doc["components"]["schemas"]["RolloutHistory"]["properties"]["current"];
    assert!(
        current["oneOf"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["type"] == "null")),
        "{current}"
    );
}

#[tokio::test]
async fn a_device_class_is_applied_listed_got_and_deleted_once_unused() {
    let api = api().await;
    let class = "kind: DeviceClass\nname: camera\nmatch:\n  - { subsystem: video4linux, name: '*Camera*' }\n";
    let app = "kind: Application\nname: cam\nversion: '1'\nservices:\n  - name: web\n    image: web:1\n    requires: { devices: [camera] }\n";
    let (status, body) = api.yaml(app).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["diagnostics"][0]["message"],
        "device class `camera` does not exist"
    );
    let (status, body) = api.yaml(&format!("{class}---\n{app}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["kind"], "DeviceClass");

    let (status, list) = api
        .call("GET", "/v1/deviceclasses", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"][0]["resource"]["match"][0]["name"], "*Camera*");
    let (status, one) = api
        .call("GET", "/v1/deviceclasses/camera", None, Body::empty(), true)
        .await;
    assert_eq!(
        (status, one["generation"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (status, _) = api
        .call("GET", "/v1/deviceclasses/gpu", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = api
        .call(
            "DELETE",
            "/v1/deviceclasses/camera",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("application cam version 1 service web requires it"),
        "{body}"
    );
    let (status, _) = api
        .call("DELETE", "/v1/applications/cam", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            "DELETE",
            "/v1/deviceclasses/camera",
            None,
            Body::empty(),
            true,
        )
        .await;
    assert_eq!(
        (status, &body["kind"]),
        (StatusCode::OK, &Value::from("DeviceClass"))
    );
}

/// `PATCH …/labels` takes a closed `LabelChange`: an unknown field is malformed, a key both set
/// and removed invalid, an unknown host or site not found; a valid change answers the labels.
#[tokio::test]
async fn a_label_change_is_closed_checked_and_answers_the_labels() {
    let api = api().await;
    let (status, body) = api
        .call(
            "POST",
            "/v1/apply",
            Some("application/yaml"),
            "kind: Site\nname: s1\nlabels:\n  region: eu\n",
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let patch = |path: &'static str, body: &'static str| {
        api.call("PATCH", path, Some("application/json"), body, true)
    };
    let (status, body) = patch("/v1/sites/s1/labels", r#"{"set":{"a":"1"},"also":1}"#).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &"malformed".into()),
        "{body}"
    );
    let (status, body) = patch("/v1/sites/s1/labels", r#"{"set":{"a":"1"},"remove":["a"]}"#).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &"invalid".into()),
        "{body}"
    );
    assert_eq!(
        body["error"]["diagnostics"][0]["path"], "site s1: remove[0]",
        "{body}"
    );
    for path in ["/v1/sites/nope/labels", "/v1/hosts/nope/labels"] {
        let (status, body) = patch(path, "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, body) = api
        .call("GET", "/v1/hosts/nope", None, Body::empty(), true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["message"], "host nope does not exist");
    let (status, body) = patch(
        "/v1/sites/s1/labels",
        r#"{"set":{"a":"1"},"remove":["region","x"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "labels": { "a": "1" }, "not_found": ["x"] })
    );
}

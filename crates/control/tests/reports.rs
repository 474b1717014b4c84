//! Agents' reports over the HTTP routes, in process: the bounds of a report (413 and 400 naming
//! the field and limit), the time an event is shown with, retention per site, and the host's
//! status as its view shows it again.

use std::sync::Arc;
use std::time::Duration;

use atoll_api::agent::{
    AgentEvent, MAX_EVENT_MESSAGE_BYTES, MAX_REPORT_BYTES, Report, ReportRequest,
};
use atoll_control::Retention;
use atoll_control::shell::agents::Agents;
use atoll_control::shell::auth;
use atoll_control::shell::fleet::Fleet;
use atoll_control::shell::http::{self, Peer};
use atoll_control::shell::service::ControlPlane;
use atoll_control::shell::signing::ManifestSigner;
use atoll_control::shell::tls::{AgentIdentity, Pki};
use atoll_control::shell::vault::Vault;
use atoll_spec::Source;
use atoll_store::{Enrolled, HostRow, JoinTokenRow, SqliteStore, Store, TokenRow, Write};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

struct Api {
    router: Router,
    token: String,
    _dir: tempfile::TempDir,
}

/// A control plane with site `s1` and its enrolled host `h1`, keeping `retention`.
async fn api(retention: Retention) -> Api {
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
    let pki = Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
    let control = ControlPlane::new(
        store.clone(),
        fleet.clone(),
        Arc::new(Vault::from_key([5; 32])),
        signer,
    );
    let site = Source {
        name: "s.yaml".into(),
        text: "kind: Site\nname: s1\n".into(),
    };
    control.apply(&[site], false, "t").await.unwrap();
    store
        .create_join_token(JoinTokenRow {
            id: "t1".into(),
            hash: "hash-t1".into(),
            site: "s1".into(),
            uses_left: 1,
            expires_at: "2099-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .await
        .unwrap();
    let host = HostRow {
        id: "h1".into(),
        site: "s1".into(),
        hostname: "h1".into(),
        inventory: "{}".into(),
        cert_serial: "01".into(),
        cert_expiry: "2099-01-01T00:00:00Z".into(),
        enrolled_at: "2026-01-01T00:00:00Z".into(),
        last_seen: None,
        recipient: None,
        ..HostRow::default()
    };
    assert_eq!(store.enroll_host(host, "t1").await.unwrap(), Enrolled::Yes);
    let agents = Agents::new(store, control.clone(), fleet, pki).with_retention(retention);
    Api {
        router: http::router(control, agents),
        token,
        _dir: dir,
    }
}

impl Api {
    /// Posts `body` as host h1's report.
    async fn report(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/sites/s1/reports")
            .header("content-type", "application/json")
            .extension(Peer(Some(AgentIdentity {
                site: "s1".into(),
                host: "h1".into(),
                serial: "01".into(),
            })))
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn batch(seq: u64, at: &str, messages: &[String]) -> Report {
    Report {
        seq,
        at: "2026-01-01T00:00:00Z".into(),
        events: messages
            .iter()
            .map(|m| AgentEvent {
                at: at.into(),
                kind: "container".into(),
                message: m.clone(),
                count: None,
            })
            .collect(),
        status: None,
    }
}

fn body(batches: Vec<Report>) -> String {
    serde_json::to_string(&ReportRequest { batches }).unwrap()
}

/// Issue 12, item 13: one report of 3.6 MB with 120 events was accepted.
#[tokio::test]
async fn a_report_larger_than_the_bound_is_refused_with_413() {
    let api = api(Retention::default()).await;
    let message = "x".repeat(4000);
    let batches = (1..=30)
        .map(|seq| batch(seq, "2026-01-01T00:00:00Z", &vec![message.clone(); 10]))
        .collect();
    let text = body(batches);
    assert!(text.len() > MAX_REPORT_BYTES && text.len() < 4 * 1024 * 1024);
    let (status, answer) = api.report(text).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("over the limit of {MAX_REPORT_BYTES} bytes")),
        "{message}"
    );
    let (_, events) = api.get("/v1/sites/s1/events").await;
    assert_eq!(events["items"], Value::Array(vec![]), "nothing was stored");
}

/// Issue 12, item 13: an event's message had no bound.
#[tokio::test]
async fn an_event_over_the_bound_is_refused_naming_the_field_and_limit() {
    let api = api(Retention::default()).await;
    let long = "x".repeat(MAX_EVENT_MESSAGE_BYTES + 1);
    let (status, answer) = api
        .report(body(vec![
            batch(1, "2026-01-01T00:00:00Z", &["fine".into()]),
            batch(2, "2026-01-01T00:00:00Z", &["fine".into(), long]),
        ]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid");
    let problem = &answer["error"]["diagnostics"][0];
    assert_eq!(problem["path"], "batches[1].events[1].message");
    assert_eq!(problem["message"], "4097 bytes, over the limit of 4096");
    let (_, events) = api.get("/v1/sites/s1/events").await;
    assert_eq!(
        events["items"],
        Value::Array(vec![]),
        "a refused report is stored in no part"
    );
}

/// Issue 12, item 13: an event dated 2099 sorted as the newest for ever, and was shown with a
/// time that never was.
#[tokio::test]
async fn an_event_dated_2099_is_shown_with_its_received_time() {
    let api = api(Retention::default()).await;
    for (seq, at, message) in [
        (1, "2099-01-01T00:00:00Z", "from a clock in 2099"),
        (2, "2020-01-01T00:00:00Z", "late, from an offline site"),
    ] {
        let (status, answer) = api
            .report(body(vec![batch(seq, at, &[message.into()])]))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, events) = api.get("/v1/sites/s1/events").await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["message"], "from a clock in 2099");
    assert_eq!(items[0]["at"], items[0]["received_at"]);
    assert_eq!(items[0]["claimed_at"], "2099-01-01T00:00:00Z");
    assert_eq!(
        items[1]["message"], "late, from an offline site",
        "ordered by the time received, so the newest comes last"
    );
    assert_eq!(
        items[1]["at"], "2020-01-01T00:00:00Z",
        "a past claim is shown"
    );
    assert!(items[1].get("claimed_at").is_none());
}

/// Issue 12, item 13: events were kept without bound; what retention prunes is counted in the
/// site's view.
#[tokio::test]
async fn events_beyond_the_retention_are_pruned_and_counted_in_the_site() {
    let api = api(Retention {
        keep: 3,
        kept_for: Duration::from_secs(3600),
    })
    .await;
    for seq in 1..=3 {
        let messages: Vec<String> = (0..2).map(|i| format!("{seq}.{i}")).collect();
        let (status, answer) = api
            .report(body(vec![batch(seq, "2026-01-01T00:00:00Z", &messages)]))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, events) = api.get("/v1/sites/s1/events").await;
    let kept: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["2.1", "3.0", "3.1"]);
    let (_, site) = api.get("/v1/sites/s1").await;
    assert_eq!(site["events_pruned"], 3, "{site}");
}

/// Issue 15, item 6: a host's place in its site cluster and its free capacity, as its agent
/// reports them, are stored and shown by `GET /v1/hosts` as sent; a status without them (an
/// older agent's, or a single-host site's) shows none.
#[tokio::test]
async fn a_hosts_cluster_role_and_free_resources_pass_through_to_its_view() {
    let api = api(Retention::default()).await;
    let status = serde_json::json!({
        "applied_revision": 2, "replicas": [],
        "cluster": { "role": "leader", "term": 4, "leader": "h1", "voters": ["h1", "h2", "h3"] },
        "free": { "cpu_millis": 2500, "memory_bytes": 1u64 << 30 },
    });
    let report = serde_json::json!({ "batches": [{ "seq": 1, "at": "2026-01-01T00:00:00Z", "status": status }] });
    let (code, _) = api.report(report.to_string()).await;
    assert_eq!(code, StatusCode::OK);
    let (code, host) = api.get("/v1/hosts/h1").await;
    assert_eq!(code, StatusCode::OK, "{host}");
    assert_eq!(host["status"]["cluster"], status["cluster"], "{host}");
    assert_eq!(host["status"]["free"], status["free"], "{host}");

    let old = serde_json::json!({ "batches": [{ "seq": 2, "at": "2026-01-01T00:00:01Z", "status": { "applied_revision": 2, "replicas": [] } }] });
    let (code, _) = api.report(old.to_string()).await;
    assert_eq!(code, StatusCode::OK);
    let (_, hosts) = api.get("/v1/hosts").await;
    let status = &hosts["items"][0]["status"];
    assert_eq!(status["applied_revision"], 2, "{hosts}");
    assert!(
        status.get("cluster").is_none() && status.get("free").is_none(),
        "{hosts}"
    );
}

//! Hosts' inventories over the HTTP route, in process: only the host itself may send its own,
//! the bounds (413, and 400 naming the field), the events a change makes, and `GET /v1/hosts`
//! showing what was stored.

use std::sync::Arc;

use atoll_api::host::{Device, Inventory, InventoryReport, MAX_DEVICES, MAX_INVENTORY_BYTES};
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

/// A control plane with site `s1` and its enrolled hosts `h1` and `h2`.
async fn api() -> Api {
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
    for id in ["h1", "h2"] {
        let join = format!("t-{id}");
        store
            .create_join_token(JoinTokenRow {
                id: join.clone(),
                hash: format!("hash-{id}"),
                site: "s1".into(),
                uses_left: 1,
                expires_at: "2099-01-01T00:00:00Z".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap();
        let host = HostRow {
            id: id.into(),
            site: "s1".into(),
            hostname: id.into(),
            inventory: "{}".into(),
            cert_serial: "01".into(),
            cert_expiry: "2099-01-01T00:00:00Z".into(),
            enrolled_at: "2026-01-01T00:00:00Z".into(),
            ..HostRow::default()
        };
        assert_eq!(store.enroll_host(host, &join).await.unwrap(), Enrolled::Yes);
    }
    let agents = Agents::new(store, control.clone(), fleet, pki);
    Api {
        router: http::router(control, agents),
        token,
        _dir: dir,
    }
}

impl Api {
    /// Puts `body` as the inventory of `host`, on the connection of host `from`.
    async fn put(&self, from: &str, host: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/v1/sites/s1/hosts/{host}/inventory"))
            .header("content-type", "application/json")
            .extension(Peer(Some(AgentIdentity {
                site: "s1".into(),
                host: from.into(),
                serial: "01".into(),
            })))
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn user(&self, method: &str, path: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
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

    async fn events(&self) -> Vec<String> {
        let (_, events) = self.user("GET", "/v1/sites/s1/events").await;
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn camera() -> Device {
    Device {
        kind: "camera".into(),
        path: "/dev/video1".into(),
        name: "HD Pro Webcam C920".into(),
        subsystem: "video4linux".into(),
        vendor: "046d".into(),
        product: "082d".into(),
        ..Device::default()
    }
}

fn body(devices: Vec<Device>) -> String {
    serde_json::to_string(&InventoryReport {
        inventory: Inventory {
            hostname: "h1".into(),
            memory_bytes: 8 << 30,
            agent_version: "0.1.0".into(),
            devices,
            ..Inventory::default()
        },
    })
    .unwrap()
}

#[tokio::test]
async fn a_hosts_inventory_is_stored_shown_and_its_changes_are_events() {
    let api = api().await;
    let (status, answer) = api.put("h1", "h1", body(vec![camera()])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["inventory"]["devices"][0]["path"], "/dev/video1");
    let (_, hosts) = api.user("GET", "/v1/hosts").await;
    let h1 = hosts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "h1")
        .unwrap();
    assert_eq!(h1["inventory"]["devices"][0]["vendor"], "046d", "{h1}");
    let mut gone = camera();
    gone.missing_since = Some("2026-01-01T00:00:00Z".into());
    assert_eq!(
        api.put("h1", "h1", body(vec![gone])).await.0,
        StatusCode::OK
    );
    assert_eq!(api.put("h1", "h1", body(vec![])).await.0, StatusCode::OK);
    assert_eq!(
        api.events().await,
        [
            "host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) appeared",
            "host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) went missing",
            "host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) was dropped",
        ]
    );
}

#[tokio::test]
async fn only_the_host_itself_sends_its_inventory() {
    let api = api().await;
    let (status, answer) = api.put("h2", "h1", body(vec![camera()])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    let req = Request::builder()
        .method("PUT")
        .uri("/v1/sites/s1/hosts/h1/inventory")
        .body(Body::from(body(vec![])))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNAUTHORIZED);
    assert!(api.events().await.is_empty());
}

#[tokio::test]
async fn an_inventory_over_the_bounds_is_refused_and_nothing_is_stored() {
    let api = api().await;
    let mut big = camera();
    big.name = "x".repeat(MAX_INVENTORY_BYTES);
    let (status, answer) = api.put("h1", "h1", body(vec![big])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "too_large");

    let (status, answer) = api
        .put("h1", "h1", body(vec![camera(); MAX_DEVICES + 1]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["diagnostics"][0]["path"],
        "inventory.devices"
    );
    assert_eq!(
        answer["error"]["diagnostics"][0]["message"],
        "257 entries, over the limit of 256"
    );

    let mut long = camera();
    long.serial = "s".repeat(257);
    let (status, answer) = api.put("h1", "h1", body(vec![long])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["diagnostics"][0]["path"],
        "inventory.devices[0].serial"
    );
    assert!(api.events().await.is_empty());
}

#[tokio::test]
async fn a_detached_hosts_inventory_is_refused_as_detached() {
    let api = api().await;
    let (status, answer) = api.user("DELETE", "/v1/sites/s1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = api.put("h1", "h1", body(vec![camera()])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], atoll_api::HOST_DETACHED);
}

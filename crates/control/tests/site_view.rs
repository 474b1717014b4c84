//! What a site's view says about its hosts' reports, from reports stored the way agents post them.

use std::sync::Arc;

use atoll_api::agent::{HostStatus, Report, ReportRequest};
use atoll_control::shell::agents::Agents;
use atoll_control::shell::fleet::Fleet;
use atoll_control::shell::service::ControlPlane;
use atoll_control::shell::signing::ManifestSigner;
use atoll_control::shell::tls::{AgentIdentity, Pki};
use atoll_control::shell::vault::Vault;
use atoll_spec::Source;
use atoll_store::{Enrolled, HostRow, JoinTokenRow, SqliteStore, Store};

fn host(id: &str) -> HostRow {
    HostRow {
        id: id.into(),
        site: "s1".into(),
        hostname: id.into(),
        inventory: "{}".into(),
        cert_serial: id.into(),
        cert_expiry: "2099-01-01T00:00:00Z".into(),
        enrolled_at: "2026-01-01T00:00:00Z".into(),
        last_seen: None,
        recipient: None,
        ..HostRow::default()
    }
}

/// Enrolls `host` with a join token of its site made for it.
async fn enroll(store: &dyn Store, host: HostRow) {
    let token = format!("for-{}", host.id);
    store
        .create_join_token(JoinTokenRow {
            id: token.clone(),
            hash: format!("hash-{token}"),
            site: host.site.clone(),
            uses_left: 1,
            expires_at: "2099-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.enroll_host(host, &token).await.unwrap(),
        Enrolled::Yes
    );
}

/// Issue 12, item 15: the reports agents dropped (their outboxes full) showed only in the
/// hosts' JSON; the site's view sums its hosts' newest counts, for `get sites`.
#[tokio::test]
async fn a_sites_view_counts_the_reports_its_agents_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("atoll.db")).unwrap());
    let fleet = Arc::new(Fleet::default());
    let pki = Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
    let vault = Arc::new(Vault::from_key([5; 32]));
    let control = ControlPlane::new(store.clone(), fleet.clone(), vault, signer);
    let agents = Agents::new(store.clone(), control.clone(), fleet, pki);
    let site = Source {
        name: "s.yaml".into(),
        text: "kind: Site\nname: s1\n".into(),
    };
    control.apply(&[site], false, "t").await.unwrap();
    assert_eq!(
        control.sites(Some("s1")).await.unwrap()[0].dropped_reports,
        0
    );
    for (id, counts) in [("h1", [3, 7]), ("h2", [5, 5])] {
        enroll(store.as_ref(), host(id)).await;
        let identity = AgentIdentity {
            site: "s1".into(),
            host: id.into(),
            serial: id.into(),
        };
        // The newest status counts, not the sum of every report's.
        let batches = (1..)
            .zip(counts)
            .map(|(seq, dropped_reports)| Report {
                seq,
                at: "2026-01-01T00:00:00Z".into(),
                events: Vec::new(),
                status: Some(HostStatus {
                    dropped_reports,
                    ..HostStatus::default()
                }),
            })
            .collect();
        agents
            .report(&identity, ReportRequest { batches })
            .await
            .unwrap();
    }
    assert_eq!(
        control.sites(Some("s1")).await.unwrap()[0].dropped_reports,
        12
    );
}

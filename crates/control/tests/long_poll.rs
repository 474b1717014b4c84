//! A manifest long-poll is answered the moment a commit gives its site a newer revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_api::agent::RenewRequest;
use atoll_control::core::revision::Held;
use atoll_control::shell::agents::{Agents, Poll};
use atoll_control::shell::fleet::Fleet;
use atoll_control::shell::service::{ControlPlane, Error};
use atoll_control::shell::signing::ManifestSigner;
use atoll_control::shell::tls::{AgentIdentity, Pki};
use atoll_control::shell::vault::Vault;
use atoll_spec::{Kind, Source};
use atoll_store::{Enrolled, HostRow, JoinTokenRow, SqliteStore, Store};
use rustls_pki_types::pem::PemObject as _;

fn site(labels: &str) -> Vec<Source> {
    vec![Source {
        name: "t.yaml".into(),
        text: format!("kind: Site\nname: s1\nlabels: {{ {labels} }}\n"),
    }]
}

fn renewal(csr: &str) -> RenewRequest {
    RenewRequest {
        csr_pem: csr.to_owned(),
        recipient: None,
    }
}

/// Host h1 of site s1, with this certificate serial and expiry.
fn host_row(serial: &str, expiry: &str) -> HostRow {
    HostRow {
        id: "h1".into(),
        site: "s1".into(),
        hostname: "h1".into(),
        inventory: "{}".into(),
        cert_serial: serial.into(),
        cert_expiry: expiry.into(),
        enrolled_at: "2026-01-01T00:00:00Z".into(),
        last_seen: None,
        recipient: None,
        ..HostRow::default()
    }
}

/// Enrolls `host` with a join token of its site made for it.
async fn enroll(store: &dyn Store, host: HostRow) {
    let token = format!("token-of-{}", host.id);
    store
        .create_join_token(JoinTokenRow {
            id: token.clone(),
            hash: format!("hash-of-{}", host.id),
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

/// What an agent holding `revision` (with content `hash`, if it says it) polls with.
fn held(revision: u64, hash: Option<&str>) -> Held<'_> {
    Held { revision, hash }
}

fn vault() -> Arc<Vault> {
    Arc::new(Vault::from_key([5; 32]))
}

/// A control plane on a store in `dir`, with its agent side.
fn control_plane(dir: &std::path::Path) -> (Arc<dyn Store>, ControlPlane, Agents) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("atoll.db")).unwrap());
    let fleet = Arc::new(Fleet::default());
    let pki = Arc::new(Pki::load_or_create(dir, &[]).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir).unwrap());
    let control = ControlPlane::new(store.clone(), fleet.clone(), vault(), signer);
    let agents = Agents::new(store.clone(), control.clone(), fleet, pki);
    (store, control, agents)
}

#[tokio::test]
async fn a_waiting_long_poll_wakes_on_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, control, agents) = control_plane(dir.path());
    let app = "kind: Application\nname: a\nversion: '1'\nservices: [{ name: web, image: x }]\n---\nkind: Deployment\nname: d\napplication: a\nplacement: { sites: 'run == yes' }\n";
    control
        .apply(
            &[Source {
                name: "a.yaml".into(),
                text: app.into(),
            }],
            false,
            "t",
        )
        .await
        .unwrap();
    control.apply(&site("run: 'no'"), false, "t").await.unwrap();
    enroll(store.as_ref(), host_row("1", "2099-01-01T00:00:00Z")).await;
    let identity = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "1".into(),
    };

    let poll = {
        let agents = agents.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = agents
                .poll_manifest(&identity, held(1, None), Duration::from_secs(20))
                .await
                .unwrap();
            (answer, started.elapsed())
        })
    };
    // The poll has found nothing newer and waits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agents.fleet().polling_now("h1") {
        assert!(Instant::now() < deadline, "the poll never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    control
        .apply(&site("run: 'yes'"), false, "t")
        .await
        .unwrap();
    let (answer, waited) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll was not woken")
        .unwrap();
    assert!(matches!(answer, Poll::Newer(_)), "{answer:?}");
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
}

/// A control plane that starts on a store with manifests learns their revisions from it, since
/// long-polls read the store only when the fleet says there is something newer.
#[tokio::test]
async fn after_a_restart_polls_are_answered_from_the_stored_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("atoll.db")).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
    let control = ControlPlane::new(
        store.clone(),
        Arc::new(Fleet::default()),
        vault(),
        signer.clone(),
    );
    let app = "kind: Application\nname: a\nversion: '1'\nservices: [{ name: web, image: x }]\n---\nkind: Deployment\nname: d\napplication: a\nplacement: { sites: 'run == yes' }\n";
    for text in [app.to_owned(), site("run: 'yes'")[0].text.clone()] {
        let source = Source {
            name: "a.yaml".into(),
            text,
        };
        control.apply(&[source], false, "t").await.unwrap();
    }
    enroll(store.as_ref(), host_row("1", "2099-01-01T00:00:00Z")).await;
    let revision = store.manifest("s1").await.unwrap().unwrap().revision;
    // What a restart does: a new fleet from the store.
    let fleet = Arc::new(Fleet::from_store(store.as_ref()).await.unwrap());
    let pki = Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap());
    let control = ControlPlane::new(store.clone(), fleet.clone(), vault(), signer);
    let agents = Agents::new(store.clone(), control, fleet, pki);
    let identity = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "1".into(),
    };
    let fresh = tokio::time::timeout(
        Duration::from_secs(5),
        agents.poll_manifest(&identity, held(0, None), Duration::from_secs(30)),
    )
    .await
    .expect("a poll for an older revision waited");
    assert!(matches!(fresh, Ok(Poll::Newer(_))), "{fresh:?}");
    let current = agents
        .poll_manifest(&identity, held(revision, None), Duration::from_millis(50))
        .await;
    assert!(matches!(current, Ok(Poll::NotModified)), "{current:?}");
}

#[tokio::test]
async fn an_enrolled_host_renews_its_certificate_for_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("atoll.db")).unwrap());
    let pki = Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
    let fleet = Arc::new(Fleet::default());
    let control = ControlPlane::new(store.clone(), fleet.clone(), vault(), signer);
    let agents = Agents::new(store.clone(), control, fleet, pki);
    let identity = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "01".into(),
    };
    enroll(store.as_ref(), host_row("01", "2000-01-01T00:00:00Z")).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = agents.renew(&identity, &renewal(&csr)).await.unwrap();
    // The new certificate names the same host and site, whatever the request asked for.
    let der = rustls_pki_types::CertificateDer::from_pem_slice(renewed.certificate_pem.as_bytes())
        .unwrap();
    let named = AgentIdentity::from_certificate(&der).unwrap();
    assert_eq!((named.site.as_str(), named.host.as_str()), ("s1", "h1"));
    let row = store.host("h1").await.unwrap().unwrap();
    assert_eq!(named.serial, row.cert_serial);
    assert_ne!(row.cert_serial, "01");
    assert_eq!(row.previous_serial.as_deref(), Some("01"));
    assert_eq!(row.cert_expiry, renewed.certificate_expires_at);
    assert!(renewed.certificate_expires_at.as_str() > "2026-01-01T00:00:00Z");
    // A host that is not enrolled cannot renew.
    let stranger = AgentIdentity {
        site: "s1".into(),
        host: "nobody".into(),
        serial: "1".into(),
    };
    assert!(agents.renew(&stranger, &renewal(&csr)).await.is_err());
}

#[tokio::test]
async fn a_host_joining_a_site_whose_templates_read_its_hosts_gets_a_new_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("atoll.db")).unwrap());
    let fleet = Arc::new(Fleet::default());
    let pki = Arc::new(Pki::load_or_create(dir.path(), &[]).unwrap());
    let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
    let control = ControlPlane::new(store.clone(), fleet.clone(), vault(), signer);
    let agents = Agents::new(store.clone(), control.clone(), fleet, pki.clone());
    let app = "kind: Application\nname: a\nversion: '1'\nservices:\n  - name: web\n    image: x\n    env: { ARCH: \"{{ site.hosts | map(attribute='arch') | join(',') }}\" }\n---\nkind: Deployment\nname: d\napplication: a\nplacement: { sites: 'run == yes' }\n";
    let sources = [
        Source {
            name: "a.yaml".into(),
            text: app.into(),
        },
        site("run: 'yes'").remove(0),
    ];
    control.apply(&sources, false, "t").await.unwrap();
    let before = control.manifest("s1").await.unwrap();
    assert_eq!(before.content.applications[0].services[0].env["ARCH"], "");
    let token = agents
        .create_token(
            &atoll_api::agent::CreateTokenRequest {
                site: "s1".into(),
                ttl_seconds: None,
                uses: None,
            },
            "t",
        )
        .await
        .unwrap()
        .token;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["x.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let inventory: atoll_api::agent::Inventory = serde_json::from_value(serde_json::json!({
        "hostname": "till-1", "arch": "riscv64", "os": "Debian", "kernel": "6.1", "cpus": 2,
        "cpu_model": "x", "memory_bytes": 1, "disk_bytes": 1, "runtime": { "name": "docker", "version": "28" },
    }))
    .unwrap();
    agents
        .enroll(&atoll_api::agent::EnrollRequest {
            token,
            csr_pem: csr,
            inventory,
            recipient: None,
        })
        .await
        .unwrap();
    let after = control.manifest("s1").await.unwrap();
    assert_eq!(after.revision, before.revision + 1);
    assert_eq!(
        after.content.applications[0].services[0].env["ARCH"],
        "riscv64"
    );
}

/// The manifest a long-poll answered with, out of its signed envelope.
fn answered(poll: Poll) -> atoll_api::Manifest {
    let Poll::Newer(body) = poll else {
        panic!("not answered with a manifest: {poll:?}")
    };
    let signed: atoll_api::agent::SignedManifest = serde_json::from_slice(&body).unwrap();
    serde_json::from_str(&signed.payload).unwrap()
}

/// Issue 12, item 7: a control plane whose store lost its last commits gave a revision number
/// the agent already held to other content (or had not reached the agent's at all), and the
/// agent, which takes only newer revisions, never took what was stored. The poll now compares
/// content, moves the site above the agent's revision, and audits the divergence.
#[tokio::test]
async fn a_control_plane_that_lost_commits_moves_the_site_above_the_revision_its_agent_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, control, agents) = control_plane(dir.path());
    let app = "kind: Application\nname: a\nversion: '4'\nservices: [{ name: web, image: x }]\n---\nkind: Deployment\nname: d\napplication: a\nplacement: { sites: 'run == yes' }\n";
    let sources = [
        Source {
            name: "a.yaml".into(),
            text: app.into(),
        },
        site("run: 'yes'").remove(0),
    ];
    control.apply(&sources, false, "t").await.unwrap();
    enroll(store.as_ref(), host_row("1", "2099-01-01T00:00:00Z")).await;
    let stored = store.manifest("s1").await.unwrap().unwrap();
    let identity = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "1".into(),
    };
    let quick = Duration::from_millis(50);

    // The same number, other content: answered at once, one revision above, the same content.
    let same_number = held(stored.revision, Some("sha256:what-the-lost-commit-held"));
    let taken = answered(
        agents
            .poll_manifest(&identity, same_number, Duration::from_secs(30))
            .await
            .unwrap(),
    );
    assert_eq!(taken.revision, stored.revision + 1);
    assert_eq!(taken.hash, stored.hash);
    let head = store.manifest("s1").await.unwrap().unwrap();
    assert_eq!((head.revision, &head.hash), (taken.revision, &stored.hash));
    // Holding it now, the agent waits.
    let holding = held(taken.revision, Some(&stored.hash));
    assert!(matches!(
        agents
            .poll_manifest(&identity, holding, quick)
            .await
            .unwrap(),
        Poll::NotModified
    ));

    // A number this control plane never reached, from an agent that says no hash.
    let ahead = held(taken.revision + 5, None);
    let taken = answered(agents.poll_manifest(&identity, ahead, quick).await.unwrap());
    assert_eq!(taken.revision, ahead.revision + 1);
    assert_eq!(taken.hash, stored.hash);

    let audit = store.audit(10).await.unwrap();
    let diverged: Vec<_> = audit.iter().filter(|a| a.action == "diverged").collect();
    assert_eq!(diverged.len(), 2, "{audit:?}");
    assert!(
        diverged
            .iter()
            .any(|a| a.detail.contains("host h1 of site s1")
                && a.detail.contains("sha256:what-the-lost-commit-held")
                && a.detail.contains("restored from a backup")),
        "{diverged:?}"
    );
}

/// Issue 12, item 1: a deleted site's host kept fetching the site's manifest, posting reports
/// and renewing, and a site re-created under the same name took it in. Deleting the site
/// detaches its host at once: its waiting long-poll ends with the refusal, and every later
/// request is refused with `host_detached`, the re-created site too.
#[tokio::test]
async fn a_deleted_sites_host_is_refused_and_its_waiting_long_poll_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, control, agents) = control_plane(dir.path());
    control.apply(&site("run: 'no'"), false, "t").await.unwrap();
    enroll(store.as_ref(), host_row("1", "2099-01-01T00:00:00Z")).await;
    let identity = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "1".into(),
    };
    agents.authorize(&identity, "s1", Some("h1")).await.unwrap();
    let head = store.manifest("s1").await.unwrap().unwrap();
    let poll = {
        let agents = agents.clone();
        let identity = identity.clone();
        let hash = head.hash.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = agents
                .poll_manifest(
                    &identity,
                    held(head.revision, Some(&hash)),
                    Duration::from_secs(30),
                )
                .await;
            (answer, started.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agents.fleet().polling_now("h1") {
        assert!(Instant::now() < deadline, "the poll never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    control.delete(Kind::Site, "s1", "t").await.unwrap();

    let (answer, waited) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the waiting poll did not end")
        .unwrap();
    assert!(matches!(answer, Err(Error::Detached(_))), "{answer:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let refused = agents.authorize(&identity, "s1", Some("h1")).await;
    assert!(matches!(refused, Err(Error::Detached(_))), "{refused:?}");
    // A site of the same name made again is a new site: the old host is not one of its own.
    control
        .apply(&site("run: 'yes'"), false, "t")
        .await
        .unwrap();
    let refused = agents.authorize(&identity, "s1", Some("h1")).await;
    assert!(matches!(refused, Err(Error::Detached(_))), "{refused:?}");
    assert!(store.site_hosts("s1").await.unwrap().is_empty());
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["h1".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renewed = agents.renew(&identity, &renewal(&csr)).await;
    assert!(matches!(renewed, Err(Error::Detached(_))), "{renewed:?}");
}

/// A certificate request for a fresh key.
fn fresh_csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["h1".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// Issue 12, item 2: after a renewal the previous certificate still got 200s, so a stolen one
/// could renew for ever, and the renewal swapped the key secrets are sealed to, handing the
/// thief the host's future secrets. Now the replaced certificate is accepted only within the
/// overlap and never renews, and a new sealing key from a host that has one waits for an
/// operator's approval; each step is audited.
#[tokio::test]
async fn a_renewal_retires_the_old_certificate_and_a_new_sealing_key_waits_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let (store, control, agents) = control_plane(dir.path());
    control.apply(&site("run: 'no'"), false, "t").await.unwrap();
    let (real, thief) = (
        atoll_seal::Identity::generate(),
        atoll_seal::Identity::generate(),
    );
    let mut row = host_row("01", "2099-01-01T00:00:00Z");
    row.recipient = Some(real.recipient());
    enroll(store.as_ref(), row).await;
    let stolen = AgentIdentity {
        site: "s1".into(),
        host: "h1".into(),
        serial: "01".into(),
    };
    agents.authorize(&stolen, "s1", Some("h1")).await.unwrap();

    // The thief renews first, sending its own sealing key.
    let renewed = agents
        .renew(
            &stolen,
            &RenewRequest {
                csr_pem: fresh_csr(),
                recipient: Some(thief.recipient()),
            },
        )
        .await
        .unwrap();
    assert!(renewed.sealing_key_pending);
    let stored = store.host("h1").await.unwrap().unwrap();
    assert_eq!(
        stored.recipient,
        Some(real.recipient()),
        "the key was swapped"
    );
    assert_eq!(stored.pending_recipient, Some(thief.recipient()));
    let der = rustls_pki_types::CertificateDer::from_pem_slice(renewed.certificate_pem.as_bytes())
        .unwrap();
    let current = AgentIdentity::from_certificate(&der).unwrap();
    agents.authorize(&current, "s1", Some("h1")).await.unwrap();
    // Within the overlap the replaced certificate is still let in, but it renews no more.
    agents.authorize(&stolen, "s1", Some("h1")).await.unwrap();
    let again = agents.renew(&stolen, &renewal(&fresh_csr())).await;
    assert!(matches!(again, Err(Error::Forbidden(_))), "{again:?}");

    // Once the overlap is over, the replaced certificate is refused.
    let mut ended = store.host("h1").await.unwrap().unwrap();
    ended.previous_until = Some("2000-01-01T00:00:00Z".into());
    let serial = ended.cert_serial.clone();
    assert!(store.put_host(ended, &serial).await.unwrap());
    agents.fleet().hosts().follow(store.as_ref()).await.unwrap();
    let refused = agents.authorize(&stolen, "s1", Some("h1")).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    agents.authorize(&current, "s1", Some("h1")).await.unwrap();

    // An operator approves the new key: it is sealed to from now on, and the site's manifest
    // is committed again so that the host receives its secrets sealed to it.
    let before = store.manifest("s1").await.unwrap().unwrap().revision;
    let view = agents.approve_key("h1", "operator").await.unwrap();
    assert!(!view.sealing_key_pending);
    let stored = store.host("h1").await.unwrap().unwrap();
    assert_eq!(stored.recipient, Some(thief.recipient()));
    assert_eq!(stored.pending_recipient, None);
    assert_eq!(
        store.manifest("s1").await.unwrap().unwrap().revision,
        before + 1
    );
    let twice = agents.approve_key("h1", "operator").await;
    assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
    let audit: Vec<String> = store
        .audit(20)
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.action, a.detail))
        .collect();
    for needle in [
        "renew host h1 of site s1 renewed",
        "renew host h1 sent a new sealing key",
        "approve-key approved the new sealing key of host h1",
    ] {
        assert!(
            audit.iter().any(|a| a.starts_with(needle)),
            "{needle}: {audit:#?}"
        );
    }
}

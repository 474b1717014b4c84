//! End-to-end on PostgreSQL: the real `atoll control --store postgres://…` against the
//! throwaway cluster of `atoll_store::pg_cluster`, driven by the real CLI.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use atoll_store::{LeaseRow, PostgresStore, Store};
use support::{ControlPlane, atoll_command, examples, run, wait_until};

#[test]
fn a_control_plane_on_postgres_serves_the_examples_and_keeps_them_across_a_crash() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlane::start_with(dir.path(), "127.0.0.1:0", &["--store", &url]);
    control.apply_examples();
    let names = |control: &ControlPlane| -> Vec<String> {
        let mut names: Vec<String> = control
            .sites()
            .unwrap()
            .iter()
            .map(|s| s["resource"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let sites = names(&control);
    assert!(sites.contains(&"store-0042".to_owned()), "{sites:?}");
    assert!(
        !dir.path().join("atoll.db").exists(),
        "nothing is kept in an SQLite file beside the PostgreSQL store"
    );

    // Killed and started again on the same database: everything applied is still there.
    let address = control.crash();
    let control = ControlPlane::start_with(dir.path(), &address, &["--store", &url]);
    assert_eq!(names(&control), sites);
}

#[test]
fn an_unknown_store_scheme_and_a_url_asking_for_tls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut cmd = atoll_command(dir.path());
    cmd.args(["control", "--data-dir", data, "--store", "mysql://db/atoll"]);
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("`mysql://`"), "{}", out.stderr);

    let mut cmd = atoll_command(dir.path());
    cmd.args(["control", "--data-dir", data, "--listen", "127.0.0.1:0"])
        .env(
            "ATOLL_STORE",
            "postgres://atoll@127.0.0.1:1/atoll?sslmode=require",
        );
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("sslmode"), "{}", out.stderr);
}

/// Gives a second replica the first one's keys: every file of its data folder (the CA, the
/// manifest-signing key, the master key, the server certificate, the first admin token) but
/// its own SQLite files, which a PostgreSQL control plane does not have, and its lock file.
fn share_keys(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("atoll.db") || name == "control.pid" {
            continue;
        }
        assert!(
            entry.file_type().unwrap().is_file(),
            "{name} in the data folder is not a file: share it too"
        );
        std::fs::copy(entry.path(), to.join(&name)).unwrap();
    }
}

/// A replica whose folder was given the master key but not the CA, or not the signing key,
/// would make its own and serve agents the other replicas refuse: it is refused at start,
/// named, and the store unchanged.
#[test]
fn a_replica_without_the_shared_ca_or_signing_key_is_refused_at_start() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let first = tempfile::tempdir().unwrap();
    let control = ControlPlane::start_with(first.path(), "127.0.0.1:0", &["--store", &url]);
    for (missing, named) in [
        (&["ca.pem", "ca-key.pem"][..], "CA (ca.pem"),
        (&["signing-key.pk8"][..], "signing-key.pk8)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        share_keys(first.path(), dir.path());
        for name in missing {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        let mut cmd = atoll_command(dir.path());
        let data = dir.path().to_str().unwrap();
        cmd.args([
            "control",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
        ]);
        let out = run(cmd);
        assert_ne!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stderr.contains(named) && out.stderr.contains("copy ca.pem"),
            "{missing:?}: {}",
            out.stderr
        );
    }
    control.sites().expect("the first replica serves on");
}

/// Issue 14, item 2: an agent long-polls replica A; an apply through replica B, on the same
/// database, answers A's waiting poll with the new revision within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_through_one_replica_wakes_the_long_poll_waiting_on_another_within_a_second() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ControlPlane::start_with(dir_a.path(), "127.0.0.1:0", &["--store", &url]);
    share_keys(dir_a.path(), dir_b.path());
    let b = ControlPlane::start_with(dir_b.path(), "127.0.0.1:0", &["--store", &url]);

    let app = "kind: Application\nname: web\nversion: '1'\nservices: [{ name: web, image: x }]\n---\nkind: Deployment\nname: web\napplication: web\nplacement: { sites: 'run == yes' }\n";
    a.apply_yaml(&dir_a.path().join("app.yaml"), app);
    let site = |run: &str| format!("kind: Site\nname: shop\nlabels: {{ run: '{run}' }}\n");
    a.apply_yaml(&dir_a.path().join("site.yaml"), &site("no"));
    let identity = support::enroll_host(
        &a,
        &dir_a.path().join("agent"),
        "shop",
        atoll_api::agent::Inventory::default(),
    )
    .await;
    let client = identity.client().unwrap();
    let poll = move |have: u64, hash: String, wait: u64| {
        client
            .get(format!(
                "{}/v1/sites/shop/manifest?have={have}&hash={hash}&wait={wait}",
                a.url
            ))
            .send()
    };
    let manifest = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        let signed: atoll_api::agent::SignedManifest = response.json().await.unwrap();
        serde_json::from_str::<atoll_api::Manifest>(&signed.payload).unwrap()
    };
    let held = manifest(poll(0, "none".into(), 0).await.unwrap()).await;

    let mut waiting = tokio::spawn({
        let answer = poll(held.revision, held.hash.clone(), 30);
        async move {
            let response = answer.await.expect("the long-poll on A");
            (response, Instant::now())
        }
    });
    // Nothing newer yet: A holds the poll.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "A answered before anything changed"
    );
    let started = Instant::now();
    tokio::task::block_in_place(|| b.apply_yaml(&dir_b.path().join("site.yaml"), &site("yes")));
    let applied = Instant::now();
    let (response, answered) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("A's long-poll was not woken by the apply through B")
        .unwrap();
    let got = manifest(response).await;
    let revision = tokio::task::block_in_place(|| b.revision("shop"));
    assert!(
        got.revision > held.revision,
        "{} then {}",
        held.revision,
        got.revision
    );
    assert_eq!(got.revision, revision, "A answers with what B committed");
    let delay = answered.saturating_duration_since(applied);
    println!(
        "FIGURE cross-replica wake-up: A answered {:.3} s after the apply through B started, {:.3} s after it returned (the apply took {:.3} s)",
        answered.saturating_duration_since(started).as_secs_f64(),
        delay.as_secs_f64(),
        applied.duration_since(started).as_secs_f64()
    );
    assert!(
        delay < Duration::from_secs(1),
        "A answered {delay:?} after B's apply"
    );
}

/// The process id in a lease holder's name (`PID-RANDOM`).
fn holder_pid(lease: &LeaseRow) -> u32 {
    lease.holder.split('-').next().unwrap().parse().unwrap()
}

/// The rollout of `pos-prod` as `atoll rollout status -o json` shows it through `replica`.
fn rollout(replica: &ControlPlane) -> serde_json::Value {
    replica
        .cli(&["rollout", "status", "pos-prod", "-o", "json"])
        .ok("rollout status")
        .json()
}

/// Issue 14: two replicas on one database run the rollout controller one at a time, and when
/// the lease's holder is killed with -9 the other takes the lease over within 10 s, with a
/// higher fence, and drives the rollout: started after the kill, through the survivor, it is
/// stepped (its view changes) within 10 s of the kill.
#[test]
fn the_rollout_lease_moves_to_the_other_replica_within_10_s_of_its_holders_death() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(PostgresStore::open(&url)).unwrap();
    let lease = || runtime.block_on(store.lease("rollouts")).unwrap();

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = ControlPlane::start_with(dirs[0].path(), "127.0.0.1:0", &["--store", &url]);
    first.apply_examples();
    share_keys(dirs[0].path(), dirs[1].path());
    let second = ControlPlane::start_with(dirs[1].path(), "127.0.0.1:0", &["--store", &url]);
    let mut replicas = [first, second];

    let held = wait_until(Duration::from_secs(10), || {
        lease().filter(|l| !l.holder.is_empty())
    })
    .expect("one replica takes the lease");
    let holder = replicas
        .iter()
        .position(|r| r.pid() == holder_pid(&held))
        .unwrap_or_else(|| panic!("the holder {} is one of the replicas", held.holder));
    let other = 1 - holder;
    assert!(
        replicas[holder].stderr().contains("took the lease"),
        "{}",
        replicas[holder].stderr()
    );

    replicas[holder].kill9();
    let killed = Instant::now();
    // A new version of the examples' application, through the survivor: a rollout starts,
    // which only the lease's next holder can step.
    let pos = std::fs::read_to_string(examples().join("pos.yaml")).unwrap();
    let work = tempfile::tempdir().unwrap();
    replicas[other].apply_yaml(
        &work.path().join("pos.yaml"),
        &pos.replace("1.4.2", "1.4.3"),
    );
    let started = rollout(&replicas[other]);

    let taken = wait_until(Duration::from_secs(10), || {
        lease().filter(|l| l.holder != held.holder && !l.holder.is_empty())
    })
    .expect("the other replica takes the lease over within 10 s");
    assert_eq!(holder_pid(&taken), replicas[other].pid());
    assert!(taken.fence > held.fence, "{taken:?} after {held:?}");
    let stepped = wait_until(
        Duration::from_secs(10).saturating_sub(killed.elapsed()),
        || Some(rollout(&replicas[other])).filter(|view| *view != started),
    )
    .unwrap_or_else(|| panic!("the rollout is stepped within 10 s of the kill: {started:#}"));
    assert!(killed.elapsed() <= Duration::from_secs(10));
    assert!(
        replicas[other].stderr().contains("took the lease"),
        "{}",
        replicas[other].stderr()
    );
    assert_eq!(stepped["to_version"], "1.4.3", "{stepped:#}");
}

/// A TLS client presenting the host certificate enrolled into `agent_dir`, trusting only the
/// control plane's CA, with rustls' in-memory session cache: what it learns from one replica
/// it offers to the next.
fn agent_connector(agent_dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let read = |name: &str| std::fs::read(agent_dir.join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("ca.pem")) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(&read("host-cert.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("host-key.pem")).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
}

/// Connects to `replica` with `connector`, asks for `site`'s manifest over HTTP/1.1 and reads
/// the whole answer (which also takes in the session tickets the server sent): how the
/// handshake went and the answer's status line.
async fn manifest_over(
    connector: &tokio_rustls::TlsConnector,
    replica: &ControlPlane,
    site: &str,
) -> (rustls::HandshakeKind, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let tcp = tokio::net::TcpStream::connect(replica.address())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let request = format!(
        "GET /v1/sites/{site}/manifest?have=0&hash=none&wait=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .expect("the manifest's answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    (kind, answer.lines().next().unwrap_or_default().to_owned())
}

/// Issue 14: the replicas share the TLS session-ticket key (derived from the master key they
/// share), so an agent that made a full handshake with replica A resumes its session on
/// replica B, and B answers the resumed connection as that host: a site's manifest, which only
/// that site's hosts get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_resumes_on_another_replica_the_tls_session_it_began_on_one() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ControlPlane::start_with(dir_a.path(), "127.0.0.1:0", &["--store", &url]);
    share_keys(dir_a.path(), dir_b.path());
    let b = ControlPlane::start_with(dir_b.path(), "127.0.0.1:0", &["--store", &url]);
    tokio::task::block_in_place(|| {
        a.apply_yaml(&dir_a.path().join("site.yaml"), "kind: Site\nname: shop\n")
    });
    let agent_dir = dir_a.path().join("agent");
    support::enroll_host(
        &a,
        &agent_dir,
        "shop",
        atoll_api::agent::Inventory::default(),
    )
    .await;
    let connector = agent_connector(&agent_dir);

    let (kind, status) = manifest_over(&connector, &a, "shop").await;
    assert_eq!(kind, rustls::HandshakeKind::Full, "the first connection");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (kind, status) = manifest_over(&connector, &b, "shop").await;
    assert_eq!(
        kind,
        rustls::HandshakeKind::Resumed,
        "B did not resume the session A began"
    );
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "B answers the resumed session as the host"
    );
    // The identity is the certificate's, resumed or not: another site's manifest is refused.
    let (kind, status) = manifest_over(&connector, &b, "elsewhere").await;
    assert_eq!(kind, rustls::HandshakeKind::Resumed);
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
}

/// Whether `replica`'s `get hosts` and `get sites` both show `site`'s one host connected, or
/// `None` while they disagree (one read before a flush, the other after).
fn shown_connected(replica: &ControlPlane, site: &str) -> Option<bool> {
    let hosts = replica.cli(&["get", "hosts", "-o", "json"]);
    hosts.ok("get hosts");
    let hosts = hosts.json();
    let host = hosts["items"]
        .as_array()
        .and_then(|items| items.iter().find(|h| h["site"] == site))
        .unwrap_or_else(|| panic!("no host of {site}: {hosts}"))
        .clone();
    let sites = replica.sites().unwrap();
    let of_site = sites
        .iter()
        .find(|s| s["resource"]["name"] == site)
        .unwrap_or_else(|| panic!("no site {site}: {sites:?}"));
    let (host, site) = (host["connected"] == true, support::connected(of_site));
    (host == site).then_some(host)
}

/// Issue 14: presence is shared. An agent long-polls replica B; replica A, on the same
/// database, shows its host and site connected within a couple of seconds. B is then killed
/// with -9, holding the poll: its open poll stops counting once its heartbeat is stale, and A
/// stops showing the host connected when the grace since it was last seen has passed (45 s),
/// not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_polling_one_replica_is_shown_connected_by_another_and_not_for_ever_after_its_kill()
{
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ControlPlane::start_with(dir_a.path(), "127.0.0.1:0", &["--store", &url]);
    share_keys(dir_a.path(), dir_b.path());
    let mut b = ControlPlane::start_with(dir_b.path(), "127.0.0.1:0", &["--store", &url]);
    tokio::task::block_in_place(|| {
        a.apply_yaml(&dir_a.path().join("site.yaml"), "kind: Site\nname: kiosk\n")
    });
    let identity = support::enroll_host(
        &b,
        &dir_b.path().join("agent"),
        "kiosk",
        atoll_api::agent::Inventory::default(),
    )
    .await;
    // The site's manifest, then a long-poll on B holding it, which B holds open.
    let client = identity.client().unwrap();
    let first = client
        .get(format!(
            "{}/v1/sites/kiosk/manifest?have=0&hash=none&wait=0",
            b.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let signed: atoll_api::agent::SignedManifest = first.json().await.unwrap();
    let manifest: atoll_api::Manifest = serde_json::from_str(&signed.payload).unwrap();
    let held = tokio::spawn(
        client
            .get(format!(
                "{}/v1/sites/kiosk/manifest?have={}&hash={}&wait=30",
                b.url, manifest.revision, manifest.hash
            ))
            .send(),
    );
    let polled = Instant::now();
    let seen = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), || {
            shown_connected(&a, "kiosk").filter(|c| *c)
        })
    });
    assert!(
        seen.is_some(),
        "A never showed the host polling B connected"
    );
    println!(
        "FIGURE cross-replica presence: A showed the host connected {:.3} s after its poll on B began",
        polled.elapsed().as_secs_f64()
    );
    assert!(
        polled.elapsed() < Duration::from_secs(5),
        "A showed it {:?} after the poll began",
        polled.elapsed()
    );

    tokio::task::block_in_place(|| b.kill9());
    let killed = Instant::now();
    held.abort();
    let gone = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(60), || {
            shown_connected(&a, "kiosk").filter(|c| !*c)
        })
    });
    assert!(
        gone.is_some(),
        "A still shows the host connected 60 s after the kill of the replica it polled"
    );
    println!(
        "FIGURE presence after kill -9: A stopped showing the host connected {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
}

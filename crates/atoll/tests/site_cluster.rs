//! The site channel with real agents, each on a host of its own (`support::site_lan`): the
//! hosts of a site learn each other from the control plane and meet over mutual TLS, meet
//! again from their kept manifests with the control plane down, and refuse a host of another
//! site and a host detached from theirs, each by its own certificate; hosts enrolled in the
//! same second form one site log.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use support::site_lan::{LanHost, SiteLan};
use support::{ATOLL, ControlPlane, Process, tail, unique, wait_until};

const PEER_DEADLINE: Duration = Duration::from_secs(60);
const SITE_PORT: u16 = 7443;

/// An agent of `host` with its data in `dir`, listening for its peers on the host's address.
fn start_agent(host: &LanHost, dir: &Path, enroll: Option<(&str, &str)>) -> Process {
    let mut cmd = host.command(ATOLL);
    cmd.arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--interval", "2s"])
        .args(["--listen-site", &host.address.to_string()])
        .env("ATOLL_LOG", "info");
    if let Some((url, token)) = enroll {
        cmd.args(["--control", url]).env("ATOLL_JOIN_TOKEN", token);
    }
    Process::spawn(cmd)
}

/// The host ids an agent's log says are up, in order of coming up.
#[track_caller]
fn wait_peer_up(agent: &Process, what: &str) -> String {
    let found = wait_until(PEER_DEADLINE, || {
        agent
            .stderr()
            .lines()
            .filter(|l| l.contains("site peer up"))
            .find_map(|l| l.split("peer=").nth(1))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
    });
    found.unwrap_or_else(|| {
        panic!(
            "{what}: no site peer came up; its log:\n{}",
            tail(&agent.stderr(), 40)
        )
    })
}

#[track_caller]
fn wait_log(agent: &Process, needle: &str, what: &str) {
    let seen = wait_until(PEER_DEADLINE, || {
        agent.stderr().contains(needle).then_some(())
    });
    assert!(
        seen.is_some(),
        "{what}: {needle:?} not logged; the log:\n{}",
        tail(&agent.stderr(), 40)
    );
}

/// Connects to `address` over TLS with the host certificate kept in `dir` (the way a peer
/// dials) and says whether any frame came back before the connection closed.
fn frames_answered(dir: &Path, address: &str) -> bool {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use rustls_pki_types::pem::PemObject as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(&read("host-cert.pem"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&read("host-key.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pki_types::CertificateDer::pem_slice_iter(&read("ca.pem")) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The peer presents a host certificate, with no DNS name: the test checks its chain as
        // a client certificate, as the agents do.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly { verifier, provider }))
            .with_client_auth_cert(chain, key)
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("atoll-site-peer").unwrap();
        let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
        else {
            return false;
        };
        let _ = tls
            .write_all(b"{\"kind\":\"heartbeat\",\"sequence\":1}\n")
            .await;
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0
        )
    })
}

#[derive(Debug)]
struct ChainOnly {
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map(|_| rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A copy of the identity files of an agent's data folder, kept after the agent removes them.
fn keep_identity(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["host-cert.pem", "host-key.pem", "ca.pem"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn the_hosts_of_a_site_meet_offline_too_and_refuse_other_sites_and_detached_hosts() {
    let lan = SiteLan::new(3);
    let tmp = tempfile::tempdir().unwrap();
    let id = unique();
    let (a, b) = (format!("sca-{id}"), format!("scb-{id}"));
    let data = tmp.path().join("control");
    let mut cp = ControlPlane::start_on(&data, &format!("{}:0", lan.gateway()));
    let address = cp.address().to_owned();
    cp.apply_yaml(
        &tmp.path().join("sites.yaml"),
        &format!("kind: Site\nname: {a}\n---\nkind: Site\nname: {b}\n"),
    );
    let dirs: Vec<PathBuf> = (0..3)
        .map(|k| tmp.path().join(format!("agent{k}")))
        .collect();
    let site_address = |k: usize| format!("{}:{SITE_PORT}", lan.hosts()[k].address);

    // Hosts 0 and 1 at site a, host 2 alone at site b.
    let url = format!("https://{address}");
    let mut agents: Vec<Process> = (0..3)
        .map(|k| {
            let (token, _) = cp.join_token(if k < 2 { &a } else { &b }, &[]);
            start_agent(&lan.hosts()[k], &dirs[k], Some((&url, &token)))
        })
        .collect();
    let up0 = wait_peer_up(&agents[0], "host 0");
    let up1 = wait_peer_up(&agents[1], "host 1");
    assert_ne!(up0, up1, "each sees the other");
    // Enrolled within the same second, the two may each have been named founder in turn: they
    // still form one log, so one leads and the other follows it.
    support::eventually_every(
        "one site log: one leader, followed",
        PEER_DEADLINE,
        Duration::from_millis(200),
        || {
            let hosts = cp.cli(&["get", "hosts", "--site", &a, "-o", "json"]).json();
            let roles: Vec<(String, String)> = hosts["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    let cluster = &h["status"]["cluster"];
                    (
                        cluster["role"].as_str().unwrap_or("-").to_owned(),
                        cluster["leader"].as_str().unwrap_or("-").to_owned(),
                    )
                })
                .collect();
            let leaders: Vec<&(String, String)> =
                roles.iter().filter(|(r, _)| r == "leader").collect();
            let one_log = roles.len() == 2
                && leaders.len() == 1
                && roles.iter().all(|(_, leader)| *leader == leaders[0].1);
            one_log.then_some(()).ok_or_else(|| format!("{roles:?}"))
        },
    );
    let listed = cp.manifest(&a)["content"]["site_hosts"].clone();
    let members: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["host"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 2, "{listed}");
    assert!(members.contains(&up0.as_str()) && members.contains(&up1.as_str()));
    assert!(
        cp.manifest(&b)["content"].get("site_hosts").is_none(),
        "a single-host site lists nobody"
    );
    assert!(
        !lan.hosts()[0].reaches(lan.hosts()[2].address, SITE_PORT),
        "a single-host site opens no port"
    );

    // A host of another site, by its certificate: the peer takes it for what it is, and refuses.
    assert!(
        !frames_answered(&dirs[2], &site_address(0)),
        "site b's host got an answer from site a's"
    );
    wait_log(&agents[0], &format!("belongs to site {b}"), "host 0");

    // The control plane stops; the agents restart and meet again from their kept manifests.
    cp.kill9();
    for k in 0..2 {
        agents[k].kill9();
        agents[k] = start_agent(&lan.hosts()[k], &dirs[k], None);
    }
    wait_peer_up(&agents[0], "host 0, offline");
    wait_peer_up(&agents[1], "host 1, offline");

    // Site a is deleted: its hosts are detached and leave. Its name taken again, two new hosts
    // meet, and a detached host's certificate (kept aside) is refused by them.
    let cp = ControlPlane::restart(&data, &address);
    keep_identity(&dirs[1], &tmp.path().join("detached"));
    cp.cli(&["delete", "site", &a]).ok("delete site a");
    for (k, agent) in agents.iter_mut().enumerate().take(2) {
        let status = agent.wait_exit(PEER_DEADLINE);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(3),
            "host {k} exits as detached: {}",
            tail(&agent.stderr(), 20)
        );
    }
    cp.apply_yaml(
        &tmp.path().join("again.yaml"),
        &format!("kind: Site\nname: {a}\n"),
    );
    for (k, agent) in agents.iter_mut().enumerate().take(2) {
        let (token, _) = cp.join_token(&a, &[]);
        let fresh = tmp.path().join(format!("again{k}"));
        *agent = start_agent(&lan.hosts()[k], &fresh, Some((&url, &token)));
    }
    wait_peer_up(&agents[0], "host 0, enrolled again");
    assert!(
        !frames_answered(&tmp.path().join("detached"), &site_address(0)),
        "a detached host got an answer"
    );
    wait_log(&agents[0], "is not a current host of this site", "host 0");
    drop(agents);
}

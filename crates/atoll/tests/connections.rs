//! End-to-end tests of what connections that never authenticate may hold (issue 12, item 4):
//! the real `atoll control` with small, settable timeouts and a small per-address bound, raw
//! TCP and TLS clients that stall, and an enrolled agent's certificate that is never limited.
//!
//! Each test owns its control plane, folder and port. Waits read until the server closes or a
//! deadline passes; nothing sleeps for a fixed time.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use support::ControlPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above the timeouts these tests set: a connection still open then was held.
const DEADLINE: Duration = Duration::from_secs(15);

fn start(dir: &Path, extra: &[&str]) -> ControlPlane {
    ControlPlane::start_with(dir, "127.0.0.1:0", extra)
}

/// A TLS client trusting only the control plane's CA, presenting no certificate.
fn connector(cp: &ControlPlane) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cp.ca_file()).expect("the control plane wrote its CA");
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

async fn tls(cp: &ControlPlane) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(cp.address()).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector(cp)
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// How long until the server closes `stream` (a read returns 0 or fails), or `None` when it is
/// still open at the deadline.
async fn closed_after(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + DEADLINE).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_are_closed_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(
        dir.path(),
        &[
            "--handshake-timeout",
            "1s",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "1s",
        ],
    );

    // No TLS at all: the handshake never starts.
    let mut silent = TcpStream::connect(cp.address()).await.unwrap();
    let waited = closed_after(&mut silent).await;
    assert!(
        waited.is_some(),
        "a silent TCP connection was held for {DEADLINE:?}"
    );

    // A TLS connection that never sends a request.
    let mut idle = tls(&cp).await;
    let waited = closed_after(&mut idle).await;
    assert!(
        waited.is_some(),
        "an idle TLS connection was held for {DEADLINE:?}"
    );

    // Half a request header, then nothing.
    let mut half = tls(&cp).await;
    half.write_all(b"GET /v1/sites HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor")
        .await
        .unwrap();
    half.flush().await.unwrap();
    let waited = closed_after(&mut half).await;
    assert!(
        waited.is_some(),
        "a connection with half a header was held for {DEADLINE:?}"
    );

    // After a complete request, the idle timeout.
    let mut served = tls(&cp).await;
    served
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    served.flush().await.unwrap();
    let waited = closed_after(&mut served).await;
    assert!(
        waited.is_some(),
        "an idle connection after a request was held for {DEADLINE:?}"
    );
}

/// A site and an agent enrolled for it, in-process, with its own key and certificate.
async fn enrolled(
    cp: &ControlPlane,
    dir: &Path,
) -> (String, atoll_agent::shell::identity::Identity) {
    let site = format!("conn-{}", support::unique());
    cp.apply_yaml(
        &dir.join("site.yaml"),
        &format!("kind: Site\nname: {site}\n"),
    );
    let identity = support::enroll_host(
        cp,
        &dir.join("agent"),
        &site,
        atoll_api::agent::Inventory::default(),
    )
    .await;
    (site, identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_long_poll_outlasts_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(
        dir.path(),
        &["--header-read-timeout", "1s", "--idle-timeout", "1s"],
    );
    let (site, identity) = enrolled(&cp, dir.path()).await;
    let client = identity.client().unwrap();
    let poll = |have: u64, hash: &str, wait: u64| {
        client
            .get(format!(
                "{}/v1/sites/{site}/manifest?have={have}&hash={hash}&wait={wait}",
                cp.url
            ))
            .send()
    };
    let first = poll(0, "none", 0).await.expect("the first poll");
    assert_eq!(first.status(), 200);
    let signed: atoll_api::agent::SignedManifest = first.json().await.unwrap();
    let manifest: atoll_api::Manifest = serde_json::from_str(&signed.payload).unwrap();
    // Nothing newer comes: the poll is held for its whole wait, past the idle timeout.
    let started = Instant::now();
    let held = poll(manifest.revision, &manifest.hash, 3)
        .await
        .expect("the long-poll is answered, not cut");
    assert_eq!(held.status(), 304);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the long-poll was not held: {:?}",
        started.elapsed()
    );
    // The stimulus, not a wait for a condition: the agent's connection stays quiet for twice
    // the idle timeout, and must still serve.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = poll(manifest.revision, &manifest.hash, 0)
        .await
        .expect("a poll after a quiet spell");
    assert_eq!(again.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_unauthenticated_connection_from_one_address_is_refused_but_an_agent_gets_through()
{
    const BOUND: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let bound = BOUND.to_string();
    let cp = start(
        dir.path(),
        &[
            "--max-unauthenticated-per-address",
            &bound,
            "--idle-timeout",
            "60s",
            "--header-read-timeout",
            "60s",
        ],
    );
    let (site, identity) = enrolled(&cp, dir.path()).await;

    let mut held = Vec::new();
    for _ in 0..BOUND {
        held.push(tls(&cp).await);
    }
    let mut one_more = tls(&cp).await;
    let waited = closed_after(&mut one_more).await;
    assert!(
        waited.is_some_and(|w| w < Duration::from_secs(5)),
        "the connection past the bound of {BOUND} was not refused at once: {waited:?}"
    );

    // The agent shares the address and is not counted.
    let answer = identity
        .client()
        .unwrap()
        .get(format!("{}/v1/sites/{site}/manifest?have=0&wait=0", cp.url))
        .send()
        .await
        .expect("an agent with its certificate gets through");
    assert!(answer.status().as_u16() < 500, "{}", answer.status());

    // Closing one makes room (once the server has seen it close).
    drop(held.pop());
    let started = Instant::now();
    loop {
        let mut again = tls(&cp).await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(DEADLINE, again.read(&mut buf))
            .await
            .expect("an answer or a close in time")
            .unwrap_or(0);
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no room after a connection within the bound closed"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
}

//! One virtual site: a host that enrolls with its join token (a key of its own, a CSR, a
//! certificate back), then does what the real agent does on the wire: long-polls its signed
//! manifest over mutual TLS, verifies it with the agent's own check, "runs" it on a fake
//! runtime where every container starts at once, and reports the status the agent's core
//! computes. What it does not do is anything local: no disk, no Docker, no reconcile timer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_agent::core::outbox::GATHER;
use atoll_agent::core::{Memory, desired, status};
use atoll_agent::shell::clock::now_rfc3339;
use atoll_agent::shell::manifest::verify;
use atoll_api::Manifest;
use atoll_api::agent::{
    AgentEvent, EnrollRequest, EnrollResponse, HostStatus, Inventory, Report, ReportAck,
    ReportRequest, RuntimeInventory, SignedManifest,
};
use atoll_runtime::{Container, State};
use base64::Engine as _;
use hyper::{Method, StatusCode};
use rand::Rng as _;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{Semaphore, watch};

use crate::wire::{Answer, Connection, Counters, Endpoint};

/// What every virtual site shares.
#[derive(Debug)]
pub struct Sites {
    /// The control-plane replicas, one per site: site `i` talks to `endpoints[i % len]`.
    pub endpoints: Vec<Endpoint>,
    /// What every endpoint counts into.
    pub counters: Arc<Counters>,
    /// Trusts the control plane's CA, presents no certificate: for enrolling.
    pub enroll_tls: Arc<rustls::ClientConfig>,
    pub roots: Arc<rustls::RootCertStore>,
    /// How long each long-poll asks to be held, as the agent's `poll_wait`.
    pub poll_wait: Duration,
    /// Bounds the enrollments under way at once.
    pub enroll_gate: Semaphore,
    pub enrolled: AtomicU64,
    pub slots: Vec<Slot>,
    /// Local addresses to connect from, spread over so that no one address runs out of ports.
    pub sources: Vec<IpAddr>,
}

impl Sites {
    /// The replica site `index` talks to.
    fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index % self.endpoints.len()]
    }

    /// Whether every site accepted at least its revision in `targets` (by slot).
    pub fn all_accepted(&self, targets: &[u64]) -> bool {
        self.slots
            .iter()
            .zip(targets)
            .all(|(s, r)| s.accepted().0 >= *r)
    }

    /// Whether every site's report of at least its revision in `targets` was acknowledged.
    pub fn all_reported(&self, targets: &[u64]) -> bool {
        self.slots
            .iter()
            .zip(targets)
            .all(|(s, r)| s.reported() >= *r)
    }
}

/// What the bench reads of one site.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    /// The newest manifest revision the site accepted, and when.
    accepted: Mutex<(u64, Option<Instant>)>,
    /// The newest revision whose status the control plane acknowledged.
    reported: AtomicU64,
}

impl Slot {
    pub fn new(name: String) -> Slot {
        Slot {
            name,
            accepted: Mutex::new((0, None)),
            reported: AtomicU64::new(0),
        }
    }

    /// The newest revision accepted, and when.
    pub fn accepted(&self) -> (u64, Option<Instant>) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }
}

/// Why an exchange did not work.
enum Failure {
    /// 503 with how long to wait.
    Busy(Duration),
    Other(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Other(e.to_string())
    }
}

/// What a site holds after enrolling, and its connection.
struct Identity {
    tls: Arc<rustls::ClientConfig>,
    signing_key: Vec<u8>,
    source: IpAddr,
    /// Shared by the long-poll and the reports, as the agent's HTTP/2 client shares one.
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl Identity {
    /// The site's connection, made anew if there is none or it closed.
    async fn connection(&self, endpoint: &Endpoint) -> Result<Connection, Failure> {
        let mut conn = self.conn.lock().await;
        match &*conn {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                let fresh = endpoint.connect(self.source, self.tls.clone()).await?;
                *conn = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// Forgets the connection after a failure on it: the next exchange makes a new one.
    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }
}

/// Runs site `index` for ever: enroll, then poll and report.
pub async fn run(sites: Arc<Sites>, index: usize, token: String) {
    let slot = &sites.slots[index];
    let source = sites.sources[index % sites.sources.len()];
    let mut failures = 0;
    let identity = loop {
        let outcome = {
            let _permit = sites.enroll_gate.acquire().await;
            enroll(&sites, sites.endpoint(index), source, &slot.name, &token).await
        };
        match outcome {
            Ok(identity) => break identity,
            Err(failure) => pause(&sites, failure, &mut failures).await,
        }
    };
    sites.enrolled.fetch_add(1, Ordering::Relaxed);
    let (status_tx, status_rx) = watch::channel(None);
    let endpoint = sites.endpoint(index);
    tokio::join!(
        poll(&sites, endpoint, slot, &identity, status_tx),
        report(&sites, endpoint, slot, &identity, status_rx),
    );
}

/// Waits as the agent would after a failure: what a 503 asks, else a jittered backoff.
async fn pause(sites: &Sites, failure: Failure, failures: &mut u32) {
    let wait = match failure {
        Failure::Busy(retry_after) => jitter(retry_after, retry_after * 2),
        Failure::Other(e) => {
            tracing::debug!(error = %e, "virtual site: exchange failed");
            sites.counters.errors.fetch_add(1, Ordering::Relaxed);
            *failures = failures.saturating_add(1);
            let ceiling = Duration::from_secs(1 << (*failures).min(6)).min(Duration::from_secs(60));
            jitter(ceiling / 2, ceiling)
        }
    };
    tokio::time::sleep(wait).await;
}

fn jitter(low: Duration, high: Duration) -> Duration {
    rand::thread_rng().gen_range(low..=high.max(low))
}

async fn enroll(
    sites: &Sites,
    endpoint: &Endpoint,
    source: IpAddr,
    site: &str,
    token: &str,
) -> Result<Identity, Failure> {
    let key = rcgen::KeyPair::generate().map_err(|e| Failure::Other(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let request = EnrollRequest {
        token: token.to_owned(),
        csr_pem: csr,
        inventory: Inventory {
            hostname: format!("{site}-host"),
            arch: std::env::consts::ARCH.into(),
            os: "virtual".into(),
            kernel: "virtual".into(),
            cpus: 1,
            cpu_model: "virtual".into(),
            memory_bytes: 1 << 30,
            disk_bytes: 1 << 34,
            runtime: RuntimeInventory {
                name: "fake".into(),
                version: "0".into(),
            },
            ..Inventory::default()
        },
        // Virtual sites run no secrets: nothing is sealed to them.
        recipient: None,
    };
    let mut conn = endpoint.connect(source, sites.enroll_tls.clone()).await?;
    let answer = conn
        .call(
            endpoint,
            Method::POST,
            "/v1/enroll",
            Some(&request),
            Duration::from_secs(30),
        )
        .await?;
    let response: EnrollResponse = parse(answer)?;
    let chain = CertificateDer::pem_slice_iter(response.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Other(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Failure::Other(e.to_string()))?
    .with_root_certificates(sites.roots.clone())
    .with_client_auth_cert(chain, key)
    .map_err(|e| Failure::Other(e.to_string()))?;
    // One server to resume with: a small cache, not the default's room for 256.
    tls.resumption = Resumption::in_memory_sessions(4);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Identity {
        source,
        conn: tokio::sync::Mutex::new(None),
        tls: Arc::new(tls),
        signing_key: base64::engine::general_purpose::STANDARD
            .decode(&response.signing_key)
            .map_err(|e| Failure::Other(format!("signing key: {e}")))?,
    })
}

/// The body of a 200, parsed; a 503 or anything else as a failure.
fn parse<T: serde::de::DeserializeOwned>(answer: Answer) -> Result<T, Failure> {
    match answer.status {
        StatusCode::OK => serde_json::from_slice(&answer.body)
            .map_err(|e| Failure::Other(format!("unreadable answer: {e}"))),
        StatusCode::SERVICE_UNAVAILABLE => Err(Failure::Busy(
            answer.retry_after.unwrap_or(Duration::from_secs(1)),
        )),
        status => Err(Failure::Other(format!(
            "{status}: {}",
            String::from_utf8_lossy(&answer.body)
        ))),
    }
}

/// The manifest long-poll, for ever.
async fn poll(
    sites: &Sites,
    endpoint: &Endpoint,
    slot: &Slot,
    identity: &Identity,
    status_tx: watch::Sender<Option<HostStatus>>,
) {
    let mut have = 0;
    let mut failures = 0;
    loop {
        match poll_once(sites, endpoint, slot, identity, have).await {
            Ok(Some(manifest)) => {
                failures = 0;
                have = manifest.revision;
                *slot.accepted.lock().unwrap_or_else(|e| e.into_inner()) =
                    (have, Some(Instant::now()));
                status_tx.send_replace(Some(run_on_fake_runtime(&slot.name, &manifest)));
            }
            Ok(None) => failures = 0,
            Err(failure) => {
                if matches!(failure, Failure::Other(_)) {
                    identity.drop_connection().await;
                }
                pause(sites, failure, &mut failures).await;
            }
        }
    }
}

async fn poll_once(
    sites: &Sites,
    endpoint: &Endpoint,
    slot: &Slot,
    identity: &Identity,
    have: u64,
) -> Result<Option<Manifest>, Failure> {
    let mut conn = identity.connection(endpoint).await?;
    let path = format!(
        "/v1/sites/{}/manifest?have={have}&wait={}",
        slot.name,
        sites.poll_wait.as_secs()
    );
    let answer = conn
        .call::<()>(
            endpoint,
            Method::GET,
            &path,
            None,
            sites.poll_wait + Duration::from_secs(30),
        )
        .await?;
    if answer.status == StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let signed: SignedManifest = parse(answer)?;
    verify(&signed, &identity.signing_key, &slot.name, have)
        .map(Some)
        .map_err(Failure::Other)
}

/// The status the agent would report once the fake runtime ran the manifest: every replica
/// running in a container made from its spec.
fn run_on_fake_runtime(site: &str, manifest: &Manifest) -> HostStatus {
    let replicas = desired(site, manifest, std::path::Path::new("/nonexistent"));
    let now = now_rfc3339();
    let containers: Vec<Container> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| Container {
            id: format!("fake-{}-{i}", manifest.revision),
            name: r.spec.name.clone(),
            image: r.spec.image.clone(),
            labels: r.spec.labels.clone(),
            state: State::Running,
            started_at: Some(now.clone()),
            finished_at: None,
            bind_sources: r.spec.binds.iter().map(|b| b.source.clone()).collect(),
        })
        .collect();
    let images: BTreeSet<String> = replicas.iter().map(|r| r.spec.image.clone()).collect();
    HostStatus {
        applied_revision: manifest.revision,
        replicas: status(
            &replicas,
            &containers,
            &images,
            &Memory::default(),
            &BTreeMap::new(),
        ),
        refused: None,
        dropped_reports: 0,
        secrets: BTreeMap::new(),
        conditions: Vec::new(),
        cluster: None,
        free: None,
    }
}

/// Reports each new status until it is acknowledged.
async fn report(
    sites: &Sites,
    endpoint: &Endpoint,
    slot: &Slot,
    identity: &Identity,
    mut status_rx: watch::Receiver<Option<HostStatus>>,
) {
    let mut seq = 0;
    while status_rx.changed().await.is_ok() {
        // As the agent's reporter does: what follows within the moment goes with it.
        tokio::time::sleep(GATHER).await;
        let Some(status) = status_rx.borrow_and_update().clone() else {
            continue;
        };
        seq += 1;
        let revision = status.applied_revision;
        let at = now_rfc3339();
        let request = ReportRequest {
            batches: vec![Report {
                seq,
                at: at.clone(),
                events: vec![AgentEvent {
                    at,
                    kind: "manifest".into(),
                    message: format!("accepted manifest revision {revision}"),
                    count: None,
                }],
                status: Some(status),
            }],
        };
        let path = format!("/v1/sites/{}/reports", slot.name);
        let mut failures = 0;
        loop {
            let sent = async {
                let answer = identity
                    .connection(endpoint)
                    .await?
                    .call(
                        endpoint,
                        Method::POST,
                        &path,
                        Some(&request),
                        Duration::from_secs(30),
                    )
                    .await?;
                parse::<ReportAck>(answer)
            }
            .await;
            match sent {
                Ok(ack) if ack.acked >= seq => {
                    slot.reported.fetch_max(revision, Ordering::Relaxed);
                    break;
                }
                Ok(ack) => {
                    pause(
                        sites,
                        Failure::Other(format!("acknowledged {} of {seq}", ack.acked)),
                        &mut failures,
                    )
                    .await;
                }
                Err(failure) => {
                    if matches!(failure, Failure::Other(_)) {
                        identity.drop_connection().await;
                    }
                    pause(sites, failure, &mut failures).await;
                }
            }
        }
    }
}

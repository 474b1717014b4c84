//! The control plane's IO: the HTTPS server, the store, files and the clock.

mod agent_api;
pub mod agents;
mod applications;
pub mod auth;
pub mod clock;
pub mod connections;
mod deployments;
mod device_classes;
pub mod files;
pub mod fleet;
pub mod hostbook;
mod hosts;
pub mod http;
mod labels;
pub mod lease;
pub mod lock;
mod manifests;
pub mod openapi;
mod periodic;
mod reports;
mod rollout_api;
pub mod rollouts;
mod secret_api;
pub mod secrets;
pub mod service;
pub mod shared_keys;
pub mod signing;
mod sites;
pub mod tickets;
pub mod tls;
pub mod vault;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_store::{Store, StoreLocation, TokenRow, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use self::agents::Agents;
use self::connections::{Activity, ConnectionLimits, Unauthenticated};
use self::fleet::Fleet;
use self::http::Peer;
use self::service::ControlPlane;
use self::signing::ManifestSigner;
use self::tls::{AgentIdentity, Pki, server_names};
use self::vault::{MasterKeySource, Vault};
use crate::core::events::Retention;

/// The file, in the data folder, that holds the first admin token.
pub const INITIAL_TOKEN_FILE: &str = "initial-admin-token";
/// The CA certificate users and agents trust.
pub const CA_FILE: &str = "ca.pem";

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Where the store is (`--store`): an SQLite file (by default `atoll.db` in the data
    /// folder) or a PostgreSQL database.
    pub store: StoreLocation,
    pub listen: SocketAddr,
    /// Extra DNS names or addresses for the server certificate.
    pub names: Vec<String>,
    /// Where the master key that encrypts secrets at rest comes from.
    pub master_key: MasterKeySource,
    /// How large rendered templates may be.
    pub template_limits: atoll_spec::render::Limits,
    /// What connections that have not authenticated may hold.
    pub connection_limits: ConnectionLimits,
    /// How many of each site's events are kept (`--events-kept`, `--events-kept-for`).
    pub retention: Retention,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data folder {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    InUse(#[from] lock::LockError),
    #[error(transparent)]
    Store(#[from] atoll_store::StoreError),
    #[error(transparent)]
    Pki(#[from] tls::PkiError),
    #[error("manifest-signing key: {0}")]
    Signing(String),
    #[error("{0}")]
    MasterKey(String),
    #[error(transparent)]
    Keys(#[from] shared_keys::CheckError),
    #[error(
        "cannot listen on {addr}: {source}; is another control plane running there? pick another with --listen"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A control plane that is serving.
#[derive(Debug)]
pub struct Running {
    /// The address actually bound (with `--listen 127.0.0.1:0`, the port picked).
    pub addr: SocketAddr,
    pub ca_fingerprint: String,
    /// The admin token if this start created it (the first start of a data folder).
    pub initial_token: Option<String>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The data folder is this control plane's until it is dropped.
    _lock: lock::DataLock,
}

impl Running {
    /// `https://127.0.0.1:PORT`, or `https://localhost:PORT` when bound to every address.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        match self.addr {
            SocketAddr::V6(_) if !self.addr.ip().is_unspecified() => {
                format!("https://[{host}]:{}", self.addr.port())
            }
            _ => format!("https://{host}:{}", self.addr.port()),
        }
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Serves until the process is asked to stop.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens the store, prepares the PKI and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let dir = &config.data_dir;
    files::private_dir(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let data_lock = lock::lock(dir)?;
    let store = config.store.open().await?;
    let vault = Vault::load(&config.master_key, dir).map_err(StartError::MasterKey)?;
    // A wrong key is refused before anything is written: the first start's commit happens
    // only on an empty store, which has no check value to disagree with.
    let initial_token = first_start(dir, store.as_ref()).await?;
    vault
        .check(store.as_ref())
        .await
        .map_err(StartError::MasterKey)?;
    let pki = Pki::load_or_create(dir, &server_names(&config.listen, &config.names))?;
    let signer = ManifestSigner::load_or_create(dir).map_err(StartError::Signing)?;
    shared_keys::check(
        store.as_ref(),
        &shared_keys::noted(&pki.ca_fingerprint, &signer.public_key()),
    )
    .await?;
    let tls = TlsAcceptor::from(pki.server_config(tickets::SharedTicketer::shared(&vault))?);
    let ca_fingerprint = pki.ca_fingerprint.clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let fleet = Arc::new(Fleet::from_store(store.as_ref()).await?);
    let control = ControlPlane::new(
        store.clone(),
        fleet.clone(),
        Arc::new(vault),
        Arc::new(signer),
    )
    .with_template_limits(config.template_limits);
    let agents = Agents::new(store.clone(), control.clone(), fleet.clone(), Arc::new(pki))
        .with_retention(config.retention);
    let router = http::router(control.clone(), agents.clone());
    let (shutdown, stop) = watch::channel(false);
    tokio::spawn(fleet.hosts().clone().follow_every(
        store.clone(),
        hostbook::FOLLOW_EVERY,
        stop.clone(),
    ));
    let hint = store.manifest_hint().await?;
    tokio::spawn(fleet.clone().follow_every(
        store.clone(),
        control.signer().clone(),
        fleet::FOLLOW_EVERY,
        hint,
        stop.clone(),
    ));
    tokio::spawn(fleet.clone().share_presence_every(
        store.clone(),
        fleet::PRESENCE_EVERY,
        stop.clone(),
    ));
    let holder = rollouts::holder_id();
    tracing::info!(%holder, lease = rollouts::LEASE, "rollout controller runs while this process holds its lease");
    let (lease, _) = lease::Lease::keep(
        store.clone(),
        rollouts::LEASE,
        &holder,
        rollouts::LEASE_TIMING,
        stop.clone(),
    );
    tokio::spawn(
        rollouts::Controller {
            control,
            agents,
            lease,
            shutdown: stop.clone(),
        }
        .run(),
    );
    let task = tokio::spawn(serve(listener, tls, router, config.connection_limits, stop));
    tracing::info!(%addr, "control plane serving");
    Ok(Running {
        addr,
        ca_fingerprint,
        initial_token,
        shutdown,
        task,
        _lock: data_lock,
    })
}

/// Re-wraps every secret's data key from the current master key to the one in `new_key_file`,
/// with the control plane stopped. Returns how many secrets moved.
pub async fn rotate_master_key(
    data_dir: &Path,
    store: &StoreLocation,
    current: &MasterKeySource,
    new_key_file: &Path,
) -> Result<usize, String> {
    if let StoreLocation::Sqlite(db) = store
        && !db.exists()
    {
        return Err(format!("{}: no control plane data here", db.display()));
    }
    // With the control plane stopped: its lock says whether it is.
    let _lock = lock::lock(data_dir).map_err(|e| e.to_string())?;
    let store = store.open().await.map_err(|e| e.to_string())?;
    let old = Vault::load(current, data_dir)?;
    let new = Vault::load(&MasterKeySource::File(new_key_file.to_owned()), data_dir)?;
    vault::rotate(store.as_ref(), &old, &new).await
}

/// Copies the store to `file`, consistent and online (`atoll_store::backup`): its size in
/// bytes. A PostgreSQL store is backed up with PostgreSQL's own tools.
pub fn backup(store: &StoreLocation, file: &Path) -> Result<u64, String> {
    match store {
        StoreLocation::Sqlite(db) => atoll_store::backup(db, file).map_err(|e| e.to_string()),
        StoreLocation::Postgres(_) => Err(
            "the store is a PostgreSQL database: back it up with `pg_dump --format=custom` (online and consistent), restore with `pg_restore` into an empty database".into(),
        ),
    }
}

/// On the first start of a data folder, makes the admin token: its hash goes to the store, the
/// token itself only to a file readable by the owner.
async fn first_start(dir: &Path, store: &dyn Store) -> Result<Option<String>, StartError> {
    if store.version().await? != 0 {
        return Ok(None);
    }
    let token = auth::generate();
    let path = dir.join(INITIAL_TOKEN_FILE);
    files::write_atomic(&path, format!("{token}\n").as_bytes(), true).map_err(|source| {
        StartError::DataDir {
            path: path.display().to_string(),
            source,
        }
    })?;
    let now = clock::now_rfc3339();
    let row = TokenRow {
        id: "admin".into(),
        name: "admin".into(),
        hash: auth::hash(&token),
        role: "admin".into(),
        created_at: now.clone(),
    };
    let audit = Write::Audit {
        at: now,
        actor: "atoll".into(),
        action: "init".into(),
        detail: "created the admin token".into(),
    };
    store.commit(0, vec![Write::PutToken(row), audit]).await?;
    Ok(Some(token))
}

/// Accepts connections until told to stop. Each TLS handshake runs in its own task, so a slow
/// or silent client cannot hold up the others; a connection that did not present a client
/// certificate is held to `limits` (`connections`).
async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    router: axum::Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let unauthenticated = Arc::new(Unauthenticated::default());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Answers are small and must leave at once: a manifest's headers and body must not wait
        // for the acknowledgement of the previous segment.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot disable Nagle's algorithm");
        }
        let (tls, router, unauthenticated) = (tls.clone(), router.clone(), unauthenticated.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(limits.handshake, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The client certificate, if any, was verified against the CA during the handshake.
            let identity = Peer(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|c| AgentIdentity::from_certificate(c)),
            );
            let authenticated = identity.0.is_some();
            let slot = if authenticated {
                None
            } else {
                match unauthenticated.admit(peer.ip(), limits.per_address) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(
                            %peer,
                            limit = limits.per_address,
                            "refused: too many connections without a client certificate from this address"
                        );
                        return;
                    }
                }
            };
            let activity = Activity::new();
            let counted = activity.clone();
            // A request counts as in flight until its answer is ready, so that the idle
            // timeout never cuts an apply being worked on.
            let service = TowerToHyperService::new(tower::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(identity.clone());
                    let in_flight = counted.begin();
                    let router = router.clone();
                    async move {
                        let answer = tower::ServiceExt::oneshot(router, req).await;
                        drop(in_flight);
                        answer
                    }
                },
            ));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = loop {
                let deadline = (!authenticated)
                    .then(|| activity.deadline(&limits))
                    .flatten();
                let wait = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        // Re-check now and then while a request is in flight.
                        None if !authenticated => tokio::time::sleep(limits.idle).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ended = connection.as_mut() => break Some(ended),
                    () = wait => {
                        if activity.deadline(&limits).is_some_and(|at| at <= tokio::time::Instant::now()) {
                            tracing::debug!(%peer, "closed: no complete request in time from a connection without a client certificate");
                            break None;
                        }
                    }
                }
            };
            if let Some(Err(e)) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

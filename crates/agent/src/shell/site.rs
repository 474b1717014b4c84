//! The host-to-host channel of a site cluster: the agent listens on its site address and dials
//! its peers, over mutual TLS with the certificates the control plane issued, and keeps a
//! heartbeat going on each channel. Which peers are up is logged (`site peer up` / `site peer
//! down`); the Raft traffic will travel over the same channels.
//!
//! Membership is `core::members`' answer on the list of the manifest last kept, read again for
//! every connection and every heartbeat, so a host that leaves the list is cut off at once.
//! Both ends dial each other: a pair may hold two channels, which costs little and needs no rule
//! on who calls whom (a peer reached only through `--peer` is then met either way). The port is
//! open only while the site has two or more members; a single-host site opens none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::Manifest;
use atoll_api::site::{HEARTBEAT_EVERY, MAX_FRAME_BYTES, PeerMessage, SILENT_AFTER};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::Session;
use crate::core::members::Members;

/// How long a dial waits before the next try at an address that did not answer.
const REDIAL_EVERY: Duration = Duration::from_secs(2);
/// How long a TCP connection and a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SiteChannel {
    pub session: Arc<Session>,
    /// Where to listen for peers.
    pub listen: SocketAddr,
    /// `--peer` addresses, dialled besides the listed ones.
    pub peers: Vec<String>,
    pub manifests: watch::Receiver<Option<Arc<Manifest>>>,
    pub shutdown: watch::Receiver<bool>,
}

/// The channels open to each peer, to log when one comes up and when its last one goes.
#[derive(Debug, Default, Clone)]
struct Up(Arc<Mutex<BTreeMap<String, usize>>>);

impl Up {
    fn opened(&self, host: &str) {
        let mut up = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = up.entry(host.to_owned()).or_default();
        *n += 1;
        if *n == 1 {
            tracing::info!(peer = %host, "site peer up");
        }
    }

    fn closed(&self, host: &str, why: &str) {
        let mut up = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = up.get_mut(host) {
            *n -= 1;
            if *n == 0 {
                up.remove(host);
                tracing::info!(peer = %host, %why, "site peer down");
            }
        }
    }
}

impl SiteChannel {
    pub async fn run(mut self) {
        let identity = self.session.identity();
        let (site, me) = (identity.site.clone(), identity.host.clone());
        let members_of = |m: &Option<Arc<Manifest>>| {
            Members::new(
                &site,
                &me,
                m.as_ref().map_or(&[][..], |m| &m.content.site_hosts),
            )
        };
        let (members_tx, members) = watch::channel(members_of(&self.manifests.borrow()));
        let up = Up::default();
        let mut listening: Option<tokio::task::JoinHandle<()>> = None;
        let mut dialling: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        loop {
            let now = members.borrow().clone();
            if now.clustered() && listening.is_none() {
                match TcpListener::bind(self.listen).await {
                    Ok(listener) => {
                        tracing::info!(address = %self.listen, members = now.hosts.len(), "listening for site peers");
                        listening = Some(tokio::spawn(accept(
                            listener,
                            self.session.clone(),
                            members.clone(),
                            up.clone(),
                        )));
                    }
                    Err(e) => {
                        tracing::warn!(address = %self.listen, error = %e, "cannot listen for site peers; trying again");
                    }
                }
            } else if !now.clustered()
                && let Some(task) = listening.take()
            {
                tracing::info!("no other host at this site: no longer listening for site peers");
                task.abort();
            }
            let wanted: BTreeSet<String> = now.dial(&self.peers);
            dialling.retain(|address, task| {
                let keep = wanted.contains(address);
                if !keep {
                    task.abort();
                }
                keep
            });
            for address in wanted {
                dialling.entry(address.clone()).or_insert_with(|| {
                    tokio::spawn(dial(
                        address,
                        self.session.clone(),
                        members.clone(),
                        up.clone(),
                    ))
                });
            }
            tokio::select! {
                _ = self.shutdown.changed() => break,
                changed = self.manifests.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let next = members_of(&self.manifests.borrow_and_update());
                    members_tx.send_if_modified(|m| {
                        let changed = *m != next;
                        *m = next;
                        changed
                    });
                }
                // A failed bind is tried again.
                () = tokio::time::sleep(REDIAL_EVERY), if listening.is_none() && now.clustered() => {}
            }
        }
        if let Some(task) = listening {
            task.abort();
        }
        for task in dialling.into_values() {
            task.abort();
        }
    }
}

async fn accept(
    listener: TcpListener,
    session: Arc<Session>,
    members: watch::Receiver<Members>,
    up: Up,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a site peer");
                tokio::time::sleep(REDIAL_EVERY).await;
                continue;
            }
        };
        let (session, members, up) = (session.clone(), members.clone(), up.clone());
        connections.spawn(async move {
            let server = match session.identity().site_tls() {
                Ok((server, _)) => server,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up the site channel's TLS");
                    return;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%from, error = %e, "refused a site peer: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let named = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::identity::named_by(c.as_ref()));
            converse(stream, &from.to_string(), named, &session, members, &up).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn dial(address: String, session: Arc<Session>, members: watch::Receiver<Members>, up: Up) {
    loop {
        if let Some(stream) = connect(&address, &session).await {
            let named = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::identity::named_by(c.as_ref()));
            converse(stream, &address, named, &session, members.clone(), &up).await;
        }
        tokio::time::sleep(REDIAL_EVERY).await;
    }
}

async fn connect(
    address: &str,
    session: &Session,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let (_, client) = session
        .identity()
        .site_tls()
        .inspect_err(|e| tracing::warn!(error = %e, "cannot set up the site channel's TLS"))
        .ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    // Host certificates name no DNS name: the verifier checks the chain, the list the host.
    let name = rustls::pki_types::ServerName::try_from("atoll-site-peer").ok()?;
    let attempt = async {
        let tcp = TcpStream::connect(address).await.ok()?;
        connector
            .connect(name, tcp)
            .await
            .inspect_err(|e| tracing::warn!(peer_address = %address, error = %e, "site peer handshake failed"))
            .ok()
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// Runs one channel: the peer is judged by the list, then hello and heartbeats both ways until
/// it goes silent, leaves the list, or the connection ends.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    at: &str,
    named: Option<(String, String)>,
    session: &Session,
    mut members: watch::Receiver<Members>,
    up: &Up,
) {
    let named_ref = named.as_ref().map(|(s, h)| (s.as_str(), h.as_str()));
    let host = match members.borrow().admit(named_ref) {
        Ok(host) => host,
        Err(refusal) => {
            tracing::warn!(peer_address = %at, %refusal, "refused a site peer");
            return;
        }
    };
    let identity = session.identity();
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = FrameReader {
        inner: BufReader::new(read),
        limit: MAX_FRAME_BYTES,
        line: Vec::new(),
    };
    let hello = PeerMessage::Hello {
        site: identity.site.clone(),
        host: identity.host.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    if write.write_all(&hello.encode()).await.is_err() {
        return;
    }
    // Up once it is heard from: a peer that refuses this host closes the channel unheard.
    let mut heard = false;
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut sequence = 0u64;
    let why = loop {
        tokio::select! {
            _ = tick.tick() => {
                sequence += 1;
                if write.write_all(&PeerMessage::Heartbeat { sequence }.encode()).await.is_err() {
                    break "the connection ended".to_owned();
                }
            }
            frame = tokio::time::timeout(SILENT_AFTER, lines.next_frame()) => match frame {
                Err(_) => break format!("silent for {} s", SILENT_AFTER.as_secs()),
                Ok(Err(e)) => break e,
                Ok(Ok(PeerMessage::Hello { site, host: said, .. })) if site != identity.site || said != host => {
                    break format!("its hello names {said} of site {site}, not its certificate's host");
                }
                Ok(Ok(_)) => {
                    if !heard {
                        heard = true;
                        up.opened(&host);
                    }
                }
            },
            changed = members.changed() => {
                if changed.is_err() {
                    break "the agent is stopping".to_owned();
                }
                let refused = members.borrow().admit(named_ref).err();
                if let Some(refusal) = refused {
                    tracing::warn!(peer = %host, %refusal, "cutting off a site peer");
                    break refusal.to_string();
                }
            }
        }
    };
    if heard {
        up.closed(&host, &why);
    }
}

/// Frames of at most `limit` bytes read from a stream.
struct FrameReader<R> {
    inner: R,
    limit: usize,
    line: Vec<u8>,
}

impl<R: tokio::io::AsyncBufRead + Unpin> FrameReader<R> {
    /// The next frame; an error when the connection ends or a frame is over the limit or not
    /// a peer message.
    async fn next_frame(&mut self) -> Result<PeerMessage, String> {
        self.line.clear();
        loop {
            let buf = self
                .inner
                .fill_buf()
                .await
                .map_err(|e| format!("the connection failed: {e}"))?;
            if buf.is_empty() {
                return Err("the peer closed the connection".to_owned());
            }
            let (taken, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            self.line.extend_from_slice(&buf[..taken]);
            self.inner.consume(taken);
            if self.line.len() > self.limit {
                return Err(format!("a frame over {} bytes", self.limit));
            }
            if done {
                self.line.pop();
                return PeerMessage::decode(&self.line);
            }
        }
    }
}

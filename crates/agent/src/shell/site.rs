//! The host-to-host channel of a site cluster: the agent listens on its site address and dials
//! its peers, over mutual TLS with the certificates the control plane issued, and keeps a
//! heartbeat going on each channel. Which peers are up is logged (`site peer up` / `site peer
//! down`). The channels carry the site log's Raft requests and replies (by id, any open channel
//! to the peer) and each host's account of itself (`HostState`, sent when a channel opens and on
//! every change); [`Peers`] is what they share with the cluster: the channels open to each peer,
//! when each was last heard, the state each last sent, and the site log that answers requests.
//!
//! Membership is `core::members`' answer on the list of the manifest last kept, read again for
//! every connection and every heartbeat, so a host that leaves the list is cut off at once.
//! Both ends dial each other: a pair may hold two channels, which costs little and needs no rule
//! on who calls whom (a peer reached only through `--peer` is then met either way). The port is
//! open only while the site has two or more members; a single-host site opens none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::Manifest;
use atoll_api::site::{HEARTBEAT_EVERY, HostState, MAX_FRAME_BYTES, PeerMessage, SILENT_AFTER};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use super::clock::now_ms;
use super::session::Session;
use crate::core::members::Members;
use crate::site_log::{self, LinkDown, SiteLog};

/// How long a dial waits before the next try at an address that did not answer.
const REDIAL_EVERY: Duration = Duration::from_secs(2);
/// How long a TCP connection and a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames waiting to be written on one channel; a sender past it waits.
const QUEUED_FRAMES: usize = 64;
/// Site-log requests of one channel handled at once; reading waits past it.
const REQUESTS_AT_ONCE: usize = 16;

/// What the site channels share with the cluster.
#[derive(Default)]
pub struct Peers {
    inner: Mutex<Shared>,
    next_id: AtomicU64,
    /// Woken when a peer's state arrives or a peer's last channel closes.
    changed: Notify,
}

#[derive(Default)]
struct Shared {
    /// The open channels to each peer, by channel number: where frames for it are queued.
    channels: BTreeMap<String, BTreeMap<u64, mpsc::Sender<Vec<u8>>>>,
    /// When each peer was last heard, in ms since the epoch.
    heard_ms: BTreeMap<String, u64>,
    /// The state each peer last sent.
    states: BTreeMap<String, HostState>,
    /// Site-log requests sent and waiting for their reply, by id.
    pending: HashMap<u64, oneshot::Sender<serde_json::Value>>,
    /// This host's site log, once open: it answers the peers' requests.
    log: Option<SiteLog>,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the peers' site-log requests to `log` from now on.
    pub fn serve(&self, log: SiteLog) {
        self.lock().log = Some(log);
    }

    /// When each peer was last heard, in ms since the epoch.
    pub fn heard_ms(&self) -> BTreeMap<String, u64> {
        self.lock().heard_ms.clone()
    }

    /// The peers a channel is open to now.
    pub fn connected(&self) -> BTreeSet<String> {
        self.lock().channels.keys().cloned().collect()
    }

    /// The state each peer last sent.
    pub fn states(&self) -> BTreeMap<String, HostState> {
        self.lock().states.clone()
    }

    /// Waits until a peer's state arrives or a peer's last channel closes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn heard(&self, host: &str) {
        self.lock().heard_ms.insert(host.to_owned(), now_ms());
    }

    fn opened(&self, host: &str, channel: u64, frames: mpsc::Sender<Vec<u8>>) {
        let mut shared = self.lock();
        let open = shared.channels.entry(host.to_owned()).or_default();
        open.insert(channel, frames);
        if open.len() == 1 {
            tracing::info!(peer = %host, "site peer up");
        }
    }

    fn closed(&self, host: &str, channel: u64, why: &str) {
        let mut shared = self.lock();
        if let Some(open) = shared.channels.get_mut(host) {
            open.remove(&channel);
            if open.is_empty() {
                shared.channels.remove(host);
                drop(shared);
                tracing::info!(peer = %host, %why, "site peer down");
                self.changed.notify_waiters();
            }
        }
    }

    fn state(&self, host: &str, state: HostState) {
        let changed = self.lock().states.insert(host.to_owned(), state.clone()) != Some(state);
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn answered(&self, id: u64, body: serde_json::Value) {
        if let Some(waiting) = self.lock().pending.remove(&id) {
            let _ = waiting.send(body);
        }
    }

    fn log(&self) -> Option<SiteLog> {
        self.lock().log.clone()
    }
}

/// The site log's transport over the channels: a request goes out on any channel open to the
/// peer and waits for the reply of its id (the site log bounds the wait).
#[derive(Clone)]
pub struct Transport(pub Arc<Peers>);

/// Forgets a request's reply slot however the wait for it ends.
struct Pending<'a>(&'a Peers, u64);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.lock().pending.remove(&self.1);
    }
}

impl site_log::Transport for Transport {
    async fn send(
        &self,
        to: &str,
        addr: &str,
        message: site_log::Message,
    ) -> Result<site_log::Reply, LinkDown> {
        let down = |reason: String| LinkDown {
            to: to.to_owned(),
            addr: addr.to_owned(),
            reason,
        };
        let peers = &self.0;
        let body = serde_json::to_value(&message).map_err(|e| down(e.to_string()))?;
        let id = peers.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let frames = {
            let mut shared = peers.lock();
            let frames = shared
                .channels
                .get(to)
                .and_then(|open| open.values().next().cloned())
                .ok_or_else(|| down("no channel open to it".to_owned()))?;
            shared.pending.insert(id, reply);
            frames
        };
        let _pending = Pending(peers, id);
        frames
            .send(PeerMessage::Raft { id, body }.encode())
            .await
            .map_err(|_| down("its channel closed".to_owned()))?;
        let body = answer
            .await
            .map_err(|_| down("its channel closed".to_owned()))?;
        serde_json::from_value(body).map_err(|e| down(format!("its reply cannot be read: {e}")))
    }
}

pub struct SiteChannel {
    pub session: Arc<Session>,
    pub registry: Arc<Peers>,
    /// This host's account of itself, sent to every peer.
    pub own: watch::Receiver<HostState>,
    /// Where to listen for peers.
    pub listen: SocketAddr,
    /// `--peer` addresses, dialled besides the listed ones.
    pub peers: Vec<String>,
    pub manifests: watch::Receiver<Option<Arc<Manifest>>>,
    pub shutdown: watch::Receiver<bool>,
}

/// What each channel needs.
#[derive(Clone)]
struct Link {
    session: Arc<Session>,
    members: watch::Receiver<Members>,
    peers: Arc<Peers>,
    own: watch::Receiver<HostState>,
}

impl SiteChannel {
    fn link(&self, members: &watch::Receiver<Members>) -> Link {
        Link {
            session: self.session.clone(),
            members: members.clone(),
            peers: self.registry.clone(),
            own: self.own.clone(),
        }
    }

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
        let mut listening: Option<tokio::task::JoinHandle<()>> = None;
        let mut dialling: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
        loop {
            let now = members.borrow().clone();
            if now.clustered() && listening.is_none() {
                match TcpListener::bind(self.listen).await {
                    Ok(listener) => {
                        tracing::info!(address = %self.listen, members = now.hosts.len(), "listening for site peers");
                        listening = Some(tokio::spawn(accept(listener, self.link(&members))));
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
                let link = self.link(&members);
                dialling
                    .entry(address.clone())
                    .or_insert_with(|| tokio::spawn(dial(address, link)));
            }
            tokio::select! {
                _ = self.shutdown.changed() => break,
                changed = self.manifests.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let next = members_of(&self.manifests.borrow_and_update());
                    members_tx.send_if_modified(|m| super::replace(m, next));
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

async fn accept(listener: TcpListener, link: Link) {
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
        let link = link.clone();
        connections.spawn(async move {
            let server = match link.session.identity().site_tls() {
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
            converse(stream, &from.to_string(), named, link).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn dial(address: String, link: Link) {
    loop {
        if let Some(stream) = connect(&address, &link.session).await {
            let named = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::identity::named_by(c.as_ref()));
            converse(stream, &address, named, link.clone()).await;
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

/// Channel numbers, for the registry of open channels.
static CHANNELS: AtomicU64 = AtomicU64::new(0);

/// Runs one channel: the peer is judged by the list, then hello, this host's state and
/// heartbeats both ways, and the site log's requests, until the peer goes silent, leaves the
/// list, or the connection ends.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    at: &str,
    named: Option<(String, String)>,
    mut link: Link,
) {
    let named_ref = named.as_ref().map(|(s, h)| (s.as_str(), h.as_str()));
    let host = match link.members.borrow().admit(named_ref) {
        Ok(host) => host,
        Err(refusal) => {
            tracing::warn!(peer_address = %at, %refusal, "refused a site peer");
            return;
        }
    };
    let identity = link.session.identity();
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
    let own = PeerMessage::State(link.own.borrow_and_update().clone());
    if write.write_all(&hello.encode()).await.is_err()
        || write.write_all(&own.encode()).await.is_err()
    {
        return;
    }
    let channel = CHANNELS.fetch_add(1, Ordering::Relaxed);
    let (frames, mut queued) = mpsc::channel::<Vec<u8>>(QUEUED_FRAMES);
    let requests = Arc::new(Semaphore::new(REQUESTS_AT_ONCE));
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
            Some(frame) = queued.recv() => {
                if write.write_all(&frame).await.is_err() {
                    break "the connection ended".to_owned();
                }
            }
            changed = link.own.changed() => {
                if changed.is_err() {
                    break "the agent is stopping".to_owned();
                }
                let own = PeerMessage::State(link.own.borrow_and_update().clone());
                if write.write_all(&own.encode()).await.is_err() {
                    break "the connection ended".to_owned();
                }
            }
            frame = tokio::time::timeout(SILENT_AFTER, lines.next_frame()) => {
                let frame = match frame {
                    Err(_) => break format!("silent for {} s", SILENT_AFTER.as_secs()),
                    Ok(Err(e)) => break e,
                    Ok(Ok(frame)) => frame,
                };
                if let PeerMessage::Hello { site, host: said, .. } = &frame
                    && (*site != identity.site || *said != host)
                {
                    break format!("its hello names {said} of site {site}, not its certificate's host");
                }
                link.peers.heard(&host);
                if !heard {
                    heard = true;
                    link.peers.opened(&host, channel, frames.clone());
                }
                match frame {
                    PeerMessage::State(state) => link.peers.state(&host, state),
                    PeerMessage::RaftReply { id, body } => link.peers.answered(id, body),
                    PeerMessage::Raft { id, body } => {
                        let Ok(permit) = requests.clone().acquire_owned().await else {
                            break "the agent is stopping".to_owned();
                        };
                        let (peers, frames) = (link.peers.clone(), frames.clone());
                        tokio::spawn(async move {
                            let reply = answer(&peers, body).await;
                            let _ = frames.send(PeerMessage::RaftReply { id, body: reply }.encode()).await;
                            drop(permit);
                        });
                    }
                    PeerMessage::Hello { .. } | PeerMessage::Heartbeat { .. } | PeerMessage::Unknown => {}
                }
            }
            changed = link.members.changed() => {
                if changed.is_err() {
                    break "the agent is stopping".to_owned();
                }
                let refused = link.members.borrow().admit(named_ref).err();
                if let Some(refusal) = refused {
                    tracing::warn!(peer = %host, %refusal, "cutting off a site peer");
                    break refusal.to_string();
                }
            }
        }
    };
    if heard {
        link.peers.closed(&host, channel, &why);
    }
}

/// This host's site log's answer to a peer's request, or a failure when it has none open or
/// the request cannot be read.
async fn answer(peers: &Peers, body: serde_json::Value) -> serde_json::Value {
    let reply = match (peers.log(), serde_json::from_value(body)) {
        (Some(log), Ok(message)) => log.receive(message).await,
        (None, _) => site_log::Reply::failed("no site log is open on this host"),
        (_, Err(e)) => site_log::Reply::failed(format!("the request cannot be read: {e}")),
    };
    serde_json::to_value(&reply).unwrap_or_default()
}

/// Frames of at most `limit` bytes read from a stream.
struct FrameReader<R> {
    inner: R,
    limit: usize,
    line: Vec<u8>,
}

impl<R: tokio::io::AsyncBufRead + Unpin> FrameReader<R> {
    /// The next frame; an error when the connection ends or a frame is over the limit or not
    /// a peer message. Cancel-safe: the channel's loop drops this future whenever another of
    /// its branches is ready, and what was read of a frame so far stays in `line` for the next
    /// call.
    async fn next_frame(&mut self) -> Result<PeerMessage, String> {
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
                let frame = PeerMessage::decode(&self.line);
                self.line.clear();
                // A large frame (a snapshot) leaves no large buffer behind.
                if self.line.capacity() > KEPT_LINE_BYTES {
                    self.line = Vec::new();
                }
                return frame;
            }
        }
    }
}

/// The buffer a channel keeps between frames, at most.
const KEPT_LINE_BYTES: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// The channel's loop drops a read whenever a heartbeat is due: a frame that arrives in
    /// parts across such a drop must still be read whole.
    #[tokio::test]
    async fn a_frame_read_in_parts_survives_a_cancelled_read() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut frames = FrameReader {
            inner: BufReader::new(rx),
            limit: MAX_FRAME_BYTES,
            line: Vec::new(),
        };
        let bytes = PeerMessage::Heartbeat { sequence: 42 }.encode();
        let (first, rest) = bytes.split_at(10);
        tx.write_all(first).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(50), frames.next_frame()).await;
        assert!(cut.is_err(), "half a frame is no frame");
        tx.write_all(rest).await.unwrap();
        assert_eq!(
            frames.next_frame().await,
            Ok(PeerMessage::Heartbeat { sequence: 42 })
        );
    }
}

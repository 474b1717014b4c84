//! An in-process [`Transport`] for tests and the simulator: each attached site log has an
//! inbox (a channel) served by a task of its own, and links between hosts can be cut and
//! healed, one pair or one host from all others, to make partitions.
//!
//! A cut link loses the message (the sender sees the host unreachable); a reply on a link cut
//! while the request was being handled is lost too, as it would be on a wire.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::SiteLog;
use super::network::{LinkDown, Message, Reply, Transport};

type Inbox = mpsc::Sender<(Message, oneshot::Sender<Reply>)>;

#[derive(Default)]
struct Links {
    inboxes: HashMap<String, Inbox>,
    /// Cut pairs, each stored in name order.
    cut: BTreeSet<(String, String)>,
}

/// The hosts of one simulated site and the links between them.
#[derive(Clone, Default)]
pub struct LocalNet {
    links: Arc<Mutex<Links>>,
}

impl std::fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNet").finish_non_exhaustive()
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl LocalNet {
    pub fn new() -> LocalNet {
        LocalNet::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport the host `me` sends with.
    pub fn link(&self, me: &str) -> LocalLink {
        LocalLink {
            net: self.clone(),
            me: me.to_owned(),
        }
    }

    /// Delivers the messages sent to `log`'s host to it, until [`LocalNet::detach`] (a task
    /// of the current tokio runtime serves its inbox).
    pub fn attach(&self, log: &SiteLog) {
        let (tx, mut rx) = mpsc::channel::<(Message, oneshot::Sender<Reply>)>(64);
        self.lock().inboxes.insert(log.host().to_owned(), tx);
        let log = log.clone();
        tokio::spawn(async move {
            while let Some((message, reply)) = rx.recv().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = reply.send(log.receive(message).await);
                });
            }
        });
    }

    /// Stops delivering to `host`: it is gone from the network.
    pub fn detach(&self, host: &str) {
        self.lock().inboxes.remove(host);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.lock().cut.insert(pair(a, b));
    }

    /// Cuts `host` from every other host attached now.
    pub fn isolate(&self, host: &str) {
        let mut links = self.lock();
        let others: Vec<String> = links
            .inboxes
            .keys()
            .filter(|h| *h != host)
            .cloned()
            .collect();
        for other in others {
            links.cut.insert(pair(host, &other));
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn route(&self, from: &str, to: &str) -> Result<Inbox, String> {
        let links = self.lock();
        if links.cut.contains(&pair(from, to)) {
            return Err("link cut".to_owned());
        }
        links
            .inboxes
            .get(to)
            .cloned()
            .ok_or_else(|| "no such host on the network".to_owned())
    }
}

/// One host's end of a [`LocalNet`].
#[derive(Debug, Clone)]
pub struct LocalLink {
    net: LocalNet,
    me: String,
}

impl Transport for LocalLink {
    async fn send(&self, to: &str, addr: &str, message: Message) -> Result<Reply, LinkDown> {
        let down = |reason: String| LinkDown {
            to: to.to_owned(),
            addr: addr.to_owned(),
            reason,
        };
        let inbox = self.net.route(&self.me, to).map_err(down)?;
        let (tx, rx) = oneshot::channel();
        inbox
            .send((message, tx))
            .await
            .map_err(|_| down("host stopped".to_owned()))?;
        let reply = rx.await.map_err(|_| down("host stopped".to_owned()))?;
        self.net.route(&self.me, to).map_err(down)?;
        Ok(reply)
    }
}

//! The agent's authenticated link to the control plane: its identity and the HTTPS client
//! that presents it. Renewing the certificate swaps both at once; requests in flight finish on
//! the old ones.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use atoll_api::agent::{Report, ReportAck, ReportRequest, SignedManifest};
use atoll_api::host::{Inventory, InventoryReport};
use reqwest::Method;

use super::AgentError;
use super::client::send;
use super::identity::Identity;

struct Link {
    identity: Arc<Identity>,
    /// One client, so that over HTTP/2 the long-poll and the reports share a connection.
    http: reqwest::Client,
}

/// How long a report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// What a long-poll may take beyond its wait.
const POLL_MARGIN: Duration = Duration::from_secs(30);

pub struct Session {
    link: RwLock<Arc<Link>>,
    /// Why the control plane detached this host, once any answer said so.
    detached: tokio::sync::watch::Sender<Option<String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("identity", &self.identity())
            .finish()
    }
}

impl Session {
    pub fn new(identity: Identity) -> Result<Session, AgentError> {
        Ok(Session {
            link: RwLock::new(Arc::new(Self::link(identity)?)),
            detached: tokio::sync::watch::channel(None).0,
        })
    }

    /// Turns `Some` with the control plane's words when any answer says this host was
    /// detached from its site.
    pub fn detached(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.detached.subscribe()
    }

    /// `result`, noting a detachment it says.
    fn noting<T>(&self, result: Result<T, AgentError>) -> Result<T, AgentError> {
        if let Err(AgentError::Detached(reason)) = &result {
            self.detached.send_replace(Some(reason.clone()));
        }
        result
    }

    fn link(identity: Identity) -> Result<Link, AgentError> {
        Ok(Link {
            http: identity.client()?,
            identity: Arc::new(identity),
        })
    }

    fn current(&self) -> Arc<Link> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.current().identity.clone()
    }

    /// The signed manifest if the site's is newer than `have`, or if the control plane does
    /// not know `have` with content `hash` (it lost commits, and commits its manifest again
    /// above it); None when the control plane had nothing newer within `wait`.
    pub async fn poll_manifest(
        &self,
        have: u64,
        hash: Option<&str>,
        wait: Duration,
    ) -> Result<Option<SignedManifest>, AgentError> {
        let link = self.current();
        let id = &link.identity;
        let mut query = vec![
            ("have", have.to_string()),
            ("wait", wait.as_secs().to_string()),
        ];
        if let Some(hash) = hash {
            query.push(("hash", hash.to_owned()));
        }
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/sites/{}/manifest", id.control_url, id.site),
            &query,
        )
        .map_err(|e| {
            AgentError::Local(format!("the control plane's URL {}: {e}", id.control_url))
        })?;
        self.noting(
            send::<(), SignedManifest>(
                &link.http,
                Method::GET,
                url.as_str(),
                None,
                wait + POLL_MARGIN,
            )
            .await,
        )
    }

    /// Sends batches; returns the highest sequence number the control plane has stored.
    pub async fn report(&self, batches: Vec<Report>) -> Result<u64, AgentError> {
        let link = self.current();
        let id = &link.identity;
        let url = format!("{}/v1/sites/{}/reports", id.control_url, id.site);
        let ack: Option<ReportAck> = self.noting(
            send(
                &link.http,
                Method::POST,
                &url,
                Some(&ReportRequest { batches }),
                REPORT_TIMEOUT,
            )
            .await,
        )?;
        ack.map(|a| a.acked)
            .ok_or_else(|| AgentError::Protocol("a report was answered with no content".into()))
    }

    /// Sends the host's whole inventory; returns the one the control plane stored.
    pub async fn put_inventory(&self, inventory: &Inventory) -> Result<Inventory, AgentError> {
        let link = self.current();
        let id = &link.identity;
        let url = format!(
            "{}/v1/sites/{}/hosts/{}/inventory",
            id.control_url, id.site, id.host
        );
        let stored: Option<InventoryReport> = self.noting(
            send(
                &link.http,
                Method::PUT,
                &url,
                Some(&InventoryReport {
                    inventory: inventory.clone(),
                }),
                REPORT_TIMEOUT,
            )
            .await,
        )?;
        stored
            .map(|s| s.inventory)
            .ok_or_else(|| AgentError::Protocol("an inventory was answered with no content".into()))
    }

    /// Renews the certificate if a third of its life or less is left.
    pub async fn renew_if_due(&self) -> Result<bool, AgentError> {
        let link = self.current();
        if !link.identity.renewal_due(super::clock::now()) {
            return Ok(false);
        }
        let mut identity = (*link.identity).clone();
        self.noting(identity.renew().await)?;
        let fresh = Arc::new(Self::link(identity)?);
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(true)
    }
}

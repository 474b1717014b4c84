//! The PostgreSQL wake-up hint for manifest commits: every commit that writes a manifest
//! NOTIFYs [`CHANNEL`], and a listener here rings a [`Notify`] for each notification, so a
//! replica reads the manifest-change feed at once instead of at its next period.
//!
//! Decision: a hint only, never the truth. A notification may be lost (the listening
//! connection breaks, a replica starts after the commit) or carry nothing new; the feed
//! ([`crate::Store::manifest_changes`]) read every period covers both. So the listener keeps
//! no state: it rings once after every reconnection, for what was committed while it was away,
//! and ends when no one holds the hint any more.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::Result;

/// The channel every manifest commit notifies.
pub(crate) const CHANNEL: &str = "atoll_manifests";
/// How long the listener waits before connecting again after its connection ended.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Listens on [`CHANNEL`] on a connection of its own (a pooled one is shared, and would carry
/// the subscription to whoever borrows it next). Returns once listening, so that a commit
/// made after the call is heard.
pub(crate) async fn listen(config: tokio_postgres::Config, target: String) -> Result<Arc<Notify>> {
    let hint = Arc::new(Notify::new());
    let first = connect(&config, Arc::downgrade(&hint)).await?;
    tokio::spawn(keep_listening(config, target, Arc::downgrade(&hint), first));
    Ok(hint)
}

/// A listening connection: the client (dropping it closes the connection) and the task that
/// drives the connection and rings the hint.
type Listening = (Client, JoinHandle<()>);

async fn connect(config: &tokio_postgres::Config, hint: Weak<Notify>) -> Result<Listening> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => match hint.upgrade() {
                    Some(hint) => hint.notify_one(),
                    None => return,
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL listening connection ended");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, driver))
}

async fn keep_listening(
    config: tokio_postgres::Config,
    target: String,
    hint: Weak<Notify>,
    mut listening: Listening,
) {
    loop {
        let (client, driver) = listening;
        // A panic in the driver is a bug; the listener goes on either way.
        let _ = driver.await;
        drop(client);
        listening = loop {
            if hint.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
            match connect(&config, hint.clone()).await {
                Ok(listening) => break listening,
                Err(e) => tracing::warn!(
                    error = %e,
                    store = %target,
                    "listening for manifest commits failed; trying again"
                ),
            }
        };
        match hint.upgrade() {
            Some(hint) => hint.notify_one(),
            None => return,
        }
    }
}

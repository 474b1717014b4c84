//! The loops that follow the store: a turn every period, and at once when a hint rings, until
//! shutdown.
//!
//! The decision that shaped it: the host book, the manifest feed and presence each follow the
//! store on a period of their own, and a turn that fails is logged and tried again next turn,
//! never ending the loop; one function holds that shape so the three cannot drift apart (a
//! missed tick is delayed, not made up in a burst).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Runs `turn` every `period`, and at once whenever `hint` rings, until `shutdown` turns true.
pub async fn every<F, Fut>(
    period: Duration,
    hint: Option<Arc<Notify>>,
    mut shutdown: watch::Receiver<bool>,
    mut turn: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hinted = async {
            match &hint {
                Some(hint) => hint.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
            () = hinted => {}
        }
        turn().await;
    }
}

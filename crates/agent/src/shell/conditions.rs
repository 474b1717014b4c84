//! The host's conditions: problems of the host itself rather than of one replica (a manifest it
//! cannot keep, a kept manifest found damaged), raised and cleared by whichever task meets them
//! and carried in every status the reconciler reports, typed (`atoll_api::agent::ConditionKind`),
//! so the control plane shows the site unhealthy without reading any message.
//!
//! A change wakes the reconciler, so the status saying it leaves at once, not at the next
//! periodic pass.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use atoll_api::agent::{ConditionKind, HostCondition};
use tokio::sync::Notify;

use super::clock::now_rfc3339;

#[derive(Debug, Clone, Default)]
pub struct Conditions {
    raised: Arc<Mutex<BTreeMap<ConditionKind, HostCondition>>>,
    changed: Arc<Notify>,
}

impl Conditions {
    /// Raises `kind` with `message`; raised again, it keeps the time it was first raised.
    pub fn raise(&self, kind: ConditionKind, message: String) {
        let mut raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match raised.get_mut(&kind) {
            Some(c) if c.message == message => false,
            Some(c) => {
                c.message = message;
                true
            }
            None => {
                raised.insert(
                    kind,
                    HostCondition {
                        kind,
                        message,
                        since: now_rfc3339(),
                    },
                );
                true
            }
        };
        if changed {
            self.changed.notify_one();
        }
    }

    pub fn clear(&self, kind: ConditionKind) {
        let removed = self
            .raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&kind)
            .is_some();
        if removed {
            self.changed.notify_one();
        }
    }

    /// The conditions raised now, by kind.
    pub fn list(&self) -> Vec<HostCondition> {
        self.raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Returns when a condition was raised, changed or cleared since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_raised_again_keeps_its_time_and_clears_once() {
        let c = Conditions::default();
        c.raise(ConditionKind::ManifestNotKept, "full".into());
        let since = c.list()[0].since.clone();
        c.raise(ConditionKind::ManifestNotKept, "still full".into());
        assert_eq!(c.list().len(), 1);
        assert_eq!(c.list()[0].since, since);
        assert_eq!(c.list()[0].message, "still full");
        c.clear(ConditionKind::ManifestNotKept);
        assert!(c.list().is_empty());
    }
}

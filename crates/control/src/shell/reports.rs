//! What hosts reported, read from the store for the views and the rollout controller.

use std::collections::BTreeMap;

use atoll_api::agent::HostStatus;
use atoll_store::{Store, StoreError};

/// Every host's newest reported status, decoded, as (host, site, status). A status this
/// version cannot read is left out rather than failing the view.
pub(super) async fn reported(
    store: &dyn Store,
) -> Result<Vec<(String, String, HostStatus)>, StoreError> {
    Ok(store
        .host_statuses()
        .await?
        .into_iter()
        .filter_map(|row| Some((row.host, row.site, serde_json::from_str(&row.status).ok()?)))
        .collect())
}

/// The newest status of every host that reported, by host; see [`reported`].
pub(super) async fn statuses(
    store: &dyn Store,
) -> Result<BTreeMap<String, HostStatus>, StoreError> {
    Ok(reported(store)
        .await?
        .into_iter()
        .map(|(host, _, status)| (host, status))
        .collect())
}

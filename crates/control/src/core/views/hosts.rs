//! `GET /v1/hosts`: a host's record, inventory and newest status as the API shows them.

use atoll_api::agent::{HostStatus, HostView, Inventory};
use atoll_store::HostRow;

/// The view of host `row`, with its newest `status` and whether it is `connected` now. An
/// inventory this version cannot read (a newer agent's) shows as empty rather than failing
/// the view.
pub fn host(row: HostRow, status: Option<HostStatus>, connected: bool) -> HostView {
    HostView {
        connected,
        inventory: serde_json::from_str::<Inventory>(&row.inventory).unwrap_or_default(),
        status,
        id: row.id,
        site: row.site,
        enrolled_at: row.enrolled_at,
        certificate_expires_at: row.cert_expiry,
        last_seen: row.last_seen,
        detached_at: row.detached_at,
        sealing_key_pending: row.pending_recipient.is_some(),
        labels: row.labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::views::fixtures;

    #[test]
    fn a_host_shows_its_record_and_a_pending_sealing_key() {
        let mut row = fixtures::host("h1", "paris");
        row.inventory = serde_json::to_string(&Inventory {
            hostname: "till-1".into(),
            ..Inventory::default()
        })
        .unwrap();
        row.pending_recipient = Some("key".into());
        let view = host(row, Some(HostStatus::default()), true);
        assert_eq!((view.id.as_str(), view.site.as_str()), ("h1", "paris"));
        assert_eq!(view.inventory.hostname, "till-1");
        assert!(view.connected);
        assert!(view.sealing_key_pending);
        assert_eq!(view.status, Some(HostStatus::default()));
    }

    #[test]
    fn an_inventory_that_cannot_be_read_shows_as_empty() {
        let mut row = fixtures::host("h1", "paris");
        row.inventory = "not json".into();
        let view = host(row, None, false);
        assert_eq!(view.inventory, Inventory::default());
        assert!(!view.sealing_key_pending);
    }
}

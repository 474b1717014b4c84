//! `GET /v1/sites` and a site's events: what is placed there (`State::placements`), and what
//! its hosts say of it.

use atoll_api::agent::{EventView, Health};
use atoll_api::{Placed, SiteCondition, SiteView};
use atoll_store::{EventRow, ResourceRow};

use super::{Observed, resource};
use crate::core::events;
use crate::core::state::{State, Versions};

/// The view of the site stored as `row`: `connected` says whether one of its hosts is in touch
/// now, `events_pruned` how many of its events retention removed.
pub fn site(
    row: &ResourceRow,
    state: &State,
    versions: &Versions,
    observed: &Observed<'_>,
    connected: bool,
    events_pruned: u64,
) -> Result<SiteView, String> {
    let view = resource(row)?;
    let applications = state
        .sites
        .get(&row.name)
        .map(|s| {
            state
                .placements(&s.value, versions)
                .into_iter()
                .map(|p| Placed {
                    deployment: p.deployment.name.clone(),
                    application: p.application.name.clone(),
                    version: p.application.version.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let members = observed.hosts(&row.name);
    let reported = || members.iter().filter_map(|h| observed.status(&h.id));
    Ok(SiteView {
        revision: state.manifests.get(&row.name).map(|m| m.revision),
        applications,
        hosts: u32::try_from(members.len()).unwrap_or(u32::MAX),
        connected,
        // A site runs a revision when all of its hosts do.
        applied_revision: members
            .iter()
            .map(|h| observed.status(&h.id).map(|s| s.applied_revision))
            .min()
            .flatten(),
        health: Health::of_hosts(reported()),
        conditions: members
            .iter()
            .filter_map(|h| Some((h, observed.status(&h.id)?)))
            .flat_map(|(h, s)| {
                s.conditions.iter().map(|c| SiteCondition {
                    host: h.id.clone(),
                    condition: c.clone(),
                })
            })
            .collect(),
        last_seen: members.iter().filter_map(|h| h.last_seen.clone()).max(),
        dropped_reports: reported().map(|s| s.dropped_reports).sum(),
        events_pruned,
        view,
    })
}

/// A stored event as the site's events show it: the time it is shown with, and the time the
/// agent claimed when that is not believed (`events::shown`).
pub fn event(e: EventRow) -> EventView {
    let (at, claimed_at) = events::shown(&e.at, &e.received_at);
    EventView {
        host: e.host,
        seq: e.seq,
        at,
        kind: e.kind,
        message: e.message,
        received_at: e.received_at,
        claimed_at,
    }
}

#[cfg(test)]
mod tests {
    use atoll_api::agent::{ConditionKind, HostCondition};
    use atoll_spec::Kind;
    use atoll_store::ManifestHead;

    use super::*;
    use crate::core::views::fixtures::{host, replica, row, state, statuses};

    const FLEET: &str = "\
kind: Application
name: web
version: '1'
services:
  - name: api
    image: api:1
---
kind: Deployment
name: web-eu
application: web
placement:
  sites: 'region == eu'
---
kind: Site
name: paris
labels: {region: eu}
---
kind: Site
name: boston
labels: {region: us}
";

    #[test]
    fn a_site_shows_what_is_placed_there_and_what_its_hosts_say() {
        let mut state = state(FLEET);
        state.manifests.insert(
            "paris".into(),
            ManifestHead {
                site: "paris".into(),
                revision: 4,
                hash: "h".into(),
            },
        );
        let mut a = host("a", "paris");
        a.last_seen = Some("2026-01-03T00:00:00Z".into());
        let mut b = host("b", "paris");
        b.last_seen = Some("2026-01-04T00:00:00Z".into());
        let hosts = [a, b, host("c", "boston")];
        let mut reports = statuses(&[
            ("a", 4, vec![replica("web-eu", "api", "1")]),
            ("b", 3, vec![replica("web-eu", "api", "1")]),
        ]);
        reports.get_mut("a").unwrap().dropped_reports = 2;
        reports.get_mut("b").unwrap().dropped_reports = 3;
        reports.get_mut("b").unwrap().conditions = vec![HostCondition {
            kind: ConditionKind::ManifestNotKept,
            message: "disk full".into(),
            since: "2026-01-04T00:00:00Z".into(),
        }];
        let observed = Observed::new(&hosts, &reports);
        let view = site(
            &row(&state, Kind::Site, "paris"),
            &state,
            &Versions::new(),
            &observed,
            true,
            7,
        )
        .unwrap();
        assert_eq!(
            view.applications,
            [Placed {
                deployment: "web-eu".into(),
                application: "web".into(),
                version: "1".into(),
            }]
        );
        assert_eq!(view.revision, Some(4));
        assert_eq!(view.hosts, 2);
        assert!(view.connected);
        assert_eq!(view.applied_revision, Some(3), "the lowest its hosts run");
        assert_eq!(view.health, Health::Degraded, "a host has a condition");
        assert_eq!(view.conditions.len(), 1);
        assert_eq!(view.conditions[0].host, "b");
        assert_eq!(view.last_seen.as_deref(), Some("2026-01-04T00:00:00Z"));
        assert_eq!(view.dropped_reports, 5);
        assert_eq!(view.events_pruned, 7);
    }

    #[test]
    fn a_site_one_of_whose_hosts_never_reported_runs_no_revision_yet() {
        let state = state(FLEET);
        let hosts = [host("a", "paris"), host("b", "paris")];
        let reports = statuses(&[("a", 4, vec![])]);
        let view = site(
            &row(&state, Kind::Site, "paris"),
            &state,
            &Versions::new(),
            &Observed::new(&hosts, &reports),
            false,
            0,
        )
        .unwrap();
        assert_eq!(view.applied_revision, None);
    }

    #[test]
    fn a_site_nothing_selects_and_no_host_joined_shows_nothing_placed() {
        let state = state(FLEET);
        let view = site(
            &row(&state, Kind::Site, "boston"),
            &state,
            &Versions::new(),
            &Observed::new(&[], &statuses(&[])),
            false,
            0,
        )
        .unwrap();
        assert!(view.applications.is_empty());
        assert_eq!(view.hosts, 0);
        assert_eq!(view.revision, None);
        assert_eq!(view.health, Health::Unknown);
        assert_eq!(view.last_seen, None);
    }

    #[test]
    fn an_event_the_agent_dated_in_the_future_is_shown_at_its_arrival() {
        let shown = event(EventRow {
            host: "a".into(),
            seq: 1,
            idx: 0,
            site: "paris".into(),
            at: "2099-01-01T00:00:00Z".into(),
            kind: "placement".into(),
            message: "m".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
        });
        assert_eq!(shown.at, "2026-01-01T00:00:00Z");
        assert_eq!(shown.claimed_at.as_deref(), Some("2099-01-01T00:00:00Z"));
    }
}

//! From what a site's hosts reported to what the rollout machine needs to know about one
//! deployment there: which version runs, and whether it is healthy.
//!
//! A site runs a version when every replica of the deployment belongs to it and has its own
//! container (not the old one still serving while the new image is pulled). It is healthy when
//! all of them run and pass their checks (or have none); unhealthy as soon as one has failed (a
//! crash loop, an image that cannot be pulled) or fails its check; otherwise not known yet.

use std::collections::BTreeMap;

use atoll_api::agent::{ReplicaHealth, ReplicaState, ReplicaStatus};

use super::rollout::{Health, SiteReport};

pub fn site_report(site: &str, replicas: &[&ReplicaStatus], connected: bool) -> SiteReport {
    let own_container = |r: &&&ReplicaStatus| {
        matches!(
            r.state,
            ReplicaState::Running | ReplicaState::Starting | ReplicaState::Failed
        )
    };
    let mut versions = replicas.iter().map(|r| r.version.as_deref());
    let first = versions.next().flatten();
    let version = (!replicas.is_empty()
        && versions.all(|v| v == first)
        && replicas.iter().all(|r| own_container(&r)))
    .then(|| first.map(str::to_owned))
    .flatten();
    let failed = replicas.iter().find_map(|r| match (&r.state, &r.health) {
        (ReplicaState::Failed, _) => Some(format!(
            "{} replica {}: {}",
            r.service,
            r.replica,
            r.message.as_deref().unwrap_or("failed")
        )),
        (_, Some(ReplicaHealth::Unhealthy { reason })) => {
            Some(format!("{} replica {}: {reason}", r.service, r.replica))
        }
        _ => None,
    });
    let image_failed = replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Failed)
        .filter_map(|r| r.message.clone())
        .find(|m| m.contains("pull"));
    let all_well = !replicas.is_empty()
        && replicas.iter().all(|r| {
            r.state == ReplicaState::Running
                && matches!(r.health, None | Some(ReplicaHealth::Healthy))
        });
    let health = match failed {
        Some(reason) => Health::Unhealthy { reason },
        None if all_well => Health::Healthy,
        None => Health::Unknown,
    };
    SiteReport {
        site: site.to_owned(),
        version,
        health,
        connected,
        image_failed,
    }
}

/// For each version, how many sites run it: one entry per site, the replicas of one deployment
/// its hosts reported; a site between versions, or with none reported, counts for none.
pub fn running<'a>(
    sites: impl IntoIterator<Item = Vec<&'a ReplicaStatus>>,
) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for replicas in sites {
        if let Some(version) = site_report("", &replicas, true).version {
            *out.entry(version).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(state: ReplicaState, version: &str, health: Option<ReplicaHealth>) -> ReplicaStatus {
        ReplicaStatus {
            deployment: "d".into(),
            service: "web".into(),
            replica: 0,
            state,
            container_id: Some("c".into()),
            image: "img".into(),
            restarts: 0,
            last_exit_code: None,
            since: None,
            message: None,
            version: Some(version.into()),
            health,
        }
    }

    #[test]
    fn healthy_when_all_run_and_pass() {
        let a = replica(ReplicaState::Running, "2", Some(ReplicaHealth::Healthy));
        let b = replica(ReplicaState::Running, "2", None);
        let r = site_report("s", &[&a, &b], true);
        assert_eq!(
            (r.version.as_deref(), r.health),
            (Some("2"), Health::Healthy)
        );
    }

    #[test]
    fn the_old_container_still_serving_is_not_the_new_version() {
        let a = replica(ReplicaState::Replacing, "2", None);
        let r = site_report("s", &[&a], true);
        assert_eq!((r.version, r.health), (None, Health::Unknown));
    }

    #[test]
    fn a_failing_check_or_a_failed_replica_is_unhealthy() {
        let sick = replica(
            ReplicaState::Running,
            "2",
            Some(ReplicaHealth::Unhealthy {
                reason: "503".into(),
            }),
        );
        let r = site_report("s", &[&sick], true);
        assert_eq!(
            r.health,
            Health::Unhealthy {
                reason: "web replica 0: 503".into()
            }
        );
        let mut pull = replica(ReplicaState::Failed, "2", None);
        pull.message = Some("pull of img failed: no such registry".into());
        let r = site_report("s", &[&pull], false);
        assert!(matches!(r.health, Health::Unhealthy { .. }));
        assert_eq!(
            r.image_failed.as_deref(),
            Some("pull of img failed: no such registry")
        );
        assert!(!r.connected);
    }

    #[test]
    fn starting_or_nothing_reported_is_unknown() {
        let s = replica(ReplicaState::Running, "2", Some(ReplicaHealth::Starting));
        assert_eq!(site_report("s", &[&s], true).health, Health::Unknown);
        assert_eq!(
            site_report("s", &[], true),
            SiteReport {
                site: "s".into(),
                version: None,
                health: Health::Unknown,
                connected: true,
                image_failed: None
            }
        );
    }

    #[test]
    fn mixed_versions_are_no_version() {
        let a = replica(ReplicaState::Running, "1", None);
        let b = replica(ReplicaState::Running, "2", None);
        assert_eq!(site_report("s", &[&a, &b], true).version, None);
    }

    #[test]
    fn what_sites_run_is_counted_by_version_and_a_site_between_versions_counts_for_none() {
        let v1 = replica(ReplicaState::Running, "1", None);
        let v2 = replica(ReplicaState::Failed, "2", None);
        let pulling = replica(ReplicaState::Pulling, "2", None);
        let counts = running([
            vec![&v1],
            vec![&v1],
            vec![&v2],
            vec![&v1, &v2],
            vec![&pulling],
            vec![],
        ]);
        assert_eq!(
            counts,
            BTreeMap::from([("1".to_owned(), 2), ("2".to_owned(), 1)])
        );
    }
}

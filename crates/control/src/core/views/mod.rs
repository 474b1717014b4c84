//! The API's read views, as pure functions of what the shell read: the state, the hosts and
//! their newest reports, presence.
//!
//! A view shows the core's decisions and never makes them again: what runs at a site is
//! `State::placed`, the sites a deployment is placed at `State::targeting`, what a site runs
//! `feed::running`. So a view cannot disagree with the manifests and rollouts it describes,
//! and the shell's part is to read the store and call one of these.

use std::collections::BTreeMap;

use atoll_api::ResourceView;
use atoll_api::agent::{HostStatus, ReplicaStatus};
use atoll_store::{HostRow, ResourceRow};

use super::state::decode_row;

pub mod applications;
pub mod deployments;
pub mod hosts;
pub mod rollouts;
pub mod secrets;
pub mod sites;

/// A stored resource as the API shows it.
pub fn resource(row: &ResourceRow) -> Result<ResourceView, String> {
    Ok(ResourceView {
        generation: row.generation,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        resource: decode_row(row)?,
    })
}

/// What the fleet's hosts are and last said: each site's hosts, indexed once, so a view of
/// ten thousand sites does not scan every host for each.
#[derive(Debug)]
pub struct Observed<'a> {
    by_site: BTreeMap<&'a str, Vec<&'a HostRow>>,
    statuses: &'a BTreeMap<String, HostStatus>,
}

impl<'a> Observed<'a> {
    /// `hosts` as the store lists them, and the newest status of each host that reported.
    pub fn new(hosts: &'a [HostRow], statuses: &'a BTreeMap<String, HostStatus>) -> Observed<'a> {
        let mut by_site: BTreeMap<&str, Vec<&HostRow>> = BTreeMap::new();
        for h in hosts {
            by_site.entry(h.site.as_str()).or_default().push(h);
        }
        Observed { by_site, statuses }
    }

    /// The hosts of `site`, in the store's order.
    pub fn hosts(&self, site: &str) -> &[&'a HostRow] {
        self.by_site.get(site).map_or(&[][..], Vec::as_slice)
    }

    /// The newest status `host` reported.
    pub fn status(&self, host: &str) -> Option<&'a HostStatus> {
        self.statuses.get(host)
    }

    /// The newest replica statuses the hosts of `site` reported for `deployment`.
    pub fn replicas(&self, site: &str, deployment: &str) -> Vec<&'a ReplicaStatus> {
        self.hosted(site, deployment)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// [`Observed::replicas`], each with the host that reported it.
    pub fn hosted(&self, site: &str, deployment: &str) -> Vec<(&'a str, &'a ReplicaStatus)> {
        self.hosts(site)
            .iter()
            .filter_map(|h| Some((h.id.as_str(), self.status(&h.id)?)))
            .flat_map(|(host, s)| s.replicas.iter().map(move |r| (host, r)))
            .filter(|(_, r)| r.deployment == deployment)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! What the views' tests share: a state from YAML, hosts, statuses.

    use std::collections::BTreeMap;

    use atoll_api::agent::{HostStatus, ReplicaState, ReplicaStatus};
    use atoll_spec::{Resource, Source, parse_sources};
    use atoll_store::{HostRow, ResourceRow};

    use crate::core::state::{Entry, State};

    /// A state holding the resources of `yaml`.
    pub fn state(yaml: &str) -> State {
        let parsed = parse_sources(&[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }]);
        assert!(parsed.is_ok(), "{:?}", parsed.diagnostics);
        let mut state = State::default();
        for d in parsed.documents {
            match d.resource {
                Resource::Application(value) => {
                    state.applications.insert(value.name.clone(), entry(value));
                }
                Resource::Deployment(value) => {
                    state.deployments.insert(value.name.clone(), entry(value));
                }
                Resource::Site(value) => {
                    state.sites.insert(value.name.clone(), entry(value));
                }
                Resource::DeviceClass(value) => {
                    state
                        .device_classes
                        .insert(value.name.clone(), entry(value));
                }
            }
        }
        state
    }

    fn entry<T>(value: T) -> Entry<T> {
        Entry {
            value,
            generation: 1,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// The stored row of `state`'s resource `name` of `kind`.
    pub fn row(state: &State, kind: atoll_spec::Kind, name: &str) -> ResourceRow {
        let resource = match kind {
            atoll_spec::Kind::Application => {
                Resource::Application(state.applications[name].value.clone())
            }
            atoll_spec::Kind::Deployment => {
                Resource::Deployment(state.deployments[name].value.clone())
            }
            atoll_spec::Kind::Site => Resource::Site(state.sites[name].value.clone()),
            atoll_spec::Kind::DeviceClass => {
                Resource::DeviceClass(state.device_classes[name].value.clone())
            }
        };
        ResourceRow {
            kind: kind.as_str().into(),
            name: name.into(),
            spec: serde_json::to_string(&resource).unwrap(),
            generation: 1,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-02T00:00:00Z".into(),
        }
    }

    pub fn host(id: &str, site: &str) -> HostRow {
        HostRow {
            id: id.into(),
            site: site.into(),
            hostname: id.into(),
            inventory: "{}".into(),
            ..HostRow::default()
        }
    }

    /// A running, healthy replica of `deployment`'s `service` at `version`.
    pub fn replica(deployment: &str, service: &str, version: &str) -> ReplicaStatus {
        ReplicaStatus {
            deployment: deployment.into(),
            service: service.into(),
            replica: 0,
            state: ReplicaState::Running,
            container_id: None,
            image: format!("{service}:{version}"),
            restarts: 0,
            last_exit_code: None,
            since: None,
            message: None,
            version: Some(version.into()),
            health: None,
        }
    }

    /// Statuses by host, each with `replicas` and applied `revision`.
    pub fn statuses(hosts: &[(&str, u64, Vec<ReplicaStatus>)]) -> BTreeMap<String, HostStatus> {
        hosts
            .iter()
            .map(|(h, revision, replicas)| {
                (
                    (*h).to_owned(),
                    HostStatus {
                        applied_revision: *revision,
                        replicas: replicas.clone(),
                        ..HostStatus::default()
                    },
                )
            })
            .collect()
    }
}

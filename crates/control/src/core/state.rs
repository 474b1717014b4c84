//! The control plane's state as typed values, read from a store snapshot.

use std::collections::{BTreeMap, BTreeSet};

use atoll_api::host::Host;
use atoll_api::placement::{Previous, ServiceWant, Want};
use atoll_spec::{Application, Deployment, DeviceClass, Kind, Resource, Site};
use atoll_store::{ManifestHead, ResourceRow, RolloutRow, Snapshot};

use super::compile::Placement;
use super::rollout::{Rollout, SiteInfo, settled_version};
use super::secrets::SecretMeta;

/// A stored resource with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub value: T,
    pub generation: u64,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The store version this state was read at.
    pub version: u64,
    /// Each application's current version: the one applied last.
    pub applications: BTreeMap<String, Entry<Application>>,
    pub deployments: BTreeMap<String, Entry<Deployment>>,
    pub sites: BTreeMap<String, Entry<Site>>,
    /// The device classes that services' `requires.devices` and host selectors name.
    pub device_classes: BTreeMap<String, Entry<DeviceClass>>,
    pub manifests: BTreeMap<String, ManifestHead>,
    /// Each deployment's current rollout: which version each of its sites gets.
    pub rollouts: BTreeMap<String, Rollout>,
    /// Every secret's bookkeeping (never a value).
    pub secrets: BTreeMap<String, SecretMeta>,
    /// Each site's attached hosts, by site, sorted by host name: what placement decides on
    /// and templates read as `site.hosts`.
    pub hosts: BTreeMap<String, Vec<Host>>,
}

/// Application versions by (name, version), for versions that are not the current one.
pub type Versions = BTreeMap<(String, String), Application>;

impl State {
    pub fn from_snapshot(snapshot: Snapshot) -> Result<State, String> {
        let mut state = State {
            version: snapshot.version,
            ..State::default()
        };
        for row in snapshot.resources {
            state.insert_row(row)?;
        }
        state.manifests = snapshot
            .manifests
            .into_iter()
            .map(|m| (m.site.clone(), m))
            .collect();
        for row in snapshot.rollouts {
            let rollout = decode_rollout(&row)?;
            state.rollouts.insert(row.deployment, rollout);
        }
        for head in snapshot.secrets {
            let meta = serde_json::from_str(&head.meta)
                .map_err(|e| format!("stored secret {} cannot be read: {e}", head.name))?;
            state.secrets.insert(head.name, meta);
        }
        Ok(state)
    }

    fn insert_row(&mut self, row: ResourceRow) -> Result<(), String> {
        let resource = decode_row(&row)?;
        let (generation, created_at) = (row.generation, row.created_at);
        match resource {
            Resource::Application(value) => self
                .applications
                .insert(
                    row.name,
                    Entry {
                        value,
                        generation,
                        created_at,
                    },
                )
                .map(drop),
            Resource::Deployment(value) => self
                .deployments
                .insert(
                    row.name,
                    Entry {
                        value,
                        generation,
                        created_at,
                    },
                )
                .map(drop),
            Resource::Site(value) => self
                .sites
                .insert(
                    row.name,
                    Entry {
                        value,
                        generation,
                        created_at,
                    },
                )
                .map(drop),
            Resource::DeviceClass(value) => self
                .device_classes
                .insert(
                    row.name,
                    Entry {
                        value,
                        generation,
                        created_at,
                    },
                )
                .map(drop),
        };
        Ok(())
    }

    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Application => self.applications.contains_key(name),
            Kind::Deployment => self.deployments.contains_key(name),
            Kind::Site => self.sites.contains_key(name),
            Kind::DeviceClass => self.device_classes.contains_key(name),
        }
    }

    /// The application version a deployment targets (its pin, or the newest applied), if it
    /// exists.
    pub fn resolve<'a>(
        &'a self,
        deployment: &Deployment,
        versions: &'a Versions,
    ) -> Option<&'a Application> {
        match &deployment.version {
            None => self
                .applications
                .get(&deployment.application)
                .map(|e| &e.value),
            Some(pin) => self.version(&deployment.application, pin, versions),
        }
    }

    /// The application version `site` gets from `deployment`: the one its rollout assigns it,
    /// or the version the rollout settled on for a site it does not know yet, or (with no
    /// rollout) the deployment's target.
    pub fn resolve_at<'a>(
        &'a self,
        deployment: &Deployment,
        site: &str,
        versions: &'a Versions,
    ) -> Option<&'a Application> {
        let Some(rollout) = self.rollouts.get(&deployment.name) else {
            return self.resolve(deployment, versions);
        };
        let version = rollout
            .assigned(site)
            .or_else(|| settled_version(rollout))?;
        self.version(&deployment.application, version, versions)
    }

    /// One version of an application: the current one, or a kept one from `versions`.
    pub fn version<'a>(
        &'a self,
        app: &str,
        version: &str,
        versions: &'a Versions,
    ) -> Option<&'a Application> {
        let current = &self.applications.get(app)?.value;
        if current.version == version {
            Some(current)
        } else {
            versions.get(&(app.to_owned(), version.to_owned()))
        }
    }

    /// Whether what a site's hosts are can change what its manifest holds: a template of an
    /// application in use reads `site.hosts`, a service asks something of its host, or a
    /// deployment selects hosts. Only then does a host joining, leaving or changing recompile
    /// its site.
    pub fn hosts_matter(&self, versions: &Versions) -> bool {
        self.applications
            .values()
            .map(|e| &e.value)
            .chain(versions.values())
            .any(reads_hosts)
            || self
                .deployments
                .values()
                .any(|d| d.value.placement.hosts.is_some())
    }

    /// The sites a deployment is placed at: those its site selector picks where its host
    /// requirements can be met (see [`State::placed`]).
    pub fn targets(&self, deployment: &Deployment, versions: &Versions) -> Vec<SiteInfo> {
        self.targeting(deployment, versions).sites
    }

    /// The sites a deployment's site selector picks, decided on their hosts
    /// ([`State::placed`]): those it is placed at, in name order, and each other one with why
    /// it is not.
    pub fn targeting(&self, deployment: &Deployment, versions: &Versions) -> Targeting {
        let mut targeting = Targeting::default();
        for s in self
            .sites
            .values()
            .filter(|s| deployment.placement.sites.matches(&s.value.labels))
        {
            match self
                .placed(&s.value, versions)
                .unplaced
                .remove(&deployment.name)
            {
                Some(reason) => targeting.unplaced.push((s.value.name.clone(), reason)),
                None => targeting.sites.push(SiteInfo {
                    name: s.value.name.clone(),
                    labels: s.value.labels.clone(),
                }),
            }
        }
        targeting
    }

    /// Every (deployment, application) placed on `site`, in deployment-name order: the
    /// deployments its labels select whose application resolves and whose host requirements
    /// the site's hosts meet.
    pub fn placements<'a>(&'a self, site: &Site, versions: &'a Versions) -> Vec<Placement<'a>> {
        self.placed(site, versions).placements
    }

    /// The deployments `site`'s labels select, decided on its hosts (`atoll_api::placement`):
    /// those placed, and why each of the others is not. A site none of whose deployments asks
    /// anything of hosts (no host selector, requirement or resources) has everything placed
    /// without a look at its hosts.
    pub fn placed<'a>(&'a self, site: &Site, versions: &'a Versions) -> SitePlacement<'a> {
        let selected: Vec<Placement<'a>> = self
            .deployments
            .values()
            .filter(|d| d.value.placement.sites.matches(&site.labels))
            .filter_map(|d| {
                Some(Placement {
                    deployment: &d.value,
                    application: self.resolve_at(&d.value, &site.name, versions)?,
                })
            })
            .collect();
        if !selected.iter().any(asks_of_hosts) {
            return SitePlacement {
                placements: selected,
                unplaced: BTreeMap::new(),
                classes: Vec::new(),
            };
        }
        let wants: Vec<Want<'_>> = selected.iter().map(want).collect();
        let hosts = self.hosts.get(&site.name).map_or(&[][..], Vec::as_slice);
        // Every class, so that a reason can say which classes a host has; the decision reads
        // only those the placements name, which the manifest carries.
        let every_class: Vec<atoll_api::DeviceClass> = self
            .device_classes
            .values()
            .map(|e| (&e.value).into())
            .collect();
        // The control plane decides from nothing: which host runs what is the site's to decide.
        let decision =
            atoll_api::placement::place(hosts, &every_class, &wants, &Previous::default());
        let placements: Vec<Placement<'a>> = selected
            .into_iter()
            .filter(|p| decision.placed.contains_key(&p.deployment.name))
            .collect();
        let classes = self.classes_of(&placements);
        SitePlacement {
            placements,
            unplaced: decision.unplaced,
            classes,
        }
    }

    /// The device classes the placements name, as the manifest carries them, sorted by name.
    fn classes_of(&self, placements: &[Placement<'_>]) -> Vec<atoll_api::DeviceClass> {
        let mut names = BTreeSet::new();
        for p in placements {
            names.extend(p.deployment.placement.device_classes());
            for s in &p.application.services {
                names.extend(s.requires.devices.iter().map(String::as_str));
            }
        }
        names
            .into_iter()
            .filter_map(|n| self.device_classes.get(n))
            .map(|e| (&e.value).into())
            .collect()
    }
}

/// Where a deployment goes ([`State::targeting`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targeting {
    /// The sites it is placed at.
    pub sites: Vec<SiteInfo>,
    /// (site, why the deployment is not placed there) for each other site its selector picks.
    pub unplaced: Vec<(String, String)>,
}

/// A site's placement: what runs there, why the rest does not, and the device classes the
/// decision read.
#[derive(Debug, Clone, Default)]
pub struct SitePlacement<'a> {
    pub placements: Vec<Placement<'a>>,
    /// Deployment name → why it is not placed at the site.
    pub unplaced: BTreeMap<String, String>,
    pub classes: Vec<atoll_api::DeviceClass>,
}

/// Whether a placement asks anything of the hosts it runs on.
fn asks_of_hosts(p: &Placement<'_>) -> bool {
    p.deployment.placement.hosts.is_some() || p.application.services.iter().any(asks_of_host)
}

/// Whether a service has requirements or resources that placement checks against its host.
fn asks_of_host(s: &atoll_spec::application::Service) -> bool {
    s.requires != Default::default() || s.resources.cpu.is_some() || s.resources.memory.is_some()
}

/// What a placement asks of hosts, for `atoll_api::placement`.
fn want<'a>(p: &Placement<'a>) -> Want<'a> {
    Want {
        deployment: &p.deployment.name,
        hosts: p.deployment.placement.hosts.as_ref(),
        services: p
            .application
            .services
            .iter()
            .map(|s| ServiceWant {
                name: &s.name,
                replicas: s.replicas,
                every_host: s.mode == atoll_spec::application::Mode::EveryHost,
                requires: (&s.requires).into(),
                cpu_millis: s.resources.cpu.map_or(0, |c| u64::from(c.0)),
                memory: s.resources.memory.map_or(0, |m| m.0),
            })
            .collect(),
    }
}

/// Whether the application's manifest depends on the hosts it runs on: one of its templates
/// reads `site.hosts` (judged by its text, so that the answer never depends on the data), or a
/// service has requirements or resources that placement checks against hosts.
pub fn reads_hosts(app: &Application) -> bool {
    app.services.iter().any(asks_of_host)
        || app
            .services
            .iter()
            .flat_map(|s| s.env.values().chain(s.files.iter().map(|f| &f.template)))
            .any(|t| t.source.contains("hosts"))
}

/// Reads a stored rollout back into its typed form.
pub fn decode_rollout(row: &RolloutRow) -> Result<Rollout, String> {
    serde_json::from_str(&row.state)
        .map_err(|e| format!("stored rollout of {} cannot be read: {e}", row.deployment))
}

/// Reads a stored resource row back into its typed form.
pub fn decode_row(row: &ResourceRow) -> Result<Resource, String> {
    serde_json::from_str(&row.spec)
        .map_err(|e| format!("stored {} {} cannot be read: {e}", row.kind, row.name))
}

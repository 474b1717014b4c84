//! The control plane's state as typed values, read from a store snapshot.

use std::collections::BTreeMap;

use atoll_api::host::Host;
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

    /// Whether any template of an application in use reads `site.hosts`: only then does a
    /// host joining or leaving a site change what its manifest holds.
    pub fn templates_read_hosts(&self, versions: &Versions) -> bool {
        self.applications
            .values()
            .map(|e| &e.value)
            .chain(versions.values())
            .any(reads_hosts)
    }

    /// The sites a deployment's placement selects.
    pub fn targets(&self, deployment: &Deployment) -> Vec<SiteInfo> {
        self.sites
            .values()
            .filter(|s| deployment.placement.sites.matches(&s.value.labels))
            .map(|s| SiteInfo {
                name: s.value.name.clone(),
                labels: s.value.labels.clone(),
            })
            .collect()
    }

    /// Every (deployment, application) placed on `site`, in deployment-name order. Deployments
    /// whose application cannot be resolved are left out (applying them is refused earlier).
    pub fn placements<'a>(&'a self, site: &Site, versions: &'a Versions) -> Vec<Placement<'a>> {
        self.deployments
            .values()
            .filter(|d| d.value.placement.sites.matches(&site.labels))
            .filter_map(|d| {
                Some(Placement {
                    deployment: &d.value,
                    application: self.resolve_at(&d.value, &site.name, versions)?,
                })
            })
            .collect()
    }
}

/// Whether one of the application's templates reads `site.hosts` (judged by its text, so that
/// the answer never depends on the data).
pub fn reads_hosts(app: &Application) -> bool {
    app.services
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

//! Builders shared by the core's tests.

use std::collections::BTreeMap;

use atoll_api::manifest::{Manifest, ManifestApplication, ManifestContent, ManifestService};
use atoll_api::manifest::{Requires, Resources};
use atoll_runtime::{Container, State};
use atoll_spec::application::Mode;

use super::desired::{LABEL_MANAGED, Replica};

pub const STARTED_AT: &str = "2026-01-01T00:00:00Z";
pub const FINISHED_AT: &str = "2026-01-01T00:05:00Z";

/// A service with one replica and nothing else set.
pub fn service(name: &str, image: &str) -> ManifestService {
    ManifestService {
        name: name.into(),
        image: image.into(),
        command: Vec::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        replicas: 1,
        mode: Mode::Replicated,
        ports: Vec::new(),
        resources: Resources::default(),
        requires: Requires::default(),
        health: None,
        files: Vec::new(),
        secrets: Vec::new(),
        on_secret_change: Default::default(),
        volumes: Vec::new(),
    }
}

/// A manifest for site `s1` with one application per deployment named, holding the services
/// listed for it (in order).
pub fn manifest(services: Vec<(&str, ManifestService)>) -> Manifest {
    let mut applications: Vec<ManifestApplication> = Vec::new();
    for (deployment, svc) in services {
        match applications.iter_mut().find(|a| a.deployment == deployment) {
            Some(app) => app.services.push(svc),
            None => applications.push(ManifestApplication {
                deployment: deployment.into(),
                application: format!("app-{deployment}"),
                version: "1.0.0".into(),
                services: vec![svc],
                hosts: None,
            }),
        }
    }
    applications.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    Manifest {
        site: "s1".into(),
        revision: 1,
        hash: "sha256:test".into(),
        content: ManifestContent {
            applications,
            ..ManifestContent::default()
        },
        sealed: Vec::new(),
    }
}

/// The container the runtime would report for `replica`'s spec, in `state`.
pub fn container_of(replica: &Replica, id: &str, state: State) -> Container {
    let (started_at, finished_at) = match state {
        State::Created => (None, None),
        State::Running | State::Other => (Some(STARTED_AT.into()), None),
        State::Exited { .. } => (Some(STARTED_AT.into()), Some(FINISHED_AT.into())),
    };
    let mut bind_sources: Vec<_> = replica
        .spec
        .binds
        .iter()
        .map(|b| b.source.clone())
        .collect();
    bind_sources.sort();
    Container {
        id: id.into(),
        name: replica.spec.name.clone(),
        image: replica.spec.image.clone(),
        labels: replica.spec.labels.clone(),
        state,
        started_at,
        finished_at,
        bind_sources,
    }
}

/// Like [`container_of`], but created from another spec (another hash and image).
pub fn outdated(replica: &Replica, id: &str, state: State) -> Container {
    let mut c = container_of(replica, id, state);
    c.image = "old-image:0".into();
    c.labels.insert(
        super::desired::LABEL_SPEC_HASH.into(),
        "0000000000000000".into(),
    );
    c
}

/// Like [`container_of`], but its files mounted from where another agent kept them (a data
/// folder since replaced).
pub fn mounted_elsewhere(replica: &Replica, id: &str, state: State) -> Container {
    let mut c = container_of(replica, id, state);
    c.bind_sources = vec!["/old/agent/files/web/0".into()];
    c
}

/// A container someone else runs on the host: no managed label.
pub fn foreign(id: &str, name: &str) -> Container {
    Container {
        id: id.into(),
        name: name.into(),
        image: "postgres:16".into(),
        labels: BTreeMap::from([("com.example.owner".into(), "someone".into())]),
        state: State::Running,
        started_at: Some(STARTED_AT.into()),
        finished_at: None,
        bind_sources: Vec::new(),
    }
}

/// A managed container that no desired replica names.
pub fn stray(id: &str, name: &str, state: State) -> Container {
    let mut c = foreign(id, name);
    c.labels = BTreeMap::from([
        (LABEL_MANAGED.into(), "true".into()),
        (
            super::desired::LABEL_SPEC_HASH.into(),
            "1111111111111111".into(),
        ),
    ]);
    c.state = state;
    c
}

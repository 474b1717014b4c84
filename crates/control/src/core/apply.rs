//! Planning an apply or a delete: from the current state and the request, the results to
//! report and the writes to commit, or the reasons to refuse. Nothing is written unless the
//! whole request is valid for every site it touches.

use std::collections::BTreeMap;

use atoll_api::{ApplyResult, Manifest, ManifestChange, Outcome};
use atoll_spec::render::Limits;
use atoll_spec::{Diagnostic, Document, Kind, Origin, Resource, Site};
use atoll_store::{AppVersionRow, ManifestRow, ResourceRow, RolloutRow, SecretRow, Write};
use serde_json::Value;

use super::compile::{
    Placement, RenderError, Templates, compile_site_with, content_hash, diagnostics,
};
use super::revision;
use super::rollout::{self, Command, Event, Phase, Rollout, settled_version};
use super::secrets::SecretMeta;
use super::state::{Entry, SitePlacement, State, Versions};

/// Who asked and when: the shell reads the clock and the caller's identity.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub now: &'a str,
    /// The same moment, in milliseconds since the epoch, for the rollout machine.
    pub now_ms: u64,
    pub actor: &'a str,
    /// How large rendered templates may be.
    pub limits: Limits,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub results: Vec<ApplyResult>,
    pub manifests: Vec<ManifestChange>,
    pub writes: Vec<Write>,
    /// What the apply was accepted despite: a deployment whose host requirements no site it
    /// selects can meet.
    pub warnings: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The input is wrong (including for a particular site): fix it and apply again.
    Invalid(Vec<Diagnostic>),
    /// The input contradicts what is stored (an application version applied before with other
    /// content; a resource still in use).
    Conflict(Vec<Diagnostic>),
    NotFound(String),
}

/// Plans applying `docs` on top of `state`. `versions` holds the stored application versions
/// that `docs` name and that deployments pin.
pub fn plan_apply(
    state: &State,
    versions: &Versions,
    docs: &[Document],
    req: &Request<'_>,
) -> Result<Plan, Refusal> {
    let mut next = state.clone();
    let mut plan = Plan::default();
    let mut invalid = Vec::new();
    let mut conflicts = Vec::new();
    let mut changed = Vec::new();

    for doc in docs {
        let name = doc.resource.name().to_owned();
        let kind = doc.resource.kind();
        let (outcome, generation, version) = match &doc.resource {
            Resource::Application(app) => {
                let key = (app.name.clone(), app.version.clone());
                let stored_version = versions.get(&key).or_else(|| {
                    state
                        .applications
                        .get(&app.name)
                        .map(|e| &e.value)
                        .filter(|a| a.version == app.version)
                });
                if let Some(stored) = stored_version.filter(|s| *s != app) {
                    conflicts.push(immutable_version(doc, stored));
                    continue;
                }
                if stored_version.is_none() {
                    plan.writes.push(Write::PutAppVersion(AppVersionRow {
                        name: app.name.clone(),
                        version: app.version.clone(),
                        spec: to_json(&doc.resource),
                        applied_at: req.now.to_owned(),
                    }));
                }
                let (outcome, generation) = upsert(
                    &mut next.applications,
                    &name,
                    app.clone(),
                    |cur| cur.version == app.version && cur == app,
                    req,
                );
                (outcome, generation, Some(app.version.clone()))
            }
            Resource::Deployment(d) => {
                let (o, g) = upsert(&mut next.deployments, &name, d.clone(), |cur| cur == d, req);
                (o, g, None)
            }
            Resource::Site(s) => {
                let (o, g) = upsert(&mut next.sites, &name, s.clone(), |cur| cur == s, req);
                (o, g, None)
            }
            Resource::DeviceClass(c) => {
                let (o, g) = upsert(
                    &mut next.device_classes,
                    &name,
                    c.clone(),
                    |cur| cur == c,
                    req,
                );
                (o, g, None)
            }
        };
        if outcome != Outcome::Unchanged {
            changed.push((doc.resource.clone(), generation));
        }
        plan.results.push(ApplyResult {
            kind,
            name,
            outcome,
            generation,
            version,
        });
    }

    for doc in docs {
        if let Resource::Deployment(d) = &doc.resource {
            check_references(&next, versions, d, &doc.origin, &mut invalid);
        }
    }
    check_device_classes(&next, versions, docs, &mut invalid);
    let rollout_writes = if invalid.is_empty() && conflicts.is_empty() {
        update_rollouts(state, &mut next, versions, req)
    } else {
        Vec::new()
    };
    let manifests = compile_all(&next, versions, req, &mut invalid);

    if !conflicts.is_empty() {
        conflicts.extend(invalid);
        return Err(Refusal::Conflict(conflicts));
    }
    if !invalid.is_empty() {
        return Err(Refusal::Invalid(invalid));
    }
    plan.warnings = unmet(&next, versions, docs);

    let mut summary = Vec::new();
    for (resource, generation) in changed {
        let entry = existing_created_at(state, &resource)
            .unwrap_or(req.now)
            .to_owned();
        summary.push(format!(
            "{} {} generation {generation}",
            resource.kind(),
            resource.name()
        ));
        plan.writes.push(Write::PutResource(ResourceRow {
            kind: resource.kind().as_str().to_owned(),
            name: resource.name().to_owned(),
            generation,
            spec: to_json(&resource),
            created_at: entry,
            updated_at: req.now.to_owned(),
        }));
    }
    plan.writes.extend(rollout_writes);
    finish(&mut plan, manifests, req, Some("apply"), summary);
    Ok(plan)
}

/// Starts a rollout for every deployment whose target version changed (superseding the one
/// under way), and tells running rollouts about sites that joined or left their placement.
/// A deployment's first version needs no rollout: there is nothing to protect.
fn update_rollouts(
    state: &State,
    next: &mut State,
    versions: &Versions,
    req: &Request<'_>,
) -> Vec<Write> {
    let mut writes = Vec::new();
    let deployments: Vec<_> = next.deployments.values().map(|e| e.value.clone()).collect();
    for d in deployments {
        let Some(target) = next.resolve(&d, versions).map(|a| a.version.clone()) else {
            continue;
        };
        let Some(before) = state.deployments.get(&d.name) else {
            continue;
        };
        let old_target = state
            .resolve(&before.value, versions)
            .map(|a| a.version.clone());
        let current = next.rollouts.get(&d.name).cloned();
        if old_target.as_deref() != Some(target.as_str()) {
            let from = match &current {
                Some(r) => {
                    let (superseded, _) = rollout::step(
                        r,
                        &Event::Supersede {
                            by_version: target.clone(),
                        },
                        req.now_ms,
                    );
                    writes.push(put_rollout(&superseded, req));
                    writes.push(Write::ArchiveRollout {
                        deployment: d.name.clone(),
                        at: req.now.to_owned(),
                    });
                    next.rollouts.remove(&d.name);
                    settled_version(&superseded).map(str::to_owned)
                }
                None => old_target,
            };
            // Back to the version everything settled on: no rollout, every site gets it.
            if from.as_deref() == Some(target.as_str()) {
                continue;
            }
            let sites = next.targets(&d, versions);
            let (started, _) = rollout::start(
                &d.name,
                d.rollout.as_ref(),
                from.as_deref(),
                &target,
                &sites,
                req.now_ms,
            );
            writes.push(put_rollout(&started, req));
            next.rollouts.insert(d.name.clone(), started);
        } else if let Some(r) = current.filter(|r| !matches!(r.phase, Phase::Superseded { .. })) {
            let sites = next.targets(&d, versions);
            let known: Vec<&String> = r.sites.keys().collect();
            let now: Vec<&String> = sites.iter().map(|s| &s.name).collect();
            if known != now {
                let (moved, _) = rollout::step(&r, &Event::SitesChanged { sites }, req.now_ms);
                writes.push(put_rollout(&moved, req));
                next.rollouts.insert(d.name.clone(), moved);
            }
        }
    }
    writes
}

fn put_rollout(r: &Rollout, req: &Request<'_>) -> Write {
    Write::PutRollout(RolloutRow {
        deployment: r.deployment.clone(),
        // A rollout is plain data: serializing it cannot fail.
        state: serde_json::to_string(r).unwrap_or_default(),
        at: req.now.to_owned(),
    })
}

/// Feeds events to a deployment's rollout and plans what follows: the new rollout state and
/// the manifests of the sites whose version it changed. `actor` is set for an operator's
/// control, which is audited; the controller's own steps are recorded in the rollout's
/// history instead.
pub fn plan_rollout(
    state: &State,
    versions: &Versions,
    deployment: &str,
    events: &[Event],
    req: &Request<'_>,
    audited: bool,
) -> Result<(Plan, Rollout, Vec<Command>), Refusal> {
    let Some(current) = state.rollouts.get(deployment) else {
        return Err(Refusal::NotFound(format!(
            "deployment {deployment} has no rollout (its first version went to every site at once)"
        )));
    };
    let mut rollout = current.clone();
    let mut commands = Vec::new();
    for event in events {
        let (after, said) = rollout::step(&rollout, event, req.now_ms);
        rollout = after;
        commands.extend(said);
    }
    let mut plan = Plan::default();
    if rollout == *current {
        return Ok((plan, rollout, commands));
    }
    let mut next = state.clone();
    next.rollouts.insert(deployment.to_owned(), rollout.clone());
    let mut invalid = Vec::new();
    let manifests = compile_all(&next, versions, req, &mut invalid);
    if !invalid.is_empty() {
        return Err(Refusal::Invalid(invalid));
    }
    plan.writes.push(put_rollout(&rollout, req));
    let notes: Vec<String> = commands
        .iter()
        .filter_map(|c| {
            if let Command::Note(n) = c {
                Some(n.clone())
            } else {
                None
            }
        })
        .collect();
    finish(
        &mut plan,
        manifests,
        req,
        audited.then_some("rollout"),
        notes,
    );
    Ok((plan, rollout, commands))
}

/// Plans deleting one resource. An application that a deployment still runs is not deleted.
pub fn plan_delete(
    state: &State,
    versions: &Versions,
    kind: Kind,
    name: &str,
    req: &Request<'_>,
) -> Result<Plan, Refusal> {
    if !state.contains(kind, name) {
        return Err(Refusal::NotFound(format!("{kind} {name} does not exist")));
    }
    let mut next = state.clone();
    match kind {
        Kind::Application => {
            let users: Vec<&str> = state
                .deployments
                .values()
                .filter(|d| d.value.application == name)
                .map(|d| d.value.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(Refusal::Conflict(vec![Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("Application {name}"),
                    message: format!("deployment {} runs this application", users.join(", ")),
                    hint: Some(
                        "delete those deployments first, or point them at another application"
                            .into(),
                    ),
                }]));
            }
            next.applications.remove(name);
        }
        Kind::Deployment => {
            next.deployments.remove(name);
            next.rollouts.remove(name);
        }
        Kind::Site => {
            next.sites.remove(name);
        }
        Kind::DeviceClass => {
            let users = device_class_users(state, versions, name);
            if !users.is_empty() {
                return Err(Refusal::Conflict(vec![Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("DeviceClass {name}"),
                    message: format!("in use: {}", users.join("; ")),
                    hint: Some(
                        "remove it from those services' requires.devices and those deployments' \
                         placement.hosts first"
                            .into(),
                    ),
                }]));
            }
            next.device_classes.remove(name);
        }
    }
    let mut invalid = Vec::new();
    let manifests = compile_all(&next, versions, req, &mut invalid);
    if !invalid.is_empty() {
        return Err(Refusal::Invalid(invalid));
    }
    let mut plan = Plan::default();
    plan.writes.push(Write::DeleteResource {
        kind: kind.as_str().to_owned(),
        name: name.to_owned(),
    });
    if kind == Kind::Site {
        // Its hosts go with it, in the same commit: none is let in again, whatever site is
        // made under this name later.
        plan.writes.push(Write::RetireSite {
            site: name.to_owned(),
            at: req.now.to_owned(),
        });
    }
    if kind == Kind::Application {
        plan.writes.push(Write::DeleteAppVersions {
            name: name.to_owned(),
        });
    }
    if kind == Kind::Deployment && state.rollouts.contains_key(name) {
        plan.writes.push(Write::ArchiveRollout {
            deployment: name.to_owned(),
            at: req.now.to_owned(),
        });
    }
    finish(
        &mut plan,
        manifests,
        req,
        Some("delete"),
        vec![format!("{kind} {name}")],
    );
    Ok(plan)
}

/// Plans storing a secret's next version (`Some`, with its encrypted row) or deleting it: the
/// manifests of the sites that use it change with it. A change that leaves a site using the
/// secret without a value it needs is refused, naming the site; a secret still in use is not
/// deleted.
pub fn plan_secret(
    state: &State,
    versions: &Versions,
    name: &str,
    next_version: Option<(SecretMeta, SecretRow)>,
    req: &Request<'_>,
) -> Result<Plan, Refusal> {
    let mut next = state.clone();
    let (write, summary) = match next_version {
        Some((meta, row)) => {
            let summary = format!("secret {name} version {}", meta.version);
            next.secrets.insert(name.to_owned(), meta);
            (Write::PutSecret(row), summary)
        }
        None => {
            if !state.secrets.contains_key(name) {
                return Err(Refusal::NotFound(format!("secret {name} does not exist")));
            }
            let users = secret_users(state, versions, name);
            if !users.is_empty() {
                return Err(Refusal::Conflict(vec![Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("Secret {name}"),
                    message: format!("deployment {} uses this secret", users.join(", ")),
                    hint: Some("remove it from those applications first".into()),
                }]));
            }
            next.secrets.remove(name);
            (
                Write::DeleteSecret {
                    name: name.to_owned(),
                },
                format!("secret {name} deleted"),
            )
        }
    };
    let mut invalid = Vec::new();
    let manifests = compile_all(&next, versions, req, &mut invalid);
    if !invalid.is_empty() {
        return Err(Refusal::Invalid(invalid));
    }
    let mut plan = Plan::default();
    plan.writes.push(write);
    finish(&mut plan, manifests, req, Some("secret"), vec![summary]);
    Ok(plan)
}

/// Plans recompiling one site after its hosts changed (a host enrolled): its manifest changes
/// only if a template reads `site.hosts`. A template that now fails leaves the manifest as it
/// was and says why.
pub fn plan_host_change(
    state: &State,
    versions: &Versions,
    site: &str,
    req: &Request<'_>,
) -> Result<Plan, Refusal> {
    let Some(entry) = state.sites.get(site) else {
        return Err(Refusal::NotFound(format!("site {site} does not exist")));
    };
    let mut only = state.clone();
    only.sites = BTreeMap::from([(site.to_owned(), entry.clone())]);
    let mut invalid = Vec::new();
    let manifests = compile_all(&only, versions, req, &mut invalid);
    if !invalid.is_empty() {
        return Err(Refusal::Invalid(invalid));
    }
    let mut plan = Plan {
        writes: placement_moved_rollouts(state, versions, req),
        ..Plan::default()
    };
    finish(&mut plan, manifests, req, None, Vec::new());
    Ok(plan)
}

/// The deployments the documents touch (applied, or running an application applied) that
/// select sites and are placed at none of them: for each, why, naming a few of the sites.
fn unmet(next: &State, versions: &Versions, docs: &[Document]) -> Vec<String> {
    const SHOWN: usize = 3;
    let mut out = Vec::new();
    for d in next.deployments.values().map(|e| &e.value) {
        let touched = docs.iter().any(|doc| match &doc.resource {
            Resource::Deployment(x) => x.name == d.name,
            Resource::Application(a) => a.name == d.application,
            Resource::Site(_) | Resource::DeviceClass(_) => false,
        });
        if !touched {
            continue;
        }
        let reasons: Vec<(String, String)> = next
            .sites
            .values()
            .filter(|s| d.placement.sites.matches(&s.value.labels))
            .map(|s| {
                let why = next.placed(&s.value, versions).unplaced.remove(&d.name);
                (s.value.name.clone(), why.unwrap_or_default())
            })
            .collect();
        if reasons.is_empty() || reasons.iter().any(|(_, why)| why.is_empty()) {
            continue;
        }
        let mut text = format!(
            "deployment {}: none of the {} sites it selects can run it",
            d.name,
            reasons.len()
        );
        for (site, why) in reasons.iter().take(SHOWN) {
            text.push_str(&format!("; {site}: {why}"));
        }
        if reasons.len() > SHOWN {
            text.push_str(&format!("; and {} more", reasons.len() - SHOWN));
        }
        out.push(text);
    }
    out
}

/// Tells every rollout whose sites changed without an apply (a host's facts or labels moved
/// a site in or out of its deployment's placement) which sites it has now.
fn placement_moved_rollouts(state: &State, versions: &Versions, req: &Request<'_>) -> Vec<Write> {
    let mut writes = Vec::new();
    for r in state.rollouts.values() {
        if matches!(r.phase, Phase::Superseded { .. }) {
            continue;
        }
        let Some(d) = state.deployments.get(&r.deployment) else {
            continue;
        };
        let sites = state.targets(&d.value, versions);
        let known: Vec<&String> = r.sites.keys().collect();
        let now: Vec<&String> = sites.iter().map(|s| &s.name).collect();
        if known != now {
            let (moved, _) = rollout::step(r, &Event::SitesChanged { sites }, req.now_ms);
            writes.push(put_rollout(&moved, req));
        }
    }
    writes
}

/// The deployments whose application (at any site's version) reads the secret.
fn secret_users(state: &State, versions: &Versions, name: &str) -> Vec<String> {
    state
        .deployments
        .values()
        .filter(|d| {
            state.sites.values().any(|s| {
                state
                    .resolve_at(&d.value, &s.value.name, versions)
                    .is_some_and(|app| {
                        app.services
                            .iter()
                            .any(|svc| svc.secrets.iter().any(|r| r.name == name))
                    })
            })
        })
        .map(|d| d.value.name.clone())
        .collect()
}

fn finish(
    plan: &mut Plan,
    manifests: Vec<ManifestRow>,
    req: &Request<'_>,
    audit: Option<&str>,
    mut summary: Vec<String>,
) {
    for m in manifests {
        summary.push(format!("manifest {} revision {}", m.site, m.revision));
        plan.manifests.push(ManifestChange {
            site: m.site.clone(),
            revision: m.revision,
        });
        plan.writes.push(Write::PutManifest(m));
    }
    if let Some(action) = audit.filter(|_| !plan.writes.is_empty()) {
        plan.writes.push(Write::Audit {
            at: req.now.to_owned(),
            actor: req.actor.to_owned(),
            action: action.to_owned(),
            detail: summary.join("; "),
        });
    }
}

/// Inserts or replaces `value`; returns the outcome and the resulting generation.
fn upsert<T: Clone>(
    map: &mut BTreeMap<String, Entry<T>>,
    name: &str,
    value: T,
    same: impl Fn(&T) -> bool,
    req: &Request<'_>,
) -> (Outcome, u64) {
    match map.get_mut(name) {
        None => {
            map.insert(
                name.to_owned(),
                Entry {
                    value,
                    generation: 1,
                    created_at: req.now.to_owned(),
                },
            );
            (Outcome::Created, 1)
        }
        Some(entry) if same(&entry.value) => (Outcome::Unchanged, entry.generation),
        Some(entry) => {
            entry.value = value;
            entry.generation += 1;
            (Outcome::Configured, entry.generation)
        }
    }
}

fn existing_created_at<'a>(state: &'a State, resource: &Resource) -> Option<&'a str> {
    let name = resource.name();
    match resource.kind() {
        Kind::Application => state.applications.get(name).map(|e| e.created_at.as_str()),
        Kind::Deployment => state.deployments.get(name).map(|e| e.created_at.as_str()),
        Kind::Site => state.sites.get(name).map(|e| e.created_at.as_str()),
        Kind::DeviceClass => state
            .device_classes
            .get(name)
            .map(|e| e.created_at.as_str()),
    }
}

/// Refuses documents that name a device class that neither is stored nor comes in the same
/// apply: a requirement no host could ever meet must not be accepted silently. A deployment
/// pinned to a stored version is checked for that version's requirements too (a class may have
/// been deleted since it was applied); an application in the apply is checked as itself.
fn check_device_classes(
    next: &State,
    versions: &Versions,
    docs: &[Document],
    out: &mut Vec<Diagnostic>,
) {
    for doc in docs {
        let mut missing = |path: String, class: &str| {
            if !next.device_classes.contains_key(class) {
                out.push(Diagnostic {
                    file: doc.origin.file.to_string(),
                    line: doc.origin.line,
                    column: doc.origin.column,
                    path: format!("{} {}: {path}", doc.resource.kind(), doc.resource.name()),
                    message: format!("device class `{class}` does not exist"),
                    hint: Some(format!(
                        "apply a DeviceClass named {class} first, or in the same apply"
                    )),
                });
            }
        };
        match &doc.resource {
            Resource::Application(app) => {
                for (path, class) in required_classes(app, "") {
                    missing(path, class);
                }
            }
            Resource::Deployment(d) => {
                for class in d.placement.device_classes() {
                    missing("placement.hosts".into(), class);
                }
                let applied_now = |app: &atoll_spec::Application| {
                    docs.iter().any(|other| {
                        matches!(&other.resource, Resource::Application(a)
                            if a.name == app.name && a.version == app.version)
                    })
                };
                if let Some(app) = next.resolve(d, versions).filter(|a| !applied_now(a)) {
                    let prefix = format!("application {} version {}: ", app.name, app.version);
                    for (path, class) in required_classes(app, &prefix) {
                        missing(path, class);
                    }
                }
            }
            Resource::Site(_) | Resource::DeviceClass(_) => {}
        }
    }
}

/// Each device class the application's services require, with the field that names it.
fn required_classes<'a>(app: &'a atoll_spec::Application, prefix: &str) -> Vec<(String, &'a str)> {
    app.services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.requires.devices.iter().map(move |c| {
                (
                    format!("{prefix}services[{i}].requires.devices"),
                    c.as_str(),
                )
            })
        })
        .collect()
}

/// Who names device class `name`: each application version's services that require it, and
/// each deployment whose host selector reads it.
fn device_class_users(state: &State, versions: &Versions, name: &str) -> Vec<String> {
    let mut users: Vec<String> = state
        .applications
        .values()
        .map(|e| &e.value)
        .chain(versions.values())
        .flat_map(|app| {
            app.services
                .iter()
                .filter(|s| s.requires.devices.iter().any(|c| c == name))
                .map(|s| {
                    format!(
                        "application {} version {} service {} requires it",
                        app.name, app.version, s.name
                    )
                })
        })
        .collect();
    users.sort();
    users.dedup();
    users.extend(
        state
            .deployments
            .values()
            .filter(|d| d.value.placement.device_classes().contains(name))
            .map(|d| format!("deployment {} places on hosts by it", d.value.name)),
    );
    users
}

fn check_references(
    next: &State,
    versions: &Versions,
    d: &atoll_spec::Deployment,
    origin: &Origin,
    out: &mut Vec<Diagnostic>,
) {
    let at = |path: &str, message: String, hint: &str| Diagnostic {
        file: origin.file.to_string(),
        line: origin.line,
        column: origin.column,
        path: format!("Deployment {}: {path}", d.name),
        message,
        hint: Some(hint.to_owned()),
    };
    let Some(current) = next.applications.get(&d.application) else {
        out.push(at(
            "application",
            format!("application `{}` does not exist", d.application),
            "apply the Application first, or in the same apply",
        ));
        return;
    };
    if let Some(pin) = &d.version
        && *pin != current.value.version
        && !versions.contains_key(&(d.application.clone(), pin.clone()))
    {
        out.push(at(
            "version",
            format!("application `{}` has no version `{pin}`", d.application),
            "apply that version first, or remove `version` to follow the newest",
        ));
    }
}

/// Compiles every site's manifest in `next`; returns those whose content changed, with their
/// next revision.
fn compile_all(
    next: &State,
    versions: &Versions,
    req: &Request<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<ManifestRow> {
    let (now, limits) = (req.now, req.limits);
    let sites: Vec<&Site> = next.sites.values().map(|e| &e.value).collect();
    let per_thread = super::per_thread(sites.len(), SITES_PER_THREAD);
    // A fleet-wide change compiles every site, and the long-polls it wakes wait for it: the
    // sites are shared out over the cores, in order, so the result is the same as on one.
    let parts: Vec<(Vec<ManifestRow>, Vec<RenderError>)> = if sites.len() <= per_thread {
        vec![compile_sites(next, versions, now, limits, &sites)]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = sites
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || compile_sites(next, versions, now, limits, chunk)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    };
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    for (mut rows, mut problems) in parts {
        changed.append(&mut rows);
        failed.append(&mut problems);
    }
    errors.extend(diagnostics(failed));
    changed
}

/// Below this many sites for each core, a compile stays on one thread.
const SITES_PER_THREAD: usize = 500;

/// The manifests of `sites` whose content changed, as stored, and what failed to compile.
fn compile_sites(
    next: &State,
    versions: &Versions,
    now: &str,
    limits: Limits,
    sites: &[&Site],
) -> (Vec<ManifestRow>, Vec<RenderError>) {
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    let mut templates = Templates::new(limits);
    for site in sites {
        let placed = next.placed(site, versions);
        let hosts = next.hosts.get(&site.name).map_or(&[][..], Vec::as_slice);
        match compile_site_with(
            &mut templates,
            site,
            &placed.placements,
            &next.secrets,
            hosts,
        ) {
            Err(mut e) => failed.append(&mut e),
            Ok(mut content) => {
                content.prefetch = prefetch(next, versions, &site.name);
                add_host_facts(&mut content, &placed, hosts);
                let hash = content_hash(&content);
                let head = next.manifests.get(&site.name);
                let Some(revision) =
                    revision::next(head.map(|h| (h.revision, h.hash.as_str())), &hash)
                else {
                    continue;
                };
                let manifest = Manifest {
                    site: site.name.clone(),
                    revision,
                    hash,
                    content,
                    sealed: Vec::new(),
                };
                changed.push(ManifestRow {
                    // A manifest is plain data: serializing it cannot fail.
                    body: serde_json::to_string(&manifest).unwrap_or_default(),
                    site: manifest.site,
                    revision,
                    hash: manifest.hash,
                    updated_at: now.to_owned(),
                });
            }
        }
    }
    (changed, failed)
}

/// What a site needs in its manifest to decide offline which of its hosts runs what: the
/// device classes its work names and, when a placement reads labels, its hosts' labels.
pub(super) fn add_host_facts(
    content: &mut atoll_api::ManifestContent,
    placed: &SitePlacement<'_>,
    hosts: &[atoll_api::host::Host],
) {
    content.device_classes = placed.classes.clone();
    if placed.placements.iter().any(reads_host_labels) {
        content.host_labels = hosts
            .iter()
            .filter(|h| !h.labels.is_empty())
            .map(|h| (h.name.clone(), h.labels.clone()))
            .collect();
    }
}

/// Whether a placement reads the labels of hosts: then the site's manifest carries them, so
/// the site decides on them offline.
fn reads_host_labels(p: &Placement<'_>) -> bool {
    p.deployment.placement.hosts.is_some()
        || p.application
            .services
            .iter()
            .any(|s| !s.requires.host_labels.is_empty())
}

/// The new version's images at a site whose wave has not opened yet, for rollouts that asked
/// for prefetch: pulled ahead, so the switch-over is quick when the wave opens.
fn prefetch(next: &State, versions: &Versions, site: &str) -> Vec<String> {
    let mut images: Vec<String> = next
        .rollouts
        .values()
        .filter(|r| matches!(r.phase, Phase::Running | Phase::Paused { .. }))
        .filter(|r| r.sites.contains_key(site) && r.assigned(site) != Some(r.to_version.as_str()))
        .filter_map(|r| {
            let d = &next.deployments.get(&r.deployment)?.value;
            d.rollout.as_ref().filter(|spec| spec.prefetch)?;
            next.version(&d.application, &r.to_version, versions)
        })
        .flat_map(|app| app.services.iter().map(|s| s.image.clone()))
        .collect();
    images.sort();
    images.dedup();
    images
}

fn to_json(resource: &Resource) -> String {
    // Resources are plain data: serializing them cannot fail.
    serde_json::to_string(resource).unwrap_or_default()
}

/// The refusal for an application version re-applied with other content, naming the first
/// field that differs.
fn immutable_version(doc: &Document, stored: &atoll_spec::Application) -> Diagnostic {
    let old = serde_json::to_value(stored).unwrap_or(Value::Null);
    let new = match &doc.resource {
        Resource::Application(a) => serde_json::to_value(a).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let (field, detail) =
        first_difference(&old, &new, "").unwrap_or_else(|| (String::new(), String::new()));
    Diagnostic {
        file: doc.origin.file.to_string(),
        line: doc.origin.line,
        column: doc.origin.column,
        path: format!("Application {}", stored.name),
        message: format!(
            "version {} was applied before with different content: `{field}` differs ({detail})",
            stored.version
        ),
        hint: Some("application versions are immutable: give this content a new version".into()),
    }
}

/// The path of the first place where `a` and `b` differ, and what each side holds there.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<(String, String)> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v, &join(k)),
                (Some(u), None) => Some((join(k), format!("was {}, now absent", short(u)))),
                (None, Some(v)) => Some((join(k), format!("was absent, now {}", short(v)))),
                (None, None) => None,
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let found = x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}[{i}]")));
            found.or_else(|| {
                (x.len() != y.len()).then(|| {
                    (
                        path.to_owned(),
                        format!("was {} items, now {}", x.len(), y.len()),
                    )
                })
            })
        }
        _ if a == b => None,
        _ => Some((
            path.to_owned(),
            format!("was {}, now {}", short(a), short(b)),
        )),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

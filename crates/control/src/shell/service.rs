//! The control plane's operations: read the state, let `core` decide, commit the result.
//!
//! Applies and deletes are serialized in this process by a lock (the store's version check
//! would refuse a lost race anyway; the lock only avoids wasted work), and retried when another
//! writer committed in between.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use atoll_api::host::Host;
use atoll_api::{ApplyResponse, DeleteResponse, Manifest};
use atoll_spec::render::Limits;
use atoll_spec::{Application, Diagnostic, Kind, Resource, Source, parse_sources};
use atoll_store::{ManifestRow, ResourceRow, Store, StoreError, Write};
use tokio::sync::Mutex;

use super::clock::{now_ms, now_rfc3339};
use super::fleet::Fleet;
use super::signing::ManifestSigner;
use super::vault::Vault;
use crate::core::apply::{Plan, Refusal, Request, plan_apply, plan_delete, plan_host_change};
use crate::core::revision::{self, Answer, Held};
use crate::core::state::{State, Versions};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request is invalid")]
    Invalid(Vec<Diagnostic>),
    #[error("the request conflicts with what is stored")]
    Conflict(Vec<Diagnostic>),
    #[error("{0}")]
    NotFound(String),
    /// No valid credentials (a bad join token).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this (another site's certificate).
    #[error("{0}")]
    Forbidden(String),
    /// A host's valid certificate, but the host was detached from its site (the site was
    /// deleted): it will never be let in again.
    #[error("{0}")]
    Detached(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Invalid(d) => Error::Invalid(d),
            Refusal::Conflict(d) => Error::Conflict(d),
            Refusal::NotFound(m) => Error::NotFound(m),
        }
    }
}

const COMMIT_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct ControlPlane {
    pub(super) store: Arc<dyn Store>,
    pub(super) fleet: Arc<Fleet>,
    pub(super) vault: Arc<Vault>,
    signer: Arc<ManifestSigner>,
    pub(super) writes: Arc<Mutex<()>>,
    /// Whether a template in use reads `site.hosts`, as of the last load: enrollments
    /// recompile their site only then. Presumed after a start or a commit, until a load says.
    hosts_matter: Arc<std::sync::atomic::AtomicBool>,
    /// How large rendered templates may be.
    template_limits: Limits,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        vault: Arc<Vault>,
        signer: Arc<ManifestSigner>,
    ) -> ControlPlane {
        ControlPlane {
            store,
            fleet,
            vault,
            signer,
            writes: Arc::new(Mutex::new(())),
            hosts_matter: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            template_limits: Limits::default(),
        }
    }

    /// Renders templates within `limits` rather than the defaults.
    pub fn with_template_limits(mut self, limits: Limits) -> ControlPlane {
        self.template_limits = limits;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The manifest-signing key.
    pub fn signer(&self) -> &Arc<ManifestSigner> {
        &self.signer
    }

    /// Commits a plan's writes and, once they are durable, wakes the long-polls of the sites
    /// whose manifests they store, handing the fleet each new manifest.
    async fn commit(&self, base: u64, writes: Vec<Write>) -> Result<u64, StoreError> {
        let mut hashes = std::collections::HashMap::new();
        let manifests: Vec<(String, u64, String)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::PutManifest(row) => {
                    hashes.insert(row.site.clone(), row.hash.clone());
                    Some((row.site.clone(), row.revision, row.body.clone()))
                }
                _ => None,
            })
            .collect();
        // The manifests are signed on the other cores while the store commits, so the
        // long-polls the commit wakes answer with bytes made already.
        let signing = super::signing::sign_all(&self.signer, manifests);
        let detaches = writes.iter().any(|w| matches!(w, Write::RetireSite { .. }));
        let version = self.store.commit(base, writes).await?;
        if detaches {
            // Before anyone is told the site is gone, its hosts are refused here, and their
            // long-polls end.
            self.fleet.hosts().follow(self.store.as_ref()).await?;
        }
        let mut published = Vec::new();
        for part in signing {
            published.extend(
                part.await
                    .map_err(|e| StoreError::Backend(format!("signing the manifests: {e}")))?,
            );
        }
        // What templates read may have changed: the next load says again.
        self.hosts_matter
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for (site, revision, manifest) in published {
            let hash = hashes.get(&site).map_or("", String::as_str);
            self.fleet.publish_manifest(&site, revision, hash, manifest);
        }
        Ok(version)
    }

    /// The current state, with every stored application version that deployments pin or that
    /// `extra` names.
    pub(super) async fn load(
        &self,
        extra: &[(String, String)],
    ) -> Result<(State, Versions), Error> {
        let snapshot = self.store.snapshot().await?;
        let mut state = State::from_snapshot(snapshot).map_err(StoreError::Corrupt)?;
        let mut wanted: BTreeSet<(String, String)> = extra.iter().cloned().collect();
        for d in state.deployments.values() {
            if let Some(pin) = &d.value.version {
                wanted.insert((d.value.application.clone(), pin.clone()));
            }
            // Both sides of a rollout are needed to compile its sites' manifests, and the
            // current version stays needed when an apply makes another one current.
            if let Some(app) = state.applications.get(&d.value.application) {
                wanted.insert((d.value.application.clone(), app.value.version.clone()));
            }
            if let Some(r) = state.rollouts.get(&d.value.name) {
                for v in r.from_version.iter().chain([&r.to_version]) {
                    wanted.insert((d.value.application.clone(), v.clone()));
                }
            }
        }
        let mut versions = Versions::new();
        for (name, version) in wanted {
            if let Some(row) = self.store.app_version(&name, &version).await? {
                let app: Application = serde_json::from_str::<Resource>(&row.spec)
                    .ok()
                    .and_then(|r| {
                        if let Resource::Application(a) = r {
                            Some(a)
                        } else {
                            None
                        }
                    })
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "stored application {name} version {version} cannot be read"
                        ))
                    })?;
                versions.insert((name, version), app);
            }
        }
        let read_hosts = state.hosts_matter(&versions);
        self.hosts_matter
            .store(read_hosts, std::sync::atomic::Ordering::Relaxed);
        // The hosts are read whatever the templates read: every manifest of a site of two or
        // more hosts lists them (`ManifestContent::site_hosts`).
        // In the order they enrolled, which the site's manifest keeps: the first one founds
        // the site's log (`SiteHost::founder`).
        let mut hosts = self.store.hosts().await?;
        hosts.sort_by(|a, b| (&a.enrolled_at, &a.id).cmp(&(&b.enrolled_at, &b.id)));
        for host in hosts {
            // An inventory that cannot be read (a newer agent's) gives no facts rather than
            // stopping every apply.
            if let Ok(inventory) = serde_json::from_str(&host.inventory) {
                state
                    .hosts
                    .entry(host.site.clone())
                    .or_default()
                    .push(Host {
                        name: host.id.clone(),
                        inventory,
                        labels: host.labels.clone(),
                    });
            }
        }
        Ok((state, versions))
    }

    /// Validates `sources` and, unless `dry_run`, commits them. Every problem is reported at once,
    /// and nothing is stored unless there are none.
    pub async fn apply(
        &self,
        sources: &[Source],
        dry_run: bool,
        actor: &str,
    ) -> Result<ApplyResponse, Error> {
        let parsed = parse_sources(sources);
        if parsed.is_ok() && parsed.documents.is_empty() {
            // Empty or `null` documents only: an apply of nothing is a mistake, not a success.
            return Err(Error::Invalid(vec![Diagnostic {
                file: sources.first().map(|s| s.name.clone()).unwrap_or_default(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "nothing to apply: the documents sent hold no resource".into(),
                hint: Some("send Application, Deployment, Site or DeviceClass documents".into()),
            }]));
        }
        let names: Vec<(String, String)> = parsed
            .documents
            .iter()
            .filter_map(|d| match &d.resource {
                Resource::Application(a) => Some((a.name.clone(), a.version.clone())),
                _ => None,
            })
            .collect();
        let _guard = self.writes.lock().await;
        self.commit_planned_reading("apply", actor, &names, None, |state, versions, req| {
            let planned = plan_apply(state, versions, &parsed.documents, req);
            if !parsed.is_ok() {
                // Report the file's own problems first, then whatever compiling found too.
                let mut all = parsed.diagnostics.clone();
                if let Err(Refusal::Invalid(more) | Refusal::Conflict(more)) = planned {
                    all.extend(more);
                }
                all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
                return Err(Error::Invalid(all));
            }
            let plan = planned?;
            let response = ApplyResponse {
                dry_run,
                results: plan.results,
                manifests: plan.manifests,
                warnings: plan.warnings,
            };
            // A dry run commits nothing.
            let writes = if dry_run { Vec::new() } else { plan.writes };
            Ok((
                Plan {
                    writes,
                    ..Plan::default()
                },
                response,
            ))
        })
        .await
    }

    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        actor: &str,
    ) -> Result<DeleteResponse, Error> {
        let _guard = self.writes.lock().await;
        self.commit_planned("delete", actor, |state, versions, req| {
            let plan = plan_delete(state, versions, kind, name, req)?;
            let response = DeleteResponse {
                kind,
                name: name.to_owned(),
                manifests: plan.manifests.clone(),
            };
            Ok((plan, response))
        })
        .await
    }

    /// Loads the state, lets `plan` decide, and commits what it wrote (waking the long-polls of
    /// the sites whose manifests changed); starts over when another writer committed in
    /// between. Call it holding `self.writes`. `what` names the operation if it gives up.
    pub(super) async fn commit_planned<T>(
        &self,
        what: &str,
        actor: &str,
        plan: impl FnMut(&State, &Versions, &Request<'_>) -> Result<(Plan, T), Error>,
    ) -> Result<T, Error> {
        self.commit_planned_reading(what, actor, &[], None, plan)
            .await
    }

    /// [`Self::commit_planned`], loading the state as [`Self::load`] does with `extra`, and
    /// committing only under lease `fence` (its name and fence) when given:
    /// once the lease's fence moved on, the commit is refused and not tried again.
    pub(super) async fn commit_planned_reading<T>(
        &self,
        what: &str,
        actor: &str,
        extra: &[(String, String)],
        fence: Option<(&str, u64)>,
        mut plan: impl FnMut(&State, &Versions, &Request<'_>) -> Result<(Plan, T), Error>,
    ) -> Result<T, Error> {
        for _ in 0..COMMIT_ATTEMPTS {
            let started = Instant::now();
            let (state, versions) = self.load(extra).await?;
            let loaded = started.elapsed();
            let now = now_rfc3339();
            let req = Request {
                now: &now,
                now_ms: now_ms(),
                actor,
                limits: self.template_limits,
            };
            let (planned, out) = plan(&state, &versions, &req)?;
            if planned.writes.is_empty() {
                return Ok(out);
            }
            let writes = planned.writes.len();
            let planned_in = started.elapsed() - loaded;
            let mut batch = planned.writes;
            if let Some((lease, fence)) = fence {
                batch.insert(
                    0,
                    Write::Fenced {
                        lease: lease.to_owned(),
                        fence,
                    },
                );
            }
            match self.commit(state.version, batch).await {
                Ok(version) => {
                    tracing::info!(
                        what,
                        actor,
                        version,
                        writes,
                        load_ms = loaded.as_millis(),
                        plan_ms = planned_in.as_millis(),
                        commit_ms = (started.elapsed() - loaded - planned_in).as_millis(),
                        "committed"
                    );
                    return Ok(out);
                }
                Err(StoreError::Conflict { .. }) => {
                    if let Some((lease, fence)) = fence {
                        let actual = self.store.lease(lease).await?.map_or(0, |l| l.fence);
                        if actual != fence {
                            return Err(StoreError::Conflict {
                                expected: fence,
                                actual,
                            }
                            .into());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Store(StoreError::Backend(format!(
            "the store kept changing during this {what}; try again"
        ))))
    }

    /// A host joined `site`, or its facts or labels changed: recompiles that site's manifest
    /// (and tells running rollouts if the site's placement changed) when the site's members
    /// changed (`membership`: a host joined, or its site address moved; the manifest lists
    /// them) or what hosts are can matter ([`State::hosts_matter`]). Nothing to do, and no
    /// store read, otherwise.
    pub async fn hosts_changed(&self, site: &str, membership: bool) -> Result<(), Error> {
        if !membership && !self.hosts_matter.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let _guard = self.writes.lock().await;
        self.commit_planned(
            "recompile for its hosts",
            "atoll",
            |state, versions, req| Ok((plan_host_change(state, versions, site, req)?, ())),
        )
        .await
    }

    /// Commits `site`'s stored manifest again, unchanged but for its revision, one above: its
    /// hosts take it, with its secrets sealed to their keys as they are now. Audited with
    /// `why`. Nothing when the site has no manifest, or its head moved meanwhile (the newer
    /// one is sealed anew anyway): the new revision, if this call committed it.
    pub async fn recommit(&self, site: &str, actor: &str, why: &str) -> Result<Option<u64>, Error> {
        let _guard = self.writes.lock().await;
        let Some(row) = self.store.manifest(site).await? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_str(&row.body)
            .map_err(|e| StoreError::Corrupt(format!("manifest of site {site}: {e}")))?;
        self.commit_planned("recommit", actor, |state, _, req| {
            let head = state.manifests.get(site).map(|h| (h.revision, h.hash.as_str()));
            if head != Some((row.revision, row.hash.as_str())) {
                return Ok((Plan::default(), None));
            }
            let revision = row.revision + 1;
            let again = Manifest {
                revision,
                ..manifest.clone()
            };
            let writes = vec![
                Write::PutManifest(ManifestRow {
                    // A manifest is plain data: serializing it cannot fail.
                    body: serde_json::to_string(&again).unwrap_or_default(),
                    revision,
                    updated_at: req.now.to_owned(),
                    ..row.clone()
                }),
                Write::Audit {
                    at: req.now.to_owned(),
                    actor: req.actor.to_owned(),
                    action: "recommit".into(),
                    detail: format!(
                        "the manifest of site {site} is committed again as revision {revision}: {why}"
                    ),
                },
            ];
            Ok((
                Plan {
                    writes,
                    ..Plan::default()
                },
                Some(revision),
            ))
        })
        .await
    }

    /// An agent of `site` (host `host`) long-polls holding a revision this control plane does
    /// not know ([`Answer::Overtake`]): the store lost its last commits (a restored backup, a
    /// cut WAL). Commits the site's stored manifest again, unchanged, one revision above the
    /// agent's, so that the agent takes it and the site runs what is stored here; the
    /// divergence is audited and logged. Writes nothing if the site's head moved meanwhile (the
    /// poll of another of its hosts did it): the new revision, if this call committed it.
    pub async fn overtake(
        &self,
        site: &str,
        host: &str,
        held: Held<'_>,
    ) -> Result<Option<u64>, Error> {
        let _guard = self.writes.lock().await;
        // Read under the lock every manifest commit of this process holds: the row is the head.
        let Some(row) = self.store.manifest(site).await? else {
            return Ok(None);
        };
        let mut manifest: Manifest = serde_json::from_str(&row.body)
            .map_err(|e| StoreError::Corrupt(format!("manifest of site {site}: {e}")))?;
        let holds = held.hash.unwrap_or("no hash said");
        let committed = self
            .commit_planned("overtake", "atoll", |state, _, req| {
                let head = state
                    .manifests
                    .get(site)
                    .map(|h| (h.revision, h.hash.as_str()));
                let Answer::Overtake { revision } = revision::answer(head, held) else {
                    return Ok((Plan::default(), None));
                };
                if head != Some((row.revision, row.hash.as_str())) {
                    return Ok((Plan::default(), None));
                }
                manifest.revision = revision;
                let detail = format!(
                    "host {host} of site {site} holds manifest revision {} ({holds}), which this control plane does not know: its store lost commits (restored from a backup, or its WAL was cut). The stored revision {} is committed again as revision {revision}, so that the site runs it; check that the site runs what you expect",
                    held.revision, row.revision
                );
                let writes = vec![
                    Write::PutManifest(ManifestRow {
                        // A manifest is plain data: serializing it cannot fail.
                        body: serde_json::to_string(&manifest).unwrap_or_default(),
                        revision,
                        updated_at: req.now.to_owned(),
                        ..row.clone()
                    }),
                    Write::Audit {
                        at: req.now.to_owned(),
                        actor: req.actor.to_owned(),
                        action: "diverged".into(),
                        detail,
                    },
                ];
                Ok((
                    Plan {
                        writes,
                        ..Plan::default()
                    },
                    Some(revision),
                ))
            })
            .await?;
        if let Some(revision) = committed {
            tracing::warn!(
                site,
                host,
                held = held.revision,
                holds,
                stored = row.revision,
                revision,
                "an agent holds a manifest revision this control plane does not know (its store lost commits: a restored backup, a cut WAL); the stored manifest is committed again above it"
            );
        }
        Ok(committed)
    }

    /// The rows of one kind, or the one named (not found is an error).
    pub(super) async fn rows(
        &self,
        kind: Kind,
        only: Option<&str>,
    ) -> Result<Vec<ResourceRow>, Error> {
        match only {
            None => Ok(self.store.resources(kind.as_str()).await?),
            Some(name) => match self.store.resource(kind.as_str(), name).await? {
                Some(row) => Ok(vec![row]),
                None => Err(Error::NotFound(format!("{kind} {name} does not exist"))),
            },
        }
    }
}

/// A stored row that cannot be read.
pub(super) fn corrupt(problem: String) -> Error {
    Error::Store(StoreError::Corrupt(problem))
}

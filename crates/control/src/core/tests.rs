//! Planning applies and deletes, over a state kept in memory: each committed plan is folded
//! into the state the way the store would keep it.

use atoll_api::Outcome;
use atoll_spec::{Kind, Source, parse_sources};
use atoll_store::{ManifestHead, ResourceRow, Write};
use proptest::prelude::*;

use std::collections::BTreeMap;

use atoll_store::SecretRow;

use super::apply::{
    Plan, Refusal, Request, plan_apply, plan_delete, plan_host_change, plan_secret,
};
use super::compile::compile_site;
use super::secrets::{self, Change, SecretMeta, SecretValues};
use super::state::{Entry, State, Versions, decode_row};
use atoll_api::host::Host;
use atoll_spec::Resource;

const NOW: Request<'static> = Request {
    now: "2026-11-22T00:00:00Z",
    now_ms: 1_795_305_600_000,
    actor: "test",
    limits: atoll_spec::render::Limits::DEFAULT,
};

/// The control plane's state plus every application version, as the store holds them.
#[derive(Default, Clone)]
struct World {
    state: State,
    versions: Versions,
}

impl World {
    fn apply(&mut self, yaml: &str) -> Result<Plan, Refusal> {
        let parsed = parse_sources(&[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }]);
        assert!(parsed.is_ok(), "{:?}", parsed.diagnostics);
        let plan = plan_apply(&self.state, &self.versions, &parsed.documents, &NOW)?;
        self.commit(&plan);
        Ok(plan)
    }

    fn delete(&mut self, kind: Kind, name: &str) -> Result<Plan, Refusal> {
        let plan = plan_delete(&self.state, &self.versions, kind, name, &NOW)?;
        self.commit(&plan);
        Ok(plan)
    }

    fn commit(&mut self, plan: &Plan) {
        for w in &plan.writes {
            match w {
                Write::PutResource(row) => self.put(row),
                Write::DeleteResource { kind, name } => match kind.as_str() {
                    "Application" => drop(self.state.applications.remove(name)),
                    "Deployment" => drop(self.state.deployments.remove(name)),
                    "DeviceClass" => drop(self.state.device_classes.remove(name)),
                    _ => drop(self.state.sites.remove(name)),
                },
                Write::PutAppVersion(v) => {
                    let Resource::Application(app) = serde_json::from_str(&v.spec).unwrap() else {
                        panic!()
                    };
                    self.versions
                        .insert((v.name.clone(), v.version.clone()), app);
                }
                Write::DeleteAppVersions { name } => self.versions.retain(|(n, _), _| n != name),
                Write::PutManifest(m) => {
                    let old = self.state.manifests.get(&m.site).map_or(0, |h| h.revision);
                    assert!(
                        m.revision > old,
                        "revision of {} went from {old} to {}",
                        m.site,
                        m.revision
                    );
                    let head = ManifestHead {
                        site: m.site.clone(),
                        revision: m.revision,
                        hash: m.hash.clone(),
                    };
                    self.state.manifests.insert(m.site.clone(), head);
                }
                Write::PutSecret(row) => {
                    let meta = serde_json::from_str(&row.meta).unwrap();
                    self.state.secrets.insert(row.name.clone(), meta);
                }
                Write::DeleteSecret { name } => drop(self.state.secrets.remove(name)),
                Write::PutRollout(row) => {
                    let r = super::state::decode_rollout(row).unwrap();
                    self.state.rollouts.insert(row.deployment.clone(), r);
                }
                Write::PutToken(_)
                | Write::PutSetting { .. }
                | Write::Audit { .. }
                | Write::ArchiveRollout { .. }
                | Write::RetireSite { .. }
                | Write::Fenced { .. } => {}
            }
        }
        self.state.version += 1;
    }

    fn put(&mut self, row: &ResourceRow) {
        let resource = decode_row(row).unwrap();
        let (generation, created_at) = (row.generation, row.created_at.clone());
        match resource {
            Resource::Application(value) => drop(self.state.applications.insert(
                row.name.clone(),
                Entry {
                    value,
                    generation,
                    created_at,
                },
            )),
            Resource::Deployment(value) => drop(self.state.deployments.insert(
                row.name.clone(),
                Entry {
                    value,
                    generation,
                    created_at,
                },
            )),
            Resource::Site(value) => drop(self.state.sites.insert(
                row.name.clone(),
                Entry {
                    value,
                    generation,
                    created_at,
                },
            )),
            Resource::DeviceClass(value) => drop(self.state.device_classes.insert(
                row.name.clone(),
                Entry {
                    value,
                    generation,
                    created_at,
                },
            )),
        }
    }

    /// The content `site`'s manifest compiles to now, with its hosts' facts.
    fn compiled(&self, site: &str) -> atoll_api::ManifestContent {
        let entry = &self.state.sites[site].value;
        let hosts = self.state.hosts.get(site).map_or(&[][..], Vec::as_slice);
        let placed = self.state.placed(entry, &self.versions);
        let mut content =
            compile_site(entry, &placed.placements, &self.state.secrets, hosts).unwrap();
        super::apply::add_host_facts(&mut content, &placed, hosts);
        content
    }

    fn revision(&self, site: &str) -> u64 {
        self.state.manifests.get(site).map_or(0, |m| m.revision)
    }

    /// The deployments placed on a site, by compiling its manifest afresh.
    fn placed(&self, site: &str) -> Vec<String> {
        let s = &self.state.sites[site].value;
        self.state
            .placements(s, &self.versions)
            .iter()
            .map(|p| p.deployment.name.clone())
            .collect()
    }
}

fn app(version: &str, image: &str) -> String {
    format!(
        "kind: Application\nname: pos\nversion: '{version}'\nservices:\n  - name: api\n    image: {image}\n    env: {{ STORE: '{{{{ site.labels.store_id }}}}' }}\n"
    )
}

fn site(name: &str, labels: &str) -> String {
    format!("kind: Site\nname: {name}\nlabels: {{ store_id: '{name}', {labels} }}\n")
}

const DEPLOYMENT: &str = "kind: Deployment\nname: pos-prod\napplication: pos\nplacement: { sites: 'customer == acme && region in (eu-north)' }\n";

fn outcomes(plan: &Plan) -> Vec<(String, Outcome, u64)> {
    plan.results
        .iter()
        .map(|r| (r.name.clone(), r.outcome, r.generation))
        .collect()
}

#[test]
fn created_unchanged_configured() {
    let mut w = World::default();
    let first = w
        .apply(&format!(
            "{}---\n{}",
            app("1", "api:1"),
            site("s1", "customer: acme, region: eu-north")
        ))
        .unwrap();
    assert_eq!(
        outcomes(&first),
        [
            ("pos".into(), Outcome::Created, 1),
            ("s1".into(), Outcome::Created, 1)
        ]
    );
    let again = w
        .apply(&format!(
            "{}---\n{}",
            app("1", "api:1"),
            site("s1", "customer: acme, region: eu-north")
        ))
        .unwrap();
    assert_eq!(
        outcomes(&again),
        [
            ("pos".into(), Outcome::Unchanged, 1),
            ("s1".into(), Outcome::Unchanged, 1)
        ]
    );
    assert!(
        again.writes.is_empty(),
        "an unchanged apply writes nothing, not even an audit entry"
    );
    let changed = w
        .apply(&site("s1", "customer: acme, region: eu-west"))
        .unwrap();
    assert_eq!(outcomes(&changed), [("s1".into(), Outcome::Configured, 2)]);
}

#[test]
fn deployments_compile_into_exactly_the_matching_sites() {
    let mut w = World::default();
    let plan = w
        .apply(
            &[
                app("1", "api:1"),
                DEPLOYMENT.into(),
                site("a", "customer: acme, region: eu-north"),
                site("b", "customer: acme, region: eu-west"),
                site("c", "customer: other, region: eu-north"),
            ]
            .join("---\n"),
        )
        .unwrap();
    let sites: Vec<&str> = plan.manifests.iter().map(|m| m.site.as_str()).collect();
    assert_eq!(
        sites,
        ["a", "b", "c"],
        "every site gets a first manifest, empty or not"
    );
    assert_eq!(w.placed("a"), ["pos-prod"]);
    assert!(w.placed("b").is_empty() && w.placed("c").is_empty());

    // Moving b into the selection changes only b's manifest.
    let plan = w
        .apply(&site("b", "customer: acme, region: eu-north"))
        .unwrap();
    assert_eq!(
        plan.manifests
            .iter()
            .map(|m| (m.site.as_str(), m.revision))
            .collect::<Vec<_>>(),
        [("b", 2)]
    );
    assert_eq!(w.placed("b"), ["pos-prod"]);
    // And out again.
    let plan = w
        .apply(&site("b", "customer: acme, region: us-east"))
        .unwrap();
    assert_eq!(
        plan.manifests
            .iter()
            .map(|m| (m.site.as_str(), m.revision))
            .collect::<Vec<_>>(),
        [("b", 3)]
    );
    // A label the selector does not read changes nothing in the manifest.
    let plan = w
        .apply(&site("a", "customer: acme, region: eu-north, floor: '2'"))
        .unwrap();
    assert!(plan.manifests.is_empty());
    assert_eq!(w.revision("a"), 1);
}

#[test]
fn a_new_version_reaches_every_placed_site_and_an_old_one_can_come_back() {
    let mut w = World::default();
    w.apply(
        &[
            app("1", "api:1"),
            DEPLOYMENT.into(),
            site("a", "customer: acme, region: eu-north"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let plan = w.apply(&app("2", "api:2")).unwrap();
    assert_eq!(outcomes(&plan), [("pos".into(), Outcome::Configured, 2)]);
    assert_eq!(w.revision("a"), 2);
    // Version 1 is kept; applying it again makes it current again (a rollback by apply).
    let plan = w.apply(&app("1", "api:1")).unwrap();
    assert_eq!(outcomes(&plan), [("pos".into(), Outcome::Configured, 3)]);
    assert!(
        !plan
            .writes
            .iter()
            .any(|w| matches!(w, Write::PutAppVersion(_)))
    );
    assert_eq!(w.revision("a"), 3);
}

#[test]
fn a_version_applied_again_with_other_content_is_refused_naming_the_field() {
    let mut w = World::default();
    w.apply(&app("1", "api:1")).unwrap();
    w.apply(&app("2", "api:2")).unwrap();
    for version in ["1", "2"] {
        let Err(Refusal::Conflict(d)) = w.apply(&app(version, "api:evil")) else {
            panic!("accepted")
        };
        assert_eq!(d.len(), 1);
        assert!(
            d[0].message
                .contains("`services[0].image` differs (was \"api:"),
            "{}",
            d[0].message
        );
        assert!(d[0].hint.as_deref().unwrap().contains("immutable"));
    }
}

#[test]
fn pinned_versions_and_missing_references() {
    let mut w = World::default();
    w.apply(
        &[
            app("1", "api:1"),
            site("a", "customer: acme, region: eu-north"),
        ]
        .join("---\n"),
    )
    .unwrap();
    w.apply(&app("2", "api:2")).unwrap();
    let pinned = DEPLOYMENT.replace("application: pos\n", "application: pos\nversion: '1'\n");
    w.apply(&pinned).unwrap();
    let m = w.state.placements(&w.state.sites["a"].value, &w.versions);
    assert_eq!(m[0].application.version, "1");

    let Err(Refusal::Invalid(d)) = w.apply(
        &DEPLOYMENT
            .replace("version: '1'\n", "")
            .replace("pos\n", "nothing\n"),
    ) else {
        panic!()
    };
    assert!(
        d[0].message
            .contains("application `nothing` does not exist"),
        "{d:?}"
    );
    let Err(Refusal::Invalid(d)) = w.apply(&pinned.replace("version: '1'", "version: '9'")) else {
        panic!()
    };
    assert!(d[0].message.contains("has no version `9`"), "{d:?}");
}

#[test]
fn one_failing_site_of_fifty_rejects_the_whole_apply() {
    let mut w = World::default();
    let mut docs: Vec<String> = (0..50)
        .map(|i| site(&format!("s{i:02}"), "customer: acme, region: eu-north"))
        .collect();
    docs[37] = "kind: Site\nname: s37\nlabels: { customer: acme, region: eu-north }\n".into();
    w.apply(&docs.join("---\n")).unwrap();
    let before = w.state.clone();
    let Err(Refusal::Invalid(d)) = w.apply(&[app("1", "api:1"), DEPLOYMENT.into()].join("---\n"))
    else {
        panic!()
    };
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].message,
        "template variable `site.labels.store_id` is not defined for site s37"
    );
    assert_eq!(d[0].line, 7);
    assert!(d[0].path.starts_with("Deployment pos-prod"));
    assert_eq!(w.state, before);
}

/// Enough sites that a compile is shared out over threads (on a machine with more than one
/// core): the result is what one thread would give, in site order, and one failing site of
/// thousands is named once.
#[test]
fn a_compile_shared_out_over_threads_gives_every_site_its_own_manifest_in_order() {
    let mut w = World::default();
    let docs: Vec<String> = (0..2_500)
        .map(|i| site(&format!("s{i:04}"), "customer: acme, region: eu-north"))
        .collect();
    w.apply(&docs.join("---\n")).unwrap();
    let plan = w
        .apply(&[app("1", "api:1"), DEPLOYMENT.into()].join("---\n"))
        .unwrap();
    let stored: Vec<&atoll_store::ManifestRow> = plan
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::PutManifest(m) => Some(m),
            _ => None,
        })
        .collect();
    let sites: Vec<&String> = w.state.sites.keys().collect();
    assert_eq!(stored.iter().map(|m| &m.site).collect::<Vec<_>>(), sites);
    for m in &stored {
        let content = w.compiled(&m.site);
        let body: atoll_api::Manifest = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body.content, content, "site {}", m.site);
        assert_eq!(
            (body.site.as_str(), body.revision),
            (m.site.as_str(), m.revision)
        );
    }

    let mut docs = docs;
    docs[1_937] = "kind: Site\nname: s1937\nlabels: { customer: acme, region: eu-north }\n".into();
    let mut broken = World::default();
    broken.apply(&docs.join("---\n")).unwrap();
    let Err(Refusal::Invalid(d)) =
        broken.apply(&[app("1", "api:1"), DEPLOYMENT.into()].join("---\n"))
    else {
        panic!()
    };
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.ends_with("for site s1937"), "{d:?}");
}

const CAMERA: &str = "kind: DeviceClass\nname: camera\nmatch: [{ subsystem: video4linux }]\n";

fn camera_app(version: &str, requires: &str) -> String {
    format!(
        "kind: Application\nname: cam\nversion: '{version}'\nservices:\n  - name: web\n    image: web:1\n{requires}"
    )
}

const CAMERA_DEPLOYMENT: &str = "kind: Deployment\nname: d\napplication: cam\nplacement:\n  sites: has(x)\n  hosts: device.camera >= 1 && memory >= 1Gi\n";

#[test]
fn a_device_class_named_by_a_service_or_a_host_selector_must_exist() {
    let mut w = World::default();
    let requires = "    requires: { devices: [camera] }\n";
    let Err(Refusal::Invalid(d)) = w.apply(&camera_app("1", requires)) else {
        panic!()
    };
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].file.as_str(), d[0].line, d[0].path.as_str()),
        ("t.yaml", 1, "Application cam: services[0].requires.devices")
    );
    assert_eq!(d[0].message, "device class `camera` does not exist");
    assert_eq!(
        d[0].hint.as_deref(),
        Some("apply a DeviceClass named camera first, or in the same apply")
    );
    // In the same apply, or stored before: either is found.
    w.apply(&[camera_app("1", ""), CAMERA.into()].join("---\n"))
        .unwrap();
    assert!(w.state.device_classes.contains_key("camera"));
    w.apply(&camera_app("2", requires)).unwrap();
    w.apply(CAMERA_DEPLOYMENT).unwrap();
    let Err(Refusal::Invalid(d)) =
        w.apply(&CAMERA_DEPLOYMENT.replace("device.camera", "device.gpu"))
    else {
        panic!()
    };
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "Deployment d: placement.hosts");
    assert_eq!(d[0].message, "device class `gpu` does not exist");
}

#[test]
fn a_deployment_pinned_to_a_version_whose_device_class_is_gone_is_refused() {
    let mut w = World::default();
    let requires = "    requires: { devices: [camera] }\n";
    w.apply(&[CAMERA.into(), camera_app("1", requires)].join("---\n"))
        .unwrap();
    w.apply(&camera_app("2", "")).unwrap();
    // The store loads only the versions in use: version 1 is not, so the class may go.
    let key = ("cam".to_owned(), "1".to_owned());
    let v1 = w.versions.remove(&key).unwrap();
    w.delete(Kind::DeviceClass, "camera").unwrap();
    // Pinning version 1 again (a pinned version is loaded) would ask for a class that is gone.
    w.versions.insert(key, v1);
    let pinned =
        "kind: Deployment\nname: d\napplication: cam\nversion: '1'\nplacement: { sites: has(x) }\n";
    let Err(Refusal::Invalid(d)) = w.apply(pinned) else {
        panic!()
    };
    assert_eq!(
        d[0].path,
        "Deployment d: application cam version 1: services[0].requires.devices"
    );
}

#[test]
fn a_device_class_in_use_is_not_deleted() {
    let mut w = World::default();
    let requires = "    requires: { devices: [camera] }\n";
    w.apply(
        &[
            CAMERA.into(),
            camera_app("1", requires),
            CAMERA_DEPLOYMENT.into(),
        ]
        .join("---\n"),
    )
    .unwrap();
    let Err(Refusal::Conflict(d)) = w.delete(Kind::DeviceClass, "camera") else {
        panic!()
    };
    assert_eq!(d[0].path, "DeviceClass camera");
    assert_eq!(
        d[0].message,
        "in use: application cam version 1 service web requires it; deployment d places on hosts by it"
    );
    w.delete(Kind::Deployment, "d").unwrap();
    let Err(Refusal::Conflict(d)) = w.delete(Kind::DeviceClass, "camera") else {
        panic!()
    };
    assert_eq!(
        d[0].message,
        "in use: application cam version 1 service web requires it"
    );
    w.delete(Kind::Application, "cam").unwrap();
    let plan = w.delete(Kind::DeviceClass, "camera").unwrap();
    assert!(plan.manifests.is_empty());
    assert!(plan.writes.contains(&Write::DeleteResource {
        kind: "DeviceClass".into(),
        name: "camera".into(),
    }));
    assert!(w.state.device_classes.is_empty());
    assert!(matches!(
        w.delete(Kind::DeviceClass, "camera"),
        Err(Refusal::NotFound(_))
    ));
}

#[test]
fn a_device_class_is_stored_like_any_resource_and_changes_no_manifest() {
    let mut w = World::default();
    w.apply(
        &[
            app("1", "api:1"),
            DEPLOYMENT.into(),
            site("a", "customer: acme, region: eu-north"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let plan = w.apply(CAMERA).unwrap();
    assert_eq!(plan.results.len(), 1);
    assert_eq!(
        (plan.results[0].kind, plan.results[0].outcome),
        (Kind::DeviceClass, Outcome::Created)
    );
    assert!(plan.manifests.is_empty());
    let plan = w.apply(CAMERA).unwrap();
    assert_eq!(plan.results[0].outcome, Outcome::Unchanged);
    assert!(plan.writes.is_empty());
    let plan = w.apply(&CAMERA.replace("video4linux", "usb")).unwrap();
    assert_eq!(
        (plan.results[0].outcome, plan.results[0].generation),
        (Outcome::Configured, 2)
    );
}

#[test]
fn deleting() {
    let mut w = World::default();
    w.apply(
        &[
            app("1", "api:1"),
            DEPLOYMENT.into(),
            site("a", "customer: acme, region: eu-north"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let Err(Refusal::Conflict(d)) = w.delete(Kind::Application, "pos") else {
        panic!()
    };
    assert!(
        d[0].message
            .contains("deployment pos-prod runs this application")
    );
    assert!(matches!(
        w.delete(Kind::Site, "nope"),
        Err(Refusal::NotFound(_))
    ));
    let plan = w.delete(Kind::Deployment, "pos-prod").unwrap();
    assert_eq!(plan.manifests.len(), 1);
    assert!(w.placed("a").is_empty());
    w.delete(Kind::Application, "pos").unwrap();
    assert!(w.versions.is_empty());
    // A site deleted and created again continues its revisions. Its hosts are detached in the
    // deleting commit.
    let plan = w.delete(Kind::Site, "a").unwrap();
    assert!(plan.writes.contains(&Write::RetireSite {
        site: "a".into(),
        at: NOW.now.into(),
    }));
    w.apply(
        &[
            app("1", "api:1"),
            DEPLOYMENT.into(),
            site("a", "customer: acme, region: eu-north"),
        ]
        .join("---\n"),
    )
    .unwrap();
    assert_eq!(w.revision("a"), 3);
}

#[derive(Debug, Clone)]
enum Op {
    Site {
        name: usize,
        customer: usize,
        region: usize,
    },
    Deployment {
        name: usize,
        selector: usize,
    },
    DeleteDeployment(usize),
    DeleteSite(usize),
    Version(usize),
}

const SELECTORS: [&str; 5] = [
    "customer == acme",
    "region in (eu-north, eu-west)",
    "customer == acme && region != us-east",
    "!has(customer) || region notin (eu-north)",
    "has(store_id)",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6usize, 0..3usize, 0..4usize).prop_map(|(name, customer, region)| Op::Site {
            name,
            customer,
            region
        }),
        (0..3usize, 0..SELECTORS.len())
            .prop_map(|(name, selector)| Op::Deployment { name, selector }),
        (0..3usize).prop_map(Op::DeleteDeployment),
        (0..6usize).prop_map(Op::DeleteSite),
        (1..4usize).prop_map(Op::Version),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over any sequence of changes: every site's manifest holds exactly the deployments whose
    /// selectors match its labels; a revision grows exactly when the site's content changes;
    /// revisions never go back (checked in `World::commit`).
    #[test]
    fn manifests_follow_selectors_and_revisions_only_grow(ops in proptest::collection::vec(op(), 1..30)) {
        let mut w = World::default();
        w.apply(&app("1", "api:1")).unwrap();
        for op in ops {
            let before = w.state.manifests.clone();
            let result = match &op {
                Op::Site { name, customer, region } => {
                    let customer = ["acme", "other", ""][*customer];
                    let region = ["eu-north", "eu-west", "us-east", ""][*region];
                    let mut labels = Vec::new();
                    if !customer.is_empty() { labels.push(format!("customer: {customer}")); }
                    if !region.is_empty() { labels.push(format!("region: {region}")); }
                    w.apply(&site(&format!("s{name}"), &labels.join(", "))).map(drop)
                }
                Op::Deployment { name, selector } => w
                    .apply(&format!("kind: Deployment\nname: d{name}\napplication: pos\nplacement: {{ sites: '{}' }}\n", SELECTORS[*selector]))
                    .map(drop),
                Op::DeleteDeployment(n) => w.delete(Kind::Deployment, &format!("d{n}")).map(drop),
                Op::DeleteSite(n) => w.delete(Kind::Site, &format!("s{n}")).map(drop),
                Op::Version(v) => w.apply(&app(&v.to_string(), &format!("api:{v}"))).map(drop),
            };
            match result {
                Ok(()) | Err(Refusal::NotFound(_)) => {}
                Err(other) => prop_assert!(false, "{op:?} refused: {other:?}"),
            }
            for (name, entry) in &w.state.sites {
                let expected: Vec<String> = w.state.deployments.values()
                    .filter(|d| d.value.placement.sites.matches(&entry.value.labels))
                    .map(|d| d.value.name.clone()).collect();
                prop_assert_eq!(w.placed(name), expected);
                let head = &w.state.manifests[name];
                if let Some(old) = before.get(name) {
                    prop_assert_eq!(head.hash != old.hash, head.revision == old.revision + 1);
                    prop_assert!(head.revision == old.revision || head.revision == old.revision + 1);
                }
            }
        }
    }
}

#[test]
fn a_rollout_with_prefetch_lists_the_new_images_where_the_wave_has_not_opened() {
    let mut w = World::default();
    let deployment = "kind: Deployment\nname: pos-prod\napplication: pos\nplacement: { sites: 'customer == acme' }\nrollout: { canary: { sites: 1, soak: 1m }, prefetch: true }\n";
    let sites: Vec<String> = (0..4)
        .map(|i| site(&format!("s{i}"), "customer: acme"))
        .collect();
    w.apply(&[app("1", "api:1"), deployment.into(), sites.join("---\n")].join("---\n"))
        .unwrap();
    let plan = w.apply(&app("2", "api:2")).unwrap();
    let mut prefetching = Vec::new();
    let mut updating = Vec::new();
    for write in &plan.writes {
        if let Write::PutManifest(m) = write {
            let manifest: atoll_api::Manifest = serde_json::from_str(&m.body).unwrap();
            let version = &manifest.content.applications[0].version;
            if manifest.content.prefetch == ["api:2"] {
                assert_eq!(
                    version, "1",
                    "a site waiting for its wave still runs the old version"
                );
                prefetching.push(m.site.clone());
            } else {
                assert!(manifest.content.prefetch.is_empty());
                assert_eq!(version, "2");
                updating.push(m.site.clone());
            }
        }
    }
    assert_eq!(
        (updating.len(), prefetching.len()),
        (1, 3),
        "the canary updates, the others prefetch"
    );
}

/// Sets one key of a secret the way the shell does: the next version's bookkeeping and values,
/// then the plan that stores it with the manifests it changes.
fn set_secret(
    w: &mut World,
    kept: &mut BTreeMap<String, (SecretMeta, SecretValues)>,
    name: &str,
    key: &str,
    change: Change,
) {
    let (meta, values) = kept.get(name).cloned().unwrap_or_default();
    let (meta, values) = secrets::change(&meta, &values, key, change).unwrap();
    let row = SecretRow {
        name: name.into(),
        meta: serde_json::to_string(&meta).unwrap(),
        key_id: "test".into(),
        wrapped_key: Vec::new(),
        ciphertext: Vec::new(),
        updated_at: NOW.now.into(),
    };
    let plan = plan_secret(&w.state, &w.versions, name, Some((meta.clone(), row)), &NOW).unwrap();
    w.commit(&plan);
    kept.insert(name.to_owned(), (meta, values));
}

fn secret_app(name: &str, secret: &str) -> String {
    format!(
        "kind: Application\nname: {name}\nversion: '1'\nservices:\n  - name: svc\n    image: {name}:1\n    secrets: [{{ name: {secret}, key: value, path: /run/secrets/{secret} }}]\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No byte of a secret that only application A reads reaches a site that does not run A:
    /// not its manifest (the content and what is stored), not the values sealed for it.
    #[test]
    fn a_secret_reaches_only_the_sites_that_run_an_application_reading_it(
        placements in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..12),
        own_values in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let mut w = World::default();
        let mut kept = BTreeMap::new();
        let a_value = "A-only-value-7f3e9a";
        let b_value = "B-only-value-2c81d4";
        set_secret(&mut w, &mut kept, "sa", "value", Change::Shared(a_value.as_bytes().to_vec()));
        set_secret(&mut w, &mut kept, "sb", "value", Change::Shared(b_value.as_bytes().to_vec()));
        let mut docs = vec![
            secret_app("app-a", "sa"),
            secret_app("app-b", "sb"),
            "kind: Deployment\nname: da\napplication: app-a\nplacement: { sites: 'a == yes' }\n".into(),
            "kind: Deployment\nname: db\napplication: app-b\nplacement: { sites: 'b == yes' }\n".into(),
        ];
        for (i, (a, b)) in placements.iter().enumerate() {
            docs.push(format!(
                "kind: Site\nname: s{i}\nlabels: {{ a: '{}', b: '{}' }}\n",
                if *a { "yes" } else { "no" },
                if *b { "yes" } else { "no" }
            ));
        }
        w.apply(&docs.join("---\n")).unwrap();
        // Some sites get values of their own, which must stay theirs too.
        for (i, own) in own_values.iter().enumerate().take(placements.len()) {
            if *own {
                let value = format!("A-own-s{i}-91bd");
                set_secret(&mut w, &mut kept, "sa", "value", Change::Site { site: format!("s{i}"), value: value.into_bytes() });
            }
        }
        let mut plans_bytes = Vec::new();
        for (i, (runs_a, _)) in placements.iter().enumerate() {
            let name = format!("s{i}");
            let content = w.compiled(&name);
            let manifest_json = serde_json::to_string(&content).unwrap();
            let sealed = secrets::payloads(&content, &name, &kept);
            let delivered: Vec<u8> = sealed.iter().flat_map(|p| p.values.values().flatten().copied()).collect();
            let delivered = String::from_utf8_lossy(&delivered).into_owned();
            prop_assert!(!manifest_json.contains(a_value) && !manifest_json.contains(b_value));
            prop_assert!(!manifest_json.contains("-own-"));
            if *runs_a {
                prop_assert!(sealed.iter().any(|p| p.name == "sa"));
                let expected = if own_values[i] { format!("A-own-s{i}-91bd") } else { a_value.to_owned() };
                prop_assert!(delivered.contains(&expected));
            } else {
                prop_assert!(!manifest_json.contains("\"sa\""), "site {name} does not run A: {manifest_json}");
                prop_assert!(sealed.iter().all(|p| p.name != "sa"));
                prop_assert!(!delivered.contains(a_value) && !delivered.contains("A-own-"));
            }
            // Another site's own value never reaches this one.
            for j in (0..placements.len()).filter(|j| *j != i) {
                let other = format!("A-own-s{j}-91bd");
                prop_assert!(!delivered.contains(&other));
            }
        }
        // The stored rows of the plans hold bookkeeping only.
        for (meta, _) in kept.values() {
            plans_bytes.push(serde_json::to_string(meta).unwrap());
        }
        for text in plans_bytes {
            prop_assert!(!text.contains(a_value) && !text.contains(b_value) && !text.contains("-own-"));
        }
    }
}

#[test]
fn a_rotation_changes_the_manifests_of_the_sites_using_the_secret_and_no_other() {
    let mut w = World::default();
    let mut kept = BTreeMap::new();
    set_secret(
        &mut w,
        &mut kept,
        "sa",
        "value",
        Change::Shared(b"one".to_vec()),
    );
    w.apply(
        &[
            secret_app("app-a", "sa"),
            "kind: Deployment\nname: da\napplication: app-a\nplacement: { sites: 'a == yes' }\n"
                .into(),
            "kind: Site\nname: s1\nlabels: { a: 'yes' }\n".into(),
            "kind: Site\nname: s2\nlabels: { a: 'no' }\n".into(),
        ]
        .join("---\n"),
    )
    .unwrap();
    let (r1, r2) = (w.revision("s1"), w.revision("s2"));
    set_secret(
        &mut w,
        &mut kept,
        "sa",
        "value",
        Change::Shared(b"two".to_vec()),
    );
    assert_eq!((w.revision("s1"), w.revision("s2")), (r1 + 1, r2));
    // A site's own value changes only that site.
    w.apply("kind: Site\nname: s2\nlabels: { a: 'yes' }\n")
        .unwrap();
    let r2 = w.revision("s2");
    let r1 = w.revision("s1");
    set_secret(
        &mut w,
        &mut kept,
        "sa",
        "value",
        Change::Site {
            site: "s2".into(),
            value: b"mine".to_vec(),
        },
    );
    assert_eq!((w.revision("s1"), w.revision("s2")), (r1, r2 + 1));
    // A secret in use is not deleted; a missing value refuses the apply, naming the site.
    let Err(Refusal::Conflict(d)) = plan_secret(&w.state, &w.versions, "sa", None, &NOW) else {
        panic!("deleted a secret in use")
    };
    assert!(d[0].message.contains("deployment da"), "{d:?}");
    let Err(Refusal::Invalid(d)) =
        w.apply(&secret_app("app-a", "nope").replace("version: '1'", "version: '2'"))
    else {
        panic!("applied an application reading a secret that does not exist")
    };
    assert!(
        d[0].message.contains("sites s1, s2") && d[0].message.contains("`nope` does not exist"),
        "{d:?}"
    );
}

#[test]
fn deployment_variables_give_way_to_the_more_specific() {
    let mut w = World::default();
    w.apply(
        "kind: Application\nname: v\nversion: '1'\nservices:\n  - name: svc\n    image: v:1\n    env: { A: '{{ site.variables.a }}', B: '{{ site.variables.b }}', C: '{{ site.variables.c }}' }\n---\n\
kind: Deployment\nname: dv\napplication: v\nplacement: { sites: 'all == yes' }\nvariables: { a: dep, b: dep, c: dep }\noverrides:\n  - { sites: 'region == eu', variables: { b: eu, c: eu } }\n  - { site: s2, variables: { c: s2-only } }\n---\n\
kind: Site\nname: s1\nlabels: { all: 'yes', region: eu }\nvariables: { a: site-own, b: site-own }\n---\n\
kind: Site\nname: s2\nlabels: { all: 'yes', region: eu }\n---\n\
kind: Site\nname: s3\nlabels: { all: 'yes', region: us }\n",
    )
    .unwrap();
    let env = |name: &str| {
        let content = w.compiled(name);
        let e = &content.applications[0].services[0].env;
        (e["A"].clone(), e["B"].clone(), e["C"].clone())
    };
    assert_eq!(env("s1"), ("site-own".into(), "eu".into(), "eu".into()));
    assert_eq!(env("s2"), ("dep".into(), "eu".into(), "s2-only".into()));
    assert_eq!(env("s3"), ("dep".into(), "dep".into(), "dep".into()));
}

#[test]
fn templates_read_the_facts_of_the_sites_hosts_and_a_new_host_recompiles_only_its_site() {
    let mut w = World::default();
    w.apply(
        "kind: Application\nname: h\nversion: '1'\nservices:\n  - name: svc\n    image: h:1\n    env:\n      ARCH: \"{% if site.hosts %}{{ site.hosts[0].arch }}{% else %}none{% endif %}\"\n      CAMERAS: \"{{ site.hosts | map(attribute='devices') | map('selectattr', 'kind', 'eq', 'camera') | map('list') | map('length') | sum }}\"\n---\n\
kind: Deployment\nname: dh\napplication: h\nplacement: { sites: 'all == yes' }\n---\n\
kind: Site\nname: s1\nlabels: { all: 'yes' }\n---\n\
kind: Site\nname: s2\nlabels: { all: 'yes' }\n",
    )
    .unwrap();
    assert!(w.state.hosts_matter(&w.versions));
    let env = |w: &World, name: &str| {
        let content = w.compiled(name);
        content.applications[0].services[0].env.clone()
    };
    assert_eq!(env(&w, "s1")["ARCH"], "none");
    let (r1, r2) = (w.revision("s1"), w.revision("s2"));
    let inventory: atoll_api::agent::Inventory = serde_json::from_value(serde_json::json!({
        "hostname": "till-1", "arch": "aarch64", "os": "Debian 12", "kernel": "6.1", "cpus": 4,
        "cpu_model": "Cortex-A72", "memory_bytes": 4_000_000_000_u64, "disk_bytes": 32_000_000_000_u64,
        "runtime": { "name": "docker", "version": "28.2" },
        "devices": [{ "kind": "camera", "path": "/dev/video0" }, { "kind": "serial", "path": "/dev/ttyUSB0" }],
    }))
    .unwrap();
    w.state.hosts.insert(
        "s1".into(),
        vec![Host {
            name: "till-1".into(),
            inventory,
            labels: Default::default(),
        }],
    );
    let plan = plan_host_change(&w.state, &w.versions, "s1", &NOW).unwrap();
    w.commit(&plan);
    assert_eq!((w.revision("s1"), w.revision("s2")), (r1 + 1, r2));
    let e = env(&w, "s1");
    assert_eq!(
        (e["ARCH"].as_str(), e["CAMERAS"].as_str()),
        ("aarch64", "1")
    );
    // Nothing changed for the site: no new revision.
    let again = plan_host_change(&w.state, &w.versions, "s1", &NOW).unwrap();
    assert!(again.writes.is_empty());
}

#[test]
fn a_site_of_two_hosts_lists_its_members_and_one_leaving_recompiles_it() {
    let mut w = World::default();
    w.apply(
        "kind: Application\nname: p\nversion: '1'\nservices:\n  - name: svc\n    image: p:1\n---\n\
kind: Deployment\nname: dp\napplication: p\nplacement: { sites: 'all == yes' }\n---\n\
kind: Site\nname: s1\nlabels: { all: 'yes' }\n",
    )
    .unwrap();
    let member = |name: &str, address: Option<&str>| {
        let mut host = site_host(name, false, &[]);
        host.inventory.site_address = address.map(str::to_owned);
        host
    };
    let r1 = w.revision("s1");
    w.state
        .hosts
        .insert("s1".into(), vec![member("h-b", Some("10.0.0.2:7443"))]);
    let plan = plan_host_change(&w.state, &w.versions, "s1", &NOW).unwrap();
    assert!(plan.writes.is_empty(), "a site of one host lists no member");
    assert!(w.compiled("s1").site_hosts.is_empty());
    w.state
        .hosts
        .get_mut("s1")
        .unwrap()
        .insert(0, member("h-a", None));
    let plan = plan_host_change(&w.state, &w.versions, "s1", &NOW).unwrap();
    w.commit(&plan);
    assert_eq!(w.revision("s1"), r1 + 1);
    let listed = |w: &World| {
        w.compiled("s1")
            .site_hosts
            .into_iter()
            .map(|m| (m.host, m.address))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(&w),
        [
            ("h-a".to_owned(), None),
            ("h-b".to_owned(), Some("10.0.0.2:7443".to_owned()))
        ]
    );
    // A detached host is no longer among the attached hosts read: it leaves the list.
    w.state.hosts.get_mut("s1").unwrap().remove(1);
    let plan = plan_host_change(&w.state, &w.versions, "s1", &NOW).unwrap();
    w.commit(&plan);
    assert_eq!(w.revision("s1"), r1 + 2);
    assert!(listed(&w).is_empty());
}

/// A host of `site` named `name`, with an agent of this build, 4 CPUs and 8 GiB, `labels`, and
/// a camera if asked.
fn site_host(name: &str, camera: bool, labels: &[(&str, &str)]) -> Host {
    let mut devices = vec![atoll_api::host::Device {
        path: "/dev/ttyUSB0".into(),
        subsystem: "tty".into(),
        ..Default::default()
    }];
    if camera {
        devices.push(atoll_api::host::Device {
            path: "/dev/video0".into(),
            subsystem: "video4linux".into(),
            name: "HD Camera".into(),
            ..Default::default()
        });
    }
    Host {
        name: name.into(),
        inventory: atoll_api::host::Inventory {
            arch: "x86_64".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            devices,
            capabilities: atoll_api::host::capability::ALL
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            ..Default::default()
        },
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

const VISION: &str = "kind: DeviceClass\nname: camera\nmatch:\n  - subsystem: video4linux\n---\nkind: DeviceClass\nname: serial\nmatch:\n  - path: /dev/ttyUSB*\n---\nkind: Application\nname: vision\nversion: '1'\nservices:\n  - name: detect\n    image: vision:1\n    requires: { devices: [camera] }\n---\nkind: Deployment\nname: vision\napplication: vision\nplacement:\n  sites: customer == x\n  hosts: size in (medium, large, xlarge)\n---\nkind: Site\nname: x1\nlabels: { customer: x }\n---\nkind: Site\nname: x2\nlabels: { customer: x }\n---\nkind: Site\nname: x3\nlabels: { customer: x }\n---\nkind: Site\nname: y1\nlabels: { customer: y }\n";

#[test]
fn the_users_sentence_places_on_customer_x_medium_hosts_with_cameras() {
    let mut w = World::default();
    w.apply(VISION).unwrap();
    let hosts = [
        ("x1", site_host("h1", true, &[("size", "medium")])),
        ("x2", site_host("h2", true, &[("size", "small")])),
        ("x3", site_host("h3", false, &[("size", "large")])),
        ("y1", site_host("h4", true, &[("size", "large")])),
    ];
    for (site, host) in hosts {
        w.state.hosts.insert(site.into(), vec![host]);
        let plan = plan_host_change(&w.state, &w.versions, site, &NOW).unwrap();
        w.commit(&plan);
    }
    assert_eq!(w.placed("x1"), ["vision"]);
    for site in ["x2", "x3", "y1"] {
        assert!(w.placed(site).is_empty(), "{site}");
    }
    let x1 = w.compiled("x1");
    assert_eq!(
        x1.device_classes.len(),
        1,
        "only the classes the site's work names"
    );
    assert_eq!(x1.device_classes[0].name, "camera");
    assert_eq!(
        x1.applications[0].hosts.as_deref(),
        Some("size in (medium, large, xlarge)")
    );
    assert_eq!(x1.host_labels["h1"]["size"], "medium");
    let why = |site: &str| {
        w.state
            .placed(&w.state.sites[site].value, &w.versions)
            .unplaced
            .get("vision")
            .cloned()
    };
    assert_eq!(
        why("x2").unwrap(),
        "no host can run service detect: h2 does not match placement.hosts (size in (medium, large, xlarge))"
    );
    assert_eq!(
        why("x3").unwrap(),
        "no host with device class camera (h3 has: serial)"
    );
    assert_eq!(why("y1"), None, "not selected by its labels at all");
}

#[test]
fn a_site_without_hosts_gets_what_asks_nothing_of_hosts_and_waits_for_the_rest() {
    let mut w = World::default();
    w.apply(VISION).unwrap();
    assert!(w.placed("x1").is_empty());
    w.apply(&app("1", "pos:1")).unwrap();
    w.apply("kind: Deployment\nname: pos\napplication: pos\nplacement: { sites: has(store_id) }\n---\nkind: Site\nname: x1\nlabels: { customer: x, store_id: '1' }\n").unwrap();
    assert_eq!(w.placed("x1"), ["pos"]);
}

#[test]
fn a_host_change_moves_a_site_in_and_out_of_a_running_rollout() {
    let mut w = World::default();
    w.apply(VISION).unwrap();
    w.state.hosts.insert(
        "x1".into(),
        vec![site_host("h1", true, &[("size", "medium")])],
    );
    w.state.hosts.insert(
        "x2".into(),
        vec![site_host("h2", true, &[("size", "medium")])],
    );
    for site in ["x1", "x2"] {
        let plan = plan_host_change(&w.state, &w.versions, site, &NOW).unwrap();
        w.commit(&plan);
    }
    w.apply("kind: Application\nname: vision\nversion: '2'\nservices:\n  - name: detect\n    image: vision:2\n    requires: { devices: [camera] }\n").unwrap();
    let d = &w.state.deployments["vision"].value;
    let sites = |w: &World| -> Vec<String> {
        w.state
            .targets(d, &w.versions)
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(sites(&w), ["x1", "x2"]);
    w.state.hosts.insert(
        "x2".into(),
        vec![site_host("h2", false, &[("size", "medium")])],
    );
    let plan = plan_host_change(&w.state, &w.versions, "x2", &NOW).unwrap();
    let rollout_moved = plan.writes.iter().any(|w| matches!(w, Write::PutRollout(r) if r.deployment == "vision" && !r.state.contains("\"x2\"")));
    assert!(rollout_moved, "the rollout no longer counts x2");
    assert_eq!(sites(&w), ["x1"]);
}

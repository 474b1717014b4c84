//! Label changes of hosts and sites (`atoll label`): what a change makes of the labels, and,
//! for a site, the apply it amounts to.
//!
//! A site's labels are part of the Site resource, which users apply as YAML: a label change is
//! planned as the apply of that Site with its new labels ([`plan_site_labels`]), so its
//! generation grows, the manifests it changes are compiled and rollouts hear of sites joining or
//! leaving their placement exactly as after `atoll apply`. A host's labels are the control
//! plane's own record of the host; the shell stores them and recompiles the site.
//!
//! Choices where the issue is silent:
//! - Keys and values follow the rule of site labels in the spec (`names::check_label_key`,
//!   `check_label_value`), for hosts too: one rule for every label a selector reads.
//! - A host label may not take a name of the host's built-in facts (`arch`, `cpus`,
//!   `device.*`, ... [`atoll_api::host::is_reserved_label`]), neither to set nor to remove:
//!   such a label could never be read, since the fact wins.
//! - A key both set and removed in one change is refused: which one was meant cannot be told.
//! - Removing a key that is not there is no error, as with `kubectl label` (which says "not
//!   found" and goes on): the answer lists it, and the rest of the change is made.
//! - Every problem of a change is reported at once, and nothing is changed unless there is none.

use std::collections::BTreeMap;

use atoll_api::labels::{LabelChange, Labels};
use atoll_spec::names::{check_label_key, check_label_value};
use atoll_spec::{Diagnostic, Document, Origin, Resource};
use atoll_store::Write;

use super::apply::{Plan, Refusal, Request, plan_apply};
use super::state::{State, Versions};

/// Whose labels change: a host's may not take the names of its built-in facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Host,
    Site,
}

impl Owner {
    fn as_str(self) -> &'static str {
        match self {
            Owner::Host => "host",
            Owner::Site => "site",
        }
    }
}

/// The labels `change` makes of `current` for the host or site `name`, and the keys it asked to
/// remove that were not there; or every problem of the change.
pub fn apply_change(
    owner: Owner,
    name: &str,
    current: &BTreeMap<String, String>,
    change: &LabelChange,
) -> Result<Labels, Vec<Diagnostic>> {
    let problem = |path: String, message: String, hint: Option<&str>| Diagnostic {
        file: String::new(),
        line: 0,
        column: 0,
        path: format!("{} {name}: {path}", owner.as_str()),
        message,
        hint: hint.map(str::to_owned),
    };
    let mut problems = Vec::new();
    let mut check_key = |key: &str, path: String| {
        if let Err(e) = check_label_key(key) {
            problems.push(problem(path, e, None));
        } else if owner == Owner::Host && atoll_api::host::is_reserved_label(key) {
            problems.push(problem(
                path,
                format!("`{key}` is a built-in fact of every host, not a label"),
                Some(
                    "selectors read built-in facts (arch, os, cpus, memory, disk, agent_version, device.CLASS) as they are; choose another key",
                ),
            ));
        }
    };
    for key in change.set.keys() {
        check_key(key, format!("set.{key}"));
    }
    for (i, key) in change.remove.iter().enumerate() {
        check_key(key, format!("remove[{i}]"));
    }
    for (key, value) in &change.set {
        if let Err(e) = check_label_value(value) {
            problems.push(problem(format!("set.{key}"), e, None));
        }
        if let Some(i) = change.remove.iter().position(|r| r == key) {
            problems.push(problem(
                format!("remove[{i}]"),
                format!("`{key}` is both set and removed"),
                Some("set it or remove it, not both"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut labels = current.clone();
    let mut not_found = Vec::new();
    for key in &change.remove {
        labels.remove(key);
        if !current.contains_key(key) && !not_found.contains(key) {
            not_found.push(key.clone());
        }
    }
    labels.extend(change.set.clone());
    Ok(Labels { labels, not_found })
}

/// `{a=1, b=2}`: labels in an audit line.
pub fn show(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Plans changing the labels of site `name` as the apply of the Site with its new labels, and
/// audits it as a label change (`label`, old → new). An unchanged site plans no write.
pub fn plan_site_labels(
    state: &State,
    versions: &Versions,
    name: &str,
    change: &LabelChange,
    req: &Request<'_>,
) -> Result<(Plan, Labels), Refusal> {
    let Some(entry) = state.sites.get(name) else {
        return Err(Refusal::NotFound(format!("site {name} does not exist")));
    };
    let site = &entry.value;
    let result = apply_change(Owner::Site, name, &site.labels, change).map_err(Refusal::Invalid)?;
    if result.labels == site.labels {
        return Ok((Plan::default(), result));
    }
    let mut relabelled = site.clone();
    relabelled.labels = result.labels.clone();
    let doc = Document {
        resource: Resource::Site(relabelled),
        origin: Origin {
            file: format!("labels of site {name}").into(),
            line: 0,
            column: 0,
        },
    };
    let mut plan = plan_apply(state, versions, &[doc], req)?;
    let change = format!(
        "site {name} labels {} → {}",
        show(&site.labels),
        show(&result.labels)
    );
    for write in &mut plan.writes {
        if let Write::Audit { action, detail, .. } = write {
            *action = "label".into();
            *detail = format!("{change}; {detail}");
        }
    }
    Ok((plan, result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn change(set: &[(&str, &str)], remove: &[&str]) -> LabelChange {
        LabelChange {
            set: map(set),
            remove: remove.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn a_change_adds_changes_and_removes() {
        let current = map(&[("size", "small"), ("zone", "till"), ("old", "x")]);
        let out = apply_change(
            Owner::Host,
            "h1",
            &current,
            &change(&[("size", "medium"), ("rack", "3")], &["old"]),
        )
        .unwrap();
        assert_eq!(
            out.labels,
            map(&[("rack", "3"), ("size", "medium"), ("zone", "till")])
        );
        assert!(out.not_found.is_empty());
    }

    #[test]
    fn removing_a_key_that_is_not_there_is_said_not_refused() {
        let out = apply_change(
            Owner::Site,
            "s",
            &map(&[("a", "1")]),
            &change(&[("b", "2")], &["gone", "gone"]),
        )
        .unwrap();
        assert_eq!(out.labels, map(&[("a", "1"), ("b", "2")]));
        assert_eq!(out.not_found, ["gone"]);
    }

    #[test]
    fn a_host_label_may_not_take_the_name_of_a_built_in_fact() {
        let problems = apply_change(
            Owner::Host,
            "h1",
            &BTreeMap::new(),
            &change(&[("arch", "arm64"), ("size", "large")], &["device.camera"]),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path, "host h1: set.arch");
        assert!(
            problems[0].message.contains("built-in fact"),
            "{problems:?}"
        );
        assert_eq!(problems[1].path, "host h1: remove[0]");
        // A site has no built-in facts.
        assert!(
            apply_change(
                Owner::Site,
                "s",
                &BTreeMap::new(),
                &change(&[("arch", "arm64")], &[])
            )
            .is_ok()
        );
    }

    #[test]
    fn keys_and_values_follow_the_rule_of_site_labels_and_every_problem_is_said() {
        let long = "v".repeat(257);
        let problems = apply_change(
            Owner::Site,
            "s",
            &BTreeMap::new(),
            &change(&[("-bad", "x"), ("ok", &long), ("tab", "a\tb")], &["", "x"]),
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "site s: set.-bad",
                "site s: remove[0]",
                "site s: set.ok",
                "site s: set.tab"
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn a_key_both_set_and_removed_is_refused() {
        let problems = apply_change(
            Owner::Host,
            "h1",
            &map(&[("size", "small")]),
            &change(&[("size", "large")], &["zone", "size"]),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "host h1: remove[1]");
        assert!(problems[0].message.contains("both set and removed"));
    }

    const NOW: Request<'static> = Request {
        now: "2026-12-03T00:00:00Z",
        now_ms: 1_796_256_000_000,
        actor: "ops",
        limits: atoll_spec::render::Limits::DEFAULT,
    };

    fn state_with_site() -> State {
        let mut state = State::default();
        state.sites.insert(
            "store-1".into(),
            super::super::state::Entry {
                value: atoll_spec::Site {
                    name: "store-1".into(),
                    description: Some("kept".into()),
                    labels: map(&[("region", "eu")]),
                    variables: map(&[("tz", "UTC")]),
                    cluster: None,
                },
                generation: 3,
                created_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        state
    }

    #[test]
    fn a_site_label_change_is_the_apply_of_the_site_with_its_new_labels() {
        let state = state_with_site();
        let (plan, labels) = plan_site_labels(
            &state,
            &Versions::new(),
            "store-1",
            &change(&[("customer", "x")], &[]),
            &NOW,
        )
        .unwrap();
        assert_eq!(labels.labels, map(&[("customer", "x"), ("region", "eu")]));
        let put = plan
            .writes
            .iter()
            .find_map(|w| match w {
                Write::PutResource(row) => Some(row),
                _ => None,
            })
            .expect("the site is written");
        assert_eq!((put.kind.as_str(), put.generation), ("Site", 4));
        assert_eq!(put.created_at, "2026-01-01T00:00:00Z");
        let Resource::Site(site) = serde_json::from_str(&put.spec).unwrap() else {
            panic!("{}", put.spec)
        };
        assert_eq!(site.labels, labels.labels);
        assert_eq!(site.variables, map(&[("tz", "UTC")]), "the rest is kept");
        assert_eq!(site.description.as_deref(), Some("kept"));
        let audits: Vec<(&str, &str, &str)> = plan
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Audit {
                    actor,
                    action,
                    detail,
                    ..
                } => Some((actor.as_str(), action.as_str(), detail.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(audits.len(), 1, "{audits:?}");
        assert_eq!(audits[0].0, "ops");
        assert_eq!(audits[0].1, "label");
        assert!(
            audits[0]
                .2
                .starts_with("site store-1 labels {region=eu} → {customer=x, region=eu}; Site store-1 generation 4"),
            "{}",
            audits[0].2
        );
    }

    #[test]
    fn a_site_label_change_that_changes_nothing_writes_nothing() {
        let state = state_with_site();
        let (plan, labels) = plan_site_labels(
            &state,
            &Versions::new(),
            "store-1",
            &change(&[("region", "eu")], &["absent"]),
            &NOW,
        )
        .unwrap();
        assert!(plan.writes.is_empty(), "{:?}", plan.writes);
        assert_eq!(labels.not_found, ["absent"]);
    }

    #[test]
    fn an_unknown_site_is_not_found_and_a_bad_change_invalid() {
        let state = state_with_site();
        let none = plan_site_labels(&state, &Versions::new(), "nope", &change(&[], &[]), &NOW);
        assert!(matches!(none, Err(Refusal::NotFound(m)) if m == "site nope does not exist"));
        let bad = plan_site_labels(
            &state,
            &Versions::new(),
            "store-1",
            &change(&[("a", "1")], &["a"]),
            &NOW,
        );
        assert!(matches!(bad, Err(Refusal::Invalid(d)) if d.len() == 1));
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "size", "zone"]).prop_map(str::to_owned)
    }

    proptest! {
        /// Whatever the change, the result holds every key set with its value, no key removed,
        /// and every other key as it was; a key not there to remove is listed once.
        #[test]
        fn a_valid_change_sets_removes_and_keeps_the_rest(
            current in prop::collection::btree_map(key(), "[a-z]{0,3}", 0..5),
            set in prop::collection::btree_map(key(), "[a-z]{0,3}", 0..4),
            remove in prop::collection::vec(key(), 0..4),
        ) {
            let change = LabelChange { set: set.clone(), remove: remove.clone() };
            let both = remove.iter().any(|k| set.contains_key(k));
            match apply_change(Owner::Host, "h", &current, &change) {
                Err(problems) => prop_assert!(both, "{problems:?}"),
                Ok(out) => {
                    prop_assert!(!both);
                    for (k, v) in &set {
                        prop_assert_eq!(out.labels.get(k), Some(v));
                    }
                    for k in &remove {
                        prop_assert!(!out.labels.contains_key(k));
                        prop_assert_eq!(out.not_found.contains(k), !current.contains_key(k));
                    }
                    for (k, v) in &current {
                        if !set.contains_key(k) && !remove.contains(k) {
                            prop_assert_eq!(out.labels.get(k), Some(v));
                        }
                    }
                    prop_assert!(out.labels.keys().all(|k| current.contains_key(k) || set.contains_key(k)));
                    let mut unique = out.not_found.clone();
                    unique.dedup();
                    prop_assert_eq!(unique.len(), out.not_found.len());
                }
            }
        }
    }
}

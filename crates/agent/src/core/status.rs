//! What each replica is doing, for the report to the control plane and `atoll get`.
//!
//! Derived from the same snapshot as the plan (desired, observed, images present, the memory of
//! restarts and failed pulls), and through the same pairing of replicas with containers, so the
//! status never describes a container the plan would not act on. The result is the wire type,
//! [`atoll_api::agent::ReplicaStatus`], so that what the core decides is exactly what is sent.
//!
//! The states, as the core assigns them:
//!
//! - `running`: its container, of the desired spec, runs.
//! - `starting`: its container has the desired spec but is not running yet: created, exited and
//!   waiting to be restarted, or in a passing state (paused, restarting, being removed).
//! - `pulling`: no container yet, and its image is not on the host.
//! - `missing`: no container, and the image is present: the next plan creates it.
//! - `replacing`: a container of an older spec runs (or ran) while the new image is pulled, or
//!   until the next plan replaces it.
//! - `failed`: an operator or the rollout controller should look: its image cannot be pulled, its
//!   container cannot be created (the runtime refused it), or it crashed more than
//!   [`FAILED_AFTER_RESTARTS`] times without becoming stable. The agent keeps
//!   trying either way; `failed` is a report, not a verdict.

use std::collections::{BTreeMap, BTreeSet};

use atoll_api::agent::{ReplicaState, ReplicaStatus};
use atoll_runtime::{Container, State};

use super::backoff::{FAILED_AFTER_RESTARTS, Memory, STABLE_AFTER};
use super::desired::{LABEL_SPEC_HASH, LABEL_VERSION, Replica};
use super::plan::match_containers;

/// One status per desired replica, sorted by deployment, service and replica index.
///
/// Of the fields: `container_id` is the container the state describes (the current one, or the
/// old one while replacing); `image` is the image the replica should run; `restarts` counts
/// restarts since the container last was stable; `since` is when the container started if it
/// runs, when it stopped if it exited; `message` says what a person should know, for every state
/// but running.
///
/// `images_present` tells pulling from about-to-be-created; `pull_errors` holds the last error of
/// each image whose pull failed (the shell clears an image's entry when a pull succeeds).
pub fn status(
    desired: &[Replica],
    observed: &[Container],
    images_present: &BTreeSet<String>,
    memory: &Memory,
    pull_errors: &BTreeMap<String, String>,
) -> Vec<ReplicaStatus> {
    let mut statuses: Vec<ReplicaStatus> = match_containers(desired, observed)
        .slots
        .iter()
        .map(|slot| {
            let replica = slot.replica;
            let image = &replica.spec.image;
            let restarts = memory.restart_count(&replica.spec.name);
            let mut s = ReplicaStatus {
                deployment: replica.key.deployment.clone(),
                service: replica.key.service.clone(),
                replica: replica.key.index,
                state: ReplicaState::Missing,
                container_id: slot.container.map(|c| c.id.clone()),
                image: image.clone(),
                restarts,
                last_exit_code: None,
                since: None,
                message: None,
                version: replica.spec.labels.get(LABEL_VERSION).cloned(),
                health: None,
            };
            if let Some(c) = slot.container {
                if let State::Exited { code } = c.state {
                    s.last_exit_code = Some(code);
                }
                s.since = match c.state {
                    State::Running => c.started_at.clone(),
                    State::Exited { .. } => c.finished_at.clone(),
                    State::Created | State::Other => None,
                };
            }
            let pull_error = pull_errors.get(image);
            let (state, message) = match slot.container {
                Some(c) if has_hash(c, &replica.spec_hash) => {
                    if restarts > FAILED_AFTER_RESTARTS {
                        (ReplicaState::Failed, Some(crash_loop(restarts, c)))
                    } else {
                        current(c)
                    }
                }
                Some(c) => match pull_error {
                    Some(e) => (
                        ReplicaState::Failed,
                        Some(format!(
                            "pulling {image} failed: {e}; {}",
                            if c.state == State::Running {
                                "the previous version keeps running"
                            } else {
                                "the previous version is not running"
                            }
                        )),
                    ),
                    None if images_present.contains(image) => (
                        ReplicaState::Replacing,
                        Some(format!("replacing {} with {image}", c.image)),
                    ),
                    None => (
                        ReplicaState::Replacing,
                        Some(format!(
                            "pulling {image}; {} keeps running until it is present",
                            c.image
                        )),
                    ),
                },
                None => match pull_error {
                    Some(e) => (
                        ReplicaState::Failed,
                        Some(format!("pulling {image} failed: {e}")),
                    ),
                    None if images_present.contains(image) => {
                        match memory.create_failures.get(&replica.spec.name) {
                            Some(f) => (
                                ReplicaState::Failed,
                                Some(format!(
                                    "cannot be created ({} tries): {}; trying again with backoff",
                                    f.count, f.error
                                )),
                            ),
                            None => (
                                ReplicaState::Missing,
                                Some("no container yet; it is created next".to_owned()),
                            ),
                        }
                    }
                    None => (ReplicaState::Pulling, Some(format!("pulling {image}"))),
                },
            };
            s.state = state;
            s.message = message;
            s
        })
        .collect();

    statuses.sort_by(|a, b| {
        (&a.deployment, &a.service, a.replica).cmp(&(&b.deployment, &b.service, b.replica))
    });
    statuses
}

fn has_hash(c: &Container, hash: &str) -> bool {
    c.labels.get(LABEL_SPEC_HASH).map(String::as_str) == Some(hash)
}

/// The state of a container of the desired spec that is not crash-looping.
fn current(c: &Container) -> (ReplicaState, Option<String>) {
    match c.state {
        State::Running => (ReplicaState::Running, None),
        State::Created => (
            ReplicaState::Starting,
            Some("created, not started yet".to_owned()),
        ),
        State::Exited { code } => (
            ReplicaState::Starting,
            Some(format!("exited with code {code}; restarting")),
        ),
        State::Other => (
            ReplicaState::Starting,
            Some("paused, restarting or being removed by the runtime".to_owned()),
        ),
    }
}

fn crash_loop(restarts: u32, c: &Container) -> String {
    let exit = match c.state {
        State::Exited { code } => format!("; last exit code {code}"),
        _ => String::new(),
    };
    format!(
        "restarted {restarts} times without running {}s{exit}; see its logs",
        STABLE_AFTER.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::core::backoff::RestartInfo;
    use crate::core::desired::desired;
    use crate::core::fixtures::{
        FINISHED_AT, STARTED_AT, container_of, foreign, manifest, outdated, service, stray,
    };

    fn web(replicas: u32) -> Vec<Replica> {
        let mut svc = service("web", "nginx:1");
        svc.replicas = replicas;
        desired("s1", &manifest(vec![("shop", svc)]), Path::new("/f"))
    }

    fn present() -> BTreeSet<String> {
        BTreeSet::from(["nginx:1".to_owned()])
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn errors(image: &str, e: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(image.to_owned(), e.to_owned())])
    }

    fn restarts(name: &str, count: u32) -> Memory {
        let mut m = Memory::default();
        m.restarts.insert(
            name.into(),
            RestartInfo {
                count,
                not_before_ms: 0,
            },
        );
        m
    }

    fn one(
        d: &[Replica],
        observed: &[Container],
        images: &BTreeSet<String>,
        memory: &Memory,
        pull_errors: &BTreeMap<String, String>,
    ) -> ReplicaStatus {
        let mut all = status(d, observed, images, memory, pull_errors);
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    #[test]
    fn running_says_since_when_and_nothing_else() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Running);
        let s = one(&d, &[c], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(
            s,
            ReplicaStatus {
                deployment: "shop".into(),
                service: "web".into(),
                replica: 0,
                state: ReplicaState::Running,
                container_id: Some("c1".into()),
                image: "nginx:1".into(),
                restarts: 0,
                last_exit_code: None,
                since: Some(STARTED_AT.into()),
                message: None,
                version: Some("1.0.0".into()),
                health: None,
            }
        );
    }

    #[test]
    fn running_counts_restarts_below_the_limit() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Running);
        let m = restarts(&c.name, FAILED_AFTER_RESTARTS);
        let s = one(&d, &[c], &present(), &m, &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Running);
        assert_eq!(s.restarts, 5);
    }

    #[test]
    fn exited_is_starting_with_its_exit_code_and_when_it_stopped() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 2 });
        let s = one(
            &d,
            &[c],
            &present(),
            &restarts("atoll_s1_shop_web_0", 1),
            &BTreeMap::new(),
        );
        assert_eq!(s.state, ReplicaState::Starting);
        assert_eq!(s.last_exit_code, Some(2));
        assert_eq!(s.since.as_deref(), Some(FINISHED_AT));
        assert_eq!(s.restarts, 1);
        assert_eq!(s.message.as_deref(), Some("exited with code 2; restarting"));
    }

    #[test]
    fn created_is_starting() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Created);
        let s = one(&d, &[c], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Starting);
        assert_eq!(s.since, None);
        assert_eq!(s.last_exit_code, None);
    }

    #[test]
    fn other_runtime_states_are_starting() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Other);
        let s = one(&d, &[c], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Starting);
        assert_eq!(s.since, None);
    }

    #[test]
    fn more_restarts_than_the_limit_is_failed_even_while_running() {
        let d = web(1);
        for state in [State::Running, State::Exited { code: 139 }] {
            let c = container_of(&d[0], "c1", state);
            let m = restarts(&c.name, FAILED_AFTER_RESTARTS + 1);
            let s = one(&d, &[c], &present(), &m, &BTreeMap::new());
            assert_eq!(s.state, ReplicaState::Failed, "{state:?}");
            assert_eq!(s.restarts, 6);
            let message = s.message.unwrap_or_default();
            assert!(
                message.starts_with("restarted 6 times without running 60s"),
                "{message}"
            );
            if state != State::Running {
                assert!(message.contains("last exit code 139"), "{message}");
            }
        }
    }

    #[test]
    fn no_container_and_no_image_is_pulling() {
        let d = web(1);
        let s = one(&d, &[], &none(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Pulling);
        assert_eq!(s.container_id, None);
        assert_eq!(s.message.as_deref(), Some("pulling nginx:1"));
    }

    #[test]
    fn no_container_with_the_image_present_is_missing() {
        let d = web(1);
        let s = one(&d, &[], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Missing);
    }

    #[test]
    fn a_create_that_keeps_failing_is_failed_with_the_runtimes_words() {
        let d = web(1);
        let mut m = Memory::default();
        m.record_failed_create(&d[0].spec.name, 0, "minimum memory limit is 6MB".into());
        m.record_failed_create(&d[0].spec.name, 0, "minimum memory limit is 6MB".into());
        let s = one(&d, &[], &present(), &m, &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some(
                "cannot be created (2 tries): minimum memory limit is 6MB; trying again with backoff"
            )
        );
    }

    #[test]
    fn a_pull_error_is_failed_with_the_error() {
        let d = web(1);
        let e = errors("nginx:1", "manifest unknown");
        let s = one(&d, &[], &none(), &Memory::default(), &e);
        assert_eq!(s.state, ReplicaState::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some("pulling nginx:1 failed: manifest unknown")
        );
    }

    #[test]
    fn another_images_pull_error_does_not_matter() {
        let d = web(1);
        let e = errors("redis:7", "denied");
        let s = one(&d, &[], &none(), &Memory::default(), &e);
        assert_eq!(s.state, ReplicaState::Pulling);
    }

    #[test]
    fn an_old_spec_running_during_the_pull_is_replacing() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let s = one(&d, &[old], &none(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Replacing);
        assert_eq!(s.container_id.as_deref(), Some("old"));
        assert_eq!(s.image, "nginx:1");
        assert_eq!(s.since.as_deref(), Some(STARTED_AT));
        assert_eq!(
            s.message.as_deref(),
            Some("pulling nginx:1; old-image:0 keeps running until it is present")
        );
    }

    #[test]
    fn an_old_spec_with_the_new_image_present_is_replacing() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let s = one(&d, &[old], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Replacing);
        assert_eq!(
            s.message.as_deref(),
            Some("replacing old-image:0 with nginx:1")
        );
    }

    #[test]
    fn an_old_spec_whose_new_image_fails_to_pull_is_failed() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let e = errors("nginx:1", "denied");
        let s = one(&d, &[old], &none(), &Memory::default(), &e);
        assert_eq!(s.state, ReplicaState::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some("pulling nginx:1 failed: denied; the previous version keeps running")
        );
        let stopped = outdated(&d[0], "old", State::Exited { code: 1 });
        let s = one(&d, &[stopped], &none(), &Memory::default(), &e);
        assert_eq!(s.last_exit_code, Some(1));
        assert!(s.message.unwrap_or_default().ends_with("is not running"));
    }

    #[test]
    fn the_crash_count_of_an_old_spec_does_not_fail_the_new_one() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let m = restarts(&old.name, 9);
        let s = one(&d, &[old], &none(), &m, &BTreeMap::new());
        assert_eq!(s.state, ReplicaState::Replacing);
    }

    #[test]
    fn duplicates_report_the_container_the_plan_keeps() {
        let d = web(1);
        let old = outdated(&d[0], "a", State::Running);
        let good = container_of(&d[0], "b", State::Exited { code: 0 });
        let s = one(
            &d,
            &[old, good],
            &present(),
            &Memory::default(),
            &BTreeMap::new(),
        );
        assert_eq!(s.container_id.as_deref(), Some("b"));
        assert_eq!(s.state, ReplicaState::Starting);
    }

    #[test]
    fn unmanaged_and_unwanted_containers_get_no_status() {
        let d = web(1);
        let observed = [
            foreign("f", &d[0].spec.name),
            stray("x", "atoll_s1_old_x_0", State::Running),
        ];
        let s = one(
            &d,
            &observed,
            &present(),
            &Memory::default(),
            &BTreeMap::new(),
        );
        assert_eq!(s.state, ReplicaState::Missing);
        assert_eq!(s.container_id, None);
    }

    fn keys(all: &[ReplicaStatus]) -> Vec<String> {
        all.iter()
            .map(|s| format!("{}/{}/{}", s.deployment, s.service, s.replica))
            .collect()
    }

    #[test]
    fn one_status_per_replica_in_key_order() {
        let mut d = web(3);
        d.reverse();
        let all = status(&d, &[], &present(), &Memory::default(), &BTreeMap::new());
        assert_eq!(keys(&all), ["shop/web/0", "shop/web/1", "shop/web/2"]);
    }

    #[test]
    fn statuses_sort_by_key_not_by_container_name() {
        // By name, `atoll_s1_a-b_c_0` sorts before `atoll_s1_a_b-c_0`, and `web_10` before
        // `web_2`; the report is in key order all the same.
        let mut web = service("web", "nginx:1");
        web.replicas = 11;
        let d = desired(
            "s1",
            &manifest(vec![
                ("a-b", service("c", "nginx:1")),
                ("a", service("b-c", "nginx:1")),
                ("shop", web),
            ]),
            Path::new("/f"),
        );
        let all = status(&d, &[], &present(), &Memory::default(), &BTreeMap::new());
        let want: Vec<String> = ["a/b-c/0", "a-b/c/0"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..11).map(|i| format!("shop/web/{i}")))
            .collect();
        assert_eq!(keys(&all), want);
    }

    #[test]
    fn serializes_flat_in_snake_case() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 1 });
        let s = one(&d, &[c], &present(), &Memory::default(), &BTreeMap::new());
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "deployment": "shop",
                "service": "web",
                "replica": 0,
                "state": "starting",
                "container_id": "c1",
                "image": "nginx:1",
                "restarts": 0,
                "last_exit_code": 1,
                "since": FINISHED_AT,
                "message": "exited with code 1; restarting",
                "version": "1.0.0",
            })
        );
        let back: Option<ReplicaStatus> = serde_json::from_value(json).ok();
        assert_eq!(back, Some(s));
    }

    #[test]
    fn absent_options_are_left_out() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Created);
        let mut s = one(&d, &[c], &present(), &Memory::default(), &BTreeMap::new());
        s.message = None;
        s.version = None;
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "deployment": "shop",
                "service": "web",
                "replica": 0,
                "state": "starting",
                "container_id": "c1",
                "image": "nginx:1",
                "restarts": 0,
            })
        );
        let back: Option<ReplicaStatus> = serde_json::from_value(json).ok();
        assert_eq!(back, Some(s));
    }

    #[test]
    fn every_state_has_a_snake_case_name() {
        let names: Vec<serde_json::Value> = [
            ReplicaState::Running,
            ReplicaState::Starting,
            ReplicaState::Pulling,
            ReplicaState::Failed,
            ReplicaState::Missing,
            ReplicaState::Replacing,
        ]
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
        assert_eq!(
            names,
            [
                "running",
                "starting",
                "pulling",
                "failed",
                "missing",
                "replacing"
            ]
        );
    }
}

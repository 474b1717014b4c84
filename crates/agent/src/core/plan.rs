//! The reconciler's decision: from the replicas this host must run and the containers it has, the
//! actions that bring one to the other, and when to look again.
//!
//! The plan is **level-triggered**: it sees only `(desired, observed)`, never "what changed", so
//! it does not matter which runtime event, manifest or timer woke the shell, whether an event was
//! lost, or whether the agent restarted in between: the same state yields the same plan, and a
//! plan whose effects were applied yields nothing more to do. A healthy container is never touched
//! because the agent restarted.
//!
//! It owns only containers labelled `io.atoll.managed=true`; anything else on the host never
//! appears in an action, even if its name is one the agent wants.
//!
//! The actions come in a fixed order. **Pulls first**: they are the slow part, touch nothing
//! that runs (a new version's image is fetched while the old version keeps serving) and the shell
//! can run them in the background while it does the rest. **Removals of unwanted containers
//! next**, so the host ports, names and memory they hold are free before anything is created.
//! **Then replacements, creations and starts**, by container name. An old container is replaced
//! only once the new image is present, so a switch-over is never left half done by a slow or
//! failing pull.
//!
//! A stopped container with the right spec is started again, unless its bind mounts are not
//! the replica's: an agent reinstalled with a new data folder adopts containers whose files
//! are mounted from the old one, which may be gone ("bind source path does not exist", for
//! ever). Such a container is recreated instead ([`Action::Recreate`]), with no failed start
//! first. Only a stopped one: the spec hash leaves the agent's folders out precisely so that a
//! running container is never replaced because the agent moved, and this keeps to it. The
//! mounts are compared as the runtime lists them, so a runtime that reports a source otherwise
//! than it was given (a symbolic link resolved) costs a recreation, under the restart backoff,
//! where a start would do, never a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use atoll_runtime::{Container, State};

use super::backoff::Memory;
use super::desired::{LABEL_MANAGED, LABEL_SPEC_HASH, MANAGED_VALUE, Replica};

/// How soon to look again at a container in a state the agent does not act on (paused,
/// restarting, being removed): such states pass without an event the agent would act on.
pub const TRANSIENT_REQUEUE_MS: u64 = 1_000;

/// What to do now, and when to plan again even if nothing happens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pulls, then removals, then replacements, creations and starts; see the module docs.
    pub actions: Vec<Action>,
    /// Plan again after this many milliseconds: the earliest time a restart or pull that is
    /// waiting now may go ahead, or [`TRANSIENT_REQUEUE_MS`]. `None`: nothing is waiting on the
    /// clock; runtime events and the periodic pass are enough.
    pub requeue_after_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull an image that a replica needs and the host lacks.
    Pull { image: String },
    /// Write the replica's files, then create and start its container.
    Create { replica: Replica },
    /// Start a stopped (or never started) container that has the right spec.
    Start { id: String, name: String },
    /// The replica's image is present and its container has another spec: remove the old
    /// container, then write the files and create and start the new one (same name).
    Replace { old_id: String, replica: Replica },
    /// A stopped container with the replica's spec mounts host paths that are not the
    /// replica's (files kept by an agent with another data folder): remove it, then write the
    /// files and create and start a new one (same name). It counts as a restart of the
    /// replica, with the restart backoff.
    Recreate { old_id: String, replica: Replica },
    /// Remove a managed container that no replica wants, or a duplicate of one that does.
    Remove { id: String, name: String },
}

/// The actions that bring `observed` to `desired`.
///
/// `desired` are replicas as [`desired`](super::desired::desired) returns them: distinct keys,
/// hence distinct container names. `observed` should hold the containers labelled managed for this site; any container without
/// the managed label is ignored all the same. `images_present` are the image references present
/// on the host, as written in the specs. `memory` holds restart backoffs and failed pulls;
/// `now_ms` is the current time in milliseconds since the Unix epoch.
pub fn plan(
    desired: &[Replica],
    observed: &[Container],
    images_present: &BTreeSet<String>,
    memory: &Memory,
    now_ms: u64,
) -> Plan {
    let matching = match_containers(desired, observed);
    let mut pulls = BTreeSet::new();
    let mut changes = Vec::new();
    let mut requeue = Requeue::default();

    for slot in &matching.slots {
        let replica = slot.replica;
        let image = &replica.spec.image;
        let present = images_present.contains(image);
        match slot.container {
            None if present => {
                let not_before = memory.create_not_before_ms(&replica.spec.name);
                if now_ms >= not_before {
                    changes.push(Action::Create {
                        replica: replica.clone(),
                    });
                } else {
                    requeue.after(not_before - now_ms);
                }
            }
            None => want_pull(image, memory, now_ms, &mut pulls, &mut requeue),
            Some(c) if has_hash(c, &replica.spec_hash) => match c.state {
                State::Running => {}
                State::Created | State::Exited { .. } => {
                    let not_before = memory.restarts.get(&c.name).map_or(0, |r| r.not_before_ms);
                    if now_ms < not_before {
                        requeue.after(not_before - now_ms);
                    } else if !mounts_elsewhere(c, replica) {
                        changes.push(Action::Start {
                            id: c.id.clone(),
                            name: c.name.clone(),
                        });
                    } else if present {
                        changes.push(Action::Recreate {
                            old_id: c.id.clone(),
                            replica: replica.clone(),
                        });
                    } else {
                        want_pull(image, memory, now_ms, &mut pulls, &mut requeue);
                    }
                }
                State::Other => requeue.after(TRANSIENT_REQUEUE_MS),
            },
            Some(c) if present => changes.push(Action::Replace {
                old_id: c.id.clone(),
                replica: replica.clone(),
            }),
            // The old container keeps running, untouched, until the new image is here.
            Some(_) => want_pull(image, memory, now_ms, &mut pulls, &mut requeue),
        }
    }

    let mut actions: Vec<Action> = pulls
        .into_iter()
        .map(|image| Action::Pull { image })
        .collect();
    actions.extend(matching.surplus.iter().map(|c| Action::Remove {
        id: c.id.clone(),
        name: c.name.clone(),
    }));
    actions.extend(changes);
    Plan {
        actions,
        requeue_after_ms: requeue.0,
    }
}

/// Whether the agent owns `container`: it carries `io.atoll.managed=true`.
pub fn is_managed(container: &Container) -> bool {
    container.labels.get(LABEL_MANAGED).map(String::as_str) == Some(MANAGED_VALUE)
}

fn has_hash(container: &Container, hash: &str) -> bool {
    container.labels.get(LABEL_SPEC_HASH).map(String::as_str) == Some(hash)
}

/// Whether `container` bind-mounts other host paths than `replica` binds. A replica missing a
/// secret lacks that secret's mount, so its spec is not the whole story: its container is
/// taken as it is.
fn mounts_elsewhere(container: &Container, replica: &Replica) -> bool {
    if !replica.missing_secrets.is_empty() {
        return false;
    }
    let mut wanted: Vec<&Path> = replica
        .spec
        .binds
        .iter()
        .map(|b| b.source.as_path())
        .collect();
    wanted.sort_unstable();
    let mut has: Vec<&Path> = container.bind_sources.iter().map(|p| p.as_path()).collect();
    has.sort_unstable();
    wanted != has
}

fn want_pull(
    image: &str,
    memory: &Memory,
    now_ms: u64,
    pulls: &mut BTreeSet<String>,
    requeue: &mut Requeue,
) {
    match memory.pull_not_before_ms.get(image) {
        Some(&not_before) if not_before > now_ms => requeue.after(not_before - now_ms),
        _ => {
            pulls.insert(image.to_owned());
        }
    }
}

/// The soonest of the times something waits for.
#[derive(Default)]
struct Requeue(Option<u64>);

impl Requeue {
    fn after(&mut self, ms: u64) {
        self.0 = Some(self.0.map_or(ms, |r| r.min(ms)));
    }
}

/// Desired replicas paired with the managed containers that hold their names. Shared by the plan
/// and the status so that both see the same container for a replica.
#[derive(Debug)]
pub(crate) struct Matching<'a> {
    /// One per desired replica (each has its own container name), in name order.
    pub slots: Vec<Slot<'a>>,
    /// Managed containers that no replica keeps, by name then id.
    pub surplus: Vec<&'a Container>,
}

#[derive(Debug)]
pub(crate) struct Slot<'a> {
    pub replica: &'a Replica,
    /// Of several managed containers with the replica's name, the one kept: one with the desired
    /// spec hash if any, a running one before a stopped one, then the smallest id.
    pub container: Option<&'a Container>,
}

pub(crate) fn match_containers<'a>(
    desired: &'a [Replica],
    observed: &'a [Container],
) -> Matching<'a> {
    let mut ordered: Vec<&Replica> = desired.iter().collect();
    ordered.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));

    let mut groups: BTreeMap<&str, Vec<&Container>> = BTreeMap::new();
    for c in observed.iter().filter(|c| is_managed(c)) {
        groups.entry(&c.name).or_default().push(c);
    }

    let mut slots = Vec::with_capacity(ordered.len());
    let mut surplus = Vec::new();
    for replica in ordered {
        let mut group = groups
            .remove(replica.spec.name.as_str())
            .unwrap_or_default();
        group.sort_by_key(|c| {
            (
                !has_hash(c, &replica.spec_hash),
                c.state != State::Running,
                &c.id,
            )
        });
        let mut group = group.into_iter();
        let container = group.next();
        surplus.extend(group);
        slots.push(Slot { replica, container });
    }
    surplus.extend(groups.into_values().flatten());
    surplus.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Matching { slots, surplus }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use atoll_api::agent::ReplicaState;
    use proptest::prelude::*;

    use super::*;
    use crate::core::backoff::{CreateFailure, RestartInfo};
    use crate::core::desired::{LABEL_SPEC_HASH, desired};
    use crate::core::fixtures::{
        container_of, foreign, manifest, mounted_elsewhere, outdated, service, stray,
    };
    use crate::core::status::status;

    const NOW: u64 = 1_000_000;

    fn web(replicas: u32) -> Vec<Replica> {
        let mut svc = service("web", "nginx:1");
        svc.replicas = replicas;
        desired("s1", &manifest(vec![("shop", svc)]), Path::new("/f"))
    }

    fn images(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn present() -> BTreeSet<String> {
        images(&["nginx:1"])
    }

    fn run(desired: &[Replica], observed: &[Container], images: &BTreeSet<String>) -> Plan {
        plan(desired, observed, images, &Memory::default(), NOW)
    }

    fn backoff(name: &str, not_before_ms: u64) -> Memory {
        let mut m = Memory::default();
        m.restarts.insert(
            name.into(),
            RestartInfo {
                count: 3,
                not_before_ms,
            },
        );
        m
    }

    fn pull(image: &str) -> Action {
        Action::Pull {
            image: image.into(),
        }
    }

    fn start(c: &Container) -> Action {
        Action::Start {
            id: c.id.clone(),
            name: c.name.clone(),
        }
    }

    fn remove(c: &Container) -> Action {
        Action::Remove {
            id: c.id.clone(),
            name: c.name.clone(),
        }
    }

    // Desired with no container.

    #[test]
    fn missing_container_with_image_present_is_created() {
        let d = web(1);
        let p = run(&d, &[], &present());
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[0].clone()
            }]
        );
        assert_eq!(p.requeue_after_ms, None);
    }

    #[test]
    fn missing_container_without_image_is_pulled_first() {
        let p = run(&web(1), &[], &images(&[]));
        assert_eq!(p.actions, [pull("nginx:1")]);
        assert_eq!(p.requeue_after_ms, None);
    }

    #[test]
    fn an_image_is_pulled_once_per_plan() {
        let p = run(&web(3), &[], &images(&[]));
        assert_eq!(p.actions, [pull("nginx:1")]);
    }

    #[test]
    fn a_pull_waits_while_it_is_backing_off_and_requeues_then() {
        let mut m = Memory::default();
        m.pull_not_before_ms.insert("nginx:1".into(), NOW + 7_000);
        let p = plan(&web(2), &[], &images(&[]), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(7_000));
    }

    #[test]
    fn a_pull_goes_ahead_once_its_backoff_has_passed() {
        let mut m = Memory::default();
        m.pull_not_before_ms.insert("nginx:1".into(), NOW);
        let p = plan(&web(1), &[], &images(&[]), &m, NOW);
        assert_eq!(p.actions, [pull("nginx:1")]);
    }

    #[test]
    fn a_pull_backoff_does_not_block_a_present_image() {
        let mut m = Memory::default();
        m.pull_not_before_ms.insert("nginx:1".into(), NOW + 7_000);
        let d = web(1);
        let p = plan(&d, &[], &present(), &m, NOW);
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[0].clone()
            }]
        );
    }

    #[test]
    fn a_create_that_keeps_failing_waits_for_its_backoff_and_requeues_then() {
        let d = web(1);
        let mut m = Memory::default();
        m.record_failed_create(&d[0].spec.name, NOW, "minimum memory limit is 6MB".into());
        m.record_failed_create(&d[0].spec.name, NOW, "minimum memory limit is 6MB".into());
        let p = plan(&d, &[], &present(), &m, NOW);
        assert_eq!(p.actions, [], "not tried again every pass");
        assert_eq!(p.requeue_after_ms, Some(2_000));
        let p = plan(&d, &[], &present(), &m, NOW + 2_000);
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[0].clone()
            }]
        );
    }

    #[test]
    fn a_failed_create_does_not_hold_back_another_replica() {
        let d = web(2);
        let mut m = Memory::default();
        m.record_failed_create(&d[0].spec.name, NOW, "refused".into());
        let p = plan(&d, &[], &present(), &m, NOW);
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[1].clone()
            }]
        );
        assert_eq!(p.requeue_after_ms, Some(1_000));
    }

    // Container with the desired spec.

    #[test]
    fn running_with_the_desired_spec_is_left_alone() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Running);
        assert_eq!(run(&d, &[c], &present()), Plan::default());
    }

    #[test]
    fn running_with_the_desired_spec_needs_no_image() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Running);
        assert_eq!(run(&d, &[c], &images(&[])), Plan::default());
    }

    #[test]
    fn exited_is_started_at_once_without_backoff() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 1 });
        let want = start(&c);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn exited_without_its_image_is_still_started() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 0 });
        let want = start(&c);
        assert_eq!(run(&d, &[c], &images(&[])).actions, [want]);
    }

    #[test]
    fn created_but_never_started_is_started() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Created);
        let want = start(&c);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn exited_waits_for_its_backoff_and_requeues_then() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 1 });
        let m = backoff(&c.name, NOW + 4_000);
        let p = plan(&d, &[c], &present(), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(4_000));
    }

    #[test]
    fn created_waits_for_its_backoff_too() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Created);
        let m = backoff(&c.name, NOW + 1);
        let p = plan(&d, &[c], &present(), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(1));
    }

    #[test]
    fn exited_starts_when_its_backoff_ends_exactly_now() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 1 });
        let m = backoff(&c.name, NOW);
        let want = start(&c);
        assert_eq!(plan(&d, &[c], &present(), &m, NOW).actions, [want]);
    }

    #[test]
    fn another_containers_backoff_does_not_hold_this_one() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Exited { code: 1 });
        let m = backoff("atoll_s1_shop_other_0", NOW + 4_000);
        let want = start(&c);
        assert_eq!(plan(&d, &[c], &present(), &m, NOW).actions, [want]);
    }

    #[test]
    fn a_backoff_does_not_touch_a_running_container() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Running);
        let m = backoff(&c.name, NOW + 4_000);
        assert_eq!(plan(&d, &[c], &present(), &m, NOW), Plan::default());
    }

    #[test]
    fn other_states_are_left_alone_and_looked_at_again_soon() {
        let d = web(1);
        let c = container_of(&d[0], "c1", State::Other);
        let p = run(&d, &[c], &present());
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(TRANSIENT_REQUEUE_MS));
        assert_eq!(TRANSIENT_REQUEUE_MS, 1_000);
    }

    #[test]
    fn the_soonest_wait_wins() {
        let d = web(3);
        let a = container_of(&d[0], "a", State::Exited { code: 1 });
        let b = container_of(&d[1], "b", State::Other);
        let c = container_of(&d[2], "c", State::Exited { code: 1 });
        let mut m = backoff(&a.name, NOW + 30_000);
        m.restarts.insert(
            c.name.clone(),
            RestartInfo {
                count: 1,
                not_before_ms: NOW + 500,
            },
        );
        let p = plan(&d, &[a, b, c], &present(), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(500));
    }

    // Container with the desired spec, its files mounted from elsewhere.

    /// A replica with a rendered file, as `desired` makes it under `/f`.
    fn web_with_a_file() -> Vec<Replica> {
        let mut svc = service("web", "nginx:1");
        svc.files = vec![atoll_api::manifest::RenderedFile {
            path: "/etc/web.toml".into(),
            content: "a = 1".into(),
            mode: 0o644,
        }];
        desired("s1", &manifest(vec![("shop", svc)]), Path::new("/f"))
    }

    fn recreate(c: &Container, replica: &Replica) -> Action {
        Action::Recreate {
            old_id: c.id.clone(),
            replica: replica.clone(),
        }
    }

    #[test]
    fn a_stopped_container_mounted_from_another_data_folder_is_recreated_not_started() {
        let d = web_with_a_file();
        let c = mounted_elsewhere(&d[0], "c1", State::Exited { code: 137 });
        let want = recreate(&c, &d[0]);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn a_never_started_container_mounted_elsewhere_is_recreated_too() {
        let d = web_with_a_file();
        let c = mounted_elsewhere(&d[0], "c1", State::Created);
        let want = recreate(&c, &d[0]);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn a_container_missing_a_mount_the_replica_wants_is_recreated() {
        let d = web_with_a_file();
        let mut c = container_of(&d[0], "c1", State::Exited { code: 0 });
        c.bind_sources.clear();
        let want = recreate(&c, &d[0]);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn a_running_container_mounted_elsewhere_is_left_alone() {
        let d = web_with_a_file();
        let c = mounted_elsewhere(&d[0], "c1", State::Running);
        assert_eq!(run(&d, &[c], &present()), Plan::default());
    }

    #[test]
    fn a_recreation_waits_for_the_restart_backoff() {
        let d = web_with_a_file();
        let c = mounted_elsewhere(&d[0], "c1", State::Exited { code: 1 });
        let m = backoff(&c.name, NOW + 4_000);
        let p = plan(&d, std::slice::from_ref(&c), &present(), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(4_000));
        let want = recreate(&c, &d[0]);
        assert_eq!(plan(&d, &[c], &present(), &m, NOW + 4_000).actions, [want]);
    }

    #[test]
    fn a_recreation_pulls_the_image_first_when_it_is_gone() {
        let d = web_with_a_file();
        let c = mounted_elsewhere(&d[0], "c1", State::Exited { code: 1 });
        assert_eq!(run(&d, &[c], &images(&[])).actions, [pull("nginx:1")]);
    }

    #[test]
    fn mounts_are_compared_in_any_order() {
        let mut svc = service("web", "nginx:1");
        svc.files = ["/etc/a", "/etc/b", "/etc/c"]
            .map(|path| atoll_api::manifest::RenderedFile {
                path: path.into(),
                content: String::new(),
                mode: 0o644,
            })
            .to_vec();
        let d = desired("s1", &manifest(vec![("shop", svc)]), Path::new("/f"));
        let mut c = container_of(&d[0], "c1", State::Exited { code: 0 });
        c.bind_sources.reverse();
        let want = start(&c);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    #[test]
    fn a_replica_missing_a_secret_takes_its_stopped_container_as_it_is() {
        let mut d = web_with_a_file();
        d[0].missing_secrets = vec!["db".into()];
        let c = mounted_elsewhere(&d[0], "c1", State::Exited { code: 0 });
        let want = start(&c);
        assert_eq!(run(&d, &[c], &present()).actions, [want]);
    }

    // Container with another spec.

    #[test]
    fn another_spec_is_replaced_once_the_new_image_is_present() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        assert_eq!(
            run(&d, &[old], &present()).actions,
            [Action::Replace {
                old_id: "old".into(),
                replica: d[0].clone()
            }]
        );
    }

    #[test]
    fn another_spec_keeps_running_while_the_new_image_is_pulled() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let p = run(&d, &[old], &images(&["old-image:0"]));
        assert_eq!(p.actions, [pull("nginx:1")]);
    }

    #[test]
    fn another_spec_is_not_even_restarted_while_the_new_image_is_pulled() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Exited { code: 1 });
        assert_eq!(run(&d, &[old], &images(&[])).actions, [pull("nginx:1")]);
    }

    #[test]
    fn another_spec_waits_for_a_pull_backoff() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Running);
        let mut m = Memory::default();
        m.pull_not_before_ms.insert("nginx:1".into(), NOW + 2_000);
        let p = plan(&d, &[old], &images(&[]), &m, NOW);
        assert_eq!(p.actions, []);
        assert_eq!(p.requeue_after_ms, Some(2_000));
    }

    #[test]
    fn a_stopped_container_of_another_spec_is_replaced_too() {
        let d = web(1);
        let old = outdated(&d[0], "old", State::Exited { code: 0 });
        assert_eq!(
            run(&d, &[old], &present()).actions,
            [Action::Replace {
                old_id: "old".into(),
                replica: d[0].clone()
            }]
        );
    }

    #[test]
    fn a_container_without_a_spec_hash_is_replaced() {
        let d = web(1);
        let mut old = container_of(&d[0], "old", State::Running);
        old.labels.remove(LABEL_SPEC_HASH);
        assert_eq!(
            run(&d, &[old], &present()).actions,
            [Action::Replace {
                old_id: "old".into(),
                replica: d[0].clone()
            }]
        );
    }

    // Containers nobody wants.

    #[test]
    fn a_managed_container_nobody_wants_is_removed() {
        let gone = stray("x", "atoll_s1_old_web_0", State::Running);
        let want = remove(&gone);
        assert_eq!(run(&[], &[gone], &present()).actions, [want]);
    }

    #[test]
    fn a_replica_beyond_the_count_is_removed() {
        let three = web(3);
        let one = web(1);
        let observed: Vec<Container> = three
            .iter()
            .enumerate()
            .map(|(i, r)| container_of(r, &format!("c{i}"), State::Running))
            .collect();
        assert_eq!(
            run(&one, &observed, &present()).actions,
            [remove(&observed[1]), remove(&observed[2])]
        );
    }

    #[test]
    fn unwanted_containers_are_removed_in_any_state() {
        let observed = [
            stray("a", "atoll_s1_x_a_0", State::Created),
            stray("b", "atoll_s1_x_b_0", State::Exited { code: 3 }),
            stray("c", "atoll_s1_x_c_0", State::Other),
        ];
        let p = run(&[], &observed, &present());
        assert_eq!(p.actions, observed.iter().map(remove).collect::<Vec<_>>());
    }

    #[test]
    fn of_two_containers_for_one_name_the_desired_spec_is_kept() {
        let d = web(1);
        let good = container_of(&d[0], "b-good", State::Running);
        let old = outdated(&d[0], "a-old", State::Running);
        let p = run(&d, &[old.clone(), good], &present());
        assert_eq!(p.actions, [remove(&old)]);
    }

    #[test]
    fn of_two_with_the_desired_spec_the_running_one_is_kept() {
        let d = web(1);
        let stopped = container_of(&d[0], "a", State::Exited { code: 0 });
        let running = container_of(&d[0], "b", State::Running);
        let p = run(&d, &[stopped.clone(), running], &present());
        assert_eq!(p.actions, [remove(&stopped)]);
    }

    #[test]
    fn the_desired_spec_is_kept_even_when_stopped() {
        let d = web(1);
        let stopped = container_of(&d[0], "b", State::Exited { code: 0 });
        let old = outdated(&d[0], "a", State::Running);
        let p = run(&d, &[old.clone(), stopped.clone()], &present());
        assert_eq!(p.actions, [remove(&old), start(&stopped)]);
    }

    #[test]
    fn of_two_of_another_spec_one_is_replaced_and_the_other_removed() {
        let d = web(1);
        let a = outdated(&d[0], "a", State::Exited { code: 0 });
        let b = outdated(&d[0], "b", State::Running);
        let p = run(&d, &[a.clone(), b], &present());
        assert_eq!(
            p.actions,
            [
                remove(&a),
                Action::Replace {
                    old_id: "b".into(),
                    replica: d[0].clone()
                }
            ]
        );
    }

    #[test]
    fn among_equals_the_smallest_id_is_kept() {
        let d = web(1);
        let a = container_of(&d[0], "a", State::Running);
        let b = container_of(&d[0], "b", State::Running);
        let p = run(&d, &[b.clone(), a], &present());
        assert_eq!(p.actions, [remove(&b)]);
    }

    // Containers the agent does not own.

    #[test]
    fn unmanaged_containers_are_never_touched() {
        let p = run(&[], &[foreign("f", "postgres")], &present());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn an_unmanaged_container_with_a_desired_name_is_not_mistaken_for_it() {
        let d = web(1);
        let squatter = foreign("f", &d[0].spec.name);
        let p = run(&d, &[squatter], &present());
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[0].clone()
            }]
        );
    }

    #[test]
    fn a_managed_label_other_than_true_is_not_ours() {
        let d = web(1);
        let mut c = container_of(&d[0], "c", State::Running);
        c.labels.insert(LABEL_MANAGED.into(), "false".into());
        let gone = {
            let mut g = stray("g", "atoll_s1_x_y_0", State::Running);
            g.labels.insert(LABEL_MANAGED.into(), "yes".into());
            g
        };
        let p = run(&d, &[c, gone], &present());
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[0].clone()
            }]
        );
    }

    // Order.

    #[test]
    fn pulls_then_removals_then_the_rest_each_by_name() {
        let mut api = service("api", "api:2");
        api.replicas = 1;
        let mut web = service("web", "nginx:1");
        web.replicas = 3;
        let db = service("db", "postgres:16");
        let cache = service("cache", "redis:7");
        let d = desired(
            "s1",
            &manifest(vec![
                ("shop", api),
                ("shop", web),
                ("shop", db),
                ("shop", cache),
            ]),
            Path::new("/f"),
        );
        let by_name = |n: &str| d.iter().find(|r| r.spec.name == n).cloned();
        let (Some(api0), Some(web0), Some(web1), Some(web2), Some(db0)) = (
            by_name("atoll_s1_shop_api_0"),
            by_name("atoll_s1_shop_web_0"),
            by_name("atoll_s1_shop_web_1"),
            by_name("atoll_s1_shop_web_2"),
            by_name("atoll_s1_shop_db_0"),
        ) else {
            panic!("replicas missing");
        };
        let observed = [
            stray("z", "atoll_s1_zzz_a_0", State::Running),
            container_of(&web2, "w2", State::Exited { code: 1 }),
            outdated(&web0, "w0", State::Running),
            outdated(&api0, "a0", State::Running),
            stray("b", "atoll_s1_bbb_a_0", State::Running),
            container_of(&db0, "d0", State::Running),
        ];
        let p = run(&d, &observed, &images(&["nginx:1", "postgres:16"]));
        assert_eq!(
            p.actions,
            [
                pull("api:2"),
                pull("redis:7"),
                remove(&observed[4]),
                remove(&observed[0]),
                Action::Replace {
                    old_id: "w0".into(),
                    replica: web0
                },
                Action::Create { replica: web1 },
                start(&observed[1]),
            ]
        );
    }

    #[test]
    fn the_order_of_the_inputs_does_not_matter() {
        let d = web(3);
        let observed = vec![
            outdated(&d[0], "a", State::Running),
            container_of(&d[1], "b", State::Exited { code: 1 }),
            stray("c", "atoll_s1_old_x_0", State::Running),
            foreign("f", "nginx"),
        ];
        let forward = run(&d, &observed, &present());
        let mut rd = d.clone();
        rd.reverse();
        let mut ro = observed.clone();
        ro.reverse();
        assert_eq!(run(&rd, &ro, &present()), forward);
    }

    #[test]
    fn replicas_whose_names_differ_only_in_dashes_each_get_a_container() {
        // `a-b`/`c` and `a`/`b-c` once made the same container name; the plan must neither
        // replace one with the other nor leave one out.
        let d = desired(
            "s1",
            &manifest(vec![
                ("a-b", service("c", "one:1")),
                ("a", service("b-c", "two:1")),
            ]),
            Path::new("/f"),
        );
        let running = container_of(&d[0], "c", State::Running);
        let p = run(&d, &[running], &images(&["one:1", "two:1"]));
        assert_eq!(
            p.actions,
            [Action::Create {
                replica: d[1].clone()
            }]
        );
    }

    // Properties.

    /// What the runtime would look like once the shell performed `actions`.
    fn apply(
        actions: &[Action],
        observed: &mut Vec<Container>,
        images: &mut BTreeSet<String>,
        next_id: &mut u32,
    ) {
        let mut fresh = |replica: &Replica, observed: &mut Vec<Container>| {
            *next_id += 1;
            observed.push(container_of(
                replica,
                &format!("new{next_id}"),
                State::Running,
            ));
        };
        for action in actions {
            match action {
                Action::Pull { image } => {
                    images.insert(image.clone());
                }
                Action::Create { replica } => fresh(replica, observed),
                Action::Start { id, .. } => {
                    for c in observed.iter_mut().filter(|c| &c.id == id) {
                        c.state = State::Running;
                    }
                }
                Action::Replace { old_id, replica } | Action::Recreate { old_id, replica } => {
                    observed.retain(|c| &c.id != old_id);
                    fresh(replica, observed);
                }
                Action::Remove { id, .. } => observed.retain(|c| &c.id != id),
            }
        }
    }

    const IMAGES: [&str; 3] = ["nginx:1", "nginx:2", "api:1"];
    const STATES: [State; 4] = [
        State::Running,
        State::Created,
        State::Exited { code: 137 },
        State::Other,
    ];

    #[derive(Debug, Clone)]
    struct Scenario {
        /// (deployment, service, replicas, image, env variant, every host)
        services: Vec<(usize, usize, u32, usize, u8, bool)>,
        /// Per desired replica: what the host has for it, and in which state.
        per_replica: Vec<(u8, usize, usize)>,
        strays: Vec<usize>,
        foreigners: usize,
        present: [bool; 3],
        /// Per image: no pull backoff, one that passed, one in the future.
        pull_backoff: [u8; 3],
        /// Per desired replica: no restart backoff, one that passed, one in the future.
        restart_backoff: Vec<u8>,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (
            prop::collection::vec(
                (
                    0..2usize,
                    0..3usize,
                    0..4u32,
                    0..3usize,
                    0..3u8,
                    any::<bool>(),
                ),
                0..6,
            ),
            prop::collection::vec((0..8u8, 0..4usize, 0..4usize), 0..20),
            prop::collection::vec(0..4usize, 0..4),
            0..3usize,
            any::<[bool; 3]>(),
            any::<[u8; 3]>(),
            prop::collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(
                |(services, per_replica, strays, foreigners, present, pull_backoff, rb)| Scenario {
                    services,
                    per_replica,
                    strays,
                    foreigners,
                    present,
                    pull_backoff: pull_backoff.map(|b| b % 3),
                    restart_backoff: rb.into_iter().map(|b| b % 3).collect(),
                },
            )
    }

    struct World {
        desired: Vec<Replica>,
        observed: Vec<Container>,
        images: BTreeSet<String>,
        memory: Memory,
    }

    fn build(s: &Scenario) -> World {
        // With `-` for a separator, `a`/`b-api` and `a-b`/`api` would share a container name.
        let deployments = ["a", "a-b"];
        let names = ["api", "b-api", "web"];
        let mut seen = BTreeSet::new();
        let mut services = Vec::new();
        for &(d, n, replicas, image, env, every_host) in &s.services {
            if !seen.insert((d, n)) {
                continue;
            }
            let mut svc = service(names[n], IMAGES[image]);
            svc.replicas = replicas;
            if every_host {
                svc.mode = atoll_spec::application::Mode::EveryHost;
            }
            if env > 0 {
                svc.env.insert("VARIANT".into(), env.to_string());
            }
            services.push((deployments[d], svc));
        }
        let desired = desired("s1", &manifest(services), Path::new("/f"));

        let mut observed = Vec::new();
        let mut id = 0;
        let mut next = || {
            id += 1;
            format!("c{id}")
        };
        for (replica, &(what, s1, s2)) in desired.iter().zip(&s.per_replica) {
            let (a, b) = (STATES[s1], STATES[s2]);
            match what {
                0 => {}
                1 => observed.push(container_of(replica, &next(), a)),
                2 => observed.push(outdated(replica, &next(), a)),
                3 => {
                    observed.push(container_of(replica, &next(), a));
                    observed.push(outdated(replica, &next(), b));
                }
                4 => {
                    observed.push(outdated(replica, &next(), a));
                    observed.push(outdated(replica, &next(), b));
                }
                5 => {
                    observed.push(container_of(replica, &next(), a));
                    observed.push(container_of(replica, &next(), b));
                }
                6 => observed.push(mounted_elsewhere(replica, &next(), a)),
                _ => observed.push(foreign(&next(), &replica.spec.name)),
            }
        }
        for (i, &state) in s.strays.iter().enumerate() {
            observed.push(stray(
                &next(),
                &format!("atoll_s1_gone_x_{i}"),
                STATES[state],
            ));
        }
        for i in 0..s.foreigners {
            observed.push(foreign(&next(), &format!("other-{i}")));
        }

        let images = IMAGES
            .iter()
            .zip(s.present)
            .filter(|(_, p)| *p)
            .map(|(i, _)| (*i).to_owned())
            .collect();
        let mut memory = Memory::default();
        for (image, b) in IMAGES.iter().zip(s.pull_backoff) {
            match b {
                1 => {
                    memory.pull_not_before_ms.insert((*image).into(), NOW - 1);
                }
                2 => {
                    memory
                        .pull_not_before_ms
                        .insert((*image).into(), NOW + 9_000);
                }
                _ => {}
            }
        }
        for (replica, &b) in desired.iter().zip(&s.restart_backoff) {
            let not_before_ms = match b {
                1 => NOW - 1,
                2 => NOW + 3_000,
                _ => continue,
            };
            memory.restarts.insert(
                replica.spec.name.clone(),
                RestartInfo {
                    count: 2,
                    not_before_ms,
                },
            );
            // The same replica's creation failed as often, and waits as long.
            memory.create_failures.insert(
                replica.spec.name.clone(),
                CreateFailure {
                    count: 2,
                    not_before_ms,
                    error: "refused".into(),
                },
            );
        }
        World {
            desired,
            observed,
            images,
            memory,
        }
    }

    fn group(action: &Action) -> u8 {
        match action {
            Action::Pull { .. } => 0,
            Action::Remove { .. } => 1,
            _ => 2,
        }
    }

    fn sort_key(action: &Action) -> String {
        match action {
            Action::Pull { image } => image.clone(),
            Action::Remove { name, id } => format!("{name}\0{id}"),
            Action::Start { name, .. } => name.clone(),
            Action::Create { replica }
            | Action::Replace { replica, .. }
            | Action::Recreate { replica, .. } => replica.spec.name.clone(),
        }
    }

    fn container_ids(action: &Action) -> Vec<&str> {
        match action {
            Action::Start { id, .. } | Action::Remove { id, .. } => vec![id],
            Action::Replace { old_id, .. } | Action::Recreate { old_id, .. } => vec![old_id],
            Action::Pull { .. } | Action::Create { .. } => vec![],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn plans_are_well_formed(s in scenario()) {
            let w = build(&s);
            let p = plan(&w.desired, &w.observed, &w.images, &w.memory, NOW);
            prop_assert_eq!(&p, &plan(&w.desired, &w.observed, &w.images, &w.memory, NOW));

            // Pulls, then removals, then the rest; each group sorted by name.
            let keys: Vec<(u8, String)> =
                p.actions.iter().map(|a| (group(a), sort_key(a))).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&keys, &sorted);
            sorted.dedup();
            prop_assert_eq!(sorted.len(), keys.len(), "an action is repeated");

            // Only managed containers that exist, each in one action at most.
            let mut touched = BTreeSet::new();
            for id in p.actions.iter().flat_map(container_ids) {
                let c = w.observed.iter().find(|c| c.id == id);
                prop_assert!(c.is_some_and(is_managed), "{id} is not a managed container");
                prop_assert!(touched.insert(id), "{id} is in two actions");
            }

            for a in &p.actions {
                match a {
                    Action::Pull { image } => {
                        prop_assert!(!w.images.contains(image));
                        let nb = w.memory.pull_not_before_ms.get(image).copied().unwrap_or(0);
                        prop_assert!(nb <= NOW);
                    }
                    Action::Create { replica } => {
                        prop_assert!(w.images.contains(&replica.spec.image));
                        prop_assert!(w.memory.create_not_before_ms(&replica.spec.name) <= NOW);
                    }
                    Action::Replace { replica, .. } => {
                        prop_assert!(w.images.contains(&replica.spec.image));
                    }
                    Action::Start { name, .. } => {
                        let nb = w.memory.restarts.get(name).map_or(0, |r| r.not_before_ms);
                        prop_assert!(nb <= NOW);
                    }
                    Action::Recreate { old_id, replica } => {
                        prop_assert!(w.images.contains(&replica.spec.image));
                        let name = &replica.spec.name;
                        let nb = w.memory.restarts.get(name).map_or(0, |r| r.not_before_ms);
                        prop_assert!(nb <= NOW);
                        let old = w.observed.iter().find(|c| &c.id == old_id);
                        let stopped_elsewhere = |c: &&Container| {
                            c.state != State::Running && mounts_elsewhere(c, replica)
                        };
                        prop_assert!(
                            old.is_some_and(|c| stopped_elsewhere(&c)),
                            "{old_id} recreated without cause"
                        );
                    }
                    Action::Remove { .. } => {}
                }
            }
            if let Some(ms) = p.requeue_after_ms {
                prop_assert!(ms > 0);
            }
        }

        #[test]
        fn applying_a_plan_converges_and_then_there_is_nothing_to_do(s in scenario()) {
            let w = build(&s);
            let foreign_before: Vec<Container> =
                w.observed.iter().filter(|c| !is_managed(c)).cloned().collect();
            let (mut observed, mut images, mut next_id) = (w.observed.clone(), w.images.clone(), 0);

            let first = plan(&w.desired, &observed, &images, &w.memory, NOW);
            apply(&first.actions, &mut observed, &mut images, &mut next_id);
            let second = plan(&w.desired, &observed, &images, &w.memory, NOW);
            if !first.actions.iter().any(|a| matches!(a, Action::Pull { .. })) {
                prop_assert_eq!(&second.actions, &Vec::new(), "not idempotent");
            }
            prop_assert!(
                !second.actions.iter().any(|a| matches!(a, Action::Pull { .. })),
                "a second pull"
            );
            apply(&second.actions, &mut observed, &mut images, &mut next_id);
            let third = plan(&w.desired, &observed, &images, &w.memory, NOW);
            prop_assert_eq!(&third.actions, &Vec::new(), "no convergence in two rounds");

            // Foreign containers are exactly as they were.
            let foreign_after: Vec<Container> =
                observed.iter().filter(|c| !is_managed(c)).cloned().collect();
            prop_assert_eq!(foreign_before, foreign_after);

            // Every managed container left belongs to a replica, one per name, and every
            // replica is running its spec unless it waits on the clock.
            let mut waiting = false;
            let managed: Vec<&Container> = observed.iter().filter(|c| is_managed(c)).collect();
            for c in &managed {
                prop_assert!(w.desired.iter().any(|r| r.spec.name == c.name), "{} left", c.name);
                prop_assert_eq!(managed.iter().filter(|o| o.name == c.name).count(), 1);
            }
            for r in &w.desired {
                let c = managed.iter().find(|c| c.name == r.spec.name);
                let restart_blocked =
                    w.memory.restarts.get(&r.spec.name).is_some_and(|i| i.not_before_ms > NOW);
                let pull_blocked = !images.contains(&r.spec.image)
                    && w.memory.pull_not_before_ms.get(&r.spec.image).is_some_and(|&t| t > NOW);
                let create_blocked = w.memory.create_not_before_ms(&r.spec.name) > NOW;
                match c {
                    Some(c) if has_hash(c, &r.spec_hash) => match c.state {
                        State::Running => {}
                        State::Other => waiting = true,
                        _ => {
                            prop_assert!(
                                restart_blocked || (mounts_elsewhere(c, r) && pull_blocked),
                                "{} not started",
                                c.name
                            );
                            waiting = true;
                        }
                    },
                    _ => {
                        prop_assert!(pull_blocked || create_blocked, "{} not brought up", r.spec.name);
                        waiting = true;
                    }
                }
            }
            prop_assert_eq!(third.requeue_after_ms.is_some(), waiting);

            // One status per replica, before and after; all running once nothing waits.
            let none = BTreeMap::new();
            let before = status(&w.desired, &w.observed, &w.images, &w.memory, &none);
            prop_assert_eq!(before.len(), w.desired.len());
            let after = status(&w.desired, &observed, &images, &w.memory, &none);
            prop_assert_eq!(after.len(), w.desired.len());
            prop_assert_eq!(
                after.iter().all(|s| s.state == ReplicaState::Running),
                !waiting
            );

            // With nothing waiting, the host is exactly the desired state.
            if !waiting {
                let mut names: Vec<&str> = managed.iter().map(|c| c.name.as_str()).collect();
                names.sort_unstable();
                let mut want: Vec<&str> = w.desired.iter().map(|r| r.spec.name.as_str()).collect();
                want.sort_unstable();
                prop_assert_eq!(names, want);
            }
        }
    }
}

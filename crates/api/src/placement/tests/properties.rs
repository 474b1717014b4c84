//! Properties of the decision over random sites: random hosts (capacity, labels, devices),
//! random deployments (replicas, every-host, requirements, resources, a host selector) and
//! random previous placements, some naming hosts, services and indexes that are gone.

use proptest::prelude::*;

use super::*;

const SIZES: [&str; 3] = ["small", "medium", "large"];
const SERVICES: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];
const DEPLOYMENTS: [&str; 3] = ["d0", "d1", "d2"];

/// One drawn service: replicas, deployment index, requirements, every host, CPU, memory.
type Drawn = (u32, u8, Requires, bool, u64, u64);

/// One drawn previous entry: deployment, service, index, host (`h5` is never a host).
type Ran = (u8, u8, u32, u8);

#[derive(Debug, Clone)]
struct Case {
    hosts: Vec<Host>,
    services: Vec<Drawn>,
    /// Whether `d1` has the host selector `size in (medium, large)`.
    selected: bool,
    ran: Vec<Ran>,
}

fn arbitrary_host() -> impl Strategy<Value = (u32, u64, bool, bool, u8)> {
    (0u32..8, 0u64..16, any::<bool>(), any::<bool>(), 0u8..3)
}

fn arbitrary_service() -> impl Strategy<Value = Drawn> {
    (
        prop_oneof![8 => 0u32..5, 1 => Just(MAX_REPLICAS + 1)],
        0u8..3,
        any::<bool>(),
        proptest::option::of(0u8..3),
        any::<bool>(),
        0u64..3000,
        0u64..(6u64 << 30),
    )
        .prop_map(|(replicas, deployment, camera, size, every, cpu, memory)| {
            let requires = Requires {
                devices: if camera {
                    vec!["camera".into()]
                } else {
                    vec![]
                },
                host_labels: size
                    .map(|s| ("size".to_owned(), SIZES[usize::from(s)].to_owned()))
                    .into_iter()
                    .collect(),
                arch: None,
            };
            (replicas, deployment, requires, every, cpu, memory)
        })
}

fn arbitrary_case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(arbitrary_host(), 0..5),
        proptest::collection::vec(arbitrary_service(), 1..6),
        any::<bool>(),
        proptest::collection::vec((0u8..3, 0u8..6, 0u32..5, 0u8..6), 0..16),
    )
        .prop_map(|(hosts, services, selected, ran)| Case {
            hosts: hosts
                .into_iter()
                .enumerate()
                .map(|(i, (cpus, mem, camera, serial, size))| {
                    let mut devices = Vec::new();
                    if camera {
                        devices.push("/dev/video0");
                    }
                    if serial {
                        devices.push("/dev/ttyUSB0");
                    }
                    host(
                        &format!("h{i}"),
                        cpus,
                        mem,
                        &devices,
                        &[("size", SIZES[usize::from(size)])],
                    )
                })
                .collect(),
            services,
            selected,
            ran,
        })
}

fn medium_or_large() -> Selector {
    Selector::parse("size in (medium, large)").unwrap()
}

fn wants<'a>(case: &'a Case, selector: &'a Selector) -> Vec<Want<'a>> {
    let mut out = Vec::new();
    for (i, name) in DEPLOYMENTS.iter().enumerate() {
        let services: Vec<ServiceWant<'_>> = case
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| usize::from(s.1) == i)
            .map(
                |(j, (replicas, _, requires, every, cpu, memory))| ServiceWant {
                    name: SERVICES[j],
                    replicas: *replicas,
                    every_host: *every,
                    requires: requires.clone(),
                    cpu_millis: *cpu,
                    memory: *memory,
                },
            )
            .collect();
        if !services.is_empty() {
            out.push(Want {
                deployment: name,
                hosts: (i == 1 && case.selected).then_some(selector),
                services,
            });
        }
    }
    out
}

fn previous(case: &Case) -> Previous {
    let mut p = Previous::default();
    for &(d, s, index, h) in &case.ran {
        p.insert(
            DEPLOYMENTS[usize::from(d)],
            SERVICES[usize::from(s)],
            index,
            &format!("h{h}"),
        );
    }
    p
}

fn classes() -> [DeviceClass; 2] {
    [camera_class(), serial_class()]
}

fn abundant(hosts: &mut [Host]) {
    for h in hosts {
        h.inventory.cpus = 1_000_000;
        h.inventory.memory_bytes = u64::MAX / 2;
    }
}

/// What is left of each host once the decision's replicas reserve theirs.
fn left(hosts: &[Host], wants: &[Want<'_>], d: &Decision) -> BTreeMap<String, (u64, u64)> {
    let mut left: BTreeMap<String, (u64, u64)> = hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                (u64::from(h.inventory.cpus) * 1000, h.inventory.memory_bytes),
            )
        })
        .collect();
    for want in wants {
        for a in d.placed.get(want.deployment).into_iter().flatten() {
            let s = want.services.iter().find(|s| s.name == a.service).unwrap();
            let l = left.get_mut(&a.host).unwrap();
            l.0 = l.0.checked_sub(s.cpu_millis).expect("CPU overcommitted");
            l.1 = l.1.checked_sub(s.memory).expect("memory overcommitted");
        }
    }
    left
}

fn qualifying(host: &Host, want: &Want<'_>, s: &ServiceWant<'_>) -> bool {
    let classes = classes();
    qualifies(
        host,
        &host.facts(&classes),
        &classes,
        want.hosts,
        &s.requires,
    )
    .is_ok()
}

/// Every invariant one decision must hold, whatever it was made from.
fn holds(
    hosts: &[Host],
    wants: &[Want<'_>],
    previous: &Previous,
    d: &Decision,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.placed.len() + d.unplaced.len(), wants.len());
    let left = left(hosts, wants, d);
    let room = |h: &Host, s: &ServiceWant<'_>| {
        let l = left[&h.name];
        l.0 >= s.cpu_millis && l.1 >= s.memory
    };
    for want in wants {
        let Some(assignments) = d.placed.get(want.deployment) else {
            continue;
        };
        prop_assert!(!d.unplaced.contains_key(want.deployment));
        let served: usize = want
            .services
            .iter()
            .map(|s| assignments.iter().filter(|a| a.service == s.name).count())
            .sum();
        prop_assert_eq!(served, assignments.len(), "a replica of no service");
        for s in &want.services {
            let mine: Vec<&Assignment> =
                assignments.iter().filter(|a| a.service == s.name).collect();
            let mut on: BTreeMap<&str, u32> = BTreeMap::new();
            for a in &mine {
                let h = hosts.iter().find(|h| h.name == a.host).unwrap();
                prop_assert!(qualifying(h, want, s), "{} on {}", a.service, a.host);
                *on.entry(&a.host).or_default() += 1;
            }
            let mut indexes: Vec<u32> = mine.iter().map(|a| a.index).collect();
            indexes.dedup();
            prop_assert_eq!(indexes.len(), mine.len(), "an index twice or out of order");
            if hosts.is_empty() {
                prop_assert!(mine.is_empty());
                continue;
            }
            if s.every_host {
                prop_assert!(!mine.is_empty());
                for h in hosts {
                    let n = on.get(h.name.as_str()).copied().unwrap_or(0);
                    prop_assert!(n <= 1, "two replicas of {} on {}", s.name, h.name);
                    prop_assert!(
                        n == 1 || !qualifying(h, want, s) || !room(h, s),
                        "{} qualifies with room and runs no {}",
                        h.name,
                        s.name
                    );
                }
                continue;
            }
            prop_assert_eq!(&indexes, &(0..s.replicas).collect::<Vec<_>>());
            // Spread: a host given a replica that did not run there before holds at most one
            // more than any host that qualifies and still has room for one.
            for (host, &n) in &on {
                let moved_here = mine.iter().any(|a| {
                    a.host == *host && previous.host(want.deployment, s.name, a.index) != Some(host)
                });
                if !moved_here {
                    continue;
                }
                for other in hosts
                    .iter()
                    .filter(|h| qualifying(h, want, s) && room(h, s))
                {
                    let m = on.get(other.name.as_str()).copied().unwrap_or(0);
                    prop_assert!(
                        n <= m + 1,
                        "{host} got {n} of {}, {} with room has {m}",
                        s.name,
                        other.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// The assignments of `before` missing from `after`, by deployment placed in both.
fn moved<'a>(before: &'a Decision, after: &Decision) -> Vec<(&'a str, &'a Assignment)> {
    before
        .placed
        .iter()
        .filter(|(d, _)| after.placed.contains_key(*d))
        .flat_map(|(d, v)| v.iter().map(move |a| (d.as_str(), a)))
        .filter(|(d, a)| !after.placed[*d].contains(a))
        .collect()
}

proptest! {
    #[test]
    fn every_decision_holds_its_invariants(case in arbitrary_case()) {
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        for previous in [Previous::default(), previous(&case)] {
            let d = place(&case.hosts, &classes(), &wants, &previous);
            holds(&case.hosts, &wants, &previous, &d)?;
        }
    }

    #[test]
    fn placing_again_from_the_answer_gives_the_answer(case in arbitrary_case()) {
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        let d = place(&case.hosts, &classes(), &wants, &previous(&case));
        prop_assert_eq!(place(&case.hosts, &classes(), &wants, &Previous::from(&d)), d);
    }

    #[test]
    fn the_order_of_the_hosts_changes_nothing(
        (case, order) in arbitrary_case().prop_flat_map(|c| {
            let n = c.hosts.len();
            (Just(c), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        let previous = previous(&case);
        let shuffled: Vec<Host> = order.iter().map(|&i| case.hosts[i].clone()).collect();
        prop_assert_eq!(
            place(&shuffled, &classes(), &wants, &previous),
            place(&case.hosts, &classes(), &wants, &previous)
        );
    }

    /// A host lost: a deployment with no replica on it keeps every replica where it ran (it
    /// may only gain every-host replicas), and every replica that moves was on it or is of a
    /// deployment that could not be completed around the replicas it kept.
    #[test]
    fn a_lost_host_moves_only_what_it_ran(case in arbitrary_case(), lost in 0usize..5) {
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        let before = place(&case.hosts, &classes(), &wants, &previous(&case));
        let Some(gone) = case.hosts.get(lost).map(|h| h.name.clone()) else { return Ok(()) };
        let survivors: Vec<Host> = case.hosts.iter().filter(|h| h.name != gone).cloned().collect();
        if survivors.is_empty() {
            return Ok(());
        }
        let previous = Previous::from(&before);
        let after = place(&survivors, &classes(), &wants, &previous);
        holds(&survivors, &wants, &previous, &after)?;
        for (d, assignments) in &before.placed {
            if assignments.iter().any(|a| a.host == gone) {
                continue;
            }
            prop_assert!(after.placed.contains_key(d), "{d} untouched but unplaced");
            for a in &after.placed[d] {
                let every = wants.iter().find(|w| w.deployment == d).unwrap()
                    .services.iter().any(|s| s.name == a.service && s.every_host);
                prop_assert!(assignments.contains(a) || every, "{d}: {a:?} is new");
            }
        }
        let touched = |d: &str| before.placed[d].iter().any(|b| b.host == gone);
        let moved = moved(&before, &after);
        prop_assert!(moved.iter().all(|(d, a)| a.host == gone || touched(d)), "{:?}", moved);
    }

    /// With room for everything, a lost host's deployments keep their other replicas too.
    #[test]
    fn with_room_a_lost_host_moves_nothing_else(mut case in arbitrary_case(), lost in 0usize..5) {
        abundant(&mut case.hosts);
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        let before = place(&case.hosts, &classes(), &wants, &previous(&case));
        let Some(gone) = case.hosts.get(lost).map(|h| h.name.clone()) else { return Ok(()) };
        let survivors: Vec<Host> = case.hosts.iter().filter(|h| h.name != gone).cloned().collect();
        let after = place(&survivors, &classes(), &wants, &Previous::from(&before));
        let moved = moved(&before, &after);
        prop_assert!(moved.iter().all(|(_, a)| a.host == gone), "{:?}", moved);
    }

    /// A host added (or one come back): nothing moves, and all that is new is every-host
    /// replicas on it and deployments that could not be placed before.
    #[test]
    fn a_host_added_moves_nothing(case in arbitrary_case(), new in arbitrary_host()) {
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        if case.hosts.is_empty() {
            return Ok(());
        }
        let before = place(&case.hosts, &classes(), &wants, &previous(&case));
        let mut more = case.hosts.clone();
        let (cpus, mem, camera, _, size) = new;
        let devices: &[&str] = if camera { &["/dev/video0"] } else { &[] };
        more.push(host("h9", cpus, mem, devices, &[("size", SIZES[usize::from(size)])]));
        let previous = Previous::from(&before);
        let after = place(&more, &classes(), &wants, &previous);
        holds(&more, &wants, &previous, &after)?;
        for (d, assignments) in &before.placed {
            prop_assert!(after.placed.contains_key(d), "{d} was placed");
            for a in &after.placed[d] {
                prop_assert!(assignments.contains(a) || a.host == "h9", "{d}: {a:?}");
            }
        }
        prop_assert!(moved(&before, &after).is_empty());
    }

    /// With room for everything, a deployment is unplaced only when one of its services has no
    /// qualifying host at all, or it asks for more than any site runs: nothing eligible is left
    /// out.
    #[test]
    fn nothing_eligible_is_left_unplaced(mut case in arbitrary_case()) {
        abundant(&mut case.hosts);
        let selector = medium_or_large();
        let wants = wants(&case, &selector);
        let d = place(&case.hosts, &classes(), &wants, &previous(&case));
        for want in &wants {
            let bounded = want.services.iter().all(|s| s.every_host || s.replicas <= MAX_REPLICAS);
            let eligible = if case.hosts.is_empty() {
                !want.reads_hosts()
            } else {
                want.services.iter().all(|s| {
                    (!s.every_host && s.replicas == 0)
                        || case.hosts.iter().any(|h| qualifying(h, want, s))
                })
            };
            prop_assert_eq!(
                d.placed.contains_key(want.deployment),
                bounded && eligible,
                "{:?}",
                d.unplaced.get(want.deployment)
            );
        }
    }
}

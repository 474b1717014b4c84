use proptest::prelude::*;

use super::*;
use crate::host::{Device, Inventory};
use crate::manifest::DeviceRule;

fn camera_class() -> DeviceClass {
    DeviceClass {
        name: "camera".into(),
        rules: vec![DeviceRule {
            subsystem: Some("video4linux".into()),
            ..DeviceRule::default()
        }],
        gpu: None,
    }
}

fn serial_class() -> DeviceClass {
    DeviceClass {
        name: "serial".into(),
        rules: vec![DeviceRule {
            path: Some("/dev/ttyUSB*".into()),
            ..DeviceRule::default()
        }],
        gpu: None,
    }
}

fn host(name: &str, cpus: u32, memory_gib: u64, devices: &[&str], labels: &[(&str, &str)]) -> Host {
    Host {
        name: name.into(),
        inventory: Inventory {
            arch: "x86_64".into(),
            cpus,
            memory_bytes: memory_gib << 30,
            capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
            devices: devices
                .iter()
                .map(|path| Device {
                    path: (*path).into(),
                    subsystem: if path.contains("video") {
                        "video4linux".into()
                    } else {
                        "tty".into()
                    },
                    ..Device::default()
                })
                .collect(),
            ..Inventory::default()
        },
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn service<'a>(name: &'a str, replicas: u32, requires: &Requires) -> ServiceWant<'a> {
    ServiceWant {
        name,
        replicas,
        every_host: false,
        requires: requires.clone(),
        cpu_millis: 0,
        memory: 0,
    }
}

fn cameras() -> Requires {
    Requires {
        devices: vec!["camera".into()],
        ..Requires::default()
    }
}

#[test]
fn the_users_sentence_places_on_the_medium_host_with_a_camera() {
    let selector = Selector::parse("size in (medium, large, xlarge)").unwrap();
    let requires = cameras();
    let want = Want {
        deployment: "vision",
        hosts: Some(&selector),
        services: vec![service("detect", 1, &requires)],
    };
    let classes = [camera_class(), serial_class()];
    let medium = [host("h1", 4, 8, &["/dev/video0"], &[("size", "medium")])];
    let small = [host("h2", 4, 8, &["/dev/video0"], &[("size", "small")])];
    let none = [host("h3", 4, 8, &["/dev/ttyUSB0"], &[("size", "large")])];
    let placed = place(&medium, &classes, std::slice::from_ref(&want));
    assert_eq!(
        placed.placed["vision"],
        vec![Assignment {
            service: "detect".into(),
            index: 0,
            host: "h1".into()
        }]
    );
    let d = place(&small, &classes, std::slice::from_ref(&want));
    assert_eq!(
        d.unplaced["vision"],
        "no host can run service detect: h2 does not match placement.hosts (size in (medium, large, xlarge))"
    );
    let d = place(&none, &classes, std::slice::from_ref(&want));
    assert_eq!(
        d.unplaced["vision"],
        "no host with device class camera (h3 has: serial)"
    );
}

#[test]
fn a_site_without_hosts_places_only_what_asks_nothing_of_hosts() {
    let plain = Requires::default();
    let free = Want {
        deployment: "a",
        hosts: None,
        services: vec![ServiceWant {
            cpu_millis: 500,
            memory: 1 << 28,
            ..service("web", 2, &plain)
        }],
    };
    let requires = cameras();
    let needy = Want {
        deployment: "b",
        hosts: None,
        services: vec![service("cam", 1, &requires)],
    };
    let d = place(&[], &[camera_class()], &[free, needy]);
    assert_eq!(d.placed["a"], vec![]);
    assert!(d.unplaced["b"].starts_with("no host enrolled yet"));
}

#[test]
fn capacity_is_what_the_replicas_placed_before_reserve() {
    let plain = Requires::default();
    let big = |d: &'static str| Want {
        deployment: d,
        hosts: None,
        services: vec![ServiceWant {
            cpu_millis: 1500,
            memory: 1 << 30,
            ..service("web", 1, &plain)
        }],
    };
    let hosts = [host("h1", 2, 4, &[], &[])];
    let d = place(&hosts, &[], &[big("a"), big("b")]);
    assert!(d.placed.contains_key("a"));
    assert_eq!(
        d.unplaced["b"],
        "no host can run service web: h1 has 500m CPU and 3Gi memory free, a replica needs 1500m CPU and 1Gi"
    );
}

#[test]
fn a_deployment_is_placed_whole_or_not_at_all() {
    let plain = Requires::default();
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![
            ServiceWant {
                memory: 3 << 30,
                ..service("db", 1, &plain)
            },
            ServiceWant {
                memory: 2 << 30,
                ..service("web", 1, &plain)
            },
        ],
    };
    let small = Want {
        deployment: "b",
        hosts: None,
        services: vec![ServiceWant {
            memory: 1 << 30,
            ..service("tiny", 1, &plain)
        }],
    };
    let d = place(&[host("h1", 4, 4, &[], &[])], &[], &[want, small]);
    assert!(d.unplaced.contains_key("a"));
    assert!(
        d.placed.contains_key("b"),
        "what a refused deployment had reserved is free again"
    );
}

#[test]
fn replicas_spread_over_qualifying_hosts() {
    let plain = Requires::default();
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("web", 3, &plain)],
    };
    let hosts = [host("h1", 4, 8, &[], &[]), host("h2", 4, 8, &[], &[])];
    let d = place(&hosts, &[], &[want]);
    let on: Vec<&str> = d.placed["a"].iter().map(|a| a.host.as_str()).collect();
    assert_eq!(on, ["h1", "h2", "h1"]);
}

#[test]
fn every_host_runs_one_replica_on_each_qualifying_host() {
    let requires = cameras();
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![ServiceWant {
            every_host: true,
            ..service("cam", 0, &requires)
        }],
    };
    let hosts = [
        host("h1", 4, 8, &["/dev/video0"], &[]),
        host("h2", 4, 8, &[], &[]),
        host("h3", 4, 8, &["/dev/video2"], &[]),
    ];
    let d = place(&hosts, &[camera_class()], &[want]);
    let on: Vec<(u32, &str)> = d.placed["a"]
        .iter()
        .map(|a| (a.index, a.host.as_str()))
        .collect();
    assert_eq!(on, [(0, "h1"), (1, "h3")]);
}

#[test]
fn labels_and_architecture_are_required_as_written() {
    let requires = Requires {
        host_labels: [("zone".to_owned(), "till".to_owned())].into(),
        arch: Some("arm64".into()),
        ..Requires::default()
    };
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("web", 1, &requires)],
    };
    let unlabelled = place(
        &[host("h1", 4, 8, &[], &[])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(unlabelled.unplaced["a"].contains("h1 lacks label zone=till"));
    let other = place(
        &[host("h1", 4, 8, &[], &[("zone", "back")])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(other.unplaced["a"].contains("h1 has label zone=back, not zone=till"));
    let amd = place(
        &[host("h1", 4, 8, &[], &[("zone", "till")])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(amd.unplaced["a"].contains("h1 is amd64, not arm64"));
    let mut arm = host("h1", 4, 8, &[], &[("zone", "till")]);
    arm.inventory.arch = "aarch64".into();
    assert!(place(&[arm], &[], &[want]).placed.contains_key("a"));
}

#[test]
fn an_agent_that_cannot_honour_a_requirement_keeps_the_deployment_off_its_site() {
    let requires = cameras();
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("cam", 1, &requires)],
    };
    let mut old = host("h1", 4, 8, &["/dev/video0"], &[]);
    old.inventory.capabilities.clear();
    let d = place(
        &[old.clone()],
        &[camera_class()],
        std::slice::from_ref(&want),
    );
    assert_eq!(
        d.unplaced["a"],
        "the agent on h1 cannot check host requirements; upgrade it"
    );
    old.inventory.capabilities = vec![capability::HOST_PLACEMENT.into()];
    let d = place(&[old], &[camera_class()], &[want]);
    assert_eq!(
        d.unplaced["a"],
        "the agent on h1 cannot map devices; upgrade it"
    );
    let plain = Requires::default();
    let mut today = host("h1", 4, 8, &[], &[]);
    today.inventory.capabilities.clear();
    let d = place(
        &[today],
        &[],
        &[Want {
            deployment: "b",
            hosts: None,
            services: vec![service("web", 1, &plain)],
        }],
    );
    assert!(
        d.placed.contains_key("b"),
        "an older agent runs what it always ran"
    );
}

#[test]
fn a_device_going_missing_still_counts_while_the_agent_keeps_it() {
    let requires = cameras();
    let want = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("cam", 1, &requires)],
    };
    let mut h = host("h1", 4, 8, &["/dev/video0"], &[]);
    h.inventory.devices[0].missing_since = Some("2026-12-03T10:00:00Z".into());
    assert!(
        place(&[h], &[camera_class()], &[want])
            .placed
            .contains_key("a")
    );
}

/// A random site: hosts with random capacity, labels and devices; deployments with random
/// requirements.
/// One service: replicas, deployment index, requirements, every host, CPU, memory.
type Drawn = (u8, u8, Requires, bool, u64, u64);

fn arbitrary_site() -> impl Strategy<Value = (Vec<Host>, Vec<Drawn>)> {
    let one_host = (1u32..8, 1u64..16, any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        |(cpus, mem, camera, serial, size)| {
            let mut devices = Vec::new();
            if camera {
                devices.push("/dev/video0");
            }
            if serial {
                devices.push("/dev/ttyUSB0");
            }
            let size = ["small", "medium", "large"][usize::from(size)];
            (cpus, mem, devices, size)
        },
    );
    let service = (
        1u8..4,
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
                    .map(|s| {
                        (
                            "size".to_owned(),
                            ["small", "medium", "large"][usize::from(s)].to_owned(),
                        )
                    })
                    .into_iter()
                    .collect(),
                arch: None,
            };
            (replicas, deployment, requires, every, cpu, memory)
        });
    (
        proptest::collection::vec(one_host, 0..4),
        proptest::collection::vec(service, 1..6),
    )
        .prop_map(|(hosts, services)| {
            let hosts = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (cpus, mem, devices, size))| {
                    host(&format!("h{i}"), cpus, mem, &devices, &[("size", size)])
                })
                .collect();
            (hosts, services)
        })
}

fn wants(services: &[Drawn]) -> Vec<Want<'_>> {
    let names = ["d0", "d1", "d2"];
    let mut out: Vec<Want<'_>> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let services: Vec<ServiceWant<'_>> = services
            .iter()
            .enumerate()
            .filter(|(_, s)| usize::from(s.1) == i)
            .map(
                |(j, (replicas, _, requires, every, cpu, memory))| ServiceWant {
                    name: ["s0", "s1", "s2", "s3", "s4", "s5"][j],
                    replicas: u32::from(*replicas),
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
                hosts: None,
                services,
            });
        }
    }
    out
}

proptest! {
    /// Every placed replica's host meets every requirement, and together the replicas on a
    /// host never reserve more than it has.
    #[test]
    fn every_placed_replica_has_a_qualifying_host((hosts, services) in arbitrary_site()) {
        let classes = [camera_class(), serial_class()];
        let wants = wants(&services);
        let d = place(&hosts, &classes, &wants);
        prop_assert_eq!(d.placed.len() + d.unplaced.len(), wants.len());
        let mut used: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for want in &wants {
            let Some(assignments) = d.placed.get(want.deployment) else { continue };
            for a in assignments {
                let s = want.services.iter().find(|s| s.name == a.service).unwrap();
                let h = hosts.iter().find(|h| h.name == a.host).unwrap();
                prop_assert!(qualifies(h, &h.facts(&classes), &classes, None, &s.requires).is_ok());
                let u = used.entry(&h.name).or_default();
                u.0 += s.cpu_millis;
                u.1 += s.memory;
                prop_assert!(u.0 <= u64::from(h.inventory.cpus) * 1000);
                prop_assert!(u.1 <= h.inventory.memory_bytes);
            }
            for s in &want.services {
                let n = assignments.iter().filter(|a| a.service == s.name).count();
                if !s.every_host && !hosts.is_empty() {
                    prop_assert_eq!(n, s.replicas as usize);
                }
            }
        }
    }

    /// With room for everything, a deployment is unplaced only when one of its services has no
    /// qualifying host at all: nothing eligible is left out.
    #[test]
    fn nothing_eligible_is_left_unplaced((mut hosts, services) in arbitrary_site()) {
        for h in &mut hosts {
            h.inventory.cpus = 1_000_000;
            h.inventory.memory_bytes = u64::MAX / 2;
        }
        let classes = [camera_class(), serial_class()];
        let wants = wants(&services);
        let d = place(&hosts, &classes, &wants);
        for want in &wants {
            let eligible = !hosts.is_empty()
                && want.services.iter().all(|s| {
                    hosts.iter().any(|h| qualifies(h, &h.facts(&classes), &classes, None, &s.requires).is_ok())
                });
            let eligible = eligible || (hosts.is_empty() && !want.reads_hosts());
            prop_assert_eq!(d.placed.contains_key(want.deployment), eligible, "{:?}", d.unplaced.get(want.deployment));
        }
    }
}

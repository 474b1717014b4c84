use super::*;
use crate::host::{Device, Inventory};
use crate::manifest::DeviceRule;

/// The decision from nothing running, as the control plane makes it.
fn fresh(hosts: &[Host], classes: &[DeviceClass], wants: &[Want<'_>]) -> Decision {
    place(hosts, classes, wants, &Previous::default())
}

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
    let placed = fresh(&medium, &classes, std::slice::from_ref(&want));
    assert_eq!(
        placed.placed["vision"],
        vec![Assignment {
            service: "detect".into(),
            index: 0,
            host: "h1".into()
        }]
    );
    let d = fresh(&small, &classes, std::slice::from_ref(&want));
    assert_eq!(
        d.unplaced["vision"],
        "no host can run service detect: h2 does not match placement.hosts (size in (medium, large, xlarge))"
    );
    let d = fresh(&none, &classes, std::slice::from_ref(&want));
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
    let d = fresh(&[], &[camera_class()], &[free, needy]);
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
    let d = fresh(&hosts, &[], &[big("a"), big("b")]);
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
    let d = fresh(&[host("h1", 4, 4, &[], &[])], &[], &[want, small]);
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
    let d = fresh(&hosts, &[], &[want]);
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
    let d = fresh(&hosts, &[camera_class()], &[want]);
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
    let unlabelled = fresh(
        &[host("h1", 4, 8, &[], &[])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(unlabelled.unplaced["a"].contains("h1 lacks label zone=till"));
    let other = fresh(
        &[host("h1", 4, 8, &[], &[("zone", "back")])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(other.unplaced["a"].contains("h1 has label zone=back, not zone=till"));
    let amd = fresh(
        &[host("h1", 4, 8, &[], &[("zone", "till")])],
        &[],
        std::slice::from_ref(&want),
    );
    assert!(amd.unplaced["a"].contains("h1 is amd64, not arm64"));
    let mut arm = host("h1", 4, 8, &[], &[("zone", "till")]);
    arm.inventory.arch = "aarch64".into();
    assert!(fresh(&[arm], &[], &[want]).placed.contains_key("a"));
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
    let d = fresh(
        &[old.clone()],
        &[camera_class()],
        std::slice::from_ref(&want),
    );
    assert_eq!(
        d.unplaced["a"],
        "the agent on h1 cannot check host requirements; upgrade it"
    );
    old.inventory.capabilities = vec![capability::HOST_PLACEMENT.into()];
    let d = fresh(&[old], &[camera_class()], &[want]);
    assert_eq!(
        d.unplaced["a"],
        "the agent on h1 cannot map devices; upgrade it"
    );
    let plain = Requires::default();
    let mut today = host("h1", 4, 8, &[], &[]);
    today.inventory.capabilities.clear();
    let d = fresh(
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
        fresh(&[h], &[camera_class()], &[want])
            .placed
            .contains_key("a")
    );
}

mod properties;
mod sticky;

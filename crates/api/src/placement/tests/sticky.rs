//! The site cluster's cases: what runs where it runs stays there, and only a lost host's
//! replicas move.

use super::*;

/// `app`: `web` with two replicas and `agent` on every host.
fn app(plain: &Requires) -> Want<'_> {
    Want {
        deployment: "app",
        hosts: None,
        services: vec![
            service("web", 2, plain),
            ServiceWant {
                every_host: true,
                ..service("agent", 0, plain)
            },
        ],
    }
}

fn three_hosts() -> Vec<Host> {
    ["h1", "h2", "h3"]
        .iter()
        .map(|n| host(n, 4, 8, &[], &[]))
        .collect()
}

/// Each replica of `deployment` as `service/index@host`.
fn where_(d: &Decision, deployment: &str) -> Vec<String> {
    d.placed[deployment]
        .iter()
        .map(|a| format!("{}/{}@{}", a.service, a.index, a.host))
        .collect()
}

#[test]
fn three_hosts_spread_two_replicas_and_run_every_host_everywhere() {
    let plain = Requires::default();
    let d = fresh(&three_hosts(), &[], &[app(&plain)]);
    assert_eq!(
        where_(&d, "app"),
        [
            "web/0@h1",
            "web/1@h2",
            "agent/0@h1",
            "agent/1@h2",
            "agent/2@h3"
        ]
    );
}

#[test]
fn the_host_running_a_replica_is_lost_and_only_its_replicas_move() {
    let plain = Requires::default();
    let wants = [app(&plain)];
    let before = fresh(&three_hosts(), &[], &wants);
    let survivors: Vec<Host> = three_hosts().into_iter().skip(1).collect();
    let after = place(&survivors, &[], &wants, &Previous::from(&before));
    assert_eq!(
        where_(&after, "app"),
        ["web/0@h3", "web/1@h2", "agent/1@h2", "agent/2@h3"],
        "web/0 moves to the host without a web replica; the rest stays"
    );
}

#[test]
fn a_lost_host_that_returns_takes_nothing_back() {
    let plain = Requires::default();
    let wants = [app(&plain)];
    let before = fresh(&three_hosts(), &[], &wants);
    let survivors: Vec<Host> = three_hosts().into_iter().skip(1).collect();
    let lost = place(&survivors, &[], &wants, &Previous::from(&before));
    let back = place(&three_hosts(), &[], &wants, &Previous::from(&lost));
    assert_eq!(
        where_(&back, "app"),
        [
            "web/0@h3",
            "web/1@h2",
            "agent/0@h1",
            "agent/1@h2",
            "agent/2@h3"
        ],
        "exactly two web replicas, none moved back; h1 runs its every-host replica again"
    );
    assert_eq!(
        place(&three_hosts(), &[], &wants, &Previous::from(&back)),
        back
    );
}

#[test]
fn a_replica_moves_when_its_host_no_longer_qualifies() {
    let requires = Requires {
        host_labels: [("zone".to_owned(), "till".to_owned())].into(),
        ..Requires::default()
    };
    let wants = [Want {
        deployment: "pos",
        hosts: None,
        services: vec![service("web", 1, &requires)],
    }];
    let till = |n: &str| host(n, 4, 8, &[], &[("zone", "till")]);
    let mut previous = Previous::default();
    previous.insert("pos", "web", 0, "h2");
    let d = place(&[till("h1"), till("h2")], &[], &wants, &previous);
    assert_eq!(where_(&d, "pos"), ["web/0@h2"], "kept where it runs");
    let relabelled = [till("h1"), host("h2", 4, 8, &[], &[("zone", "back")])];
    let d = place(&relabelled, &[], &wants, &previous);
    assert_eq!(where_(&d, "pos"), ["web/0@h1"]);
}

#[test]
fn a_running_replica_keeps_its_capacity_against_a_deployment_placed_before_it() {
    let plain = Requires::default();
    let big = |d: &'static str| Want {
        deployment: d,
        hosts: None,
        services: vec![ServiceWant {
            memory: 6 << 30,
            ..service("web", 1, &plain)
        }],
    };
    let hosts = [host("h1", 4, 8, &[], &[])];
    let mut previous = Previous::default();
    previous.insert("b", "web", 0, "h1");
    let d = place(&hosts, &[], &[big("a"), big("b")], &previous);
    assert_eq!(where_(&d, "b"), ["web/0@h1"]);
    assert!(
        d.unplaced["a"].contains("2Gi memory free"),
        "{:?}",
        d.unplaced
    );
}

#[test]
fn a_deployment_that_cannot_be_completed_around_what_it_keeps_is_placed_afresh() {
    let plain = Requires::default();
    let tills = Requires {
        host_labels: [("zone".to_owned(), "till".to_owned())].into(),
        ..Requires::default()
    };
    let wants = [Want {
        deployment: "a",
        hosts: None,
        services: vec![
            ServiceWant {
                memory: 5 << 30,
                ..service("db", 1, &plain)
            },
            ServiceWant {
                memory: 5 << 30,
                ..service("web", 1, &tills)
            },
        ],
    }];
    let hosts = [
        host("h1", 4, 8, &[], &[]),
        host("h2", 4, 8, &[], &[("zone", "till")]),
    ];
    // db runs on h2, where web must run and no longer fits beside it: kept, the deployment
    // could not run at all, so db moves.
    let mut previous = Previous::default();
    previous.insert("a", "db", 0, "h2");
    let d = place(&hosts, &[], &wants, &previous);
    assert_eq!(where_(&d, "a"), ["db/0@h1", "web/0@h2"]);
    previous.insert("a", "web", 0, "h2");
    let d = place(&hosts, &[], &wants, &previous);
    assert_eq!(
        where_(&d, "a"),
        ["db/0@h1", "web/0@h2"],
        "db, kept first, leaves web no room on h2: placed afresh, db moves"
    );
}

#[test]
fn fewer_replicas_drop_the_highest_indexes_and_more_spread_the_new_ones() {
    let plain = Requires::default();
    let hosts = three_hosts();
    let mut previous = Previous::default();
    for (i, h) in ["h3", "h3", "h1"].iter().enumerate() {
        previous.insert("a", "web", u32::try_from(i).unwrap(), h);
    }
    let want = |n| Want {
        deployment: "a",
        hosts: None,
        services: vec![service("web", n, &plain)],
    };
    let d = place(&hosts, &[], &[want(2)], &previous);
    assert_eq!(
        where_(&d, "a"),
        ["web/0@h3", "web/1@h3"],
        "kept, not spread"
    );
    let d = place(&hosts, &[], &[want(5)], &previous);
    assert_eq!(
        where_(&d, "a"),
        ["web/0@h3", "web/1@h3", "web/2@h1", "web/3@h2", "web/4@h1"]
    );
}

#[test]
fn a_previous_placement_naming_what_is_gone_is_ignored() {
    let plain = Requires::default();
    let mut previous = Previous::default();
    previous.insert("old", "web", 0, "h1");
    previous.insert("app", "gone", 0, "h1");
    previous.insert("app", "web", 0, "h9");
    previous.insert("app", "web", 7, "h1");
    previous.insert("app", "agent", 4, "h2");
    previous.insert("app", "agent", 9, "h2");
    let d = place(&three_hosts(), &[], &[app(&plain)], &previous);
    assert_eq!(
        where_(&d, "app"),
        [
            "web/0@h1",
            "web/1@h2",
            "agent/0@h1",
            "agent/1@h3",
            "agent/4@h2"
        ],
        "an every-host replica keeps its index; the new ones take the smallest unused"
    );
}

#[test]
fn the_order_hosts_are_given_in_changes_nothing() {
    let plain = Requires::default();
    let mut hosts = three_hosts();
    let d = fresh(&hosts, &[], &[app(&plain)]);
    hosts.reverse();
    assert_eq!(fresh(&hosts, &[], &[app(&plain)]), d);
}

#[test]
fn what_no_site_can_run_is_refused_without_placing() {
    let plain = Requires::default();
    let many = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("web", u32::MAX, &plain)],
    };
    let twice = Want {
        deployment: "b",
        hosts: None,
        services: vec![service("web", 1, &plain), service("web", 1, &plain)],
    };
    let d = fresh(&three_hosts(), &[], &[many, twice]);
    assert_eq!(
        d.unplaced["a"],
        "service web asks for 4294967295 replicas, more than the most, 100"
    );
    assert_eq!(d.unplaced["b"], "service web is named twice");
    assert!(d.placed.is_empty());
}

#[test]
fn zero_replicas_and_hosts_without_capacity_place_nothing_and_refuse_nothing_needed() {
    let plain = Requires::default();
    let none = Want {
        deployment: "a",
        hosts: None,
        services: vec![service("web", 0, &plain)],
    };
    let d = fresh(&[host("h1", 0, 0, &[], &[])], &[], &[none]);
    assert_eq!(d.placed["a"], vec![]);
    let every = Want {
        deployment: "b",
        hosts: None,
        services: vec![ServiceWant {
            every_host: true,
            memory: 1,
            ..service("agent", 0, &plain)
        }],
    };
    let d = fresh(&[host("h1", 0, 0, &[], &[])], &[], &[every]);
    assert!(d.unplaced["b"].starts_with("no host can run service agent"));
}

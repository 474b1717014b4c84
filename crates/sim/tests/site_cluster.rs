//! The site-cluster model: a few hundred seeds hold every invariant, a seed is a run, and each
//! rule broken on purpose is caught with the seed that shows it.

use std::collections::BTreeMap;

use atoll_agent::core::cluster::{Placement, schedule};
use atoll_sim::site_cluster::{Config, run};

const SEEDS: u64 = 300;

#[test]
fn three_hundred_sites_hold_through_deaths_returns_and_partitions() {
    let mut figures = (0, 0, 0, 0);
    for seed in 1..=SEEDS {
        let outcome = run(Config::new(seed)).unwrap_or_else(|v| panic!("{v}"));
        figures.0 += outcome.faults;
        figures.1 += outcome.elections;
        figures.2 += outcome.moves;
        figures.3 = figures.3.max(outcome.hosts);
    }
    let (faults, elections, moves, largest) = figures;
    println!("{SEEDS} seeds: {faults} faults, {elections} elections, {moves} moves");
    assert!(faults > 10 * SEEDS, "the chaos is exercised");
    assert!(elections > SEEDS, "leaders are lost and elected again");
    assert!(moves > SEEDS / 2, "replicas move off hosts taken for down");
    assert_eq!(largest, 6);
}

#[test]
fn every_size_of_site_holds() {
    for hosts in 2..=6 {
        for seed in 1..=20 {
            let mut config = Config::new(seed);
            config.hosts = Some(hosts);
            run(config).unwrap_or_else(|v| panic!("{hosts} hosts: {v}"));
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(Config::new(42)).unwrap_or_else(|v| panic!("{v}"));
    let b = run(Config::new(42)).unwrap_or_else(|v| panic!("{v}"));
    let c = run(Config::new(43)).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(
        (a.digest, a.events, a.commits),
        (b.digest, b.events, b.commits)
    );
    assert_ne!(a.digest, c.digest);
}

/// The first of seeds 1 to 100 at which `config` breaks an invariant, and what it says.
fn caught(config: impl Fn(u64) -> Config) -> String {
    for seed in 1..=100 {
        if let Err(v) = run(config(seed)) {
            println!("{v}");
            let text = v.to_string();
            assert!(text.contains(&format!("seed {seed}")), "{text}");
            let again = run(config(seed)).expect_err("a failing seed fails again");
            assert_eq!(again, v, "a failing seed replays");
            return text;
        }
    }
    panic!("the broken rule went unnoticed over 100 seeds");
}

#[test]
fn a_scheduler_ignoring_the_placement_is_caught_moving_replicas_that_run() {
    let v = caught(|seed| {
        let mut config = Config::new(seed);
        config.rules.schedule =
            |manifest, up, _, _| schedule(manifest, up, &Placement::default(), &BTreeMap::new());
        config
    });
    assert!(v.contains("would restart"), "{v}");
}

#[test]
fn a_leader_cut_off_from_its_majority_that_still_schedules_is_caught() {
    let v = caught(|seed| {
        let mut config = Config::new(seed);
        config.rules.commits = |reached, _| reached >= 1;
        config
    });
    assert!(
        v.contains("changed the placement from a minority side"),
        "{v}"
    );
}

#[test]
fn a_leader_that_never_takes_a_host_for_down_is_caught_losing_replicas() {
    let v = caught(|seed| {
        let mut config = Config::new(seed);
        config.rules.down = |_, _, _, _| false;
        config
    });
    assert!(v.contains("has run nowhere"), "{v}");
}

#[test]
fn a_host_keeping_replicas_no_longer_placed_on_it_is_caught_running_too_many() {
    let v = caught(|seed| {
        let mut config = Config::new(seed);
        config.rules.reconcile = |placed, ran| placed.union(ran).cloned().collect();
        config
    });
    assert!(
        v.contains("majority side")
            || v.contains("exactly")
            || v.contains("replicas of the every-host service"),
        "{v}"
    );
}

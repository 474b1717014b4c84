//! The invariants have teeth: each of the protocol's rules, broken on purpose, fails the run,
//! with the seed and what went wrong.

use atoll_sim::{Config, run};

fn small(seed: u64) -> Config {
    let mut config = Config::new(500, seed);
    config.replay = 0.01;
    config.loss = 0.01;
    config
}

fn violation(config: Config) -> String {
    match run(config) {
        Ok(outcome) => panic!("the broken rule went unnoticed:\n{outcome}"),
        Err(v) => {
            println!("{v}");
            v.to_string()
        }
    }
}

#[test]
fn the_scenario_passes_with_the_real_rules() {
    run(small(5)).unwrap_or_else(|v| panic!("{v}"));
}

#[test]
fn an_agent_accepting_any_revision_is_caught_going_back() {
    let mut config = small(5);
    config.rules.accept = |_, _| Ok(());
    let v = violation(config);
    assert!(v.contains("seed 5") && v.contains("went back"), "{v}");
}

#[test]
fn a_store_keeping_resent_batches_is_caught_storing_twice() {
    let mut config = small(5);
    config.rules.admit_report = |cursor, seq| {
        cursor.admit(seq);
        true
    };
    let v = violation(config);
    assert!(v.contains("twice"), "{v}");
}

#[test]
fn a_store_acknowledging_what_it_skipped_is_caught_losing_reports() {
    let mut config = small(5);
    config.rules.admit_report = |cursor, seq| {
        cursor.admit(seq);
        false
    };
    let v = violation(config);
    assert!(v.contains("lost"), "{v}");
}

#[test]
fn a_control_plane_holding_every_poll_is_caught_not_converging() {
    let mut config = small(5);
    config.rules.answers = |_, _| false;
    let v = violation(config);
    assert!(v.contains("still runs revision"), "{v}");
}

#[test]
fn a_planner_reusing_a_revision_is_caught() {
    let mut config = small(5);
    config.rules.next_revision = |head, _| head.map(|(revision, _)| revision);
    let v = violation(config);
    assert!(v.contains("published revision"), "{v}");
}

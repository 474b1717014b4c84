//! The storm: 10,000 sites whose agents all start at the same instant, after a change
//! published while they were down, run it within 60 s, and the control plane sheds the load it
//! cannot take with 503s rather than falling over.

use atoll_sim::{Config, run, time::SECOND};

#[test]
fn ten_thousand_sites_starting_at_once_converge_within_a_minute() {
    let mut config = Config::new(10_000, 11);
    config.storm = 10_000;
    let outcome = run(config).unwrap_or_else(|v| panic!("{v}"));
    println!("{outcome}");
    let storm = outcome.storm.expect("the scenario has a storm");
    assert_eq!(storm.sites, 10_000);
    assert!(storm.converged_in <= 60 * SECOND);
    assert!(outcome.control.max_polls_admitted <= 1_000);
}

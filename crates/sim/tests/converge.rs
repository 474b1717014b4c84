//! The standard scenario at CI size: 2,000 sites, three seeds, every invariant holding.

use atoll_sim::{Config, run};

#[test]
fn two_thousand_sites_converge_through_partitions_restarts_losses_and_a_storm() {
    for seed in 1..=3 {
        let outcome = run(Config::new(2_000, seed)).unwrap_or_else(|v| panic!("{v}"));
        println!("{outcome}");
        assert_eq!(outcome.changes.len(), 4);
        for change in &outcome.changes {
            assert_eq!(
                change.measured as u64 + change.disturbed,
                2_000,
                "{change:?}"
            );
            assert!(change.measured > 1_000, "{change:?}");
        }
        let storm = outcome.storm.expect("the scenario has a storm");
        assert_eq!(storm.sites, 400);
        assert!(outcome.reports.dropped > 0, "full outboxes are exercised");
        assert!(outcome.reports.resends_ignored > 0, "resends are exercised");
        assert!(outcome.agents.refused > 0, "replays are exercised");
        assert!(outcome.unchanged_applies > 0);
    }
}

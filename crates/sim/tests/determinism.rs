//! A seed is a run: the same seed gives the same events, a different one different events.

use atoll_sim::{Config, run};

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(Config::new(300, 42)).unwrap_or_else(|v| panic!("{v}"));
    let b = run(Config::new(300, 42)).unwrap_or_else(|v| panic!("{v}"));
    let c = run(Config::new(300, 43)).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!((a.digest, a.events), (b.digest, b.events));
    assert_eq!(a.changes, b.changes);
    assert_eq!(a.reports, b.reports);
    assert_ne!(a.digest, c.digest);
}

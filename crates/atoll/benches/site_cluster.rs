//! The site cluster's figures (`scripts/bench-site-cluster.sh`, `cargo bench -p atoll --bench
//! site_cluster`): on the three-host site of `support::site_cluster`, ten kills of a host running
//! a replica and the time until it runs elsewhere (median and max), then each agent's memory
//! after the site idled for 30 s. A command that prints figures, not a test: `cargo bench`
//! builds it and the `atoll` it drives with the release profile.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::Process;
use support::eventually_every;
use support::site_cluster::{POLL, SETTLE, Shop};

const IMAGE: &str = "atoll.local/demo:site-cluster-bench";

fn main() {
    let mut shop = Shop::start("fig", IMAGE, 2, &[]);
    let all = [0, 1, 2];
    let mut times = Vec::new();
    for round in 1..=10 {
        let (web, _) = shop.settled(&all, 2, "the site settles");
        let (victim, _, _) = web[0].clone();
        let live: Vec<usize> = all.iter().copied().filter(|k| *k != victim).collect();
        let killed = Instant::now();
        shop.kill_host(victim);
        let moved = eventually_every("the replica runs elsewhere", SETTLE, POLL, || {
            (shop.census(&live, "web").len() == 2)
                .then(|| killed.elapsed())
                .ok_or_else(|| shop.logs())
        });
        eprintln!("kill {round}: host {victim}'s replica ran again after {moved:?}");
        times.push(moved);
        shop.lan.host(victim).start_docker();
        shop.start_agent(victim, false);
    }
    times.sort();
    let median = (times[4] + times[5]) / 2;
    println!(
        "failover over {} kills: median {:.2} s, max {:.2} s",
        times.len(),
        median.as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
    shop.settled(&all, 2, "the site settles for the idle measure");
    std::thread::sleep(Duration::from_secs(30));
    for (k, agent) in shop.agents.iter().enumerate() {
        let pid = agent.as_ref().map(Process::pid).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "host {k}'s agent, idle in a three-host site: VmRSS {} kB (anonymous {} kB), {} threads",
            field(&status, "VmRSS:"),
            field(&rollup, "Anonymous:"),
            field(&status, "Threads:"),
        );
    }
}

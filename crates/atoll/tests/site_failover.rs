//! The site cluster with real agents on hosts of their own (`support::site_cluster`): three
//! hosts of one site share out an application's replicas, and when a host running one dies with
//! the control plane stopped, the other hosts run it again within 15 s, on the default timers;
//! the host back, the site settles on exactly the replicas asked, the survivors untouched; and
//! a host cut off from the control plane but not from its site takes new manifests from the
//! site's log.

mod support;

use std::time::{Duration, Instant};

use support::site_cluster::{POLL, SETTLE, Shop};
use support::{Process, eventually_every, tail};

const IMAGE: &str = "atoll.local/demo:site-failover";

#[test]
fn a_dead_hosts_replica_runs_elsewhere_within_15_s_offline_and_its_return_changes_nothing() {
    let mut shop = Shop::start("fo", IMAGE, 2, &[]);
    let all = [0, 1, 2];
    let (web, _) = shop.settled(&all, 2, "the replicas spread over the three hosts");

    // The control plane shows each host's role: one leads, the others follow.
    shop.one_leader();

    // The control plane stops; a host running a web replica dies, its agent and containers.
    shop.cp.kill9();
    let (victim, _, _) = web[0].clone();
    let survivor = web[1].clone();
    let live: Vec<usize> = all.iter().copied().filter(|k| *k != victim).collect();
    let killed = Instant::now();
    shop.kill_host(victim);
    let moved = eventually_every(
        "the dead host's replica runs on another host",
        Duration::from_secs(30),
        POLL,
        || {
            let web = shop.census(&live, "web");
            (web.len() == 2)
                .then(|| killed.elapsed())
                .ok_or_else(|| format!("web {web:?}\n{}", shop.logs()))
        },
    );
    assert!(
        moved <= Duration::from_secs(15),
        "the replica ran again {moved:?} after its host died\n{}",
        shop.logs()
    );
    eprintln!("the dead host's replica ran again {moved:?} after its death");
    let web = shop.census(&live, "web");
    assert!(
        web.contains(&survivor),
        "the survivor was not touched: {web:?}"
    );

    // The host comes back, offline still: exactly two web replicas, the survivors untouched.
    let (after_loss, _) = shop.settled(&live, 2, "the site settles without the dead host");
    shop.lan.host(victim).start_docker();
    shop.start_agent(victim, false);
    let (back, _) = shop.settled(&all, 2, "the site settles with the host back");
    assert_eq!(
        back, after_loss,
        "no web replica moved or restarted when the dead host came back"
    );
}

#[test]
fn a_host_cut_off_from_the_control_plane_takes_new_manifests_from_its_site() {
    let shop = Shop::start("co", IMAGE, 2, &[]);
    shop.settled(&[0, 1, 2], 2, "the replicas spread over the three hosts");
    let leader = shop
        .one_leader()
        .into_iter()
        .find(|r| r.role == "leader")
        .and_then(|r| r.host)
        .expect("the leader is one of the LAN's hosts");
    let cut = (leader + 1) % 3;
    let host = &shop.lan.hosts()[cut];
    host.block(shop.lan.gateway(), true);
    let port: u16 = shop
        .cp
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !host.reaches(shop.lan.gateway(), port),
        "the host still reaches the control plane"
    );
    shop.apply("2.0.0", 3).ok("apply three web replicas");
    eventually_every(
        "the host cut off from the control plane takes the new manifest from its site",
        SETTLE,
        POLL,
        || {
            let log = shop.agents[cut]
                .as_ref()
                .map(Process::stderr)
                .unwrap_or_default();
            log.contains("taking the manifest the site's log holds")
                .then_some(())
                .ok_or_else(|| tail(&log, 20))
        },
    );
    shop.settled(&[0, 1, 2], 3, "three web replicas over the three hosts");
    host.block(shop.lan.gateway(), false);
}

//! The site cluster's faults with real agents on hosts of their own (`support::site_cluster`),
//! on short timers (`--site-failure-timeout 3s`; Raft's election timers are the defaults): a
//! host cut off from the other two, the whole site's agents killed and started again offline,
//! and the leader killed with an apply made at once (another host leads within 10 s and the
//! apply runs on the survivors).
//!
//! The tests run one at a time: each is a LAN of three hosts with a Docker Engine apiece, and
//! six engines with their agents at once on a small machine starve the 3 s deadlines they are
//! judged by.

mod support;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::eventually_every;
use support::site_cluster::{POLL, Seen, Shop, container_events, unix_now};

const IMAGE: &str = "atoll.local/demo:site-cluster-faults";
const FAST: &[&str] = &["--site-failure-timeout", "3s"];
/// How long a fault may take to be made good on the short timers, well above what is expected
/// (3 s to be judged down, an election, a container start).
const RECOVER: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn on(host: usize, seen: &[Seen]) -> Vec<Seen> {
    seen.iter().filter(|s| s.0 == host).cloned().collect()
}

fn others(of: usize) -> Vec<usize> {
    (0..3).filter(|k| *k != of).collect()
}

#[test]
fn a_host_cut_off_keeps_what_it_runs_the_majority_runs_its_replica_and_the_heal_leaves_exactly_two()
{
    let _lan = one_at_a_time();
    let shop = Shop::start("part", IMAGE, 2, FAST);
    let all = [0, 1, 2];
    let (web, probe) = shop.settled(&all, 2, "the replicas spread over the three hosts");
    let hosts = shop.one_leader();
    let leader = hosts
        .iter()
        .find(|h| h.role == "leader")
        .and_then(|h| h.host);

    // A host running a web replica, and not the leader, is cut off: it is then the minority of
    // one, which may elect nothing and commit nothing.
    let victim = web
        .iter()
        .map(|w| w.0)
        .find(|k| Some(*k) != leader)
        .expect("two web hosts, one leader");
    let majority = others(victim);
    let (cut_web, cut_probe) = (on(victim, &web), on(victim, &probe));
    let cut = Instant::now();
    shop.lan.hosts()[victim].partition(true);
    let untouched = |what: &str| {
        let (w, p) = (
            shop.census(&[victim], "web"),
            shop.census(&[victim], "probe"),
        );
        if (w.as_slice(), p.as_slice()) != (cut_web.as_slice(), cut_probe.as_slice()) {
            panic!(
                "{what}: the cut-off host changed what it runs: web {w:?} (was {cut_web:?}), \
                 probe {p:?} (was {cut_probe:?})\n{}",
                shop.logs()
            );
        }
    };
    let moved = eventually_every(
        "the majority runs the cut-off host's replica",
        RECOVER,
        POLL,
        || {
            untouched("while the majority reschedules");
            let web = shop.census(&majority, "web");
            let hosts: BTreeSet<usize> = web.iter().map(|w| w.0).collect();
            (web.len() == 2 && hosts.len() == 2)
                .then(|| cut.elapsed())
                .ok_or_else(|| format!("web {web:?}\n{}", shop.logs()))
        },
    );
    eprintln!("the majority ran the cut-off host's replica {moved:?} after the cut");
    let (majority_web, majority_probe) =
        shop.settled(&majority, 2, "the majority settles on two web replicas");
    untouched("once the majority settled");

    // Healed: exactly two web replicas over the site and a probe on each host; what ran on the
    // majority side the whole time was not restarted.
    shop.lan.hosts()[victim].partition(false);
    let (healed_web, healed_probe) = shop.settled(&all, 2, "the site settles once healed");
    assert_eq!(
        healed_web,
        majority_web,
        "the web replicas of the majority side kept running, untouched\n{}",
        shop.logs()
    );
    for p in &majority_probe {
        assert!(
            healed_probe.contains(p),
            "the majority's probe {p:?} kept running, untouched: {healed_probe:?}"
        );
    }
}

#[test]
fn a_site_whose_agents_all_restart_offline_keeps_its_placement_and_adopts_every_container() {
    let _lan = one_at_a_time();
    let mut shop = Shop::start("boot", IMAGE, 2, FAST);
    let all = [0, 1, 2];
    let before = shop.settled(&all, 2, "the replicas spread over the three hosts");
    shop.one_leader();

    // The control plane and every agent are killed; the hosts, their engines and containers
    // run on.
    shop.cp.kill9();
    let since = unix_now();
    for k in all {
        shop.kill_agent(k);
    }
    let unchanged = |shop: &Shop, what: &str| {
        let now = (shop.census(&all, "web"), shop.census(&all, "probe"));
        if now != before {
            panic!(
                "{what}: a container was recreated or restarted: now {now:?}, before {before:?}\n{}",
                shop.logs()
            );
        }
    };
    unchanged(&shop, "with every agent killed");

    // Started again with no control plane: the site's log comes back, a leader is elected, and
    // every container is adopted as it is.
    let started = Instant::now();
    for k in all {
        shop.start_agent(k, false);
    }
    let logged = |needle: &str| {
        shop.agents
            .iter()
            .flatten()
            .map(|a| a.stderr().matches(needle).count())
            .collect::<Vec<_>>()
    };
    let back = eventually_every(
        "the site's hosts meet and elect a leader",
        RECOVER,
        POLL,
        || {
            unchanged(&shop, "while the site comes back");
            let leads = logged("this host leads the site");
            let peers = logged("site peer up");
            (leads.iter().sum::<usize>() >= 1 && peers.iter().all(|n| *n >= 2))
                .then(|| started.elapsed())
                .ok_or_else(|| format!("leads {leads:?}, peers up {peers:?}\n{}", shop.logs()))
        },
    );
    eprintln!("the site was back {back:?} after its agents started");
    // Long enough for a host to be taken for down (3 s) and its replicas placed elsewhere, were
    // the new leader to judge anyone wrongly, and for every reconciler to pass twice (2 s).
    let hold = Duration::from_secs(8);
    let held = Instant::now();
    eventually_every("the site stays as it was", hold * 2, POLL, || {
        unchanged(&shop, "once the site is back");
        (held.elapsed() >= hold)
            .then_some(())
            .ok_or_else(|| "holding".to_owned())
    });
    // Not even a container started and removed between two looks: the engines saw nothing
    // happen to the site's containers since the agents were killed.
    for k in all {
        let events = container_events(&shop.lan.hosts()[k], &shop.site, &since);
        assert!(
            events.is_empty(),
            "host {k}'s engine saw the site's containers change: {events:?}\n{}",
            shop.logs()
        );
    }
}

#[test]
fn a_killed_leader_is_replaced_within_10_s_and_an_apply_made_after_its_death_runs_on_the_survivors()
{
    let _one = one_at_a_time();
    let mut shop = Shop::start("lead", IMAGE, 2, FAST);
    let all = [0, 1, 2];
    shop.settled(&all, 2, "the replicas spread over the three hosts");
    let hosts = shop.one_leader();
    let old = hosts
        .iter()
        .find(|h| h.role == "leader")
        .cloned()
        .expect("one leader");
    let leader = old.host.expect("the leader is a host of the LAN");
    let survivors = others(leader);

    // The leader dies, its agent, engine and containers, the control plane up; an apply is made
    // at once, before the site has a new leader.
    let killed = Instant::now();
    shop.kill_host(leader);
    shop.apply("1.0.1", 3).ok("apply web at three replicas");
    let mut elected: Option<Duration> = None;
    let (new, after) = eventually_every(
        "another host reports that it leads, in a later term",
        RECOVER,
        POLL,
        || {
            if elected.is_none()
                && survivors.iter().any(|k| {
                    shop.agents[*k]
                        .as_ref()
                        .is_some_and(|a| a.stderr().contains("this host leads the site"))
                })
            {
                elected = Some(killed.elapsed());
            }
            let hosts = shop.reported();
            hosts
                .iter()
                .find(|h| h.id != old.id && h.role == "leader" && h.term > old.term)
                .map(|h| (h.clone(), killed.elapsed()))
                .ok_or_else(|| format!("hosts {hosts:?} (the old leader {old:?})\n{}", shop.logs()))
        },
    );
    eprintln!(
        "a survivor logged that it leads {elected:?} after the leader's death; host {} reports \
         that it leads in term {} {after:?} after",
        new.id, new.term
    );
    assert!(
        after <= Duration::from_secs(10),
        "a new leader only {after:?} after the old one's death\n{}",
        shop.logs()
    );
    shop.settled(&survivors, 3, "three web replicas over the two survivors");
    eprintln!(
        "the apply ran on the survivors {:?} after the leader's death",
        killed.elapsed()
    );
}

//! The multi-host fixture itself (`support::site_lan`): hosts of one site LAN reach each other
//! and the machine, a host's death takes its containers with it, a partition cuts it off and
//! heals, and a killed host's Docker Engine starts again. The site-cluster tests stand on these.

mod support;

use std::net::TcpListener;

use support::site_lan::SiteLan;
use support::{ATOLL, run};

#[test]
fn a_site_lans_hosts_reach_each_other_die_whole_and_partition() {
    let mut lan = SiteLan::new(2);
    let gateway = TcpListener::bind((lan.gateway(), 0)).unwrap();
    let gateway_port = gateway.local_addr().unwrap().port();
    let h0 = lan.hosts()[0].address;

    // A container on host 0, published on its address.
    let mut image = lan.hosts()[0].command(ATOLL);
    image.args(["demo", "image", "--tag", "atoll.local/demo:site-lan"]);
    run(image).ok("atoll demo image, into host 0's engine");
    let started = lan.hosts()[0].docker(&[
        "run",
        "-d",
        "-p",
        "8080:8080",
        "atoll.local/demo:site-lan",
        "demo",
        "serve",
    ]);
    started.ok("docker run on host 0");
    let container = started.stdout.trim().to_owned();
    let served = support::wait_until(std::time::Duration::from_secs(20), || {
        lan.hosts()[1].reaches(h0, 8080).then_some(())
    });
    assert!(served.is_some(), "host 1 reaches host 0's published port");
    assert!(
        lan.hosts()[0].reaches(lan.gateway(), gateway_port),
        "the machine"
    );
    let before = lan.hosts()[0].pids().len();
    assert!(
        before >= 3,
        "the engine, containerd and the container's processes are the host's: {before}"
    );

    // A partition cuts host 1 off, from host 0 and the machine; healed, it reaches both.
    lan.hosts()[1].partition(true);
    assert!(!lan.hosts()[1].reaches(h0, 8080));
    assert!(!lan.hosts()[1].reaches(lan.gateway(), gateway_port));
    lan.hosts()[1].partition(false);
    let healed = support::wait_until(std::time::Duration::from_secs(10), || {
        lan.hosts()[1].reaches(h0, 8080).then_some(())
    });
    assert!(healed.is_some(), "healed");

    // Host 0 dies: every process of it, its container too; host 1 lives on.
    lan.host(0).kill();
    assert!(lan.hosts()[0].pids().is_empty());
    assert!(
        !lan.hosts()[1].reaches(h0, 8080),
        "nothing serves on a dead host"
    );
    lan.hosts()[1]
        .docker(&["version"])
        .ok("host 1's engine lives on");

    // Started again, its engine remembers the container, stopped.
    lan.host(0).start_docker();
    let state = lan.hosts()[0].docker(&["inspect", "--format", "{{.State.Running}}", &container]);
    state.ok("docker inspect on host 0 after its restart");
    assert_eq!(state.stdout.trim(), "false");
}

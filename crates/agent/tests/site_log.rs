//! The site log over the in-process network: elections, replication, a leader's death, a
//! restart from the folder, a partition, a site of one. Short timers; every wait has a
//! deadline and waits on the log's own status, never a fixed sleep.

use std::path::Path;
use std::time::Duration;

use atoll_agent::site_log::{
    Capacity, Command, LocalNet, Member, Outcome, ProposeError, Role, SignedManifest, SiteLog,
    Timers,
};

const WITHIN: Duration = Duration::from_secs(10);

fn timers() -> Timers {
    Timers {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(300),
        election_max: Duration::from_millis(600),
        propose_within: Duration::from_secs(2),
        snapshot_every: 1000,
    }
}

fn member(host: &str) -> Member {
    Member {
        host: host.to_owned(),
        addr: format!("{host}.site:7443"),
    }
}

async fn start(net: &LocalNet, host: &str, folder: &Path, timers: Timers) -> SiteLog {
    let log = SiteLog::open(host, &folder.join(host), net.link(host), timers)
        .await
        .unwrap();
    net.attach(&log);
    log
}

/// Three hosts, formed from the first.
async fn three(net: &LocalNet, folder: &Path) -> Vec<SiteLog> {
    let mut logs = Vec::new();
    for host in ["h1", "h2", "h3"] {
        logs.push(start(net, host, folder, timers()).await);
    }
    logs[0]
        .initialize(&[member("h1"), member("h2"), member("h3")])
        .await
        .unwrap();
    logs
}

/// Waits until exactly one of `logs` leads and the others follow it; returns the leader's index.
async fn one_leader(logs: &[SiteLog]) -> usize {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let statuses: Vec<_> = logs.iter().map(SiteLog::status).collect();
        let leaders: Vec<usize> = (0..logs.len())
            .filter(|i| statuses[*i].role == Role::Leader)
            .collect();
        if let [leader] = leaders[..] {
            let name = logs[leader].host();
            let term = statuses[leader].term;
            if statuses
                .iter()
                .all(|s| s.leader.as_deref() == Some(name) && s.term == term)
            {
                return leader;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader within {WITHIN:?}: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn manifest(revision: u64) -> Command {
    Command::AcceptManifest(SignedManifest {
        revision,
        signed: format!("signed manifest {revision}").into_bytes(),
    })
}

/// Waits until `log` has applied at least `index`.
async fn applied(log: &SiteLog, index: u64) {
    log.wait_until("the entry applied", WITHIN, |s| {
        s.applied.is_some_and(|a| a >= index)
    })
    .await
    .unwrap();
}

fn revision(log: &SiteLog) -> Option<u64> {
    log.state().manifest.map(|m| m.revision)
}

#[tokio::test]
async fn three_hosts_elect_one_leader_and_a_command_reaches_all_three() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let logs = three(&net, folder.path()).await;
    let leader = one_leader(&logs).await;
    let status = logs[leader].status();
    assert_eq!(status.voters.len(), 3);

    let follower = (leader + 1) % 3;
    assert_eq!(
        logs[follower].propose(manifest(1)).await,
        Err(ProposeError::NotLeader {
            leader: Some(logs[leader].host().to_owned())
        })
    );
    assert_eq!(
        logs[leader].propose(manifest(1)).await,
        Ok(Outcome::Applied)
    );
    let index = logs[leader].status().applied.unwrap();
    for log in &logs {
        applied(log, index).await;
        assert_eq!(revision(log), Some(1), "on {}", log.host());
        assert_eq!(log.state(), logs[leader].state());
    }
    for log in &logs {
        log.stop().await;
    }
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_the_log_goes_on() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let mut logs = three(&net, folder.path()).await;
    let leader = one_leader(&logs).await;
    logs[leader].propose(manifest(1)).await.unwrap();

    let dead = logs.remove(leader);
    net.detach(dead.host());
    dead.stop().await;
    drop(dead);

    let started = tokio::time::Instant::now();
    let next = one_leader(&logs).await;
    let elected_in = started.elapsed();
    assert!(elected_in < WITHIN, "new leader after {elected_in:?}");
    assert_eq!(logs[next].propose(manifest(2)).await, Ok(Outcome::Applied));
    let index = logs[next].status().applied.unwrap();
    for log in &logs {
        applied(log, index).await;
        assert_eq!(revision(log), Some(2), "on {}", log.host());
    }
    for log in &logs {
        log.stop().await;
    }
}

#[tokio::test]
async fn a_host_started_again_from_its_folder_rejoins_with_its_state() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let mut logs = three(&net, folder.path()).await;
    let leader = one_leader(&logs).await;
    logs[leader].propose(manifest(1)).await.unwrap();
    let index = logs[leader].status().applied.unwrap();
    let restarted = (leader + 1) % 3;
    applied(&logs[restarted], index).await;

    let host = logs[restarted].host().to_owned();
    net.detach(&host);
    logs[restarted].stop().await;
    // What it missed while it was down comes when it is back.
    logs[leader]
        .propose(Command::HostUp {
            host: "h1".into(),
            capacity: Capacity {
                millicpus: 4000,
                memory_bytes: 8 << 30,
            },
        })
        .await
        .unwrap();
    let missed = logs[leader].status().applied.unwrap();

    // Cut off from the others, it has what its folder holds: the entries it knew committed.
    net.isolate(&host);
    logs[restarted] = start(&net, &host, folder.path(), timers()).await;
    let back = &logs[restarted];
    applied(back, index).await;
    assert_eq!(revision(back), Some(1), "its own log, from its folder");
    assert_eq!(back.state().hosts.len(), 0, "nothing it was not sent");
    net.heal();
    applied(back, missed).await;
    assert_eq!(back.state(), logs[leader].state());
    assert_eq!(back.status().voters.len(), 3);
    for log in &logs {
        log.stop().await;
    }
}

#[tokio::test]
async fn a_partitioned_minority_cannot_commit_and_takes_the_majoritys_log_when_healed() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let logs = three(&net, folder.path()).await;
    let leader = one_leader(&logs).await;
    logs[leader].propose(manifest(1)).await.unwrap();

    net.isolate(logs[leader].host());
    // It cannot commit: it either waits out its proposal or has stepped down.
    assert!(matches!(
        logs[leader].propose(manifest(7)).await,
        Err(ProposeError::NotCommitted(_) | ProposeError::NotLeader { .. })
    ));
    assert_eq!(revision(&logs[leader]), Some(1));

    let majority: Vec<SiteLog> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| logs[i].clone())
        .collect();
    let new_leader = &majority[one_leader(&majority).await];
    assert_eq!(new_leader.propose(manifest(2)).await, Ok(Outcome::Applied));

    net.heal();
    let index = new_leader.status().applied.unwrap();
    for log in &logs {
        applied(log, index).await;
        // Revision 7, never committed, is gone from the old leader's log.
        assert_eq!(revision(log), Some(2), "on {}", log.host());
    }
    for log in &logs {
        log.stop().await;
    }
}

#[tokio::test]
async fn a_site_of_one_voter_commits_alone_and_restarts_from_its_folder() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let solo = Timers {
        snapshot_every: 3,
        ..timers()
    };
    let log = start(&net, "h1", folder.path(), solo).await;
    log.initialize(&[member("h1")]).await.unwrap();
    log.wait_until("leader", WITHIN, |s| s.role == Role::Leader)
        .await
        .unwrap();
    for r in 1..=5 {
        assert_eq!(log.propose(manifest(r)).await, Ok(Outcome::Applied));
    }
    assert!(matches!(
        log.propose(manifest(2)).await,
        Ok(Outcome::Refused { .. })
    ));
    let state = log.state();
    net.detach("h1");
    log.stop().await;
    drop(log);

    // The snapshot (taken every 3 entries) and the log after it give the same state back.
    assert!(folder.path().join("h1/snapshot.json").exists());
    let log = start(&net, "h1", folder.path(), solo).await;
    log.wait_until("leader again", WITHIN, |s| s.role == Role::Leader)
        .await
        .unwrap();
    assert_eq!(log.propose(manifest(6)).await, Ok(Outcome::Applied));
    let mut expected = state;
    expected.apply(&manifest(6));
    assert_eq!(log.state(), expected);
    log.stop().await;
}

#[tokio::test]
async fn a_torn_last_write_is_dropped_and_a_damaged_log_is_refused_by_name() {
    let folder = tempfile::tempdir().unwrap();
    let net = LocalNet::new();
    let log = start(&net, "h1", folder.path(), timers()).await;
    log.initialize(&[member("h1")]).await.unwrap();
    log.wait_until("leader", WITHIN, |s| s.role == Role::Leader)
        .await
        .unwrap();
    log.propose(manifest(1)).await.unwrap();
    net.detach("h1");
    log.stop().await;
    drop(log);

    let file = folder.path().join("h1/log");
    let whole = std::fs::read(&file).unwrap();
    // A record cut short by a power loss, after the good ones.
    let mut torn = whole.clone();
    torn.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&file, &torn).unwrap();
    let log = start(&net, "h1", folder.path(), timers()).await;
    log.wait_until("leader again", WITHIN, |s| s.role == Role::Leader)
        .await
        .unwrap();
    assert_eq!(revision(&log), Some(1));
    net.detach("h1");
    log.stop().await;
    drop(log);

    // One byte flipped in the first record: not a crash, refused, naming the file.
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[12] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();
    let refused = SiteLog::open("h1", &folder.path().join("h1"), net.link("h1"), timers())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("h1/log"), "{refused}");
    assert!(refused.contains("damaged"), "{refused}");
}

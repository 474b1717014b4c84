//! `atoll-bench sites` end to end, small: twenty virtual sites against a control plane the
//! command starts itself (the `atoll` built beside it), and every figure the scale targets are
//! about printed.

use std::process::Command;

#[test]
fn a_small_fleet_bench_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atoll-bench"))
        .args(["sites", "--count", "20", "--changes", "2"])
        .args(["--steady", "3s", "--poll-wait", "1s", "--data-dir"])
        .arg(dir.path().join("control"))
        .env("ATOLL_LOG", "warn")
        .env_remove("ATOLL_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "enrollment: 20 sites in",
        "propagation, change 1: apply answered in",
        "propagation, change 2: apply answered in",
        "p50",
        "p99",
        "control plane at steady state:",
        "% of one core, RSS",
        "requests per second served at steady state:",
        "KB per site per hour",
        "summary for 20 sites",
    ] {
        assert!(
            stdout.contains(figure),
            "{figure:?} missing from:\n{stdout}"
        );
    }
}

/// Issue 14: the same run on two replicas sharing a PostgreSQL database, the sites spread over
/// both and the changes applied through the first; every figure, and each replica's idle CPU.
#[test]
fn a_small_fleet_bench_on_two_replicas_and_postgres_prints_every_figure() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atoll-bench"))
        .args([
            "sites",
            "--count",
            "20",
            "--changes",
            "2",
            "--replicas",
            "2",
        ])
        .args(["--store", &url])
        .args(["--steady", "3s", "--poll-wait", "1s", "--data-dir"])
        .arg(dir.path().join("control"))
        .env("ATOLL_LOG", "warn")
        .env_remove("ATOLL_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "2 control-plane replicas on one PostgreSQL database",
        "enrollment: 20 sites in",
        "propagation, change 2: apply answered in",
        "p99",
        "replica 0 at steady state:",
        "replica 1 at steady state:",
        "% of one core [< 10%]",
        "KB per site per hour",
        "summary for 20 sites",
    ] {
        assert!(
            stdout.contains(figure),
            "{figure:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn several_replicas_need_a_postgres_store() {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll-bench"))
        .args(["sites", "--count", "1", "--replicas", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--store postgres://"), "{stderr}");
}

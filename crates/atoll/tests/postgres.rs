//! End-to-end on PostgreSQL: the real `atoll control --store postgres://…` against the
//! throwaway cluster of `atoll_store::pg_cluster`, driven by the real CLI.

mod support;

use support::{ControlPlane, atoll_command, run};

#[test]
fn a_control_plane_on_postgres_serves_the_examples_and_keeps_them_across_a_crash() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlane::start_with(dir.path(), "127.0.0.1:0", &["--store", &url]);
    control.apply_examples();
    let names = |control: &ControlPlane| -> Vec<String> {
        let mut names: Vec<String> = control
            .sites()
            .unwrap()
            .iter()
            .map(|s| s["resource"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let sites = names(&control);
    assert!(sites.contains(&"store-0042".to_owned()), "{sites:?}");
    assert!(
        !dir.path().join("atoll.db").exists(),
        "nothing is kept in an SQLite file beside the PostgreSQL store"
    );

    // Killed and started again on the same database: everything applied is still there.
    let address = control.crash();
    let control = ControlPlane::start_with(dir.path(), &address, &["--store", &url]);
    assert_eq!(names(&control), sites);
}

#[test]
fn an_unknown_store_scheme_and_a_url_asking_for_tls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut cmd = atoll_command(dir.path());
    cmd.args(["control", "--data-dir", data, "--store", "mysql://db/atoll"]);
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("`mysql://`"), "{}", out.stderr);

    let mut cmd = atoll_command(dir.path());
    cmd.args(["control", "--data-dir", data, "--listen", "127.0.0.1:0"])
        .env(
            "ATOLL_STORE",
            "postgres://atoll@127.0.0.1:1/atoll?sslmode=require",
        );
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("sslmode"), "{}", out.stderr);
}

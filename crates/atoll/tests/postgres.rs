//! End-to-end on PostgreSQL: the real `atoll control --store postgres://…` against the
//! throwaway cluster of `atoll_store::pg_cluster`, driven by the real CLI.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

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

/// Gives a second replica the first one's keys: every file of its data folder (the CA, the
/// manifest-signing key, the master key, the server certificate, the first admin token) but
/// its own SQLite files, which a PostgreSQL control plane does not have, and its lock file.
fn share_keys(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("atoll.db") || name == "control.pid" {
            continue;
        }
        assert!(
            entry.file_type().unwrap().is_file(),
            "{name} in the data folder is not a file: share it too"
        );
        std::fs::copy(entry.path(), to.join(&name)).unwrap();
    }
}

/// Issue 14, item 2: an agent long-polls replica A; an apply through replica B, on the same
/// database, answers A's waiting poll with the new revision within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_through_one_replica_wakes_the_long_poll_waiting_on_another_within_a_second() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ControlPlane::start_with(dir_a.path(), "127.0.0.1:0", &["--store", &url]);
    share_keys(dir_a.path(), dir_b.path());
    let b = ControlPlane::start_with(dir_b.path(), "127.0.0.1:0", &["--store", &url]);

    let app = "kind: Application\nname: web\nversion: '1'\nservices: [{ name: web, image: x }]\n---\nkind: Deployment\nname: web\napplication: web\nplacement: { sites: 'run == yes' }\n";
    a.apply_yaml(&dir_a.path().join("app.yaml"), app);
    let site = |run: &str| format!("kind: Site\nname: shop\nlabels: {{ run: '{run}' }}\n");
    a.apply_yaml(&dir_a.path().join("site.yaml"), &site("no"));
    let identity = support::enroll_host(
        &a,
        &dir_a.path().join("agent"),
        "shop",
        atoll_api::agent::Inventory::default(),
    )
    .await;
    let client = identity.client().unwrap();
    let poll = move |have: u64, hash: String, wait: u64| {
        client
            .get(format!(
                "{}/v1/sites/shop/manifest?have={have}&hash={hash}&wait={wait}",
                a.url
            ))
            .send()
    };
    let manifest = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        let signed: atoll_api::agent::SignedManifest = response.json().await.unwrap();
        serde_json::from_str::<atoll_api::Manifest>(&signed.payload).unwrap()
    };
    let held = manifest(poll(0, "none".into(), 0).await.unwrap()).await;

    let mut waiting = tokio::spawn({
        let answer = poll(held.revision, held.hash.clone(), 30);
        async move {
            let response = answer.await.expect("the long-poll on A");
            (response, Instant::now())
        }
    });
    // Nothing newer yet: A holds the poll.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "A answered before anything changed"
    );
    let started = Instant::now();
    tokio::task::block_in_place(|| b.apply_yaml(&dir_b.path().join("site.yaml"), &site("yes")));
    let applied = Instant::now();
    let (response, answered) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("A's long-poll was not woken by the apply through B")
        .unwrap();
    let got = manifest(response).await;
    let revision = tokio::task::block_in_place(|| b.revision("shop"));
    assert!(
        got.revision > held.revision,
        "{} then {}",
        held.revision,
        got.revision
    );
    assert_eq!(got.revision, revision, "A answers with what B committed");
    let delay = answered.saturating_duration_since(applied);
    println!(
        "FIGURE cross-replica wake-up: A answered {:.3} s after the apply through B started, {:.3} s after it returned (the apply took {:.3} s)",
        answered.saturating_duration_since(started).as_secs_f64(),
        delay.as_secs_f64(),
        applied.duration_since(started).as_secs_f64()
    );
    assert!(
        delay < Duration::from_secs(1),
        "A answered {delay:?} after B's apply"
    );
}

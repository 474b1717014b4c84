//! Two rollout controllers on one store, as two control-plane replicas run them: exactly one
//! steps rollouts at a time, the other takes over once the first stops renewing its lease, and
//! the first, woken after the takeover, can no longer commit a step. On SQLite and on a
//! throwaway PostgreSQL database.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_control::core::rollout::{Event, Phase};
use atoll_control::shell::agents::Agents;
use atoll_control::shell::fleet::Fleet;
use atoll_control::shell::lease::{Lease, Timing};
use atoll_control::shell::rollouts::{Controller, LEASE};
use atoll_control::shell::service::{ControlPlane, Error};
use atoll_control::shell::signing::ManifestSigner;
use atoll_control::shell::tls::Pki;
use atoll_control::shell::vault::Vault;
use atoll_spec::Source;
use atoll_store::{PostgresStore, SqliteStore, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TIMING: Timing = Timing {
    ttl: Duration::from_millis(600),
    every: Duration::from_millis(100),
};

fn app(version: &str) -> Source {
    Source {
        name: "web.yaml".into(),
        text: format!(
            "kind: Application\nname: web\nversion: {version}\nservices:\n  - name: web\n    image: nginx:{version}\n---\n\
             kind: Deployment\nname: web\napplication: web\nplacement:\n  sites: \"tier == edge\"\nrollout:\n  waves: [\"100%\"]\n"
        ),
    }
}

/// One replica's controller over the shared `store`, keeping the lease as `holder`.
fn replica(
    store: &Arc<dyn Store>,
    dir: &Path,
    holder: &str,
    shutdown: &watch::Receiver<bool>,
) -> (Controller, JoinHandle<()>) {
    let fleet = Arc::new(Fleet::default());
    let control = ControlPlane::new(
        store.clone(),
        fleet.clone(),
        Arc::new(Vault::from_key([5; 32])),
        Arc::new(ManifestSigner::load_or_create(dir).unwrap()),
    );
    let pki = Arc::new(Pki::load_or_create(dir, &[]).unwrap());
    let agents = Agents::new(store.clone(), control.clone(), fleet, pki);
    let (lease, keeper) = Lease::keep(store.clone(), LEASE, holder, TIMING, shutdown.clone());
    let controller = Controller {
        control,
        agents,
        lease,
        shutdown: shutdown.clone(),
    };
    (controller, keeper)
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn one_steps_at_a_time_and_the_other_takes_over(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let (a, a_keeper) = replica(&store, dir.path(), "a", &shutdown);
    let site = Source {
        name: "s.yaml".into(),
        text: "kind: Site\nname: s1\nlabels: { tier: edge }\n".into(),
    };
    a.control
        .apply(&[site, app("1.0.0")], false, "t")
        .await
        .unwrap();
    a.control.apply(&[app("2.0.0")], false, "t").await.unwrap();
    let rollouts = a.control.rollouts().await.unwrap();
    assert!(
        matches!(rollouts["web"].phase, Phase::Running),
        "{rollouts:?}"
    );

    until("a takes the free lease", Duration::from_secs(5), || {
        a.lease.fence().is_some()
    })
    .await;
    let (b, _b_keeper) = replica(&store, dir.path(), "b", &shutdown);
    // A second of both renewing: a steps, b never does.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        assert!(!(a.lease.fence().is_some() && b.lease.fence().is_some()));
        assert_eq!(b.round().await.unwrap(), 0, "b does not hold the lease");
        assert_eq!(a.round().await.unwrap(), 1, "a steps its one rollout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_fence = a.lease.fence().unwrap();

    // a's process stops renewing (kill -9, or a pause): it stops stepping at its deadline,
    // and b takes over once the lease expired in the store.
    a_keeper.abort();
    let mut a_stopped = None;
    let took = until("b takes over", Duration::from_secs(3), || {
        if a_stopped.is_none() && a.lease.fence().is_none() {
            a_stopped = Some(Instant::now());
        }
        let held = b.lease.fence().is_some();
        assert!(!(held && a.lease.fence().is_some()), "both held the lease");
        held
    })
    .await;
    assert!(a_stopped.is_some(), "a stopped before b took over");
    assert!(took <= TIMING.ttl + 3 * TIMING.every, "{took:?}");
    let b_fence = b.lease.fence().unwrap();
    assert!(b_fence > a_fence);
    assert_eq!(a.round().await.unwrap(), 0);
    assert_eq!(b.round().await.unwrap(), 1);

    // a, woken with the fence it had, cannot commit a step: the store refuses it whole.
    let version = store.version().await.unwrap();
    let refused = a
        .control
        .drive_rollout_fenced("web", &[Event::Pause], LEASE, a_fence)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Store(StoreError::Conflict { expected, actual }) if expected == a_fence && actual == b_fence),
        "{refused:?}"
    );
    assert_eq!(store.version().await.unwrap(), version);
    b.control
        .drive_rollout_fenced("web", &[Event::Pause], LEASE, b_fence)
        .await
        .unwrap();
    assert!(
        store.version().await.unwrap() > version,
        "b's step is committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_one_controller_steps_at_a_time_and_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
    one_steps_at_a_time_and_the_other_takes_over(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_controller_steps_at_a_time_and_the_other_takes_over() {
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let store = PostgresStore::open(&url).await.unwrap();
    one_steps_at_a_time_and_the_other_takes_over(Arc::new(store)).await;
}

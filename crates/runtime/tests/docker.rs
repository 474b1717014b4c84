//! The Docker driver against the real daemon of this host (`DOCKER_HOST` or
//! `/var/run/docker.sock`).
//!
//! Nothing here needs a registry: the image is made from `/bin/sleep` by
//! `import_executable_image`. Each test labels its containers with a value of its own, so tests
//! run in parallel without seeing each other, and a guard removes what a test made even when it
//! fails. Without a daemon these tests fail, on purpose: a driver that was never run against
//! Docker is not known to work.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use atoll_runtime::image::{DIGEST_LABEL, import_executable_image};
use atoll_runtime::{
    Bind, ContainerSpec, DeviceMapping, DockerDriver, Driver, Error, Event, NamedVolume,
    PortBinding, State,
};
use tokio::sync::mpsc;

const TEST_LABEL: &str = "io.atoll.test";
const GRACE: Duration = Duration::from_secs(1);

/// A name no other test, or earlier run, uses: the process id, a per-process random number
/// (from the standard library's hash seed, so without reading the clock) and a counter.
fn unique() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let random = RandomState::new().build_hasher().finish() as u32;
    format!(
        "{}-{random:08x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn connect() -> DockerDriver {
    DockerDriver::connect().await.unwrap_or_else(|e| {
        panic!(
            "these tests need a Docker daemon at DOCKER_HOST or /var/run/docker.sock, \
             and none answered: {e}"
        )
    })
}

/// Removes, through the docker CLI, whatever a test registered, when the test ends however it
/// ends.
#[derive(Debug, Default)]
struct Cleanup {
    containers: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
}

impl Cleanup {
    fn container(&self, name: &str) {
        self.containers.lock().unwrap().push(name.to_string());
    }
    fn volume(&self, name: &str) {
        self.volumes.lock().unwrap().push(name.to_string());
    }
    fn image(&self, tag: &str) {
        self.images.lock().unwrap().push(tag.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str], names: &Mutex<Vec<String>>| {
            let names = names.lock().map(|n| n.clone()).unwrap_or_default();
            if !names.is_empty() {
                let _ = Command::new("docker").args(args).args(&names).output();
            }
        };
        run(&["rm", "-f"], &self.containers);
        run(&["volume", "rm", "-f"], &self.volumes);
        run(&["rmi", "-f"], &self.images);
    }
}

/// A connected driver, a freshly imported image and a label value of the test's own.
struct Fixture {
    docker: DockerDriver,
    image: String,
    label: String,
    cleanup: Cleanup,
}

impl Fixture {
    async fn new() -> Self {
        let docker = connect().await;
        let cleanup = Cleanup::default();
        let image = format!("atoll-runtime-test/sleep:{}", unique());
        cleanup.image(&image);
        import_executable_image(&docker, Path::new("/bin/sleep"), &image)
            .await
            .expect("import /bin/sleep as an image");
        Self {
            docker,
            image,
            label: unique(),
            cleanup,
        }
    }

    /// A container sleeping five minutes, labelled for this test.
    fn spec(&self) -> ContainerSpec {
        let name = format!("atoll-test-{}", unique());
        self.cleanup.container(&name);
        ContainerSpec {
            name,
            image: self.image.clone(),
            command: vec![],
            args: vec!["300".into()],
            env: BTreeMap::new(),
            labels: BTreeMap::from([(TEST_LABEL.to_string(), self.label.clone())]),
            ports: vec![],
            binds: vec![],
            volumes: vec![],
            memory_bytes: None,
            cpu_millis: None,
            devices: vec![],
            gpus: vec![],
        }
    }

    async fn list(&self) -> Vec<atoll_runtime::Container> {
        self.docker.list(TEST_LABEL, &self.label).await.unwrap()
    }

    async fn events(&self) -> mpsc::Receiver<Event> {
        self.docker.events(TEST_LABEL, &self.label).await.unwrap()
    }
}

/// `docker inspect` of one object, as JSON.
fn inspect(id: &str) -> serde_json::Value {
    let output = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("run docker inspect");
    assert!(output.status.success(), "docker inspect {id} failed");
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    all.remove(0)
}

/// Waits until `action` happens to container `id`, failing after `limit`.
async fn wait_for(rx: &mut mpsc::Receiver<Event>, id: &str, action: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if event.container_id == id && event.action == action => return,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("event stream ended before {action}; saw {seen:?}"),
            Err(_) => panic!("no {action} event for {id} within {limit:?}; saw {seen:?}"),
        }
    }
}

#[tokio::test]
async fn containers_go_through_their_lifecycle() {
    let f = Fixture::new().await;
    let spec = f.spec();
    let id = f.docker.create(&spec).await.unwrap();

    let created = f.list().await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].id, id);
    assert_eq!(created[0].name, spec.name);
    assert_eq!(created[0].image, f.image);
    assert_eq!(created[0].state, State::Created);
    assert_eq!(created[0].started_at, None);
    assert_eq!(created[0].finished_at, None);

    f.docker.start(&id).await.unwrap();
    // Starting a running container is not an error.
    f.docker.start(&id).await.unwrap();
    let running = f.list().await.remove(0);
    assert_eq!(running.state, State::Running);
    let first_start = running.started_at.clone().expect("started_at once running");
    assert_eq!(running.finished_at, None);
    // The daemon merges the image's labels into the container's.
    for (key, value) in &spec.labels {
        assert_eq!(running.labels.get(key), Some(value), "{:?}", running.labels);
    }
    assert!(running.labels.contains_key(DIGEST_LABEL));

    // `sleep` as PID 1 ignores SIGTERM, so the stop ends in SIGKILL after the grace period.
    f.docker.stop(&id, GRACE).await.unwrap();
    let stopped = f.list().await.remove(0);
    assert_eq!(stopped.state, State::Exited { code: 137 });
    assert!(stopped.finished_at.is_some());
    assert_eq!(stopped.started_at.as_ref(), Some(&first_start));
    // Stopping a stopped container is not an error (the daemon answers 304).
    f.docker.stop(&id, GRACE).await.unwrap();

    f.docker.start(&id).await.unwrap();
    let restarted = f.list().await.remove(0);
    assert_eq!(restarted.state, State::Running);
    assert_ne!(restarted.started_at, Some(first_start));

    f.docker.remove(&id).await.unwrap();
    assert!(f.list().await.is_empty());
    f.docker.remove(&id).await.unwrap();
}

#[tokio::test]
async fn exec_returns_exit_codes_and_a_running_container_has_an_address() {
    let f = Fixture::new().await;
    let id = f.docker.create(&f.spec()).await.unwrap();
    f.docker.start(&id).await.unwrap();
    let sleep = |arg: &str| vec!["/usr/local/bin/sleep".to_owned(), arg.to_owned()];
    assert_eq!(
        f.docker
            .exec(&id, &sleep("0"), Duration::from_secs(10))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.docker
            .exec(&id, &sleep("not-a-number"), Duration::from_secs(10))
            .await
            .unwrap(),
        1
    );
    let slow = f
        .docker
        .exec(&id, &sleep("30"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(slow.to_string().contains("did not finish"), "{slow}");
    let ip = f
        .docker
        .address(&id)
        .await
        .unwrap()
        .expect("a container on the default bridge has an address");
    assert!(!ip.is_loopback(), "{ip}");
    f.docker.remove(&id).await.unwrap();
    assert!(matches!(
        f.docker.address(&id).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_killed_container_reports_die_within_five_seconds() {
    let f = Fixture::new().await;
    let mut events = f.events().await;
    // Created right after subscribing, before the event stream's request has surely reached
    // the daemon: the subscription must still see it.
    let id = f.docker.create(&f.spec()).await.unwrap();
    wait_for(&mut events, &id, "create", Duration::from_secs(5)).await;
    f.docker.start(&id).await.unwrap();
    wait_for(&mut events, &id, "start", Duration::from_secs(5)).await;

    let killed = Command::new("docker")
        .args(["kill", &id])
        .output()
        .expect("run docker kill");
    assert!(killed.status.success(), "docker kill failed: {killed:?}");
    wait_for(&mut events, &id, "die", Duration::from_secs(5)).await;
    assert_eq!(f.list().await[0].state, State::Exited { code: 137 });

    f.docker.remove(&id).await.unwrap();
    wait_for(&mut events, &id, "destroy", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn command_and_args_replace_the_image_defaults() {
    let f = Fixture::new().await;
    let mut events = f.events().await;
    let mut spec = f.spec();
    // `sleep` refuses this argument and exits 1: proof that both reached the process.
    spec.command = vec!["/usr/local/bin/sleep".into()];
    spec.args = vec!["not-a-number".into()];
    let id = f.docker.create(&spec).await.unwrap();
    f.docker.start(&id).await.unwrap();
    wait_for(&mut events, &id, "die", Duration::from_secs(5)).await;
    let exited = f.list().await.remove(0);
    assert_eq!(exited.state, State::Exited { code: 1 });
    assert!(exited.started_at.is_some() && exited.finished_at.is_some());

    let config = &inspect(&id)["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/sleep"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["not-a-number"]));
}

#[tokio::test]
async fn create_applies_mounts_env_labels_ports_and_limits() {
    let f = Fixture::new().await;
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "x = 1\n").unwrap();
    let volume = format!("atoll-test-{}", unique());
    f.cleanup.volume(&volume);

    let mut spec = f.spec();
    spec.env = BTreeMap::from([
        ("GREETING".to_string(), "hello world".to_string()),
        ("EMPTY".to_string(), String::new()),
    ]);
    spec.labels.insert("io.atoll.extra".into(), "yes".into());
    spec.binds = vec![Bind {
        source: conf.path().to_path_buf(),
        target: "/etc/x.conf".into(),
        read_only: true,
    }];
    spec.volumes = vec![NamedVolume {
        name: volume.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    // A port that is free now: this test owns it, whatever else runs on the host.
    let host_port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    spec.ports = vec![
        PortBinding {
            container: 8080,
            host: Some(host_port),
            udp: false,
        },
        PortBinding {
            container: 5353,
            host: None,
            udp: true,
        },
    ];
    spec.memory_bytes = Some(64 * 1024 * 1024);
    spec.cpu_millis = Some(250);
    let id = f.docker.create(&spec).await.unwrap();
    f.docker.start(&id).await.unwrap();

    let container = inspect(&id);
    let config = &container["Config"];
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert!(env.contains(&"EMPTY="), "{env:?}");
    assert_eq!(config["Labels"][TEST_LABEL], f.label.as_str());
    assert_eq!(config["Labels"]["io.atoll.extra"], "yes");
    assert!(config["ExposedPorts"].get("5353/udp").is_some());
    assert!(config["ExposedPorts"].get("8080/tcp").is_some());

    let host = &container["HostConfig"];
    assert_eq!(host["Memory"], 64 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 250_000_000);
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(
        host["PortBindings"]["8080/tcp"][0]["HostPort"],
        host_port.to_string().as_str(),
        "{host}"
    );
    assert!(host["PortBindings"].get("5353/udp").is_none(), "{host}");

    // The listing reports the bind's source as it was asked for, and not the volume's.
    let listed = f.list().await.remove(0);
    assert_eq!(listed.bind_sources, [conf.path().to_path_buf()]);

    let mounts = container["Mounts"].as_array().unwrap();
    let bind = mounts
        .iter()
        .find(|m| m["Destination"] == "/etc/x.conf")
        .unwrap_or_else(|| panic!("no mount at /etc/x.conf: {mounts:?}"));
    assert_eq!(bind["Type"], "bind");
    assert_eq!(bind["RW"], false);
    assert_eq!(PathBuf::from(bind["Source"].as_str().unwrap()), conf.path());
    let data = mounts
        .iter()
        .find(|m| m["Destination"] == "/data")
        .unwrap_or_else(|| panic!("no mount at /data: {mounts:?}"));
    assert_eq!(data["Type"], "volume");
    assert_eq!(data["Name"], volume.as_str());
    assert_eq!(data["RW"], true);

    f.docker.remove(&id).await.unwrap();
    // Removing a container keeps its named volumes.
    assert_eq!(inspect(&volume)["Name"], volume.as_str());
}

/// The exit code of a container of `image` (made from `/usr/bin/test`) running
/// `test -c /dev/camera0` with `devices` mapped.
async fn test_for_a_character_device(f: &Fixture, image: &str, devices: Vec<DeviceMapping>) -> i64 {
    let mut events = f.events().await;
    let mut spec = f.spec();
    spec.image = image.to_owned();
    spec.args = vec!["-c".into(), "/dev/camera0".into()];
    spec.devices = devices;
    let id = f.docker.create(&spec).await.unwrap();
    f.docker.start(&id).await.unwrap();
    wait_for(&mut events, &id, "die", Duration::from_secs(10)).await;
    let listed = f.list().await;
    match listed.iter().find(|c| c.id == id).map(|c| c.state) {
        Some(State::Exited { code }) => code,
        other => panic!("the container of `test -c` is {other:?}"),
    }
}

/// A device node made with `mknod` in a folder of the test's own (character device 1:3, what
/// `/dev/null` is), mapped into a container: it sees a character device at the path asked for,
/// and a container without the mapping does not. Needs root, as `mknod` does.
#[tokio::test]
async fn a_mapped_device_node_is_a_character_device_in_the_container() {
    let f = Fixture::new().await;
    let image = format!("atoll-runtime-test/test:{}", unique());
    f.cleanup.image(&image);
    import_executable_image(&f.docker, Path::new("/usr/bin/test"), &image)
        .await
        .expect("import /usr/bin/test as an image");
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("camera");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .output()
        .expect("run mknod");
    assert!(
        made.status.success(),
        "mknod failed (this test must run as root): {made:?}"
    );

    let mapped = vec![DeviceMapping::new(&node, "/dev/camera0")];
    assert_eq!(test_for_a_character_device(&f, &image, mapped).await, 0);
    assert_eq!(test_for_a_character_device(&f, &image, vec![]).await, 1);
}

#[tokio::test]
async fn a_missing_bind_source_is_an_error() {
    let f = Fixture::new().await;
    let mut spec = f.spec();
    spec.binds = vec![Bind {
        source: PathBuf::from(format!("/nonexistent/atoll-{}", unique())),
        target: "/etc/x.conf".into(),
        read_only: true,
    }];
    let err = f.docker.create(&spec).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/atoll-"), "{err}");
}

#[tokio::test]
async fn a_name_conflict_says_so() {
    let f = Fixture::new().await;
    let spec = f.spec();
    f.docker.create(&spec).await.unwrap();
    let err = f.docker.create(&spec).await.unwrap_err();
    assert!(matches!(err, Error::Runtime(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("already in use") && message.contains(&spec.name),
        "{message}"
    );
}

#[tokio::test]
async fn list_shows_only_containers_with_the_label() {
    let f = Fixture::new().await;
    let labelled = f.docker.create(&f.spec()).await.unwrap();

    let mut other_value = f.spec();
    other_value
        .labels
        .insert(TEST_LABEL.into(), format!("{}-other", f.label));
    f.docker.create(&other_value).await.unwrap();
    let mut unlabelled = f.spec();
    unlabelled.labels.clear();
    f.docker.create(&unlabelled).await.unwrap();

    let listed: Vec<String> = f.list().await.into_iter().map(|c| c.id).collect();
    assert_eq!(listed, [labelled]);
}

#[tokio::test]
async fn missing_containers_are_not_found_except_for_removal() {
    let docker = connect().await;
    let id = format!("atoll-missing-{}", unique());
    assert!(matches!(docker.start(&id).await, Err(Error::NotFound(_))));
    assert!(matches!(
        docker.stop(&id, GRACE).await,
        Err(Error::NotFound(_))
    ));
    docker.remove(&id).await.unwrap();
}

#[tokio::test]
async fn pulling_from_an_unreachable_registry_fails_fast() {
    let docker = connect().await;
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        docker.pull("registry.invalid/none:1"),
    )
    .await
    .expect("the pull did not fail within 30 s");
    match result {
        Err(Error::Pull { image, message }) => {
            assert_eq!(image, "registry.invalid/none:1");
            assert!(!message.is_empty());
        }
        other => panic!("expected Error::Pull, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn images_are_present_once_imported_and_imports_are_idempotent() {
    let f = Fixture::new().await;
    assert!(f.docker.image_present(&f.image).await.unwrap());
    assert!(
        !f.docker
            .image_present(&format!("atoll-runtime-test/missing:{}", unique()))
            .await
            .unwrap()
    );

    let digest = f.docker.image_label(&f.image, DIGEST_LABEL).await.unwrap();
    assert_eq!(digest.as_ref().map(String::len), Some(64), "{digest:?}");
    assert_eq!(
        inspect(&f.image)["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/sleep"])
    );

    let id_before = inspect(&f.image)["Id"].clone();
    let started = Instant::now();
    import_executable_image(&f.docker, Path::new("/bin/sleep"), &f.image)
        .await
        .unwrap();
    let again = started.elapsed();
    assert_eq!(
        inspect(&f.image)["Id"],
        id_before,
        "the second import replaced the image"
    );
    assert!(
        again < Duration::from_secs(2),
        "the second import took {again:?}"
    );

    // Another executable under the same tag replaces the image.
    import_executable_image(&f.docker, Path::new("/bin/true"), &f.image)
        .await
        .unwrap();
    assert_ne!(inspect(&f.image)["Id"], id_before);
    assert_eq!(
        inspect(&f.image)["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/true"])
    );
}

#[tokio::test]
async fn info_names_the_engine() {
    let docker = connect().await;
    let info = docker.info().await.unwrap();
    assert!(info.name == "docker" || info.name == "podman", "{info:?}");
    assert!(!info.version.is_empty(), "{info:?}");
    assert!(info.api_version.starts_with("1."), "{info:?}");
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_and_named() {
    let socket = format!("/nonexistent/atoll-{}.sock", unique());
    match DockerDriver::connect_to(&format!("unix://{socket}")).await {
        Err(Error::Unavailable(message)) => assert!(message.contains(&socket), "{message}"),
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
    // Nothing listens on port 1 of the loopback address.
    match DockerDriver::connect_to("tcp://127.0.0.1:1").await {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}")
        }
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
}

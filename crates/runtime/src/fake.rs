//! A [`Driver`] that keeps containers in memory, for tests and for simulating thousands of
//! sites in one process.
//!
//! It must stay cheap: one mutex-guarded map per fake host, no task or timer per container, no
//! wall clock. Containers never run, so nothing happens to them unless the agent asks or a test
//! says so through the hooks ([`FakeDriver::kill`], [`FakeDriver::remove_behind_the_back`]).
//! Everything is deterministic — ids count up (`fake-1`, `fake-2`, …) and times come from a
//! counter — so a seeded simulation replays exactly. Where Docker has an opinion (name
//! conflicts, missing images, idempotent stop and remove, the events it emits) the fake
//! follows it, so that the agent cannot come to rely on something only the fake allows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{
    Container, ContainerSpec, Driver, Error, Event, Result, RuntimeInfo, State, check_devices,
};

/// Events queued for a subscriber; as with Docker, a subscriber that falls further behind
/// misses events (they are hints: the reconciler's periodic pass catches up).
const EVENT_BUFFER: usize = 256;

/// The exit code of a process ended by the SIGTERM of a stop, as Docker reports it.
const STOP_EXIT_CODE: i64 = 143;

/// An in-memory container runtime. Cheap to create; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct FakeDriver {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The number in the last id handed out.
    last_id: u64,
    /// Ticks of the fake clock so far.
    clock: u64,
    /// By the number in the id, so in creation order.
    containers: BTreeMap<u64, FakeContainer>,
    /// Container names to keys: names are unique per host, and looked up on every create.
    names: HashMap<String, u64>,
    images: BTreeSet<String>,
    pullable: BTreeSet<String>,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug)]
struct FakeContainer {
    spec: ContainerSpec,
    container: Container,
    /// What `exec` answers in this container.
    exec_exit: i64,
    /// Signals sent with `signal`, oldest first.
    signals: Vec<String>,
}

#[derive(Debug)]
struct Subscriber {
    label: String,
    value: String,
    events: mpsc::Sender<Event>,
}

impl FakeDriver {
    /// A fake host with no images.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake host on which `images` are already present.
    pub fn with_images<I, S>(images: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let driver = Self::new();
        driver
            .lock()
            .images
            .extend(images.into_iter().map(Into::into));
        driver
    }

    /// Lets `pull(image)` succeed from now on; without this, pulls fail as with no registry.
    pub fn allow_pull(&self, image: &str) {
        self.lock().pullable.insert(image.to_string());
    }

    /// Test hook: the main process of container `id` exits with `exit_code` (a crash, an OOM
    /// kill: 137, …). A container that is not running is left as it is.
    pub fn kill(&self, id: &str, exit_code: i64) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        inner.exit(key, exit_code);
        Ok(())
    }

    /// Test hook: someone else removed container `id` (`docker rm -f` by hand).
    pub fn remove_behind_the_back(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        inner.destroy(key);
        Ok(())
    }

    /// Test hook: what `exec` answers in container `id` from now on (a failing health check).
    pub fn set_exec_exit(&self, id: &str, code: i64) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        if let Some(c) = inner.containers.get_mut(&key) {
            c.exec_exit = code;
        }
        Ok(())
    }

    /// The signals container `id` received, oldest first.
    pub fn signals(&self, id: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .key(id)
            .ok()
            .and_then(|k| inner.containers.get(&k))
            .map(|c| c.signals.clone())
            .unwrap_or_default()
    }

    /// The spec container `id` was created from, for tests to check what the agent asked for.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        let inner = self.lock();
        let key = inner.key(id).ok()?;
        inner.containers.get(&key).map(|c| c.spec.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in here can leave the state half-changed when it panics, so a poisoned lock
        // is still good to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// The key of container `id_or_name`, which (as with Docker) may be its id or its name.
    fn key(&self, id_or_name: &str) -> Result<u64> {
        if let Some(key) = id_or_name
            .strip_prefix("fake-")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|key| self.containers.contains_key(key))
        {
            return Ok(key);
        }
        self.names
            .get(id_or_name)
            .copied()
            .ok_or_else(|| Error::NotFound(id_or_name.to_string()))
    }

    /// The next reading of the fake clock: RFC 3339, fixed width, so later times compare
    /// greater as strings too.
    fn tick(&mut self) -> String {
        self.clock += 1;
        format!("1970-01-01T00:00:00.{:09}Z", self.clock)
    }

    fn exit(&mut self, key: u64, code: i64) {
        if !self
            .containers
            .get(&key)
            .is_some_and(|c| c.container.state == State::Running)
        {
            return;
        }
        let finished_at = self.tick();
        let Some(c) = self.containers.get_mut(&key) else {
            return;
        };
        c.container.state = State::Exited { code };
        c.container.finished_at = Some(finished_at);
        let (id, labels) = (c.container.id.clone(), c.container.labels.clone());
        self.emit(&id, &labels, "die");
    }

    fn destroy(&mut self, key: u64) {
        self.exit(key, STOP_EXIT_CODE);
        if let Some(c) = self.containers.remove(&key) {
            self.names.remove(&c.container.name);
            self.emit(&c.container.id, &c.container.labels, "destroy");
        }
    }

    /// Delivers an event to every subscriber watching one of `labels`; drops subscribers whose
    /// receiver is gone.
    fn emit(&mut self, id: &str, labels: &BTreeMap<String, String>, action: &str) {
        self.subscribers.retain(|subscriber| {
            if subscriber.events.is_closed() {
                return false;
            }
            if labels.get(&subscriber.label) == Some(&subscriber.value) {
                let event = Event {
                    container_id: id.to_string(),
                    action: action.to_string(),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = subscriber.events.try_send(event)
                {
                    return false;
                }
            }
            true
        });
    }
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    async fn info(&self) -> Result<RuntimeInfo> {
        Ok(RuntimeInfo {
            name: "fake".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: "fake".to_string(),
        })
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Container>> {
        let inner = self.lock();
        Ok(inner
            .containers
            .values()
            .filter(|c| c.container.labels.get(label).map(String::as_str) == Some(value))
            .map(|c| c.container.clone())
            .collect())
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.lock().images.contains(image))
    }

    async fn pull(&self, image: &str) -> Result<()> {
        let mut inner = self.lock();
        if !inner.pullable.contains(image) {
            return Err(Error::Pull {
                image: image.to_string(),
                message: "the fake runtime reaches no registry; call FakeDriver::allow_pull \
                          for images a test may pull"
                    .to_string(),
            });
        }
        inner.images.insert(image.to_string());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let mut inner = self.lock();
        if !spec.name.is_empty() && !valid_name(&spec.name) {
            return Err(Error::Runtime(format!(
                "creating container {}: invalid name; use letters, digits, _ . and -, starting \
                 with a letter or digit",
                spec.name
            )));
        }
        if inner.names.contains_key(&spec.name) {
            return Err(Error::Runtime(format!(
                "container name {} is already in use on this host; remove that container or \
                 choose another name",
                spec.name
            )));
        }
        if !inner.images.contains(&spec.image) {
            return Err(Error::Runtime(format!(
                "creating container {}: image {} is not on this host; pull or import it first",
                spec.name, spec.image
            )));
        }
        if let Some(bind) = spec.binds.iter().find(|bind| !bind.source.is_absolute()) {
            return Err(Error::Runtime(format!(
                "container {}: bind source {} must be an absolute path",
                spec.name,
                bind.source.display()
            )));
        }
        check_devices(spec)?;
        inner.last_id += 1;
        let key = inner.last_id;
        let id = format!("fake-{key}");
        let name = if spec.name.is_empty() {
            id.clone()
        } else {
            spec.name.clone()
        };
        inner.names.insert(name.clone(), key);
        let container = Container {
            id: id.clone(),
            name,
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            state: State::Created,
            started_at: None,
            finished_at: None,
            bind_sources: sorted_sources(spec),
        };
        inner.containers.insert(
            key,
            FakeContainer {
                spec: spec.clone(),
                container,
                exec_exit: 0,
                signals: Vec::new(),
            },
        );
        inner.emit(&id, &spec.labels, "create");
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        if inner
            .containers
            .get(&key)
            .is_some_and(|c| matches!(c.container.state, State::Running | State::Other))
        {
            return Ok(());
        }
        let started_at = inner.tick();
        let Some(c) = inner.containers.get_mut(&key) else {
            return Err(Error::NotFound(id.to_string()));
        };
        c.container.state = State::Running;
        c.container.started_at = Some(started_at);
        let (id, labels) = (c.container.id.clone(), c.container.labels.clone());
        inner.emit(&id, &labels, "start");
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        let was_running = inner
            .containers
            .get(&key)
            .is_some_and(|c| c.container.state == State::Running);
        inner.exit(key, STOP_EXIT_CODE);
        if was_running && let Some(c) = inner.containers.get(&key) {
            let (id, labels) = (c.container.id.clone(), c.container.labels.clone());
            inner.emit(&id, &labels, "stop");
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.key(id) {
            Ok(key) => {
                inner.destroy(key);
                Ok(())
            }
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let mut inner = self.lock();
        let key = inner.key(id)?;
        match inner.containers.get_mut(&key) {
            Some(c) if c.container.state == State::Running => {
                c.signals.push(signal.to_owned());
                Ok(())
            }
            _ => Err(Error::Runtime(format!("container {id} is not running"))),
        }
    }

    /// The exit code set with [`FakeDriver::set_exec_exit`] (default 0), for a running container.
    async fn exec(&self, id: &str, _command: &[String], _timeout: Duration) -> Result<i64> {
        let inner = self.lock();
        let key = inner.key(id)?;
        match inner.containers.get(&key) {
            Some(c) if c.container.state == State::Running => Ok(c.exec_exit),
            _ => Err(Error::Runtime(format!("container {id} is not running"))),
        }
    }

    /// Fake containers have no network.
    async fn address(&self, id: &str) -> Result<Option<std::net::IpAddr>> {
        self.lock().key(id).map(|_| None)
    }

    async fn events(&self, label: &str, value: &str) -> Result<mpsc::Receiver<Event>> {
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        self.lock().subscribers.push(Subscriber {
            label: label.to_string(),
            value: value.to_string(),
            events,
        });
        Ok(rx)
    }
}

/// The bind sources of `spec`, sorted, as [`Container::bind_sources`] lists them.
fn sorted_sources(spec: &ContainerSpec) -> Vec<std::path::PathBuf> {
    let mut sources: Vec<_> = spec.binds.iter().map(|bind| bind.source.clone()).collect();
    sources.sort();
    sources
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{Bind, DeviceMapping, GpuRequest};

    const IMAGE: &str = "app:1";

    fn spec(name: &str, site: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.to_string(),
            image: IMAGE.to_string(),
            command: vec![],
            args: vec![],
            env: BTreeMap::new(),
            labels: BTreeMap::from([("io.atoll.site".to_string(), site.to_string())]),
            ports: vec![],
            binds: vec![],
            volumes: vec![],
            memory_bytes: None,
            cpu_millis: None,
            devices: vec![],
            gpus: vec![],
        }
    }

    fn actions(rx: &mut mpsc::Receiver<Event>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(event) = rx.try_recv() {
            out.push((event.container_id, event.action));
        }
        out
    }

    fn pair(id: &str, action: &str) -> (String, String) {
        (id.to_string(), action.to_string())
    }

    #[tokio::test]
    async fn ids_are_deterministic_and_list_filters_by_label() {
        let fake = FakeDriver::with_images([IMAGE]);
        assert_eq!(fake.create(&spec("ca", "s1")).await.unwrap(), "fake-1");
        assert_eq!(fake.create(&spec("cb", "s2")).await.unwrap(), "fake-2");
        assert_eq!(fake.create(&spec("cc", "s1")).await.unwrap(), "fake-3");

        let listed = fake.list("io.atoll.site", "s1").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ca", "cc"]);
        assert!(listed.iter().all(|c| c.state == State::Created));
        assert!(listed.iter().all(|c| c.started_at.is_none()));
        assert!(fake.list("io.atoll.site", "s3").await.unwrap().is_empty());
        assert!(fake.list("other", "s1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn lifecycle_moves_state_and_times() {
        let fake = FakeDriver::with_images([IMAGE]);
        let id = fake.create(&spec("ca", "s1")).await.unwrap();
        fake.start(&id).await.unwrap();
        let running = fake.list("io.atoll.site", "s1").await.unwrap().remove(0);
        assert_eq!(running.state, State::Running);
        let first_start = running.started_at.clone().unwrap();

        // Starting a running container changes nothing, not even its start time.
        fake.start(&id).await.unwrap();
        assert_eq!(fake.list("io.atoll.site", "s1").await.unwrap()[0], running);

        fake.stop(&id, Duration::from_secs(10)).await.unwrap();
        let stopped = fake.list("io.atoll.site", "s1").await.unwrap().remove(0);
        assert_eq!(stopped.state, State::Exited { code: 143 });
        assert!(stopped.finished_at.clone().unwrap() > first_start);
        fake.stop(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(fake.list("io.atoll.site", "s1").await.unwrap()[0], stopped);

        fake.start(&id).await.unwrap();
        let restarted = fake.list("io.atoll.site", "s1").await.unwrap().remove(0);
        assert!(restarted.started_at.unwrap() > stopped.finished_at.clone().unwrap());
        assert_eq!(restarted.finished_at, stopped.finished_at);

        fake.remove(&id).await.unwrap();
        assert!(fake.list("io.atoll.site", "s1").await.unwrap().is_empty());
        fake.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn missing_containers_are_not_found_except_for_remove() {
        let fake = FakeDriver::new();
        assert!(matches!(fake.start("fake-9").await, Err(Error::NotFound(id)) if id == "fake-9"));
        assert!(matches!(
            fake.stop("fake-9", Duration::ZERO).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(fake.kill("fake-9", 1), Err(Error::NotFound(_))));
        fake.remove("fake-9").await.unwrap();
    }

    #[tokio::test]
    async fn name_conflicts_and_missing_images_are_refused() {
        let fake = FakeDriver::with_images([IMAGE]);
        fake.create(&spec("web", "s1")).await.unwrap();
        let err = fake
            .create(&spec("web", "s1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already in use"), "{err}");

        let mut other = spec("other", "s1");
        other.image = "missing:1".into();
        let err = fake.create(&other).await.unwrap_err().to_string();
        assert!(
            err.contains("missing:1") && err.contains("not on this host"),
            "{err}"
        );

        let err = fake
            .create(&spec("/bad name", "s1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid name"), "{err}");

        let mut relative = spec("rel", "s1");
        relative.binds = vec![Bind {
            source: PathBuf::from("x.conf"),
            target: "/etc/x.conf".into(),
            read_only: true,
        }];
        assert!(fake.create(&relative).await.is_err());
    }

    #[tokio::test]
    async fn devices_and_gpus_are_recorded_and_bind_sources_listed() {
        let fake = FakeDriver::with_images([IMAGE]);
        let mut cam = spec("cam", "s1");
        cam.devices = vec![DeviceMapping::new("/dev/video0", "/dev/video0")];
        cam.gpus = vec![GpuRequest {
            device_ids: vec!["0".into()],
        }];
        cam.binds = ["/f/b", "/f/a"]
            .map(|source| Bind {
                source: PathBuf::from(source),
                target: format!("/etc{source}"),
                read_only: true,
            })
            .to_vec();
        let id = fake.create(&cam).await.unwrap();
        let recorded = fake.spec(&id).unwrap();
        assert_eq!(recorded.devices, cam.devices);
        assert_eq!(recorded.gpus, cam.gpus);
        assert_eq!(
            fake.list("io.atoll.site", "s1").await.unwrap()[0].bind_sources,
            [PathBuf::from("/f/a"), PathBuf::from("/f/b")]
        );

        let mut relative = spec("rel", "s1");
        relative.devices = vec![DeviceMapping::new("video0", "/dev/video0")];
        let err = fake.create(&relative).await.unwrap_err().to_string();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[tokio::test]
    async fn containers_are_found_by_name_too() {
        let fake = FakeDriver::with_images([IMAGE]);
        let id = fake.create(&spec("web", "s1")).await.unwrap();
        fake.start("web").await.unwrap();
        assert_eq!(fake.spec(&id).unwrap().name, "web");
        assert_eq!(
            fake.list("io.atoll.site", "s1").await.unwrap()[0].state,
            State::Running
        );
    }

    #[tokio::test]
    async fn pull_succeeds_only_for_allowed_images() {
        let fake = FakeDriver::new();
        assert!(!fake.image_present("app:2").await.unwrap());
        match fake.pull("app:2").await {
            Err(Error::Pull { image, .. }) => assert_eq!(image, "app:2"),
            other => panic!("expected a pull error, got {other:?}"),
        }
        fake.allow_pull("app:2");
        fake.pull("app:2").await.unwrap();
        assert!(fake.image_present("app:2").await.unwrap());
    }

    #[tokio::test]
    async fn exec_answers_what_the_test_set_while_running() {
        let fake = FakeDriver::with_images([IMAGE]);
        let id = fake.create(&spec("web", "s1")).await.unwrap();
        let cmd = ["check".to_owned()];
        assert!(
            fake.exec(&id, &cmd, Duration::from_secs(1)).await.is_err(),
            "not running yet"
        );
        fake.start(&id).await.unwrap();
        assert_eq!(
            fake.exec(&id, &cmd, Duration::from_secs(1)).await.unwrap(),
            0
        );
        fake.set_exec_exit(&id, 3).unwrap();
        assert_eq!(
            fake.exec(&id, &cmd, Duration::from_secs(1)).await.unwrap(),
            3
        );
        assert_eq!(fake.address(&id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn events_reach_matching_subscribers_only() {
        let fake = FakeDriver::with_images([IMAGE]);
        let mut s1 = fake.events("io.atoll.site", "s1").await.unwrap();
        let mut s1_again = fake.events("io.atoll.site", "s1").await.unwrap();
        let mut s2 = fake.events("io.atoll.site", "s2").await.unwrap();

        let id = fake.create(&spec("ca", "s1")).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.kill(&id, 137).unwrap();
        // Killing a container that is not running does nothing.
        fake.kill(&id, 1).unwrap();
        fake.start(&id).await.unwrap();
        fake.stop(&id, Duration::ZERO).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.remove_behind_the_back(&id).unwrap();

        let expected = vec![
            pair(&id, "create"),
            pair(&id, "start"),
            pair(&id, "die"),
            pair(&id, "start"),
            pair(&id, "die"),
            pair(&id, "stop"),
            pair(&id, "start"),
            pair(&id, "die"),
            pair(&id, "destroy"),
        ];
        assert_eq!(actions(&mut s1), expected);
        assert_eq!(actions(&mut s1_again), expected);
        assert!(actions(&mut s2).is_empty());
        assert!(fake.list("io.atoll.site", "s1").await.unwrap().is_empty());
        assert!(matches!(
            fake.remove_behind_the_back(&id),
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn kill_records_the_exit_code() {
        let fake = FakeDriver::with_images([IMAGE]);
        let id = fake.create(&spec("ca", "s1")).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.kill(&id, 137).unwrap();
        let killed = fake.list("io.atoll.site", "s1").await.unwrap().remove(0);
        assert_eq!(killed.state, State::Exited { code: 137 });
        assert!(killed.finished_at.is_some());
    }

    #[tokio::test]
    async fn dropped_subscribers_are_forgotten() {
        let fake = FakeDriver::with_images([IMAGE]);
        let rx = fake.events("io.atoll.site", "s1").await.unwrap();
        drop(rx);
        fake.create(&spec("ca", "s1")).await.unwrap();
        assert!(fake.lock().subscribers.is_empty());
    }

    #[tokio::test]
    async fn a_full_subscriber_loses_events_without_blocking_others() {
        let fake = FakeDriver::with_images([IMAGE]);
        let mut slow = fake.events("io.atoll.site", "s1").await.unwrap();
        let id = fake.create(&spec("ca", "s1")).await.unwrap();
        for _ in 0..EVENT_BUFFER {
            fake.start(&id).await.unwrap();
            fake.kill(&id, 1).unwrap();
        }
        let mut fresh = fake.events("io.atoll.site", "s1").await.unwrap();
        fake.remove(&id).await.unwrap();
        assert_eq!(actions(&mut slow).len(), EVENT_BUFFER);
        assert_eq!(actions(&mut fresh), vec![pair(&id, "destroy")]);
    }

    #[tokio::test]
    async fn many_sites_stay_cheap() {
        let fake = FakeDriver::with_images([IMAGE]);
        for n in 0..5_000 {
            let id = fake
                .create(&spec(&format!("c{n}"), &format!("s{}", n % 50)))
                .await
                .unwrap();
            fake.start(&id).await.unwrap();
        }
        assert_eq!(fake.list("io.atoll.site", "s7").await.unwrap().len(), 100);
    }
}

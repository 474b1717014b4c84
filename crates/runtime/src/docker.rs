//! The [`Driver`] over the Docker Engine API, which Podman's compatible socket also serves.
//!
//! Everything goes through bollard, so this file is the only one in the workspace that knows the
//! Engine API's shapes. Three decisions shaped it:
//!
//! - The daemon is the source of truth. Nothing is cached here: `list` asks the daemon and then
//!   inspects each container, because the list endpoint carries neither exit codes nor start and
//!   finish times (on any API version), and the reconciler needs both.
//! - Idempotence is decided from status codes, not from messages: 304 (already started or
//!   stopped) and 404 on removal are successes; 404 elsewhere is [`Error::NotFound`].
//! - Bollard 0.21 sends every request without a `/vX.Y` prefix (its URL join drops it), so the
//!   daemon answers in its own newest API version whatever `negotiate_version` settled on; that
//!   is also why negotiating works against Docker 20.10, which refuses `/v1.53/...` outright.
//!   The models bollard decodes into are those of API 1.53 with every field optional, so the
//!   same code reads Docker 20.10 (API 1.41) and current engines, but an enum value the models
//!   do not know (a state string of some Podman version, say) fails the whole response.
//!   [`RuntimeInfo::api_version`] reports the version the daemon speaks.
//! - A container's labels, as the daemon reports them, include its image's labels.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    DeviceMapping as DockerDeviceMapping, DeviceRequest, EventMessage, HostConfig, Mount,
    MountType, PortBinding as DockerPortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{
    Container, ContainerSpec, DeviceMapping, Driver, Error, Event, GpuRequest, Result, RuntimeInfo,
    State, check_devices,
};

/// Where bollard looks when `DOCKER_HOST` is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long `connect` waits for the daemon to answer its first request. Bollard's own timeout
/// is two minutes, far too long for an agent deciding at start-up whether a runtime is there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest a pull may take, from the request to the last progress message.
const PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long a request may wait for the daemon's response headers beyond a stop's grace period:
/// the stop endpoint answers only once the container is down.
const STOP_SLACK: Duration = Duration::from_secs(60);

/// Events queued for a slow subscriber before the forwarding task waits for it.
const EVENT_BUFFER: usize = 256;

/// The device driver `docker run --gpus` asks for: the NVIDIA container toolkit's.
const GPU_DRIVER: &str = "nvidia";

/// The capability a GPU request asks for, as `docker run --gpus` does.
const GPU_CAPABILITY: &str = "gpu";

/// Docker's zero time, which it reports for a start or finish that never happened.
const ZERO_TIME_PREFIX: &str = "0001-01-01";

/// A container runtime reached through the Docker Engine API (Docker or Podman).
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
    /// The address connected to, for error messages.
    host: String,
}

impl DockerDriver {
    /// Connects to the daemon named by `DOCKER_HOST` (a `unix://` socket or `tcp://` address),
    /// or to `/var/run/docker.sock`, and agrees on an API version with it.
    pub async fn connect() -> Result<Self> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string());
        Self::connect_to(&host).await
    }

    /// Connects to the daemon at `host` (`unix:///path` or `tcp://host:port`), ignoring
    /// `DOCKER_HOST`.
    pub async fn connect_to(host: &str) -> Result<Self> {
        let docker = Docker::connect_with_host(host).map_err(|e| unavailable(host, &e))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the daemon at {host} did not answer within {}s; check that it is healthy \
                     (`docker version`) or point DOCKER_HOST at another one",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| unavailable(host, &e))?;
        Ok(Self {
            docker,
            host: host.to_string(),
        })
    }

    /// The value of label `key` on `image`, or None if the image or the label is missing.
    pub async fn image_label(&self, image: &str, key: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(inspect
                .config
                .and_then(|config| config.labels)
                .and_then(|mut labels| labels.remove(key))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting image {image}"), e)),
        }
    }

    /// The id of `image`, or None if it is not present.
    pub(crate) async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting image {image}"), e)),
        }
    }

    /// Creates image `tag` from a tar of its root file system (`docker import`), applying
    /// Dockerfile-style `changes` such as `ENTRYPOINT` and `LABEL`.
    pub(crate) async fn import_rootfs(
        &self,
        rootfs: Vec<u8>,
        tag: &str,
        changes: Vec<String>,
    ) -> Result<()> {
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(tag)
            .changes(changes)
            .build();
        let mut progress =
            self.docker
                .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| self.error(&format!("importing image {tag}"), e))?;
        }
        Ok(())
    }

    /// Removes image `id` if nothing uses it; an image still in use or already gone is left be.
    pub(crate) async fn remove_unused_image(&self, id: &str) {
        let options = RemoveImageOptionsBuilder::new().build();
        if let Err(e) = self.docker.remove_image(id, Some(options), None).await {
            tracing::debug!(image = id, error = %e, "old image kept");
        }
    }

    /// Maps a bollard error to ours: transport failures mean the daemon is unavailable; the
    /// daemon's own refusals keep its message, prefixed with what was being done.
    fn error(&self, doing: &str, e: BollardError) -> Error {
        match e {
            BollardError::DockerResponseServerError { message, .. } => {
                Error::Runtime(format!("{doing}: {message}"))
            }
            BollardError::DockerStreamError { error } => {
                Error::Runtime(format!("{doing}: {error}"))
            }
            e if is_transport(&e) => unavailable(&self.host, &e),
            e => Error::Runtime(format!("{doing}: {e}")),
        }
    }

    /// Inspects one container; None if it is gone.
    async fn inspect(&self, id: &str) -> Result<Option<Container>> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => Ok(Some(container_from_inspect(inspect))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting container {id}"), e)),
        }
    }
}

#[async_trait::async_trait]
impl Driver for DockerDriver {
    async fn info(&self) -> Result<RuntimeInfo> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| self.error("reading the engine version", e))?;
        let podman = version
            .components
            .iter()
            .flatten()
            .any(|component| component.name.contains("Podman"))
            || version
                .platform
                .as_ref()
                .is_some_and(|platform| platform.name.contains("Podman"));
        Ok(RuntimeInfo {
            name: if podman { "podman" } else { "docker" }.to_string(),
            version: version.version.unwrap_or_default(),
            api_version: version
                .api_version
                .unwrap_or_else(|| self.docker.client_version().to_string()),
        })
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Container>> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(&format!("listing containers labelled {label}={value}"), e))?;
        // A few inspections at a time: enough to hide latency, few enough not to load a small
        // edge host's daemon.
        let inspected: Vec<Result<Option<Container>>> =
            futures_util::stream::iter(summaries.into_iter().filter_map(|summary| summary.id))
                .map(|id| async move { self.inspect(&id).await })
                .buffered(4)
                .collect()
                .await;
        let mut containers = Vec::with_capacity(inspected.len());
        for container in inspected {
            // A container removed between the list and its inspection is simply not listed.
            if let Some(container) = container? {
                containers.push(container);
            }
        }
        Ok(containers)
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.image_id(image).await?.is_some())
    }

    async fn pull(&self, image: &str) -> Result<()> {
        let pull_error = |message: String| Error::Pull {
            image: image.to_string(),
            message,
        };
        // Without a tag the Engine API pulls every tag of the repository; `docker pull` means
        // `latest`, and so do we.
        let reference = if has_tag_or_digest(image) {
            image.to_string()
        } else {
            format!("{image}:latest")
        };
        let options = CreateImageOptionsBuilder::new()
            .from_image(&reference)
            .build();
        let pulling = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                item.map_err(|e| match e {
                    BollardError::DockerResponseServerError { message, .. } => pull_error(message),
                    BollardError::DockerStreamError { error } => pull_error(error),
                    e if is_transport(&e) => unavailable(&self.host, &e),
                    e => pull_error(e.to_string()),
                })?;
            }
            Ok(())
        };
        tokio::time::timeout(PULL_TIMEOUT, pulling)
            .await
            .map_err(|_| {
                pull_error(format!(
                    "gave up after {} minutes; check the host's network and registry",
                    PULL_TIMEOUT.as_secs() / 60
                ))
            })?
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let body = create_body(spec)?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) => Err(match status(&e) {
                Some(409) => Error::Runtime(format!(
                    "container name {} is already in use on this host; remove that container \
                     or choose another name ({})",
                    spec.name,
                    message(&e)
                )),
                Some(404) => Error::Runtime(format!(
                    "creating container {}: image {} is not on this host; pull or import it \
                     first ({})",
                    spec.name,
                    spec.image,
                    message(&e)
                )),
                _ => self.error(&format!("creating container {}", spec.name), e),
            }),
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        // Bollard reports 304 (already running) as success.
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(Error::NotFound(id.to_string())),
            Err(e) => Err(self.error(&format!("starting container {id}"), e)),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        // The daemon answers a stop only once the container is down, which may be the whole
        // grace period: the request must be allowed that long.
        let docker = self
            .docker
            .clone()
            .with_timeout(grace.saturating_add(STOP_SLACK).max(self.docker.timeout()));
        // Bollard reports 304 (already stopped) as success.
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(Error::NotFound(id.to_string())),
            Err(e) => Err(self.error(&format!("stopping container {id}"), e)),
        }
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(Error::NotFound(id.to_string())),
            Err(e) => Err(self.error(&format!("signalling container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        // Named volumes outlive their containers: they hold the data an upgrade must keep.
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) if status(&e) == Some(409) && message(&e).contains("already in progress") => {
                Ok(())
            }
            Err(e) => Err(self.error(&format!("removing container {id}"), e)),
        }
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<i64> {
        let config = bollard::exec::CreateExecOptions::<String> {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let run = async {
            let created = self
                .docker
                .create_exec(id, config)
                .await
                .map_err(|e| self.error(&format!("exec in {id}"), e))?;
            // Drain the output so the command can finish; only the exit code matters.
            if let bollard::exec::StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(|e| self.error(&format!("exec in {id}"), e))?
            {
                while let Some(chunk) = output.next().await {
                    if chunk.is_err() {
                        break;
                    }
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| self.error(&format!("exec in {id}"), e))?;
            inspect
                .exit_code
                .ok_or_else(|| Error::Runtime(format!("exec in {id}: no exit code")))
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            Error::Runtime(format!(
                "`{}` in {id} did not finish within {timeout:?}",
                command.join(" ")
            ))
        })?
    }

    async fn address(&self, id: &str) -> Result<Option<std::net::IpAddr>> {
        let inspect = match self.docker.inspect_container(id, None).await {
            Ok(i) => i,
            Err(e) if status(&e) == Some(404) => return Err(Error::NotFound(id.to_owned())),
            Err(e) => return Err(self.error(&format!("inspecting container {id}"), e)),
        };
        let settings = inspect.network_settings.unwrap_or_default();
        let networks = settings.networks.unwrap_or_default();
        let ip = networks
            .values()
            .filter_map(|n| n.ip_address.as_deref())
            .find(|ip| !ip.is_empty())
            .and_then(|ip| ip.parse().ok());
        Ok(ip)
    }

    async fn events(&self, label: &str, value: &str) -> Result<mpsc::Receiver<Event>> {
        // The request goes out only when the task below first polls the stream, after this
        // function has returned. Asking for the events since the daemon's present time closes
        // that gap: the daemon replays what happened meanwhile from its recent history, so an
        // event caused right after subscribing is not lost. Its own clock, not ours, so that
        // skew to a remote daemon cannot open the gap again.
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.error("reading the daemon's time", e))?;
        let since = info.system_time.as_deref().and_then(unix_time);
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![format!("{label}={value}")]),
        ]);
        let mut options = EventsOptionsBuilder::new().filters(&filters);
        if let Some(since) = &since {
            options = options.since(since);
        }
        let options = options.build();
        let mut stream = Box::pin(self.docker.events(Some(options)));
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let watched = format!("{label}={value}");
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = tx.closed() => break,
                    message = stream.next() => message,
                };
                match message {
                    Some(Ok(message)) => {
                        if let Some(event) = event_from_message(message)
                            && tx.send(event).await.is_err()
                        {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(label = %watched, error = %e, "container event stream failed");
                        break;
                    }
                    None => break,
                }
            }
        });
        Ok(rx)
    }
}

/// The create request for `spec`.
fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody> {
    let mut exposed_ports = Vec::new();
    let mut port_bindings = PortMap::new();
    for port in &spec.ports {
        let key = format!(
            "{}/{}",
            port.container,
            if port.udp { "udp" } else { "tcp" }
        );
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        // Without a host port the port is only exposed: publishing it on a port the daemon
        // picks would make it reachable at an address nobody knows.
        if let Some(host) = port.host {
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(DockerPortBinding {
                    host_ip: None,
                    host_port: Some(host.to_string()),
                });
        }
    }

    let mut mounts = Vec::with_capacity(spec.binds.len() + spec.volumes.len());
    for bind in &spec.binds {
        // A bind mount (rather than a `Binds` string) fails when the source is missing instead
        // of creating an empty directory there, and allows any character in paths.
        if !bind.source.is_absolute() {
            return Err(Error::Runtime(format!(
                "container {}: bind source {} must be an absolute path",
                spec.name,
                bind.source.display()
            )));
        }
        mounts.push(Mount {
            typ: Some(MountType::BIND),
            source: Some(bind.source.to_string_lossy().into_owned()),
            target: Some(bind.target.clone()),
            read_only: Some(bind.read_only),
            ..Default::default()
        });
    }
    for volume in &spec.volumes {
        // The daemon creates a named volume that does not exist yet.
        mounts.push(Mount {
            typ: Some(MountType::VOLUME),
            source: Some(volume.name.clone()),
            target: Some(volume.target.clone()),
            read_only: Some(volume.read_only),
            ..Default::default()
        });
    }

    let memory = spec
        .memory_bytes
        .map(|bytes| {
            i64::try_from(bytes).map_err(|_| {
                Error::Runtime(format!(
                    "container {}: memory limit of {bytes} bytes is too large",
                    spec.name
                ))
            })
        })
        .transpose()?;

    check_devices(spec)?;
    let devices = devices(&spec.devices);
    let device_requests = gpu_requests(&spec.gpus);

    let host_config = HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        devices: (!devices.is_empty()).then_some(devices),
        device_requests: (!device_requests.is_empty()).then_some(device_requests),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        memory,
        nano_cpus: spec.cpu_millis.map(|millis| i64::from(millis) * 1_000_000),
        // The agent restarts containers itself, with its own back-off and reporting.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect()
        }),
        labels: (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The Engine API's `Devices` for `mappings`, checked by [`check_devices`] first.
fn devices(mappings: &[DeviceMapping]) -> Vec<DockerDeviceMapping> {
    mappings
        .iter()
        .map(|device| DockerDeviceMapping {
            path_on_host: Some(device.host_path.to_string_lossy().into_owned()),
            path_in_container: Some(device.container_path.clone()),
            cgroup_permissions: Some(device.permissions.clone()),
        })
        .collect()
}

/// The Engine API's `DeviceRequests` for `gpus`: each the request `docker run --gpus
/// device=ID,…` makes.
fn gpu_requests(gpus: &[GpuRequest]) -> Vec<DeviceRequest> {
    gpus.iter()
        .map(|gpu| DeviceRequest {
            driver: Some(GPU_DRIVER.to_owned()),
            count: None,
            device_ids: Some(gpu.device_ids.clone()),
            capabilities: Some(vec![vec![GPU_CAPABILITY.to_owned()]]),
            options: None,
        })
        .collect()
}

fn container_from_inspect(inspect: ContainerInspectResponse) -> Container {
    let mut bind_sources: Vec<PathBuf> = inspect
        .mounts
        .iter()
        .flatten()
        .filter(|mount| mount.typ.as_deref() == Some("bind"))
        .filter_map(|mount| mount.source.as_ref().map(PathBuf::from))
        .collect();
    bind_sources.sort();
    let config = inspect.config.unwrap_or_default();
    let docker_state = inspect.state.unwrap_or_default();
    let state = match docker_state.status {
        Some(ContainerStateStatusEnum::CREATED) => State::Created,
        Some(ContainerStateStatusEnum::RUNNING) => State::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => State::Exited {
            // The daemon always reports an exit code for a stopped container; -1 marks the
            // impossible case rather than inventing a success.
            code: docker_state.exit_code.unwrap_or(-1),
        },
        _ => State::Other,
    };
    Container {
        id: inspect.id.unwrap_or_default(),
        name: inspect
            .name
            .map(|name| name.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        // The image as the container was created with, not the id it resolved to.
        image: config.image.or(inspect.image).unwrap_or_default(),
        labels: config
            .labels
            .map(|labels| labels.into_iter().collect::<BTreeMap<_, _>>())
            .unwrap_or_default(),
        state,
        started_at: real_time(docker_state.started_at),
        finished_at: real_time(docker_state.finished_at),
        bind_sources,
    }
}

/// A time the daemon reported, or None for its zero time or an empty string.
fn real_time(time: Option<String>) -> Option<String> {
    time.filter(|time| !time.is_empty() && !time.starts_with(ZERO_TIME_PREFIX))
}

fn event_from_message(message: EventMessage) -> Option<Event> {
    let container_id = message.actor.and_then(|actor| actor.id)?;
    let action = message.action?;
    Some(Event {
        container_id,
        action,
    })
}

/// An RFC 3339 time as the Engine API's `since` wants it: Unix seconds and nanoseconds. The
/// API does not parse RFC 3339 itself (only the docker CLI does).
fn unix_time(rfc3339: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(format!(
        "{}.{:09}",
        time.timestamp(),
        time.timestamp_subsec_nanos()
    ))
}

/// Whether `image` names a tag (`name:tag`, `host:5000/name:tag`) or a digest (`name@sha256:…`).
fn has_tag_or_digest(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.contains(':') || last.contains('@')
}

/// The HTTP status of a refusal from the daemon.
fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The daemon's own words for a refusal, or the error as text.
fn message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// Whether `e` means the daemon could not be reached or did not answer.
fn is_transport(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::UnsupportedURISchemeError { .. }
    )
}

fn unavailable(host: &str, e: &BollardError) -> Error {
    let hint = match e {
        BollardError::SocketNotFoundError(path) => format!(
            "no socket at {path}; start the Docker (or Podman) daemon, or set DOCKER_HOST to \
             its address"
        ),
        BollardError::UnsupportedURISchemeError { uri } => format!(
            "DOCKER_HOST={uri} is not supported; use unix:///path/to/docker.sock or \
             tcp://host:port"
        ),
        e => format!(
            "cannot reach the daemon at {host} ({}); check that it is running and that this \
             user may use it (for the socket: membership of the docker group), or set \
             DOCKER_HOST",
            with_causes(e)
        ),
    };
    Error::Unavailable(hint)
}

/// `e` and its causes, which for transport errors hold the useful part ("connection refused").
fn with_causes(e: &BollardError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bollard::models::MountPoint;
    use serde_json::json;

    use super::*;
    use crate::{Bind, NamedVolume, PortBinding};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            image: "nginx:1".into(),
            command: vec![],
            args: vec![],
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: vec![],
            binds: vec![],
            volumes: vec![],
            memory_bytes: None,
            cpu_millis: None,
            devices: vec![],
            gpus: vec![],
        }
    }

    #[test]
    fn empty_command_and_args_keep_the_image_defaults() {
        let body = create_body(&spec()).unwrap();
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, None);
        let host = body.host_config.unwrap();
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(host.mounts, None);
        assert_eq!(host.nano_cpus, None);
    }

    #[test]
    fn ports_without_host_port_are_only_exposed() {
        let mut spec = spec();
        spec.ports = vec![
            PortBinding {
                container: 80,
                host: Some(8080),
                udp: false,
            },
            PortBinding {
                container: 53,
                host: None,
                udp: true,
            },
        ];
        let body = create_body(&spec).unwrap();
        assert_eq!(
            body.exposed_ports,
            Some(vec!["80/tcp".to_string(), "53/udp".to_string()])
        );
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            bindings["80/tcp"],
            Some(vec![DockerPortBinding {
                host_ip: None,
                host_port: Some("8080".into())
            }])
        );
    }

    #[test]
    fn binds_volumes_and_resources_map_to_host_config() {
        let mut spec = spec();
        spec.binds = vec![Bind {
            source: PathBuf::from("/etc/app.conf"),
            target: "/etc/x.conf".into(),
            read_only: true,
        }];
        spec.volumes = vec![NamedVolume {
            name: "data".into(),
            target: "/data".into(),
            read_only: false,
        }];
        spec.memory_bytes = Some(64 << 20);
        spec.cpu_millis = Some(250);
        let host = create_body(&spec).unwrap().host_config.unwrap();
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[1].source.as_deref(), Some("data"));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(250_000_000));
    }

    #[test]
    fn relative_bind_sources_are_refused() {
        let mut spec = spec();
        spec.binds = vec![Bind {
            source: PathBuf::from("conf/app.conf"),
            target: "/etc/x.conf".into(),
            read_only: true,
        }];
        let err = create_body(&spec).unwrap_err().to_string();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn devices_and_gpus_are_sent_as_docker_run_device_and_gpus_send_them() {
        let mut spec = spec();
        spec.devices = vec![
            DeviceMapping::new("/dev/video0", "/dev/video0"),
            DeviceMapping {
                host_path: PathBuf::from("/dev/ttyUSB0"),
                container_path: "/dev/gps".into(),
                permissions: "r".into(),
            },
        ];
        spec.gpus = vec![GpuRequest {
            device_ids: vec!["0".into(), "GPU-8f2e".into()],
        }];
        let sent = serde_json::to_value(create_body(&spec).unwrap()).unwrap();
        let host = &sent["HostConfig"];
        assert_eq!(
            host["Devices"],
            json!([
                {
                    "PathOnHost": "/dev/video0",
                    "PathInContainer": "/dev/video0",
                    "CgroupPermissions": "rwm"
                },
                {
                    "PathOnHost": "/dev/ttyUSB0",
                    "PathInContainer": "/dev/gps",
                    "CgroupPermissions": "r"
                },
            ])
        );
        assert_eq!(
            host["DeviceRequests"],
            json!([{"Driver": "nvidia", "DeviceIDs": ["0", "GPU-8f2e"], "Capabilities": [["gpu"]]}])
        );
    }

    #[test]
    fn without_devices_the_request_carries_no_device_fields() {
        let sent = serde_json::to_value(create_body(&spec()).unwrap()).unwrap();
        let host = sent["HostConfig"].as_object().unwrap();
        assert!(!host.contains_key("Devices"), "{host:?}");
        assert!(!host.contains_key("DeviceRequests"), "{host:?}");
    }

    #[test]
    fn devices_no_runtime_could_honour_are_refused_naming_the_container() {
        let device = |host: &str, container: &str, permissions: &str| DeviceMapping {
            host_path: PathBuf::from(host),
            container_path: container.into(),
            permissions: permissions.into(),
        };
        let refused = [
            (device("dev/video0", "/dev/video0", "rwm"), "absolute path"),
            (device("/dev/video0", "video0", "rwm"), "absolute path"),
            (device("/dev/video0", "/dev/video0", ""), "permissions"),
            (device("/dev/video0", "/dev/video0", "rwx"), "permissions"),
            (device("/dev/video0", "/dev/video0", "rr"), "permissions"),
        ];
        for (bad, says) in refused {
            let mut spec = spec();
            spec.devices = vec![bad.clone()];
            let err = create_body(&spec).unwrap_err().to_string();
            assert!(
                err.contains("container web") && err.contains(says),
                "{bad:?}: {err}"
            );
        }
        for ids in [vec![], vec![String::new()]] {
            let mut spec = spec();
            spec.gpus = vec![GpuRequest { device_ids: ids }];
            let err = create_body(&spec).unwrap_err().to_string();
            assert!(
                err.contains("container web") && err.contains("GPU"),
                "{err}"
            );
        }
        for permissions in ["r", "w", "m", "rw", "mwr"] {
            let mut spec = spec();
            spec.devices = vec![device("/dev/null", "/dev/null", permissions)];
            assert!(create_body(&spec).is_ok(), "{permissions}");
        }
    }

    #[test]
    fn bind_sources_are_the_bind_mounts_sorted_without_volumes() {
        let mount = |typ: &str, source: &str| MountPoint {
            typ: Some(typ.into()),
            source: Some(source.into()),
            ..Default::default()
        };
        let inspect = ContainerInspectResponse {
            mounts: Some(vec![
                mount("bind", "/var/lib/atoll/files/b"),
                mount("volume", "/var/lib/docker/volumes/data/_data"),
                mount("bind", "/run/atoll/secrets/a"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            container_from_inspect(inspect).bind_sources,
            [
                PathBuf::from("/run/atoll/secrets/a"),
                PathBuf::from("/var/lib/atoll/files/b")
            ]
        );
    }

    #[test]
    fn zero_times_mean_never() {
        assert_eq!(real_time(Some("0001-01-01T00:00:00Z".into())), None);
        assert_eq!(real_time(Some(String::new())), None);
        assert_eq!(
            real_time(Some("2024-05-01T10:00:00.123Z".into())),
            Some("2024-05-01T10:00:00.123Z".into())
        );
    }

    #[test]
    fn daemon_times_become_unix_timestamps() {
        assert_eq!(
            unix_time("2026-11-22T01:54:26.828019263Z").as_deref(),
            Some("1795312466.828019263")
        );
        assert_eq!(
            unix_time("1970-01-01T00:01:00+00:00").as_deref(),
            Some("60.000000000")
        );
        assert_eq!(unix_time("yesterday"), None);
    }

    #[test]
    fn tags_and_digests_are_recognised() {
        assert!(has_tag_or_digest("nginx:1"));
        assert!(has_tag_or_digest("registry:5000/team/app:2"));
        assert!(has_tag_or_digest("app@sha256:abcd"));
        assert!(!has_tag_or_digest("registry:5000/team/app"));
        assert!(!has_tag_or_digest("nginx"));
    }
}

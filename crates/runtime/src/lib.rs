//! The container runtime on a host, behind one trait.
//!
//! The agent's reconciler speaks only [`Driver`]: the Docker Engine API driver (which also
//! drives Podman through its compatible socket) and a fake that keeps containers in memory, for
//! tests and for simulating thousands of sites. This crate knows nothing of sites, manifests or
//! the control plane: it creates, starts, stops, lists and removes containers that carry
//! labels, and reports what happens to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod docker;
mod fake;
pub mod image;

pub use docker::DockerDriver;
pub use fake::FakeDriver;

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's name on the host; unique per host.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's default arguments when not empty.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortBinding>,
    /// Host files or folders bind-mounted into the container.
    pub binds: Vec<Bind>,
    /// Named volumes, created by the runtime if missing.
    pub volumes: Vec<NamedVolume>,
    pub memory_bytes: Option<u64>,
    /// Thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// Host device nodes made visible inside the container (Engine API `Devices`).
    #[serde(default)]
    pub devices: Vec<DeviceMapping>,
    /// NVIDIA GPUs handed to the container (Engine API `DeviceRequests`).
    #[serde(default)]
    pub gpus: Vec<GpuRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container: u16,
    pub host: Option<u16>,
    pub udp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The permissions a device mapping gives when none are asked for: read, write and mknod, as
/// `docker run --device` gives.
pub const DEFAULT_DEVICE_PERMISSIONS: &str = "rwm";

/// A host device node the container sees at `container_path` (`docker run --device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// An absolute path to the device node on the host, such as `/dev/video0`.
    pub host_path: PathBuf,
    /// An absolute path inside the container.
    pub container_path: String,
    /// The device cgroup's permissions: one or more of `r` (read), `w` (write) and `m`
    /// (mknod), each at most once.
    pub permissions: String,
}

impl DeviceMapping {
    /// `host_path` at `container_path` with [`DEFAULT_DEVICE_PERMISSIONS`].
    pub fn new(host_path: impl Into<PathBuf>, container_path: impl Into<String>) -> Self {
        Self {
            host_path: host_path.into(),
            container_path: container_path.into(),
            permissions: DEFAULT_DEVICE_PERMISSIONS.to_owned(),
        }
    }
}

/// NVIDIA GPUs, by id, for one container: what `docker run --gpus device=0,1` asks for. The
/// runtime hands them over through the NVIDIA container toolkit, which must be installed on the
/// host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// The GPUs as the NVIDIA driver names them: an index (`0`) or a UUID (`GPU-…`).
    pub device_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedVolume {
    pub name: String,
    pub target: String,
    pub read_only: bool,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    /// RFC 3339, when the container last started; None if it never did.
    pub started_at: Option<String>,
    /// RFC 3339, when it last stopped; None if it never did.
    pub finished_at: Option<String>,
    /// The host paths bind-mounted into the container (named volumes left out), sorted: the
    /// agent compares them with where it keeps a replica's files now.
    #[serde(default)]
    pub bind_sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Created but never started.
    Created,
    Running,
    /// Stopped, with the exit code of its main process.
    Exited {
        code: i64,
    },
    /// Being removed, paused, restarting or anything else the agent does not act on directly.
    Other,
}

/// What the runtime and its host are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// `docker`, `podman` or `fake`.
    pub name: String,
    pub version: String,
    pub api_version: String,
}

/// Something happened to a container carrying the watched label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub container_id: String,
    /// The runtime's action word: `start`, `die`, `destroy`, `oom`, ...
    pub action: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime cannot be reached (socket missing, daemon down).
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    #[error("image {image} could not be pulled: {message}")]
    Pull { image: String, message: String },
    #[error("no such container {0}")]
    NotFound(String),
    #[error("container runtime: {0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Refuses, naming the container, the devices and GPUs of `spec` that no runtime could honour
/// as meant: a device path that is not absolute (the daemon would take it as relative to its
/// own folder), permissions other than a set of `r`, `w` and `m`, and a GPU request naming no
/// GPU (accepted by the daemon, it would give none). Both drivers check, so that the fake
/// refuses what Docker would.
pub(crate) fn check_devices(spec: &ContainerSpec) -> Result<()> {
    let container = &spec.name;
    for device in &spec.devices {
        let host = device.host_path.display();
        if !device.host_path.is_absolute() {
            return Err(Error::Runtime(format!(
                "container {container}: device {host} must be an absolute path"
            )));
        }
        if !device.container_path.starts_with('/') {
            return Err(Error::Runtime(format!(
                "container {container}: device {host} is mapped at {:?}, which must be an \
                 absolute path",
                device.container_path
            )));
        }
        if !cgroup_permissions(&device.permissions) {
            return Err(Error::Runtime(format!(
                "container {container}: device {host} has permissions {:?}; use one or more of \
                 r, w and m (for example {DEFAULT_DEVICE_PERMISSIONS})",
                device.permissions
            )));
        }
    }
    if let Some(gpu) = spec
        .gpus
        .iter()
        .find(|gpu| gpu.device_ids.is_empty() || gpu.device_ids.iter().any(String::is_empty))
    {
        return Err(Error::Runtime(format!(
            "container {container}: a GPU request must name its GPUs by index or UUID, and \
             names {:?}",
            gpu.device_ids
        )));
    }
    Ok(())
}

/// Whether `permissions` is a device cgroup's: one or more of `r`, `w` and `m`, each at most once.
fn cgroup_permissions(permissions: &str) -> bool {
    !permissions.is_empty()
        && permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && ['r', 'w', 'm']
            .iter()
            .all(|c| permissions.matches(*c).count() <= 1)
}

/// A container runtime. Every method is idempotent where the runtime allows: stopping a stopped
/// container or removing a removed one is not an error.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    async fn info(&self) -> Result<RuntimeInfo>;
    /// Every container (running or not) whose labels include `label` = `value`.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<Container>>;
    async fn image_present(&self, image: &str) -> Result<bool>;
    async fn pull(&self, image: &str) -> Result<()>;
    /// Creates a container (not started); returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String>;
    async fn start(&self, id: &str) -> Result<()>;
    /// Stops within `grace` (SIGTERM, then SIGKILL).
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;
    /// Removes a container, stopping it first if needed.
    async fn remove(&self, id: &str) -> Result<()>;
    /// Sends a signal such as `SIGHUP` to a running container's main process.
    async fn signal(&self, id: &str, signal: &str) -> Result<()>;
    /// Runs `command` in a running container and returns its exit code; a command still running
    /// after `timeout` is an error (health checks use this).
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<i64>;
    /// The address other processes on this host reach the container at, if it has one.
    async fn address(&self, id: &str) -> Result<Option<std::net::IpAddr>>;
    /// Events for containers whose labels include `label` = `value`, until the receiver is
    /// dropped. The stream ends (the sender is dropped) if the runtime goes away; callers
    /// resubscribe.
    async fn events(&self, label: &str, value: &str) -> Result<tokio::sync::mpsc::Receiver<Event>>;
}

//! From a site's manifest to the replicas this host must run.
//!
//! Each replica carries the complete [`ContainerSpec`] to create, the files to write before
//! creating it, and a **spec hash**: a digest of everything that defines the container (image,
//! command, arguments, environment, ports, resources, volumes, and the files' paths, contents and
//! modes). The hash travels on the container as the `io.atoll.spec-hash` label, so the reconciler
//! can tell "the right container" from "an old one" by comparing two strings, without reading the
//! container's configuration back from the runtime.
//!
//! The hash deliberately leaves out host paths (where the agent keeps the files it bind-mounts):
//! those depend on the agent's data directory, and a hash that moved with them would replace
//! every healthy container after an agent is reinstalled or its data moved. It also leaves out the
//! labels (the application version among them) and the health check, which do not change what
//! runs: a new application version whose service is unchanged keeps its container running.
//!
//! The hash is computed over this module's own canonical form (`Canonical`), not over the
//! manifest's serde shapes, so a change to the wire format does not restart every container on
//! every site. Changing `Canonical` does exactly that; do it only on purpose. A field added to
//! it later (secrets, devices) is left out of the hashed form while it is empty, so that an
//! agent upgrade keeps the hash, and the container, of every service that does not use it.
//!
//! The host's devices a service gets ([`ServiceDevices`]) are in the hash, host paths
//! included: unlike the agent's folders, they say what the container sees (a camera moved
//! from `/dev/video0` to `/dev/video1` needs a new container to follow it). Which devices a
//! service gets is the caller's to say ([`desired_with_devices`]), from what this host has.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use atoll_api::manifest::{Manifest, ManifestApplication, ManifestService};
use atoll_runtime::{Bind, ContainerSpec, DeviceMapping, GpuRequest, NamedVolume, PortBinding};
use atoll_spec::application::{Mode, OnSecretChange, Protocol};

use super::secrets::SecretFile;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Present, with [`MANAGED_VALUE`], on every container the agent creates; the agent never acts on
/// a container without it.
pub const LABEL_MANAGED: &str = "io.atoll.managed";
/// The value of [`LABEL_MANAGED`].
pub const MANAGED_VALUE: &str = "true";
pub const LABEL_SITE: &str = "io.atoll.site";
pub const LABEL_DEPLOYMENT: &str = "io.atoll.deployment";
/// The application's name.
pub const LABEL_APP: &str = "io.atoll.app";
/// The application's version when the container was created. Not part of the spec hash, so it
/// can lag behind the manifest when a new version left this service unchanged.
pub const LABEL_VERSION: &str = "io.atoll.version";
pub const LABEL_SERVICE: &str = "io.atoll.service";
/// The replica's index, in decimal.
pub const LABEL_REPLICA: &str = "io.atoll.replica";
/// The [`Replica::spec_hash`] the container was created from.
pub const LABEL_SPEC_HASH: &str = "io.atoll.spec-hash";

/// How many hex characters of the SHA-256 digest make a spec hash: 64 bits, plenty to tell the
/// few specs one container name ever has apart.
const SPEC_HASH_LEN: usize = 16;

/// Which replica: a deployment's service, and the replica's index within it.
///
/// Ordered by deployment, then service, then index; serialized with the index as `replica`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaKey {
    pub deployment: String,
    pub service: String,
    #[serde(rename = "replica")]
    pub index: u32,
}

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.deployment, self.service, self.index)
    }
}

impl ReplicaKey {
    /// The replica a container of atoll's is, from its labels; `None` for one without them.
    pub fn of(container: &atoll_runtime::Container) -> Option<ReplicaKey> {
        let label = |name| container.labels.get(name).cloned();
        Some(ReplicaKey {
            deployment: label(LABEL_DEPLOYMENT)?,
            service: label(LABEL_SERVICE)?,
            index: label(LABEL_REPLICA)?.parse().ok()?,
        })
    }
}

/// One container this host must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub key: ReplicaKey,
    /// Exactly what to create; its labels include [`LABEL_SPEC_HASH`] = `spec_hash`.
    pub spec: ContainerSpec,
    pub spec_hash: String,
    /// Files to write before creating the container; `spec.binds` mounts them read-only.
    pub files: Vec<FileToWrite>,
    /// Secret values to put on tmpfs before creating the container (see `secrets::attach`).
    pub secret_files: Vec<SecretFile>,
    /// The version of each secret the replica gets.
    pub secret_versions: BTreeMap<String, u64>,
    /// Secrets the replica reads that this host does not have: it must not be created.
    pub missing_secrets: Vec<String>,
    /// The signal the service takes when a secret changes, instead of a new container.
    pub on_secret_change: Option<String>,
}

/// The host devices one service's containers get: the device nodes and GPUs its requirements
/// matched on this host. Empty for a service that requires none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDevices {
    pub devices: Vec<DeviceMapping>,
    pub gpus: Vec<GpuRequest>,
}

/// A rendered file to put on the host, which a bind mount then shows inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToWrite {
    pub host_path: PathBuf,
    pub content: String,
    /// Unix permission bits.
    pub mode: u32,
}

/// The replicas `manifest` asks this host to run, sorted by key.
///
/// `files_dir` is where the agent keeps rendered files; each replica's files go under
/// `files_dir/{container name}/{spec hash}/{file index}`, so a replacement's files never
/// overwrite those the running container still reads.
///
/// A service with `mode: every-host` gets one replica: for now a site is a single host. No
/// service gets a device: see [`desired_with_devices`].
pub fn desired(site: &str, manifest: &Manifest, files_dir: &Path) -> Vec<Replica> {
    desired_with_devices(site, manifest, files_dir, |_, _| ServiceDevices::default())
}

/// [`desired`], with the containers of each service given the host devices that `devices`
/// answers for it (called once per service): the caller matches the service's requirements
/// against this host's devices. The devices are part of the spec hash.
pub fn desired_with_devices(
    site: &str,
    manifest: &Manifest,
    files_dir: &Path,
    devices: impl Fn(&ManifestApplication, &ManifestService) -> ServiceDevices,
) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for app in &manifest.content.applications {
        for service in &app.services {
            let devices = devices(app, service);
            let hash = spec_hash(site, app, service, &devices);
            let count = match service.mode {
                Mode::Replicated => service.replicas,
                Mode::EveryHost => 1,
            };
            for index in 0..count {
                replicas.push(replica(
                    site, app, service, &devices, index, &hash, files_dir,
                ));
            }
        }
    }
    replicas.sort_by(|a, b| a.key.cmp(&b.key));
    replicas
}

/// `atoll_{site}_{deployment}_{service}_{index}`: valid as a Docker or Podman name.
///
/// Site, deployment and service names are DNS labels (lowercase letters, digits and `-`), so none
/// of them contains `_` and the name can be split back into its parts: two different replicas,
/// on this site or another, never share a container name. A `-` separator would not do: it
/// appears inside the names themselves.
pub fn container_name(site: &str, key: &ReplicaKey) -> String {
    format!(
        "atoll_{site}_{}_{}_{}",
        key.deployment, key.service, key.index
    )
}

/// `atoll_{site}_{deployment}_{volume}`: the runtime's name for a deployment's named volume.
/// Every replica of every service of the deployment that mounts a volume called `volume` shares
/// it. Volume names are DNS labels too, so, as for [`container_name`], `_` keeps two sites' or
/// deployments' volumes apart.
pub fn volume_name(site: &str, deployment: &str, volume: &str) -> String {
    format!("atoll_{site}_{deployment}_{volume}")
}

fn replica(
    site: &str,
    app: &ManifestApplication,
    service: &ManifestService,
    devices: &ServiceDevices,
    index: u32,
    hash: &str,
    files_dir: &Path,
) -> Replica {
    let key = ReplicaKey {
        deployment: app.deployment.clone(),
        service: service.name.clone(),
        index,
    };
    let name = container_name(site, &key);
    let dir = files_dir.join(&name).join(hash);
    let files: Vec<FileToWrite> = service
        .files
        .iter()
        .enumerate()
        .map(|(n, file)| FileToWrite {
            host_path: dir.join(n.to_string()),
            content: file.content.clone(),
            mode: file.mode,
        })
        .collect();
    let binds = service
        .files
        .iter()
        .zip(&files)
        .map(|(file, written)| Bind {
            source: written.host_path.clone(),
            target: file.path.clone(),
            read_only: true,
        })
        .collect();
    let volumes = service
        .volumes
        .iter()
        .map(|v| NamedVolume {
            name: volume_name(site, &app.deployment, &v.name),
            target: v.path.clone(),
            read_only: v.read_only,
        })
        .collect();
    let ports = service
        .ports
        .iter()
        .map(|p| PortBinding {
            container: p.container,
            host: p.host,
            udp: p.protocol == Protocol::Udp,
        })
        .collect();
    let labels = BTreeMap::from([
        (LABEL_MANAGED.to_owned(), MANAGED_VALUE.to_owned()),
        (LABEL_SITE.to_owned(), site.to_owned()),
        (LABEL_DEPLOYMENT.to_owned(), app.deployment.clone()),
        (LABEL_APP.to_owned(), app.application.clone()),
        (LABEL_VERSION.to_owned(), app.version.clone()),
        (LABEL_SERVICE.to_owned(), service.name.clone()),
        (LABEL_REPLICA.to_owned(), index.to_string()),
        (LABEL_SPEC_HASH.to_owned(), hash.to_owned()),
    ]);
    // Secrets are added by `secrets::attach`, from the values this host opened.
    let spec = ContainerSpec {
        name,
        image: service.image.clone(),
        command: service.command.clone(),
        args: service.args.clone(),
        env: service.env.clone(),
        labels,
        ports,
        binds,
        volumes,
        memory_bytes: service.resources.memory.map(|m| m.0),
        cpu_millis: service.resources.cpu.map(|c| c.0),
        devices: devices.devices.clone(),
        gpus: devices.gpus.clone(),
    };
    Replica {
        key,
        spec,
        spec_hash: hash.to_owned(),
        files,
        secret_files: Vec::new(),
        secret_versions: BTreeMap::new(),
        missing_secrets: Vec::new(),
        on_secret_change: None,
    }
}

/// Everything that defines a service's container, in a fixed shape: the input of the spec hash.
/// Lists keep their order as written (reordering ports or files replaces the container, which
/// is harmless); maps are sorted.
#[derive(Serialize)]
struct Canonical<'a> {
    image: &'a str,
    command: &'a [String],
    args: &'a [String],
    env: &'a BTreeMap<String, String>,
    ports: Vec<CanonicalPort>,
    memory_bytes: Option<u64>,
    cpu_millis: Option<u32>,
    volumes: Vec<CanonicalVolume<'a>>,
    files: Vec<CanonicalFile<'a>>,
    /// Left out when empty, so that services without secrets keep the hashes they had before
    /// secrets existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<CanonicalSecret<'a>>,
    /// Left out when empty, as `secrets` is: a container without devices keeps the hash it had
    /// before devices existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<CanonicalDevice<'a>>,
    /// The ids of each GPU request; left out when empty, as `devices` is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gpus: Vec<&'a [String]>,
}

#[derive(Serialize)]
struct CanonicalDevice<'a> {
    /// As text, so that a path that is not UTF-8 still hashes (a `Path` would not serialize).
    host_path: String,
    container_path: &'a str,
    permissions: &'a str,
}

/// Which secret goes where; with its version only when a new version needs a new container.
#[derive(Serialize)]
struct CanonicalSecret<'a> {
    name: &'a str,
    key: Option<&'a str>,
    path: Option<&'a str>,
    env: Option<&'a str>,
    version: Option<u64>,
}

#[derive(Serialize)]
struct CanonicalPort {
    container: u16,
    host: Option<u16>,
    udp: bool,
}

#[derive(Serialize)]
struct CanonicalVolume<'a> {
    /// The runtime's volume name, so that two sites' or deployments' volumes never look alike.
    name: String,
    path: &'a str,
    read_only: bool,
}

#[derive(Serialize)]
struct CanonicalFile<'a> {
    path: &'a str,
    content: &'a str,
    mode: u32,
}

/// The first [`SPEC_HASH_LEN`] hex characters of the SHA-256 of the service's [`Canonical`]
/// JSON. The same for every replica of a service.
fn spec_hash(
    site: &str,
    app: &ManifestApplication,
    service: &ManifestService,
    devices: &ServiceDevices,
) -> String {
    let canonical = Canonical {
        image: &service.image,
        command: &service.command,
        args: &service.args,
        env: &service.env,
        ports: service
            .ports
            .iter()
            .map(|p| CanonicalPort {
                container: p.container,
                host: p.host,
                udp: p.protocol == Protocol::Udp,
            })
            .collect(),
        memory_bytes: service.resources.memory.map(|m| m.0),
        cpu_millis: service.resources.cpu.map(|c| c.0),
        volumes: service
            .volumes
            .iter()
            .map(|v| CanonicalVolume {
                name: volume_name(site, &app.deployment, &v.name),
                path: &v.path,
                read_only: v.read_only,
            })
            .collect(),
        files: service
            .files
            .iter()
            .map(|f| CanonicalFile {
                path: &f.path,
                content: &f.content,
                mode: f.mode,
            })
            .collect(),
        secrets: service
            .secrets
            .iter()
            .map(|s| CanonicalSecret {
                name: &s.name,
                key: s.key.as_deref(),
                path: s.path.as_deref(),
                env: s.env.as_deref(),
                version: (service.on_secret_change == OnSecretChange::Restart || s.env.is_some())
                    .then_some(s.version),
            })
            .collect(),
        devices: devices
            .devices
            .iter()
            .map(|d| CanonicalDevice {
                host_path: d.host_path.to_string_lossy().into_owned(),
                container_path: &d.container_path,
                permissions: &d.permissions,
            })
            .collect(),
        gpus: devices
            .gpus
            .iter()
            .map(|g| g.device_ids.as_slice())
            .collect(),
    };
    // Serializing plain structs, strings, numbers and string-keyed maps cannot fail.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let mut hex = hex::encode(Sha256::digest(&bytes));
    hex.truncate(SPEC_HASH_LEN);
    hex
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use atoll_api::manifest::RenderedFile;
    use atoll_api::manifest::{Port, Volume};
    use atoll_spec::application::Protocol;
    use atoll_spec::units::{ByteSize, Cpu};

    use super::*;
    use crate::core::fixtures::{manifest, service};

    fn one(svc: ManifestService) -> Replica {
        let mut all = desired(
            "s1",
            &manifest(vec![("shop", svc)]),
            Path::new("/data/files"),
        );
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn hash_of(svc: ManifestService) -> String {
        one(svc).spec_hash
    }

    #[test]
    fn one_replica_per_index_sorted_by_key() {
        let mut web = service("web", "nginx:1");
        web.replicas = 3;
        let api = service("api", "api:1");
        let cam = service("cam", "cam:1");
        let m = manifest(vec![("shop", web), ("shop", api), ("a-first", cam)]);
        let keys: Vec<String> = desired("s1", &m, Path::new("/f"))
            .iter()
            .map(|r| r.key.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "a-first/cam/0",
                "shop/api/0",
                "shop/web/0",
                "shop/web/1",
                "shop/web/2"
            ]
        );
    }

    #[test]
    fn zero_replicas_means_none() {
        let mut web = service("web", "nginx:1");
        web.replicas = 0;
        assert!(desired("s1", &manifest(vec![("shop", web)]), Path::new("/f")).is_empty());
    }

    #[test]
    fn every_host_is_one_replica_on_a_single_host() {
        let mut agent = service("agent", "agent:1");
        agent.mode = Mode::EveryHost;
        agent.replicas = 7;
        let all = desired("s1", &manifest(vec![("shop", agent)]), Path::new("/f"));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].key.index, 0);
    }

    #[test]
    fn an_empty_manifest_wants_nothing() {
        assert!(desired("s1", &manifest(vec![]), Path::new("/f")).is_empty());
    }

    #[test]
    fn container_name_is_site_deployment_service_index() {
        let mut web = service("web", "nginx:1");
        web.replicas = 2;
        let all = desired("store-42", &manifest(vec![("shop", web)]), Path::new("/f"));
        assert_eq!(all[1].spec.name, "atoll_store-42_shop_web_1");
        assert!(
            all[1]
                .spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        );
    }

    #[test]
    fn dashes_in_names_no_longer_make_two_replicas_share_a_container() {
        // With `-` as the separator, both were `atoll-s1-a-b-c-0`.
        let all = desired(
            "s1",
            &manifest(vec![
                ("a-b", service("c", "one:1")),
                ("a", service("b-c", "two:1")),
            ]),
            Path::new("/f"),
        );
        let names: Vec<&str> = all.iter().map(|r| r.spec.name.as_str()).collect();
        assert_eq!(names, ["atoll_s1_a_b-c_0", "atoll_s1_a-b_c_0"]);
        assert_ne!(volume_name("s1", "a-b", "c"), volume_name("s1", "a", "b-c"));
    }

    /// Every DNS label of up to three characters from `a`, `0` and `-` (starting and ending with
    /// a letter or digit, as the spec requires): small enough to try every combination, and full
    /// of pairs that a `-` separator would confuse.
    fn short_labels() -> Vec<String> {
        let ends = ["a", "0"];
        let middles = ["a", "0", "-"];
        let mut labels: Vec<String> = ends.iter().map(|e| (*e).to_owned()).collect();
        for x in ends {
            for y in ends {
                labels.push(format!("{x}{y}"));
                for m in middles {
                    labels.push(format!("{x}{m}{y}"));
                }
            }
        }
        labels
    }

    #[test]
    fn distinct_replicas_get_distinct_container_names() {
        let labels = short_labels();
        let mut seen = BTreeSet::new();
        for site in &labels {
            for deployment in &labels {
                for service in &labels {
                    for index in [0, 1, 10] {
                        let key = ReplicaKey {
                            deployment: deployment.clone(),
                            service: service.clone(),
                            index,
                        };
                        let name = container_name(site, &key);
                        // The parts can be read back, so no two keys can share a name.
                        let parts: Vec<&str> = name.split('_').collect();
                        let index = index.to_string();
                        assert_eq!(parts, ["atoll", site, deployment, service, &index]);
                        assert!(seen.insert(name), "{site} {key}");
                    }
                }
            }
        }
    }

    #[test]
    fn distinct_volumes_get_distinct_names() {
        let labels = short_labels();
        let mut seen = BTreeSet::new();
        for site in &labels {
            for deployment in &labels {
                for volume in &labels {
                    let name = volume_name(site, deployment, volume);
                    assert_eq!(
                        name.split('_').collect::<Vec<_>>(),
                        ["atoll", site, deployment, volume]
                    );
                    assert!(seen.insert(name), "{site} {deployment} {volume}");
                }
            }
        }
    }

    #[test]
    fn key_displays_as_deployment_service_index() {
        let key = ReplicaKey {
            deployment: "shop".into(),
            service: "web".into(),
            index: 2,
        };
        assert_eq!(key.to_string(), "shop/web/2");
    }

    #[test]
    fn keys_order_by_deployment_then_service_then_index() {
        let key = |d: &str, s: &str, i| ReplicaKey {
            deployment: d.into(),
            service: s.into(),
            index: i,
        };
        let mut keys = vec![
            key("b", "a", 0),
            key("a", "b", 0),
            key("a", "a", 10),
            key("a", "a", 2),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                key("a", "a", 2),
                key("a", "a", 10),
                key("a", "b", 0),
                key("b", "a", 0)
            ]
        );
    }

    #[test]
    fn the_spec_copies_image_command_args_env_and_resources() {
        let mut svc = service("web", "nginx:1");
        svc.command = vec!["/bin/server".into()];
        svc.args = vec!["--port".into(), "80".into()];
        svc.env = BTreeMap::from([("A".into(), "1".into())]);
        svc.resources.memory = Some(ByteSize(256 << 20));
        svc.resources.cpu = Some(Cpu(500));
        let r = one(svc);
        assert_eq!(r.spec.image, "nginx:1");
        assert_eq!(r.spec.command, ["/bin/server"]);
        assert_eq!(r.spec.args, ["--port", "80"]);
        assert_eq!(r.spec.env["A"], "1");
        assert_eq!(r.spec.memory_bytes, Some(256 << 20));
        assert_eq!(r.spec.cpu_millis, Some(500));
    }

    #[test]
    fn no_resources_means_no_limits() {
        let r = one(service("web", "nginx:1"));
        assert_eq!(r.spec.memory_bytes, None);
        assert_eq!(r.spec.cpu_millis, None);
    }

    #[test]
    fn ports_become_bindings_udp_when_asked() {
        let mut svc = service("web", "nginx:1");
        svc.ports = vec![
            Port {
                container: 80,
                host: Some(8080),
                protocol: Protocol::Tcp,
            },
            Port {
                container: 53,
                host: None,
                protocol: Protocol::Udp,
            },
        ];
        assert_eq!(
            one(svc).spec.ports,
            [
                PortBinding {
                    container: 80,
                    host: Some(8080),
                    udp: false
                },
                PortBinding {
                    container: 53,
                    host: None,
                    udp: true
                }
            ]
        );
    }

    #[test]
    fn named_volumes_are_per_site_and_deployment() {
        let mut svc = service("db", "postgres:16");
        svc.volumes = vec![
            Volume {
                name: "data".into(),
                path: "/var/lib/postgresql".into(),
                read_only: false,
            },
            Volume {
                name: "seed".into(),
                path: "/seed".into(),
                read_only: true,
            },
        ];
        assert_eq!(
            one(svc).spec.volumes,
            [
                NamedVolume {
                    name: "atoll_s1_shop_data".into(),
                    target: "/var/lib/postgresql".into(),
                    read_only: false
                },
                NamedVolume {
                    name: "atoll_s1_shop_seed".into(),
                    target: "/seed".into(),
                    read_only: true
                }
            ]
        );
    }

    fn with_files() -> ManifestService {
        let mut svc = service("web", "nginx:1");
        svc.files = vec![
            RenderedFile {
                path: "/etc/web/a.toml".into(),
                content: "a = 1".into(),
                mode: 0o644,
            },
            RenderedFile {
                path: "/etc/web/run.sh".into(),
                content: "#!/bin/sh".into(),
                mode: 0o755,
            },
        ];
        svc
    }

    #[test]
    fn files_are_written_under_name_and_hash_and_bound_read_only() {
        let r = one(with_files());
        let dir = Path::new("/data/files")
            .join("atoll_s1_shop_web_0")
            .join(&r.spec_hash);
        assert_eq!(
            r.files,
            [
                FileToWrite {
                    host_path: dir.join("0"),
                    content: "a = 1".into(),
                    mode: 0o644
                },
                FileToWrite {
                    host_path: dir.join("1"),
                    content: "#!/bin/sh".into(),
                    mode: 0o755
                }
            ]
        );
        assert_eq!(
            r.spec.binds,
            [
                Bind {
                    source: dir.join("0"),
                    target: "/etc/web/a.toml".into(),
                    read_only: true
                },
                Bind {
                    source: dir.join("1"),
                    target: "/etc/web/run.sh".into(),
                    read_only: true
                }
            ]
        );
    }

    #[test]
    fn labels_say_who_owns_the_container_and_its_spec() {
        let mut web = service("web", "nginx:1");
        web.replicas = 2;
        let all = desired("s1", &manifest(vec![("shop", web)]), Path::new("/f"));
        let r = &all[1];
        let expected = BTreeMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SITE.to_owned(), "s1".to_owned()),
            (LABEL_DEPLOYMENT.to_owned(), "shop".to_owned()),
            (LABEL_APP.to_owned(), "app-shop".to_owned()),
            (LABEL_VERSION.to_owned(), "1.0.0".to_owned()),
            (LABEL_SERVICE.to_owned(), "web".to_owned()),
            (LABEL_REPLICA.to_owned(), "1".to_owned()),
            (LABEL_SPEC_HASH.to_owned(), r.spec_hash.clone()),
        ]);
        assert_eq!(r.spec.labels, expected);
        assert_eq!(LABEL_MANAGED, "io.atoll.managed");
        assert_eq!(LABEL_SPEC_HASH, "io.atoll.spec-hash");
        assert_eq!(LABEL_REPLICA, "io.atoll.replica");
    }

    #[test]
    fn spec_hash_is_16_lowercase_hex_and_shared_by_replicas() {
        let mut web = service("web", "nginx:1");
        web.replicas = 3;
        let all = desired("s1", &manifest(vec![("shop", web)]), Path::new("/f"));
        assert_eq!(all[0].spec_hash.len(), 16);
        assert!(
            all[0]
                .spec_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(all.iter().all(|r| r.spec_hash == all[0].spec_hash));
    }

    #[test]
    fn spec_hash_does_not_depend_on_the_files_dir() {
        let m = manifest(vec![("shop", with_files())]);
        let a = desired("s1", &m, Path::new("/var/lib/atoll/files"));
        let b = desired("s1", &m, Path::new("/mnt/other"));
        assert_eq!(a[0].spec_hash, b[0].spec_hash);
        assert_ne!(a[0].spec.binds, b[0].spec.binds);
    }

    #[test]
    fn spec_hash_is_stable_across_calls() {
        assert_eq!(hash_of(with_files()), hash_of(with_files()));
    }

    #[test]
    fn spec_hash_ignores_the_application_version_and_health() {
        let base = service("web", "nginx:1");
        let m1 = manifest(vec![("shop", base.clone())]);
        let mut m2 = m1.clone();
        m2.content.applications[0].version = "2.0.0".into();
        let mut svc = base;
        svc.health = Some(atoll_api::manifest::Health {
            check: atoll_spec::application::HealthCheck::Tcp { port: 80 },
            interval: atoll_spec::units::Span::from_secs(5),
            timeout: atoll_spec::units::Span::from_secs(1),
            failures: 3,
            start_period: atoll_spec::units::Span::from_secs(0),
        });
        m2.content.applications[0].services[0] = svc;
        let a = desired("s1", &m1, Path::new("/f"));
        let b = desired("s1", &m2, Path::new("/f"));
        assert_eq!(a[0].spec_hash, b[0].spec_hash);
        assert_eq!(b[0].spec.labels[LABEL_VERSION], "2.0.0");
    }

    #[test]
    fn spec_hash_ignores_the_replica_count() {
        let mut more = service("web", "nginx:1");
        more.replicas = 5;
        assert_eq!(hash_of(service("web", "nginx:1")), {
            let all = desired("s1", &manifest(vec![("shop", more)]), Path::new("/f"));
            all[0].spec_hash.clone()
        });
    }

    #[test]
    fn spec_hash_changes_with_everything_that_defines_the_container() {
        let base = with_files();
        let h = hash_of(base.clone());
        type Change = Box<dyn Fn(&mut ManifestService)>;
        let changes: Vec<(&str, Change)> = vec![
            ("image", Box::new(|s| s.image = "nginx:2".into())),
            ("command", Box::new(|s| s.command = vec!["sh".into()])),
            ("args", Box::new(|s| s.args = vec!["-x".into()])),
            (
                "env",
                Box::new(|s| {
                    s.env.insert("K".into(), "V".into());
                }),
            ),
            (
                "ports",
                Box::new(|s| {
                    s.ports.push(Port {
                        container: 80,
                        host: None,
                        protocol: Protocol::Tcp,
                    })
                }),
            ),
            (
                "port protocol",
                Box::new(|s| {
                    s.ports.push(Port {
                        container: 80,
                        host: None,
                        protocol: Protocol::Udp,
                    })
                }),
            ),
            (
                "memory",
                Box::new(|s| s.resources.memory = Some(ByteSize(1 << 30))),
            ),
            ("cpu", Box::new(|s| s.resources.cpu = Some(Cpu(250)))),
            (
                "volumes",
                Box::new(|s| {
                    s.volumes.push(Volume {
                        name: "data".into(),
                        path: "/data".into(),
                        read_only: false,
                    })
                }),
            ),
            (
                "file content",
                Box::new(|s| s.files[0].content = "a = 2".into()),
            ),
            (
                "file path",
                Box::new(|s| s.files[0].path = "/etc/b.toml".into()),
            ),
            ("file mode", Box::new(|s| s.files[0].mode = 0o600)),
            (
                "file removed",
                Box::new(|s| {
                    s.files.pop();
                }),
            ),
        ];
        let mut seen = vec![h];
        for (what, change) in changes {
            let mut svc = base.clone();
            change(&mut svc);
            let changed = hash_of(svc);
            assert!(!seen.contains(&changed), "{what} did not change the hash");
            seen.push(changed);
        }
    }

    #[test]
    fn port_host_and_volume_read_only_change_the_hash() {
        let mut a = service("web", "nginx:1");
        a.ports = vec![Port {
            container: 80,
            host: Some(80),
            protocol: Protocol::Tcp,
        }];
        let mut b = a.clone();
        b.ports[0].host = Some(81);
        assert_ne!(hash_of(a), hash_of(b));

        let mut c = service("web", "nginx:1");
        c.volumes = vec![Volume {
            name: "data".into(),
            path: "/data".into(),
            read_only: false,
        }];
        let mut d = c.clone();
        d.volumes[0].read_only = true;
        assert_ne!(hash_of(c), hash_of(d));
    }

    #[test]
    fn same_service_in_another_deployment_has_its_own_volume_and_hash() {
        let mut svc = service("db", "postgres:16");
        svc.volumes = vec![Volume {
            name: "data".into(),
            path: "/data".into(),
            read_only: false,
        }];
        let all = desired(
            "s1",
            &manifest(vec![("shop", svc.clone()), ("till", svc)]),
            Path::new("/f"),
        );
        assert_eq!(all[0].spec.volumes[0].name, "atoll_s1_shop_data");
        assert_eq!(all[1].spec.volumes[0].name, "atoll_s1_till_data");
        assert_ne!(all[0].spec_hash, all[1].spec_hash);
    }

    #[test]
    fn a_service_without_volumes_hashes_the_same_in_any_deployment() {
        let svc = service("web", "nginx:1");
        let all = desired(
            "s1",
            &manifest(vec![("shop", svc.clone()), ("till", svc)]),
            Path::new("/f"),
        );
        assert_eq!(all[0].spec_hash, all[1].spec_hash);
        assert_ne!(all[0].spec.name, all[1].spec.name);
    }

    #[test]
    fn the_spec_carries_its_own_hash() {
        let r = one(with_files());
        assert_eq!(r.spec.labels[LABEL_SPEC_HASH], r.spec_hash);
    }

    /// Every field the hash reads, set: the service the upgrade regression pins.
    fn everything() -> ManifestService {
        let mut svc = with_files();
        svc.command = vec!["/bin/server".into()];
        svc.args = vec!["--port".into(), "80".into()];
        svc.env = BTreeMap::from([("A".into(), "1".into())]);
        svc.ports = vec![Port {
            container: 80,
            host: Some(8080),
            protocol: Protocol::Tcp,
        }];
        svc.resources.memory = Some(ByteSize(256 << 20));
        svc.resources.cpu = Some(Cpu(500));
        svc.volumes = vec![Volume {
            name: "data".into(),
            path: "/data".into(),
            read_only: false,
        }];
        svc.secrets = vec![atoll_api::manifest::ManifestSecret {
            name: "db".into(),
            key: Some("password".into()),
            keys: vec!["password".into()],
            path: Some("/run/secrets/db".into()),
            env: None,
            version: 3,
        }];
        svc
    }

    /// The hashes below were computed before devices existed (on the commit before they came):
    /// an agent that knows devices must give every container without devices the hash it
    /// already has, or its upgrade would replace every container of every site.
    #[test]
    fn an_agent_upgrade_keeps_the_spec_hash_of_containers_without_devices() {
        assert_eq!(hash_of(service("web", "nginx:1")), "8660897b4367768a");
        assert_eq!(hash_of(with_files()), "fcef82052638afba");
        assert_eq!(hash_of(everything()), "4ae5f73a2288f38b");
        let none = desired_with_devices(
            "s1",
            &manifest(vec![("shop", everything())]),
            Path::new("/data/files"),
            |_, _| ServiceDevices::default(),
        );
        assert_eq!(none[0].spec_hash, "4ae5f73a2288f38b");
    }

    fn with_devices(devices: ServiceDevices) -> Replica {
        let mut all = desired_with_devices(
            "s1",
            &manifest(vec![
                ("shop", service("cam", "cam:1")),
                ("shop", service("web", "nginx:1")),
            ]),
            Path::new("/f"),
            |_, service| {
                if service.name == "cam" {
                    devices.clone()
                } else {
                    ServiceDevices::default()
                }
            },
        );
        assert_eq!(
            all[1].spec.devices,
            [],
            "only the service the caller named gets devices"
        );
        assert_eq!(all[1].spec_hash, hash_of(service("web", "nginx:1")));
        all.remove(0)
    }

    fn camera() -> ServiceDevices {
        ServiceDevices {
            devices: vec![DeviceMapping::new("/dev/video0", "/dev/video0")],
            gpus: vec![],
        }
    }

    #[test]
    fn the_devices_the_caller_gives_a_service_are_in_its_containers_spec() {
        let gpu = GpuRequest {
            device_ids: vec!["0".into()],
        };
        let r = with_devices(ServiceDevices {
            gpus: vec![gpu.clone()],
            ..camera()
        });
        assert_eq!(r.key.service, "cam");
        assert_eq!(r.spec.devices, camera().devices);
        assert_eq!(r.spec.gpus, [gpu]);
    }

    #[test]
    fn spec_hash_changes_with_every_field_of_the_devices() {
        let mut seen = vec![hash_of(service("cam", "cam:1"))];
        let changes: Vec<fn(&mut ServiceDevices)> = vec![
            |_| {},
            |d| d.devices[0].host_path = "/dev/video1".into(),
            |d| d.devices[0].container_path = "/dev/camera".into(),
            |d| d.devices[0].permissions = "r".into(),
            |d| {
                d.gpus.push(GpuRequest {
                    device_ids: vec!["0".into()],
                })
            },
            |d| {
                d.gpus.push(GpuRequest {
                    device_ids: vec!["1".into()],
                })
            },
        ];
        for (n, change) in changes.into_iter().enumerate() {
            let mut devices = camera();
            change(&mut devices);
            let hash = with_devices(devices).spec_hash;
            assert!(!seen.contains(&hash), "change {n} did not change the hash");
            seen.push(hash);
        }
    }

    #[test]
    fn replica_key_serializes_index_as_replica() {
        let key = ReplicaKey {
            deployment: "shop".into(),
            service: "web".into(),
            index: 1,
        };
        assert_eq!(
            serde_json::to_value(&key).ok(),
            Some(serde_json::json!({"deployment": "shop", "service": "web", "replica": 1}))
        );
    }
}

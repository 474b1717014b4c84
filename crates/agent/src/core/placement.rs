//! Which of the manifest's replicas this host runs, and the devices they get: the site's half
//! of placement, so the site decides offline as the control plane would.
//!
//! The manifest carries what the decision needs (each deployment's host selector, the services'
//! requirements and resources, the device classes they name, the hosts' labels); this host adds
//! its own inventory as it is now. The decision is `atoll_api::placement::place`, the same
//! function the control plane runs, with this host alone and no previous placement (alone, a
//! host has nowhere to move a replica to): a replica this host does not qualify for is not run
//! here, and the reason is said once. A device whose node went missing still counts, and stays mapped,
//! while the agent keeps it (the device grace), so a flapping cable replaces no container.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use atoll_api::agent::FreeResources;
use atoll_api::host::{Host, Inventory};
use atoll_api::manifest::{DeviceClass, Manifest, ManifestService};
use atoll_api::placement::{self, Decision, Previous, ServiceWant, Want};
use atoll_runtime::{DeviceMapping, GpuRequest};
use atoll_spec::Selector;
use atoll_spec::application::Mode;

use super::cluster::Placement;
use super::desired::{Replica, ServiceDevices, desired_with_devices};

/// The replicas this host runs, sorted by key, and why each deployment it does not run is not
/// placed here (deployment → reason). Without a site placement (a host alone, or a cluster that
/// has not placed yet) the host decides alone; with one, it runs what the placement gives it.
pub fn for_host(
    site: &str,
    manifest: &Manifest,
    files_dir: &Path,
    me: &Host,
    placed: Option<&Placement>,
    host_root: &Path,
) -> (Vec<Replica>, BTreeMap<String, String>) {
    let classes = &manifest.content.device_classes;
    let (mine, unplaced) = match placed {
        Some(placement) => (placement.on(&me.name), placement.unplaced.clone()),
        None => {
            let decision = decide(manifest, std::slice::from_ref(me), &Previous::default());
            let mine = Placement::of(manifest.revision, &decision).on(&me.name);
            (mine, decision.unplaced)
        }
    };
    let mut replicas = desired_with_devices(site, manifest, files_dir, |_, service| {
        devices_for(service, me, classes, host_root)
    });
    // A service on every host has replica 0 here, whatever the decision numbered it among the
    // site's hosts.
    let every_host = every_host_services(manifest);
    replicas.retain(|r| {
        let everywhere = every_host.contains(&(r.key.deployment.as_str(), r.key.service.as_str()));
        mine.iter().any(|k| {
            k.deployment == r.key.deployment
                && k.service == r.key.service
                && (everywhere || k.index == r.key.index)
        })
    });
    (replicas, unplaced)
}

/// The services of the manifest that run on every qualifying host, as (deployment, service).
pub fn every_host_services(manifest: &Manifest) -> BTreeSet<(&str, &str)> {
    manifest
        .content
        .applications
        .iter()
        .flat_map(|a| a.services.iter().map(move |s| (a, s)))
        .filter(|(_, s)| s.mode == Mode::EveryHost)
        .map(|(a, s)| (a.deployment.as_str(), s.name.as_str()))
        .collect()
}

/// The host as placement sees it: its inventory, and the labels the manifest gives it.
pub fn host(manifest: &Manifest, name: &str, inventory: &Inventory) -> Host {
    Host {
        name: name.to_owned(),
        inventory: inventory.clone(),
        labels: manifest
            .content
            .host_labels
            .get(name)
            .cloned()
            .unwrap_or_default(),
    }
}

/// Places the manifest's deployments on `hosts`, keeping what runs where `previous` says: the
/// one decision of `atoll_api::placement`, over what the manifest asks. A deployment whose host
/// selector this agent cannot read is unplaced with the reason.
pub fn decide(manifest: &Manifest, hosts: &[Host], previous: &Previous) -> Decision {
    let mut unplaced = BTreeMap::new();
    let selectors: BTreeMap<&str, Selector> = manifest
        .content
        .applications
        .iter()
        .filter_map(|app| {
            let text = app.hosts.as_deref()?;
            match Selector::parse(text) {
                Ok(s) => Some((app.deployment.as_str(), s)),
                Err(e) => {
                    unplaced.insert(
                        app.deployment.clone(),
                        format!("its host selector `{text}` cannot be read here: {e}"),
                    );
                    None
                }
            }
        })
        .collect();
    let wants: Vec<Want<'_>> = manifest
        .content
        .applications
        .iter()
        .filter(|app| !unplaced.contains_key(&app.deployment))
        .map(|app| Want {
            deployment: &app.deployment,
            hosts: selectors.get(app.deployment.as_str()),
            services: app.services.iter().map(want).collect(),
        })
        .collect();
    let mut decision = placement::place(hosts, &manifest.content.device_classes, &wants, previous);
    decision.unplaced.extend(unplaced);
    decision
}

/// The images of every service this host qualifies for, capacity aside: a replica may move
/// here when another host dies, and its image, pulled ahead, does not wait on the WAN then.
pub fn standby_images(manifest: &Manifest, me: &Host) -> Vec<String> {
    let mut roomy = me.clone();
    roomy.inventory.cpus = u32::MAX;
    roomy.inventory.memory_bytes = u64::MAX;
    let decision = decide(manifest, std::slice::from_ref(&roomy), &Previous::default());
    let images: BTreeSet<String> = manifest
        .content
        .applications
        .iter()
        .filter(|a| decision.placed.contains_key(&a.deployment))
        .flat_map(|a| a.services.iter().map(|s| s.image.clone()))
        .collect();
    images.into_iter().collect()
}

/// What is left of the host's CPUs and memory once the replicas it runs have reserved what
/// their services ask (requests, not measured use).
pub fn free(manifest: &Manifest, inventory: &Inventory, replicas: &[Replica]) -> FreeResources {
    let mut free = FreeResources {
        cpu_millis: u64::from(inventory.cpus) * 1000,
        memory_bytes: inventory.memory_bytes,
    };
    for r in replicas {
        let Some(service) = manifest.service(&r.key.deployment, &r.key.service) else {
            continue;
        };
        let asked = want(service);
        free.cpu_millis = free.cpu_millis.saturating_sub(asked.cpu_millis);
        free.memory_bytes = free.memory_bytes.saturating_sub(asked.memory);
    }
    free
}

fn want(s: &ManifestService) -> ServiceWant<'_> {
    ServiceWant {
        name: &s.name,
        replicas: s.replicas,
        every_host: s.mode == Mode::EveryHost,
        requires: s.requires.clone(),
        cpu_millis: s.resources.cpu.map_or(0, |c| u64::from(c.0)),
        memory: s.resources.memory.map_or(0, |m| m.0),
    }
}

/// The devices of `host` the service's required classes match: device nodes, found under
/// `host_root` (`/` but in tests) and shown at their own path in the container, and NVIDIA GPUs
/// (a class with `gpu: nvidia`) as device requests by index (`/dev/nvidia0` is GPU `0`).
pub fn devices_for(
    service: &ManifestService,
    host: &Host,
    classes: &[DeviceClass],
    host_root: &Path,
) -> ServiceDevices {
    let mut out = ServiceDevices::default();
    let mut gpus = Vec::new();
    for name in &service.requires.devices {
        let Some(class) = classes.iter().find(|c| c.name == *name) else {
            continue;
        };
        for device in host.devices_of(class) {
            if class.gpu.as_deref() == Some("nvidia") {
                if let Some(index) = device.path.strip_prefix("/dev/nvidia")
                    && !index.is_empty()
                    && index.bytes().all(|b| b.is_ascii_digit())
                {
                    gpus.push(index.to_owned());
                }
                continue;
            }
            let on_host = host_root.join(device.path.trim_start_matches('/'));
            let mapping = DeviceMapping::new(on_host, device.path.clone());
            if !out.devices.contains(&mapping) {
                out.devices.push(mapping);
            }
        }
    }
    gpus.sort();
    gpus.dedup();
    if !gpus.is_empty() {
        out.gpus.push(GpuRequest { device_ids: gpus });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use atoll_api::host::{Device, capability};
    use atoll_api::manifest::{DeviceRule, Requires};

    use super::*;
    use crate::core::fixtures::{manifest, service};

    /// This host deciding alone, as a single-host site does.
    fn alone(
        site: &str,
        m: &Manifest,
        files: &Path,
        name: &str,
        inventory: &Inventory,
        root: &Path,
    ) -> (Vec<Replica>, BTreeMap<String, String>) {
        for_host(site, m, files, &host(m, name, inventory), None, root)
    }

    fn class(name: &str, subsystem: &str, gpu: Option<&str>) -> DeviceClass {
        DeviceClass {
            name: name.into(),
            rules: vec![DeviceRule {
                subsystem: Some(subsystem.into()),
                ..DeviceRule::default()
            }],
            gpu: gpu.map(Into::into),
        }
    }

    fn inventory(devices: &[(&str, &str)]) -> Inventory {
        Inventory {
            arch: "x86_64".into(),
            cpus: 2,
            memory_bytes: 4 << 30,
            capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
            devices: devices
                .iter()
                .map(|(path, subsystem)| Device {
                    path: (*path).into(),
                    subsystem: (*subsystem).into(),
                    ..Device::default()
                })
                .collect(),
            ..Inventory::default()
        }
    }

    fn camera_manifest() -> Manifest {
        let mut svc = service("cam", "cam:1");
        svc.requires = Requires {
            devices: vec!["camera".into()],
            ..Requires::default()
        };
        let mut m = manifest(vec![("vision", svc), ("plain", service("web", "web:1"))]);
        m.content.device_classes = vec![class("camera", "video4linux", None)];
        m
    }

    #[test]
    fn a_host_without_the_device_runs_only_what_does_not_need_it() {
        let m = camera_manifest();
        let (replicas, unplaced) = alone(
            "s1",
            &m,
            Path::new("/files"),
            "h1",
            &inventory(&[("/dev/ttyUSB0", "tty")]),
            Path::new("/"),
        );
        let keys: Vec<String> = replicas.iter().map(|r| r.key.to_string()).collect();
        assert_eq!(keys, ["plain/web/0"]);
        assert_eq!(
            unplaced["vision"],
            "no host with device class camera (h1 has: none)"
        );
    }

    #[test]
    fn a_camera_is_mapped_into_the_containers_of_the_service_needing_it() {
        let m = camera_manifest();
        let (replicas, unplaced) = alone(
            "s1",
            &m,
            Path::new("/files"),
            "h1",
            &inventory(&[
                ("/dev/video1", "video4linux"),
                ("/dev/video2", "video4linux"),
            ]),
            Path::new("/tmp/root"),
        );
        assert!(unplaced.is_empty());
        let cam = replicas.iter().find(|r| r.key.service == "cam").unwrap();
        let mapped: Vec<(PathBuf, String)> = cam
            .spec
            .devices
            .iter()
            .map(|d| (d.host_path.clone(), d.container_path.clone()))
            .collect();
        assert_eq!(
            mapped,
            [
                (
                    PathBuf::from("/tmp/root/dev/video1"),
                    "/dev/video1".to_owned()
                ),
                (
                    PathBuf::from("/tmp/root/dev/video2"),
                    "/dev/video2".to_owned()
                ),
            ]
        );
        let web = replicas.iter().find(|r| r.key.service == "web").unwrap();
        assert!(web.spec.devices.is_empty());
    }

    #[test]
    fn a_device_in_its_grace_keeps_its_container_unchanged() {
        let m = camera_manifest();
        let run = |inv: &Inventory| alone("s1", &m, Path::new("/f"), "h1", inv, Path::new("/")).0;
        let present = inventory(&[("/dev/video0", "video4linux")]);
        let mut missing = present.clone();
        missing.devices[0].missing_since = Some("2026-12-03T10:00:00Z".into());
        let (a, b) = (run(&present), run(&missing));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].spec_hash, b[0].spec_hash);
    }

    #[test]
    fn nvidia_gpus_are_device_requests_by_index() {
        let mut svc = service("train", "t:1");
        svc.requires.devices = vec!["gpu".into()];
        let host = Host {
            name: "h1".into(),
            inventory: inventory(&[("/dev/nvidia0", "nvidia"), ("/dev/nvidia1", "nvidia")]),
            labels: BTreeMap::new(),
        };
        let d = devices_for(
            &svc,
            &host,
            &[class("gpu", "nvidia", Some("nvidia"))],
            Path::new("/"),
        );
        assert!(d.devices.is_empty());
        assert_eq!(
            d.gpus,
            [GpuRequest {
                device_ids: vec!["0".into(), "1".into()]
            }]
        );
    }

    #[test]
    fn labels_come_from_the_manifest_and_the_host_selector_is_honoured() {
        let mut m = manifest(vec![("d", service("web", "web:1"))]);
        m.content.applications[0].hosts = Some("size in (medium, large)".into());
        let inv = inventory(&[]);
        let (none, unplaced) = alone("s1", &m, Path::new("/f"), "h1", &inv, Path::new("/"));
        assert!(none.is_empty());
        assert!(unplaced["d"].contains("does not match placement.hosts"));
        m.content.host_labels.insert(
            "h1".into(),
            [("size".to_owned(), "medium".to_owned())].into(),
        );
        let (some, _) = alone("s1", &m, Path::new("/f"), "h1", &inv, Path::new("/"));
        assert_eq!(some.len(), 1);
        m.content.applications[0].hosts = Some("size in (".into());
        let (_, unplaced) = alone("s1", &m, Path::new("/f"), "h1", &inv, Path::new("/"));
        assert!(
            unplaced["d"].contains("cannot be read here"),
            "{unplaced:?}"
        );
    }

    #[test]
    fn standby_images_are_those_of_what_could_run_here_however_full_it_is() {
        let m = camera_manifest();
        let with_camera = host(&m, "h1", &inventory(&[("/dev/video0", "video4linux")]));
        assert_eq!(standby_images(&m, &with_camera), ["cam:1", "web:1"]);
        let without = host(&m, "h1", &inventory(&[]));
        assert_eq!(standby_images(&m, &without), ["web:1"]);
        let mut tiny = without.clone();
        tiny.inventory.cpus = 0;
        tiny.inventory.memory_bytes = 0;
        let mut heavy = m.clone();
        let plain = &mut heavy.content.applications[0];
        assert_eq!(plain.deployment, "plain");
        plain.services[0].resources.memory = Some(atoll_spec::units::ByteSize(1 << 40));
        assert_eq!(
            standby_images(&heavy, &tiny),
            ["web:1"],
            "a host with no room now may have room when a host dies"
        );
    }

    #[test]
    fn what_is_free_is_the_host_less_what_its_replicas_reserve() {
        let mut web = service("web", "web:1");
        web.replicas = 2;
        web.resources = atoll_api::manifest::Resources {
            cpu: Some(atoll_spec::units::Cpu(500)),
            memory: Some(atoll_spec::units::ByteSize(1 << 30)),
        };
        let m = manifest(vec![("d", web), ("e", service("db", "db:1"))]);
        let inv = inventory(&[]);
        let (mine, _) = alone("s1", &m, Path::new("/f"), "h1", &inv, Path::new("/"));
        assert_eq!(mine.len(), 3);
        assert_eq!(
            free(&m, &inv, &mine),
            FreeResources {
                cpu_millis: 1000,
                memory_bytes: 2 << 30
            }
        );
    }

    #[test]
    fn a_manifest_asking_nothing_of_hosts_runs_everything_as_before() {
        let m = manifest(vec![
            ("d", service("web", "web:1")),
            ("e", service("db", "db:1")),
        ]);
        let (mine, unplaced) = alone(
            "s1",
            &m,
            Path::new("/f"),
            "h1",
            &Inventory::default(),
            Path::new("/"),
        );
        assert!(unplaced.is_empty());
        assert_eq!(mine, crate::core::desired("s1", &m, Path::new("/f")));
    }
}

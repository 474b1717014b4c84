//! One description of a host, used by the agent that reports it, the control plane that places
//! work on it, and the CLI that shows it.
//!
//! The agent reports an [`Inventory`] (what it reads of the machine: facts, devices, its own
//! version and what it can do) at enrollment and whenever it changes; the control plane adds the
//! labels operators give the host, and the two together are a [`Host`]. Placement reads a host
//! through one flat map ([`Host::facts`]): its labels and, under reserved names, its built-in
//! facts, so one selector language covers both and a label can never pass for a fact.
//!
//! Every field added since the first agent is optional on the wire: a control plane reads what an
//! older agent sends, and an agent that sends no [`Inventory::capabilities`] is one that predates
//! them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a host is, as its agent reads it: reported at enrollment and again whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub hostname: String,
    /// As the agent's platform names it (`x86_64`, `aarch64`); see [`oci_arch`].
    pub arch: String,
    pub os: String,
    pub kernel: String,
    pub cpus: u32,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// Total size of the filesystem holding the agent's data.
    pub disk_bytes: u64,
    pub runtime: RuntimeInventory,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// The agent's own version; empty from an agent older than this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// What the agent can honour in a manifest, from [`capability`]; empty from an agent older
    /// than this field, which gets exactly the manifests it always got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Addresses the host is reachable at on its site's network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `ip:port` the agent listens on for the other hosts of its site (`--listen-site`): what
    /// the control plane lists for them in the site's manifest. Left out by an agent older than
    /// the site cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_address: Option<String>,
}

impl Inventory {
    /// Whether the agent said it can honour `capability`.
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// What an agent can honour in a manifest. The control plane never sends a site a feature one
/// of its agents lacks: the site is then not placed, and says which agent to upgrade.
pub mod capability {
    /// Requirements on hosts: `placement.hosts`, `requires` (devices, labels, arch) and
    /// `resources` checked against the host's free capacity, and the device classes they name.
    pub const HOST_PLACEMENT: &str = "host-placement";
    /// Device nodes mapped into containers (and NVIDIA GPUs through device requests).
    pub const DEVICES: &str = "devices";
    /// Every capability this build's agent has.
    pub const ALL: &[&str] = &[HOST_PLACEMENT, DEVICES];
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInventory {
    pub name: String,
    pub version: String,
}

/// A device node of the host, with the attributes sysfs gives for it. Device classes match on
/// these attributes ([`crate::manifest::DeviceClass`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    /// What the agent takes it for (`camera`, `serial`, `gpu`), for templates written before
    /// device classes; empty when it cannot tell.
    #[serde(default)]
    pub kind: String,
    /// The device node, such as `/dev/video0`.
    pub path: String,
    /// The model or product name sysfs gives, such as `HD Pro Webcam C920`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The kernel subsystem (`video4linux`, `tty`, `drm`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subsystem: String,
    /// USB or PCI vendor id, four lowercase hex digits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    /// USB or PCI product (device) id, four lowercase hex digits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub product: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// Set when the node has gone from `/dev`: the agent keeps reporting the device for a grace
    /// period (so a flapping cable moves nothing), then drops it. Placement still counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_since: Option<String>,
}

impl Device {
    /// The attributes device-class rules match on.
    pub fn attributes(&self) -> atoll_spec::device_class::DeviceAttributes<'_> {
        atoll_spec::device_class::DeviceAttributes {
            subsystem: &self.subsystem,
            vendor: &self.vendor,
            product: &self.product,
            name: &self.name,
            path: &self.path,
            serial: &self.serial,
        }
    }
}

/// `PUT /v1/sites/{site}/hosts/{host}/inventory` over mTLS: the host's inventory, sent when it
/// changed since the one the control plane last acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReport {
    pub inventory: Inventory,
}

/// The largest body of an inventory report the control plane reads: 413 past it.
pub const MAX_INVENTORY_BYTES: usize = 256 * 1024;
/// The most devices an inventory lists; the agent keeps the first in path order.
pub const MAX_DEVICES: usize = 256;
/// The most addresses an inventory lists.
pub const MAX_ADDRESSES: usize = 16;
/// The most capabilities an inventory lists.
pub const MAX_CAPABILITIES: usize = 64;
/// The longest string of an inventory (a device attribute, the hostname, a version...), in
/// bytes of UTF-8; the agent cuts longer ones on a character boundary.
pub const MAX_INVENTORY_STRING_BYTES: usize = 256;

/// The names of the built-in facts of [`Host::facts`]; a label may not take one.
pub const FACTS: &[&str] = &["arch", "os", "cpus", "memory", "disk", "agent_version"];
/// The prefix of the facts that count a host's devices of a class: `device.camera`.
pub const DEVICE_FACT_PREFIX: &str = "device.";

/// Whether a label key is one of the names [`Host::facts`] reserves for built-in facts.
pub fn is_reserved_label(key: &str) -> bool {
    FACTS.contains(&key) || key.starts_with(DEVICE_FACT_PREFIX)
}

/// A host as the control plane knows it: its agent's inventory and its operators' labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub inventory: Inventory,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Host {
    /// What a host selector reads: the labels, then the built-in facts over them (`arch` in OCI
    /// names, `os`, `cpus`, `memory` and `disk` in bytes, `agent_version`) and, for each class
    /// of `classes`, `device.<class>` = how many of the host's devices it matches.
    pub fn facts(&self, classes: &[crate::manifest::DeviceClass]) -> BTreeMap<String, String> {
        let inv = &self.inventory;
        let mut facts = self.labels.clone();
        facts.retain(|k, _| !is_reserved_label(k));
        facts.insert("arch".into(), oci_arch(&inv.arch).to_owned());
        facts.insert("os".into(), inv.os.clone());
        facts.insert("cpus".into(), inv.cpus.to_string());
        facts.insert("memory".into(), inv.memory_bytes.to_string());
        facts.insert("disk".into(), inv.disk_bytes.to_string());
        facts.insert("agent_version".into(), inv.agent_version.clone());
        for class in classes {
            let count = inv.devices.iter().filter(|d| class.matches(d)).count();
            facts.insert(
                format!("{DEVICE_FACT_PREFIX}{}", class.name),
                count.to_string(),
            );
        }
        facts
    }

    /// The devices of the host that `class` matches, in path order.
    pub fn devices_of<'a>(
        &'a self,
        class: &'a crate::manifest::DeviceClass,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        self.inventory.devices.iter().filter(|d| class.matches(d))
    }
}

/// The OCI name of an architecture (`amd64`, `arm64`, as image indexes name them) for the name a
/// platform gives it (`x86_64`, `aarch64`). A name already in OCI form, or one this table does
/// not know, is kept as it is.
pub fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" => "ppc64le",
        "riscv64gc" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_take_their_oci_names() {
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
        assert_eq!(oci_arch("arm64"), "arm64");
        assert_eq!(oci_arch("arm"), "arm");
        assert_eq!(oci_arch("s390x"), "s390x");
    }

    #[test]
    fn facts_are_labels_with_built_in_facts_over_them() {
        let host = Host {
            name: "h1".into(),
            inventory: Inventory {
                arch: "x86_64".into(),
                cpus: 4,
                memory_bytes: 8 << 30,
                agent_version: "0.9.0".into(),
                ..Inventory::default()
            },
            labels: [("size", "medium"), ("cpus", "64"), ("device.camera", "9")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        };
        let facts = host.facts(&[]);
        assert_eq!(facts["size"], "medium");
        assert_eq!(facts["arch"], "amd64");
        assert_eq!(facts["cpus"], "4", "a label cannot pass for a fact");
        assert_eq!(facts["memory"], (8u64 << 30).to_string());
        assert_eq!(facts["agent_version"], "0.9.0");
        assert!(!facts.contains_key("device.camera"));
    }

    #[test]
    fn an_older_agents_inventory_reads_with_no_capabilities() {
        let old = r#"{"hostname":"h","arch":"x86_64","os":"Linux","kernel":"6","cpus":2,"cpu_model":"","memory_bytes":1,"disk_bytes":1,"runtime":{"name":"docker","version":"27"},"devices":[{"kind":"camera","path":"/dev/video0"}]}"#;
        let inv: Inventory = serde_json::from_str(old).unwrap();
        assert!(inv.capabilities.is_empty());
        assert!(!inv.can(capability::HOST_PLACEMENT));
        assert_eq!(inv.devices[0].path, "/dev/video0");
        assert_eq!(inv.devices[0].subsystem, "");
    }

    #[test]
    fn reserved_label_keys() {
        assert!(is_reserved_label("arch"));
        assert!(is_reserved_label("device.camera"));
        assert!(!is_reserved_label("size"));
        assert!(!is_reserved_label("devices"));
    }
}

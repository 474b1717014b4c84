//! `DeviceClass`: a name for the devices that match udev-like rules (`camera`: any
//! video4linux device whose name holds "Camera", or Logitech's 046d:08e5, or any
//! `/dev/video*`).
//!
//! A service's `requires.devices` and a host selector's `device.<class>` refer to classes by
//! name. A host has the class when one of its devices matches; the rule is the pure function
//! [`DeviceClass::matches`], so the control plane and a site offline decide alike.
//!
//! Choices: a class matches when ANY of its rules does and a rule when EVERY field it gives
//! does, as udev rules read; each field is a [`glob`](crate::glob), case-sensitive as sysfs
//! reports it, except the vendor and product ids, which are hex and compared lowercase
//! (`046D` is `046d`). A rule that gives no field would match every device and is refused,
//! as is a vendor or product pattern with a character that is not hex or glob syntax, which
//! could never match.

use serde::{Deserialize, Serialize};

use crate::decode::{Decoder, Fields};
use crate::glob;
use crate::yaml::Node;

/// The prefix of a host selector key that counts a host's devices of one class.
pub const DEVICE_KEY_PREFIX: &str = "device.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClass {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A device has the class when any rule matches it.
    #[serde(rename = "match")]
    pub rules: Vec<DeviceRule>,
    /// Devices of this class are GPUs of this vendor, handed to containers the vendor's way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

/// One rule: every field given must match (each a glob); a field left out matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<String>,
    /// USB (or PCI) vendor id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// USB (or PCI) product id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// A GPU vendor whose devices the runtime hands over its own way (NVIDIA: Engine API
/// `DeviceRequests`) rather than as device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gpu {
    Nvidia,
}

impl Gpu {
    pub fn as_str(self) -> &'static str {
        match self {
            Gpu::Nvidia => "nvidia",
        }
    }
}

/// What is known of one device, as the agent reads it from sysfs; empty when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceAttributes<'a> {
    pub subsystem: &'a str,
    pub vendor: &'a str,
    pub product: &'a str,
    pub name: &'a str,
    pub path: &'a str,
    pub serial: &'a str,
}

impl DeviceClass {
    /// Whether the device has this class: any rule matches it.
    pub fn matches(&self, device: &DeviceAttributes<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(device))
    }
}

impl DeviceRule {
    /// Whether every field this rule gives matches the device's.
    pub fn matches(&self, device: &DeviceAttributes<'_>) -> bool {
        self.fields().matches(device)
    }

    pub fn fields(&self) -> RuleFields<'_> {
        RuleFields {
            subsystem: self.subsystem.as_deref(),
            vendor: self.vendor.as_deref(),
            product: self.product.as_deref(),
            name: self.name.as_deref(),
            path: self.path.as_deref(),
            serial: self.serial.as_deref(),
        }
    }
}

/// The patterns of one rule, borrowed: what a rule as written and the copy a site's manifest
/// carries are both tested with, so there is one matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleFields<'a> {
    pub subsystem: Option<&'a str>,
    pub vendor: Option<&'a str>,
    pub product: Option<&'a str>,
    pub name: Option<&'a str>,
    pub path: Option<&'a str>,
    pub serial: Option<&'a str>,
}

impl RuleFields<'_> {
    /// Whether every pattern given matches the device's attribute.
    pub fn matches(&self, device: &DeviceAttributes<'_>) -> bool {
        let exact =
            |pattern: Option<&str>, value: &str| pattern.is_none_or(|p| glob::matches(p, value));
        let hex = |pattern: Option<&str>, value: &str| {
            pattern
                .is_none_or(|p| glob::matches(&p.to_ascii_lowercase(), &value.to_ascii_lowercase()))
        };
        exact(self.subsystem, device.subsystem)
            && hex(self.vendor, device.vendor)
            && hex(self.product, device.product)
            && exact(self.name, device.name)
            && exact(self.path, device.path)
            && exact(self.serial, device.serial)
    }
}

const CLASS_FIELDS: &[&str] = &["kind", "name", "description", "match", "gpu"];
const RULE_FIELDS: &[&str] = &["subsystem", "vendor", "product", "name", "path", "serial"];

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    name: String,
    path: &str,
) -> DeviceClass {
    d.deny_unknown(fields, path, CLASS_FIELDS);
    let description = fields
        .get("description")
        .and_then(|n| d.string(n, &format!("{path}.description")));
    let mpath = format!("{path}.match");
    let rules = match d.required(fields, "match", path) {
        None => Vec::new(),
        Some(n) => {
            let items = d.seq(n, &mpath).unwrap_or_default();
            if items.is_empty() {
                d.error_hint(
                    n.pos,
                    &mpath,
                    "a device class needs at least one rule",
                    "write rules such as `- subsystem: video4linux`",
                );
            }
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| decode_rule(d, item, &format!("{mpath}[{i}]")))
                .collect()
        }
    };
    let gpu = fields.get("gpu").and_then(|n| {
        let gpath = format!("{path}.gpu");
        match d.string(n, &gpath)?.as_str() {
            "nvidia" => Some(Gpu::Nvidia),
            other => {
                d.error_hint(
                    n.pos,
                    &gpath,
                    format!("unknown GPU vendor `{other}`"),
                    "expected nvidia (leave `gpu` out for devices passed as device nodes)",
                );
                None
            }
        }
    });
    DeviceClass {
        name,
        description,
        rules,
        gpu,
    }
}

fn decode_rule(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<DeviceRule> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, RULE_FIELDS);
    let mut pattern = |field: &str| {
        let n = fields.get(field)?;
        let fpath = format!("{path}.{field}");
        let text = d.string(n, &fpath)?;
        if let Err(e) = glob::check(&text) {
            d.error_in_scalar(n, &text, e.offset, &fpath, format!("glob: {}", e.message));
            return None;
        }
        let hex = matches!(field, "vendor" | "product");
        let stray = text.char_indices().find(|(_, c)| {
            !(c.is_ascii_hexdigit() || matches!(c, '*' | '?' | '[' | ']' | '!' | '-'))
        });
        if let (true, Some((at, c))) = (hex, stray) {
            d.error_in_scalar(
                n,
                &text,
                at,
                &fpath,
                format!("`{c}` is not a hex digit: {field} ids are hex, such as 046d"),
            );
            return None;
        }
        Some(text)
    };
    let rule = DeviceRule {
        subsystem: pattern("subsystem"),
        vendor: pattern("vendor"),
        product: pattern("product"),
        name: pattern("name"),
        path: pattern("path"),
        serial: pattern("serial"),
    };
    if !RULE_FIELDS.iter().any(|f| fields.get(f).is_some()) {
        // A rule of unknown fields only was reported as such; one of no field, or of known
        // fields left empty, is refused here.
        if !fields.entries.is_empty()
            && fields
                .entries
                .iter()
                .all(|(n, _, _)| !RULE_FIELDS.contains(n))
        {
            return None;
        }
        d.error_hint(
            fields.pos,
            path,
            "an empty rule would match every device",
            format!("give at least one of: {}", RULE_FIELDS.join(", ")),
        );
        return None;
    }
    Some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resource, Source, parse_sources};

    fn class(yaml: &str) -> DeviceClass {
        let parsed = parse_sources(&[Source {
            name: "c.yaml".into(),
            text: yaml.into(),
        }]);
        assert!(parsed.is_ok(), "{:#?}", parsed.diagnostics);
        match &parsed.documents[0].resource {
            Resource::DeviceClass(c) => c.clone(),
            other => panic!("not a device class: {other:?}"),
        }
    }

    const CAMERA: &str = r#"kind: DeviceClass
name: camera
description: USB and CSI cameras
match:
  - subsystem: video4linux
    name: "*Camera*"
  - vendor: "046D"
    product: "08e5"
  - path: /dev/video*
"#;

    fn device<'a>(subsystem: &'a str, name: &'a str, path: &'a str) -> DeviceAttributes<'a> {
        DeviceAttributes {
            subsystem,
            name,
            path,
            ..DeviceAttributes::default()
        }
    }

    #[test]
    fn any_rule_and_every_field() {
        let c = class(CAMERA);
        assert_eq!(c.rules.len(), 3);
        assert!(c.matches(&device("video4linux", "HD Camera", "/dev/v4l0")));
        // The first rule needs both fields.
        assert!(!c.matches(&device("video4linux", "Capture card", "/dev/v4l0")));
        assert!(!c.matches(&device("usb", "HD Camera", "/dev/bus/usb/1")));
        assert!(c.matches(&device("", "", "/dev/video3")));
        // Case-sensitive, but for hex ids.
        assert!(!c.matches(&device("video4linux", "HD camera", "/dev/v4l0")));
        let logitech = DeviceAttributes {
            vendor: "046d",
            product: "08E5",
            ..DeviceAttributes::default()
        };
        assert!(c.matches(&logitech));
        let other = DeviceAttributes {
            vendor: "046d",
            product: "0825",
            ..DeviceAttributes::default()
        };
        assert!(!c.matches(&other));
        assert!(!c.matches(&DeviceAttributes::default()));
    }

    #[test]
    fn gpu_and_serialized_shape() {
        let c = class("kind: DeviceClass\nname: gpu\nmatch: [{ vendor: 10de }]\ngpu: nvidia\n");
        assert_eq!(c.gpu, Some(Gpu::Nvidia));
        let json = serde_json::to_string(&Resource::DeviceClass(c.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"DeviceClass","name":"gpu","match":[{"vendor":"10de"}],"gpu":"nvidia"}"#
        );
        assert_eq!(
            serde_json::from_str::<Resource>(&json).unwrap(),
            Resource::DeviceClass(c)
        );
    }
}

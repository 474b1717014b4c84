//! `Application`: a versioned set of services, the unit that is deployed to sites.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{Decoder, Fields};
use crate::names::{
    check_container_path, check_env_name, check_label_key, check_label_value, check_name,
    check_no_nul, check_secret_key, check_version,
};
use crate::template::{Origin, Template};
use crate::units::{ByteSize, Cpu, Span};
use crate::yaml::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Template>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "is_default")]
    pub requires: Requires,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// What a new version of one of `secrets` does to the running service.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_secret_change: OnSecretChange,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// What happens to a running service when a secret it reads gets a new version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnSecretChange {
    /// Replace its containers (the default): the new value is read at start-up.
    #[default]
    Restart,
    /// Rewrite the secret files in place and send the containers this signal, such as
    /// `SIGHUP`. A secret delivered as an environment variable still needs a restart.
    Signal(String),
}

impl OnSecretChange {
    /// The signals a service may ask for.
    pub const SIGNALS: &[&str] = &[
        "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH",
    ];

    pub fn parse(text: &str) -> Result<OnSecretChange, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["restart"] => Ok(OnSecretChange::Restart),
            ["signal", sig] => {
                let sig = sig.to_ascii_uppercase();
                let sig = if sig.starts_with("SIG") {
                    sig
                } else {
                    format!("SIG{sig}")
                };
                if Self::SIGNALS.contains(&sig.as_str()) {
                    Ok(OnSecretChange::Signal(sig))
                } else {
                    Err(format!(
                        "unknown signal `{}`: one of {}",
                        words[1],
                        Self::SIGNALS.join(", ")
                    ))
                }
            }
            _ => Err(format!(
                "invalid on_secret_change `{text}`: `restart`, or `signal` and a signal such as `signal SIGHUP`"
            )),
        }
    }
}

impl std::fmt::Display for OnSecretChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnSecretChange::Restart => f.write_str("restart"),
            OnSecretChange::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

impl Serialize for OnSecretChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OnSecretChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        OnSecretChange::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The most replicas of one service at one site. A site is a handful of hosts, and every replica
/// is a container the agent creates, watches and reports on; a number far past what a site can
/// run (a typo, `replicas: 1000000`) would only fail there, so it is refused at apply.
pub const MAX_REPLICAS: u32 = 100;

/// How many replicas run at a site: `replicas` of them, or one on every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Replicated,
    EveryHost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub container: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

/// What a host must have for a replica to be placed on it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Device classes (`kind: DeviceClass` names) the host must have a device of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_labels: BTreeMap<String, String>,
    /// The host's processor architecture, as images name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
}

/// A processor architecture by its OCI name (`GOARCH`), the one image manifests and agents'
/// `arch` fact use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "amd64")]
    Amd64,
    #[serde(rename = "arm64")]
    Arm64,
    #[serde(rename = "arm")]
    Arm,
    #[serde(rename = "386")]
    I386,
    #[serde(rename = "ppc64le")]
    Ppc64le,
    #[serde(rename = "s390x")]
    S390x,
    #[serde(rename = "riscv64")]
    Riscv64,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::Amd64,
        Arch::Arm64,
        Arch::Arm,
        Arch::I386,
        Arch::Ppc64le,
        Arch::S390x,
        Arch::Riscv64,
    ];

    /// The OCI name: `amd64`, `386`...
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::I386 => "386",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The architecture of an OCI name; other spellings (`x86_64`, `aarch64`) are refused with
    /// the list, since an agent reports the OCI name and a near-miss would never match.
    pub fn parse(text: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| {
                let guess = match text {
                    "x86_64" | "x86-64" | "x64" => " (x86_64 is `amd64`)",
                    "aarch64" | "arm64v8" => " (aarch64 is `arm64`)",
                    "i386" | "i686" | "x86" => " (32-bit x86 is `386`)",
                    "armv7" | "armv7l" | "armhf" | "armv6" => " (32-bit ARM is `arm`)",
                    _ => "",
                };
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown architecture `{text}`{guess}: write one of {}, as images name them",
                    names.join(", ")
                )
            })
    }
}

/// A health probe. Serialized flat, as written: `{ http: {...}, interval: 5s, ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(flatten)]
    pub check: HealthCheck,
    pub interval: Span,
    pub timeout: Span,
    pub failures: u32,
    pub start_period: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    Http {
        port: u16,
        path: String,
        status: u16,
    },
    Tcp {
        port: u16,
    },
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub template: Template,
    /// Unix permission bits, written in octal such as `0644`.
    #[serde(
        default = "file_mode",
        skip_serializing_if = "is_file_mode",
        with = "octal_mode"
    )]
    pub mode: u32,
}

/// File modes travel as octal text (`"0644"`), as people write them.
pub mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid file mode `{text}`")))
    }
}

fn file_mode() -> u32 {
    0o644
}

fn is_file_mode(mode: &u32) -> bool {
    *mode == 0o644
}

/// A reference to a `Secret`, delivered as a file (the default) or, when asked, an env variable.
///
/// With `key`, the file holds that key's value; without, `path` is a folder with one file per
/// key. The path defaults to `/run/secrets/NAME`; a secret with `env` and no `path` is only an
/// environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretRef {
    /// Where the secret appears in the container's filesystem, if it does.
    pub fn file_path(&self) -> Option<String> {
        match (&self.path, &self.env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(format!("/run/secrets/{}", self.name)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

const APPLICATION_FIELDS: &[&str] = &["kind", "name", "version", "description", "services"];
const SERVICE_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "replicas",
    "mode",
    "ports",
    "resources",
    "requires",
    "health",
    "files",
    "secrets",
    "on_secret_change",
    "volumes",
];

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    name: String,
    path: &str,
) -> Application {
    d.deny_unknown(fields, path, APPLICATION_FIELDS);
    let version = d
        .required(fields, "version", path)
        .and_then(|n| checked(d, n, &format!("{path}.version"), check_version))
        .unwrap_or_default();
    let description = fields
        .get("description")
        .and_then(|n| d.string(n, &format!("{path}.description")));
    let mut services = Vec::new();
    if let Some(node) = d.required(fields, "services", path) {
        let items = d.seq(node, &format!("{path}.services")).unwrap_or_default();
        if items.is_empty() {
            d.error(
                node.pos,
                &format!("{path}.services"),
                "an application needs at least one service",
            );
        }
        for (i, item) in items.iter().enumerate() {
            let spath = format!("{path}.services[{i}]");
            if let Some(service) = decode_service(d, item, &spath) {
                if services.iter().any(|s: &Service| s.name == service.name) {
                    d.error(
                        item.pos,
                        &spath,
                        format!("duplicate service name `{}`", service.name),
                    );
                }
                services.push(service);
            }
        }
    }
    Application {
        name,
        version,
        description,
        services,
    }
}

/// Reads a scalar and checks it with `check`, reporting its error at the node.
pub(crate) fn checked(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<String> {
    let text = d.string(node, path)?;
    match check(&text) {
        Ok(()) => Some(text),
        Err(e) => {
            d.error(node.pos, path, e);
            None
        }
    }
}

fn parsed<T>(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let text = d.string(node, path)?;
    parse(&text).map_err(|e| d.error(node.pos, path, e)).ok()
}

fn template(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Template> {
    let source = d.string(node, path)?;
    let template = Template {
        source,
        origin: Some(Origin {
            file: d.file.clone(),
            line: node.pos.line,
            column: node.pos.column,
        }),
    };
    if let Err((message, line)) = template.check() {
        let pos = match line {
            // Block scalars (`|`) start on the line after the indicator.
            Some(l) if l > 1 => crate::yaml::Pos {
                line: node.pos.line + l - 1,
                column: 1,
            },
            _ => node.pos,
        };
        d.error(pos, path, format!("template: {message}"));
        return None;
    }
    Some(template)
}

fn decode_service(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Service> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, SERVICE_FIELDS);
    let name_node = d.required(&fields, "name", path)?;
    let name = checked(d, name_node, &format!("{path}.name"), check_name)?;
    let image = d
        .required(&fields, "image", path)
        .and_then(|n| d.string(n, &format!("{path}.image")))
        .unwrap_or_default();
    if image.chars().any(char::is_whitespace) {
        d.error(
            fields.get("image").map_or(fields.pos, |n| n.pos),
            &format!("{path}.image"),
            "an image reference has no spaces",
        );
    } else if let Err(e) = check_no_nul(&image, "an image reference") {
        d.error(
            fields.get("image").map_or(fields.pos, |n| n.pos),
            &format!("{path}.image"),
            e,
        );
    }
    let command = fields
        .get("command")
        .and_then(|n| d.strings(n, &format!("{path}.command")))
        .unwrap_or_default();
    let args = fields
        .get("args")
        .and_then(|n| d.strings(n, &format!("{path}.args")))
        .unwrap_or_default();

    let mut env = BTreeMap::new();
    if let Some(n) = fields.get("env")
        && let Some(map) = d.map(n, &format!("{path}.env"))
    {
        for (key, kpos, value) in &map.entries {
            let vpath = format!("{path}.env.{key}");
            if let Err(e) = check_env_name(key) {
                d.error(*kpos, &vpath, e);
                continue;
            }
            if let Some(t) = template(d, value, &vpath) {
                match check_no_nul(&t.source, "an environment value") {
                    Ok(()) => {
                        env.insert((*key).to_owned(), t);
                    }
                    Err(e) => d.error(value.pos, &vpath, e),
                }
            }
        }
    }

    let replicas = fields
        .get("replicas")
        .and_then(|n| {
            let rpath = format!("{path}.replicas");
            let replicas = d.u32(n, &rpath)?;
            if replicas > MAX_REPLICAS {
                d.error_hint(
                    n.pos,
                    &rpath,
                    format!("{replicas} replicas per site is more than the most, {MAX_REPLICAS}"),
                    "a site is a few hosts: run more sites, or `mode: every-host` for one replica per host",
                );
                return None;
            }
            Some(replicas)
        })
        .unwrap_or(1);
    let mode = match fields.get("mode") {
        None => Mode::Replicated,
        Some(n) => match d.string(n, &format!("{path}.mode")).as_deref() {
            Some("replicated") => Mode::Replicated,
            Some("every-host") => {
                if fields.get("replicas").is_some() {
                    d.error(
                        n.pos,
                        &format!("{path}.mode"),
                        "`mode: every-host` runs one replica per host; remove `replicas`",
                    );
                }
                Mode::EveryHost
            }
            Some(other) => {
                d.error_hint(
                    n.pos,
                    &format!("{path}.mode"),
                    format!("unknown mode `{other}`"),
                    "expected replicated or every-host",
                );
                Mode::Replicated
            }
            None => Mode::Replicated,
        },
    };

    let ports = decode_list(
        d,
        fields.get("ports"),
        &format!("{path}.ports"),
        decode_port,
    );
    for (i, port) in ports.iter().enumerate() {
        if ports[..i]
            .iter()
            .any(|p| p.container == port.container && p.protocol == port.protocol)
        {
            d.error(
                fields.pos,
                &format!("{path}.ports[{i}]"),
                format!("container port {} is listed twice", port.container),
            );
        }
    }
    let resources = fields
        .get("resources")
        .and_then(|n| decode_resources(d, n, &format!("{path}.resources")))
        .unwrap_or_default();
    let requires = fields
        .get("requires")
        .and_then(|n| decode_requires(d, n, &format!("{path}.requires")))
        .unwrap_or_default();
    let health = fields
        .get("health")
        .and_then(|n| decode_health(d, n, &format!("{path}.health")));
    let files = decode_list(
        d,
        fields.get("files"),
        &format!("{path}.files"),
        decode_file,
    );
    for (i, file) in files.iter().enumerate() {
        if files[..i].iter().any(|f| f.path == file.path) {
            d.error(
                fields.pos,
                &format!("{path}.files[{i}]"),
                format!("file `{}` is listed twice", file.path),
            );
        }
    }
    let secrets = decode_list(
        d,
        fields.get("secrets"),
        &format!("{path}.secrets"),
        decode_secret,
    );
    for (i, secret) in secrets.iter().enumerate() {
        let Some(p) = secret.file_path() else {
            continue;
        };
        let taken = files.iter().any(|f| f.path == p)
            || secrets[..i]
                .iter()
                .any(|s| s.file_path().as_ref() == Some(&p));
        if taken {
            d.error_hint(
                fields.pos,
                &format!("{path}.secrets[{i}]"),
                format!("`{p}` is already used by another file or secret"),
                "give each secret its own `path` (the default is /run/secrets/NAME)",
            );
        }
    }
    let on_secret_change = fields
        .get("on_secret_change")
        .and_then(|n| {
            let sub = format!("{path}.on_secret_change");
            let text = d.string(n, &sub)?;
            OnSecretChange::parse(&text)
                .map_err(|e| d.error(n.pos, &sub, e))
                .ok()
        })
        .unwrap_or_default();
    let volumes = decode_list(
        d,
        fields.get("volumes"),
        &format!("{path}.volumes"),
        decode_volume,
    );
    Some(Service {
        name,
        image,
        command,
        args,
        env,
        replicas,
        mode,
        ports,
        resources,
        requires,
        health,
        files,
        secrets,
        on_secret_change,
        volumes,
    })
}

fn decode_list<T>(
    d: &mut Decoder<'_>,
    node: Option<&Node>,
    path: &str,
    item: impl Fn(&mut Decoder<'_>, &Node, &str) -> Option<T>,
) -> Vec<T> {
    let Some(node) = node else { return Vec::new() };
    let items = d.seq(node, path).unwrap_or_default();
    items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| item(d, n, &format!("{path}[{i}]")))
        .collect()
}

fn decode_port(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Port> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["container", "host", "protocol"]);
    let container_node = d.required(&fields, "container", path)?;
    let container = d.port(container_node, &format!("{path}.container"))?;
    let host = fields
        .get("host")
        .and_then(|n| d.port(n, &format!("{path}.host")));
    let protocol = match fields
        .get("protocol")
        .and_then(|n| d.string(n, &format!("{path}.protocol")))
        .as_deref()
    {
        None | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(other) => {
            d.error_hint(
                fields.pos,
                &format!("{path}.protocol"),
                format!("unknown protocol `{other}`"),
                "expected tcp or udp",
            );
            Protocol::Tcp
        }
    };
    Some(Port {
        container,
        host,
        protocol,
    })
}

fn decode_resources(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Resources> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["cpu", "memory"]);
    Some(Resources {
        cpu: fields
            .get("cpu")
            .and_then(|n| parsed(d, n, &format!("{path}.cpu"), Cpu::parse)),
        memory: fields
            .get("memory")
            .and_then(|n| parsed(d, n, &format!("{path}.memory"), ByteSize::parse)),
    })
}

fn decode_requires(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Requires> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["devices", "host_labels", "arch"]);
    let mut devices = Vec::new();
    if let Some(n) = fields.get("devices") {
        let dpath = format!("{path}.devices");
        for (i, item) in d.seq(n, &dpath).unwrap_or_default().iter().enumerate() {
            let ipath = format!("{dpath}[{i}]");
            let Some(class) = checked(d, item, &ipath, check_name) else {
                continue;
            };
            if devices.contains(&class) {
                d.error(
                    item.pos,
                    &ipath,
                    format!("device class `{class}` is listed twice"),
                );
            } else {
                devices.push(class);
            }
        }
    }
    let host_labels = fields
        .get("host_labels")
        .map(|n| labels(d, n, &format!("{path}.host_labels")))
        .unwrap_or_default();
    let arch = fields
        .get("arch")
        .and_then(|n| parsed(d, n, &format!("{path}.arch"), Arch::parse));
    Some(Requires {
        devices,
        host_labels,
        arch,
    })
}

/// Labels: keys and values checked, values as text.
pub(crate) fn labels(d: &mut Decoder<'_>, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, (pos, value)) in d.string_map(node, path).unwrap_or_default() {
        let kpath = format!("{path}.{key}");
        match check_label_key(&key).and_then(|()| check_label_value(&value)) {
            Ok(()) => {
                out.insert(key, value);
            }
            Err(e) => d.error(pos, &kpath, e),
        }
    }
    out
}

fn decode_health(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Health> {
    let fields = d.map(node, path)?;
    d.deny_unknown(
        &fields,
        path,
        &[
            "http",
            "tcp",
            "command",
            "interval",
            "timeout",
            "failures",
            "start_period",
        ],
    );
    let mut checks = Vec::new();
    if let Some(n) = fields.get("http") {
        let hpath = format!("{path}.http");
        if let Some(h) = d.map(n, &hpath) {
            d.deny_unknown(&h, &hpath, &["port", "path", "status"]);
            let port = d
                .required(&h, "port", &hpath)
                .and_then(|p| d.port(p, &format!("{hpath}.port")));
            let url_path = h
                .get("path")
                .and_then(|p| d.string(p, &format!("{hpath}.path")))
                .unwrap_or_else(|| "/".into());
            if !url_path.starts_with('/') {
                d.error(
                    h.pos,
                    &format!("{hpath}.path"),
                    format!("an HTTP path starts with '/', found `{url_path}`"),
                );
            }
            let status = h
                .get("status")
                .and_then(|s| d.u32(s, &format!("{hpath}.status")))
                .unwrap_or(200);
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..600).contains(s))
                .unwrap_or_else(|| {
                    d.error(
                        h.pos,
                        &format!("{hpath}.status"),
                        format!("HTTP status {status} is not between 100 and 599"),
                    );
                    200
                });
            if let Some(port) = port {
                checks.push(HealthCheck::Http {
                    port,
                    path: url_path,
                    status,
                });
            }
        }
    }
    if let Some(n) = fields.get("tcp") {
        let tpath = format!("{path}.tcp");
        if let Some(t) = d.map(n, &tpath) {
            d.deny_unknown(&t, &tpath, &["port"]);
            if let Some(port) = d
                .required(&t, "port", &tpath)
                .and_then(|p| d.port(p, &format!("{tpath}.port")))
            {
                checks.push(HealthCheck::Tcp { port });
            }
        }
    }
    if let Some(n) = fields.get("command")
        && let Some(command) = d.strings(n, &format!("{path}.command"))
    {
        if command.is_empty() {
            d.error(
                n.pos,
                &format!("{path}.command"),
                "a health command needs at least the program to run",
            );
        } else {
            checks.push(HealthCheck::Command(command));
        }
    }
    let span = |d: &mut Decoder<'_>, name: &str, default: u64| {
        fields
            .get(name)
            .and_then(|n| parsed(d, n, &format!("{path}.{name}"), Span::parse))
            .unwrap_or(Span::from_secs(default))
    };
    let interval = span(d, "interval", 10);
    let timeout = span(d, "timeout", 2);
    let start_period = span(d, "start_period", 0);
    let failures = fields
        .get("failures")
        .and_then(|n| d.u32(n, &format!("{path}.failures")))
        .unwrap_or(3)
        .max(1);
    if interval.0.is_zero() {
        d.error(
            fields.pos,
            &format!("{path}.interval"),
            "the interval must be more than zero",
        );
    }
    if checks.len() != 1 {
        let has_check_errors = d.diags.iter().any(|x| x.path.starts_with(path));
        if !has_check_errors {
            d.error_hint(
                node.pos,
                path,
                "a health check needs exactly one of `http`, `tcp` or `command`",
                "for example http: { port: 8080, path: /healthz }",
            );
        }
        return None;
    }
    Some(Health {
        check: checks.remove(0),
        interval,
        timeout,
        failures,
        start_period,
    })
}

fn decode_file(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<File> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["path", "template", "mode"]);
    let file_path_node = d.required(&fields, "path", path)?;
    let file_path = checked(
        d,
        file_path_node,
        &format!("{path}.path"),
        check_container_path,
    )?;
    let template_node = d.required(&fields, "template", path)?;
    let template = template(d, template_node, &format!("{path}.template"))?;
    let mode = match fields.get("mode") {
        None => file_mode(),
        Some(n) => {
            let text = d.string(n, &format!("{path}.mode"))?;
            match u32::from_str_radix(&text, 8) {
                Ok(m) if m <= 0o777 => m,
                _ => {
                    d.error_hint(
                        n.pos,
                        &format!("{path}.mode"),
                        format!("invalid file mode `{text}`"),
                        "write octal permission bits such as \"0644\"",
                    );
                    return None;
                }
            }
        }
    };
    Some(File {
        path: file_path,
        template,
        mode,
    })
}

fn decode_secret(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<SecretRef> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["name", "key", "path", "env"]);
    let name_node = d.required(&fields, "name", path)?;
    let name = checked(d, name_node, &format!("{path}.name"), check_name)?;
    let key = fields
        .get("key")
        .and_then(|n| checked(d, n, &format!("{path}.key"), check_secret_key));
    let file_path = fields
        .get("path")
        .and_then(|n| checked(d, n, &format!("{path}.path"), check_container_path));
    let env = fields
        .get("env")
        .and_then(|n| checked(d, n, &format!("{path}.env"), check_env_name));
    if env.is_some() && key.is_none() {
        d.error(
            fields.pos,
            path,
            "a secret delivered as an environment variable needs `key`: one value per variable",
        );
    }
    Some(SecretRef {
        name,
        key,
        path: file_path,
        env,
    })
}

fn decode_volume(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Volume> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["name", "path", "read_only"]);
    let name_node = d.required(&fields, "name", path)?;
    let name = checked(d, name_node, &format!("{path}.name"), check_name)?;
    let vpath_node = d.required(&fields, "path", path)?;
    let vpath = checked(d, vpath_node, &format!("{path}.path"), check_container_path)?;
    let read_only = fields
        .get("read_only")
        .and_then(|n| d.bool(n, &format!("{path}.read_only")))
        .unwrap_or(false);
    Some(Volume {
        name,
        path: vpath,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_requires_read_and_write_as_before() {
        let stored = r#"{"devices":["camera"],"host_labels":{"size":"large"}}"#;
        let r: Requires = serde_json::from_str(stored).unwrap();
        assert_eq!(r.arch, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), stored);
        let with = r#"{"arch":"386"}"#;
        let r: Requires = serde_json::from_str(with).unwrap();
        assert_eq!(r.arch, Some(Arch::I386));
        assert_eq!(serde_json::to_string(&r).unwrap(), with);
        assert!(serde_json::from_str::<Requires>(r#"{"arch":"x86_64"}"#).is_err());
    }

    #[test]
    fn architectures_are_oci_names() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.as_str()), Ok(arch));
            let json = serde_json::to_string(&arch).unwrap();
            assert_eq!(json, format!("\"{}\"", arch.as_str()));
        }
        assert!(
            Arch::parse("aarch64")
                .unwrap_err()
                .contains("aarch64 is `arm64`")
        );
        assert!(
            Arch::parse("AMD64")
                .unwrap_err()
                .contains("write one of amd64, arm64")
        );
    }
}

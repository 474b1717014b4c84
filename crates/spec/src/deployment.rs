//! `Deployment`: which sites run an application (a selector over site labels), on which of
//! their hosts (a selector over host labels, facts and device classes), and how a new version
//! rolls out to them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::application::checked;
use crate::decode::{Decoder, Fields};
use crate::device_class::DEVICE_KEY_PREFIX;
use crate::names::{check_name, check_version};
use crate::selector::Selector;
use crate::units::Span;
use crate::yaml::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub name: String,
    pub application: String,
    /// Pins a version; without it the deployment follows the application's newest applied version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Defaults for `site.variables` at this deployment's sites: a site's own variables win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Variables for some sites only, over the site's own; see [`Deployment::variables_for`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// Variables for the sites one selector matches, or for one named site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_selector_text"
    )]
    pub sites: Option<Selector>,
    pub variables: BTreeMap<String, String>,
}

impl Deployment {
    /// The variables templates see as `site.variables` at `site` for this deployment. The most
    /// specific value wins: the deployment's `variables`, then the site's own `variables`,
    /// then `overrides` whose `sites` selector matches the site (later entries over earlier
    /// ones), then the override naming the site itself.
    pub fn variables_for(
        &self,
        site: &str,
        labels: &BTreeMap<String, String>,
        own: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut out = self.variables.clone();
        out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        let by_selector = self
            .overrides
            .iter()
            .filter(|o| o.sites.as_ref().is_some_and(|s| s.matches(labels)));
        let by_name = self
            .overrides
            .iter()
            .filter(|o| o.site.as_deref() == Some(site));
        for o in by_selector.chain(by_name) {
            out.extend(o.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(with = "selector_text")]
    pub sites: Selector,
    /// Which hosts of a selected site may run the application, by their labels and facts
    /// (`arch`, `cpus`, `memory`...) and device classes (`device.camera >= 1`). None: any host.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_selector_text"
    )]
    pub hosts: Option<Selector>,
}

impl Placement {
    /// The device classes the host selector reads (`camera` for `device.camera`).
    pub fn device_classes(&self) -> BTreeSet<&str> {
        self.hosts
            .iter()
            .flat_map(Selector::keys)
            .filter_map(|k| k.strip_prefix(DEVICE_KEY_PREFIX))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Share>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<Share>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// At most this many sites switching over at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Pull the new image at every targeted site as soon as the rollout starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefetch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub sites: Share,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_selector_text"
    )]
    pub selector: Option<Selector>,
    pub soak: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Rollback,
    Pause,
}

/// A number of sites, or a share of them written `10%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Count(u32),
    Percent(u32),
}

impl Share {
    pub fn parse(text: &str) -> Result<Share, String> {
        let text = text.trim();
        if let Some(p) = text.strip_suffix('%') {
            match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Ok(Share::Percent(p)),
                _ => Err(format!(
                    "invalid share `{text}`: a whole percentage from 0% to 100%"
                )),
            }
        } else {
            text.parse::<u32>()
                .map(Share::Count)
                .map_err(|_| format!("invalid share `{text}`: a number of sites such as 5, or a percentage such as 10%"))
        }
    }

    /// How many of `total` sites this share is; a percentage rounds up so that `1%` of a few
    /// sites is still one site.
    pub fn of(self, total: usize) -> usize {
        match self {
            Share::Count(n) => (n as usize).min(total),
            Share::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Count(n) => write!(f, "{n}"),
            Share::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Share::Count(n) => s.serialize_u32(*n),
            Share::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Share::Count(n)),
            Raw::Text(t) => Share::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

mod selector_text {
    use super::*;

    pub fn serialize<S: Serializer>(selector: &Selector, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(selector.source())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Selector, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod optional_selector_text {
    use super::*;

    pub fn serialize<S: Serializer>(selector: &Option<Selector>, s: S) -> Result<S::Ok, S::Error> {
        match selector {
            Some(sel) => s.serialize_some(sel.source()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Selector>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| Selector::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

const DEPLOYMENT_FIELDS: &[&str] = &[
    "kind",
    "name",
    "application",
    "version",
    "placement",
    "rollout",
    "variables",
    "overrides",
];

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    name: String,
    path: &str,
) -> Option<Deployment> {
    d.deny_unknown(fields, path, DEPLOYMENT_FIELDS);
    let application = d
        .required(fields, "application", path)
        .and_then(|n| checked(d, n, &format!("{path}.application"), check_name));
    let version = fields
        .get("version")
        .and_then(|n| checked(d, n, &format!("{path}.version"), check_version));
    let placement = d
        .required(fields, "placement", path)
        .and_then(|n| decode_placement(d, n, &format!("{path}.placement")));
    let rollout = fields
        .get("rollout")
        .and_then(|n| decode_rollout(d, n, &format!("{path}.rollout")));
    let variables = fields
        .get("variables")
        .and_then(|n| d.string_map(n, &format!("{path}.variables")))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect();
    let overrides = match fields.get("overrides") {
        None => Vec::new(),
        Some(n) => {
            let opath = format!("{path}.overrides");
            let items = d.seq(n, &opath).unwrap_or_default();
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| decode_override(d, item, &format!("{opath}[{i}]")))
                .collect()
        }
    };
    Some(Deployment {
        name,
        application: application?,
        version,
        placement: placement?,
        rollout,
        variables,
        overrides,
    })
}

fn decode_override(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Override> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["site", "sites", "variables"]);
    let site = fields
        .get("site")
        .and_then(|n| checked(d, n, &format!("{path}.site"), check_name));
    let sites = fields
        .get("sites")
        .and_then(|n| selector(d, n, &format!("{path}.sites")));
    let named =
        usize::from(fields.get("site").is_some()) + usize::from(fields.get("sites").is_some());
    if named != 1 {
        d.error_hint(
            fields.pos,
            path,
            "an override applies to one `site` (a name) or to `sites` (a selector)",
            "write `site: store-042` or `sites: region == eu`, not both",
        );
    }
    let variables = d
        .required(&fields, "variables", path)
        .and_then(|n| d.string_map(n, &format!("{path}.variables")))?
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect();
    Some(Override {
        site,
        sites,
        variables,
    })
}

fn selector(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Selector> {
    let text = d.string(node, path)?;
    match Selector::parse(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            d.error_in_scalar(
                node,
                &text,
                e.offset,
                path,
                format!("selector: {}", e.message),
            );
            None
        }
    }
}

fn decode_placement(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Placement> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, &["sites", "hosts"]);
    let hosts = fields.get("hosts").and_then(|n| {
        let hpath = format!("{path}.hosts");
        let hosts = selector(d, n, &hpath)?;
        for key in hosts.keys() {
            if let Some(class) = key.strip_prefix(DEVICE_KEY_PREFIX)
                && let Err(e) = check_name(class)
            {
                d.error_hint(
                    n.pos,
                    &hpath,
                    format!("selector: `{key}` names no device class: {e}"),
                    "`device.NAME` is how many of a host's devices the DeviceClass NAME matches",
                );
            }
        }
        Some(hosts)
    });
    let sites_node = d.required(&fields, "sites", path)?;
    let sites = selector(d, sites_node, &format!("{path}.sites"))?;
    Some(Placement { sites, hosts })
}

fn share(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Share> {
    let text = d.string(node, path)?;
    Share::parse(&text)
        .map_err(|e| d.error(node.pos, path, e))
        .ok()
}

fn decode_rollout(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<Rollout> {
    let fields = d.map(node, path)?;
    d.deny_unknown(
        &fields,
        path,
        &[
            "canary",
            "waves",
            "failure_budget",
            "on_failure",
            "max_parallel",
            "prefetch",
        ],
    );
    let canary = fields.get("canary").and_then(|n| {
        let cpath = format!("{path}.canary");
        let c = d.map(n, &cpath)?;
        d.deny_unknown(&c, &cpath, &["sites", "selector", "soak"]);
        let sites = c
            .get("sites")
            .and_then(|s| share(d, s, &format!("{cpath}.sites")))
            .unwrap_or(Share::Count(1));
        let selector = c
            .get("selector")
            .and_then(|s| selector(d, s, &format!("{cpath}.selector")));
        let soak = c
            .get("soak")
            .and_then(|s| d.string(s, &format!("{cpath}.soak")).map(|t| (s, t)))
            .and_then(|(s, t)| {
                Span::parse(&t)
                    .map_err(|e| d.error(s.pos, &format!("{cpath}.soak"), e))
                    .ok()
            })
            .unwrap_or(Span::from_secs(0));
        Some(Canary {
            sites,
            selector,
            soak,
        })
    });
    let mut waves = Vec::new();
    if let Some(n) = fields.get("waves") {
        let wpath = format!("{path}.waves");
        for (i, item) in d.seq(n, &wpath).unwrap_or_default().iter().enumerate() {
            if let Some(s) = share(d, item, &format!("{wpath}[{i}]")) {
                waves.push(s);
            }
        }
        let percents: Vec<u32> = waves
            .iter()
            .filter_map(|w| {
                if let Share::Percent(p) = w {
                    Some(*p)
                } else {
                    None
                }
            })
            .collect();
        if percents.windows(2).any(|w| w[1] < w[0]) {
            d.error_hint(
                n.pos,
                &wpath,
                "wave shares must not shrink",
                "each wave's share is the total updated so far, such as [10%, 50%, 100%]",
            );
        }
    }
    let failure_budget = fields
        .get("failure_budget")
        .and_then(|n| share(d, n, &format!("{path}.failure_budget")));
    let on_failure = match fields.get("on_failure") {
        None => OnFailure::Rollback,
        Some(n) => match d.string(n, &format!("{path}.on_failure")).as_deref() {
            Some("rollback") | None => OnFailure::Rollback,
            Some("pause") => OnFailure::Pause,
            Some(other) => {
                d.error_hint(
                    n.pos,
                    &format!("{path}.on_failure"),
                    format!("unknown value `{other}`"),
                    "expected rollback or pause",
                );
                OnFailure::Rollback
            }
        },
    };
    let max_parallel = fields
        .get("max_parallel")
        .and_then(|n| d.u32(n, &format!("{path}.max_parallel")));
    if max_parallel == Some(0) {
        d.error(
            fields.pos,
            &format!("{path}.max_parallel"),
            "max_parallel must be at least 1",
        );
    }
    let prefetch = fields
        .get("prefetch")
        .and_then(|n| d.bool(n, &format!("{path}.prefetch")))
        .unwrap_or(false);
    Some(Rollout {
        canary,
        waves,
        failure_budget,
        on_failure,
        max_parallel,
        prefetch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_without_host_placement_reads_and_writes_as_before() {
        let stored = r#"{"name":"d","application":"a","placement":{"sites":"region == eu"}}"#;
        let d: Deployment = serde_json::from_str(stored).unwrap();
        assert_eq!(d.placement.hosts, None);
        assert!(d.placement.device_classes().is_empty());
        assert_eq!(serde_json::to_string(&d).unwrap(), stored);
        let with = r#"{"name":"d","application":"a","placement":{"sites":"region == eu","hosts":"memory >= 8Gi && (device.camera >= 1 || device.usb-cam > 0)"}}"#;
        let d: Deployment = serde_json::from_str(with).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), with);
        assert_eq!(
            d.placement.device_classes().into_iter().collect::<Vec<_>>(),
            ["camera", "usb-cam"]
        );
    }

    #[test]
    fn shares() {
        assert_eq!(Share::parse("10%"), Ok(Share::Percent(10)));
        assert_eq!(Share::parse("3"), Ok(Share::Count(3)));
        assert!(Share::parse("110%").is_err());
        assert!(Share::parse("ten").is_err());
        assert_eq!(Share::Percent(1).of(7), 1);
        assert_eq!(Share::Percent(50).of(7), 4);
        assert_eq!(Share::Percent(100).of(7), 7);
        assert_eq!(Share::Count(10).of(7), 7);
    }
}

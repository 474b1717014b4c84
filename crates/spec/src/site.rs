//! `Site`: one location (a store, a ship, a factory cell) with its labels, its variables and,
//! for a site of several hosts, the settings of its cluster. The settings are the site's, set
//! centrally, since nobody is on site to set a flag on each host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::application::labels;
use crate::decode::{Decoder, Fields};
use crate::units::Span;
use crate::yaml::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Values that templates read as `site.variables.NAME`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// How the site's hosts work as one cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<SiteCluster>,
}

/// `cluster:` of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteCluster {
    /// How long the site's leader waits on a silent host before it takes it for down and runs
    /// its replicas on the other hosts (the agents' own default, 10 s, when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_timeout: Option<Span>,
}

/// The shortest and longest `cluster.failure_timeout`: below a second, hosts that are up would
/// be taken for down; past ten minutes, a dead host's replicas would wait longer than anyone.
pub const FAILURE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

const SITE_FIELDS: &[&str] = &[
    "kind",
    "name",
    "description",
    "labels",
    "variables",
    "cluster",
];
const CLUSTER_FIELDS: &[&str] = &["failure_timeout"];

pub(crate) fn decode(d: &mut Decoder<'_>, fields: &Fields<'_>, name: String, path: &str) -> Site {
    d.deny_unknown(fields, path, SITE_FIELDS);
    let description = fields
        .get("description")
        .and_then(|n| d.string(n, &format!("{path}.description")));
    let labels = fields
        .get("labels")
        .map(|n| labels(d, n, &format!("{path}.labels")))
        .unwrap_or_default();
    let variables = fields
        .get("variables")
        .and_then(|n| d.string_map(n, &format!("{path}.variables")))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect();
    let cluster = fields
        .get("cluster")
        .and_then(|n| cluster(d, n, &format!("{path}.cluster")));
    Site {
        name,
        description,
        labels,
        variables,
        cluster,
    }
}

fn cluster(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<SiteCluster> {
    let fields = d.map(node, path)?;
    d.deny_unknown(&fields, path, CLUSTER_FIELDS);
    let failure_timeout = fields.get("failure_timeout").and_then(|n| {
        let at = format!("{path}.failure_timeout");
        let text = d.string(n, &at)?;
        let span = Span::parse(&text)
            .map_err(|e| d.error(n.pos, &at, e))
            .ok()?;
        let (least, most) = FAILURE_TIMEOUT_RANGE;
        if span.0 < least || span.0 > most {
            d.error(
                n.pos,
                &at,
                format!(
                    "{text} is out of range: between {}s and {}s",
                    least.as_secs(),
                    most.as_secs()
                ),
            );
            return None;
        }
        Some(span)
    });
    Some(SiteCluster { failure_timeout })
}

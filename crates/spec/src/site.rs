//! `Site`: one location (a store, a ship, a factory cell) with its labels and variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::application::labels;
use crate::decode::{Decoder, Fields};

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
}

const SITE_FIELDS: &[&str] = &["kind", "name", "description", "labels", "variables"];

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
    Site {
        name,
        description,
        labels,
        variables,
    }
}

//! Changing the labels of a host or a site: `PATCH /v1/hosts/{name}/labels` and
//! `PATCH /v1/sites/{name}/labels`, what `atoll label` sends.
//!
//! A change says what to set and what to remove rather than carrying the whole new map, as
//! `kubectl label` does, so two operators labelling one host with different keys do not undo
//! each other. The answer is the labels that result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Keys to add or change, and keys to remove. A key may not be in both; removing a key that is
/// not there is no error (the answer lists it in [`Labels::not_found`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelChange {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The labels of a host or a site after a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    pub labels: BTreeMap<String, String>,
    /// Keys the change asked to remove that were not there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

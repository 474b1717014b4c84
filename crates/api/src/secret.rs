//! Secrets on the wire. Values go in (base64, write-only) and never come out: every view
//! carries keys, versions and sites, no value.

use serde::{Deserialize, Serialize};

/// `PUT /v1/secrets/{name}/keys/{key}`: one of `value` (for every site, or for `site` only)
/// or `generate` (a random value per site, made once for each site).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecretRequest {
    /// The value, base64 (standard, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Set `value` for this site only; its other sites keep the shared value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
}

/// Never print a value by accident.
impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecretRequest")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("site", &self.site)
            .field("generate", &self.generate)
            .finish()
    }
}

/// A value made at random for each site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    #[serde(deserialize_with = "crate::whole::u32")]
    pub length: u32,
    #[serde(default)]
    pub alphabet: Alphabet,
}

impl Generate {
    pub const MAX_LENGTH: u32 = 4096;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    /// `A-Z a-z 0-9`.
    #[default]
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _`.
    Base64url,
    /// Printable ASCII without space: `!` to `~`.
    Printable,
}

impl Alphabet {
    pub fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Alphanumeric => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            }
            Alphabet::Hex => b"0123456789abcdef",
            Alphabet::Base64url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
            Alphabet::Printable => {
                b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
            }
        }
    }

    pub fn parse(text: &str) -> Result<Alphabet, String> {
        match text {
            "alphanumeric" => Ok(Alphabet::Alphanumeric),
            "hex" => Ok(Alphabet::Hex),
            "base64url" => Ok(Alphabet::Base64url),
            "printable" => Ok(Alphabet::Printable),
            other => Err(format!(
                "unknown alphabet `{other}`: alphanumeric, hex, base64url or printable"
            )),
        }
    }
}

/// A secret as users see it: its keys and versions, and which version each site holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    /// Grows by one with every change to any of its keys.
    pub version: u64,
    pub updated_at: String,
    pub keys: Vec<SecretKeyView>,
    /// The sites whose applications use this secret.
    #[serde(default)]
    pub sites: Vec<SecretSiteView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyView {
    pub key: String,
    /// `shared` (one value for every site), `generated` (one random value per site), or
    /// `per-site` (values only for the sites in `sites`).
    pub source: String,
    /// The secret's version when this key last changed.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
    /// Sites with a value of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSiteView {
    pub site: String,
    /// The version the site's manifest asks for.
    pub version: u64,
    /// The version each of the site's hosts reported delivering, by host.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, u64>,
}

/// `DELETE /v1/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleted {
    pub name: String,
}

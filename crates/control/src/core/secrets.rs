//! Secrets, without any IO: what each site gets and at which version, how a change makes the
//! next version, and how a generated value is made for a site.
//!
//! A secret is a named set of keys. Each key has a value for every site (`shared`), a random
//! value made for each site (`generated`), and values of some sites' own (`sites`), which win
//! over the other two. The bookkeeping ([`SecretMeta`]) holds no value and is what the
//! compiler reads; the values ([`SecretValues`]) exist in the clear only in memory, on their
//! way into encryption or into a seal for one site.
//!
//! A generated value is derived from a random seed kept with the values and the site's name
//! (HMAC-SHA256), so it is made once per site and stays the same across restarts, rollouts and
//! other keys' changes, and differs between sites; generating the key again draws a new seed.

use std::collections::{BTreeMap, BTreeSet};

use atoll_api::secret::{Generate, SecretKeyView};
use atoll_api::{ManifestContent, ManifestSecret};
use atoll_spec::application::SecretRef;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// A secret's keys and versions: never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    /// Grows by one with every change.
    pub version: u64,
    pub keys: BTreeMap<String, KeyMeta>,
}

/// Where one key's values come from, and the version each last changed at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generated>,
    /// Sites with a value of their own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    pub generate: Generate,
    pub version: u64,
}

impl KeyMeta {
    /// The version of the value `site` gets, if it gets one.
    pub fn version_at(&self, site: &str) -> Option<u64> {
        self.sites
            .get(site)
            .copied()
            .or(self.shared)
            .or(self.generated.map(|g| g.version))
    }

    fn is_empty(&self) -> bool {
        self.shared.is_none() && self.generated.is_none() && self.sites.is_empty()
    }
}

impl SecretMeta {
    /// The keys `site` has a value for.
    pub fn keys_at(&self, site: &str) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| k.version_at(site).is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn key_views(&self) -> Vec<SecretKeyView> {
        self.keys
            .iter()
            .map(|(key, k)| {
                let (source, base) = match (k.shared, k.generated) {
                    (Some(v), _) => ("shared", Some(v)),
                    (None, Some(g)) => ("generated", Some(g.version)),
                    (None, None) => ("per-site", None),
                };
                let version = k.sites.values().copied().chain(base).max().unwrap_or(0);
                SecretKeyView {
                    key: key.clone(),
                    source: source.to_owned(),
                    version,
                    generate: k.generated.map(|g| g.generate),
                    sites: k.sites.keys().cloned().collect(),
                }
            })
            .collect()
    }
}

/// A secret's values. In the clear only in memory; its `Debug` shows no value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValues {
    pub keys: BTreeMap<String, KeyValues>,
}

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValues {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub shared: Option<Vec<u8>>,
    /// The seed generated values are derived from.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub seed: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "b64_map")]
    pub sites: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for KeyValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValues")
            .field("sites", &self.sites.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValues")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One change to one key of a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    /// The value for every site without one of its own.
    Shared(Vec<u8>),
    /// A site's own value.
    Site { site: String, value: Vec<u8> },
    /// A random value per site, derived from `seed` (the shell draws it).
    Generate { generate: Generate, seed: Vec<u8> },
    /// Forget a site's own value: it gets the shared or generated one again.
    UnsetSite(String),
    /// Forget the key.
    Remove,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Shared(_) => f.write_str("Shared(<redacted>)"),
            Change::Site { site, .. } => write!(f, "Site({site}, <redacted>)"),
            Change::Generate { generate, .. } => write!(f, "Generate({generate:?})"),
            Change::UnsetSite(site) => write!(f, "UnsetSite({site})"),
            Change::Remove => f.write_str("Remove"),
        }
    }
}

/// Applies `change` to `key`: the next version's bookkeeping and values, or why not (what it
/// removes is not there). A shared value and a generated one exclude each other.
pub fn change(
    meta: &SecretMeta,
    values: &SecretValues,
    key: &str,
    change: Change,
) -> Result<(SecretMeta, SecretValues), String> {
    let mut meta = meta.clone();
    let mut values = values.clone();
    let version = meta.version + 1;
    let km = meta.keys.entry(key.to_owned()).or_default();
    let kv = values.keys.entry(key.to_owned()).or_default();
    match change {
        Change::Shared(value) => {
            km.shared = Some(version);
            km.generated = None;
            kv.shared = Some(value);
            kv.seed = None;
        }
        Change::Site { site, value } => {
            km.sites.insert(site.clone(), version);
            kv.sites.insert(site, value);
        }
        Change::Generate { generate, seed } => {
            km.generated = Some(Generated { generate, version });
            km.shared = None;
            kv.seed = Some(seed);
            kv.shared = None;
        }
        Change::UnsetSite(site) => {
            if km.sites.remove(&site).is_none() {
                return Err(format!("key {key} has no value of its own for site {site}"));
            }
            kv.sites.remove(&site);
        }
        Change::Remove => {
            if km.is_empty() {
                return Err(format!("there is no key {key}"));
            }
            meta.keys.remove(key);
            values.keys.remove(key);
        }
    }
    meta.keys.retain(|_, k| !k.is_empty());
    values.keys.retain(|k, _| meta.keys.contains_key(k));
    meta.version = version;
    Ok((meta, values))
}

/// The values of `keys` for `site`.
pub fn values_at(
    meta: &SecretMeta,
    values: &SecretValues,
    site: &str,
    keys: &[String],
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in keys {
        let (Some(km), Some(kv)) = (meta.keys.get(key), values.keys.get(key)) else {
            continue;
        };
        let value = kv
            .sites
            .get(site)
            .cloned()
            .or_else(|| kv.shared.clone())
            .or_else(|| {
                let g = km.generated?;
                Some(generate(kv.seed.as_deref()?, site, g.generate))
            });
        if let Some(v) = value {
            out.insert(key.clone(), v);
        }
    }
    out
}

/// A value drawn uniformly from the alphabet, from HMAC-SHA256(seed, site ‖ counter) blocks
/// (bytes past the largest multiple of the alphabet's size are skipped, so no character is
/// likelier than another).
pub fn generate(seed: &[u8], site: &str, g: Generate) -> Vec<u8> {
    let alphabet = g.alphabet.chars();
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let key = hmac::Key::new(hmac::HMAC_SHA256, seed);
    let mut out = Vec::with_capacity(g.length as usize);
    let mut counter: u64 = 0;
    while out.len() < g.length as usize {
        let mut msg = site.as_bytes().to_vec();
        msg.push(0);
        msg.extend(counter.to_be_bytes());
        counter += 1;
        for &b in hmac::sign(&key, &msg).as_ref() {
            if usize::from(b) < limit && out.len() < g.length as usize {
                out.push(alphabet[usize::from(b) % n]);
            }
        }
    }
    out
}

/// The secrets a manifest references, with the keys it needs of each.
pub fn wanted(content: &ManifestContent) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in content
        .applications
        .iter()
        .flat_map(|a| &a.services)
        .flat_map(|s| &s.secrets)
    {
        out.entry(s.name.clone())
            .or_default()
            .extend(s.keys.iter().cloned());
    }
    out
}

/// One secret's values for one site: what is sealed to the site's hosts.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    pub name: String,
    pub version: u64,
    pub values: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The values `site` receives for its manifest `content`: only the secrets the content
/// references, and of those only the keys it reads. `secrets` may hold more (it is never
/// filtered by the caller).
pub fn payloads(
    content: &ManifestContent,
    site: &str,
    secrets: &BTreeMap<String, (SecretMeta, SecretValues)>,
) -> Vec<Payload> {
    wanted(content)
        .into_iter()
        .filter_map(|(name, keys)| {
            let (meta, values) = secrets.get(&name)?;
            let keys: Vec<String> = keys.into_iter().collect();
            let version = keys
                .iter()
                .filter_map(|k| meta.keys.get(k)?.version_at(site))
                .max()?;
            Some(Payload {
                values: values_at(meta, values, site, &keys),
                name,
                version,
            })
        })
        .collect()
}

/// Why a secret reference cannot be resolved for a site.
pub fn resolve(
    secrets: &BTreeMap<String, SecretMeta>,
    reference: &SecretRef,
    site: &str,
) -> Result<ManifestSecret, String> {
    let Some(meta) = secrets.get(&reference.name) else {
        return Err(format!(
            "secret `{}` does not exist; create it with `atoll secret set {} KEY --from-file FILE`",
            reference.name, reference.name
        ));
    };
    let (keys, version) = match &reference.key {
        Some(key) => {
            let version = meta
                .keys
                .get(key)
                .and_then(|k| k.version_at(site))
                .ok_or_else(|| {
                    format!(
                        "secret `{}` has no value of key `{key}` for this site; set one for every site or with `--site`",
                        reference.name
                    )
                })?;
            (vec![key.clone()], version)
        }
        None => {
            let keys = meta.keys_at(site);
            let version = keys
                .iter()
                .filter_map(|k| meta.keys.get(k).and_then(|m| m.version_at(site)))
                .max()
                .ok_or_else(|| format!("secret `{}` has no value for this site", reference.name))?;
            (keys, version)
        }
    };
    Ok(ManifestSecret {
        name: reference.name.clone(),
        key: reference.key.clone(),
        keys,
        path: reference.file_path(),
        env: reference.env.clone(),
        version,
    })
}

mod b64_opt {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod b64_map {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, b)| (k, STANDARD.encode(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, t)| {
                STANDARD
                    .decode(t)
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::secret::Alphabet;
    use proptest::prelude::*;

    fn set(
        meta: &SecretMeta,
        values: &SecretValues,
        key: &str,
        c: Change,
    ) -> (SecretMeta, SecretValues) {
        change(meta, values, key, c).unwrap()
    }

    fn reference(name: &str, key: Option<&str>) -> SecretRef {
        SecretRef {
            name: name.into(),
            key: key.map(Into::into),
            path: None,
            env: None,
        }
    }

    #[test]
    fn a_site_value_wins_over_the_shared_one_and_versions_follow_the_changes() {
        let (m, v) = set(
            &SecretMeta::default(),
            &SecretValues::default(),
            "pw",
            Change::Shared(b"all".to_vec()),
        );
        let (m, v) = set(
            &m,
            &v,
            "pw",
            Change::Site {
                site: "s1".into(),
                value: b"mine".to_vec(),
            },
        );
        let (m, v) = set(&m, &v, "user", Change::Shared(b"admin".to_vec()));
        assert_eq!(m.version, 3);
        let keys = vec!["pw".to_owned(), "user".to_owned()];
        assert_eq!(values_at(&m, &v, "s1", &keys)["pw"], b"mine");
        assert_eq!(values_at(&m, &v, "s2", &keys)["pw"], b"all");
        let secrets = BTreeMap::from([("db".to_owned(), m.clone())]);
        let at = |site: &str, key: Option<&str>| {
            resolve(&secrets, &reference("db", key), site)
                .unwrap()
                .version
        };
        assert_eq!(at("s1", Some("pw")), 2);
        assert_eq!(at("s2", Some("pw")), 1);
        assert_eq!(at("s2", None), 3);
        // Forgetting the site's value gives it the shared one again, at a new version.
        let (m, v) = set(&m, &v, "pw", Change::UnsetSite("s1".into()));
        assert_eq!(values_at(&m, &v, "s1", &keys)["pw"], b"all");
        assert_eq!(m.keys["pw"].version_at("s1"), Some(1));
        assert!(change(&m, &v, "pw", Change::UnsetSite("s1".into())).is_err());
        let (m, _) = set(&m, &v, "user", Change::Remove);
        assert_eq!(m.keys_at("s1"), vec!["pw".to_owned()]);
    }

    #[test]
    fn missing_secrets_and_keys_are_named() {
        let (m, _) = set(
            &SecretMeta::default(),
            &SecretValues::default(),
            "pw",
            Change::Site {
                site: "s1".into(),
                value: b"x".to_vec(),
            },
        );
        let secrets = BTreeMap::from([("db".to_owned(), m)]);
        let e = resolve(&secrets, &reference("nope", None), "s1").unwrap_err();
        assert!(e.contains("secret `nope` does not exist"), "{e}");
        let e = resolve(&secrets, &reference("db", Some("pw")), "s2").unwrap_err();
        assert!(e.contains("no value of key `pw`"), "{e}");
        let e = resolve(&secrets, &reference("db", None), "s2").unwrap_err();
        assert!(e.contains("has no value for this site"), "{e}");
        let ok = resolve(&secrets, &reference("db", None), "s1").unwrap();
        assert_eq!(
            (ok.keys, ok.path.as_deref()),
            (vec!["pw".to_owned()], Some("/run/secrets/db"))
        );
    }

    #[test]
    fn generated_values_are_per_site_stable_and_redrawn_on_demand() {
        let g = Generate {
            length: 24,
            alphabet: Alphabet::Alphanumeric,
        };
        let (m, v) = set(
            &SecretMeta::default(),
            &SecretValues::default(),
            "token",
            Change::Generate {
                generate: g,
                seed: vec![1; 32],
            },
        );
        let keys = vec!["token".to_owned()];
        let a = values_at(&m, &v, "s1", &keys)["token"].clone();
        let b = values_at(&m, &v, "s2", &keys)["token"].clone();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        // Another key's change leaves it alone.
        let (m, v) = set(&m, &v, "other", Change::Shared(b"x".to_vec()));
        assert_eq!(values_at(&m, &v, "s1", &keys)["token"], a);
        assert_eq!(m.keys["token"].version_at("s1"), Some(1));
        let (m, v) = set(
            &m,
            &v,
            "token",
            Change::Generate {
                generate: g,
                seed: vec![2; 32],
            },
        );
        assert_ne!(values_at(&m, &v, "s1", &keys)["token"], a);
        assert_eq!(m.keys["token"].version_at("s1"), Some(3));
    }

    #[test]
    fn the_debug_form_shows_no_value() {
        let (_, v) = set(
            &SecretMeta::default(),
            &SecretValues::default(),
            "pw",
            Change::Shared(b"hunter2".to_vec()),
        );
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!format!("{:?}", Change::Shared(b"hunter2".to_vec())).contains("hunter2"));
        let json = serde_json::to_string(&v).unwrap();
        let back: SecretValues = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    proptest! {
        #[test]
        fn generated_values_use_only_their_alphabet_and_their_length(
            length in 0u32..300,
            alphabet in prop_oneof![Just(Alphabet::Alphanumeric), Just(Alphabet::Hex), Just(Alphabet::Base64url), Just(Alphabet::Printable)],
            seed in proptest::collection::vec(any::<u8>(), 32),
            site in "[a-z][a-z0-9-]{0,20}",
        ) {
            let g = Generate { length, alphabet };
            let value = generate(&seed, &site, g);
            prop_assert_eq!(value.len(), length as usize);
            prop_assert!(value.iter().all(|b| alphabet.chars().contains(b)));
            prop_assert_eq!(generate(&seed, &site, g), value);
        }
    }
}

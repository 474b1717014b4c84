//! Secret operations: set, generate, unset and delete (each a versioned commit with the
//! manifests it changes), the views (no value, ever), and sealing a site's values for its
//! hosts when its agent fetches the manifest.

use std::collections::BTreeMap;

use atoll_api::secret::{Generate, SecretView, SetSecretRequest};
use atoll_api::{Manifest, SealedSecret};
use atoll_spec::Diagnostic;
use atoll_spec::names::{check_name, check_secret_key};
use atoll_store::StoreError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::service::{ControlPlane, Error};
use crate::core::apply::plan_secret;
use crate::core::secrets::{self, Change, SecretMeta, SecretValues};
use crate::core::views::{self, Observed};

/// The largest value one key may hold.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

fn invalid(path: String, message: impl Into<String>, hint: Option<&str>) -> Error {
    Error::Invalid(vec![Diagnostic {
        file: String::new(),
        line: 0,
        column: 0,
        path,
        message: message.into(),
        hint: hint.map(str::to_owned),
    }])
}

/// Turns a request into a change, or says what is wrong with it. Never echoes a value.
pub fn request_change(name: &str, key: &str, req: SetSecretRequest) -> Result<Change, Error> {
    let path = format!("Secret {name}: key {key}");
    check_name(name).map_err(|e| invalid(format!("Secret {name}"), e, None))?;
    check_secret_key(key).map_err(|e| invalid(path.clone(), e, None))?;
    match (req.value, req.generate, req.site) {
        (Some(value), None, site) => {
            let value = B64.decode(value.as_bytes()).map_err(|_| {
                invalid(
                    path.clone(),
                    "`value` is not base64",
                    Some(
                        "the CLI encodes it for you: `atoll secret set NAME KEY --from-file FILE`",
                    ),
                )
            })?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(invalid(
                    path,
                    format!(
                        "the value is {} bytes; at most {MAX_VALUE_BYTES}",
                        value.len()
                    ),
                    None,
                ));
            }
            Ok(match site {
                Some(site) => Change::Site { site, value },
                None => Change::Shared(value),
            })
        }
        (None, Some(generate), None) => {
            if generate.length == 0 || generate.length > Generate::MAX_LENGTH {
                return Err(invalid(
                    path,
                    format!("length {} is out of range", generate.length),
                    Some("generate between 1 and 4096 characters"),
                ));
            }
            Ok(Change::Generate {
                generate,
                seed: atoll_seal::random_key().to_vec(),
            })
        }
        (None, Some(_), Some(_)) => Err(invalid(
            path,
            "a generated key is made for every site; `site` does not apply",
            Some("to give one site a value of its own, set `value` with `site`"),
        )),
        (Some(_), Some(_), _) | (None, None, _) => {
            Err(invalid(path, "give either `value` or `generate`", None))
        }
    }
}

impl ControlPlane {
    /// Applies one change to a secret (creating it) and commits its next version with the
    /// manifests of the sites that use it. A site's own value may be set before the site is
    /// applied, so that a site whose deployments need it can be applied at all.
    pub async fn change_secret(
        &self,
        name: &str,
        key: &str,
        change: Change,
        actor: &str,
    ) -> Result<SecretView, Error> {
        let _guard = self.writes.lock().await;
        // Read under the lock: no other change to this secret can come in between.
        let (meta, values) = match self.store.secret(name).await? {
            Some(row) => self.vault.open(&row)?,
            None if matches!(change, Change::UnsetSite(_) | Change::Remove) => {
                return Err(Error::NotFound(format!("secret {name} does not exist")));
            }
            None => (SecretMeta::default(), SecretValues::default()),
        };
        // The only refusal is a removal of what is not there.
        let (meta, values) = secrets::change(&meta, &values, key, change)
            .map_err(|e| Error::NotFound(format!("secret {name}: {e}")))?;
        self.commit_planned("change", actor, |state, versions, req| {
            let row = self.vault.seal(name, &meta, &values, req.now);
            let plan = plan_secret(state, versions, name, Some((meta.clone(), row)), req)?;
            Ok((plan, ()))
        })
        .await?;
        self.secret_view(name).await
    }

    /// Deletes a secret that no deployment uses any more.
    pub async fn delete_secret(&self, name: &str, actor: &str) -> Result<(), Error> {
        let _guard = self.writes.lock().await;
        self.commit_planned("delete", actor, |state, versions, req| {
            Ok((plan_secret(state, versions, name, None, req)?, ()))
        })
        .await
    }

    pub async fn secret_view(&self, name: &str) -> Result<SecretView, Error> {
        self.secret_views(Some(name))
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("secret {name} does not exist")))
    }

    /// Secrets with their keys, versions and, per site that uses them, the version its
    /// manifest asks for and the version each host reported delivering. No value.
    pub async fn secret_views(&self, only: Option<&str>) -> Result<Vec<SecretView>, Error> {
        let (state, versions) = self.load(&[]).await?;
        let rows = self.store.secrets().await?;
        let hosts = self.store.hosts().await?;
        let statuses = super::reports::statuses(self.store.as_ref()).await?;
        let observed = Observed::new(&hosts, &statuses);
        let out: Vec<SecretView> = rows
            .iter()
            .filter(|r| only.is_none_or(|o| o == r.name))
            .map(|row| views::secrets::secret(row, &state, &versions, &observed))
            .collect();
        if let Some(name) = only
            && out.is_empty()
        {
            return Err(Error::NotFound(format!("secret {name} does not exist")));
        }
        Ok(out)
    }

    /// The values of the secrets `manifest` references, each sealed to `recipients` (the
    /// site's hosts' keys) and bound to the site, the secret and its version.
    pub async fn seal_for(
        &self,
        manifest: &Manifest,
        recipients: &[String],
    ) -> Result<Vec<SealedSecret>, Error> {
        let mut opened = BTreeMap::new();
        for name in secrets::wanted(&manifest.content).into_keys() {
            if let Some(row) = self.store.secret(&name).await? {
                opened.insert(name, self.vault.open(&row)?);
            }
        }
        secrets::payloads(&manifest.content, &manifest.site, &opened)
            .into_iter()
            .map(|p| {
                let plain: BTreeMap<String, String> = p
                    .values
                    .into_iter()
                    .map(|(k, v)| (k, B64.encode(v)))
                    .collect();
                // Plain data: serializing cannot fail.
                let payload = serde_json::to_vec(&plain).unwrap_or_default();
                let sealed = atoll_seal::seal(
                    recipients,
                    &payload,
                    &atoll_seal::secret_aad(&manifest.site, &p.name, p.version),
                )
                .map_err(|e| {
                    StoreError::Corrupt(format!("a host key of site {}: {e}", manifest.site))
                })?;
                Ok(SealedSecret {
                    name: p.name,
                    version: p.version,
                    sealed,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::secret::Alphabet;

    fn req(
        value: Option<&str>,
        site: Option<&str>,
        generate: Option<Generate>,
    ) -> SetSecretRequest {
        SetSecretRequest {
            value: value.map(Into::into),
            site: site.map(Into::into),
            generate,
        }
    }

    #[test]
    fn requests_become_changes_or_clear_errors_without_the_value() {
        let v = B64.encode(b"hunter2");
        assert_eq!(
            request_change("db", "pw", req(Some(&v), None, None)).unwrap(),
            Change::Shared(b"hunter2".to_vec())
        );
        assert!(matches!(
            request_change("db", "pw", req(Some(&v), Some("s1"), None)).unwrap(),
            Change::Site { site, .. } if site == "s1"
        ));
        let g = Generate {
            length: 16,
            alphabet: Alphabet::Hex,
        };
        assert!(matches!(
            request_change("db", "pw", req(None, None, Some(g))).unwrap(),
            Change::Generate { seed, .. } if seed.len() == 32
        ));
        for bad in [
            req(None, None, None),
            req(Some(&v), None, Some(g)),
            req(None, Some("s1"), Some(g)),
            req(Some("not base64 hunter2!"), None, None),
            req(
                None,
                None,
                Some(Generate {
                    length: 0,
                    alphabet: Alphabet::Hex,
                }),
            ),
        ] {
            let Err(Error::Invalid(d)) = request_change("db", "pw", bad) else {
                panic!("accepted a bad request");
            };
            assert!(!format!("{d:?}").contains("hunter2"));
        }
        assert!(request_change("db", "../x", req(Some(&v), None, None)).is_err());
        assert!(request_change("DB", "pw", req(Some(&v), None, None)).is_err());
    }
}

//! Secrets at the edge, without IO: where each replica's secrets go and what they hold.
//!
//! A secret delivered as a file lives under the secrets folder (on tmpfs: never on disk) at
//! `{secrets dir}/{container name}/{n}` (with a key: one file; without: a folder with one file
//! per key), bind-mounted read-only at the path the application asked for. The host path does
//! not change with the secret's version, so a service that takes a signal on change reads the
//! new value from the same mount. A secret delivered as an environment variable goes into the
//! container's environment, which only the application's explicit `env` asks for.
//!
//! The spec hash (see `desired`) covers which secrets a service reads and where, and their
//! versions when a new one needs a new container (`on_secret_change: restart`, the default, or
//! any secret in the environment). It never covers a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atoll_api::manifest::Manifest;
use atoll_runtime::Bind;
use atoll_spec::application::OnSecretChange;

use super::desired::{Replica, container_name};

/// One secret's values as opened on this host.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub version: u64,
    pub values: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("version", &self.version)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Every secret this host could open, by name.
pub type OpenedSecrets = BTreeMap<String, Opened>;

/// A secret value to put on the host (mode 0400) for a bind mount to show.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub host_path: PathBuf,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("host_path", &self.host_path)
            .field("bytes", &self.content.len())
            .finish()
    }
}

/// Where a replica's secrets live on the host: one folder per container.
pub fn replica_dir(secrets_dir: &Path, site: &str, replica: &Replica) -> PathBuf {
    secrets_dir.join(container_name(site, &replica.key))
}

/// Gives each replica its secrets: files to write and mount, environment values, the signal
/// its service wants on a change, and the names of secrets this host does not have (a replica
/// missing one must not be created: it would start without it).
pub fn attach(
    site: &str,
    manifest: &Manifest,
    secrets_dir: &Path,
    opened: &OpenedSecrets,
    replicas: &mut [Replica],
) {
    for replica in replicas.iter_mut() {
        let Some(service) = manifest.service(&replica.key.deployment, &replica.key.service) else {
            continue;
        };
        if let OnSecretChange::Signal(sig) = &service.on_secret_change {
            replica.on_secret_change = Some(sig.clone());
        }
        let dir = replica_dir(secrets_dir, site, replica);
        for (n, secret) in service.secrets.iter().enumerate() {
            let Some(found) = opened.get(&secret.name) else {
                replica.missing_secrets.push(secret.name.clone());
                continue;
            };
            let keys: Vec<&String> = match &secret.key {
                Some(k) => vec![k],
                None => secret.keys.iter().collect(),
            };
            if keys.iter().any(|k| !found.values.contains_key(*k)) {
                replica.missing_secrets.push(secret.name.clone());
                continue;
            }
            replica
                .secret_versions
                .insert(secret.name.clone(), found.version);
            if let Some(target) = &secret.path {
                let source = dir.join(n.to_string());
                match &secret.key {
                    Some(k) => replica.secret_files.push(SecretFile {
                        host_path: source.clone(),
                        content: found.values[k].clone(),
                    }),
                    None => replica.secret_files.extend(keys.iter().map(|k| SecretFile {
                        host_path: source.join(k.as_str()),
                        content: found.values[k.as_str()].clone(),
                    })),
                }
                replica.spec.binds.push(Bind {
                    source,
                    target: target.clone(),
                    read_only: true,
                });
            }
            if let (Some(var), Some(k)) = (&secret.env, &secret.key) {
                replica.spec.env.insert(
                    var.clone(),
                    String::from_utf8_lossy(&found.values[k]).into_owned(),
                );
            }
        }
        replica.missing_secrets.sort();
        replica.missing_secrets.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::desired;
    use crate::core::fixtures::{manifest, service};
    use atoll_api::ManifestSecret;

    fn secret(
        name: &str,
        key: Option<&str>,
        path: Option<&str>,
        env: Option<&str>,
        version: u64,
    ) -> ManifestSecret {
        ManifestSecret {
            name: name.into(),
            key: key.map(Into::into),
            keys: vec!["password".into(), "user".into()],
            path: path.map(Into::into),
            env: env.map(Into::into),
            version,
        }
    }

    fn opened(version: u64) -> OpenedSecrets {
        BTreeMap::from([(
            "db".to_owned(),
            Opened {
                version,
                values: BTreeMap::from([
                    ("password".to_owned(), b"hunter2".to_vec()),
                    ("user".to_owned(), b"pos".to_vec()),
                ]),
            },
        )])
    }

    fn replicas(
        secrets: Vec<ManifestSecret>,
        change: OnSecretChange,
        with: &OpenedSecrets,
    ) -> Vec<Replica> {
        let mut svc = service("api", "img:1");
        svc.secrets = secrets;
        svc.on_secret_change = change;
        let m = manifest(vec![("shop", svc)]);
        let mut all = desired("s1", &m, Path::new("/data/files"));
        attach("s1", &m, Path::new("/run/atoll"), with, &mut all);
        all
    }

    #[test]
    fn files_folders_and_env_go_where_the_application_asked() {
        let r = replicas(
            vec![
                secret(
                    "db",
                    Some("password"),
                    Some("/run/secrets/db"),
                    Some("DB_PASSWORD"),
                    3,
                ),
                secret("db", None, Some("/etc/db"), None, 3),
            ],
            OnSecretChange::Restart,
            &opened(3),
        )
        .remove(0);
        let dir = Path::new("/run/atoll/atoll_s1_shop_api_0");
        let files: Vec<(PathBuf, Vec<u8>)> = r
            .secret_files
            .iter()
            .map(|f| (f.host_path.clone(), f.content.clone()))
            .collect();
        assert_eq!(
            files,
            vec![
                (dir.join("0"), b"hunter2".to_vec()),
                (dir.join("1/password"), b"hunter2".to_vec()),
                (dir.join("1/user"), b"pos".to_vec()),
            ]
        );
        assert!(
            r.spec
                .binds
                .iter()
                .any(|b| b.source == dir.join("0") && b.target == "/run/secrets/db" && b.read_only)
        );
        assert!(
            r.spec
                .binds
                .iter()
                .any(|b| b.source == dir.join("1") && b.target == "/etc/db")
        );
        assert_eq!(r.spec.env["DB_PASSWORD"], "hunter2");
        assert!(r.missing_secrets.is_empty());
        assert_eq!(r.secret_versions["db"], 3);
        // No value in the debug form.
        assert!(!format!("{:?}", r.secret_files).contains("hunter2"));
    }

    #[test]
    fn a_secret_this_host_cannot_open_is_missing() {
        let r = replicas(
            vec![secret(
                "db",
                Some("password"),
                Some("/run/secrets/db"),
                None,
                3,
            )],
            OnSecretChange::Restart,
            &OpenedSecrets::new(),
        )
        .remove(0);
        assert_eq!(r.missing_secrets, vec!["db".to_owned()]);
        assert!(r.secret_files.is_empty());
    }

    #[test]
    fn a_new_version_replaces_a_restarting_service_but_only_signals_the_other_kind() {
        let hash = |change: OnSecretChange, version: u64| {
            replicas(
                vec![secret(
                    "db",
                    Some("password"),
                    Some("/run/secrets/db"),
                    None,
                    version,
                )],
                change,
                &opened(version),
            )
            .remove(0)
            .spec_hash
        };
        assert_ne!(
            hash(OnSecretChange::Restart, 1),
            hash(OnSecretChange::Restart, 2)
        );
        let hup = OnSecretChange::Signal("SIGHUP".into());
        assert_eq!(hash(hup.clone(), 1), hash(hup.clone(), 2));
        let r = replicas(
            vec![secret("db", Some("password"), Some("/p"), None, 1)],
            hup,
            &opened(1),
        )
        .remove(0);
        assert_eq!(r.on_secret_change.as_deref(), Some("SIGHUP"));
        // In the environment a new value needs a new container, signal or not.
        let env_hash = |version: u64| {
            replicas(
                vec![secret("db", Some("password"), None, Some("PW"), version)],
                OnSecretChange::Signal("SIGHUP".into()),
                &opened(version),
            )
            .remove(0)
            .spec_hash
        };
        assert_ne!(env_hash(1), env_hash(2));
    }
}

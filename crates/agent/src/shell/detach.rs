//! What a host does when the control plane says it was detached from its site (the site was
//! deleted, so the host's identity will never be accepted again): it removes every container
//! atoll runs for the site, the secret files, the kept manifest, the outbox and the identity,
//! and the agent stops with [`super::AgentError::Detached`], which systemd is told not to
//! restart. Left running, the containers would serve a site that no longer exists with
//! secrets nobody rotates; kept, the identity could only be refused.
//!
//! Removal carries on past a failure, so one stuck container does not keep the secrets on
//! disk; what could not be removed is returned, for the agent's last words.

use std::path::Path;
use std::time::Duration;

use atoll_runtime::Driver;

use super::files::remove_if_present;
use super::identity::Identity;
use super::manifest::Kept;
use crate::core::desired::LABEL_SITE;

/// How long a container is given to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Removes what atoll keeps on this host for `site`; what could not be removed, said.
pub async fn leave(driver: &dyn Driver, site: &str, dir: &Path, secrets_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match driver.list(LABEL_SITE, site).await {
        Ok(containers) => {
            for c in containers {
                let _ = driver.stop(&c.id, STOP_GRACE).await;
                match driver.remove(&c.id).await {
                    Ok(()) => tracing::info!(container = %c.name, "removed"),
                    Err(e) => problems.push(format!("container {}: {e}", c.name)),
                }
            }
        }
        Err(e) => problems.push(format!("listing the site's containers: {e}")),
    }
    let kept = Kept::new(dir);
    let removals = [
        (secrets_dir.to_owned(), remove_if_present(secrets_dir)),
        (dir.join("files"), remove_if_present(&dir.join("files"))),
        (dir.join("outbox"), remove_if_present(&dir.join("outbox"))),
        (dir.join("manifest.json"), kept.forget()),
        (dir.to_owned(), Identity::forget(dir)),
    ];
    for (path, result) in removals {
        if let Err(e) = result {
            problems.push(format!("{}: {e}", path.display()));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use atoll_runtime::{ContainerSpec, FakeDriver};

    use super::*;

    #[tokio::test]
    async fn leaving_removes_the_sites_containers_and_files_and_nothing_else() {
        let driver = FakeDriver::with_images(["busybox"]);
        for (name, site) in [("web", "shop"), ("other", "elsewhere")] {
            let spec = ContainerSpec {
                name: name.into(),
                image: "busybox".into(),
                command: Vec::new(),
                args: Vec::new(),
                env: BTreeMap::new(),
                labels: BTreeMap::from([(LABEL_SITE.to_owned(), site.to_owned())]),
                ports: Vec::new(),
                binds: Vec::new(),
                volumes: Vec::new(),
                memory_bytes: None,
                cpu_millis: None,
                devices: Vec::new(),
                gpus: Vec::new(),
            };
            let id = driver.create(&spec).await.unwrap();
            driver.start(&id).await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        for file in [
            "secrets/app/key",
            "files/app/conf",
            "outbox/1",
            "manifest.json",
            "identity.json",
            "host-key.pem",
            "keep-me",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }

        let problems = leave(&driver, "shop", dir.path(), &secrets).await;

        assert!(problems.is_empty(), "{problems:?}");
        assert!(driver.list(LABEL_SITE, "shop").await.unwrap().is_empty());
        assert_eq!(driver.list(LABEL_SITE, "elsewhere").await.unwrap().len(), 1);
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["keep-me"]);
    }
}

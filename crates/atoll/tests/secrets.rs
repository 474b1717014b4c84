//! Secrets end to end: the real binary as control plane and as two sites' agents, real TLS,
//! real containers reading their secrets from tmpfs mounts.
//!
//! The test owns its sites, folders, ports and secrets folder (under /dev/shm, removed at the
//! end), and removes the containers labelled with its sites however it ends.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Cleanup, ControlPlane, Process, connected, demo_image, docker, eventually_every,
    require_docker, tail, unique,
};

const IMAGE: &str = "atoll.local/demo:e2e";
const POLL: Duration = Duration::from_millis(50);

#[track_caller]
fn eventually<T>(what: &str, deadline: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    eventually_every(what, deadline, POLL, check)
}

/// A site with its own agent and tmpfs secrets folder.
struct Site {
    name: String,
    agent_dir: PathBuf,
    secrets_dir: PathBuf,
    agent: Option<Process>,
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            if std::thread::panicking() {
                eprintln!("--- agent {} stderr:\n{}", self.name, tail(&a.stderr(), 60));
            }
            a.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

fn start_agent(home: &Path, site: &mut Site, enroll: Option<(&str, &str)>) {
    let mut cmd = support::agent_command(home, &site.agent_dir, "debug", enroll);
    cmd.arg("--secrets-dir").arg(&site.secrets_dir);
    site.agent = Some(Process::spawn(cmd));
}

fn app_yaml(run: &str, release: &str) -> String {
    "kind: Application
name: vault-demo
version: \"@RELEASE@\"
services:
  - name: web
    image: @IMAGE@
    args: [demo, serve, --listen, \"0.0.0.0:8080\"]
    env: { RELEASE: \"@RELEASE@\" }
    secrets:
      - { name: app-db, key: password, path: /run/secrets/db }
  - name: worker
    image: @IMAGE@
    args: [demo, tick, --every, 1s]
    secrets:
      - { name: app-token, key: token, path: /run/secrets/token }
    on_secret_change: signal SIGHUP
---
kind: Deployment
name: vault-@RUN@
application: vault-demo
placement:
  sites: \"run == @RUN@\"
"
    .replace("@IMAGE@", IMAGE)
    .replace("@RUN@", run)
    .replace("@RELEASE@", release)
}

/// The container of `service` at `site`: its id, if running.
fn running(site: &str, run: &str, service: &str) -> Result<String, String> {
    let name = format!("atoll_{site}_vault-{run}_{service}_0");
    let out = docker(&["inspect", "--format", "{{.Id}} {{.State.Running}}", &name]);
    match out.stdout.trim().split_once(' ') {
        Some((id, "true")) => Ok(id.to_owned()),
        _ => Err(format!("{name}: {}{}", out.stdout, out.stderr)),
    }
}

/// What the container reads at `path`.
fn read_in(container: &str, path: &str) -> Result<String, String> {
    let out = docker(&[
        "exec",
        container,
        "/usr/local/bin/atoll",
        "demo",
        "cat",
        path,
    ]);
    if out.code == Some(0) {
        Ok(out.stdout)
    } else {
        Err(format!("cat {path}: {}{}", out.stdout, out.stderr))
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_reach_only_their_sites_files_rotate_and_leave_with_the_application() {
    require_docker();
    demo_image(IMAGE);
    let tmp = tempfile::tempdir().unwrap();
    let id = unique();
    let run = format!("sec-{id}");
    let (a, b) = (format!("sa-{id}"), format!("sb-{id}"));
    let bystander = format!("sc-{id}");
    let _cleanup = Cleanup::new([a.clone(), b.clone(), bystander.clone()]);
    let cp = ControlPlane::start(&tmp.path().join("data"));
    let sites_yaml = format!(
        "kind: Site\nname: {a}\nlabels: {{ run: {run} }}\n---\nkind: Site\nname: {b}\nlabels: {{ run: {run} }}\n---\nkind: Site\nname: {bystander}\nlabels: {{ run: other-{id} }}\n"
    );
    cp.apply_yaml(&tmp.path().join("sites.yaml"), &sites_yaml);

    // Values: one for every site, one of site b's own, and a token generated per site.
    let shared = format!("shared-pw-{id}-Zq8");
    let own_b = format!("b-own-pw-{id}-Xk2");
    let value_file = tmp.path().join("value");
    std::fs::write(&value_file, &shared).unwrap();
    let vf = value_file.to_str().unwrap();
    cp.cli(&["secret", "set", "app-db", "password", "--from-file", vf])
        .ok("secret set");
    std::fs::write(&value_file, &own_b).unwrap();
    cp.cli(&[
        "secret",
        "set",
        "app-db",
        "password",
        "--from-file",
        vf,
        "--site",
        &b,
    ])
    .ok("secret set --site");
    cp.cli(&["secret", "generate", "app-token", "token", "--length", "40"])
        .ok("secret generate");

    let mut sites: Vec<Site> = [&a, &b]
        .iter()
        .map(|name| Site {
            name: (*name).clone(),
            agent_dir: tmp.path().join(format!("agent-{name}")),
            secrets_dir: PathBuf::from(format!("/dev/shm/atoll-test-{name}")),
            agent: None,
        })
        .collect();
    for site in &mut sites {
        let (token, _) = cp.join_token(&site.name, &[]);
        start_agent(tmp.path(), site, Some((&cp.url, &token)));
    }
    eventually("both sites connected", Duration::from_secs(30), || {
        let items = cp.sites()?;
        let up = items
            .iter()
            .filter(|s| {
                connected(s)
                    && [&a, &b].contains(
                        &&s["resource"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
            })
            .count();
        if up == 2 {
            Ok(())
        } else {
            Err(format!("{items:?}"))
        }
    });
    cp.apply_yaml(&tmp.path().join("app.yaml"), &app_yaml(&run, "1"));

    // Each site's container reads its site's value from the file.
    let read = |site: &str, service: &str, path: &str| -> Result<(String, String), String> {
        let c = running(site, &run, service)?;
        Ok((c.clone(), read_in(&c, path)?))
    };
    let (web_a, seen_a) = eventually(
        "site a reads the shared password",
        Duration::from_secs(60),
        || read(&a, "web", "/run/secrets/db"),
    );
    assert_eq!(seen_a, shared);
    let (_, seen_b) = eventually(
        "site b reads its own password",
        Duration::from_secs(60),
        || read(&b, "web", "/run/secrets/db"),
    );
    assert_eq!(seen_b, own_b);
    let (worker_a, token_a) = eventually("site a's token", Duration::from_secs(60), || {
        read(&a, "worker", "/run/secrets/token")
    });
    let (_, token_b) = eventually("site b's token", Duration::from_secs(60), || {
        read(&b, "worker", "/run/secrets/token")
    });
    assert_eq!(token_a.len(), 40);
    assert_ne!(token_a, token_b, "a generated secret differs between sites");

    // On tmpfs, mode 0400, mounted read-only.
    let inspect = docker(&["inspect", &web_a]);
    let v: Value = serde_json::from_str(&inspect.stdout).unwrap();
    let mount = v[0]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/run/secrets/db")
        .cloned()
        .unwrap();
    assert_eq!(mount["RW"], false);
    let source = PathBuf::from(mount["Source"].as_str().unwrap());
    assert!(source.starts_with(&sites[0].secrets_dir), "{source:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&source).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(
        !v[0]["Config"]["Env"].to_string().contains(&shared),
        "not in the environment"
    );

    // The generated token stays the same across an agent restart (kill -9).
    sites[0].agent.take().unwrap().kill9();
    start_agent(tmp.path(), &mut sites[0], None);
    eventually("the agent of site a back", Duration::from_secs(30), || {
        let items = cp.sites()?;
        let s = items
            .iter()
            .find(|s| s["resource"]["name"] == a.as_str())
            .cloned()
            .unwrap_or_default();
        if connected(&s) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let (_, again) = read(&a, "worker", "/run/secrets/token").unwrap();
    assert_eq!(
        again, token_a,
        "a generated secret is stable across agent restarts"
    );

    // Rotating the shared password restarts site a's consumer (not site b's: it has its own).
    let rotated = format!("rotated-pw-{id}-Vn5");
    std::fs::write(&value_file, &rotated).unwrap();
    let (_, web_b_before) = (0, running(&b, &run, "web").unwrap());
    let started = Instant::now();
    cp.cli(&["secret", "set", "app-db", "password", "--from-file", vf])
        .ok("rotate");
    let new_web_a = eventually(
        "site a's web replaced, reading the new value",
        Duration::from_secs(10),
        || {
            let (c, seen) = read(&a, "web", "/run/secrets/db")?;
            if c != web_a && seen == rotated {
                Ok(c)
            } else {
                Err(format!("{c} reads {} bytes", seen.len()))
            }
        },
    );
    println!(
        "FIGURE rotation to restarted consumer: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(new_web_a, web_a);
    assert_eq!(
        running(&b, &run, "web").unwrap(),
        web_b_before,
        "site b's value did not change"
    );

    // A service that asked for a signal keeps its container and reads the new value in place.
    let started = Instant::now();
    cp.cli(&["secret", "generate", "app-token", "token", "--length", "40"])
        .ok("rotate the token");
    let token_a2 = eventually(
        "site a's worker reads a new token in place",
        Duration::from_secs(10),
        || {
            let (c, seen) = read(&a, "worker", "/run/secrets/token")?;
            if c == worker_a && seen != token_a {
                Ok(seen)
            } else {
                Err(c)
            }
        },
    );
    println!(
        "FIGURE rotation to signalled consumer: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(token_a2.len(), 40);
    eventually(
        "the agent says it sent SIGHUP",
        Duration::from_secs(15),
        || {
            let out = cp.cli(&["get", "events", &a, "-o", "json"]);
            if out.stdout.contains("sent SIGHUP to") {
                Ok(())
            } else {
                Err(tail(&out.stdout, 5))
            }
        },
    );

    // A reboot empties tmpfs and leaves the containers: the agent puts the secrets back before
    // it starts them again (else the runtime would mount an empty folder in the file's place).
    std::fs::remove_dir_all(&sites[0].secrets_dir).unwrap();
    docker(&["kill", &new_web_a]);
    eventually(
        "site a's web started again, reading its secret",
        Duration::from_secs(20),
        || {
            let (c, seen) = read(&a, "web", "/run/secrets/db")?;
            if seen == rotated {
                Ok(c)
            } else {
                Err(format!("{c} reads {} bytes", seen.len()))
            }
        },
    );

    // Status: which version each site's hosts hold.
    let view = eventually(
        "get secrets shows what the hosts hold",
        Duration::from_secs(15),
        || {
            let out = cp.cli(&["get", "secrets", "app-db", "-o", "json"]);
            let v = out.json();
            let site_a = v["items"][0]["sites"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|s| s["site"] == a.as_str());
            match site_a {
                Some(s)
                    if s["hosts"]
                        .as_object()
                        .is_some_and(|h| h.values().any(|x| x == &s["version"])) =>
                {
                    Ok(v)
                }
                _ => Err(v.to_string()),
            }
        },
    );
    let sites_listed: Vec<&str> = view["items"][0]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert!(
        !sites_listed.contains(&bystander.as_str()),
        "a site not using the secret is not listed"
    );

    // Secrets never in anything the control plane or the agents show, keep or log.
    let values = [&shared, &own_b, &rotated, &token_a, &token_b, &token_a2];
    let mut shown = Vec::new();
    for args in [
        vec!["get", "secrets", "-o", "json"],
        vec!["get", "manifest", a.as_str(), "-o", "json"],
        vec!["get", "events", a.as_str(), "-o", "json"],
        vec!["status", "vault-demo", "-o", "json"],
        vec!["get", "audit", "-o", "json"],
    ] {
        shown.push(cp.cli(&args).stdout);
    }
    shown.push(cp.stdout());
    shown.push(cp.stderr());
    for site in &sites {
        let agent = site.agent.as_ref().unwrap();
        shown.push(agent.stdout());
        shown.push(agent.stderr());
    }
    for text in &shown {
        for value in values {
            assert!(
                !text.contains(value.as_str()),
                "a secret value was shown: {}",
                tail(text, 3)
            );
        }
    }
    let data = tmp.path().join("data");
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        for value in values {
            assert!(
                !contains(&bytes, value),
                "{} holds a secret value",
                entry.path().display()
            );
        }
    }
    for site in &sites {
        for entry in walk(&site.agent_dir) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            for value in values {
                assert!(
                    !contains(&bytes, value),
                    "{} holds a secret value",
                    entry.display()
                );
            }
        }
    }

    // Removing the application removes the files and the edge copy.
    cp.cli(&["delete", "deployment", &format!("vault-{run}")])
        .ok("delete");
    eventually(
        "the containers and the secret files gone",
        Duration::from_secs(30),
        || {
            let left: Vec<PathBuf> = walk(&sites[0].secrets_dir);
            let gone = running(&a, &run, "web").is_err() && running(&a, &run, "worker").is_err();
            let kept = std::fs::read_to_string(sites[0].agent_dir.join("manifest.json"))
                .unwrap_or_default();
            if gone && left.is_empty() && !kept.contains("app-db") && !kept.contains("\"sealed\"") {
                Ok(())
            } else {
                Err(format!(
                    "files left: {left:?}; kept manifest mentions it: {}",
                    kept.contains("app-db")
                ))
            }
        },
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `atoll control --data-dir DIR ARGS...` run to its end (it must not start).
fn control_run(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> support::Out {
    let mut cmd = support::atoll_command(home);
    cmd.arg("control").arg("--data-dir").arg(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    support::run(cmd)
}

/// Everything the store at `db` holds, as rows: what "nothing was changed" is about. Not its
/// bytes: closing a database moves what its WAL holds into the main file, and changes nothing.
fn stored(db: &Path) -> String {
    use atoll_store::Store as _;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = atoll_store::SqliteStore::open(db).unwrap();
        let secrets: Vec<_> = store
            .secrets()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.meta, s.key_id, s.wrapped_key, s.ciphertext))
            .collect();
        format!(
            "{:?}\n{secrets:?}\n{:?}\n{:?}",
            store.snapshot().await.unwrap(),
            store.audit(1000).await.unwrap(),
            store.setting("master-key-check").await.unwrap(),
        )
    })
}

#[test]
fn a_wrong_master_key_stops_start_up_and_rotation_rewraps_without_losing_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let value = format!("at-rest-{}-Qw7", unique());
    let cp = ControlPlane::start(&dir);
    let value_file = tmp.path().join("value");
    std::fs::write(&value_file, &value).unwrap();
    cp.cli(&[
        "secret",
        "set",
        "kept",
        "k",
        "--from-file",
        value_file.to_str().unwrap(),
    ])
    .ok("secret set");
    let address = cp.address().to_owned();
    let before = cp.cli(&["get", "secrets", "kept", "-o", "json"]).json();
    drop(cp);

    // A wrong key: a clear error, and nothing written.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let db = stored(&dir.join("atoll.db"));
    let out = control_run(
        tmp.path(),
        &dir,
        &["--listen", "127.0.0.1:0"],
        &[("ATOLL_MASTER_KEY", wrong)],
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr
            .contains("is not the one this control plane's secrets are encrypted under"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert_eq!(stored(&dir.join("atoll.db")), db);

    // Rotate to a new key: the values survive, the old key no longer opens them.
    let new_key = tmp.path().join("new.key");
    std::fs::write(&new_key, "/3F0nK8d1uQqgXwqYtG3sV3bZ3z1n5m0c7fA2Lq9eWk=\n").unwrap();
    let out = control_run(
        tmp.path(),
        &dir,
        &[
            "rotate-master-key",
            "--new-key-file",
            new_key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("re-wrapped the data keys of 1 secrets"),
        "{}",
        out.stdout
    );
    let out = control_run(tmp.path(), &dir, &["--listen", "127.0.0.1:0"], &[]);
    assert!(
        out.stderr.contains("is not the one"),
        "the old key is refused: {}",
        out.stderr
    );
    let cp = ControlPlane::start_with(
        &dir,
        &address,
        &["--master-key-file", new_key.to_str().unwrap()],
    );
    let after = cp.cli(&["get", "secrets", "kept", "-o", "json"]).json();
    assert_eq!(after["items"][0]["version"], before["items"][0]["version"]);
    // The value is still there: setting it again for one site makes a new version from it.
    std::fs::write(&value_file, "other").unwrap();
    cp.cli(&[
        "secret",
        "set",
        "kept",
        "k2",
        "--from-file",
        value_file.to_str().unwrap(),
    ])
    .ok("the values open under the new key");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !contains(&bytes, &value),
            "{} holds the value",
            entry.path().display()
        );
    }
}

/// What the control plane answers a request made with the client certificate in `stolen`:
/// the status and the error code.
fn with_certificate(
    cp: &ControlPlane,
    stolen: &Path,
    method: &str,
    path: &str,
) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-H",
            "content-type: application/json",
        ])
        .args([
            "--data-binary",
            if method == "POST" {
                r#"{"batches":[]}"#
            } else {
                ""
            },
        ])
        .arg("--cacert")
        .arg(cp.ca_file())
        .arg("--cert")
        .arg(stolen.join("host-cert.pem"))
        .arg("--key")
        .arg(stolen.join("host-key.pem"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}{path}", cp.url))
        .output()
        .expect("curl (install it: apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status.to_owned(), code)
}

/// Issue 12, item 1: a deleted site's host kept its identity: its certificate still fetched
/// the site's manifest and posted reports, and when a site of the same name was made again
/// with an application reading a secret, the old host received it. Now deleting the site
/// detaches the host: its agent is told so, removes the site's containers, its secret files,
/// kept manifest and identity, and exits 3 (systemd does not restart it); the old
/// certificate is refused with `host_detached`, the re-created site's requests too.
#[test]
fn a_deleted_sites_host_is_detached_removes_what_atoll_ran_and_exits_3() {
    require_docker();
    demo_image(IMAGE);
    let tmp = tempfile::tempdir().unwrap();
    let id = unique();
    let run = format!("det-{id}");
    let name = format!("sd-{id}");
    let _cleanup = Cleanup::new([name.clone()]);
    let cp = ControlPlane::start(&tmp.path().join("data"));
    let site_yaml = format!("kind: Site\nname: {name}\nlabels: {{ run: {run} }}\n");
    let site_file = tmp.path().join("site.yaml");
    cp.apply_yaml(&site_file, &site_yaml);
    let value_file = tmp.path().join("value");
    std::fs::write(&value_file, format!("pw-{id}")).unwrap();
    for (secret, key) in [("app-db", "password"), ("app-token", "token")] {
        cp.cli(&[
            "secret",
            "set",
            secret,
            key,
            "--from-file",
            value_file.to_str().unwrap(),
        ])
        .ok("secret set");
    }
    let mut site = Site {
        name: name.clone(),
        agent_dir: tmp.path().join("agent"),
        secrets_dir: PathBuf::from(format!("/dev/shm/atoll-test-{name}")),
        agent: None,
    };
    let (token, _) = cp.join_token(&name, &[]);
    start_agent(tmp.path(), &mut site, Some((&cp.url, &token)));
    cp.apply_yaml(&tmp.path().join("app.yaml"), &app_yaml(&run, "1"));
    let web = eventually(
        "the site's container reads its secret",
        Duration::from_secs(60),
        || {
            let c = running(&name, &run, "web")?;
            read_in(&c, "/run/secrets/db").map(|_| c)
        },
    );
    assert!(site.secrets_dir.exists());
    let stolen = tmp.path().join("stolen");
    std::fs::create_dir_all(&stolen).unwrap();
    for file in ["host-cert.pem", "host-key.pem"] {
        std::fs::copy(site.agent_dir.join(file), stolen.join(file)).unwrap();
    }
    let manifest_path = format!("/v1/sites/{name}/manifest?have=0&wait=0");
    assert_eq!(
        with_certificate(&cp, &stolen, "GET", &manifest_path).0,
        "200"
    );

    cp.cli(&["delete", "site", &name]).ok("delete site");

    let agent = site.agent.as_mut().unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the agent did not stop:\n{}", tail(&agent.stderr(), 40)));
    assert_eq!(status.code(), Some(3), "{}", tail(&agent.stderr(), 40));
    assert!(
        agent.stderr().contains("detached"),
        "{}",
        tail(&agent.stderr(), 40)
    );
    let left = support::docker_ps(&format!("io.atoll.site={name}"), "{{.Names}}");
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(
        docker(&["inspect", &web]).code != Some(0),
        "the container is still there"
    );
    assert!(
        !site.secrets_dir.exists(),
        "the secret files are still there"
    );
    for file in ["identity.json", "host-key.pem", "manifest.json", "outbox"] {
        assert!(!site.agent_dir.join(file).exists(), "{file} is still there");
    }
    let reports = format!("/v1/sites/{name}/reports");
    for (method, path) in [("GET", manifest_path.as_str()), ("POST", reports.as_str())] {
        let answer = with_certificate(&cp, &stolen, method, path);
        assert_eq!(
            answer,
            ("403".into(), "host_detached".into()),
            "{method} {path}"
        );
    }
    // The site made again under the same name is a new site: the old certificate gets
    // nothing of it, its secrets least of all.
    cp.apply_yaml(&site_file, &site_yaml);
    let answer = with_certificate(&cp, &stolen, "GET", &manifest_path);
    assert_eq!(answer, ("403".into(), "host_detached".into()));
    let hosts = cp.cli(&["get", "hosts"]).ok("get hosts").stdout.clone();
    assert!(hosts.contains("detached"), "{hosts}");
    let sites = cp.sites().unwrap();
    let again = sites
        .iter()
        .find(|s| s["resource"]["name"] == name.as_str())
        .unwrap();
    assert_eq!(
        again["hosts"], 0,
        "the old host counts in the new site: {again}"
    );
    let events = cp.cli(&["get", "events", &name, "-o", "json"]).json();
    assert_eq!(
        events["items"],
        serde_json::json!([]),
        "the old site's events: {events}"
    );
}

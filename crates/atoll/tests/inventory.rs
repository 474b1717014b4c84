//! End to end, the live inventory: a real control plane and a real agent whose host root
//! (`ATOLL_HOST_ROOT`) is a made-up host in a temporary folder, with `dev/` and `sys/` and
//! nothing else. A fake camera is added the way the kernel shows one (a real device node made
//! with `mknod`, which needs root as the tests run, and its sysfs entries beside it) and
//! removed again; the control plane must show it, and the events must say what happened,
//! within the bounds the issue sets. Waits poll with deadlines; nothing sleeps for a fixed time.
//! The agent needs a Docker Engine to start (it runs nothing here).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{Cleanup, ControlPlane, Process, eventually_every, require_docker, tail, unique};

const POLL: Duration = Duration::from_millis(100);
/// A device plugged in or out is reported within this long (the bound).
const NOTICED_WITHIN: Duration = Duration::from_secs(10);
/// The host `host`'s entry in `get hosts -o json`.
fn host_view(cp: &ControlPlane, host: &str) -> Result<Value, String> {
    let out = cp.cli(&["get", "hosts", "-o", "json"]);
    if out.code != Some(0) {
        return Err(out.stderr);
    }
    let list: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|h| h["id"] == host).cloned())
        .ok_or(out.stdout)
}

/// The messages of `get events SITE -o json`.
fn events(cp: &ControlPlane, site: &str) -> Vec<String> {
    let out = cp.cli(&["get", "events", site, "-o", "json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn camera_of(host: &Value) -> Option<Value> {
    host["inventory"]["devices"]
        .as_array()?
        .iter()
        .find(|d| d["path"] == "/dev/video1")
        .cloned()
}

#[test]
fn a_camera_plugged_in_is_shown_then_missing_for_the_grace_then_dropped() {
    require_docker();
    let tmp = tempfile::tempdir().unwrap();
    let site = format!("inv-{}", unique());
    let _cleanup = Cleanup::new([site.clone()]);
    let cp = ControlPlane::start(&tmp.path().join("data"));
    cp.apply_yaml(
        &tmp.path().join("site.yaml"),
        &format!("kind: Site\nname: {site}\n"),
    )
    .ok("apply the site");
    let (token, _) = cp.join_token(&site, &[]);
    let root = tmp.path().join("host");
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("sys")).unwrap();
    let mut cmd = support::agent_command(
        tmp.path(),
        &tmp.path().join("agent"),
        "info",
        Some((&cp.url, &token)),
    );
    cmd.env("ATOLL_HOST_ROOT", &root)
        .args(["--device-grace", "2s"]);
    let agent = Process::spawn(cmd);
    let fail = |what: &str| {
        format!(
            "{what}\n--- agent stderr:\n{}\n--- control plane stderr:\n{}",
            tail(&agent.stderr(), 40),
            tail(&cp.stderr(), 40)
        )
    };

    let host = eventually_every(
        "the agent enrolls and sends its inventory",
        Duration::from_secs(30),
        POLL,
        || {
            let out = cp.cli(&["get", "hosts", "-o", "json"]);
            let list: Value =
                serde_json::from_str(&out.stdout).map_err(|e| fail(&e.to_string()))?;
            list["items"]
                .as_array()
                .and_then(|items| items.iter().find(|h| h["site"] == site.as_str()))
                .filter(|h| h["inventory"]["agent_version"] != Value::Null)
                .and_then(|h| h["id"].as_str().map(str::to_owned))
                .ok_or_else(|| fail(&out.stdout))
        },
    );

    support::fake_camera_sysfs(&root);
    let made = Command::new("mknod")
        .arg(root.join("dev/video1"))
        .args(["c", "81", "1"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root, as the tests are run");

    let camera = eventually_every(
        "the camera plugged in is in `get hosts`",
        NOTICED_WITHIN,
        POLL,
        || {
            let view = host_view(&cp, &host).map_err(|e| fail(&e))?;
            camera_of(&view).ok_or_else(|| fail(&view.to_string()))
        },
    );
    assert_eq!(camera["subsystem"], "video4linux", "{camera}");
    assert_eq!(camera["name"], "HD Pro Webcam C920", "{camera}");
    assert_eq!(camera["vendor"], "046d", "{camera}");
    assert_eq!(camera["product"], "082d", "{camera}");
    assert_eq!(camera["serial"], "A1B2C3D4", "{camera}");
    assert_eq!(camera["kind"], "camera", "{camera}");
    assert_eq!(camera.get("missing_since"), None, "{camera}");
    let appeared =
        format!("host {host}: device /dev/video1 (video4linux, HD Pro Webcam C920) appeared");
    eventually_every(
        "`get events` says it appeared",
        NOTICED_WITHIN,
        POLL,
        || {
            let seen = events(&cp, &site);
            if seen.contains(&appeared) {
                Ok(())
            } else {
                Err(fail(&seen.join("\n")))
            }
        },
    );

    std::fs::remove_file(root.join("dev/video1")).unwrap();
    let missing = eventually_every(
        "the camera unplugged is shown missing",
        NOTICED_WITHIN,
        POLL,
        || {
            let view = host_view(&cp, &host).map_err(|e| fail(&e))?;
            camera_of(&view)
                .filter(|c| c["missing_since"].is_string())
                .ok_or_else(|| fail(&view.to_string()))
        },
    );
    assert_eq!(missing["serial"], "A1B2C3D4", "kept whole while missing");
    eventually_every(
        "the camera is dropped after the grace",
        NOTICED_WITHIN,
        POLL,
        || {
            let view = host_view(&cp, &host).map_err(|e| fail(&e))?;
            match camera_of(&view) {
                None => Ok(()),
                Some(c) => Err(fail(&c.to_string())),
            }
        },
    );
    let seen = events(&cp, &site);
    let said = |what: &str| {
        format!("host {host}: device /dev/video1 (video4linux, HD Pro Webcam C920) {what}")
    };
    for what in ["appeared", "went missing", "was dropped"] {
        assert_eq!(
            seen.iter().filter(|m| **m == said(what)).count(),
            1,
            "{what}, once: {seen:#?}"
        );
    }
}

//! End to end, placement on hosts: a real control plane, real agents on this machine's Docker
//! Engine, each with a made-up host root (`ATOLL_HOST_ROOT`) whose `/dev` and `/sys` the test
//! shapes: a fake camera is a real device node made with `mknod` (root, as the tests run) and
//! its sysfs entries beside it. The checks are the issue's: the user's sentence ("sites of
//! customer X, hosts size medium or larger, with cameras attached") runs exactly where it
//! should and says why not elsewhere; a host label moves the app in and out; a camera plugged in
//! brings the app with the device in its container, and unplugged takes it away after the
//! grace. Waits poll with deadlines; nothing sleeps for a fixed time.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Cleanup, ControlPlane, Process, demo_image, docker_ok, docker_ps, eventually_every,
    require_docker, tail, unique,
};

const IMAGE: &str = "atoll.local/demo:placement";
const POLL: Duration = Duration::from_millis(100);
/// Gives the host at `root` a USB webcam at `/dev/video1` (81:1), as the kernel shows one.
fn plug_camera(root: &Path) {
    support::fake_camera_sysfs(root);
    let made = Command::new("mknod")
        .arg(root.join("dev/video1"))
        .args(["c", "81", "1"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root, as the tests are run");
}

fn unplug_camera(root: &Path) {
    std::fs::remove_file(root.join("dev/video1")).unwrap();
}

/// One site's host: its agent, its host root and its id.
struct Host {
    agent: Process,
    root: PathBuf,
    id: String,
}

/// Applies site `site` (labels `labels`), enrolls an agent for it with a host root of its own
/// (a camera plugged in when asked) and waits for its host to show with its inventory.
fn host(
    cp: &ControlPlane,
    dir: &Path,
    site: &str,
    labels: &str,
    camera: bool,
    grace: &str,
) -> Host {
    cp.apply_yaml(
        &dir.join(format!("{site}.yaml")),
        &format!("kind: Site\nname: {site}\nlabels: {{ {labels} }}\n"),
    )
    .ok("apply the site");
    let root = dir.join(format!("{site}-root"));
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("sys")).unwrap();
    if camera {
        plug_camera(&root);
    }
    let (token, _) = cp.join_token(site, &[]);
    let home = dir.join(format!("{site}-home"));
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = support::agent_command(
        &home,
        &dir.join(format!("{site}-agent")),
        "info",
        Some((&cp.url, &token)),
    );
    cmd.env("ATOLL_HOST_ROOT", &root)
        .args(["--device-grace", grace]);
    let agent = Process::spawn(cmd);
    let id = eventually_every(
        "the agent enrolls and sends its inventory",
        Duration::from_secs(30),
        POLL,
        || {
            let out = cp.cli(&["get", "hosts", "-o", "json"]);
            let list: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            list["items"]
                .as_array()
                .and_then(|items| items.iter().find(|h| h["site"] == site))
                .filter(|h| h["inventory"]["capabilities"].is_array())
                .and_then(|h| h["id"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{}\n{}", out.stdout, tail(&agent.stderr(), 20)))
        },
    );
    Host { agent, root, id }
}

/// The running containers of `site`.
fn running(site: &str) -> Vec<String> {
    docker_ps(&format!("io.atoll.site={site}"), "{{.State}} {{.Names}}")
        .into_iter()
        .filter(|l| l.starts_with("running "))
        .collect()
}

fn vision(sites: &str, hosts: Option<&str>) -> String {
    let hosts = hosts
        .map(|h| format!("  hosts: \"{h}\"\n"))
        .unwrap_or_default();
    format!(
        "kind: DeviceClass
name: camera
match:
  - subsystem: video4linux
---
kind: DeviceClass
name: serial
match:
  - path: /dev/ttyUSB*
---
kind: Application
name: vision
version: '1'
services:
  - name: detect
    image: {IMAGE}
    args: [demo, tick, --every, 1s]
    requires: {{ devices: [camera] }}
---
kind: Deployment
name: vision
application: vision
placement:
  sites: \"{sites}\"
{hosts}"
    )
}

fn describe_deployment(cp: &ControlPlane) -> String {
    cp.cli(&["describe", "deployment", "vision"]).stdout
}

#[test]
fn the_users_sentence_runs_on_customer_x_medium_hosts_with_a_camera_and_labels_move_it() {
    require_docker();
    demo_image(IMAGE);
    let tmp = tempfile::tempdir().unwrap();
    let run = unique();
    let [x1, x2, x3, y1] = ["x1", "x2", "x3", "y1"].map(|s| format!("pl-{s}-{run}"));
    let _cleanup = Cleanup::new([x1.clone(), x2.clone(), x3.clone(), y1.clone()]);
    let cp = ControlPlane::start(&tmp.path().join("data"));
    let customer = format!("x{run}");
    let h1 = host(
        &cp,
        tmp.path(),
        &x1,
        &format!("customer: {customer}"),
        true,
        "60s",
    );
    let h2 = host(
        &cp,
        tmp.path(),
        &x2,
        &format!("customer: {customer}"),
        true,
        "60s",
    );
    let h3 = host(
        &cp,
        tmp.path(),
        &x3,
        &format!("customer: {customer}"),
        false,
        "60s",
    );
    let h4 = host(
        &cp,
        tmp.path(),
        &y1,
        &format!("customer: y{run}"),
        true,
        "60s",
    );
    for (h, size) in [
        (&h1, "medium"),
        (&h2, "small"),
        (&h3, "large"),
        (&h4, "large"),
    ] {
        cp.cli(&["label", "host", &h.id, &format!("size={size}")])
            .ok("label the host");
    }
    let out = cp.apply_yaml(
        &tmp.path().join("vision.yaml"),
        &vision(
            &format!("customer == {customer}"),
            Some("size in (medium, large, xlarge)"),
        ),
    );
    out.ok("apply vision");
    assert!(!out.stdout.contains("warning"), "{}", out.stdout);

    eventually_every(
        "vision runs on x1's host",
        Duration::from_secs(60),
        POLL,
        || {
            (running(&x1).len() == 1).then_some(()).ok_or_else(|| {
                format!(
                    "{}\n{}",
                    describe_deployment(&cp),
                    tail(&h1.agent.stderr(), 20)
                )
            })
        },
    );
    let name = running(&x1)[0].split(' ').nth(1).unwrap().to_owned();
    let devices = docker_ok(&["inspect", "--format", "{{json .HostConfig.Devices}}", &name]);
    assert!(
        devices.contains("/dev/video1") && devices.contains(&h1.root.display().to_string()),
        "the camera is mapped into the container: {devices}"
    );
    // The node is there inside: opening it reaches the (absent) driver, not a missing file.
    let inside = support::docker(&[
        "exec",
        &name,
        "/usr/local/bin/atoll",
        "demo",
        "cat",
        "/dev/video1",
    ]);
    assert!(
        !inside.stderr.contains("No such file") && !inside.stdout.contains("No such file"),
        "the container sees /dev/video1: {} {}",
        inside.stdout,
        inside.stderr
    );
    let absent = support::docker(&[
        "exec",
        &name,
        "/usr/local/bin/atoll",
        "demo",
        "cat",
        "/dev/video7",
    ]);
    assert!(
        format!("{}{}", absent.stdout, absent.stderr).contains("No such file"),
        "a node not mapped is not there: {} {}",
        absent.stdout,
        absent.stderr
    );
    let described = describe_deployment(&cp);
    assert!(described.contains(&format!("  {x2}: no host can run service detect: {} does not match placement.hosts (size in (medium, large, xlarge))", h2.id)), "{described}");
    assert!(
        described.contains(&format!(
            "  {x3}: no host with device class camera ({} has: none)",
            h3.id
        )),
        "{described}"
    );
    assert!(
        !described.contains(&y1),
        "y1 is not selected at all: {described}"
    );
    let status = cp.cli(&["status", "vision"]).stdout;
    assert!(status.contains(&format!("not placed at {x3}")), "{status}");
    for site in [&x2, &x3, &y1] {
        assert!(running(site).is_empty(), "nothing runs at {site}");
    }

    // A label moves the app in within 5 s, and out again.
    let started = Instant::now();
    cp.cli(&["label", "host", &h2.id, "size=large"])
        .ok("relabel h2");
    eventually_every(
        "relabelled large, h2 runs vision",
        Duration::from_secs(5),
        POLL,
        || {
            (running(&x2).len() == 1)
                .then_some(())
                .ok_or_else(|| tail(&h2.agent.stderr(), 20))
        },
    );
    let moved_in = started.elapsed();
    let started = Instant::now();
    cp.cli(&["label", "host", &h2.id, "size-"]).ok("unlabel h2");
    eventually_every(
        "without its size label, h2 runs vision no more",
        Duration::from_secs(5),
        POLL,
        || {
            running(&x2)
                .is_empty()
                .then_some(())
                .ok_or_else(|| tail(&h2.agent.stderr(), 20))
        },
    );
    eprintln!(
        "label moved the app in after {moved_in:?}, out after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_camera_plugged_in_brings_the_app_and_unplugged_takes_it_away_after_the_grace() {
    require_docker();
    demo_image(IMAGE);
    let tmp = tempfile::tempdir().unwrap();
    let site = format!("pl-cam-{}", unique());
    let _cleanup = Cleanup::new([site.clone()]);
    let cp = ControlPlane::start(&tmp.path().join("data"));
    let h = host(&cp, tmp.path(), &site, "cam: plug", false, "4s");

    // Nothing can run it yet: accepted, with a warning; the reason in describe; nothing runs.
    let out = cp.apply_yaml(
        &tmp.path().join("vision.yaml"),
        &vision("cam == plug", None),
    );
    out.ok("apply vision");
    assert!(
        out.stdout.contains(&format!(
            "warning: deployment vision: none of the 1 sites it selects can run it; {site}: no host with device class camera"
        )),
        "{}",
        out.stdout
    );
    assert!(describe_deployment(&cp).contains("Not placed:"));

    let plugged = Instant::now();
    plug_camera(&h.root);
    eventually_every(
        "plugged in, the camera brings the app within 15 s",
        Duration::from_secs(15),
        POLL,
        || {
            (running(&site).len() == 1).then_some(()).ok_or_else(|| {
                format!(
                    "{}\n{}",
                    describe_deployment(&cp),
                    tail(&h.agent.stderr(), 20)
                )
            })
        },
    );
    eprintln!(
        "the app ran {:?} after the camera was plugged in",
        plugged.elapsed()
    );
    let name = running(&site)[0].split(' ').nth(1).unwrap().to_owned();
    let id = docker_ok(&["inspect", "--format", "{{.Id}}", &name]);

    let unplugged = Instant::now();
    unplug_camera(&h.root);
    eventually_every(
        "the camera goes missing",
        Duration::from_secs(10),
        POLL,
        || {
            let out = cp.cli(&["get", "hosts", "-o", "json"]);
            out.stdout
                .contains("missing_since")
                .then_some(())
                .ok_or(out.stdout)
        },
    );
    if unplugged.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.Id}}", &name]),
            id,
            "within the grace the container is the same one"
        );
    }
    eventually_every(
        "after the grace the app leaves",
        Duration::from_secs(20),
        POLL,
        || {
            running(&site)
                .is_empty()
                .then_some(())
                .ok_or_else(|| tail(&h.agent.stderr(), 20))
        },
    );
    let gone = unplugged.elapsed();
    assert!(
        gone >= Duration::from_secs(4),
        "not before the grace: {gone:?}"
    );
    eprintln!("the app left {gone:?} after the camera was unplugged (grace 4 s)");
}

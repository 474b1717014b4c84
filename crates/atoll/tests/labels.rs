//! Host and site labels end to end (issue 13, item 3): `atoll label host|site`, refused keys
//! and arguments, the site's generation and manifest following its labels, the audit lines,
//! and `atoll describe host` and `atoll get hosts` showing what was set. The host is enrolled
//! in-process (its own key and certificate, an inventory of our choosing), so no agent or
//! Docker is needed.

mod support;

use serde_json::Value;
use support::{ControlPlane, Out, enroll_host};

fn site_json(cp: &ControlPlane, site: &str) -> Value {
    let out = cp.cli(&["get", "sites", site, "-o", "json"]);
    out.ok("get sites -o json");
    out.json()
}

#[track_caller]
fn refused(out: &Out, what: &str, says: &str) {
    out.expect_code(1, what);
    assert!(
        out.stderr.contains(says),
        "{what}: stderr does not say {says:?}:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_sites_are_labelled_audited_and_described() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path());
    cp.apply_yaml(
        &tmp.path().join("site.yaml"),
        "kind: Site\nname: shop-1\nlabels:\n  region: eu\n",
    );
    // A deployment for customer x's sites, which shop-1 is not yet.
    cp.apply_yaml(
        &tmp.path().join("app.yaml"),
        "kind: Application\nname: kiosk\nversion: 1.0.0\nservices:\n  - name: ui\n    image: registry.example.com/kiosk/ui:1.0.0\n---\nkind: Deployment\nname: kiosk-x\napplication: kiosk\nplacement:\n  sites: customer == x\n",
    );
    let inventory = atoll_api::agent::Inventory {
        hostname: "till-1".into(),
        arch: "x86_64".into(),
        os: "Linux".into(),
        cpus: 4,
        memory_bytes: 8 << 30,
        agent_version: "0.9.0".into(),
        ..Default::default()
    };
    let host = enroll_host(&cp, &tmp.path().join("agent"), "shop-1", inventory)
        .await
        .host;
    let h = host.as_str();

    // Add, change, remove.
    let out = cp.cli(&["label", "host", h, "size=small", "zone=front"]);
    out.ok("label host: add");
    assert_eq!(
        out.stdout,
        format!("host {h} labels: size=small,zone=front\n")
    );
    let out = cp.cli(&["label", "host", h, "size=medium", "zone-"]);
    out.ok("label host: change and remove");
    assert_eq!(out.stdout, format!("host {h} labels: size=medium\n"));
    // A key that is not there to remove: said, not an error, the rest made.
    let out = cp.cli(&["label", "host", h, "zone-", "rack=3"]);
    out.ok("label host: remove a key that is not there");
    assert_eq!(
        out.stdout,
        format!("host {h} labels: rack=3,size=medium\nlabel `zone` not found, nothing to remove\n")
    );
    cp.cli(&["label", "host", h, "rack-"])
        .ok("label host: remove");

    // Refused: a built-in fact, a bad key, an argument that is neither, another kind, an
    // unknown host or site. Nothing of a refused change is made.
    refused(
        &cp.cli(&["label", "host", h, "arch=arm64", "size=large"]),
        "label host arch",
        "`arch` is a built-in fact of every host",
    );
    refused(
        &cp.cli(&["label", "host", h, "device.camera=2"]),
        "label host device.camera",
        "built-in fact",
    );
    refused(
        &cp.cli(&["label", "host", h, "bad key=1"]),
        "label host with a bad key",
        "invalid label key `bad key`",
    );
    refused(
        &cp.cli(&["label", "host", h, "size"]),
        "label host size",
        "cannot read `size`",
    );
    refused(
        &cp.cli(&["label", "app", "kiosk", "a=1"]),
        "label app",
        "cannot label `app`: choose host or site",
    );
    refused(
        &cp.cli(&["label", "host", "nope", "a=1"]),
        "label an unknown host",
        "host nope does not exist",
    );
    refused(
        &cp.cli(&["label", "site", "nope", "a=1"]),
        "label an unknown site",
        "site nope does not exist",
    );

    // The host's labels are shown.
    let out = cp.cli(&["describe", "host", h]);
    out.ok("describe host");
    for line in [
        format!("Name:         {h}"),
        "Site:         shop-1".to_owned(),
        "  size: medium".to_owned(),
        "  arch:          amd64 (reported x86_64)".to_owned(),
        "  cpus:          4".to_owned(),
        "  memory:        8Gi".to_owned(),
        "  agent:         0.9.0".to_owned(),
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "describe host has no line {line:?}:\n{}",
            out.stdout
        );
    }
    let out = cp.cli(&["get", "hosts"]);
    out.ok("get hosts");
    assert!(
        out.stdout.lines().next().unwrap().contains("LABELS"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().nth(1).unwrap().ends_with("size=medium"),
        "{}",
        out.stdout
    );

    // A site label change is an apply of the Site: its generation grows, and the deployment
    // now selects it, so its manifest is compiled again.
    let before = site_json(&cp, "shop-1");
    let revision = cp.revision("shop-1");
    assert!(
        before["applications"].as_array().unwrap().is_empty(),
        "{before}"
    );
    let out = cp.cli(&["label", "site", "shop-1", "customer=x"]);
    out.ok("label site");
    assert_eq!(out.stdout, "site shop-1 labels: customer=x,region=eu\n");
    let after = site_json(&cp, "shop-1");
    assert_eq!(
        after["generation"].as_u64(),
        before["generation"].as_u64().map(|g| g + 1),
        "{after}"
    );
    assert_eq!(after["resource"]["labels"]["customer"], "x", "{after}");
    assert_eq!(after["applications"][0]["deployment"], "kiosk-x", "{after}");
    assert!(cp.revision("shop-1") > revision);
    // The same labels again change nothing.
    cp.cli(&["label", "site", "shop-1", "customer=x"])
        .ok("label site again");
    assert_eq!(site_json(&cp, "shop-1")["generation"], after["generation"]);

    // Every change made is audited with its actor, old and new; the refused ones are not.
    let out = cp.cli(&["get", "audit", "-o", "json"]);
    out.ok("get audit");
    let audit = out.json();
    let labels: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "label")
        .map(|e| (e["actor"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(labels.len(), 5, "{audit}");
    assert!(
        labels.iter().all(|(actor, _)| *actor == "admin"),
        "{labels:?}"
    );
    let details: Vec<&str> = labels.iter().map(|(_, d)| *d).collect();
    assert!(
        details[0].starts_with(
            "site shop-1 labels {region=eu} → {customer=x, region=eu}; Site shop-1 generation 2"
        ),
        "{details:?}"
    );
    assert_eq!(
        details[1..].to_vec(),
        vec![
            format!("host {h} of site shop-1 labels {{rack=3, size=medium}} → {{size=medium}}"),
            format!("host {h} of site shop-1 labels {{size=medium}} → {{rack=3, size=medium}}"),
            format!("host {h} of site shop-1 labels {{size=small, zone=front}} → {{size=medium}}"),
            format!("host {h} of site shop-1 labels {{}} → {{size=small, zone=front}}"),
        ]
    );
}

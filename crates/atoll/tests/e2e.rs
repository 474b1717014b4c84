//! End-to-end: the real `atoll` binary as a control plane, driven by the real CLI.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{ControlPlane, examples, item_names};

/// The whitespace-separated cells of the table row whose first cell is `name`.
#[track_caller]
fn table_row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<String>>()
        })
        .find(|cells| cells.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

#[track_caller]
fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `examples/pos.yaml` with `edit` applied, written to `dir/pos.yaml`.
fn edited_pos(dir: &Path, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(examples().join("pos.yaml")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    write(&dir.join("pos.yaml"), &edited)
}

/// 1-based number of the only line of `text` that contains `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> usize {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{needle:?} is on lines {found:?}");
    found[0]
}

/// 1-based column where `needle` starts on line `line` of `text`.
fn column_of(text: &str, line: usize, needle: &str) -> usize {
    text.lines().nth(line - 1).unwrap().find(needle).unwrap() + 1
}

#[test]
fn applying_the_examples_creates_everything_and_applying_again_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path());

    let first = cp.apply_examples();
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert!(
        lines.contains(&"application/pos created (version 1.4.2)"),
        "{}",
        first.stdout
    );
    assert!(
        lines.contains(&"deployment/pos-prod created"),
        "{}",
        first.stdout
    );
    for site in ["store-0042", "store-0043", "store-0101", "depot-7", "local"] {
        assert!(
            lines.contains(&format!("site/{site} created").as_str()),
            "{}",
            first.stdout
        );
    }
    let manifests: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("manifests changed for "))
        .collect();
    assert_eq!(manifests.len(), 1, "{}", first.stdout);
    assert!(
        manifests[0].starts_with("manifests changed for 5 sites: "),
        "{}",
        first.stdout
    );
    for site in ["store-0042", "store-0043", "store-0101", "depot-7", "local"] {
        assert!(
            manifests[0].contains(&format!("{site} (revision 1)")),
            "{}",
            first.stdout
        );
    }
    assert_eq!(lines.len(), 10, "{}", first.stdout);

    let second = cp.apply_examples();
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(lines.len(), 9, "{}", second.stdout);
    for line in &lines {
        assert!(
            line.ends_with(" unchanged") || line.contains(" unchanged (version "),
            "not unchanged: {line:?}\n{}",
            second.stdout
        );
    }
    assert!(
        lines.contains(&"application/pos unchanged (version 1.4.2)"),
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("manifests"), "{}", second.stdout);
}

#[test]
fn everything_applied_survives_kill_9_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(tmp.path());
    cp.apply_examples();
    // The apply has returned: it must be durable now, with no grace period.
    let before = cp.manifest("store-0042");
    cp.kill9();

    let cp = ControlPlane::start(tmp.path());
    let sites = cp.cli(&["get", "sites", "-o", "json"]);
    sites.ok("get sites");
    let mut names = item_names(&sites.json());
    names.sort();
    assert_eq!(
        names,
        ["depot-7", "local", "store-0042", "store-0043", "store-0101"],
        "{}",
        sites.stdout
    );

    let after = cp.manifest("store-0042");
    assert_eq!(after["revision"], 1, "{after}");
    assert_eq!(after["hash"], before["hash"], "{after}");
    assert!(
        after["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:")),
        "{after}"
    );
    assert_eq!(after, before);

    let apps = cp.cli(&["get", "apps"]);
    apps.ok("get apps");
    let row = table_row(&apps.stdout, "pos");
    assert_eq!(row[1], "1.4.2", "{}", apps.stdout);
}

#[test]
fn three_mistakes_are_reported_together_with_their_lines_and_nothing_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("data"));

    let sites = write(
        &tmp.path().join("sites.yaml"),
        "kind: Site\n\
         name: kiosk-north\n\
         labels: { customer: acme }\n\
         variables: { screen: 1080p }\n\
         ---\n\
         kind: Site\n\
         name: kiosk-south\n\
         labels: { customer: acme }\n",
    );
    cp.cli(&["apply", "-f", &sites]).ok("apply sites");

    let text = "\
kind: Application
name: kiosk
version: 1.0.0
services:
  - name: ui
    image: registry.example.com/kiosk/ui:1.0.0
    imgae: registry.example.com/kiosk/ui:1.0.0
    env:
      SCREEN: \"{{ site.variables.screen }}\"
    resources:
      cpu: 0.5
      memory: 12XB
---
kind: Deployment
name: kiosk-prod
application: kiosk
placement:
  sites: \"customer == acme\"
";
    let bad = write(&tmp.path().join("bad.yaml"), text);
    let typo = line_of(text, "imgae:");
    let template = line_of(text, "SCREEN:");
    let memory = line_of(text, "12XB");

    let out = cp.cli(&["apply", "-f", &bad]);
    out.expect_code(1, "apply bad.yaml");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let located: Vec<(usize, usize, &str)> = lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{bad}:"))?;
            let mut parts = rest.splitn(3, ':');
            let line = parts.next()?.parse().ok()?;
            let column = parts.next()?.parse().ok()?;
            Some((line, column, parts.next()?))
        })
        .collect();
    assert_eq!(located.len(), 3, "{}", out.stderr);
    assert_eq!(
        located.iter().map(|l| l.0).collect::<Vec<_>>(),
        [typo, template, memory],
        "{}",
        out.stderr
    );

    let (_, column, message) = located[0];
    assert_eq!(column, column_of(text, typo, "imgae"), "{}", out.stderr);
    assert!(message.contains("unknown field `imgae`"), "{}", out.stderr);
    assert!(message.contains("did you mean `image`?"), "{}", out.stderr);

    let (_, column, message) = located[1];
    // The template's value starts at its opening quote.
    assert_eq!(column, column_of(text, template, "\"{{"), "{}", out.stderr);
    assert!(message.contains("Deployment kiosk-prod"), "{}", out.stderr);
    assert!(message.contains("site.variables.screen"), "{}", out.stderr);
    assert!(message.contains("site kiosk-south"), "{}", out.stderr);
    assert!(!message.contains("kiosk-north"), "{}", out.stderr);

    let (_, column, message) = located[2];
    assert_eq!(column, column_of(text, memory, "12XB"), "{}", out.stderr);
    assert!(message.contains("memory"), "{}", out.stderr);
    assert!(message.contains("12XB"), "{}", out.stderr);

    assert_eq!(
        lines.last().copied(),
        Some("error: 3 problems found; nothing was applied"),
        "{}",
        out.stderr
    );
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    let apps = cp.cli(&["get", "apps", "-o", "json"]);
    apps.ok("get apps");
    assert!(item_names(&apps.json()).is_empty(), "{}", apps.stdout);
    let deployments = cp.cli(&["get", "deployments", "-o", "json"]);
    deployments.ok("get deployments");
    assert!(
        !item_names(&deployments.json()).contains(&"kiosk-prod".to_owned()),
        "{}",
        deployments.stdout
    );
    let table = cp.cli(&["get", "deployments"]);
    table.ok("get deployments");
    assert!(!table.stdout.contains("kiosk-prod"), "{}", table.stdout);
    // The sites' manifests were not touched either.
    assert_eq!(cp.revision("kiosk-north"), 1);
    assert_eq!(cp.revision("kiosk-south"), 1);
}

#[test]
fn a_site_moving_in_and_out_of_a_selector_moves_its_manifest_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("data"));
    cp.apply_examples();

    let deployment = cp.cli(&["get", "deployment", "pos-prod", "-o", "json"]);
    deployment.ok("get deployment");
    assert_eq!(
        deployment.json()["sites"],
        serde_json::json!(["store-0042", "store-0043"]),
        "{}",
        deployment.stdout
    );

    let mut revisions = vec![cp.revision("store-0101")];
    assert_eq!(revisions[0], 1);
    let empty = cp.manifest("store-0101");
    assert_eq!(empty["content"]["applications"], serde_json::json!([]));

    let site = |region: &str| {
        format!(
            "kind: Site\n\
             name: store-0101\n\
             description: Boston, Newbury Street\n\
             labels: {{ customer: acme, region: {region}, store_id: \"0101\" }}\n\
             variables: {{ timezone: America/New_York, currency: USD }}\n"
        )
    };
    let moved = write(&tmp.path().join("moved.yaml"), &site("eu-west"));
    let out = cp.cli(&["apply", "-f", &moved]);
    out.ok("apply moved site");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "site/store-0101 configured"),
        "{}",
        out.stdout
    );
    let manifest = cp.manifest("store-0101");
    assert_eq!(manifest["revision"], 2, "{manifest}");
    assert_eq!(
        manifest["content"]["applications"][0]["application"], "pos",
        "{manifest}"
    );
    assert_eq!(
        manifest["content"]["applications"][0]["services"][0]["env"]["STORE_ID"], "0101",
        "{manifest}"
    );
    revisions.push(2);
    let deployment = cp.cli(&["get", "deployment", "pos-prod", "-o", "json"]);
    assert_eq!(
        deployment.json()["sites"],
        serde_json::json!(["store-0042", "store-0043", "store-0101"]),
        "{}",
        deployment.stdout
    );

    let out = cp.cli(&["apply", "-f", &moved]);
    out.ok("apply the same again");
    assert_eq!(out.stdout, "site/store-0101 unchanged\n");
    revisions.push(cp.revision("store-0101"));
    assert_eq!(revisions[2], 2);

    let back = write(&tmp.path().join("back.yaml"), &site("us-east"));
    cp.cli(&["apply", "-f", &back]).ok("apply site moved back");
    let manifest = cp.manifest("store-0101");
    assert_eq!(manifest["revision"], 3, "{manifest}");
    assert_eq!(
        manifest["content"]["applications"],
        serde_json::json!([]),
        "{manifest}"
    );
    // Same content as revision 1, but a new revision: revisions never go back.
    assert_eq!(manifest["hash"], empty["hash"]);
    revisions.push(3);
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "{revisions:?}");
    // The other sites were not touched.
    assert_eq!(cp.revision("store-0042"), 1);
    assert_eq!(cp.revision("depot-7"), 1);
}

#[test]
fn an_applied_version_is_immutable_and_a_new_version_rolls_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("data"));
    cp.apply_examples();
    let before = cp.manifest("store-0042");

    let new_image = |t: String| {
        t.replace(
            "image: registry.example.com/pos/api:1.4.2",
            "image: registry.example.com/pos/api:1.4.2-hotfix",
        )
    };
    let same_version = edited_pos(tmp.path(), new_image);
    let out = cp.cli(&["apply", "-f", &same_version]);
    out.expect_code(1, "re-apply 1.4.2 with another image");
    assert!(out.stderr.contains("services[0].image"), "{}", out.stderr);
    assert!(out.stderr.contains("immutable"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(cp.manifest("store-0042"), before);
    let app = cp.cli(&["get", "app", "pos", "-o", "json"]);
    app.ok("get app pos");
    let app = app.json();
    assert_eq!(app["versions"].as_array().unwrap().len(), 1, "{app}");
    assert_eq!(
        app["resource"]["services"][0]["image"], "registry.example.com/pos/api:1.4.2",
        "{app}"
    );

    let next_version = edited_pos(tmp.path(), |t| {
        new_image(t).replace("\nversion: 1.4.2\n", "\nversion: 1.4.3\n")
    });
    let out = cp.cli(&["apply", "-f", &next_version]);
    out.ok("apply 1.4.3");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "application/pos configured (version 1.4.3)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "deployment/pos-prod unchanged"),
        "{}",
        out.stdout
    );
    // pos-prod rolls out with a one-site canary: the canary's manifest moves to 1.4.3 at once,
    // the other selected site keeps 1.4.2 (and its revision) until its wave opens.
    let rollout = cp.cli(&["rollout", "status", "pos-prod", "-o", "json"]);
    rollout.ok("rollout status pos-prod");
    let rollout = rollout.json();
    assert_eq!(rollout["phase"], "running", "{rollout}");
    assert_eq!(
        (
            rollout["from_version"].as_str(),
            rollout["to_version"].as_str()
        ),
        (Some("1.4.2"), Some("1.4.3"))
    );
    let canary = rollout["waves"][0]["sites"][0]["site"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rollout["waves"][0]["canary"], true, "{rollout}");
    let waiting = if canary == "store-0042" {
        "store-0043"
    } else {
        "store-0042"
    };
    let manifest = cp.manifest(&canary);
    assert_eq!(manifest["revision"], 2, "{manifest}");
    assert_eq!(
        manifest["content"]["applications"][0]["version"], "1.4.3",
        "{manifest}"
    );
    assert_eq!(
        manifest["content"]["applications"][0]["services"][0]["image"],
        "registry.example.com/pos/api:1.4.2-hotfix",
        "{manifest}"
    );
    let manifest = cp.manifest(waiting);
    assert_eq!(manifest["revision"], 1, "{manifest}");
    assert_eq!(
        manifest["content"]["applications"][0]["version"], "1.4.2",
        "{manifest}"
    );

    let describe = cp.cli(&["describe", "app", "pos"]);
    describe.ok("describe app pos");
    let versions: Vec<&str> = describe
        .stdout
        .lines()
        .skip_while(|l| *l != "Versions:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(versions.len(), 2, "{}", describe.stdout);
    assert!(
        versions[0].starts_with("  1.4.2 applied "),
        "{}",
        describe.stdout
    );
    assert!(
        versions[1].starts_with("  1.4.3 applied "),
        "{}",
        describe.stdout
    );
    assert!(
        describe.stdout.lines().any(|l| l == "Version:      1.4.3"),
        "{}",
        describe.stdout
    );
}

#[test]
fn exit_codes_tell_user_errors_from_an_unreachable_control_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("data"));
    cp.apply_examples();

    let out = cp.cli(&["get", "site", "nope"]);
    out.expect_code(1, "get site nope");
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);

    let out = cp.cli_env(&["get", "sites"], &[("ATOLL_URL", "https://127.0.0.1:1")]);
    out.expect_code(2, "get sites from a closed port");
    assert!(
        out.stderr.contains("cannot reach the control plane"),
        "{}",
        out.stderr
    );

    let out = cp.cli(&["get", "sites", "--site", "store-0042"]);
    out.expect_code(1, "get sites --site");
    assert!(
        out.stderr.contains("--site filters hosts only"),
        "{}",
        out.stderr
    );
    let out = cp.cli(&["get", "hosts", "--site", "store-0042"]);
    out.ok("get hosts --site of a site with no host");
    assert_eq!(out.stdout, "No hosts enrolled at site store-0042.\n");

    let out = cp.cli(&["apply", "-f", "/nonexistent"]);
    out.expect_code(1, "apply -f /nonexistent");
    assert!(out.stderr.contains("/nonexistent"), "{}", out.stderr);

    let out = cp.cli(&["validate", "-f", examples().to_str().unwrap()]);
    out.ok("validate examples");
    assert!(
        out.stdout.starts_with("9 resources are valid"),
        "{}",
        out.stdout
    );

    let before = cp.revision("store-0042");
    let out = cp.cli(&["delete", "app", "pos"]);
    out.expect_code(1, "delete app pos while pos-prod runs it");
    assert!(out.stderr.contains("pos-prod"), "{}", out.stderr);
    cp.cli(&["get", "app", "pos"]).ok("pos is still there");

    let out = cp.cli(&["delete", "deployment", "pos-prod"]);
    out.ok("delete deployment pos-prod");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "deployment/pos-prod deleted"),
        "{}",
        out.stdout
    );
    let manifest = cp.manifest("store-0042");
    assert_eq!(
        manifest["content"]["applications"],
        serde_json::json!([]),
        "{manifest}"
    );
    assert!(
        manifest["revision"].as_u64().unwrap() > before,
        "{manifest}"
    );
    let out = cp.cli(&["get", "deployment", "pos-prod"]);
    out.expect_code(1, "get the deleted deployment");
}

/// Issue 12, item 5: the CLI printed what came from the network raw, so text holding escape
/// sequences could retitle and clear the terminal. The control plane's error message here
/// quotes a name holding them; the CLI prints it escaped, on the real binary's stderr.
#[test]
fn an_error_message_with_escape_sequences_is_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path());
    let out = cp.cli(&["describe", "site", "x\x1b]0;pwned\x07\x1b[2J"]);
    out.expect_code(1, "describe site with escapes in its name");
    assert!(
        out.stderr
            .contains("invalid name `x\\x1b]0;pwned\\x07\\x1b[2J`"),
        "{:?}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(['\x1b', '\x07']) && !out.stdout.contains(['\x1b', '\x07']),
        "{:?}",
        out.stderr
    );
}

/// Issue 12, item 16: a bad flag exited 2, the code that says the control plane could not be
/// reached.
#[test]
fn a_usage_error_exits_1_not_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["get", "sites", "--no-such-flag"][..],
        &["get"],
        &["no-such-verb"],
        &["agent", "--interval"],
    ] {
        let mut cmd = support::atoll_command(tmp.path());
        cmd.args(args);
        let out = support::run(cmd);
        out.expect_code(1, &args.join(" "));
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    }
    for args in [&["--help"][..], &["--version"], &["get", "--help"]] {
        let mut cmd = support::atoll_command(tmp.path());
        cmd.args(args);
        let out = support::run(cmd);
        out.ok(&args.join(" "));
        assert!(!out.stdout.is_empty(), "{}", out.stderr);
    }
}

#[test]
fn atoll_dev_logs_the_cli_in_and_applies_the_example_idempotently() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let config = tmp.path().join("cli.json");
    let dev = |tmp: &Path| {
        let mut cmd = support::atoll_command(tmp);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            // The local agent's site and port are this machine's, not this test's; agents are
            // tested on sites of their own in `agent.rs`.
            .arg("--no-agent")
            .env("ATOLL_CONFIG", &config);
        support::Process::spawn(cmd)
    };
    let cli = |args: &[&str]| {
        let mut cmd = support::atoll_command(tmp.path());
        cmd.args(args).env("ATOLL_CONFIG", &config);
        support::run(cmd)
    };

    let mut first = dev(tmp.path());
    let out = first.wait_for_stdout("Try next", std::time::Duration::from_secs(60));
    assert!(
        out.contains("atoll dev: control plane at https://127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "application/pos created (version 1.4.2)"),
        "{out}"
    );

    let sites = cli(&["get", "sites"]);
    sites.ok("get sites after atoll dev");
    table_row(&sites.stdout, "store-0042");
    let deployments = cli(&["get", "deployments"]);
    deployments.ok("get deployments after atoll dev");
    let row = table_row(&deployments.stdout, "pos-prod");
    // TARGET, then RUNNING: no host of pos-prod's two sites reports yet.
    assert_eq!(
        &row[1..5],
        ["pos", "1.4.2", "-", "2"],
        "{}",
        deployments.stdout
    );

    first.kill9();
    let mut second = dev(tmp.path());
    let out = second.wait_for_stdout("Try next", std::time::Duration::from_secs(60));
    assert!(
        out.lines()
            .any(|l| l == "application/pos unchanged (version 1.4.2)"),
        "{out}"
    );
    assert!(!out.contains("manifests changed"), "{out}");
    cli(&["get", "sites"]).ok("get sites after the second atoll dev");
}

#[test]
fn login_saves_a_private_config_that_the_cli_then_uses() {
    use std::os::unix::fs::PermissionsExt as _;

    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("data"));
    cp.apply_examples();
    let config = tmp.path().join("cfg.json");
    let only_config = |args: &[&str], config: &Path| {
        let mut cmd = support::atoll_command(tmp.path());
        cmd.args(args).env("ATOLL_CONFIG", config);
        support::run(cmd)
    };
    let token_file = cp.token_file();
    let ca_file = cp.ca_file();
    let login = |token_file: &Path, config: &Path| {
        only_config(
            &[
                "login",
                "--url",
                &cp.url,
                "--token-file",
                token_file.to_str().unwrap(),
                "--ca-file",
                ca_file.to_str().unwrap(),
            ],
            config,
        )
    };

    // Without a config, the CLI does not know where to go.
    only_config(&["get", "sites"], &config).expect_code(1, "get sites before login");

    let out = login(&token_file, &config);
    out.ok("login");
    assert!(out.stdout.contains("5 sites"), "{}", out.stdout);
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "config mode {mode:o}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(saved["url"], cp.url.as_str());
    assert_eq!(saved["token"], cp.token().as_str());

    let sites = only_config(&["get", "sites"], &config);
    sites.ok("get sites after login");
    table_row(&sites.stdout, "store-0042");

    let wrong = tmp.path().join("wrong-token");
    std::fs::write(&wrong, "atoll_wrong\n").unwrap();
    let other = tmp.path().join("other.json");
    let out = login(&wrong, &other);
    out.expect_code(1, "login with a wrong token");
    assert!(out.stderr.contains("unknown token"), "{}", out.stderr);
    assert!(!other.exists(), "a failed login wrote its config");
    // A failed login does not touch a working config either.
    let out = login(&wrong, &config);
    out.expect_code(1, "login with a wrong token over a good config");
    only_config(&["get", "sites"], &config).ok("get sites after the failed login");
}

#[test]
fn a_second_control_plane_on_a_used_data_folder_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = ControlPlane::start(&dir);
    let mut cmd = support::atoll_command(tmp.path());
    cmd.arg("control")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"]);
    let second = support::run(cmd);
    assert_ne!(second.code, Some(0), "{}", second.stdout);
    assert!(
        second.stderr.contains(&format!(
            "data folder {} in use by process {}",
            dir.display(),
            first.pid()
        )),
        "{}",
        second.stderr
    );
    assert!(
        first.cli(&["get", "sites"]).code == Some(0),
        "the first one serves on"
    );
}

#[test]
fn a_backup_taken_while_serving_restores_what_was_applied_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut cp = ControlPlane::start(&dir);
    cp.apply_examples().ok("apply the examples");
    let copy = tmp.path().join("backup.db");
    let mut cmd = support::atoll_command(tmp.path());
    cmd.arg("control")
        .arg("--data-dir")
        .arg(&dir)
        .arg("backup")
        .arg(&copy);
    let out = support::run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("checked"), "{}", out.stdout);
    // After the backup: not in it.
    cp.apply_yaml(
        &tmp.path().join("late.yaml"),
        "kind: Site\nname: after-the-backup\n",
    )
    .ok("apply a site after the backup");
    cp.kill9();

    // Restore: the keys of the data folder, and the store's copy as its database.
    let restored = tmp.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && !name.starts_with("atoll.db") && name != "control.pid" {
            std::fs::copy(&path, restored.join(&name)).unwrap();
        }
    }
    std::fs::copy(&copy, restored.join("atoll.db")).unwrap();
    let cp = ControlPlane::start(&restored);
    let sites = item_names(&cp.cli(&["get", "sites", "-o", "json"]).json());
    assert!(sites.contains(&"store-0042".to_owned()), "{sites:?}");
    assert!(!sites.contains(&"after-the-backup".to_owned()), "{sites:?}");
}

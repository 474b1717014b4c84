//! The OpenAPI document against the server it describes: schemathesis, with every check, fuzzes
//! each user operation of a real control plane from `/v1/openapi.json` and must find nothing.
//!
//! schemathesis is a Python tool pinned in `scripts/test-requirements.txt` and installed in
//! `.test-tools/` by `scripts/install-test-tools` (which `scripts/test` runs first). Without it
//! this test fails saying so; it never skips. The agent protocol's routes (`/v1/enroll`, reports, certificate
//! renewal, inventory) are left out of the run on purpose: they need a join token and a CSR, or the client
//! certificate of an enrolled host, which a fuzzer cannot present, so every request would stop
//! at the door. `GET /v1/sites/{name}/manifest` is fuzzed as users call it, with the token; its
//! long-poll is for agents' certificates only, so no request waits.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{ControlPlane, run};

/// Cases per operation: enough to walk every parameter's edges, and the run stays within
/// [`RUN_BUDGET`] on two cores.
const MAX_EXAMPLES: &str = "15";
/// The whole run, schemathesis included, must end within this.
const RUN_BUDGET: Duration = Duration::from_secs(60);
/// A fixed seed, so that CI runs the cases a developer ran.
const SEED: &str = "1812";
/// Agent protocol routes: see the module's comment.
const AGENT_ROUTES: &str =
    "^/v1/(enroll|sites/[^/]+/reports|sites/[^/]+/hosts/[^/]+/(certificate|inventory))$";

/// Where `scripts/install-test-tools` puts schemathesis.
const SCHEMATHESIS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../.test-tools/bin/schemathesis"
);

fn schemathesis() -> Command {
    Command::new(SCHEMATHESIS)
}

/// The version `scripts/test-requirements.txt` pins.
fn pinned_version() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/test-requirements.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .unwrap_or_else(|| panic!("{path} pins no `schemathesis==VERSION`"))
        .trim()
        .to_owned()
}

#[test]
fn the_openapi_document_describes_the_server() {
    let pinned = pinned_version();
    let version = schemathesis().arg("--version").output();
    let said = match &version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => format!("cannot run {SCHEMATHESIS}: {e}"),
    };
    assert!(
        said.contains(&format!("version {pinned}")),
        "schemathesis {pinned} is not installed (`.test-tools/bin/schemathesis --version` said: \
         {}): run scripts/install-test-tools, which installs the version pinned in \
         scripts/test-requirements.txt",
        said.trim()
    );
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path());
    // Real resources, so that lists and views answer with data the response schemas must fit.
    cp.apply_examples();

    let started = Instant::now();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let mut cmd = schemathesis();
    cmd.current_dir(dir.path())
        .args(["--config-file", config, "run"])
        .arg(format!("{}/v1/openapi.json", cp.url))
        .arg("--tls-verify")
        .arg(cp.ca_file())
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", cp.token()))
        .args(["--exclude-path-regex", AGENT_ROUTES])
        .args([
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
        ])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .args(["--no-color", "--output-truncate", "false"]);
    let out = run(cmd);
    let took = started.elapsed();
    let summary = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("==") && l.contains(" in "))
        .unwrap_or("(no summary line)");
    println!("schemathesis: {summary} ({took:.1?})");
    assert!(
        out.code == Some(0) && !summary.contains("failure") && !summary.contains("error"),
        "schemathesis found the document and the server disagree: {summary}\n--- stdout:\n{}\n--- stderr:\n{}\n--- control plane stderr:\n{}",
        out.stdout,
        out.stderr,
        support::tail(&cp.stderr(), 40)
    );
    assert!(
        took < RUN_BUDGET,
        "schemathesis took {took:?}, over its budget of {RUN_BUDGET:?}"
    );
    // Every operation schemathesis counts was tested, but the agent protocol's three.
    let selected = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .and_then(|s| s.split_once('/'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let Some((selected, total)) = selected else {
        panic!(
            "schemathesis printed no `Selected: N/M` line:\n{}",
            out.stdout
        );
    };
    assert_eq!(
        total - selected,
        4,
        "only the agent protocol's four routes are left out"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim() == format!("Tested: {selected}")),
        "not every selected operation was tested:\n{}",
        out.stdout
    );
}

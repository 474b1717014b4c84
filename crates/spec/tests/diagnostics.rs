//! Every problem in a file is reported, once, at the right line and column, with the field
//! path and a hint; and no input makes the parser panic.

use atoll_spec::{Diagnostic, Source, parse_sources};
use proptest::prelude::*;

fn diags(text: &str) -> Vec<Diagnostic> {
    parse_sources(&[Source {
        name: "f.yaml".into(),
        text: text.into(),
    }])
    .diagnostics
}

fn one(text: &str) -> Diagnostic {
    let d = diags(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    d.into_iter().next().unwrap()
}

const APP_HEAD: &str = "kind: Application\nname: a\nversion: '1'\nservices:\n";

#[test]
fn unknown_field_suggests_the_nearest_and_sits_on_its_line() {
    let d = one(&format!("{APP_HEAD}  - name: web\n    imgae: x\n"));
    assert_eq!((d.line, d.column), (6, 5));
    assert_eq!(d.path, "Application a.services[0]");
    assert_eq!(d.message, "unknown field `imgae`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `image`?"));
}

#[test]
fn unknown_field_without_a_near_name_lists_the_fields() {
    let d = one("kind: Site\nname: s\nfavourite_colour: blue\n");
    assert_eq!(d.line, 3);
    assert!(d.hint.unwrap().starts_with("expected one of: kind, name"));
}

#[test]
fn every_problem_in_every_document_is_collected() {
    let text = format!(
        "{APP_HEAD}  - name: web\n    image: x\n    resources: {{ memory: 12XB, cpu: lots }}\n    ports: [{{ container: 70000 }}]\n---\nkind: Site\nname: Bad_Name\nlabels: {{ '-x': y }}\n---\nkind: site\nname: s\n"
    );
    let d = diags(&text);
    let lines: Vec<usize> = d.iter().map(|d| d.line).collect();
    assert_eq!(d.len(), 6, "{d:#?}");
    assert_eq!(lines, [7, 7, 8, 11, 12, 14]);
    assert!(d[0].message.contains("12XB") || d[1].message.contains("12XB"));
    assert!(
        d[5].hint.as_deref() == Some("did you mean `Site`?"),
        "{:?}",
        d[5]
    );
}

#[test]
fn missing_required_fields_are_named() {
    let d = one("kind: Deployment\nname: d\napplication: a\n");
    assert_eq!(d.message, "missing field `placement`");
    let d = one("kind: Application\nname: a\nservices: [{ name: web, image: x }]\n");
    assert_eq!(d.message, "missing field `version`");
}

#[test]
fn a_typo_of_a_required_field_is_one_problem_not_two() {
    let d = one(&format!("{APP_HEAD}  - name: web\n    imag: x\n"));
    assert_eq!(d.message, "unknown field `imag`");
}

#[test]
fn duplicate_keys_and_resources() {
    let d = one("kind: Site\nname: s\nname: t\n");
    assert_eq!((d.line, d.message.as_str()), (3, "duplicate key `name`"));
    let d = one("kind: Site\nname: s\n---\nkind: Site\nname: s\n");
    assert_eq!(d.line, 4);
    assert!(
        d.message
            .contains("defined twice; the first is at f.yaml:1:1"),
        "{}",
        d.message
    );
}

#[test]
fn names_must_be_dns_labels() {
    let d = one("kind: Site\nname: Store_42\n");
    assert_eq!(d.line, 2);
    assert!(d.message.contains("DNS labels"));
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let d = one("kind: Site\nname: [s\nlabels: {}\n");
    assert!(d.message.starts_with("invalid YAML"), "{}", d.message);
    assert!(d.line >= 2);
}

#[test]
fn selector_errors_point_into_the_expression() {
    let d =
        one("kind: Deployment\nname: d\napplication: a\nplacement:\n  sites: \"region = eu\"\n");
    assert_eq!(d.line, 5);
    // The quote is at column 10, `region` at 11, the bad `=` at 18.
    assert_eq!(d.column, 18, "{d:?}");
    assert!(d.message.starts_with("selector:"));
}

#[test]
fn template_syntax_and_roots_are_checked_locally() {
    let d = one(&format!(
        "{APP_HEAD}  - name: web\n    image: x\n    env: {{ A: \"{{{{ sitee.name }}}}\" }}\n"
    ));
    assert!(
        d.message.contains("unknown template variable `sitee`"),
        "{}",
        d.message
    );
    let d = one(&format!(
        "{APP_HEAD}  - name: web\n    image: x\n    env: {{ A: \"{{{{ site.name \" }}\n"
    ));
    assert!(d.message.starts_with("template:"), "{}", d.message);
}

#[test]
fn service_level_rules() {
    let svc = |body: &str| diags(&format!("{APP_HEAD}  - name: web\n    image: x\n{body}"));
    assert!(
        svc("    mode: every-host\n    replicas: 2\n")[0]
            .message
            .contains("remove `replicas`")
    );
    assert!(
        svc("    health: { interval: 5s }\n")[0]
            .message
            .contains("exactly one of")
    );
    assert!(
        svc("    health: { tcp: { port: 1 }, command: [x] }\n")[0]
            .message
            .contains("exactly one of")
    );
    assert!(
        svc("    files: [{ path: etc/x, template: y }]\n")[0]
            .message
            .contains("absolute path")
    );
    assert!(
        svc("    files: [{ path: /x, template: y, mode: '999' }]\n")[0]
            .message
            .contains("file mode")
    );
    assert!(
        svc("    secrets: [{ name: db, env: DB }]\n")[0]
            .message
            .contains("needs `key`")
    );
    assert!(
        svc("    env: { 1BAD: x }\n")[0]
            .message
            .contains("environment variable name")
    );
    assert!(
        svc("    command: sh -c x\n")[0]
            .message
            .contains("expected a list")
    );
    assert!(
        svc("    volumes: [{ name: data, path: /d, read_only: yes }]\n")[0]
            .message
            .contains("true or false")
    );
    assert!(
        svc("    ports: [{ container: 80 }, { container: 80 }]\n")[0]
            .message
            .contains("listed twice")
    );
}

#[test]
fn a_nul_byte_in_env_is_refused_at_apply() {
    // Issue 12: a NUL in an env value was accepted and failed at the edge for ever.
    let d = one(&format!(
        "{APP_HEAD}  - name: web\n    image: x\n    env: {{ A: \"ab\\0c\" }}\n"
    ));
    assert_eq!((d.line, d.column), (7, 15), "{d:?}");
    assert_eq!(d.path, "Application a.services[0].env.A");
    assert!(
        d.message.contains("NUL byte at character 3"),
        "{}",
        d.message
    );
    // The other places a NUL cannot reach a container: its command line and its image.
    let svc = |body: &str| one(&format!("{APP_HEAD}  - name: web\n{body}"));
    let d = svc("    image: x\n    command: [sh, \"-c\\0\"]\n");
    assert_eq!(d.path, "Application a.services[0].command[1]");
    assert!(d.message.contains("NUL byte"), "{}", d.message);
    let d = svc("    image: x\n    args: [\"\\0\"]\n");
    assert_eq!(d.path, "Application a.services[0].args[0]");
    let d = diags(&format!(
        "{APP_HEAD}  - name: web\n    image: x\n    health: {{ command: [\"a\\0\"] }}\n"
    ));
    assert!(
        d.iter()
            .any(|d| d.path == "Application a.services[0].health.command[0]"),
        "{d:?}"
    );
    let d = svc("    image: \"x\\0\"\n");
    assert_eq!(d.path, "Application a.services[0].image");
    let d = svc("    image: x\n    files: [{ path: \"/etc/a\\0\", template: y }]\n");
    assert!(d.message.contains("absolute path"), "{}", d.message);
    // Labels and env names already refuse every control character.
    assert!(!diags("kind: Site\nname: s\nlabels: { a: \"x\\0\" }\n").is_empty());
    assert!(
        !diags(&format!(
            "{APP_HEAD}  - name: web\n    image: x\n    env: {{ \"A\\0\": x }}\n"
        ))
        .is_empty()
    );
}

#[test]
fn replicas_past_the_bound_are_refused() {
    // Issue 12: `replicas: 1000000` was accepted.
    let d = one(&format!(
        "{APP_HEAD}  - name: web\n    image: x\n    replicas: 1000000\n"
    ));
    assert_eq!(d.path, "Application a.services[0].replicas");
    assert_eq!((d.line, d.column), (7, 15));
    assert!(d.message.contains("most, 100"), "{}", d.message);
    assert!(
        diags(&format!(
            "{APP_HEAD}  - name: web\n    image: x\n    replicas: 100\n"
        ))
        .is_empty()
    );
}

#[test]
fn rollout_rules() {
    let dep = |rollout: &str| {
        diags(&format!(
            "kind: Deployment\nname: d\napplication: a\nplacement: {{ sites: 'has(x)' }}\nrollout:\n{rollout}"
        ))
    };
    assert!(
        dep("  waves: ['50%', '10%']\n")[0]
            .message
            .contains("must not shrink")
    );
    assert!(
        dep("  on_failure: explode\n")[0]
            .message
            .contains("unknown value")
    );
    assert!(dep("  max_parallel: 0\n")[0].message.contains("at least 1"));
    assert!(
        dep("  canary: { sites: 1, soak: 2 }\n")[0]
            .message
            .contains("needs a unit")
    );
    assert!(dep("  canary: { sites: 1, soak: 2m }\n  waves: [1, '100%']\n").is_empty());
}

#[test]
fn documents_must_be_mappings_with_a_kind() {
    assert!(one("- a\n- b\n").message.contains("expected a mapping"));
    assert_eq!(one("name: x\n").message, "missing field `kind`");
    assert!(diags("").is_empty());
    assert!(diags("---\n---\n").is_empty());
}

#[test]
fn errors_name_their_file() {
    let parsed = parse_sources(&[
        Source {
            name: "a.yaml".into(),
            text: "kind: Site\nname: ok\n".into(),
        },
        Source {
            name: "b.yaml".into(),
            text: "kind: Site\nname: s\nlables: {}\n".into(),
        },
    ]);
    assert_eq!(parsed.documents.len(), 2);
    assert_eq!(
        parsed.diagnostics[0].to_string(),
        "b.yaml:3:1: Site s: unknown field `lables` (did you mean `labels`?)"
    );
}

const CAMERA: &str = "kind: DeviceClass\nname: camera\nmatch:\n";

#[test]
fn a_device_class_reads_with_every_rule_field() {
    let text = format!(
        "{CAMERA}  - {{ subsystem: video4linux, name: '*Camera*' }}\n  - {{ vendor: 046d, product: '08e[0-9a-f]' }}\n  - {{ path: '/dev/video*', serial: '[!0]*' }}\ndescription: cameras\ngpu: nvidia\n"
    );
    assert!(diags(&text).is_empty(), "{:#?}", diags(&text));
}

#[test]
fn device_class_rules_are_checked_where_written() {
    // An invalid glob points at its `[`: the quote is at column 11, the pattern starts at 12.
    let d = one(&format!("{CAMERA}  - path: '/dev/[video'\n"));
    assert_eq!((d.line, d.column), (4, 17), "{d:?}");
    assert_eq!(d.path, "DeviceClass camera.match[0].path");
    assert!(d.message.starts_with("glob: unclosed `[`"), "{d:?}");
    // A reversed range points at the range.
    let d = one(&format!("{CAMERA}  - name: x[z-a]\n"));
    assert_eq!((d.line, d.column), (4, 13), "{d:?}");
    assert!(d.message.contains("range `z-a` is reversed"), "{d:?}");
    // Vendor ids are hex.
    let d = one(&format!("{CAMERA}  - vendor: Logitech\n"));
    assert_eq!((d.line, d.column), (4, 13), "{d:?}");
    assert!(d.message.contains("`L` is not a hex digit"), "{d:?}");
    // An empty rule would match everything.
    let d = one(&format!("{CAMERA}  - {{}}\n"));
    assert_eq!(
        (d.line, d.path.as_str()),
        (4, "DeviceClass camera.match[0]")
    );
    assert_eq!(d.message, "an empty rule would match every device");
    let d = one(&format!("{CAMERA}  - {{ subsystem: null }}\n"));
    assert_eq!(d.message, "an empty rule would match every device");
    // A misspelt field is unknown, with the nearest.
    let d = diags(&format!("{CAMERA}  - {{ vendr: 046d }}\n"));
    assert_eq!(d[0].message, "unknown field `vendr`");
    assert_eq!(d[0].hint.as_deref(), Some("did you mean `vendor`?"));
    // Some rule, and a known GPU vendor.
    assert_eq!(
        one("kind: DeviceClass\nname: c\n").message,
        "missing field `match`"
    );
    assert_eq!(
        one("kind: DeviceClass\nname: c\nmatch: []\n").message,
        "a device class needs at least one rule"
    );
    let d = one(&format!("{CAMERA}  - subsystem: drm\ngpu: amd\n"));
    assert_eq!(
        (d.line, d.message.as_str()),
        (5, "unknown GPU vendor `amd`")
    );
    // Names follow the rules of every resource.
    let d = one("kind: DeviceClass\nname: Camera\nmatch: [{ subsystem: video4linux }]\n");
    assert!(d.message.starts_with("invalid name `Camera`"), "{d:?}");
    let d = one("kind: DeviceClas\nname: c\n");
    assert_eq!(d.hint.as_deref(), Some("did you mean `DeviceClass`?"));
}

const APP_WITH: &str = "kind: Application\nname: a\nversion: '1'\nservices:\n  - name: web\n    image: x\n    requires:\n";

#[test]
fn requires_arch_and_devices_are_checked() {
    assert!(diags(&format!("{APP_WITH}      arch: arm64\n      devices: [camera, gpu]\n      host_labels: {{ size: large }}\n")).is_empty());
    let d = one(&format!("{APP_WITH}      arch: x86_64\n"));
    assert_eq!((d.line, d.column), (8, 13));
    assert_eq!(d.path, "Application a.services[0].requires.arch");
    assert_eq!(
        d.message,
        "unknown architecture `x86_64` (x86_64 is `amd64`): write one of amd64, arm64, arm, 386, ppc64le, s390x, riscv64, as images name them"
    );
    assert!(diags(&format!("{APP_WITH}      arch: '386'\n")).is_empty());
    let d = one(&format!("{APP_WITH}      devices: [camera, /dev/video0]\n"));
    assert_eq!(d.path, "Application a.services[0].requires.devices[1]");
    assert!(d.message.starts_with("invalid name `/dev/video0`"), "{d:?}");
    let d = one(&format!("{APP_WITH}      devices: [camera, camera]\n"));
    assert_eq!(d.message, "device class `camera` is listed twice");
}

const DEPLOY: &str = "kind: Deployment\nname: d\napplication: a\nplacement:\n  sites: has(x)\n";

#[test]
fn host_selectors_are_checked_like_site_selectors() {
    assert!(diags(&format!("{DEPLOY}  hosts: memory >= 8Gi && device.camera >= 1 && size in (medium, large, xlarge)\n")).is_empty());
    let d = one(&format!("{DEPLOY}  hosts: memory >= lots\n"));
    // `hosts: ` puts the selector at column 10; `lots` is 10 bytes in.
    assert_eq!((d.line, d.column), (6, 20), "{d:?}");
    assert_eq!(d.path, "Deployment d.placement.hosts");
    assert!(
        d.message
            .starts_with(r#"selector: expected a number after ">=", found "lots""#),
        "{d:?}"
    );
    let d = one(&format!("{DEPLOY}  hosts: \"cpus >= '4'\"\n"));
    assert_eq!((d.line, d.column), (6, 19), "{d:?}");
    let d = one(&format!("{DEPLOY}  hosts: device.Camera >= 1\n"));
    assert_eq!(d.line, 6);
    assert!(
        d.message.contains("`device.Camera` names no device class"),
        "{d:?}"
    );
    let d = one(&format!("{DEPLOY}  host: cpus >= 4\n"));
    assert_eq!(d.hint.as_deref(), Some("did you mean `hosts`?"));
}

const EXAMPLE: &str = include_str!("../../../examples/pos.yaml");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = diags(&text);
    }

    /// Damaging a realistic file anywhere gives diagnostics, never a panic, and every
    /// diagnostic points inside the file.
    #[test]
    fn damaged_examples_never_panic(cut in 0usize..EXAMPLE.len(), len in 0usize..20, insert in "[:\\-\\[\\]{}'\" a-z0-9\n]{0,8}") {
        let mut text = EXAMPLE.to_owned();
        let start = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start..=(start + len).min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(start);
        text.replace_range(start..end, &insert);
        let lines = text.lines().count().max(1) + 1;
        for d in diags(&text) {
            prop_assert!(d.line <= lines, "{d:?}");
        }
    }
}

#[test]
fn a_sites_failure_timeout_is_read_and_refused_out_of_its_range() {
    let parsed = parse_sources(&[Source {
        name: "f.yaml".into(),
        text: "kind: Site\nname: s\ncluster:\n  failure_timeout: 4s\n".into(),
    }]);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let atoll_spec::Resource::Site(site) = &parsed.documents[0].resource else {
        panic!("not a site");
    };
    assert_eq!(
        site.cluster.and_then(|c| c.failure_timeout).map(|t| t.0),
        Some(std::time::Duration::from_secs(4))
    );
    let d = one("kind: Site\nname: s\ncluster:\n  failure_timeout: 500ms\n");
    assert_eq!(
        (d.line, d.path.as_str()),
        (4, "Site s.cluster.failure_timeout")
    );
    assert!(d.message.contains("between 1s and 600s"), "{d:?}");
    let d = one("kind: Site\nname: s\ncluster:\n  heartbeat: 1s\n");
    assert_eq!(d.message, "unknown field `heartbeat`");
}

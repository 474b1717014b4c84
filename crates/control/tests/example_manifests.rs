//! The bundled examples compiled into each site's manifest, kept as snapshots: a change to
//! the compiler or the examples shows up here as a readable diff.

use atoll_api::secret::{Alphabet, Generate};
use atoll_control::core::apply::{Request, plan_apply};
use atoll_control::core::secrets::{self, Change, SecretMeta, SecretValues};
use atoll_control::core::state::{State, Versions};
use atoll_spec::{Source, parse_sources};
use atoll_store::Write;

#[test]
fn example_manifests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut sources = Vec::new();
    for name in ["pos.yaml", "sites.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        sources.push(Source {
            name: format!("examples/{name}"),
            text,
        });
    }
    let parsed = parse_sources(&sources);
    assert!(parsed.is_ok(), "{:?}", parsed.diagnostics);
    let request = Request {
        now: "2026-01-01T00:00:00Z",
        now_ms: 1_767_225_600_000,
        actor: "test",
        limits: atoll_spec::render::Limits::DEFAULT,
    };
    // The examples read one secret, generated per site.
    let mut state = State::default();
    let (meta, _) = secrets::change(
        &SecretMeta::default(),
        &SecretValues::default(),
        "password",
        Change::Generate {
            generate: Generate {
                length: 24,
                alphabet: Alphabet::Alphanumeric,
            },
            seed: vec![0; 32],
        },
    )
    .unwrap();
    state.secrets.insert("pos-db-password".into(), meta);
    let plan = plan_apply(&state, &Versions::new(), &parsed.documents, &request).unwrap();
    let mut count = 0;
    for write in plan.writes {
        if let Write::PutManifest(m) = write {
            let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            insta::assert_json_snapshot!(format!("manifest-{}", m.site), body);
            count += 1;
        }
    }
    assert_eq!(count, 4);
}

//! The bundled examples are valid, and every resource survives a trip through its serialized
//! form: what `atoll get -o yaml` prints can be applied again and means the same.

use atoll_spec::{Resource, Source, parse_sources};

fn examples() -> Vec<Source> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| Source {
            name: p.display().to_string(),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .collect()
}

#[test]
fn examples_are_valid() {
    let parsed = parse_sources(&examples());
    assert!(parsed.is_ok(), "{:#?}", parsed.diagnostics);
    assert!(parsed.documents.len() >= 6);
}

#[test]
fn resources_round_trip_through_their_serialized_form() {
    for doc in parse_sources(&examples()).documents {
        let json = serde_json::to_string_pretty(&doc.resource).unwrap();
        let again = parse_sources(&[Source {
            name: "again.json".into(),
            text: json.clone(),
        }]);
        assert!(again.is_ok(), "{json}\n{:#?}", again.diagnostics);
        assert_eq!(again.documents[0].resource, doc.resource, "{json}");
        let back: Resource = serde_json::from_str(&json).unwrap();
        assert_eq!(back, doc.resource);
    }
}

//! docs/openapi.yaml describes exactly the routes the service API serves:
//! the same (method, path) pairs as `iris_http::ROUTES`, which registers
//! them. Read line by line (paths at two spaces, methods at four), so that
//! the check needs no YAML parser.

use std::collections::BTreeSet;

fn documented() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            break; // the next top-level key
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            current = Some(format!("/{p}"));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'))
            && ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m)
        {
            let p = current.clone().expect("a method under a path");
            out.insert((m.to_owned(), p));
        }
    }
    out
}

#[test]
fn the_openapi_document_describes_exactly_the_served_routes() {
    let served: BTreeSet<(String, String)> =
        iris_http::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let documented = documented();
    assert!(!documented.is_empty(), "no paths read from docs/openapi.yaml");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not in docs/openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "in docs/openapi.yaml but not served: {extra:?}");
}

#[test]
fn every_route_names_its_credential_and_its_errors() {
    // Each operation says which credential it takes and documents 401.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let ops = text.matches("      operationId: ").count();
    assert_eq!(ops, iris_http::ROUTES.len(), "one operationId per route");
    assert_eq!(text.matches("      security: ").count(), ops, "every operation names its credential");
    assert_eq!(
        text.matches("        '401': {$ref: '#/components/responses/Unauthorized'}").count(),
        ops,
        "every operation documents 401"
    );
}

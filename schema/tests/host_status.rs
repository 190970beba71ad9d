//! The host status report's committed JSON Schema is what the types generate, and the
//! schema and the parser agree on the example report and on broken ones.

#![allow(clippy::unwrap_used)]

use ferry_schema::host_status::{ServiceState, parse_report};
use ferry_schema::json_schema::{host_status_schema_json, host_status_schema_value};
use serde_json::Value;

const EXAMPLE: &str = include_str!("fixtures/host-status.json");

#[test]
fn committed_host_status_schema_is_fresh() {
    let committed = include_str!("../host-status.v1.schema.json");
    assert!(
        committed == host_status_schema_json(),
        "schema/host-status.v1.schema.json is stale: regenerate it with `cargo run -q -p ferry-schema --example print_schema host-status > schema/host-status.v1.schema.json`"
    );
}

#[test]
fn the_example_report_passes_the_schema_and_the_parser() {
    let schema = jsonschema::validator_for(&host_status_schema_value()).unwrap();
    let doc: Value = serde_json::from_str(EXAMPLE).unwrap();
    let errors: Vec<String> = schema.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let report = parse_report("hosts/web-1.json", "web-1", EXAMPLE.as_bytes()).unwrap();
    assert_eq!(report.services[0].state, ServiceState::RolledBack);
}

#[test]
fn schema_and_parser_both_refuse_a_report_without_its_host_or_with_an_unknown_state() {
    let schema = jsonschema::validator_for(&host_status_schema_value()).unwrap();
    let mut no_host: Value = serde_json::from_str(EXAMPLE).unwrap();
    no_host.as_object_mut().unwrap().remove("host");
    let mut bad_state: Value = serde_json::from_str(EXAMPLE).unwrap();
    bad_state["services"][1]["state"] = "sleeping".into();
    for doc in [no_host, bad_state] {
        assert!(!schema.is_valid(&doc), "schema accepted {doc}");
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert!(parse_report("hosts/web-1.json", "web-1", &bytes).is_err());
    }
}

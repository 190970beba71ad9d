//! Prints the manifest v1 JSON Schema (what `ferry schema` prints), for regenerating
//! `schema/manifest.v1.schema.json`: `cargo run -p ferry-schema --example print_schema`;
//! with the argument `host-status`, the host status report's, for
//! `schema/host-status.v1.schema.json`.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("host-status") => print!("{}", ferry_schema::json_schema::host_status_schema_json()),
        _ => print!("{}", ferry_schema::schema_json()),
    }
}

//! Prints the manifest v1 JSON Schema (what `ferry schema` prints), for regenerating
//! `schema/manifest.v1.schema.json`: `cargo run -p ferry-schema --example print_schema`.

fn main() {
    print!("{}", ferry_schema::schema_json());
}

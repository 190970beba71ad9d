//! The manifest's JSON Schema, generated from the Rust types (doc comments become
//! descriptions). `schema/manifest.v1.schema.json` is this output, committed; a test fails
//! when it is stale.

use schemars::generate::SchemaSettings;
use schemars::transform::transform_subschemas;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use crate::manifest::Manifest;

/// The `$id` of the v1 schema.
pub const SCHEMA_ID: &str = "https://ferry.invalid/manifest.v1.schema.json";

/// The schema as a JSON value.
pub fn schema_value() -> Value {
    let generator: SchemaGenerator = SchemaSettings::draft2020_12()
        .with_transform(reject_null)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<Manifest>();
    schema.insert("$id".to_owned(), Value::String(SCHEMA_ID.to_owned()));
    schema.to_value()
}

/// The schema as pretty-printed JSON with a trailing newline (the committed file's bytes).
pub fn schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&schema_value()).unwrap_or_default();
    text.push('\n');
    text
}

/// Optional fields are written by leaving them out; `null` is rejected. schemars describes
/// `Option<T>` as "T or null"; this drops the null branch so the schema says what the
/// validator accepts, and so errors inside an optional object point at the field instead of
/// a vague "not valid under any of the schemas".
fn reject_null(schema: &mut Schema) {
    transform_subschemas(&mut reject_null, schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            obj.insert("type".to_owned(), only);
        }
    }
    let non_null = match obj.get("anyOf") {
        Some(Value::Array(branches)) if branches.len() == 2 => {
            let is_null = |v: &Value| v.get("type").is_some_and(|t| t == "null");
            match (is_null(&branches[0]), is_null(&branches[1])) {
                (true, false) => Some(branches[1].clone()),
                (false, true) => Some(branches[0].clone()),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(Value::Object(inner)) = non_null {
        obj.remove("anyOf");
        for (k, v) in inner {
            obj.entry(k).or_insert(v);
        }
    }
}

//! The JSON Schemas of the manifest and of the host status report, generated from the Rust
//! types (doc comments become descriptions). `schema/manifest.v1.schema.json` and
//! `schema/host-status.v1.schema.json` are this output, committed; tests fail when they are
//! stale.

use schemars::generate::SchemaSettings;
use schemars::transform::transform_subschemas;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use crate::host_status::HostStatus;
use crate::manifest::Manifest;

/// The `$id` of the v1 schema.
pub const SCHEMA_ID: &str = "https://ferry.invalid/manifest.v1.schema.json";

/// The `$id` of the host status report's v1 schema.
pub const HOST_STATUS_SCHEMA_ID: &str = "https://ferry.invalid/host-status.v1.schema.json";

/// The manifest's schema as a JSON value.
pub fn schema_value() -> Value {
    value_for::<Manifest>(SCHEMA_ID)
}

/// The manifest's schema as pretty-printed JSON with a trailing newline (the committed
/// file's bytes).
pub fn schema_json() -> String {
    pretty(&schema_value())
}

/// The host status report's schema as a JSON value.
pub fn host_status_schema_value() -> Value {
    value_for::<HostStatus>(HOST_STATUS_SCHEMA_ID)
}

/// The host status report's schema as the committed file's bytes.
pub fn host_status_schema_json() -> String {
    pretty(&host_status_schema_value())
}

fn value_for<T: schemars::JsonSchema>(id: &str) -> Value {
    let generator: SchemaGenerator = SchemaSettings::draft2020_12()
        .with_transform(reject_null)
        .with_transform(bound_unsigned)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    schema.insert("$id".to_owned(), Value::String(id.to_owned()));
    schema.to_value()
}

fn pretty(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
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

/// schemars bounds `u8`/`u16` fields with `maximum` but leaves `u32` and `u64` with only a
/// `format`, which validators do not check; this adds the type's largest value, so a number
/// too big for the Rust type is reported by the schema layer at its pointer instead of by
/// serde without one.
fn bound_unsigned(schema: &mut Schema) {
    transform_subschemas(&mut bound_unsigned, schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let max = match obj.get("format").and_then(Value::as_str) {
        Some("uint8") => u64::from(u8::MAX),
        Some("uint16") => u64::from(u16::MAX),
        Some("uint32") => u64::from(u32::MAX),
        Some("uint64") => u64::MAX,
        _ => return,
    };
    obj.entry("maximum").or_insert(Value::from(max));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unsigned field, wherever it sits, carries its type's maximum.
    #[test]
    fn unsigned_fields_have_a_maximum() {
        fn walk(v: &Value, here: &str, seen: &mut usize) {
            match v {
                Value::Object(map) => {
                    if let Some(format) = map.get("format").and_then(Value::as_str)
                        && format.starts_with("uint")
                    {
                        *seen += 1;
                        assert!(
                            map.contains_key("maximum"),
                            "{here} ({format}) has no maximum"
                        );
                    }
                    for (k, x) in map {
                        walk(x, &format!("{here}/{k}"), seen);
                    }
                }
                Value::Array(items) => items.iter().for_each(|x| walk(x, here, seen)),
                _ => {}
            }
        }
        let mut seen = 0;
        walk(&schema_value(), "", &mut seen);
        assert!(seen >= 8, "only {seen} unsigned fields found");
        let schema = schema_value();
        let version = &schema["properties"]["version"];
        assert_eq!(version["maximum"], u32::MAX, "{version}");
        // A bound of our own wins over the type's.
        let restart_sec = &schema["$defs"]["SystemdOptions"]["properties"]["restartSec"];
        assert_eq!(restart_sec["maximum"], 3600, "{restart_sec}");
    }
}

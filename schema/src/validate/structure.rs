//! The JSON Schema layer: types, required fields and unknown fields, checked with the
//! `jsonschema` crate against the generated schema. Unknown fields get a "did you mean"
//! suggestion from the field names the schema allows at that place.

use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::depends::closest;
use super::report::{Report, q, token, who};
use crate::json_schema::schema_value;

struct Compiled {
    schema: Value,
    validator: Validator,
}

/// The compiled schema, built once per process.
fn compiled() -> Result<&'static Compiled, &'static str> {
    static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let schema = schema_value();
            let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
            Ok(Compiled { schema, validator })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Reports every place where `doc` does not match the manifest v1 schema.
pub fn check(doc: &Value, report: &mut Report) {
    let compiled = match compiled() {
        Ok(c) => c,
        Err(e) => {
            // A bug in ferry, not in the manifest; still never accept unchecked input.
            report.error(
                "",
                format!("ferry's built-in schema does not compile ({e}); please report this"),
            );
            return;
        }
    };
    for error in compiled.validator.iter_errors(doc) {
        let pointer = error.instance_path.as_str().to_owned();
        let subject = subject(doc, &pointer);
        match &error.kind {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = allowed_fields(&compiled.schema, &pointer);
                for field in unexpected {
                    let hint = closest_field(field, &allowed)
                        .map(|f| format!("did you mean {}?", q(f)))
                        .unwrap_or_else(|| format!("allowed here: {}", allowed.join(", ")));
                    report.error(
                        format!("{pointer}/{}", token(field)),
                        format!("{subject}: unknown field {}; {hint}", q(field)),
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                report.error(
                    format!("{pointer}/{}", token(name)),
                    format!(
                        "{subject}: required field {} is missing{}; add it",
                        q(name),
                        place(&pointer)
                    ),
                );
            }
            ValidationErrorKind::AnyOf { .. } => {
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {}{} is not an accepted value; {}",
                        short(&error.instance),
                        place(&pointer),
                        accepted(&pointer)
                    ),
                );
            }
            _ => {
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {}{}",
                        one_line(&error.to_string()),
                        place(&pointer)
                    ),
                );
            }
        }
    }
}

/// Who a pointer is about: "service `web`" under `/services/<i>`, otherwise "manifest".
fn subject(doc: &Value, pointer: &str) -> String {
    let Some(rest) = pointer.strip_prefix("/services/") else {
        return "manifest".to_owned();
    };
    let i = rest.split('/').next().unwrap_or_default();
    match doc
        .pointer(&format!("/services/{i}/name"))
        .and_then(Value::as_str)
    {
        Some(name) => who(name),
        None => format!("service #{i}"),
    }
}

/// " (in http)" style suffix naming the field's place inside the service, for messages.
fn place(pointer: &str) -> String {
    let inner: Vec<&str> = pointer.split('/').skip(3).collect();
    if pointer.starts_with("/services/") && !inner.is_empty() {
        format!(" (at {})", inner.join("."))
    } else {
        String::new()
    }
}

fn accepted(pointer: &str) -> &'static str {
    if pointer.ends_with("/protectSystem") {
        "use true, false, \"full\" or \"strict\""
    } else if pointer.ends_with("/protectHome") {
        "use true, false, \"read-only\" or \"tmpfs\""
    } else {
        "see `ferry schema` for the accepted values"
    }
}

/// A value shortened for a one-line message.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn one_line(s: &str) -> String {
    s.escape_debug().to_string()
}

/// Field names the schema allows at the object `pointer` points to.
fn allowed_fields(schema: &Value, pointer: &str) -> Vec<String> {
    let mut node = resolve(schema, schema);
    for part in pointer.split('/').skip(1) {
        let next = node
            .get("properties")
            .and_then(|p| p.get(part))
            .or_else(|| node.get("items").filter(|_| part.parse::<usize>().is_ok()));
        match next {
            Some(n) => node = resolve(schema, n),
            None => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Follows a local `$ref` (`#/$defs/X`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(path) => root.pointer(path).unwrap_or(node),
        None => node,
    }
}

/// A known field close to `unknown`: same letters ignoring case, `_` and `-`
/// (`internal_port` → `internalPort`), or a small edit distance.
fn closest_field<'a>(unknown: &str, allowed: &'a [String]) -> Option<&'a str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_lowercase()
    };
    let target = squash(unknown);
    allowed
        .iter()
        .find(|a| squash(a) == target)
        .map(String::as_str)
        .or_else(|| closest(unknown, allowed.iter().map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_fields_follow_refs() {
        let schema = schema_value();
        let http = allowed_fields(&schema, "/services/3/http");
        assert!(http.contains(&"internalPort".to_owned()), "{http:?}");
        let top = allowed_fields(&schema, "");
        assert!(top.contains(&"generation".to_owned()));
    }

    #[test]
    fn near_misses_are_suggested() {
        let allowed: Vec<String> = ["domain", "path", "internalPort", "strategy"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            closest_field("internal_port", &allowed),
            Some("internalPort")
        );
        assert_eq!(closest_field("domian", &allowed), Some("domain"));
        assert_eq!(closest_field("completelydifferent", &allowed), None);
    }
}

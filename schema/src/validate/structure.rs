//! The JSON Schema layer: types, required fields and unknown fields, checked with the
//! `jsonschema` crate against the generated schema. Unknown fields get a "did you mean"
//! suggestion from the field names the schema allows at that place.

use std::collections::HashSet;
use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::{Number, Value};

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
            // The schema says 2020-12, but checking it against 2020-12's meta-schema costs
            // the agent about 40 MiB of peak memory (6 MiB for 2019-09) on every tick that
            // accepts a manifest. Every keyword the schema uses means the same in both
            // drafts (`same_in_both_drafts` below keeps it so).
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft201909)
                .build(&schema)
                .map_err(|e| e.to_string())?;
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
    // The yes/no check stops at nothing and allocates nothing; collecting errors builds
    // iterators at every level even when there are none, and costs several times more on
    // a large valid manifest (the agent validates one on every tick that fetches one).
    if compiled.validator.is_valid(doc) {
        return;
    }
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
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                let values = accepted_values(&compiled.schema, &pointer);
                let hint = if values.is_empty() {
                    "see `ferry schema` for what is accepted".to_owned()
                } else {
                    format!("use one of {}", values.join(", "))
                };
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {}{} is not an accepted value; {hint}",
                        short(&error.instance),
                        place(&pointer)
                    ),
                );
            }
            ValidationErrorKind::Maximum { limit } | ValidationErrorKind::Minimum { limit } => {
                let side = if matches!(error.kind, ValidationErrorKind::Maximum { .. }) {
                    "over the maximum"
                } else {
                    "under the minimum"
                };
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {} is {side} of {limit}{}; {}",
                        short(&error.instance),
                        place(&pointer),
                        range_hint(&compiled.schema, &pointer)
                    ),
                );
            }
            ValidationErrorKind::Type { .. } => {
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {} has the wrong type{}; {}",
                        short(&error.instance),
                        place(&pointer),
                        type_hint(&compiled.schema, &pointer)
                    ),
                );
            }
            _ => {
                report.error(
                    pointer.clone(),
                    format!(
                        "{subject}: {}{}; see `ferry schema` for what is accepted",
                        one_line(&error.to_string()),
                        place(&pointer)
                    ),
                );
            }
        }
    }
}

/// Reports numbers written with a decimal point or an exponent (`8000.0`, `8e3`) where the
/// schema wants an integer. JSON Schema counts them as integers, but the Rust types (and
/// so the agent) refuse them; without this they would surface as a serde error with no
/// pointer. Places the schema layer already reported (e.g. over the maximum) are skipped.
///
/// Only needed when the typed parse failed: where it succeeded, every integer field held an
/// integer (serde refuses `8000.0` for a `u16`), so the walk is skipped on the valid path.
pub fn check_whole_numbers(doc: &Value, report: &mut Report) {
    let Ok(compiled) = compiled() else {
        return; // `check` has reported that already.
    };
    let schema = &compiled.schema;
    let mut floats = Vec::new();
    walk_floats(doc, &mut Vec::new(), &mut floats);
    if floats.is_empty() {
        return;
    }
    let reported: HashSet<String> = report.error_pointers().into_iter().collect();
    for (pointer, n) in floats {
        let wants_integer = node_at(schema, &pointer)
            .and_then(|node| node.get("type"))
            .is_some_and(|t| t == "integer");
        if wants_integer && !reported.contains(&pointer) {
            report.error(
                pointer.as_str(),
                format!(
                    "{}: {n} is not written as a whole number{}; write it without a decimal point or exponent, e.g. {}",
                    subject(doc, &pointer),
                    place(&pointer),
                    n.as_f64().map_or_else(|| "8000".to_owned(), |f| format!("{f:.0}"))
                ),
            );
        }
    }
}

/// A step from a JSON value to one of its children.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Collects the pointer and value of every number that is not an `i64`/`u64`. The path is
/// kept as borrowed steps and turned into a pointer only for such a number: a manifest has
/// tens of thousands of values and hardly ever a float, and this runs on every validation.
fn walk_floats<'a>(v: &'a Value, path: &mut Vec<Step<'a>>, found: &mut Vec<(String, Number)>) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let pointer = path
                .iter()
                .map(|step| match step {
                    Step::Key(k) => format!("/{}", token(k)),
                    Step::Index(i) => format!("/{i}"),
                })
                .collect();
            found.push((pointer, n.clone()));
        }
        Value::Object(map) => {
            for (k, child) in map {
                path.push(Step::Key(k));
                walk_floats(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Step::Index(i));
                walk_floats(child, path, found);
                path.pop();
            }
        }
        _ => {}
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
        format!(" (at {})", one_line(&inner.join(".")))
    } else {
        String::new()
    }
}

/// The literal values the schema accepts at `pointer` (`true`, `"strict"`…), from the
/// `const`, `enum` and boolean branches of its `anyOf`/`oneOf`.
fn accepted_values(schema: &Value, pointer: &str) -> Vec<String> {
    let Some(node) = node_at(schema, pointer) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_values(schema, node, &mut out);
    out
}

fn collect_values(schema: &Value, node: &Value, out: &mut Vec<String>) {
    let node = resolve(schema, node);
    if let Some(c) = node.get("const") {
        out.push(c.to_string());
    }
    for v in node
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(v.to_string());
    }
    if node.get("type").and_then(Value::as_str) == Some("boolean") {
        out.extend(["true".to_owned(), "false".to_owned()]);
    }
    for key in ["anyOf", "oneOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_values(schema, branch, out);
        }
    }
}

/// A value shortened for a one-line message. JSON text escapes only the C0 controls, so
/// DEL, C1 controls (U+009B starts a terminal escape) and line separators are escaped here.
fn short(v: &Value) -> String {
    let text = one_line(&v.to_string());
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// `s` with control characters escaped, so a message stays on one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if super::text::is_line_breaking(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What to write instead of a value of the wrong type.
fn type_hint(schema: &Value, pointer: &str) -> &'static str {
    match node_at(schema, pointer)
        .and_then(|n| n.get("type"))
        .and_then(Value::as_str)
    {
        Some("integer") => "write a whole number without quotes",
        Some("string") => "write a string in double quotes",
        Some("array") => "write a JSON array, e.g. [\"a\", \"b\"]",
        Some("object") => "write a JSON object { ... } (leave the field out to use the defaults)",
        Some("boolean") => "write true or false without quotes",
        _ => "see `ferry schema` for what is accepted",
    }
}

/// What to write instead of a number out of the range the schema gives at `pointer`.
fn range_hint(schema: &Value, pointer: &str) -> String {
    let node = node_at(schema, pointer);
    let bound = |key: &str| node.and_then(|n| n.get(key)).and_then(Value::as_u64);
    match (bound("minimum"), bound("maximum")) {
        (None | Some(0), Some(max)) => format!("use at most {max}"),
        (Some(min), Some(max)) => format!("use {min}-{max}"),
        (Some(min), None) => format!("use at least {min}"),
        (None, None) => "see `ferry schema` for what is accepted".to_owned(),
    }
}

/// Field names the schema allows at the object `pointer` points to.
fn allowed_fields(schema: &Value, pointer: &str) -> Vec<String> {
    node_at(schema, pointer)
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The subschema describing the value at the instance location `pointer` (following
/// `properties`, `items`, a map's `additionalProperties` and local `$ref`s).
fn node_at<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = resolve(schema, schema);
    for part in pointer.split('/').skip(1) {
        let next = node
            .get("properties")
            .and_then(|p| p.get(part))
            .or_else(|| node.get("items").filter(|_| part.parse::<usize>().is_ok()))
            // A map such as `systems`: any key, each value the same subschema.
            .or_else(|| node.get("additionalProperties").filter(|v| v.is_object()))?;
        node = resolve(schema, next);
    }
    Some(node)
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

    /// Keywords whose meaning is the same in drafts 2019-09 and 2020-12 (2020-12 changed
    /// `items` only in its array form, which became `prefixItems`, and replaced
    /// `$recursiveRef` with `$dynamicRef`).
    const SAME_IN_BOTH: &[&str] = &[
        "$defs",
        "$id",
        "$ref",
        "$schema",
        "additionalProperties",
        "anyOf",
        "const",
        "description",
        "format",
        "items",
        "maximum",
        "minimum",
        "oneOf",
        "properties",
        "required",
        "title",
        "type",
        "enum",
        "default",
        "pattern",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "allOf",
        "not",
        "examples",
    ];

    fn keywords<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map {
                    out.push((k.as_str(), x));
                    if k == "properties" || k == "$defs" {
                        for y in x.as_object().into_iter().flat_map(|m| m.values()) {
                            keywords(y, out);
                        }
                    } else {
                        keywords(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| keywords(x, out)),
            _ => {}
        }
    }

    #[test]
    fn same_in_both_drafts() {
        let schema = schema_value();
        let mut found = Vec::new();
        keywords(&schema, &mut found);
        for (k, v) in found {
            assert!(
                SAME_IN_BOTH.contains(&k),
                "the schema uses {k:?}: check it means the same in 2019-09 (what `compiled` checks with) and 2020-12"
            );
            if k == "items" {
                assert!(v.is_object() || v.is_boolean(), "array-form items: {v}");
            }
        }
        // And the validator built with 2019-09 gives the same verdicts on real documents.
        let full = jsonschema::validator_for(&schema).unwrap();
        let ours = &compiled().unwrap().validator;
        let example: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/example.json")).unwrap();
        let mut bad = example.clone();
        bad["services"][0]["http"]["internalPort"] = serde_json::json!("8000");
        bad["services"][0]["extra"] = serde_json::json!(1);
        for (doc, errors) in [(&example, 0), (&bad, 2)] {
            let a: Vec<String> = full.iter_errors(doc).map(|e| e.to_string()).collect();
            let b: Vec<String> = ours.iter_errors(doc).map(|e| e.to_string()).collect();
            assert_eq!(a, b);
            assert_eq!(b.len(), errors, "{b:?}");
        }
    }

    #[test]
    fn allowed_fields_follow_refs() {
        let schema = schema_value();
        let http = allowed_fields(&schema, "/services/3/http");
        assert!(http.contains(&"internalPort".to_owned()), "{http:?}");
        let top = allowed_fields(&schema, "");
        assert!(top.contains(&"generation".to_owned()));
    }

    #[test]
    fn accepted_values_come_from_the_schema() {
        let schema = schema_value();
        let values = accepted_values(&schema, "/services/0/hardening/protectSystem");
        assert_eq!(values, ["true", "false", "\"full\"", "\"strict\""]);
        let kinds = accepted_values(&schema, "/services/0/artifact/type");
        assert_eq!(kinds, ["\"nix-closure\""]);
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

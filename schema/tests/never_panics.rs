//! Property test: whatever a manifest is mutated into (values replaced, fields removed or
//! renamed), parsing and validating it returns problems instead of panicking, and every
//! problem has a pointer and fits on one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_schema::{DEFAULT_SIZE_CAP, validate_bytes, validate_manifest};
use proptest::prelude::*;
use serde_json::Value;

const EXAMPLE: &str = include_str!("fixtures/example.json");

/// Values that stress the checks: wrong types, edge numbers, hostile strings.
fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".*".prop_map(Value::String),
        "[a-z./\\-%$\n\u{0}]{0,12}".prop_map(Value::String),
        Just(Value::String("/nix/store/..".to_owned())),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([
            "podcastitlater-web",
            "podcastitlater-web"
        ])),
    ]
}

/// One change to the document at some location.
#[derive(Debug, Clone)]
enum Mutation {
    /// The value there becomes this.
    Replace(Value),
    /// The member goes (a required field missing, an optional one left out).
    Remove,
    /// The member moves to another key (a typo, a snake_case spelling, junk).
    Rename(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => nasty_value().prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
        1 => prop_oneof![
            "[a-zA-Z_]{1,14}",
            Just("internal_port".to_owned()),
            Just("dependOn".to_owned()),
            Just("a/b~c".to_owned()),
            Just("a\nb\u{1b}[2J\u{2028}".to_owned()),
        ]
        .prop_map(Mutation::Rename),
    ]
}

/// Applies `m` at `target` (a pointer from [`pointers`]); removing or renaming an array
/// element or the root does nothing.
fn apply(doc: &mut Value, target: &str, m: Mutation) {
    if let Mutation::Replace(value) = m {
        if target.is_empty() {
            *doc = value;
        } else if let Some(slot) = doc.pointer_mut(target) {
            *slot = value;
        }
        return;
    }
    let Some((parent, key)) = target.rsplit_once('/') else {
        return;
    };
    let Some(Value::Object(map)) = doc.pointer_mut(parent) else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    let Some(old) = map.remove(&key) else {
        return;
    };
    if let Mutation::Rename(new_key) = m {
        map.insert(new_key, old);
    }
}

/// Every location in the example document, as JSON Pointers.
fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                pointers(
                    child,
                    format!("{here}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn mutated_manifests_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), mutation()), 1..6),
        duplicate in any::<bool>(),
    ) {
        let mut doc: Value = serde_json::from_str(EXAMPLE).unwrap();
        if duplicate {
            let copy = doc["services"][0].clone();
            doc["services"].as_array_mut().unwrap().push(copy);
        }
        for (index, m) in edits {
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            let target = index.get(&all).clone();
            apply(&mut doc, &target, m);
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        let result = validate_bytes(&bytes, DEFAULT_SIZE_CAP);
        if let Err(problems) = &result {
            // The schema layer and the Rust types agree: whatever serde refuses, the schema
            // layer reported first, at its pointer and naming the service.
            prop_assert!(
                problems.iter().all(|p| !p.message.contains("does not fit manifest v1")),
                "{problems:#?}"
            );
            // `ferry validate` prints one problem per line, with nothing that drives a
            // terminal, whatever the keys hold.
            prop_assert!(
                problems.iter().all(|p| !p.to_string().chars().any(char::is_control)),
                "{problems:#?}"
            );
            prop_assert!(problems.iter().any(|p| p.is_error()));
        }
        if let Ok(validated) = result {
            // Whatever passes the bytes layer passes the typed layer too.
            prop_assert!(validate_manifest(&validated.manifest).iter().all(|p| !p.is_error()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate_bytes(&bytes, DEFAULT_SIZE_CAP);
    }

    #[test]
    fn truncated_example_never_panics(cut in 0..EXAMPLE.trim_end().len()) {
        prop_assert!(validate_bytes(&EXAMPLE.as_bytes()[..cut], DEFAULT_SIZE_CAP).is_err());
    }
}

//! Getting a typed service out of one that does not fit the schema, by leaving out the
//! values the schema layer already complained about, so the semantic checks can still
//! report everything else about that service in the same run.

use serde::Deserialize;
use serde_json::Value;

use crate::manifest::Service;

/// How many times a failed attempt widens what is left out (a bad field, then the object
/// holding it, ...).
const WIDENINGS: usize = 4;

/// `service` (at `/services/<i>`) with the values at `bad` pointers left out, if what
/// remains is a service.
pub fn salvage_service(i: usize, service: &Value, bad: &[String]) -> Option<Service> {
    let prefix = format!("/services/{i}");
    let mut cut: Vec<Vec<String>> = bad
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(|rest| rest.split('/').skip(1).map(unescape).collect())
        .collect();
    if cut.iter().any(Vec::is_empty) {
        return None;
    }
    for _ in 0..WIDENINGS {
        let mut trimmed = service.clone();
        for tokens in &cut {
            remove_at(&mut trimmed, tokens);
        }
        if let Ok(s) = Service::deserialize(&trimmed) {
            return Some(s);
        }
        // A top-level field of the service is as wide as a cut gets; a required one that
        // is bad makes the service unsalvageable, which the loop's end reports.
        for tokens in &mut cut {
            if tokens.len() > 1 {
                tokens.pop();
            }
        }
    }
    None
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Removes the object member at `tokens`. Array elements are not removed one by one (that
/// would shift the indices later pointers use); the whole array goes instead.
fn remove_at(value: &mut Value, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut node = value;
    for token in parents {
        if matches!(node.get(token), Some(Value::Array(_))) {
            remove_at_obj(node, token);
            return;
        }
        match node.get_mut(token) {
            Some(child) => node = child,
            None => return,
        }
    }
    remove_at_obj(node, last);
}

fn remove_at_obj(node: &mut Value, key: &str) {
    if let Value::Object(map) = node {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bad_optional_fields_are_left_out() {
        let service = json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-b"},
            "hosts": ["h"], "exec": {"command": "web"},
            "http": {"domain": "x.com", "path": "/", "internalPort": "8000"},
            "hardening": {"protectSystem": "maybe"}, "typo": 1
        });
        let bad = [
            "/services/3/http/internalPort".to_owned(),
            "/services/3/hardening/protectSystem".to_owned(),
            "/services/3/typo".to_owned(),
        ];
        let s = salvage_service(3, &service, &bad).unwrap();
        assert_eq!(s.name, "web");
        assert!(
            s.http.is_none(),
            "http lost its required port, so it goes as a whole"
        );
        assert!(s.hardening.is_none_or(|h| h.protect_system.is_none()));
        assert_eq!(s.hosts, ["h"]);
    }

    #[test]
    fn missing_required_fields_cannot_be_salvaged() {
        let service = json!({"hosts": ["h"]});
        assert!(salvage_service(0, &service, &["/services/0/name".to_owned()]).is_none());
    }
}

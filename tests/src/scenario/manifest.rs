//! The scenario's manifests: `web` (HTTP through Caddy, health-checked, updated blue-green)
//! and `worker` on host A, `batch` on host B only. Pure.

use serde_json::{Value, json};

/// Host A's name in manifests (bed host 0).
pub const HOST_A: &str = "host-a";
/// Host B's name in manifests (bed host 1).
pub const HOST_B: &str = "host-b";
/// The domain Caddy routes to `web`.
pub const WEB_DOMAIN: &str = "web.ferry.test";
/// `web`'s first port on host A; blue-green also uses the next one.
pub const WEB_PORT: u16 = 8000;
const WORKER_PORT: u16 = 8100;
const BATCH_PORT: u16 = 8200;

/// The first manifest: web and worker on host A, batch on host B.
pub fn initial(web: &str, worker: &str, batch: &str) -> Value {
    json!({
        "version": 1,
        "generation": "2026-01-01T00:00:00Z",
        "services": [web_service(web), worker_service(worker), batch_service(batch)],
    })
}

/// `manifest` without the service `name`.
pub fn without(manifest: &Value, name: &str) -> Value {
    let mut m = manifest.clone();
    if let Some(services) = m.get_mut("services").and_then(Value::as_array_mut) {
        services.retain(|s| s.get("name").and_then(Value::as_str) != Some(name));
    }
    // The signature covered the old content; `ferry publish` signs the new one.
    if let Some(obj) = m.as_object_mut() {
        obj.remove("signatures");
    }
    m
}

/// The store path `manifest` names for `service`.
pub fn store_path<'a>(manifest: &'a Value, service: &str) -> Option<&'a str> {
    manifest
        .get("services")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(service))?
        .pointer("/artifact/storePath")?
        .as_str()
}

fn web_service(path: &str) -> Value {
    json!({
        "name": "web",
        "artifact": {"type": "nix-closure", "storePath": path},
        "hosts": [HOST_A],
        "exec": {"command": "ferry-testsvc"},
        // No PORT here: each blue-green instance gets its own from the agent.
        "http": {
            "domain": WEB_DOMAIN, "path": "/", "internalPort": WEB_PORT,
            "strategy": "blue-green",
        },
        "healthCheck": {
            "type": "http", "path": "/health", "expectStatus": 200,
            "intervalSec": 1, "retries": 3, "timeoutSec": 2,
        },
        "hardening": {"dynamicUser": true},
    })
}

fn worker_service(path: &str) -> Value {
    json!({
        "name": "worker",
        "artifact": {"type": "nix-closure", "storePath": path},
        "hosts": [HOST_A],
        "exec": {"command": "ferry-testsvc"},
        "env": {"PORT": WORKER_PORT.to_string()},
        "hardening": {"dynamicUser": true},
    })
}

fn batch_service(path: &str) -> Value {
    json!({
        "name": "batch",
        "artifact": {"type": "nix-closure", "storePath": path},
        "hosts": [HOST_B],
        "exec": {"command": "ferry-testsvc"},
        "env": {"PORT": BATCH_PORT.to_string()},
        "hardening": {"dynamicUser": true},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_manifest_is_valid_and_editable() {
        let m = initial("/nix/store/aaa-web", "/nix/store/bbb-w", "/nix/store/ccc-b");
        // Store path hashes here are not real Nix hashes: warnings, never errors.
        if let Err(problems) = ferry_schema::validate::validate_value(&m) {
            panic!("{problems:?}");
        }
        assert_eq!(store_path(&m, "worker"), Some("/nix/store/bbb-w"));
        let smaller = without(&m, "worker");
        assert_eq!(store_path(&smaller, "worker"), None);
        assert_eq!(store_path(&smaller, "web"), Some("/nix/store/aaa-web"));
    }
}

//! The two update strategies the whole-flow benchmarks compare, `restart` and
//! `blue-green`, as the same two services (name, domain, port, health check), shared by
//! `update_to_serving.rs` and `push_wait.rs` through `#[path]` so both measure the very
//! same deploys.

use serde_json::{Value, json};

/// One strategy under test: its service and domain.
pub struct Strategy {
    pub label: &'static str,
    pub service: &'static str,
    pub domain: &'static str,
    pub port: u16,
    pub blue_green: bool,
}

pub const STRATEGIES: [Strategy; 2] = [
    Strategy {
        label: "restart",
        service: "plain",
        domain: "restart.bench",
        port: 8401,
        blue_green: false,
    },
    Strategy {
        label: "blue-green",
        service: "web",
        domain: "bg.bench",
        port: 8411,
        blue_green: true,
    },
];

/// The manifest entry of `s` at `store_path` on `hosts`.
pub fn service(s: &Strategy, store_path: &str, hosts: &[&str]) -> Value {
    let mut http = json!({"domain": s.domain, "path": "/", "internalPort": s.port});
    let mut env = json!({});
    if s.blue_green {
        http["strategy"] = json!("blue-green");
    } else {
        env["PORT"] = json!(s.port.to_string());
    }
    json!({
        "name": s.service,
        "artifact": {"type": "nix-closure", "storePath": store_path},
        "hosts": hosts,
        "exec": {"command": "ferry-testsvc"},
        "env": env,
        "http": http,
        "healthCheck": {
            "type": "http", "path": "/health",
            "startPeriodSec": 0, "intervalSec": 1, "timeoutSec": 1, "retries": 5,
        },
    })
}

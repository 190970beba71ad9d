//! Routes and ports: what a manifest may make Caddy serve and what the agent and Caddy dial
//! on its behalf. `http.domain` must match one of `caddy.domains`; every port the agent or
//! Caddy connects to for the service (`http.internalPort`, the blue-green second instance's
//! port, `healthCheck.port`) must lie in `allowedPorts` and must not be a port something on
//! the host other than Ferry's services listens on — otherwise a signed manifest could
//! publish a loopback-only database or Caddy's own admin API under a public domain. (That a
//! domain the host's own Caddy configuration serves is never taken over is decided where
//! Caddy's routes are read, in the tick's route step (`tick::route`).) Pure.

use std::collections::BTreeSet;

use ferry_schema::manifest::Service;

use super::ports::PortRange;
use crate::render::unit::{instance_ports, is_blue_green};

/// Whether `pattern` is a domain pattern: `*`, `*.<domain>` or a domain.
pub fn is_valid_domain_pattern(pattern: &str) -> bool {
    pattern == "*"
        || ferry_schema::names::is_valid_domain(pattern.strip_prefix("*.").unwrap_or(pattern))
}

/// Whether `domain` matches `pattern`: `*` matches every domain, `*.example.com` every name
/// under example.com (at any depth, not example.com itself), anything else only itself.
/// Case-insensitive, as DNS names are.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let (pattern, domain) = (pattern.to_ascii_lowercase(), domain.to_ascii_lowercase());
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => pattern == domain,
    }
}

/// The ports the agent or Caddy dial for `s`, each with the field that names it.
pub fn dialed_ports(s: &Service) -> Vec<(&'static str, u16)> {
    let mut ports = Vec::new();
    if let Some(http) = &s.http {
        ports.push(("http.internalPort", http.internal_port));
        if let (true, Some([_, second])) = (is_blue_green(s), instance_ports(s)) {
            ports.push(("http.internalPort + 1 (blue-green)", second));
        }
    }
    if let Some(port) = s.health_check.as_ref().and_then(|h| h.port) {
        ports.push(("healthCheck.port", port));
    }
    ports
}

/// Every reason `s`'s route or ports are refused. `foreign_ports` are the ports something on
/// the host other than Ferry's services listens on, or why they could not be read.
pub fn check(
    s: &Service,
    domains: &[String],
    ports: PortRange,
    foreign_ports: Result<&BTreeSet<u16>, &str>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(http) = &s.http
        && !domains.iter().any(|p| domain_matches(p, &http.domain))
    {
        reasons.push(format!(
            "http.domain {} is not among caddy.domains in agent.toml ({})",
            http.domain,
            domains.join(", ")
        ));
    }
    for (field, port) in dialed_ports(s) {
        if !ports.contains(port) {
            reasons.push(format!(
                "{field} {port} is outside allowedPorts {ports} in agent.toml"
            ));
            continue;
        }
        match foreign_ports {
            Err(e) => reasons.push(format!("{field} {port} cannot be checked: {e}")),
            Ok(taken) if taken.contains(&port) => reasons.push(format!(
                "{field} {port}: something on this host that is not a Ferry service listens \
                 on it, and the service's route or health check would reach it; pick a free \
                 port"
            )),
            Ok(_) => {}
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(domain: &str, port: u16, blue_green: bool, check_port: Option<u16>) -> Service {
        let mut v = serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
            "http": {"domain": domain, "path": "/", "internalPort": port},
        });
        if blue_green {
            v["http"]["strategy"] = "blue-green".into();
        }
        if let Some(p) = check_port {
            v["healthCheck"] = serde_json::json!({"type": "http", "port": p});
        }
        serde_json::from_value(v).unwrap()
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn patterns() {
        for (p, d, m) in [
            ("*", "anything.test", true),
            ("*.apps.test", "a.apps.test", true),
            ("*.apps.test", "a.b.apps.test", true),
            ("*.apps.test", "apps.test", false),
            ("*.apps.test", "xapps.test", false),
            ("*.apps.test", ".apps.test", false),
            ("shop.test", "shop.test", true),
            ("shop.test", "SHOP.test", true),
            ("shop.test", "a.shop.test", false),
        ] {
            assert_eq!(domain_matches(p, d), m, "{p} {d}");
        }
        for ok in ["*", "*.a.test", "a.test"] {
            assert!(is_valid_domain_pattern(ok), "{ok}");
        }
        for bad in ["", "*.", "a.*.test", "**", "http://a.test", "*a.test"] {
            assert!(!is_valid_domain_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn domains_and_ports_are_confined() {
        let none = BTreeSet::new();
        let domains = vec!["*.apps.test".to_owned()];
        assert!(
            check(
                &svc("a.apps.test", 8000, true, Some(8005)),
                &domains,
                range(8000, 8005),
                Ok(&none)
            )
            .is_empty()
        );
        let r = check(
            &svc("shop.test", 8000, false, None),
            &domains,
            range(8000, 8005),
            Ok(&none),
        );
        assert_eq!(
            r,
            ["http.domain shop.test is not among caddy.domains in agent.toml (*.apps.test)"]
        );
        let r = check(
            &svc("a.apps.test", 8005, true, Some(9000)),
            &domains,
            range(8000, 8005),
            Ok(&none),
        );
        assert_eq!(
            r,
            [
                "http.internalPort + 1 (blue-green) 8006 is outside allowedPorts 8000-8005 in agent.toml",
                "healthCheck.port 9000 is outside allowedPorts 8000-8005 in agent.toml",
            ]
        );
    }

    #[test]
    fn ports_the_host_listens_on_are_refused() {
        let taken: BTreeSet<u16> = [2019].into();
        let all = vec!["*".to_owned()];
        let r = check(
            &svc("a.test", 2019, false, None),
            &all,
            range(1024, 65535),
            Ok(&taken),
        );
        assert_eq!(r.len(), 1);
        assert!(
            r[0].starts_with("http.internalPort 2019: something on this host"),
            "{r:?}"
        );
        let r = check(
            &svc("a.test", 8000, false, None),
            &all,
            range(1024, 65535),
            Err("no /proc"),
        );
        assert!(r[0].contains("cannot be checked: no /proc"), "{r:?}");
    }
}

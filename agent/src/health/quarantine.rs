//! Quarantine: versions that failed their health check on this host, and what a tick does
//! about them before planning. A version is what was tried: the store path *and* the unit
//! rendered for it (environment, arguments, user, hardening…), recorded as a digest of the
//! unit text. A quarantined version is not tried again until a manifest *newer than the one
//! that named it* asks for a different one (another store path, or the same store path with
//! another configuration), or `reconcile --retry-failed` clears the list; meanwhile the
//! service keeps the version it was rolled back to. Keying by store path alone held back a
//! config-only fix of a failed config-only change: the path was the one still running.
//! Older manifests (archives copied back over `manifest.json`) never lift it, so flipping
//! between two archives cannot get a failed version retried. Pure.

use std::collections::BTreeMap;
use std::fmt;

use ferry_schema::Manifest;
use ferry_schema::manifest::Service;
use sha2::{Digest, Sha256};

use crate::state::Applied;
pub use crate::state::Quarantined;

impl Quarantined {
    /// Whether `service` asks for the version that failed: the same store path rendered
    /// into the same unit.
    pub fn is_version_of(&self, service: &Service) -> bool {
        self.store_path == service.artifact.store_path
            && self
                .unit
                .as_ref()
                .is_none_or(|u| *u == unit_digest(service))
    }
}

/// What identifies the unit a service is rendered into: `sha256:<hex>` of its text. The
/// text holds the store path, so equal digests mean the same version.
pub fn unit_digest(service: &Service) -> String {
    let text = crate::render::unit::render(service);
    let hex: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A service a tick leaves alone because the manifest asks for a quarantined version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Service name.
    pub name: String,
    /// The quarantined store path the manifest names.
    pub store_path: String,
    /// Why it is quarantined.
    pub reason: String,
    /// What keeps running instead (the applied store path), if anything.
    pub keeps: Option<String>,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipped {} (quarantined: {}); ",
            self.name, self.store_path, self.reason
        )?;
        match &self.keeps {
            Some(path) => write!(f, "keeps running {path}")?,
            None => f.write_str("not running")?,
        }
        f.write_str(
            "; publish a different store path or configuration, or run `ferry-agent reconcile --retry-failed`",
        )
    }
}

/// Drops quarantine entries a newer manifest has moved past: the service now asks for
/// another version (store path or unit), or no longer runs on `host`. Returns the entries
/// lifted. Only call this with a trusted manifest (never with the services restored from
/// state).
pub fn lift(
    quarantine: &mut BTreeMap<String, Quarantined>,
    desired: &Manifest,
    host: &str,
) -> Vec<(String, Quarantined)> {
    let wanted: BTreeMap<&str, &Service> = desired
        .services
        .iter()
        .filter(|s| s.hosts.iter().any(|h| h == host))
        .map(|s| (s.name.as_str(), s))
        .collect();
    let newer = |q: &Quarantined| {
        q.generation
            .as_deref()
            .is_none_or(|g| crate::generation::is_older(g, &desired.generation))
    };
    let names: Vec<String> = quarantine
        .iter()
        .filter(|(name, q)| {
            !wanted
                .get(name.as_str())
                .is_some_and(|s| q.is_version_of(s))
        })
        .filter(|(_, q)| newer(q))
        .map(|(name, _)| name.clone())
        .collect();
    names
        .into_iter()
        .filter_map(|name| quarantine.remove(&name).map(|q| (name, q)))
        .collect()
}

/// Replaces each service of `desired` whose version is quarantined with the version last
/// applied (so a rebooted host still brings that one back), or drops it when there is none.
/// Returns what was held back, in manifest order.
pub fn hold_back(
    desired: &mut Manifest,
    host: &str,
    quarantine: &BTreeMap<String, Quarantined>,
    applied: &BTreeMap<String, Applied>,
) -> Vec<Held> {
    let mut held = Vec::new();
    desired.services.retain_mut(|s| {
        let Some(q) = quarantine.get(&s.name) else {
            return true;
        };
        if !q.is_version_of(s) || !s.hosts.iter().any(|h| h == host) {
            return true;
        }
        let previous = applied.get(&s.name).map(|a| a.service.clone());
        held.push(Held {
            name: s.name.clone(),
            store_path: q.store_path.clone(),
            reason: q.reason.clone(),
            keeps: previous.as_ref().map(|p| p.artifact.store_path.clone()),
        });
        match previous {
            Some(mut p) => {
                if !p.hosts.iter().any(|h| h == host) {
                    p.hosts.push(host.to_owned());
                }
                *s = p;
                true
            }
            None => false,
        }
    });
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, path: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": name, "artifact": {"type": "nix-closure", "storePath": path},
            "hosts": ["h"], "exec": {"command": name},
        }))
        .unwrap()
    }

    fn manifest(services: Vec<Service>) -> Manifest {
        Manifest {
            version: 1,
            generation: "g".into(),
            services,
            decommission: Vec::new(),
            rollout: None,
            systems: Default::default(),
            signatures: None,
        }
    }

    fn q(path: &str, back: Option<&str>) -> Quarantined {
        Quarantined {
            store_path: path.into(),
            unit: None,
            reason: "failed health check (HTTP 503 on /health after 5 tries)".into(),
            at: "2026-01-01T00:00:00Z".into(),
            rolled_back_to: back.map(Into::into),
            generation: None,
        }
    }

    fn applied(s: Service) -> Applied {
        Applied {
            service: s,
            applied_at: "t".into(),
            live_port: None,
        }
    }

    #[test]
    fn quarantined_update_keeps_the_applied_version_and_new_service_is_dropped() {
        let mut m = manifest(vec![
            svc("web", "/nix/store/b-web-2"),
            svc("api", "/nix/store/c-api-1"),
            svc("db", "/nix/store/d-db-1"),
        ]);
        let quarantine = BTreeMap::from([
            (
                "web".to_owned(),
                q("/nix/store/b-web-2", Some("/nix/store/a-web-1")),
            ),
            ("api".to_owned(), q("/nix/store/c-api-1", None)),
        ]);
        let state = BTreeMap::from([("web".to_owned(), applied(svc("web", "/nix/store/a-web-1")))]);
        let held = hold_back(&mut m, "h", &quarantine, &state);
        let names: Vec<(&str, &str)> = m
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.artifact.store_path.as_str()))
            .collect();
        assert_eq!(
            names,
            [("web", "/nix/store/a-web-1"), ("db", "/nix/store/d-db-1")]
        );
        assert_eq!(held.len(), 2);
        assert_eq!(
            held[0].to_string(),
            "web: skipped /nix/store/b-web-2 (quarantined: failed health check (HTTP 503 on /health after 5 tries)); keeps running /nix/store/a-web-1; publish a different store path or configuration, or run `ferry-agent reconcile --retry-failed`"
        );
        assert!(
            held[1]
                .to_string()
                .contains("api: skipped /nix/store/c-api-1")
        );
        assert!(held[1].to_string().contains("not running"));
    }

    #[test]
    fn a_different_store_path_lifts_the_quarantine() {
        let mut quarantine = BTreeMap::from([
            (
                "web".to_owned(),
                q("/nix/store/b-web-2", Some("/nix/store/a-web-1")),
            ),
            ("api".to_owned(), q("/nix/store/c-api-1", None)),
            ("gone".to_owned(), q("/nix/store/g-gone-1", None)),
        ]);
        let mut m = manifest(vec![
            svc("web", "/nix/store/e-web-3"),
            svc("api", "/nix/store/c-api-1"),
        ]);
        let lifted: Vec<String> = lift(&mut quarantine, &m, "h")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(lifted, ["gone", "web"]);
        assert_eq!(quarantine.keys().collect::<Vec<_>>(), ["api"]);
        let held = hold_back(&mut m, "h", &quarantine, &BTreeMap::new());
        assert_eq!(held.len(), 1);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0].artifact.store_path, "/nix/store/e-web-3");
    }

    #[test]
    fn a_failed_config_holds_back_that_config_only() {
        let with_env = |v: &str| {
            let mut s = svc("web", "/nix/store/a-web-1");
            s.env.insert("MODE".into(), v.into());
            s
        };
        let at = |generation: &str, s: Service| Manifest {
            generation: generation.into(),
            ..manifest(vec![s])
        };
        let failed = Quarantined {
            unit: Some(unit_digest(&with_env("bad"))),
            generation: Some("2026-01-02T00:00:00Z".into()),
            ..q("/nix/store/a-web-1", Some("/nix/store/a-web-1"))
        };
        let mut quarantine = BTreeMap::from([("web".to_owned(), failed.clone())]);
        let applied = BTreeMap::from([("web".to_owned(), applied(with_env("good")))]);
        // The failed configuration again is held back; the applied one keeps running.
        let mut again = at("2026-01-02T00:00:00Z", with_env("bad"));
        assert!(lift(&mut quarantine, &again, "h").is_empty());
        assert_eq!(hold_back(&mut again, "h", &quarantine, &applied).len(), 1);
        assert_eq!(again.services[0].env["MODE"], "good");
        // A newer manifest with another configuration of the same store path lifts it and
        // is not held back.
        let mut fixed = at("2026-01-03T00:00:00Z", with_env("fixed"));
        assert_eq!(lift(&mut quarantine, &fixed, "h").len(), 1);
        assert!(hold_back(&mut fixed, "h", &quarantine, &applied).is_empty());
        assert_eq!(fixed.services[0].env["MODE"], "fixed");
        // An entry from before units were recorded still matches its store path alone.
        let old = BTreeMap::from([(
            "web".to_owned(),
            Quarantined {
                unit: None,
                ..failed
            },
        )]);
        let mut any = at("2026-01-02T00:00:00Z", with_env("fixed"));
        assert_eq!(hold_back(&mut any, "h", &old, &applied).len(), 1);
    }

    #[test]
    fn only_a_newer_manifest_lifts_a_quarantine() {
        let failed_in = |generation: &str| Quarantined {
            generation: Some(generation.into()),
            ..q("/nix/store/b-web-2", Some("/nix/store/a-web-1"))
        };
        let at = |generation: &str, path: &str| Manifest {
            generation: generation.into(),
            ..manifest(vec![svc("web", path)])
        };
        let mut quarantine =
            BTreeMap::from([("web".to_owned(), failed_in("2026-01-02T00:00:00Z"))]);
        // The archive from before the failure, copied back: the quarantine stays, and the
        // failed manifest copied back again is held back.
        for older in ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"] {
            assert!(lift(&mut quarantine, &at(older, "/nix/store/a-web-1"), "h").is_empty());
            let gone = Manifest {
                services: vec![],
                ..at(older, "/nix/store/a-web-1")
            };
            assert!(lift(&mut quarantine, &gone, "h").is_empty());
        }
        let mut replay = at("2026-01-02T00:00:00Z", "/nix/store/b-web-2");
        assert_eq!(
            hold_back(&mut replay, "h", &quarantine, &BTreeMap::new()).len(),
            1
        );
        // A later push of another path lifts it.
        let lifted = lift(
            &mut quarantine,
            &at("2026-01-03T00:00:00Z", "/nix/store/a-web-1"),
            "h",
        );
        assert_eq!(lifted.len(), 1);
        assert!(quarantine.is_empty());
    }
}

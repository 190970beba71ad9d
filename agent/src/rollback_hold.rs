//! Holds made by `ferry-agent rollback SERVICE`: the operator took the service one profile
//! generation back, and the ticks that follow keep that version instead of re-deploying the
//! one the unchanged manifest names, until the manifest changes again (another generation
//! is published, or it names another store path for the service, or the service leaves this
//! host). Held, a service runs the manifest's configuration with the held store path. Pure.

use std::collections::BTreeMap;

use ferry_schema::Manifest;
use serde::{Deserialize, Serialize};

/// Where `ferry-agent rollback SERVICE` goes: the profile generation before the current one
/// (found on disk by the verb, before anything changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTarget {
    /// The service.
    pub service: String,
    /// Its profile.
    pub profile: std::path::PathBuf,
    /// The profile's current generation.
    pub from_generation: u32,
    /// The store path that runs now.
    pub from: String,
    /// The generation rolled back to.
    pub generation: u32,
    /// Its store path.
    pub store_path: String,
}

impl RollbackTarget {
    /// Why the rollback's tick restores from state instead of asking the bucket.
    pub fn restore_note(&self) -> String {
        format!(
            "rollback: {} from profile generation {} ({}) to {} ({}); the other services are restored as state records them, the bucket is not asked",
            self.service, self.from_generation, self.from, self.generation, self.store_path
        )
    }
}

/// A service held at an earlier version (kept in the state file, by service name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackHold {
    /// The store path rolled back to: what runs while the hold lasts.
    pub store_path: String,
    /// The store path rolled back from (what the manifest named then).
    pub from: String,
    /// The generation of the manifest in force at the rollback; `None` when the host had
    /// none (then only another store path for the service ends the hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// The profile generation rolled back to.
    pub profile_generation: u32,
    /// When (RFC 3339).
    pub at: String,
}

/// Drops the holds a trusted manifest has moved past: another generation, another store
/// path for the service, or the service no longer on `host`. Returns them, with why. Only
/// call this with a trusted manifest (never with the services restored from state).
pub fn lift(
    holds: &mut BTreeMap<String, RollbackHold>,
    desired: &Manifest,
    host: &str,
) -> Vec<(String, RollbackHold, String)> {
    let names: Vec<(String, String)> = holds
        .iter()
        .filter_map(|(name, h)| {
            let wanted = desired
                .services
                .iter()
                .find(|s| s.name == *name && s.hosts.iter().any(|x| x == host));
            let why = match wanted {
                None => format!("the manifest no longer runs {name} here"),
                Some(s) if s.artifact.store_path != h.from => {
                    format!("the manifest now names {}", s.artifact.store_path)
                }
                Some(_)
                    if h.generation
                        .as_ref()
                        .is_some_and(|g| *g != desired.generation) =>
                {
                    format!("manifest generation {} was published", desired.generation)
                }
                Some(_) => return None,
            };
            Some((name.clone(), why))
        })
        .collect();
    names
        .into_iter()
        .filter_map(|(name, why)| holds.remove(&name).map(|h| (name, h, why)))
        .collect()
}

/// Puts each held service's store path in place of the one `desired` names for it. Returns
/// one line per held service on `host`.
pub fn hold(
    desired: &mut Manifest,
    host: &str,
    holds: &BTreeMap<String, RollbackHold>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for s in desired
        .services
        .iter_mut()
        .filter(|s| s.hosts.iter().any(|h| h == host))
    {
        let Some(h) = holds.get(&s.name) else {
            continue;
        };
        if s.artifact.store_path != h.store_path {
            lines.push(format!(
                "{}: held at {} by `ferry-agent rollback` (the manifest names {}); publishing the manifest again ends the hold",
                s.name, h.store_path, s.artifact.store_path
            ));
            s.artifact.store_path = h.store_path.clone();
        }
    }
    lines
}

/// The generation numbers of a profile's links (`<name>-<N>-link`), from the names found
/// in its directory, in increasing order.
pub fn generation_numbers<'a>(name: &str, entries: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let prefix = format!("{name}-");
    let mut numbers: Vec<u32> = entries
        .into_iter()
        .filter_map(|e| e.strip_prefix(&prefix)?.strip_suffix("-link")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// The generation before `current` among `numbers` (the newest one older than it), as
/// `nix-env --rollback` picks it.
pub fn previous(current: u32, numbers: &[u32]) -> Option<u32> {
    numbers.iter().copied().filter(|n| *n < current).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::manifest::Service;

    fn svc(name: &str, path: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": name, "artifact": {"type": "nix-closure", "storePath": path},
            "hosts": ["h"], "exec": {"command": name},
        }))
        .unwrap()
    }

    fn manifest(generation: &str, services: Vec<Service>) -> Manifest {
        Manifest {
            version: 1,
            generation: generation.into(),
            services,
            decommission: Vec::new(),
            rollout: None,
            systems: Default::default(),
            signatures: None,
        }
    }

    fn held() -> BTreeMap<String, RollbackHold> {
        BTreeMap::from([(
            "web".to_owned(),
            RollbackHold {
                store_path: "/nix/store/a-web-1".into(),
                from: "/nix/store/b-web-2".into(),
                generation: Some("g2".into()),
                profile_generation: 1,
                at: "t".into(),
            },
        )])
    }

    #[test]
    fn the_unchanged_manifest_keeps_the_held_version() {
        let mut holds = held();
        let mut m = manifest(
            "g2",
            vec![svc("web", "/nix/store/b-web-2"), svc("api", "/nix/store/c")],
        );
        assert!(lift(&mut holds, &m, "h").is_empty());
        let lines = hold(&mut m, "h", &holds);
        assert_eq!(m.services[0].artifact.store_path, "/nix/store/a-web-1");
        assert_eq!(m.services[1].artifact.store_path, "/nix/store/c");
        assert_eq!(
            lines,
            [
                "web: held at /nix/store/a-web-1 by `ferry-agent rollback` (the manifest names /nix/store/b-web-2); publishing the manifest again ends the hold"
            ]
        );
    }

    #[test]
    fn a_new_generation_another_path_or_leaving_the_host_ends_the_hold() {
        for (m, why) in [
            (
                manifest("g3", vec![svc("web", "/nix/store/b-web-2")]),
                "manifest generation g3 was published",
            ),
            (
                manifest("g2", vec![svc("web", "/nix/store/d-web-3")]),
                "the manifest now names /nix/store/d-web-3",
            ),
            (
                manifest("g3", vec![]),
                "the manifest no longer runs web here",
            ),
        ] {
            let mut holds = held();
            let lifted = lift(&mut holds, &m, "h");
            assert_eq!(lifted.len(), 1);
            assert_eq!(lifted[0].2, why);
            assert!(holds.is_empty());
        }
    }

    #[test]
    fn generations_and_the_one_before() {
        let names = [
            "web-3-link",
            "web-10-link",
            "web",
            "webapp-9-link",
            "web-x-link",
            "web-7-link",
        ];
        let numbers = generation_numbers("web", names);
        assert_eq!(numbers, [3, 7, 10]);
        assert_eq!(previous(10, &numbers), Some(7));
        assert_eq!(previous(7, &numbers), Some(3));
        assert_eq!(previous(3, &numbers), None);
    }
}

//! Pure manifest edits: the next generation, setting one service's closure, re-applying a
//! push on a manifest that changed meanwhile, and the service-level changes between two
//! manifests (for push, history and dry runs).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ferry_schema::Manifest;
use ferry_schema::manifest::{HostSystem, Service};
use thiserror::Error;

/// Why an edit was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    /// `ferry push` names a service the live manifest does not have.
    #[error(
        "service `{service}` is not in the live manifest (it has: {known}); for a new service run `ferry upload {store_path}`, add the service to a manifest file and `ferry publish` it"
    )]
    UnknownService {
        /// The service asked for.
        service: String,
        /// Its store path.
        store_path: String,
        /// The services there are, comma-separated.
        known: String,
    },
    /// A generation that is not RFC 3339.
    #[error("generation {0:?} is not an RFC 3339 timestamp")]
    Generation(String),
    /// The pushed service itself changed since the push read the manifest.
    #[error(
        "service `{service}` itself was changed meanwhile (generation {generation} has a different `{service}`)"
    )]
    ServiceChanged {
        /// The service.
        service: String,
        /// The live generation that changed it.
        generation: String,
    },
    /// The pushed host's system changed since the push read the manifest.
    #[error(
        "the system of host `{host}` was changed meanwhile (generation {generation} has a different one)"
    )]
    SystemChanged {
        /// The host.
        host: String,
        /// The live generation that changed it.
        generation: String,
    },
    /// The pushed service was removed since the push read the manifest.
    #[error("service `{service}` was removed meanwhile (generation {generation} has none)")]
    ServiceRemoved {
        /// The service.
        service: String,
        /// The live generation without it.
        generation: String,
    },
}

/// A generation for `now` that is strictly later than `previous` (one second after it when
/// the clock is behind), as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn next_generation(previous: Option<&str>, now: DateTime<Utc>) -> Result<String, EditError> {
    let now = now.with_timezone(&Utc);
    let Some(prev) = previous else {
        return Ok(now.to_rfc3339_opts(SecondsFormat::Secs, true));
    };
    let prev = DateTime::parse_from_rfc3339(prev)
        .map_err(|_| EditError::Generation(prev.to_owned()))?
        .with_timezone(&Utc);
    let candidate = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    // Compare at the precision that is written down.
    let written = DateTime::parse_from_rfc3339(&candidate)
        .map_err(|_| EditError::Generation(candidate.clone()))?
        .with_timezone(&Utc);
    if written > prev {
        return Ok(candidate);
    }
    let bumped = prev + Duration::seconds(1);
    Ok(bumped.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Whether `generation` is strictly later than `previous`.
pub fn is_later(generation: &str, previous: &str) -> Result<bool, EditError> {
    let parse = |g: &str| {
        DateTime::parse_from_rfc3339(g)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| EditError::Generation(g.to_owned()))
    };
    Ok(parse(generation)? > parse(previous)?)
}

/// Points `service` at `store_path` with `revision`; the signatures are dropped (the
/// content changed).
pub fn set_service(
    m: &mut Manifest,
    service: &str,
    store_path: &str,
    revision: Option<String>,
) -> Result<(), EditError> {
    let Some(s) = m.services.iter_mut().find(|s| s.name == service) else {
        return Err(unknown_service(m, service, store_path));
    };
    s.artifact.store_path = store_path.to_owned();
    s.revision = revision;
    m.signatures = None;
    Ok(())
}

/// `service` as `m` has it, or the error naming the services there are.
pub fn find_service<'a>(
    m: &'a Manifest,
    service: &str,
    store_path: &str,
) -> Result<&'a Service, EditError> {
    m.services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| unknown_service(m, service, store_path))
}

fn unknown_service(m: &Manifest, service: &str, store_path: &str) -> EditError {
    let known = m
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    EditError::UnknownService {
        service: service.to_owned(),
        store_path: store_path.to_owned(),
        known: if known.is_empty() {
            "no services".to_owned()
        } else {
            known
        },
    }
}

/// Points `host`'s whole system at `store_path` with `revision` (adding the host when the
/// manifest names no system for it yet); the signatures are dropped.
pub fn set_system(m: &mut Manifest, host: &str, store_path: &str, revision: Option<String>) {
    m.systems.insert(
        host.to_owned(),
        HostSystem {
            store_path: store_path.to_owned(),
            revision,
        },
    );
    m.signatures = None;
}

/// Re-applies a `ferry push --system` of `host` on `live`, as [`reapply_push`] does for a
/// service: `base` is the host's system when the push read the manifest (`None`: it had
/// none). Refused when it changed meanwhile.
pub fn reapply_system(
    host: &str,
    base: Option<&HostSystem>,
    live: &Manifest,
    store_path: &str,
    revision: Option<String>,
) -> Result<Manifest, EditError> {
    if live.systems.get(host) != base {
        return Err(EditError::SystemChanged {
            host: host.to_owned(),
            generation: live.generation.clone(),
        });
    }
    let mut m = live.clone();
    set_system(&mut m, host, store_path, revision);
    Ok(m)
}

/// Re-applies a push of `base`'s service (as it was when the push read the manifest) on
/// `live`, the manifest live now: the service gets `store_path` and `revision`, and every
/// other service stays as `live` has it. Refused when the service itself changed or went
/// meanwhile: then someone else's change to it would be overwritten.
pub fn reapply_push(
    base: &Service,
    live: &Manifest,
    store_path: &str,
    revision: Option<String>,
) -> Result<Manifest, EditError> {
    match live.services.iter().find(|s| s.name == base.name) {
        None => Err(EditError::ServiceRemoved {
            service: base.name.clone(),
            generation: live.generation.clone(),
        }),
        Some(now) if now != base => Err(EditError::ServiceChanged {
            service: base.name.clone(),
            generation: live.generation.clone(),
        }),
        Some(_) => {
            let mut m = live.clone();
            set_service(&mut m, &base.name, store_path, revision)?;
            Ok(m)
        }
    }
}

/// Every store path the manifest names (services' and hosts' systems), sorted, without
/// duplicates.
pub fn store_paths(m: &Manifest) -> Vec<String> {
    let mut paths: Vec<String> = m
        .services
        .iter()
        .map(|s| s.artifact.store_path.clone())
        .chain(m.systems.values().map(|s| s.store_path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Service-level changes from `old` to `new`, one line each: `+ name`, `- name`,
/// `~ name: storePath A -> B`, `~ name: settings changed`.
pub fn service_changes(old: Option<&Manifest>, new: &Manifest) -> Vec<String> {
    let empty = Vec::new();
    let old_services = old.map_or(&empty, |m| &m.services);
    let mut lines = Vec::new();
    for s in &new.services {
        match old_services.iter().find(|o| o.name == s.name) {
            None => lines.push(format!("+ {} ({})", s.name, s.artifact.store_path)),
            Some(o) if o.artifact.store_path != s.artifact.store_path => lines.push(format!(
                "~ {}: {} -> {}",
                s.name, o.artifact.store_path, s.artifact.store_path
            )),
            Some(o) if o != s => lines.push(format!("~ {}: settings changed", s.name)),
            Some(_) => {}
        }
    }
    for o in old_services {
        if !new.services.iter().any(|s| s.name == o.name) {
            lines.push(format!("- {}", o.name));
        }
    }
    let no_systems = std::collections::BTreeMap::new();
    let old_systems = old.map_or(&no_systems, |m| &m.systems);
    for (host, s) in &new.systems {
        match old_systems.get(host) {
            None => lines.push(format!("+ system {host} ({})", s.store_path)),
            Some(o) if o.store_path != s.store_path => lines.push(format!(
                "~ system {host}: {} -> {}",
                o.store_path, s.store_path
            )),
            Some(_) => {}
        }
    }
    for host in old_systems.keys() {
        if !new.systems.contains_key(host) {
            lines.push(format!(
                "- system {host} (the host keeps the system it runs)"
            ));
        }
    }
    for host in &new.decommission {
        if !old.is_some_and(|m| m.decommission.contains(host)) {
            lines.push(format!(
                "- host {host}: decommissioned (its agent removes every Ferry service it runs)"
            ));
        }
    }
    lines
}

/// Adds `hosts` to `m`'s `decommission` list (each once, in the order given).
pub fn decommission(m: &mut Manifest, hosts: &[String]) {
    for host in hosts {
        if !m.decommission.contains(host) {
            m.decommission.push(host.clone());
        }
    }
}

/// Hosts `old`'s services run on that `new` names nowhere and does not decommission: their
/// agents refuse `new` while they still run Ferry services (see the agent's
/// `HostPolicy::check_manifest`).
pub fn emptied_hosts(old: Option<&Manifest>, new: &Manifest) -> Vec<String> {
    let mut hosts: Vec<String> = old
        .map(|m| {
            m.services
                .iter()
                .flat_map(|s| s.hosts.iter())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    hosts.dedup();
    hosts.retain(|h| {
        !new.decommission.contains(h) && !new.services.iter().any(|s| s.hosts.contains(h))
    });
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../schema/tests/fixtures/example.json");

    fn example() -> Manifest {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn generations_are_strictly_later() {
        assert_eq!(
            next_generation(None, at("2026-01-01T10:00:00.7Z")).unwrap(),
            "2026-01-01T10:00:00Z"
        );
        assert_eq!(
            next_generation(Some("2026-01-01T09:00:00Z"), at("2026-01-01T10:00:00Z")).unwrap(),
            "2026-01-01T10:00:00Z"
        );
        // Same second, and a clock behind the previous generation.
        assert_eq!(
            next_generation(Some("2026-01-01T10:00:00Z"), at("2026-01-01T10:00:00.9Z")).unwrap(),
            "2026-01-01T10:00:01Z"
        );
        assert_eq!(
            next_generation(
                Some("2027-01-01T00:00:00+01:00"),
                at("2026-01-01T10:00:00Z")
            )
            .unwrap(),
            "2026-12-31T23:00:01Z"
        );
        assert!(next_generation(Some("yesterday"), Utc::now()).is_err());
        assert!(is_later("2026-01-01T10:00:01Z", "2026-01-01T10:00:00Z").unwrap());
        assert!(!is_later("2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z").unwrap());
    }

    #[test]
    fn decommission_and_emptied_hosts() {
        let old = example();
        let mut new = example();
        new.services.clear();
        assert_eq!(emptied_hosts(Some(&old), &new), ["biz"]);
        assert!(emptied_hosts(None, &new).is_empty());
        decommission(&mut new, &["biz".to_owned(), "biz".to_owned()]);
        assert_eq!(new.decommission, ["biz"]);
        assert!(emptied_hosts(Some(&old), &new).is_empty());
        assert_eq!(
            service_changes(Some(&old), &new),
            [
                "- podcastitlater-web",
                "- host biz: decommissioned (its agent removes every Ferry service it runs)"
            ]
        );
        // Decommissioned already: not a change again.
        assert_eq!(service_changes(Some(&new), &new), Vec::<String>::new());
    }

    #[test]
    fn set_service_and_changes() {
        let old = example();
        let mut new = old.clone();
        new.signatures = Some(vec!["k:sig".into()]);
        set_service(
            &mut new,
            "podcastitlater-web",
            "/nix/store/bbbb-web-2",
            Some("c0ffee".into()),
        )
        .unwrap();
        assert_eq!(new.services[0].artifact.store_path, "/nix/store/bbbb-web-2");
        assert_eq!(new.services[0].revision.as_deref(), Some("c0ffee"));
        assert_eq!(new.signatures, None);
        assert_eq!(
            service_changes(Some(&old), &new),
            vec![
                "~ podcastitlater-web: /nix/store/abc123-podcastitlater-web-1.2.3 -> /nix/store/bbbb-web-2"
            ]
        );
        assert_eq!(
            service_changes(None, &old),
            vec!["+ podcastitlater-web (/nix/store/abc123-podcastitlater-web-1.2.3)"]
        );
        let mut gone = old.clone();
        gone.services.clear();
        assert_eq!(
            service_changes(Some(&old), &gone),
            vec!["- podcastitlater-web"]
        );
        let mut env = old.clone();
        env.services[0].env.insert("X".into(), "1".into());
        assert_eq!(
            service_changes(Some(&old), &env),
            vec!["~ podcastitlater-web: settings changed"]
        );
        assert_eq!(
            store_paths(&old),
            vec!["/nix/store/abc123-podcastitlater-web-1.2.3"]
        );
    }

    #[test]
    fn a_push_reapplies_only_while_its_service_is_as_it_read_it() {
        let read = example();
        let base = read.services[0].clone();
        // Someone else added a service and changed nothing of ours: re-applied on theirs.
        let mut live = read.clone();
        live.generation = "2026-02-01T00:00:00Z".into();
        let mut other = base.clone();
        other.name = "api".into();
        live.services.push(other);
        let new = reapply_push(&base, &live, "/nix/store/bbbb-web-2", Some("r2".into())).unwrap();
        assert_eq!(new.services.len(), 2);
        assert_eq!(new.services[0].artifact.store_path, "/nix/store/bbbb-web-2");
        assert_eq!(new.services[1].name, "api");
        assert_eq!(new.generation, "2026-02-01T00:00:00Z");
        assert_eq!(new.signatures, None);
        // Our service changed meanwhile (a push of it, or an env change): refused.
        let mut theirs = live.clone();
        theirs.services[0].env.insert("X".into(), "1".into());
        let err = reapply_push(&base, &theirs, "/nix/store/bbbb-web-2", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service `podcastitlater-web` itself was changed meanwhile (generation 2026-02-01T00:00:00Z has a different `podcastitlater-web`)"
        );
        let mut gone = live.clone();
        gone.services.remove(0);
        assert!(matches!(
            reapply_push(&base, &gone, "/nix/store/bbbb-web-2", None),
            Err(EditError::ServiceRemoved { .. })
        ));
    }

    #[test]
    fn unknown_service_suggests_upload_and_publish() {
        let mut m = example();
        let err = set_service(&mut m, "api", "/nix/store/x-api", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service `api` is not in the live manifest"),
            "{err}"
        );
        assert!(err.contains("podcastitlater-web"), "{err}");
        assert!(
            err.contains("ferry upload /nix/store/x-api") && err.contains("ferry publish"),
            "{err}"
        );
    }

    #[test]
    fn a_system_push_sets_one_host_and_reapplies_only_over_other_changes() {
        let live = example();
        let mut m = live.clone();
        set_system(
            &mut m,
            "biz",
            "/nix/store/aaaa-nixos-system-biz-1",
            Some("r1".into()),
        );
        assert_eq!(
            m.systems["biz"].store_path,
            "/nix/store/aaaa-nixos-system-biz-1"
        );
        assert_eq!(m.signatures, None);
        assert_eq!(
            service_changes(Some(&live), &m),
            ["+ system biz (/nix/store/aaaa-nixos-system-biz-1)"]
        );
        assert!(store_paths(&m).contains(&"/nix/store/aaaa-nixos-system-biz-1".to_owned()));

        // Someone else pushed a service meanwhile: the system goes on top of it.
        let mut theirs = m.clone();
        set_service(
            &mut theirs,
            "podcastitlater-web",
            "/nix/store/cccc-web-3",
            None,
        )
        .unwrap();
        theirs.generation = "2026-02-01T00:00:00Z".into();
        let base = m.systems.get("biz").cloned();
        let again = reapply_system(
            "biz",
            base.as_ref(),
            &theirs,
            "/nix/store/bbbb-nixos-system-biz-2",
            None,
        )
        .unwrap();
        assert_eq!(
            again.systems["biz"].store_path,
            "/nix/store/bbbb-nixos-system-biz-2"
        );
        assert_eq!(again.services, theirs.services);
        assert_eq!(
            service_changes(Some(&theirs), &again),
            [
                "~ system biz: /nix/store/aaaa-nixos-system-biz-1 -> /nix/store/bbbb-nixos-system-biz-2"
            ]
        );
        // Someone else changed this host's system meanwhile: refused.
        let err = reapply_system(
            "biz",
            None,
            &theirs,
            "/nix/store/bbbb-nixos-system-biz-2",
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the system of host `biz` was changed meanwhile (generation 2026-02-01T00:00:00Z has a different one)"
        );
        let mut removed = again.clone();
        removed.systems.clear();
        assert_eq!(
            service_changes(Some(&again), &removed),
            ["- system biz (the host keeps the system it runs)"]
        );
    }
}

//! Reserved names. A service's name becomes its unit (`ferry-<name>.service`, or the
//! template `ferry-<name>@.service`), its `StateDirectory=ferry-<name>` (`/var/lib/ferry-<name>`,
//! which systemd creates or hands over to the service's user), its profile
//! (`<profileDir>/<name>`) and its Caddy route id (`ferry-<name>`). A name is refused when any
//! of these would land on something that is not that service's:
//!
//! - the agent's own units, `ferry-agent.service` and `.timer` (the module's names: fixed);
//! - any other unit on the host named `ferry-<name>.*` that Ferry did not write (asked of
//!   systemd every tick, so an operator's `ferry-metrics.service` counts);
//! - the agent's own directories (`stateDir`, `secretsDir`, …) when one is
//!   `/var/lib/ferry-<name>` or inside it (`secrets` with the default `secretsDir`);
//! - an existing root-owned `/var/lib/ferry-<name>` that belongs to no Ferry service;
//! - `<base>-<n>-link`, which is the name of generation `n` of the profile of service `base`
//!   (`nix-env --profile …/web-1-link` would re-point web's first generation).
//!
//! Route ids follow the same name, so they are covered by the unit rules. Pure: the host's
//! units and directories come in [`HostFacts`](super::HostFacts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::vocab::profile_link::generation_link;

/// Names whose units are the agent's own, whatever the host shows.
pub const AGENT_NAMES: &[&str] = &["agent"];

/// Where systemd puts `StateDirectory=` directories of system services.
pub const STATE_ROOT: &str = "/var/lib";

/// What a name must not collide with.
#[derive(Debug, Clone, Copy)]
pub struct Occupied<'a> {
    /// The agent's own directories, by agent.toml key (`secretsDir` → path).
    pub own_dirs: &'a [(&'static str, PathBuf)],
    /// Units on the host named `ferry-*` that Ferry did not write, with where they are.
    pub foreign_units: &'a BTreeMap<String, String>,
    /// Existing directories `/var/lib/ferry-*` that no Ferry service owns.
    pub foreign_dirs: &'a [PathBuf],
}

/// Every reason the service name `name` is reserved on this host.
pub fn check(name: &str, occupied: Occupied<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    let unit = format!("{}{name}.service", crate::UNIT_PREFIX);
    if AGENT_NAMES.contains(&name) {
        reasons.push(format!(
            "the name {name} is reserved: its unit {unit} would be the Ferry agent's own"
        ));
    }
    for (foreign, at) in occupied.foreign_units {
        if service_part(foreign) == Some(name) {
            reasons.push(format!(
                "the name {name} is taken on this host: its unit {unit} would land on {foreign} \
                 ({at}), a unit not written by Ferry; rename the service"
            ));
        }
    }
    let state_dir = Path::new(STATE_ROOT).join(format!("{}{name}", crate::UNIT_PREFIX));
    let private_dir = Path::new(STATE_ROOT)
        .join("private")
        .join(format!("{}{name}", crate::UNIT_PREFIX));
    for (key, dir) in occupied.own_dirs {
        if dir.starts_with(&state_dir) || dir.starts_with(&private_dir) {
            reasons.push(format!(
                "the name {name} is reserved: its StateDirectory {} holds the agent's {key} \
                 ({}), which systemd would hand over to the service",
                state_dir.display(),
                dir.display()
            ));
        }
    }
    if occupied.foreign_dirs.contains(&state_dir) {
        reasons.push(format!(
            "the name {name} is taken on this host: its StateDirectory {} already exists, \
             owned by root and by no Ferry service, and systemd would hand it over to the \
             service; rename the service or move that directory",
            state_dir.display()
        ));
    }
    if let Some((base, generation)) = generation_link(name) {
        reasons.push(format!(
            "the name {name} is reserved: its profile would be generation {generation} of the \
             profile of service {base}"
        ));
    }
    reasons
}

/// The service a unit name `ferry-<service>[@instance].<type>` refers to.
pub fn service_part(unit: &str) -> Option<&str> {
    let stem = unit.strip_prefix(crate::UNIT_PREFIX)?;
    let (stem, _type) = stem.rsplit_once('.')?;
    let service = stem.split_once('@').map_or(stem, |(s, _)| s);
    (!service.is_empty()).then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Vec<(&'static str, PathBuf)> {
        vec![
            ("stateDir", "/var/lib/ferry".into()),
            ("secretsDir", "/var/lib/ferry-secrets".into()),
            ("profileDir", "/nix/var/nix/profiles/ferry".into()),
            ("unitDir", "/run/systemd/system".into()),
        ]
    }

    fn reasons(name: &str, units: &[(&str, &str)], dirs: &[&str]) -> Vec<String> {
        let own = own();
        let units: BTreeMap<String, String> = units
            .iter()
            .map(|(u, at)| ((*u).to_owned(), (*at).to_owned()))
            .collect();
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        check(
            name,
            Occupied {
                own_dirs: &own,
                foreign_units: &units,
                foreign_dirs: &dirs,
            },
        )
    }

    #[test]
    fn ordinary_names_are_free() {
        for name in [
            "web",
            "ferry",
            "secrets2",
            "link",
            "web-link",
            "web-x-link",
            "a-1",
        ] {
            assert!(reasons(name, &[], &[]).is_empty(), "{name}");
        }
    }

    #[test]
    fn the_agents_own_unit_and_directories() {
        let r = reasons("agent", &[], &[]);
        assert!(r[0].contains("ferry-agent.service"), "{r:?}");
        let r = reasons("secrets", &[], &[]);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("StateDirectory /var/lib/ferry-secrets holds the agent's secretsDir"),
            "{r:?}"
        );
    }

    #[test]
    fn rules_follow_the_configured_directories() {
        let own = vec![
            ("stateDir", PathBuf::from("/var/lib/ferry-state/agent")),
            ("secretsDir", PathBuf::from("/etc/ferry-secrets")),
        ];
        let none = BTreeMap::new();
        let occupied = Occupied {
            own_dirs: &own,
            foreign_units: &none,
            foreign_dirs: &[],
        };
        assert!(check("secrets", occupied).is_empty());
        assert!(
            check("state", occupied)[0].starts_with(
                "the name state is reserved: its StateDirectory /var/lib/ferry-state holds the agent's stateDir"
            ),
            "{:?}",
            check("state", occupied)
        );
        let own = vec![("stateDir", PathBuf::from("/var/lib/private/ferry-x"))];
        let r = check(
            "x",
            Occupied {
                own_dirs: &own,
                ..occupied
            },
        );
        // DynamicUser's private StateDirectory (/var/lib/private/ferry-x) is the same one.
        assert_eq!(
            r,
            [
                "the name x is reserved: its StateDirectory /var/lib/ferry-x holds the agent's stateDir (/var/lib/private/ferry-x), which systemd would hand over to the service"
            ]
        );
    }

    #[test]
    fn host_units_and_directories_that_are_not_ferrys() {
        let units = [
            (
                "ferry-metrics.service",
                "/etc/systemd/system/ferry-metrics.service",
            ),
            (
                "ferry-tmpl@.service",
                "/etc/systemd/system/ferry-tmpl@.service",
            ),
            ("ferry-sock.socket", "/run/systemd/system/ferry-sock.socket"),
        ];
        for name in ["metrics", "tmpl", "sock"] {
            let r = reasons(name, &units, &[]);
            assert_eq!(r.len(), 1, "{name}: {r:?}");
            assert!(r[0].contains("not written by Ferry"), "{r:?}");
        }
        assert!(reasons("metric", &units, &[]).is_empty());
        let r = reasons("backup", &[], &["/var/lib/ferry-backup"]);
        assert!(
            r[0].contains("/var/lib/ferry-backup already exists"),
            "{r:?}"
        );
    }

    #[test]
    fn profile_generation_names() {
        let r = reasons("web-1-link", &[], &[]);
        assert!(
            r[0].contains("generation 1 of the profile of service web"),
            "{r:?}"
        );
        assert!(!reasons("web-12-link", &[], &[]).is_empty());
        assert_eq!(service_part("ferry-web@8000.service"), Some("web"));
        assert_eq!(service_part("ferry-.service"), None);
        assert_eq!(service_part("other.service"), None);
    }
}

//! Host policy: what this host accepts from a signed manifest beyond what the schema allows.
//! A signed manifest is trusted only as far as this goes: its services run as themselves
//! (identity), under names that are theirs (reserved), next to units they may depend on
//! (units), with their own secrets (secrets), on domains and ports the host allows
//! (routing). A service that breaks a rule is refused alone and keeps its last good version;
//! the only whole-manifest rule is that it does not empty a host that runs services unless
//! it says so (`decommission`). Pure:
//! takes the manifest, the settings and the facts gathered about the host (`host_facts`),
//! returns every reason to refuse.

pub mod identity;
pub mod ports;
pub mod reserved;
pub mod routing;
pub mod secrets;
pub mod units;
pub mod writable;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ferry_schema::Manifest;
use ferry_schema::manifest::Service;

use identity::{Accounts, IdentityRules};
use ports::PortRange;
use reserved::Occupied;

/// The host-side rules a manifest must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// This host's name.
    pub host: String,
    /// The directory env files live under (`<secretsDir>/<service>.env` or
    /// `<secretsDir>/<service>/…`).
    pub secrets_dir: PathBuf,
    /// Who services may run as.
    pub identity: IdentityRules,
    /// Host units services may depend on besides Ferry's own (`allowedUnits`).
    pub allowed_units: BTreeSet<String>,
    /// Domain patterns services may be routed on (`caddy.domains`).
    pub domains: Vec<String>,
    /// Ports services may be dialled on (`allowedPorts`).
    pub ports: PortRange,
    /// Directories under which services may be given write access (`allowedWritePaths`).
    pub write_prefixes: Vec<PathBuf>,
    /// The agent's own directories by agent.toml key; no service's StateDirectory may hold
    /// one.
    pub own_dirs: Vec<(&'static str, PathBuf)>,
}

/// What the policy needs to know about the host itself, gathered by `host_facts` each tick.
/// A fact that could not be read is the reason why, and refuses what depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Users and groups (`/etc/passwd`, `/etc/group`).
    pub accounts: Result<Accounts, String>,
    /// Units named `ferry-*` on the host that Ferry did not write, with where each is.
    pub foreign_units: Result<BTreeMap<String, String>, String>,
    /// Existing root-owned directories `/var/lib/ferry-*` of no Ferry service.
    pub foreign_dirs: Result<Vec<PathBuf>, String>,
    /// TCP ports something other than Ferry's services listens on.
    pub foreign_ports: Result<BTreeSet<u16>, String>,
}

impl Default for HostFacts {
    /// A host with no accounts, no foreign units, directories or listeners.
    fn default() -> Self {
        Self {
            accounts: Ok(Accounts::default()),
            foreign_units: Ok(BTreeMap::new()),
            foreign_dirs: Ok(Vec::new()),
            foreign_ports: Ok(BTreeSet::new()),
        }
    }
}

/// The Ferry services a host runs now, by name, or why they could not be listed.
pub type Running = Result<BTreeSet<String>, String>;

/// The services a host refuses, by name, with every reason.
pub type Refusals = BTreeMap<String, Vec<String>>;

impl HostPolicy {
    /// The reasons the whole manifest is refused (empty: accepted). `running` is the Ferry
    /// services this host runs now (state and unit files), or why they could not be listed.
    ///
    /// A manifest that names no service for this host would remove everything Ferry runs
    /// here. That is refused while the host still runs Ferry services, unless the manifest
    /// lists this host in `decommission` (emptied on purpose, signed like the rest): so a
    /// wrong `hostName` cannot wipe a host, and emptying one is one deliberate flag. A host
    /// that runs nothing has nothing to lose: an empty or foreign manifest is a no-op there
    /// (the design's first migration step deploys the agent with an empty manifest).
    pub fn check_manifest(&self, manifest: &Manifest, running: &Running) -> Vec<String> {
        if manifest.services.iter().any(|s| self.runs_here(s))
            || manifest.decommission.contains(&self.host)
        {
            return Vec::new();
        }
        let running = match running {
            Ok(names) if names.is_empty() => return Vec::new(),
            Ok(names) => format!(
                "while it runs Ferry services ({})",
                names
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("and which Ferry services it runs cannot be read ({e})"),
        };
        vec![format!(
            "the manifest names no service for host {:?} (hosts it names: {}) {running}; \
             refusing to remove them all: check hostName in agent.toml or the manifest's hosts \
             lists, or, to empty this host on purpose, publish with `ferry publish \
             --decommission {}`",
            self.host,
            known_hosts(manifest),
            self.host
        )]
    }

    /// A line for a manifest this host accepted although it names no service here (`None`
    /// when it names some): what it means and which hosts it does name.
    pub fn nothing_here(&self, manifest: &Manifest) -> Option<String> {
        if manifest.services.iter().any(|s| self.runs_here(s)) {
            return None;
        }
        Some(if manifest.decommission.contains(&self.host) {
            format!(
                "the manifest decommissions host {:?}: every Ferry service here is removed",
                self.host
            )
        } else {
            format!(
                "the manifest names no service for host {:?} (hosts it names: {}); nothing to run here",
                self.host,
                known_hosts(manifest)
            )
        })
    }

    /// This host's services that break the policy, each with every reason. Another host's
    /// services are that host's business.
    pub fn refusals(&self, manifest: &Manifest, facts: &HostFacts) -> Refusals {
        let mine: Vec<&Service> = manifest
            .services
            .iter()
            .filter(|s| self.runs_here(s))
            .collect();
        let no_units = BTreeMap::new();
        let foreign_units = facts.foreign_units.as_ref().unwrap_or(&no_units);
        let foreign_dirs = facts.foreign_dirs.as_deref().unwrap_or_default();
        let occupied = Occupied {
            own_dirs: &self.own_dirs,
            foreign_units,
            foreign_dirs,
        };
        let mut out: Refusals = BTreeMap::new();
        for s in &mine {
            let mut reasons = reserved::check(&s.name, occupied);
            for (what, fact) in [
                ("the host's units", facts.foreign_units.as_ref().err()),
                (
                    "the host's state directories",
                    facts.foreign_dirs.as_ref().err(),
                ),
            ] {
                if let Some(e) = fact {
                    reasons.push(format!("its name cannot be checked against {what}: {e}"));
                }
            }
            if !reasons.is_empty() {
                out.insert(s.name.clone(), reasons);
            }
        }
        // Units of services with reserved names are not Ferry's to depend on.
        let own: BTreeSet<&str> = mine
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !out.contains_key(*n))
            .collect();
        for s in mine {
            let mut reasons = identity::check(
                s,
                &self.identity,
                facts.accounts.as_ref().map_err(String::as_str),
            );
            reasons.extend(units::check(s, &own, &self.allowed_units, |name| {
                // The first reason says enough in a line about another service.
                reserved::check(name, occupied).into_iter().next()
            }));
            reasons.extend(secrets::check(s, &self.secrets_dir));
            reasons.extend(writable::check(s, &self.write_prefixes, &self.own_dirs));
            reasons.extend(routing::check(
                s,
                &self.domains,
                self.ports,
                facts.foreign_ports.as_ref().map_err(String::as_str),
            ));
            if !reasons.is_empty() {
                out.entry(s.name.clone()).or_default().extend(reasons);
            }
        }
        out
    }

    fn runs_here(&self, s: &Service) -> bool {
        s.hosts.contains(&self.host)
    }
}

fn known_hosts(m: &Manifest) -> String {
    let mut hosts: Vec<&str> = m
        .services
        .iter()
        .flat_map(|s| s.hosts.iter().map(String::as_str))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.is_empty() {
        "none".to_owned()
    } else {
        hosts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Manifest {
        serde_json::from_str(include_str!("../../../schema/tests/fixtures/example.json")).unwrap()
    }

    /// The policy a default agent.toml gives host `biz`.
    pub(crate) fn policy() -> HostPolicy {
        HostPolicy {
            host: "biz".into(),
            secrets_dir: "/var/lib/biz-secrets".into(),
            identity: IdentityRules {
                allow_root: false,
                users: ["pil-web".to_owned()].into(),
                groups: ["pil".to_owned()].into(),
            },
            allowed_units: [
                "network-online.target".to_owned(),
                "postgresql.service".to_owned(),
            ]
            .into(),
            domains: vec!["*".into()],
            ports: PortRange {
                first: 1024,
                last: 65535,
            },
            write_prefixes: vec!["/var/podcastitlater".into()],
            own_dirs: vec![
                ("stateDir", "/var/lib/ferry".into()),
                ("secretsDir", "/var/lib/biz-secrets".into()),
            ],
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            accounts: Ok(Accounts::parse(
                "pil-web:x:1200:1300::/:/bin/sh\n",
                "pil:x:1300:\n",
            )),
            ..HostFacts::default()
        }
    }

    #[test]
    fn the_example_is_accepted_by_a_host_that_allows_what_it_names() {
        let m = example();
        assert!(policy().check_manifest(&m, &running(&["web"])).is_empty());
        assert_eq!(policy().refusals(&m, &facts()), Refusals::new());
    }

    #[test]
    fn the_examples_data_dir_is_writable_only_where_the_host_allows_it() {
        let mut m = example();
        m.services[0]
            .hardening
            .get_or_insert_default()
            .read_write_paths = Some(vec!["/var/podcastitlater".into()]);
        assert_eq!(policy().refusals(&m, &facts()), Refusals::new());
        let mut other = m.services[0].clone();
        other.name = "other".into();
        other.env_file = None;
        other.hardening.get_or_insert_default().read_write_paths =
            Some(vec!["/var/lib/biz-secrets".into(), "/opt/other".into()]);
        m.services.push(other);
        let mut p = policy();
        let r = p.refusals(&m, &facts());
        assert_eq!(r.keys().collect::<Vec<_>>(), ["other"], "{r:?}");
        assert!(r["other"][0].contains("the agent's secretsDir"), "{r:?}");
        assert!(
            r["other"][1]
                .starts_with("hardening.readWritePaths /opt/other is not under allowedWritePaths"),
            "{r:?}"
        );
        // A host that allows nothing refuses the example's data directory too.
        p.write_prefixes.clear();
        assert_eq!(p.refusals(&m, &facts()).len(), 2);
    }

    #[test]
    fn every_rule_refuses_the_service_alone_with_every_reason() {
        let mut m = example();
        let mut bad = m.services[0].clone();
        bad.name = "secrets".into();
        bad.env_file = Some("/etc/shadow".into());
        bad.exec.group = Some("root".into());
        bad.systemd.get_or_insert_default().requires = Some(vec!["debug-shell.service".into()]);
        let mut other_host = bad.clone();
        other_host.name = "elsewhere".into();
        other_host.hosts = vec!["another".into()];
        m.services.push(bad);
        m.services.push(other_host);
        let mut p = policy();
        p.own_dirs
            .push(("secretsDir", "/var/lib/ferry-secrets".into()));
        let r = p.refusals(&m, &facts());
        assert_eq!(r.keys().collect::<Vec<_>>(), ["secrets"]);
        let reasons = &r["secrets"];
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("StateDirectory /var/lib/ferry-secrets"));
        assert!(reasons[1].starts_with("exec.group root"));
        assert!(reasons[2].starts_with("systemd.requires names debug-shell.service"));
        assert!(reasons[3].starts_with("envFile /etc/shadow"));
    }

    #[test]
    fn a_reserved_service_is_no_unit_to_depend_on_and_unknown_facts_refuse() {
        let mut m = example();
        let mut metrics = m.services[0].clone();
        metrics.name = "metrics".into();
        metrics.env_file = None;
        m.services[0].systemd.get_or_insert_default().requires =
            Some(vec!["ferry-metrics.service".into()]);
        m.services.push(metrics);
        let mut f = facts();
        f.foreign_units = Ok([(
            "ferry-metrics.service".to_owned(),
            "/etc/systemd/system/ferry-metrics.service".to_owned(),
        )]
        .into());
        let r = policy().refusals(&m, &f);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r["metrics"][0].starts_with("the name metrics is taken on this host")
                && r["metrics"][0].contains("a unit not written by Ferry"),
            "{r:?}"
        );
        assert!(
            r["podcastitlater-web"][0]
                .starts_with("systemd.requires names ferry-metrics.service, which is not a unit of this host's Ferry services"),
            "{r:?}"
        );
        f.foreign_units = Err("D-Bus is down".into());
        let r = policy().refusals(&m, &f);
        assert!(
            r["metrics"][0].contains("cannot be checked against the host's units: D-Bus is down")
        );
    }

    fn running(names: &[&str]) -> Running {
        Ok(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn a_manifest_for_other_hosts_only_is_refused_whole_while_the_host_runs_services() {
        let mut p = policy();
        p.host = "elsewhere".into();
        let r = p.check_manifest(&example(), &running(&["web", "worker"]));
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("no service for host \"elsewhere\" (hosts it names: biz) while it runs Ferry services (web, worker)")
                && r[0].contains("ferry publish --decommission elsewhere"),
            "{r:?}"
        );
        // Services that cannot be listed count as running.
        let r = p.check_manifest(&example(), &Err("permission denied".into()));
        assert!(r[0].contains("cannot be read (permission denied)"), "{r:?}");
        // Another host's decommission does not cover this one.
        let mut m = example();
        m.decommission = vec!["old".into()];
        assert_eq!(p.check_manifest(&m, &running(&["web"])).len(), 1);
    }

    #[test]
    fn a_host_running_nothing_accepts_an_empty_or_foreign_manifest() {
        let mut p = policy();
        let mut empty = example();
        empty.services.clear();
        assert!(p.check_manifest(&empty, &running(&[])).is_empty());
        assert_eq!(
            p.nothing_here(&empty).unwrap(),
            "the manifest names no service for host \"biz\" (hosts it names: none); nothing to run here"
        );
        p.host = "elsewhere".into();
        assert!(p.check_manifest(&example(), &running(&[])).is_empty());
        assert!(
            p.nothing_here(&example())
                .unwrap()
                .contains("hosts it names: biz")
        );
        assert_eq!(policy().nothing_here(&example()), None);
    }

    #[test]
    fn a_decommissioned_host_may_be_emptied() {
        let mut m = example();
        m.services.clear();
        m.decommission = vec!["biz".into()];
        assert!(policy().check_manifest(&m, &running(&["web"])).is_empty());
        assert!(
            policy()
                .check_manifest(&m, &Err("unreadable".into()))
                .is_empty()
        );
        assert_eq!(
            policy().nothing_here(&m).unwrap(),
            "the manifest decommissions host \"biz\": every Ferry service here is removed"
        );
        // Without it, the same manifest is refused.
        m.decommission.clear();
        assert_eq!(policy().check_manifest(&m, &running(&["web"])).len(), 1);
    }
}

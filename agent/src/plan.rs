//! The planner: a pure function of (manifest, observed host, policy) to an ordered list of
//! per-service actions, printable as a readable diff (`ferry-agent plan`). A service the host
//! policy refuses is planned from its last good version (the one state recorded), so it
//! keeps running — and comes back after a reboot — while the others deploy; with no good
//! version it is planned as nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ferry_schema::Manifest;
use ferry_schema::manifest::Service;
use serde::Serialize;

use crate::health::spec::{HealthSpec, effective};
use crate::render::unit::{self, instance_name, instance_ports, is_blue_green, unit_name};
use crate::state::Retiring;
pub use crate::vocab::Job;

/// What the host runs now, as far as the plan cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Services the agent manages on this host, by name (from the state file, the unit
    /// directory and systemd).
    pub services: BTreeMap<String, ObservedService>,
}

/// One managed service as found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedService {
    /// The store path last deployed (state file, or a unit header when state was lost).
    pub store_path: Option<String>,
    /// The service's unit files by file name, with their text: its plain unit or its
    /// blue-green template (both while it changes strategy); empty when none is on disk.
    pub files: BTreeMap<String, String>,
    /// systemd's `ActiveState` of the unit that serves (the plain unit, or the live
    /// blue-green instance); `None` when unknown (systemd not asked or unit not known).
    pub active_state: Option<String>,
    /// A tick was changing this service when it stopped (the state file's `pending`): its
    /// files may be right while systemd or the process is not.
    pub pending: bool,
    /// The service as last applied (state file), which a failed health check returns to;
    /// `None` when state does not know it.
    pub applied: Option<Service>,
    /// The port of the live instance of a blue-green service (state file).
    pub live_port: Option<u16>,
}

/// Inputs to planning that are not in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// This host's name: only services listing it are planned.
    pub host: String,
    /// This host's services the host policy refuses, with why (`HostPolicy::refusals`).
    pub refused: BTreeMap<String, Vec<String>>,
}

/// What happens to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// New on this host: pull, pin, write unit, start.
    Add,
    /// New store path: pull, pin, write unit, restart.
    UpdateClosure,
    /// Same store path, different unit text (env, args, hardening…): write unit, restart.
    UpdateUnit,
    /// Unit is right but not running: start it.
    Start,
    /// An interrupted tick left it unconfirmed: rewrite the unit, reload, restart.
    Resume,
    /// No longer for this host: stop, delete the unit (the profile stays as a GC root).
    Remove,
    /// Nothing to do.
    Unchanged,
}

/// The plan for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    /// Service name.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// Why, in words.
    pub why: String,
    /// The store path running now, if any.
    pub from: Option<String>,
    /// The store path to run (absent for removals).
    pub to: Option<String>,
    /// The unit text to write (absent for removals and unchanged units).
    #[serde(skip)]
    pub unit_text: Option<String>,
    /// The unit file the service is rendered into: `ferry-<name>.service`, or the template
    /// `ferry-<name>@.service` of a blue-green service.
    #[serde(skip)]
    pub unit_file: String,
    /// The unit the job runs on: the plain unit, or the blue-green instance to start.
    pub unit: String,
    /// Blue-green: the port of the instance this plan runs (recorded as live when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Blue-green switch: the running version keeps serving from another instance until
    /// the route moves, so a failure only stops `unit` and puts the template back.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub switch: bool,
    /// Units stopped before the job: every unit of a removed service, or the blue-green
    /// instances of a service that becomes a plain one (they hold its port).
    #[serde(skip)]
    pub stop_first: Vec<String>,
    /// Unit files deleted with them.
    #[serde(skip)]
    pub delete_first: Vec<String>,
    /// What a healthy switch leaves to stop and delete once the route moved and drained.
    #[serde(skip)]
    pub retire: Retiring,
    /// This host's services that must be healthy before this one starts (`dependsOn`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// How a started version is checked (absent for removals).
    #[serde(skip)]
    pub health: Option<HealthSpec>,
    /// What a failed health check returns to: the previously applied version, when this
    /// plan changes it. `None` for new services and for restarts of the applied version.
    #[serde(skip)]
    pub rollback: Option<Rollback>,
    /// Why the host policy refuses the manifest's version of this service (empty: it does
    /// not). A refused service is planned from its last good version, or as nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// The previously applied version of a service, ready to be put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// Its store path (the profile is pointed back at it).
    pub store_path: String,
    /// Its unit file name.
    pub unit_file: String,
    /// Its unit text, rendered from the applied service.
    pub unit_text: String,
    /// The unit that runs it (a blue-green service: its live instance).
    pub unit: String,
    /// Its health check, to confirm it is healthy again.
    pub health: HealthSpec,
}

impl ServicePlan {
    /// Whether the closure must be pulled and pinned.
    pub fn pulls(&self) -> bool {
        matches!(self.action, Action::Add | Action::UpdateClosure)
    }

    /// Whether the unit file is (re)written.
    pub fn writes_unit(&self) -> bool {
        self.unit_text.is_some()
    }

    /// The systemd job to run after the reload, if any.
    pub fn job(&self) -> Option<Job> {
        match self.action {
            Action::Add | Action::Start => Some(Job::Start),
            Action::UpdateClosure | Action::UpdateUnit | Action::Resume => Some(Job::Restart),
            Action::Remove => Some(Job::Stop),
            Action::Unchanged => None,
        }
    }
}

/// An ordered plan: removals first, then this host's services in `dependsOn` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One entry per service that is or will be on this host.
    pub services: Vec<ServicePlan>,
}

impl Plan {
    /// Whether one `Reload` is needed: a unit file is written or deleted, or an interrupted
    /// tick may have written one without reloading.
    pub fn needs_reload(&self) -> bool {
        self.services
            .iter()
            .any(|s| s.writes_unit() || matches!(s.action, Action::Remove | Action::Resume))
    }

    /// Whether the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.services.iter().all(|s| s.action == Action::Unchanged)
    }
}

/// Plan the host's changes. Pure and deterministic.
pub fn plan(manifest: &Manifest, observed: &Observed, policy: &Policy) -> Plan {
    let mine: BTreeMap<&str, &Service> = manifest
        .services
        .iter()
        .filter(|s| s.hosts.contains(&policy.host))
        .map(|s| (s.name.as_str(), s))
        .collect();

    let mut services = Vec::with_capacity(mine.len() + observed.services.len());
    for (name, obs) in observed.services.iter().rev() {
        if !mine.contains_key(name.as_str()) {
            let mut files: Vec<String> = obs.files.keys().cloned().collect();
            if files.is_empty() {
                files.push(unit_name(name));
            }
            services.push(ServicePlan {
                name: name.clone(),
                action: Action::Remove,
                why: format!("no longer in the manifest for host {}", policy.host),
                from: obs.store_path.clone(),
                to: None,
                unit_text: None,
                unit_file: unit_name(name),
                unit: unit_name(name),
                port: None,
                switch: false,
                stop_first: running_units(name, obs),
                delete_first: files,
                retire: Retiring::default(),
                depends_on: Vec::new(),
                health: None,
                rollback: None,
                refused: Vec::new(),
            });
        }
    }
    for name in dependency_order(&mine) {
        let Some(service) = mine.get(name) else {
            continue;
        };
        if let Some(reasons) = policy.refused.get(name) {
            services.push(plan_refused(
                name,
                reasons,
                observed.services.get(name),
                &policy.host,
            ));
            continue;
        }
        let mut p = plan_service(service, observed.services.get(name));
        p.depends_on = service
            .depends_on
            .iter()
            .flatten()
            .filter(|d| mine.contains_key(d.as_str()) && *d != name)
            .cloned()
            .collect();
        services.push(p);
    }
    Plan { services }
}

fn plan_service(service: &Service, obs: Option<&ObservedService>) -> ServicePlan {
    let to = service.artifact.store_path.clone();
    let text = unit::render(service);
    let file = unit::unit_file(service);
    let mut p = ServicePlan {
        name: service.name.clone(),
        action: Action::Unchanged,
        why: String::new(),
        from: obs.and_then(|o| o.store_path.clone()),
        to: Some(to.clone()),
        unit_text: None,
        unit_file: file.clone(),
        unit: unit_name(&service.name),
        port: None,
        switch: false,
        stop_first: Vec::new(),
        delete_first: Vec::new(),
        retire: Retiring::default(),
        depends_on: Vec::new(),
        health: Some(effective(service)),
        rollback: obs.and_then(|o| {
            o.applied
                .as_ref()
                .filter(|applied| *applied != service)
                .map(|applied| rollback_to(applied, o.live_port))
        }),
        refused: Vec::new(),
    };
    let Some(obs) = obs else {
        p.action = Action::Add;
        p.why = "new service for this host".to_owned();
        p.unit_text = Some(text);
        place(&mut p, service, None);
        return p;
    };
    if obs.store_path.as_deref() != Some(to.as_str()) {
        p.action = Action::UpdateClosure;
        p.why = match &obs.store_path {
            Some(from) => format!("store path changed from {from}"),
            None => "store path not recorded".to_owned(),
        };
        p.unit_text = Some(text);
        place(&mut p, service, Some(obs));
        return p;
    }
    match obs.files.get(&file) {
        None if !obs.files.is_empty() => {
            p.action = Action::UpdateUnit;
            p.why = if is_blue_green(service) {
                "strategy changed to blue-green".to_owned()
            } else {
                "strategy changed to restart".to_owned()
            };
            p.unit_text = Some(text);
        }
        None => {
            p.action = Action::UpdateUnit;
            p.why = "unit file missing (host rebooted?)".to_owned();
            p.unit_text = Some(text);
        }
        Some(old) if *old != text => {
            p.action = Action::UpdateUnit;
            p.why = format!("unit changed: {}", changed_keys(old, &text));
            p.unit_text = Some(text);
        }
        Some(_) if obs.pending => {
            p.action = Action::Resume;
            p.why = "an interrupted tick left it unconfirmed".to_owned();
            p.unit_text = Some(text);
        }
        Some(_) => match obs.active_state.as_deref() {
            Some("active" | "activating" | "reloading") | None => {
                p.why = "up to date".to_owned();
            }
            Some(state) => {
                p.action = Action::Start;
                p.why = format!("unit is {state}");
            }
        },
    }
    place(&mut p, service, Some(obs));
    p
}

/// A refused service: its last good version planned as usual (nothing to do while it runs;
/// restored when its unit is gone), or, with none recorded, nothing at all.
fn plan_refused(
    name: &str,
    reasons: &[String],
    obs: Option<&ObservedService>,
    host: &str,
) -> ServicePlan {
    if let Some((obs, applied)) = obs.and_then(|o| o.applied.as_ref().map(|a| (o, a))) {
        let mut kept = applied.clone();
        if !kept.hosts.iter().any(|h| h == host) {
            kept.hosts.push(host.to_owned());
        }
        let mut p = plan_service(&kept, Some(obs));
        p.refused = reasons.to_vec();
        return p;
    }
    ServicePlan {
        name: name.to_owned(),
        action: Action::Unchanged,
        why: "refused by host policy".to_owned(),
        from: obs.and_then(|o| o.store_path.clone()),
        to: None,
        unit_text: None,
        unit_file: unit_name(name),
        unit: unit_name(name),
        port: None,
        switch: false,
        stop_first: Vec::new(),
        delete_first: Vec::new(),
        retire: Retiring::default(),
        depends_on: Vec::new(),
        health: None,
        rollback: None,
        refused: reasons.to_vec(),
    }
}

/// The version to put back after a failure: the applied service, run from its plain unit
/// or, when blue-green, from its live instance.
fn rollback_to(applied: &Service, live_port: Option<u16>) -> Rollback {
    let mut r = Rollback {
        store_path: applied.artifact.store_path.clone(),
        unit_file: unit::unit_file(applied),
        unit_text: unit::render(applied),
        unit: unit_name(&applied.name),
        health: effective(applied),
    };
    if let (true, Some([first, _])) = (is_blue_green(applied), instance_ports(applied)) {
        let port = live_port.unwrap_or(first);
        r.unit = instance_name(&applied.name, port);
        r.health = r.health.on_port(port);
    }
    r
}

/// Where the planned version runs: the unit its job targets, and for a blue-green service
/// which instance, whether the change switches traffic between instances, and what the
/// switch retires. Strategy changes move the other form's files and units out of the way.
fn place(p: &mut ServicePlan, service: &Service, obs: Option<&ObservedService>) {
    let name = service.name.as_str();
    let runs_job = p.job().is_some();
    let old_units: Vec<String> = obs.map(|o| running_units(name, o)).unwrap_or_default();
    let old_files: Vec<String> = obs
        .map(|o| {
            o.files
                .keys()
                .filter(|f| **f != p.unit_file)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let (true, Some(pair)) = (is_blue_green(service), instance_ports(service)) else {
        // A plain unit: blue-green instances it replaces hold its port, so they go first.
        if runs_job {
            p.stop_first = old_units.into_iter().filter(|u| *u != p.unit).collect();
            p.delete_first = old_files;
        }
        return;
    };
    let live = obs.and_then(|o| o.live_port).filter(|l| pair.contains(l));
    let serving = obs.is_some_and(|o| {
        matches!(
            o.active_state.as_deref(),
            Some("active" | "activating" | "reloading")
        )
    });
    let changes = matches!(
        p.action,
        Action::UpdateClosure | Action::UpdateUnit | Action::Resume
    );
    let port = if changes && serving {
        // Something serves now: start the new version beside it. A plain unit it
        // replaces listens on the first port, so the second is the idle one.
        p.switch = true;
        match live {
            Some(l) if l == pair[0] => pair[1],
            Some(_) => pair[0],
            None if obs.is_some_and(|o| o.files.contains_key(&unit_name(name))) => pair[1],
            None => pair[0],
        }
    } else {
        live.unwrap_or(pair[0])
    };
    p.port = Some(port);
    p.unit = instance_name(name, port);
    p.health = p.health.take().map(|h| h.on_port(port));
    let others: Vec<String> = old_units.into_iter().filter(|u| *u != p.unit).collect();
    if p.switch {
        p.retire = Retiring {
            units: others,
            files: old_files,
        };
    } else if runs_job && p.action != Action::Start {
        p.stop_first = others;
        p.delete_first = old_files;
    }
}

/// Every unit of an observed service that may be running: its plain unit, the instances
/// its template names, its live instance and the instances of the applied version.
fn running_units(name: &str, obs: &ObservedService) -> Vec<String> {
    let mut units = BTreeSet::new();
    for (file, text) in &obs.files {
        if *file == unit_name(name) {
            units.insert(unit_name(name));
        }
        for port in unit::template_ports(text) {
            units.insert(instance_name(name, port));
        }
    }
    if let Some(l) = obs.live_port {
        units.insert(instance_name(name, l));
    }
    match &obs.applied {
        Some(a) => match (is_blue_green(a), instance_ports(a)) {
            (true, Some(pair)) => units.extend(pair.map(|port| instance_name(name, port))),
            _ => {
                units.insert(unit_name(name));
            }
        },
        None if units.is_empty() => {
            units.insert(unit_name(name));
        }
        None => {}
    }
    units.into_iter().collect()
}

/// Names of unit settings whose lines differ between two unit texts.
fn changed_keys(old: &str, new: &str) -> String {
    let a: BTreeSet<&str> = old.lines().collect();
    let b: BTreeSet<&str> = new.lines().collect();
    let mut keys: Vec<&str> = a
        .symmetric_difference(&b)
        .map(|l| l.split_once('=').map_or(*l, |(k, _)| k))
        .filter(|k| !k.starts_with('#'))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        "comments only".to_owned()
    } else {
        keys.join(", ")
    }
}

/// Kahn's algorithm over `dependsOn` edges within this host's services, ties broken by name.
/// Dependencies on services not on this host impose no order here. A cycle (refused by
/// validation, but the planner must not loop) is appended in name order.
fn dependency_order<'a>(mine: &BTreeMap<&'a str, &'a Service>) -> Vec<&'a str> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (&name, s) in mine {
        let deps: BTreeSet<&str> = s
            .depends_on
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|d| mine.contains_key(d) && *d != name)
            .collect();
        waiting.insert(name, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut order = Vec::with_capacity(mine.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        waiting.remove(next);
        for d in dependents.get(next).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    order.extend(waiting.keys());
    order
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.services {
            let (mark, verb) = match s.action {
                Action::Add => ('+', "add"),
                Action::UpdateClosure => ('~', "update closure"),
                Action::UpdateUnit => ('~', "update unit"),
                Action::Start => ('>', "start"),
                Action::Resume => ('~', "resume"),
                Action::Remove => ('-', "remove"),
                Action::Unchanged => ('=', "unchanged"),
            };
            write!(f, "{mark} {}: {verb}", s.name)?;
            match (s.action, &s.from, &s.to) {
                (Action::UpdateClosure, Some(from), Some(to)) => write!(f, " {from} -> {to}")?,
                (Action::Remove, Some(from), _) => write!(f, " {from}")?,
                (_, _, Some(to)) => write!(f, " {to}")?,
                _ => {}
            }
            write!(f, " ({})", s.why)?;
            if !s.refused.is_empty() {
                write!(
                    f,
                    " [REFUSED by host policy: {}; {}]",
                    s.refused.join("; "),
                    if s.to.is_some() {
                        "the manifest's version is not applied"
                    } else {
                        "not deployed"
                    }
                )?;
            }
            if s.switch {
                write!(f, " [blue-green: start {}, then switch", s.unit)?;
                if !s.retire.units.is_empty() {
                    write!(f, " and stop {}", s.retire.units.join(" "))?;
                }
                f.write_str("]")?;
            }
            writeln!(f)?;
        }
        if self.services.is_empty() {
            writeln!(f, "(no services for this host)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, path: &str, deps: &[&str]) -> Service {
        let json = serde_json::json!({
            "name": name,
            "artifact": {"type": "nix-closure", "storePath": path},
            "hosts": ["h1"],
            "exec": {"command": name, "user": "u"},
        });
        let mut s: Service = serde_json::from_value(json).unwrap();
        if !deps.is_empty() {
            s.depends_on = Some(deps.iter().map(|d| d.to_string()).collect());
        }
        s
    }

    fn manifest(services: Vec<Service>) -> Manifest {
        Manifest {
            version: 1,
            generation: "2025-01-01T00:00:00Z".into(),
            services,
            decommission: Vec::new(),
            rollout: None,
            systems: Default::default(),
            signatures: None,
        }
    }

    fn running(s: &Service) -> ObservedService {
        ObservedService {
            store_path: Some(s.artifact.store_path.clone()),
            files: [(unit::unit_file(s), unit::render(s))].into(),
            active_state: Some("active".into()),
            pending: false,
            applied: Some(s.clone()),
            live_port: instance_ports(s).filter(|_| is_blue_green(s)).map(|p| p[0]),
        }
    }

    fn policy() -> Policy {
        Policy {
            host: "h1".into(),
            ..Policy::default()
        }
    }

    fn actions(p: &Plan) -> Vec<(&str, Action)> {
        p.services
            .iter()
            .map(|s| (s.name.as_str(), s.action))
            .collect()
    }

    #[test]
    fn fresh_host_adds_in_dependency_order() {
        let m = manifest(vec![
            svc("web", "/nix/store/a-web", &["db"]),
            svc("db", "/nix/store/b-db", &[]),
            svc("zz", "/nix/store/c-zz", &[]),
        ]);
        let p = plan(&m, &Observed::default(), &policy());
        assert_eq!(
            actions(&p),
            vec![
                ("db", Action::Add),
                ("web", Action::Add),
                ("zz", Action::Add)
            ]
        );
        assert!(p.needs_reload());
        assert!(
            p.services
                .iter()
                .all(|s| s.pulls() && s.job() == Some(Job::Start))
        );
    }

    #[test]
    fn unchanged_host_is_a_noop() {
        let a = svc("a", "/nix/store/a-a", &[]);
        let m = manifest(vec![a.clone()]);
        let mut o = Observed::default();
        o.services.insert("a".into(), running(&a));
        let p = plan(&m, &o, &policy());
        assert!(p.is_noop());
        assert!(!p.needs_reload());
        assert_eq!(
            p.to_string(),
            "= a: unchanged /nix/store/a-a (up to date)\n"
        );
    }

    #[test]
    fn each_kind_of_change() {
        let a = svc("a", "/nix/store/a-a", &[]);
        let b = svc("b", "/nix/store/b-b", &[]);
        let c = svc("c", "/nix/store/c-c", &[]);
        let d = svc("d", "/nix/store/d-d", &[]);
        let mut o = Observed::default();
        o.services.insert("a".into(), running(&a));
        o.services.insert("b".into(), running(&b));
        o.services.insert("c".into(), running(&c));
        let mut stopped = running(&d);
        stopped.active_state = Some("failed".into());
        o.services.insert("d".into(), stopped);
        o.services.insert(
            "gone".into(),
            running(&svc("gone", "/nix/store/g-gone", &[])),
        );

        let mut a2 = a.clone();
        a2.artifact.store_path = "/nix/store/a2-a".into();
        let mut b2 = b.clone();
        b2.env.insert("X".into(), "1".into());
        let m = manifest(vec![a2, b2, c, d]);
        let p = plan(&m, &o, &policy());
        assert_eq!(
            actions(&p),
            vec![
                ("gone", Action::Remove),
                ("a", Action::UpdateClosure),
                ("b", Action::UpdateUnit),
                ("c", Action::Unchanged),
                ("d", Action::Start),
            ]
        );
        let text = p.to_string();
        assert!(
            text.contains(
                "- gone: remove /nix/store/g-gone (no longer in the manifest for host h1)"
            ),
            "{text}"
        );
        assert!(
            text.contains("~ a: update closure /nix/store/a-a -> /nix/store/a2-a"),
            "{text}"
        );
        assert!(
            text.contains("~ b: update unit /nix/store/b-b (unit changed: Environment)"),
            "{text}"
        );
        assert!(
            text.contains("> d: start /nix/store/d-d (unit is failed)"),
            "{text}"
        );
        assert!(!p.services[2].pulls());
        assert_eq!(p.services[2].job(), Some(Job::Restart));
    }

    #[test]
    fn missing_unit_file_is_rewritten_without_pull() {
        let a = svc("a", "/nix/store/a-a", &[]);
        let mut o = Observed::default();
        let mut obs = running(&a);
        obs.files.clear();
        obs.active_state = None;
        o.services.insert("a".into(), obs);
        let p = plan(&manifest(vec![a]), &o, &policy());
        assert_eq!(p.services[0].action, Action::UpdateUnit);
        assert!(!p.services[0].pulls());
        assert!(p.needs_reload());
    }

    #[test]
    fn a_service_left_pending_by_an_interrupted_tick_is_reloaded_and_restarted() {
        // The files match the manifest, but the tick that wrote them was killed before its
        // reload or restart: only the pending mark tells.
        let a = svc("a", "/nix/store/a-a", &[]);
        let mut o = Observed::default();
        let mut obs = running(&a);
        obs.pending = true;
        o.services.insert("a".into(), obs);
        let p = plan(&manifest(vec![a.clone()]), &o, &policy());
        assert_eq!(p.services[0].action, Action::Resume);
        assert_eq!(p.services[0].job(), Some(Job::Restart));
        assert!(!p.services[0].pulls());
        assert!(p.needs_reload());
        assert!(
            p.to_string()
                .contains("~ a: resume /nix/store/a-a (an interrupted tick left it unconfirmed)"),
            "{p}"
        );
        // A stopped pending unit is restarted after a reload too, not merely started from a
        // possibly stale loaded unit.
        let mut obs = running(&a);
        obs.pending = true;
        obs.active_state = Some("inactive".into());
        o.services.insert("a".into(), obs);
        assert_eq!(
            plan(&manifest(vec![a]), &o, &policy()).services[0].action,
            Action::Resume
        );
    }

    #[test]
    fn rollback_target_is_the_applied_version_and_depends_on_stays_on_this_host() {
        let a = svc("a", "/nix/store/a-a", &["db", "other-host"]);
        let db = svc("db", "/nix/store/d-db", &[]);
        let mut o = Observed::default();
        o.services.insert("a".into(), running(&a));
        let mut a2 = a.clone();
        a2.artifact.store_path = "/nix/store/a2-a".into();
        let p = plan(&manifest(vec![a2, db]), &o, &policy());
        assert_eq!(
            actions(&p),
            vec![("db", Action::Add), ("a", Action::UpdateClosure)]
        );
        let rollback = p.services[1].rollback.as_ref().unwrap();
        assert_eq!(rollback.store_path, "/nix/store/a-a");
        assert_eq!(rollback.unit_text, unit::render(&a));
        assert_eq!(p.services[1].depends_on, ["db"]);
        // A new service has nothing to return to; its check is systemd's view (no http).
        assert!(p.services[0].rollback.is_none());
        assert_eq!(
            p.services[0].health.as_ref().map(|h| &h.check),
            Some(&crate::health::spec::Check::Systemd)
        );
        // Restarting the applied version itself (unit lost at reboot) is no rollback either.
        let mut lost = running(&a);
        lost.files.clear();
        o.services.insert("a".into(), lost);
        let p = plan(&manifest(vec![a]), &o, &policy());
        assert_eq!(p.services[0].action, Action::UpdateUnit);
        assert!(p.services[0].rollback.is_none());
    }

    #[test]
    fn other_hosts_services_are_ignored_and_cycles_terminate() {
        let mut other = svc("other", "/nix/store/o-other", &[]);
        other.hosts = vec!["h2".into()];
        let m = manifest(vec![
            other,
            svc("x", "/nix/store/x-x", &["y"]),
            svc("y", "/nix/store/y-y", &["x"]),
        ]);
        let p = plan(&m, &Observed::default(), &policy());
        assert_eq!(actions(&p), vec![("x", Action::Add), ("y", Action::Add)]);
    }

    fn blue_green(name: &str, path: &str, port: u16) -> Service {
        let mut s = svc(name, path, &[]);
        s.http = Some(
            serde_json::from_value(serde_json::json!({
                "domain": "x.test", "path": "/", "internalPort": port, "strategy": "blue-green",
            }))
            .unwrap(),
        );
        s
    }

    #[test]
    fn blue_green_starts_beside_the_live_instance_and_retires_it() {
        let v1 = blue_green("web", "/nix/store/a-web-1", 8000);
        let p = plan(&manifest(vec![v1.clone()]), &Observed::default(), &policy());
        let add = &p.services[0];
        assert_eq!(
            (add.unit.as_str(), add.port),
            ("ferry-web@8000.service", Some(8000))
        );
        assert_eq!(add.unit_file, "ferry-web@.service");
        assert!(!add.switch);

        let mut o = Observed::default();
        o.services.insert("web".into(), running(&v1));
        let v2 = blue_green("web", "/nix/store/b-web-2", 8000);
        let p = plan(&manifest(vec![v2.clone()]), &o, &policy());
        let up = &p.services[0];
        assert_eq!(up.action, Action::UpdateClosure);
        assert!(up.switch);
        assert_eq!(
            (up.unit.as_str(), up.port),
            ("ferry-web@8001.service", Some(8001))
        );
        assert_eq!(up.retire.units, ["ferry-web@8000.service"]);
        assert!(up.stop_first.is_empty() && up.delete_first.is_empty());
        let check = &up.health.as_ref().unwrap().check;
        assert!(check.to_string().contains("127.0.0.1:8001/"), "{check}");
        let back = up.rollback.as_ref().unwrap();
        assert_eq!(back.unit, "ferry-web@8000.service");
        assert_eq!(back.unit_file, "ferry-web@.service");
        assert!(p.to_string().contains(
            "[blue-green: start ferry-web@8001.service, then switch and stop ferry-web@8000.service]"
        ), "{p}");

        // From the second port, the next update goes back to the first.
        let mut obs = running(&v2);
        obs.live_port = Some(8001);
        o.services.insert("web".into(), obs);
        let p = plan(&manifest(vec![v1.clone()]), &o, &policy());
        assert_eq!(p.services[0].unit, "ferry-web@8000.service");
        assert_eq!(p.services[0].retire.units, ["ferry-web@8001.service"]);

        // Nothing serving (a reboot wiped /run): start the live port again, no switch.
        let mut down = running(&v2);
        down.live_port = Some(8001);
        down.files.clear();
        down.active_state = Some("inactive".into());
        o.services.insert("web".into(), down);
        let p = plan(&manifest(vec![v2]), &o, &policy());
        let s = &p.services[0];
        assert_eq!(s.action, Action::UpdateUnit);
        assert!(!s.switch);
        assert_eq!(s.unit, "ferry-web@8001.service");
    }

    #[test]
    fn strategy_changes_and_removal_move_the_other_form_out_of_the_way() {
        let plain = {
            let mut s = blue_green("web", "/nix/store/a-web-1", 8000);
            s.http.as_mut().unwrap().strategy = None;
            s
        };
        let bg = blue_green("web", "/nix/store/a-web-1", 8000);

        // restart -> blue-green: the plain unit serves on the first port until the switch.
        let mut o = Observed::default();
        o.services.insert("web".into(), running(&plain));
        let p = plan(&manifest(vec![bg.clone()]), &o, &policy());
        let s = &p.services[0];
        assert_eq!(
            (s.action, s.why.as_str()),
            (Action::UpdateUnit, "strategy changed to blue-green")
        );
        assert!(s.switch);
        assert_eq!(s.unit, "ferry-web@8001.service");
        assert_eq!(s.retire.units, ["ferry-web.service"]);
        assert_eq!(s.retire.files, ["ferry-web.service"]);

        // blue-green -> restart: the instances hold the port, so they stop first.
        o.services.insert("web".into(), running(&bg));
        let p = plan(&manifest(vec![plain]), &o, &policy());
        let s = &p.services[0];
        assert_eq!(s.why, "strategy changed to restart");
        assert!(!s.switch);
        assert_eq!(s.unit, "ferry-web.service");
        assert_eq!(
            s.stop_first,
            ["ferry-web@8000.service", "ferry-web@8001.service"]
        );
        assert_eq!(s.delete_first, ["ferry-web@.service"]);

        // Removal stops both instances and deletes the template.
        let p = plan(&manifest(vec![]), &o, &policy());
        let s = &p.services[0];
        assert_eq!(s.action, Action::Remove);
        assert_eq!(
            s.stop_first,
            ["ferry-web@8000.service", "ferry-web@8001.service"]
        );
        assert_eq!(s.delete_first, ["ferry-web@.service"]);
    }
}

//! Apply step: carry out a plan against the backends — pull (in parallel), check that every
//! path of each closure about to run is signed by a trusted key (`closure_trust`; `nix
//! copy` does not look at paths the store already holds), pin, stop and delete removed
//! units, write units, one `Reload`, then start/restart the services level by level in
//! `dependsOn` order (a level's services in parallel) and health-check each started one: its
//! probe plus systemd's view (active, `NRestarts` not growing). A service the host policy
//! refused is reported as such; what runs of it is its last good version.
//!
//! A changed service that fails (start job or health) is put back: to the previously applied
//! version (profile, unit, process, then confirmed healthy again), or, with nothing to put
//! back, stopped with its unit deleted. Its store path is reported for quarantine. A failed
//! service skips the services that depend on it (their units are put back untouched) and
//! never stops the others.
//!
//! Each part has its file: `pull` (copy and trust-check closures), `switch` (start a level,
//! health-check it), `put_back` (return what failed to its previous version); this file holds
//! the order of the whole, the unit writes and the report.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_schema::PublicKey;
// tokio's clock, so the phases follow a paused clock in tests.
use tokio::time::Instant;

use crate::backend::bucket::ReadBucket;
use crate::backend::probe::{NetProbe, Probe};
use crate::backend::store::Store;
use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::health::quarantine::Quarantined;
use crate::plan::{Action, Plan, ServicePlan};

mod pull;
mod put_back;
mod switch;

use pull::{check_closures, pull_all};
use switch::{clear_away, run_level};

/// Host settings the apply step needs.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Directory of per-service profiles.
    pub profile_dir: PathBuf,
    /// Generations to keep per profile.
    pub generations_to_keep: u32,
    /// Days a removed service's profile is kept (`removedProfileRetentionDays`).
    pub removed_profile_retention_days: u32,
    /// How long a started unit must stay up before it counts as healthy.
    pub settle: Duration,
    /// `trustedKeys`: every path of a closure that runs must be signed by one of them.
    pub trusted_keys: Vec<PublicKey>,
    /// When the tick stops starting new steps (`timeouts.tickSec`); `None`: never.
    pub deadline: Option<Deadline>,
}

/// The tick's deadline: from `at` on nothing new is started. Pulls under way are given up
/// (they change nothing on the host); a level's jobs and health checks under way finish
/// within their own limits, so what runs is never left half-switched.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When it passes.
    pub at: Instant,
    /// `timeouts.tickSec`, for the message.
    pub tick_sec: u64,
}

impl Deadline {
    /// A deadline `tick_sec` seconds after `started`.
    pub fn after(started: Instant, tick_sec: u64) -> Self {
        Self {
            at: started + Duration::from_secs(tick_sec),
            tick_sec,
        }
    }

    /// The line for a service it kept from starting, once it has passed.
    fn passed(deadline: Option<&Self>) -> Option<String> {
        deadline.filter(|d| Instant::now() >= d.at).map(|d| {
            format!(
                "cut short: not started, the tick had run for timeouts.tickSec ({} s); it runs as before this tick and the next tick carries on",
                d.tick_sec
            )
        })
    }
}

/// What happened to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOutcome {
    /// Service name.
    pub name: String,
    /// The planned action.
    pub action: Action,
    /// Whether it worked.
    pub ok: bool,
    /// One line for the summary (without the service name).
    pub message: String,
    /// A store path that failed on this host and must not be retried (the tick records it).
    pub quarantine: Option<Quarantined>,
    /// Not started, through no fault of its own: a dependency failed or the tick's deadline
    /// passed. It runs as before this tick; a later tick carries on.
    pub skipped: bool,
}

/// Wall time of the apply step's phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// `nix copy` of new closures.
    pub pull: Duration,
    /// Profiles, unit files, `Reload` and systemd jobs (rollbacks included).
    pub systemd: Duration,
    /// Waiting for health verdicts (rollback confirmations included).
    pub health: Duration,
    /// Caddy routes (set by the route step after apply; zero when it did not run).
    pub route: Duration,
    /// Waiting for old blue-green instances to drain before they stop (the retire step).
    pub drain: Duration,
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pullMs={} systemdMs={} healthMs={} routeMs={} drainMs={}",
            self.pull.as_millis(),
            self.systemd.as_millis(),
            self.health.as_millis(),
            self.route.as_millis(),
            self.drain.as_millis()
        )
    }
}

/// The result of applying a plan.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// One entry per planned service, in plan order.
    pub services: Vec<ServiceOutcome>,
    /// `Reload` calls made (one for the plan, one more per level that had to put units back).
    pub reloads: u32,
    /// Unit files written or deleted.
    pub units_touched: u32,
    /// Time per phase.
    pub phases: Phases,
    /// Services the tick's deadline kept from starting (or from being pulled), by name.
    pub cut_short: Vec<String>,
}

/// The backends a tick drives.
#[derive(Debug)]
pub struct Backends<B, S, D, U, P = NetProbe> {
    /// The bucket.
    pub bucket: Arc<B>,
    /// The Nix store.
    pub store: S,
    /// systemd.
    pub systemd: D,
    /// The unit directory.
    pub units: U,
    /// Health probes.
    pub probe: P,
}

/// How a service's turn ended, before the summary is written.
#[derive(Debug, Clone)]
enum Fate {
    /// Failed before its job (pull, pin, unit write, reload) or in a way nothing undoes.
    Failed(String),
    /// Not started because a dependency failed or was skipped.
    Skipped(String),
    /// Its new version failed; `put_back` says what was done about it.
    Reverted {
        /// Why the version failed.
        why: String,
        /// What was done: "rolled back to …" / "stopped and its unit deleted".
        put_back: String,
        /// The record for quarantine.
        quarantine: Quarantined,
    },
    /// Healthy.
    Healthy(String),
}

/// Apply `plan`.
pub async fn apply<B: ReadBucket, S: Store, D: Systemd, U: Units, P: Probe>(
    plan: &Plan,
    b: &Backends<B, S, D, U, P>,
    settings: &ApplySettings,
) -> ApplyReport {
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut report = ApplyReport::default();

    let t = Instant::now();
    let pulled = match settings.deadline {
        Some(d) => tokio::time::timeout_at(d.at, pull_all(plan, b, &mut failed))
            .await
            .is_ok(),
        None => {
            pull_all(plan, b, &mut failed).await;
            true
        }
    };
    if pulled {
        check_closures(plan, b, settings, &mut failed).await;
    }
    report.phases.pull = t.elapsed();

    // Past the deadline nothing on the host has changed yet: every service that would
    // change or start waits for the next tick.
    if let Some(why) = Deadline::passed(settings.deadline.as_ref()) {
        let mut fates: BTreeMap<String, Fate> = failed
            .into_iter()
            .map(|(name, why)| (name, Fate::Failed(why)))
            .collect();
        for p in &plan.services {
            let acts = p.action != Action::Unchanged || p.job().is_some() || p.unit_text.is_some();
            if acts && !fates.contains_key(&p.name) {
                report.cut_short.push(p.name.clone());
                fates.insert(p.name.clone(), Fate::Skipped(why.clone()));
            }
        }
        for p in &plan.services {
            report.services.push(outcome(p, fates.remove(&p.name)));
        }
        return report;
    }

    let t = Instant::now();
    for p in plan.services.iter().filter(|p| p.pulls()) {
        let (Some(to), false) = (&p.to, failed.contains_key(&p.name)) else {
            continue;
        };
        let profile = settings.profile_dir.join(&p.name);
        if let Err(e) = b
            .store
            .pin(&profile, to, settings.generations_to_keep)
            .await
        {
            failed.insert(p.name.clone(), e.to_string());
        }
    }

    let mut changed_files = false;
    for p in plan.services.iter().filter(|p| p.action == Action::Remove) {
        match clear_away(p, b).await {
            Ok(deleted) => {
                changed_files |= deleted > 0;
                report.units_touched += deleted;
            }
            Err(e) => {
                failed.insert(p.name.clone(), e);
            }
        }
    }

    for p in &plan.services {
        let Some(text) = &p.unit_text else { continue };
        if failed.contains_key(&p.name) {
            continue;
        }
        match b.units.write(&p.unit_file, text) {
            Ok(true) => {
                changed_files = true;
                report.units_touched += 1;
            }
            Ok(false) => {}
            Err(e) => {
                failed.insert(p.name.clone(), format!("cannot write {}: {e}", p.unit_file));
            }
        }
    }

    // A resumed service may have a unit file that was written but never loaded.
    if changed_files || plan.services.iter().any(|p| p.action == Action::Resume) {
        report.reloads += 1;
        if let Err(e) = b.systemd.reload().await {
            for p in plan.services.iter().filter(|p| p.action != Action::Remove) {
                if p.job().is_some() {
                    failed
                        .entry(p.name.clone())
                        .or_insert_with(|| e.to_string());
                }
            }
        }
    }
    report.phases.systemd = t.elapsed();

    let mut fates: BTreeMap<String, Fate> = failed
        .into_iter()
        .map(|(name, why)| (name, Fate::Failed(why)))
        .collect();
    for level in levels(plan) {
        let cut = Deadline::passed(settings.deadline.as_ref());
        run_level(&level, b, settings, cut, &mut fates, &mut report).await;
    }

    for p in &plan.services {
        report.services.push(outcome(p, fates.remove(&p.name)));
    }
    report
}

/// The services that run a start/restart job, grouped so that each one comes after every
/// service it depends on: level 0 depends on nothing that starts in this tick, level n on
/// something in level n-1. Plan order is dependency order, so one pass suffices; a
/// dependency that runs no job imposes no wait.
pub fn levels(plan: &Plan) -> Vec<Vec<&ServicePlan>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Vec<&ServicePlan>> = Vec::new();
    for p in plan
        .services
        .iter()
        .filter(|p| p.action != Action::Remove && p.job().is_some())
    {
        let l = p
            .depends_on
            .iter()
            .filter_map(|d| level.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(&p.name, l);
        if out.len() <= l {
            out.resize_with(l + 1, Vec::new);
        }
        out[l].push(p);
    }
    out
}

/// The summary entry of one service from how its turn ended.
fn outcome(p: &ServicePlan, fate: Option<Fate>) -> ServiceOutcome {
    let mut o = fate_outcome(p, fate);
    if !p.refused.is_empty() {
        // What ran was its last good version; the manifest's version is refused.
        let keeps = match &p.to {
            Some(to) => format!("keeps running {to}"),
            None => "not deployed".to_owned(),
        };
        let done = match (p.action, o.ok) {
            (Action::Unchanged, true) => String::new(),
            _ => format!(" ({})", o.message),
        };
        o.message = format!(
            "REFUSED by host policy: {}; {keeps}{done}",
            p.refused.join("; ")
        );
        o.ok = false;
    }
    o
}

fn fate_outcome(p: &ServicePlan, fate: Option<Fate>) -> ServiceOutcome {
    let skipped = matches!(fate, Some(Fate::Skipped(_)));
    let (ok, message, quarantine) = match fate {
        None => (true, success_message(p), None),
        Some(Fate::Healthy(note)) => (true, format!("{}; {note}", success_message(p)), None),
        Some(Fate::Failed(why)) => (false, format!("FAILED ({}): {why}", verb(p.action)), None),
        Some(Fate::Skipped(why)) => (false, why, None),
        Some(Fate::Reverted {
            why,
            put_back,
            quarantine,
        }) => (
            false,
            format!("FAILED ({}): {why}; {put_back}", verb(p.action)),
            Some(quarantine),
        ),
    };
    ServiceOutcome {
        name: p.name.clone(),
        action: p.action,
        ok,
        message,
        quarantine,
        skipped,
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Add => "add",
        Action::UpdateClosure => "update closure",
        Action::UpdateUnit => "update unit",
        Action::Start => "start",
        Action::Resume => "resume",
        Action::Remove => "remove",
        Action::Unchanged => "check",
    }
}

fn success_message(p: &ServicePlan) -> String {
    let to = p.to.as_deref().unwrap_or_default();
    if p.switch {
        let was = match p.action {
            Action::UpdateClosure => format!("was {}", p.from.as_deref().unwrap_or("unknown")),
            _ => p.why.clone(),
        };
        return format!(
            "started {to} as {} ({was}); traffic switches to port {}",
            p.unit,
            p.port.unwrap_or_default()
        );
    }
    match p.action {
        Action::Add => format!("started {to} (new)"),
        Action::UpdateClosure => format!(
            "restarted on {to} (was {})",
            p.from.as_deref().unwrap_or("unknown")
        ),
        Action::UpdateUnit => format!("restarted on {to} ({})", p.why),
        Action::Start => format!("started {to} ({})", p.why),
        Action::Resume => format!("restarted on {to} ({})", p.why),
        Action::Remove => "stopped and unit deleted (profile kept)".to_owned(),
        Action::Unchanged => format!("unchanged {to}"),
    }
}

#[cfg(test)]
mod tests {
    //! The apply engine's ordering, health checks, rollback and failure isolation, on
    //! in-memory backends that share one fake host (each real backend is tested against the
    //! real thing in the ferry-tests crate). tokio's paused clock runs the health schedules
    //! instantly.

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::backend::bucket::{BucketError, Fetched};
    use crate::backend::probe::ProbeError;
    use crate::backend::store::StoreError;
    use crate::backend::systemd::{SystemdError, UnitState};
    use crate::plan::{Job, Observed, ObservedService, Policy, plan};
    use crate::render::unit::{instance_ports, is_blue_green, render, serving_unit, unit_file};
    use ferry_schema::Manifest;
    use ferry_schema::manifest::Service;
    use ferry_schema::path_info::PathInfo;

    /// The fake host: unit files, what each unit runs (the unit text at its last start), the
    /// `NRestarts` systemd reports, and a log of every side effect in order.
    #[derive(Default)]
    struct FakeHost {
        log: Mutex<Vec<String>>,
        files: Mutex<BTreeMap<String, String>>,
        running: Mutex<BTreeMap<String, String>>,
        restarts: Mutex<BTreeMap<String, u32>>,
    }
    impl FakeHost {
        fn push(&self, s: String) {
            self.log.lock().unwrap().push(s);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.log.lock().unwrap())
        }
        /// What `unit` runs now, if anything.
        fn runs(&self, unit: &str) -> Option<String> {
            self.running.lock().unwrap().get(unit).cloned()
        }
    }

    struct NoBucket;
    impl ReadBucket for NoBucket {
        async fn get(&self, _: &str, _: Option<&str>) -> Result<Fetched, BucketError> {
            Ok(Fetched::Missing)
        }
        fn direct_cache_url(&self) -> Option<String> {
            Some("file:///cache".into())
        }
        fn requests(&self) -> u64 {
            0
        }
    }

    /// Pulls fail for paths containing `.1`.
    struct FakeStore<'a>(&'a FakeHost, &'static str);
    impl Store for FakeStore<'_> {
        async fn pull(&self, _: &str, paths: &[String]) -> Result<(), StoreError> {
            self.0.push(format!("pull {}", paths.join(",")));
            match paths.iter().find(|p| p.contains(self.1)) {
                Some(p) => Err(StoreError::Pull {
                    path: p.clone(),
                    kind: "bad signature",
                    reason: "untrusted".into(),
                }),
                None => Ok(()),
            }
        }
        async fn pin(&self, profile: &Path, path: &str, _: u32) -> Result<(), StoreError> {
            self.0.push(format!("pin {} {path}", profile.display()));
            Ok(())
        }
        /// Each path is its own closure, signed unless its name says `unsigned`.
        async fn closure_info(&self, paths: &[String]) -> Result<Vec<PathInfo>, StoreError> {
            Ok(paths
                .iter()
                .map(|p| {
                    let mut info = PathInfo {
                        path: p.clone(),
                        nar_hash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
                            .into(),
                        nar_size: 8,
                        references: Vec::new(),
                        deriver: None,
                        ca: None,
                        signatures: Vec::new(),
                    };
                    if !p.contains("unsigned") {
                        let fp = ferry_schema::narinfo::fingerprint(p, &info.nar_hash, 8, &[]);
                        info.signatures
                            .push(cache_key().sign_detached(fp.as_bytes()));
                    }
                    info
                })
                .collect())
        }
    }

    /// A unit whose store path contains `crashing` restarts on every look.
    struct FakeSystemd<'a>(&'a FakeHost);
    impl Systemd for FakeSystemd<'_> {
        async fn reload(&self) -> Result<(), SystemdError> {
            self.0.push("reload".into());
            Ok(())
        }
        async fn run_job(&self, unit: &str, job: Job) -> Result<String, SystemdError> {
            self.0.push(format!("{job:?} {unit}"));
            // An instance runs its template.
            let file = match unit.split_once('@') {
                Some((stem, _)) => format!("{stem}@.service"),
                None => unit.to_owned(),
            };
            let text = self.0.files.lock().unwrap().get(&file).cloned();
            let mut running = self.0.running.lock().unwrap();
            match (job, text) {
                (Job::Stop, _) => {
                    running.remove(unit);
                }
                (_, Some(text)) => {
                    running.insert(unit.to_owned(), text);
                }
                (_, None) => return Ok("failed".into()),
            }
            Ok("done".into())
        }
        async fn unit_files(&self, _: &str) -> Result<Vec<String>, SystemdError> {
            Ok(Vec::new())
        }
        async fn dynamic_users(&self) -> Result<Vec<(u32, String)>, SystemdError> {
            Ok(Vec::new())
        }
        async fn unit_state(&self, unit: &str) -> Result<Option<UnitState>, SystemdError> {
            let Some(text) = self.0.runs(unit) else {
                return Ok(Some(UnitState {
                    active_state: "inactive".into(),
                    sub_state: "dead".into(),
                    n_restarts: 0,
                    exec_main_status: 0,
                }));
            };
            let mut restarts = self.0.restarts.lock().unwrap();
            let n = restarts.entry(unit.to_owned()).or_default();
            if text.contains("crashing") {
                *n += 1;
            }
            Ok(Some(UnitState {
                active_state: "active".into(),
                sub_state: "running".into(),
                n_restarts: *n,
                exec_main_status: 1,
            }))
        }
    }

    struct FakeUnits<'a>(&'a FakeHost);
    impl Units for FakeUnits<'_> {
        fn list(&self) -> std::io::Result<BTreeMap<String, String>> {
            Ok(self.0.files.lock().unwrap().clone())
        }
        fn write(&self, file: &str, text: &str) -> std::io::Result<bool> {
            self.0.push(format!("write {file}"));
            let mut files = self.0.files.lock().unwrap();
            Ok(files.insert(file.into(), text.into()).as_deref() != Some(text))
        }
        fn remove(&self, file: &str) -> std::io::Result<bool> {
            self.0.push(format!("delete {file}"));
            Ok(self.0.files.lock().unwrap().remove(file).is_some())
        }
    }

    /// Port `8000 + n` belongs to the service named in `ports`; a running store path
    /// containing `broken` answers 503, nothing running refuses the connection.
    struct FakeProbe<'a>(&'a FakeHost, BTreeMap<u16, &'static str>);
    impl Probe for FakeProbe<'_> {
        async fn http_status(&self, port: u16, _: &str, _: Duration) -> Result<u16, ProbeError> {
            let service = self.1.get(&port).copied().unwrap_or("?");
            self.0.push(format!("probe {service}"));
            // A bare name is a plain service; `web@8001` is that instance.
            match self.0.runs(&format!("ferry-{service}.service")) {
                None => Err(ProbeError::Connect {
                    port,
                    reason: "Connection refused".into(),
                }),
                Some(text) if text.contains("broken") => Ok(503),
                Some(_) => Ok(200),
            }
        }
        async fn tcp_connect(&self, port: u16, _: Duration) -> Result<(), ProbeError> {
            Err(ProbeError::Connect {
                port,
                reason: "unused".into(),
            })
        }
    }

    fn svc(name: &str, path: &str, deps: &[&str]) -> Service {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "name": name, "artifact": {"type": "nix-closure", "storePath": path},
            "hosts": ["h"], "exec": {"command": name, "user": "u"},
        }))
        .unwrap();
        if !deps.is_empty() {
            s.depends_on = Some(deps.iter().map(|d| d.to_string()).collect());
        }
        s
    }

    /// A service with an HTTP check on `port`: `/health`, 3 tries a second apart.
    fn checked(name: &str, path: &str, port: u16, deps: &[&str]) -> Service {
        let mut s = svc(name, path, deps);
        s.health_check = Some(
            serde_json::from_value(serde_json::json!({
                "type": "http", "path": "/health", "port": port,
                "startPeriodSec": 1, "intervalSec": 1, "retries": 3,
            }))
            .unwrap(),
        );
        s
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

    /// The host already runs `services` (files written, units started, state recorded).
    fn running(host: &FakeHost, services: &[Service]) -> Observed {
        let mut observed = Observed::default();
        for s in services {
            let text = render(s);
            let live = instance_ports(s).filter(|_| is_blue_green(s)).map(|p| p[0]);
            host.files
                .lock()
                .unwrap()
                .insert(unit_file(s), text.clone());
            host.running
                .lock()
                .unwrap()
                .insert(serving_unit(&s.name, live), text.clone());
            observed.services.insert(
                s.name.clone(),
                ObservedService {
                    store_path: Some(s.artifact.store_path.clone()),
                    files: [(unit_file(s), text)].into(),
                    active_state: Some("active".into()),
                    pending: false,
                    applied: Some(s.clone()),
                    live_port: live,
                },
            );
        }
        observed
    }

    fn backends<'a>(
        host: &'a FakeHost,
        ports: &[(u16, &'static str)],
    ) -> Backends<NoBucket, FakeStore<'a>, FakeSystemd<'a>, FakeUnits<'a>, FakeProbe<'a>> {
        Backends {
            bucket: Arc::new(NoBucket),
            store: FakeStore(host, "untrusted"),
            systemd: FakeSystemd(host),
            units: FakeUnits(host),
            probe: FakeProbe(host, ports.iter().copied().collect()),
        }
    }

    fn host_policy() -> Policy {
        Policy {
            host: "h".into(),
            ..Policy::default()
        }
    }

    /// The key that signs the fake store's paths (all of them, except those whose name
    /// contains `unsigned`).
    fn cache_key() -> &'static ferry_schema::SecretKey {
        static KEY: std::sync::OnceLock<ferry_schema::SecretKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| ferry_schema::SecretKey::generate("cache-1").unwrap())
    }

    fn settings() -> ApplySettings {
        ApplySettings {
            profile_dir: "/p".into(),
            generations_to_keep: 5,
            removed_profile_retention_days: 30,
            settle: Duration::ZERO,
            trusted_keys: vec![cache_key().public()],
            deadline: None,
        }
    }

    fn by_name(report: &ApplyReport) -> BTreeMap<&str, &ServiceOutcome> {
        report
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn order_one_reload_and_failure_isolation() {
        let host = FakeHost::default();
        let m = manifest(vec![
            svc("web", "/nix/store/w-web", &["db"]),
            svc("db", "/nix/store/d-db", &[]),
            svc("bad", "/nix/store/b-untrusted", &[]),
        ]);
        let mut observed = Observed::default();
        observed.services.insert(
            "old".into(),
            ObservedService {
                store_path: Some("/nix/store/o-old".into()),
                files: [("ferry-old.service".to_owned(), "x".to_owned())].into(),
                active_state: None,
                pending: false,
                applied: None,
                live_port: None,
            },
        );
        host.files
            .lock()
            .unwrap()
            .insert("ferry-old.service".into(), "x".into());
        let p = plan(&m, &observed, &host_policy());
        let report = apply(&p, &backends(&host, &[]), &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/b-untrusted,/nix/store/d-db,/nix/store/w-web",
                "pull /nix/store/b-untrusted",
                "pull /nix/store/d-db",
                "pull /nix/store/w-web",
                "pin /p/db /nix/store/d-db",
                "pin /p/web /nix/store/w-web",
                "Stop ferry-old.service",
                "delete ferry-old.service",
                "write ferry-db.service",
                "write ferry-web.service",
                "reload",
                "Start ferry-db.service",
                "Start ferry-web.service",
            ]
        );
        assert_eq!(report.reloads, 1);
        let by_name = by_name(&report);
        assert!(!by_name["bad"].ok);
        assert!(
            by_name["bad"].message.contains("bad signature"),
            "{}",
            by_name["bad"].message
        );
        assert!(by_name["db"].ok && by_name["web"].ok && by_name["old"].ok);
        // Neither has http: systemd's view at the end of the default 2 s start period.
        assert!(
            by_name["web"]
                .message
                .ends_with("healthy after 1 try (2.0s)"),
            "{}",
            by_name["web"].message
        );
        assert!(by_name["bad"].quarantine.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn dependency_levels_start_in_order_and_independent_services_in_parallel() {
        let host = FakeHost::default();
        let m = manifest(vec![
            checked("web", "/nix/store/w-web", 8002, &["api"]),
            checked("api", "/nix/store/a-api", 8001, &["db"]),
            checked("db", "/nix/store/d-db", 8000, &[]),
            checked("cache", "/nix/store/c-cache", 8003, &[]),
        ]);
        let p = plan(&m, &Observed::default(), &host_policy());
        let names = |l: &Vec<&ServicePlan>| l.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let lv: Vec<Vec<String>> = levels(&p).iter().map(names).collect();
        assert_eq!(lv, [vec!["cache", "db"], vec!["api"], vec!["web"]]);
        let b = backends(
            &host,
            &[(8000, "db"), (8001, "api"), (8002, "web"), (8003, "cache")],
        );
        let started = tokio::time::Instant::now();
        let report = apply(&p, &b, &settings()).await;
        let jobs_and_probes: Vec<String> = host
            .take()
            .into_iter()
            .filter(|l| l.starts_with("Start") || l.starts_with("probe"))
            .collect();
        assert_eq!(
            jobs_and_probes,
            [
                "Start ferry-cache.service",
                "Start ferry-db.service",
                "probe cache",
                "probe db",
                "Start ferry-api.service",
                "probe api",
                "Start ferry-web.service",
                "probe web",
            ]
        );
        assert!(report.services.iter().all(|s| s.ok));
        // Three levels, each healthy on its first probe after the 1 s start period: cache
        // and db were checked at the same time, not one after the other.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(report.phases.health, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_tick_deadline_no_new_level_starts_and_its_units_are_put_back() {
        let host = FakeHost::default();
        let m = manifest(vec![
            checked("web", "/nix/store/w-web", 8002, &["api"]),
            checked("api", "/nix/store/a-api", 8001, &["db"]),
            checked("db", "/nix/store/d-db", 8000, &[]),
        ]);
        let p = plan(&m, &Observed::default(), &host_policy());
        let b = backends(&host, &[(8000, "db"), (8001, "api"), (8002, "web")]);
        // Each level takes 1 s (its start period): the deadline passes while api's level runs.
        let deadline = Deadline::after(tokio::time::Instant::now(), 1);
        let with_deadline = ApplySettings {
            deadline: Some(Deadline {
                at: deadline.at + Duration::from_millis(500),
                ..deadline
            }),
            ..settings()
        };
        let report = apply(&p, &b, &with_deadline).await;
        let starts: Vec<String> = host
            .take()
            .into_iter()
            .filter(|l| l.starts_with("Start"))
            .collect();
        assert_eq!(
            starts,
            ["Start ferry-db.service", "Start ferry-api.service"]
        );
        assert_eq!(report.cut_short, ["web"]);
        let by = by_name(&report);
        assert!(by["db"].ok && by["api"].ok, "{report:?}");
        assert!(
            !by["web"].ok && by["web"].message.starts_with("cut short"),
            "{}",
            by["web"].message
        );
        assert!(
            !host.files.lock().unwrap().contains_key("ferry-web.service"),
            "web's new unit was left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_tick_deadline_before_any_change_nothing_is_touched() {
        let host = FakeHost::default();
        let m = manifest(vec![checked("db", "/nix/store/d-db", 8000, &[])]);
        let p = plan(&m, &Observed::default(), &host_policy());
        let b = backends(&host, &[(8000, "db")]);
        let passed = ApplySettings {
            deadline: Some(Deadline::after(tokio::time::Instant::now(), 0)),
            ..settings()
        };
        let report = apply(&p, &b, &passed).await;
        assert_eq!(report.cut_short, ["db"]);
        assert!(host.files.lock().unwrap().is_empty(), "a unit was written");
        assert!(!host.take().iter().any(|l| l.starts_with("Start")));
        assert_eq!(report.reloads, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_update_is_rolled_back_and_quarantined() {
        let host = FakeHost::default();
        let v1 = checked("web", "/nix/store/a-web-1", 8000, &[]);
        let observed = running(&host, std::slice::from_ref(&v1));
        let v2 = checked("web", "/nix/store/b-web-2-broken", 8000, &[]);
        let p = plan(&manifest(vec![v2]), &observed, &host_policy());
        let report = apply(&p, &backends(&host, &[(8000, "web")]), &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/b-web-2-broken",
                "pin /p/web /nix/store/b-web-2-broken",
                "write ferry-web.service",
                "reload",
                "Restart ferry-web.service",
                "probe web",
                "probe web",
                "probe web",
                "pin /p/web /nix/store/a-web-1",
                "write ferry-web.service",
                "reload",
                "Restart ferry-web.service",
                "probe web",
            ]
        );
        let web = &report.services[0];
        assert!(!web.ok);
        assert_eq!(
            web.message,
            "FAILED (update closure): /nix/store/b-web-2-broken failed health check (HTTP 503 on /health after 3 tries); rolled back to /nix/store/a-web-1"
        );
        let q = web.quarantine.as_ref().unwrap();
        assert_eq!(q.store_path, "/nix/store/b-web-2-broken");
        assert_eq!(q.rolled_back_to.as_deref(), Some("/nix/store/a-web-1"));
        assert_eq!(host.runs("ferry-web.service"), Some(render(&v1)));
        assert_eq!(report.reloads, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn crash_looping_update_is_caught_by_nrestarts_and_rolled_back() {
        let host = FakeHost::default();
        let v1 = svc("worker", "/nix/store/a-worker-1", &[]);
        let observed = running(&host, std::slice::from_ref(&v1));
        let v2 = svc("worker", "/nix/store/c-worker-2-crashing", &[]);
        let p = plan(&manifest(vec![v2]), &observed, &host_policy());
        let report = apply(&p, &backends(&host, &[]), &settings()).await;
        let w = &report.services[0];
        assert!(
            w.message.starts_with(
                "FAILED (update closure): /nix/store/c-worker-2-crashing crash-looping: ferry-worker.service restarted 1 time since its start"
            ) && w.message.ends_with("rolled back to /nix/store/a-worker-1"),
            "{}",
            w.message
        );
        assert_eq!(host.runs("ferry-worker.service"), Some(render(&v1)));
        assert!(w.quarantine.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_middle_of_a_chain_is_stopped_and_skips_the_last() {
        let host = FakeHost::default();
        let m = manifest(vec![
            checked("a", "/nix/store/a-a", 8000, &[]),
            checked("b", "/nix/store/b-b-broken", 8001, &["a"]),
            checked("c", "/nix/store/c-c", 8002, &["b"]),
        ]);
        let p = plan(&m, &Observed::default(), &host_policy());
        let report = apply(
            &p,
            &backends(&host, &[(8000, "a"), (8001, "b"), (8002, "c")]),
            &settings(),
        )
        .await;
        let log = host.take();
        let tail: Vec<&str> = log
            .iter()
            .skip_while(|l| *l != "Start ferry-b.service")
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "Start ferry-b.service",
                "probe b",
                "probe b",
                "probe b",
                "Stop ferry-b.service",
                "delete ferry-b.service",
                "reload",
                // c's level: its unit goes too, and systemd forgets it.
                "delete ferry-c.service",
                "reload",
            ]
        );
        let by_name = by_name(&report);
        assert!(by_name["a"].ok);
        assert_eq!(
            by_name["b"].message,
            "FAILED (add): /nix/store/b-b-broken failed health check (HTTP 503 on /health after 3 tries); stopped and ferry-b.service deleted (nothing to roll back to)"
        );
        assert_eq!(
            by_name["b"].quarantine.as_ref().unwrap().rolled_back_to,
            None
        );
        assert!(!by_name["c"].ok);
        assert_eq!(by_name["c"].message, "skipped: depends on b, which failed");
        assert!(by_name["c"].quarantine.is_none());
        assert_eq!(host.runs("ferry-c.service"), None);
        assert!(!host.files.lock().unwrap().contains_key("ferry-c.service"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_skipped_update_gets_its_previous_unit_back_without_a_restart() {
        let host = FakeHost::default();
        let db1 = checked("db", "/nix/store/d-db-1", 8000, &[]);
        let web1 = checked("web", "/nix/store/w-web-1", 8001, &["db"]);
        let observed = running(&host, &[db1, web1.clone()]);
        let m = manifest(vec![
            checked("db", "/nix/store/e-db-2-crashing", 8000, &[]),
            checked("web", "/nix/store/x-web-2", 8001, &["db"]),
        ]);
        let p = plan(&m, &observed, &host_policy());
        let report = apply(
            &p,
            &backends(&host, &[(8000, "db"), (8001, "web")]),
            &settings(),
        )
        .await;
        let by_name = by_name(&report);
        assert!(
            by_name["db"]
                .message
                .contains("rolled back to /nix/store/d-db-1")
        );
        assert_eq!(
            by_name["web"].message,
            "skipped: depends on db, which failed"
        );
        assert_eq!(
            host.files.lock().unwrap()["ferry-web.service"],
            render(&web1)
        );
        assert_eq!(host.runs("ferry-web.service"), Some(render(&web1)));
        assert!(
            !host
                .take()
                .iter()
                .any(|l| l.contains("ferry-web.service") && !l.starts_with("write ")),
            "web's process was touched"
        );
    }

    /// A blue-green service on 8000/8001 with an HTTP check of `/health`.
    fn blue_green(path: &str) -> Service {
        let mut s = checked("web", path, 8000, &[]);
        s.http = Some(
            serde_json::from_value(serde_json::json!({
                "domain": "x.test", "path": "/", "internalPort": 8000, "strategy": "blue-green",
            }))
            .unwrap(),
        );
        s
    }

    #[tokio::test(start_paused = true)]
    async fn blue_green_update_starts_the_idle_instance_and_leaves_the_live_one_alone() {
        let host = FakeHost::default();
        let v1 = blue_green("/nix/store/a-web-1");
        let observed = running(&host, std::slice::from_ref(&v1));
        let v2 = blue_green("/nix/store/b-web-2");
        let p = plan(&manifest(vec![v2.clone()]), &observed, &host_policy());
        let b = backends(&host, &[(8000, "web@8000"), (8001, "web@8001")]);
        let report = apply(&p, &b, &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/b-web-2",
                "pin /p/web /nix/store/b-web-2",
                "write ferry-web@.service",
                "reload",
                "Restart ferry-web@8001.service",
                "probe web@8001",
            ]
        );
        let web = &report.services[0];
        assert!(web.ok, "{}", web.message);
        assert!(
            web.message.starts_with(
                "started /nix/store/b-web-2 as ferry-web@8001.service (was /nix/store/a-web-1); traffic switches to port 8001"
            ),
            "{}",
            web.message
        );
        // The old instance still serves v1 until the route moves and the retire step stops it.
        assert_eq!(host.runs("ferry-web@8000.service"), Some(render(&v1)));
        assert_eq!(host.runs("ferry-web@8001.service"), Some(render(&v2)));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_blue_green_instance_is_stopped_and_nothing_switches() {
        let host = FakeHost::default();
        let v1 = blue_green("/nix/store/a-web-1");
        let observed = running(&host, std::slice::from_ref(&v1));
        let v2 = blue_green("/nix/store/b-web-2-broken");
        let p = plan(&manifest(vec![v2]), &observed, &host_policy());
        let b = backends(&host, &[(8000, "web@8000"), (8001, "web@8001")]);
        let report = apply(&p, &b, &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/b-web-2-broken",
                "pin /p/web /nix/store/b-web-2-broken",
                "write ferry-web@.service",
                "reload",
                "Restart ferry-web@8001.service",
                "probe web@8001",
                "probe web@8001",
                "probe web@8001",
                "Stop ferry-web@8001.service",
                "pin /p/web /nix/store/a-web-1",
                "write ferry-web@.service",
                "reload",
            ]
        );
        let web = &report.services[0];
        assert_eq!(
            web.message,
            "FAILED (update closure): /nix/store/b-web-2-broken failed health check (HTTP 503 on /health after 3 tries); stopped ferry-web@8001.service; nothing switched, ferry-web@8000.service keeps serving /nix/store/a-web-1"
        );
        assert_eq!(
            web.quarantine.as_ref().unwrap().rolled_back_to.as_deref(),
            Some("/nix/store/a-web-1")
        );
        assert_eq!(host.runs("ferry-web@8000.service"), Some(render(&v1)));
        assert_eq!(host.runs("ferry-web@8001.service"), None);
        assert_eq!(
            host.files.lock().unwrap()["ferry-web@.service"],
            render(&v1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closure_no_trusted_key_signed_is_neither_pinned_nor_run() {
        // Pulled or already in the store, it makes no difference: the pull succeeds (as
        // `nix copy` does for a path the store already holds) and the check refuses it.
        let host = FakeHost::default();
        let m = manifest(vec![
            svc("planted", "/nix/store/p-planted-unsigned", &[]),
            svc("web", "/nix/store/w-web", &[]),
        ]);
        let p = plan(&m, &Observed::default(), &host_policy());
        let report = apply(&p, &backends(&host, &[]), &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/p-planted-unsigned,/nix/store/w-web",
                "pin /p/web /nix/store/w-web",
                "write ferry-web.service",
                "reload",
                "Start ferry-web.service",
            ]
        );
        let by_name = by_name(&report);
        assert!(by_name["web"].ok);
        assert!(!by_name["planted"].ok);
        assert!(
            by_name["planted"].message.starts_with(
                "FAILED (add): closure of /nix/store/p-planted-unsigned is not signed by any key in trustedKeys: /nix/store/p-planted-unsigned has no signature"
            ),
            "{}",
            by_name["planted"].message
        );
        // A host trusting another key runs nothing.
        let other = ApplySettings {
            trusted_keys: vec![ferry_schema::SecretKey::generate("other").unwrap().public()],
            ..settings()
        };
        let host = FakeHost::default();
        let report = apply(&p, &backends(&host, &[]), &other).await;
        assert!(report.services.iter().all(|s| !s.ok));
        assert!(!host.take().iter().any(|l| l.starts_with("Start")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_service_keeps_its_last_good_version_while_the_others_deploy() {
        let host = FakeHost::default();
        let a1 = svc("a", "/nix/store/a-a-1", &[]);
        let b1 = svc("b", "/nix/store/b-b-1", &[]);
        let observed = running(&host, &[a1, b1.clone()]);
        let m = manifest(vec![
            svc("a", "/nix/store/a-a-2", &[]),
            svc("b", "/nix/store/b-b-2", &[]),
            svc("c", "/nix/store/c-c-1", &[]),
        ]);
        let policy = Policy {
            refused: [
                (
                    "b".to_owned(),
                    vec!["envFile /etc/shadow is not this service's".to_owned()],
                ),
                (
                    "c".to_owned(),
                    vec!["exec.group root is not in allowedGroups".to_owned()],
                ),
            ]
            .into(),
            ..host_policy()
        };
        let p = plan(&m, &observed, &policy);
        assert!(p.to_string().contains(
            "= b: unchanged /nix/store/b-b-1 (up to date) [REFUSED by host policy: envFile /etc/shadow is not this service's; the manifest's version is not applied]"
        ), "{p}");
        let report = apply(&p, &backends(&host, &[]), &settings()).await;
        assert_eq!(
            host.take(),
            [
                "pull /nix/store/a-a-2",
                "pin /p/a /nix/store/a-a-2",
                "write ferry-a.service",
                "reload",
                "Restart ferry-a.service",
            ]
        );
        let by_name = by_name(&report);
        assert!(by_name["a"].ok);
        assert_eq!(
            by_name["b"].message,
            "REFUSED by host policy: envFile /etc/shadow is not this service's; keeps running /nix/store/b-b-1"
        );
        assert_eq!(
            by_name["c"].message,
            "REFUSED by host policy: exec.group root is not in allowedGroups; not deployed"
        );
        assert!(!by_name["b"].ok && !by_name["c"].ok);
        assert_eq!(host.runs("ferry-b.service"), Some(render(&b1)));

        // After a reboot (unit files gone) the refused service comes back as it was.
        let mut lost = observed.clone();
        if let Some(o) = lost.services.get_mut("b") {
            o.files.clear();
            o.active_state = Some("inactive".into());
        }
        let p = plan(&m, &lost, &policy);
        let b = p.services.iter().find(|s| s.name == "b").unwrap();
        assert_eq!(
            (b.action, b.to.as_deref()),
            (Action::UpdateUnit, Some("/nix/store/b-b-1"))
        );
        assert_eq!(b.unit_text.as_deref(), Some(render(&b1).as_str()));
    }
}

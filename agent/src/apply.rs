//! Apply step: carry out a plan against the backends — pull (in parallel), pin, stop and
//! delete removed units, write units, one `Reload`, start/restart in dependency order, then
//! confirm each started unit stays up for the settle time. A failure is recorded against its
//! service and never stops the others.
//!
//! Health probes and Caddy routes (the routing work) plug in after the settle check: that is
//! where a service's "ok" becomes "healthy and serving".

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::bucket::ReadBucket;
use crate::backend::cache_proxy::CacheProxy;
use crate::backend::store::Store;
use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::plan::{Action, Job, Plan, ServicePlan};
use crate::render::unit::unit_name;

/// Host settings the apply step needs.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Directory of per-service profiles.
    pub profile_dir: PathBuf,
    /// Generations to keep per profile.
    pub generations_to_keep: u32,
    /// How long a started unit must stay up.
    pub settle: Duration,
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
}

/// The result of applying a plan.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// One entry per planned service, in plan order.
    pub services: Vec<ServiceOutcome>,
    /// `Reload` calls made (0 or 1).
    pub reloads: u32,
    /// Unit files written or deleted.
    pub units_touched: u32,
}

/// The backends a tick drives.
#[derive(Debug)]
pub struct Backends<B, S, D, U> {
    /// The bucket.
    pub bucket: Arc<B>,
    /// The Nix store.
    pub store: S,
    /// systemd.
    pub systemd: D,
    /// The unit directory.
    pub units: U,
}

/// Apply `plan`.
pub async fn apply<B: ReadBucket, S: Store, D: Systemd, U: Units>(
    plan: &Plan,
    b: &Backends<B, S, D, U>,
    settings: &ApplySettings,
) -> ApplyReport {
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut report = ApplyReport::default();

    pull_all(plan, b, &mut failed).await;

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
        let unit = unit_name(&p.name);
        match b.systemd.run_job(&unit, Job::Stop).await {
            Ok(r) if r == "done" => {}
            // Already gone (e.g. /run was wiped by a reboot): nothing to stop.
            Err(e)
                if e.to_string().contains("NoSuchUnit") || e.to_string().contains("not loaded") => {
            }
            Ok(r) => {
                failed.insert(p.name.clone(), format!("stop job of {unit} ended with {r}"));
                continue;
            }
            Err(e) => {
                failed.insert(p.name.clone(), e.to_string());
                continue;
            }
        }
        match b.units.remove(&p.name) {
            Ok(true) => {
                changed_files = true;
                report.units_touched += 1;
            }
            Ok(false) => {}
            Err(e) => {
                failed.insert(p.name.clone(), format!("cannot delete {unit}: {e}"));
            }
        }
    }

    for p in &plan.services {
        let Some(text) = &p.unit_text else { continue };
        if failed.contains_key(&p.name) {
            continue;
        }
        match b.units.write(&p.name, text) {
            Ok(true) => {
                changed_files = true;
                report.units_touched += 1;
            }
            Ok(false) => {}
            Err(e) => {
                failed.insert(
                    p.name.clone(),
                    format!("cannot write {}: {e}", unit_name(&p.name)),
                );
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

    let started = run_jobs(plan, &b.systemd, &mut failed).await;
    settle(&started, &b.systemd, settings.settle, &mut failed).await;

    for p in &plan.services {
        report.services.push(match failed.remove(&p.name) {
            Some(why) => ServiceOutcome {
                name: p.name.clone(),
                action: p.action,
                ok: false,
                message: format!("FAILED ({}): {why}", verb(p.action)),
            },
            None => ServiceOutcome {
                name: p.name.clone(),
                action: p.action,
                ok: true,
                message: success_message(p),
            },
        });
    }
    report
}

async fn pull_all<B: ReadBucket, S: Store, D, U>(
    plan: &Plan,
    b: &Backends<B, S, D, U>,
    failed: &mut BTreeMap<String, String>,
) {
    let pulls: Vec<&ServicePlan> = plan.services.iter().filter(|p| p.pulls()).collect();
    if pulls.is_empty() {
        return;
    }
    // The proxy lives exactly as long as this function: the duration of the copies.
    let mut _proxy = None;
    let url = match b.bucket.direct_cache_url() {
        Some(url) => url,
        None => match CacheProxy::start(b.bucket.clone()).await {
            Ok(proxy) => {
                let url = proxy.url().to_owned();
                _proxy = Some(proxy);
                url
            }
            Err(e) => {
                for p in pulls {
                    failed.insert(
                        p.name.clone(),
                        format!("cannot start the loopback cache proxy: {e}"),
                    );
                }
                return;
            }
        },
    };
    let mut paths: Vec<String> = pulls.iter().filter_map(|p| p.to.clone()).collect();
    paths.sort();
    paths.dedup();
    if b.store.pull(&url, &paths).await.is_ok() {
        return;
    }
    // The batch failed: pull path by path to say which service's closure is at fault.
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for path in &paths {
        if let Err(e) = b.store.pull(&url, std::slice::from_ref(path)).await {
            errors.insert(path.clone(), e.to_string());
        }
    }
    for p in pulls {
        if let Some(e) = p.to.as_ref().and_then(|to| errors.get(to)) {
            failed.insert(p.name.clone(), e.clone());
        }
    }
}

async fn run_jobs<D: Systemd>(
    plan: &Plan,
    systemd: &D,
    failed: &mut BTreeMap<String, String>,
) -> Vec<(String, u32)> {
    let mut started = Vec::new();
    let mut dead: BTreeSet<String> = BTreeSet::new();
    for p in plan.services.iter().filter(|p| p.action != Action::Remove) {
        let Some(job) = p.job() else { continue };
        if failed.contains_key(&p.name) {
            dead.insert(p.name.clone());
            continue;
        }
        let unit = unit_name(&p.name);
        match systemd.run_job(&unit, job).await {
            Ok(r) if r == "done" => {
                let restarts = match systemd.unit_state(&unit).await {
                    Ok(Some(s)) => s.n_restarts,
                    _ => 0,
                };
                started.push((p.name.clone(), restarts));
            }
            Ok(r) => {
                failed.insert(
                    p.name.clone(),
                    format!("{job:?} job of {unit} ended with {r}; see journalctl -u {unit}"),
                );
            }
            Err(e) => {
                failed.insert(p.name.clone(), e.to_string());
            }
        }
    }
    started
}

async fn settle<D: Systemd>(
    started: &[(String, u32)],
    systemd: &D,
    after: Duration,
    failed: &mut BTreeMap<String, String>,
) {
    if started.is_empty() {
        return;
    }
    tokio::time::sleep(after).await;
    for (name, restarts_before) in started {
        let unit = unit_name(name);
        match systemd.unit_state(&unit).await {
            Ok(Some(s)) if s.active_state == "active" && s.n_restarts == *restarts_before => {}
            Ok(Some(s)) => {
                failed.insert(
                    name.clone(),
                    format!(
                        "{unit} is {}/{} after {after:?} (NRestarts {}, exit status {}); see journalctl -u {unit}",
                        s.active_state, s.sub_state, s.n_restarts, s.exec_main_status
                    ),
                );
            }
            Ok(None) => {
                failed.insert(name.clone(), format!("{unit} is not loaded after start"));
            }
            Err(e) => {
                failed.insert(name.clone(), e.to_string());
            }
        }
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
    //! The apply engine's ordering and failure isolation, on in-memory backends (each real
    //! backend is tested against the real thing in the ferry-tests crate).

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::backend::bucket::{BucketError, Fetched};
    use crate::backend::store::StoreError;
    use crate::backend::systemd::{SystemdError, UnitState};
    use crate::plan::{Observed, ObservedService, Policy, plan};
    use ferry_schema::Manifest;
    use ferry_schema::manifest::Service;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);
    impl Log {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
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

    struct FakeStore<'a>(&'a Log, &'static str);
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
    }

    struct FakeSystemd<'a>(&'a Log);
    impl Systemd for FakeSystemd<'_> {
        async fn reload(&self) -> Result<(), SystemdError> {
            self.0.push("reload".into());
            Ok(())
        }
        async fn run_job(&self, unit: &str, job: Job) -> Result<String, SystemdError> {
            self.0.push(format!("{job:?} {unit}"));
            Ok("done".into())
        }
        async fn unit_state(&self, _: &str) -> Result<Option<UnitState>, SystemdError> {
            Ok(Some(UnitState {
                active_state: "active".into(),
                sub_state: "running".into(),
                n_restarts: 0,
                exec_main_status: 0,
            }))
        }
    }

    struct FakeUnits<'a>(&'a Log, Mutex<BTreeMap<String, String>>);
    impl Units for FakeUnits<'_> {
        fn list(&self) -> std::io::Result<BTreeMap<String, String>> {
            Ok(self.1.lock().unwrap().clone())
        }
        fn write(&self, service: &str, text: &str) -> std::io::Result<bool> {
            self.0.push(format!("write {service}"));
            Ok(self
                .1
                .lock()
                .unwrap()
                .insert(service.into(), text.into())
                .as_deref()
                != Some(text))
        }
        fn remove(&self, service: &str) -> std::io::Result<bool> {
            self.0.push(format!("delete {service}"));
            Ok(self.1.lock().unwrap().remove(service).is_some())
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

    #[tokio::test]
    async fn order_one_reload_and_failure_isolation() {
        let log = Log::default();
        let m = Manifest {
            version: 1,
            generation: "g".into(),
            services: vec![
                svc("web", "/nix/store/w-web", &["db"]),
                svc("db", "/nix/store/d-db", &[]),
                svc("bad", "/nix/store/b-untrusted", &[]),
            ],
            signatures: None,
        };
        let mut observed = Observed::default();
        observed.services.insert(
            "old".into(),
            ObservedService {
                store_path: Some("/nix/store/o-old".into()),
                unit_text: Some("x".into()),
                active_state: None,
                pending: false,
            },
        );
        let p = plan(&m, &observed, &Policy { host: "h".into() });
        let backends = Backends {
            bucket: Arc::new(NoBucket),
            store: FakeStore(&log, "untrusted"),
            systemd: FakeSystemd(&log),
            units: FakeUnits(
                &log,
                Mutex::new(BTreeMap::from([("old".to_owned(), "x".to_owned())])),
            ),
        };
        let settings = ApplySettings {
            profile_dir: "/p".into(),
            generations_to_keep: 5,
            settle: Duration::ZERO,
        };
        let report = apply(&p, &backends, &settings).await;
        assert_eq!(
            log.take(),
            [
                "pull /nix/store/b-untrusted,/nix/store/d-db,/nix/store/w-web",
                "pull /nix/store/b-untrusted",
                "pull /nix/store/d-db",
                "pull /nix/store/w-web",
                "pin /p/db /nix/store/d-db",
                "pin /p/web /nix/store/w-web",
                "Stop ferry-old.service",
                "delete old",
                "write db",
                "write web",
                "reload",
                "Start ferry-db.service",
                "Start ferry-web.service",
            ]
        );
        assert_eq!(report.reloads, 1);
        let by_name: BTreeMap<_, _> = report
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        assert!(!by_name["bad"].ok);
        assert!(
            by_name["bad"].message.contains("bad signature"),
            "{}",
            by_name["bad"].message
        );
        assert!(by_name["db"].ok && by_name["web"].ok && by_name["old"].ok);
    }
}

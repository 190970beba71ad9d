//! Retire step (after route): finish blue-green switches. Once Caddy routes a service to its
//! new instance (or no Caddy is managed here), wait the drain period so requests in flight
//! on the old instance finish, then stop it and delete the unit files the switch replaced.
//! While the route could not be written, the old instance keeps serving (Caddy still sends
//! traffic there) and a later tick finishes the job.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::TickReport;
use crate::backend::systemd::{Systemd, stop};
use crate::backend::units::Units;
use crate::render::unit::{serving_unit, unit_file};
use crate::state::{Outcome, State};

/// Stop what `state.retiring` lists, after `drain`, when `routed` says Caddy holds the
/// routes to the live instances. Lines join the tick's report and the recorded last tick;
/// a unit that cannot be stopped stays listed and fails the tick.
pub async fn after_routes<D: Systemd, U: Units>(
    systemd: &D,
    units: &U,
    routed: bool,
    drain: Duration,
    state: &mut State,
    report: &mut TickReport,
) {
    if state.retiring.is_empty() {
        return;
    }
    // What serves now is never stopped, whatever the list says.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for (name, a) in &state.services {
        keep.insert(serving_unit(name, a.live_port));
        keep.insert(unit_file(&a.service));
    }

    let mut lines = Vec::new();
    let mut failed = false;
    if !routed {
        for (name, r) in &state.retiring {
            let port = state.services.get(name).and_then(|a| a.live_port);
            let old: Vec<&str> = r
                .units
                .iter()
                .filter(|u| !keep.contains(*u))
                .map(String::as_str)
                .collect();
            lines.push(format!(
                "{name}: {} keeps serving until Caddy routes to port {}; retrying next tick",
                old.join(" "),
                port.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ));
        }
        record(state, report, lines, false);
        return;
    }

    let t = Instant::now();
    tokio::time::sleep(drain).await;
    report.applied.phases.drain = t.elapsed();

    let mut deleted_any = false;
    for (name, mut r) in std::mem::take(&mut state.retiring) {
        let mut stopped = Vec::new();
        let mut left = Vec::new();
        for unit in r.units.drain(..) {
            if keep.contains(&unit) {
                continue;
            }
            match stop(systemd, &unit).await {
                Ok(()) => stopped.push(unit),
                Err(e) => {
                    lines.push(format!("{name}: {e}"));
                    left.push(unit);
                }
            }
        }
        let mut deleted = Vec::new();
        let mut files_left = Vec::new();
        for file in r.files.drain(..) {
            if keep.contains(&file) {
                continue;
            }
            match units.remove(&file) {
                Ok(gone) => {
                    deleted_any |= gone;
                    report.applied.units_touched += u32::from(gone);
                    deleted.push(file);
                }
                Err(e) => {
                    lines.push(format!("{name}: cannot delete {file}: {e}"));
                    files_left.push(file);
                }
            }
        }
        if !stopped.is_empty() || !deleted.is_empty() {
            let mut line = format!("{name}: stopped {}", stopped.join(" "));
            if !deleted.is_empty() {
                line.push_str(&format!(" and deleted {}", deleted.join(" ")));
            }
            line.push_str(&format!(" after a {} s drain", drain.as_secs()));
            lines.push(line);
        }
        if !left.is_empty() || !files_left.is_empty() {
            failed = true;
            r.units = left;
            r.files = files_left;
            state.retiring.insert(name, r);
        }
    }
    if deleted_any {
        report.applied.reloads += 1;
        if let Err(e) = systemd.reload().await {
            lines.push(format!(
                "routes: reload after deleting retired units failed: {e}"
            ));
            failed = true;
        }
    }
    record(state, report, lines, !failed);
}

/// Add the step's lines to the tick's report and the recorded last tick.
fn record(state: &mut State, report: &mut TickReport, lines: Vec<String>, ok: bool) {
    report.lines.extend(lines.iter().cloned());
    if !ok && report.outcome == Outcome::Ok {
        report.outcome = Outcome::Failed;
    }
    if let Some(last) = &mut state.last_tick {
        last.lines.extend(lines);
        last.outcome = report.outcome;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::apply::ApplyReport;
    use crate::backend::systemd::{SystemdError, UnitState};
    use crate::plan::Job;
    use crate::state::{Applied, Retiring};

    /// Records the jobs it is asked for and the files it deletes.
    #[derive(Default)]
    struct Host(Mutex<Vec<String>>);
    impl Systemd for Host {
        async fn reload(&self) -> Result<(), SystemdError> {
            self.0.lock().unwrap().push("reload".into());
            Ok(())
        }
        async fn run_job(&self, unit: &str, job: Job) -> Result<String, SystemdError> {
            self.0.lock().unwrap().push(format!("{job:?} {unit}"));
            Ok("done".into())
        }
        async fn unit_files(&self, _: &str) -> Result<Vec<String>, SystemdError> {
            Ok(Vec::new())
        }
        async fn dynamic_users(&self) -> Result<Vec<(u32, String)>, SystemdError> {
            Ok(Vec::new())
        }
        async fn unit_state(&self, _: &str) -> Result<Option<UnitState>, SystemdError> {
            Ok(None)
        }
    }
    impl Units for Host {
        fn list(&self) -> std::io::Result<BTreeMap<String, String>> {
            Ok(BTreeMap::new())
        }
        fn write(&self, _: &str, _: &str) -> std::io::Result<bool> {
            Ok(true)
        }
        fn remove(&self, file: &str) -> std::io::Result<bool> {
            self.0.lock().unwrap().push(format!("delete {file}"));
            Ok(true)
        }
    }

    /// web is live on 8001; the list also names 8001 (a switch back that never happened)
    /// and the plain unit it had before becoming blue-green.
    fn state() -> State {
        let service = serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
            "http": {"domain": "x.test", "path": "/", "internalPort": 8000, "strategy": "blue-green"},
        }))
        .unwrap();
        let mut s = State::default();
        s.services.insert(
            "web".into(),
            Applied {
                service,
                applied_at: "t".into(),
                live_port: Some(8001),
            },
        );
        s.retiring.insert(
            "web".into(),
            Retiring {
                units: vec![
                    "ferry-web@8000.service".into(),
                    "ferry-web@8001.service".into(),
                ],
                files: vec!["ferry-web.service".into(), "ferry-web@.service".into()],
            },
        );
        s
    }

    fn report() -> TickReport {
        TickReport {
            outcome: Outcome::Ok,
            lines: Vec::new(),
            plan: None,
            applied: ApplyReport::default(),
            requests: 0,
            held: Vec::new(),
            status_requests: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_route_moved_the_old_instance_stops_and_the_live_one_never_does() {
        let host = Host::default();
        let (mut state, mut report) = (state(), report());
        let drain = Duration::from_secs(5);
        after_routes(&host, &host, true, drain, &mut state, &mut report).await;
        assert_eq!(
            *host.0.lock().unwrap(),
            [
                "Stop ferry-web@8000.service",
                "delete ferry-web.service",
                "reload"
            ]
        );
        assert_eq!(
            report.lines,
            ["web: stopped ferry-web@8000.service and deleted ferry-web.service after a 5 s drain"]
        );
        assert_eq!(report.applied.phases.drain, drain);
        assert_eq!(report.outcome, Outcome::Ok);
        assert!(state.retiring.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_route_the_old_instance_keeps_serving_and_the_tick_fails() {
        let host = Host::default();
        let (mut state, mut report) = (state(), report());
        after_routes(
            &host,
            &host,
            false,
            Duration::from_secs(5),
            &mut state,
            &mut report,
        )
        .await;
        assert!(host.0.lock().unwrap().is_empty());
        assert_eq!(
            report.lines,
            [
                "web: ferry-web@8000.service keeps serving until Caddy routes to port 8001; retrying next tick"
            ]
        );
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(state.retiring.len(), 1);
    }
}

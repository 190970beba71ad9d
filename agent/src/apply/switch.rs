//! Switch: start or restart one dependency level's services in parallel (after stopping
//! the units of a form they replace), health-check them in parallel (probe plus systemd's
//! view), and hand what failed or was skipped to `put_back`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
// tokio's clock, so the phases follow a paused clock in tests.
use tokio::time::Instant;

use super::put_back::put_back;
use super::{ApplyReport, ApplySettings, Backends, Fate};
use crate::backend::bucket::ReadBucket;
use crate::backend::probe::Probe;
use crate::backend::store::Store;
use crate::backend::systemd::{Systemd, stop};
use crate::backend::units::Units;
use crate::health::spec::{Check, HealthSpec};
use crate::health::watch::watch;
use crate::plan::{Action, Job, ServicePlan};

/// The check a planned service gets (a plan always carries one for services it starts; the
/// fallback is systemd's view after the settle time).
fn spec_of(p: &ServicePlan) -> HealthSpec {
    p.health.clone().unwrap_or(HealthSpec {
        check: Check::Systemd,
        start_period: Duration::ZERO,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        tries: 1,
    })
}

/// Whether a plan puts a different version in place (so failing means putting one back).
fn changes_version(p: &ServicePlan) -> bool {
    matches!(
        p.action,
        Action::Add | Action::UpdateClosure | Action::UpdateUnit
    )
}

/// Start one level's services in parallel, health-check them in parallel, then put back
/// what failed or was skipped.
pub(super) async fn run_level<B: ReadBucket, S: Store, D: Systemd, U: Units, P: Probe>(
    level: &[&ServicePlan],
    b: &Backends<B, S, D, U, P>,
    settings: &ApplySettings,
    cut: Option<String>,
    fates: &mut BTreeMap<String, Fate>,
    report: &mut ApplyReport,
) {
    let mut runnable = Vec::new();
    // (service, whether its process was touched, why it failed)
    let mut undo: Vec<(&ServicePlan, bool, String)> = Vec::new();
    for p in level.iter().copied() {
        if fates.contains_key(&p.name) {
            continue;
        }
        let blocker = p.depends_on.iter().find_map(|d| match fates.get(d) {
            Some(Fate::Skipped(_)) => Some(format!("skipped: depends on {d}, which was skipped")),
            Some(Fate::Failed(_) | Fate::Reverted { .. }) => {
                Some(format!("skipped: depends on {d}, which failed"))
            }
            _ => None,
        });
        // Past the tick's deadline the level is not started: its new units are put back
        // unstarted, like a skipped service's.
        let blocker = blocker.or_else(|| {
            cut.clone()
                .inspect(|_| report.cut_short.push(p.name.clone()))
        });
        match blocker {
            Some(why) => {
                fates.insert(p.name.clone(), Fate::Skipped(why.clone()));
                if changes_version(p) {
                    undo.push((p, false, why));
                }
            }
            None => runnable.push(p),
        }
    }

    let t = Instant::now();
    let jobs = join_all(runnable.iter().map(|p| start(p, b))).await;
    report.phases.systemd += t.elapsed();
    let mut started = Vec::new();
    for (p, job) in runnable.into_iter().zip(jobs) {
        match job {
            Ok(restarts) => started.push((p, restarts)),
            Err(why) if changes_version(p) => undo.push((p, true, why)),
            Err(why) => {
                fates.insert(p.name.clone(), Fate::Failed(why));
            }
        }
    }

    let t = Instant::now();
    let verdicts = join_all(started.iter().map(|(p, restarts)| {
        let spec = spec_of(p);
        async move {
            watch(
                &p.unit,
                &spec,
                *restarts,
                settings.settle,
                &b.probe,
                &b.systemd,
            )
            .await
        }
    }))
    .await;
    report.phases.health += t.elapsed();
    for ((p, _), verdict) in started.into_iter().zip(verdicts) {
        match verdict {
            Ok(h) => {
                let tries = if h.tries == 1 { "try" } else { "tries" };
                fates.insert(
                    p.name.clone(),
                    Fate::Healthy(format!(
                        "healthy after {} {tries} ({:.1}s)",
                        h.tries,
                        h.took.as_secs_f64()
                    )),
                );
            }
            Err(f) if changes_version(p) => undo.push((p, true, f.to_string())),
            Err(f) => {
                fates.insert(p.name.clone(), Fate::Failed(f.to_string()));
            }
        }
    }

    if !undo.is_empty() {
        put_back(&undo, b, settings, fates, report).await;
    }
}

/// Stop a plan's `stop_first` units and delete its `delete_first` files; returns how many
/// files were deleted. A unit systemd no longer knows is already stopped.
pub(super) async fn clear_away<B, S, D: Systemd, U: Units, P>(
    p: &ServicePlan,
    b: &Backends<B, S, D, U, P>,
) -> Result<u32, String> {
    for unit in &p.stop_first {
        stop(&b.systemd, unit).await?;
    }
    let mut deleted = 0;
    for file in &p.delete_first {
        match b.units.remove(file) {
            Ok(gone) => deleted += u32::from(gone),
            Err(e) => return Err(format!("cannot delete {file}: {e}")),
        }
    }
    Ok(deleted)
}

/// Run a service's start/restart job (after clearing away the units of a form it replaces);
/// `NRestarts` right after it, for the health check.
async fn start<B, S, D: Systemd, U: Units, P>(
    p: &ServicePlan,
    b: &Backends<B, S, D, U, P>,
) -> Result<u32, String> {
    let Some(job) = p.job() else {
        return Ok(0);
    };
    clear_away(p, b).await?;
    run_job(&b.systemd, &p.unit, job).await
}

/// Run a start/restart job on `unit`; its `NRestarts` right after, for the health check.
pub(super) async fn run_job<D: Systemd>(systemd: &D, unit: &str, job: Job) -> Result<u32, String> {
    match systemd.run_job(unit, job).await {
        Ok(r) if r == "done" => Ok(match systemd.unit_state(unit).await {
            Ok(Some(s)) => s.n_restarts,
            _ => 0,
        }),
        Ok(r) => Err(format!(
            "{job:?} job of {unit} ended with {r}; see journalctl -u {unit}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

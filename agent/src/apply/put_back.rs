//! Put back: a changed service that failed (start job or health) returns to the previously
//! applied version (profile, unit, process, then confirmed healthy again), or, with nothing
//! to put back, is stopped with its unit deleted; a skipped one gets its previous unit back
//! untouched. Its store path is reported for quarantine.

use std::collections::BTreeMap;

use futures_util::future::join_all;
// tokio's clock, so the phases follow a paused clock in tests.
use tokio::time::Instant;

use super::switch::run_job;
use super::{ApplyReport, ApplySettings, Backends, Fate};
use crate::backend::bucket::ReadBucket;
use crate::backend::probe::Probe;
use crate::backend::store::Store;
use crate::backend::systemd::{Systemd, stop};
use crate::backend::units::Units;
use crate::health::quarantine::Quarantined;
use crate::health::watch::watch;
use crate::plan::{Job, ServicePlan};

/// Put back the services of one level that failed or were skipped: stop the new services
/// that ran, point profiles back, write the previous units (or delete new ones), one
/// `Reload`, then restart the previous versions that had been replaced and confirm them.
pub(super) async fn put_back<B: ReadBucket, S: Store, D: Systemd, U: Units, P: Probe>(
    undo: &[(&ServicePlan, bool, String)],
    b: &Backends<B, S, D, U, P>,
    settings: &ApplySettings,
    fates: &mut BTreeMap<String, Fate>,
    report: &mut ApplyReport,
) {
    let t = Instant::now();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut notes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut changed_files = false;
    let mut restart: Vec<&ServicePlan> = Vec::new();
    for (p, touched, _) in undo {
        let note = notes.entry(p.name.as_str()).or_default();
        // The new version's unit goes when nothing else will replace it: with nothing to
        // roll back to, for a switch (the old instance serves on), or when the previous
        // version ran from another unit (a strategy change).
        let stop_new = *touched
            && p.rollback
                .as_ref()
                .is_none_or(|r| p.switch || r.unit != p.unit);
        if stop_new && let Err(e) = stop(&b.systemd, &p.unit).await {
            note.push(e);
        }
        // The new version's file goes when nothing takes its place: nothing to roll back to
        // (except for a switch: the same service, re-rendered, whose instance still serves),
        // or a previous version that ran from another file (a strategy change).
        let delete_new = match &p.rollback {
            None => !p.switch,
            Some(r) => r.unit_file != p.unit_file,
        };
        if delete_new {
            match b.units.remove(&p.unit_file) {
                Ok(changed) => {
                    changed_files |= changed;
                    report.units_touched += u32::from(changed);
                }
                Err(e) => note.push(format!("cannot delete {}: {e}", p.unit_file)),
            }
        }
        let Some(r) = &p.rollback else {
            continue;
        };
        if p.pulls() {
            let profile = settings.profile_dir.join(&p.name);
            if let Err(e) = b
                .store
                .pin(&profile, &r.store_path, settings.generations_to_keep)
                .await
            {
                note.push(format!("profile not pointed back: {e}"));
            }
        }
        match b.units.write(&r.unit_file, &r.unit_text) {
            Ok(changed) => {
                changed_files |= changed;
                report.units_touched += u32::from(changed);
                // A switch never touched the serving instance: nothing to restart.
                if *touched && !p.switch {
                    restart.push(p);
                }
            }
            Err(e) => note.push(format!("cannot write back {}: {e}", r.unit_file)),
        }
    }
    if changed_files {
        report.reloads += 1;
        if let Err(e) = b.systemd.reload().await {
            for (p, _, _) in undo {
                notes
                    .entry(p.name.as_str())
                    .or_default()
                    .push(format!("reload failed: {e}"));
            }
        }
    }
    let jobs = join_all(restart.iter().map(|p| {
        let unit = p.rollback.as_ref().map_or(&p.unit, |r| &r.unit);
        run_job(&b.systemd, unit, Job::Restart)
    }))
    .await;
    report.phases.systemd += t.elapsed();

    let t = Instant::now();
    let confirmations = join_all(restart.iter().zip(&jobs).map(|(p, job)| async move {
        let restarts = match job {
            Ok(n) => *n,
            Err(e) => return Err(e.clone()),
        };
        let Some(r) = &p.rollback else {
            return Ok(());
        };
        watch(
            &r.unit,
            &r.health,
            restarts,
            settings.settle,
            &b.probe,
            &b.systemd,
        )
        .await
        .map(|_| ())
        .map_err(|f| f.to_string())
    }))
    .await;
    report.phases.health += t.elapsed();
    for (p, confirmed) in restart.iter().zip(confirmations) {
        if let Err(e) = confirmed {
            let back = p.rollback.as_ref().map_or("", |r| r.store_path.as_str());
            notes
                .entry(p.name.as_str())
                .or_default()
                .push(format!("{back} did not come back healthy either: {e}"));
        }
    }

    for (p, touched, why) in undo {
        let mut note = notes.remove(p.name.as_str()).unwrap_or_default();
        if !touched {
            // Skipped: nothing ran, the files are as before the tick.
            if !note.is_empty()
                && let Some(Fate::Skipped(reason)) = fates.get_mut(&p.name)
            {
                reason.push_str(&format!("; {}", note.join("; ")));
            }
            continue;
        }
        let to = p.to.clone().unwrap_or_default();
        let put = match (&p.rollback, p.switch) {
            (Some(r), true) => format!(
                "stopped {}; nothing switched, {} keeps serving {}",
                p.unit, r.unit, r.store_path
            ),
            (None, true) => format!("stopped {}; nothing switched", p.unit),
            (Some(r), false) => format!("rolled back to {}", r.store_path),
            (None, false) => format!(
                "stopped and {} deleted (nothing to roll back to)",
                p.unit_file
            ),
        };
        note.insert(0, put);
        fates.insert(
            p.name.clone(),
            Fate::Reverted {
                why: format!("{to} {why}"),
                put_back: note.join("; "),
                quarantine: Quarantined {
                    store_path: to,
                    // The tick knows which unit was rendered for it.
                    unit: None,
                    reason: why.clone(),
                    at: at.clone(),
                    rolled_back_to: p.rollback.as_ref().map(|r| r.store_path.clone()),
                    // The tick knows which manifest named it.
                    generation: None,
                },
            },
        );
    }
}

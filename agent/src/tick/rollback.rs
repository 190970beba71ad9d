//! Rollback step, run only by `ferry-agent rollback SERVICE`: once the verb pointed the
//! service's profile one generation back (`nix-env --switch-generation`), the hold is
//! recorded; the tick (restoring from state, the bucket not asked) then deploys that
//! version; after it, a failed rollback drops the hold (the newer version was put back) and
//! the outcome is judged on the services alone.

use super::TickReport;
use crate::rollback_hold::{RollbackHold, RollbackTarget};
use crate::state::{Outcome, State};

/// Hold the service at the generation its profile now points at.
pub fn begin(t: &RollbackTarget, state: &mut State) {
    state.rollbacks.insert(
        t.service.clone(),
        RollbackHold {
            store_path: t.store_path.clone(),
            from: t.from.clone(),
            generation: state.manifest.as_ref().map(|m| m.generation.clone()),
            profile_generation: t.generation,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    );
}

/// After the tick: a rollback that failed its check is not held (the newer version runs
/// again, and the next tick applies the manifest); restoring the other services is what a
/// rollback does, not a fallback, so the outcome is the services' alone.
pub fn settle(t: &RollbackTarget, state: &mut State, report: &mut TickReport) {
    let services = &report.applied.services;
    let ok = services
        .iter()
        .find(|s| s.name == t.service)
        .is_some_and(|s| s.ok);
    if !ok {
        state.rollbacks.remove(&t.service);
        report.lines.push(format!(
            "{}: rollback to {} failed, {} runs again; the next tick applies the manifest",
            t.service, t.store_path, t.from
        ));
    }
    report.outcome = if report.applied.services.iter().all(|s| s.ok) {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
}

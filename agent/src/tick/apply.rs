//! Apply step: mark what is about to change, save that mark (the checkpoint a killed tick
//! is redone from), then carry out the plan (`crate::apply`: pull, switch, put back). Reads
//! the plan; writes the host, and state's `pending` mark (cleared once apply ran to its
//! end). A change waits when the mark cannot be saved; bringing back what state records
//! does not.

use ferry_schema::Manifest;

use super::TickSettings;
use crate::apply::{ApplyReport, Backends, apply};
use crate::backend::bucket::ReadBucket;
use crate::backend::probe::Probe;
use crate::backend::store::Store;
use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::plan::{Action, Plan, ServicePlan};
use crate::render;
use crate::state::State;
use crate::state_file;

/// What the apply step gives the record step.
pub struct ApplyOutput {
    /// What apply did, one outcome per service of the plan (which may have shrunk).
    pub report: ApplyReport,
    /// Changes held back because the checkpoint could not be saved.
    pub waiting: Vec<String>,
}

/// Checkpoint, then apply `the_plan` (which loses the changes that must wait).
pub async fn apply_step<B: ReadBucket, S: Store, D: Systemd, U: Units, P: Probe>(
    settings: &TickSettings,
    state: &mut State,
    the_plan: &mut Plan,
    desired: &Manifest,
    b: &Backends<B, S, D, U, P>,
    lines: &mut Vec<String>,
) -> ApplyOutput {
    let waiting = checkpoint(settings, state, the_plan, desired, lines);
    let report = apply(the_plan, b, &settings.apply).await;
    // Apply ran to its end: every outcome below is known and recorded.
    state.pending.clear();
    ApplyOutput { report, waiting }
}

/// Mark what is about to change before changing it: a tick killed from here on leaves the
/// mark, and the next one redoes those services (see `State::pending`). Returns the
/// services whose change waits because the mark could not be saved.
fn checkpoint(
    settings: &TickSettings,
    state: &mut State,
    the_plan: &mut Plan,
    desired: &Manifest,
    lines: &mut Vec<String>,
) -> Vec<String> {
    let mut waiting = Vec::new();
    if the_plan.is_noop() {
        return waiting;
    }
    state.pending.extend(
        the_plan
            .services
            .iter()
            .filter(|p| p.action != Action::Unchanged)
            .map(|p| p.name.clone()),
    );
    if let Some(path) = &settings.checkpoint
        && let Err(e) = state_file::save(path, state)
    {
        // Bringing back what state records needs no mark: state already says those
        // services are applied, so a tick killed half-way leaves nothing the next one
        // would misread. A change does: it waits until the state can be written.
        let (restore, change): (Vec<ServicePlan>, Vec<ServicePlan>) =
            std::mem::take(&mut the_plan.services)
                .into_iter()
                .partition(|p| p.action == Action::Unchanged || restores(p, desired, state));
        the_plan.services = restore;
        waiting = change.into_iter().map(|p| p.name).collect();
        lines.push(format!(
            "cannot save the state before changing the host: {e:#}; restoring what it records anyway{}",
            if waiting.is_empty() {
                String::new()
            } else {
                format!(
                    "; waiting until it can be saved: {} (make the state directory writable)",
                    waiting.join(", ")
                )
            }
        ));
    }
    waiting
}

/// Whether `p` only brings back what state records as applied: the unit it writes or
/// starts is the one rendered from the applied service (same store path, same settings).
fn restores(p: &ServicePlan, desired: &Manifest, state: &State) -> bool {
    if p.action == Action::Remove {
        return false;
    }
    let (Some(service), Some(applied)) = (
        desired.services.iter().find(|s| s.name == p.name),
        state.services.get(&p.name),
    ) else {
        return false;
    };
    render::unit::render(service) == render::unit::render(&applied.service)
}

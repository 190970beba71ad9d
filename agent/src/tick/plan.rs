//! Plan step: the host policy's refusals and the quarantine (only for a trusted manifest:
//! what state restores passed them when it was applied), then (after the wave gate, in
//! the tick) the planner. Pure apart from
//! the quarantine it updates in state: reads the desired manifest, the observed host and the
//! host facts; writes the plan, the versions held back and the quarantines lifted.

use ferry_schema::Manifest;

use super::observe::Observation;
use crate::health::quarantine::{Held, Quarantined, hold_back, lift};
use crate::plan::{Action, Plan, Policy, plan};
use crate::policy::HostPolicy;
use crate::rollback_hold::{self, RollbackHold};
use crate::state::State;

/// What the plan step gives the apply step.
pub struct Planned {
    /// The ordered plan.
    pub plan: Plan,
    /// Quarantined versions the manifest asks for, held back.
    pub held: Vec<Held>,
    /// Quarantines a newer manifest lifted, by service.
    pub lifted: Vec<(String, Quarantined)>,
    /// Rollback holds a changed manifest ended: service, hold, why.
    pub rollback_ended: Vec<(String, RollbackHold, String)>,
    /// One line per service kept on the version `ferry-agent rollback` took it back to.
    pub rollback_kept: Vec<String>,
}

/// Plan the tick. `desired` loses the versions held back; `restore` (no trusted manifest)
/// keeps the plan from removing anything. The tick runs the two halves with the wave gate
/// between them ([`hold`], then [`finish`]); `ferry-agent plan` runs them back to back.
pub fn plan_tick(
    desired: &mut Manifest,
    observation: &Observation,
    policy: &HostPolicy,
    state: &mut State,
    restore: bool,
) -> Planned {
    let holds = hold(desired, observation, policy, state);
    finish(desired, observation, policy, holds, restore)
}

/// What the holds decided before planning: the policy's refusals and the versions held
/// back, quarantines lifted and rollback holds ended or kept.
pub struct Holds {
    refused: crate::policy::Refusals,
    held: Vec<Held>,
    lifted: Vec<(String, Quarantined)>,
    rollback_ended: Vec<(String, RollbackHold, String)>,
    rollback_kept: Vec<String>,
}

/// The first half: the host policy's refusals, the quarantine and the rollback holds
/// (`desired` loses what they hold back).
pub fn hold(
    desired: &mut Manifest,
    observation: &Observation,
    policy: &HostPolicy,
    state: &mut State,
) -> Holds {
    let host = &policy.host;
    let mut refused = std::collections::BTreeMap::new();
    let (mut held, mut lifted, mut rollback_ended) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(facts) = &observation.facts {
        refused = policy.refusals(desired, facts);
        lifted = lift(&mut state.quarantine, desired, host);
        held = hold_back(desired, host, &state.quarantine, &state.services);
        rollback_ended = rollback_hold::lift(&mut state.rollbacks, desired, host);
    }
    // A service `ferry-agent rollback` took back stays there, restored from state too.
    let rollback_kept = rollback_hold::hold(desired, host, &state.rollbacks);
    Holds {
        refused,
        held,
        lifted,
        rollback_ended,
        rollback_kept,
    }
}

/// The second half: the planner, on what is left of `desired`.
pub fn finish(
    desired: &Manifest,
    observation: &Observation,
    policy: &HostPolicy,
    holds: Holds,
    restore: bool,
) -> Planned {
    let mut the_plan = plan(
        desired,
        &observation.observed,
        &Policy {
            host: policy.host.clone(),
            refused: holds.refused,
        },
    );
    if restore {
        // Without a trusted manifest the agent only restores; it never removes.
        the_plan.services.retain(|p| p.action != Action::Remove);
    }
    Planned {
        plan: the_plan,
        held: holds.held,
        lifted: holds.lifted,
        rollback_ended: holds.rollback_ended,
        rollback_kept: holds.rollback_kept,
    }
}

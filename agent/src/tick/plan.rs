//! Plan step: the host policy's refusals and the quarantine (only for a trusted manifest:
//! what state restores passed them when it was applied), then the planner. Pure apart from
//! the quarantine it updates in state: reads the desired manifest, the observed host and the
//! host facts; writes the plan, the versions held back and the quarantines lifted.

use ferry_schema::Manifest;

use super::observe::Observation;
use crate::health::quarantine::{Held, Quarantined, hold_back, lift};
use crate::plan::{Action, Plan, Policy, plan};
use crate::policy::HostPolicy;
use crate::state::State;

/// What the plan step gives the apply step.
pub struct Planned {
    /// The ordered plan.
    pub plan: Plan,
    /// Quarantined versions the manifest asks for, held back.
    pub held: Vec<Held>,
    /// Quarantines a newer manifest lifted, by service.
    pub lifted: Vec<(String, Quarantined)>,
}

/// Plan the tick. `desired` loses the versions held back; `restore` (no trusted manifest)
/// keeps the plan from removing anything.
pub fn plan_tick(
    desired: &mut Manifest,
    observation: &Observation,
    policy: &HostPolicy,
    state: &mut State,
    restore: bool,
) -> Planned {
    let host = &policy.host;
    let mut refused = std::collections::BTreeMap::new();
    let (mut held, mut lifted) = (Vec::new(), Vec::new());
    if let Some(facts) = &observation.facts {
        refused = policy.refusals(desired, facts);
        lifted = lift(&mut state.quarantine, desired, host);
        held = hold_back(desired, host, &state.quarantine, &state.services);
    }
    let mut the_plan = plan(
        desired,
        &observation.observed,
        &Policy {
            host: host.clone(),
            refused,
        },
    );
    if restore {
        // Without a trusted manifest the agent only restores; it never removes.
        the_plan.services.retain(|p| p.action != Action::Remove);
    }
    Planned {
        plan: the_plan,
        held,
        lifted,
    }
}

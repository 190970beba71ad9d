//! Observe step: what the host runs now, from the state file, the unit directory and
//! systemd. Services the agent manages are those in its state or with a `ferry-*` unit file
//! (a plain unit or a blue-green template).

use std::collections::BTreeSet;

use crate::backend::systemd::Systemd;
use crate::backend::units::{Units, by_service};
use crate::plan::{Observed, ObservedService};
use crate::render::unit::{header_store_path, serving_unit, template_name, unit_name};
use crate::state::State;

/// The Ferry services this host runs now, by the same rule as [`observe`] (in state or with
/// a unit file), without asking systemd; or why the unit directory could not be read.
pub fn ferry_services<U: Units>(state: &State, units: &U) -> crate::policy::Running {
    let files = units
        .list()
        .map_err(|e| format!("cannot read the unit directory: {e}"))?;
    Ok(state
        .services
        .keys()
        .cloned()
        .chain(by_service(files).into_keys())
        .collect())
}

/// Gather the observed host. systemd errors leave `active_state` unknown rather than failing:
/// the plan then only trusts the files.
pub async fn observe<D: Systemd, U: Units>(
    state: &State,
    units: &U,
    systemd: Option<&D>,
) -> std::io::Result<Observed> {
    let files = by_service(units.list()?);
    let names: BTreeSet<&String> = state.services.keys().chain(files.keys()).collect();
    let mut observed = Observed::default();
    for name in names {
        let files = files.get(name).cloned().unwrap_or_default();
        let applied = state.services.get(name);
        let live_port = applied.and_then(|a| a.live_port);
        let store_path = applied
            .map(|a| a.service.artifact.store_path.clone())
            .or_else(|| {
                files
                    .values()
                    .find_map(|t| header_store_path(t))
                    .map(|(_, p)| p.to_owned())
            });
        // The unit that serves: the live instance, else the plain unit. A template without
        // a recorded live port (state lost) leaves it unknown.
        let unknown = live_port.is_none()
            && files.contains_key(&template_name(name))
            && !files.contains_key(&unit_name(name));
        let serving = (!unknown).then(|| serving_unit(name, live_port));
        let active_state = match (systemd, serving) {
            (Some(sd), Some(unit)) => match sd.unit_state(&unit).await {
                Ok(Some(s)) => Some(s.active_state),
                Ok(None) => Some("inactive".to_owned()),
                Err(e) => {
                    tracing::warn!(service = %name, "cannot read the state of {unit}: {e}");
                    None
                }
            },
            _ => None,
        };
        observed.services.insert(
            name.clone(),
            ObservedService {
                store_path,
                files,
                active_state,
                pending: state.pending.contains(name),
                applied: applied.map(|a| a.service.clone()),
                live_port,
            },
        );
    }
    Ok(observed)
}

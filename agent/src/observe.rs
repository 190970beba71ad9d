//! Observe step: what the host runs now, from the state file, the unit directory and
//! systemd. Services the agent manages are those in its state or with a `ferry-*` unit file.

use std::collections::BTreeSet;

use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::plan::{Observed, ObservedService};
use crate::render::unit::{header_store_path, unit_name};
use crate::state::State;

/// Gather the observed host. systemd errors leave `active_state` unknown rather than failing:
/// the plan then only trusts the files.
pub async fn observe<D: Systemd, U: Units>(
    state: &State,
    units: &U,
    systemd: Option<&D>,
) -> std::io::Result<Observed> {
    let files = units.list()?;
    let names: BTreeSet<&String> = state.services.keys().chain(files.keys()).collect();
    let mut observed = Observed::default();
    for name in names {
        let text = files.get(name).cloned();
        let store_path = state
            .services
            .get(name)
            .map(|a| a.service.artifact.store_path.clone())
            .or_else(|| {
                text.as_deref()
                    .and_then(header_store_path)
                    .map(|(_, p)| p.to_owned())
            });
        let active_state = match systemd {
            Some(sd) => match sd.unit_state(&unit_name(name)).await {
                Ok(Some(s)) => Some(s.active_state),
                Ok(None) => Some("inactive".to_owned()),
                Err(e) => {
                    tracing::warn!(service = %name, "cannot read unit state: {e}");
                    None
                }
            },
            None => None,
        };
        observed.services.insert(
            name.clone(),
            ObservedService {
                store_path,
                unit_text: text,
                active_state,
                pending: state.pending.contains(name),
                applied: state.services.get(name).map(|a| a.service.clone()),
            },
        );
    }
    Ok(observed)
}

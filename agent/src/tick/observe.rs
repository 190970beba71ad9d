//! Observe step: the host facts the policy needs, and what the host runs now, from the state
//! file, the unit directory and systemd. Services the agent manages are those in its state
//! or with a `ferry-*` unit file (a plain unit or a blue-green template).
//!
//! A blue-green service's live instance is the one the state file records while systemd
//! says it is active. When state does not know it (lost, or an older copy put back) it is
//! found from what runs: the one active instance of the template's ports, or, with both
//! active, the one Caddy dials. Trusting the record alone moved Caddy to a stopped
//! instance after `state.json` was lost (502s until the next update).

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::systemd::Systemd;
use crate::backend::units::{Units, by_service};
use crate::host_facts::{self, FactSources};
use crate::plan::{Observed, ObservedService};
use crate::policy::HostFacts;
use crate::render::unit::{
    header_store_path, instance_name, serving_unit, template_name, template_ports, unit_name,
};
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

/// What the observe step gives the plan step.
pub struct Observation {
    /// What the host runs now.
    pub observed: Observed,
    /// The facts the host policy judges a trusted manifest against; `None` when no trusted
    /// manifest is judged (the tick only restores what state records).
    pub facts: Option<HostFacts>,
}

/// Observe step: the host facts the policy needs (only when `judge`: a trusted manifest is
/// planned), then the services the host runs. Reads state, the unit directory, systemd (when
/// given) and the host's account and listener files; writes nothing. Without systemd (a
/// preview), the facts hold only the accounts.
pub async fn observe_host<D: Systemd, U: Units>(
    sources: &FactSources,
    state: &State,
    units: &U,
    systemd: Option<&D>,
    dialled: &BTreeMap<String, u16>,
    judge: bool,
) -> std::io::Result<Observation> {
    let facts = match (judge, systemd) {
        (false, _) => None,
        (true, Some(sd)) => Some(host_facts::gather(sources, state, sd, units).await),
        (true, None) => Some(HostFacts {
            accounts: host_facts::accounts(sources),
            ..HostFacts::default()
        }),
    };
    let observed = observe(state, units, systemd, dialled).await?;
    Ok(Observation { observed, facts })
}

/// `ActiveState`s that count as serving.
fn is_up(active_state: &str) -> bool {
    matches!(active_state, "active" | "activating" | "reloading")
}

/// Gather the observed host. systemd errors leave `active_state` unknown rather than failing:
/// the plan then only trusts the files. `dialled` is the port Caddy's route dials now, by
/// service, when it was read (it only decides between two active blue-green instances).
pub async fn observe<D: Systemd, U: Units>(
    state: &State,
    units: &U,
    systemd: Option<&D>,
    dialled: &BTreeMap<String, u16>,
) -> std::io::Result<Observed> {
    let files = by_service(units.list()?);
    let names: BTreeSet<&String> = state.services.keys().chain(files.keys()).collect();
    let mut observed = Observed::default();
    for name in names {
        let files = files.get(name).cloned().unwrap_or_default();
        let applied = state.services.get(name);
        let mut live_port = applied.and_then(|a| a.live_port);
        let store_path = applied
            .map(|a| a.service.artifact.store_path.clone())
            .or_else(|| {
                files
                    .values()
                    .find_map(|t| header_store_path(t))
                    .map(|(_, p)| p.to_owned())
            });
        let template = files
            .get(&template_name(name))
            .filter(|_| !files.contains_key(&unit_name(name)));
        let active_state = match (systemd, template) {
            (Some(sd), Some(text)) => {
                let mut ports = template_ports(text);
                if ports.is_empty() {
                    ports.extend(live_port);
                }
                let found = live_instance(sd, name, &ports, live_port, dialled).await;
                live_port = found.port;
                found.active_state
            }
            (Some(sd), None) => unit_active_state(sd, name, &serving_unit(name, live_port)).await,
            (None, _) => None,
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

/// A unit's `ActiveState`: `inactive` when systemd does not know it, `None` when it could
/// not be asked.
async fn unit_active_state<D: Systemd>(sd: &D, service: &str, unit: &str) -> Option<String> {
    match sd.unit_state(unit).await {
        Ok(Some(s)) => Some(s.active_state),
        Ok(None) => Some("inactive".to_owned()),
        Err(e) => {
            tracing::warn!(service = %service, "cannot read the state of {unit}: {e}");
            None
        }
    }
}

/// The live instance of a blue-green service as found on the host.
struct Found {
    /// Its port (`None`: nothing serves and state does not say which one did).
    port: Option<u16>,
    /// Its `ActiveState` (`None`: systemd could not be asked).
    active_state: Option<String>,
}

/// Which of the template's instances (`ports`) is live: the `recorded` one while it is up;
/// else the only one up; with both up, the one Caddy dials (else the recorded, else the
/// first). With none up, the recorded port stays (a reboot: it is started again).
async fn live_instance<D: Systemd>(
    sd: &D,
    service: &str,
    ports: &[u16],
    recorded: Option<u16>,
    dialled: &BTreeMap<String, u16>,
) -> Found {
    let recorded = recorded.filter(|p| ports.contains(p));
    if let Some(port) = recorded {
        let state = unit_active_state(sd, service, &instance_name(service, port)).await;
        match state.as_deref() {
            Some(s) if is_up(s) => {
                return Found {
                    port: Some(port),
                    active_state: state,
                };
            }
            // systemd cannot be asked: keep the record, as before.
            None => {
                return Found {
                    port: Some(port),
                    active_state: None,
                };
            }
            Some(_) => {}
        }
    }
    let mut up = Vec::new();
    for &port in ports {
        let unit = instance_name(service, port);
        match unit_active_state(sd, service, &unit).await.as_deref() {
            Some(s) if is_up(s) => up.push((port, s.to_owned())),
            Some(_) => {}
            // Unknown: nothing is decided from half an answer.
            None => {
                return Found {
                    port: recorded,
                    active_state: None,
                };
            }
        }
    }
    let pick = |port: u16| up.iter().find(|(p, _)| *p == port).cloned();
    let chosen = match up.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [first, ..] => dialled
            .get(service)
            .and_then(|d| pick(*d))
            .or_else(|| recorded.and_then(pick))
            .or_else(|| Some(first.clone())),
    };
    match chosen {
        Some((port, state)) => {
            if recorded.is_some_and(|r| r != port) || recorded.is_none() {
                tracing::info!(
                    service = %service,
                    "live instance found on port {port} (state recorded {recorded:?})"
                );
            }
            Found {
                port: Some(port),
                active_state: Some(state),
            }
        }
        None => Found {
            port: recorded,
            active_state: Some("inactive".to_owned()),
        },
    }
}

//! Record step: what apply did becomes state. Healthy services become the applied set (a
//! failure keeps its old entry), a failed version is quarantined, a blue-green switch lists
//! what it replaced for the retire step, an accepted manifest and its ETag are kept, and
//! removed services' profiles are aged out. Reads the plan and apply's outcomes; writes
//! state (in memory: the pipeline saves it) and the tick's lines; gives the tick's outcome.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ferry_schema::Manifest;
use ferry_schema::manifest::Service;

use super::TickSettings;
use super::apply::ApplyOutput;
use super::gate::GateHold;
use super::verify::Source;
use crate::apply::ApplyReport;
use crate::health::quarantine::{Held, Quarantined, unit_digest};
use crate::host_report::{self, Event, ServiceEvent};
use crate::plan::{Action, Plan};
use crate::profile_retention;
use crate::state::{Applied, Outcome, State};

/// What the record step reads besides state.
pub struct RecordInput<'a> {
    /// Where the desired manifest came from (an accepted one is kept).
    pub source: Source,
    /// The manifest applied (less what was held back).
    pub desired: &'a Manifest,
    /// The plan apply carried out.
    pub plan: &'a Plan,
    /// What apply did.
    pub applied: &'a ApplyOutput,
    /// Versions held back by the quarantine.
    pub held: Vec<Held>,
    /// Services the wave gate kept on their current version (waiting or halted).
    pub gated: &'a [GateHold],
    /// When the tick started.
    pub clock: DateTime<Utc>,
    /// The same, as written in state.
    pub at: &'a str,
}

/// Record the tick in `state`, add its lines, and say how it ended.
pub fn record(
    settings: &TickSettings,
    state: &mut State,
    input: RecordInput<'_>,
    lines: &mut Vec<String>,
) -> Outcome {
    let RecordInput {
        source,
        desired,
        plan: the_plan,
        applied,
        mut held,
        gated,
        clock,
        at,
    } = input;
    let restore_outcome = source.restore_outcome();
    let host = &settings.policy.host;
    let waiting = &applied.waiting;
    let applied = &applied.report;
    let by_name: BTreeMap<&str, &Service> = desired
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    for s in &applied.services {
        if let Some(q) = &s.quarantine {
            // Only a manifest newer than this one lifts it (`quarantine::lift`), and only
            // this version (store path and unit) is held back.
            let generation = (!desired.generation.is_empty()).then(|| desired.generation.clone());
            let unit = by_name
                .get(s.name.as_str())
                .filter(|tried| tried.artifact.store_path == q.store_path)
                .map(|tried| unit_digest(tried));
            state.quarantine.insert(
                s.name.clone(),
                Quarantined {
                    generation,
                    unit,
                    ..q.clone()
                },
            );
        }
    }

    // Successful services become the applied set; failures keep their old entry.
    let now = at.to_owned();
    for (p, outcome) in the_plan.services.iter().zip(&applied.services) {
        if !outcome.ok {
            continue;
        }
        if p.action == Action::Remove {
            state.services.remove(&p.name);
            state.retiring.remove(&p.name);
        } else if let Some(service) = by_name.get(p.name.as_str()) {
            let fresh = state
                .services
                .get(&p.name)
                .is_none_or(|a| a.service != **service);
            if fresh {
                state.services.insert(
                    p.name.clone(),
                    Applied {
                        service: (*service).clone(),
                        applied_at: now.clone(),
                        live_port: p.port,
                    },
                );
            } else if let Some(a) = state.services.get_mut(&p.name) {
                a.live_port = p.port;
            }
            // The instance that serves now is never retired; what the switch replaced is.
            if let Some(r) = state.retiring.get_mut(&p.name) {
                r.units.retain(|u| *u != p.unit);
            }
            if !p.retire.units.is_empty() || !p.retire.files.is_empty() {
                let r = state.retiring.entry(p.name.clone()).or_default();
                for u in &p.retire.units {
                    if !r.units.contains(u) {
                        r.units.push(u.clone());
                    }
                }
                for f in &p.retire.files {
                    if !r.files.contains(f) {
                        r.files.push(f.clone());
                    }
                }
            }
        }
    }
    if let Source::Fetched {
        manifest,
        etag,
        sha256,
    } = source
    {
        state.manifest = Some(*manifest);
        state.manifest_etag = etag;
        state.manifest_sha256 = Some(sha256);
    }
    // Removed services' profiles: only a trusted manifest says a service has left.
    if restore_outcome.is_none() {
        let kept = state
            .services
            .keys()
            .cloned()
            .chain(
                desired
                    .services
                    .iter()
                    .filter(|s| s.hosts.contains(host))
                    .map(|s| s.name.clone()),
            )
            .collect();
        lines.extend(profile_retention::step(
            &settings.apply.profile_dir,
            &kept,
            &mut state.removed_profiles,
            clock,
            settings.apply.removed_profile_retention_days,
        ));
    }

    if let Some(d) = settings.apply.deadline
        && !applied.cut_short.is_empty()
    {
        lines.push(format!(
            "tick cut short after timeouts.tickSec ({} s): not started: {}; services that run were left as they are and the next tick carries on (raise timeouts.tickSec if ticks need longer)",
            d.tick_sec,
            applied.cut_short.join(", ")
        ));
    }
    let mut events = status_events(the_plan, applied, &held, waiting, &by_name);
    // The gate's holds replace what the plan says of those services (it kept them as they
    // were): waiting or halted, with the line that says for whom.
    events.retain(|e| !gated.iter().any(|g| g.name == e.name));
    events.extend(gated.iter().map(|g| ServiceEvent {
        name: g.name.clone(),
        event: if g.halted() {
            Event::Halted
        } else {
            Event::Waiting
        },
        store_path: g.keeps.clone().unwrap_or_else(|| g.asked.clone()),
        message: Some(g.line.clone()),
    }));
    // Records change when the service is healthy, not when the tick began (a soak is
    // measured from them).
    let recorded = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    host_report::update(
        &mut state.service_status,
        events,
        &recorded,
        restore_outcome.is_none(),
    );
    // A held-back or waiting-for-state or halted service does not match the manifest
    // either: the tick is not ok. One waiting for an earlier wave is on its way: it is.
    let any_failed = applied.services.iter().any(|s| !s.ok)
        || !held.is_empty()
        || !waiting.is_empty()
        || gated.iter().any(GateHold::halted);
    for s in &applied.services {
        let h = held
            .iter()
            .position(|h| h.name == s.name)
            .map(|i| held.remove(i));
        match h {
            Some(h) if s.ok && s.action == Action::Unchanged => lines.push(h.to_string()),
            Some(h) => {
                lines.push(format!("{}: {}", s.name, s.message));
                lines.push(h.to_string());
            }
            None => lines.push(format!("{}: {}", s.name, s.message)),
        }
    }
    lines.extend(held.iter().map(ToString::to_string));
    match (any_failed, restore_outcome) {
        (true, _) => Outcome::Failed,
        (false, Some(o)) => o,
        (false, None) => Outcome::Ok,
    }
}

/// What the tick did to each service, for the status report's records.
fn status_events(
    the_plan: &Plan,
    applied: &ApplyReport,
    held: &[Held],
    waiting: &[String],
    by_name: &BTreeMap<&str, &Service>,
) -> Vec<ServiceEvent> {
    let asked = |name: &str, fallback: Option<&String>| {
        by_name
            .get(name)
            .map(|s| s.artifact.store_path.clone())
            .or_else(|| fallback.cloned())
            .unwrap_or_default()
    };
    let mut events = Vec::new();
    for (p, o) in the_plan.services.iter().zip(&applied.services) {
        let held_back = held.iter().find(|h| h.name == p.name);
        let (event, store_path, message) = if !p.refused.is_empty() {
            (
                Event::Refused,
                asked(&p.name, p.to.as_ref()),
                Some(&o.message),
            )
        } else if !o.ok {
            match (&o.quarantine, o.skipped) {
                (Some(q), _) => match &q.rolled_back_to {
                    Some(back) => (Event::RolledBack, back.clone(), Some(&o.message)),
                    None => (Event::Failed, q.store_path.clone(), Some(&o.message)),
                },
                (None, true) => (
                    Event::Pending,
                    asked(&p.name, p.to.as_ref()),
                    Some(&o.message),
                ),
                (None, false) => (
                    Event::Failed,
                    p.to.clone().or_else(|| p.from.clone()).unwrap_or_default(),
                    Some(&o.message),
                ),
            }
        } else if let Some(h) = held_back {
            let keeps = h.keeps.clone().unwrap_or_else(|| h.store_path.clone());
            events.push(held_event(h, keeps));
            continue;
        } else if p.action == Action::Remove {
            (Event::Removed, String::new(), None)
        } else {
            let changed = p.action != Action::Unchanged;
            let event = if changed {
                Event::Restarted
            } else {
                Event::Running
            };
            (
                event,
                p.to.clone().unwrap_or_default(),
                changed.then_some(&o.message),
            )
        };
        events.push(ServiceEvent {
            name: p.name.clone(),
            event,
            store_path,
            message: message.cloned(),
        });
    }
    // Held back with nothing earlier to run, or waiting: not in the plan at all.
    for h in held {
        if !events.iter().any(|e| e.name == h.name) {
            events.push(held_event(h, h.store_path.clone()));
        }
    }
    for name in waiting {
        events.push(ServiceEvent {
            name: name.clone(),
            event: Event::Pending,
            store_path: asked(name, None),
            message: Some(
                "waiting until the state can be saved (make the state directory writable)"
                    .to_owned(),
            ),
        });
    }
    events
}

fn held_event(h: &Held, store_path: String) -> ServiceEvent {
    ServiceEvent {
        name: h.name.clone(),
        event: Event::Held,
        store_path,
        message: Some(format!("{} is quarantined: {}", h.store_path, h.reason)),
    }
}

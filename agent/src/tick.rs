//! One reconcile tick: fetch → verify → host facts and policy → observe → plan → apply →
//! record (in memory; the caller writes the state file). An unreachable bucket or a refused
//! manifest falls back to the services recorded in state, so a rebooted host brings its last
//! known-good services back, and a healthy host is left alone. A manifest is refused whole
//! only when it cannot be trusted at all (unsigned, unparsable, older than allowed, empties a
//! host that runs services without decommissioning it); the host policy then refuses
//! services one by one, and the planner keeps each refused service on its last good version.
//! The stored manifest a 304 re-applies is judged again, so a tightened agent.toml takes
//! effect on the next tick.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_schema::Manifest;
use ferry_schema::layout::MANIFEST_KEY;

use crate::apply::{ApplyReport, ApplySettings, Backends, apply};
use crate::backend::bucket::{BucketError, Fetched, ReadBucket};
use crate::backend::probe::Probe;
use crate::backend::store::Store;
use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::health::quarantine::{hold_back, lift, unit_digest};
use crate::host_facts::{self, FactSources};
use crate::observe::{ferry_services, observe};
use crate::plan::{Action, Plan, Policy, ServicePlan, plan};
use crate::policy::HostPolicy;
use crate::profile_retention;
use crate::render;
use crate::rollback_hold;
use crate::state::{Applied, Outcome, State, TickRecord};
use crate::state_file;
use crate::verify::{Trust, recheck, verify};

/// Everything a tick needs besides the backends and the state.
#[derive(Debug, Clone)]
pub struct TickSettings {
    /// Host policy (host name, identities, units, secrets, routes, reserved names).
    pub policy: HostPolicy,
    /// Whose manifests are applied (keys, unsigned, rollback by copy).
    pub trust: Trust,
    /// Where the facts the policy judges against are read.
    pub facts: FactSources,
    /// Manifest size cap in bytes: a larger manifest is refused having read at most this
    /// much of it.
    pub size_cap: usize,
    /// One deadline for the whole manifest GET, retries, headers and body together
    /// (`timeouts.fetchSec`): a bucket that trickles its answer cannot hold the tick.
    pub fetch_timeout: Duration,
    /// Apply settings.
    pub apply: ApplySettings,
    /// The port Caddy's route dials now, by service, when it was read before the tick
    /// (state may not know a blue-green service's live instance); empty otherwise.
    pub dialled: BTreeMap<String, u16>,
    /// Where to save the state (with its `pending` mark) before the host is changed; `None`
    /// keeps it in memory (the caller saves at the end either way).
    pub checkpoint: Option<PathBuf>,
    /// Why this tick only restores what state records without asking the bucket (the boot
    /// tick's fallback after `timeouts.bootSec`); `None`: an ordinary tick.
    pub restore_only: Option<String>,
}

/// What a tick did.
#[derive(Debug, Clone)]
pub struct TickReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Refusal reasons / notes, then one line per service.
    pub lines: Vec<String>,
    /// The plan that was applied, if one was made.
    pub plan: Option<Plan>,
    /// The apply step's report.
    pub applied: ApplyReport,
    /// Bucket requests made.
    pub requests: u64,
}

/// Where the desired state came from.
enum Source {
    /// A newly fetched, accepted manifest (with its ETag).
    Fetched(Box<Manifest>, Option<String>),
    /// `manifest.json` unchanged (304): the stored manifest.
    Unchanged(Box<Manifest>),
    /// No usable manifest: restore what state says is deployed, never remove anything.
    Restore(Outcome),
}

/// Run one tick.
pub async fn tick<B: ReadBucket, S: Store, D: Systemd, U: Units, P: Probe>(
    settings: &TickSettings,
    state: &mut State,
    b: &Backends<B, S, D, U, P>,
) -> TickReport {
    let started = Instant::now();
    let clock = chrono::Utc::now();
    let at = clock.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let host = settings.policy.host.clone();
    let mut lines = Vec::new();

    let etag = state.manifest.as_ref().and(state.manifest_etag.as_deref());
    let last_generation = state.manifest.as_ref().map(|m| m.generation.clone());
    let refuse = |lines: &mut Vec<String>, what: &str, reasons: Vec<String>| {
        lines.push(format!(
            "{what} refused ({} reason{}); nothing changed:",
            reasons.len(),
            if reasons.len() == 1 { "" } else { "s" }
        ));
        lines.extend(reasons.into_iter().map(|r| format!("  refused: {r}")));
        Source::Restore(Outcome::Refused)
    };
    let fetched = match settings
        .restore_only
        .clone()
        .or_else(|| settings.trust.refuses_everything())
    {
        // Nothing fetched can be applied, so nothing is fetched.
        Some(line) => {
            lines.push(line);
            None
        }
        None => {
            let fetch = b
                .bucket
                .get_bounded(MANIFEST_KEY, etag, settings.size_cap as u64);
            // Within the tick's deadline too, which may come sooner.
            let fetch_deadline = tokio::time::Instant::now() + settings.fetch_timeout;
            let until = settings
                .apply
                .deadline
                .map_or(fetch_deadline, |d| d.at.min(fetch_deadline));
            Some(match tokio::time::timeout_at(until, fetch).await {
                Ok(result) => result,
                Err(_) => Err(BucketError::Unreachable(format!(
                    "no complete answer for {MANIFEST_KEY} within {} s (timeouts.fetchSec)",
                    settings.fetch_timeout.as_secs()
                ))),
            })
        }
    };
    // What Ferry runs here now: a manifest that would remove all of it must say so.
    let running = ferry_services(state, &b.units);
    let here = Some((&settings.policy, &running));
    let source = match fetched {
        // The boot tick's fallback restored what state records; the manifest still waits.
        None if settings.restore_only.is_some() => Source::Restore(Outcome::Failed),
        None => Source::Restore(Outcome::Refused),
        Some(Ok(Fetched::Found { bytes, etag })) => match verify(
            &bytes,
            settings.size_cap,
            &settings.trust,
            here,
            last_generation.as_deref(),
        ) {
            Ok(accepted) => {
                for w in &accepted.warnings {
                    lines.push(format!("manifest warning: {w}"));
                }
                Source::Fetched(Box::new(accepted.manifest), etag)
            }
            Err(reasons) => refuse(&mut lines, "manifest", reasons),
        },
        Some(Ok(Fetched::Unchanged)) => match &state.manifest {
            Some(m) => match recheck(m, &settings.trust, here) {
                Ok(()) => Source::Unchanged(Box::new(m.clone())),
                Err(reasons) => refuse(
                    &mut lines,
                    "the stored manifest (unchanged in the bucket)",
                    reasons,
                ),
            },
            None => Source::Restore(Outcome::Ok),
        },
        Some(Ok(Fetched::Missing)) => {
            lines.push(format!(
                "the bucket has no {MANIFEST_KEY}; publish one with `ferry push` (keeping current services)"
            ));
            Source::Restore(Outcome::Refused)
        }
        // The bucket holds a manifest no agent accepts: refused, like an invalid one.
        Some(Err(e @ BucketError::TooLarge { .. })) => {
            lines.push(format!(
                "manifest refused; nothing changed: {e} (make it smaller: long values belong in an envFile on the host)"
            ));
            Source::Restore(Outcome::Refused)
        }
        // Unreachable or refused (the only other errors a GET gives), services keep running
        // from state; the message names which one it was.
        Some(Err(e)) => {
            lines.push(format!("{e}; restoring services from state"));
            Source::Restore(Outcome::Unreachable)
        }
    };

    let (mut desired, restore_outcome) = match &source {
        Source::Fetched(m, _) | Source::Unchanged(m) => {
            lines.extend(settings.policy.nothing_here(m));
            ((**m).clone(), None)
        }
        Source::Restore(o) => (state.applied_manifest(&host), Some(*o)),
    };
    // Host policy and quarantine only concern a trusted manifest: what state restores
    // passed them when it was applied.
    let mut held = Vec::new();
    let mut refused = BTreeMap::new();
    if restore_outcome.is_none() {
        let facts = host_facts::gather(&settings.facts, state, &b.systemd, &b.units).await;
        refused = settings.policy.refusals(&desired, &facts);
        for (name, q) in lift(&mut state.quarantine, &desired, &host) {
            lines.push(format!(
                "{name}: quarantine of {} lifted (a newer manifest asks for another version)",
                q.store_path
            ));
        }
        held = hold_back(&mut desired, &host, &state.quarantine, &state.services);
        for (name, h, why) in rollback_hold::lift(&mut state.rollbacks, &desired, &host) {
            lines.push(format!(
                "{name}: rollback hold on {} ended ({why})",
                h.store_path
            ));
        }
    }
    // A service `ferry-agent rollback` took back stays there, restored from state too.
    lines.extend(rollback_hold::hold(&mut desired, &host, &state.rollbacks));

    let observed = match observe(state, &b.units, Some(&b.systemd), &settings.dialled).await {
        Ok(o) => o,
        Err(e) => {
            lines.push(format!(
                "cannot read the unit directory: {e}; nothing changed"
            ));
            return finish(
                state,
                at,
                Outcome::Failed,
                lines,
                None,
                ApplyReport::default(),
                started,
                b,
            );
        }
    };
    let mut the_plan = plan(
        &desired,
        &observed,
        &Policy {
            host: host.clone(),
            refused,
        },
    );
    if restore_outcome.is_some() {
        // Without a trusted manifest the agent only restores; it never removes.
        the_plan.services.retain(|p| p.action != Action::Remove);
    }

    // Mark what is about to change before changing it: a tick killed from here on leaves
    // the mark, and the next one redoes those services (see `State::pending`).
    let mut waiting = Vec::new();
    if !the_plan.is_noop() {
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
                    .partition(|p| p.action == Action::Unchanged || restores(p, &desired, state));
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
    }

    let applied = apply(&the_plan, b, &settings.apply).await;
    // Apply ran to its end: every outcome below is known and recorded.
    state.pending.clear();
    let by_name: std::collections::BTreeMap<&str, &ferry_schema::manifest::Service> = desired
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
                crate::health::quarantine::Quarantined {
                    generation,
                    unit,
                    ..q.clone()
                },
            );
        }
    }

    // Record: successful services become the applied set; failures keep their old entry.
    let now = at.clone();
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
    if let Source::Fetched(m, etag) = source {
        state.manifest = Some(*m);
        state.manifest_etag = etag;
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
                    .filter(|s| s.hosts.contains(&host))
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
    // A held-back or waiting service does not match the manifest either: the tick is not ok.
    let any_failed =
        applied.services.iter().any(|s| !s.ok) || !held.is_empty() || !waiting.is_empty();
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
    let outcome = match (any_failed, restore_outcome) {
        (true, _) => Outcome::Failed,
        (false, Some(o)) => o,
        (false, None) => Outcome::Ok,
    };
    finish(
        state,
        at,
        outcome,
        lines,
        Some(the_plan),
        applied,
        started,
        b,
    )
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

#[allow(clippy::too_many_arguments)]
fn finish<B: ReadBucket, S, D, U, P>(
    state: &mut State,
    at: String,
    outcome: Outcome,
    lines: Vec<String>,
    plan: Option<Plan>,
    applied: ApplyReport,
    started: Instant,
    b: &Backends<B, S, D, U, P>,
) -> TickReport {
    state.last_tick = Some(TickRecord {
        at,
        outcome,
        generation: state.manifest.as_ref().map(|m| m.generation.clone()),
        lines: lines.clone(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    TickReport {
        outcome,
        lines,
        plan,
        applied,
        requests: b.bucket.requests(),
    }
}

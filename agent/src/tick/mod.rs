//! A tick as one pipeline. `reconcile` loads the configuration, takes the lock and calls
//! [`run`]; `ferry-agent plan` runs the same steps up to the plan and stops, changing
//! nothing. Each step is a module with a typed output the next one reads:
//!
//! ```text
//!  fetch ──▶ verify ──▶ observe ──▶ plan ──▶ apply ──▶ record ══▶ route ──▶ retire ══▶ report
//!  bucket    manifest   state,      policy,   pending   state      Caddy     old         status
//!  GET       judged,    units,      quarantine mark ══▶ (services, routes   instances   store
//!  (ETag)    or restore systemd,    planner   host      quarantine,          stopped     (when
//!            from state host facts            changed   retiring,                        due)
//!                                                       status records)
//! ```
//!
//! (`══▶`: state saved there. The pending mark is saved before the host changes, the
//! recorded outcome before routing, and the whole tick last; a report due is written after
//! that, and state saved again with when it was.) The tick's [`summary::TickSummary`] is
//! made once the tick is saved; the report step, the metrics and hooks steps after it
//! (`metrics.file` rewritten; the hooks a tick that changed or failed something calls for)
//! and the verb read it. Neither of the last two can fail the tick. `record` comes before
//! `route`: routes are made from what state records as healthy, so a failed update keeps
//! its route to the version that still runs.
//!
//! An unreachable bucket or a refused manifest falls back to the services recorded in
//! state, so a rebooted host brings its last known-good services back, and a healthy host
//! is left alone. A manifest is refused whole only when it cannot be trusted at all
//! (unsigned, unparsable, older than allowed, empties a host that runs services without
//! decommissioning it); the host policy then refuses services one by one, and the planner
//! keeps each refused service on its last good version. The stored manifest a 304
//! re-applies is judged again, so a tightened agent.toml takes effect on the next tick.

pub mod apply;
pub mod fetch;
pub mod gate;
pub mod hooks;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod record;
pub mod report;
pub mod retire;
pub mod rollback;
pub mod route;
pub mod summary;
pub mod system;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::apply::{ApplyReport, ApplySettings, Backends};
use crate::backend::bucket::ReadBucket;
use crate::backend::caddy::Proxy;
use crate::backend::probe::Probe;
use crate::backend::status_store::StatusStore;
use crate::backend::store::Store;
use crate::backend::system::SystemHost;
use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::hooks::{Hooks, TickEvent};
use crate::host_facts::FactSources;
use crate::host_report::{self, Reporter};
use crate::plan::Plan;
use crate::policy::HostPolicy;
use crate::rollback_hold::RollbackTarget;
use crate::state::{Outcome, State, TickRecord};
use crate::state_file;
use crate::verify::Trust;
use report::{Reported, Reporting};
use route::{RouteReport, Routing};
use summary::TickSummary;

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
    /// Where to save the state (with its `pending` mark) before the host is changed, before
    /// routing and at the end; `None` keeps it in memory.
    pub checkpoint: Option<PathBuf>,
    /// Why this tick only restores what state records without asking the bucket (the boot
    /// tick's fallback after `timeouts.bootSec`, or a rollback); `None`: an ordinary tick.
    pub restore_only: Option<String>,
    /// `ferry-agent rollback SERVICE`: the service whose profile the verb took one
    /// generation back (see [`rollback`]); `None`: an ordinary tick.
    pub rollback: Option<RollbackTarget>,
}

/// What the steps after `record` need: how long to wait before stopping what a switch
/// replaced, and how long the boot tick may take.
#[derive(Debug, Clone, Copy)]
pub struct AfterSettings {
    /// `timeouts.drainSec`.
    pub drain: Duration,
    /// `timeouts.bootSec`: the boot tick is cut off after it and restores from state.
    pub boot_sec: u64,
}

/// What the last two steps need: where the metrics go, which hooks run, and what the
/// status document a webhook gets says about the agent when no status store is configured.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// `metrics.file`; `None`: no metrics are written.
    pub metrics_file: Option<PathBuf>,
    /// `[hooks]`.
    pub hooks: Hooks,
    /// `ferry-agent --version`.
    pub agent_version: String,
    /// `status.everySec`.
    pub every_sec: u64,
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
    /// Services the manifest asks to change that this tick held back: their version is
    /// quarantined, their change waits until the state can be saved, or an earlier wave
    /// halted it. (A service waiting for earlier waves is not held: it is on its way.)
    pub held: Vec<String>,
    /// Requests the wave gate made to the status store.
    pub status_requests: u64,
}

/// What the whole pipeline did.
#[derive(Debug)]
pub struct RunReport {
    /// The tick, with the route and retire steps' lines and outcome folded in.
    pub tick: TickReport,
    /// The route step (requests include reading Caddy's dials before the tick).
    pub routed: RouteReport,
    /// Whether the state was saved at the end.
    pub saved: anyhow::Result<()>,
    /// The tick in figures, for the steps after it and the verb.
    pub summary: TickSummary,
    /// The status report, when one was due (`None` without a status store).
    pub reported: Option<Reported>,
}

impl RunReport {
    /// The exit code of `ferry-agent reconcile` for this tick.
    pub fn exit_code(&self) -> u8 {
        self.summary.exit_code
    }
}

/// Run the whole pipeline: read what Caddy dials when state may not know a live instance,
/// one tick (the boot tick bounded by `timeouts.bootSec`), save, route, retire, save,
/// report (saving again when state records the report), metrics, hooks.
#[allow(clippy::too_many_arguments)]
pub async fn run<B, S, D, U, P, X, R, Y>(
    settings: &TickSettings,
    after: AfterSettings,
    state: &mut State,
    b: &Backends<B, S, D, U, P>,
    routing: Option<&Routing<X>>,
    reporting: Option<&Reporting<R>>,
    system: Option<&Y>,
    notify: &Notify,
) -> RunReport
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    U: Units,
    P: Probe,
    X: Proxy,
    R: StatusStore,
    Y: SystemHost,
{
    let started = Instant::now();
    // The report names the applied manifest by the digest of its bytes; state written
    // before the digest was recorded has none, so this once the manifest is fetched whole
    // (unconditionally) to see its bytes again. Only with a status store: nothing else
    // changes without one.
    if reporting.is_some() && state.manifest_sha256.is_none() {
        state.manifest_etag = None;
    }
    // State that may not know a blue-green service's live instance (lost, or never
    // written): what Caddy dials helps find it. A converged host skips this read.
    let mut dial_requests = 0;
    let with_dials;
    let mut settings = settings;
    if let Some(routing) = routing
        && route::may_not_know_live_instances(state)
    {
        let before = routing.proxy.requests();
        with_dials = TickSettings {
            dialled: route::dialled(routing).await,
            ..settings.clone()
        };
        settings = &with_dials;
        dial_requests = routing.proxy.requests().saturating_sub(before);
    }
    if let Some(t) = &settings.rollback {
        rollback::begin(t, state);
    }
    let status = reporting.map(|r| &r.store);
    let records_before = (state.service_status.clone(), state.system.clone());
    let mut report = if settings.rollback.is_some() {
        tick(settings, state, b, status, None::<&Y>).await
    } else if b.systemd.booting().await {
        // A boot tick never switches systems: the host is coming up on the one it booted.
        boot_tick(settings, state, b, status, after.boot_sec).await
    } else {
        tick(settings, state, b, status, system).await
    };
    if let Some(t) = &settings.rollback {
        rollback::settle(t, state, &mut report);
    }
    // Record the outcome before routing and draining: a tick killed during the drain
    // then leaves the new live instance and what to retire, not a pending mark that
    // would restart the instance Caddy already routes to.
    if let Some(path) = &settings.checkpoint
        && let Err(e) = state_file::save(path, state)
    {
        tracing::warn!("cannot save the state before routing: {e:#}");
    }
    let mut routed = RouteReport {
        ok: true,
        ..RouteReport::default()
    };
    if let Some(routing) = routing {
        routed = route::after_tick(routing, state, &mut report).await;
    }
    routed.requests += dial_requests;
    // Old blue-green instances stop only once traffic reaches the new ones.
    retire::after_routes(
        &b.systemd,
        &b.units,
        routed.ok,
        after.drain,
        state,
        &mut report,
    )
    .await;
    if report.outcome == Outcome::Ok {
        state.last_ok_at = state.last_tick.as_ref().map(|t| t.at.clone());
    }
    // Saving last: a state directory that cannot be written (full or read-only /var) must
    // not cost the services their restore, only the record of this tick.
    let saved = match &settings.checkpoint {
        Some(path) => state_file::save(path, state),
        None => Ok(()),
    };
    let mut summary = summarize(&report, &routed, saved.is_ok(), state, started);
    // A service that starts or stops waiting changes nothing on the host, but its report
    // must say so.
    summary.records_changed =
        (state.service_status.clone(), state.system.clone()) != records_before;
    let mut reported = None;
    if let Some(reporting) = reporting {
        reported = report::after_save(
            reporting,
            &settings.policy.host,
            system.is_some(),
            &summary,
            state,
            &mut report.lines,
        )
        .await;
        // When it last reported, or that a report is owed: a lost save only costs an
        // early report next tick.
        if reported.is_some()
            && let Some(path) = &settings.checkpoint
            && let Err(e) = state_file::save(path, state)
        {
            tracing::warn!("cannot save the state after reporting: {e:#}");
        }
    }
    // Metrics, then hooks: neither can fail the tick, a failure of either is a line.
    if let Some(file) = &notify.metrics_file {
        let figures = crate::metrics::figures(state, &summary, &notify.agent_version);
        report
            .lines
            .extend(metrics::write(file, &crate::metrics::render(&figures)));
    }
    let event = TickEvent {
        host: &settings.policy.host,
        outcome: summary.outcome,
        exit_code: i32::from(summary.exit_code),
        generation: summary.generation.as_deref(),
        changed: &summary.changed,
        failed: &summary.failed,
    };
    if !notify.hooks.due(&event).is_empty() {
        // The report just written, or the same document built for the webhook alone.
        let status = match &reported {
            Some(r) => r.status.clone(),
            None => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let who = Reporter {
                    host: &settings.policy.host,
                    agent_version: &notify.agent_version,
                    every_sec: notify.every_sec,
                    now: &now,
                    system_enabled: system.is_some(),
                };
                host_report::build(state, &summary, &who)
            }
        };
        let lines = hooks::after_tick(&notify.hooks, &event, &status).await;
        report.lines.extend(lines);
    }
    RunReport {
        tick: report,
        routed,
        saved,
        summary,
        reported,
    }
}

/// The tick in figures, once it is saved.
fn summarize(
    report: &TickReport,
    routed: &RouteReport,
    saved: bool,
    state: &State,
    started: Instant,
) -> TickSummary {
    let (mut changed, mut failed, mut fine) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(plan) = &report.plan {
        for (p, o) in plan.services.iter().zip(&report.applied.services) {
            if !o.ok {
                failed.push(p.name.clone());
            } else if p.action != crate::plan::Action::Unchanged {
                changed.push(p.name.clone());
            } else {
                fine.push(p.name.clone());
            }
        }
    }
    for name in &report.held {
        if !failed.contains(name) {
            failed.push(name.clone());
        }
        fine.retain(|n| n != name);
    }
    let phases = &report.applied.phases;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let phase_ms = [
        ("pull", phases.pull),
        ("systemd", phases.systemd),
        ("health", phases.health),
        ("route", phases.route),
        ("drain", phases.drain),
    ]
    .into_iter()
    .map(|(name, d)| (name.to_owned(), ms(d)))
    .collect();
    TickSummary {
        at: state.last_tick.as_ref().map_or_else(
            || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            |t| t.at.clone(),
        ),
        outcome: report.outcome,
        exit_code: summary::exit_code(report.outcome, saved),
        wall_ms: ms(started.elapsed()),
        phase_ms,
        bucket_requests: report.requests,
        caddy_requests: routed.requests,
        peak_rss_kib: crate::self_usage::peak_rss_kib(),
        message: summary::message(report.outcome, &report.lines, &failed, &fine),
        changed,
        failed,
        generation: state.manifest.as_ref().map(|m| m.generation.clone()),
        status_requests: report.status_requests,
        records_changed: false,
    }
}

/// The boot tick: `multi-user.target` waits for it, so after `boot_sec` it is cut off
/// wherever it is (a slow bucket, a long health check), like a killed tick: what it marked
/// pending is redone from state by a restore-only tick (restore is idempotent), which says
/// so. The next timer tick applies the manifest.
async fn boot_tick<B, S, D, U, P, R>(
    settings: &TickSettings,
    state: &mut State,
    backends: &Backends<B, S, D, U, P>,
    status: Option<&R>,
    boot_sec: u64,
) -> TickReport
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    U: Units,
    P: Probe,
    R: StatusStore,
{
    let before = state.clone();
    let limit = Duration::from_secs(boot_sec);
    let no_system = None::<&crate::backend::system::NixosSystem>;
    if let Ok(report) =
        tokio::time::timeout(limit, tick(settings, state, backends, status, no_system)).await
    {
        return report;
    }
    let pending = std::mem::take(&mut state.pending);
    *state = before;
    state.pending.extend(pending);
    let restore = TickSettings {
        restore_only: Some(format!(
            "boot tick: the manifest was not applied within timeouts.bootSec ({boot_sec} s); restoring services from state so the boot goes on; the next timer tick applies it (raise timeouts.bootSec to deploy during boot)"
        )),
        ..settings.clone()
    };
    tick(&restore, state, backends, status, no_system).await
}

/// One tick up to `record`: fetch → verify → observe → plan (holds, wave gate, planner) →
/// apply → record (in memory; [`run`] saves it around routing). `status`: the status store
/// the wave gate reads earlier waves' reports from.
pub async fn tick<B, S, D, U, P, R, Y>(
    settings: &TickSettings,
    state: &mut State,
    b: &Backends<B, S, D, U, P>,
    status: Option<&R>,
    system_host: Option<&Y>,
) -> TickReport
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    U: Units,
    P: Probe,
    R: StatusStore,
    Y: SystemHost,
{
    let started = Instant::now();
    let clock = chrono::Utc::now();
    let at = clock.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut lines = Vec::new();

    let fetched = fetch::fetch(settings, state, &*b.bucket).await;
    let running = observe::ferry_services(state, &b.units);
    let source = verify::judge(fetched, settings, state, &running, &mut lines);
    let restore = source.restore_outcome();
    let (mut desired, notes) = verify::desired(&source, settings, state);
    lines.extend(notes);
    // The host's system first, so the services' steps see the host as it left it; only a
    // trusted manifest names one.
    let mut system_step = system::SystemStep::default();
    if let verify::Source::Fetched { manifest, .. } | verify::Source::Unchanged(manifest) = &source
    {
        system_step = system::step(settings, manifest, state, b, system_host, &mut lines).await;
    }
    // A switch's time is not taken from the services' share of timeouts.tickSec.
    let moved;
    let settings = match settings.apply.deadline {
        Some(mut d) if !system_step.took.is_zero() => {
            d.at += system_step.took;
            let mut s = settings.clone();
            s.apply.deadline = Some(d);
            moved = s;
            &moved
        }
        _ => settings,
    };

    let observation = match observe::observe_host(
        &settings.facts,
        state,
        &b.units,
        Some(&b.systemd),
        &settings.dialled,
        restore.is_none(),
    )
    .await
    {
        Ok(o) => o,
        Err(e) => {
            lines.push(format!(
                "cannot read the unit directory: {e}; nothing changed"
            ));
            let (outcome, applied) = (Outcome::Failed, ApplyReport::default());
            return finish(state, at, outcome, lines, None, applied, started, b);
        }
    };
    let holds = plan::hold(&mut desired, &observation, &settings.policy, state);
    // Waves: only a trusted manifest is gated (state's services were applied already).
    let gated = if restore.is_none() {
        gate::gate(
            status,
            &mut desired,
            &settings.policy.host,
            state,
            clock,
            &mut lines,
        )
        .await
    } else {
        gate::Gate::default()
    };
    let planned = plan::finish(
        &desired,
        &observation,
        &settings.policy,
        holds,
        restore.is_some(),
    );
    for (name, q) in &planned.lifted {
        lines.push(format!(
            "{name}: quarantine of {} lifted (a newer manifest asks for another version)",
            q.store_path
        ));
    }
    for (name, h, why) in &planned.rollback_ended {
        lines.push(format!(
            "{name}: rollback hold on {} ended ({why})",
            h.store_path
        ));
    }
    lines.extend(planned.rollback_kept.iter().cloned());
    let mut the_plan = planned.plan;

    let applied = apply::apply_step(settings, state, &mut the_plan, &desired, b, &mut lines).await;
    let held: Vec<String> = planned
        .held
        .iter()
        .map(|h| h.name.clone())
        .chain(applied.waiting.iter().cloned())
        .chain(
            gated
                .held
                .iter()
                .filter(|h| h.halted())
                .map(|h| h.name.clone()),
        )
        .collect();

    let input = record::RecordInput {
        source,
        desired: &desired,
        plan: &the_plan,
        applied: &applied,
        held: planned.held,
        gated: &gated.held,
        clock,
        at: &at,
    };
    let mut outcome = record::record(settings, state, input, &mut lines);
    if system_step.failed && outcome == Outcome::Ok {
        outcome = Outcome::Failed;
    }
    let mut report = finish(
        state,
        at,
        outcome,
        lines,
        Some(the_plan),
        applied.report,
        started,
        b,
    );
    report.held = held;
    report.status_requests = gated.requests;
    report
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
        held: Vec::new(),
        status_requests: 0,
    }
}

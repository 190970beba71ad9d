//! `ferry-agent reconcile`: one tick (then Caddy routes, then retiring old blue-green
//! instances), under the lock, with the state saved atomically.
//! Exit codes: 0 host matches the manifest; 1 a service failed or was refused by host policy,
//! Caddy routes could not be set, the state could not be saved, the tick was cut short at
//! `timeouts.tickSec`, or the boot tick restored from state after `timeouts.bootSec`; 2 manifest refused (or
//! none can be trusted: no `manifestKeys`); 3 bucket unreachable (services restored from
//! state); 75 another tick holds the lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_agent::apply::{Backends, Deadline};
use ferry_agent::backend::bucket::ReadBucket;
use ferry_agent::backend::caddy::Proxy as _;
use ferry_agent::backend::probe::Probe;
use ferry_agent::backend::store::Store;
use ferry_agent::backend::systemd::Systemd;
use ferry_agent::backend::units::Units;
use ferry_agent::config::Config;
use ferry_agent::render::unit::is_blue_green;
use ferry_agent::retire_step;
use ferry_agent::rollback_hold::RollbackHold;
use ferry_agent::route_step::{self, RouteReport, Routing, after_tick};
use ferry_agent::state::Outcome;
use ferry_agent::state::State;
use ferry_agent::state_file;
use ferry_agent::tick::{TickReport, TickSettings, tick};
use ferry_agent::tick_lock::{LockError, TickLock};

use super::runtime;

/// Arguments of `reconcile`.
#[derive(clap::Args)]
pub struct Args {
    /// Forget the quarantined store paths first, so store paths that failed their health
    /// check are tried again.
    #[arg(long)]
    retry_failed: bool,
}

/// What the tick is for.
pub enum Mode {
    /// An ordinary tick (`reconcile`).
    Tick {
        /// `--retry-failed`.
        retry_failed: bool,
    },
    /// `rollback SERVICE`: that service one profile generation back, the others restored
    /// from state, the bucket not asked.
    Rollback(String),
}

/// Run one tick.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    run_mode(
        config_path,
        Mode::Tick {
            retry_failed: args.retry_failed,
        },
    )
}

/// Run one tick of `mode`.
pub fn run_mode(config_path: &Path, mode: Mode) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = Config::load(config_path)?;
    // A state directory that cannot be made (read-only /var) leaves no state to restore
    // from, but it does not stop the tick: only a change needs the state written first,
    // and the tick holds changes back when it cannot be (see `tick`).
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        println!(
            "state: cannot create the state directory {}: {e}",
            config.state_dir.display()
        );
    }
    let _lock = match TickLock::acquire(
        &config.lock_file(),
        Duration::from_secs(config.timeouts.lock_wait_sec),
    ) {
        Ok(l) => l,
        Err(e @ LockError::Busy { .. }) => {
            eprintln!("ferry-agent: {e}");
            return Ok(ExitCode::from(75));
        }
        Err(e) => return Err(e.into()),
    };
    let (mut state, note) = state_file::load(&config.state_file());
    if let Some(note) = &note {
        println!("state: {note}");
    }
    for temp in state_file::remove_temps(&config.state_file(), &config.unit_dir) {
        println!("state: removed {temp}, left by a write that was cut off");
    }
    // A rollback that cannot be done changes nothing and says why.
    let rollback = match &mode {
        Mode::Rollback(name) => Some((
            name.clone(),
            super::rollback::target(&config, &state, name)?,
        )),
        Mode::Tick { .. } => None,
    };
    if matches!(mode, Mode::Tick { retry_failed: true }) {
        for (name, q) in std::mem::take(&mut state.quarantine) {
            println!(
                "{name}: quarantine of {} cleared (--retry-failed)",
                q.store_path
            );
        }
    }
    let mut settings = TickSettings {
        policy: runtime::host_policy(&config)?,
        trust: runtime::trust(&config),
        facts: runtime::fact_sources(&config),
        size_cap: ferry_schema::DEFAULT_SIZE_CAP,
        fetch_timeout: Duration::from_secs(config.timeouts.fetch_sec),
        apply: runtime::apply_settings(&config)?,
        checkpoint: Some(config.state_file()),
        dialled: BTreeMap::new(),
        restore_only: None,
    };
    let routing = Routing::from_config(&config.caddy).context("caddy.admin in agent.toml")?;
    let rt = runtime::runtime()?;
    let (report, routed) = rt.block_on(async {
        settings.apply.deadline = Some(Deadline::after(
            tokio::time::Instant::now(),
            config.timeouts.tick_sec,
        ));
        let backends = runtime::backends(&config).await?;
        // State that may not know a blue-green service's live instance (lost, or never
        // written): what Caddy dials helps find it. A converged host skips this read.
        let mut dial_requests = 0;
        if let Some(routing) = &routing
            && may_not_know_live_instances(&state)
        {
            let before = routing.proxy.requests();
            settings.dialled = route_step::dialled(routing).await;
            dial_requests = routing.proxy.requests().saturating_sub(before);
        }
        if let Some((name, t)) = &rollback {
            backends
                .store
                .switch_generation(&t.profile, t.generation)
                .await
                .with_context(|| format!("rolling `{name}` back"))?;
            state.rollbacks.insert(
                name.clone(),
                RollbackHold {
                    store_path: t.store_path.clone(),
                    from: t.from.clone(),
                    generation: state.manifest.as_ref().map(|m| m.generation.clone()),
                    profile_generation: t.generation,
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                },
            );
            settings.restore_only = Some(format!(
                "rollback: {name} from profile generation {} ({}) to {} ({}); the other services are restored as state records them, the bucket is not asked",
                t.from_generation, t.from, t.generation, t.store_path
            ));
        }
        let mut report = if rollback.is_some() {
            tick(&settings, &mut state, &backends).await
        } else if backends.systemd.booting().await {
            boot_tick(&settings, &mut state, &backends, config.timeouts.boot_sec).await
        } else {
            tick(&settings, &mut state, &backends).await
        };
        if let Some((name, t)) = &rollback {
            let ok = report
                .applied
                .services
                .iter()
                .find(|s| s.name == *name)
                .is_some_and(|s| s.ok);
            if !ok {
                state.rollbacks.remove(name);
                report.lines.push(format!(
                    "{name}: rollback to {} failed, {} runs again; the next tick applies the manifest",
                    t.store_path, t.from
                ));
            }
            // Restoring the others is what a rollback does, not a fallback.
            report.outcome = if report.applied.services.iter().all(|s| s.ok) {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
        }
        // Record the outcome before routing and draining: a tick killed during the drain
        // then leaves the new live instance and what to retire, not a pending mark that
        // would restart the instance Caddy already routes to.
        if let Err(e) = state_file::save(&config.state_file(), &state) {
            tracing::warn!("cannot save the state before routing: {e:#}");
        }
        let mut routed = RouteReport {
            ok: true,
            ..RouteReport::default()
        };
        if let Some(routing) = &routing {
            routed = after_tick(routing, &mut state, &mut report).await;
        }
        routed.requests += dial_requests;
        // Old blue-green instances stop only once traffic reaches the new ones.
        retire_step::after_routes(
            &backends.systemd,
            &backends.units,
            routed.ok,
            Duration::from_secs(config.timeouts.drain_sec),
            &mut state,
            &mut report,
        )
        .await;
        anyhow::Ok((report, routed))
    })?;
    // Saving last: a state directory that cannot be written (full or read-only /var) must
    // not cost the services their restore, only the record of this tick.
    let saved = state_file::save(&config.state_file(), &state);
    for line in &report.lines {
        println!("{line}");
    }
    if let Err(e) = &saved {
        println!(
            "cannot save the state: {e:#}; the services were brought back from it, but this tick is not recorded: make {} writable",
            config.state_dir.display()
        );
    }
    let outcome = match report.outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Refused => "refused",
        Outcome::Unreachable => "unreachable",
    };
    println!(
        "tick: outcome={outcome} reloads={} unitsTouched={} requests={} caddyRequests={} routeWrites={} ms={} cpuMs={} peakRssKiB={}",
        report.applied.reloads,
        report.applied.units_touched,
        report.requests,
        routed.requests,
        routed.writes,
        started.elapsed().as_millis(),
        known(ferry_agent::self_usage::cpu_ms()),
        known(ferry_agent::self_usage::peak_rss_kib()),
    );
    println!("phases: {}", report.applied.phases);
    Ok(ExitCode::from(match report.outcome {
        _ if saved.is_err() => 1,
        Outcome::Ok => 0,
        Outcome::Failed => 1,
        Outcome::Refused => 2,
        Outcome::Unreachable => 3,
    }))
}

/// The boot tick: `multi-user.target` waits for it, so after `boot_sec` it is cut off
/// wherever it is (a slow bucket, a long health check), like a killed tick: what it marked
/// pending is redone from state by a restore-only tick (restore is idempotent), which says
/// so. The next timer tick applies the manifest.
async fn boot_tick<B, S, D, U, P>(
    settings: &TickSettings,
    state: &mut State,
    backends: &Backends<B, S, D, U, P>,
    boot_sec: u64,
) -> TickReport
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    U: Units,
    P: Probe,
{
    let before = state.clone();
    let limit = Duration::from_secs(boot_sec);
    if let Ok(report) = tokio::time::timeout(limit, tick(settings, state, backends)).await {
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
    tick(&restore, state, backends).await
}

/// Whether the state may not know which blue-green instance is live: it records no service
/// (a first tick, or `state.json` lost) or a blue-green one without its live port.
fn may_not_know_live_instances(state: &State) -> bool {
    state.services.is_empty()
        || state
            .services
            .values()
            .any(|a| is_blue_green(&a.service) && a.live_port.is_none())
}

/// A figure for the summary line: `unknown` when `/proc` could not be read, never a 0 that
/// would read as a measurement.
fn known(figure: Option<u64>) -> String {
    figure.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::known;

    #[test]
    fn an_unreadable_figure_is_unknown_not_zero() {
        assert_eq!(known(None), "unknown");
        assert_eq!(known(Some(0)), "0");
        assert_eq!(known(Some(17_300)), "17300");
    }
}

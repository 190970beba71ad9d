//! `ferry-agent reconcile`: loads the configuration, takes the lock, loads the state and
//! runs the tick pipeline (`ferry_agent::tick::run`: fetch → … → retire, state saved on the
//! way), then prints its lines and summary.
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
use ferry_agent::apply::Deadline;
use ferry_agent::config::Config;
use ferry_agent::state::Outcome;
use ferry_agent::state_file;
use ferry_agent::tick::route::Routing;
use ferry_agent::tick::{self, AfterSettings, Notify, RunReport, TickSettings};
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
        Mode::Rollback(name) => Some(super::rollback::target(&config, &state, name)?),
        Mode::Tick { .. } => None,
    };
    if matches!(mode, Mode::Tick { retry_failed: true }) {
        for (name, q) in std::mem::take(&mut state.quarantine) {
            println!(
                "{name}: quarantine of {} cleared (--retry-failed)",
                q.store_path
            );
        }
        if let Some((path, _)) = state.system.quarantined.take() {
            println!("system: quarantine of {path} cleared (--retry-failed)");
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
        restore_only: rollback.as_ref().map(|t| t.restore_note()),
        rollback,
    };
    let after = AfterSettings {
        drain: Duration::from_secs(config.timeouts.drain_sec),
        boot_sec: config.timeouts.boot_sec,
    };
    let notify = Notify {
        metrics_file: config.metrics.file.clone(),
        hooks: config.hooks.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        every_sec: config.status.every_sec,
    };
    let routing = Routing::from_config(&config.caddy).context("caddy.admin in agent.toml")?;
    let rt = runtime::runtime()?;
    let run = rt.block_on(async {
        settings.apply.deadline = Some(Deadline::after(
            tokio::time::Instant::now(),
            config.timeouts.tick_sec,
        ));
        let backends = runtime::backends(&config).await?;
        if let Some(t) = &settings.rollback {
            backends
                .store
                .switch_generation(&t.profile, t.generation)
                .await
                .with_context(|| format!("rolling `{}` back", t.service))?;
        }
        let reporting = runtime::reporting(&config).await?;
        let system = runtime::system_host(&config, &backends.systemd);
        anyhow::Ok(
            tick::run(
                &settings,
                after,
                &mut state,
                &backends,
                routing.as_ref(),
                reporting.as_ref(),
                system.as_ref(),
                &notify,
            )
            .await,
        )
    })?;
    let RunReport {
        tick: report,
        routed,
        saved,
        ..
    } = &run;
    for line in &report.lines {
        println!("{line}");
    }
    if let Err(e) = saved {
        println!(
            "cannot save the state: {e:#}; the services were brought back from it, but this tick is not recorded: make {} writable",
            config.state_dir.display()
        );
    }
    let outcome = match run.summary.outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Refused => "refused",
        Outcome::Unreachable => "unreachable",
    };
    println!(
        "tick: outcome={outcome} reloads={} unitsTouched={} requests={} caddyRequests={} routeWrites={} ms={} cpuMs={} peakRssKiB={} statusReads={}",
        report.applied.reloads,
        report.applied.units_touched,
        report.requests,
        routed.requests,
        routed.writes,
        started.elapsed().as_millis(),
        known(ferry_agent::self_usage::cpu_ms()),
        known(run.summary.peak_rss_kib),
        run.summary.status_requests,
    );
    println!("phases: {}", report.applied.phases);
    Ok(ExitCode::from(run.exit_code()))
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

//! `ferry-agent plan [--manifest FILE]`: what a tick would do, as a readable diff, with the
//! services the host policy would refuse marked. Runs the tick pipeline's steps up to the
//! plan (fetch, verify, observe, plan: `ferry_agent::tick`) and stops: it reads the host
//! (state, unit files, systemd when reachable, the facts the policy needs) but changes
//! nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_agent::backend::bucket::Fetched;
use ferry_agent::backend::system::{SYSTEM_PROFILE, read_target};
use ferry_agent::config::Config;
use ferry_agent::state_file;
use ferry_agent::tick::{fetch, observe, plan, verify};

use super::runtime;

/// Arguments of `plan`.
#[derive(clap::Args)]
pub struct Args {
    /// Plan against this manifest file instead of the bucket's `manifest.json`.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

/// Print the plan. Exit 0 when nothing would change, 1 when something would, 2 when refused.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let policy = runtime::host_policy(&config)?;
    let rt = runtime::runtime()?;
    rt.block_on(async {
        let bytes = match &args.manifest {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => {
                let bucket = runtime::bucket(&config).await?;
                let timeout = Duration::from_secs(config.timeouts.fetch_sec);
                let fetched = fetch::get_manifest(
                    &bucket,
                    None,
                    ferry_schema::DEFAULT_SIZE_CAP,
                    timeout,
                    None,
                )
                .await
                .ok_or_else(|| anyhow::anyhow!(fetch::timed_out(timeout)))?;
                match fetched? {
                    Fetched::Found { bytes, .. } => bytes,
                    Fetched::Missing | Fetched::Unchanged => {
                        anyhow::bail!(
                            "the bucket has no manifest.json; publish one with `ferry push`"
                        )
                    }
                }
            }
        };
        let (mut state, note) = state_file::load(&config.state_file());
        if let Some(note) = note {
            println!("state: {note}");
        }
        let trust = runtime::trust(&config);
        let units = runtime::units(&config);
        let running = observe::ferry_services(&state, &units);
        let accepted = match verify::accept(
            &bytes,
            ferry_schema::DEFAULT_SIZE_CAP,
            &trust,
            &policy,
            &running,
            &state,
        ) {
            Ok(a) => a,
            Err(reasons) => {
                println!("manifest refused; a tick would change nothing:");
                for r in reasons {
                    println!("  refused: {r}");
                }
                return Ok(ExitCode::from(2));
            }
        };
        let systemd = match runtime::systemd(&config).await {
            Ok(s) => Some(s),
            Err(e) => {
                println!("note: {e:#}; unit states unknown");
                None
            }
        };
        let observation = observe::observe_host(
            &runtime::fact_sources(&config),
            &state,
            &units,
            systemd.as_ref(),
            // A preview: systemd alone says which blue-green instance is live.
            &BTreeMap::new(),
            true,
        )
        .await?;
        if systemd.is_none() {
            // A preview only: a tick without systemd refuses what it cannot check.
            println!(
                "note: without systemd, service names and ports are not checked against \
                 the host's units and listeners"
            );
        }
        let mut desired = accepted.manifest;
        // A preview reads no report: it names what the wave gate would judge.
        let gated = ferry_agent::wave_gate::gated(&desired, &policy.host, &state.services);
        let planned = plan::plan_tick(&mut desired, &observation, &policy, &mut state, false);
        if let Some(line) = policy.nothing_here(&desired) {
            println!("{line}");
        }
        print!("{}", planned.plan);
        for (name, q) in planned.lifted {
            println!("~ {name}: quarantine of {} would be lifted", q.store_path);
        }
        for h in &planned.held {
            println!("! {h}");
        }
        for (name, h, why) in &planned.rollback_ended {
            println!(
                "~ {name}: rollback hold on {} would end ({why})",
                h.store_path
            );
        }
        for line in &planned.rollback_kept {
            println!("= {line}");
        }
        for g in &gated {
            println!(
                "? {}: rollout wave {}: reconcile applies {} only once {} report it healthy for {} s (plan reads no report)",
                g.name,
                g.wave + 1,
                g.store_path,
                g.earlier
                    .iter()
                    .map(|(_, h)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                g.rollout.soak_sec()
            );
        }
        let system = ferry_agent::system_deploy::decide(
            desired.systems.get(&policy.host),
            config.system.enable,
            read_target(Path::new(SYSTEM_PROFILE)).as_deref(),
            &state.system,
        );
        let mut changes = !planned.plan.is_noop();
        if let Some((line, change)) = ferry_agent::system_deploy::preview(&system) {
            println!("{line}");
            changes |= change;
        }
        Ok(ExitCode::from(if changes { 1 } else { 0 }))
    })
}

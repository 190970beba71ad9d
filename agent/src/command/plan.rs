//! `ferry-agent plan [--manifest FILE]`: what a tick would do, as a readable diff, with the
//! services the host policy would refuse marked. Reads the host (state, unit files, systemd
//! when reachable, the facts the policy needs) but changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use ferry_agent::backend::bucket::{Fetched, ReadBucket};
use ferry_agent::backend::systemd::DbusSystemd;
use ferry_agent::backend::units::UnitDir;
use ferry_agent::config::Config;
use ferry_agent::health::quarantine::{hold_back, lift};
use ferry_agent::host_facts;
use ferry_agent::observe::{ferry_services, observe};
use ferry_agent::plan::{Policy, plan};
use ferry_agent::policy::HostFacts;
use ferry_agent::rollback_hold;
use ferry_agent::state_file;
use ferry_agent::verify::verify;

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
                let fetch = bucket.get_bounded(
                    ferry_schema::layout::MANIFEST_KEY,
                    None,
                    ferry_schema::DEFAULT_SIZE_CAP as u64,
                );
                let deadline = std::time::Duration::from_secs(config.timeouts.fetch_sec);
                let fetched = tokio::time::timeout(deadline, fetch).await.map_err(|_| {
                    anyhow::anyhow!(
                        "no complete answer for manifest.json within {} s (timeouts.fetchSec)",
                        config.timeouts.fetch_sec
                    )
                })?;
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
        let units = UnitDir {
            dir: config.unit_dir.clone(),
        };
        let running = ferry_services(&state, &units);
        let accepted = match verify(
            &bytes,
            ferry_schema::DEFAULT_SIZE_CAP,
            &trust,
            Some((&policy, &running)),
            state.manifest.as_ref().map(|m| m.generation.as_str()),
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
        let observed = observe::<DbusSystemd, _>(
            &state,
            &units,
            systemd.as_ref(),
            // A preview: systemd alone says which blue-green instance is live.
            &std::collections::BTreeMap::new(),
        )
        .await?;
        let mut desired = accepted.manifest;
        let facts = match &systemd {
            Some(sd) => {
                host_facts::gather(&runtime::fact_sources(&config), &state, sd, &units).await
            }
            // A preview only: a tick without systemd refuses what it cannot check.
            None => {
                println!(
                    "note: without systemd, service names and ports are not checked against \
                     the host's units and listeners"
                );
                HostFacts {
                    accounts: host_facts::accounts(&runtime::fact_sources(&config)),
                    ..HostFacts::default()
                }
            }
        };
        let refused = policy.refusals(&desired, &facts);
        let lifted = lift(&mut state.quarantine, &desired, &policy.host);
        let held = hold_back(
            &mut desired,
            &policy.host,
            &state.quarantine,
            &state.services,
        );
        let ended = rollback_hold::lift(&mut state.rollbacks, &desired, &policy.host);
        let kept = rollback_hold::hold(&mut desired, &policy.host, &state.rollbacks);
        let p = plan(
            &desired,
            &observed,
            &Policy {
                host: policy.host.clone(),
                refused,
            },
        );
        if let Some(line) = policy.nothing_here(&desired) {
            println!("{line}");
        }
        print!("{p}");
        for (name, q) in lifted {
            println!("~ {name}: quarantine of {} would be lifted", q.store_path);
        }
        for h in &held {
            println!("! {h}");
        }
        for (name, h, why) in ended {
            println!(
                "~ {name}: rollback hold on {} would end ({why})",
                h.store_path
            );
        }
        for line in kept {
            println!("= {line}");
        }
        Ok(ExitCode::from(if p.is_noop() { 0 } else { 1 }))
    })
}

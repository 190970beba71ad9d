//! `ferry status`: what every host did with the live manifest, from the reports the hosts
//! write to the status store (`hosts/<host>.json`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_schema::host_status::manifest_sha256;
use ferry_schema::layout::MANIFEST_KEY;

use crate::cli::EXIT_FAILED;
use crate::fleet_reports::read_reports;
use crate::fleet_view::{all_converged, render, view};
use crate::live_manifest::read_live;
use crate::rollout_view::{self, rollout_views};
use crate::settings::{BucketArgs, StatusBucketArgs, load_config, open_bucket, open_status_bucket};

/// Show, per host, whether it runs the live manifest healthy.
///
/// One line per host the live manifest names and per other host that reports: converged,
/// failing (with each service's state and last message), behind (not applied yet, or
/// refused and why), stale (no report for 3 of its report intervals), silent (never
/// reported), unreadable, or not-named; the generation it applied and when it last reported.
///
/// With a `rollout` in the manifest, then its waves in order, each with its hosts and, per
/// service, where the host stands: done (healthy for `soakSec`), soaking (until when),
/// pending (not applied yet), waiting (for which hosts of earlier waves), failed, halted (by
/// which host), stale (nothing within `staleSec`; `onStale` says whether later waves wait
/// for it or go on without it) or unreadable.
///
/// Exit status: 0 when every host the manifest names is converged, 1 otherwise or when the
/// bucket has no manifest, 2 on other trouble.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub status: StatusBucketArgs,
    /// Print JSON: `{"generation", "sha256", "converged", "hosts": [...]}`, and with a
    /// rollout `"rollouts": [{"services", "soakSec", "staleSec", "onStale", "waves": [{"wave",
    /// "matches", "hosts": [{"host", "service", "phase", ...}]}]}]`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ferry status`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let (url, bucket) = open_bucket(&args.bucket, &config).await?;
    let (status_url, store) = open_status_bucket(&args.status, &config).await?;
    let Some(live) = read_live(&bucket).await? else {
        eprintln!("{url} has no {MANIFEST_KEY} yet; create one with `ferry publish MANIFEST`");
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    let sha256 = manifest_sha256(&live.bytes);
    let reports = read_reports(&store)
        .await
        .with_context(|| format!("reading the hosts' reports in {status_url}"))?;
    let now = chrono::Utc::now();
    let rows = view(&live.manifest, &sha256, &reports, now);
    let rollouts = rollout_views(&live.manifest, &reports, now);
    let converged = all_converged(&rows);
    if args.json {
        let mut doc = serde_json::json!({
            "generation": live.manifest.generation,
            "sha256": sha256,
            "converged": converged,
            "hosts": rows,
        });
        if !rollouts.is_empty() {
            doc["rollouts"] = serde_json::to_value(&rollouts)?;
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("live manifest: generation {}", live.manifest.generation);
        print!("{}", render(&rows));
        if !rollouts.is_empty() {
            print!("\n{}", rollout_view::render(&rollouts));
        }
    }
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

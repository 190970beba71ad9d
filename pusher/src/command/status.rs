//! `ferry status`: what every host did with the live manifest, from the reports the hosts
//! write to the status store (`hosts/<host>.json`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_bucket::{AnyBucket, Bucket, Fetched};
use ferry_schema::host_status::{MAX_REPORT_BYTES, manifest_sha256, parse_report};
use ferry_schema::layout::{HOSTS_PREFIX, MANIFEST_KEY};

use crate::cli::EXIT_FAILED;
use crate::fleet_view::{Read, all_converged, render, view};
use crate::live_manifest::read_live;
use crate::settings::{BucketArgs, StatusBucketArgs, load_config, open_bucket, open_status_bucket};

/// Show, per host, whether it runs the live manifest healthy.
///
/// One line per host the live manifest names and per other host that reports: converged,
/// failing (with each service's state and last message), behind (not applied yet, or
/// refused and why), stale (no report for 3 of its report intervals), silent (never
/// reported), unreadable, or not-named; the generation it applied and when it last reported.
///
/// Exit status: 0 when every host the manifest names is converged, 1 otherwise or when the
/// bucket has no manifest, 2 on other trouble.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub status: StatusBucketArgs,
    /// Print JSON: `{"generation", "sha256", "converged", "hosts": [...]}`.
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
    let rows = view(&live.manifest, &sha256, &reports, chrono::Utc::now());
    let converged = all_converged(&rows);
    if args.json {
        let doc = serde_json::json!({
            "generation": live.manifest.generation,
            "sha256": sha256,
            "converged": converged,
            "hosts": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("live manifest: generation {}", live.manifest.generation);
        print!("{}", render(&rows));
    }
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// Every `hosts/<host>.json` in the status store, parsed or with why it could not be.
async fn read_reports(store: &AnyBucket) -> Result<BTreeMap<String, Read>> {
    let mut reports = BTreeMap::new();
    for object in store.list(HOSTS_PREFIX).await? {
        let Some(host) = object
            .key
            .strip_prefix(HOSTS_PREFIX)
            .and_then(|k| k.strip_suffix(".json"))
            .filter(|h| !h.contains('/'))
        else {
            continue;
        };
        let read = match store.get_bounded(&object.key, None, MAX_REPORT_BYTES).await {
            Ok(Fetched::Found { bytes, .. }) => {
                parse_report(&object.key, host, &bytes).map_err(|e| e.to_string())
            }
            // Deleted between the listing and the read: as if it never reported.
            Ok(Fetched::Missing | Fetched::Unchanged) => continue,
            Err(e) => Err(format!("{}: {e}", object.key)),
        };
        reports.insert(host.to_owned(), read);
    }
    Ok(reports)
}

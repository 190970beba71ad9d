//! `--wait` on `push`, `publish` and `rollback`: after the manifest is written, follow the
//! hosts' reports in the status store until every host it names has answered it (applied
//! it, healthy or not, or refused it), or until the timeout.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_bucket::{AnyBucket, Bucket, BucketUrl};
use ferry_schema::Manifest;
use ferry_schema::host_status::manifest_sha256;
use ferry_schema::layout::HOSTS_PREFIX;

use crate::cli::EXIT_FAILED;
use crate::fleet_reports::read_reports;
use crate::fleet_view::{HostRow, Verdict, all_converged, settled, view};
use crate::live_manifest::read_live;
use crate::settings::{ConfigFile, StatusBucketArgs, open_status_bucket};
use crate::wait_view::WaitView;

/// How often the reports are read again while waiting.
pub const POLL: Duration = Duration::from_secs(2);

/// The `--wait` options.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// After writing the manifest, follow the hosts' reports in the status store (every 2 s;
    /// a live line per host on a terminal, else a line per change) until every host the
    /// manifest names has applied or refused it: exit 0 when all run it healthy, 1 naming
    /// each failed host and service. After TIMEOUT (default 10m; `--wait=90s`) exit 1
    /// naming the hosts that did not answer.
    #[arg(
        long,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "10m",
        value_parser = humantime::parse_duration
    )]
    pub wait: Option<Duration>,
    #[command(flatten)]
    pub status: StatusBucketArgs,
}

/// A status store opened (and reached once) before anything is written, so a `--wait`
/// that could not follow the hosts fails before it publishes.
pub struct Waiter {
    url: BucketUrl,
    store: AnyBucket,
    timeout: Duration,
}

impl Waiter {
    /// `None` without `--wait`; otherwise the store, checked to answer a listing.
    pub async fn prepare(args: &WaitArgs, config: &ConfigFile) -> Result<Option<Waiter>> {
        let Some(timeout) = args.wait else {
            return Ok(None);
        };
        let (url, store) = open_status_bucket(&args.status, config).await?;
        store
            .list(HOSTS_PREFIX)
            .await
            .with_context(|| format!("--wait: reading the hosts' reports in {url}"))?;
        Ok(Some(Waiter {
            url,
            store,
            timeout,
        }))
    }

    /// Follows the reports until every host `manifest` names answered the manifest whose
    /// bytes are `bytes`, printing each host's change on stderr.
    pub async fn follow(&self, manifest: &Manifest, bytes: &[u8]) -> Result<ExitCode> {
        let sha = manifest_sha256(bytes);
        let deadline = Instant::now() + self.timeout;
        let mut shown = WaitView::for_stderr();
        let mut store_error: Option<String> = None;
        eprintln!(
            "waiting up to {} for the hosts of generation {} to report (status store {})",
            humantime::format_duration(self.timeout),
            manifest.generation,
            self.url
        );
        loop {
            let rows = match read_reports(&self.store).await {
                Ok(reports) => {
                    store_error = None;
                    Some(view(manifest, &sha, &reports, chrono::Utc::now()))
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if store_error.as_ref() != Some(&e) {
                        shown.note(&format!("status store {}: {e} (trying again)", self.url));
                    }
                    store_error = Some(e);
                    None
                }
            };
            if let Some(rows) = rows {
                let named: Vec<&HostRow> = rows
                    .iter()
                    .filter(|r| r.verdict != Verdict::NotNamed)
                    .collect();
                for r in &named {
                    shown.show(&r.host, &describe(r));
                }
                if named.iter().all(|r| settled(r)) {
                    shown.finish();
                    return Ok(verdict(manifest, &rows));
                }
                if Instant::now() >= deadline {
                    let waiting: Vec<String> = named
                        .iter()
                        .filter(|r| !settled(r))
                        .map(|r| format!("{} ({})", r.host, describe(r)))
                        .collect();
                    shown.finish();
                    eprintln!(
                        "timed out after {}: no answer to generation {} from {}",
                        humantime::format_duration(self.timeout),
                        manifest.generation,
                        waiting.join(", ")
                    );
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            } else if Instant::now() >= deadline {
                shown.finish();
                eprintln!(
                    "timed out after {}: the status store could not be read",
                    humantime::format_duration(self.timeout)
                );
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// After a verb wrote the manifest (`code` success): with `--wait`, follow the live
/// manifest as it now is in `bucket` (read back, so the digest is of the stored bytes; when
/// another push landed meanwhile, that later manifest is the one the hosts will apply).
/// Otherwise, or when the verb failed, its own exit code.
pub async fn follow_if_waiting(
    waiter: Option<Waiter>,
    bucket: &impl Bucket,
    code: ExitCode,
) -> Result<ExitCode> {
    let Some(waiter) = waiter else {
        return Ok(code);
    };
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    match read_live(bucket).await? {
        Some(live) => waiter.follow(&live.manifest, &live.bytes).await,
        None => {
            eprintln!("--wait: the manifest is gone from the bucket; nothing to wait for");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// `converged`, or the verdict with its problems: `failing: web: rolled-back: …`.
fn describe(r: &HostRow) -> String {
    if r.problems.is_empty() {
        r.verdict.as_str().to_owned()
    } else {
        format!("{}: {}", r.verdict.as_str(), r.problems.join("; "))
    }
}

/// Every named host answered: 0 when all converged, else 1 with the failed ones named.
fn verdict(manifest: &Manifest, rows: &[HostRow]) -> ExitCode {
    if all_converged(rows) {
        let n = rows
            .iter()
            .filter(|r| r.verdict == Verdict::Converged)
            .count();
        eprintln!(
            "generation {} runs healthy on all {n} host(s)",
            manifest.generation
        );
        return ExitCode::SUCCESS;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !matches!(r.verdict, Verdict::Converged | Verdict::NotNamed))
        .map(|r| format!("{} ({})", r.host, describe(r)))
        .collect();
    eprintln!(
        "generation {} failed on {}",
        manifest.generation,
        failed.join(", ")
    );
    ExitCode::from(EXIT_FAILED)
}

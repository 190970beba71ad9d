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
use crate::rollout_view::{RolloutView, rollout_views, summary};
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
                    let now = chrono::Utc::now();
                    Some((
                        view(manifest, &sha, &reports, now),
                        rollout_views(manifest, &reports, now),
                    ))
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
            if let Some((rows, rollouts)) = rows {
                let named: Vec<&HostRow> = rows
                    .iter()
                    .filter(|r| r.verdict != Verdict::NotNamed)
                    .collect();
                for r in &named {
                    shown.show(&r.host, &describe(r, &rollouts));
                }
                if named.iter().all(|r| settled(r)) {
                    shown.finish();
                    return Ok(verdict(manifest, &rows, &rollouts));
                }
                if Instant::now() >= deadline {
                    let waiting = unanswered(&rows, &rollouts);
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

/// `converged`, or the verdict with its problems: `failing: web: rolled-back: …`. A host
/// on its way through a rollout (waiting, soaking, or stale past `staleSec`) says where it
/// stands in the waves instead: `behind: wave 2: web waiting for host-a (soaking until …)`.
pub fn describe(r: &HostRow, rollouts: &[RolloutView]) -> String {
    let waves = matches!(
        r.verdict,
        Verdict::Behind | Verdict::Converged | Verdict::Stale
    )
    .then(|| summary(rollouts, &r.host))
    .flatten();
    match waves {
        Some(waves) => format!("{}: {waves}", r.verdict.as_str()),
        None if r.problems.is_empty() => r.verdict.as_str().to_owned(),
        None => format!("{}: {}", r.verdict.as_str(), r.problems.join("; ")),
    }
}

/// The named hosts that have not answered yet, each with where it stands (the timeout's
/// message).
pub fn unanswered(rows: &[HostRow], rollouts: &[RolloutView]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.verdict != Verdict::NotNamed && !settled(r))
        .map(|r| format!("{} ({})", r.host, describe(r, rollouts)))
        .collect()
}

/// The named hosts that did not converge, each with why (a failed wait's message).
pub fn failures(rows: &[HostRow], rollouts: &[RolloutView]) -> Vec<String> {
    rows.iter()
        .filter(|r| !matches!(r.verdict, Verdict::Converged | Verdict::NotNamed))
        .map(|r| format!("{} ({})", r.host, describe(r, rollouts)))
        .collect()
}

/// Every named host answered: 0 when all converged, else 1 with the failed ones named.
fn verdict(manifest: &Manifest, rows: &[HostRow], rollouts: &[RolloutView]) -> ExitCode {
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
    let failed = failures(rows, rollouts);
    eprintln!(
        "generation {} failed on {}",
        manifest.generation,
        failed.join(", ")
    );
    ExitCode::from(EXIT_FAILED)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleet_view::Read;
    use ferry_schema::host_status::{
        AppliedManifest, HostStatus, LastTick, ServiceState, ServiceStatus, TickOutcome,
    };
    use serde_json::json;

    const V1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
    const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const G2: &str = "2026-12-01T10:00:00Z";

    fn report(host: &str, state: ServiceState, path: &str, message: Option<&str>) -> Read {
        Ok(HostStatus {
            version: 1,
            host: host.to_owned(),
            agent_version: "0.1.0".to_owned(),
            time: "2026-12-01T10:01:10Z".to_owned(),
            every_sec: 60,
            last_tick: LastTick {
                outcome: TickOutcome::Ok,
                exit_code: 0,
                wall_ms: 9,
                phases: BTreeMap::new(),
                message: None,
            },
            manifest: Some(AppliedManifest {
                generation: G2.to_owned(),
                revision: None,
                sha256: "live".to_owned(),
            }),
            services: vec![ServiceStatus {
                name: "web".to_owned(),
                store_path: path.to_owned(),
                state,
                live_port: None,
                since: "2026-12-01T10:01:00Z".to_owned(),
                message: message.map(str::to_owned),
            }],
            quarantined: Vec::new(),
            system: None,
        })
    }

    /// What one poll of `--wait` makes of the reports: the hosts still unanswered (it goes
    /// on while any is) and the failed ones (its exit 1 names them).
    fn poll(reports: &BTreeMap<String, Read>) -> (Vec<String>, Vec<String>) {
        let m: Manifest = serde_json::from_value(json!({
            "version": 1, "generation": G2,
            "services": [{"name": "web", "hosts": ["host-a", "host-b"],
                "artifact": {"type": "nix-closure", "storePath": V2},
                "exec": {"command": "web"}}],
            "rollout": {"waves": [["host-a"], ["host-b"]], "soakSec": 60},
        }))
        .unwrap();
        let now = "2026-12-01T10:01:20Z".parse().unwrap();
        let rows = view(&m, "live", reports, now);
        let rollouts = rollout_views(&m, reports, now);
        (unanswered(&rows, &rollouts), failures(&rows, &rollouts))
    }

    /// `--wait` follows the waves to the end: a later wave waiting for a soaking canary is
    /// no answer (the wait goes on, saying the wave and the soak); a halt is one, a failure
    /// naming the canary.
    #[test]
    fn waiting_waves_keep_the_wait_going_and_a_halt_ends_it_naming_the_host() {
        let reports = BTreeMap::from([
            (
                "host-a".to_owned(),
                report("host-a", ServiceState::Running, V2, None),
            ),
            (
                "host-b".to_owned(),
                report("host-b", ServiceState::Waiting, V1, Some("web: wave 2: …")),
            ),
        ]);
        let (waiting, _) = poll(&reports);
        assert_eq!(
            waiting,
            [
                "host-b (behind: wave 2: web waiting for host-a (soaking until 2026-12-01T10:02:00Z))"
            ]
        );
        let reports = BTreeMap::from([
            (
                "host-a".to_owned(),
                report(
                    "host-a",
                    ServiceState::RolledBack,
                    V1,
                    Some("GET /health: 503"),
                ),
            ),
            (
                "host-b".to_owned(),
                report(
                    "host-b",
                    ServiceState::Halted,
                    V1,
                    Some("web: wave 2: halted, not applying …: host-a reports web rolled-back"),
                ),
            ),
        ]);
        let (waiting, failed) = poll(&reports);
        assert!(waiting.is_empty(), "{waiting:?}");
        assert_eq!(
            failed,
            [
                "host-a (failing: web: rolled-back: GET /health: 503)",
                "host-b (failing: web: halted: web: wave 2: halted, not applying …: host-a reports web rolled-back)",
            ]
        );
    }
}

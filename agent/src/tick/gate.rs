//! Gate step (between the holds and the planner, only for a trusted manifest): the wave
//! gate of the manifest's `rollout`. It asks `wave_gate` which services are gated here;
//! none (no rollout, first wave, nothing new) means no request at all. Otherwise it reads
//! the reports of exactly the hosts of earlier waves those services wait on, each with a
//! conditional GET under the ETag state keeps (a host whose report did not change costs a
//! 304), decides per service, and puts the current version back in `desired` for each
//! service that waits or is halted (or leaves a new one out), like the quarantine's hold.
//! Reads state, the status store and the clock; writes `desired`, state's cached reports
//! and the tick's lines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ferry_bucket::Fetched;
use ferry_schema::Manifest;
use ferry_schema::host_status::parse_report;
use ferry_schema::layout::host_status_key;

use crate::backend::status_store::StatusStore;
use crate::state::{State, WaveReport};
use crate::wave_gate::{self, Decision, Seen};

/// A service the gate kept on its current version this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateHold {
    /// Service name.
    pub name: String,
    /// Waiting or halted (never `Apply`).
    pub decision: Decision,
    /// The store path the manifest asks for.
    pub asked: String,
    /// What keeps running instead, if anything.
    pub keeps: Option<String>,
    /// The tick's line about it (the status report's message too).
    pub line: String,
}

impl GateHold {
    /// Whether an earlier wave reported the version failed.
    pub fn halted(&self) -> bool {
        matches!(self.decision, Decision::Halt { .. })
    }
}

/// What the gate step did.
#[derive(Debug, Default)]
pub struct Gate {
    /// Services kept on their current version.
    pub held: Vec<GateHold>,
    /// Requests made to the status store.
    pub requests: u64,
}

/// Gate `desired` for `host` at `now`. `store`: the status store (`None`: not configured,
/// so no report can be read and every earlier host counts as never reporting).
pub async fn gate<R: StatusStore>(
    store: Option<&R>,
    desired: &mut Manifest,
    host: &str,
    state: &mut State,
    now: DateTime<Utc>,
    lines: &mut Vec<String>,
) -> Gate {
    let gated = wave_gate::gated(desired, host, &state.services);
    let hosts = wave_gate::hosts_to_read(&gated);
    // Only the reports still waited on are kept.
    state.wave_reports.retain(|h, _| hosts.contains(h));
    if gated.is_empty() {
        return Gate::default();
    }
    let before = store.map_or(0, StatusStore::requests);
    let reports = match store {
        Some(store) => read(store, &hosts, state, lines).await,
        None => {
            lines.push(format!(
                "rollout: no status store is configured ([status] in agent.toml), so the reports of {} cannot be read; they count as never reporting",
                hosts.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            BTreeMap::new()
        }
    };
    let requests = store
        .map_or(0, StatusStore::requests)
        .saturating_sub(before);
    let mut held = Vec::new();
    for g in &gated {
        let decision = wave_gate::decide(g, &desired.generation, &reports, now);
        let line = wave_gate::line(g, &decision);
        if let Some(line) = &line {
            lines.push(line.clone());
        }
        if matches!(decision, Decision::Apply { .. }) {
            continue;
        }
        let keeps = state.services.get(&g.name).map(|a| a.service.clone());
        held.push(GateHold {
            name: g.name.clone(),
            decision,
            asked: g.store_path.clone(),
            keeps: keeps.as_ref().map(|k| k.artifact.store_path.clone()),
            line: line.unwrap_or_default(),
        });
        keep_current(desired, &g.name, host, keeps);
    }
    Gate { held, requests }
}

/// Puts the applied version of `name` back in `desired` (on `host`), or leaves the service
/// out when it never ran here.
fn keep_current(
    desired: &mut Manifest,
    name: &str,
    host: &str,
    applied: Option<ferry_schema::manifest::Service>,
) {
    match applied {
        Some(mut previous) => {
            if !previous.hosts.iter().any(|h| h == host) {
                previous.hosts.push(host.to_owned());
            }
            if let Some(s) = desired.services.iter_mut().find(|s| s.name == name) {
                *s = previous;
            }
        }
        None => desired.services.retain(|s| s.name != name),
    }
}

/// Reads the report of each of `hosts`, conditionally on the ETag state keeps. A report
/// that cannot be read now is judged from the one read before (its time says how old).
async fn read<R: StatusStore>(
    store: &R,
    hosts: &std::collections::BTreeSet<String>,
    state: &mut State,
    lines: &mut Vec<String>,
) -> BTreeMap<String, Seen> {
    let reads = hosts.iter().map(|host| {
        let key = host_status_key(host);
        let etag = state.wave_reports.get(host).and_then(|r| r.etag.clone());
        async move {
            let got = store.get(&key, etag.as_deref()).await;
            (host.clone(), key, got)
        }
    });
    let mut seen = BTreeMap::new();
    for (host, key, got) in futures_util::future::join_all(reads).await {
        match got {
            Ok(Fetched::Unchanged) => {}
            Ok(Fetched::Found { bytes, etag }) => match parse_report(&key, &host, &bytes) {
                Ok(report) => {
                    state
                        .wave_reports
                        .insert(host.clone(), WaveReport { etag, report });
                }
                Err(e) => {
                    lines.push(format!("rollout: {e}; it counts as no report"));
                    state.wave_reports.remove(&host);
                }
            },
            Ok(Fetched::Missing) => {
                state.wave_reports.remove(&host);
            }
            Err(e) => lines.push(format!(
                "rollout: cannot read {key} from the status store: {e}; judging from the report read before, if any"
            )),
        }
        let report = state.wave_reports.get(&host).map(|r| r.report.clone());
        seen.insert(host, report);
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_bucket::BucketUrl;
    use serde_json::json;

    use super::*;
    use crate::backend::status_store::StatusBucket;
    use crate::config::Status;
    use crate::state::Applied;

    const V1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
    const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const G2: &str = "2026-12-01T10:00:00Z";

    fn manifest(rollout: serde_json::Value) -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "generation": G2,
            "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": V2},
                          "hosts": ["a", "b"], "exec": {"command": "web"}}],
            "rollout": rollout,
        }))
        .unwrap()
    }

    fn state_running_v1() -> State {
        let mut s = manifest(serde_json::Value::Null).services.remove(0);
        s.artifact.store_path = V1.into();
        let mut state = State::default();
        state.services.insert(
            "web".into(),
            Applied {
                service: s,
                applied_at: "2026-12-01T09:00:00Z".into(),
                live_port: None,
            },
        );
        state
    }

    fn report_of_a(state: &str, path: &str, since: &str, time: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "version": 1, "host": "a", "agentVersion": "0.1.0", "time": time, "everySec": 300,
            "lastTick": {"outcome": "ok", "exitCode": 0, "wallMs": 5},
            "manifest": {"generation": G2, "sha256": "ab"},
            "services": [{"name": "web", "storePath": path, "state": state, "since": since}],
        }))
        .unwrap()
    }

    async fn store(dir: &std::path::Path) -> StatusBucket {
        let url = BucketUrl::parse(&format!("file://{}", dir.display())).unwrap();
        StatusBucket::open(&url, &Status::default(), Duration::from_secs(5)).await
    }

    fn now(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    /// Without a rollout the gate asks the status store nothing at all.
    #[tokio::test]
    async fn no_rollout_no_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let mut desired = manifest(serde_json::Value::Null);
        let mut state = state_running_v1();
        let mut lines = Vec::new();
        let g = gate(
            Some(&store),
            &mut desired,
            "b",
            &mut state,
            now(G2),
            &mut lines,
        )
        .await;
        assert!(g.held.is_empty() && lines.is_empty());
        assert_eq!((g.requests, store.requests()), (0, 0));
        assert_eq!(desired.services[0].artifact.store_path, V2);
    }

    async fn tick(
        store: &StatusBucket,
        waves: &serde_json::Value,
        state: &mut State,
        at: &str,
    ) -> (Gate, Manifest, Vec<String>) {
        let mut desired = manifest(waves.clone());
        let mut lines = Vec::new();
        let g = gate(Some(store), &mut desired, "b", state, now(at), &mut lines).await;
        (g, desired, lines)
    }

    /// A later wave keeps its version while the first has not reported, reads only that
    /// host's report, conditionally once it has one, applies once it is soaked, and halts
    /// on a rollback there.
    #[tokio::test]
    async fn a_later_wave_waits_reads_conditionally_applies_and_halts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let waves = json!({"waves": [["a"], ["b"]], "soakSec": 60});
        let mut state = state_running_v1();
        // No report from a yet: wait, keep V1.
        let (g, desired, lines) = tick(&store, &waves, &mut state, "2026-12-01T10:00:30Z").await;
        assert_eq!(g.requests, 1);
        assert_eq!(desired.services[0].artifact.store_path, V1);
        assert!(!g.held[0].halted());
        assert_eq!(
            lines,
            [format!(
                "web: wave 2: waiting before {V2}: a no report (rollout.soakSec = 60, onStale = wait)"
            )]
        );
        // a reports V2 healthy 10 s in: soaking; read whole once, then a 304.
        std::fs::create_dir_all(dir.path().join("hosts")).unwrap();
        std::fs::write(
            dir.path().join("hosts/a.json"),
            report_of_a(
                "running",
                V2,
                "2026-12-01T10:01:00Z",
                "2026-12-01T10:01:10Z",
            ),
        )
        .unwrap();
        let (g, desired, lines) = tick(&store, &waves, &mut state, "2026-12-01T10:01:20Z").await;
        assert_eq!(desired.services[0].artifact.store_path, V1);
        assert!(
            lines[0].contains("soaking until 2026-12-01T10:02:00Z"),
            "{lines:?}"
        );
        assert!(state.wave_reports["a"].etag.is_some());
        let before = store.requests();
        let (g2, _, lines2) = tick(&store, &waves, &mut state, "2026-12-01T10:01:40Z").await;
        assert_eq!((g.requests, g2.requests), (1, 1));
        assert_eq!(store.requests() - before, 1);
        assert_eq!(lines2, lines, "a 304 judges from the report read before");
        // Its report after the soak: apply V2, and nothing is kept of a's report.
        std::fs::write(
            dir.path().join("hosts/a.json"),
            report_of_a(
                "running",
                V2,
                "2026-12-01T10:01:00Z",
                "2026-12-01T10:02:01Z",
            ),
        )
        .unwrap();
        let (g, desired, lines) = tick(&store, &waves, &mut state, "2026-12-01T10:02:05Z").await;
        assert!(g.held.is_empty() && lines.is_empty(), "{lines:?}");
        assert_eq!(desired.services[0].artifact.store_path, V2);
        // Rolled back there instead: halted, naming a.
        std::fs::write(
            dir.path().join("hosts/a.json"),
            report_of_a(
                "rolled-back",
                V1,
                "2026-12-01T10:01:00Z",
                "2026-12-01T10:01:01Z",
            ),
        )
        .unwrap();
        let (g, desired, lines) = tick(&store, &waves, &mut state, "2026-12-01T10:02:05Z").await;
        assert!(g.held[0].halted());
        assert_eq!(g.held[0].keeps.as_deref(), Some(V1));
        assert_eq!(desired.services[0].artifact.store_path, V1);
        assert!(
            lines[0].contains("halted, not applying")
                && lines[0].contains("a reports web rolled-back"),
            "{lines:?}"
        );
    }

    /// No status store: the earlier waves never report; onStale decides after staleSec.
    #[tokio::test]
    async fn without_a_status_store_the_earlier_waves_are_never_heard() {
        let skip = json!({"waves": [["a"], ["b"]], "staleSec": 60, "onStale": "skip"});
        let mut state = state_running_v1();
        let mut desired = manifest(skip.clone());
        let mut lines = Vec::new();
        let none: Option<&StatusBucket> = None;
        let g = gate(
            none,
            &mut desired,
            "b",
            &mut state,
            now("2026-12-01T10:00:30Z"),
            &mut lines,
        )
        .await;
        assert_eq!(g.held.len(), 1);
        assert!(
            lines[0].contains("no status store is configured"),
            "{lines:?}"
        );
        let mut desired = manifest(skip);
        let mut lines = Vec::new();
        let g = gate(
            none,
            &mut desired,
            "b",
            &mut state,
            now("2026-12-01T10:01:01Z"),
            &mut lines,
        )
        .await;
        assert!(g.held.is_empty());
        assert_eq!(desired.services[0].artifact.store_path, V2);
        assert!(
            lines[1].contains("left out a (rollout.onStale = skip)"),
            "{lines:?}"
        );
    }
}

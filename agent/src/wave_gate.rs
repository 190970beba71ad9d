//! Health-gated waves (`rollout` in the manifest), decided by each host for itself from the
//! reports of the hosts before it: no coordinator. A service is *gated* on this host when
//! the manifest asks for another version of it (store path or unit) than the one applied
//! here, it has a rollout, and some host of an earlier wave runs it. A gated service is
//! applied only when every such host has applied the same generation and reports the
//! service running that store path, healthy for `soakSec` by its own report's clock; it is
//! halted when one of them reports it failed, rolled back, quarantined, refused, halted or
//! running another store path; otherwise it waits. A host that does not answer within
//! `staleSec` (no report, or its last one and the generation both older) holds the wave
//! (`onStale: wait`) or is left out (`skip`).
//!
//! Pure: the manifest, what this host applied, the reports (as read by the gate step) and
//! the time in; a decision per service out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ferry_schema::Manifest;
use ferry_schema::host_status::{HostStatus, ServiceState};
use ferry_schema::manifest::{OnStale, Rollout, Service};
pub use ferry_schema::wave_standing::Standing;
use ferry_schema::wave_standing::{self, Asked, parse};

use crate::health::quarantine::unit_digest;
use crate::state::{Applied, ServiceStatusRecord};

/// A service whose new version waits on hosts of earlier waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gated {
    /// The service.
    pub name: String,
    /// The store path the manifest asks for.
    pub store_path: String,
    /// The rollout that applies to it (its own, or the manifest's).
    pub rollout: Rollout,
    /// This host's wave (0-based; a host no wave matches comes after all of them).
    pub wave: usize,
    /// The hosts of earlier waves that run the service, by wave then name.
    pub earlier: Vec<(usize, String)>,
}

/// The services of `desired` that are gated on `host`, in manifest order. Empty when the
/// manifest has no rollout or nothing changes here: then no report is read.
pub fn gated(desired: &Manifest, host: &str, applied: &BTreeMap<String, Applied>) -> Vec<Gated> {
    let mut out = Vec::new();
    for s in desired
        .services
        .iter()
        .filter(|s| s.hosts.iter().any(|h| h == host))
    {
        let Some(rollout) = s.rollout.as_ref().or(desired.rollout.as_ref()) else {
            continue;
        };
        if applied
            .get(&s.name)
            .is_some_and(|a| same_version(&a.service, s))
        {
            continue;
        }
        let wave_of = |h: &str| rollout.wave_of(h).unwrap_or(rollout.waves.len());
        let wave = wave_of(host);
        let mut earlier: Vec<(usize, String)> = s
            .hosts
            .iter()
            .filter(|h| *h != host)
            .map(|h| (wave_of(h), h.clone()))
            .filter(|(w, _)| *w < wave)
            .collect();
        earlier.sort();
        earlier.dedup();
        if earlier.is_empty() {
            continue;
        }
        out.push(Gated {
            name: s.name.clone(),
            store_path: s.artifact.store_path.clone(),
            rollout: rollout.clone(),
            wave,
            earlier,
        });
    }
    out
}

/// Whether two manifest entries are the same version: the same store path rendered into
/// the same unit (what the quarantine calls a version too).
fn same_version(a: &Service, b: &Service) -> bool {
    a.artifact.store_path == b.artifact.store_path && unit_digest(a) == unit_digest(b)
}

/// The hosts whose reports the gate needs this tick.
pub fn hosts_to_read(gated: &[Gated]) -> BTreeSet<String> {
    gated
        .iter()
        .flat_map(|g| g.earlier.iter().map(|(_, h)| h.clone()))
        .collect()
}

/// What the gate knows of one host: its last report, if one could ever be read.
pub type Seen = Option<HostStatus>;

/// What the gate decided for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every host before this one is done (or, with `onStale: skip`, stale): apply.
    Apply {
        /// Hosts left out as stale (`onStale: skip`).
        skipped: Vec<String>,
    },
    /// Keep the current version; the hosts still waited on, with where they stand.
    Wait(Vec<(String, Standing)>),
    /// Keep the current version: `host` reported it failed.
    Halt {
        /// The host of an earlier wave.
        host: String,
        /// Its state for the service.
        state: ServiceState,
        /// What it said.
        message: String,
    },
}

/// Decides one gated service from the reports of its earlier hosts, for manifest
/// `generation` at `now`.
pub fn decide(
    g: &Gated,
    generation: &str,
    reports: &BTreeMap<String, Seen>,
    now: DateTime<Utc>,
) -> Decision {
    let mut waiting = Vec::new();
    let mut skipped = Vec::new();
    for (_, host) in &g.earlier {
        let seen = reports.get(host).and_then(Option::as_ref);
        match standing(g, generation, seen, now) {
            Standing::Done => {}
            Standing::Failed { state, message } => {
                return Decision::Halt {
                    host: host.clone(),
                    state,
                    message,
                };
            }
            Standing::Stale(_) if g.rollout.on_stale() == OnStale::Skip => {
                skipped.push(host.clone());
            }
            other => waiting.push((host.clone(), other)),
        }
    }
    if waiting.is_empty() {
        Decision::Apply { skipped }
    } else {
        Decision::Wait(waiting)
    }
}

/// Where `seen` (a host of an earlier wave) stands for `g` (the schema's one definition,
/// which `ferry status` shows too).
pub fn standing(
    g: &Gated,
    generation: &str,
    seen: Option<&HostStatus>,
    now: DateTime<Utc>,
) -> Standing {
    let asked = Asked {
        service: &g.name,
        store_path: &g.store_path,
        rollout: &g.rollout,
        generation,
    };
    wave_standing::standing(asked, seen, now)
}

/// The tick's line for a service the gate held, or that it let through past stale hosts
/// (`None`: applied with nothing to say). Never depends on the time, so a tick that waits
/// like the one before it says the same (and the report is not rewritten).
pub fn line(g: &Gated, d: &Decision) -> Option<String> {
    match d {
        Decision::Apply { skipped } if skipped.is_empty() => None,
        Decision::Apply { skipped } => Some(format!(
            "{}: wave {}: applying {}; left out {} (rollout.onStale = skip)",
            g.name,
            g.wave + 1,
            g.store_path,
            skipped.join(", ")
        )),
        Decision::Wait(on) => Some(format!(
            "{}: wave {}: waiting before {}: {} (rollout.soakSec = {}, onStale = {})",
            g.name,
            g.wave + 1,
            g.store_path,
            on.iter()
                .map(|(h, s)| format!("{h} {}", s.describe()))
                .collect::<Vec<_>>()
                .join("; "),
            g.rollout.soak_sec(),
            g.rollout.on_stale().as_str(),
        )),
        Decision::Halt {
            host,
            state,
            message,
        } => Some(format!(
            "{}: wave {}: halted, not applying {}: {host} reports {} {}{}; a new generation (a fix, or `ferry rollback`) starts the waves again",
            g.name,
            g.wave + 1,
            g.store_path,
            g.name,
            state.as_str(),
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        )),
    }
}

/// When a host that runs `name` healthy since `since` should report again so the hosts of
/// later waves see its soak end: `since` + the service's `soakSec`, when the manifest gives
/// it a rollout.
pub fn soak_end(manifest: &Manifest, name: &str, since: &str) -> Option<DateTime<Utc>> {
    let s = manifest.services.iter().find(|s| s.name == name)?;
    let rollout = s.rollout.as_ref().or(manifest.rollout.as_ref())?;
    Some(parse(since)? + chrono::Duration::seconds(i64::from(rollout.soak_sec())))
}

/// Whether a service's soak ended since the last report (`reported_at`) and by `now`: the
/// host reports then even on a quiet tick, so the hosts of later waves see the soak over
/// without waiting for `status.everySec`.
pub fn soak_ended(
    manifest: &Manifest,
    records: &BTreeMap<String, ServiceStatusRecord>,
    reported_at: Option<&str>,
    now: DateTime<Utc>,
) -> bool {
    let last = reported_at.and_then(parse);
    records.iter().any(|(name, r)| {
        r.state == ServiceState::Running
            && soak_end(manifest, name, &r.since)
                .is_some_and(|end| end <= now && last.is_none_or(|l| l < end))
    })
}

/// How often, at most, a host with a service waiting for earlier waves must report: half
/// the smallest `staleSec` of those services' rollouts. A waiting host changes nothing, so
/// without this it would report only every `status.everySec`, and with `staleSec` below that
/// the later waves would judge it stale and, under `onStale = "skip"`, go on without it
/// before it ever ran the version. `None`: nothing waits.
pub fn waiting_refresh_sec(
    manifest: &Manifest,
    records: &BTreeMap<String, ServiceStatusRecord>,
) -> Option<u64> {
    records
        .iter()
        .filter(|(_, r)| r.state == ServiceState::Waiting)
        .filter_map(|(name, _)| {
            let s = manifest.services.iter().find(|s| &s.name == name)?;
            let rollout = s.rollout.as_ref().or(manifest.rollout.as_ref())?;
            Some((u64::from(rollout.stale_sec()) / 2).max(1))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::host_status::{
        AppliedManifest, HOST_STATUS_VERSION, LastTick, ServiceStatus, TickOutcome,
    };
    use serde_json::json;

    const V1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
    const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const G1: &str = "2026-12-01T09:00:00Z";
    const G2: &str = "2026-12-01T10:00:00Z";

    fn t(s: &str) -> DateTime<Utc> {
        parse(s).unwrap()
    }

    fn manifest(path: &str, rollout: serde_json::Value) -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "generation": G2,
            "services": [
                {"name": "web", "artifact": {"type": "nix-closure", "storePath": path},
                 "hosts": ["a", "b", "c"], "exec": {"command": "web"}},
                {"name": "db", "artifact": {"type": "nix-closure", "storePath": V1},
                 "hosts": ["b"], "exec": {"command": "db"}}
            ],
            "rollout": rollout,
        }))
        .unwrap()
    }

    fn applied(m: &Manifest, name: &str, path: &str) -> (String, Applied) {
        let mut s = m.services.iter().find(|s| s.name == name).unwrap().clone();
        s.artifact.store_path = path.to_owned();
        (
            name.to_owned(),
            Applied {
                service: s,
                applied_at: G1.into(),
                live_port: None,
            },
        )
    }

    fn report(
        host: &str,
        time: &str,
        generation: &str,
        state: ServiceState,
        path: &str,
        since: &str,
    ) -> HostStatus {
        HostStatus {
            version: HOST_STATUS_VERSION,
            host: host.into(),
            agent_version: "0.1.0".into(),
            time: time.into(),
            every_sec: 300,
            last_tick: LastTick {
                outcome: TickOutcome::Ok,
                exit_code: 0,
                wall_ms: 1,
                phases: BTreeMap::new(),
                message: None,
            },
            manifest: Some(AppliedManifest {
                generation: generation.into(),
                revision: None,
                sha256: "ab".into(),
            }),
            services: vec![ServiceStatus {
                name: "web".into(),
                store_path: path.into(),
                state,
                live_port: None,
                since: since.into(),
                message: (state != ServiceState::Running).then(|| "GET /health: 503".into()),
            }],
            quarantined: Vec::new(),
            system: None,
        }
    }

    fn waves() -> serde_json::Value {
        json!({"waves": [["a"], ["*"]], "soakSec": 60})
    }

    fn gate_for(host: &str, m: &Manifest, on: &[(String, Applied)]) -> Vec<Gated> {
        gated(m, host, &on.iter().cloned().collect())
    }

    #[test]
    fn no_rollout_first_wave_or_no_change_gates_nothing() {
        let plain = manifest(V2, serde_json::Value::Null);
        let m = manifest(V2, waves());
        let old = [applied(&m, "web", V1), applied(&m, "db", V1)];
        assert!(gate_for("b", &plain, &old).is_empty(), "no rollout");
        assert!(gate_for("a", &m, &old).is_empty(), "a is the first wave");
        let now = [applied(&m, "web", V2), applied(&m, "db", V1)];
        assert!(gate_for("b", &m, &now).is_empty(), "b already runs it");
        let g = gate_for("b", &m, &old);
        assert_eq!(g.len(), 1, "db runs on b alone: nothing before it");
        assert_eq!(
            (g[0].name.as_str(), g[0].wave, g[0].earlier.clone()),
            ("web", 1, vec![(0, "a".to_owned())])
        );
        assert_eq!(hosts_to_read(&g), BTreeSet::from(["a".to_owned()]));
        // A new service (nothing applied) is gated too; a service's own rollout wins.
        assert_eq!(gate_for("c", &m, &[]).len(), 1);
        let mut own = m.clone();
        own.services[0].rollout = serde_json::from_value(json!({"waves": [["*"]]})).unwrap();
        assert!(gate_for("b", &own, &old).is_empty(), "opted out");
        // A configuration change of the same store path is a new version as well.
        let mut env = m.clone();
        env.services[0].artifact.store_path = V1.into();
        env.services[0].env.insert("MODE".into(), "fast".into());
        assert_eq!(gate_for("b", &env, &old).len(), 1);
    }

    fn decide_at(now: &str, a: Option<HostStatus>, rollout: serde_json::Value) -> Decision {
        let m = manifest(V2, rollout);
        let g = gate_for("b", &m, &[applied(&m, "web", V1)]);
        let reports = BTreeMap::from([("a".to_owned(), a)]);
        decide(&g[0], G2, &reports, t(now))
    }

    #[test]
    fn a_later_wave_applies_once_the_earlier_reports_soaked() {
        let healthy_at = "2026-12-01T10:01:00Z";
        // Reported healthy 30 s in: soaking, with when it ends.
        let r = report(
            "a",
            "2026-12-01T10:01:30Z",
            G2,
            ServiceState::Running,
            V2,
            healthy_at,
        );
        let d = decide_at("2026-12-01T10:01:40Z", Some(r), waves());
        assert_eq!(
            d,
            Decision::Wait(vec![(
                "a".into(),
                Standing::Soaking {
                    since: healthy_at.into(),
                    until: "2026-12-01T10:02:00Z".into()
                }
            )])
        );
        // Past the soak by the clock, but no report says it lasted: still soaking.
        let r = report(
            "a",
            "2026-12-01T10:01:30Z",
            G2,
            ServiceState::Running,
            V2,
            healthy_at,
        );
        assert!(matches!(
            decide_at("2026-12-01T10:05:00Z", Some(r), waves()),
            Decision::Wait(_)
        ));
        // A report written after the soak: apply.
        let r = report(
            "a",
            "2026-12-01T10:02:00Z",
            G2,
            ServiceState::Running,
            V2,
            healthy_at,
        );
        assert_eq!(
            decide_at("2026-12-01T10:02:05Z", Some(r), waves()),
            Decision::Apply { skipped: vec![] }
        );
    }

    #[test]
    fn an_earlier_failure_halts_naming_the_host() {
        for state in [
            ServiceState::RolledBack,
            ServiceState::Failed,
            ServiceState::Quarantined,
            ServiceState::Halted,
        ] {
            let r = report("a", "2026-12-01T10:01:00Z", G2, state, V1, G2);
            let d = decide_at("2026-12-01T10:01:05Z", Some(r), waves());
            assert_eq!(
                d,
                Decision::Halt {
                    host: "a".into(),
                    state,
                    message: "GET /health: 503".into()
                }
            );
        }
        // Running another store path than the manifest's (a rollback hold): halted too.
        let r = report(
            "a",
            "2026-12-01T10:01:00Z",
            G2,
            ServiceState::Running,
            V1,
            G1,
        );
        assert!(matches!(
            decide_at("2026-12-01T10:01:05Z", Some(r), waves()),
            Decision::Halt { .. }
        ));
        // A failure under an older generation is not this one's: wait.
        let r = report(
            "a",
            "2026-12-01T09:30:00Z",
            G1,
            ServiceState::RolledBack,
            V1,
            G1,
        );
        let d = decide_at("2026-12-01T10:01:00Z", Some(r), waves());
        let Decision::Wait(on) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            on[0].1,
            Standing::Behind(format!("has not applied generation {G2} yet (runs {G1})"))
        );
        let m = manifest(V2, waves());
        let g = &gate_for("b", &m, &[applied(&m, "web", V1)])[0];
        let halt = decide_at(
            "2026-12-01T10:01:05Z",
            Some(report(
                "a",
                "2026-12-01T10:01:00Z",
                G2,
                ServiceState::RolledBack,
                V1,
                G2,
            )),
            waves(),
        );
        assert_eq!(
            line(g, &halt).unwrap(),
            format!(
                "web: wave 2: halted, not applying {V2}: a reports web rolled-back (GET /health: 503); a new generation (a fix, or `ferry rollback`) starts the waves again"
            )
        );
    }

    #[test]
    fn a_silent_host_holds_until_stale_then_on_stale_decides() {
        let wait = json!({"waves": [["a"], ["*"]], "staleSec": 120});
        let skip = json!({"waves": [["a"], ["*"]], "staleSec": 120, "onStale": "skip"});
        // No report at all: the generation's age counts.
        let d = decide_at("2026-12-01T10:01:00Z", None, wait.clone());
        assert_eq!(
            d,
            Decision::Wait(vec![("a".into(), Standing::Behind("no report".into()))])
        );
        let d = decide_at("2026-12-01T10:02:01Z", None, wait.clone());
        assert!(
            matches!(&d, Decision::Wait(on) if matches!(&on[0].1, Standing::Stale(w) if w == "no report; nothing since 2026-12-01T10:00:00Z, over rollout.staleSec (120 s)")),
            "{d:?}"
        );
        assert_eq!(
            decide_at("2026-12-01T10:02:01Z", None, skip.clone()),
            Decision::Apply {
                skipped: vec!["a".into()]
            }
        );
        // A host that reported long ago but not since the push: the push's age counts.
        let old = report(
            "a",
            "2026-12-01T08:00:00Z",
            G1,
            ServiceState::Running,
            V1,
            G1,
        );
        assert!(matches!(
            decide_at("2026-12-01T10:01:00Z", Some(old.clone()), skip.clone()),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide_at("2026-12-01T10:03:00Z", Some(old), skip.clone()),
            Decision::Apply { .. }
        ));
        // A failure is never skipped, stale or not.
        let failed = report(
            "a",
            "2026-12-01T10:00:30Z",
            G2,
            ServiceState::RolledBack,
            V1,
            G2,
        );
        assert!(matches!(
            decide_at("2026-12-01T11:00:00Z", Some(failed), skip),
            Decision::Halt { .. }
        ));
    }

    #[test]
    fn lines_never_depend_on_the_clock_and_name_whom() {
        let m = manifest(V2, waves());
        let g = &gate_for("b", &m, &[applied(&m, "web", V1)])[0];
        let at = |now: &str| line(g, &decide_at(now, None, waves())).unwrap();
        assert_eq!(at("2026-12-01T10:00:10Z"), at("2026-12-01T10:00:50Z"));
        assert_eq!(
            at("2026-12-01T10:00:10Z"),
            format!(
                "web: wave 2: waiting before {V2}: a no report (rollout.soakSec = 60, onStale = wait)"
            )
        );
        assert_eq!(
            soak_end(&m, "web", "2026-12-01T10:01:00Z"),
            Some(t("2026-12-01T10:02:00Z"))
        );
        assert_eq!(
            soak_end(&manifest(V2, serde_json::Value::Null), "web", G2),
            None
        );
    }

    #[test]
    fn a_host_reports_again_when_a_soak_ends() {
        let m = manifest(V2, waves());
        let records = BTreeMap::from([(
            "web".to_owned(),
            ServiceStatusRecord {
                state: ServiceState::Running,
                store_path: V2.into(),
                since: "2026-12-01T10:01:00Z".into(),
                message: None,
            },
        )]);
        let reported = Some("2026-12-01T10:01:02Z");
        assert!(!soak_ended(
            &m,
            &records,
            reported,
            t("2026-12-01T10:01:59Z")
        ));
        assert!(soak_ended(
            &m,
            &records,
            reported,
            t("2026-12-01T10:02:00Z")
        ));
        // Once reported after it, no more.
        assert!(!soak_ended(
            &m,
            &records,
            Some("2026-12-01T10:02:01Z"),
            t("2026-12-01T10:09:00Z")
        ));
        // Without a rollout there is no soak to tell.
        let plain = manifest(V2, serde_json::Value::Null);
        assert!(!soak_ended(
            &plain,
            &records,
            reported,
            t("2026-12-01T10:09:00Z")
        ));
    }

    /// A waiting host reports at least every half `staleSec`, so with `staleSec` below the
    /// hosts' `everySec` the later waves never take it for stale (and, with `onStale =
    /// "skip"`, go on past it) while it only waits.
    #[test]
    fn a_waiting_host_reports_within_half_stale_sec() {
        let record = |state| {
            BTreeMap::from([(
                "web".to_owned(),
                ServiceStatusRecord {
                    state,
                    store_path: V1.into(),
                    since: G2.into(),
                    message: None,
                },
            )])
        };
        let m = manifest(
            V2,
            json!({"waves": [["a"], ["*"]], "soakSec": 60, "staleSec": 40, "onStale": "skip"}),
        );
        let waiting = record(ServiceState::Waiting);
        assert_eq!(waiting_refresh_sec(&m, &waiting), Some(20));
        assert_eq!(
            waiting_refresh_sec(&m, &record(ServiceState::Running)),
            None
        );
        assert_eq!(
            waiting_refresh_sec(&manifest(V2, serde_json::Value::Null), &waiting),
            None
        );
        // With everySec = 300, the report step's interval: due 20 s after the last report,
        // not 300 (the bug: 300 s of silence, stale after 40).
        let every = waiting_refresh_sec(&m, &waiting).map_or(300, |r| r.min(300));
        let last = Some("2026-12-01T10:00:00Z");
        assert!(!crate::host_report::due(
            false,
            last,
            false,
            t("2026-12-01T10:00:19Z"),
            every
        ));
        assert!(crate::host_report::due(
            false,
            last,
            false,
            t("2026-12-01T10:00:20Z"),
            every
        ));
    }
}

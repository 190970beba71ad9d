//! The host status report (`ferry_schema::host_status`, v1) from what the agent remembers:
//! where each service stands (updated by the record step from what the tick did to it, kept
//! across ticks for since when and the last message), the manifest applied and its digest,
//! the quarantine, and the tick's summary. Also when a report is due. Pure: values in,
//! values out; the report step (`tick/report.rs`) writes it.
//!
//! Nothing secret goes in: services appear by name, store path, state and the agent's own
//! messages, never their environment or env files.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ferry_schema::host_status::{
    AppliedManifest, FailedSystem, HOST_STATUS_VERSION, HostStatus, LastTick, ServiceState,
    ServiceStatus, SystemStatus, TickOutcome,
};

use crate::state::{Outcome, ServiceStatusRecord, State};
use crate::system_deploy::SystemRecord;
use crate::tick::summary::TickSummary;

/// What a tick did to one service, as the record step tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    /// Service name.
    pub name: String,
    /// What happened.
    pub event: Event,
    /// The store path it runs now (for a refused, pending or failed new service: the one
    /// the manifest asked for).
    pub store_path: String,
    /// What the agent said about it (`None`: nothing new).
    pub message: Option<String>,
}

/// What a tick did to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Runs healthy.
    Running,
    /// Runs healthy, started or restarted by this tick: a new running period, so `since`
    /// starts again even when the store path is the same (a configuration change), which
    /// the waves' soak is measured from.
    Restarted,
    /// Its new version failed and the previous one runs again.
    RolledBack,
    /// It failed with nothing to put back (or its removal failed).
    Failed,
    /// The manifest's version is quarantined here and was held back.
    Held,
    /// The host policy refused the manifest's version.
    Refused,
    /// Not applied yet: a dependency failed, the tick ran out of time, or the state could
    /// not be saved first.
    Pending,
    /// Kept on its current version until the earlier waves report the new one healthy.
    Waiting,
    /// Kept on its current version: an earlier wave reported the new one failed.
    Halted,
    /// Removed from the host.
    Removed,
}

/// Brings each service's record up to date with what a tick did to it. A record in the
/// same state about the same store path keeps its `since` (and its message when the tick
/// said nothing new). A held-back version keeps the record of the failure that quarantined
/// it (its message is the health failure). `trusted`: the tick applied a trusted manifest,
/// so a service it did not mention is gone; without one (bucket unreachable, manifest
/// refused) the tick only brought back what state records, which says nothing new about a
/// service that failed or was refused earlier, so running ones keep their record.
pub fn update(
    records: &mut BTreeMap<String, ServiceStatusRecord>,
    events: Vec<ServiceEvent>,
    at: &str,
    trusted: bool,
) {
    let mentioned: BTreeSet<String> = events.iter().map(|e| e.name.clone()).collect();
    for e in events {
        let name = e.name.clone();
        let prev = records.remove(&name);
        if let Some(next) = next(prev, e, at, trusted) {
            records.insert(name, next);
        }
    }
    if trusted {
        records.retain(|name, _| mentioned.contains(name));
    }
}

fn next(
    prev: Option<ServiceStatusRecord>,
    e: ServiceEvent,
    at: &str,
    trusted: bool,
) -> Option<ServiceStatusRecord> {
    let state = match e.event {
        Event::Removed => return None,
        Event::Running | Event::Restarted if !trusted && prev.is_some() => return prev,
        Event::Held
            if prev.as_ref().is_some_and(|p| {
                matches!(p.state, ServiceState::RolledBack | ServiceState::Failed)
            }) =>
        {
            return prev;
        }
        Event::Restarted => {
            return Some(ServiceStatusRecord {
                state: ServiceState::Running,
                store_path: e.store_path,
                since: at.to_owned(),
                message: e.message,
            });
        }
        Event::Running => ServiceState::Running,
        Event::RolledBack => ServiceState::RolledBack,
        Event::Failed => ServiceState::Failed,
        Event::Held => ServiceState::Quarantined,
        Event::Refused => ServiceState::Refused,
        Event::Pending => ServiceState::Pending,
        Event::Waiting => ServiceState::Waiting,
        Event::Halted => ServiceState::Halted,
    };
    Some(match prev {
        Some(p) if p.state == state && p.store_path == e.store_path => ServiceStatusRecord {
            message: e.message.or(p.message),
            ..p
        },
        _ => ServiceStatusRecord {
            state,
            store_path: e.store_path,
            since: at.to_owned(),
            message: e.message,
        },
    })
}

/// Whether the report step writes a report after this tick: after every tick that changed
/// or failed something, when the last write failed, and otherwise once `every_sec` has
/// passed since the last report (or the clock went back past it).
pub fn due(
    eventful: bool,
    reported_at: Option<&str>,
    owed: bool,
    now: DateTime<Utc>,
    every_sec: u64,
) -> bool {
    if eventful || owed {
        return true;
    }
    let Some(last) = reported_at.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return true;
    };
    let age = (now - last.with_timezone(&Utc)).num_seconds();
    age < 0 || u64::try_from(age).unwrap_or(0) >= every_sec
}

/// Who writes the report and how often, besides what state and the tick say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter<'a> {
    /// The host's name (`hostName`).
    pub host: &'a str,
    /// `ferry-agent --version`.
    pub agent_version: &'a str,
    /// `status.everySec`.
    pub every_sec: u64,
    /// The report's time, RFC 3339 UTC.
    pub now: &'a str,
    /// agent.toml's `system.enable`.
    pub system_enabled: bool,
}

/// The report after a tick: the tick's summary, the manifest state records as applied
/// (with its digest; left out while the digest is unknown), every service's record, and
/// the quarantined store paths.
pub fn build(state: &State, summary: &TickSummary, who: &Reporter<'_>) -> HostStatus {
    let manifest = match (&state.manifest, &state.manifest_sha256) {
        (Some(m), Some(sha256)) => Some(AppliedManifest {
            generation: m.generation.clone(),
            revision: revision(m, who.host),
            sha256: sha256.clone(),
        }),
        _ => None,
    };
    let services = state
        .service_status
        .iter()
        .map(|(name, r)| ServiceStatus {
            name: name.clone(),
            store_path: r.store_path.clone(),
            state: r.state,
            live_port: state.services.get(name).and_then(|a| a.live_port),
            since: r.since.clone(),
            message: r.message.clone(),
        })
        .collect();
    let quarantined: BTreeSet<String> = state
        .quarantine
        .values()
        .map(|q| q.store_path.clone())
        .collect();
    HostStatus {
        version: HOST_STATUS_VERSION,
        host: who.host.to_owned(),
        agent_version: who.agent_version.to_owned(),
        time: who.now.to_owned(),
        every_sec: who.every_sec,
        last_tick: LastTick {
            outcome: outcome(summary.outcome),
            exit_code: i32::from(summary.exit_code),
            wall_ms: summary.wall_ms,
            phases: summary
                .phase_ms
                .iter()
                .map(|(phase, ms)| (format!("{phase}Ms"), *ms))
                .collect(),
            message: summary.message.clone(),
        },
        manifest,
        services,
        quarantined: quarantined.into_iter().collect(),
        system: system(state, who),
    }
}

/// The host's system: once the manifest names one for it, or once the agent switched one
/// (a manifest that no longer names one leaves the host on it).
fn system(state: &State, who: &Reporter<'_>) -> Option<SystemStatus> {
    let named = state
        .manifest
        .as_ref()
        .is_some_and(|m| m.systems.contains_key(who.host));
    let r = &state.system;
    if !named && *r == SystemRecord::default() {
        return None;
    }
    Some(SystemStatus {
        enabled: who.system_enabled,
        store_path: r.running.clone(),
        since: r.since.clone(),
        failed: r.quarantined.as_ref().map(|(path, why)| FailedSystem {
            store_path: path.clone(),
            message: why.clone(),
        }),
        reboot_needed: r.reboot_needed,
    })
}

/// The manifest's revision as this host sees it: the distinct `revision`s of the services it
/// gives the host, joined (`None` when they have none).
fn revision(m: &ferry_schema::Manifest, host: &str) -> Option<String> {
    let revisions: BTreeSet<&str> = m
        .services
        .iter()
        .filter(|s| s.hosts.iter().any(|h| h == host))
        .filter_map(|s| s.revision.as_deref())
        .collect();
    (!revisions.is_empty()).then(|| revisions.into_iter().collect::<Vec<_>>().join(", "))
}

fn outcome(o: Outcome) -> TickOutcome {
    match o {
        Outcome::Ok => TickOutcome::Ok,
        Outcome::Failed => TickOutcome::Failed,
        Outcome::Refused => TickOutcome::Refused,
        Outcome::Unreachable => TickOutcome::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Applied, Quarantined};
    use ferry_schema::Manifest;
    use serde_json::json;

    const WEB1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
    const WEB2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const T0: &str = "2026-12-01T10:00:00Z";
    const T1: &str = "2026-12-01T10:03:00Z";
    const T2: &str = "2026-12-01T10:06:00Z";

    fn ev(name: &str, event: Event, path: &str, message: Option<&str>) -> ServiceEvent {
        ServiceEvent {
            name: name.to_owned(),
            event,
            store_path: path.to_owned(),
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn a_record_keeps_its_since_until_its_state_or_path_changes() {
        let mut r = BTreeMap::new();
        update(
            &mut r,
            vec![ev("web", Event::Running, WEB1, Some("added; healthy"))],
            T0,
            true,
        );
        update(
            &mut r,
            vec![ev("web", Event::Running, WEB1, None)],
            T1,
            true,
        );
        assert_eq!(r["web"].since, T0);
        assert_eq!(r["web"].message.as_deref(), Some("added; healthy"));
        update(
            &mut r,
            vec![ev("web", Event::Running, WEB2, Some("updated; healthy"))],
            T2,
            true,
        );
        assert_eq!(
            r["web"],
            ServiceStatusRecord {
                state: ServiceState::Running,
                store_path: WEB2.into(),
                since: T2.into(),
                message: Some("updated; healthy".into()),
            }
        );
    }

    #[test]
    fn a_rolled_back_version_stays_rolled_back_while_the_quarantine_holds_it() {
        let mut r = BTreeMap::new();
        update(
            &mut r,
            vec![ev("web", Event::Running, WEB1, None)],
            T0,
            true,
        );
        let why = "FAILED (update closure): failed health check (HTTP 503 on /health); rolled back";
        update(
            &mut r,
            vec![ev("web", Event::RolledBack, WEB1, Some(why))],
            T1,
            true,
        );
        // The next ticks hold the quarantined version back: the failure is still the news.
        update(
            &mut r,
            vec![ev("web", Event::Held, WEB1, Some("quarantined"))],
            T2,
            true,
        );
        assert_eq!(r["web"].state, ServiceState::RolledBack);
        assert_eq!(r["web"].since, T1);
        assert_eq!(r["web"].message.as_deref(), Some(why));
        // Held with no failure on record (state from an older agent): quarantined.
        let mut fresh = BTreeMap::new();
        update(
            &mut fresh,
            vec![ev("web", Event::Held, WEB1, Some("quarantined: 503"))],
            T2,
            true,
        );
        assert_eq!(fresh["web"].state, ServiceState::Quarantined);
    }

    #[test]
    fn a_restore_tick_does_not_clear_an_earlier_failure_and_a_trusted_one_drops_the_gone() {
        let mut r = BTreeMap::new();
        update(
            &mut r,
            vec![
                ev("web", Event::RolledBack, WEB1, Some("health")),
                ev("api", Event::Refused, WEB2, Some("REFUSED by host policy")),
                ev("old", Event::Running, WEB1, None),
            ],
            T0,
            true,
        );
        // Bucket unreachable: what state records is brought back, reported as it was.
        update(
            &mut r,
            vec![
                ev("web", Event::Running, WEB1, None),
                ev("api", Event::Running, WEB1, None),
            ],
            T1,
            false,
        );
        assert_eq!(r["web"].state, ServiceState::RolledBack);
        assert_eq!(r["api"].state, ServiceState::Refused);
        assert!(r.contains_key("old"), "a restore tick removes nothing");
        // A trusted manifest that no longer names `old`, and a removal.
        update(
            &mut r,
            vec![
                ev("web", Event::Running, WEB2, None),
                ev("api", Event::Removed, WEB1, None),
            ],
            T2,
            true,
        );
        assert_eq!(r.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(r["web"].state, ServiceState::Running);
    }

    #[test]
    fn a_report_is_due_after_events_failures_and_the_interval() {
        let now: DateTime<Utc> = T1.parse().unwrap();
        assert!(due(true, Some(T1), false, now, 300), "eventful");
        assert!(
            due(false, Some(T1), true, now, 300),
            "owed after a failed write"
        );
        assert!(due(false, None, false, now, 300), "never reported");
        assert!(!due(false, Some(T0), false, now, 300), "180 s < 300 s");
        assert!(due(false, Some(T0), false, now, 180), "180 s = 180 s");
        assert!(due(false, Some(T2), false, now, 300), "the clock went back");
        assert!(due(false, Some("garbage"), false, now, 300));
    }

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "generation": T0,
            "services": [
                {"name": "web", "hosts": ["web-1"], "revision": "3f2a9c1",
                 "artifact": {"type": "nix-closure", "storePath": WEB2},
                 "exec": {"command": "web"}, "env": {"DATABASE_PASSWORD": "hunter2"},
                 "envFile": "/var/lib/ferry-secrets/web.env"},
                {"name": "other", "hosts": ["web-2"], "revision": "aaaaaaa",
                 "artifact": {"type": "nix-closure", "storePath": WEB1},
                 "exec": {"command": "web"}}
            ]
        }))
        .unwrap()
    }

    fn summary() -> TickSummary {
        TickSummary {
            at: T1.into(),
            outcome: Outcome::Failed,
            exit_code: 1,
            wall_ms: 1831,
            phase_ms: [("pull".to_owned(), 221), ("health".to_owned(), 1500)]
                .into_iter()
                .collect(),
            bucket_requests: 3,
            caddy_requests: 1,
            peak_rss_kib: Some(40_000),
            changed: vec![],
            failed: vec!["web".into()],
            generation: Some(T0.into()),
            status_requests: 0,
            records_changed: false,
            message: Some("web: FAILED (update closure): failed health check".into()),
        }
    }

    #[test]
    fn the_report_says_what_state_and_the_tick_say_and_nothing_secret() {
        let m = manifest();
        let mut state = State {
            manifest: Some(m.clone()),
            manifest_sha256: Some("ab".repeat(32)),
            ..State::default()
        };
        state.services.insert(
            "web".into(),
            Applied {
                service: m.services[0].clone(),
                applied_at: T0.into(),
                live_port: Some(8001),
            },
        );
        state.quarantine.insert(
            "web".into(),
            Quarantined {
                store_path: WEB2.into(),
                unit: None,
                reason: "failed health check".into(),
                at: T1.into(),
                rolled_back_to: Some(WEB1.into()),
                generation: Some(T0.into()),
            },
        );
        update(
            &mut state.service_status,
            vec![ev(
                "web",
                Event::RolledBack,
                WEB1,
                Some("failed health check"),
            )],
            T1,
            true,
        );
        let who = Reporter {
            host: "web-1",
            agent_version: "0.1.0",
            every_sec: 300,
            now: T2,
            system_enabled: false,
        };
        let report = build(&state, &summary(), &who);
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({
                "version": 1, "host": "web-1", "agentVersion": "0.1.0", "time": T2,
                "everySec": 300,
                "lastTick": {"outcome": "failed", "exitCode": 1, "wallMs": 1831,
                    "phases": {"healthMs": 1500, "pullMs": 221},
                    "message": "web: FAILED (update closure): failed health check"},
                "manifest": {"generation": T0, "revision": "3f2a9c1", "sha256": "ab".repeat(32)},
                "services": [{"name": "web", "storePath": WEB1, "state": "rolled-back",
                    "livePort": 8001, "since": T1, "message": "failed health check"}],
                "quarantined": [WEB2],
            })
        );
        for secret in ["hunter2", "DATABASE_PASSWORD", "web.env"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // It is a report `ferry status` reads.
        let back =
            ferry_schema::host_status::parse_report("hosts/web-1.json", "web-1", text.as_bytes())
                .unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn without_the_digest_the_manifest_is_left_out() {
        let state = State {
            manifest: Some(manifest()),
            ..State::default()
        };
        let who = Reporter {
            host: "web-1",
            agent_version: "0.1.0",
            every_sec: 300,
            now: T2,
            system_enabled: false,
        };
        let report = build(&state, &summary(), &who);
        assert_eq!(report.manifest, None);
        assert!(report.services.is_empty() && report.quarantined.is_empty());
    }

    /// The host's system is in the report once the manifest names one for it, saying
    /// whether system deploys are on, what runs and what failed; never before.
    #[test]
    fn the_system_is_reported_once_the_manifest_names_one() {
        const SYS: &str = "/nix/store/5c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-nixos-system-web-1-2";
        let who = |system_enabled| Reporter {
            host: "web-1",
            agent_version: "0.1.0",
            every_sec: 300,
            now: T2,
            system_enabled,
        };
        let mut state = State {
            manifest: Some(manifest()),
            ..State::default()
        };
        assert_eq!(build(&state, &summary(), &who(true)).system, None);
        if let Some(m) = &mut state.manifest {
            m.systems.insert(
                "web-1".into(),
                serde_json::from_value(json!({"storePath": SYS})).unwrap(),
            );
        }
        assert_eq!(
            serde_json::to_value(build(&state, &summary(), &who(false)).system).unwrap(),
            json!({"enabled": false})
        );
        state.system = SystemRecord {
            running: Some(WEB1.into()),
            since: Some(T0.into()),
            quarantined: Some((SYS.into(), "units failed by the switch: x.service".into())),
            reboot_needed: true,
            ..SystemRecord::default()
        };
        assert_eq!(
            serde_json::to_value(build(&state, &summary(), &who(true)).system).unwrap(),
            json!({"enabled": true, "storePath": WEB1, "since": T0, "rebootNeeded": true,
                "failed": {"storePath": SYS, "message": "units failed by the switch: x.service"}})
        );
    }
}

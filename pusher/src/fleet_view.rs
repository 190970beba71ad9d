//! What the fleet did with a manifest, from the hosts' status reports: one verdict per host.
//! Pure (the reports are read by `ferry status`); tested on literals.
//!
//! A host the manifest names (in a service's `hosts` or in `decommission`) is *converged*
//! when its report is fresh, says it applied these very bytes (their SHA-256), and shows
//! every service the manifest gives it running the manifest's store path (a decommissioned
//! host: running nothing). Anything else says what is missing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ferry_schema::Manifest;
use ferry_schema::host_status::{HostStatus, ServiceState, TickOutcome};
use serde::Serialize;

/// A report older than this many of its host's report intervals means the host stopped
/// ticking (or reporting).
pub const STALE_INTERVALS: u64 = 3;

/// Where one host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Runs the live manifest, every service healthy.
    Converged,
    /// Applied the live manifest, but a service of it does not run healthy.
    Failing,
    /// Its last tick, after the live manifest was published, refused it.
    Refused,
    /// Has not applied the live manifest yet, or a service of it is still pending.
    Behind,
    /// Its last report is older than [`STALE_INTERVALS`] report intervals.
    Stale,
    /// Never reported.
    Silent,
    /// Its report could not be read.
    Unreadable,
    /// Reports, but the live manifest does not name it.
    NotNamed,
}

impl Verdict {
    /// The word `ferry status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Converged => "converged",
            Verdict::Failing => "failing",
            Verdict::Refused => "refused",
            Verdict::Behind => "behind",
            Verdict::Stale => "stale",
            Verdict::Silent => "silent",
            Verdict::Unreadable => "unreadable",
            Verdict::NotNamed => "not-named",
        }
    }
}

/// One host's line (and, for `--json`, its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRow {
    /// Host name.
    pub host: String,
    /// Where it stands.
    pub verdict: Verdict,
    /// Seconds since its last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_sec: Option<i64>,
    /// The generation it last applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// That manifest's revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What is wrong, one line each (`web: rolled-back: GET /health: 503`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Store paths the host quarantined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
}

/// A host's report as read: parsed, or why it could not be.
pub type Read = Result<HostStatus, String>;

/// The verdict on every host the manifest names and every host that reports, by name.
/// `live_sha256` is the digest of the live manifest's bytes.
pub fn view(
    manifest: &Manifest,
    live_sha256: &str,
    reports: &BTreeMap<String, Read>,
    now: DateTime<Utc>,
) -> Vec<HostRow> {
    let wanted = wanted_by_host(manifest);
    let hosts: BTreeSet<&String> = wanted.keys().chain(reports.keys()).collect();
    hosts
        .into_iter()
        .map(|host| match (wanted.get(host), reports.get(host)) {
            (_, None) => row(host, Verdict::Silent, vec!["never reported".to_owned()]),
            (_, Some(Err(e))) => row(host, Verdict::Unreadable, vec![e.clone()]),
            (None, Some(Ok(r))) => judged(host, Verdict::NotNamed, Vec::new(), r, age_sec(r, now)),
            (Some(want), Some(Ok(r))) => {
                let age = age_sec(r, now);
                let system = manifest
                    .systems
                    .get(host.as_str())
                    .map(|s| s.store_path.as_str());
                let (verdict, problems) =
                    judge(want, system, live_sha256, &manifest.generation, r, age);
                judged(host, verdict, problems, r, age)
            }
        })
        .collect()
}

/// Whether the host has answered the live manifest, for good or bad (what `--wait` waits
/// for): converged, failing or refused. A behind, stale, silent or unreadable host may still.
pub fn settled(row: &HostRow) -> bool {
    matches!(
        row.verdict,
        Verdict::Converged | Verdict::Failing | Verdict::Refused | Verdict::NotNamed
    )
}

/// Whether every host the manifest names is converged (the exit status of `ferry status`).
pub fn all_converged(rows: &[HostRow]) -> bool {
    rows.iter()
        .all(|r| matches!(r.verdict, Verdict::Converged | Verdict::NotNamed))
}

/// The human line of a row, with its problems indented below it.
pub fn render(rows: &[HostRow]) -> String {
    let width = rows.iter().map(|r| r.host.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let mut line = format!("{:width$}  {:10}", r.host, r.verdict.as_str());
        if let Some(g) = &r.generation {
            line.push_str(&format!("  generation {g}"));
            if let Some(rev) = &r.revision {
                line.push_str(&format!(" ({rev})"));
            }
        }
        if let Some(age) = r.age_sec {
            line.push_str(&format!("  seen {} ago", human_age(age)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for p in &r.problems {
            out.push_str(&format!("{:width$}    {p}\n", ""));
        }
        for q in &r.quarantined {
            out.push_str(&format!("{:width$}    quarantined: {q}\n", ""));
        }
    }
    out
}

/// `42s`, `17m`, `3h`, `2d`.
pub fn human_age(sec: i64) -> String {
    match sec.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// For every host the manifest names: the store path it must run per service (none for a
/// decommissioned host).
fn wanted_by_host(manifest: &Manifest) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut wanted: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in &manifest.services {
        for h in &s.hosts {
            wanted
                .entry(h.clone())
                .or_default()
                .insert(s.name.clone(), s.artifact.store_path.clone());
        }
    }
    for h in manifest.decommission.iter().chain(manifest.systems.keys()) {
        wanted.entry(h.clone()).or_default();
    }
    wanted
}

/// Where a host's whole system stands against the manifest's `systems` entry for it.
enum SystemVerdict {
    /// None wanted, or it runs the one wanted.
    Done,
    /// On its way.
    Pending(String),
    /// An answer, and a bad one.
    Failing(String),
}

fn judge_system(wanted: Option<&str>, r: &HostStatus) -> SystemVerdict {
    let Some(wanted) = wanted else {
        return SystemVerdict::Done;
    };
    let Some(s) = &r.system else {
        return SystemVerdict::Pending(format!("system: not reported yet ({wanted})"));
    };
    if !s.enabled {
        return SystemVerdict::Failing(format!(
            "system: system deploys are off on this host (agent.toml [system] enable = false); it keeps its system instead of {wanted}"
        ));
    }
    if s.store_path.as_deref() == Some(wanted) {
        return SystemVerdict::Done;
    }
    match &s.failed {
        Some(f) if f.store_path == wanted => SystemVerdict::Failing(format!(
            "system: {wanted} failed: {}; the host switched back",
            f.message
        )),
        _ => SystemVerdict::Pending(format!("system: switching to {wanted}")),
    }
}

fn judge(
    want: &BTreeMap<String, String>,
    system: Option<&str>,
    live_sha256: &str,
    generation: &str,
    r: &HostStatus,
    age: Option<i64>,
) -> (Verdict, Vec<String>) {
    if let Some(age) = age {
        let limit = STALE_INTERVALS.saturating_mul(r.every_sec.max(1));
        if u64::try_from(age).unwrap_or(0) > limit {
            return (
                Verdict::Stale,
                vec![format!(
                    "no report for {} (it reports every {}s)",
                    human_age(age),
                    r.every_sec
                )],
            );
        }
    }
    let applied = r.manifest.as_ref().is_some_and(|m| m.sha256 == live_sha256);
    if !applied {
        let why = match (r.last_tick.outcome, &r.last_tick.message) {
            (TickOutcome::Refused | TickOutcome::Unreachable, Some(m)) => {
                format!("last tick {}: {m}", r.last_tick.outcome.as_str())
            }
            _ => "has not applied the live manifest yet".to_owned(),
        };
        // A refusal reported after the manifest was published (its generation is that
        // moment) is the host's answer to it; an older one was about an earlier manifest.
        let answered =
            r.last_tick.outcome == TickOutcome::Refused && reported_after(&r.time, generation);
        let verdict = if answered {
            Verdict::Refused
        } else {
            Verdict::Behind
        };
        return (verdict, vec![why]);
    }
    let by_name: BTreeMap<&str, _> = r.services.iter().map(|s| (s.name.as_str(), s)).collect();
    // Pending, or waiting for the earlier waves of its rollout: on its way, not an answer
    // (a halted service is one: it falls through to the problems below, failing).
    let system = judge_system(system, r);
    let mut pending: Vec<String> = want
        .keys()
        .filter_map(|n| {
            let s = by_name.get(n.as_str())?;
            match s.state {
                ServiceState::Pending => Some(format!("{n}: pending")),
                ServiceState::Waiting => Some(format!(
                    "{n}: waiting{}",
                    s.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )),
                _ => None,
            }
        })
        .collect();
    if let SystemVerdict::Pending(why) = &system {
        pending.insert(0, why.clone());
    }
    if !pending.is_empty() {
        return (Verdict::Behind, pending);
    }
    let mut problems = Vec::new();
    if let SystemVerdict::Failing(why) = system {
        problems.push(why);
    }
    for (name, path) in want {
        match by_name.get(name.as_str()) {
            None => problems.push(format!("{name}: not on the host")),
            Some(s) if s.state != ServiceState::Running => problems.push(format!(
                "{name}: {}{}",
                s.state.as_str(),
                s.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            Some(s) if s.store_path != *path => {
                problems.push(format!("{name}: runs {} instead of {path}", s.store_path));
            }
            Some(_) => {}
        }
    }
    for s in &r.services {
        if !want.contains_key(&s.name) {
            problems.push(format!(
                "{}: still on the host, the manifest removed it",
                s.name
            ));
        }
    }
    if problems.is_empty() {
        (Verdict::Converged, problems)
    } else {
        (Verdict::Failing, problems)
    }
}

/// Whether a report dated `time` was written at or after `generation` (both RFC 3339).
fn reported_after(time: &str, generation: &str) -> bool {
    match (
        DateTime::parse_from_rfc3339(time),
        DateTime::parse_from_rfc3339(generation),
    ) {
        (Ok(t), Ok(g)) => t >= g,
        _ => false,
    }
}

/// Seconds since the report was written (`None` when its time does not parse), read once
/// per report for both the stale check and the row.
fn age_sec(r: &HostStatus, now: DateTime<Utc>) -> Option<i64> {
    DateTime::parse_from_rfc3339(&r.time)
        .ok()
        .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
}

fn row(host: &str, verdict: Verdict, problems: Vec<String>) -> HostRow {
    HostRow {
        host: host.to_owned(),
        verdict,
        age_sec: None,
        generation: None,
        revision: None,
        problems,
        quarantined: Vec::new(),
    }
}

fn judged(
    host: &str,
    verdict: Verdict,
    problems: Vec<String>,
    r: &HostStatus,
    age: Option<i64>,
) -> HostRow {
    HostRow {
        age_sec: age,
        generation: r.manifest.as_ref().map(|m| m.generation.clone()),
        revision: r.manifest.as_ref().and_then(|m| m.revision.clone()),
        quarantined: r.quarantined.clone(),
        ..row(host, verdict, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::host_status::{AppliedManifest, LastTick, ServiceStatus};
    use serde_json::json;

    const WEB: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const OLD: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "generation": "2026-12-01T10:00:00Z",
            "services": [{"name": "web", "hosts": ["a", "b", "c", "d", "e"],
                "artifact": {"type": "nix-closure", "storePath": WEB},
                "exec": {"command": "web"}}],
            "decommission": ["old"],
        }))
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:05:00Z".parse().unwrap()
    }

    fn report(host: &str, time: &str, sha: &str, services: Vec<ServiceStatus>) -> Read {
        Ok(HostStatus {
            version: 1,
            host: host.to_owned(),
            agent_version: "0.1.0".to_owned(),
            time: time.to_owned(),
            every_sec: 60,
            last_tick: LastTick {
                outcome: TickOutcome::Ok,
                exit_code: 0,
                wall_ms: 9,
                phases: BTreeMap::new(),
                message: None,
            },
            manifest: Some(AppliedManifest {
                generation: "2026-12-01T10:00:00Z".to_owned(),
                revision: Some("3f2a9c1".to_owned()),
                sha256: sha.to_owned(),
            }),
            services,
            quarantined: Vec::new(),
            system: None,
        })
    }

    fn web(state: ServiceState, path: &str, message: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            name: "web".to_owned(),
            store_path: path.to_owned(),
            state,
            live_port: None,
            since: "2026-12-01T10:00:00Z".to_owned(),
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn every_named_host_gets_the_verdict_its_report_earns() {
        let t = "2026-12-01T10:04:30Z";
        let mut reports = BTreeMap::new();
        reports.insert(
            "a".into(),
            report("a", t, "live", vec![web(ServiceState::Running, WEB, None)]),
        );
        reports.insert(
            "b".into(),
            report(
                "b",
                t,
                "live",
                vec![web(ServiceState::RolledBack, OLD, Some("GET /health: 503"))],
            ),
        );
        reports.insert(
            "c".into(),
            report("c", t, "older", vec![web(ServiceState::Running, OLD, None)]),
        );
        // Four intervals of 60 s without a report.
        reports.insert(
            "d".into(),
            report(
                "d",
                "2026-12-01T10:01:00Z",
                "live",
                vec![web(ServiceState::Running, WEB, None)],
            ),
        );
        reports.insert("old".into(), report("old", t, "live", vec![]));
        reports.insert("ci".into(), report("ci", t, "live", vec![]));
        reports.insert(
            "x".into(),
            Err("hosts/x.json is not a host status report".into()),
        );
        let rows = view(&manifest(), "live", &reports, now());
        let got: Vec<(&str, Verdict, Vec<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.host.as_str(),
                    r.verdict,
                    r.problems.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Verdict::Converged, vec![]),
                (
                    "b",
                    Verdict::Failing,
                    vec!["web: rolled-back: GET /health: 503"]
                ),
                (
                    "c",
                    Verdict::Behind,
                    vec!["has not applied the live manifest yet"]
                ),
                ("ci", Verdict::NotNamed, vec![]),
                (
                    "d",
                    Verdict::Stale,
                    vec!["no report for 4m (it reports every 60s)"]
                ),
                ("e", Verdict::Silent, vec!["never reported"]),
                ("old", Verdict::Converged, vec![]),
                (
                    "x",
                    Verdict::Unreadable,
                    vec!["hosts/x.json is not a host status report"]
                ),
            ]
        );
        assert!(!all_converged(&rows));
        assert_eq!(rows[0].age_sec, Some(30));
    }

    #[test]
    fn converged_needs_the_manifests_store_path_and_nothing_it_removed() {
        let t = "2026-12-01T10:04:30Z";
        let mut extra = web(ServiceState::Running, WEB, None);
        extra.name = "gone".into();
        let mut reports = BTreeMap::new();
        reports.insert(
            "a".into(),
            report("a", t, "live", vec![web(ServiceState::Running, OLD, None)]),
        );
        reports.insert(
            "b".into(),
            report(
                "b",
                t,
                "live",
                vec![web(ServiceState::Running, WEB, None), extra],
            ),
        );
        let m = manifest();
        let rows = view(&m, "live", &reports, now());
        assert_eq!(
            rows[0].problems,
            [format!("web: runs {OLD} instead of {WEB}")]
        );
        assert_eq!(
            rows[1].problems,
            ["gone: still on the host, the manifest removed it"]
        );
    }

    #[test]
    fn a_fleet_of_converged_hosts_exits_zero_and_a_refusal_says_why() {
        let t = "2026-12-01T10:04:30Z";
        let mut m = manifest();
        m.services[0].hosts = vec!["a".into(), "b".into()];
        m.decommission.clear();
        let mut reports = BTreeMap::new();
        reports.insert(
            "a".into(),
            report("a", t, "live", vec![web(ServiceState::Running, WEB, None)]),
        );
        let rows = view(&m, "live", &reports, now());
        assert!(!all_converged(&rows), "b never reported");
        let Ok(mut refused) = report("b", t, "older", vec![]) else {
            unreachable!()
        };
        refused.last_tick.outcome = TickOutcome::Refused;
        refused.last_tick.message = Some("the manifest's signature is by an untrusted key".into());
        reports.insert("b".into(), Ok(refused));
        let rows = view(&m, "live", &reports, now());
        assert_eq!(
            rows[1].problems,
            ["last tick refused: the manifest's signature is by an untrusted key"]
        );
        // Reported after the manifest's generation: the host's answer to it.
        assert_eq!(rows[1].verdict, Verdict::Refused);
        assert!(settled(&rows[1]));
        // A refusal from before it was published was about an earlier manifest.
        let mut later = m.clone();
        later.generation = "2026-12-01T10:04:45Z".into();
        let rows = view(&later, "live", &reports, now());
        assert_eq!(rows[1].verdict, Verdict::Behind);
        assert!(!settled(&rows[1]));
        reports.insert(
            "b".into(),
            report("b", t, "live", vec![web(ServiceState::Running, WEB, None)]),
        );
        assert!(all_converged(&view(&m, "live", &reports, now())));
    }

    #[test]
    fn rendered_lines_name_host_verdict_generation_age_and_problems() {
        let mut reports = BTreeMap::new();
        reports.insert(
            "b".into(),
            report(
                "b",
                "2026-12-01T10:04:18Z",
                "live",
                vec![web(ServiceState::RolledBack, OLD, Some("GET /health: 503"))],
            ),
        );
        let mut m = manifest();
        m.services[0].hosts = vec!["b".into(), "web-2".into()];
        m.decommission.clear();
        let text = render(&view(&m, "live", &reports, now()));
        assert_eq!(
            text,
            "b      failing     generation 2026-12-01T10:00:00Z (3f2a9c1)  seen 42s ago\n\
             \x20        web: rolled-back: GET /health: 503\n\
             web-2  silent\n\
             \x20        never reported\n"
        );
    }

    #[test]
    fn a_pending_service_is_not_an_answer_yet() {
        let mut reports = BTreeMap::new();
        reports.insert(
            "a".into(),
            report(
                "a",
                "2026-12-01T10:04:30Z",
                "live",
                vec![web(ServiceState::Pending, WEB, None)],
            ),
        );
        let rows = view(&manifest(), "live", &reports, now());
        assert_eq!(
            (rows[0].verdict, rows[0].problems.as_slice()),
            (Verdict::Behind, &["web: pending".to_owned()][..])
        );
        assert!(!settled(&rows[0]));
    }

    /// A service waiting for an earlier wave is on its way (behind, not settled); one an
    /// earlier wave's failure halted is an answer: failing, naming why.
    #[test]
    fn waiting_is_behind_and_halted_is_failing() {
        let mut reports = BTreeMap::new();
        reports.insert(
            "a".into(),
            report(
                "a",
                "2026-12-01T10:04:30Z",
                "live",
                vec![web(
                    ServiceState::Waiting,
                    OLD,
                    Some("web: wave 2: waiting"),
                )],
            ),
        );
        reports.insert(
            "b".into(),
            report(
                "b",
                "2026-12-01T10:04:30Z",
                "live",
                vec![web(
                    ServiceState::Halted,
                    OLD,
                    Some("canary reports web rolled-back"),
                )],
            ),
        );
        let rows = view(&manifest(), "live", &reports, now());
        assert_eq!(
            (rows[0].verdict, rows[0].problems.as_slice()),
            (
                Verdict::Behind,
                &["web: waiting: web: wave 2: waiting".to_owned()][..]
            )
        );
        assert!(!settled(&rows[0]));
        assert_eq!(
            (rows[1].verdict, rows[1].problems.as_slice()),
            (
                Verdict::Failing,
                &["web: halted: canary reports web rolled-back".to_owned()][..]
            )
        );
        assert!(settled(&rows[1]));
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(
            [0, 119, 120, 7199, 7200, 172_799, 172_800, -5].map(human_age),
            ["0s", "119s", "2m", "119m", "2h", "47h", "2d", "0s"]
        );
    }

    /// A host whose manifest entry names a whole system converges only once it runs it;
    /// a system that failed there, or a host with system deploys off, is an answer.
    #[test]
    fn a_hosts_system_is_part_of_its_verdict() {
        use ferry_schema::host_status::{FailedSystem, SystemStatus};
        const SYS: &str = "/nix/store/5c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-nixos-system-a-2";
        let mut m = manifest();
        m.systems.insert(
            "a".into(),
            serde_json::from_value(json!({"storePath": SYS})).unwrap(),
        );
        let t = "2026-12-01T10:04:30Z";
        let with = |system: Option<SystemStatus>| {
            let mut r = report("a", t, "live", vec![web(ServiceState::Running, WEB, None)]);
            if let Ok(r) = &mut r {
                r.system = system;
            }
            r
        };
        let verdict = |r: Read| {
            let rows = view(&m, "live", &BTreeMap::from([("a".to_owned(), r)]), now());
            let a = rows.into_iter().find(|r| r.host == "a").unwrap();
            (a.verdict, a.problems)
        };
        let on = SystemStatus {
            enabled: true,
            ..SystemStatus::default()
        };
        assert_eq!(
            verdict(with(Some(SystemStatus {
                store_path: Some(SYS.into()),
                ..on.clone()
            }))),
            (Verdict::Converged, vec![])
        );
        assert_eq!(
            verdict(with(Some(on.clone()))),
            (Verdict::Behind, vec![format!("system: switching to {SYS}")])
        );
        assert_eq!(verdict(with(None)).0, Verdict::Behind);
        let failed = verdict(with(Some(SystemStatus {
            store_path: Some("/nix/store/old-nixos-system-a-1".into()),
            failed: Some(FailedSystem {
                store_path: SYS.into(),
                message: "units failed by the switch: x.service".into(),
            }),
            ..on.clone()
        })));
        assert_eq!(failed.0, Verdict::Failing);
        assert!(
            failed.1[0].contains("units failed by the switch"),
            "{failed:?}"
        );
        let off = verdict(with(Some(SystemStatus::default())));
        assert_eq!(off.0, Verdict::Failing);
        assert!(off.1[0].contains("system deploys are off"), "{off:?}");
        // A host with only a system and no service is named too.
        let rows = view(&m, "live", &BTreeMap::new(), now());
        assert!(
            rows.iter()
                .any(|r| r.host == "a" && r.verdict == Verdict::Silent)
        );
    }
}

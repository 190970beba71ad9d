//! Metrics for Prometheus, the pure part: the figures of the host's services and its last
//! tick rendered in the text exposition format that node_exporter's textfile collector
//! reads (`metrics.file`; the tick's `metrics` step writes it). Names follow Prometheus'
//! conventions: a `ferry_` prefix, base units in the name (`_seconds`, `_bytes`), `_info`
//! gauges whose labels carry text, no `_total` (every figure is a gauge: the file holds the
//! last tick's values, not running counts). Every family has its `# HELP` and `# TYPE`;
//! label values are escaped as the format says.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ferry_schema::host_status::ServiceState;

use crate::state::{Outcome, State};
use crate::tick::summary::TickSummary;

/// One service's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFigures {
    /// The service's name.
    pub name: String,
    /// The store path it runs, when it runs one.
    pub store_path: Option<String>,
    /// The generation of the manifest in force, when there is one.
    pub generation: Option<String>,
    /// Runs a version that passed its health check, and did not fail this tick.
    pub healthy: bool,
    /// A store path of it is quarantined here.
    pub quarantined: bool,
    /// When its running version was applied, Unix seconds.
    pub last_change: Option<i64>,
}

/// The last tick's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickFigures {
    /// How it ended.
    pub outcome: Outcome,
    /// `ferry-agent reconcile`'s exit code.
    pub exit_code: i32,
    /// When it started, Unix seconds.
    pub started: i64,
    /// Its wall time, milliseconds.
    pub wall_ms: u64,
    /// Wall time per phase (`pull`, `systemd`, `health`, `route`, `drain`), milliseconds.
    pub phases: BTreeMap<String, u64>,
    /// Requests made to the deploy bucket.
    pub bucket_requests: u64,
    /// The agent's peak resident memory, KiB; `None` when it could not be read.
    pub peak_rss_kib: Option<u64>,
    /// Services it changed.
    pub services_changed: u64,
    /// Services that failed in it.
    pub services_failed: u64,
}

/// Everything the metrics file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// The agent's version.
    pub agent_version: String,
    /// The services, by name.
    pub services: Vec<ServiceFigures>,
    /// The last tick.
    pub tick: TickFigures,
    /// When the last tick with outcome `ok` started, Unix seconds (this one or an earlier
    /// one); `None` when none has been seen.
    pub last_success: Option<i64>,
}

/// The figures after a tick: every service state knows (applied, reported on, or
/// quarantined) and the tick's summary. A service is healthy when the status report calls
/// it `running` (a record written before reports existed: when it is applied and did not
/// fail in this tick).
pub fn figures(state: &State, summary: &TickSummary, agent_version: &str) -> Figures {
    let mut names: Vec<&String> = state
        .services
        .keys()
        .chain(state.service_status.keys())
        .chain(state.quarantine.keys())
        .collect();
    names.sort();
    names.dedup();
    let services = names
        .into_iter()
        .map(|name| {
            let applied = state.services.get(name);
            let healthy = match state.service_status.get(name) {
                Some(r) => r.state == ServiceState::Running,
                None => applied.is_some() && !summary.failed.contains(name),
            };
            ServiceFigures {
                name: name.clone(),
                store_path: applied.map(|a| a.service.artifact.store_path.clone()),
                generation: summary.generation.clone(),
                healthy,
                quarantined: state.quarantine.contains_key(name),
                last_change: applied.and_then(|a| unix_seconds(&a.applied_at)),
            }
        })
        .collect();
    let count = |v: &[String]| u64::try_from(v.len()).unwrap_or(u64::MAX);
    Figures {
        agent_version: agent_version.to_owned(),
        services,
        tick: TickFigures {
            outcome: summary.outcome,
            exit_code: i32::from(summary.exit_code),
            started: unix_seconds(&summary.at).unwrap_or_default(),
            wall_ms: summary.wall_ms,
            phases: summary.phase_ms.clone(),
            bucket_requests: summary.bucket_requests,
            peak_rss_kib: summary.peak_rss_kib,
            services_changed: count(&summary.changed),
            services_failed: count(&summary.failed),
        },
        last_success: state.last_ok_at.as_deref().and_then(unix_seconds),
    }
}

/// Unix seconds of an RFC 3339 time, as state records them.
pub fn unix_seconds(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

/// The outcomes `ferry_tick_outcome` has a series for, as written in its label.
const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Ok, "ok"),
    (Outcome::Failed, "failed"),
    (Outcome::Refused, "refused"),
    (Outcome::Unreachable, "unreachable"),
];

/// The metrics file's text.
pub fn render(f: &Figures) -> String {
    let mut out = Out::default();
    out.family(
        "ferry_agent_info",
        "The Ferry agent that writes these metrics (value always 1).",
    );
    out.sample("ferry_agent_info", &[("version", &f.agent_version)], "1");

    let info: Vec<&ServiceFigures> = f
        .services
        .iter()
        .filter(|s| s.store_path.is_some())
        .collect();
    if !info.is_empty() {
        out.family(
            "ferry_service_info",
            "A service Ferry runs here: the store path it runs and the generation of the manifest in force (value always 1).",
        );
        for s in info {
            let path = s.store_path.as_deref().unwrap_or_default();
            let generation = s.generation.as_deref().unwrap_or_default();
            out.sample(
                "ferry_service_info",
                &[
                    ("service", &s.name),
                    ("store_path", path),
                    ("generation", generation),
                ],
                "1",
            );
        }
    }
    if !f.services.is_empty() {
        out.family(
            "ferry_service_healthy",
            "1 when the service runs a version that passed its health check and did not fail in the last tick, else 0.",
        );
        for s in &f.services {
            out.sample(
                "ferry_service_healthy",
                &[("service", &s.name)],
                bit(s.healthy),
            );
        }
        out.family(
            "ferry_service_quarantined",
            "1 when a store path of the service failed here and is held back until a newer manifest, else 0.",
        );
        for s in &f.services {
            out.sample(
                "ferry_service_quarantined",
                &[("service", &s.name)],
                bit(s.quarantined),
            );
        }
    }
    let changed: Vec<(&ServiceFigures, i64)> = f
        .services
        .iter()
        .filter_map(|s| s.last_change.map(|t| (s, t)))
        .collect();
    if !changed.is_empty() {
        out.family(
            "ferry_service_last_change_timestamp_seconds",
            "When the version the service runs was applied, in Unix seconds.",
        );
        for (s, t) in changed {
            out.sample(
                "ferry_service_last_change_timestamp_seconds",
                &[("service", &s.name)],
                &t.to_string(),
            );
        }
    }

    let t = &f.tick;
    out.family(
        "ferry_tick_outcome",
        "1 for how the last tick ended (ok, failed, refused, unreachable), 0 for the others.",
    );
    for (outcome, name) in OUTCOMES {
        out.sample(
            "ferry_tick_outcome",
            &[("outcome", name)],
            bit(t.outcome == outcome),
        );
    }
    out.gauge(
        "ferry_tick_exit_code",
        "The exit code of the last tick (0 converged, 1 a service failed, 2 manifest refused, 3 bucket unreachable).",
        &t.exit_code.to_string(),
    );
    out.gauge(
        "ferry_tick_timestamp_seconds",
        "When the last tick started, in Unix seconds.",
        &t.started.to_string(),
    );
    out.gauge(
        "ferry_tick_duration_seconds",
        "Wall time of the last tick, in seconds.",
        &seconds(t.wall_ms),
    );
    if !t.phases.is_empty() {
        out.family(
            "ferry_tick_phase_duration_seconds",
            "Wall time of each phase of the last tick (pull, systemd, health, route, drain), in seconds.",
        );
        for (phase, ms) in &t.phases {
            out.sample(
                "ferry_tick_phase_duration_seconds",
                &[("phase", phase)],
                &seconds(*ms),
            );
        }
    }
    out.gauge(
        "ferry_tick_bucket_requests",
        "Requests the last tick made to the deploy bucket.",
        &t.bucket_requests.to_string(),
    );
    if let Some(kib) = t.peak_rss_kib {
        out.gauge(
            "ferry_tick_peak_rss_bytes",
            "The agent's peak resident memory during the last tick, in bytes.",
            &kib.saturating_mul(1024).to_string(),
        );
    }
    out.gauge(
        "ferry_tick_services_changed",
        "Services the last tick changed.",
        &t.services_changed.to_string(),
    );
    out.gauge(
        "ferry_tick_services_failed",
        "Services that failed in the last tick.",
        &t.services_failed.to_string(),
    );
    if let Some(at) = f.last_success {
        out.gauge(
            "ferry_last_success_timestamp_seconds",
            "When the last tick that ended ok started, in Unix seconds.",
            &at.to_string(),
        );
    }
    out.text
}

fn bit(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Milliseconds as decimal seconds, exactly (`1234` → `1.234`), without float rounding.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The file being written.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    /// `# HELP` and `# TYPE … gauge` of a family.
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} gauge");
    }

    /// A family with one sample and no labels.
    fn gauge(&mut self, name: &str, help: &str, value: &str) {
        self.family(name, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the text format writes it: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `# HELP` text as the text format writes it: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            agent_version: "0.1.0".into(),
            services: vec![
                ServiceFigures {
                    name: "api".into(),
                    store_path: Some("/nix/store/aaaa-api-2".into()),
                    generation: Some("2026-12-01T10:00:00Z".into()),
                    healthy: true,
                    quarantined: false,
                    last_change: Some(1_796_119_200),
                },
                ServiceFigures {
                    name: "web".into(),
                    store_path: None,
                    generation: Some("2026-12-01T10:00:00Z".into()),
                    healthy: false,
                    quarantined: true,
                    last_change: None,
                },
            ],
            tick: TickFigures {
                outcome: Outcome::Failed,
                exit_code: 1,
                started: 1_796_119_260,
                wall_ms: 1_831,
                phases: BTreeMap::from([("health".to_owned(), 1_500), ("pull".to_owned(), 221)]),
                bucket_requests: 1,
                peak_rss_kib: Some(17_300),
                services_changed: 0,
                services_failed: 1,
            },
            last_success: Some(1_796_119_000),
        }
    }

    #[test]
    fn the_file_reads_as_written() {
        let want = r#"# HELP ferry_agent_info The Ferry agent that writes these metrics (value always 1).
# TYPE ferry_agent_info gauge
ferry_agent_info{version="0.1.0"} 1
# HELP ferry_service_info A service Ferry runs here: the store path it runs and the generation of the manifest in force (value always 1).
# TYPE ferry_service_info gauge
ferry_service_info{service="api",store_path="/nix/store/aaaa-api-2",generation="2026-12-01T10:00:00Z"} 1
# HELP ferry_service_healthy 1 when the service runs a version that passed its health check and did not fail in the last tick, else 0.
# TYPE ferry_service_healthy gauge
ferry_service_healthy{service="api"} 1
ferry_service_healthy{service="web"} 0
# HELP ferry_service_quarantined 1 when a store path of the service failed here and is held back until a newer manifest, else 0.
# TYPE ferry_service_quarantined gauge
ferry_service_quarantined{service="api"} 0
ferry_service_quarantined{service="web"} 1
# HELP ferry_service_last_change_timestamp_seconds When the version the service runs was applied, in Unix seconds.
# TYPE ferry_service_last_change_timestamp_seconds gauge
ferry_service_last_change_timestamp_seconds{service="api"} 1796119200
# HELP ferry_tick_outcome 1 for how the last tick ended (ok, failed, refused, unreachable), 0 for the others.
# TYPE ferry_tick_outcome gauge
ferry_tick_outcome{outcome="ok"} 0
ferry_tick_outcome{outcome="failed"} 1
ferry_tick_outcome{outcome="refused"} 0
ferry_tick_outcome{outcome="unreachable"} 0
# HELP ferry_tick_exit_code The exit code of the last tick (0 converged, 1 a service failed, 2 manifest refused, 3 bucket unreachable).
# TYPE ferry_tick_exit_code gauge
ferry_tick_exit_code 1
# HELP ferry_tick_timestamp_seconds When the last tick started, in Unix seconds.
# TYPE ferry_tick_timestamp_seconds gauge
ferry_tick_timestamp_seconds 1796119260
# HELP ferry_tick_duration_seconds Wall time of the last tick, in seconds.
# TYPE ferry_tick_duration_seconds gauge
ferry_tick_duration_seconds 1.831
# HELP ferry_tick_phase_duration_seconds Wall time of each phase of the last tick (pull, systemd, health, route, drain), in seconds.
# TYPE ferry_tick_phase_duration_seconds gauge
ferry_tick_phase_duration_seconds{phase="health"} 1.500
ferry_tick_phase_duration_seconds{phase="pull"} 0.221
# HELP ferry_tick_bucket_requests Requests the last tick made to the deploy bucket.
# TYPE ferry_tick_bucket_requests gauge
ferry_tick_bucket_requests 1
# HELP ferry_tick_peak_rss_bytes The agent's peak resident memory during the last tick, in bytes.
# TYPE ferry_tick_peak_rss_bytes gauge
ferry_tick_peak_rss_bytes 17715200
# HELP ferry_tick_services_changed Services the last tick changed.
# TYPE ferry_tick_services_changed gauge
ferry_tick_services_changed 0
# HELP ferry_tick_services_failed Services that failed in the last tick.
# TYPE ferry_tick_services_failed gauge
ferry_tick_services_failed 1
# HELP ferry_last_success_timestamp_seconds When the last tick that ended ok started, in Unix seconds.
# TYPE ferry_last_success_timestamp_seconds gauge
ferry_last_success_timestamp_seconds 1796119000
"#;
        assert_eq!(render(&figures()), want);
    }

    #[test]
    fn unknown_figures_are_left_out_never_written_as_zero() {
        let mut f = figures();
        f.tick.peak_rss_kib = None;
        f.last_success = None;
        f.services.clear();
        let text = render(&f);
        for absent in [
            "ferry_tick_peak_rss_bytes",
            "ferry_last_success_timestamp_seconds",
            "ferry_service_",
        ] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        assert!(text.contains("\nferry_tick_exit_code 1\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        let mut f = figures();
        f.agent_version = "0.1.0 \"dev\"\\x".into();
        assert!(render(&f).contains(r#"ferry_agent_info{version="0.1.0 \"dev\"\\x"} 1"#));
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(1_831), "1.831");
        assert_eq!(seconds(3_600_000), "3600.000");
        assert_eq!(unix_seconds("2026-12-01T10:00:00Z"), Some(1_796_119_200));
        assert_eq!(
            unix_seconds("2026-12-01T11:00:00+01:00"),
            Some(1_796_119_200)
        );
        assert_eq!(unix_seconds("yesterday"), None);
    }

    /// A family's value for `labels` (any order), as a real Prometheus text-format parser
    /// reads the file; `None` when the family or the series is missing.
    fn parsed(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use openmetrics_parser::PrometheusValue;
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text).unwrap();
        let f = exposition.families.get(family)?;
        let values: Vec<String> = f
            .get_label_names()
            .iter()
            .map(|name| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| (*v).to_owned())
                    .unwrap_or_default()
            })
            .collect();
        match &f.get_sample_by_label_values(&values)?.value {
            PrometheusValue::Gauge(n) => Some(n.as_f64()),
            other => panic!("{family} is not a gauge: {other:?}"),
        }
    }

    #[test]
    fn a_prometheus_parser_reads_every_family_as_a_typed_gauge() {
        use openmetrics_parser::PrometheusType;
        let mut f = figures();
        // Label values that need escaping survive the round trip.
        f.services[0].name = "we\"ird\\name".into();
        let text = render(&f);
        let exposition = openmetrics_parser::prometheus::parse_prometheus(&text).unwrap();
        let mut names: Vec<&str> = exposition.families.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "ferry_agent_info",
                "ferry_last_success_timestamp_seconds",
                "ferry_service_healthy",
                "ferry_service_info",
                "ferry_service_last_change_timestamp_seconds",
                "ferry_service_quarantined",
                "ferry_tick_bucket_requests",
                "ferry_tick_duration_seconds",
                "ferry_tick_exit_code",
                "ferry_tick_outcome",
                "ferry_tick_peak_rss_bytes",
                "ferry_tick_phase_duration_seconds",
                "ferry_tick_services_changed",
                "ferry_tick_services_failed",
                "ferry_tick_timestamp_seconds",
            ]
        );
        for (name, family) in &exposition.families {
            assert!(name.starts_with("ferry_") && !name.ends_with("_total"));
            assert!(!family.help.is_empty(), "{name} has no HELP");
            assert!(
                matches!(family.family_type, PrometheusType::Gauge),
                "{name}: {:?}",
                family.family_type
            );
        }
        let api = "we\"ird\\name";
        assert_eq!(
            parsed(
                &text,
                "ferry_service_info",
                &[
                    ("service", api),
                    ("store_path", "/nix/store/aaaa-api-2"),
                    ("generation", "2026-12-01T10:00:00Z"),
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            parsed(&text, "ferry_service_healthy", &[("service", api)]),
            Some(1.0)
        );
        assert_eq!(
            parsed(&text, "ferry_service_quarantined", &[("service", "web")]),
            Some(1.0)
        );
        assert_eq!(
            parsed(&text, "ferry_tick_outcome", &[("outcome", "failed")]),
            Some(1.0)
        );
        assert_eq!(
            parsed(&text, "ferry_tick_outcome", &[("outcome", "ok")]),
            Some(0.0)
        );
        assert_eq!(
            parsed(&text, "ferry_tick_duration_seconds", &[]),
            Some(1.831)
        );
        assert_eq!(
            parsed(
                &text,
                "ferry_tick_phase_duration_seconds",
                &[("phase", "pull")]
            ),
            Some(0.221)
        );
        assert_eq!(
            parsed(&text, "ferry_tick_peak_rss_bytes", &[]),
            Some(17_715_200.0)
        );
        assert_eq!(
            parsed(&text, "ferry_last_success_timestamp_seconds", &[]),
            Some(1_796_119_000.0)
        );
    }

    #[test]
    fn the_parser_is_strict_enough_to_catch_what_escaping_prevents() {
        // What the file would say without escaping, or with a broken line: refused.
        for broken in [
            "# TYPE a gauge\na{s=\"we\"ird\"} 1\n",
            "# TYPE a gauge\na{s=\"x\"}\n",
            "# TYPE a gauge\na 1 2 3 4\n",
        ] {
            assert!(
                openmetrics_parser::prometheus::parse_prometheus(broken).is_err(),
                "{broken:?} parsed"
            );
        }
    }

    #[test]
    fn figures_come_from_state_and_the_tick_summary() {
        use crate::state::{Applied, Quarantined, ServiceStatusRecord};
        let m: ferry_schema::Manifest =
            serde_json::from_str(include_str!("../../schema/tests/fixtures/example.json")).unwrap();
        let mut state = State {
            last_ok_at: Some("2026-12-01T09:00:00Z".into()),
            ..State::default()
        };
        let record = |s: ServiceState| ServiceStatusRecord {
            state: s,
            store_path: "/nix/store/x".into(),
            since: "2026-12-01T10:00:00Z".into(),
            message: None,
        };
        let quarantined = Quarantined {
            store_path: "/nix/store/bad".into(),
            unit: None,
            reason: "failed health check".into(),
            at: "2026-12-01T10:00:00Z".into(),
            rolled_back_to: None,
            generation: None,
        };
        // `up` runs healthy; `back` was rolled back and its new version is held back;
        // `new` failed with nothing to go back to.
        for name in ["up", "back"] {
            state.services.insert(
                name.into(),
                Applied {
                    service: m.services[0].clone(),
                    applied_at: "2026-12-01T10:00:00Z".into(),
                    live_port: None,
                },
            );
        }
        state
            .service_status
            .insert("up".into(), record(ServiceState::Running));
        state
            .service_status
            .insert("back".into(), record(ServiceState::RolledBack));
        state
            .service_status
            .insert("new".into(), record(ServiceState::Failed));
        state.quarantine.insert("back".into(), quarantined.clone());
        state.quarantine.insert("new".into(), quarantined);
        let summary = TickSummary {
            at: "2026-12-01T10:00:00Z".into(),
            outcome: Outcome::Failed,
            exit_code: 1,
            wall_ms: 2_500,
            phase_ms: BTreeMap::from([("pull".to_owned(), 100)]),
            bucket_requests: 1,
            caddy_requests: 2,
            peak_rss_kib: Some(20_000),
            changed: vec!["up".into()],
            failed: vec!["back".into(), "new".into()],
            generation: Some("7".into()),
            status_requests: 0,
            records_changed: false,
            message: None,
        };
        let f = super::figures(&state, &summary, "0.1.0");
        let by_name: BTreeMap<&str, &ServiceFigures> =
            f.services.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["back", "new", "up"]
        );
        let path = &m.services[0].artifact.store_path;
        assert_eq!(
            *by_name["up"],
            ServiceFigures {
                name: "up".into(),
                store_path: Some(path.clone()),
                generation: Some("7".into()),
                healthy: true,
                quarantined: false,
                last_change: Some(1_796_119_200),
            }
        );
        assert!(!by_name["back"].healthy && by_name["back"].quarantined);
        assert_eq!(by_name["back"].store_path.as_deref(), Some(path.as_str()));
        assert!(!by_name["new"].healthy && by_name["new"].quarantined);
        assert_eq!(by_name["new"].store_path, None);
        assert_eq!(
            f.tick,
            TickFigures {
                outcome: Outcome::Failed,
                exit_code: 1,
                started: 1_796_119_200,
                wall_ms: 2_500,
                phases: BTreeMap::from([("pull".to_owned(), 100)]),
                bucket_requests: 1,
                peak_rss_kib: Some(20_000),
                services_changed: 1,
                services_failed: 2,
            }
        );
        assert_eq!(f.last_success, Some(1_796_115_600));
    }
}

//! The effective health check of a service: the manifest's `healthCheck` with its defaults
//! filled in, or the default check when it has none, plus the schedule of tries and the
//! verdicts on what a probe and systemd report. Pure: no I/O, tested on literals.

use std::fmt;
use std::time::Duration;

use ferry_schema::manifest::{HealthCheckKind, Service};

use crate::vocab::UnitState;

// The defaults live with the manifest's budget rules, which validation applies.
pub use ferry_schema::health_budget::{
    DEFAULT_DEADLINE_SEC, DEFAULT_INTERVAL_SEC, DEFAULT_RETRIES, DEFAULT_START_PERIOD_SEC,
    DEFAULT_TIMEOUT_SEC, Timings,
};

/// What is probed, always on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET http://127.0.0.1:<port><path>`.
    Http {
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
        /// The status that counts as healthy; `None`: any status below 500.
        expect: Option<u16>,
    },
    /// A TCP connect to `127.0.0.1:<port>`.
    Tcp {
        /// Port.
        port: u16,
    },
    /// No probe: the unit is active and not restarting at the end of the start period.
    Systemd,
}

/// A service's health check with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// What to probe.
    pub check: Check,
    /// Wait after the start job before the first probe.
    pub start_period: Duration,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Limit for one probe.
    pub timeout: Duration,
    /// Probes before giving up (at least 1): as many as fit the deadline, or `retries`
    /// (see [`Timings::tries`]).
    pub tries: u32,
}

/// The check a service gets. A `healthCheck` fills its gaps from the defaults (port from
/// `http.internalPort`); without one, a service with `http` gets `GET /` on its port, any
/// status below 500 passing, and a service without `http` gets systemd's view only. A probe
/// with no port to use (validation refuses that manifest) also falls back to systemd's view.
pub fn effective(service: &Service) -> HealthSpec {
    let hc = service.health_check.clone().unwrap_or_default();
    let http_port = service.http.as_ref().map(|h| h.internal_port);
    let check = match (&service.health_check, hc.port.or(http_port)) {
        (None, Some(port)) => Check::Http {
            port,
            path: "/".to_owned(),
            expect: None,
        },
        (None, None) => Check::Systemd,
        (Some(h), Some(port)) => match h.kind {
            HealthCheckKind::Http => Check::Http {
                port,
                path: h.path.clone().unwrap_or_else(|| "/".to_owned()),
                expect: h.expect_status,
            },
            HealthCheckKind::Tcp => Check::Tcp { port },
            HealthCheckKind::None => Check::Systemd,
        },
        (Some(_), None) => Check::Systemd,
    };
    // One schedule for the agent and the budget validation holds manifests to.
    let t = Timings::of(&hc);
    HealthSpec {
        check,
        start_period: Duration::from_secs(t.start_period),
        interval: Duration::from_secs(t.interval),
        timeout: Duration::from_secs(t.timeout),
        tries: t.tries(),
    }
}

impl HealthSpec {
    /// When each probe starts, counted from the end of the start job: the start period,
    /// then one interval apart. A systemd-only check looks once, at the end of the start
    /// period.
    pub fn schedule(&self) -> Vec<Duration> {
        let tries = match self.check {
            Check::Systemd => 1,
            _ => self.tries,
        };
        (0..tries)
            .map(|i| self.start_period + self.interval * i)
            .collect()
    }

    /// The longest a check can take: the last try's start plus its timeout.
    pub fn worst_case(&self) -> Duration {
        let last = self.schedule().last().copied().unwrap_or(self.start_period);
        match self.check {
            Check::Systemd => last,
            _ => last + self.timeout,
        }
    }

    /// The same check on another port (a blue-green instance's).
    pub fn on_port(&self, port: u16) -> Self {
        let mut s = self.clone();
        match &mut s.check {
            Check::Http { port: p, .. } | Check::Tcp { port: p } => *p = port,
            Check::Systemd => {}
        }
        s
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Http {
                port,
                path,
                expect: Some(status),
            } => write!(f, "HTTP GET 127.0.0.1:{port}{path} expecting {status}"),
            Check::Http { port, path, .. } => {
                write!(
                    f,
                    "HTTP GET 127.0.0.1:{port}{path} expecting a status below 500"
                )
            }
            Check::Tcp { port } => write!(f, "TCP connect to 127.0.0.1:{port}"),
            Check::Systemd => f.write_str("unit active and not restarting"),
        }
    }
}

/// Whether an HTTP status passes a check expecting `expect`.
pub fn status_passes(expect: Option<u16>, status: u16) -> bool {
    match expect {
        Some(want) => status == want,
        None => status < 500,
    }
}

/// Why a started version is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every probe failed; `last` says how the last one did ("HTTP 503 on /health").
    Probe {
        /// What the last try saw.
        last: String,
        /// How many tries were made.
        tries: u32,
    },
    /// systemd says the unit is down or restarting.
    Unit {
        /// The unit.
        unit: String,
        /// `ActiveState/SubState`.
        state: String,
        /// `NRestarts` right after the start job.
        restarts_before: u32,
        /// `NRestarts` now.
        restarts_now: u32,
        /// `ExecMainStatus`.
        exit_status: i32,
    },
    /// systemd no longer has the unit loaded.
    NotLoaded {
        /// The unit.
        unit: String,
    },
    /// systemd could not be asked.
    Systemd(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Probe { last, tries } => write!(
                f,
                "failed health check ({last} after {tries} {})",
                if *tries == 1 { "try" } else { "tries" }
            ),
            Failure::Unit {
                unit,
                state,
                restarts_before,
                restarts_now,
                exit_status,
            } if restarts_now > restarts_before => write!(
                f,
                "crash-looping: {unit} restarted {} time{} since its start (now {state}, exit status {exit_status}); see journalctl -u {unit}",
                restarts_now - restarts_before,
                if restarts_now - restarts_before == 1 {
                    ""
                } else {
                    "s"
                }
            ),
            Failure::Unit {
                unit,
                state,
                exit_status,
                ..
            } => write!(
                f,
                "{unit} is {state} (exit status {exit_status}); see journalctl -u {unit}"
            ),
            Failure::NotLoaded { unit } => write!(f, "{unit} is no longer loaded by systemd"),
            Failure::Systemd(e) => write!(f, "cannot read the unit's state: {e}"),
        }
    }
}

/// systemd's view of health: the unit is loaded, `active`, and has not been restarted
/// automatically since `restarts_before` was read.
pub fn unit_verdict(
    unit: &str,
    restarts_before: u32,
    state: Option<&UnitState>,
) -> Result<(), Failure> {
    let Some(s) = state else {
        return Err(Failure::NotLoaded {
            unit: unit.to_owned(),
        });
    };
    if s.active_state == "active" && s.n_restarts <= restarts_before {
        return Ok(());
    }
    Err(Failure::Unit {
        unit: unit.to_owned(),
        state: format!("{}/{}", s.active_state, s.sub_state),
        restarts_before,
        restarts_now: s.n_restarts,
        exit_status: s.exec_main_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(extra: serde_json::Value) -> Service {
        let mut json = serde_json::json!({
            "name": "web",
            "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"],
            "exec": {"command": "web"},
        });
        if let (Some(obj), Some(more)) = (json.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        serde_json::from_value(json).unwrap()
    }

    fn http() -> serde_json::Value {
        serde_json::json!({"domain": "example.com", "path": "/", "internalPort": 8000})
    }

    #[test]
    fn the_budget_validation_caps_is_the_worst_case_the_agent_waits() {
        use ferry_schema::health_budget::service_sec;
        let checks = [
            serde_json::json!({}),
            serde_json::json!({"http": http()}),
            serde_json::json!({"http": http(), "healthCheck": {"type": "tcp", "retries": 7,
                "intervalSec": 3, "timeoutSec": 5, "startPeriodSec": 9}}),
            serde_json::json!({"http": http(), "healthCheck": {"type": "none", "startPeriodSec": 4}}),
            serde_json::json!({"healthCheck": {"type": "http", "retries": 3}}),
            serde_json::json!({"http": http(), "healthCheck": {"type": "http", "deadlineSec": 45,
                "intervalSec": 4}}),
            serde_json::json!({"http": http(), "healthCheck": {"type": "tcp", "startPeriodSec": 300,
                "intervalSec": 30, "timeoutSec": 30}}),
        ];
        for extra in checks {
            let s = service(extra.clone());
            assert_eq!(
                effective(&s).worst_case().as_secs(),
                service_sec(&s),
                "{extra}"
            );
        }
    }

    #[test]
    fn http_service_without_health_check_gets_get_slash_below_500() {
        let s = effective(&service(serde_json::json!({"http": http()})));
        assert_eq!(
            s,
            HealthSpec {
                check: Check::Http {
                    port: 8000,
                    path: "/".into(),
                    expect: None
                },
                start_period: Duration::from_secs(2),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                tries: 57,
            }
        );
        assert_eq!(
            s.check.to_string(),
            "HTTP GET 127.0.0.1:8000/ expecting a status below 500"
        );
    }

    /// The seconds at which each probe of `healthCheck` starts, and the worst case.
    fn schedule_of(hc: serde_json::Value) -> (Vec<u64>, u64) {
        let s = effective(&service(
            serde_json::json!({"http": http(), "healthCheck": hc}),
        ));
        (
            s.schedule().iter().map(Duration::as_secs).collect(),
            s.worst_case().as_secs(),
        )
    }

    #[test]
    fn by_default_probes_run_a_second_apart_until_the_60_s_deadline() {
        // From the 2 s start period, one a second, the last starting at 58 s so its 2 s
        // timeout ends at the deadline: a service binding its port after 20 s passes on
        // the 19th try, one that never answers is given up on at 60 s.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "http", "path": "/health"}));
        assert_eq!(secs, (2..=58).collect::<Vec<u64>>());
        assert_eq!(worst, 60);
        assert_eq!(secs.iter().position(|&t| t >= 20), Some(18));
        // The same without any healthCheck (the HTTP default of a service with `http`).
        let s = effective(&service(serde_json::json!({"http": http()})));
        assert_eq!((s.tries, s.worst_case()), (57, Duration::from_secs(60)));
    }

    #[test]
    fn deadline_sec_bounds_the_tries_and_retries_caps_them() {
        // Every 5 s from 2 s: 27 s is the last start whose 2 s timeout ends by 30 s.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "http", "deadlineSec": 30,
            "intervalSec": 5}));
        assert_eq!((secs, worst), (vec![2, 7, 12, 17, 22, 27], 29));
        // Both: whichever comes first.
        let (secs, _) = schedule_of(serde_json::json!({"type": "tcp", "deadlineSec": 30,
            "intervalSec": 5, "retries": 3}));
        assert_eq!(secs, [2, 7, 12]);
        let (secs, _) = schedule_of(serde_json::json!({"type": "tcp", "deadlineSec": 6,
            "retries": 10}));
        assert_eq!(secs, [2, 3, 4]);
        // A deadline the first probe cannot meet (validation refuses it) still probes once.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "tcp", "deadlineSec": 1,
            "startPeriodSec": 5}));
        assert_eq!((secs, worst), (vec![5], 7));
    }

    #[test]
    fn manifests_from_before_deadlines_are_given_up_on_no_sooner_than_before() {
        // `retries` alone keeps its meaning: exactly that many tries.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "http", "startPeriodSec": 1,
            "intervalSec": 1, "timeoutSec": 1, "retries": 3}));
        assert_eq!((secs, worst), (vec![1, 2, 3], 4));
        // Long intervals and timeouts without retries: the 5 default tries (152 s) are longer
        // than 60 s, so they still all run.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "http", "intervalSec": 30,
            "timeoutSec": 30}));
        assert_eq!((secs, worst), (vec![2, 32, 62, 92, 122], 152));
        // A long start period alone moves the deadline with it.
        let (secs, worst) = schedule_of(serde_json::json!({"type": "http",
            "startPeriodSec": 120}));
        assert_eq!((secs, worst), (vec![120, 121, 122, 123, 124], 126));
    }

    #[test]
    fn service_without_http_gets_systemds_view_once_after_the_start_period() {
        let s = effective(&service(serde_json::json!({})));
        assert_eq!(s.check, Check::Systemd);
        assert_eq!(s.schedule(), [Duration::from_secs(2)]);
        assert_eq!(s.worst_case(), Duration::from_secs(2));
    }

    #[test]
    fn manifest_values_override_defaults_and_port_falls_back_to_internal_port() {
        let s = effective(&service(serde_json::json!({
            "http": http(),
            "healthCheck": {"type": "http", "path": "/health", "expectStatus": 200,
                "startPeriodSec": 0, "intervalSec": 3, "timeoutSec": 1, "retries": 4},
        })));
        assert_eq!(
            s.check,
            Check::Http {
                port: 8000,
                path: "/health".into(),
                expect: Some(200)
            }
        );
        let secs: Vec<u64> = s.schedule().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 3, 6, 9]);
        assert_eq!(s.worst_case(), Duration::from_secs(10));

        let tcp = effective(&service(serde_json::json!({
            "healthCheck": {"type": "tcp", "port": 5432},
        })));
        assert_eq!(tcp.check, Check::Tcp { port: 5432 });
        assert_eq!(tcp.schedule().len(), 57);
        assert_eq!(tcp.on_port(5433).check, Check::Tcp { port: 5433 });

        let none = effective(&service(serde_json::json!({
            "http": http(), "healthCheck": {"type": "none", "startPeriodSec": 7},
        })));
        assert_eq!(none.check, Check::Systemd);
        assert_eq!(none.schedule(), [Duration::from_secs(7)]);
    }

    #[test]
    fn http_check_without_any_port_falls_back_to_systemd() {
        let s = effective(&service(
            serde_json::json!({"healthCheck": {"type": "http"}}),
        ));
        assert_eq!(s.check, Check::Systemd);
    }

    #[test]
    fn statuses() {
        assert!(status_passes(None, 200));
        assert!(status_passes(None, 404));
        assert!(!status_passes(None, 500));
        assert!(!status_passes(None, 503));
        assert!(status_passes(Some(204), 204));
        assert!(!status_passes(Some(200), 204));
    }

    fn unit(active: &str, sub: &str, restarts: u32) -> UnitState {
        UnitState {
            active_state: active.into(),
            sub_state: sub.into(),
            n_restarts: restarts,
            exec_main_status: 1,
        }
    }

    #[test]
    fn systemds_view() {
        let u = "ferry-web.service";
        assert_eq!(
            unit_verdict(u, 0, Some(&unit("active", "running", 0))),
            Ok(())
        );
        let looping = unit_verdict(u, 0, Some(&unit("activating", "auto-restart", 2))).unwrap_err();
        assert_eq!(
            looping.to_string(),
            "crash-looping: ferry-web.service restarted 2 times since its start (now activating/auto-restart, exit status 1); see journalctl -u ferry-web.service"
        );
        // Restarted and back up by the time we look: still a crash.
        assert_eq!(
            unit_verdict(u, 3, Some(&unit("active", "running", 4)))
                .unwrap_err()
                .to_string(),
            "crash-looping: ferry-web.service restarted 1 time since its start (now active/running, exit status 1); see journalctl -u ferry-web.service"
        );
        assert_eq!(
            unit_verdict(u, 0, Some(&unit("failed", "failed", 0)))
                .unwrap_err()
                .to_string(),
            "ferry-web.service is failed/failed (exit status 1); see journalctl -u ferry-web.service"
        );
        assert_eq!(
            unit_verdict(u, 0, None),
            Err(Failure::NotLoaded { unit: u.into() })
        );
    }

    #[test]
    fn probe_failure_reads_like_the_issue() {
        let f = Failure::Probe {
            last: "HTTP 503 on /health".into(),
            tries: 5,
        };
        assert_eq!(
            f.to_string(),
            "failed health check (HTTP 503 on /health after 5 tries)"
        );
    }
}

//! Watching a freshly started unit until it is healthy or has failed: the spec's schedule of
//! probes, with systemd's view (active, `NRestarts` not growing) checked before every probe
//! and once more at the end of the settle time, so a crash-looping process fails even when
//! a probe happened to catch it up.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::spec::{Check, Failure, HealthSpec, status_passes, unit_verdict};
use crate::backend::probe::Probe;
use crate::backend::systemd::Systemd;

/// A passed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healthy {
    /// Probes made (1 for a systemd-only check).
    pub tries: u32,
    /// From the start of the watch to the verdict.
    pub took: Duration,
}

/// Watch `unit` (whose start job just ended with `NRestarts` = `restarts_before`) per `spec`.
/// A healthy verdict is never given before `settle` has passed since the start.
pub async fn watch<P: Probe, D: Systemd>(
    unit: &str,
    spec: &HealthSpec,
    restarts_before: u32,
    settle: Duration,
    probe: &P,
    systemd: &D,
) -> Result<Healthy, Failure> {
    let start = Instant::now();
    let systemd_view = || async {
        let state = systemd
            .unit_state(unit)
            .await
            .map_err(|e| Failure::Systemd(e.to_string()))?;
        unit_verdict(unit, restarts_before, state.as_ref())
    };
    let mut tries = 0;
    let mut last = String::new();
    for offset in spec.schedule() {
        sleep_until(start + offset).await;
        systemd_view().await?;
        tries += 1;
        match try_once(&spec.check, spec.timeout, probe).await {
            Ok(()) => {
                sleep_until(start + settle).await;
                systemd_view().await?;
                return Ok(Healthy {
                    tries,
                    took: start.elapsed(),
                });
            }
            Err(why) => {
                tracing::debug!(unit, tries, "health probe failed: {why}");
                last = why;
            }
        }
    }
    Err(Failure::Probe { last, tries })
}

/// One probe; `Err` says what it saw, in the words of the final message.
async fn try_once<P: Probe>(check: &Check, timeout: Duration, probe: &P) -> Result<(), String> {
    match check {
        Check::Systemd => Ok(()),
        Check::Tcp { port } => probe
            .tcp_connect(*port, timeout)
            .await
            .map_err(|e| e.to_string()),
        Check::Http { port, path, expect } => match probe.http_status(*port, path, timeout).await {
            Ok(status) if status_passes(*expect, status) => Ok(()),
            Ok(status) => Err(match expect {
                Some(want) => format!("HTTP {status} on {path} instead of {want}"),
                None => format!("HTTP {status} on {path}"),
            }),
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    //! On in-memory probes and systemd with tokio's paused clock, so schedules run instantly.

    use std::sync::Mutex;

    use super::*;
    use crate::backend::probe::ProbeError;
    use crate::backend::systemd::{SystemdError, UnitState};
    use crate::plan::Job;

    /// Answers HTTP probes from a script, one answer per try (the last repeats), counting them.
    struct Script(Mutex<Vec<Result<u16, ProbeError>>>, Mutex<u32>);
    impl Script {
        fn new(answers: Vec<Result<u16, ProbeError>>) -> Self {
            Self(Mutex::new(answers), Mutex::new(0))
        }
    }
    impl Probe for Script {
        async fn http_status(&self, _: u16, _: &str, _: Duration) -> Result<u16, ProbeError> {
            *self.1.lock().unwrap() += 1;
            let mut a = self.0.lock().unwrap();
            if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            }
        }
        async fn tcp_connect(&self, port: u16, after: Duration) -> Result<(), ProbeError> {
            Err(ProbeError::Timeout { port, after })
        }
    }

    /// Reports `NRestarts` growing by `per_look` on every look.
    struct Restarting(Mutex<u32>, u32);
    impl Systemd for Restarting {
        async fn reload(&self) -> Result<(), SystemdError> {
            Ok(())
        }
        async fn run_job(&self, _: &str, _: Job) -> Result<String, SystemdError> {
            Ok("done".into())
        }
        async fn unit_files(&self, _: &str) -> Result<Vec<String>, SystemdError> {
            Ok(Vec::new())
        }
        async fn dynamic_users(&self) -> Result<Vec<(u32, String)>, SystemdError> {
            Ok(Vec::new())
        }
        async fn unit_state(&self, _: &str) -> Result<Option<UnitState>, SystemdError> {
            let mut n = self.0.lock().unwrap();
            *n += self.1;
            Ok(Some(UnitState {
                active_state: "active".into(),
                sub_state: "running".into(),
                n_restarts: *n,
                exec_main_status: 0,
            }))
        }
    }

    fn spec(check: Check) -> HealthSpec {
        HealthSpec {
            check,
            start_period: Duration::from_secs(2),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            tries: 5,
        }
    }

    fn http() -> Check {
        Check::Http {
            port: 8000,
            path: "/health".into(),
            expect: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_version_fails_after_every_try() {
        let probe = Script::new(vec![Ok(503)]);
        let sd = Restarting(Mutex::new(0), 0);
        let started = Instant::now();
        let e = watch(
            "ferry-web.service",
            &spec(http()),
            0,
            Duration::ZERO,
            &probe,
            &sd,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed health check (HTTP 503 on /health after 5 tries)"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_starter_passes_on_a_later_try_after_the_settle_time() {
        let refused = Err(ProbeError::Connect {
            port: 8000,
            reason: "refused".into(),
        });
        let probe = Script::new(vec![refused.clone(), refused, Ok(200)]);
        let sd = Restarting(Mutex::new(0), 0);
        let ok = watch(
            "ferry-web.service",
            &spec(http()),
            0,
            Duration::from_secs(10),
            &probe,
            &sd,
        )
        .await
        .unwrap();
        assert_eq!(ok.tries, 3);
        assert_eq!(ok.took, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn growing_restarts_fail_before_any_probe_passes() {
        let probe = Script::new(vec![Ok(200)]);
        let sd = Restarting(Mutex::new(0), 1);
        let e = watch(
            "ferry-web.service",
            &spec(http()),
            0,
            Duration::ZERO,
            &probe,
            &sd,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().starts_with("crash-looping"), "{e}");
        assert_eq!(*probe.1.lock().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn systemd_only_check_looks_once_at_the_end_of_the_start_period() {
        let probe = Script::new(vec![Ok(500)]);
        let sd = Restarting(Mutex::new(0), 0);
        let ok = watch(
            "ferry-db.service",
            &spec(Check::Systemd),
            0,
            Duration::ZERO,
            &probe,
            &sd,
        )
        .await
        .unwrap();
        assert_eq!(ok.tries, 1);
        assert_eq!(ok.took, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn expected_status_is_named_and_tcp_errors_are_reported() {
        let probe = Script::new(vec![Ok(404)]);
        let sd = Restarting(Mutex::new(0), 0);
        let mut s = spec(Check::Http {
            port: 8000,
            path: "/ready".into(),
            expect: Some(200),
        });
        s.tries = 2;
        let e = watch("u", &s, 0, Duration::ZERO, &probe, &sd)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed health check (HTTP 404 on /ready instead of 200 after 2 tries)"
        );
        let mut t = spec(Check::Tcp { port: 5432 });
        t.tries = 1;
        let e = watch("u", &t, 0, Duration::ZERO, &probe, &sd)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed health check (no answer from 127.0.0.1:5432 within 2s after 1 try)"
        );
    }
}

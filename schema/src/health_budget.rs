//! How long the agent may wait on health checks: one service's worst case (its check's
//! schedule to the last try's timeout) and one tick's on one host (dependency levels run one
//! after another, a level's services at once), with the caps validation holds manifests
//! to. Without them `retries: 1000` with `intervalSec: 3600` was a valid manifest that kept
//! a tick — and a boot waiting for it — busy for weeks. Pure.

use std::collections::BTreeMap;

use crate::manifest::{HealthCheck, HealthCheckKind, Service};

/// Seconds from start to the first probe when the manifest says nothing.
pub const DEFAULT_START_PERIOD_SEC: u32 = 2;
/// Seconds between probes when the manifest says nothing.
pub const DEFAULT_INTERVAL_SEC: u32 = 1;
/// Seconds one probe may take when the manifest says nothing.
pub const DEFAULT_TIMEOUT_SEC: u32 = 2;
/// The tries whose length is the least a default deadline gives (the check's length before
/// deadlines existed, so no manifest is given up on sooner than it was).
pub const DEFAULT_RETRIES: u32 = 5;
/// Seconds from start within which a version must pass when the manifest sets neither
/// `deadlineSec` nor `retries`: a service that runs a 20 s migration before binding its port
/// passes, and one that never answers is rolled back after a minute (kamal-proxy's deploy
/// timeout is 30 s; twice that leaves room for a cold cache).
pub const DEFAULT_DEADLINE_SEC: u32 = 60;

/// The most one service's health check may take, in seconds: 15 minutes (a slow runtime's
/// 5-minute start period plus 20 tries 30 s apart still fits; the default check takes 60 s).
pub const MAX_SERVICE_SEC: u64 = 900;
/// The most one tick may wait on health checks on one host, in seconds: 30 minutes, the
/// time the NixOS module gives the agent's unit to start (`TimeoutStartSec`), so a tick is
/// never killed by systemd half-way through its checks.
pub const MAX_TICK_SEC: u64 = 1800;

/// A probing check's timings with the defaults applied, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// From start to the first probe.
    pub start_period: u64,
    /// Between the starts of two probes (at least 1).
    pub interval: u64,
    /// The most one probe may take.
    pub timeout: u64,
    /// Tries at most, when the manifest caps them.
    pub retries: Option<u32>,
    /// No probe starts that could end after this, counted from start.
    pub deadline: u64,
}

impl Timings {
    /// `healthCheck`'s timings (the defaults for what it leaves out). The deadline is
    /// `deadlineSec`; else, with `retries` set, the end of exactly those tries (what a
    /// manifest written before deadlines existed meant); else 60 s, or the 5 default tries'
    /// length when a long interval or timeout makes that longer.
    pub fn of(hc: &HealthCheck) -> Self {
        let start_period = u64::from(hc.start_period_sec.unwrap_or(DEFAULT_START_PERIOD_SEC));
        let interval = u64::from(hc.interval_sec.unwrap_or(DEFAULT_INTERVAL_SEC).max(1));
        let timeout = u64::from(hc.timeout_sec.unwrap_or(DEFAULT_TIMEOUT_SEC));
        let retries = hc.retries.map(|r| r.max(1));
        let tries_end = |n: u32| start_period + interval * u64::from(n - 1) + timeout;
        let deadline = match (hc.deadline_sec, retries) {
            (Some(d), _) => u64::from(d),
            (None, Some(n)) => tries_end(n),
            (None, None) => u64::from(DEFAULT_DEADLINE_SEC).max(tries_end(DEFAULT_RETRIES)),
        };
        Self {
            start_period,
            interval,
            timeout,
            retries,
            deadline,
        }
    }

    /// How many probes run at most: one at the start period, then one every interval while
    /// it could end (its timeout) by the deadline, and no more than `retries`. Always at
    /// least one, so a deadline shorter than the start period still gets its probe.
    pub fn tries(&self) -> u32 {
        let room = self
            .deadline
            .saturating_sub(self.start_period + self.timeout);
        let fit = u32::try_from(room / self.interval)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        self.retries.map_or(fit, |r| fit.min(r))
    }

    /// The longest the check can take: the last try's start plus its timeout.
    pub fn worst_case(&self) -> u64 {
        self.start_period + self.interval * u64::from(self.tries() - 1) + self.timeout
    }
}

/// Whether the service's check probes (HTTP or TCP) rather than only asking systemd: it does
/// when its kind says so and a port is known.
pub fn probes(service: &Service) -> bool {
    let port = service
        .health_check
        .as_ref()
        .and_then(|h| h.port)
        .or(service.http.as_ref().map(|h| h.internal_port));
    match &service.health_check {
        None => port.is_some(),
        Some(h) => h.kind != HealthCheckKind::None && port.is_some(),
    }
}

/// The longest `service`'s health check can take, in seconds: for a probing check its
/// [`Timings::worst_case`]; a systemd-only check looks once, at the end of the start period.
pub fn service_sec(service: &Service) -> u64 {
    let hc = service.health_check.clone().unwrap_or_default();
    if !probes(service) {
        return u64::from(hc.start_period_sec.unwrap_or(DEFAULT_START_PERIOD_SEC));
    }
    Timings::of(&hc).worst_case()
}

/// The longest one tick on `host` can wait on health checks, in seconds, with the services
/// of each `dependsOn` level: levels one after another, each as long as its slowest service.
/// A dependency cycle (refused elsewhere) counts its services one level each.
pub fn tick_sec<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    host: &str,
) -> (u64, Vec<Vec<&'a str>>) {
    let mine: BTreeMap<&str, &Service> = services
        .into_iter()
        .filter(|s| s.hosts.iter().any(|h| h == host))
        .map(|s| (s.name.as_str(), s))
        .collect();
    // Level = 1 + the deepest dependency on this host; at most one pass per service, so a
    // cycle cannot loop.
    let mut level: BTreeMap<&str, usize> = mine.keys().map(|n| (*n, 0)).collect();
    for _ in 0..mine.len() {
        let mut changed = false;
        for (name, s) in &mine {
            let deepest = s
                .depends_on
                .iter()
                .flatten()
                .filter_map(|d| level.get(d.as_str()).map(|l| l + 1))
                .max()
                .unwrap_or(0);
            if let Some(l) = level.get_mut(name)
                && deepest > *l
            {
                *l = deepest;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut levels: Vec<Vec<&str>> = Vec::new();
    for (name, l) in &level {
        if levels.len() <= *l {
            levels.resize(*l + 1, Vec::new());
        }
        levels[*l].push(name);
    }
    let total = levels
        .iter()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| mine.get(n).map(|s| service_sec(s)))
                .max()
                .unwrap_or(0)
        })
        .sum();
    (total, levels)
}

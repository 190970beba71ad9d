//! How long the agent may wait on health checks: one service's worst case (its check's
//! schedule to the last try's timeout) and one tick's on one host (dependency levels run one
//! after another, a level's services at once), with the caps validation holds manifests
//! to. Without them `retries: 1000` with `intervalSec: 3600` was a valid manifest that kept
//! a tick — and a boot waiting for it — busy for weeks. Pure.

use std::collections::BTreeMap;

use crate::manifest::{HealthCheckKind, Service};

/// Seconds from start to the first probe when the manifest says nothing.
pub const DEFAULT_START_PERIOD_SEC: u32 = 2;
/// Seconds between probes when the manifest says nothing.
pub const DEFAULT_INTERVAL_SEC: u32 = 1;
/// Seconds one probe may take when the manifest says nothing.
pub const DEFAULT_TIMEOUT_SEC: u32 = 2;
/// Probes before a version counts as unhealthy when the manifest says nothing.
pub const DEFAULT_RETRIES: u32 = 5;

/// The most one service's health check may take, in seconds: 15 minutes (a slow runtime's
/// 5-minute start period plus 20 tries 30 s apart still fits; the default check takes 8 s).
pub const MAX_SERVICE_SEC: u64 = 900;
/// The most one tick may wait on health checks on one host, in seconds: 30 minutes, the
/// time the NixOS module gives the agent's unit to start (`TimeoutStartSec`), so a tick is
/// never killed by systemd half-way through its checks.
pub const MAX_TICK_SEC: u64 = 1800;

/// Whether the service's check probes (HTTP or TCP) rather than only asking systemd: it does
/// when its kind says so and a port is known.
fn probes(service: &Service) -> bool {
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

/// The longest `service`'s health check can take, in seconds: the start period, then
/// `retries` probes `intervalSec` apart, the last one given `timeoutSec`; a systemd-only
/// check looks once, at the end of the start period.
pub fn service_sec(service: &Service) -> u64 {
    let hc = service.health_check.clone().unwrap_or_default();
    let start = u64::from(hc.start_period_sec.unwrap_or(DEFAULT_START_PERIOD_SEC));
    if !probes(service) {
        return start;
    }
    let interval = u64::from(hc.interval_sec.unwrap_or(DEFAULT_INTERVAL_SEC));
    let timeout = u64::from(hc.timeout_sec.unwrap_or(DEFAULT_TIMEOUT_SEC));
    let retries = u64::from(hc.retries.unwrap_or(DEFAULT_RETRIES).max(1));
    start + interval * (retries - 1) + timeout
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

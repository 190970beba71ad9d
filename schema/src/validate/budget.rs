//! Health-check budgets: a service whose check could take longer than
//! [`MAX_SERVICE_SEC`], and a host whose tick could wait longer than [`MAX_TICK_SEC`] on
//! checks, are refused with the numbers that make it up and what to lower.

use std::collections::BTreeSet;

use super::report::{Report, q, service_pointer, who};
use crate::health_budget::{MAX_SERVICE_SEC, MAX_TICK_SEC, service_sec, tick_sec};
use crate::manifest::Service;

/// Checks every service's budget and every host's tick.
pub fn check(services: &[(usize, &Service)], report: &mut Report) {
    let mut over = BTreeSet::new();
    for (i, s) in services {
        let sec = service_sec(s);
        if sec > MAX_SERVICE_SEC {
            over.insert(s.name.as_str());
            report.error(
                format!("{}/healthCheck", service_pointer(*i)),
                format!(
                    "{}: the health check may take up to {sec} s (startPeriodSec, then tries \
                     intervalSec apart until deadlineSec or retries, the last one given \
                     timeoutSec); the limit is {MAX_SERVICE_SEC} s: lower \
                     healthCheck.deadlineSec, retries, intervalSec, timeoutSec or \
                     startPeriodSec",
                    who(&s.name)
                ),
            );
        }
    }
    let hosts: BTreeSet<&str> = services
        .iter()
        .flat_map(|(_, s)| s.hosts.iter().map(String::as_str))
        .collect();
    for host in hosts {
        let (total, levels) = tick_sec(services.iter().map(|(_, s)| *s), host);
        // A host over only because one service is over says nothing new.
        if total <= MAX_TICK_SEC || levels.iter().flatten().any(|n| over.contains(n)) {
            continue;
        }
        let parts: Vec<String> = levels
            .iter()
            .map(|names| {
                let slowest = names
                    .iter()
                    .filter_map(|n| {
                        services
                            .iter()
                            .find(|(_, s)| s.name == *n)
                            .map(|(_, s)| (service_sec(s), *n))
                    })
                    .max();
                match slowest {
                    Some((sec, name)) => format!("{} {sec} s", q(name)),
                    None => "0 s".to_owned(),
                }
            })
            .collect();
        report.error(
            "/services",
            format!(
                "host {}: one tick may wait up to {total} s on health checks ({} dependsOn \
                 level{}, each as long as its slowest service: {}); the limit is \
                 {MAX_TICK_SEC} s: shorten those checks or run fewer services in sequence",
                q(host),
                levels.len(),
                if levels.len() == 1 { "" } else { "s" },
                parts.join(", ")
            ),
        );
    }
}

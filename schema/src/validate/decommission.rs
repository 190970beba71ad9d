//! Checks on `decommission`, the hosts a manifest empties on purpose: each a valid host name,
//! listed once, and named by no service (a host cannot be both emptied and deployed to).

use std::collections::HashSet;

use super::report::{Report, q, who};
use crate::manifest::Service;
use crate::names::is_valid_host_name;

/// Checks `decommission` against itself and against the services' `hosts`.
pub fn check(decommission: &[String], services: &[(usize, &Service)], report: &mut Report) {
    let mut seen = HashSet::new();
    for (k, host) in decommission.iter().enumerate() {
        let pointer = format!("/decommission/{k}");
        if !is_valid_host_name(host) {
            report.error(
                pointer,
                format!("decommission: host {} is not a valid host name: use the lowercase name the host's agent is configured with (letters, digits, `-`, dots between labels)", q(host)),
            );
            continue;
        }
        if !seen.insert(host.as_str()) {
            report.warn(
                pointer,
                format!(
                    "decommission: host {} is listed twice; remove the duplicate",
                    q(host)
                ),
            );
            continue;
        }
        let users: Vec<&str> = services
            .iter()
            .filter(|(_, s)| s.hosts.iter().any(|h| h == host))
            .map(|(_, s)| s.name.as_str())
            .collect();
        if let Some(first) = users.first() {
            report.error(
                pointer,
                format!(
                    "decommission: host {} is to be emptied, but {} {} on it; remove it from decommission to keep deploying there, or remove it from {}",
                    q(host),
                    users.iter().map(|n| who(n)).collect::<Vec<_>>().join(", "),
                    if users.len() == 1 { "runs" } else { "run" },
                    if users.len() == 1 {
                        format!("the hosts of {}", who(first))
                    } else {
                        "those services' hosts".to_owned()
                    }
                ),
            );
        }
    }
}

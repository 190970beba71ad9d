//! Checks on `rollout`, the health-gated waves (the manifest's, and each service's own):
//! every wave has an entry, every entry is a host name or a `*` pattern, a host name in a
//! wave is one the manifest names (a typo in the canary's name would otherwise let every
//! host go at once), and every host of a gated service is in some wave. Patterns that match
//! no host, waves left with no host of their own and names listed twice are warnings.

use std::collections::BTreeSet;

use super::report::{Report, q, service_pointer, who};
use crate::manifest::{Rollout, Service, wave_pattern_matches};
use crate::names::is_valid_host_name;

/// Checks the manifest-level rollout and every service's own, against the hosts the
/// manifest names (`decommission` included).
pub fn check(
    rollout: Option<&Rollout>,
    services: &[(usize, &Service)],
    decommission: &[String],
    report: &mut Report,
) {
    let named: BTreeSet<&str> = services
        .iter()
        .flat_map(|(_, s)| s.hosts.iter().map(String::as_str))
        .chain(decommission.iter().map(String::as_str))
        .collect();
    if let Some(r) = rollout {
        check_waves("/rollout", "rollout", r, &named, report);
    }
    for (i, s) in services {
        let own = s.rollout.as_ref();
        if let Some(r) = own {
            let base = format!("{}/rollout", service_pointer(*i));
            check_waves(
                &base,
                &format!("{}: rollout", who(&s.name)),
                r,
                &named,
                report,
            );
        }
        let Some(r) = own.or(rollout) else {
            continue;
        };
        if r.waves.is_empty() {
            continue;
        }
        for (j, host) in s.hosts.iter().enumerate() {
            if r.wave_of(host).is_none() {
                let whose = if own.is_some() {
                    "its own rollout"
                } else {
                    "the manifest's rollout"
                };
                report.error(
                    format!("{}/hosts/{j}", service_pointer(*i)),
                    format!(
                        "{}: host {} is in no wave of {whose}, so it could never be ordered; add it to a wave, or end the waves with [\"*\"] for every host not named before",
                        who(&s.name),
                        q(host)
                    ),
                );
            }
        }
    }
}

fn check_waves(base: &str, what: &str, r: &Rollout, named: &BTreeSet<&str>, report: &mut Report) {
    if r.waves.is_empty() {
        report.error(
            format!("{base}/waves"),
            format!("{what}: waves is empty; list at least one wave, e.g. [[\"canary-1\"], [\"*\"]], or leave rollout out"),
        );
        return;
    }
    let mut seen = BTreeSet::new();
    for (k, wave) in r.waves.iter().enumerate() {
        let pointer = format!("{base}/waves/{k}");
        if wave.is_empty() {
            report.error(
                pointer.clone(),
                format!("{what}: wave {k} is empty; name its hosts or remove it"),
            );
            continue;
        }
        for (j, entry) in wave.iter().enumerate() {
            let pointer = format!("{pointer}/{j}");
            if !is_valid_host_name(&entry.replace('*', "a")) {
                report.error(
                    pointer,
                    format!("{what}: wave {k} entry {} is neither a host name nor a pattern; use a lowercase host name, where `*` may stand for any run of characters (`web-*`, `*`)", q(entry)),
                );
                continue;
            }
            if !seen.insert(entry.as_str()) {
                report.warn(
                    pointer,
                    format!(
                        "{what}: {} is listed twice; a host belongs to the first wave that matches it, remove the other",
                        q(entry)
                    ),
                );
                continue;
            }
            let is_pattern = entry.contains('*');
            if !is_pattern && !named.contains(entry.as_str()) {
                report.error(
                    pointer,
                    format!("{what}: wave {k} names host {}, which no service of the manifest runs on; a misspelt canary would let every later host go at once: use a host name from the services' hosts", q(entry)),
                );
            } else if is_pattern && !named.iter().any(|h| wave_pattern_matches(entry, h)) {
                report.warn(
                    pointer,
                    format!(
                        "{what}: wave {k} pattern {} matches no host the manifest names",
                        q(entry)
                    ),
                );
            }
        }
    }
    let used: BTreeSet<usize> = named.iter().filter_map(|h| r.wave_of(h)).collect();
    for (k, wave) in r.waves.iter().enumerate() {
        let some_match = wave
            .iter()
            .any(|e| named.iter().any(|h| wave_pattern_matches(e, h)));
        if !used.contains(&k) && some_match {
            report.warn(
                format!("{base}/waves/{k}"),
                format!("{what}: wave {k} has no host of its own: every host it matches is in an earlier wave"),
            );
        }
    }
}

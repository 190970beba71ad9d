//! `dependsOn`: every name exists, no service depends on itself, and no cycles (the
//! message names the cycle).

use std::collections::HashMap;

use super::report::{Report, q, service_pointer, who};
use crate::manifest::Service;

/// Checks every service's `dependsOn`.
pub fn check(services: &[(usize, &Service)], report: &mut Report) {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .rev()
        .map(|(pos, (_, s))| (s.name.as_str(), pos))
        .collect();
    // edges[pos] = (entry index k, target pos) for each valid dependency.
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); services.len()];
    for (pos, (i, s)) in services.iter().enumerate() {
        let base = service_pointer(*i);
        let mut seen: Vec<&str> = Vec::new();
        for (k, dep) in s.depends_on.iter().flatten().enumerate() {
            let pointer = format!("{base}/dependsOn/{k}");
            if dep == &s.name {
                report.error(
                    pointer,
                    format!(
                        "{}: depends on itself; remove {} from dependsOn",
                        who(&s.name),
                        q(dep)
                    ),
                );
                continue;
            }
            if seen.contains(&dep.as_str()) {
                report.warn(
                    pointer,
                    format!(
                        "{}: {} is listed twice in dependsOn; remove the duplicate",
                        who(&s.name),
                        q(dep)
                    ),
                );
                continue;
            }
            seen.push(dep);
            let Some(&target) = index.get(dep.as_str()) else {
                let hint = closest(dep, index.keys().copied())
                    .map(|n| format!("; did you mean {}?", q(n)))
                    .unwrap_or_else(|| "; add that service or remove the entry".to_owned());
                report.error(
                    pointer,
                    format!(
                        "{}: depends on {}, which is not in this manifest{hint}",
                        who(&s.name),
                        q(dep)
                    ),
                );
                continue;
            };
            let other = services[target].1;
            if !s.hosts.iter().any(|h| other.hosts.contains(h)) {
                report.warn(
                    pointer,
                    format!("{}: depends on {}, which runs on none of its hosts; the agents will not wait for it", who(&s.name), q(dep)),
                );
            }
            edges[pos].push((k, target));
        }
    }
    report_cycles(services, &edges, report);
}

/// Depth-first search (iterative, so a long chain cannot overflow the stack); every back
/// edge closes one cycle, reported at that `dependsOn` entry.
fn report_cycles(
    services: &[(usize, &Service)],
    edges: &[Vec<(usize, usize)>],
    report: &mut Report,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; services.len()];
    for root in 0..services.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Stack of (node, next edge to follow).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&(k, target)) = edges[node].get(*next) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match mark[target] {
                Mark::New => {
                    mark[target] = Mark::Open;
                    stack.push((target, 0));
                }
                Mark::Open => {
                    let start = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut names: Vec<&str> = stack[start..]
                        .iter()
                        .map(|(n, _)| services[*n].1.name.as_str())
                        .collect();
                    names.push(&services[target].1.name);
                    let (i, s) = services[node];
                    report.error(
                        format!("{}/dependsOn/{k}", service_pointer(i)),
                        format!(
                            "{}: dependsOn forms a cycle: {}; remove one of these dependencies",
                            who(&s.name),
                            names
                                .iter()
                                .map(|n| n.escape_debug().to_string())
                                .collect::<Vec<_>>()
                                .join(" → ")
                        ),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}

/// The known name closest to `unknown`, if close enough to be a typo.
pub fn closest<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::levenshtein(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, k)| (*d, *k))
        .map(|(_, k)| k)
}

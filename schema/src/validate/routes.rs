//! Clashes between services: duplicate names, and on each shared host the same loopback
//! port (blue-green takes port and port + 1) or the same HTTP route (domain and path).

use std::collections::HashMap;

use super::report::{Report, q, service_pointer, who};
use crate::manifest::{Service, Strategy};

/// Reports duplicate names and port or route clashes; the later service gets the problem.
pub fn check(services: &[(usize, &Service)], report: &mut Report) {
    check_names(services, report);
    check_http(services, report);
}

fn check_names(services: &[(usize, &Service)], report: &mut Report) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, s) in services {
        if let Some(j) = first.get(s.name.as_str()) {
            report.error(
                format!("{}/name", service_pointer(*i)),
                format!("{}: the name is also used by /services/{j}; service names must be unique, rename one", who(&s.name)),
            );
        } else {
            first.insert(&s.name, *i);
        }
    }
}

/// The loopback ports a service's HTTP setup occupies.
pub fn occupied_ports(s: &Service) -> Vec<u16> {
    let Some(http) = &s.http else {
        return Vec::new();
    };
    let mut ports = vec![http.internal_port];
    if http.strategy == Some(Strategy::BlueGreen)
        && let Some(next) = http.internal_port.checked_add(1)
    {
        ports.push(next);
    }
    ports
}

fn check_http(services: &[(usize, &Service)], report: &mut Report) {
    let mut ports: HashMap<(&str, u16), &Service> = HashMap::new();
    let mut routes: HashMap<(&str, &str, &str), &Service> = HashMap::new();
    for (i, s) in services {
        let Some(http) = &s.http else { continue };
        let base = service_pointer(*i);
        let mut hosts: Vec<&str> = s.hosts.iter().map(String::as_str).collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            for port in occupied_ports(s) {
                match ports.get(&(host, port)) {
                    Some(other) if other.name != s.name => {
                        report.error(
                            format!("{base}/http/internalPort"),
                            format!(
                                "{}: port {port} on host {} is also used by {}{}; give one of them another http.internalPort",
                                who(&s.name),
                                q(host),
                                who(&other.name),
                                blue_green_note(s, other)
                            ),
                        );
                    }
                    _ => {
                        ports.insert((host, port), s);
                    }
                }
            }
            let path = http.path.trim_end_matches('/');
            match routes.get(&(host, http.domain.as_str(), path)) {
                Some(other) if other.name != s.name => {
                    report.error(
                        format!("{base}/http/path"),
                        format!(
                            "{}: route {}{} on host {} is also claimed by {}; give one of them another http.domain or http.path",
                            who(&s.name),
                            http.domain.escape_debug(),
                            http.path.escape_debug(),
                            q(host),
                            who(&other.name)
                        ),
                    );
                }
                _ => {
                    routes.insert((host, &http.domain, path), s);
                }
            }
        }
    }
}

fn blue_green_note(a: &Service, b: &Service) -> &'static str {
    let bg = |s: &Service| s.http.as_ref().and_then(|h| h.strategy) == Some(Strategy::BlueGreen);
    if bg(a) || bg(b) {
        " (a blue-green service uses internalPort and internalPort + 1)"
    } else {
        ""
    }
}

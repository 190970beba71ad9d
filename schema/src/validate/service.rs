//! Checks on one service on its own: name, artifact, hosts, exec, env, envFile, http,
//! systemd options, hardening and health check.

use std::collections::HashSet;

use super::report::{Report, q, service_pointer, token, who};
use super::text::{check_absolute_path, check_relative_path, check_url_path, first_control};
use crate::health_budget::Timings;
use crate::manifest::{Hardening, HealthCheck, HealthCheckKind, Http, Service, SystemdOptions};
use crate::names::{
    MAX_SERVICE_NAME_LEN, StorePath, describe_char, is_valid_env_key, is_valid_host_name,
    is_valid_posix_name, is_valid_service_name, is_valid_unit_name,
};

/// systemd's `Restart=` values.
pub const RESTART_VALUES: &[&str] = &[
    "no",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-watchdog",
    "on-abort",
    "always",
];

/// Runs every single-service check on service `i`.
pub fn check(i: usize, s: &Service, report: &mut Report) {
    let base = service_pointer(i);
    let who = who(&s.name);
    check_name(&base, &who, &s.name, report);
    let store_path = check_store_path(&base, &who, &s.artifact.store_path, report);
    check_hosts(&base, &who, &s.hosts, report);
    check_exec(&base, &who, s, store_path.as_ref(), report);
    check_env(&base, &who, s, report);
    if let Some(http) = &s.http {
        check_http(&base, &who, http, report);
    }
    if let Some(systemd) = &s.systemd {
        check_systemd(&base, &who, systemd, report);
    }
    if let Some(hardening) = &s.hardening {
        check_hardening(&base, &who, s, hardening, report);
    }
    if let Some(hc) = &s.health_check {
        check_health(&base, &who, hc, s.http.as_ref(), report);
    }
    if let Some(rev) = &s.revision
        && let Some(c) = first_control(rev)
    {
        report.error(
            format!("{base}/revision"),
            format!(
                "{who}: revision contains {}; use a plain one-line string such as a git commit",
                describe_char(c)
            ),
        );
    }
}

fn check_name(base: &str, who: &str, name: &str, report: &mut Report) {
    if !is_valid_service_name(name) {
        report.error(
            format!("{base}/name"),
            format!(
                "{who}: the name must be 1-{MAX_SERVICE_NAME_LEN} lowercase letters, digits or `-`, starting and ending with a letter or digit (it becomes the unit ferry-<name>.service); rename it, e.g. {}",
                q(&suggest_service_name(name))
            ),
        );
    }
}

/// A valid name close to `name`, for the error message.
fn suggest_service_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_owned();
    out.truncate(MAX_SERVICE_NAME_LEN);
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        "web".to_owned()
    } else {
        out
    }
}

fn check_store_path(base: &str, who: &str, path: &str, report: &mut Report) -> Option<StorePath> {
    let pointer = format!("{base}/artifact/storePath");
    match StorePath::parse(path) {
        Err(e) => {
            report.error(pointer, format!("{who}: artifact.storePath {e}"));
            None
        }
        Ok(p) => {
            if !p.has_nix_hash() {
                report.warn(
                    pointer,
                    format!(
                        "{who}: {} does not look like a real Nix store path (its hash {} is not 32 characters of Nix base-32); use the path `nix build` prints",
                        q(p.as_str()),
                        q(p.hash_part())
                    ),
                );
            }
            Some(p)
        }
    }
}

fn check_hosts(base: &str, who: &str, hosts: &[String], report: &mut Report) {
    if hosts.is_empty() {
        report.error(
            format!("{base}/hosts"),
            format!("{who}: hosts is empty; name at least one host the service runs on"),
        );
    }
    let mut seen = HashSet::new();
    for (k, host) in hosts.iter().enumerate() {
        let pointer = format!("{base}/hosts/{k}");
        if !is_valid_host_name(host) {
            report.error(
                pointer,
                format!("{who}: host {} is not a valid host name: use the lowercase name the host's agent is configured with (letters, digits, `-`, dots between labels)", q(host)),
            );
        } else if !seen.insert(host.as_str()) {
            report.warn(
                pointer,
                format!(
                    "{who}: host {} is listed twice; remove the duplicate",
                    q(host)
                ),
            );
        }
    }
}

fn check_exec(
    base: &str,
    who: &str,
    s: &Service,
    store_path: Option<&StorePath>,
    report: &mut Report,
) {
    let exec = &s.exec;
    let pointer = format!("{base}/exec/command");
    let command = exec.command.as_str();
    let result = if command.starts_with('/') {
        match store_path.and_then(|p| command.strip_prefix(p.as_str())?.strip_prefix('/')) {
            Some(inside) => check_relative_path(inside),
            None => Err(
                "it is an absolute path outside the service's store path; give a program name (run from <storePath>/bin/) or a path relative to the store path"
                    .to_owned(),
            ),
        }
    } else {
        check_relative_path(command)
    };
    if let Err(why) = result {
        report.error(
            pointer,
            format!(
                "{who}: exec.command {} is not usable: {why} (e.g. `web` runs <storePath>/bin/web)",
                q(command)
            ),
        );
    }
    for (k, arg) in exec.args.iter().flatten().enumerate() {
        if let Some(c) = first_control(arg) {
            report.error(
                format!("{base}/exec/args/{k}"),
                format!(
                    "{who}: exec.args[{k}] contains {}; arguments must be single-line text",
                    describe_char(c)
                ),
            );
        }
    }
    for (field, name) in [("user", &exec.user), ("group", &exec.group)] {
        let Some(name) = name else { continue };
        if !is_valid_posix_name(name) {
            report.error(
                format!("{base}/exec/{field}"),
                format!("{who}: exec.{field} {} is not a valid POSIX name: start with a lowercase letter or `_`, then lowercase letters, digits, `_` or `-`, at most 32 characters", q(name)),
            );
        } else if name == "root" {
            report.warn(
                format!("{base}/exec/{field}"),
                format!("{who}: runs with {field} root; use a dedicated {field} or hardening.dynamicUser"),
            );
        }
    }
}

fn check_env(base: &str, who: &str, s: &Service, report: &mut Report) {
    for (key, value) in &s.env {
        let pointer = format!("{base}/env/{}", token(key));
        if !is_valid_env_key(key) {
            report.error(
                pointer.clone(),
                format!("{who}: environment variable name {} is not valid: use letters, digits and `_`, not starting with a digit", q(key)),
            );
        }
        if let Some(c) = first_control(value) {
            report.error(
                pointer,
                format!("{who}: the value of {} contains {}; values must be single-line text (put multi-line secrets in envFile)", q(key), describe_char(c)),
            );
        }
    }
    if let Some(file) = &s.env_file
        && let Err(why) = check_absolute_path(file)
    {
        report.error(
            format!("{base}/envFile"),
            format!("{who}: envFile {} is not usable: {why}; give an absolute, normalised path such as /var/lib/ferry-secrets/<service>.env", q(file)),
        );
    }
}

fn check_http(base: &str, who: &str, http: &Http, report: &mut Report) {
    if !crate::names::is_valid_domain(&http.domain) {
        report.error(
            format!("{base}/http/domain"),
            format!("{who}: http.domain {} is not a valid domain: use a lowercase name like example.com (no scheme, port, path or wildcard)", q(&http.domain)),
        );
    }
    if let Err(why) = check_url_path(&http.path) {
        report.error(
            format!("{base}/http/path"),
            format!(
                "{who}: http.path {} is not usable: {why}; use a prefix like `/` or `/api/`",
                q(&http.path)
            ),
        );
    }
    if http.internal_port == 0 {
        report.error(
            format!("{base}/http/internalPort"),
            format!(
                "{who}: http.internalPort is 0; give the port (1-65535) the service listens on"
            ),
        );
    }
    if http.strategy == Some(crate::manifest::Strategy::BlueGreen) && http.internal_port == u16::MAX
    {
        report.error(
            format!("{base}/http/internalPort"),
            format!("{who}: blue-green also uses internalPort + 1, and 65535 has no next port; choose a lower port"),
        );
    }
}

fn check_systemd(base: &str, who: &str, systemd: &SystemdOptions, report: &mut Report) {
    for (field, units) in [("after", &systemd.after), ("requires", &systemd.requires)] {
        for (k, unit) in units.iter().flatten().enumerate() {
            if !is_valid_unit_name(unit) {
                report.error(
                    format!("{base}/systemd/{field}/{k}"),
                    format!("{who}: systemd.{field} entry {} is not a unit name: use a full name with its type, like postgresql.service or network-online.target", q(unit)),
                );
            }
        }
    }
    if let Some(restart) = &systemd.restart
        && !RESTART_VALUES.contains(&restart.as_str())
    {
        report.error(
            format!("{base}/systemd/restart"),
            format!(
                "{who}: systemd.restart {} is not one of systemd's values: {}",
                q(restart),
                RESTART_VALUES.join(", ")
            ),
        );
    }
    // restartSec's bound is in the schema (`manifest::MAX_SECONDS`), checked by that layer.
}

fn check_hardening(base: &str, who: &str, s: &Service, hardening: &Hardening, report: &mut Report) {
    if hardening.dynamic_user == Some(true) && (s.exec.user.is_some() || s.exec.group.is_some()) {
        report.warn(
            format!("{base}/hardening/dynamicUser"),
            format!("{who}: hardening.dynamicUser is true, so exec.user and exec.group are ignored; remove one or the other"),
        );
    }
    let mut seen = HashSet::new();
    for (i, path) in hardening.read_write_paths.iter().flatten().enumerate() {
        let pointer = format!("{base}/hardening/readWritePaths/{i}");
        if let Err(why) = check_absolute_path(path) {
            report.error(
                pointer,
                format!("{who}: hardening.readWritePaths {} is not usable: {why}; give an absolute, normalised directory such as /var/{}", q(path), s.name),
            );
        } else if !seen.insert(path.as_str()) {
            report.warn(
                pointer,
                format!(
                    "{who}: hardening.readWritePaths lists {} twice; remove one",
                    q(path)
                ),
            );
        }
    }
}

fn check_health(base: &str, who: &str, hc: &HealthCheck, http: Option<&Http>, report: &mut Report) {
    let hb = format!("{base}/healthCheck");
    if hc.kind != HealthCheckKind::None && hc.port.or(http.map(|h| h.internal_port)).is_none() {
        report.error(
            format!("{hb}/port"),
            format!("{who}: the health check has no port to probe; set healthCheck.port or http.internalPort"),
        );
    }
    if hc.port == Some(0) {
        report.error(
            format!("{hb}/port"),
            format!("{who}: healthCheck.port is 0; use 1-65535"),
        );
    }
    if let Some(path) = &hc.path {
        if hc.kind != HealthCheckKind::Http {
            report.warn(
                format!("{hb}/path"),
                format!("{who}: healthCheck.path is only used by `http` checks; remove it"),
            );
        }
        if let Err(why) = check_url_path(path) {
            report.error(
                format!("{hb}/path"),
                format!("{who}: healthCheck.path {} is not usable: {why}", q(path)),
            );
        }
    }
    if let Some(deadline) = hc.deadline_sec {
        let t = Timings::of(hc);
        if hc.kind == HealthCheckKind::None {
            report.warn(
                format!("{hb}/deadlineSec"),
                format!("{who}: healthCheck.deadlineSec is only used by `http` and `tcp` checks; remove it"),
            );
        } else if u64::from(deadline) < t.start_period + t.timeout {
            report.error(
                format!("{hb}/deadlineSec"),
                format!(
                    "{who}: healthCheck.deadlineSec {deadline} is shorter than the first probe \
                     takes (startPeriodSec {} + timeoutSec {}); raise deadlineSec to at least {}",
                    t.start_period,
                    t.timeout,
                    t.start_period + t.timeout
                ),
            );
        }
    }
    // expectStatus, the timings and retries have their bounds in the schema
    // (`manifest::MAX_SECONDS`, `MAX_RETRIES`), checked by that layer.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_names_are_valid() {
        for bad in ["Web_App", "--x--", "", "ÜBER", &"a_".repeat(50)] {
            let s = suggest_service_name(bad);
            assert!(is_valid_service_name(&s), "{bad} -> {s}");
        }
        assert_eq!(suggest_service_name("Web_App"), "web-app");
    }
}

//! Checks on `systems`, the whole NixOS systems by host: each key a valid host name, each
//! store path a store path, each revision one line. A path that does not look like a NixOS
//! toplevel, and waves that do not order systems, are warnings.

use std::collections::BTreeMap;

use super::report::{Report, q, token};
use super::text::first_control;
use crate::manifest::{HostSystem, Rollout, Service};
use crate::names::{StorePath, describe_char, is_valid_host_name};

/// What a NixOS toplevel's store name starts with (`nixos-system-<host>-<version>`).
const TOPLEVEL_PREFIX: &str = "nixos-system-";

/// Checks every host's system; `rollout` is the manifest's (a service's own never orders a
/// system).
pub fn check(
    systems: &BTreeMap<String, HostSystem>,
    rollout: Option<&Rollout>,
    services: &[(usize, &Service)],
    report: &mut Report,
) {
    for (host, system) in systems {
        let base = format!("/systems/{}", token(host));
        if !is_valid_host_name(host) {
            report.error(
                base.clone(),
                format!("systems: {} is not a valid host name: key each system by the lowercase name the host's agent is configured with (letters, digits, `-`, dots between labels)", q(host)),
            );
        }
        check_store_path(&base, host, &system.store_path, report);
        if let Some(rev) = &system.revision
            && let Some(c) = first_control(rev)
        {
            report.error(
                format!("{base}/revision"),
                format!(
                    "systems: the revision of host {} contains {}; use a plain one-line string such as a git commit",
                    q(host),
                    describe_char(c)
                ),
            );
        }
    }
    let gated = rollout.is_some() || services.iter().any(|(_, s)| s.rollout.is_some());
    if gated && !systems.is_empty() {
        report.warn(
            "/systems",
            "systems: rollout waves order services only; every host listed in systems switches as soon as it sees this manifest (push one host's system at a time to stage them)",
        );
    }
}

fn check_store_path(base: &str, host: &str, path: &str, report: &mut Report) {
    let pointer = format!("{base}/storePath");
    match StorePath::parse(path) {
        Err(e) => report.error(
            pointer,
            format!("systems: the storePath of host {} {e}", q(host)),
        ),
        Ok(p) if !p.name_part().starts_with(TOPLEVEL_PREFIX) => report.warn(
            pointer,
            format!(
                "systems: {} for host {} is not named like a NixOS system ({TOPLEVEL_PREFIX}<host>-<version>); use the build of `config.system.build.toplevel` (the host refuses a path without bin/switch-to-configuration)",
                q(p.as_str()),
                q(host)
            ),
        ),
        Ok(p) if !p.has_nix_hash() => report.warn(
            pointer,
            format!(
                "systems: {} for host {} does not look like a real Nix store path (its hash {} is not 32 characters of Nix base-32); use the path `nix build` prints",
                q(p.as_str()),
                q(host),
                q(p.hash_part())
            ),
        ),
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Problem, Severity};

    const GOOD: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-biz-24.05";

    fn system(path: &str, revision: Option<&str>) -> HostSystem {
        HostSystem {
            store_path: path.to_owned(),
            revision: revision.map(str::to_owned),
        }
    }

    fn problems(systems: &[(&str, HostSystem)], rollout: Option<&Rollout>) -> Vec<Problem> {
        let map = systems
            .iter()
            .map(|(h, s)| ((*h).to_owned(), s.clone()))
            .collect();
        let mut report = Report::default();
        check(&map, rollout, &[], &mut report);
        report.into_problems()
    }

    #[test]
    fn a_good_system_has_no_problem() {
        assert_eq!(problems(&[("biz", system(GOOD, Some("abc123")))], None), []);
    }

    #[test]
    fn a_bad_host_key_a_bad_path_and_a_two_line_revision_are_errors_naming_the_host() {
        let found = problems(
            &[
                ("Biz/../x", system(GOOD, None)),
                ("web-1", system("/etc/passwd", Some("a\nb"))),
            ],
            None,
        );
        let errors: Vec<(&str, &str)> = found
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| (p.pointer.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 3, "{found:?}");
        assert_eq!(errors[0].0, "/systems/Biz~1..~1x");
        assert!(errors[0].1.contains("`Biz/../x` is not a valid host name"));
        assert_eq!(errors[1].0, "/systems/web-1/storePath");
        assert!(errors[1].1.contains("host `web-1`"), "{}", errors[1].1);
        assert_eq!(errors[2].0, "/systems/web-1/revision");
        assert!(errors[2].1.contains("host `web-1`"));
    }

    #[test]
    fn a_path_not_named_like_a_system_and_waves_are_warnings() {
        let service_path = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web-1.2";
        let rollout = Rollout {
            waves: vec![vec!["*".to_owned()]],
            soak_sec: None,
            stale_sec: None,
            on_stale: None,
        };
        let found = problems(&[("biz", system(service_path, None))], Some(&rollout));
        assert!(
            found.iter().all(|p| p.severity == Severity::Warning),
            "{found:?}"
        );
        let pointers: Vec<&str> = found.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/systems/biz/storePath", "/systems"]);
        assert!(found[0].message.contains("bin/switch-to-configuration"));
    }
}

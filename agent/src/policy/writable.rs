//! Writable paths: the host directories a service may write besides its own
//! `StateDirectory` (`hardening.readWritePaths`, rendered as `ReadWritePaths=`). Under
//! `ProtectSystem=strict` everything else is read-only to it, so this list is what a signed
//! manifest could otherwise use to rewrite the host: each path must lie under a prefix the
//! host lists in `allowedWritePaths` (default none), and some directories are never
//! writable whatever agent.toml says — the system's own, the agent's directories and the
//! state of Ferry's other services. Pure and lexical: the agent never opens the paths (the
//! unit fails to start if one is missing).

use std::path::{Path, PathBuf};

use ferry_schema::manifest::Service;

/// Directories no service may write, nor any directory above or below them, with what
/// they hold. Ferry's services' own state (`/var/lib/ferry-*`) is covered apart, by name.
const NEVER: &[(&str, &str)] = &[
    ("/etc", "the host's configuration"),
    ("/nix", "the Nix store and profiles"),
    ("/usr", "the system's programs"),
    ("/bin", "the system's programs"),
    ("/sbin", "the system's programs"),
    ("/lib", "the system's libraries"),
    ("/lib64", "the system's libraries"),
    ("/boot", "the boot loader and kernels"),
    ("/proc", "the kernel's interfaces"),
    ("/sys", "the kernel's interfaces"),
    ("/dev", "the devices"),
    ("/run", "the host's runtime state, systemd's units among it"),
    ("/root", "root's home"),
    ("/var/lib/ferry", "the agent's state"),
    ("/var/lib/private", "the state of DynamicUser services"),
    ("/var/lib/systemd", "systemd's state"),
    ("/var/lib/nixos", "NixOS's user and group IDs"),
];

/// Where the state directories of Ferry's services live (`/var/lib/ferry-<service>`).
const STATE_ROOT: &str = "/var/lib";

/// Why `path` is not an absolute, normalised path, if it is not.
fn not_normalised(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("it is not absolute");
    };
    // `/` itself is normalised (and refused as the parent of everything).
    let bad = !rest.is_empty()
        && rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    bad.then_some("it is not normalised (an empty, `.` or `..` component)")
}

/// Whether one of `a` and `b` is the other or inside it.
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Why a service may never write `path` (an absolute, normalised path), whatever
/// `allowedWritePaths` says: it is, holds or is inside a system directory, one of the
/// agent's own directories (`own_dirs`, by agent.toml key) or a Ferry service's state
/// directory.
pub fn never_writable(path: &Path, own_dirs: &[(&'static str, PathBuf)]) -> Option<String> {
    for (dir, what) in NEVER {
        if overlap(path, Path::new(dir)) {
            return Some(format!("it overlaps {dir} ({what})"));
        }
    }
    for (key, dir) in own_dirs {
        if overlap(path, dir) {
            return Some(format!("it overlaps the agent's {key} ({})", dir.display()));
        }
    }
    // `/var/lib/ferry-*`: another service's StateDirectory (its own is writable anyway).
    if let Ok(rest) = path.strip_prefix(STATE_ROOT)
        && let Some(first) = rest.components().next()
        && first.as_os_str().to_string_lossy().starts_with("ferry")
    {
        return Some(format!(
            "it is inside {STATE_ROOT}/{}, a Ferry service's state directory",
            first.as_os_str().to_string_lossy()
        ));
    }
    None
}

/// Why an `allowedWritePaths` entry is unusable, if it is.
pub fn check_prefix(prefix: &str, own_dirs: &[(&'static str, PathBuf)]) -> Option<String> {
    if let Some(why) = not_normalised(prefix) {
        return Some(format!("{prefix:?}: {why}"));
    }
    never_writable(Path::new(prefix), own_dirs)
        .map(|why| format!("{prefix} can never be writable by a service: {why}"))
}

/// Every reason `s` may not write the paths it asks for. `allowed` is `allowedWritePaths`.
pub fn check(
    s: &Service,
    allowed: &[PathBuf],
    own_dirs: &[(&'static str, PathBuf)],
) -> Vec<String> {
    let paths = s
        .hardening
        .iter()
        .flat_map(|h| h.read_write_paths.iter().flatten());
    let mut reasons = Vec::new();
    for path in paths {
        let field = format!("hardening.readWritePaths {path}");
        if let Some(why) = not_normalised(path) {
            reasons.push(format!("{field} is refused: {why}"));
            continue;
        }
        let p = Path::new(path);
        if let Some(why) = never_writable(p, own_dirs) {
            reasons.push(format!("{field} can never be writable by a service: {why}"));
            continue;
        }
        if !allowed.iter().any(|prefix| p.starts_with(prefix)) {
            let now = if allowed.is_empty() {
                "none, the default".to_owned()
            } else {
                allowed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            reasons.push(format!(
                "{field} is not under allowedWritePaths in agent.toml (now: {now}); add {path} \
                 or a directory above it there, or remove it from the manifest"
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(paths: &[&str]) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
            "hardening": {"readWritePaths": paths},
        }))
        .unwrap()
    }

    fn own() -> Vec<(&'static str, PathBuf)> {
        vec![
            ("stateDir", "/var/lib/ferry".into()),
            ("secretsDir", "/var/lib/biz-secrets".into()),
            ("unitDir", "/run/systemd/system".into()),
            ("profileDir", "/nix/var/nix/profiles/ferry".into()),
        ]
    }

    fn allowed(prefixes: &[&str]) -> Vec<PathBuf> {
        prefixes.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn paths_under_an_allowed_prefix_are_fine() {
        let a = allowed(&["/var/podcastitlater", "/srv"]);
        assert!(check(&svc(&["/var/podcastitlater"]), &a, &own()).is_empty());
        assert!(check(&svc(&["/srv/x/y", "/var/podcastitlater/db"]), &a, &own()).is_empty());
        assert!(check(&svc(&[]), &[], &own()).is_empty());
    }

    #[test]
    fn nothing_is_writable_by_default_and_the_refusal_names_the_key() {
        let r = check(&svc(&["/var/podcastitlater"]), &[], &own());
        assert_eq!(
            r,
            [
                "hardening.readWritePaths /var/podcastitlater is not under allowedWritePaths in \
              agent.toml (now: none, the default); add /var/podcastitlater or a directory above \
              it there, or remove it from the manifest"
            ]
        );
        // A sibling with a common string prefix is not under the prefix.
        let r = check(
            &svc(&["/var/podcastitlater2", "/srv"]),
            &allowed(&["/var/podcastitlater", "/srv/a"]),
            &own(),
        );
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("(now: /var/podcastitlater, /srv/a)"), "{r:?}");
    }

    #[test]
    fn system_agent_and_other_services_directories_are_never_writable() {
        // Even a host that allows everything under / cannot hand these out.
        let all = allowed(&["/"]);
        for (path, why) in [
            ("/", "it overlaps /etc"),
            ("/etc", "it overlaps /etc (the host's configuration)"),
            ("/etc/ssh", "it overlaps /etc"),
            ("/nix/store", "it overlaps /nix"),
            ("/var", "it overlaps /var/lib/ferry (the agent's state)"),
            ("/var/lib", "it overlaps /var/lib/ferry"),
            ("/var/lib/ferry/x", "it overlaps /var/lib/ferry"),
            (
                "/var/lib/biz-secrets",
                "the agent's secretsDir (/var/lib/biz-secrets)",
            ),
            (
                "/var/lib/ferry-api",
                "/var/lib/ferry-api, a Ferry service's state directory",
            ),
            ("/var/lib/ferry-api/db", "a Ferry service's state directory"),
            ("/var/lib/private/ferry-api", "it overlaps /var/lib/private"),
            ("/run/systemd/system", "it overlaps /run"),
        ] {
            let r = check(&svc(&[path]), &all, &own());
            assert_eq!(r.len(), 1, "{path}: {r:?}");
            assert!(
                r[0].starts_with(&format!(
                    "hardening.readWritePaths {path} can never be writable by a service: "
                )) && r[0].contains(why),
                "{path}: {r:?}"
            );
        }
    }

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        let all = allowed(&["/srv"]);
        for path in ["srv/x", "/srv/../etc", "/srv/./x", "/srv//x", "/srv/x/"] {
            let r = check(&svc(&[path]), &all, &own());
            assert_eq!(r.len(), 1, "{path}: {r:?}");
            assert!(
                r[0].starts_with(&format!(
                    "hardening.readWritePaths {path} is refused: it is not"
                )),
                "{path}: {r:?}"
            );
        }
    }

    #[test]
    fn allowed_prefixes_are_checked_the_same_way() {
        assert_eq!(check_prefix("/var/podcastitlater", &own()), None);
        assert_eq!(check_prefix("/srv", &own()), None);
        for (prefix, why) in [
            ("/", "it overlaps /etc"),
            ("/var", "/var/lib/ferry"),
            ("/etc/app", "/etc"),
            ("/var/lib/ferry-web", "a Ferry service's state directory"),
            ("/var/lib/biz-secrets/web", "secretsDir"),
            ("srv", "not absolute"),
            ("/srv/../etc", "not normalised"),
        ] {
            let r = check_prefix(prefix, &own()).unwrap_or_default();
            assert!(r.contains(why), "{prefix}: {r}");
        }
    }
}

//! Secrets: each service reads only its own. The env files live under `secretsDir` (root,
//! 0700); systemd reads `EnvironmentFile=` as root before dropping privileges, so any path
//! there would do — which is why the path itself must name the service: `<secretsDir>/S.env`
//! or a file under `<secretsDir>/S/`. Pure and lexical: the agent never opens the file.

use std::path::{Component, Path};

use ferry_schema::manifest::Service;

/// Why `s`'s `envFile` is refused, if it is.
pub fn check(s: &Service, secrets_dir: &Path) -> Option<String> {
    let file = s.env_file.as_deref()?;
    let path = Path::new(file);
    let own_file = secrets_dir.join(format!("{}.env", s.name));
    let own_dir = secrets_dir.join(&s.name);
    let clean = path.is_absolute() && !path.components().any(|c| c == Component::ParentDir);
    if clean && (path == own_file || (path.starts_with(&own_dir) && path != own_dir)) {
        return None;
    }
    // A file that would be this service's in another directory: most likely the host keeps
    // its secrets there, and one setting says so.
    let moved = clean
        .then(|| elsewhere(path, &s.name))
        .flatten()
        .map(|dir| {
            format!(
                "; or, if {} is this host's secrets directory, set secretsDir = \"{}\" in \
                 agent.toml (the NixOS module's services.ferry-agent.secretsDir)",
                dir.display(),
                dir.display()
            )
        })
        .unwrap_or_default();
    Some(format!(
        "envFile {file} is not this service's: use {} or a file under {}/ (secretsDir in \
         agent.toml is {}){moved}",
        own_file.display(),
        own_dir.display(),
        secrets_dir.display()
    ))
}

/// The directory `path` would be a secrets directory of service `name` in: `D` for
/// `D/<name>.env` or `D/<name>/…`. Never `/` (every file is under it).
fn elsewhere<'a>(path: &'a Path, name: &str) -> Option<&'a Path> {
    let file_dir = path.parent().filter(|_| {
        path.file_name()
            .is_some_and(|f| *f == *format!("{name}.env"))
    });
    let dir = file_dir.or_else(|| {
        path.ancestors()
            .skip(1)
            .find(|a| a.file_name().is_some_and(|f| f == name))
            .and_then(Path::parent)
    })?;
    (dir != Path::new("/")).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, env_file: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": name, "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"}, "envFile": env_file,
        }))
        .unwrap()
    }

    fn dir_of_default() -> &'static Path {
        Path::new("/var/lib/ferry-secrets")
    }

    #[test]
    fn own_file_or_own_directory_only() {
        let dir = Path::new("/var/lib/ferry-secrets");
        for ok in [
            "/var/lib/ferry-secrets/web.env",
            "/var/lib/ferry-secrets/web/a.env",
            "/var/lib/ferry-secrets/web/x/b",
        ] {
            assert_eq!(check(&svc("web", ok), dir), None, "{ok}");
        }
        for bad in [
            "/etc/shadow",
            "/var/lib/ferry-secrets/api.env",
            "/var/lib/ferry-secrets/api/web.env",
            "/var/lib/ferry-secrets/web",
            "/var/lib/ferry-secrets/web.env2",
            "/var/lib/ferry-secrets/webx/a.env",
            "/var/lib/ferry-secrets/web/../api.env",
            "/var/lib/ferry-secretsX/web.env",
            "web.env",
        ] {
            let r = check(&svc("web", bad), dir).unwrap_or_default();
            assert!(
                r.starts_with(&format!("envFile {bad} is not this service's"))
                    && r.contains("/var/lib/ferry-secrets/web.env")
                    && r.contains("/var/lib/ferry-secrets/web/"),
                "{bad}: {r}"
            );
        }
        // A file that is the service's own in another directory names the one setting.
        for (file, dir) in [
            ("/var/lib/biz-secrets/web.env", Some("/var/lib/biz-secrets")),
            (
                "/var/lib/biz-secrets/web/db.env",
                Some("/var/lib/biz-secrets"),
            ),
            ("/etc/shadow", None),
            ("/web.env", None),
            ("/var/lib/biz-secrets/api.env", None),
        ] {
            let r = check(&svc("web", file), dir_of_default()).unwrap_or_default();
            let hint = dir.map(|d| {
                format!(
                    "; or, if {d} is this host's secrets directory, set secretsDir = \"{d}\" in agent.toml"
                )
            });
            match hint {
                Some(h) => assert!(r.contains(&h), "{file}: {r}"),
                None => assert!(!r.contains("this host's secrets directory"), "{file}: {r}"),
            }
            assert!(
                r.contains("(secretsDir in agent.toml is /var/lib/ferry-secrets)"),
                "{r}"
            );
        }
        let mut none = svc("web", "/x");
        none.env_file = None;
        assert_eq!(check(&none, dir), None);
    }
}

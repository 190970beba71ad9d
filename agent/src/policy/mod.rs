//! Host policy: what this host accepts from a manifest beyond what the schema allows
//! (env files only under the secrets directory, no root unless allowed, something for this
//! host at all). Pure: takes the manifest and the settings, returns every reason to refuse.

use std::path::{Component, Path, PathBuf};

use ferry_schema::Manifest;

use crate::render::unit::uses_dynamic_user;

/// The host-side rules a manifest must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// This host's name.
    pub host: String,
    /// The only directory env files may live under.
    pub secrets_dir: PathBuf,
    /// Whether services may run as root.
    pub allow_root: bool,
}

impl HostPolicy {
    /// Every reason this host refuses the manifest (empty: accepted). Only this host's
    /// services are judged: another host's policy is its own business.
    pub fn check(&self, manifest: &Manifest) -> Vec<String> {
        let mut reasons = Vec::new();
        let mine: Vec<_> = manifest
            .services
            .iter()
            .filter(|s| s.hosts.contains(&self.host))
            .collect();
        if mine.is_empty() {
            reasons.push(format!(
                "the manifest names no service for host {:?} (hosts it names: {}); refusing to \
                 remove everything — check hostName in agent.toml or the manifest's hosts lists",
                self.host,
                known_hosts(manifest)
            ));
        }
        for s in mine {
            if let Some(file) = &s.env_file
                && !is_under(Path::new(file), &self.secrets_dir)
            {
                reasons.push(format!(
                    "service {}: envFile {file} is outside the allowed directory {}; move the \
                     file there or change secretsDir in agent.toml",
                    s.name,
                    self.secrets_dir.display()
                ));
            }
            if !self.allow_root && runs_as_root(s) {
                reasons.push(format!(
                    "service {}: would run as root; set exec.user, or hardening.dynamicUser, or \
                     allowRoot = true in agent.toml",
                    s.name
                ));
            }
        }
        reasons
    }
}

fn runs_as_root(s: &ferry_schema::manifest::Service) -> bool {
    if uses_dynamic_user(s) {
        return false;
    }
    match s.exec.user.as_deref() {
        None | Some("root") | Some("0") => true,
        Some(_) => false,
    }
}

fn known_hosts(m: &Manifest) -> String {
    let mut hosts: Vec<&str> = m
        .services
        .iter()
        .flat_map(|s| s.hosts.iter().map(String::as_str))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.is_empty() {
        "none".to_owned()
    } else {
        hosts.join(", ")
    }
}

/// Lexically under `dir` (no `..`, absolute): the agent never touches the file, so symlinks
/// are systemd's business at start time.
fn is_under(path: &Path, dir: &Path) -> bool {
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && path.starts_with(dir)
        && path != dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(env_file: &str, user: Option<&str>, dynamic: Option<bool>) -> Manifest {
        let mut m: Manifest =
            serde_json::from_str(include_str!("../../schema/tests/fixtures/example.json")).unwrap();
        let s = &mut m.services[0];
        s.env_file = Some(env_file.into());
        s.exec.user = user.map(Into::into);
        s.hardening.get_or_insert_default().dynamic_user = dynamic;
        m
    }

    fn policy() -> HostPolicy {
        HostPolicy {
            host: "biz".into(),
            secrets_dir: "/var/lib/ferry-secrets".into(),
            allow_root: false,
        }
    }

    #[test]
    fn accepts_a_good_manifest() {
        let m = manifest("/var/lib/ferry-secrets/web.env", Some("web"), None);
        assert_eq!(policy().check(&m), Vec::<String>::new());
    }

    #[test]
    fn env_file_outside_secrets_dir_is_refused() {
        for bad in [
            "/etc/shadow",
            "/var/lib/ferry-secrets/../x",
            "/var/lib/ferry-secretsX/a",
            "/var/lib/ferry-secrets",
        ] {
            let r = policy().check(&manifest(bad, Some("web"), None));
            assert_eq!(r.len(), 1, "{bad}: {r:?}");
            assert!(r[0].contains("envFile") && r[0].contains("podcastitlater-web"));
        }
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let ok = "/var/lib/ferry-secrets/a";
        assert_eq!(policy().check(&manifest(ok, Some("root"), None)).len(), 1);
        assert_eq!(policy().check(&manifest(ok, None, Some(false))).len(), 1);
        assert!(policy().check(&manifest(ok, None, None)).is_empty());
        assert!(
            policy()
                .check(&manifest(ok, Some("root"), Some(true)))
                .is_empty()
        );
        let allow = HostPolicy {
            allow_root: true,
            ..policy()
        };
        assert!(allow.check(&manifest(ok, Some("root"), None)).is_empty());
    }

    #[test]
    fn every_reason_is_listed_and_unknown_host_refused() {
        let m = manifest("/etc/x", Some("root"), None);
        assert_eq!(policy().check(&m).len(), 2);
        let other = HostPolicy {
            host: "elsewhere".into(),
            ..policy()
        };
        let r = other.check(&m);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("elsewhere") && r[0].contains("biz"), "{r:?}");
    }
}

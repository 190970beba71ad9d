//! The `Store` trait and its Nix CLI implementation: pull a closure with `nix copy` (signature
//! checks always on), read what the store knows about closures (`nix path-info`, whose
//! signatures `closure_trust` checks), pin one as a profile generation, and prune old
//! generations. Command lines are built as values first so their exact argv is tested
//! without running Nix.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_schema::path_info::{self, PathInfo};
use thiserror::Error;
use tokio::process::Command;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// `nix copy` failed; `reason` is Nix's own message, classified when recognisable.
    #[error("pulling {path} failed ({kind}): {reason}")]
    Pull {
        /// The store path.
        path: String,
        /// missing / bad signature / network / other.
        kind: &'static str,
        /// What Nix said.
        reason: String,
    },
    /// `nix copy` ran longer than the pull timeout.
    #[error("pulling {path} timed out after {after:?}; raise timeouts.pullSec or check the bucket")]
    Timeout {
        /// The store path.
        path: String,
        /// The limit.
        after: Duration,
    },
    /// `nix path-info` failed or printed something unreadable.
    #[error("reading the store's record of {path} failed: {reason}")]
    Info {
        /// The store paths asked about.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A profile operation failed.
    #[error("profile {profile}: {reason}")]
    Profile {
        /// The profile path.
        profile: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The Nix store on this host.
pub trait Store: Send + Sync {
    /// Copy `paths` and their closures from the binary cache at `cache_url` (one `nix copy`,
    /// which fetches in parallel; concurrent `nix copy` processes race on Nix's cache
    /// database, so the agent never runs two).
    fn pull(
        &self,
        cache_url: &str,
        paths: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// What the store knows about every path of the closures of `paths` (signatures
    /// included), from the local store only.
    fn closure_info(
        &self,
        paths: &[String],
    ) -> impl Future<Output = Result<Vec<PathInfo>, StoreError>> + Send;
    /// Make `path` the newest generation of `profile`, then keep only the newest `keep`.
    fn pin(
        &self,
        profile: &Path,
        path: &str,
        keep: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The nix CLI.
#[derive(Debug, Clone)]
pub struct NixCli {
    /// `nix` program.
    pub nix: String,
    /// Trusted closure keys (`name:base64`).
    pub trusted_keys: Vec<String>,
    /// Limit for one `nix copy`.
    pub pull_timeout: Duration,
    /// Limit for one `nix-env` call (`timeouts.jobSec`): local work that only a held Nix
    /// lock or a stuck daemon makes slow, bounded so a tick cannot hang on it.
    pub command_timeout: Duration,
}

impl NixCli {
    /// argv of the `nix copy` for `paths` (signature checks on, only the configured keys).
    pub fn copy_argv(&self, cache_url: &str, paths: &[String]) -> Vec<String> {
        let mut argv = vec![
            self.nix.clone(),
            "--extra-experimental-features".into(),
            "nix-command".into(),
            "copy".into(),
            "--from".into(),
            cache_url.into(),
            "--option".into(),
            "trusted-public-keys".into(),
            self.trusted_keys.join(" "),
            "--option".into(),
            "require-sigs".into(),
            "true".into(),
            "--option".into(),
            "substituters".into(),
            String::new(),
        ];
        argv.extend(paths.iter().cloned());
        argv
    }

    /// argv of the `nix path-info` that lists the closures of `paths` with their signatures.
    pub fn path_info_argv(&self, paths: &[String]) -> Vec<String> {
        let mut argv = vec![
            self.nix.clone(),
            "--extra-experimental-features".into(),
            "nix-command".into(),
            "path-info".into(),
            "--json".into(),
            "--recursive".into(),
            "--option".into(),
            "substituters".into(),
            String::new(),
        ];
        argv.extend(paths.iter().cloned());
        argv
    }

    /// The `nix-env` beside `nix` (same directory when `nix` is a path).
    pub fn nix_env(&self) -> String {
        match Path::new(&self.nix).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join("nix-env").display().to_string(),
            _ => "nix-env".to_owned(),
        }
    }

    /// argv that makes `path` the profile's new generation.
    pub fn set_profile_argv(&self, profile: &Path, path: &str) -> Vec<String> {
        vec![
            self.nix_env(),
            "--profile".into(),
            profile.display().to_string(),
            "--set".into(),
            path.into(),
        ]
    }

    /// argv that makes generation `generation` of the profile the current one.
    pub fn switch_generation_argv(&self, profile: &Path, generation: u32) -> Vec<String> {
        vec![
            self.nix_env(),
            "--profile".into(),
            profile.display().to_string(),
            "--switch-generation".into(),
            generation.to_string(),
        ]
    }

    /// Makes generation `generation` of `profile` the current one (`ferry-agent rollback`).
    pub async fn switch_generation(
        &self,
        profile: &Path,
        generation: u32,
    ) -> Result<(), StoreError> {
        let argv = self.switch_generation_argv(profile, generation);
        let err = |reason: String| StoreError::Profile {
            profile: profile.to_owned(),
            reason,
        };
        let out = match tokio::time::timeout(self.command_timeout, run(&argv)).await {
            Err(_) => {
                return Err(err(format!(
                    "{} --switch-generation got no answer within {:?} (timeouts.jobSec); is a Nix lock held or nix-daemon stuck?",
                    argv[0], self.command_timeout
                )));
            }
            Ok(r) => r.map_err(|e| err(format!("cannot run {}: {e}", argv[0])))?,
        };
        if !out.status.success() {
            return Err(err(format!(
                "--switch-generation {generation} failed: {}",
                last_lines(&out.stderr)
            )));
        }
        Ok(())
    }

    /// argv that deletes all but the newest `keep` generations.
    pub fn prune_argv(&self, profile: &Path, keep: u32) -> Vec<String> {
        vec![
            self.nix_env(),
            "--profile".into(),
            profile.display().to_string(),
            "--delete-generations".into(),
            format!("+{keep}"),
        ]
    }
}

/// Nix's message, classified into what the user should look at.
pub fn classify_pull_failure(stderr: &str) -> &'static str {
    let s = stderr.to_ascii_lowercase();
    if s.contains("lacks a signature") || s.contains("signature") {
        "bad signature: not signed by a key in trustedKeys"
    } else if s.contains("does not exist in binary cache")
        || s.contains("don't know how to build")
        || s.contains("is not valid")
        || s.contains("not found")
    {
        "missing from the bucket's cache"
    } else if s.contains("unable to download")
        || s.contains("couldn't connect")
        || s.contains("connection")
        || s.contains("timeout")
    {
        "network"
    } else {
        "other"
    }
}

async fn run(argv: &[String]) -> Result<std::process::Output, std::io::Error> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
    Command::new(prog)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
}

fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

impl Store for NixCli {
    async fn pull(&self, cache_url: &str, paths: &[String]) -> Result<(), StoreError> {
        let argv = self.copy_argv(cache_url, paths);
        let path = paths.join(" ");
        let out = match tokio::time::timeout(self.pull_timeout, run(&argv)).await {
            Err(_) => {
                return Err(StoreError::Timeout {
                    path,
                    after: self.pull_timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(StoreError::Pull {
                    path,
                    kind: "other",
                    reason: format!("cannot run {}: {e}", self.nix),
                });
            }
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(StoreError::Pull {
            path,
            kind: classify_pull_failure(&stderr),
            reason: last_lines(&out.stderr),
        })
    }

    async fn closure_info(&self, paths: &[String]) -> Result<Vec<PathInfo>, StoreError> {
        let err = |reason: String| StoreError::Info {
            path: paths.join(" "),
            reason,
        };
        let argv = self.path_info_argv(paths);
        let out = match tokio::time::timeout(self.pull_timeout, run(&argv)).await {
            Err(_) => return Err(err(format!("no answer within {:?}", self.pull_timeout))),
            Ok(Err(e)) => return Err(err(format!("cannot run {}: {e}", self.nix))),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(err(last_lines(&out.stderr)));
        }
        path_info::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|e| err(e.to_string()))
    }

    async fn pin(&self, profile: &Path, path: &str, keep: u32) -> Result<(), StoreError> {
        let err = |reason: String| StoreError::Profile {
            profile: profile.to_owned(),
            reason,
        };
        // Already there (a `ferry-agent rollback` switched the profile back): a `--set` would
        // add a generation on top, and the next rollback would go forward instead of back.
        if profile_target(profile).as_deref() == Some(path) {
            return Ok(());
        }
        if let Some(dir) = profile.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        for argv in [
            self.set_profile_argv(profile, path),
            self.prune_argv(profile, keep),
        ] {
            let out = match tokio::time::timeout(self.command_timeout, run(&argv)).await {
                // Dropping the future kills the process (`kill_on_drop`).
                Err(_) => {
                    return Err(err(format!(
                        "{} {} got no answer within {:?} (timeouts.jobSec); is a Nix lock held or nix-daemon stuck?",
                        argv[0], argv[3], self.command_timeout
                    )));
                }
                Ok(r) => r.map_err(|e| err(format!("cannot run {}: {e}", argv[0])))?,
            };
            if !out.status.success() {
                return Err(err(format!(
                    "{} failed: {}",
                    argv[3],
                    last_lines(&out.stderr)
                )));
            }
        }
        Ok(())
    }
}

/// The store path a profile points at now (following the generation link).
pub fn profile_target(profile: &Path) -> Option<String> {
    std::fs::canonicalize(profile)
        .ok()
        .map(|p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nix() -> NixCli {
        NixCli {
            nix: "/usr/bin/nix".into(),
            trusted_keys: vec!["a:AAA".into(), "b:BBB".into()],
            pull_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn copy_checks_signatures_with_configured_keys_only() {
        let argv = nix().copy_argv("http://127.0.0.1:1/t", &["/nix/store/x-y".to_owned()]);
        assert!(!argv.iter().any(|a| a.contains("no-check-sigs")));
        let joined = argv.join(" ");
        assert!(
            joined.contains("--option trusted-public-keys a:AAA b:BBB"),
            "{joined}"
        );
        assert!(joined.contains("--option require-sigs true"));
        assert!(joined.ends_with("copy --from http://127.0.0.1:1/t --option trusted-public-keys a:AAA b:BBB --option require-sigs true --option substituters  /nix/store/x-y"), "{joined}");
    }

    #[test]
    fn path_info_reads_the_local_store_only() {
        let argv = nix().path_info_argv(&["/nix/store/x-y".to_owned()]);
        assert_eq!(
            argv.join(" "),
            "/usr/bin/nix --extra-experimental-features nix-command path-info --json --recursive --option substituters  /nix/store/x-y"
        );
    }

    #[test]
    fn profile_commands_use_nix_env_beside_nix() {
        let p = Path::new("/nix/var/nix/profiles/ferry/web");
        assert_eq!(
            nix().set_profile_argv(p, "/nix/store/x-y"),
            [
                "/usr/bin/nix-env",
                "--profile",
                "/nix/var/nix/profiles/ferry/web",
                "--set",
                "/nix/store/x-y"
            ]
        );
        assert_eq!(nix().prune_argv(p, 5)[4], "+5");
        assert_eq!(
            nix().switch_generation_argv(p, 3)[1..],
            [
                "--profile",
                "/nix/var/nix/profiles/ferry/web",
                "--switch-generation",
                "3"
            ]
        );
    }

    #[tokio::test]
    async fn a_stuck_nix_env_is_given_up_on_within_the_command_timeout() {
        // A nix-env that hangs (a held Nix lock, an unresponsive daemon).
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nix-env");
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 5\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cli = NixCli {
            nix: dir.path().join("nix").display().to_string(),
            command_timeout: Duration::from_millis(500),
            ..nix()
        };
        let started = std::time::Instant::now();
        let result = cli
            .pin(&dir.path().join("profiles/web"), "/nix/store/x-y", 5)
            .await;
        let took = started.elapsed();
        let err = result
            .expect_err("a hanging nix-env counted as done")
            .to_string();
        assert!(took < Duration::from_secs(3), "waited {took:?}");
        assert!(
            err.contains("nix-env") && err.contains("no answer within 500ms"),
            "{err}"
        );
    }

    #[test]
    fn failures_are_classified() {
        assert!(classify_pull_failure("error: cannot add path '/nix/store/x' because it lacks a signature by a trusted key").starts_with("bad signature"));
        assert!(
            classify_pull_failure("error: path '/nix/store/x' does not exist in binary cache")
                .starts_with("missing")
        );
        assert_eq!(
            classify_pull_failure("error: unable to download 'http://x': Couldn't connect"),
            "network"
        );
    }
}

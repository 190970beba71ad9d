//! The host's NixOS system, as the system step changes it: the system profile, the
//! system's own `switch-to-configuration`, and what systemd says after it. Every command
//! that changes the host runs as a transient systemd service (`DbusSystemd::run_transient`),
//! because the agent's own sandbox (read-only `/`, no capabilities) cannot activate a
//! system, and because a switch may restart the agent's own unit: the switch then goes on.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::systemd::DbusSystemd;
use crate::vocab::boot::BootParts;
use crate::vocab::profile_link::generation_link;

/// NixOS's system profile.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// Where the booted system is linked (NixOS, at boot).
pub const BOOTED_SYSTEM: &str = "/run/booted-system";

/// `switch-to-configuration`'s actions the step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchAction {
    /// Activate now, leave the boot entry alone.
    Test,
    /// Make it the default boot entry, activate nothing.
    Boot,
}

impl SwitchAction {
    /// The argument `switch-to-configuration` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchAction::Test => "test",
            SwitchAction::Boot => "boot",
        }
    }
}

/// The host's system, as the system step uses it. Errors are one line naming what failed.
pub trait SystemHost: Send + Sync {
    /// The store path the system profile points at now; `None` without a profile.
    fn profile_target(&self) -> Option<String>;
    /// Refuses a path that is not a system: `bin/switch-to-configuration` must be an
    /// executable file in it.
    fn check_switchable(&self, path: &str) -> Result<(), String>;
    /// The kernel, initrd and modules of `path`, or of the booted system for `None`.
    fn boot_parts(&self, path: Option<&str>) -> BootParts;
    /// Makes `path` the system profile's new generation.
    fn set_profile(&self, path: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Takes the system profile back to the generation before its newest, and deletes the
    /// newest (so a failed system never appears in the boot menu).
    fn undo_profile(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Runs `path/bin/switch-to-configuration action`, bounded by the switch timeout.
    fn switch(
        &self,
        path: &str,
        action: SwitchAction,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The units systemd has failed now.
    fn failed_units(&self) -> impl Future<Output = Result<BTreeSet<String>, String>> + Send;
}

/// The real host: the system profile through `nix-env`, commands through systemd.
#[derive(Debug, Clone)]
pub struct NixosSystem {
    /// systemd, which runs the commands.
    pub systemd: DbusSystemd,
    /// `nix-env` (absolute: a transient unit has a bare `PATH`).
    pub nix_env: String,
    /// The system profile (`SYSTEM_PROFILE`).
    pub profile: PathBuf,
    /// `system.switchTimeoutSec`.
    pub switch_timeout: Duration,
    /// `timeouts.jobSec`, for the profile commands.
    pub command_timeout: Duration,
}

impl NixosSystem {
    async fn run(
        &self,
        what: &str,
        commands: Vec<Vec<String>>,
        limit: Duration,
    ) -> Result<(), String> {
        // Unique per run: a failed unit of the same name may still be loaded.
        let name = format!(
            "ferry-system-{what}-{}.service",
            chrono::Utc::now().timestamp_micros()
        );
        let started = std::time::Instant::now();
        let shown = commands
            .iter()
            .map(|c| c.join(" "))
            .collect::<Vec<_>>()
            .join(" && ");
        match self.systemd.run_transient(&name, &commands, limit).await {
            Ok(result) if result == "done" => Ok(()),
            // systemd reports a start past TimeoutStartSec as `failed` like any other.
            Ok(_) if started.elapsed() >= limit => Err(format!(
                "{shown} ran past its limit of {} s and was stopped (journalctl -u {name})",
                limit.as_secs()
            )),
            Ok(result) => Err(format!(
                "{shown} ended with {result} (journalctl -u {name} says why)"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    fn profile_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.nix_env.clone(),
            "--profile".to_owned(),
            self.profile.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }
}

/// The generation number in a profile link's name (`system-42-link` → 42).
pub fn generation_of(link: &str) -> Option<u32> {
    generation_link(link)?.1.parse().ok()
}

/// Where a link such as the system profile finally points (`None`: absent or unreadable).
pub fn read_target(path: &Path) -> Option<String> {
    std::fs::canonicalize(path)
        .ok()
        .map(|p| p.display().to_string())
}

impl SystemHost for NixosSystem {
    fn profile_target(&self) -> Option<String> {
        read_target(&self.profile)
    }

    fn check_switchable(&self, path: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt as _;
        let program = Path::new(path).join("bin/switch-to-configuration");
        match std::fs::metadata(&program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(format!("{} is not an executable file", program.display())),
            Err(e) => Err(format!(
                "{path} is not a NixOS system: {} ({e}); push config.system.build.toplevel",
                program.display()
            )),
        }
    }

    fn boot_parts(&self, path: Option<&str>) -> BootParts {
        let top = PathBuf::from(path.unwrap_or(BOOTED_SYSTEM));
        BootParts {
            kernel: read_target(&top.join("kernel")),
            initrd: read_target(&top.join("initrd")),
            modules: read_target(&top.join("kernel-modules")),
        }
    }

    async fn set_profile(&self, path: &str) -> Result<(), String> {
        let argv = self.profile_argv(&["--set", path]);
        self.run("profile", vec![argv], self.command_timeout).await
    }

    async fn undo_profile(&self) -> Result<(), String> {
        let link = std::fs::read_link(&self.profile)
            .map_err(|e| format!("cannot read {}: {e}", self.profile.display()))?;
        let newest = link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(generation_of)
            .ok_or_else(|| {
                format!(
                    "{} points at {}, not at a generation link",
                    self.profile.display(),
                    link.display()
                )
            })?;
        let commands = vec![
            self.profile_argv(&["--rollback"]),
            self.profile_argv(&["--delete-generations", &newest.to_string()]),
        ];
        self.run("undo", commands, self.command_timeout).await
    }

    async fn switch(&self, path: &str, action: SwitchAction) -> Result<(), String> {
        let program = format!("{path}/bin/switch-to-configuration");
        let argv = vec![program, action.as_str().to_owned()];
        self.run(action.as_str(), vec![argv], self.switch_timeout)
            .await
    }

    async fn failed_units(&self) -> Result<BTreeSet<String>, String> {
        self.systemd.failed_units().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_from_link_names() {
        assert_eq!(generation_of("system-42-link"), Some(42));
        assert_eq!(generation_of("ferry-web-1-link"), Some(1));
        assert_eq!(generation_of("system"), None);
        assert_eq!(generation_of("system-x-link"), None);
    }
}

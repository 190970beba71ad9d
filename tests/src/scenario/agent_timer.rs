//! `ferry-agent.service` and `ferry-agent.timer` inside a bed host, as nix/module.nix
//! declares them: a oneshot tick at boot before multi-user.target, then one every interval.
//!
//! Two differences, both because the bed host is Debian rather than NixOS: Debian's Nix runs
//! without a daemon, so the agent writes the store itself and the module's sandboxing (which
//! assumes nix-daemon does that) is left out; and `AccuracySec` is tightened so a seconds-long
//! test interval is kept to the second instead of systemd's default minute.

use std::time::Duration;

use anyhow::Result;

use crate::agent_config::AGENT_CONFIG;
use crate::host::Host;

/// Where the agent binary is bound inside the host.
pub const AGENT: &str = "/usr/local/bin/ferry-agent";

/// The unit files, for an `interval`. Pure.
pub fn units(interval: Duration) -> (String, String) {
    let service = format!(
        "[Unit]\n\
         Description=Ferry agent: bring this host in line with the deployment manifest\n\
         Wants=network-online.target\n\
         After=network-online.target nix-daemon.service systemd-tmpfiles-setup.service caddy.service\n\
         Wants=caddy.service\n\
         Before=multi-user.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={AGENT} --config {AGENT_CONFIG} reconcile\n\
         Environment=FERRY_LOG=info\n\
         TimeoutStartSec=30min\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    );
    let timer = format!(
        "[Unit]\n\
         Description=Run the Ferry agent every {secs}s\n\
         \n\
         [Timer]\n\
         OnBootSec={secs}s\n\
         OnUnitActiveSec={secs}s\n\
         AccuracySec=100ms\n\
         Persistent=true\n\
         Unit=ferry-agent.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        secs = interval.as_secs().max(1)
    );
    (service, timer)
}

/// Installs and enables both units and starts the timer (its first tick comes at once, since
/// the host booted long ago).
pub fn install(host: &Host, interval: Duration) -> Result<()> {
    let (service, timer) = units(interval);
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.service",
        service.as_bytes(),
        0o644,
    )?;
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.timer",
        timer.as_bytes(),
        0o644,
    )?;
    host.sh_ok(
        "systemctl daemon-reload && systemctl enable -q ferry-agent.service ferry-agent.timer \
         && systemctl restart ferry-agent.timer",
    )?;
    Ok(())
}

/// Changes the interval of an installed timer.
pub fn set_interval(host: &Host, interval: Duration) -> Result<()> {
    let (_, timer) = units(interval);
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.timer",
        timer.as_bytes(),
        0o644,
    )?;
    host.sh_ok("systemctl daemon-reload && systemctl restart ferry-agent.timer")?;
    Ok(())
}

/// The agent's output of every tick the timer ran since `since` (a `journalctl --since`
/// value, e.g. `@1700000000`), oldest first.
pub fn journal(host: &Host, since: &str) -> Result<String> {
    host.sh_ok(&format!(
        "journalctl -q -u ferry-agent.service -o cat --no-pager --since '{since}'"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_tick_at_boot_and_every_interval() {
        let (service, timer) = units(Duration::from_secs(5));
        assert!(service.contains("Type=oneshot\n"));
        assert!(service.contains("Before=multi-user.target\n"));
        assert!(service.contains("WantedBy=multi-user.target\n"));
        assert!(service.contains(&format!(
            "ExecStart={AGENT} --config {AGENT_CONFIG} reconcile\n"
        )));
        assert!(timer.contains("OnUnitActiveSec=5s\n"));
        assert!(timer.contains("OnBootSec=5s\n"));
    }
}

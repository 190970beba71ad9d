//! `ferry-agent.service` and `ferry-agent.timer` on a bed host exactly as nix/module.nix
//! declares them: the module is evaluated by the machine's real Nix (through
//! nix/tests/eval-module.nix) for the host's `services.ferry-agent` options, and its
//! declarations are rendered as NixOS renders them ([`crate::module_render::nixos_unit`]),
//! sandboxing included, so every hardening claim of the module runs for real. The module's
//! tmpfiles rules and its additions to caddy.service come along.
//!
//! Where the bed is not NixOS: the packages are Debian's (`/usr/bin/nix`, `/usr/bin/systemctl`,
//! Caddy 2.6, the agent bound at `/usr/local/bin/ferry-agent`), `wantedBy` becomes
//! `[Install]` + `systemctl enable`, and the timer's `AccuracySec=` is 100ms instead of the
//! module's 1 s, so a test interval of seconds is kept to a tenth of a second.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::host::Host;
use crate::module_render::{eval_json, nixos_drop_in, nixos_unit};

/// The agent binary inside the host; the module's `package` is its prefix.
pub const AGENT: &str = "/usr/local/bin/ferry-agent";
/// The `package` option that puts `bin/ferry-agent` at [`AGENT`].
const PACKAGE: &str = "/usr/local";
/// Debian's prefix of `nix` and `systemctl` (the module's `nix.package`, `systemd.package`).
const DEBIAN_PREFIX: &str = "/usr";
/// Debian's Caddy (the socket mode is set the pre-2.8 way).
const CADDY_VERSION: &str = "2.6.2";
/// What NixOS puts on every unit's PATH (coreutils, findutils, grep, sed, systemd), from
/// Debian.
const DEFAULT_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";
/// Where the module's tmpfiles rules go.
const TMPFILES: &str = "/etc/tmpfiles.d/ferry-agent.conf";
/// Where the module's additions to caddy.service go (replacing the bed's own copy of the
/// admin-socket settings, which they include).
const CADDY_DROP_IN: &str = "/etc/systemd/system/caddy.service.d/ferry-admin-socket.conf";

/// The files the module makes for the agent.
#[derive(Clone, Debug)]
pub struct ModuleUnits {
    /// ferry-agent.service.
    pub service: String,
    /// ferry-agent.timer.
    pub timer: String,
    /// The tmpfiles.d rules (state, secrets and profile directories).
    pub tmpfiles: String,
    /// The module's additions to caddy.service, when it sets Caddy up.
    pub caddy: Option<String>,
}

/// Renders the agent's units for `options` (`services.ferry-agent`, as JSON; `enable` and
/// `package` are set here).
pub fn render(options: &Value) -> Result<ModuleUnits> {
    let (mut options, users, groups) = crate::module_render::split_host_config(options)?;
    let Some(map) = options.as_object_mut() else {
        bail!("services.ferry-agent options must be a JSON object, got {options}");
    };
    map.insert("enable".into(), Value::Bool(true));
    map.insert("package".into(), Value::String(PACKAGE.into()));
    let systemd = eval_json(
        "{ options, users, groups, prefix, caddyVersion }: (import ./nix/tests/eval-module.nix { \
           user = builtins.fromJSON options; nixPackage = prefix; systemdPackage = prefix; \
           users = builtins.fromJSON users; groups = builtins.fromJSON groups; \
           inherit caddyVersion; }).config.systemd",
        &[
            ("options", &options.to_string()),
            ("users", &users),
            ("groups", &groups),
            ("prefix", DEBIAN_PREFIX),
            ("caddyVersion", CADDY_VERSION),
        ],
    )?;
    let service = nixos_unit(
        &systemd["services"]["ferry-agent"],
        "Service",
        "serviceConfig",
        DEFAULT_PATH,
    )
    .context("rendering ferry-agent.service")?;
    let timer = nixos_unit(
        &systemd["timers"]["ferry-agent"],
        "Timer",
        "timerConfig",
        DEFAULT_PATH,
    )
    .context("rendering ferry-agent.timer")?;
    // The bed's accuracy replaces the module's own (1 s), not added beside it: systemd would
    // take the last of two.
    let timer: String = timer
        .lines()
        .filter(|l| !l.starts_with("AccuracySec="))
        .map(|l| format!("{l}\n"))
        .collect();
    let timer = timer.replacen("[Timer]\n", "[Timer]\nAccuracySec=100ms\n", 1);
    let rules = systemd["tmpfiles"]["rules"]
        .as_array()
        .context("the module declares no tmpfiles rules")?;
    let mut tmpfiles = String::new();
    for rule in rules {
        tmpfiles.push_str(rule.as_str().context("a tmpfiles rule is not a string")?);
        tmpfiles.push('\n');
    }
    let caddy = match systemd["services"].get("caddy") {
        Some(caddy) => Some(nixos_drop_in(&caddy["serviceConfig"])?),
        None => None,
    };
    Ok(ModuleUnits {
        service,
        timer,
        tmpfiles,
        caddy,
    })
}

/// Installs the module's units for `options` into `host`, applies its tmpfiles rules,
/// restarts Caddy when the module changes it, and enables the service (boot tick) and the
/// timer (whose first tick comes at once, since the host booted long ago).
pub fn install(host: &Host, options: &Value) -> Result<ModuleUnits> {
    let units = render(options)?;
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.service",
        units.service.as_bytes(),
        0o644,
    )?;
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.timer",
        units.timer.as_bytes(),
        0o644,
    )?;
    host.put_bytes(TMPFILES, units.tmpfiles.as_bytes(), 0o644)?;
    let mut script = format!("systemd-tmpfiles --create {TMPFILES} && systemctl daemon-reload");
    if let Some(caddy) = &units.caddy {
        host.put_bytes(CADDY_DROP_IN, caddy.as_bytes(), 0o644)?;
        script.push_str(" && systemctl daemon-reload && systemctl restart caddy.service");
    }
    script.push_str(
        " && systemctl enable -q ferry-agent.service ferry-agent.timer \
         && systemctl restart ferry-agent.timer",
    );
    host.sh_ok(&script)?;
    Ok(units)
}

/// Re-renders and installs the timer for `options` (e.g. a new `interval`), restarting it.
pub fn reinstall_timer(host: &Host, options: &Value) -> Result<()> {
    let units = render(options)?;
    host.put_bytes(
        "/etc/systemd/system/ferry-agent.timer",
        units.timer.as_bytes(),
        0o644,
    )?;
    host.sh_ok("systemctl daemon-reload && systemctl restart ferry-agent.timer")?;
    Ok(())
}

/// The agent's output of every tick the unit ran since `since` (a `journalctl --since`
/// value, e.g. `@1700000000`), oldest first.
pub fn journal(host: &Host, since: &str) -> Result<String> {
    host.sh_ok(&format!(
        "journalctl -q -u ferry-agent.service -o cat --no-pager --since '{since}'"
    ))
}

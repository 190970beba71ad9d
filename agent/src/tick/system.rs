//! System step: the host's whole NixOS system, when a trusted manifest names one for it
//! (`systems`) and agent.toml enables it. Between verify and observe, so the services' steps
//! see the host as the switch left it. What to do is decided in `system_deploy` (pure); the
//! commands run through `backend::system`.
//!
//! A switch: pull and trust-check the closure as for a service, refuse a path that is not a
//! system, note the units failed before, save a pending mark, set the profile, `test`, check
//! the host (bucket, failed units, Ferry's services), then `boot`; or, on a failed check,
//! undo the profile, `test` the previous system again and quarantine the path. The boot
//! entry is written only after the check passed, so it never points at a system that failed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_schema::manifest::Manifest;

use super::TickSettings;
use super::fetch::get_manifest;
use crate::apply::Backends;
use crate::backend::bucket::ReadBucket;
use crate::backend::cache_proxy::CacheProxy;
use crate::backend::store::Store;
use crate::backend::system::{SwitchAction, SystemHost};
use crate::backend::systemd::Systemd;
use crate::closure_trust::untrusted;
use crate::state::State;
use crate::state_file;
use crate::system_deploy::{self, AfterSwitch, Decision};
use crate::vocab::unit::serving_unit;

/// What the step did, for the tick's outcome.
#[derive(Debug, Clone, Default)]
pub struct SystemStep {
    /// A switch failed or was undone: the tick fails.
    pub failed: bool,
    /// The host runs a new system.
    pub changed: bool,
    /// Time spent, which the services' deadline is moved by.
    pub took: Duration,
}

/// The system step. `host` is `None` when agent.toml does not enable system deploys.
pub async fn step<B, S, D, U, P, Y>(
    settings: &TickSettings,
    manifest: &Manifest,
    state: &mut State,
    b: &Backends<B, S, D, U, P>,
    host: Option<&Y>,
    lines: &mut Vec<String>,
) -> SystemStep
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    Y: SystemHost,
{
    let started = Instant::now();
    let wanted = manifest.systems.get(&settings.policy.host);
    if let Some(lifted) = system_deploy::lift_quarantine(&mut state.system, wanted) {
        lines.push(format!(
            "system: quarantine of {lifted} lifted (the manifest names another system)"
        ));
    }
    let target = host.and_then(SystemHost::profile_target);
    let decision = system_deploy::decide(wanted, host.is_some(), target.as_deref(), &state.system);
    let mut out = SystemStep::default();
    match (decision, host) {
        (Decision::Nothing, _) => {}
        (Decision::Disabled(path), _) => lines.push(format!(
            "system: the manifest names {path} for this host, but system deploys are off here (set system.enable = true in agent.toml to switch to it); nothing changed"
        )),
        (Decision::Running(path), _) => {
            // A system switched to by hand (or before state was lost) counts as running.
            if state.system.running.as_deref() != Some(path.as_str()) {
                state.system.running = Some(path);
                state.system.since = Some(now());
            }
        }
        (Decision::Quarantined { path, why }, _) => {
            out.failed = true;
            lines.push(format!(
                "system: {path} is quarantined: it failed here before ({why}); push another system, or run `ferry-agent reconcile --retry-failed`"
            ));
        }
        (Decision::Recover { pending }, Some(host)) => {
            out.failed = recover(&pending, target.as_deref(), state, host, lines).await;
        }
        (Decision::Switch { to }, Some(host)) => {
            match switch(settings, &to, state, b, host, lines).await {
                Ok(()) => out.changed = true,
                Err(()) => out.failed = true,
            }
        }
        (Decision::Recover { .. } | Decision::Switch { .. }, None) => {}
    }
    out.took = started.elapsed();
    out
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A tick was cut off during a switch to `pending`. If the profile points there, the host
/// may be half-switched: switch back and quarantine it. Otherwise the cut came before the
/// host changed: forget the mark. Returns whether the tick fails.
async fn recover<Y: SystemHost>(
    pending: &str,
    target: Option<&str>,
    state: &mut State,
    host: &Y,
    lines: &mut Vec<String>,
) -> bool {
    if target != Some(pending) {
        state.system.pending = None;
        lines.push(format!(
            "system: an earlier tick was cut off before switching to {pending}; the host did not change"
        ));
        return false;
    }
    let why = "an earlier tick was cut off during its switch".to_owned();
    let back = switch_back(host, lines).await;
    state.system.pending = None;
    state.system.quarantined = Some((pending.to_owned(), why.clone()));
    lines.push(format!(
        "system: {pending} failed: {why}; {back}; quarantined"
    ));
    true
}

/// Undo the profile and activate what it points at again; says what was done.
async fn switch_back<Y: SystemHost>(host: &Y, lines: &mut Vec<String>) -> String {
    if let Err(e) = host.undo_profile().await {
        lines.push(format!("system: cannot take the system profile back: {e}"));
        return "the system profile could NOT be taken back: check /nix/var/nix/profiles/system by hand".to_owned();
    }
    match host.profile_target() {
        Some(previous) => match host.switch(&previous, SwitchAction::Test).await {
            Ok(()) => format!("switched back to {previous}"),
            Err(e) => format!(
                "the profile is back on {previous}, but activating it failed ({e}): run {previous}/bin/switch-to-configuration test by hand"
            ),
        },
        None => "the profile had no earlier generation: the host keeps what the failed switch activated until the next system".to_owned(),
    }
}

/// Switch to `to`; `Err` after a failure the lines explain (the host is back on its
/// previous system when it got that far).
async fn switch<B, S, D, U, P, Y>(
    settings: &TickSettings,
    to: &str,
    state: &mut State,
    b: &Backends<B, S, D, U, P>,
    host: &Y,
    lines: &mut Vec<String>,
) -> Result<(), ()>
where
    B: ReadBucket,
    S: Store,
    D: Systemd,
    Y: SystemHost,
{
    let fail = |lines: &mut Vec<String>, why: String| {
        lines.push(format!(
            "system: cannot switch to {to}: {why}; nothing changed"
        ));
    };
    if let Err(e) = pull(to, b, &settings.apply.trusted_keys).await {
        fail(lines, e);
        return Err(());
    }
    if let Err(e) = host.check_switchable(to) {
        fail(lines, e);
        return Err(());
    }
    let failed_before = match host.failed_units().await {
        Ok(units) => units,
        Err(e) => {
            fail(lines, format!("cannot list failed units: {e}"));
            return Err(());
        }
    };
    let services_before = active_services(state, b).await;
    // The mark first: a tick cut off from here on is undone by the next one.
    state.system.pending = Some(to.to_owned());
    if let Some(path) = &settings.checkpoint
        && let Err(e) = state_file::save(path, state)
    {
        state.system.pending = None;
        fail(
            lines,
            format!("cannot save the state before switching ({e:#})"),
        );
        return Err(());
    }
    if let Err(e) = host.set_profile(to).await {
        state.system.pending = None;
        fail(lines, format!("cannot set the system profile: {e}"));
        return Err(());
    }
    let verdict = match host.switch(to, SwitchAction::Test).await {
        Err(e) => Err(format!("switch-to-configuration test failed: {e}")),
        Ok(()) => {
            let after = AfterSwitch {
                bucket: bucket_answers(settings, state, b).await,
                failed_before,
                failed_after: host.failed_units().await.unwrap_or_default(),
                services_down: services_down(&services_before, b).await,
            };
            system_deploy::judge(&after)
        }
    };
    if let Err(why) = verdict {
        let back = switch_back(host, lines).await;
        state.system.pending = None;
        state.system.quarantined = Some((to.to_owned(), why.clone()));
        lines.push(format!(
            "system: {to} failed its check: {why}; {back}; quarantined"
        ));
        return Err(());
    }
    // Only a system that passed its check becomes the default boot entry.
    let boot = host.switch(to, SwitchAction::Boot).await;
    state.system.pending = None;
    state.system.running = Some(to.to_owned());
    state.system.since = Some(now());
    state.system.reboot_needed =
        crate::vocab::boot::reboot_needed(&host.boot_parts(None), &host.boot_parts(Some(to)));
    lines.push(format!(
        "system: switched to {to}{}",
        if state.system.reboot_needed {
            " (it has a new kernel, initrd or kernel modules: reboot the host to run them; Ferry never reboots by itself)"
        } else {
            ""
        }
    ));
    if let Err(e) = boot {
        lines.push(format!(
            "system: {to} runs, but making it the default boot entry failed ({e}); the host boots its previous system until the next switch"
        ));
        return Err(());
    }
    Ok(())
}

/// Pull `path`'s closure and check every path of it is signed by a trusted key.
async fn pull<B: ReadBucket, S: Store, D, U, P>(
    path: &str,
    b: &Backends<B, S, D, U, P>,
    keys: &[ferry_schema::PublicKey],
) -> Result<(), String> {
    let one = [path.to_owned()];
    // The proxy lives as long as the copy.
    let mut _proxy = None;
    let url = match b.bucket.direct_cache_url() {
        Some(url) => url,
        None => {
            let proxy = CacheProxy::start_with_prefetch(b.bucket.clone(), &one)
                .await
                .map_err(|e| format!("cannot start the loopback cache proxy: {e}"))?;
            let url = proxy.url().to_owned();
            _proxy = Some(proxy);
            url
        }
    };
    b.store.pull(&url, &one).await.map_err(|e| e.to_string())?;
    let infos = b
        .store
        .closure_info(&one)
        .await
        .map_err(|e| e.to_string())?;
    match untrusted(&one, &infos, keys).remove(path) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// Whether the bucket still answers the agent's own fetch (conditional, so a 304 is cheap).
async fn bucket_answers<B: ReadBucket, S, D, U, P>(
    settings: &TickSettings,
    state: &State,
    b: &Backends<B, S, D, U, P>,
) -> Result<(), String> {
    let etag = state.manifest_etag.as_deref();
    match get_manifest(
        &*b.bucket,
        etag,
        settings.size_cap,
        settings.fetch_timeout,
        None,
    )
    .await
    {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(super::fetch::timed_out(settings.fetch_timeout)),
    }
}

/// Ferry's services whose serving unit is active now, by service, with that unit.
async fn active_services<B, S, D: Systemd, U, P>(
    state: &State,
    b: &Backends<B, S, D, U, P>,
) -> BTreeMap<String, String> {
    let mut active = BTreeMap::new();
    for (name, applied) in &state.services {
        let unit = serving_unit(name, applied.live_port);
        if let Ok(Some(s)) = b.systemd.unit_state(&unit).await
            && s.active_state == "active"
        {
            active.insert(name.clone(), unit);
        }
    }
    active
}

/// Of the services active before, those whose unit is not active now, with its state.
async fn services_down<B, S, D: Systemd, U, P>(
    before: &BTreeMap<String, String>,
    b: &Backends<B, S, D, U, P>,
) -> BTreeMap<String, String> {
    let mut down = BTreeMap::new();
    for (name, unit) in before {
        let state = match b.systemd.unit_state(unit).await {
            Ok(Some(s)) if s.active_state == "active" => continue,
            Ok(Some(s)) => s.active_state,
            Ok(None) => "not loaded".to_owned(),
            Err(e) => format!("unreadable: {e}"),
        };
        down.insert(name.clone(), state);
    }
    down
}

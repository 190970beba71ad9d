//! `ferry-agent status [--json]`: what this host runs — services, store paths, profile
//! generation, unit state (a blue-green service's live instance), the Caddy route the agent
//! keeps for it, the store paths in quarantine, and the last tick's result and time.

use std::path::Path;
use std::process::ExitCode;

use ferry_agent::backend::systemd::Systemd;
use ferry_agent::backend::units::{UnitDir, Units, by_service};
use ferry_agent::config::Config;
use ferry_agent::render::unit::{header_store_path, serving_unit};
use ferry_agent::state_file;
use ferry_agent::tick::route::specs_from_state;
use serde_json::json;

use super::runtime;

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Print the status.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let (state, note) = state_file::load(&config.state_file());
    // Unit files by service (a plain unit or a blue-green template).
    let units = by_service(
        UnitDir {
            dir: config.unit_dir.clone(),
        }
        .list()?,
    );
    let rt = runtime::runtime()?;
    let systemd = rt.block_on(runtime::systemd(&config)).ok();
    let mut names: Vec<&String> = state.services.keys().chain(units.keys()).collect();
    names.sort();
    names.dedup();
    let routes = specs_from_state(&state);
    let mut services = Vec::new();
    for name in names {
        // The route the agent keeps in Caddy for it (from the last good deploy).
        let route = routes.iter().find(|r| r.service == *name).map(|r| {
            json!({
                "domain": r.domain,
                "path": r.path,
                "upstream": format!("127.0.0.1:{}", r.port),
            })
        });
        let store_path = state
            .services
            .get(name)
            .map(|a| a.service.artifact.store_path.clone())
            .or_else(|| {
                units
                    .get(name)
                    .and_then(|files| files.values().find_map(|t| header_store_path(t)))
                    .map(|(_, p)| p.to_owned())
            });
        // The unit that serves: a blue-green service's live instance.
        let live_port = state.services.get(name).and_then(|a| a.live_port);
        let unit = serving_unit(name, live_port);
        let unit_state = match &systemd {
            Some(sd) => rt.block_on(sd.unit_state(&unit)).ok().flatten(),
            None => None,
        };
        let profile = config.profile_dir.join(name);
        let generation = std::fs::read_link(&profile)
            .ok()
            .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
            .and_then(|f| f.rsplit('-').nth(1).and_then(|g| g.parse::<u64>().ok()));
        services.push(json!({
            "name": name,
            "storePath": store_path,
            "unit": unit,
            "unitFile": units.contains_key(name),
            "livePort": live_port,
            "retiring": state.retiring.get(name).map(|r| r.units.clone()),
            "route": route,
            "activeState": unit_state.as_ref().map(|s| s.active_state.clone()),
            "subState": unit_state.as_ref().map(|s| s.sub_state.clone()),
            "nRestarts": unit_state.as_ref().map(|s| s.n_restarts),
            "profile": profile,
            "profileGeneration": generation,
            "appliedAt": state.services.get(name).map(|a| a.applied_at.clone()),
            "quarantined": state.quarantine.get(name).map(|q| q.store_path.clone()),
            "heldByRollback": state.rollbacks.get(name).map(|h| h.store_path.clone()),
        }));
    }
    let doc = json!({
        "host": config.effective_host_name().ok(),
        "manifestGeneration": state.manifest.as_ref().map(|m| m.generation.clone()),
        "stateNote": note,
        "systemdReachable": systemd.is_some(),
        "lastTick": state.last_tick,
        "services": services,
        "quarantine": state.quarantine,
        "rollbacks": state.rollbacks,
        "system": state.system,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(note) = &note {
        println!("state: {note}");
    }
    match &state.last_tick {
        Some(t) => println!("last tick: {} {:?} ({} ms)", t.at, t.outcome, t.duration_ms),
        None => println!("last tick: never"),
    }
    for s in &services {
        let get = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        let route = s
            .get("route")
            .filter(|r| !r.is_null())
            .map_or_else(String::new, |r| {
                let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-");
                format!(
                    " route={}{} -> {}",
                    text("domain"),
                    text("path"),
                    text("upstream")
                )
            });
        println!(
            "{}: {} unit={} {}/{} generation={}{route}",
            get("name"),
            get("storePath"),
            get("unit"),
            get("activeState"),
            get("subState"),
            s.get("profileGeneration")
                .and_then(|v| v.as_u64())
                .map_or("-".to_owned(), |g| g.to_string()),
        );
    }
    for (name, q) in &state.quarantine {
        let back = match &q.rolled_back_to {
            Some(path) => format!("rolled back to {path}"),
            None => "stopped".to_owned(),
        };
        println!(
            "{name}: quarantined {} since {}: {}; {back} (retry with `ferry-agent reconcile --retry-failed`)",
            q.store_path, q.at, q.reason
        );
    }
    let sys = &state.system;
    if let Some(path) = &sys.running {
        println!(
            "system: {path} since {}{}",
            sys.since.as_deref().unwrap_or("-"),
            if sys.reboot_needed {
                " (reboot needed: new kernel, initrd or modules)"
            } else {
                ""
            }
        );
    }
    if let Some((path, why)) = &sys.quarantined {
        println!(
            "system: quarantined {path}: {why} (retry with `ferry-agent reconcile --retry-failed`)"
        );
    }
    for (name, h) in &state.rollbacks {
        println!(
            "{name}: held at {} (profile generation {}) by `ferry-agent rollback` since {}, instead of {}; publishing the manifest again ends the hold",
            h.store_path, h.profile_generation, h.at, h.from
        );
    }
    Ok(ExitCode::SUCCESS)
}

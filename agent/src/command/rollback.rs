//! `ferry-agent rollback SERVICE`: what an operator expects of `nix-env --rollback` on a
//! service's profile. The profile goes one generation back (`nix-env --switch-generation`,
//! so a second rollback goes further back), then a tick that asks no bucket writes that
//! version's unit, restarts it, health-checks it and puts the newer one back if it fails;
//! the other services are restored as state records them. A healthy rollback is held (in
//! state) until the manifest changes again, so the next ticks do not re-deploy the version
//! the unchanged manifest names. Exit codes: 0 rolled back and healthy; 1 it failed its
//! check (the newer version runs again) or the service is unknown or has no earlier
//! generation (nothing changed); 75 another tick holds the lock.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use ferry_agent::config::Config;
use ferry_agent::rollback_hold::{RollbackTarget, generation_numbers, previous};
use ferry_agent::state::State;

use super::reconcile::{Mode, run_mode};

/// Arguments of `rollback`.
#[derive(clap::Args)]
pub struct Args {
    /// The service to take one profile generation back (as `ferry-agent status` names it).
    service: String,
}

/// Roll the service back.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    run_mode(config_path, Mode::Rollback(args.service))
}

/// Finds the generation `name` goes back to; changes nothing. Errors name the service and
/// say what to do.
pub fn target(config: &Config, state: &State, name: &str) -> anyhow::Result<RollbackTarget> {
    let Some(applied) = state.services.get(name) else {
        let known: Vec<&str> = state.services.keys().map(String::as_str).collect();
        if known.is_empty() {
            bail!("unknown service `{name}`: this host runs no Ferry service");
        }
        bail!(
            "unknown service `{name}`: this host runs {} (see `ferry-agent status`)",
            known.join(", ")
        );
    };
    let profile = config.profile_dir.join(name);
    let link = std::fs::read_link(&profile).with_context(|| {
        format!(
            "service `{name}` has no profile at {}: nothing to roll back to",
            profile.display()
        )
    })?;
    let link_name = link
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(&from_generation) = generation_numbers(name, [link_name.as_str()]).first() else {
        bail!(
            "service `{name}`: {} points at {}, not at a generation of the profile",
            profile.display(),
            link.display()
        );
    };
    let dir = profile
        .parent()
        .with_context(|| format!("{} has no parent directory", profile.display()))?;
    let entries: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let numbers = generation_numbers(name, entries.iter().map(String::as_str));
    let Some(generation) = previous(from_generation, &numbers) else {
        bail!(
            "service `{name}`: no generation before {from_generation} in {} (`nix-env --profile {} --list-generations` lists them): nothing to roll back to",
            profile.display(),
            profile.display()
        );
    };
    let link = dir.join(format!("{name}-{generation}-link"));
    let store_path = std::fs::canonicalize(&link)
        .with_context(|| format!("service `{name}`: reading {}", link.display()))?
        .display()
        .to_string();
    let from = applied.service.artifact.store_path.clone();
    if store_path == from {
        bail!(
            "service `{name}`: generation {generation} is {store_path}, the version that already runs: nothing to roll back to"
        );
    }
    Ok(RollbackTarget {
        service: name.to_owned(),
        profile,
        from_generation,
        from,
        generation,
        store_path,
    })
}

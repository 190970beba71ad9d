//! Turning what the user typed into store paths and their closure: a store path (or a
//! symlink into the store, like `./result`) is used as is; anything else is built.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ferry_schema::StorePath;
use ferry_schema::names::STORE_DIR;

use crate::nix_cli::{build_command, built_path, path_info_command, run, system_build_command};
use ferry_schema::path_info::{self, PathInfo};

/// Whether resolving `arg` builds nothing: it is a store path or a symlink into the store
/// (`./result`), not a `.nix` file or an installable.
pub fn is_built(arg: &str) -> bool {
    !arg.ends_with(".nix")
        && (arg.starts_with(STORE_DIR)
            || std::fs::canonicalize(arg)
                .ok()
                .and_then(|t| t.to_str().map(|t| t.starts_with(STORE_DIR)))
                .unwrap_or(false))
}

/// The top-level store path of a store path, a symlink into the store, or an installable.
pub fn resolve(arg: &str) -> Result<String> {
    if arg.starts_with(STORE_DIR) {
        let top = top_level(arg);
        StorePath::parse(&top).with_context(|| format!("{arg:?} is not a valid store path"))?;
        if !Path::new(&top).exists() {
            bail!(
                "store path {top} does not exist in the local Nix store; build it first (or pass the installable instead)"
            );
        }
        return Ok(top);
    }
    if let Ok(target) = std::fs::canonicalize(arg)
        && let Some(text) = target.to_str().filter(|t| t.starts_with(STORE_DIR))
    {
        return Ok(top_level(text));
    }
    let build = build_command(arg);
    let out = run(&build).with_context(|| format!("building {arg:?}"))?;
    built_path(&build, &out).with_context(|| format!("building {arg:?}"))
}

/// The toplevel store path of `ferry push --system`'s TARGET: a built toplevel (a store
/// path or `./result`), an installable naming one, or a NixOS configuration in a `.nix`
/// file (see [`system_build_command`]). Refused unless it has `bin/switch-to-configuration`,
/// which is what the host's agent runs: a service's closure is not a system.
pub fn resolve_system(target: &str) -> Result<String> {
    let top = if target.ends_with(".nix") && Path::new(target).is_file() {
        let file = std::fs::canonicalize(target)
            .with_context(|| format!("reading the NixOS configuration {target}"))?;
        let file = file
            .to_str()
            .with_context(|| format!("{target}: the path is not UTF-8"))?;
        let build = system_build_command(file);
        let out = run(&build).with_context(|| {
            format!("building the NixOS configuration {target} (is nixpkgs on NIX_PATH?)")
        })?;
        built_path(&build, &out).with_context(|| format!("building {target}"))?
    } else {
        resolve(target)?
    };
    if !Path::new(&top).join(SWITCH).is_file() {
        bail!(
            "{target} resolved to {top}, which is not a NixOS system: it has no {SWITCH}; name the system's toplevel (`config.system.build.toplevel`, or the `result` of `nixos-rebuild build`)"
        );
    }
    Ok(top)
}

/// What makes a store path a NixOS system, and what the agent runs in it.
const SWITCH: &str = "bin/switch-to-configuration";

/// `/nix/store/<hash>-<name>` of a path that may point inside a store path.
fn top_level(path: &str) -> String {
    let rest = path
        .strip_prefix(STORE_DIR)
        .unwrap_or(path)
        .trim_start_matches('/');
    let name = rest.split('/').next().unwrap_or(rest);
    format!("{STORE_DIR}/{name}")
}

/// The closure of `paths` according to the local Nix store.
pub fn closure(paths: &[String]) -> Result<Vec<PathInfo>> {
    let json = run(&path_info_command(paths))?;
    path_info::parse(&json).context("reading the closure from nix path-info")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_of_paths_inside_the_store() {
        assert_eq!(top_level("/nix/store/aaaa-x/bin/web"), "/nix/store/aaaa-x");
        assert_eq!(top_level("/nix/store/aaaa-x"), "/nix/store/aaaa-x");
    }
}

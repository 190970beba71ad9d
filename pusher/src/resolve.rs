//! Turning what the user typed into store paths and their closure: a store path (or a
//! symlink into the store, like `./result`) is used as is; anything else is built.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ferry_schema::StorePath;
use ferry_schema::names::STORE_DIR;

use crate::nix_cli::{build_command, built_path, path_info_command, run};
use ferry_schema::path_info::{self, PathInfo};

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

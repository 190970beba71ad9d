//! agent.toml exactly as the NixOS module writes it: nix/module.nix is evaluated by the
//! machine's real Nix (through nix/tests/eval-module.nix, which needs no nixpkgs) for the
//! `services.ferry-agent` options given, and the settings it hands `pkgs.formats.toml` are
//! rendered the way that renders JSON (tables for attribute sets, keys sorted, no null).
//! The test bed writes its hosts' agent.toml this way, so a key the module renames or drops
//! breaks the bed's tests rather than going unnoticed, and options the module's assertions
//! refuse (no manifestKeys) are refused here too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// `nix-instantiate --eval --strict --json` of `expr`, evaluated in the repository root, with
/// `--argstr NAME VALUE` for each of `args` (so `expr` may be a function of them), parsed
/// as JSON.
pub fn eval_json(expr: &str, args: &[(&str, &str)]) -> Result<Value> {
    let mut command = Command::new("nix-instantiate");
    command.args(["--eval", "--strict", "--json", "-E", expr]);
    for (name, value) in args {
        command.args(["--argstr", name, value]);
    }
    let output = command
        .current_dir(repo_root())
        .output()
        .context("running nix-instantiate (install Nix with tests/bed/install.sh)")?;
    if !output.status.success() {
        bail!(
            "nix-instantiate --eval failed for {expr}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("nix-instantiate printed no JSON for {expr}"))
}

/// JSON (what `builtins.toJSON` gives `pkgs.formats.toml`) to a TOML value, with the same
/// refusals: TOML has no null and no integers beyond i64. `at` names the value in errors.
pub fn json_to_toml(value: &Value, at: &str) -> Result<toml::Value> {
    Ok(match value {
        Value::Null => bail!("{at}: null cannot be written to TOML"),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if !n.is_u64() => toml::Value::Float(f),
            _ => bail!("{at}: {n} does not fit a TOML integer"),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_to_toml(v, &format!("{at}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_to_toml(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_>>()?,
        ),
    })
}

/// The settings the module renders to /etc/ferry/agent.toml for `services.ferry-agent`
/// set to `options` (JSON of the module's options; `enable` is implied).
pub fn module_agent_settings(options: &Value) -> Result<Value> {
    let mut options = options.clone();
    let Some(map) = options.as_object_mut() else {
        bail!("services.ferry-agent options must be a JSON object, got {options}");
    };
    map.insert("enable".into(), Value::Bool(true));
    let eval = eval_json(
        "{ options }: let e = import ./nix/tests/eval-module.nix { user = builtins.fromJSON options; }; in { inherit (e) agentToml failedAssertions; }",
        &[("options", &options.to_string())],
    )?;
    // NixOS refuses to build a system whose assertions fail; so does the bed.
    if let Some(failed) = eval["failedAssertions"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        bail!("nix/module.nix does not evaluate for {options}: {failed:?}");
    }
    let settings = eval["agentToml"].clone();
    if settings.is_null() {
        bail!("nix/module.nix wrote no /etc/ferry/agent.toml for {options}");
    }
    Ok(settings)
}

/// /etc/ferry/agent.toml as the module writes it for `options` (see
/// [`module_agent_settings`]).
pub fn module_agent_toml(options: &Value) -> Result<String> {
    let settings = module_agent_settings(options)?;
    let value = json_to_toml(&settings, "agent.toml")?;
    toml::to_string(&value).context("rendering agent.toml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_render_after_plain_keys_and_null_is_refused() -> Result<()> {
        let value = json_to_toml(
            &json!({"timeouts": {"pullSec": 5}, "bucket": "s3://b", "keys": ["a"]}),
            "agent.toml",
        )?;
        assert_eq!(
            toml::to_string(&value)?,
            "bucket = \"s3://b\"\nkeys = [\"a\"]\n\n[timeouts]\npullSec = 5\n"
        );
        let error = json_to_toml(&json!({"t": {"hostName": null}}), "agent.toml")
            .err()
            .context("null accepted")?;
        assert!(
            error.to_string().contains("agent.toml.t.hostName"),
            "{error}"
        );
        assert!(json_to_toml(&json!(u64::MAX), "n").is_err());
        Ok(())
    }
}

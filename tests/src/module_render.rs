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

/// The key of a test's `services.ferry-agent` options JSON that stands for the rest of the
/// host's NixOS config the module reads: `{"users": {…}, "groups": {…}}`, as
/// `users.users` and `users.groups` (e.g. `ferry.allowServices` on an account).
pub const NIXOS_KEY: &str = "nixos";

/// `options` without [`NIXOS_KEY`], and the `users` and `groups` it held (JSON, `{}` when
/// absent), as nix/tests/eval-module.nix takes them.
pub fn split_host_config(options: &Value) -> Result<(Value, String, String)> {
    let mut options = options.clone();
    let Some(map) = options.as_object_mut() else {
        bail!("services.ferry-agent options must be a JSON object, got {options}");
    };
    let host = map
        .remove(NIXOS_KEY)
        .unwrap_or_else(|| Value::Object(Default::default()));
    let part = |key: &str| {
        host.get(key)
            .map_or_else(|| "{}".to_owned(), Value::to_string)
    };
    let (users, groups) = (part("users"), part("groups"));
    Ok((options, users, groups))
}

/// The settings the module renders to /etc/ferry/agent.toml for `services.ferry-agent`
/// set to `options` (JSON of the module's options; `enable` is implied; see [`NIXOS_KEY`]).
pub fn module_agent_settings(options: &Value) -> Result<Value> {
    let (mut options, users, groups) = split_host_config(options)?;
    let Some(map) = options.as_object_mut() else {
        bail!("services.ferry-agent options must be a JSON object, got {options}");
    };
    map.insert("enable".into(), Value::Bool(true));
    let eval = eval_json(
        "{ options, users, groups }: let e = import ./nix/tests/eval-module.nix { user = builtins.fromJSON options; users = builtins.fromJSON users; groups = builtins.fromJSON groups; }; in { inherit (e) agentToml failedAssertions; }",
        &[
            ("options", &options.to_string()),
            ("users", &users),
            ("groups", &groups),
        ],
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

/// One systemd setting as NixOS writes it: `true`/`false`, numbers and strings as they
/// are, a list as one line per element; `None` for what NixOS leaves out (null).
fn setting_lines(key: &str, value: &Value, at: &str) -> Result<Vec<String>> {
    Ok(match value {
        Value::Null => Vec::new(),
        Value::Bool(b) => vec![format!("{key}={b}")],
        Value::Number(n) => vec![format!("{key}={n}")],
        Value::String(text) => vec![format!("{key}={text}")],
        Value::Array(items) => {
            let mut lines = Vec::new();
            for (i, item) in items.iter().enumerate() {
                lines.extend(setting_lines(key, item, &format!("{at}[{i}]"))?);
            }
            lines
        }
        Value::Object(_) => bail!("{at}: a table is not a systemd setting"),
    })
}

/// The text of a unit file from a NixOS declaration (`systemd.services.<name>` with
/// `section = "Service"` and `settings = "serviceConfig"`, or `systemd.timers.<name>` with
/// `"Timer"` and `"timerConfig"`), rendered as NixOS renders it: `[Unit]` from
/// `description`, `documentation` and the dependency lists, the section from
/// `environment` (as `Environment="NAME=VALUE"`, PATH made from `path` and then
/// `default_path`, which stands in for the packages NixOS puts on every unit's PATH) and
/// the settings, and `[Install]` from `wantedBy` (NixOS makes links instead, the bed
/// enables the unit). A key this renderer does not know is an error, so nothing the module
/// declares is silently dropped. Pure.
pub fn nixos_unit(
    decl: &Value,
    section: &str,
    settings: &str,
    default_path: &str,
) -> Result<String> {
    let Some(attrs) = decl.as_object() else {
        bail!("a unit declaration must be an attribute set, got {decl}");
    };
    let mut unit = vec!["[Unit]".to_owned()];
    let mut body = vec![format!("[{section}]")];
    let mut install = Vec::new();
    let list = |key: &str, value: &Value| -> Result<String> {
        let items: Vec<&str> = value
            .as_array()
            .with_context(|| format!("{key} must be a list, got {value}"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .with_context(|| format!("{key}: {v} is not a string"))
            })
            .collect::<Result<_>>()?;
        Ok(items.join(" "))
    };
    let mut path = String::new();
    for (key, value) in attrs {
        match key.as_str() {
            "description" => unit.extend(setting_lines("Description", value, key)?),
            "documentation" => unit.push(format!("Documentation={}", list(key, value)?)),
            "wants" | "after" | "before" | "requires" => {
                let name = format!("{}{}", key[..1].to_uppercase(), &key[1..]);
                unit.push(format!("{name}={}", list(key, value)?));
            }
            "wantedBy" => install.push(format!("WantedBy={}", list(key, value)?)),
            "path" => {
                for dir in list(key, value)?.split(' ').filter(|d| !d.is_empty()) {
                    path.push_str(&format!("{dir}/bin:{dir}/sbin:"));
                }
            }
            "environment" => {
                let vars = value
                    .as_object()
                    .with_context(|| format!("environment must be a table, got {value}"))?;
                for (name, v) in vars {
                    let v = v
                        .as_str()
                        .with_context(|| format!("environment.{name}: {v} is not a string"))?;
                    body.push(format!(
                        "Environment={}",
                        serde_json::to_string(&format!("{name}={v}"))?
                    ));
                }
            }
            // NixOS-only: whether a switch restarts the unit; not part of the file.
            "restartIfChanged" => {}
            k if k == settings => {
                let map = value
                    .as_object()
                    .with_context(|| format!("{settings} must be a table, got {value}"))?;
                for (name, v) in map {
                    body.extend(setting_lines(name, v, &format!("{settings}.{name}"))?);
                }
            }
            other => bail!(
                "the module declares `{other}` on a unit, which tests/src/module_render.rs does not render: teach nixos_unit what NixOS makes of it"
            ),
        }
    }
    if !path.is_empty() || attrs.contains_key("path") {
        body.insert(
            1,
            format!(
                "Environment={}",
                serde_json::to_string(&format!("PATH={path}{default_path}"))?
            ),
        );
    }
    let mut text = unit.join("\n") + "\n\n" + &body.join("\n") + "\n";
    if !install.is_empty() {
        text.push_str(&format!("\n[Install]\n{}\n", install.join("\n")));
    }
    Ok(text)
}

/// A drop-in adding `settings` (a `serviceConfig` table) to a unit declared elsewhere (the
/// module's additions to caddy.service). Pure.
pub fn nixos_drop_in(settings: &Value) -> Result<String> {
    let map = settings
        .as_object()
        .with_context(|| format!("serviceConfig must be a table, got {settings}"))?;
    let mut text = "[Service]\n".to_owned();
    for (name, v) in map {
        for line in setting_lines(name, v, &format!("serviceConfig.{name}"))? {
            text.push_str(&line);
            text.push('\n');
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_render_as_nixos_renders_them() -> Result<()> {
        let decl = json!({
            "description": "Agent",
            "after": ["a.target", "b.service"],
            "wantedBy": ["multi-user.target"],
            "path": ["/usr"],
            "environment": {"HOME": "/var/cache/x", "Q": "a \"b\""},
            "restartIfChanged": false,
            "serviceConfig": {
                "Type": "oneshot",
                "ProtectHome": true,
                "MemoryDenyWriteExecute": false,
                "ReadWritePaths": ["/a", "/b"],
                "LoadCredential": [],
                "TimeoutStartSec": 90,
            },
        });
        assert_eq!(
            nixos_unit(&decl, "Service", "serviceConfig", "/bin")?,
            "[Unit]\nAfter=a.target b.service\nDescription=Agent\n\n[Service]\n\
             Environment=\"PATH=/usr/bin:/usr/sbin:/bin\"\n\
             Environment=\"HOME=/var/cache/x\"\nEnvironment=\"Q=a \\\"b\\\"\"\n\
             MemoryDenyWriteExecute=false\nProtectHome=true\nReadWritePaths=/a\nReadWritePaths=/b\n\
             TimeoutStartSec=90\nType=oneshot\n\n[Install]\nWantedBy=multi-user.target\n"
        );
        let error = nixos_unit(
            &json!({"startLimitBurst": 3}),
            "Service",
            "serviceConfig",
            "",
        )
        .err()
        .context("an unknown key was accepted")?;
        assert!(error.to_string().contains("startLimitBurst"), "{error}");
        assert_eq!(
            nixos_drop_in(&json!({"ExecReload": ["+x"], "UMask": "0007"}))?,
            "[Service]\nExecReload=+x\nUMask=0007\n"
        );
        Ok(())
    }

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

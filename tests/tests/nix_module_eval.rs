//! How nix/module.nix is wired, checked without nixpkgs: nix/tests/eval-module.nix
//! evaluates it against a small stand-in for nixpkgs' lib, and these tests check the
//! options the issue asks for, that agent.toml and the unit agree on the credentials path,
//! the timer, the directories, and that the agent accepts the agent.toml it yields.

mod nix_common;

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

/// The README's Spaces configuration, as a user writes it.
const SPACES: &str = r#"{
  enable = true;
  bucket = "acme-deploys";
  endpoint = "https://nyc3.digitaloceanspaces.com";
  region = "nyc3";
  credentialsFile = "/run/keys/ferry-s3";
  trustedKeys = ["acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="];
  manifestKeys = ["acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="];
  interval = "2min";
  caddy.enable = true;
}"#;

fn eval_module(user: &str) -> Result<Value> {
    eval_module_with(user, "")
}

/// The module evaluated for `user`, with `more` (Nix bindings such as
/// `caddyElsewhere = true;`) passed to the stand-in.
fn eval_module_with(user: &str, more: &str) -> Result<Value> {
    nix_common::eval_json(&format!(
        "import ./nix/tests/eval-module.nix {{ user = {user}; {more} }}"
    ))
}

#[test]
fn options_are_the_ones_the_issue_lists() -> Result<()> {
    let eval = eval_module("{}")?;
    let mut options: Vec<&str> = eval["options"]
        .as_array()
        .context("no options list")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    options.sort_unstable();
    assert_eq!(
        options,
        [
            "allowUnsignedManifests",
            "allowedGroups",
            "allowedPorts",
            "allowedUnits",
            "allowedUsers",
            "bucket",
            "caddy.domains",
            "caddy.enable",
            "credentialsFile",
            "enable",
            "endpoint",
            "generationsToKeep",
            "hostName",
            "interval",
            "manifestKeys",
            "package",
            "randomizedDelay",
            "region",
            "rollbackByCopy",
            "secretsDir",
            "settings",
            "trustedKeys",
        ]
    );
    // Disabled, the module configures nothing.
    assert_eq!(eval["config"], json!({}));
    Ok(())
}

#[test]
fn the_module_does_not_evaluate_without_manifest_keys_unless_told_to() -> Result<()> {
    let failed = |user: &str| -> Result<Vec<String>> {
        Ok(eval_module(user)?["failedAssertions"]
            .as_array()
            .context("no failedAssertions")?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    };
    assert!(failed(SPACES)?.is_empty());
    let unsigned = r#"{ enable = true; bucket = "b"; trustedKeys = ["k:x"]; }"#;
    let messages = failed(unsigned)?;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("manifestKeys is empty")
            && messages[0].contains("allowUnsignedManifests = true"),
        "{}",
        messages[0]
    );
    // Through the typed option or the freeform settings, saying so explicitly is enough.
    for ok in [
        r#"{ enable = true; bucket = "b"; allowUnsignedManifests = true; }"#,
        r#"{ enable = true; bucket = "b"; settings.allowUnsignedManifests = true; }"#,
        r#"{ enable = true; bucket = "b"; settings.manifestKeys = ["k:x"]; }"#,
    ] {
        assert!(failed(ok)?.is_empty(), "{ok}");
    }
    // And the bed, which renders agent.toml through the module, is refused the same way.
    let refused = ferry_tests::module_render::module_agent_toml(&json!({"bucket": "b"}));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("manifestKeys is empty")),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn host_policy_options_reach_agent_toml() -> Result<()> {
    let eval = eval_module(
        r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; rollbackByCopy = false;
             allowedUsers = ["web"]; allowedGroups = ["web"]; allowedUnits = ["postgresql.service"];
             allowedPorts = "8000-8999"; caddy.domains = ["*.example.com"]; }"#,
    )?;
    let toml = &eval["agentToml"];
    assert_eq!(toml["rollbackByCopy"], false);
    assert_eq!(toml["allowUnsignedManifests"], false);
    assert_eq!(toml["allowedUsers"], json!(["web"]));
    assert_eq!(toml["allowedGroups"], json!(["web"]));
    assert_eq!(toml["allowedUnits"], json!(["postgresql.service"]));
    assert_eq!(toml["allowedPorts"], "8000-8999");
    assert_eq!(toml["caddy"]["domains"], json!(["*.example.com"]));
    Ok(())
}

#[test]
fn credentials_reach_the_agent_only_through_load_credential() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let service = &eval["config"]["systemd"]["services"]["ferry-agent"];
    let load = service["serviceConfig"]["LoadCredential"][0]
        .as_str()
        .context("no LoadCredential=")?;
    let (name, source) = load
        .split_once(':')
        .context("LoadCredential= without NAME:")?;
    assert_eq!(source, "/run/keys/ferry-s3");
    assert_eq!(
        eval["agentToml"]["credentials"]["file"],
        format!("/run/credentials/ferry-agent.service/{name}")
    );
    // The secret's path is in the unit, never its content, and not in agent.toml.
    assert!(!eval["agentToml"].to_string().contains("/run/keys/ferry-s3"));
    Ok(())
}

#[test]
fn unit_timer_and_directories() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let config = &eval["config"];
    let service = &config["systemd"]["services"]["ferry-agent"];
    assert_eq!(service["serviceConfig"]["Type"], "oneshot");
    assert_eq!(service["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(service["before"], json!(["multi-user.target"]));
    for unit in [
        "network-online.target",
        "nix-daemon.socket",
        "nix-daemon.service",
        "caddy.service",
    ] {
        assert!(
            service["after"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(unit))),
            "not after {unit}: {service}"
        );
    }
    let timer = &config["systemd"]["timers"]["ferry-agent"]["timerConfig"];
    assert_eq!(timer["OnUnitActiveSec"], "2min");
    assert_eq!(timer["OnBootSec"], "2min");
    assert_eq!(timer["Unit"], "ferry-agent.service");
    assert_eq!(
        config["systemd"]["timers"]["ferry-agent"]["wantedBy"],
        json!(["timers.target"])
    );
    assert_eq!(timer["Persistent"], true);
    assert!(timer["RandomizedDelaySec"].is_string() && timer["OnBootSec"].is_string());
    let rules = &config["systemd"]["tmpfiles"]["rules"];
    assert!(
        rules
            .as_array()
            .is_some_and(|r| r.contains(&json!("d /var/lib/ferry-secrets 0700 root root -"))),
        "{rules}"
    );
    assert_eq!(
        config["nix"]["settings"]["trusted-public-keys"],
        json!(["acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="])
    );
    assert_eq!(
        config["services"]["caddy"]["globalConfig"],
        "admin 127.0.0.1:2019\n"
    );
    // The agent's host name defaults to networking.hostName; nix is the system's.
    assert_eq!(eval["agentToml"]["hostName"], "web-1");
    assert_eq!(
        eval["agentToml"]["nixBin"],
        "/nix/store/00000000000000000000000000000000-nix/bin/nix"
    );
    Ok(())
}

#[test]
fn writable_paths_follow_the_settings() -> Result<()> {
    let eval =
        eval_module(r#"{ enable = true; bucket = "b"; settings.stateDir = "/srv/ferry-state"; }"#)?;
    let config = &eval["config"];
    let rw = &config["systemd"]["services"]["ferry-agent"]["serviceConfig"]["ReadWritePaths"];
    assert_eq!(
        *rw,
        json!([
            "/srv/ferry-state",
            "/run/systemd/system",
            "/nix/var/nix/profiles/ferry"
        ])
    );
    assert!(
        config["systemd"]["tmpfiles"]["rules"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("d /srv/ferry-state 0700 root root -")))
    );
    // Without caddy.enable the module leaves Caddy alone.
    assert!(config["services"].get("caddy").is_none(), "{config}");
    Ok(())
}

#[test]
fn agent_accepts_the_modules_agent_toml() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let text = toml::to_string(&nix_common::json_to_toml(&eval["agentToml"], "agent.toml")?)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text)?;
    let agent = ferry_tests::agent_bed::agent_binary()?;
    let output = Command::new(&agent)
        .arg("--config")
        .arg(&path)
        .args(["config", "--json"])
        .output()
        .with_context(|| format!("running {}", agent.display()))?;
    ensure!(
        output.status.success(),
        "ferry-agent refused the module's agent.toml:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let c: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        c["bucket"],
        "s3://acme-deploys?endpoint=https://nyc3.digitaloceanspaces.com&region=nyc3"
    );
    assert_eq!(c["generationsToKeep"], 5);
    Ok(())
}

#[test]
fn caddy_enable_points_the_agent_at_caddys_admin_api_and_ticks_on_reload() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let config = &eval["config"];
    assert_eq!(config["services"]["caddy"]["enable"], true);
    // The admin address the module gives Caddy is the one agent.toml names.
    let admin = eval["agentToml"]["caddy"]["admin"]
        .as_str()
        .context("no caddy.admin in agent.toml")?;
    assert_eq!(
        config["services"]["caddy"]["globalConfig"],
        format!("admin {admin}\n")
    );
    assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    assert_eq!(eval["agentToml"]["caddy"]["enable"], true);
    // A Caddy start or reload queues a tick, with root rights (`+`), without waiting for it.
    let caddy = &config["systemd"]["services"]["caddy"]["serviceConfig"];
    for hook in ["ExecStartPost", "ExecReload"] {
        let commands = caddy[hook].as_array().context("no caddy hook")?;
        assert!(
            commands
                .iter()
                .any(|c| c.as_str().is_some_and(|c| c.starts_with('+')
                    && c.ends_with("/bin/systemctl --no-block start ferry-agent.service"))),
            "{hook}: {commands:?}"
        );
    }
    let service = &config["systemd"]["services"]["ferry-agent"];
    assert_eq!(
        service["wants"],
        json!(["network-online.target", "caddy.service"])
    );
    Ok(())
}

#[test]
fn agent_routes_through_caddy_only_where_caddy_runs() -> Result<()> {
    let user = r#"{ enable = true; bucket = "b"; }"#;
    let without = eval_module(user)?;
    assert_eq!(
        without["agentToml"]["caddy"],
        json!({"enable": false, "domains": ["*"]})
    );
    assert!(
        without["config"]["systemd"]["services"]
            .get("caddy")
            .is_none()
    );
    // The user's own Caddy: routes go to Caddy's default admin address, hooks stay theirs.
    let elsewhere = eval_module_with(user, "caddyElsewhere = true;")?;
    assert_eq!(
        elsewhere["agentToml"]["caddy"],
        json!({"enable": true, "domains": ["*"]})
    );
    assert!(
        elsewhere["config"]["systemd"]["services"]
            .get("caddy")
            .is_none()
    );
    // The freeform settings still win.
    let forced = eval_module(
        r#"{ enable = true; bucket = "b"; caddy.enable = true; settings.caddy.admin = "unix//run/caddy/admin.sock"; }"#,
    )?;
    assert_eq!(
        forced["agentToml"]["caddy"]["admin"],
        "unix//run/caddy/admin.sock"
    );
    Ok(())
}

#[test]
fn unit_is_hardened_and_every_relaxation_says_why() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let sc = &eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"];
    for (key, value) in [
        ("ProtectSystem", json!("strict")),
        ("ProtectHome", json!(true)),
        ("PrivateTmp", json!(true)),
        ("PrivateDevices", json!(true)),
        ("NoNewPrivileges", json!(true)),
        ("CapabilityBoundingSet", json!("")),
        ("RestrictNamespaces", json!(true)),
        ("MemoryDenyWriteExecute", json!(true)),
        ("UMask", json!("0077")),
    ] {
        assert_eq!(sc[key], value, "{key}");
    }
    // Each relaxation is a line right below a comment that starts with "Relaxed".
    let module = std::fs::read_to_string(nix_common::repo_root().join("nix/module.nix"))?;
    let lines: Vec<&str> = module.lines().map(str::trim).collect();
    for relaxed in [
        "User = ",
        "ReadWritePaths = ",
        "SystemCallFilter = ",
        "RestrictAddressFamilies = ",
    ] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(relaxed))
            .with_context(|| format!("no {relaxed} in nix/module.nix"))?;
        let comment = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .last()
            .copied()
            .unwrap_or("");
        assert!(
            comment.starts_with("# Relaxed"),
            "{relaxed}has no \"# Relaxed: why\" comment above it (got {comment:?})"
        );
    }
    assert!(module.contains("# Relaxed: no PrivateUsers"));
    Ok(())
}

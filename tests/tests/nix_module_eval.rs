//! How nix/module.nix is wired, checked without nixpkgs: nix/tests/eval-module.nix
//! evaluates it against a small stand-in for nixpkgs' lib, and these tests check the
//! options the issue asks for, that agent.toml and the unit agree on the credentials path,
//! the timer, the directories, and that the agent accepts the agent.toml it yields.

mod nix_common;

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

/// A Spaces configuration with the typed options (bucket name, endpoint, region).
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
            "allowedWritePaths",
            "bucket",
            "caddy.domains",
            "caddy.enable",
            "credentialsFile",
            "credentialsProfile",
            "enable",
            "endpoint",
            "generationsToKeep",
            "hostName",
            "interval",
            "manifestKeys",
            "metrics.file",
            "package",
            "randomizedDelay",
            "region",
            "rollbackByCopy",
            "secretsDir",
            "settings",
            "status.bucket",
            "status.credentialsFile",
            "status.credentialsProfile",
            "status.everySec",
            "system.enable",
            "system.switchTimeoutSec",
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
             allowedPorts = "8000-8999"; caddy.domains = ["*.example.com"];
             allowedWritePaths = ["/var/podcastitlater"]; }"#,
    )?;
    let toml = &eval["agentToml"];
    assert_eq!(toml["allowedWritePaths"], json!(["/var/podcastitlater"]));
    assert_eq!(toml["rollbackByCopy"], false);
    assert_eq!(toml["allowUnsignedManifests"], false);
    assert_eq!(toml["allowedUsers"], json!(["web"]));
    assert_eq!(toml["allowedGroups"], json!(["web"]));
    assert_eq!(toml["allowedUnits"], json!(["postgresql.service"]));
    assert_eq!(toml["allowedPorts"], "8000-8999");
    assert_eq!(toml["caddy"]["domains"], json!(["*.example.com"]));
    Ok(())
}

/// The design's host declares its accounts in its NixOS config; one line beside each,
/// `ferry.allowServices = true`, lets Ferry's services use the account and its group.
#[test]
fn accounts_are_allowed_next_to_where_the_host_declares_them() -> Result<()> {
    let user = r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; allowedUsers = ["web"]; allowedGroups = ["pil"]; }"#;
    let eval = eval_module_with(
        user,
        r#"users = { pil-web = { group = "pil"; ferry.allowServices = true; };
                     postgres = { group = "postgres"; }; };
           groups = { pil.gid = 1300; postgres.gid = 71; };"#,
    )?;
    assert_eq!(eval["failedAssertions"], json!([]));
    let toml = &eval["agentToml"];
    assert_eq!(toml["allowedUsers"], json!(["web", "pil-web"]));
    assert_eq!(toml["allowedGroups"], json!(["pil"]));
    // A group NixOS would give a GID below 1000 (none fixed) is named at evaluation: the
    // agent would refuse every service in it.
    let eval = eval_module_with(
        user,
        r#"users.pil-web = { group = "pil"; ferry.allowServices = true; };"#,
    )?;
    let failed = failed_assertions(&eval);
    assert!(
        failed.len() == 1 && failed[0].contains("users.groups.pil.gid = 1300;"),
        "{failed:?}"
    );
    // Nothing allowed by default.
    let eval = eval_module_with(user, r#"users.pil-web.group = "pil";"#)?;
    assert_eq!(eval["agentToml"]["allowedUsers"], json!(["web"]));
    Ok(())
}

fn failed_assertions(eval: &Value) -> Vec<String> {
    eval["failedAssertions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
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
    // A missing file (e.g. /run/keys after a reboot) must not fail the unit before the
    // boot tick restores: the same credential has a fallback of comments only.
    let fallback = service["serviceConfig"]["SetCredential"][0]
        .as_str()
        .context("no SetCredential= fallback")?;
    let (fallback_name, value) = fallback
        .split_once(':')
        .context("SetCredential= without NAME:")?;
    assert_eq!(fallback_name, name);
    assert!(value.starts_with('#'), "{fallback}");
    // The secret's path is in the unit, never its content, and not in agent.toml.
    assert!(!eval["agentToml"].to_string().contains("/run/keys/ferry-s3"));
    Ok(())
}

#[test]
fn system_deploys_are_off_unless_asked_and_their_switches_extend_the_units_limit() -> Result<()> {
    let limit = |eval: &Value| {
        eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"]["TimeoutStartSec"]
            .as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse::<u64>().ok())
    };
    // Off: no [system] table at all, so an agent older than it still reads agent.toml.
    let off = eval_module(SPACES)?;
    assert_eq!(off["agentToml"].get("system"), None, "{}", off["agentToml"]);
    let user = r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; system = { enable = true; switchTimeoutSec = 100; }; }"#;
    let on = eval_module(user)?;
    assert_eq!(failed_assertions(&on), Vec::<String>::new());
    assert_eq!(
        on["agentToml"]["system"],
        json!({"enable": true, "switchTimeoutSec": 100})
    );
    // Test, boot or the previous system's test: three switches on top of the tick's bound.
    let (off, on) = (
        limit(&off).context("TimeoutStartSec off")?,
        limit(&on).context("TimeoutStartSec on")?,
    );
    assert_eq!(on, off + 300);
    Ok(())
}

#[test]
fn the_status_store_and_its_own_key_reach_the_agent() -> Result<()> {
    // Off by default: no [status] bucket, nothing reported.
    let eval = eval_module(SPACES)?;
    assert_eq!(eval["agentToml"]["status"], json!({"everySec": 300}));
    let user = r#"{ enable = true; bucket = "acme-deploys"; credentialsFile = "/run/keys/ferry-s3"; manifestKeys = ["k:x"];
        status = { bucket = "s3://acme-status?endpoint=http://10.0.0.1:3900&region=garage"; credentialsFile = "/run/keys/ferry-status"; credentialsProfile = "status"; everySec = 60; }; }"#;
    let eval = eval_module(user)?;
    assert_eq!(failed_assertions(&eval), Vec::<String>::new());
    assert_eq!(
        eval["agentToml"]["status"],
        json!({
            "bucket": "s3://acme-status?endpoint=http://10.0.0.1:3900&region=garage",
            "credentials": {"file": "/run/credentials/ferry-agent.service/aws-status", "profile": "status"},
            "everySec": 60,
        })
    );
    let service = &eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"];
    assert_eq!(
        service["LoadCredential"],
        json!([
            "aws:/run/keys/ferry-s3",
            "aws-status:/run/keys/ferry-status"
        ])
    );
    let fallbacks = service["SetCredential"]
        .as_array()
        .context("SetCredential=")?;
    assert!(
        fallbacks.len() == 2
            && fallbacks[1]
                .as_str()
                .is_some_and(|f| f.starts_with("aws-status:#")),
        "{fallbacks:?}"
    );
    assert!(
        !eval["agentToml"]
            .to_string()
            .contains("/run/keys/ferry-status")
    );
    // A status store in a directory is one the sandboxed unit may write.
    let user = r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; status.bucket = "file:///srv/ferry-status"; }"#;
    let eval = eval_module(user)?;
    let rw =
        &eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"]["ReadWritePaths"];
    assert!(
        rw.as_array()
            .is_some_and(|p| p.iter().any(|d| d == "/srv/ferry-status")),
        "{rw}"
    );
    // Its key, like the deploy bucket's, never from the Nix store.
    let user = r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; status.credentialsFile = "/nix/store/x-creds"; }"#;
    let failed = failed_assertions(&eval_module(user)?);
    assert!(
        failed.iter().any(|m| m.contains("status.credentialsFile")),
        "{failed:?}"
    );
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
        "admin \"unix//run/caddy/admin.sock|0220\"\n"
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

/// With the node exporter enabled, agent.toml's `metrics.file` is `ferry.prom` in the
/// directory the exporter's `--collector.textfile.directory` names (nixpkgs has no option
/// for it: the flag sits in `extraFlags`, as one word, one string or two), the directory is
/// writable in the agent's sandbox and made if missing; without that flag the module warns
/// and writes no metrics; without the exporter nothing changes.
#[test]
fn metrics_go_to_the_node_exporters_textfile_directory() -> Result<()> {
    let user = r#"{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; }"#;
    let with_flags = |flags: &str| {
        eval_module_with(
            user,
            &format!("nodeExporter = true; nodeExporterFlags = {flags};"),
        )
    };
    let dir = "/var/lib/prometheus-node-exporter-text-files";
    for flags in [
        format!(r#"["--collector.systemd" "--collector.textfile.directory={dir}"]"#),
        format!(r#"["--collector.textfile.directory {dir}" "--collector.systemd"]"#),
        format!(r#"["--collector.textfile.directory" "{dir}"]"#),
    ] {
        let eval = with_flags(&flags)?;
        assert_eq!(
            eval["agentToml"]["metrics"]["file"],
            format!("{dir}/ferry.prom"),
            "{flags}"
        );
        let service = &eval["config"]["systemd"]["services"]["ferry-agent"];
        assert_eq!(
            service["serviceConfig"]["ReadWritePaths"],
            json!([
                "/var/lib/ferry",
                "/run/systemd/system",
                "/nix/var/nix/profiles/ferry",
                dir
            ])
        );
        let rules = &eval["config"]["systemd"]["tmpfiles"]["rules"];
        assert!(
            rules
                .as_array()
                .is_some_and(|r| r.contains(&json!(format!("d {dir} - - - -")))),
            "{rules}"
        );
        assert_eq!(eval["config"]["warnings"], json!([]));
    }
    // The exporter without a textfile directory: no metrics, and a warning saying what to add.
    let eval = with_flags(r#"["--collector.systemd"]"#)?;
    assert!(
        eval["agentToml"].get("metrics").is_none(),
        "{}",
        eval["agentToml"]
    );
    let warnings = eval["config"]["warnings"].to_string();
    assert!(
        warnings.contains(
            "--collector.textfile.directory=/var/lib/prometheus-node-exporter-text-files"
        ) && warnings.contains("services.prometheus.exporters.node.extraFlags"),
        "{warnings}"
    );
    // No exporter: nothing about metrics at all.
    let eval = eval_module(user)?;
    assert!(eval["agentToml"].get("metrics").is_none());
    assert_eq!(eval["config"]["warnings"], json!([]));
    // Set by hand (the option or the freeform settings), the file's directory is writable.
    for set in [
        r#"metrics.file = "/srv/metrics/ferry.prom";"#,
        r#"settings.metrics.file = "/srv/metrics/ferry.prom";"#,
    ] {
        let eval = eval_module(&format!(
            r#"{{ enable = true; bucket = "b"; manifestKeys = ["k:x"]; {set} }}"#
        ))?;
        assert_eq!(
            eval["agentToml"]["metrics"]["file"],
            "/srv/metrics/ferry.prom"
        );
        let rw = &eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"]["ReadWritePaths"];
        assert!(
            rw.as_array()
                .is_some_and(|r| r.contains(&json!("/srv/metrics"))),
            "{set}: {rw}"
        );
    }
    // And the agent reads what the module wrote.
    let eval = eval_module_with(
        SPACES,
        &format!(
            r#"nodeExporter = true; nodeExporterFlags = ["--collector.textfile.directory={dir}"];"#
        ),
    )?;
    let text = toml::to_string(&nix_common::json_to_toml(&eval["agentToml"], "agent.toml")?)?;
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("agent.toml");
    std::fs::write(&path, &text)?;
    let agent = ferry_tests::agent_bed::agent_binary()?;
    let output = Command::new(&agent)
        .arg("--config")
        .arg(&path)
        .args(["config", "--json"])
        .output()?;
    ensure!(
        output.status.success(),
        "ferry-agent refused the module's agent.toml:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let c: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(c["metrics"]["file"], format!("{dir}/ferry.prom"));
    Ok(())
}

#[test]
fn caddy_enable_points_the_agent_at_caddys_admin_api_and_ticks_on_reload() -> Result<()> {
    let eval = eval_module(SPACES)?;
    let config = &eval["config"];
    assert_eq!(config["services"]["caddy"]["enable"], true);
    // The admin address the module gives Caddy is the one agent.toml names (Caddy ≥ 2.8
    // also takes the socket's mode from it): a unix socket, never loopback TCP, which every
    // process on the host could reach (tests/tests/hostile_surfaces.rs).
    let admin = eval["agentToml"]["caddy"]["admin"]
        .as_str()
        .context("no caddy.admin in agent.toml")?;
    assert_eq!(admin, "unix//run/caddy/admin.sock");
    assert_eq!(
        config["services"]["caddy"]["globalConfig"],
        format!("admin \"{admin}|0220\"\n")
    );
    assert_eq!(eval["agentToml"]["caddy"]["enable"], true);
    let caddy_unit = &config["systemd"]["services"]["caddy"]["serviceConfig"];
    assert_eq!(caddy_unit["RuntimeDirectory"], "caddy");
    assert_eq!(caddy_unit["RuntimeDirectoryMode"], "0750");
    // The agent reaches the socket as a member of Caddy's group.
    assert_eq!(
        config["systemd"]["services"]["ferry-agent"]["serviceConfig"]["SupplementaryGroups"],
        json!(["caddy"])
    );
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
        ("MemoryMax", json!("512M")),
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

/// The original design's host: its Nix-form bucket URL as `bucket`, the host's own
/// `/root/.aws/credentials` and a profile in it. The file reaches the agent through
/// `LoadCredential=` (read by systemd, so `ProtectHome=` does not hide it), its path never
/// copied into agent.toml or the store.
#[test]
fn design_bucket_url_and_host_credentials_file_with_a_profile() -> Result<()> {
    let design = "s3://omni-nix-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com";
    let eval = eval_module(&format!(
        r#"{{ enable = true; bucket = "{design}"; credentialsFile = "/root/.aws/credentials"; credentialsProfile = "digitalocean"; manifestKeys = ["k:x"]; }}"#
    ))?;
    let service = &eval["config"]["systemd"]["services"]["ferry-agent"];
    assert_eq!(
        service["serviceConfig"]["LoadCredential"],
        json!(["aws:/root/.aws/credentials"])
    );
    assert_eq!(service["serviceConfig"]["ProtectHome"], true);
    assert_eq!(eval["agentToml"]["bucket"], design);
    assert_eq!(
        eval["agentToml"]["credentials"],
        json!({"file": "/run/credentials/ferry-agent.service/aws", "profile": "digitalocean"})
    );
    let failed = |eval: &Value| -> Vec<String> {
        eval["config"]["assertions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["assertion"] == false)
                    .map(|a| a["message"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(failed(&eval), Vec::<String>::new());
    // A whole URL and the endpoint option: which one is meant is unclear, so it is refused.
    let both = eval_module(&format!(
        r#"{{ enable = true; bucket = "{design}"; endpoint = "ams3.digitaloceanspaces.com"; manifestKeys = ["k:x"]; }}"#
    ))?;
    let messages = failed(&both);
    assert!(
        messages.len() == 1 && messages[0].contains("is a whole URL"),
        "{messages:?}"
    );
    Ok(())
}

/// The README's NixOS example, taken from README.md as it is: it evaluates, passes the
/// module's assertions, and the agent accepts the agent.toml it yields.
#[test]
fn the_readmes_example_evaluates_and_the_agent_accepts_it() -> Result<()> {
    let readme = std::fs::read_to_string(nix_common::repo_root().join("README.md"))?;
    let start = readme
        .find("  services.ferry-agent = {")
        .context("no services.ferry-agent example in README.md")?;
    let body = &readme[start + "  services.ferry-agent = ".len()..];
    let end = body
        .find("\n  };")
        .context("README's example is not closed")?;
    let user = format!("{}\n}}", &body[..end]);
    // The host's own account declarations above it (`users.users.pil-web = …;`).
    let imports = readme[..start]
        .rfind("imports = [ ferry.nixosModules.default ];")
        .context("no imports line before the README's example")?;
    let host: Vec<&str> = readme[imports..start]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("users."))
        .collect();
    ensure!(
        !host.is_empty(),
        "the README's example declares no accounts"
    );
    // One line each: they may end in comments.
    let host = host.join("\n");
    let eval = eval_module_with(
        &user,
        &format!("users = ({{\n{host}\n}}).users.users; groups = ({{\n{host}\n}}).users.groups;"),
    )?;
    let failed: Vec<&Value> = eval["config"]["assertions"]
        .as_array()
        .context("no assertions")?
        .iter()
        .filter(|a| a["assertion"] == false)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"]["LoadCredential"],
        json!(["aws:/root/.aws/credentials"])
    );
    let text = toml::to_string(&nix_common::json_to_toml(&eval["agentToml"], "agent.toml")?)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text)?;
    let agent = ferry_tests::agent_bed::agent_binary()?;
    let output = Command::new(&agent)
        .arg("--config")
        .arg(&path)
        .args(["config", "--json"])
        .output()?;
    ensure!(
        output.status.success(),
        "ferry-agent refused the README's agent.toml:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let c: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        c["bucket"],
        "s3://acme-deploys?endpoint=https://nyc3.digitaloceanspaces.com&region=us-east-1&profile=digitalocean"
    );
    assert_eq!(c["credentials"]["profile"], "digitalocean");
    // What the original design's example manifest needs of its host.
    assert_eq!(c["allowedUsers"], json!(["pil-web"]));
    assert_eq!(c["allowedGroups"], json!(["pil"]));
    assert_eq!(c["secretsDir"], "/var/lib/biz-secrets");
    assert_eq!(c["allowedWritePaths"], json!(["/var/podcastitlater"]));
    assert_eq!(
        c["allowedUnits"],
        json!(["network-online.target", "postgresql.service"])
    );
    Ok(())
}

/// A systemd time span (`5min`, `30s`, `1min 30s`, `100ms`, a bare number of seconds) in
/// milliseconds; `None` for what systemd would refuse.
fn time_span_ms(span: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = span.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let per_ms = match &rest[..unit_len] {
            "ms" | "msec" => 1,
            "" | "s" | "sec" | "second" | "seconds" => 1_000,
            "m" | "min" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000,
            _ => return None,
        };
        total += number * per_ms;
        rest = rest[unit_len..].trim_start();
    }
    Some(total)
}

#[test]
fn time_spans_parse_as_systemd_reads_them() {
    assert_eq!(time_span_ms("5min"), Some(300_000));
    assert_eq!(time_span_ms("1min 30s"), Some(90_000));
    assert_eq!(time_span_ms("100ms"), Some(100));
    assert_eq!(time_span_ms("45"), Some(45_000));
    assert_eq!(time_span_ms("5 parsecs"), None);
    assert_eq!(time_span_ms(""), None);
}

/// The design's "fast deploys: under 5 minutes". With the module's defaults, the longest a
/// published manifest waits for a host's next tick to start is the interval (counted from
/// the start of the previous tick), plus the timer's random delay, plus systemd's
/// coalescing window (`AccuracySec=`, 1 min when unset): under 5 minutes, and the README
/// says the figure.
#[test]
fn default_timer_starts_a_tick_within_five_minutes_of_a_push() -> Result<()> {
    let eval = eval_module(r#"{ enable = true; bucket = "b"; }"#)?;
    let timer = &eval["config"]["systemd"]["timers"]["ferry-agent"]["timerConfig"];
    let span = |key: &str, unset: &str| -> Result<u64> {
        let text = timer[key].as_str().unwrap_or(unset);
        time_span_ms(text).with_context(|| format!("{key}={text} is not a time span"))
    };
    let interval = span("OnUnitActiveSec", "")?;
    let delay = span("RandomizedDelaySec", "0")?;
    // systemd's default AccuracySec.
    let accuracy = span("AccuracySec", "1min")?;
    let worst = interval + delay + accuracy;
    assert!(
        worst < 300_000,
        "worst case {worst} ms = OnUnitActiveSec {interval} + RandomizedDelaySec {delay} + AccuracySec {accuracy}: {timer}"
    );
    assert_eq!(span("OnBootSec", "")?, interval);
    let readme = std::fs::read_to_string(nix_common::repo_root().join("README.md"))?;
    let (m, s) = (worst / 60_000, (worst % 60_000) / 1_000);
    let figure = format!("{m} min {s} s");
    assert!(
        readme.contains(&figure),
        "README.md does not state the default worst case ({figure})"
    );
    Ok(())
}

#[test]
fn bed_caddy_is_set_up_as_the_module_sets_up_caddy_2_6() -> Result<()> {
    // Debian's Caddy (the bed's) is 2.6: the socket's mode comes from the unit's umask.
    let eval = eval_module_with(SPACES, r#"caddyVersion = "2.6.2";"#)?;
    let config = &eval["config"];
    assert_eq!(
        config["services"]["caddy"]["globalConfig"],
        ferry_tests::host::CADDY_GLOBAL_OPTIONS
    );
    let sc = &config["systemd"]["services"]["caddy"]["serviceConfig"];
    let drop_in = format!(
        "[Service]\nRuntimeDirectory={}\nRuntimeDirectoryMode={}\nUMask={}\n",
        sc["RuntimeDirectory"]
            .as_str()
            .context("no RuntimeDirectory")?,
        sc["RuntimeDirectoryMode"]
            .as_str()
            .context("no RuntimeDirectoryMode")?,
        sc["UMask"].as_str().context("no UMask")?,
    );
    assert_eq!(drop_in, ferry_tests::host::CADDY_UNIT_DROP_IN);
    assert_eq!(
        format!("unix/{}", ferry_tests::host::CADDY_ADMIN_SOCKET),
        eval["agentToml"]["caddy"]["admin"].as_str().unwrap_or("")
    );
    Ok(())
}

#[test]
fn the_bed_renders_the_modules_own_units() -> Result<()> {
    let s3 = ferry_tests::S3 {
        endpoint: "http://10.213.0.1:3900".into(),
        region: "garage".into(),
        bucket: "ferry-test".into(),
        access_key: "GK1".into(),
        secret_key: "s".into(),
    };
    let key = "k:AAAA".to_owned();
    let options = ferry_tests::agent_config::module_unit_options(
        &s3,
        "bedhost",
        std::slice::from_ref(&key),
        std::slice::from_ref(&key),
        "[timeouts]\nsettleSec = 1\n",
        std::time::Duration::from_secs(5),
    )?;
    let units = ferry_tests::module_unit::render(&options)?;
    for line in [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/ferry-agent --config /etc/ferry/agent.toml reconcile",
        "LoadCredential=aws:/etc/ferry/credentials",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=true",
        "MemoryMax=512M",
        "SupplementaryGroups=caddy",
        "Environment=\"NIX_REMOTE=daemon\"",
        "Before=multi-user.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            units.service.lines().any(|l| l == line),
            "no {line:?} in ferry-agent.service:\n{}",
            units.service
        );
    }
    for line in [
        "OnBootSec=5s",
        "OnUnitActiveSec=5s",
        "RandomizedDelaySec=0",
        "AccuracySec=100ms",
        "Unit=ferry-agent.service",
    ] {
        assert!(
            units.timer.lines().any(|l| l == line),
            "no {line:?} in ferry-agent.timer:\n{}",
            units.timer
        );
    }
    // The bed's accuracy replaces the module's own; two lines would leave systemd the last.
    assert_eq!(
        units
            .timer
            .lines()
            .filter(|l| l.starts_with("AccuracySec="))
            .count(),
        1,
        "{}",
        units.timer
    );
    assert!(units.tmpfiles.contains("d /var/lib/ferry 0700 root root -"));
    let caddy = units.caddy.context("no caddy.service additions")?;
    assert!(
        caddy.contains("ExecStartPost=+/usr/bin/systemctl --no-block start ferry-agent.service"),
        "{caddy}"
    );
    // agent.toml points at the credential the unit loads.
    let toml = ferry_tests::module_render::module_agent_toml(&options)?;
    assert!(
        toml.contains("file = \"/run/credentials/ferry-agent.service/aws\""),
        "{toml}"
    );
    Ok(())
}

//! The agent accepts /etc/ferry/agent.toml exactly as the NixOS module writes it: the
//! module's option → settings mapping (nix/agent-settings.nix) is evaluated by the real Nix,
//! rendered to TOML the way `pkgs.formats.toml` renders JSON (tables for attribute sets,
//! keys sorted, null refused), and read back by the real `ferry-agent`.

mod nix_common;

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context as _, Result, anyhow, ensure};

/// The module's credentials path (`LoadCredential=aws:…` in ferry-agent.service).
const CREDENTIALS_PATH: &str = "/run/credentials/ferry-agent.service/aws";

/// agent.toml as the module would write it for the module options in `args` (a Nix
/// attribute set expression).
fn module_agent_toml(args: &str) -> Result<String> {
    let json = nix_common::eval_json(&format!("import ./nix/agent-settings.nix {args}"))?;
    let value = nix_common::json_to_toml(&json, "agent.toml")?;
    toml::to_string(&value).map_err(|e| anyhow!("rendering agent.toml: {e}"))
}

fn agent(config: &Path, args: &[&str]) -> Result<Output> {
    let bin = ferry_tests::agent_bed::agent_binary()?;
    Command::new(&bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

/// Writes `text` as agent.toml and returns the agent's effective configuration for it.
fn agent_reads(dir: &Path, text: &str) -> Result<serde_json::Value> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let output = agent(&path, &["config", "--json"])?;
    ensure!(
        output.status.success(),
        "ferry-agent refused the module's agent.toml:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("ferry-agent config --json printed no JSON")
}

/// The README's DigitalOcean Spaces configuration.
const SPACES: &str = r#"{
  bucket = "acme-deploys";
  endpoint = "https://nyc3.digitaloceanspaces.com";
  region = "nyc3";
  credentialsPath = "/run/credentials/ferry-agent.service/aws";
  trustedKeys = ["acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="];
  manifestKeys = ["acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="];
  hostName = "web-1";
  secretsDir = "/var/lib/ferry-secrets";
  generationsToKeep = 5;
  nixBin = "/nix/store/00000000000000000000000000000000-nix-2.24.0/bin/nix";
  settings = {};
}"#;

#[test]
fn spaces_configuration_is_read_by_the_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = module_agent_toml(SPACES)?;
    // pkgs.formats.toml layout: plain keys first, then one [table] per attribute set.
    let credentials_at = text
        .find("[credentials]")
        .context("no [credentials] table")?;
    assert!(text[..credentials_at].contains("bucket = "), "{text}");
    assert!(!text.contains("null"), "{text}");
    let c = agent_reads(dir.path(), &text)?;
    assert_eq!(
        c["bucket"],
        "s3://acme-deploys?endpoint=https://nyc3.digitaloceanspaces.com&region=nyc3"
    );
    assert_eq!(c["credentials"]["file"], CREDENTIALS_PATH);
    assert_eq!(c["credentials"]["profile"], serde_json::Value::Null);
    assert_eq!(c["hostName"], "web-1");
    assert_eq!(
        c["trustedKeys"][0],
        "acme-deploy-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="
    );
    assert_eq!(c["manifestKeys"].as_array().map(Vec::len), Some(1));
    assert_eq!(c["generationsToKeep"], 5);
    assert_eq!(
        c["nixBin"],
        "/nix/store/00000000000000000000000000000000-nix-2.24.0/bin/nix"
    );
    // What the module does not set keeps the agent's own default.
    assert_eq!(c["stateDir"], "/var/lib/ferry");
    assert_eq!(c["timeouts"]["pullSec"], 600);
    Ok(())
}

#[test]
fn minimal_configuration_leaves_unset_keys_to_the_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = module_agent_toml(r#"{ bucket = "b"; hostName = "h"; }"#)?;
    assert!(!text.contains("credentials"), "{text}");
    assert!(text.contains("bucket = \"s3://b\"\n"), "{text}");
    let c = agent_reads(dir.path(), &text)?;
    // As understood: AWS, in Nix's default region.
    assert_eq!(c["bucket"], "s3://b?region=us-east-1");
    assert_eq!(c["credentials"]["file"], serde_json::Value::Null);
    assert_eq!(c["secretsDir"], "/var/lib/ferry-secrets");
    Ok(())
}

/// The original design's bucket URL given to the module as it is, and a profile of the
/// host's credentials file.
#[test]
fn design_url_and_credentials_profile_reach_the_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let design = "s3://omni-nix-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com";
    let text = module_agent_toml(&format!(
        r#"{{ bucket = "{design}"; credentialsPath = "{CREDENTIALS_PATH}"; credentialsProfile = "digitalocean"; hostName = "biz"; }}"#
    ))?;
    assert!(text.contains(&format!("bucket = \"{design}\"\n")), "{text}");
    let c = agent_reads(dir.path(), &text)?;
    assert_eq!(
        c["bucket"],
        "s3://omni-nix-cache?endpoint=https://nyc3.digitaloceanspaces.com&region=us-east-1&profile=digitalocean"
    );
    assert_eq!(c["credentials"]["profile"], "digitalocean");
    assert_eq!(c["credentials"]["file"], CREDENTIALS_PATH);
    // A bare endpoint host from the typed options is read the same way.
    let text = module_agent_toml(
        r#"{ bucket = "omni-nix-cache"; endpoint = "nyc3.digitaloceanspaces.com"; region = "nyc3"; hostName = "biz"; }"#,
    )?;
    let c = agent_reads(dir.path(), &text)?;
    assert_eq!(
        c["bucket"],
        "s3://omni-nix-cache?endpoint=https://nyc3.digitaloceanspaces.com&region=nyc3"
    );
    Ok(())
}

#[test]
fn freeform_settings_win_and_null_removes_a_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = module_agent_toml(
        r#"{
          bucket = "b";
          endpoint = "http://127.0.0.1:3900";
          region = "garage";
          hostName = "h";
          credentialsPath = "/run/credentials/ferry-agent.service/aws";
          settings = {
            bucket = "file:///srv/ferry-bucket";
            hostName = null;
            credentials.profile = "ferry";
            timeouts.pullSec = 1200;
            stateDir = "/var/lib/ferry-test";
            removedProfileRetentionDays = 7;
          };
        }"#,
    )?;
    assert!(text.contains("[timeouts]"), "{text}");
    let c = agent_reads(dir.path(), &text)?;
    assert_eq!(c["bucket"], "file:///srv/ferry-bucket");
    assert_eq!(c["hostName"], serde_json::Value::Null);
    // Merged key by key: the typed option's credentials file stays beside the profile.
    assert_eq!(c["credentials"]["file"], CREDENTIALS_PATH);
    assert_eq!(c["credentials"]["profile"], "ferry");
    assert_eq!(c["timeouts"]["pullSec"], 1200);
    assert_eq!(c["timeouts"]["jobSec"], 90);
    assert_eq!(c["stateDir"], "/var/lib/ferry-test");
    assert_eq!(c["removedProfileRetentionDays"], 7);
    Ok(())
}

#[test]
fn agent_refuses_what_the_module_must_never_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A misspelt freeform key reaches the file; the agent names it rather than ignoring it.
    let text = module_agent_toml(r#"{ bucket = "b"; settings.stateDirectory = "/x"; }"#)?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text)?;
    let output = agent(&path, &["config", "--json"])?;
    assert!(!output.status.success(), "accepted:\n{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stateDirectory"), "{stderr}");
    // And a null that survived the mapping could not be rendered at all.
    assert!(
        nix_common::json_to_toml(&serde_json::json!({"hostName": null}), "agent.toml").is_err()
    );
    Ok(())
}

#[test]
fn agent_plans_a_tick_from_the_module_configuration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket)?;
    let example = nix_common::repo_root().join("schema/tests/fixtures/example.json");
    let mut manifest: ferry_schema::Manifest = serde_json::from_str(
        &std::fs::read_to_string(&example)
            .with_context(|| format!("reading {}", example.display()))?,
    )?;
    // A DynamicUser (this machine has no pil-web account), signed as `ferry publish` would.
    manifest.services[0].exec.user = None;
    manifest.services[0].exec.group = None;
    manifest.services[0].hardening = None;
    let key = ferry_schema::SecretKey::generate("deploy-1")?;
    ferry_schema::sign_manifest(&mut manifest, &key)?;
    std::fs::write(bucket.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let d = dir.path().display();
    let public = key.public().to_nix_string();
    // The example manifest deploys to host "biz" with its env file under /var/lib/biz-secrets,
    // after postgresql.service.
    let text = module_agent_toml(&format!(
        r#"{{
          hostName = "biz";
          secretsDir = "/var/lib/biz-secrets";
          manifestKeys = ["{public}"];
          allowedUnits = ["network-online.target" "postgresql.service"];
          settings = {{
            bucket = "file://{d}/bucket";
            stateDir = "{d}/state";
            unitDir = "{d}/units";
          }};
        }}"#
    ))?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text)?;
    let output = agent(&path, &["plan"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Exit 1: the plan has changes (0 would be a no-op, 2 a refused manifest or trouble).
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("+ podcastitlater-web: add /nix/store/abc123-podcastitlater-web-1.2.3"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn the_test_beds_agent_toml_comes_from_the_module() -> Result<()> {
    let s3 = ferry_tests::S3 {
        endpoint: "http://10.231.0.1:3900".into(),
        region: "garage".into(),
        bucket: "ferry-bed".into(),
        access_key: "GK0".into(),
        secret_key: "secret".into(),
    };
    let key = "bed-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY=".to_owned();
    // What agent_bed.rs passes: a [timeouts] table through the freeform settings.
    let options = ferry_tests::agent_config::module_options(
        &s3,
        "bed-host",
        std::slice::from_ref(&key),
        std::slice::from_ref(&key),
        "[timeouts]\nsettleSec = 1\n",
    )?;
    let text = ferry_tests::module_render::module_agent_toml(&options)?;
    // The module's own defaults for its typed options are written out, as on NixOS.
    assert!(
        text.contains("secretsDir = \"/var/lib/ferry-secrets\""),
        "{text}"
    );
    let dir = tempfile::tempdir()?;
    let c = agent_reads(dir.path(), &text)?;
    assert_eq!(
        c["bucket"],
        "s3://ferry-bed?endpoint=http://10.231.0.1:3900&region=garage"
    );
    assert_eq!(c["hostName"], "bed-host");
    assert_eq!(c["trustedKeys"], serde_json::json!([key]));
    assert_eq!(c["manifestKeys"], serde_json::json!([key]));
    assert_eq!(
        c["credentials"]["file"],
        ferry_tests::agent_config::CREDENTIALS
    );
    assert_eq!(c["nixBin"], "/usr/bin/nix");
    assert_eq!(c["timeouts"]["settleSec"], 1);
    assert_eq!(c["timeouts"]["pullSec"], 600);
    // Routes go to the bed host's Caddy, where the module's Caddy has its admin API.
    assert_eq!(c["caddy"]["enable"], true);
    assert_eq!(c["caddy"]["admin"], "unix//run/caddy/admin.sock");
    Ok(())
}

#[test]
fn keys_the_module_does_not_know_pass_through_its_settings() -> Result<()> {
    let options = serde_json::json!({
        "bucket": "b",
        "hostName": "h",
        "manifestKeys": ["k-1:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="],
        "settings": {"someTable": {"someKey": "v", "n": 3}, "flag": true},
    });
    let text = ferry_tests::module_render::module_agent_toml(&options)?;
    let value: toml::Table = toml::from_str(&text)?;
    assert_eq!(value["flag"].as_bool(), Some(true));
    assert_eq!(value["someTable"]["someKey"].as_str(), Some("v"), "{text}");
    assert_eq!(value["someTable"]["n"].as_integer(), Some(3), "{text}");
    Ok(())
}
